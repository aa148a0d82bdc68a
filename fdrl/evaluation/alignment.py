"""Alignment diagnostics: does the shared subspace hold speech and text in one distribution?

The online discriminators of the fine-grained alignment (eq. 4-8) are trained against the encoder, so their error
rates say how the game stands, not whether S_a and S_t are aligned. These diagnostics measure it independently, on
held-out representations (the validation split):

- a linear probe (standardised features, logistic regression), cross-validated with `StratifiedKFold`, telling S_a
  from S_t: its out-of-fold error eps_probe and the probe A-distance 2 |1 - 2 eps_probe| (0: aligned, 2: apart),
  over all utterances and within each emotion class;
- the Euclidean distance between the centroids of S_a and S_t within each class, and its mean over the classes
  (the quantity of the paper's Fig. 3b).

Only numpy and scikit-learn are needed; the same input always gives the same metrics (fixed folds, a deterministic
solver).
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

PREFIX = "alignment_"


def probe_error(shared_audio, shared_text, n_splits=5, random_state=0):
    """Out-of-fold error of a linear probe telling S_a (n, d) from S_t (n, d), over the 2n samples."""
    features = np.concatenate([shared_audio, shared_text])  # (2n, d)
    modality = np.repeat([0, 1], [len(shared_audio), len(shared_text)])  # (2n,)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=random_state)
    errors = 0
    for train, test in folds.split(features, modality):
        probe = make_pipeline(StandardScaler(), LogisticRegression(solver="liblinear", random_state=random_state))
        with warnings.catch_warnings():  # a not quite converged probe still measures separability
            warnings.simplefilter("ignore", ConvergenceWarning)
            probe.fit(features[train], modality[train])
        errors += int((probe.predict(features[test]) != modality[test]).sum())
    return errors / len(features)


def probe_a_distance(error):
    """Proxy A-distance 2 |1 - 2 eps| of a probe error: a probe wrong more often than chance still separates."""
    return 2.0 * abs(1.0 - 2.0 * error)


def centroid_distance(shared_audio, shared_text):
    """Euclidean distance between the means of S_a (n, d) and S_t (n, d)."""
    return float(np.linalg.norm(shared_audio.mean(0) - shared_text.mean(0)))


def alignment_metrics(shared_audio, shared_text, labels, id2label=None, n_splits=5, random_state=0):
    """The alignment diagnostics of paired shared representations, as a flat dict of floats.

    Args:
        shared_audio (`np.ndarray` of shape `(n, hidden)`): S_a of n utterances (a torch tensor in bf16 converts
            with `.float().cpu().numpy()`).
        shared_text (`np.ndarray` of shape `(n, hidden)`): S_t of the same utterances, in the same order.
        labels (`np.ndarray` of shape `(n,)`): their emotion classes.
        id2label (`dict`, *optional*): names the classes in the metric names; else the label itself is used.
        n_splits (`int`, *optional*, defaults to 5): folds of the probe's cross-validation.
        random_state (`int`, *optional*, defaults to 0): seeds the folds' shuffle.

    Returns:
        `dict`: `alignment_probe_error`, `alignment_probe_a_distance` (over all utterances; absent with fewer than
        `n_splits` utterances), `alignment_probe_a_distance_<label>` for each class with at least `n_splits`
        utterances (a class with fewer cannot fill every fold with both modalities, and gets no probe entry),
        `alignment_centroid_distance_<label>` for each class present and `alignment_centroid_distance`, their
        mean over the classes.
    """
    shared_audio, shared_text, labels = _check(shared_audio, shared_text, labels, n_splits)
    metrics = {}
    if len(labels) >= n_splits:
        error = probe_error(shared_audio, shared_text, n_splits, random_state)
        metrics[PREFIX + "probe_error"] = error
        metrics[PREFIX + "probe_a_distance"] = probe_a_distance(error)
    distances = []
    for label in np.unique(labels):
        rows = labels == label
        name = _label_name(label, id2label)
        if rows.sum() >= n_splits:
            error = probe_error(shared_audio[rows], shared_text[rows], n_splits, random_state)
            metrics[f"{PREFIX}probe_a_distance_{name}"] = probe_a_distance(error)
        distances.append(centroid_distance(shared_audio[rows], shared_text[rows]))
        metrics[f"{PREFIX}centroid_distance_{name}"] = distances[-1]
    if distances:
        metrics[PREFIX + "centroid_distance"] = float(np.mean(distances))
    return metrics


def _label_name(label, id2label):
    label = label.item() if isinstance(label, np.generic) else label
    if id2label:
        return id2label.get(label, id2label.get(str(label), label))
    return label


def _check(shared_audio, shared_text, labels, n_splits):
    shared_audio = np.asarray(shared_audio, dtype=np.float64)
    shared_text = np.asarray(shared_text, dtype=np.float64)
    labels = np.asarray(labels)
    if shared_audio.ndim != 2:
        raise ValueError(f"`shared_audio` must be (n, hidden), got shape {shared_audio.shape}")
    if shared_text.shape != shared_audio.shape:
        raise ValueError(f"`shared_text` must have the shape of `shared_audio` {shared_audio.shape}, got {shared_text.shape}")
    if labels.shape != (len(shared_audio),):
        raise ValueError(f"`labels` must be ({len(shared_audio)},), got shape {labels.shape}")
    if not isinstance(n_splits, int) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"`n_splits` must be an integer >= 2, got {n_splits!r}")
    return shared_audio, shared_text, labels


__all__ = ["alignment_metrics", "centroid_distance", "probe_a_distance", "probe_error"]
