"""The benchmark scripts run end to end on tiny settings and write their JSON (speed itself is never tested)."""

import importlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, tiny_fdrl_config
from pretrained_fixture import pretrained, pretrained_dir  # noqa: F401 (pretrained_dir is a fixture)


sys.path.insert(0, str(REPO / "bench"))


@pytest.fixture(autouse=True)
def keep_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def run_script(name, tmp_path, *argv):
    output = tmp_path / f"{name}.json"
    importlib.import_module(name).main(["--tiny", "--output", str(output), *argv])
    payload = json.loads(output.read_text())
    assert set(payload) == {"script", "date", "machine", "settings", "results"}
    for key in ("cpu_model", "cpu_cores", "torch", "transformers", "torch_threads", "device"):
        assert payload["machine"][key], key
    assert all_finite(payload["results"])
    return payload["results"]


def all_finite(tree):
    if isinstance(tree, dict):
        return all(all_finite(value) for value in tree.values())
    if isinstance(tree, list):
        return all(all_finite(value) for value in tree)
    return not isinstance(tree, float) or math.isfinite(tree)


def positive(stats):
    return stats["n"] > 0 and stats["median"] > 0 and min(stats["values"]) > 0


def test_train_step(tmp_path):
    results = run_script("bench_train_step", tmp_path, "--repeats", "2", "--head_repeats", "3", "--threads", "1")
    for group in ("step_s", "heads_step_s"):
        assert positive(results[group]["fdrl"]) and positive(results[group]["baseline"])
        assert results[group]["fdrl"]["n"] == results[group]["baseline"]["n"]  # interleaved pairs
    assert results["ratio_fdrl_over_baseline"]["of_medians"] > 0
    assert set(results["overhead_percent"]) >= {"end_to_end", "from_heads"}
    assert isinstance(results["target"]["met_from_heads"], bool)
    assert results["throughput"]["utterances_per_s"]["fdrl"] > 0
    assert results["protocol_projection_fdrl"]["hours"] > 0
    assert results["protocol_projection_fdrl"]["utterances"] == 5 * 100 * 4425


def test_inference(tmp_path):
    results = run_script(
        "bench_inference",
        tmp_path,
        "--latency_repeats",
        "3",
        "--batch_sizes",
        "1",
        "2",
        "--throughput_repeats",
        "1",
        "--warmup",
        "1",
        "--threads",
        "1",
    )
    assert positive(results["latency_s"])
    assert set(results["throughput"]) == {"1", "2"}
    for row in results["throughput"].values():
        assert row["utterances_per_s"] > 0 and row["audio_seconds_per_s"] > 0


def test_preprocessing(tmp_path):
    results = run_script("bench_preprocessing", tmp_path)
    assert set(results["stages"]) == {
        "decode_soundfile",
        "decode_torchaudio",
        "resample_44100_to_16000",
        "resample_22050_to_16000",
        "feature_extraction",
        "tokenization",
        "processor_16k_audio_and_text",
    }
    for row in results["stages"].values():
        assert positive(row["utterances_per_s"]) and row["ms_per_utterance"] > 0
    assert results["pipeline_16k_utterances_per_s_per_core"] > 0


def test_durations_match_iemocap():
    common = importlib.import_module("common")
    durations = common.iemocap_durations(np.random.default_rng(0), 50_000)
    assert durations.min() >= 0.5 and durations.max() <= 16.0
    assert np.median(durations) == pytest.approx(3.58, rel=0.03)
    assert durations.mean() == pytest.approx(4.55, rel=0.05)  # the 16 s clip lowers it a little
    assert np.percentile(durations, 95) == pytest.approx(11.1, rel=0.05)


def test_the_benchmark_times_the_protocols_own_baseline():
    from fdrl.training.systems import BackboneClassifier
    from modeling_fdrl import FDRLModel

    fdrl, baseline = importlib.import_module("bench_train_step").build_models(tiny_fdrl_config(), "cpu")
    assert type(baseline) is BackboneClassifier
    assert BackboneClassifier.encode_audio is FDRLModel.encode_audio  # pooled exactly as FDRL pools
    for name, tensor in fdrl.audio_model.state_dict().items():  # the same starting weights
        assert torch.equal(tensor, baseline.audio_model.state_dict()[name]), name


def test_results_table_renders_committed_results():
    tables = importlib.import_module("results_table").render(REPO / "bench" / "results")
    for script in ("bench_train_step.py", "bench_inference.py", "bench_preprocessing.py", "bench_gpu.py"):
        assert f"### {script}" in tables
    # the GPU run: a row per shape, with its figures as the JSON holds them
    gpu = json.loads((REPO / "bench" / "results" / "gpu_cuda.json").read_text())["results"]
    rows = [line for line in tables.split("### bench_gpu.py")[1].splitlines() if line.startswith("| `gpu_cuda.json`")]
    assert [row.split(" | ")[1].split()[0] for row in rows] == list(gpu) == ["paper", "whisper_minilm"]
    assert f"{gpu['paper']['fine_tuning']['utterances_per_s']:.3g}" in rows[0].split(" | ")


def test_protocol_old_and_new_revision(tmp_path):
    """Old and new are the same commit here, so the tables must agree exactly (a broken comparison fails)."""
    from iemocap_fixture import make_iemocap_fixture

    corpus = make_iemocap_fixture(tmp_path / "corpus", sessions=(1, 2, 3), utterances_per_dialog=4, defects=False)
    output = tmp_path / "protocol.json"
    argv = ["--tiny", "--data_dir", str(corpus["data_dir"]), "--old", "HEAD", "--new", "HEAD", "--cases", "demo"]
    argv += ["--folds", "2", "--warm_cache", "--repeats", "2", "--output", str(output)]
    importlib.import_module("bench_protocol").main(argv)
    payload = json.loads(output.read_text())
    assert payload["machine"]["cpu_cores"] and payload["machine"]["load_average_1m_at_start"] is not None
    revisions = payload["results"]["revisions"]
    assert revisions["old"]["commit"] == revisions["new"]["commit"] and len(revisions["old"]["commit"]) == 40
    case = payload["results"]["cases"]["demo"]
    assert case["feature_cache"].startswith("warm")  # an untimed run filled it first
    assert case["order"] == ["old", "new", "new", "old"]
    for label in ("old", "new"):
        runs = [run["wall_s"] for run in case[label]["runs"]]
        assert len(runs) == 2 and min(runs) > 0 and case[label]["wall_s"] == pytest.approx(sum(runs) / 2)
        cores = payload["machine"]["cpu_cores_usable"]
        for run in case[label]["runs"]:  # the run's own CPU seconds: no more than its cores could give in its time
            assert 0 < run["cpu_s"] <= run["wall_s"] * cores * 1.02
            assert run["cpu_utilisation"] == pytest.approx(run["cpu_s"] / (run["wall_s"] * cores))
        assert case[label]["cpu_s"] == pytest.approx(sum(run["cpu_s"] for run in case[label]["runs"]) / 2)
        table = case[label]["table"]
        assert list(table["mean"]) == ["S0", "speech", "text", "late_fusion"]
        assert list(table["run_uar"]) == ["seed0_fold2"]
        assert all(0.0 <= row["uar"] <= 1.0 for row in table["mean"].values())
    assert case["tables"] == {"equal": True, "same_entries": True, "max_abs_difference": 0.0}
    assert case["run_records"] == {"equal": True, "first_differing_entries": []}
    assert case["speedup_old_over_new"] == pytest.approx(case["old"]["wall_s"] / case["new"]["wall_s"])


def test_heads_breakdown_on_a_tiny_run(tmp_path):
    """One system's parts are timed on the protocol's own loop: 2 epochs of the fixture's training split, one
    evaluation per epoch, each with the alignment diagnostics."""
    from iemocap_fixture import make_iemocap_fixture

    corpus = make_iemocap_fixture(tmp_path / "corpus", sessions=(1, 2, 3), utterances_per_dialog=4, defects=False)
    results = run_script("bench_heads", tmp_path, "--data_dir", str(corpus["data_dir"]), "--fold", "2")
    parts = results["parts"]
    assert parts["system"]["calls"] == 1 and results["evaluations"] == 2
    assert parts["alignment_diagnostics"]["calls"] >= 2  # every validation evaluation, and the test
    assert parts["training_step"]["calls"] == results["steps"] > 0
    assert parts["backward"]["calls"] == results["steps"] and parts["optimizer_step"]["calls"] == results["steps"]
    assert 0 < results["alignment_diagnostics_share_of_system"] < 1
    assert parts["training_step"]["seconds"] < parts["system"]["seconds"] <= results["run_wall_s"]
    # the figures after the system: its training curves and its confusion matrix, once each
    assert parts["figure_training_curves"]["calls"] == 1 and parts["figure_confusion_matrix"]["calls"] == 1
    figures = parts["figure_training_curves"]["seconds"] + parts["figure_confusion_matrix"]["seconds"]
    assert results["figures_s"] == figures > 0


def test_probe_solvers_replay_the_run_s_own_fits(tmp_path):
    """Every transfer fit of a tiny S0 run is recorded and replayed: the shipped probe's replay gives the UARs the run
    reported, and every solver replays each fit once per repeat."""
    from iemocap_fixture import make_iemocap_fixture

    corpus = make_iemocap_fixture(tmp_path / "corpus", sessions=(1, 2, 3), utterances_per_dialog=4, defects=False)
    results = run_script("bench_probes", tmp_path, "--data_dir", str(corpus["data_dir"]), "--repeats", "2")
    # 2 validation evaluations, the test and the last epoch's test, each with its two probes (a->t, t->a)
    assert results["fits"] == 8 and results["replay_exact"] is True
    shipped = results["solvers"][importlib.import_module("bench_probes").SHIPPED]
    assert shipped["against_shipped"]["equal"] == 8 and shipped["against_shipped"]["max_abs_difference"] == 0.0
    for row in results["solvers"].values():
        assert len(row["seconds"]) == 2 and row["ms_per_fit"] > 0 and row["mean_iterations"] >= 1
        assert 0 <= row["against_exact"]["equal"] <= 8 and 0 <= row["against_exact"]["max_abs_difference"] <= 1
    with pytest.raises(ValueError, match="--repeats must be at least 1"):
        importlib.import_module("bench_probes").main(["--repeats", "0"])


def test_gpu_script_dry_run(tmp_path):
    output = tmp_path / "gpu.json"
    payload = importlib.import_module("bench_gpu").main(["--dry_run", "--output", str(output)])
    assert json.loads(output.read_text()) == json.loads(json.dumps(payload))
    assert payload["settings"]["device"] == "cpu" and payload["settings"]["steps"] == 2
    assert set(payload["results"]) == {"paper", "whisper_minilm"}
    for row in payload["results"].values():
        steps = row["fine_tuning"]["step_s"]
        assert steps["n"] == 2 and row["fine_tuning"]["utterances_per_s"] == pytest.approx(8 * 2 / sum(steps["values"]))
        assert row["fine_tuning"]["utterances_per_s_at_median_step"] == pytest.approx(8 / steps["median"])
        assert row["fine_tuning"]["memory_reserved_gib_after_step"] == [None, None]  # CUDA only
        assert len(row["fine_tuning"]["padded_audio_s"]) == 2 and all(
            0.5 <= s <= 30 for s in row["fine_tuning"]["padded_audio_s"]
        )
        assert row["fine_tuning"]["peak_memory_allocated_gib"] is None  # measured on CUDA only
        rates = row["frozen_extraction"]["utterances_per_s"]
        assert row["frozen_extraction"]["utterances"] == 3 and set(rates) == {"audio", "text", "both"}
        assert rates["both"] == pytest.approx(1 / (1 / rates["audio"] + 1 / rates["text"]))
    assert all_finite(payload["results"])


def test_gpu_script_pads_audio_to_a_multiple(tmp_path):
    """`--pad_to_multiple_of_s` goes to the training collator: every batch's padded duration is a whole number of
    seconds (waveform samples and Whisper's mel frames alike), and at least the unpadded one."""
    bench_gpu = importlib.import_module("bench_gpu")
    plain = bench_gpu.main(["--dry_run", "--output", str(tmp_path / "plain.json")])["results"]
    argv = ["--dry_run", "--pad_to_multiple_of_s", "1", "--output", str(tmp_path / "padded.json")]
    padded = bench_gpu.main(argv)["results"]
    for shape in ("paper", "whisper_minilm"):
        before, after = plain[shape]["fine_tuning"]["padded_audio_s"], padded[shape]["fine_tuning"]["padded_audio_s"]
        assert all(seconds == int(seconds) for seconds in after) and len(after) == 2
        assert all(b <= a < b + 1 for b, a in zip(before, after))
    assert any(seconds != int(seconds) for seconds in plain["paper"]["fine_tuning"]["padded_audio_s"])


@pretrained
def test_gpu_script_random_weights_have_the_pretrained_shapes(pretrained_dir):  # noqa: F811
    """`--weights random` (for a machine the weights cannot travel to) builds Whisper-base + MiniLM with exactly the
    parameters, by name and shape, and the processor that the pretrained folders give."""
    bench_gpu = importlib.import_module("bench_gpu")
    shapes = {}
    for weights in ("random", "pretrained"):
        args = bench_gpu.parse_args(["--device", "cpu", "--weights", weights, "--pretrained_dir", str(pretrained_dir)])
        model, processor = bench_gpu.build_shape("whisper_minilm", args, np.random.default_rng(0))
        shapes[weights] = {name: tuple(value.shape) for name, value in model.state_dict().items()}
        shapes[weights + "_processor"] = (type(processor.feature_extractor).__name__, len(processor.tokenizer))
    assert shapes["random"] == shapes["pretrained"] and len(shapes["random"]) > 200
    assert sum(math.prod(shape) for shape in shapes["random"].values()) > 40_000_000
    assert shapes["random_processor"] == shapes["pretrained_processor"] == ("WhisperFeatureExtractor", 30522)


def test_demo_benchmark_runs_each_tree_as_a_first_run(tmp_path):
    """The harness of `make demo`'s benchmark, on a script that records what each run found: the trees alternate
    (old, new, new, old), and every run starts without the corpus and results the previous run of its tree left,
    with a cache folder holding nothing but matplotlib's font cache."""
    seen = tmp_path / "seen.txt"
    script = tmp_path / "first_run.sh"
    script.write_text(
        "set -e\n"
        f'echo "$(basename "$(dirname "$PWD")")/$(basename "$PWD") cache=[$(ls -A "$XDG_CACHE_HOME" | tr "\\n" " ")] '
        f"$([ -e demo_data ] || [ -e demo_output ] && echo leftovers || echo clean) $([ -e pretrained ] && echo "
        f'pretrained)" >> {seen}\n'
        "mkdir -p demo_data demo_output\n"
    )
    output = tmp_path / "demo.json"
    argv = ["--old", "HEAD", "--new", "HEAD", "--repeats", "2", "--script", str(script), "--output", str(output)]
    results = importlib.import_module("bench_demo").main(argv)
    assert json.loads(output.read_text())["results"] == json.loads(json.dumps(results))
    assert [run["tree"] for run in results["runs"]] == ["old", "new", "new", "old"]
    lines = seen.read_text().splitlines()
    assert [line.split()[0].split("/")[1] for line in lines] == ["old", "new", "new", "old"]
    fonts = (Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib").is_dir()
    linked = " pretrained" if (REPO / "pretrained").exists() else ""  # a fresh clone has none before `make demo`
    for line in lines:
        assert line.split(" ", 1)[1].rstrip() == f"cache=[{'matplotlib ' if fonts else ''}] clean{linked}"
    means = results["mean_wall_s"]
    assert means["old"] == pytest.approx(sum(r["wall_s"] for r in results["runs"] if r["tree"] == "old") / 2)
    assert results["speedup_old_over_new"] == pytest.approx(means["old"] / means["new"])


def test_demo_benchmark_copies_the_working_tree_without_what_git_ignores(tmp_path):
    """The new tree of `bench_demo.py` is this checkout's files that git tracks or would add, edits included, and
    nothing it ignores (no .venv, no result or model folders), with `pretrained/` linked."""
    import subprocess

    listing = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    expected = {name for name in listing.split("\0") if name and (REPO / name).is_file()}
    tree = importlib.import_module("bench_demo").copy_working_tree(tmp_path / "tree")
    copied = {str(path.relative_to(tree)) for path in tree.rglob("*") if path.is_file() and not path.is_symlink()}
    assert copied == expected and "examples/demo.sh" in copied
    assert (tree / "examples/demo.sh").read_bytes() == (REPO / "examples/demo.sh").read_bytes()
    assert not (tree / ".venv").exists() and not (tree / ".git").exists()
    assert (tree / "pretrained").is_symlink() == (REPO / "pretrained").exists()
