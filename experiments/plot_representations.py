#!/usr/bin/env python
"""A figure like the paper's Fig. 3, from trained FDRL model folders and the data.

(a) t-SNE of S_a, S_t, P_a, P_t on the test utterances: a model trained without the alignment and disparity
    terms (alpha = beta = 0, row S1) next to one trained with them (S0).
(b) Per-class centroids of S_a and S_t, projected to 2-D with PCA: mu fixed at 0 (global alignment only) next to
    the dynamic mu (S0).

    python experiments/plot_representations.py --without experiments/results/models/S1 \\
        --with experiments/results/models/S0 --mu0 experiments/results/models/S0_mu0 \\
        --output_dir experiments/results

The test utterances are those of the model folder's `experiment.json` (run_experiments.py writes it); the data
come from its `data_dir` unless `--data_dir` is given. Besides the PNGs, `representations.json` holds numbers
that say the same as the pictures: how well a linear probe tells S_a from S_t (0.5 = aligned) and P_a from P_t,
and the distance between the same class's speech and text centroids relative to the distance between classes.
"""

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.model_selection import cross_val_score  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from modeling_fdrl import FDRLModel  # noqa: E402
from processing_fdrl import FDRLProcessor  # noqa: E402
from trainer_fdrl import FDRLDataCollator  # noqa: E402


KINDS = ("shared_audio", "shared_text", "private_audio", "private_text")
KIND_LABELS = {"shared_audio": "$S_a$", "shared_text": "$S_t$", "private_audio": "$P_a$", "private_text": "$P_t$"}
KIND_COLORS = {"shared_audio": "tab:blue", "shared_text": "tab:orange", "private_audio": "tab:green",
               "private_text": "tab:red"}
CLASS_COLORS = ("tab:red", "tab:orange", "tab:grey", "tab:blue")


# ----- representations -----------------------------------------------------------------------------------------------
def test_examples(folder, data_dir=None):
    """The test utterances of the fold the model was trained on (never seen in training), decoded."""
    from iemocap import load_iemocap

    sys.path.insert(0, str(REPO / "experiments"))
    from run_experiments import decoded

    info = json.loads((Path(folder) / "experiment.json").read_text())
    data = load_iemocap(data_dir or info["data_dir"])
    wanted = set(info["test_ids"])
    split = data[f"session{info['test_session']}"]
    split = split.select([i for i, utterance_id in enumerate(split["id"][:]) if utterance_id in wanted])
    return decoded(split), info


@torch.no_grad()
def representations(folder, examples, batch_size=32):
    """S_a, S_t, P_a, P_t of every example as arrays (n, hidden), and the labels."""
    model = FDRLModel.from_pretrained(folder).eval()
    collator = FDRLDataCollator(FDRLProcessor.from_pretrained(folder))
    outputs = {kind: [] for kind in KINDS}
    for start in range(0, len(examples), batch_size):
        batch = collator(examples[start : start + batch_size])
        batch.pop("labels")
        output = model(**batch)
        for kind in KINDS:
            outputs[kind].append(output[kind].float().numpy())
    return {kind: np.concatenate(v) for kind, v in outputs.items()}, np.array([e["label"] for e in examples])


def linear_separability(a, b, seed=0):
    """5-fold cross-validated accuracy of a logistic regression telling a's rows from b's (0.5: indistinguishable)."""
    features = np.concatenate([a, b])
    targets = np.r_[np.zeros(len(a)), np.ones(len(b))]
    folds = min(5, len(a), len(b))
    if folds < 2:
        return None
    probe = LogisticRegression(max_iter=2000, random_state=seed)
    return float(cross_val_score(probe, features, targets, cv=folds).mean())


def centroids(reps, labels, num_labels):
    """Per-class means of S_a and S_t: (num_labels, hidden) each (NaN rows for absent classes)."""
    means = {}
    for kind in ("shared_audio", "shared_text"):
        means[kind] = np.stack([reps[kind][labels == c].mean(0) if (labels == c).any()
                                else np.full(reps[kind].shape[1], np.nan) for c in range(num_labels)])
    return means


def centroid_gap(means):
    """Mean distance between the speech and text centroid of the same class, over the mean distance between
    centroids of different classes (all 2C centroids): below 1, classes are matched across modalities."""
    audio, text = means["shared_audio"], means["shared_text"]
    present = ~np.isnan(audio).any(1) & ~np.isnan(text).any(1)
    audio, text = audio[present], text[present]
    same = np.linalg.norm(audio - text, axis=1).mean()
    points = np.concatenate([audio, text])
    classes = np.r_[np.arange(len(audio)), np.arange(len(text))]
    distances = np.linalg.norm(points[:, None] - points[None], axis=-1)
    different = distances[classes[:, None] != classes[None]].mean()
    return float(same / different) if different > 0 else None


def statistics(reps, labels, num_labels):
    return {
        "probe_accuracy_shared_audio_vs_text": linear_separability(reps["shared_audio"], reps["shared_text"]),
        "probe_accuracy_private_audio_vs_text": linear_separability(reps["private_audio"], reps["private_text"]),
        "probe_accuracy_shared_vs_private": linear_separability(
            np.concatenate([reps["shared_audio"], reps["shared_text"]]),
            np.concatenate([reps["private_audio"], reps["private_text"]])),
        "same_class_centroid_gap": centroid_gap(centroids(reps, labels, num_labels)),
    }


# ----- the figure ----------------------------------------------------------------------------------------------------
def tsne_panel(axis, reps, title, seed=0):
    points = np.concatenate([reps[kind] for kind in KINDS])  # (4 n, hidden)
    perplexity = float(min(30.0, max(2.0, (len(points) - 1) / 3.0)))
    embedded = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    n = len(reps[KINDS[0]])
    for index, kind in enumerate(KINDS):
        chunk = embedded[index * n : (index + 1) * n]
        axis.scatter(chunk[:, 0], chunk[:, 1], s=10, alpha=0.7, color=KIND_COLORS[kind], label=KIND_LABELS[kind])
    axis.set_title(title, fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.legend(fontsize=8, markerscale=1.5)


def centroid_panel(axis, reps, labels, label_names, title):
    means = centroids(reps, labels, len(label_names))
    pca = PCA(n_components=2).fit(np.concatenate([reps["shared_audio"], reps["shared_text"]]))
    audio = pca.transform(np.nan_to_num(means["shared_audio"]))  # (num_labels, 2)
    text = pca.transform(np.nan_to_num(means["shared_text"]))
    for c, name in enumerate(label_names):
        if np.isnan(means["shared_audio"][c]).any():
            continue
        color = CLASS_COLORS[c % len(CLASS_COLORS)]
        axis.plot([audio[c, 0], text[c, 0]], [audio[c, 1], text[c, 1]], color=color, linewidth=1, alpha=0.6)
        axis.scatter(*audio[c], marker="o", s=90, color=color, edgecolor="black", label=f"{name} speech")
        axis.scatter(*text[c], marker="^", s=90, color=color, edgecolor="black", label=f"{name} text")
    gap = centroid_gap(means)
    axis.set_title(f"{title}\nsame-class speech-text gap / between-class distance = {gap:.2f}", fontsize=10)
    axis.set_xlabel("PC 1 of $S_a$, $S_t$")
    axis.set_ylabel("PC 2")
    axis.legend(fontsize=7, ncol=2)


def plot_representations(without, with_, mu0, output_dir, dynamic=None, data_dir=None):
    """Write fig3a_tsne.png, fig3b_centroids.png and representations.json; returns the statistics."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    examples, info = test_examples(with_, data_dir)
    label_names = info["label_names"]
    models = {"without (alpha = beta = 0)": without, "with (S0)": with_, "mu fixed at 0": mu0,
              "dynamic mu (S0)": dynamic or with_}
    by_folder = {}  # S0 serves twice
    for folder in models.values():
        if str(folder) not in by_folder:
            by_folder[str(folder)] = representations(folder, examples)
    reps = {name: by_folder[str(folder)] for name, folder in models.items()}
    stats = {name: {"model": str(models[name]), **statistics(*reps[name], len(label_names))} for name in models}
    stats.update(test_session=info["test_session"], seed=info["seed"], num_test_utterances=len(examples))

    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for axis, name in zip(axes, ("without (alpha = beta = 0)", "with (S0)")):
        probe = stats[name]["probe_accuracy_shared_audio_vs_text"]
        tsne_panel(axis, reps[name][0], f"{name}\nprobe telling $S_a$ from $S_t$: {probe:.2f} (0.5 = aligned)")
    figure.suptitle(f"(a) t-SNE of the test utterances' representations (test session {info['test_session']})")
    figure.tight_layout()
    figure.savefig(output_dir / "fig3a_tsne.png", dpi=120)
    plt.close(figure)

    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for axis, name in zip(axes, ("mu fixed at 0", "dynamic mu (S0)")):
        centroid_panel(axis, *reps[name], label_names, name)
    figure.suptitle(f"(b) per-class centroids of the shared representations (test session {info['test_session']})")
    figure.tight_layout()
    figure.savefig(output_dir / "fig3b_centroids.png", dpi=120)
    plt.close(figure)
    (output_dir / "representations.json").write_text(json.dumps(stats, indent=2))
    return stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--without", required=True, help="Model folder trained with alpha = beta = 0 (S1).")
    parser.add_argument("--with", dest="with_", required=True, help="Model folder of full FDRL (S0).")
    parser.add_argument("--mu0", required=True, help="Model folder trained with dynamic_factor_mode=fixed, mu=0.")
    parser.add_argument("--dynamic", default=None, help="Model folder with the dynamic mu (default: --with).")
    parser.add_argument("--data_dir", default=None, help="The corpus (default: the one in experiment.json).")
    parser.add_argument("--output_dir", default=str(REPO / "experiments" / "results"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    stats = plot_representations(args.without, args.with_, args.mu0, args.output_dir, args.dynamic, args.data_dir)
    print(json.dumps(stats, indent=2))
    return stats


if __name__ == "__main__":
    main()
