"""The experiment scripts on tiny settings (tiny preset, 2 steps per stage, one fold, one seed, the IEMOCAP
fixture), so that they cannot rot: the evidence table, resume, the late fusion checked by hand, the Fig. 3-like
figure, the training curves and the late-fusion analysis."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from iemocap_fixture import make_iemocap_fixture


sys.path.insert(0, str(REPO / "experiments"))

EXPERIMENTS = REPO / "experiments"
METRICS = ("war", "uar", "macro_f1")


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    """One tiny run of run_experiments.py through its command line, keeping the model folders of (0, 1)."""
    root = tmp_path_factory.mktemp("experiments")
    corpus = make_iemocap_fixture(root / "data", utterances_per_dialog=12, defects=False)
    output_dir = root / "results"
    command = [
        sys.executable, str(EXPERIMENTS / "run_experiments.py"), "--tiny", "--data_dir", str(corpus["data_dir"]),
        "--output_dir", str(output_dir), "--seeds", "0", "--folds", "1", "--rows", "concat,S0",
        "--max_steps", "2", "--logging_steps", "1", "--validation_fraction", "0.25", "--save_models", "0:1",
        "--vocab_size", "200",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"output_dir": output_dir, "corpus": corpus, "command": command, "env": env, "stdout": result.stdout}


def test_run_record_has_every_row_with_sane_metrics(experiment):
    record = json.loads((experiment["output_dir"] / "runs" / "seed0_fold1.json").read_text())
    expected_test = experiment["corpus"]["expected"]["4class"]["ids"][1]
    assert sorted(record["test"]["id"]) == sorted(expected_test)  # the test session, all of it, nothing else
    # concat and S0 asked for; S1 and S0 with mu = 0 come with --save_models
    assert set(record["rows"]) == {"speech", "text", "late_fusion", "concat", "S0", "S1", "S0_mu0"}
    for row, result in record["rows"].items():
        for metric in METRICS:
            assert 0.0 <= result[metric] <= 1.0, (row, metric)
        assert len(result["predictions"]) == len(expected_test)
        probabilities = np.exp(np.array(result["log_probs"])).sum(-1)
        if row != "late_fusion":  # a sum of two log-posteriors is not normalised
            np.testing.assert_allclose(probabilities, 1.0, atol=1e-3)
    assert record["settings"]["model_preset"] == "tiny"


def test_late_fusion_is_the_argmax_of_the_summed_log_probabilities(experiment):
    from metrics_fdrl import classification_metrics

    record = json.loads((experiment["output_dir"] / "runs" / "seed0_fold1.json").read_text())
    speech = np.array(record["rows"]["speech"]["log_probs"])
    text = np.array(record["rows"]["text"]["log_probs"])
    by_hand = np.argmax(speech + text, -1)
    late = record["rows"]["late_fusion"]
    assert late["predictions"] == by_hand.tolist()
    labels = np.array(record["test"]["label"])
    recalls = [np.mean(by_hand[labels == c] == c) for c in np.unique(labels)]
    assert late["uar"] == pytest.approx(np.mean(recalls))
    assert late["war"] == pytest.approx(np.mean(by_hand == labels))
    names = list(late["recall"])
    assert late["macro_f1"] == pytest.approx(classification_metrics(by_hand, labels, names)["macro_f1"])


def test_summary_and_markdown_table(experiment):
    output_dir = experiment["output_dir"]
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["num_runs"] == 1
    assert {"speech", "text", "late_fusion", "concat", "S0", "S1"} <= set(summary["rows"])
    for row, entry in summary["rows"].items():
        for metric in METRICS:
            assert 0.0 <= entry[metric]["mean"] <= 1.0
            assert entry[metric]["std"] == 0.0  # one run
    assert summary["paper_table2"]["S0"] == {"war": 78.34, "uar": 79.44}
    table = (output_dir / "ablations.md").read_text()
    for name in ("speech only", "text only", "concatenation baseline", "late fusion", "S0 FDRL", "S1 w/o"):
        assert name in table
    assert "78.34" in table and "76.47" in table  # the paper's S0 and S1 alongside


def test_resume_skips_finished_runs(experiment, caplog):
    import run_experiments

    path = experiment["output_dir"] / "runs" / "seed0_fold1.json"
    before = path.stat().st_mtime_ns
    summary = run_experiments.main(experiment["command"][2:])  # the same arguments, in this process
    assert "seed 0 fold 1: done, skipped" in caplog.text
    assert path.stat().st_mtime_ns == before
    assert not list(path.parent.glob("*.lock"))
    assert summary["runs"] == [(0, 1)] and summary["unfinished_runs"] == []


def test_saved_model_folders(experiment):
    models = experiment["output_dir"] / "models"
    for row in ("S0", "S1", "S0_mu0"):
        for name in ("config.json", "model.safetensors", "trainer_state.json", "experiment.json"):
            assert (models / row / name).is_file(), (row, name)
    config = json.loads((models / "S0_mu0" / "config.json").read_text())
    assert config["dynamic_factor_mode"] == "fixed" and config["mu"] == 0.0
    config = json.loads((models / "S1" / "config.json").read_text())
    assert config["alpha"] == 0.0 and config["beta"] == 0.0


def test_plot_training(experiment, tmp_path):
    import plot_training

    output = tmp_path / "training.png"
    found = plot_training.main([str(experiment["output_dir"] / "models" / "S0"), "--output", str(output)])
    assert output.stat().st_size > 10_000
    for key in ("loss", "loss_task", "loss_global", "loss_local", "loss_modality", "loss_orthogonal",
                "loss_predictor", "dynamic_factor", "grl_coefficient", "dynamic_factor_update",
                "global_discriminator_error", "local_discriminator_error"):
        assert key in found, key


def test_plot_representations(experiment, tmp_path):
    import plot_representations

    models = experiment["output_dir"] / "models"
    stats = plot_representations.main(["--without", str(models / "S1"), "--with", str(models / "S0"),
                                       "--mu0", str(models / "S0_mu0"), "--output_dir", str(tmp_path)])
    for name in ("fig3a_tsne.png", "fig3b_centroids.png", "representations.json"):
        assert (tmp_path / name).is_file()
    for panel in ("without (alpha = beta = 0)", "with (S0)", "mu fixed at 0", "dynamic mu (S0)"):
        assert 0.0 <= stats[panel]["probe_accuracy_shared_audio_vs_text"] <= 1.0
        assert stats[panel]["same_class_centroid_gap"] >= 0.0
    assert stats["test_session"] == 1


def test_analyze_late_fusion(experiment):
    import analyze_late_fusion

    report = analyze_late_fusion.main([str(experiment["output_dir"])])
    assert report["num_runs"] == 1
    assert report["uar"]["late_fusion"] == pytest.approx(
        json.loads((experiment["output_dir"] / "summary.json").read_text())["rows"]["late_fusion"]["uar"]["mean"])
    assert report["dependence"]["cmi_bits_given_class"] >= 0.0
    assert 0.0 <= report["late_fusion_vs_S0"]["agreement"] <= 1.0
    assert (experiment["output_dir"] / "late_fusion_analysis.md").is_file()
