"""WAR, UAR, F1 and the confusion matrix through the repository's `evaluate` module (see
`emotion_recognition/emotion_recognition.py`): loaded from a local path, so it works offline."""

import functools
from pathlib import Path

import numpy as np


METRIC_PATH = Path(__file__).resolve().parent / "emotion_recognition"
SCALAR_METRICS = ("war", "uar", "macro_f1", "weighted_f1")


@functools.lru_cache(maxsize=1)
def load_metric():
    """The `evaluate` module, loaded once per process from its folder in this package."""
    import evaluate

    return evaluate.load(str(METRIC_PATH))


def classification_metrics(predictions, labels, label_names):
    """WAR, UAR, macro/weighted F1, per-class recall by name (None for a class absent from `labels`), the confusion
    matrix (rows: truth) and the number of samples."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(
            f"predictions and labels must be non-empty and match, got {predictions.shape} and {labels.shape}"
        )
    metric = load_metric()
    if np.issubdtype(predictions.dtype, np.integer) and np.issubdtype(labels.dtype, np.integer):
        # the module's own computation, without `compute`'s round trip of the values through an Arrow file
        # (about 50 ms per call, most of a baseline's epoch on cached features); the same numbers
        result = metric._compute(predictions=predictions, references=labels, num_labels=len(label_names))
    else:
        result = metric.compute(predictions=predictions, references=labels, num_labels=len(label_names))
    result["recall"] = dict(zip(label_names, result["recall"]))
    return result


def trainer_metrics(label_names):
    """A `compute_metrics` for `Trainer`: the scalar metrics only (Trainer logs scalars)."""

    def compute(eval_prediction):
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        metrics = classification_metrics(np.argmax(logits, axis=-1), eval_prediction.label_ids, label_names)
        return {key: metrics[key] for key in SCALAR_METRICS}

    return compute


class fdrl_metrics:  # noqa: N801 (used like trainer_metrics, a factory of compute_metrics)
    """`compute_metrics` for FDRLTrainer, whose predictions are (logits, shared_audio, shared_text): the scalar
    classification metrics and the alignment diagnostics of S_a and S_t (`fdrl.evaluation.alignment`).

    `reference` (set by the trainer before each evaluation) holds the training split's (S_a, S_t, labels) from the
    current model, for the cross-modal transfer. `alignment_norm_growth` is the mean norm of the
    reference's S_a and S_t (the same training utterances every time) over its value at the first evaluation (of
    the evaluated split's vectors when there is no reference); `alignment_norm` is the mean of the two norms."""

    def __init__(self, label_names):
        self.label_names = list(label_names)
        self.reference = None
        self.first_norm = None
        self.probes = None  # the transfer classifiers, warm-started from one evaluation to the next

    def __call__(self, eval_prediction):
        predictions = eval_prediction.predictions
        metrics = trainer_metrics(self.label_names)(type(eval_prediction)(predictions[0], eval_prediction.label_ids))
        metrics.update(self.alignment(predictions, eval_prediction.label_ids))
        return metrics

    def alignment(self, predictions, labels, prefix=""):
        from .alignment import PREFIX, alignment_metrics, mean_norm, transfer_probes

        if len(predictions) < 3:
            return {}
        shared_audio, shared_text = np.asarray(predictions[1], np.float64), np.asarray(predictions[2], np.float64)
        if self.probes is None:
            self.probes = transfer_probes()
        diagnostics = alignment_metrics(
            shared_audio,
            shared_text,
            np.asarray(labels),
            dict(enumerate(self.label_names)),
            reference=self.reference,
            probes=self.probes,
        )
        diagnostics[PREFIX + "norm"] = (diagnostics[PREFIX + "norm_audio"] + diagnostics[PREFIX + "norm_text"]) / 2
        source = (shared_audio, shared_text) if self.reference is None else self.reference[:2]
        norm = (mean_norm(np.asarray(source[0], np.float64)) + mean_norm(np.asarray(source[1], np.float64))) / 2
        if self.first_norm is None:
            self.first_norm = norm
        diagnostics[PREFIX + "norm_growth"] = norm / self.first_norm if self.first_norm > 0 else float("nan")
        return {f"{prefix}{key}": value for key, value in diagnostics.items()}
