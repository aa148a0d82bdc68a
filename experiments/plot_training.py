#!/usr/bin/env python
"""Every loss term of eq. 15, the dynamic factor mu and the GRL coefficient over training, from the
`trainer_state.json` of a fold folder (run_fdrl.py) or of a model folder kept by run_experiments.py.

    python experiments/plot_training.py experiments/results/models/S0 --output experiments/results/training_S0.png

Step-wise entries (every `logging_steps`): loss, loss_task, loss_global, loss_local, loss_modality,
loss_orthogonal, loss_predictor, dynamic_factor, grl_coefficient. Epoch-end entries: dynamic_factor_update,
global_discriminator_error, local_discriminator_error, and the validation metrics (eval_uar, eval_war).
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


PANELS = (
    ("total and task loss", ("loss", "loss_task")),
    ("alignment (behind the GRL): L_g, L_l", ("loss_global", "loss_local")),
    ("disparity and predictor: L_p, L_d, L_f", ("loss_modality", "loss_orthogonal", "loss_predictor")),
    ("dynamic factor mu and GRL coefficient", ("dynamic_factor", "grl_coefficient", "dynamic_factor_update")),
    ("discriminator error rate over the epoch", ("global_discriminator_error", "local_discriminator_error")),
    ("validation", ("eval_uar", "eval_war")),
)
EPOCH_KEYS = {"dynamic_factor_update", "global_discriminator_error", "local_discriminator_error", "eval_uar",
              "eval_war"}


def read_log_history(folder):
    """The `log_history` of `folder/trainer_state.json` (or of the file itself)."""
    path = Path(folder)
    path = path / "trainer_state.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no trainer_state.json at {path}")
    return json.loads(path.read_text())["log_history"]


def series(log_history, key):
    """(steps, values) of one logged key, in logging order."""
    points = [(entry["step"], entry[key]) for entry in log_history if key in entry and "step" in entry]
    return [s for s, _ in points], [v for _, v in points]


def plot_training(folder, output, title=None):
    """Draw the panels for one training run; returns the keys that were found (each with its number of points)."""
    log_history = read_log_history(folder)
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    found = {}
    epoch_steps = sorted({entry["step"] for entry in log_history if "dynamic_factor_update" in entry})
    for axis, (panel_title, keys) in zip(axes.flat, PANELS):
        for key in keys:
            steps, values = series(log_history, key)
            if not steps:
                continue
            found[key] = len(steps)
            style = dict(marker="o", linestyle="--") if key in EPOCH_KEYS else dict(linewidth=1.5)
            axis.plot(steps, values, label=key, **style)
        for step in epoch_steps:  # where mu is updated
            axis.axvline(step, color="grey", linewidth=0.5, alpha=0.5)
        axis.set_title(panel_title, fontsize=10)
        axis.set_xlabel("step")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=8)
    figure.suptitle(title or f"FDRL training: {Path(folder).name} (grey lines: epoch ends, where mu is updated)")
    figure.tight_layout()
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="A folder with trainer_state.json (or the file).")
    parser.add_argument("--output", default=None, help="PNG to write (default: <folder>/training.png).")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    output = args.output or str(Path(args.folder) / "training.png")
    found = plot_training(args.folder, output, args.title)
    print(f"wrote {output}: " + ", ".join(f"{k} ({n})" for k, n in found.items()))
    return found


if __name__ == "__main__":
    main()
