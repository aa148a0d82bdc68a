"""Issue 18, the protocol side: what `run_fdrl.py` refuses before it trains (a finished or partial --output_dir, a
resume with other settings, a fold that cannot train every class, impossible training arguments), and what it
repairs on resume (damaged run records, damaged checkpoint weights), each through the real entry point."""

import csv
import json
import shutil

import pytest
from test_run_fdrl import TINY, _args

import run_fdrl
from iemocap_fixture import make_iemocap_fixture


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_iemocap_fixture(tmp_path_factory.mktemp("iemocap"), sessions=(1, 2, 3), utterances_per_dialog=6)


def _write_manifest(corpus, path, keep=lambda u: True, text=lambda u: u["text"]):
    """The fixture's usable four-class utterances as a manifest (id, audio, text, label, session)."""
    usable = [
        u
        for u in corpus["utterances"].values()
        if u["label_4class"] and u["has_wav"] and u["has_transcript"] and u["text"].strip() and keep(u)
    ]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "audio", "text", "label", "session"])
        for u in usable:
            writer.writerow([u["id"], u["wav"], text(u), u["label_4class"], u["session"]])
    return usable


def _manifest_args(manifest, output_dir, *extra):
    return ["--manifest", str(manifest), "--output_dir", str(output_dir), *TINY, *extra]


# ----- cause 1: a finished or partial --output_dir --------------------------------------------------------------------
def test_an_earlier_run_in_the_output_dir_is_refused_unless_resumed_or_overwritten(corpus, tmp_path):
    out = tmp_path / "out"
    common = ["--folds", "1", "--num_train_epochs", "1", "--seed", "3"]
    run_fdrl.main(_args(corpus, out, *common, "--systems", "text"))
    results = (out / "results.json").read_bytes()
    (out / "notes.txt").write_text("mine")
    late_cache = tmp_path / "late_cache"  # the data would be read (and cached) here if the run went on
    for removed in (None, "results.json"):  # finished, then partial (records and fold folders, no results)
        if removed:
            (out / removed).unlink()
        with pytest.raises(FileExistsError) as refused:
            run_fdrl.main(_args(corpus, out, *common, "--systems", "text", "--cache_dir", str(late_cache)))
        message = str(refused.value)
        assert message.startswith(f"--output_dir {out} holds an earlier run (")
        assert "runs/seed3_fold1.json, seed3)" in message and "--resume_from_checkpoint true" in message
        assert "--overwrite_output_dir true" in message and not late_cache.exists()  # before any data was read
    assert json.loads(results)["systems"]["text"]["num_runs"] == 1
    # start over with another system: the old record is not reused, the user's own file is left
    summary = run_fdrl.main(_args(corpus, out, *common, "--systems", "speech", "--overwrite_output_dir", "true"))
    record = json.loads((out / "runs" / "seed3_fold1.json").read_text())
    assert list(record["systems"]) == ["speech"] and list(summary["systems"]) == ["speech"]
    assert not (out / "seed3" / "fold1" / "text").exists() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="--overwrite_output_dir .* and --resume_from_checkpoint .* contradict"):
        run_fdrl.main(_args(corpus, out, *common, "--overwrite_output_dir", "true", "--resume_from_checkpoint", "true"))


# ----- cause 2: a resume with other settings --------------------------------------------------------------------------
def test_a_resume_with_other_settings_is_refused_naming_each_change(corpus, tmp_path):
    common = ["--folds", "1", "--num_train_epochs", "1", "--seed", "3", "--systems", "text"]
    run_fdrl.main(_args(corpus, tmp_path, *common))
    settings = json.loads((tmp_path / "run_settings.json").read_text())
    assert settings["learning_rate"] == 0.001 and settings["model_preset"] == "tiny" and settings["alpha"] is None
    assert not {"seeds", "seed", "folds", "systems", "logging_steps", "output_dir", "cache_dir"} & set(settings)
    record_before = json.loads((tmp_path / "runs" / "seed3_fold1.json").read_text())
    resume = ["--resume_from_checkpoint", "true"]
    with pytest.raises(ValueError) as refused:
        run_fdrl.main(_args(corpus, tmp_path, *common, *resume, "--learning_rate", "0.01", "--alpha", "0.5"))
    message = str(refused.value)
    assert "--alpha None -> 0.5; --learning_rate 0.001 -> 0.01." in message
    assert message.count(" -> ") == 2 and "--overwrite_output_dir true" in message
    # a seed and a system more, other logging: the same run, carried on
    more = ["--seeds", "3", "4", "--systems", "text", "speech", "--logging_steps", "5"]
    summary = run_fdrl.main(_args(corpus, tmp_path, *common, *resume, *more))
    assert summary["num_runs"] == 2 and summary["systems"]["speech"]["num_runs"] == 2
    record_after = json.loads((tmp_path / "runs" / "seed3_fold1.json").read_text())
    assert record_after["systems"]["text"] == record_before["systems"]["text"]  # reused, not retrained


def test_the_settings_that_define_a_run_are_training_arguments():
    from fdrl.training.run_folder import TRAINING_SETTINGS
    from fdrl.training.trainer import FDRLTrainingArguments

    fields = {f.name for f in FDRLTrainingArguments.__dataclass_fields__.values()}
    assert set(TRAINING_SETTINGS) <= fields, set(TRAINING_SETTINGS) - fields
    assert not {"logging_steps", "disable_tqdm", "log_level", "report_to", "push_to_hub", "hub_model_id"} & set(
        TRAINING_SETTINGS
    )
    assert not {"dataloader_num_workers", "parallel_runs", "seeds", "folds", "systems"} & set(TRAINING_SETTINGS)


# ----- cause 3: a training split without every class ------------------------------------------------------------------
def test_a_fold_whose_training_split_lacks_a_class_is_refused_before_any_fold_trains(corpus, tmp_path, caplog):
    manifest = tmp_path / "data.csv"
    rows = _write_manifest(corpus, manifest, keep=lambda u: u["label_4class"] != "sad" or u["session"] == 1)
    sad = sum(u["label_4class"] == "sad" for u in rows)
    counts = {c: sum(u["label_4class"] == c and u["session"] != 1 for u in rows) for c in ("ang", "hap", "neu")}
    out = tmp_path / "out"
    common = ["--num_train_epochs", "1", "--systems", "text"]
    with pytest.raises(ValueError) as refused:
        run_fdrl.main(_manifest_args(manifest, out, *common, "--folds", "2", "1"))  # fold 2 is fine, fold 1 is not
    has = ", ".join(f"{c} ({n})" for c, n in counts.items())
    assert str(refused.value).startswith(f"test session 1: the train split lacks sad (it has {has})\n")
    assert "leave those test sessions out of --folds" in str(refused.value) and sad > 0
    assert not (out / "seed42").exists()  # not even fold 2 trained
    caplog.set_level("WARNING")
    summary = run_fdrl.main(_manifest_args(manifest, out, *common, "--folds", "2"))
    assert summary["num_runs"] == 1
    assert "test session 2: the test split lacks sad (it has ang (" in caplog.text


# ----- cause 12: impossible training arguments ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num_train_epochs", "0"], "--num_train_epochs must be positive, got 0"),
        (["--num_train_epochs", "-2"], "--num_train_epochs must be positive, got -2"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be positive, got 0"),
        (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size must be positive, got 0"),
        (["--unimodal_epochs", "-1"], "--unimodal_epochs must be positive, got -1"),
        (["--validation_fraction", "0"], r"--validation_fraction must lie in \(0, 1\), got 0"),
        (["--validation_fraction", "1"], r"--validation_fraction must lie in \(0, 1\), got 1"),
        (["--seeds", ""], "--seeds is empty"),
        (["--systems", " , "], "--systems is empty"),
        (["--folds", ""], "--folds is empty"),
    ],
)
def test_impossible_training_arguments_fail_before_the_output_dir_exists(corpus, tmp_path, extra, message):
    out = tmp_path / "out"
    folds = [] if "--folds" in extra else ["--folds", "1"]
    with pytest.raises(ValueError, match=message):
        run_fdrl.main(_args(corpus, out, *folds, *extra))
    assert not out.exists()


# ----- cause 14: a damaged run record ---------------------------------------------------------------------------------
def test_a_damaged_run_record_is_named_and_rerun_on_resume(corpus, tmp_path, caplog):
    common = ["--folds", "2", "--num_train_epochs", "1", "--seed", "3", "--systems", "speech"]
    run_fdrl.main(_args(corpus, tmp_path, *common))
    path = tmp_path / "runs" / "seed3_fold2.json"
    good = json.loads(path.read_text())
    damages = {
        "system speech: uar = 'n/a' is not a number": lambda r: r["systems"]["speech"].update(uar="n/a"),
        "system speech: no 'war'": lambda r: r["systems"]["speech"].pop("war"),
        "'systems' is list, not a mapping": lambda r: r.update(systems=[r["systems"]["speech"]]),
        "system speech: recall = {'ang': 'x'": lambda r: r["systems"]["speech"].update(recall={"ang": "x"}),
    }
    caplog.set_level("WARNING")
    for problem, damage in damages.items():
        record = json.loads(json.dumps(good))
        damage(record)
        path.write_text(json.dumps(record))
        caplog.clear()
        summary = run_fdrl.main(_args(corpus, tmp_path, *common, "--resume_from_checkpoint", "true"))
        assert f"{path} is damaged ({problem}" in caplog.text and "that run starts again" in caplog.text
        redone = json.loads(path.read_text())["systems"]["speech"]
        assert summary["num_runs"] == 1 and isinstance(redone["uar"], float)
        assert redone["num_samples"] == good["systems"]["speech"]["num_samples"]


# ----- cause 8 (resume half): a checkpoint whose weights are damaged --------------------------------------------------
def test_resume_skips_a_checkpoint_whose_weights_are_damaged(corpus, tmp_path, caplog):
    from fdrl.training.checkpoints import latest_complete_checkpoint

    common = ["--folds", "2", "--num_train_epochs", "2", "--keep_checkpoints", "true", "--seed", "3"]
    run_fdrl.main(_args(corpus, tmp_path / "full", *common, "--systems", "speech"))
    full_dir = tmp_path / "full/seed3/fold2"
    first, last = sorted((full_dir / "speech").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    weights = last / "model.safetensors"
    size = weights.stat().st_size
    # overwritten with garbage: the newest complete checkpoint is the one before
    garbage = tmp_path / "garbage"
    shutil.copytree(first, garbage / first.name)
    shutil.copytree(last, garbage / last.name)
    (garbage / last.name / "model.safetensors").write_bytes(b"\x13" * size)
    caplog.set_level("WARNING")
    assert latest_complete_checkpoint(garbage) == str(garbage / first.name)
    assert f"skipping the checkpoint {garbage / last.name}: its weights are damaged (model.safetensors" in caplog.text
    # cut short: the protocol resumes from the complete one and trains on to the same step
    resumed_dir = tmp_path / "resumed/seed3/fold2"
    shutil.copytree(first, resumed_dir / "speech" / first.name)
    shutil.copytree(last, resumed_dir / "speech" / last.name)
    damaged = resumed_dir / "speech" / last.name / "model.safetensors"
    damaged.write_bytes(weights.read_bytes()[: size // 2])
    shutil.copytree(full_dir / "processor", resumed_dir / "processor")
    caplog.clear()
    resume = ["--systems", "speech", "--resume_from_checkpoint", "true"]
    run_fdrl.main(_args(corpus, tmp_path / "resumed", *common, *resume))
    assert f"skipping the checkpoint {damaged.parent}: its weights are damaged (model.safetensors (its header" in (
        caplog.text
    )
    state = json.loads((resumed_dir / "speech" / "trainer_state.json").read_text())
    assert state["global_step"] == int(last.name.split("-")[1])


# ----- training applies inference's transcript rule -------------------------------------------------------------------
def test_transcripts_the_tokenizer_cannot_read_are_skipped_counted_and_named(corpus, tmp_path, caplog):
    """An emoji-only transcript in the test session: the fold's vocabulary (learnt on training) reads it as [UNK]
    only, so the utterance is left out of the test split, as an empty transcript is, and named."""
    manifest = tmp_path / "data.csv"
    test_ids = [u["id"] for u in _write_manifest(corpus, manifest) if u["session"] == 1]
    emoji = set(test_ids[:2])
    _write_manifest(corpus, manifest, text=lambda u: "\U0001f389\U0001f389" if u["id"] in emoji else u["text"])
    caplog.set_level("WARNING")
    args = ["--folds", "1", "--num_train_epochs", "1", "--systems", "text"]
    run_fdrl.main(_manifest_args(manifest, tmp_path / "out", *args))
    record = json.loads((tmp_path / "out" / "runs" / "seed42_fold1.json").read_text())
    assert record["test_ids"] == [u for u in test_ids if u not in emoji]
    assert record["systems"]["text"]["num_samples"] == len(test_ids) - 2
    first = test_ids[0]
    assert f"test: skipped 2 utterance(s) whose transcript has no word to read, e.g. {first}: the transcript" in (
        caplog.text
    )
