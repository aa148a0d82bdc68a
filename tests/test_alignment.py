import math

import numpy as np
import pytest

from fdrl.evaluation.alignment import (
    alignment_metrics,
    centroid_distance,
    pooled_spread,
    relative_centroid_distance,
    retrieval_at_1,
    transfer_probes,
    transfer_uar,
)


ID2LABEL = {0: "ang", 1: "hap", 2: "neu", 3: "sad"}


def _paired(n=300, hidden=8, shift=0.0, seed=0, class_shift=0):
    """S_a and S_t of n utterances, 4 classes with their own means (the same for every seed); S_t shifted by
    `shift` along every axis, and S_t of class c drawn around the mean of class c + `class_shift`."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    class_means = np.random.default_rng(100).normal(scale=2.0, size=(4, hidden))
    shared_audio = class_means[labels] + rng.normal(size=(n, hidden))
    shared_text = class_means[(labels + class_shift) % 4] + rng.normal(size=(n, hidden)) + shift
    return shared_audio, shared_text, labels


def test_centroid_distance_spread_and_retrieval_by_hand():
    shared_audio = np.array([[0.0, 0.0], [2.0, 0.0]])  # centroid (1, 0), each row 1 away from it
    shared_text = np.array([[1.0, 4.0], [1.0, 2.0]])  # centroid (1, 3), each row 1 away from it
    assert centroid_distance(shared_audio, shared_text) == 3.0
    assert pooled_spread(shared_audio, shared_text) == 1.0
    assert relative_centroid_distance(shared_audio, shared_text) == 3.0
    # a->t: audio 0 (0,0) is nearer text 1 (1,2) [5] than text 0 (1,4) [17]: miss; audio 1 (2,0): text 1 [5] < 17:
    # hit. t->a: text 0 (1,4): audio 0 [17] = audio 1 [17]: a tie, a miss; text 1 (1,2): audio 1 [5] = audio 0 [5]:
    # a tie, a miss. R@1 = (1/2 + 0) / 2.
    assert retrieval_at_1(shared_audio, shared_text) == 0.25
    assert retrieval_at_1(shared_audio, shared_audio + 0.01) == 1.0


def _reference(shift=0.0, permute=False):
    """Training and held-out S_a, S_t drawn from the same class-conditional distributions (S_t shifted by `shift`;
    with `permute`, S_t's classes relabelled so that its class c looks like S_a's class c + 1)."""
    train = _paired(n=400, seed=1, shift=shift)
    held_out = _paired(n=200, seed=2, shift=shift)
    if permute:
        train = (train[0], _paired(n=400, seed=1, shift=shift, class_shift=1)[1], train[2])
        held_out = (held_out[0], _paired(n=200, seed=2, shift=shift, class_shift=1)[1], held_out[2])
    return train, held_out


def test_identical_class_conditional_distributions_align():
    train, held_out = _reference()
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)
    assert metrics["alignment_relative_centroid_distance"] < 0.25  # sampling noise only
    assert metrics["alignment_transfer_audio_to_text"] > 0.9 and metrics["alignment_transfer_text_to_audio"] > 0.9


def test_permuted_classes_give_chance_transfer():
    train, held_out = _reference(permute=True)
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)
    # S_t of class c sits where S_a of class c + 1 does: a classifier learnt on speech names every text wrongly
    assert metrics["alignment_transfer_audio_to_text"] < 0.1 and metrics["alignment_transfer_text_to_audio"] < 0.1
    assert metrics["alignment_relative_centroid_distance"] > 1.0
    train, held_out = _reference(shift=0.0)
    rng = np.random.default_rng(3)
    shuffled = (train[0], train[1], rng.permutation(train[2]))  # labels that say nothing
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=shuffled)
    assert abs(metrics["alignment_transfer_audio_to_text"] - 0.25) < 0.1


def test_shifted_spaces_are_seen_apart():
    train, held_out = _reference(shift=3.0)
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)
    assert metrics["alignment_relative_centroid_distance"] > 3.0
    aligned = alignment_metrics(*_reference()[1], id2label=ID2LABEL, reference=_reference()[0])
    assert metrics["alignment_transfer_audio_to_text"] < aligned["alignment_transfer_audio_to_text"] - 0.15


def test_scaling_both_spaces_leaves_the_scale_free_numbers_unchanged():
    train, held_out = _reference(shift=0.5)
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)
    scaled = alignment_metrics(
        *(1000 * x for x in held_out[:2]), held_out[2], ID2LABEL, reference=(1000 * train[0], 1000 * train[1], train[2])
    )
    for key in (
        "relative_centroid_distance",
        "transfer_audio_to_text",
        "transfer_text_to_audio",
        "retrieval_r1",
        "relative_centroid_distance_sad",
    ):
        assert scaled[f"alignment_{key}"] == pytest.approx(metrics[f"alignment_{key}"], abs=1e-6), key
    for key in ("norm_audio", "norm_text", "centroid_distance"):
        assert scaled[f"alignment_{key}"] == pytest.approx(1000 * metrics[f"alignment_{key}"], rel=1e-9), key


def test_keys_and_means():
    train, held_out = _reference()
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)
    expected = {
        f"alignment_{k}"
        for k in (
            "norm_audio",
            "norm_text",
            "relative_centroid_distance",
            "centroid_distance",
            "retrieval_r1",
            "transfer_audio_to_text",
            "transfer_text_to_audio",
        )
    }
    expected |= {
        f"alignment_{kind}_{label}"
        for kind in ("relative_centroid_distance", "centroid_distance")
        for label in ID2LABEL.values()
    }
    assert set(metrics) == expected
    per_class = [metrics[f"alignment_relative_centroid_distance_{label}"] for label in ID2LABEL.values()]
    assert metrics["alignment_relative_centroid_distance"] == pytest.approx(np.mean(per_class))
    assert metrics["alignment_norm_audio"] == pytest.approx(np.linalg.norm(held_out[0], axis=1).mean())
    assert alignment_metrics(*held_out, id2label=ID2LABEL, reference=train) == metrics  # deterministic
    without_reference = alignment_metrics(*held_out, id2label=ID2LABEL)
    assert "alignment_transfer_audio_to_text" not in without_reference


def test_a_single_utterance_class_and_diverged_vectors():
    shared_audio, shared_text, labels = _paired(n=9)
    labels = labels.copy()
    labels[3::4] = [0, 1]  # class 3 gone
    labels[0] = 3  # one utterance of class 3: no centroid distance for it
    metrics = alignment_metrics(shared_audio, shared_text, labels, ID2LABEL)
    assert "alignment_relative_centroid_distance_sad" not in metrics
    assert "alignment_relative_centroid_distance_ang" in metrics
    shared_audio[0, 0] = np.inf
    assert set(alignment_metrics(shared_audio, shared_text, labels)) == {"alignment_norm_audio", "alignment_norm_text"}


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("shared_audio", dict(shared_audio=np.zeros(10))),
        ("shared_text", dict(shared_text=np.zeros((10, 3)))),
        ("labels", dict(labels=np.zeros(9))),
        ("reference", dict(reference=(np.zeros((4, 2)), np.zeros((4, 2)), np.zeros(3)))),
    ],
)
def test_bad_inputs_name_the_argument(field, kwargs):
    arguments = dict(shared_audio=np.zeros((10, 2)), shared_text=np.zeros((10, 2)), labels=np.zeros(10))
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=field):
        alignment_metrics(**arguments)


def test_a_short_training_run_logs_mu_rates_and_alignment_without_nan():
    """What the trainer wires together, on a tiny FDRLModel: every epoch ends with mu, the raw error rates of each
    discriminator and the alignment diagnostics of the validation split, all finite."""
    import torch

    from conftest import make_batch, tiny_fdrl_config
    from modeling_fdrl import FDRLModel

    torch.manual_seed(0)
    model = FDRLModel(tiny_fdrl_config(use_global_discriminator=False))  # S2: no global error to report
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    validation = make_batch(batch_size=12, seed=9)
    keys = ("global_errors", "global_count", "global_loss_sum", "local_errors", "local_counts", "local_loss_sums")
    for epoch in range(2):
        model.train()
        stats = {}
        for step in range(2):
            model.set_training_progress((2 * epoch + step) / 4)
            out = model(**make_batch(seed=step))
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            stats = {key: stats.get(key, 0.0) + out[key].detach().double() for key in keys}
        log = model.end_epoch(stats)
        model.eval()
        with torch.no_grad():
            out = model(**validation)
            train = model(**make_batch(batch_size=12, seed=5))
        reference = (train.shared_audio.numpy(), train.shared_text.numpy(), make_batch(batch_size=12, seed=5)["labels"])
        log.update(
            alignment_metrics(
                out.shared_audio.float().numpy(),
                out.shared_text.float().numpy(),
                validation["labels"].numpy(),
                model.config.id2label,
                reference=reference,
            )
        )
        assert "global_discriminator_error" not in log
        assert {
            "dynamic_factor",
            "local_discriminator_error_ang",
            "alignment_relative_centroid_distance_sad",
            "alignment_transfer_audio_to_text",
            "alignment_retrieval_r1",
            "alignment_norm_audio",
        } <= set(log)
        assert all(math.isfinite(value) for value in log.values()), log


def test_warm_started_probes_reach_the_cold_fit_in_fewer_iterations():
    """A run's transfer classifiers start each evaluation from the last one's solution: on representations that
    moved a little since, they classify the held-out vectors as a fresh fit does, in fewer Newton-CG iterations."""
    train, held_out = _reference(shift=0.5)
    moved = tuple(x + 0.05 * np.random.default_rng(3).normal(size=x.shape) for x in train[:2]) + (train[2],)
    probes = transfer_probes()
    first = alignment_metrics(*held_out, id2label=ID2LABEL, reference=train, probes=probes)
    assert first == alignment_metrics(*held_out, id2label=ID2LABEL, reference=train)  # a first fit is a cold fit
    warm = alignment_metrics(*held_out, id2label=ID2LABEL, reference=moved, probes=probes)
    cold = alignment_metrics(*held_out, id2label=ID2LABEL, reference=moved)
    for direction in ("audio_to_text", "text_to_audio"):
        assert warm[f"alignment_transfer_{direction}"] == pytest.approx(
            cold[f"alignment_transfer_{direction}"], abs=0.01
        )
    fresh = transfer_probes()["audio_to_text"]
    transfer_uar(moved[0], moved[2], held_out[1], held_out[2], classifier=fresh)
    warm_iterations = probes["audio_to_text"][-1].n_iter_[0]
    assert warm_iterations < fresh[-1].n_iter_[0]


def test_the_probes_fit_as_a_plain_scikit_learn_pipeline_bit_for_bit():
    """The probes fit and predict without scikit-learn's input checks (`_without_sklearn_checks`, a speed-up): their
    solutions, cold and warm-started, and their predictions are those of the same pipeline with the checks on."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, held_out = _reference(shift=0.5)
    moved = train[0] + 0.05 * np.random.default_rng(3).normal(size=train[0].shape)
    probe = transfer_probes()["audio_to_text"]
    plain = make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=1000, random_state=0, warm_start=True, solver="newton-cg", tol=1e-5),
    )
    for features in (train[0], moved):  # a cold fit, then one from its solution
        uar = transfer_uar(features, train[2], held_out[1], held_out[2], classifier=probe)
        plain.fit(features, train[2])
        assert np.array_equal(probe[-1].coef_, plain[-1].coef_)
        assert np.array_equal(probe[-1].intercept_, plain[-1].intercept_)
        assert probe[-1].n_iter_[0] == plain[-1].n_iter_[0]
        assert uar == balanced_accuracy_score(held_out[2], plain.predict(held_out[1]))


def test_the_probes_fit_the_logistic_regression_s_exact_optimum():
    """The probes' Newton-CG at a gradient tolerance of 1e-5 ends within 1e-4 of the optimum that Newton-Cholesky
    reaches at 1e-10 (coefficient by coefficient), where scikit-learn's default (L-BFGS at 1e-4) stops 9e-3 away on
    these vectors; the transfer UAR is the exact optimum's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, held_out = _reference(shift=0.5)
    probe = transfer_probes()["audio_to_text"]
    uar = transfer_uar(train[0], train[2], held_out[1], held_out[2], classifier=probe)
    exact = LogisticRegression(solver="newton-cholesky", tol=1e-10, max_iter=10000)
    exact = make_pipeline(StandardScaler(), exact).fit(train[0], train[2])
    default = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(train[0], train[2])
    assert np.abs(probe[-1].coef_ - exact[-1].coef_).max() < 1e-4
    assert np.abs(default[-1].coef_ - exact[-1].coef_).max() > 5e-3
    assert uar == balanced_accuracy_score(held_out[2], exact.predict(held_out[1]))


def test_a_reference_that_is_not_finite_gives_no_transfer():
    """Training vectors with a NaN (a diverging model): no transfer probe is fit on them, every other diagnostic is
    as without a reference; `transfer_uar` itself names the argument instead of fitting on NaN."""
    train, held_out = _reference()
    broken = train[0].copy()
    broken[5, 2] = np.nan
    metrics = alignment_metrics(*held_out, id2label=ID2LABEL, reference=(broken, train[1], train[2]))
    assert metrics == alignment_metrics(*held_out, id2label=ID2LABEL)
    assert "alignment_transfer_audio_to_text" not in metrics and "alignment_transfer_text_to_audio" not in metrics
    with pytest.raises(ValueError, match="`train_features` holds values that are not finite"):
        transfer_uar(broken, train[2], held_out[1], held_out[2])
    with pytest.raises(ValueError, match="`features` holds values that are not finite"):
        transfer_uar(train[0], train[2], np.where(held_out[1] > 3, np.inf, held_out[1]), held_out[2])
