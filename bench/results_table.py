"""Markdown tables of every benchmark JSON in a folder, for bench/README.md.

.venv/bin/python bench/results_table.py                  # bench/results
"""

import argparse
import json
from pathlib import Path


RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_label(payload, path):
    machine = payload["machine"]
    return (
        f"`{path.name}`: {machine['device']}, {machine['torch_threads']} thread(s), "
        f"load {machine['load_average_1m_at_start']:.1f}-{machine['load_average_1m_at_end']:.1f}, "
        f"{payload['date'][:10]}"
    )


def train_step_rows(payload, path):
    r, s = payload["results"], payload["settings"]
    step, heads, ratio = r["step_s"], r["heads_step_s"], r["ratio_fdrl_over_baseline"]
    yield (
        f"| {run_label(payload, path)}, batch {s['batch_size']}, {s['dtype']} | {s['repeats_done']} "
        f"| {step['fdrl']['median']:.2f} ({step['fdrl']['iqr']:.2f}) "
        f"| {step['baseline']['median']:.2f} ({step['baseline']['iqr']:.2f}) "
        f"| {ratio['paired']['median']:.3f} ({ratio['paired']['iqr']:.3f}) "
        f"| {heads['fdrl']['median'] * 1e3:.1f} | {heads['baseline']['median'] * 1e3:.2f} "
        f"| {r['overhead_percent']['from_heads']:+.2f}% | {r['throughput']['utterances_per_s']['fdrl']:.3g} "
        f"| {r['protocol_projection_fdrl']['hours']:,.0f} h ({r['protocol_projection_fdrl']['days']:,.0f} d) |"
    )


def inference_rows(payload, path):
    r = payload["results"]
    throughput = ", ".join(f"{size}: {row['utterances_per_s']:.3g}" for size, row in r["throughput"].items())
    yield (
        f"| {run_label(payload, path)} | {r['latency_s']['median'] * 1e3:,.0f} | {r['latency_s']['p90'] * 1e3:,.0f} "
        f"| {throughput} |"
    )


def preprocessing_rows(payload, path):
    r = payload["results"]
    for name, row in r["stages"].items():
        rates = row["utterances_per_s"]
        yield f"| {name} | {rates['median']:,.1f} ({rates['iqr']:,.1f}) | {row['ms_per_utterance']:.3g} |"
    yield f"| decode + processor, 16 kHz WAV | {r['pipeline_16k_utterances_per_s_per_core']:,.1f} | |"
    yield f"| decode + resample 44.1 kHz + processor | {r['pipeline_44k_utterances_per_s_per_core']:,.1f} | |"


def gpu_rows(payload, path):
    s = payload["settings"]
    for shape, row in payload["results"].items():
        tuning, extracted = row["fine_tuning"], row["frozen_extraction"]
        rates = (
            "-"
            if extracted is None
            else "{audio:.3g} / {text:.3g} / {both:.3g}".format(**extracted["utterances_per_s"])
        )
        weights = s["weights"] if shape == "whisper_minilm" and not s["dry_run"] else "random"  # paper: configs only
        step = f"batch {s['batch_size']}, {s['dtype']}"
        if s.get("pad_to_multiple_of_s"):
            step += f", audio padded to {s['pad_to_multiple_of_s']:g} s multiples"
        if s.get("no_cudnn"):
            step += ", cuDNN off"
        peak, gpu = tuning["peak_memory_allocated_gib"], payload["machine"].get("gpu", "no GPU")
        yield (
            f"| {run_label(payload, path)}, {gpu} | {shape} ({weights} weights) "
            f"| {tuning['parameters'] / 1e6:.1f} M | {step} | {tuning['step_s']['n']} "
            f"| {tuning['step_s']['median']:.3f} ({tuning['step_s']['iqr']:.3f}) | {tuning['utterances_per_s']:.3g} "
            f"| {tuning['utterances_per_s_at_median_step']:.3g} | {'-' if peak is None else f'{peak:.2f}'} "
            f"| {rates} |"
        )


TABLES = {
    "bench_train_step.py": (
        "| run | pairs | FDRL step s, median (IQR) | backbones-only step s | paired ratio FDRL / backbones (IQR) "
        "| FDRL heads step ms | baseline head step ms | overhead from heads | FDRL utterances/s "
        "| paper protocol |\n|---|---|---|---|---|---|---|---|---|---|",
        train_step_rows,
    ),
    "bench_inference.py": (
        "| run | latency median ms | latency p90 ms | utterances/s by batch size |\n|---|---|---|---|",
        inference_rows,
    ),
    "bench_gpu.py": (
        "| run | shape | parameters | step | timed steps | step s, median (IQR) | utterances/s (all steps) "
        "| utterances/s (median step) | peak GiB allocated | frozen extraction utterances/s: audio / text / both "
        "|\n|---|---|---|---|---|---|---|---|---|---|",
        gpu_rows,
    ),
    "bench_preprocessing.py": (
        "| stage (one core) | utterances/s, median (IQR) | ms per utterance |\n|---|---|---|",
        preprocessing_rows,
    ),
}


def render(folder):
    payloads = [(path, json.loads(path.read_text())) for path in sorted(Path(folder).glob("*.json"))]
    sections = []
    for script, (header, rows) in TABLES.items():
        lines = [line for path, payload in payloads if payload["script"] == script for line in rows(payload, path)]
        if lines:
            sections.append(f"### {script}\n\n{header}\n" + "\n".join(lines))
    return "\n\n".join(sections) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results_dir", default=str(RESULTS_DIR), help="Folder of benchmark JSON files.")
    print(render(parser.parse_args().results_dir))
