"""Alignment diagnostics: does the shared subspace hold speech and text in one distribution?

The online discriminators of the fine-grained alignment (eq. 4-8) are trained against the encoder, so their error
rates say how the game stands, not whether S_a and S_t are aligned. These diagnostics measure it independently, on
held-out representations (the validation or test split), with the training split's vectors as the reference
for the transfer:

- the mean L2 norm of S_a and of S_t (the gradient reversal objective can grow them without bound);
- the relative class-centroid distance: within each emotion class, the distance between the centroids of S_a and
  S_t divided by the pooled within-class spread (the root mean squared distance of the class's S_a and S_t to their
  own modality's centroid), averaged over the classes. Scale-free: 0 when the two modalities' class-conditional
  distributions coincide, about 1 when the centroids are one spread apart. The raw distance (the quantity of the
  paper's Fig. 3b) is kept too, but it grows with the vectors' scale;
- cross-modal transfer: an emotion classifier (standardised features, logistic regression solved by Newton-CG to a
  gradient tolerance of 1e-5) fit on the TRAINING split's S_a and tested on the held-out S_t (a->t), and the
  reverse (t->a), as UAR (chance 1 / classes). It is what "modality-shared" means: a class learnt from speech's
  shared vectors is recognised in text's;
- paired retrieval R@1: the share of utterances whose own S_t is the nearest (Euclidean) S_t to their S_a, and the
  reverse, averaged (chance 1 / n);

No linear probe telling S_a from S_t: cross-validated on the validation split (the earlier probe) it read 1.9-2.0 for
every model, S1 included (40 utterances per modality in 128 dimensions are separable whatever the training does),
and fit on the training split's 720 vectors and tested on the held-out ones it still read 2.0 (S1 1.98-2.0) on every
test session of the alignment study: frozen Whisper and MiniLM features stay linearly separable under every
objective tried, so the probe cannot rank them.

Only numpy and scikit-learn are needed; the same input always gives the same metrics (deterministic solvers).
"""

import warnings

import numpy as np
import sklearn
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


PREFIX = "alignment_"


# The probes' solver: Newton-CG to a gradient tolerance of 1e-5 (scikit-learn's default is L-BFGS at 1e-4). Replayed
# over every fit of two FDRL systems (`bench/bench_probes.py`), it gave the exact optimum's UAR in all 86 fits, where
# the default did in 80, in 38-42% less time warm-started (bench/README.md).
PROBE_SOLVER = {"solver": "newton-cg", "tol": 1e-5}


def _classifier(random_state=0, warm_start=False):
    return make_pipeline(
        StandardScaler(),
        LogisticRegression(max_iter=1000, random_state=random_state, warm_start=warm_start, **PROBE_SOLVER),
    )


def _finite(*arrays):
    """Whether every value of every array is finite (no NaN, no inf)."""
    return all(np.isfinite(values).all() for values in arrays)


def _without_sklearn_checks():
    """scikit-learn without its own input checks, for the probes: their inputs are checked before (2-D float64,
    matching shapes, finite: `alignment_metrics`, `transfer_uar`) and their parameters are fixed here, so the checks
    would only repeat at every fit and prediction of every evaluation. The solutions and predictions are those of
    the checked pipeline, bit for bit (tests/test_alignment.py)."""
    return sklearn.config_context(assume_finite=True, skip_parameter_validation=True)


def _fit(model, features, targets):
    with warnings.catch_warnings(), _without_sklearn_checks():  # a not quite converged classifier still measures
        warnings.simplefilter("ignore", ConvergenceWarning)
        return model.fit(features, targets)


def centroid_distance(shared_audio, shared_text):
    """Euclidean distance between the means of S_a (n, d) and S_t (n, d)."""
    return float(np.linalg.norm(shared_audio.mean(0) - shared_text.mean(0)))


def pooled_spread(shared_audio, shared_text):
    """Root mean squared distance of S_a's rows to S_a's mean and of S_t's rows to S_t's mean, pooled."""
    squared = np.concatenate(
        [((shared_audio - shared_audio.mean(0)) ** 2).sum(1), ((shared_text - shared_text.mean(0)) ** 2).sum(1)]
    )
    return float(np.sqrt(squared.mean()))


def relative_centroid_distance(shared_audio, shared_text):
    """`centroid_distance` over `pooled_spread` (scale-free); None when the spread is 0."""
    spread = pooled_spread(shared_audio, shared_text)
    return centroid_distance(shared_audio, shared_text) / spread if spread > 0 else None


def transfer_uar(train_features, train_labels, features, labels, random_state=0, classifier=None):
    """UAR on (`features`, `labels`) of a standardised logistic regression fit on the training split's vectors of
    the other modality; None when the training labels hold a single class. `classifier` (from `transfer_probes`)
    is refit warm-started from its last solution."""
    if len(np.unique(train_labels)) < 2:
        return None
    for name, values in (("train_features", train_features), ("features", features)):
        if not _finite(values):  # scikit-learn's own check is off (`_without_sklearn_checks`)
            raise ValueError(f"`{name}` holds values that are not finite (NaN or inf)")
    classifier = _fit(classifier or _classifier(random_state), train_features, train_labels)
    with warnings.catch_warnings():  # a predicted class absent from `labels`
        warnings.simplefilter("ignore", UserWarning)
        with _without_sklearn_checks():
            predicted = classifier.predict(features)
        return float(balanced_accuracy_score(labels, predicted))


def retrieval_at_1(shared_audio, shared_text):
    """Paired retrieval R@1: the share of rows i whose nearest S_t (Euclidean) to S_a[i] is S_t[i], and of the
    reverse, averaged. Ties count as misses."""
    distances = ((shared_audio[:, None, :] - shared_text[None, :, :]) ** 2).sum(-1)  # (n, n): a rows, t columns
    own = np.diag(distances)
    audio_to_text = (distances.min(1) == own) & ((distances == own[:, None]).sum(1) == 1)
    text_to_audio = (distances.min(0) == own) & ((distances == own[None, :]).sum(0) == 1)
    return float((audio_to_text.mean() + text_to_audio.mean()) / 2.0)


def mean_norm(vectors):
    return float(np.linalg.norm(vectors, axis=1).mean())


def transfer_probes(random_state=0):
    """The two transfer classifiers (a->t, t->a) of one training run, for `alignment_metrics(probes=...)` at each of
    its evaluations. Each refit starts from the solution of the previous evaluation (scikit-learn's `warm_start`):
    the objective is the same strictly convex, L2-regularised logistic loss, so Newton-CG reaches the same optimum,
    up to its tolerance, in fewer iterations; the representations move little between two epochs."""
    return {"audio_to_text": _classifier(random_state, True), "text_to_audio": _classifier(random_state, True)}


def alignment_metrics(shared_audio, shared_text, labels, id2label=None, reference=None, random_state=0, probes=None):
    """The alignment diagnostics of paired shared representations, as a flat dict of floats.

    Args:
        shared_audio (`np.ndarray` of shape `(n, hidden)`): S_a of n held-out utterances (a torch tensor in bf16
            converts with `.float().cpu().numpy()`).
        shared_text (`np.ndarray` of shape `(n, hidden)`): S_t of the same utterances, in the same order.
        labels (`np.ndarray` of shape `(n,)`): their emotion classes.
        id2label (`dict`, *optional*): names the classes in the metric names; else the label itself is used.
        reference (`tuple` of `(train_audio, train_text, train_labels)`, *optional*): S_a (m, hidden), S_t (m,
            hidden) and the labels (m,) of training utterances, for the cross-modal transfer.
        random_state (`int`, *optional*, defaults to 0): seeds the classifiers' solvers.
        probes (`dict`, *optional*): from `transfer_probes`, kept across a run's evaluations: the transfer
            classifiers start from their previous solution (same optimum, fewer iterations).

    Returns:
        `dict`: `alignment_norm_audio`, `alignment_norm_text`; `alignment_relative_centroid_distance_<label>` and
        `alignment_centroid_distance_<label>` for each class with at least 2 utterances (and a positive spread),
        their means `alignment_relative_centroid_distance` and `alignment_centroid_distance`;
        `alignment_retrieval_r1` (with at least 2 utterances); with `reference`: `alignment_transfer_audio_to_text`,
        `alignment_transfer_text_to_audio` (absent when the reference holds a single class or vectors that are not
        finite). With held-out vectors that are not finite, the two norms only.
    """
    shared_audio, shared_text, labels = _check(shared_audio, shared_text, labels)
    metrics = {PREFIX + "norm_audio": mean_norm(shared_audio), PREFIX + "norm_text": mean_norm(shared_text)}
    if not _finite(shared_audio, shared_text):
        return metrics  # diverged: the norms say so, nothing else can be measured
    relative, raw = [], []
    for label in np.unique(labels):
        rows = labels == label
        if rows.sum() < 2:
            continue
        ratio = relative_centroid_distance(shared_audio[rows], shared_text[rows])
        if ratio is None:
            continue
        name = _label_name(label, id2label)
        relative.append(ratio)
        raw.append(centroid_distance(shared_audio[rows], shared_text[rows]))
        metrics[f"{PREFIX}relative_centroid_distance_{name}"] = relative[-1]
        metrics[f"{PREFIX}centroid_distance_{name}"] = raw[-1]
    if relative:
        metrics[PREFIX + "relative_centroid_distance"] = float(np.mean(relative))
        metrics[PREFIX + "centroid_distance"] = float(np.mean(raw))
    if len(labels) >= 2:
        metrics[PREFIX + "retrieval_r1"] = retrieval_at_1(shared_audio, shared_text)
    if reference is not None:
        train_audio, train_text, train_labels = _check(*reference, name="reference")
        if train_audio.shape[1] != shared_audio.shape[1]:
            raise ValueError(
                f"`reference` vectors must have {shared_audio.shape[1]} columns, got {train_audio.shape[1]}"
            )
        if not _finite(train_audio, train_text):
            return metrics  # training vectors that diverged: no classifier can be fit on them
        probes = probes or {}
        to_text = transfer_uar(
            train_audio, train_labels, shared_text, labels, random_state, probes.get("audio_to_text")
        )
        if to_text is not None:
            metrics[PREFIX + "transfer_audio_to_text"] = to_text
            metrics[PREFIX + "transfer_text_to_audio"] = transfer_uar(
                train_text, train_labels, shared_audio, labels, random_state, probes.get("text_to_audio")
            )
    return metrics


def _label_name(label, id2label):
    label = label.item() if isinstance(label, np.generic) else label
    if id2label:
        return id2label.get(label, id2label.get(str(label), label))
    return label


def _check(shared_audio, shared_text, labels, name=None):
    where = f"`{name}`: " if name else ""
    shared_audio = np.asarray(shared_audio, dtype=np.float64)
    shared_text = np.asarray(shared_text, dtype=np.float64)
    labels = np.asarray(labels)
    if shared_audio.ndim != 2 or len(shared_audio) == 0:
        raise ValueError(f"{where}`shared_audio` must be (n, hidden) with n >= 1, got shape {shared_audio.shape}")
    if shared_text.shape != shared_audio.shape:
        raise ValueError(
            f"{where}`shared_text` must have the shape of `shared_audio` {shared_audio.shape}, got {shared_text.shape}"
        )
    if labels.shape != (len(shared_audio),):
        raise ValueError(f"{where}`labels` must be ({len(shared_audio)},), got shape {labels.shape}")
    return shared_audio, shared_text, labels


__all__ = [
    "alignment_metrics",
    "centroid_distance",
    "mean_norm",
    "pooled_spread",
    "relative_centroid_distance",
    "retrieval_at_1",
    "transfer_probes",
    "transfer_uar",
]
