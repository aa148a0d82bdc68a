import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import BertModel, Trainer, TrainingArguments, Wav2Vec2Model

from conftest import make_batch, tiny_audio_config, tiny_fdrl_config, tiny_text_config
from modeling_fdrl import (
    FDRLDiscriminator,
    FDRLModel,
    a_distance,
    discriminator_error_rates,
    dynamic_factor_from_statistics,
    grl_coefficient_at,
    local_weight_source,
    modality_confusion,
    modality_cross_entropy,
    orthogonality_loss,
    stacked_discriminator_logits,
    stacked_modality_terms,
)


# The paper's gradient reversal and the predictor-weighted local discriminators: what most mechanics below check
# (the defaults are the confusion objective with label weights, docs/design.md; tests of those name them).
PAPER = dict(adversarial_objective="reversal", local_weights="auto")


def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return FDRLModel(tiny_fdrl_config(**{**PAPER, **overrides})).eval()


def _relative_difference(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _ce(logits, target):
    """Cross-entropy by hand: logsumexp - logit of the target, averaged."""
    return (torch.logsumexp(logits, -1) - logits.gather(-1, target[:, None]).squeeze(-1)).mean()


# ----- loss terms on small fixed tensors, computed by hand -------------------------------------------------------
def _identity_discriminator():
    config = tiny_fdrl_config(hidden_size=2, discriminator_hidden_size=2, fusion_num_heads=1)
    discriminator = FDRLDiscriminator(config)
    with torch.no_grad():  # logits = relu(x)
        discriminator.dense.weight.copy_(torch.eye(2)), discriminator.dense.bias.zero_()
        discriminator.out.weight.copy_(torch.eye(2)), discriminator.out.bias.zero_()
    return discriminator


def test_modality_cross_entropy_eq4_by_hand():
    audio = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # label 0: right, wrong
    text = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # label 1: wrong, right
    loss, loss_sum, errors = modality_cross_entropy(_identity_discriminator(), audio, text)
    per_sample = [
        math.log(1 + math.exp(-1)),
        math.log(1 + math.exp(3)),
        math.log(1 + math.exp(2)),
        math.log(1 + math.exp(-1)),
    ]
    expected = (per_sample[0] + per_sample[1]) / 2 + (per_sample[2] + per_sample[3]) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)  # 1.6809 + 1.2201
    assert loss_sum.item() == pytest.approx(sum(per_sample), abs=1e-6)
    assert errors.item() == 2


def test_orthogonality_eq10_raw_and_normalized_by_hand():
    shared = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    private = torch.tensor([[1.0, 2.0], [0.0, 1.0], [1.0, 0.0]])
    # S^T P = [[2, 2], [1, 1]]
    assert orthogonality_loss(shared, private, "raw").item() == pytest.approx(10.0)
    # centred, rows normalised: S = [1,-2]/r5, [-2,1]/r5, [1,1]/r2 ; P = [1,3]/r10, [-1,0], [1,-3]/r10
    r5, r10, r20, r50 = map(math.sqrt, (5, 10, 20, 50))
    gram = [[1 / r50 + 2 / r5 + 1 / r20, 3 / r50 - 3 / r20], [-2 / r50 - 1 / r5 + 1 / r20, -6 / r50 - 3 / r20]]
    expected = sum(g * g for row in gram for g in row) / 2**2
    assert orthogonality_loss(shared, private, "normalized").item() == pytest.approx(expected, abs=1e-5)
    # shrinking the features cannot win the normalised loss (the paper's trivial solution)
    assert orthogonality_loss(shared * 1e-3, private, "normalized").item() == pytest.approx(expected, abs=1e-4)
    assert orthogonality_loss(shared * 1e-3, private, "raw").item() == pytest.approx(10.0 * 1e-6, rel=1e-4)
    # two pairs at once (S_a with P_a, S_t with P_t, as a training step calls it): the sum of the two losses,
    # 10 + 37 with P against itself (P^T P = [[2, 2], [2, 5]])
    pairs = orthogonality_loss(torch.stack([shared, private]), torch.stack([private, private]), "raw")
    assert pairs.item() == pytest.approx(47.0)
    stacked = orthogonality_loss(torch.stack([shared, private]), torch.stack([private, shared]), "normalized")
    assert stacked.item() == pytest.approx(2 * expected, abs=1e-5)


ERROR_STATS = dict(  # eps_g = 0.25 -> d_g = 1; eps_l = .5, 0, .75, .125 -> d_l = 0, 2, 1, 1.5 -> mean 1.125
    global_errors=2.0,
    global_count=8.0,
    global_loss_sum=0.0,  # (clamped: d_l = 0, 2, 0, 1.5 -> mean .875)
    local_errors=[4.0, 0.0, 6.0, 1.0],
    local_counts=[8.0] * 4,
    local_loss_sums=[0.0] * 4,
)
LOSS_STATS = dict(  # L_g = .25 -> d_g = 1; L_l = .1, .2, .3, .8 -> d_l = 1.6, 1.2, .8, -1.2 -> mean .6
    global_errors=0.0,
    global_count=8.0,
    global_loss_sum=2.0,
    local_errors=[0.0] * 4,
    local_counts=[8.0] * 4,
    local_loss_sums=[0.8, 1.6, 2.4, 6.4],
)


@pytest.mark.parametrize(
    "stats, proxy, mode, expected",
    [
        (ERROR_STATS, "error", "daan", 1.125 / 2.125),
        (ERROR_STATS, "error", "paper", 1.0 / 2.125),
        (ERROR_STATS, "error_clamped", "daan", 0.875 / 1.875),
        (ERROR_STATS, "error_clamped", "paper", 1.0 / 1.875),
        (LOSS_STATS, "loss", "daan", 0.6 / 1.6),
        (LOSS_STATS, "loss", "paper", 1.0 / 1.6),
        (ERROR_STATS, "error", "fixed", 0.37),
    ],
)
def test_dynamic_factor_eq6_to_8_by_hand(stats, proxy, mode, expected):
    assert dynamic_factor_from_statistics(stats, mode, proxy, current=0.37) == pytest.approx(expected, abs=1e-9)


def test_dynamic_factor_clamping_and_non_finite_guard():
    # L_l = .65 everywhere -> d_l = -0.6; daan: -0.6 / 0.4 -> clamped to 0, paper: 1 / 0.4 -> clamped to 1
    stats = dict(LOSS_STATS, local_loss_sums=[5.2] * 4)
    assert dynamic_factor_from_statistics(stats, "daan", "loss", 0.37) == 0.0
    assert dynamic_factor_from_statistics(stats, "paper", "loss", 0.37) == 1.0
    chance = dict(ERROR_STATS, global_errors=4.0, local_errors=[4.0] * 4)  # every distance 0: denominator 0
    assert dynamic_factor_from_statistics(chance, "daan", "error", 0.37) == 0.37
    not_finite = dict(LOSS_STATS, global_loss_sum=float("nan"))
    assert dynamic_factor_from_statistics(not_finite, "daan", "loss", 0.37) == 0.37
    empty = dict(ERROR_STATS, global_count=0.0)
    assert dynamic_factor_from_statistics(empty, "daan", "error", 0.37) == 0.37


def test_a_distance_proxy_reads_flipped_decisions_as_separation():
    # 2 and 6 errors of 8: eps = .25 and .75 separate the modalities equally well
    for errors in (2.0, 6.0):
        assert a_distance(torch.tensor(errors), torch.tensor(8.0), None, "error").item() == 1.0
    assert a_distance(torch.tensor(4.0), torch.tensor(8.0), None, "error").item() == 0.0  # chance
    assert a_distance(torch.tensor(0.0), torch.tensor(8.0), None, "error").item() == 2.0
    assert a_distance(torch.tensor(8.0), torch.tensor(8.0), None, "error").item() == 2.0
    # the earlier clamp read eps = .75 as perfect alignment
    assert a_distance(torch.tensor(2.0), torch.tensor(8.0), None, "error_clamped").item() == 1.0
    assert a_distance(torch.tensor(6.0), torch.tensor(8.0), None, "error_clamped").item() == 0.0


def test_global_error_above_chance_no_longer_pins_mu_at_one():
    # the demo's case: eps_g = .75, eps_l = .25 everywhere
    stats = dict(ERROR_STATS, global_errors=6.0, local_errors=[2.0] * 4)
    assert dynamic_factor_from_statistics(stats, "daan", "error") == pytest.approx(0.5)  # d_g = d_l = 1
    assert dynamic_factor_from_statistics(stats, "daan", "error_clamped") == 1.0  # d_g = 0


def test_dynamic_factor_is_clamped_to_its_bounds():
    only_local = dict(ERROR_STATS, global_errors=4.0, local_errors=[0.0] * 4)  # d_g = 0, d_l = 2: mu = 1
    only_global = dict(ERROR_STATS, global_errors=0.0, local_errors=[4.0] * 4)  # d_g = 2, d_l = 0: mu = 0
    assert dynamic_factor_from_statistics(only_local, "daan", "error", 0.5, (0.05, 0.95)) == pytest.approx(0.95)
    assert dynamic_factor_from_statistics(only_global, "daan", "error", 0.5, (0.05, 0.95)) == pytest.approx(0.05)
    model = _model()  # defaults (0.05, 0.95)
    assert model.update_dynamic_factor(only_local) == pytest.approx(0.95)
    assert model.dynamic_factor.item() == pytest.approx(0.95)
    assert model.update_dynamic_factor(only_global) == pytest.approx(0.05)
    unbounded = _model(dynamic_factor_bounds=(0.0, 1.0))
    assert unbounded.update_dynamic_factor(only_local) == 1.0
    assert unbounded.update_dynamic_factor(only_global) == 0.0


def test_local_distance_averages_the_classes_seen_in_the_epoch():
    # labels as weights: class 3 absent from the epoch has weight sum 0 and no error rate; it is left out
    stats = dict(ERROR_STATS, local_errors=[4.0, 0.0, 6.0, 0.0], local_counts=[8.0, 8.0, 8.0, 0.0])
    assert dynamic_factor_from_statistics(stats, "daan", "error") == pytest.approx(1.0 / 2.0)  # d_l = (0+2+1)/3
    none_seen = dict(ERROR_STATS, local_counts=[0.0] * 4)
    assert dynamic_factor_from_statistics(none_seen, "daan", "error", 0.37) == 0.37


def test_update_dynamic_factor_changes_the_saved_buffer():
    model = _model()
    assert model.dynamic_factor.item() == 0.5
    assert model.update_dynamic_factor(ERROR_STATS) == pytest.approx(9 / 17)
    assert model.state_dict()["dynamic_factor"].item() == pytest.approx(9 / 17)
    fixed = _model(dynamic_factor_mode="fixed", mu=0.2)
    assert fixed.update_dynamic_factor(ERROR_STATS) == pytest.approx(0.2)


def test_dynamic_factor_stays_float32_through_casts_and_save_load(tmp_path):
    model = _model()
    model.dynamic_factor.fill_(0.7059)
    expected = torch.tensor(0.7059, dtype=torch.float32).item()  # a bf16 mu would read 0.70703125
    model.to(torch.bfloat16)
    assert model.shared_encoder.dense.weight.dtype == torch.bfloat16
    assert model.dynamic_factor.dtype == torch.float32 and model.dynamic_factor.item() == expected
    model.half()
    assert model.dynamic_factor.dtype == torch.float32 and model.dynamic_factor.item() == expected
    model.to(torch.bfloat16).save_pretrained(tmp_path)
    for dtype in (None, torch.bfloat16, torch.float32):
        loaded = FDRLModel.from_pretrained(tmp_path, **({"dtype": dtype} if dtype else {}))
        assert loaded.dynamic_factor.dtype == torch.float32, dtype
        assert loaded.dynamic_factor.item() == expected, dtype
    assert loaded.update_dynamic_factor(ERROR_STATS) == pytest.approx(9 / 17)
    assert loaded.dynamic_factor.dtype == torch.float32


def test_grl_schedule():
    assert grl_coefficient_at(0.0) == 0.0
    assert grl_coefficient_at(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    assert grl_coefficient_at(1.0, scale=0.5) == pytest.approx(0.5 * (2 / (1 + math.exp(-10)) - 1))
    assert grl_coefficient_at(0.3, "constant", 0.7) == 0.7
    model = _model(grl_schedule="constant", grl_lambda=0.25)
    assert model.set_training_progress(0.9) == 0.25


# ----- the whole forward against an independent computation ---------------------------------------------------
def test_forward_terms_and_eq15_against_a_computation_by_hand(batch):
    model = _model()
    model.dynamic_factor.fill_(0.3)
    with torch.no_grad():
        out = model(**batch)
    labels = batch["labels"]
    sa, st, pa, pt = out.shared_audio, out.shared_text, out.private_audio, out.private_text
    audio_label, text_label = torch.zeros_like(labels), torch.ones_like(labels)
    with torch.no_grad():
        loss_task = _ce(out.logits, labels)  # eq. 14
        loss_global = _ce(model.global_discriminator(sa), audio_label) + _ce(model.global_discriminator(st), text_label)
        prob_a, prob_t = model.predictor(sa).softmax(-1), model.predictor(st).softmax(-1)
        loss_local = sum(
            _ce(d(prob_a[:, c : c + 1] * sa), audio_label) + _ce(d(prob_t[:, c : c + 1] * st), text_label)
            for c, d in enumerate(model.local_discriminators)
        )
        loss_modality = 0.5 * (
            _ce(model.modality_discriminator(pa), audio_label) + _ce(model.modality_discriminator(pt), text_label)
        )

        def normalized(x):
            x = x - x.mean(0)
            return x / x.norm(dim=1, keepdim=True)

        d = sa.shape[1]
        loss_orthogonal = sum(((normalized(s).T @ normalized(p)) ** 2).sum() / d**2 for s, p in ((sa, pa), (st, pt)))
        loss_predictor = (
            _ce(model.predictor(sa + st), labels) + _ce(model.predictor(pa), labels) + _ce(model.predictor(pt), labels)
        ) / 3
    for name, value in [
        ("loss_task", loss_task),
        ("loss_global", loss_global),
        ("loss_local", loss_local),
        ("loss_modality", loss_modality),
        ("loss_orthogonal", loss_orthogonal),
        ("loss_predictor", loss_predictor),
    ]:
        assert getattr(out, name).item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
    total = (
        loss_task
        + 1.0 * (0.7 * loss_global + 0.3 * loss_local)
        + 0.5 * (loss_modality + loss_orthogonal)
        + 1.0 * loss_predictor
    )
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-5)
    # the statistics the dynamic factor needs
    targets = torch.cat([audio_label, text_label])
    errors = (model.global_discriminator(torch.cat([sa, st])).argmax(-1) != targets).sum()
    assert out.global_errors.item() == errors.item() and out.global_count.item() == 8
    # local: each sample weighted by y_i^c, the predictor's softmax
    weights = torch.cat([prob_a, prob_t])  # (8, 4)
    torch.testing.assert_close(out.local_counts, weights.sum(0))
    for c, d in enumerate(model.local_discriminators):
        with torch.no_grad():
            logits = d(weights[:, c : c + 1] * torch.cat([sa, st]))
        per_sample = torch.logsumexp(logits, -1) - logits.gather(-1, targets[:, None]).squeeze(-1)
        assert out.local_errors[c].item() == pytest.approx(
            (weights[:, c] * (logits.argmax(-1) != targets)).sum().item()
        )
        assert out.local_loss_sums[c].item() == pytest.approx((weights[:, c] * per_sample).sum().item(), rel=1e-5)


def test_without_labels_only_logits_and_representations():
    model = _model()
    out = model(**make_batch(with_labels=False))
    assert out.loss is None and out.loss_global is None and out.logits.shape == (4, 4)
    assert out.shared_audio.shape == out.private_text.shape == (4, 16)


# ----- gradient reversal -----------------------------------------------------------------------------------------
def _shared_leaves(model, batch):
    with torch.no_grad():
        out = model(**batch)
    return out.shared_audio.clone().requires_grad_(), out.shared_text.clone().requires_grad_()


def test_global_discriminator_gradient_is_reversed_and_scaled(batch):
    model = _model(use_local_discriminators=False)
    model.grl_coefficient = 0.7
    sa, st = _shared_leaves(model, batch)
    loss_global = model._discriminator_losses(sa, st)[0]
    loss_global.backward()
    reversed_grads = [p.grad.clone() for p in model.global_discriminator.parameters()]
    model.zero_grad()
    plain_sa, plain_st = sa.detach().clone().requires_grad_(), st.detach().clone().requires_grad_()
    modality_cross_entropy(model.global_discriminator, plain_sa, plain_st)[0].backward()
    torch.testing.assert_close(sa.grad, -0.7 * plain_sa.grad)
    torch.testing.assert_close(st.grad, -0.7 * plain_st.grad)
    assert sa.grad.abs().sum() > 0
    for reversed_grad, p in zip(reversed_grads, model.global_discriminator.parameters()):
        torch.testing.assert_close(reversed_grad, p.grad)  # the discriminator learns normally


@pytest.mark.parametrize("local_weights", ["auto", "predictor_attached"])
def test_local_discriminator_gradient_reversed_on_features_not_on_class_weights(batch, local_weights):
    model = _model(use_global_discriminator=False, local_weights=local_weights)
    model.grl_coefficient = 0.4
    sa, st = _shared_leaves(model, batch)
    model._discriminator_losses(sa, st)[1].backward()
    # the same loss without reversal, the features (f) and the class probabilities (y) from separate copies
    f_a, f_t, y_a, y_t = (x.detach().clone().requires_grad_() for x in (sa, st, sa, st))
    prob_a, prob_t = model.predictor(y_a).softmax(-1), model.predictor(y_t).softmax(-1)
    loss = sum(
        modality_cross_entropy(d, prob_a[:, c : c + 1] * f_a, prob_t[:, c : c + 1] * f_t)[0]
        for c, d in enumerate(model.local_discriminators)
    )
    loss.backward()
    if local_weights == "auto":  # detached: only the reversed path reaches S
        torch.testing.assert_close(sa.grad, -0.4 * f_a.grad)
        torch.testing.assert_close(st.grad, -0.4 * f_t.grad)
    else:  # DAAN's code: the class weights add an unreversed gradient
        torch.testing.assert_close(sa.grad, -0.4 * f_a.grad + y_a.grad)
        torch.testing.assert_close(st.grad, -0.4 * f_t.grad + y_t.grad)


def test_shared_encoder_receives_reversed_gradient_from_discriminators(batch):
    """End to end: with only L_g in the loss, the shared encoder's gradient flips sign with the reversal."""
    grads = {}
    for coefficient in (1.0, -1.0):  # -1 turns the reversal layer into a plain identity
        model = _model(alpha=1.0, beta=0.0, gamma=0.0, use_local_discriminators=False, classifier_dropout=0.0)
        model.grl_coefficient = coefficient
        out = model(**batch)
        out.loss_global.backward()
        grads[coefficient] = model.shared_encoder.out.weight.grad.clone()
        disc_grad = model.global_discriminator.out.weight.grad.clone()
        grads[f"disc{coefficient}"] = disc_grad
    torch.testing.assert_close(grads[1.0], -grads[-1.0])
    torch.testing.assert_close(grads["disc1.0"], grads["disc-1.0"])


# ----- the confusion objective (ADDA eq. 8) -------------------------------------------------------------------------
def _linear_discriminator(weight_row, bias=(0.0, 0.0)):
    """A discriminator whose logits are (b0, w . x + b1)."""
    discriminator = torch.nn.Linear(len(weight_row), 2)
    with torch.no_grad():
        discriminator.weight.zero_()
        discriminator.weight[1] = torch.tensor(weight_row)
        discriminator.bias.copy_(torch.tensor(bias))
    return discriminator


def test_confusion_by_hand():
    """Logits (0, log 3) give p = (1/4, 3/4): CE against (1/2, 1/2) is (log 4 + log 4/3) / 2 per sample, and the
    gradient with respect to the logits is p - 1/2 = (-1/4, 1/4), i.e. (1/n) W^T (-1/4, 1/4) on the input row."""
    discriminator = _linear_discriminator([math.log(3.0), 0.0, 0.0])
    audio = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    text = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], requires_grad=True)
    loss = modality_confusion(discriminator, audio, text)
    assert loss.item() == pytest.approx(2 * 0.5 * (math.log(4.0) + math.log(4.0 / 3.0)), rel=1e-6)
    loss.backward()
    expected = torch.tensor([[math.log(3.0) / 8, 0.0, 0.0]] * 2)  # (1/2) * log 3 * 1/4 per row
    torch.testing.assert_close(audio.grad, expected)
    torch.testing.assert_close(text.grad, expected)
    assert all(p.grad is None for p in discriminator.parameters())  # the encoder's term trains no discriminator


def test_confusion_gradient_is_zero_at_a_fifty_fifty_discriminator():
    discriminator = _linear_discriminator([0.0, 0.0, 0.0], bias=(0.3, 0.3))  # equal logits whatever the input
    audio, text = torch.randn(5, 3, requires_grad=True), torch.randn(5, 3, requires_grad=True)
    loss = modality_confusion(discriminator, audio, text)
    assert loss.item() == pytest.approx(2 * math.log(2.0), rel=1e-6)  # its minimum
    loss.backward()
    assert audio.grad.abs().max().item() == 0.0 and text.grad.abs().max().item() == 0.0


def _adversarial_parameters(model):
    return [p for d in (model.global_discriminator, *model.local_discriminators) for p in d.parameters()]


def test_confusion_terms_train_each_side_only(batch):
    """Under the confusion objective the discriminators' own losses (L_g, L_l) leave the shared encoder untouched,
    and the encoder's term (loss_confusion) leaves every discriminator untouched; one backward of the total loss
    gives each side its own gradient."""
    model = _model(adversarial_objective="confusion", classifier_dropout=0.0)
    model.grl_coefficient = 1.0
    out = model(**batch)
    (out.loss_global + out.loss_local).backward(retain_graph=True)
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.shared_encoder.parameters())
    discriminator_grads = [p.grad.clone() for p in _adversarial_parameters(model)]
    assert sum(g.abs().sum() for g in discriminator_grads) > 0
    model.zero_grad(set_to_none=True)
    out.loss_confusion.backward(retain_graph=True)
    assert all(p.grad is None for p in _adversarial_parameters(model))
    assert model.shared_encoder.out.weight.grad.abs().sum() > 0
    encoder_grad = model.shared_encoder.out.weight.grad.clone()
    # the total loss, alpha = 1, beta = gamma = 0: the discriminators get exactly (1 - mu) dL_g + mu dL_l, and E_s
    # exactly lambda * d loss_confusion plus the task's gradient
    model.zero_grad(set_to_none=True)
    mu = float(model.dynamic_factor)
    ((1 - mu) * out.loss_global + mu * out.loss_local).backward(retain_graph=True)
    expected = [p.grad.clone() for p in _adversarial_parameters(model)]
    model.zero_grad(set_to_none=True)
    (out.loss - out.loss_task - 0.5 * (out.loss_modality + out.loss_orthogonal) - out.loss_predictor).backward()
    for got, want in zip([p.grad for p in _adversarial_parameters(model)], expected):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(model.shared_encoder.out.weight.grad, encoder_grad)


def test_reversal_objective_reports_no_confusion_term(batch):
    out = _model(adversarial_objective="reversal")(**batch)
    assert out.loss_confusion.item() == 0.0


def test_layer_norm_bounds_the_shared_vectors(batch):
    model = _model(shared_normalization="layer_norm")
    with torch.no_grad():
        model.shared_encoder.out.weight.mul_(1000.0)  # a diverging encoder
        out = model(**batch)
    norms = out.shared_audio.norm(dim=-1)
    torch.testing.assert_close(norms, torch.full_like(norms, math.sqrt(16)), rtol=1e-3, atol=1e-3)


# ----- ablations ------------------------------------------------------------------------------------------------
TERMS = [
    "loss_task",
    "loss_global",
    "loss_local",
    "loss_modality",
    "loss_orthogonal",
    "loss_predictor",
    "loss_confusion",
]


@pytest.mark.parametrize(
    "switch, removed",
    [
        ("use_global_discriminator", "loss_global"),
        ("use_local_discriminators", "loss_local"),
        ("use_modality_discriminator", "loss_modality"),
        ("use_orthogonality", "loss_orthogonal"),
        ("use_predictor", "loss_predictor"),
    ],
)
def test_each_switch_removes_exactly_its_term(batch, switch, removed):
    # without the predictor the labels weigh the local discriminators (S6): compare with a full model that does so
    full = _model(**({"local_weights": "labels"} if switch == "use_predictor" else {}))
    full.dynamic_factor.fill_(0.3)
    ablated = FDRLModel(
        tiny_fdrl_config(
            **{**PAPER, **({"local_weights": "labels"} if switch == "use_predictor" else {}), switch: False}
        )
    ).eval()
    ablated.load_state_dict(full.state_dict(), strict=False)
    with torch.no_grad():
        out_full, out = full(**batch), ablated(**batch)
    for term in TERMS:
        expected = 0.0 if term == removed else getattr(out_full, term).item()
        assert getattr(out, term).item() == pytest.approx(expected, rel=1e-6), term
    if removed in ("loss_global", "loss_local"):  # one discriminator left: its loss with weight 1
        adversarial = out.loss_global + out.loss_local
    else:
        adversarial = 0.7 * out.loss_global + 0.3 * out.loss_local
    total = out.loss_task + adversarial + 0.5 * (out.loss_modality + out.loss_orthogonal) + out.loss_predictor
    assert out.loss.item() == pytest.approx(total.item(), rel=1e-6)


def test_switched_off_parts_are_not_built():
    model = _model(
        use_global_discriminator=False,
        use_local_discriminators=False,
        use_modality_discriminator=False,
        use_predictor=False,
    )
    assert model.global_discriminator is model.local_discriminators is model.modality_discriminator is None
    assert model.predictor is None


def test_zero_weights_leave_the_task_loss(batch):
    out = _model(alpha=0.0, beta=0.0, gamma=0.0)(**batch)
    assert out.loss.item() == out.loss_task.item()
    assert out.loss_global.item() > 0 and out.loss_predictor.item() > 0  # still reported


@pytest.mark.parametrize(
    "fusion_inputs, names",
    [("shared", ["shared_audio", "shared_text"]), ("private", ["private_audio", "private_text"])],
)
def test_fusion_inputs_use_only_their_representations(batch, fusion_inputs, names):
    model = _model(fusion_inputs=fusion_inputs)
    seen = {}
    model.fusion.register_forward_hook(lambda module, args, output: seen.update(inputs=args[0]))
    out = model(**batch)
    assert model.fusion.classifier.in_features == 2 * 16
    assert len(seen["inputs"]) == 2
    for tensor, name in zip(seen["inputs"], names):
        assert tensor is getattr(out, name)


# ----- padding --------------------------------------------------------------------------------------------------
def test_padding_does_not_change_the_result():
    model = _model()
    batch = make_batch(batch_size=3, with_labels=False)  # lengths 4000/3400/2800 samples, 9/7/5 tokens
    with torch.no_grad():
        together = model(**batch)
        for i in range(3):
            n_audio, n_text = int(batch["audio_attention_mask"][i].sum()), int(batch["text_attention_mask"][i].sum())
            alone = model(
                input_values=batch["input_values"][i : i + 1, :n_audio],
                audio_attention_mask=batch["audio_attention_mask"][i : i + 1, :n_audio],
                input_ids=batch["input_ids"][i : i + 1, :n_text],
                text_attention_mask=batch["text_attention_mask"][i : i + 1, :n_text],
            )
            for name in ("logits", "shared_audio", "shared_text", "private_audio", "private_text"):
                assert _relative_difference(getattr(alone, name)[0], getattr(together, name)[i]) <= 1e-5, (i, name)


def test_group_norm_backbone_pools_only_valid_frames():
    model = _model(audio_config=tiny_audio_config(feat_extract_norm="group", do_stable_layer_norm=False))
    batch = make_batch(batch_size=2, with_labels=False)
    with torch.no_grad():
        pooled = model.encode_audio(batch["input_values"], batch["audio_attention_mask"])
        hidden = model.audio_model(batch["input_values"]).last_hidden_state
        frames = model.audio_model._get_feat_extract_output_lengths(batch["audio_attention_mask"].sum(1))
    assert frames.tolist()[1] < hidden.shape[1]  # the second item really is padded
    for i, n in enumerate(frames.tolist()):
        torch.testing.assert_close(pooled[i], hidden[i, :n].mean(0))


# ----- saving and loading ---------------------------------------------------------------------------------------
def test_save_and_load_round_trip_keeps_weights_and_dynamic_factor(tmp_path, batch):
    model = _model()
    model.dynamic_factor.fill_(0.3125)
    model.save_pretrained(tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert "model.safetensors" in files and not any(f.endswith(".bin") for f in files)
    assert {"configuration_fdrl.py", "modeling_fdrl.py"} <= set(files)
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_fdrl.FDRLModel"
    loaded = FDRLModel.from_pretrained(tmp_path).eval()
    assert loaded.dynamic_factor.item() == 0.3125
    with torch.no_grad():
        assert (loaded(**batch).logits - model(**batch).logits).abs().max().item() <= 1e-5


def test_remote_code_loads_in_a_fresh_process(tmp_path, batch):
    model = _model()
    model.dynamic_factor.fill_(0.25)
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    torch.save({k: v for k, v in batch.items()}, tmp_path / "batch.pt")
    with torch.no_grad():
        torch.save(model(**batch).logits, tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import sys, torch
        assert not any("configuration_fdrl" in m for m in sys.modules)
        from transformers import AutoConfig, AutoModel
        config = AutoConfig.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert type(config).__name__ == "FDRLConfig" and config.hidden_size == 16, config
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        batch = torch.load({str(tmp_path / "batch.pt")!r})
        with torch.no_grad():
            logits = model(**batch).logits
        diff = (logits - torch.load({str(tmp_path / "expected.pt")!r})).abs().max().item()
        print("DIFF", diff, "MU", model.dynamic_factor.item())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"))
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("DIFF")][0].split()
    assert float(line[1]) <= 1e-5 and float(line[3]) == 0.25


def test_from_encoders_pretrained_keeps_the_source_weights(tmp_path):
    torch.manual_seed(1)
    audio = Wav2Vec2Model(tiny_audio_config())
    text = BertModel(tiny_text_config(hidden_size=24, num_attention_heads=2))
    audio.save_pretrained(tmp_path / "audio")
    text.save_pretrained(tmp_path / "text")
    model = FDRLModel.from_encoders_pretrained(
        tmp_path / "audio", str(tmp_path / "text"), hidden_size=16, fusion_num_heads=2, freeze_feature_encoder=True
    )
    for source, target in ((audio, model.audio_model), (text, model.text_model)):
        target_state = target.state_dict()
        for name, tensor in source.state_dict().items():
            if name.startswith("pooler."):
                assert name not in target_state  # dropped: FDRL pools itself
                continue
            assert torch.equal(target_state[name], tensor), name
    assert model.config.text_config.hidden_size == 24 and model.text_projection.in_features == 24
    assert model.audio_projection.out_features == 16  # widths differ: projected to hidden_size
    assert not any(p.requires_grad for p in model.audio_model.feature_extractor.parameters())
    with pytest.raises(ValueError, match="audio_model"):
        FDRLModel.from_encoders_pretrained(3, text)


# ----- training ---------------------------------------------------------------------------------------------------
def test_one_optimisation_step_lowers_the_total_loss(batch):
    model = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with torch.no_grad():
        before = model(**batch).loss.item()
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        after = model(**batch).loss.item()
    assert after < before


def test_trainer_does_not_rescale_the_loss_for_accumulation(tmp_path):
    trainer = Trainer(model=_model(), args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True))
    assert trainer.model_accepts_loss_kwargs is False


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(batch):
    losses, grads = [], []
    for checkpointing in (False, True):
        model = _model()
        if checkpointing:
            model.gradient_checkpointing_enable()
            assert model.text_model.encoder.layer[0].gradient_checkpointing
            assert model.audio_model.encoder.layers[0].gradient_checkpointing
        model.train()
        torch.manual_seed(3)
        out = model(**batch)
        out.loss.backward()
        losses.append(out.loss.item())
        grads.append(model.audio_model.encoder.layers[0].attention.q_proj.weight.grad.clone())
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_forward_and_backward(batch):
    model = _model()
    with torch.no_grad():
        reference = model(**batch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    out.loss.backward()
    assert torch.isfinite(out.loss) and out.loss.dtype == torch.float32
    for term in TERMS:
        assert getattr(out, term).item() == pytest.approx(getattr(reference, term).item(), rel=0.05, abs=0.02), term


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_attention_implementation_reaches_the_backbones(tmp_path, implementation):
    _model().save_pretrained(tmp_path)
    model = FDRLModel.from_pretrained(tmp_path, attn_implementation=implementation)
    assert model.text_model.config._attn_implementation == implementation
    assert model.audio_model.config._attn_implementation == implementation


def test_bad_inputs_raise_clear_errors(batch):
    model = _model()
    with pytest.raises(ValueError, match="labels"):
        model(**dict(batch, labels=torch.tensor([0, 1, 2, 7])))
    with pytest.raises(ValueError, match="same batch"):
        model(**dict(batch, input_ids=batch["input_ids"][:2], text_attention_mask=batch["text_attention_mask"][:2]))
    with pytest.raises(ValueError, match="input_values"):
        model(**dict(batch, input_values=batch["input_values"][:, None]))
    with pytest.raises(ValueError, match="input_ids"):
        model(input_values=batch["input_values"], input_ids=None)


# ----- the local discriminators' class weights ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides, source",
    [
        ({}, "predictor"),
        ({"gamma": 0.0}, "labels"),
        ({"use_predictor": False}, "labels"),
        ({"local_weights": "predictor", "gamma": 0.0}, "predictor"),
        ({"local_weights": "predictor_attached"}, "predictor_attached"),
        ({"local_weights": "labels"}, "labels"),
    ],
)
def test_local_weight_source_resolves_auto(overrides, source):
    assert local_weight_source(tiny_fdrl_config(**{"local_weights": "auto", **overrides})) == source


def test_local_weights_model_without_predictor_builds_none():
    assert _model(use_predictor=False).predictor is None  # the labels weigh the local discriminators
    assert _model(use_predictor=False, local_weights="predictor").predictor is not None


def _local_only_gradients(model, batch):
    """Gradients of L_l alone with a zero reversal coefficient: what reaches FP and E_s then comes through y_i^c."""
    model.grl_coefficient = 0.0
    model(**batch).loss_local.backward()
    encoder = torch.cat([p.grad.flatten() for p in model.shared_encoder.parameters()])
    predictor = [p.grad for p in model.predictor.parameters()]
    predictor = torch.cat([g.flatten() for g in predictor]) if all(g is not None for g in predictor) else None
    return encoder, predictor


def test_class_weights_carry_no_gradient_by_default(batch):
    encoder, predictor = _local_only_gradients(_model(use_global_discriminator=False, classifier_dropout=0.0), batch)
    assert torch.count_nonzero(encoder) == 0
    assert predictor is None or torch.count_nonzero(predictor) == 0


def test_attached_class_weights_train_predictor_and_encoder(batch):
    model = _model(use_global_discriminator=False, classifier_dropout=0.0, local_weights="predictor_attached")
    encoder, predictor = _local_only_gradients(model, batch)
    assert encoder.abs().sum() > 0 and predictor.abs().sum() > 0


@pytest.mark.parametrize("overrides", [{"gamma": 0.0}, {"use_predictor": False}])
def test_s6_weighs_the_local_discriminators_with_the_labels(batch, overrides):
    model = _model(**overrides)
    with torch.no_grad():
        out = model(**batch)
        weights_audio, weights_text = model._local_weights(out.shared_audio, out.shared_text, batch["labels"])
        inputs = model._class_weighted(weights_audio, weights_text, out.shared_audio, out.shared_text)
    one_hot = torch.nn.functional.one_hot(batch["labels"], 4).float()  # (4, 4)
    assert torch.equal(weights_audio, one_hot) and torch.equal(weights_text, one_hot)
    for c in range(4):  # class c's discriminator sees the representations of class c's utterances, zeros elsewhere
        expected = torch.cat([one_hot[:, c : c + 1] * out.shared_audio, one_hot[:, c : c + 1] * out.shared_text])
        torch.testing.assert_close(inputs[c], expected, rtol=0, atol=0)
    # one-hot weights: each class counts the two representations of its own utterances
    assert out.local_counts.tolist() == (2 * one_hot.sum(0)).tolist()


def test_one_batched_call_is_each_discriminator_on_its_own_inputs():
    """One batched call of the three groups gives, for every discriminator, what its module gives on its own
    inputs (loss, weighted statistics), and each discriminator's gradient is its own loss's."""
    torch.manual_seed(0)
    model = _model()
    hidden = model.config.hidden_size
    audio, text, private_audio, private_text = (torch.randn(3, hidden) for _ in range(4))
    weights_audio, weights_text = torch.rand(3, 4), torch.rand(3, 4)
    groups = list(
        model._discriminator_groups(audio, text, private_audio, private_text, weights_audio, weights_text).values()
    )
    global_terms, local_terms, gd_terms = stacked_modality_terms(groups, 3)
    (global_terms[0].sum() + local_terms[0].sum() + gd_terms[0].sum()).backward()
    discriminators = [model.global_discriminator, *model.local_discriminators, model.modality_discriminator]
    batched = [[p.grad.clone() for p in d.parameters()] for d in discriminators]
    model.zero_grad()
    expected = [(model.global_discriminator, audio, text, None)]
    for c, discriminator in enumerate(model.local_discriminators):
        class_weights = torch.cat([weights_audio[:, c], weights_text[:, c]])
        class_inputs = (weights_audio[:, c : c + 1] * audio, weights_text[:, c : c + 1] * text)
        expected.append((discriminator, *class_inputs, class_weights))
    expected.append((model.modality_discriminator, private_audio, private_text, None))
    rows = [(global_terms, 0), *((local_terms, c) for c in range(4)), (gd_terms, 0)]
    total = 0.0
    for (discriminator, a, t, sample_weights), (terms, k) in zip(expected, rows):
        one, loss_sum, errors = modality_cross_entropy(discriminator, a, t, sample_weights)
        total = total + one
        torch.testing.assert_close(terms[0][k], one)
        torch.testing.assert_close(terms[1][k], loss_sum)
        assert terms[2][k].item() == pytest.approx(errors.item())
    total.backward()
    for grads, discriminator in zip(batched, discriminators):
        for grad, p in zip(grads, discriminator.parameters()):
            torch.testing.assert_close(grad, p.grad)


def test_the_batched_call_drops_out_the_alignment_discriminators_only():
    """With `discriminator_dropout`, a training step's batched call drops units of the alignment discriminators'
    hidden layer and none of GD's, which has no dropout: GD's logits are those of its module."""
    torch.manual_seed(0)
    model = _model(discriminator_dropout=0.5).train()
    hidden = model.config.hidden_size
    audio, text, private_audio, private_text = (torch.randn(6, hidden) for _ in range(4))
    weights_audio, weights_text = torch.rand(6, 4), torch.rand(6, 4)
    groups = list(
        model._discriminator_groups(audio, text, private_audio, private_text, weights_audio, weights_text).values()
    )
    discriminators = [d for members, _, _ in groups for d in members]
    inputs = torch.cat([rows for _, rows, _ in groups])
    with torch.no_grad():
        logits = stacked_discriminator_logits(discriminators, inputs)
        torch.testing.assert_close(logits[-1], model.modality_discriminator(inputs[-1]))
        undropped = model.global_discriminator.eval()(inputs[0])
    assert not torch.allclose(logits[0], undropped)


# ----- the local error rates, weighted by the class weights ----------------------------------------------------------
def _two_class_model(**overrides):
    """hidden 2, two classes "a" and "b", every local discriminator with logits = relu(input)."""
    torch.manual_seed(0)
    config = tiny_fdrl_config(
        hidden_size=2, discriminator_hidden_size=2, fusion_num_heads=1, id2label={0: "a", 1: "b"}, **overrides
    )
    model = FDRLModel(config).eval()
    for discriminator in model.local_discriminators:
        with torch.no_grad():
            discriminator.dense.weight.copy_(torch.eye(2)), discriminator.dense.bias.zero_()
            discriminator.out.weight.copy_(torch.eye(2)), discriminator.out.bias.zero_()
    return model


def _local_statistics(model, audio, text, weights_audio, weights_text):
    """The local discriminators' epoch statistics of one batch, as `FDRLModel._discriminator_losses` takes them."""
    group = model._local_group(audio, text, weights_audio, weights_text)
    return model._local_statistics(group, stacked_modality_terms([group], audio.shape[0])[0])


SHARED_AUDIO = torch.tensor([[1.0, 0.0], [0.0, 3.0]])  # label 0 (speech)
SHARED_TEXT = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # label 1 (text)
WEIGHTS_AUDIO = torch.tensor([[0.9, 0.1], [0.3, 0.7]])  # y_i^c
WEIGHTS_TEXT = torch.tensor([[0.2, 0.8], [0.6, 0.4]])


def test_weighted_local_error_rate_by_hand():
    # class a: inputs [.9, 0] right, [0, .9] wrong, [.4, 0] wrong, [0, .6] right -> (.3 + .2) / 2.0 = .25
    # class b: inputs [.1, 0] right, [0, 2.1] wrong, [1.6, 0] wrong, [0, .4] right -> (.7 + .8) / 2.0 = .75
    model = _two_class_model()
    stats = _local_statistics(model, SHARED_AUDIO, SHARED_TEXT, WEIGHTS_AUDIO, WEIGHTS_TEXT)
    torch.testing.assert_close(stats["local_errors"], torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(stats["local_counts"], torch.tensor([2.0, 2.0]))
    ce = [
        math.log(1 + math.exp(-0.9)),
        math.log(1 + math.exp(0.9)),
        math.log(1 + math.exp(0.4)),
        math.log(1 + math.exp(-0.6)),
    ]  # class a, per sample
    assert stats["local_loss_sums"][0].item() == pytest.approx(0.9 * ce[0] + 0.3 * ce[1] + 0.2 * ce[2] + 0.6 * ce[3])
    full = dict(global_errors=0.0, global_count=4.0, global_loss_sum=0.0, **stats)
    rates = model.end_epoch(full)
    assert rates["local_discriminator_error_a"] == pytest.approx(0.25)
    assert rates["local_discriminator_error_b"] == pytest.approx(0.75)
    # d_g = 2, d_l = 1 and 1: mu = 1 / 3
    assert rates["dynamic_factor"] == pytest.approx(1 / 3) and model.dynamic_factor.item() == pytest.approx(1 / 3)


def test_unweighted_local_error_rate_is_one_switch_away():
    model = _two_class_model(local_error_rate="unweighted")
    stats = _local_statistics(model, SHARED_AUDIO, SHARED_TEXT, WEIGHTS_AUDIO, WEIGHTS_TEXT)
    assert stats["local_errors"].tolist() == [2.0, 2.0] and stats["local_counts"].tolist() == [4.0, 4.0]


# ----- the epoch's log ---------------------------------------------------------------------------------------------
def _epoch_stats(model, batch, steps=2):
    stats = {}
    with torch.no_grad():
        for _ in range(steps):
            out = model(**batch)
            for key in (
                "global_errors",
                "global_count",
                "global_loss_sum",
                "local_errors",
                "local_counts",
                "local_loss_sums",
            ):
                stats[key] = stats.get(key, 0.0) + out[key].double()
    return stats


@pytest.mark.parametrize(
    "overrides, has_global, has_local",
    [
        ({}, True, True),
        ({"use_global_discriminator": False}, False, True),
        ({"use_local_discriminators": False}, True, False),
    ],
)
def test_epoch_summary_has_raw_rates_and_no_entry_for_a_disabled_discriminator(batch, overrides, has_global, has_local):
    model = _model(**overrides)
    stats = _epoch_stats(model, batch)
    summary = model.end_epoch(stats)
    local_keys = {f"local_discriminator_error_{label}" for label in ("ang", "hap", "neu", "sad")}
    expected = (
        {"dynamic_factor"}
        | ({"global_discriminator_error"} if has_global else set())
        | (local_keys if has_local else set())
    )
    assert set(summary) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in summary.values())
    if has_global:
        assert summary["global_discriminator_error"] == pytest.approx(
            float(stats["global_errors"] / stats["global_count"])
        )
    if has_local:
        assert summary["local_discriminator_error_neu"] == pytest.approx(
            float(stats["local_errors"][2] / stats["local_counts"][2])
        )


def test_error_rates_name_classes_by_index_without_labels():
    stats = dict(ERROR_STATS, local_counts=[8.0, 8.0, 0.0, 8.0])
    rates = discriminator_error_rates(stats)
    assert rates == {
        "global_discriminator_error": 0.25,
        "local_discriminator_error_0": 0.5,
        "local_discriminator_error_1": 0.0,
        "local_discriminator_error_3": 0.125,
    }
