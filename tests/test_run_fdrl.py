"""run_fdrl.py end to end on the IEMOCAP-layout fixture: the protocol, resume, the Hub folder, several processes."""

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import run_fdrl
from conftest import REPO
from iemocap_fixture import make_iemocap_fixture


TINY = [
    "--model_preset",
    "tiny",
    "--per_device_train_batch_size",
    "8",
    "--learning_rate",
    "1e-3",
    "--use_cpu",
    "true",
    "--logging_steps",
    "1",
    "--dataloader_num_workers",
    "0",
    "--report_to",
    "none",
    "--disable_tqdm",
    "true",
    "--validation_fraction",
    "0.3",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("iemocap")
    info = make_iemocap_fixture(root, sessions=(1, 2, 3), utterances_per_dialog=6)
    return info


def _args(corpus, output_dir, *extra):
    return [
        "--data_dir",
        str(corpus["data_dir"]),
        "--output_dir",
        str(output_dir),
        "--cache_dir",
        str(corpus["data_dir"].parent / "cache"),
        *TINY,
        *extra,
    ]


SYSTEMS = ["S0", "S1", "speech", "text", "concat", "late_fusion"]


@pytest.fixture(scope="module")
def protocol_run(corpus, tmp_path_factory):
    """The multi-system experiment, named by a YAML file as a user would write one (flags after it override it)."""
    import yaml

    output_dir = tmp_path_factory.mktemp("run")
    experiment = {
        "data_dir": str(corpus["data_dir"]),
        "cache_dir": str(corpus["data_dir"].parent / "cache"),
        "output_dir": "overridden",
        "model_preset": "tiny",
        "systems": SYSTEMS,
        "folds": [1, 3],
        "num_train_epochs": 2,
        "seed": 7,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "use_cpu": True,
        "logging_steps": 1,
        "dataloader_num_workers": 0,
        "report_to": "none",
        "disable_tqdm": True,
        "validation_fraction": 0.3,
        "train_sampling_strategy": "group_by_length",
    }
    path = output_dir.parent / f"{output_dir.name}.yaml"
    path.write_text(yaml.safe_dump(experiment))
    summary = run_fdrl.main([str(path), "--output_dir", str(output_dir)])
    return output_dir, summary


def _expected_test_ids(corpus, fold):
    """The 4-class utterances of the held-out session, less those with an empty transcript (skipped, counted)."""
    return [i for i in corpus["expected"]["4class"]["ids"][fold] if corpus["utterances"][i]["text"].strip()]


def test_protocol_writes_every_system_of_every_fold(protocol_run, corpus):
    output_dir, summary = protocol_run
    results = json.loads((output_dir / "results.json").read_text())
    assert [(run["seed"], run["fold"]) for run in results["runs"]] == [(7, 1), (7, 3)]
    assert results["num_runs"] == 2 and results["label_names"] == ["ang", "hap", "neu", "sad"]
    assert list(results["systems"]) == SYSTEMS and results["reference"] == "S0"
    for run in results["runs"]:
        record = json.loads((output_dir / "runs" / f"seed7_fold{run['fold']}.json").read_text())
        expected = _expected_test_ids(corpus, run["fold"])
        assert record["test_ids"] == expected
        for name in SYSTEMS:
            metrics = record["systems"][name]
            matrix = torch.tensor(metrics["confusion_matrix"])
            assert matrix.sum().item() == metrics["num_samples"] == len(expected) == len(metrics["log_probs"])
            assert metrics["war"] == pytest.approx(matrix.diag().sum().item() / matrix.sum().item())
        # late fusion is the sum of the two single-modality log-probabilities
        systems = record["systems"]
        fused = torch.tensor(systems["speech"]["log_probs"]) + torch.tensor(systems["text"]["log_probs"])
        assert (fused - torch.tensor(record["systems"]["late_fusion"]["log_probs"])).abs().max() <= 2e-6
    for name in SYSTEMS:
        uars = [run["systems"][name]["uar"] for run in results["runs"]]
        assert results["systems"][name]["mean"]["uar"] == pytest.approx(sum(uars) / 2)
        if name != "S0":
            diffs = [run["systems"][name]["uar"] - run["systems"]["S0"]["uar"] for run in results["runs"]]
            paired = results["systems"][name]["paired"]["uar"]
            assert paired["mean"] == pytest.approx(sum(diffs) / 2)
            assert paired["wins"] + paired["ties"] + paired["losses"] == 2
    table = (output_dir / "results.md").read_text()
    assert "UAR − S0 (paired)" in table and "late_fusion" in table
    assert not list(output_dir.glob("seed7/fold*/*/checkpoint-*"))  # only the best models are kept


def test_every_term_mu_error_rates_and_alignment_are_logged_every_epoch(protocol_run):
    output_dir, _ = protocol_run
    history = json.loads((output_dir / "seed7" / "fold1" / "S0" / "trainer_state.json").read_text())["log_history"]
    train_logs = [entry for entry in history if "loss" in entry]
    assert train_logs
    from fdrl.training.trainer import LOSS_TERMS

    assert LOSS_TERMS == (
        "loss_task",
        "loss_global",
        "loss_local",
        "loss_modality",
        "loss_orthogonal",
        "loss_predictor",
        "loss_confusion",
    )
    for key in (*LOSS_TERMS, "dynamic_factor", "grl_coefficient"):
        assert all(key in entry for entry in train_logs), key
    epochs = [entry for entry in history if "global_discriminator_error" in entry]
    assert len(epochs) == 2  # one update per epoch
    for entry in epochs:
        assert 0.05 <= entry["dynamic_factor"] <= 0.95  # the default bounds
        for label in ("ang", "hap", "neu", "sad"):
            assert 0.0 <= entry[f"local_discriminator_error_{label}"] <= 1.0
    evals = [entry for entry in history if "eval_uar" in entry]
    diagnostics = {
        f"eval_alignment_{key}"
        for key in (
            "norm_audio",
            "norm_text",
            "norm",
            "norm_growth",
            "relative_centroid_distance",
            "centroid_distance",
            "transfer_audio_to_text",
            "transfer_text_to_audio",
            "retrieval_r1",
        )
    }
    assert len(evals) == 2 and all(diagnostics <= set(entry) for entry in evals)
    assert evals[0]["eval_alignment_norm_growth"] == 1.0  # relative to the first evaluation
    values = [v for entry in epochs + evals for v in entry.values() if isinstance(v, float)]
    assert all(v == v for v in values)  # no NaN
    record = json.loads((output_dir / "runs" / "seed7_fold1.json").read_text())["systems"]
    for system in ("S0", "S1"):  # the kept model's and the last epoch's test diagnostics, the largest norm
        keys = {f"test_{k[5:]}" for k in diagnostics} | {f"last_test_{k[5:]}" for k in diagnostics}
        keys |= {"last_test_uar", "max_eval_alignment_norm", "max_eval_alignment_norm_growth"}
        assert keys <= set(record[system]), keys - set(record[system])
        assert all(record[system][k] == record[system][k] for k in keys)  # no NaN
    grl = [entry["grl_coefficient"] for entry in train_logs]
    assert grl == sorted(grl) and grl[0] == 0.0 < grl[-1] < 1.0  # DANN schedule: 0 at the start, then rising
    assert (output_dir / "seed7" / "fold1" / "S0" / "training_curves.png").stat().st_size > 10000


def test_fdrl_plot_run_redraws_the_protocols_figures_byte_for_byte_and_keeps_existing_ones(
    protocol_run, tmp_path, capsys
):
    from fdrl.cli import plot_run

    output_dir, _ = protocol_run
    copy = tmp_path / "run"
    shutil.copytree(output_dir, copy)
    drawn = {p.relative_to(output_dir): p.read_bytes() for p in output_dir.rglob("*.png")}
    # a confusion matrix per system and run (6 x 2), training curves per FDRL system and run (S0, S1 x 2)
    assert len([p for p in drawn if p.name.startswith("confusion_")]) == 12
    assert sorted(str(p) for p in drawn if p.name == "training_curves.png") == [
        f"seed7/fold{f}/{s}/training_curves.png" for f in (1, 3) for s in ("S0", "S1")
    ]
    for path in drawn:
        (copy / path).unlink()
    assert plot_run.main([str(copy)]) == 0
    assert capsys.readouterr().out.strip() == f"{copy}: 16 figures drawn, 0 already there and kept"
    assert {p.relative_to(copy): p.read_bytes() for p in copy.rglob("*.png")} == drawn
    edited = copy / "seed7" / "fold3" / "confusion_text.png"
    edited.write_bytes(b"mine")
    plot_run.main([str(copy)])
    assert "0 figures drawn, 16 already there and kept" in capsys.readouterr().out
    assert edited.read_bytes() == b"mine"
    plot_run.main([str(copy), "--overwrite"])
    assert capsys.readouterr().out.startswith(f"{copy}: 16 figures drawn, 0 already")
    assert edited.read_bytes() == drawn[edited.relative_to(copy)]
    with pytest.raises(SystemExit):
        plot_run.main([str(tmp_path / "nothing")])
    assert f"{tmp_path / 'nothing'} holds no run records" in capsys.readouterr().err
    edited.write_bytes(b"mine")
    record = copy / "runs" / "seed7_fold3.json"
    record.write_text(record.read_text()[:200])  # killed while writing
    with pytest.raises(SystemExit):
        plot_run.main([str(copy), "--overwrite"])
    assert f"{record} cannot be read as JSON" in capsys.readouterr().err
    record.write_text(json.dumps({"seed": 7, "fold": 3, "systems": {"S0": {"uar": 0.5}}}))
    with pytest.raises(SystemExit):
        plot_run.main([str(copy), "--overwrite"])
    assert f"{record} is not a complete run record (system S0: no 'war')" in capsys.readouterr().err
    assert edited.read_bytes() == b"mine"  # refused before anything was drawn


def test_save_figures_false_draws_nothing_and_records_the_same(corpus, tmp_path):
    from fdrl.cli import plot_run

    common = ["--folds", "1", "--num_train_epochs", "1", "--systems", "S0", "text", "--freeze_backbones", "true"]
    run_fdrl.main(_args(corpus, tmp_path / "with", *common))
    run_fdrl.main(_args(corpus, tmp_path / "without", *common, "--save_figures", "false"))
    assert len(list((tmp_path / "with").rglob("*.png"))) == 3  # confusion S0 and text, S0's training curves
    assert not list((tmp_path / "without").rglob("*.png"))
    record = "runs/seed42_fold1.json"
    assert (tmp_path / "with" / record).read_text() == (tmp_path / "without" / record).read_text()
    assert (tmp_path / "without" / "seed42" / "fold1" / "S0" / "trainer_state.json").is_file()
    plot_run.main([str(tmp_path / "without")])
    assert sorted(str(p.relative_to(tmp_path / "without")) for p in (tmp_path / "without").rglob("*.png")) == [
        "seed42/fold1/S0/training_curves.png",
        "seed42/fold1/confusion_S0.png",
        "seed42/fold1/confusion_text.png",
    ]


def test_test_session_never_reaches_training_or_validation(protocol_run, corpus):
    output_dir, _ = protocol_run
    for fold in (1, 3):
        splits = json.loads((output_dir / "seed7" / f"fold{fold}" / "splits.json").read_text())
        session_of = {uid: u["session"] for uid, u in corpus["utterances"].items()}
        assert {session_of[uid] for uid in splits["test"]} == {fold}
        assert fold not in {session_of[uid] for uid in splits["train"] + splits["validation"]}
        assert splits["validation"] and not set(splits["validation"]) & set(splits["train"])


def test_hub_folder_loads_in_a_fresh_process_and_predicts_like_the_trained_model(protocol_run, corpus, tmp_path):
    output_dir, _ = protocol_run
    hub = output_dir / "model"
    names = {p.name for p in hub.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "configuration_fdrl.py",
        "modeling_fdrl.py",
        "processing_fdrl.py",
        "processor_config.json",
        "tokenizer.json",
        "README.md",
        "results.json",
    } <= names
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in names)
    card = (hub / "README.md").read_text()
    assert "model-index" in card and "leave-one-session-out" in card and "Intended use" in card
    assert "multimodal-emotion-recognition" in card and "| speech: speech only" in card  # baseline rows
    assert "- **Training budget:** AdamW, learning rate 0.001, batch 8 per device, 2 epochs.\n" in card
    config = json.loads((hub / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_fdrl.FDRLModel"
    # the same test session's predictions, in this process (saved weights) and in a fresh one (remote code)
    fold_dir = output_dir / "seed7" / "fold3"
    test_ids = json.loads((fold_dir / "splits.json").read_text())["test"][:4]
    wavs = [str(corpus["utterances"][i]["wav"]) for i in test_ids]
    texts = [corpus["utterances"][i]["text"] for i in test_ids]
    script = textwrap.dedent(f"""
        import json, sys, soundfile, torch
        from transformers import AutoModel, AutoProcessor
        model = AutoModel.from_pretrained({str(hub)!r}, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained({str(hub)!r}, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        audio = [soundfile.read(p, dtype="float32")[0] for p in {wavs!r}]
        inputs = processor(audio=audio, text={texts!r}, sampling_rate=16000)
        with torch.no_grad():
            print("LOGITS", json.dumps(model(**inputs).logits.tolist()))
    """)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = torch.tensor(json.loads(result.stdout.split("LOGITS", 1)[1]))
    import soundfile

    from modeling_fdrl import FDRLModel
    from processing_fdrl import FDRLProcessor

    model_dir = fold_dir / "model"
    model, processor = FDRLModel.from_pretrained(model_dir).eval(), FDRLProcessor.from_pretrained(model_dir)
    audio = [soundfile.read(p, dtype="float32")[0] for p in wavs]
    with torch.no_grad():
        local = model(**processor(audio=audio, text=texts, sampling_rate=16000)).logits
    assert (remote - local).abs().max().item() <= 1e-5
    assert remote.argmax(-1).tolist() == local.argmax(-1).tolist()


def test_lengths_for_grouped_batches_come_from_the_corpus(corpus):
    from fdrl.data.corpus import fold_splits
    from fdrl.data.iemocap import load_iemocap

    data = load_iemocap(corpus["data_dir"], cache_dir=str(corpus["data_dir"].parent / "cache"))
    splits = fold_splits(data, 2, 0.3, seed=0)
    for split in splits.values():
        for uid, length in zip(split["id"][:], split["length"][:]):
            assert abs(length - corpus["utterances"][uid]["num_samples"]) <= 16, uid  # times vs samples: 1 ms


def test_resume_restores_the_dynamic_factor_and_the_step(corpus, tmp_path):
    common = ["--folds", "2", "--num_train_epochs", "2", "--keep_checkpoints", "true", "--seed", "3"]
    run_fdrl.main(_args(corpus, tmp_path / "full", *common))
    full_dir = tmp_path / "full/seed3/fold2"
    checkpoints = sorted((full_dir / "S0").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    first, last = checkpoints[0], checkpoints[-1]
    mu_first = load_file(first / "model.safetensors")["dynamic_factor"].item()
    assert mu_first != 0.5  # updated at the end of epoch 1, before the checkpoint was written
    # interrupted after epoch 1 (tokenizer already saved): resume from its checkpoint in a new folder
    resumed_dir = tmp_path / "resumed/seed3/fold2"
    shutil.copytree(first, resumed_dir / "S0" / first.name)
    shutil.copytree(full_dir / "processor", resumed_dir / "processor")
    run_fdrl.main(_args(corpus, tmp_path / "resumed", *common, "--resume_from_checkpoint", "true"))
    state = json.loads((resumed_dir / "S0" / "trainer_state.json").read_text())
    full_state = json.loads((full_dir / "S0" / "trainer_state.json").read_text())
    assert state["global_step"] == full_state["global_step"] == int(last.name.split("-")[1])
    resumed_mu = [e["dynamic_factor"] for e in state["log_history"] if "global_discriminator_error" in e]
    full_mu = [e["dynamic_factor"] for e in full_state["log_history"] if "global_discriminator_error" in e]
    assert resumed_mu[0] == full_mu[0] == pytest.approx(mu_first, abs=1e-6)
    assert resumed_mu[-1] == pytest.approx(full_mu[-1], abs=1e-6)
    full_weights = load_file(full_dir / "model" / "model.safetensors")
    resumed_weights = load_file(resumed_dir / "model" / "model.safetensors")
    difference = max((resumed_weights[k] - full_weights[k]).abs().max().item() for k in full_weights)
    assert difference <= 1e-4  # continues as if never stopped


def test_resume_skips_an_incomplete_checkpoint(corpus, tmp_path, caplog):
    common = ["--folds", "2", "--num_train_epochs", "2", "--keep_checkpoints", "true", "--seed", "3"]
    run_fdrl.main(_args(corpus, tmp_path / "full", *common))
    full_dir = tmp_path / "full/seed3/fold2"
    first, last = sorted((full_dir / "S0").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed_dir = tmp_path / "resumed/seed3/fold2"
    shutil.copytree(first, resumed_dir / "S0" / first.name)
    shutil.copytree(last, resumed_dir / "S0" / last.name)
    (resumed_dir / "S0" / last.name / "trainer_state.json").unlink()  # killed while saving
    shutil.copytree(full_dir / "processor", resumed_dir / "processor")
    caplog.set_level("WARNING")
    run_fdrl.main(_args(corpus, tmp_path / "resumed", *common, "--resume_from_checkpoint", "true"))
    assert f"skipping the incomplete checkpoint {resumed_dir / 'S0' / last.name}" in caplog.text
    state = json.loads((resumed_dir / "S0" / "trainer_state.json").read_text())
    assert state["global_step"] == int(last.name.split("-")[1])  # trained on from the complete one


def test_a_truncated_run_record_is_rerun_on_resume(corpus, tmp_path, caplog):
    common = ["--folds", "2", "--num_train_epochs", "1", "--seed", "3", "--systems", "speech"]
    run_fdrl.main(_args(corpus, tmp_path, *common))
    record = tmp_path / "runs" / "seed3_fold2.json"
    record.write_text(record.read_text()[:40])  # killed while writing
    caplog.set_level("WARNING")
    summary = run_fdrl.main(_args(corpus, tmp_path, *common, "--resume_from_checkpoint", "true"))
    assert "is not valid JSON" in caplog.text and summary["num_runs"] == 1
    assert json.loads(record.read_text())["systems"]["speech"]["num_samples"] == len(_expected_test_ids(corpus, 2))


def test_an_output_folder_in_use_by_a_live_run_is_refused(corpus, tmp_path):
    """A second real process holds the folder's lock; once it is killed (-9), the lock is free again."""
    from fdrl.training.protocol import LOCK_FILE

    tmp_path.mkdir(exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import sys, time
        from filelock import FileLock
        lock = FileLock({str(tmp_path / LOCK_FILE)!r})
        lock.acquire()
        print("held", flush=True)
        time.sleep(120)
    """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RuntimeError, match=f"--output_dir {tmp_path} is in use by another run"):
            run_fdrl.main(_args(corpus, tmp_path, "--folds", "1", "--num_train_epochs", "1", "--systems", "text"))
        assert not (tmp_path / "seed42").exists()  # refused before anything was trained
    finally:
        holder.kill()
        holder.wait()
    summary = run_fdrl.main(_args(corpus, tmp_path, "--folds", "1", "--num_train_epochs", "1", "--systems", "text"))
    assert summary["num_runs"] == 1


def test_argument_files_json_and_yaml(corpus, tmp_path):
    import yaml

    values = {
        "data_dir": str(corpus["data_dir"]),
        "model_preset": "tiny",
        "use_cpu": True,
        "output_dir": str(tmp_path / "out"),
        "alpha": 0.25,
        "fusion_inputs": "shared",
        "folds": [1, 2],
        "systems": ["S0", "speech"],
        "dynamic_factor_bounds": [0.1, 0.9],
    }
    (tmp_path / "args.json").write_text(json.dumps(values))
    (tmp_path / "args.yaml").write_text(yaml.safe_dump(values))
    for path in ("args.json", "args.yaml"):
        model_args, data_args, training_args = run_fdrl.parse_arguments([str(tmp_path / path)])
        assert (model_args.alpha, model_args.fusion_inputs, data_args.data_dir) == (0.25, "shared", values["data_dir"])
        assert training_args.folds == [1, 2] and training_args.learning_rate == 1e-5  # the paper's default
        assert training_args.systems == ["S0", "speech"]
        assert model_args.config_overrides()["dynamic_factor_bounds"] == (0.1, 0.9)
        assert training_args.per_device_train_batch_size == 8 and training_args.num_train_epochs == 100
    model_args, _, training_args = run_fdrl.parse_arguments(
        [str(tmp_path / "args.yaml"), "--alpha", "0.5", "--folds", "3"]
    )
    assert model_args.alpha == 0.5 and training_args.folds == [3]  # flags after the file win
    with pytest.raises(FileNotFoundError, match="argument file .*missing.yaml does not exist"):
        run_fdrl.parse_arguments([str(tmp_path / "missing.yaml")])


def test_argument_files_stack(corpus, tmp_path):
    """base.yaml, then a file with what differs (it wins), then flags (they win over both)."""
    import yaml

    base = {
        "data_dir": str(corpus["data_dir"]),
        "model_preset": "tiny",
        "use_cpu": True,
        "output_dir": "base_out",
        "alpha": 0.25,
        "folds": [1, 2],
        "learning_rate": 0.001,
    }
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    (tmp_path / "other.json").write_text(json.dumps({"output_dir": "other_out", "folds": [2], "beta": 0.75}))
    files = [str(tmp_path / "base.yaml"), str(tmp_path / "other.json")]
    model_args, data_args, training_args = run_fdrl.parse_arguments(files)
    assert (training_args.output_dir, training_args.folds, model_args.beta) == ("other_out", [2], 0.75)
    assert (model_args.alpha, training_args.learning_rate, data_args.data_dir) == (0.25, 0.001, base["data_dir"])
    model_args, _, training_args = run_fdrl.parse_arguments(files + ["--folds", "1", "--alpha", "0.5"])
    assert (training_args.folds, model_args.alpha, training_args.output_dir) == ([1], 0.5, "other_out")
    reversed_order = run_fdrl.parse_arguments(files[::-1])[2]
    assert (reversed_order.output_dir, reversed_order.folds) == ("base_out", [1, 2])  # the later file wins


def test_the_shipped_argument_files_stack_on_the_base(tmp_path, monkeypatch):
    """The demo and the experiments are examples/base.yaml plus what differs; together they parse."""
    monkeypatch.chdir(REPO)  # the files' paths are relative to the repository root
    parsed = {}
    for name in ("examples/demo.yaml", "experiments/ablations.yaml", "experiments/asr_transcripts.yaml"):
        model_args, data_args, training_args = run_fdrl.parse_arguments(
            ["examples/base.yaml", name, "--data_dir", str(tmp_path)]
        )  # the corpus need not exist here
        assert (model_args.audio_model, training_args.num_train_epochs) == ("pretrained/whisper-base", 40), name
        assert training_args.freeze_backbones and training_args.folds == [1, 2, 3, 4, 5], name
        parsed[name] = (
            training_args.output_dir,
            training_args.seeds,
            training_args.systems[0],
            data_args.test_transcripts,
        )
    assert parsed == {
        "examples/demo.yaml": ("demo_output", [0], "S0", None),
        "experiments/ablations.yaml": ("experiments/results", [0, 1, 2], "S0", None),
        "experiments/asr_transcripts.yaml": ("experiments/asr/results", [0], "S0", "experiments/asr/wer.json"),
    }


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--folds", "4"], r"--folds: test session\(s\) \[4\] not in the data, whose sessions are \[1, 2, 3\]"),
        (["--folds", "1,x"], "--folds must be a list of int"),
        (["--folds", ","], "--folds is empty"),
        (["--folds", "1,1"], r"--folds names \[1\] more than once"),
        ([], "Give --folds"),
        (["--folds", "1", "--alpha", "-1"], "--alpha must be a non-negative number, got -1"),
        (["--folds", "1", "--systems", "S0", "S9"], r"unknown system\(s\) \['S9'\]"),
        (["--folds", "1", "--local_weights", "guess"], "--local_weights must be one of"),
        (
            ["--folds", "1", "--audio_pad_to_multiple_of_s", "0"],
            "--audio_pad_to_multiple_of_s must be a positive number of seconds, got 0.0",
        ),
    ],
)
def test_bad_arguments_fail_before_anything_is_loaded(corpus, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_fdrl.main(_args(corpus, tmp_path, *extra))
    assert not (tmp_path / "seed42").exists()  # nothing trained


def test_missing_data_dir_and_model_source_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="--data_dir .*nowhere"):
        run_fdrl.main(
            [
                "--data_dir",
                str(tmp_path / "nowhere"),
                "--model_preset",
                "tiny",
                "--folds",
                "1",
                "--output_dir",
                str(tmp_path),
            ]
        )
    with pytest.raises(ValueError, match="exactly one model source"):
        run_fdrl.main(["--data_dir", str(tmp_path), "--folds", "1", "--output_dir", str(tmp_path)])


def test_a_missing_label_in_a_manifest_is_reported_by_row(corpus, tmp_path):
    # Without --labels a manifest's classes are its own sorted labels (issue 22), so "joy" is a class now; a row
    # without a label is still refused by row before anything trains (a label outside --labels: the tests below).
    wav = next(corpus["data_dir"].glob("Session1/sentences/wav/*/*.wav"))
    rows = ["id,audio,text,label,session", f"a,{wav},hello there,ang,1", f"b,{wav},good morning,,2"]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"1 row\(s\) of .*data.csv have no label: row 2 \(line 3\)"):
        run_fdrl.main(
            ["--manifest", str(tmp_path / "data.csv"), "--folds", "1", "--output_dir", str(tmp_path / "out"), *TINY]
        )
    assert not (tmp_path / "out" / "seed42").exists()


def test_push_to_hub_uploads_the_model_folder(protocol_run, monkeypatch):
    """Only the Hub's network calls are replaced; the folder is the one the protocol assembled."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoUrl

    from fdrl.training.hub import push_folder
    from fdrl.training.trainer import FDRLTrainingArguments

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, folder_path, repo_id, **kwargs):
        calls["upload_folder"] = (repo_id, sorted(p.name for p in Path(folder_path).iterdir()))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    output_dir, _ = protocol_run
    args = FDRLTrainingArguments(
        output_dir=str(output_dir), push_to_hub=True, hub_model_id="someone/fdrl-test", use_cpu=True, folds=[1]
    )
    assert push_folder(output_dir / "model", args) == "someone/fdrl-test"
    assert calls["create_repo"][0] == "someone/fdrl-test" and calls["create_repo"][1]["exist_ok"] is True
    repo_id, files = calls["upload_folder"]
    assert repo_id == "someone/fdrl-test"
    assert {"model.safetensors", "config.json", "README.md", "modeling_fdrl.py", "tokenizer.json"} <= set(files)
    with pytest.raises(ValueError, match="hub_model_id"):
        push_folder(output_dir / "model", FDRLTrainingArguments(output_dir=str(output_dir), use_cpu=True, folds=[1]))


def test_two_processes_train_the_same_model(corpus, tmp_path):
    """`accelerate launch` with two real CPU processes (gloo): both ranks run and end with the same model."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(REPO / "run_fdrl.py"),
        *_args(
            corpus,
            tmp_path / "ddp",
            "--folds",
            "1",
            "--num_train_epochs",
            "2",
            "--per_device_train_batch_size",
            "4",
            "--seed",
            "5",
        ),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    fold_dir = tmp_path / "ddp/seed5/fold1"
    states = [json.loads((fold_dir / "S0" / f"rank_state_{rank}.json").read_text()) for rank in (0, 1)]
    assert [s["rank"] for s in states] == [0, 1] and all(s["world_size"] == 2 for s in states)
    assert states[0]["dynamic_factor"] == states[1]["dynamic_factor"] != 0.5
    assert states[0]["global_step"] == states[1]["global_step"]
    assert states[0]["parameter_checksum"] == pytest.approx(states[1]["parameter_checksum"], rel=1e-9)
    # each epoch, the two ranks together saw the training split once
    history = json.loads((fold_dir / "S0" / "trainer_state.json").read_text())
    splits = json.loads((fold_dir / "splits.json").read_text())
    steps_per_epoch = -(-len(splits["train"]) // 8)  # 2 processes x 4
    assert history["global_step"] == 2 * steps_per_epoch


@pytest.mark.parametrize("name, kind", [("multi_gpu", "MULTI_GPU"), ("multi_node", "MULTI_GPU"), ("fsdp", "FSDP")])
def test_shipped_accelerate_configs_parse(name, kind):
    import transformers
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(REPO / "examples" / "accelerate" / f"{name}.yaml"))
    assert config.distributed_type.name == kind and config.num_processes >= 2
    if kind == "FSDP":  # the layers named for wrapping must exist in this transformers
        for layer in config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"].split(","):
            module = "wav2vec2" if layer.startswith("Wav2Vec2") else "roberta"
            assert hasattr(getattr(transformers.models, module), layer) or hasattr(
                __import__(f"transformers.models.{module}.modeling_{module}", fromlist=[layer]), layer
            ), layer


def _corpus_with_bad_audio(tmp_path):
    import numpy as np
    import soundfile

    info = make_iemocap_fixture(tmp_path / "bad", sessions=(1, 2), utterances_per_dialog=4, defects=False)
    test_ids = info["expected"]["4class"]["ids"][2]
    nan_wav = Path(info["utterances"][test_ids[0]]["wav"])
    data, rate = soundfile.read(nan_wav, dtype="float32")
    data[10] = np.nan
    soundfile.write(nan_wav, data, rate, subtype="FLOAT")
    return info, test_ids[0], nan_wav


def test_bad_audio_in_the_test_split_stops_the_run_before_training(tmp_path):
    info, bad_id, bad_wav = _corpus_with_bad_audio(tmp_path)
    args = [
        "--data_dir",
        str(info["data_dir"]),
        "--output_dir",
        str(tmp_path / "out"),
        "--cache_dir",
        str(tmp_path / "cache"),
        *TINY,
        "--folds",
        "2",
        "--num_train_epochs",
        "1",
        "--systems",
        "text",
    ]
    with pytest.raises(
        ValueError,
        match=rf"1 utterance\(s\) have unusable audio:\n  {bad_wav} \(id {bad_id}\): "
        r"holds 1 NaN or infinite sample",
    ):
        run_fdrl.main(args)
    assert not (tmp_path / "out" / "seed42").exists()  # nothing trained
    summary = run_fdrl.main([*args, "--skip_bad_audio", "true"])
    assert [item["id"] for item in summary["audio_check"]["skipped_audio"]] == [bad_id]
    record = json.loads((tmp_path / "out" / "runs" / "seed42_fold2.json").read_text())
    assert bad_id not in record["test_ids"]
    audio_check = json.loads((tmp_path / "out" / "results.json").read_text())["audio_check"]
    assert audio_check["skipped_audio"][0]["path"] == str(bad_wav)


def test_the_test_split_can_read_other_transcripts(corpus, tmp_path):
    """As a speech recogniser's transcripts would be tested: only the test split's text changes."""
    test_ids = _expected_test_ids(corpus, 1)
    rows = ["id,text"] + [f"{uid},okay okay okay" for uid in test_ids]
    (tmp_path / "asr.csv").write_text("\n".join(rows) + "\n")
    args = _args(corpus, tmp_path / "out", "--folds", "1", "--num_train_epochs", "1", "--systems", "text")
    summary = run_fdrl.main([*args, "--test_transcripts", str(tmp_path / "asr.csv")])
    log_probs = json.loads((tmp_path / "out/runs/seed42_fold1.json").read_text())["systems"]["text"]["log_probs"]
    assert summary["systems"]["text"]["num_runs"] == 1
    assert all(row == log_probs[0] for row in log_probs)  # every test utterance now reads the same words
    (tmp_path / "short.csv").write_text("\n".join(rows[:2]) + "\n")
    with pytest.raises(ValueError, match=rf"has no transcript for {len(test_ids) - 1} test utterance"):
        run_fdrl.main(
            [
                *_args(corpus, tmp_path / "out2", "--folds", "1", "--num_train_epochs", "1", "--systems", "text"),
                "--test_transcripts",
                str(tmp_path / "short.csv"),
            ]
        )


@pytest.fixture
def small_disk(tmp_path):
    """A 700 kB tmpfs: room for the run's set-up and the first checkpoint's weights, not for its optimizer state."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root and mount rights): {mounted.stderr.strip()}")
    yield mount_point
    # lazily: the failed write's file handle lives on in the exception's traceback until it is collected
    subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def test_a_full_disk_during_a_checkpoint_is_reported_as_such(corpus, small_disk):
    """Issue 18, cause 13: torch.save's `RuntimeError: [enforce fail at inline_container.cc ...]` on a full disk
    escaped the ENOSPC handler, which caught only OSError; the README promises "a full disk is reported as such"."""
    output_dir = small_disk / "out"
    with pytest.raises(OSError) as error:
        run_fdrl.main(
            _args(corpus, output_dir, "--folds", "2", "--num_train_epochs", "1", "--systems", "S0", "--seed", "3")
        )
    system_dir = output_dir / "seed3" / "fold2" / "S0"
    assert error.value.errno == 28
    assert str(error.value).startswith(
        f"[Errno 28] the disk is full: could not write under {system_dir} ([Errno 28] "
        f"No space left on device while writing a checkpoint under {system_dir} ("
    )
    assert str(error.value).endswith("free space and rerun with --resume_from_checkpoint true")
    written_by = error.value.__cause__.__cause__  # what the library raised: torch's or safetensors' own error
    assert not isinstance(written_by, OSError) and "inline_container" in str(written_by), repr(written_by)


# ----- your own classes: --labels end to end (issue 22) --------------------------------------------------------------
SIX = ("neu", "ang", "sad", "hap", "fru", "exc")


def _six_class_manifest(corpus, path, labels=SIX):
    """The fixture's utterances with a WAV and words, labelled with `labels` in turn (every class in every session).
    Returns (path, the labels of the rows)."""
    rows, given = ["id,audio,text,label,session"], []
    usable = [u for u in corpus["utterances"].values() if u["text"].strip() and Path(u["wav"]).is_file()]
    for session in (1, 2, 3):
        members = [u for u in usable if u["session"] == session]
        for index, u in enumerate(members):
            text = u["text"].replace('"', '""')
            given.append(labels[index % len(labels)])
            rows.append(f'{u["id"]},{u["wav"]},"{text}",{given[-1]},{session}')
    path.write_text("\n".join(rows) + "\n")
    return path, given


def test_six_classes_travel_to_the_model_the_table_the_card_and_predict(corpus, tmp_path, caplog):
    from fdrl.cli import predict
    from modeling_fdrl import FDRLModel

    caplog.set_level(logging.DEBUG)  # what the loggers let through at run_fdrl.py's default --log_level passive

    manifest, _ = _six_class_manifest(corpus, tmp_path / "six.csv")
    output_dir = tmp_path / "out"
    systems = ["S0", "S1", "S2", "S3", "S4", "S5", "S6", "speech", "text", "concat", "late_fusion"]
    argv = ["--manifest", str(manifest), "--labels", ",".join(SIX), "--folds", "1", "--num_train_epochs", "1"]
    summary = run_fdrl.main([*argv, "--systems", *systems, "--output_dir", str(output_dir), *TINY])
    assert summary["label_names"] == list(SIX) and list(summary["systems"]) == systems  # every system ran
    listed = [r.getMessage() for r in caplog.records if r.name == "fdrl.data.labels"]
    assert listed == ["classes (6, from --labels): neu, ang, sad, hap, fru, exc"]  # logged before training
    record = json.loads((output_dir / "runs" / "seed42_fold1.json").read_text())
    for name in systems:
        assert (
            len(record["systems"][name]["confusion_matrix"]) == 6 and len(record["systems"][name]["log_probs"][0]) == 6
        )
    header = (output_dir / "results.md").read_text().splitlines()[0]
    assert header.endswith(" | ".join(f"recall {label}" for label in SIX) + " |")
    # the model: id2label in --labels' order, one local discriminator per class (eq. 5)
    model = FDRLModel.from_pretrained(output_dir / "model")
    assert model.config.id2label == dict(enumerate(SIX)) and model.config.label2id == {c: i for i, c in enumerate(SIX)}
    assert len(model.local_discriminators) == 6 and model.fusion.classifier.out_features == 6
    card = (output_dir / "model" / "README.md").read_text()
    assert "Labels (6 classes, in label-id order):** neu, ang, sad, hap, fru, exc" in card
    # fdrl-predict names the six classes, in the model's order
    recordings = tmp_path / "recordings.csv"
    test_ids = json.loads((output_dir / "seed42" / "fold1" / "splits.json").read_text())["test"][:3]
    lines = ["id,audio,text"] + [
        f'{i},{corpus["utterances"][i]["wav"]},"{corpus["utterances"][i]["text"]}"' for i in test_ids
    ]
    recordings.write_text("\n".join(lines) + "\n")
    predictions = tmp_path / "predictions.csv"
    argv = ["--model", str(output_dir / "model"), "--input", str(recordings), "--output", str(predictions)]
    assert predict.main([*argv, "--device", "cpu"]) == 0
    import csv

    with open(predictions, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames[:4] == ["id", "audio", "label", "score"]
    assert reader.fieldnames[4:10] == [f"score_{label}" for label in SIX]
    assert [row["id"] for row in rows] == test_ids and all(row["label"] in SIX for row in rows)
    for row in rows:
        scores = [float(row[f"score_{label}"]) for label in SIX]
        assert sum(scores) == pytest.approx(1.0, abs=1e-4) and row["label"] == SIX[scores.index(max(scores))]


def test_a_label_outside_labels_is_refused_with_the_known_ones(corpus, tmp_path):
    from collections import Counter

    manifest, given = _six_class_manifest(corpus, tmp_path / "six.csv")
    argv = ["--manifest", str(manifest), "--labels", "neu,ang,sad,hap", "--folds", "1", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError) as error:
        run_fdrl.main([*argv, *TINY])
    message, counts = str(error.value), Counter(given)
    assert counts["exc"] >= 3 and counts["fru"] >= 3
    assert message.startswith(
        f"{counts['exc'] + counts['fru']} unknown label(s) in {manifest} (known: neu, ang, sad, hap, from --labels): "
        f"'exc' ({counts['exc']} row(s)), 'fru' ({counts['fru']} row(s)). row 5 (line 6): 'fru'; row 6 (line 7): 'exc'"
    )
    assert message.endswith(
        "Fix those rows, or set the classes with --labels (labels=[...] in Python), in label-id "
        "order, e.g. --labels neu,ang,sad"
    )
    assert not (tmp_path / "seed42").exists()  # nothing trained


def test_labels_arguments_and_a_builders_classes(corpus, tmp_path):
    from types import SimpleNamespace

    from fdrl.data.corpus import load_corpus
    from fdrl.training.arguments import parse_arguments

    common = [
        "--data_dir",
        str(corpus["data_dir"]),
        "--folds",
        "1",
        "--model_preset",
        "tiny",
        "--output_dir",
        str(tmp_path),
    ]
    for labels in (["sad,neu", "ang,hap"], ["sad", "neu", "ang", "hap"], ["sad,neu,ang,hap"]):
        _, data_args, _ = parse_arguments([*common, "--labels", *labels])
        assert data_args.labels == ("sad", "neu", "ang", "hap")
    from fdrl.training.arguments import DataArguments

    assert DataArguments(data_dir=str(corpus["data_dir"]), labels="sad, neu").labels == ("sad", "neu")  # Python
    assert DataArguments(data_dir=str(corpus["data_dir"])).labels is None
    with pytest.raises(ValueError, match="--labels needs at least two classes"):
        parse_arguments([*common, "--labels", "neu"])
    with pytest.raises(ValueError, match="--labels names each class once, got neu more than once"):
        parse_arguments([*common, "--labels", "neu,ang,neu"])
    with pytest.raises(ValueError, match="--dataset must be one of iemocap, meld, got 'msp'"):
        parse_arguments([*common, "--dataset", "msp"])
    # the IEMOCAP builder keeps its four unless --labels reorders them; the same rows, the ids follow the names
    cache = str(corpus["data_dir"].parent / "cache")
    own = load_corpus(SimpleNamespace(data_dir=str(corpus["data_dir"]), manifest=None, cache_dir=cache))
    assert own["session1"].features["label"].names == ["ang", "hap", "neu", "sad"]
    reordered = load_corpus(
        SimpleNamespace(data_dir=str(corpus["data_dir"]), manifest=None, cache_dir=cache, labels="sad,neu,ang,hap")
    )
    for session in own:
        names = reordered[session].features["label"].names
        assert [names[i] for i in reordered[session]["label"][:]] == [
            ["ang", "hap", "neu", "sad"][i] for i in own[session]["label"][:]
        ]
