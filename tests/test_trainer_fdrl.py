import math

import numpy as np
import pytest
import torch
from transformers import Trainer

from conftest import make_batch, tiny_fdrl_config
from fdrl.training.trainer import (
    LOSS_TERMS,
    STAT_KEYS,
    DivergenceGuard,
    FDRLDataCollator,
    FDRLTrainer,
    FDRLTrainingArguments,
    parameter_groups,
)
from modeling_fdrl import FDRLModel, dynamic_factor_from_statistics
from processing_fdrl import FDRLProcessor


def _example(seconds, text, label, rate=16000):
    return {
        "id": f"utt{label}",
        "audio": {"array": np.ones(int(seconds * rate), np.float32), "sampling_rate": rate},
        "text": text,
        "label": label,
    }


def test_collator_batches_both_modalities_or_one():
    processor = FDRLProcessor.from_texts(["hello there", "good day to you"], vocab_size=60)
    examples = [_example(0.5, "hello there", 1), _example(0.25, "good day to you", 3, rate=8000)]
    batch = FDRLDataCollator(processor)(examples)
    assert batch["input_values"].shape == (2, 8000)  # 0.25 s at 8 kHz resampled to 4000 samples, padded
    assert batch["audio_attention_mask"].sum(1).tolist() == [8000, 4000]
    assert batch["labels"].tolist() == [1, 3]
    assert set(FDRLDataCollator(processor, modalities=("text",))(examples)) == {
        "input_ids",
        "text_attention_mask",
        "token_type_ids",
        "labels",
    }
    assert set(FDRLDataCollator(processor, modalities=("audio",))(examples)) == {
        "input_values",
        "audio_attention_mask",
        "labels",
    }
    # padded to whole seconds: 8,000 samples -> 16,000, the real samples and masks as before
    padded = FDRLDataCollator(processor, audio_pad_to_multiple_of_s=1.0)(examples)
    assert padded["input_values"].shape == (2, 16000) and padded["input_values"][:, 8000:].eq(0).all()
    assert torch.equal(padded["input_values"][:, :8000], batch["input_values"])
    assert padded["audio_attention_mask"].sum(1).tolist() == [8000, 4000]
    assert torch.equal(FDRLDataCollator(processor, 128, ("text",), 1.0)(examples)["input_ids"], batch["input_ids"])
    broken = dict(examples[0], id="Ses01F_impro01_F000", audio={"sampling_rate": 16000})
    with pytest.raises(ValueError, match="Ses01F_impro01_F000"):
        FDRLDataCollator(processor)([broken])


@pytest.fixture
def trainer(tmp_path):
    torch.manual_seed(0)
    args = FDRLTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        folds=[1],
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
    )
    return FDRLTrainer(model=FDRLModel(tiny_fdrl_config()), args=args)


def test_epoch_statistics_are_summed_and_give_mu(trainer):
    model = trainer.model.train()
    outputs = []
    for seed in (0, 1):
        loss, output = trainer.compute_loss(model, make_batch(seed=seed), return_outputs=True)
        outputs.append(output)
    summed = {key: sum(o[key].detach().double() for o in outputs) for key in STAT_KEYS}
    expected = dynamic_factor_from_statistics(summed, "daan", "error", 0.5, (0.05, 0.95))
    assert summed["global_count"].item() == 16  # 2 batches x 4 utterances x 2 modalities
    assert trainer.end_epoch() == pytest.approx(expected)
    assert trainer.model.dynamic_factor.item() == pytest.approx(expected)
    assert trainer.end_epoch() is None  # statistics were reset


@pytest.mark.parametrize("max_grad_norm", [0.05, 1e6, "nan"])
def test_one_process_clipping_is_accelerates_bit_for_bit(trainer, max_grad_norm):
    """`SystemTrainer._clip_grad_norm` calls torch's clipping directly, and on CPU scales the gradients only when
    their norm is above the bound; Trainer's goes through accelerate's wrapper. Same gradients in, the same norm
    and the same gradients out: clipped (bound 0.05), left as they are (bound 1e6), all NaN (one NaN gradient)."""
    model = trainer.model.train()
    trainer.args.max_grad_norm = 1.0 if max_grad_norm == "nan" else max_grad_norm
    trainer.compute_loss(model, make_batch(seed=0)).backward()
    parameters = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm == "nan":
        parameters[0].grad[0] = float("nan")
    gradients = [p.grad.clone() for p in parameters]
    norm = trainer._clip_grad_norm(model)
    mine = [p.grad.clone() for p in parameters]
    for parameter, gradient in zip(parameters, gradients):
        parameter.grad = gradient.clone()
    reference = Trainer._clip_grad_norm(trainer, model)
    assert len(parameters) > 40
    assert torch.equal(norm.nan_to_num(7.0), reference.nan_to_num(7.0))  # NaN: both NaN
    assert all(torch.equal(m.nan_to_num(7.0), p.grad.nan_to_num(7.0)) for m, p in zip(mine, parameters))
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in mine]))
    if max_grad_norm == 0.05:
        assert norm.item() > 0.5 and not torch.equal(mine[0], gradients[0])
        assert total.item() == pytest.approx(0.05, rel=1e-4)
    elif max_grad_norm == 1e6:
        assert all(torch.equal(m, g) for m, g in zip(mine, gradients)) and total.item() == pytest.approx(norm.item())
    else:
        assert math.isnan(norm.item()) and all(m.isnan().all() for m in mine)


def test_logs_carry_the_averaged_terms_mu_and_grl(trainer):
    model = trainer.model.train()
    outputs = [trainer.compute_loss(model, make_batch(seed=s), return_outputs=True)[1] for s in (0, 1)]
    trainer.log({"loss": 1.0})
    entry = trainer.state.log_history[-1]
    for term in LOSS_TERMS:
        assert entry[term] == pytest.approx((outputs[0][term] + outputs[1][term]).item() / 2, abs=2e-6), term
    assert entry["dynamic_factor"] == 0.5 and entry["grl_coefficient"] == 0.0  # progress 0 at step 0
    trainer.log({"eval_loss": 2.0})  # evaluation logs are left alone
    assert "loss_task" not in trainer.state.log_history[-1]


def test_collator_stacks_cached_pooled_features():
    examples = [
        {"id": "a", "label": 2, "pooled_audio": torch.ones(5), "pooled_text": torch.zeros(3)},
        {"id": "b", "label": 0, "pooled_audio": torch.full((5,), 2.0), "pooled_text": torch.ones(3)},
    ]
    batch = FDRLDataCollator()(examples)
    assert batch["pooled_audio"].shape == (2, 5) and batch["pooled_text"].shape == (2, 3)
    assert batch["pooled_audio"][1, 0].item() == 2.0 and batch["labels"].tolist() == [2, 0]
    assert set(FDRLDataCollator(modalities=("text",))(examples)) == {"pooled_text", "labels"}


def test_training_representations_of_cached_features_are_the_model_on_a_fixed_subset(tmp_path):
    """On cached pooled features the reference subset is collated once and runs as one batch: the same S_a and S_t
    as the model gives each row alone, on min(alignment_train_samples, rows) rows fixed by the seed."""
    torch.manual_seed(0)
    config = tiny_fdrl_config()
    audio_size, text_size = config.audio_config.hidden_size, config.text_config.hidden_size
    rows = [
        {"id": f"u{i}", "label": i % 4, "pooled_audio": torch.randn(audio_size), "pooled_text": torch.randn(text_size)}
        for i in range(11)
    ]
    args = FDRLTrainingArguments(
        output_dir=str(tmp_path),
        use_cpu=True,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        load_best_model_at_end=False,
        alignment_train_samples=7,
        seed=3,
    )
    trainer = FDRLTrainer(model=FDRLModel(config), args=args, train_dataset=rows, data_collator=FDRLDataCollator())
    trainer.model.train()
    shared_audio, shared_text, labels = trainer.training_representations()
    assert trainer.model.training  # left as it was
    chosen = np.sort(np.random.default_rng(3).permutation(11)[:7])
    assert labels.tolist() == [rows[i]["label"] for i in chosen]
    model = trainer.model.eval()
    with torch.no_grad():
        for position, i in enumerate(chosen):
            alone = model(pooled_audio=rows[i]["pooled_audio"][None], pooled_text=rows[i]["pooled_text"][None])
            np.testing.assert_allclose(shared_audio[position], alone.shared_audio[0].numpy(), rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(shared_text[position], alone.shared_text[0].numpy(), rtol=1e-5, atol=1e-6)
    assert trainer.training_representations()[0].shape == (7, config.hidden_size)  # the cached batch, again


def test_backbones_and_heads_get_their_own_learning_rates():
    model = FDRLModel(tiny_fdrl_config())
    heads, backbones = parameter_groups(model, 1e-3, 1e-5)
    assert (heads["lr"], backbones["lr"]) == (1e-3, 1e-5)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith(("audio_model.", "text_model.")) for p in backbones["params"])
    assert not any(names[id(p)].startswith(("audio_model.", "text_model.")) for p in heads["params"])
    assert len(heads["params"]) + len(backbones["params"]) == sum(p.requires_grad for p in model.parameters())
    model.text_model.requires_grad_(False)  # frozen parameters are left out
    assert len(parameter_groups(model, 1e-3)[1]["params"]) == sum(
        p.requires_grad for p in model.audio_model.parameters()
    )


def test_the_adversarial_path_gets_its_own_learning_rate():
    model = FDRLModel(tiny_fdrl_config())
    heads, adversarial, backbones = parameter_groups(model, 1e-3, None, adversarial_learning_rate=1e-5)
    assert (heads["lr"], adversarial["lr"], backbones["lr"]) == (1e-3, 1e-5, 1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    expected = [
        n
        for n, _ in model.named_parameters()
        if n.startswith(("shared_encoder.", "global_discriminator.", "local_discriminators."))
    ]
    assert sorted(names[id(p)] for p in adversarial["params"]) == sorted(expected) and len(expected) == 4 + 4 * 5
    total = len(heads["params"]) + len(adversarial["params"]) + len(backbones["params"])
    assert total == sum(p.requires_grad for p in model.parameters())
    assert len(parameter_groups(model, 1e-3)) == 2  # None: no separate group
    assert len(parameter_groups(model, 1e-5, None, 1e-5)) == 2  # the paper's rate: no separate group either
    assert parameter_groups(model, 1e-6, None, 1e-5)[0]["lr"] == 1e-6  # never faster than the rest


def _guard_run(norm_growths, caplog, factor=10.0):
    guard = DivergenceGuard(factor)
    state = type("State", (), {})()
    with caplog.at_level("WARNING", logger="fdrl.training.trainer"):
        caplog.clear()
        for epoch, growth in enumerate(norm_growths, start=1):
            state.epoch = float(epoch)
            guard.on_evaluate(None, state, None, metrics={"eval_alignment_norm_growth": growth, "eval_uar": 0.5})
    return [r.getMessage() for r in caplog.records if r.name == "fdrl.training.trainer"]


def test_divergence_guard_fires_once_on_growing_norms_and_names_epoch_and_factor(caplog):
    messages = _guard_run([1.0, 2.5, 8.0, 40.0, 900.0, 3000.0], caplog)
    assert len(messages) == 1
    assert messages[0].startswith("epoch 4: the shared vectors S_a, S_t have grown 40x")
    assert "--divergence_factor 10" in messages[0] and "--adversarial_objective confusion" in messages[0]
    assert len(_guard_run([1.0, float("nan")], caplog)) == 1  # a NaN norm fires too


def test_divergence_guard_is_silent_on_a_stable_run(caplog):
    assert _guard_run([1.0, 1.8, 3.0, 2.2, 9.9, 0.5], caplog) == []


@pytest.mark.parametrize("values, message", [(["1", "1"], "more than once"), ([","], "is empty"), (["a"], "int")])
def test_list_arguments_are_checked(tmp_path, values, message):
    with pytest.raises(ValueError, match=message):
        FDRLTrainingArguments(output_dir=str(tmp_path), use_cpu=True, folds=values)
    assert FDRLTrainingArguments(output_dir=str(tmp_path), use_cpu=True, folds=["1,2", "3"]).folds == [1, 2, 3]
