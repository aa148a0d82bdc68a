import math

import numpy as np
import pytest

from fdrl.evaluation.alignment import alignment_metrics, centroid_distance, probe_a_distance, probe_error

ID2LABEL = {0: "ang", 1: "hap", 2: "neu", 3: "sad"}


def _paired(n=300, hidden=8, shift=0.0, seed=0):
    """S_a and S_t of n utterances, 4 classes with their own means; S_t shifted by `shift` along every axis."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 4
    class_means = rng.normal(scale=2.0, size=(4, hidden))
    shared_audio = class_means[labels] + rng.normal(size=(n, hidden))
    shared_text = class_means[labels] + rng.normal(size=(n, hidden)) + shift
    return shared_audio, shared_text, labels


def test_probe_a_distance_by_hand():
    assert probe_a_distance(0.5) == 0.0
    assert probe_a_distance(0.25) == probe_a_distance(0.75) == 1.0  # flipped decisions separate as well
    assert probe_a_distance(0.0) == probe_a_distance(1.0) == 2.0


def test_centroid_distance_by_hand():
    shared_audio = np.array([[0.0, 0.0], [2.0, 0.0]])  # mean (1, 0)
    shared_text = np.array([[4.0, 3.0], [4.0, 5.0]])  # mean (4, 4)
    assert centroid_distance(shared_audio, shared_text) == 5.0


def test_identical_distributions_give_a_probe_distance_near_zero():
    metrics = alignment_metrics(*_paired(shift=0.0), id2label=ID2LABEL)
    assert abs(metrics["alignment_probe_error"] - 0.5) < 0.1
    assert metrics["alignment_probe_a_distance"] < 0.2
    # two means of 75 unit-noise draws in 8 dimensions: sqrt(8 * 2 / 75) = 0.46 apart on average (shifted: 8.49)
    assert metrics["alignment_centroid_distance"] < 0.8


def test_shifted_distributions_give_a_probe_distance_near_two():
    metrics = alignment_metrics(*_paired(shift=3.0), id2label=ID2LABEL)
    assert metrics["alignment_probe_error"] < 0.05
    assert metrics["alignment_probe_a_distance"] > 1.8
    for label in ID2LABEL.values():
        assert metrics[f"alignment_probe_a_distance_{label}"] > 1.8
        # the shift (3, ..., 3) has length 3 sqrt(8) = 8.49
        assert metrics[f"alignment_centroid_distance_{label}"] == pytest.approx(3 * math.sqrt(8), abs=0.6)
    assert metrics["alignment_centroid_distance"] == pytest.approx(3 * math.sqrt(8), abs=0.3)


def test_per_class_alignment_that_the_global_probe_misses():
    # S_t swaps the classes' means (ang <-> hap, neu <-> sad): the marginals match, the classes do not
    shared_audio, _, labels = _paired(shift=0.0)
    rng = np.random.default_rng(1)
    means = np.stack([shared_audio[labels == c].mean(0) for c in range(4)])
    shared_text = means[[1, 0, 3, 2]][labels] + rng.normal(size=shared_audio.shape)
    metrics = alignment_metrics(shared_audio, shared_text, labels, ID2LABEL)
    assert metrics["alignment_probe_a_distance"] < 0.5
    assert min(metrics[f"alignment_probe_a_distance_{label}"] for label in ID2LABEL.values()) > 1.5


def test_metric_names_values_and_determinism():
    inputs = _paired(n=120, shift=0.5)
    metrics = alignment_metrics(*inputs, id2label=ID2LABEL)
    expected = {"alignment_probe_error", "alignment_probe_a_distance", "alignment_centroid_distance"}
    expected |= {f"alignment_{kind}_{label}" for kind in ("probe_a_distance", "centroid_distance")
                 for label in ID2LABEL.values()}
    assert set(metrics) == expected
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())
    assert metrics["alignment_probe_a_distance"] == probe_a_distance(metrics["alignment_probe_error"])
    per_class = [metrics[f"alignment_centroid_distance_{label}"] for label in ID2LABEL.values()]
    assert metrics["alignment_centroid_distance"] == pytest.approx(np.mean(per_class))
    assert alignment_metrics(*inputs, id2label=ID2LABEL) == metrics
    assert probe_error(inputs[0], inputs[1]) == metrics["alignment_probe_error"]


def test_a_class_too_small_for_the_folds_gets_no_probe_entry():
    shared_audio, shared_text, labels = _paired(n=40)
    labels = labels.copy()
    labels[labels == 3] = 2
    labels[:3] = 3  # three utterances of "sad": fewer than the 5 folds
    metrics = alignment_metrics(shared_audio, shared_text, labels, ID2LABEL)
    assert "alignment_probe_a_distance_sad" not in metrics
    assert "alignment_centroid_distance_sad" in metrics and "alignment_probe_a_distance_neu" in metrics
    without_names = alignment_metrics(shared_audio, shared_text, labels)
    assert "alignment_centroid_distance_3" in without_names and "alignment_probe_a_distance_2" in without_names
    tiny = alignment_metrics(shared_audio[:4], shared_text[:4], labels[:4])
    assert "alignment_probe_error" not in tiny and "alignment_centroid_distance" in tiny


@pytest.mark.parametrize(
    "field, kwargs",
    [
        ("shared_audio", dict(shared_audio=np.zeros(10))),
        ("shared_text", dict(shared_text=np.zeros((10, 3)))),
        ("labels", dict(labels=np.zeros(9))),
        ("n_splits", dict(n_splits=1)),
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
        log.update(alignment_metrics(out.shared_audio.float().numpy(), out.shared_text.float().numpy(),
                                     validation["labels"].numpy(), model.config.id2label, n_splits=3))
        assert "global_discriminator_error" not in log
        assert {"dynamic_factor", "local_discriminator_error_ang", "alignment_probe_a_distance",
                "alignment_probe_a_distance_sad", "alignment_centroid_distance"} <= set(log)
        assert all(math.isfinite(value) for value in log.values()), log
