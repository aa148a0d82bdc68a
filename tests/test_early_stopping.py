"""`--early_stopping_patience`: a system stops once validation UAR has not improved for that many evaluations, keeps
its best epoch, and says how many epochs it trained; on cached features (KeepBestTrainable) and when fine-tuning
(checkpoints and `load_best_model_at_end`) alike."""

import json
import shutil
import types

import pytest
import torch
from test_parallel_runs import corpus as corpus  # noqa: F401 (the same module fixture: a corpus without defects)
from test_parallel_runs import tiny_cpu_args
from transformers import Trainer, TrainerControl, TrainerState

import run_fdrl
from fdrl.training.trainer import EarlyStopping, FDRLTrainingArguments, KeepBestTrainable, system_callbacks


def _args(corpus, output_dir, *extra):
    return tiny_cpu_args(corpus, output_dir, "--folds", "1", "--seed", "5", *extra)


def _evaluations(system_dir):
    state = json.loads((system_dir / "trainer_state.json").read_text())
    return [entry["epoch"] for entry in state["log_history"] if "eval_uar" in entry]


@pytest.mark.parametrize("frozen", ["true", "false"])
def test_a_flat_validation_uar_stops_after_patience_evaluations(corpus, tmp_path, frozen, capsys):
    # at lr 1e-12 no prediction moves: the first evaluation is the best and each later one fails to improve, so
    # patience 2 stops after epoch 3 of 6 (the first one plus two without improvement)
    extra = ["--freeze_backbones", frozen, "--learning_rate", "1e-12", "--num_train_epochs", "6", "--systems", "S0"]
    run_fdrl.main(_args(corpus, tmp_path, *extra, "speech", "--early_stopping_patience", "2"))
    record = json.loads((tmp_path / "runs" / "seed5_fold1.json").read_text())
    lines = [line for line in capsys.readouterr().err.splitlines() if "validation UAR" in line]
    for name in ("S0", "speech"):
        assert _evaluations(tmp_path / "seed5" / "fold1" / name) == [1.0, 2.0, 3.0]
        assert record["systems"][name]["epochs_trained"] == 3.0
        assert sum(f"fold 1, {name}: validation UAR" in line and line.endswith(", 3 epochs") for line in lines) == 1
    assert len(lines) == 2
    card = (tmp_path / "model" / "README.md").read_text()
    budget = "at most 6 epochs, stopping once validation UAR has not improved for 2 evaluations.\n"
    assert f"- **Training budget:** AdamW, learning rate 1e-12, batch 8 per device, {budget}" in card
    # the patience defines the run: carrying it on with another one would mix systems trained for other budgets
    with pytest.raises(ValueError, match="--early_stopping_patience 2 -> 3"):
        run_fdrl.main(
            _args(corpus, tmp_path, *extra, "--early_stopping_patience", "3", "--resume_from_checkpoint", "true")
        )


def test_without_patience_every_epoch_is_trained(corpus, tmp_path):
    run_fdrl.main(_args(corpus, tmp_path, "--freeze_backbones", "true", "--learning_rate", "1e-12",
                        "--num_train_epochs", "4", "--systems", "speech"))  # fmt: skip
    assert _evaluations(tmp_path / "seed5" / "fold1" / "speech") == [1.0, 2.0, 3.0, 4.0]
    assert json.loads((tmp_path / "runs" / "seed5_fold1.json").read_text())["systems"]["speech"]["epochs_trained"] == 4


@pytest.mark.parametrize("reverse", [False, True])
def test_early_stopping_and_keep_best_count_against_the_best_before_the_evaluation(tmp_path, reverse):
    # the callbacks of a system on cached features, then Trainer's own update of the best value, on validation UAR
    # 0.5, 0.6, 0.6, 0.55: 0.6 is an improvement, so the count is 0, 0, 1, 2 and patience 2 stops after the fourth
    # evaluation; KeepBestTrainable keeps the second evaluation's weights. Both read `state.best_metric` before
    # Trainer raises it, so the callbacks' order does not matter
    args = FDRLTrainingArguments(output_dir=str(tmp_path), early_stopping_patience=2, use_cpu=True)
    callbacks = system_callbacks(args, frozen=True)
    assert [type(c) for c in callbacks] == [EarlyStopping, KeepBestTrainable]
    keep_best = callbacks[1]
    model = torch.nn.Linear(2, 1)
    trainer = types.SimpleNamespace(args=args, state=TrainerState())  # what `_determine_best_metric` reads
    control, stops, kept = TrainerControl(), [], []
    for evaluation, uar in enumerate([0.5, 0.6, 0.6, 0.55]):
        with torch.no_grad():
            model.bias.fill_(evaluation)  # which evaluation's weights KeepBestTrainable kept
        for callback in reversed(callbacks) if reverse else callbacks:
            callback.on_evaluate(args, trainer.state, control, metrics={"eval_uar": uar}, model=model)
        Trainer._determine_best_metric(trainer, {"eval_uar": uar}, None)
        stops.append(control.should_training_stop)
        kept.append(keep_best.best_state["bias"].item())
    assert stops == [False, False, False, True]
    assert trainer.state.best_metric == 0.6 and kept == [0.0, 1.0, 1.0, 1.0]
    keep_best.on_train_end(args, trainer.state, control, model=model)
    assert model.bias.item() == 1.0
    assert system_callbacks(FDRLTrainingArguments(output_dir=str(tmp_path), use_cpu=True), frozen=False) == []


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--early_stopping_patience", "0"], "--early_stopping_patience must be at least 1, got 0"),
        (["--early_stopping_patience", "3", "--eval_strategy", "no", "--save_strategy", "no",
          "--load_best_model_at_end", "false"], "--early_stopping_patience needs evaluations to count"),
    ],
)  # fmt: skip
def test_bad_patience_is_refused_before_anything_runs(corpus, tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        run_fdrl.main(_args(corpus, tmp_path, *extra))
    assert not (tmp_path / "seed5").exists()


def test_a_resumed_fine_tuning_run_stops_where_the_uninterrupted_one_did(corpus, tmp_path):
    # patience 2 on a flat validation UAR stops after epoch 3 of 6; the checkpoint of epoch 2 holds one evaluation
    # without improvement, so a run resumed from it stops after epoch 3 too (with the count started anew from 0 it
    # would stop after epoch 4)
    common = ["--freeze_backbones", "false", "--learning_rate", "1e-12", "--num_train_epochs", "6", "--systems", "S0",
              "--early_stopping_patience", "2", "--keep_checkpoints", "true", "--save_total_limit", "10"]  # fmt: skip
    run_fdrl.main(_args(corpus, tmp_path / "full", *common))
    full_dir = tmp_path / "full" / "seed5" / "fold1"
    checkpoints = sorted((full_dir / "S0").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) == 3  # epochs 1, 2, 3
    state = json.loads((checkpoints[1] / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["EarlyStopping"]["attributes"]["early_stopping_patience_counter"] == 1
    resumed_dir = tmp_path / "resumed" / "seed5" / "fold1"
    shutil.copytree(checkpoints[1], resumed_dir / "S0" / checkpoints[1].name)
    shutil.copytree(full_dir / "processor", resumed_dir / "processor")
    run_fdrl.main(_args(corpus, tmp_path / "resumed", *common, "--resume_from_checkpoint", "true"))
    assert _evaluations(resumed_dir / "S0") == [1.0, 2.0, 3.0]
    record = json.loads((tmp_path / "resumed" / "runs" / "seed5_fold1.json").read_text())
    assert record["systems"]["S0"]["epochs_trained"] == 3.0
    full = json.loads((tmp_path / "full" / "runs" / "seed5_fold1.json").read_text())["systems"]["S0"]
    assert record["systems"]["S0"]["log_probs"] == full["log_probs"]  # the same kept model (epoch 1)
