"""The protocol's results: per-system mean ± std over runs, the paired difference from a reference system with
wins, per-class recall, and the Markdown/JSON files that hold them.

A *run* is one (seed, test session) pair: `{"seed": 0, "fold": 1, "systems": {"S0": metrics, "speech": metrics}}`,
where `metrics` is `fdrl.evaluation.metrics.classification_metrics` output (plus any extra scalars); on a corpus with
official splits (MELD) the fold is the string "official", one run per seed. Every system of a run saw the same
folds, seeds and warm starts, so differences between systems are paired by run.
"""

import json
import math
from pathlib import Path

import numpy as np

from .metrics import SCALAR_METRICS


TIE_TOLERANCE = 1e-9
# FDRL's extra per-run scalars: the last epoch's test UAR, the alignment diagnostics of the kept model's test-session
# S_a, S_t (fdrl.evaluation.alignment) and the largest validation norm over training. (key, column title, percent)
EXTRA_COLUMNS = (
    ("last_test_uar", "UAR last epoch", True),
    ("max_eval_alignment_norm", "max norm (val.)", False),
    ("test_alignment_norm", "norm S_a, S_t", False),
    ("test_alignment_relative_centroid_distance", "rel. centroid dist.", False),
    ("test_alignment_transfer_audio_to_text", "transfer a->t", True),
    ("test_alignment_transfer_text_to_audio", "transfer t->a", True),
    ("test_alignment_retrieval_r1", "R@1", True),
)


def mean_std(values):
    """Mean and sample standard deviation (ddof 1; 0.0 for one value) of the finite values; (None, None) if none."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def paired_difference(values, reference):
    """`values[i] - reference[i]` over the runs where both exist: mean, std, and wins/ties/losses of `values`."""
    pairs = [(v, r) for v, r in zip(values, reference) if v is not None and r is not None]
    if not pairs:
        return None
    diffs = [v - r for v, r in pairs]
    mean, std = mean_std(diffs)
    return {
        "mean": mean,
        "std": std,
        "n": len(diffs),
        "wins": sum(d > TIE_TOLERANCE for d in diffs),
        "ties": sum(abs(d) <= TIE_TOLERANCE for d in diffs),
        "losses": sum(d < -TIE_TOLERANCE for d in diffs),
    }


def summarize_runs(runs, label_names, systems=None, reference="S0", metrics=SCALAR_METRICS):
    """Per-system summary over `runs` (see the module docstring). `systems` fixes the order (default: first seen).
    The paired difference from `reference` is given for every other system when the reference ran."""
    if not runs:
        raise ValueError("there are no finished runs to summarise")
    if systems is None:
        systems = list(dict.fromkeys(name for run in runs for name in run["systems"]))
    summary = {"num_runs": len(runs), "label_names": list(label_names), "reference": None, "systems": {}, "runs": runs}
    present = {key for run in runs for result in run["systems"].values() for key in result}
    metrics = tuple(metrics) + tuple(key for key, _, _ in EXTRA_COLUMNS if key in present and key not in metrics)
    has_reference = reference is not None and any(reference in run["systems"] for run in runs)
    if has_reference:
        summary["reference"] = reference
    for name in systems:
        results = [run["systems"].get(name) for run in runs]
        entry = {"num_runs": sum(r is not None for r in results), "mean": {}, "std": {}, "recall_mean": {}}
        for metric in metrics:
            entry["mean"][metric], entry["std"][metric] = mean_std([r.get(metric) if r else None for r in results])
        for label in label_names:  # None where the class was absent from a test session
            entry["recall_mean"][label] = mean_std([r["recall"].get(label) if r else None for r in results])[0]
        if has_reference and name != reference:
            ref = [run["systems"].get(reference) for run in runs]
            entry["paired"] = {
                metric: paired_difference(
                    [r.get(metric) if r else None for r in results], [r.get(metric) if r else None for r in ref]
                )
                for metric in metrics
            }
        summary["systems"][name] = entry
    return summary


def _percent(value, digits=2):
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _signed(value):
    return "–" if value is None else f"{100 * value:+.2f}"


def markdown_report(summary, descriptions=None):
    """The systems table (WAR, UAR, macro F1 and weighted F1, the metric MELD's papers report, as mean ± std; the
    paired difference from the reference with wins/ties/losses; per-class recall) followed by the per-run UAR table.
    Values in percent."""
    descriptions = descriptions or {}
    labels, reference = summary["label_names"], summary["reference"]
    header = ["system", "runs", "WAR", "UAR", "macro F1", "weighted F1"]
    if reference:
        header += [f"UAR − {reference} (paired)", f"wins/ties/losses vs {reference}"]
    header += [f"recall {label}" for label in labels]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for name, entry in summary["systems"].items():
        mean, std = entry["mean"], entry["std"]
        cells = [f"{name}" + (f": {descriptions[name]}" if name in descriptions else ""), str(entry["num_runs"])]
        cells += [f"{_percent(mean[m])} ± {_percent(std[m])}" for m in ("war", "uar", "macro_f1", "weighted_f1")]
        if reference:
            paired = (entry.get("paired") or {}).get("uar")
            cells += (
                ["(reference)", "–"]
                if name == reference
                else (
                    [
                        f"{_signed(paired['mean'])} ± {_percent(paired['std'])}",
                        f"{paired['wins']}/{paired['ties']}/{paired['losses']}",
                    ]
                    if paired
                    else ["–", "–"]
                )
            )
        cells += [_percent(entry["recall_mean"][label], 1) for label in labels]
        lines.append("| " + " | ".join(cells) + " |")
    lines += alignment_table(summary)
    names = list(summary["systems"])
    official = all(isinstance(run["fold"], str) for run in summary["runs"])  # "official": MELD's own splits
    lines += [
        "",
        "UAR per run (%):",
        "",
        "| seed | " + ("test split" if official else "test session") + " | " + " | ".join(names) + " |",
        "|" + " --- |" * (len(names) + 2),
    ]
    for run in summary["runs"]:
        cells = [_percent(run["systems"][n]["uar"]) if n in run["systems"] else "–" for n in names]
        lines.append(f"| {run['seed']} | {run['fold']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def alignment_table(summary):
    """Markdown lines of FDRL's extra columns (`EXTRA_COLUMNS`) for the systems that have them: mean ± std, and for
    each system but the reference its paired difference's wins/ties/losses (higher value wins); [] if none has."""
    columns = [
        (key, title, percent)
        for key, title, percent in EXTRA_COLUMNS
        if any(entry["mean"].get(key) is not None for entry in summary["systems"].values())
    ]
    if not columns:
        return []
    reference = summary["reference"]
    lines = [
        "",
        "Alignment diagnostics on the test split (the kept model; `fdrl.evaluation.alignment`), mean ± std"
        + (f"; (w/t/l): runs where the value is higher / equal / lower than {reference}'s" if reference else "")
        + ":",
        "",
        "| system | " + " | ".join(title for _, title, _ in columns) + " |",
        "|" + " --- |" * (len(columns) + 1),
    ]
    for name, entry in summary["systems"].items():
        if all(entry["mean"].get(key) is None for key, _, _ in columns):
            continue
        cells = []
        for key, _, percent in columns:
            mean, std = entry["mean"].get(key), entry["std"].get(key)
            cell = (
                "–"
                if mean is None
                else (f"{_percent(mean, 1)} ± {_percent(std, 1)}" if percent else f"{mean:.3g} ± {std:.2g}")
            )
            paired = (entry.get("paired") or {}).get(key)
            if paired and mean is not None:
                cell += f" ({paired['wins']}/{paired['ties']}/{paired['losses']})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def write_report(summary, output_dir, descriptions=None):
    """`results.json` and `results.md` in `output_dir`; returns the Markdown."""
    output_dir = Path(output_dir)
    report = markdown_report(summary, descriptions)
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    (output_dir / "results.md").write_text(report + "\n")
    return report
