"""Draw a protocol run's figures from what it wrote: `fdrl-plot-run`.

    fdrl-plot-run experiments/results
    fdrl-plot-run demo_output --overwrite

`run_fdrl.py` draws each system's test confusion matrix and each FDRL system's training curves as the system
finishes, unless `--save_figures false` (the evidence table's setting: the figures are about 5% of each system's
time). This command draws the same files, with the same functions, from the run records
(`runs/seed{S}_fold{F}.json`: the confusion matrices) and each trained system's `trainer_state.json` (its log
history), for every run of the folder, finished or not: `seed{S}/fold{F}/confusion_<system>.png` and
`seed{S}/fold{F}/<S0-S6>/training_curves.png`. A figure that exists is left as it is, unless `--overwrite`.
"""

import argparse
import json
from functools import partial
from pathlib import Path

from fdrl.data.corpus import fold_name, run_title
from fdrl.evaluation.plots import confusion_path, draw_confusion, draw_training_curves, training_curves_path
from fdrl.training.protocol import record_problem
from fdrl.training.systems import SYSTEMS


def run_figures(output_dir):
    """What `run_fdrl.py` draws for the run folder `output_dir`, as (path, draw) pairs, `draw()` writing the file.
    Raises `FileNotFoundError` naming the folder when it holds no run record, and `ValueError` naming the file when
    a run record or a `trainer_state.json` is damaged (before anything is drawn)."""
    output_dir = Path(output_dir)
    records = sorted((output_dir / "runs").glob("seed*.json"))
    if not records:
        raise FileNotFoundError(f"{output_dir} holds no run records (runs/seed*.json): is it a run_fdrl.py output_dir?")
    figures = []
    for path in records:
        record = _read(path)
        problem = record_problem(record) or ("" if {"seed", "fold"} <= set(record) else "no 'seed' or 'fold'")
        if problem:
            raise ValueError(f"{path} is not a complete run record ({problem}); rerun it with run_fdrl.py first")
        seed, fold = record["seed"], record["fold"]
        fold_dir, title = output_dir / f"seed{seed}" / fold_name(fold), run_title(seed, fold)
        for system, metrics in record["systems"].items():
            labels = list(metrics["recall"])  # the run's classes, in order
            draw = partial(draw_confusion, fold_dir, system, metrics["confusion_matrix"], labels, title)
            figures.append((confusion_path(fold_dir, system), draw))
            state = fold_dir / system / "trainer_state.json"
            if system in SYSTEMS and SYSTEMS[system].is_fdrl and state.is_file():
                history = _read(state).get("log_history")
                if not isinstance(history, list):
                    raise ValueError(f"{state} has no 'log_history' list")
                draw = partial(draw_training_curves, fold_dir, system, history, labels, title)
                figures.append((training_curves_path(fold_dir, system), draw))
    return figures


def _read(path):
    """A JSON object from `path`, or a `ValueError` naming it."""
    try:
        value = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} cannot be read as JSON ({error})") from error
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a {type(value).__name__}, not a JSON object")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fdrl-plot-run", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", help="A run_fdrl.py output folder.")
    parser.add_argument("--overwrite", action="store_true", help="Redraw figures that exist.")
    args = parser.parse_args(argv)
    try:
        figures = run_figures(args.output_dir)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    drawn = kept = 0
    for path, draw in figures:
        if path.exists() and not args.overwrite:
            kept += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        draw()
        drawn += 1
    note = " (--overwrite redraws them)" if kept else ""
    print(f"{args.output_dir}: {drawn} figures drawn, {kept} already there and kept{note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
