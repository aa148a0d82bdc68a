"""Figures: confusion matrices and training curves. Uses matplotlib's object API (`Figure`), so no backend is
chosen for the caller and nothing opens a window."""

import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def plot_confusion_matrix(matrix, label_names, path, title=None):
    """Save a confusion matrix (counts and row-normalised shades) as a PNG."""
    matrix = np.asarray(matrix)
    shares = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    width, height = 1.2 * len(label_names) + 1.5, 1.2 * len(label_names) + 1
    figure = Figure(figsize=(width, height))
    # fixed margins in inches for the class names and titles (`tight_layout` would measure every text first)
    figure.subplots_adjust(left=1.0 / width, right=1 - 0.3 / width, bottom=0.75 / height, top=1 - 0.45 / height)
    axis = figure.subplots()
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(matrix.shape):
        axis.text(
            j,
            i,
            f"{matrix[i, j]}\n{shares[i, j]:.0%}",
            ha="center",
            va="center",
            color="white" if shares[i, j] > 0.5 else "black",
            fontsize=9,
        )
    axis.set_xticks(range(len(label_names)), label_names)
    axis.set_yticks(range(len(label_names)), label_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if title:
        axis.set_title(title)
    figure.savefig(path, dpi=120)


def log_series(log_history, key):
    """(epochs, values) of one logged key from a Trainer's `log_history`."""
    points = [(entry.get("epoch", 0.0), entry[key]) for entry in log_history if key in entry]
    return [p[0] for p in points], [p[1] for p in points]


def plot_training(trainer_state, path, panels, title=None):
    """One panel per group of logged keys over epochs, from a `trainer_state.json` path or its dict. `panels` is a
    sequence of (panel title, [keys]); keys never logged are left out. A panel whose positive values span more than
    three orders of magnitude gets a log scale."""
    state = json.loads(Path(trainer_state).read_text()) if isinstance(trainer_state, (str, Path)) else trainer_state
    history = state["log_history"]
    panels = [(name, [k for k in keys if log_series(history, k)[0]]) for name, keys in panels]
    panels = [(name, keys) for name, keys in panels if keys]
    if not panels:
        raise ValueError(f"none of the keys of {path} were logged")
    width, height = 4.2 * len(panels), 3.4
    figure = Figure(figsize=(width, height))
    # fixed margins in inches (tick labels, epoch label, titles) instead of `tight_layout`, which measures every
    # text first: that was 0.3 of this figure's 0.75 s, paid by each FDRL system of a protocol
    # (gaps of 0.75 in between the 4.2 in panels)
    figure.subplots_adjust(
        left=0.5 / width, right=1 - 0.1 / width, bottom=0.5 / height, top=1 - 0.75 / height, wspace=0.75 / 3.45
    )
    axes = np.atleast_1d(figure.subplots(1, len(panels)))
    for axis, (name, keys) in zip(axes, panels):
        for key in keys:
            axis.plot(
                *log_series(history, key), marker="." if len(log_series(history, key)[0]) < 30 else None, label=key
            )
        values = np.array([v for key in keys for v in log_series(history, key)[1]], dtype=float)
        values = values[np.isfinite(values)]
        if values.size and values.min() > 0 and values.max() / values.min() > 1000:  # e.g. diverging norms
            axis.set_yscale("log")
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("epoch")
        axis.legend(fontsize=7)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=110)


def fdrl_training_panels(label_names):
    """The panels of an FDRL training-curves figure: the loss terms, mu with the raw discriminator error rates,
    the alignment diagnostics (norms, relative centroid distance, transfer, retrieval), and the validation
    metrics."""
    from modeling_fdrl import LOSS_TERMS

    return (
        ("loss terms", ["loss", *LOSS_TERMS]),
        (
            "dynamic factor and discriminator errors",
            ["dynamic_factor", "global_discriminator_error", *[f"local_discriminator_error_{l}" for l in label_names]],
        ),
        (
            "shared-vector norms (validation)",
            ["eval_alignment_norm_audio", "eval_alignment_norm_text", "eval_alignment_norm_growth"],
        ),
        (
            "relative class-centroid distance S_a-S_t (validation)",
            [
                "eval_alignment_relative_centroid_distance",
                *[f"eval_alignment_relative_centroid_distance_{l}" for l in label_names],
            ],
        ),
        (
            "cross-modal transfer and paired retrieval (validation)",
            [
                "eval_alignment_transfer_audio_to_text",
                "eval_alignment_transfer_text_to_audio",
                "eval_alignment_retrieval_r1",
            ],
        ),
        ("validation", ["eval_uar", "eval_war"]),
    )


# ----- a protocol run's figures: drawn by `run_fdrl.py` as each system finishes (`--save_figures`, the default), or
# afterwards from what the run wrote by `fdrl-plot-run` (fdrl/cli/plot_run.py): the same calls, the same files
def confusion_path(fold_dir, system):
    """`{output_dir}/seed{S}/fold{F}/confusion_<system>.png`."""
    return Path(fold_dir) / f"confusion_{system}.png"


def training_curves_path(fold_dir, system):
    """`{output_dir}/seed{S}/fold{F}/<system>/training_curves.png`."""
    return Path(fold_dir) / system / "training_curves.png"


def draw_confusion(fold_dir, system, matrix, label_names, run_title):
    """One system's test confusion matrix of one run (`confusion_path`); `run_title` names the run. Returns the
    path."""
    path = confusion_path(fold_dir, system)
    plot_confusion_matrix(matrix, label_names, path, title=f"{system}, {run_title}")
    return path


def draw_training_curves(fold_dir, system, log_history, label_names, run_title):
    """One FDRL system's training curves of one run (`training_curves_path`), from its Trainer's `log_history`
    (`trainer_state.json`). Returns the path."""
    path = training_curves_path(fold_dir, system)
    plot_training({"log_history": log_history}, path, fdrl_training_panels(label_names), title=f"{system}, {run_title}")
    return path


REPRESENTATION_NAMES = {
    "shared_audio": "$S_a$",
    "shared_text": "$S_t$",
    "private_audio": "$P_a$",
    "private_text": "$P_t$",
}


def plot_representations(representations, labels, label_names, path, title=None, seed=0):
    """A Fig. 3-like figure: (left) a t-SNE of S_a, S_t, P_a and P_t of the same utterances, coloured by kind;
    (right) the per-class centroids of S_a and S_t in the plane of their first two principal components, joined by a
    line per class (the distance the alignment should shrink). `representations` maps the four names to (n, d)."""
    plot_representation_rows([(None, representations, labels)], label_names, path, title, seed)


def plot_representation_rows(rows, label_names, path, title=None, seed=0):
    """`plot_representations` for several models side by side, one row each (e.g. S1 and S0 on the same session):
    `rows` is a list of (row title or None, representations, labels)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    figure = Figure(figsize=(12, 4.6 * len(rows)))
    axes = np.atleast_2d(figure.subplots(len(rows), 2))
    for (row_title, representations, labels), (left, right) in zip(rows, axes):
        names = [n for n in REPRESENTATION_NAMES if n in representations]
        stacked = np.concatenate([np.asarray(representations[n], dtype=np.float64) for n in names])  # (4n, d)
        count = len(labels)
        embedded = TSNE(
            n_components=2, perplexity=min(30.0, max(5.0, count / 4)), random_state=seed, init="pca"
        ).fit_transform(stacked)  # (4n, 2)
        for index, name in enumerate(names):
            points = embedded[index * count : (index + 1) * count]
            left.scatter(points[:, 0], points[:, 1], s=8, alpha=0.6, label=REPRESENTATION_NAMES[name])
        prefix = f"{row_title}: " if row_title else ""
        left.set_title(f"{prefix}t-SNE of the four representations", fontsize=10)
        left.legend(fontsize=8)
        labels = np.asarray(labels)
        shared = np.concatenate([representations["shared_audio"], representations["shared_text"]])
        plane = PCA(n_components=2, random_state=seed).fit(shared)
        for label_index, label in enumerate(label_names):
            members = labels == label_index
            if not members.any():
                continue
            audio = plane.transform(np.asarray(representations["shared_audio"])[members].mean(0, keepdims=True))[0]
            text = plane.transform(np.asarray(representations["shared_text"])[members].mean(0, keepdims=True))[0]
            line = right.plot([audio[0], text[0]], [audio[1], text[1]], "-", label=label)[0]
            right.plot(*audio, "o", color=line.get_color())
            right.plot(*text, "s", color=line.get_color())
        right.set_title(f"{prefix}centroids of $S_a$ (o), $S_t$ (s), 2 PCs", fontsize=10)
        right.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
