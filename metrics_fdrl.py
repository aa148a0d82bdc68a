"""Emotion recognition metrics and the fold summary.

WAR (weighted average recall) is the share of utterances classified correctly, i.e. accuracy: each class's recall
weighted by its share of the test set. UAR (unweighted average recall) is the plain mean of the per-class recalls,
so every class counts the same whatever its size. Some public code in this field swaps the two names.
"""

import json
import math
from pathlib import Path

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, recall_score


def classification_metrics(predictions, labels, label_names):
    """WAR, UAR, macro and weighted F1, per-class recall and the confusion matrix (rows: truth)."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape or labels.size == 0:
        raise ValueError(f"predictions and labels must be non-empty and match, got {predictions.shape} and {labels.shape}")
    classes = list(range(len(label_names)))
    recalls = recall_score(labels, predictions, labels=classes, average=None, zero_division=0)
    present = np.isin(classes, labels)  # a class absent from the test set has no recall to average
    return {
        "war": float((predictions == labels).mean()),
        "uar": float(recalls[present].mean()),
        "macro_f1": float(f1_score(labels, predictions, labels=np.array(classes)[present], average="macro",
                                   zero_division=0)),
        "weighted_f1": float(f1_score(labels, predictions, labels=classes, average="weighted", zero_division=0)),
        "recall": {name: float(r) for name, r in zip(label_names, recalls)},
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
        "num_samples": int(labels.size),
    }


def trainer_metrics(label_names):
    """A `compute_metrics` for `Trainer`: the scalar metrics only (Trainer logs scalars)."""

    def compute(eval_prediction):
        logits = eval_prediction.predictions
        logits = logits[0] if isinstance(logits, tuple) else logits
        metrics = classification_metrics(np.argmax(logits, axis=-1), eval_prediction.label_ids, label_names)
        return {key: metrics[key] for key in ("war", "uar", "macro_f1", "weighted_f1")}

    return compute


def plot_confusion_matrix(matrix, label_names, path, title=None):
    """Save a confusion matrix (counts and row-normalised shades) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(1.2 * len(label_names) + 1.5, 1.2 * len(label_names) + 1))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(matrix.shape):
        axis.text(j, i, f"{matrix[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center",
                  color="white" if shares[i, j] > 0.5 else "black", fontsize=9)
    axis.set_xticks(range(len(label_names)), label_names)
    axis.set_yticks(range(len(label_names)), label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if title:
        axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _mean_std(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(runs, metrics=("war", "uar", "macro_f1", "weighted_f1")):
    """Mean and standard deviation over runs. `runs` is a list of {"fold", "seed", <metric>: value}."""
    if not runs:
        raise ValueError("summarize needs at least one run")
    summary = {"runs": runs, "num_runs": len(runs), "mean": {}, "std": {}}
    for metric in metrics:
        summary["mean"][metric], summary["std"][metric] = _mean_std([run.get(metric) for run in runs])
    return summary


def markdown_table(summary, metrics=("war", "uar", "macro_f1", "weighted_f1")):
    """The per-run rows and the mean +- std row, in percent."""
    header = "| seed | test session | " + " | ".join(m.upper().replace("_", " ") for m in metrics) + " |"
    lines = [header, "|" + " --- |" * (len(metrics) + 2)]
    for run in summary["runs"]:
        cells = " | ".join(f"{100 * run[m]:.2f}" for m in metrics)
        lines.append(f"| {run['seed']} | {run['fold']} | {cells} |")
    cells = " | ".join(
        f"**{100 * summary['mean'][m]:.2f} ± {100 * summary['std'][m]:.2f}**" for m in metrics
    )
    lines.append(f"| mean ± std | {summary['num_runs']} runs | {cells} |")
    return "\n".join(lines)


def write_summary(summary, output_dir):
    """results.json and results.md in `output_dir`; returns the Markdown table."""
    output_dir = Path(output_dir)
    (output_dir / "results.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(summary)
    (output_dir / "results.md").write_text(table + "\n")
    return table
