"""The cross-modal transfer probes of the alignment diagnostics: what they cost, and how far their solver's tolerance
moves the values they report.

The probes (`fdrl.evaluation.alignment.transfer_uar`) are two L2-regularised logistic regressions (a->t, t->a) fit
at every evaluation of every FDRL system, each warm-started from its previous evaluation's solution (Newton-CG to a
gradient tolerance of 1e-5, `alignment.PROBE_SOLVER`). They are the largest part of an FDRL system's time on cached
features after the training steps (`bench_heads.py`). This script runs one FDRL system as `run_fdrl.py` runs it (one
torch thread, the feature cache filled by an untimed run first) and records, in order, every fit the probes make:
its training vectors and labels, the held-out vectors and labels it is tested on, and the UAR it reported. It then
replays that sequence with each solver below and records its seconds, its iterations, and how its UARs compare
with the logistic regression's exact optimum (Newton-Cholesky to a gradient tolerance of 1e-10):

- `newton-cg_warm`: the shipped probe, warm-started as in the run (its replay must give the run's UARs:
  `replay_exact`);
- `newton-cg_cold`: the same without the warm start;
- `newton-cg_warm_tol1e-4`: the shipped probe at scikit-learn's default tolerance;
- `lbfgs_warm`, `lbfgs_cold`: scikit-learn's default solver and tolerance (L-BFGS, 1e-4), the probe of the earlier
  rounds.

Solvers alternate in order across `--repeats`, since this machine's speed drifts within a run.

    .venv/bin/python bench/bench_probes.py                  # S0 on fold 1, the demo's recipe, about two minutes
    .venv/bin/python bench/bench_probes.py --system S3 --fold 2 --repeats 3
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np
import torch
from bench_heads import add_system_arguments, system_on_cached_features
from sklearn.metrics import balanced_accuracy_score

import common
from common import logger


SOLVERS = {  # name: (LogisticRegression parameters over the shipped probe's, warm-started from the previous fit)
    "newton-cg_warm": ({}, True),
    "newton-cg_cold": ({}, False),
    "newton-cg_warm_tol1e-4": ({"tol": 1e-4}, True),
    "lbfgs_warm": ({"solver": "lbfgs", "tol": 1e-4}, True),
    "lbfgs_cold": ({"solver": "lbfgs", "tol": 1e-4}, False),
}
SHIPPED = "newton-cg_warm"
EXACT = {"solver": "newton-cholesky", "tol": 1e-10, "max_iter": 10000}


def capture_fits(run):
    """Run `run()` and return every `transfer_uar` fit it made, in order: (train features, train labels, features,
    labels, the probe's identity (a warm-start chain), the UAR reported)."""
    from fdrl.evaluation import alignment

    fits, original = [], alignment.transfer_uar

    def recording(train_features, train_labels, features, labels, random_state=0, classifier=None):
        uar = original(train_features, train_labels, features, labels, random_state, classifier)
        copies = (np.array(train_features), np.array(train_labels), np.array(features), np.array(labels))
        fits.append((*copies, id(classifier), uar))
        return uar

    alignment.transfer_uar = recording
    try:
        run()
    finally:
        alignment.transfer_uar = original
    return fits


def replay(fits, parameters, warm):
    """(seconds, UARs, iterations) of the fits refit with the shipped probe's pipeline under `parameters`."""
    from fdrl.evaluation import alignment

    chains, uars, iterations = {}, [], []
    start = time.perf_counter()
    with warnings.catch_warnings(), alignment._without_sklearn_checks():
        warnings.simplefilter("ignore")  # not quite converged fits, predicted classes absent from the labels
        for train_features, train_labels, features, labels, chain, _ in fits:
            probe = chains.get(chain) if warm else None
            if probe is None:
                probe = alignment._classifier(0, warm)
                probe.set_params(**{f"logisticregression__{k}": v for k, v in parameters.items()})
                chains[chain] = probe
            probe.fit(train_features, train_labels)
            iterations.append(int(np.max(probe[-1].n_iter_)))
            uars.append(float(balanced_accuracy_score(labels, probe.predict(features))))
    return time.perf_counter() - start, np.array(uars), np.array(iterations)


def compare(uars, reference):
    difference = np.abs(uars - reference)
    return {
        "equal": int((difference == 0).sum()),
        "max_abs_difference": float(difference.max()),
        "mean_abs_difference": float(difference.mean()),
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_system_arguments(parser)
    parser.add_argument("--repeats", type=int, default=3, help="Replays of each solver, alternating in order.")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/probes_cpu.json).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.repeats < 1:
        raise ValueError(f"--repeats must be at least 1, got {args.repeats}")
    common.setup_logging()
    machine = common.machine_info(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="fdrl-bench-probes-") as workdir:
        run = system_on_cached_features(args, workdir, ["--save_figures", "false"])
        logger.info(f"recording the probes of {args.system} on fold {args.fold}")
        fits = capture_fits(lambda: run("recorded"))
    if not fits:
        raise RuntimeError(f"{args.system} made no transfer probe fit: is it an FDRL system (S0-S6)?")
    reported = np.array([fit[-1] for fit in fits], dtype=float)
    _, exact, exact_iterations = replay(fits, EXACT, warm=False)
    runs = {name: [] for name in SOLVERS}
    replayed = {}
    for repeat in range(args.repeats):
        order = list(SOLVERS) if repeat % 2 == 0 else list(reversed(SOLVERS))
        for name in order:
            parameters, warm = SOLVERS[name]
            seconds, uars, iterations = replay(fits, parameters, warm)
            runs[name].append(seconds)
            replayed[name] = (uars, iterations)
    solvers = {}
    for name, seconds in runs.items():
        uars, iterations = replayed[name]
        solvers[name] = {
            "seconds": seconds,
            "median_s": float(np.median(seconds)),
            "ms_per_fit": 1000 * float(np.median(seconds)) / len(fits),
            "mean_iterations": float(iterations.mean()),
            "max_iterations": int(iterations.max()),
            "mean_uar": float(uars.mean()),
            "against_exact": compare(uars, exact),
            "against_shipped": compare(uars, reported),
        }
    results = {
        "fits": len(fits),
        "solvers": solvers,
        "replay_exact": bool(np.array_equal(replayed[SHIPPED][0], reported)),
        "exact": {"mean_uar": float(exact.mean()), "mean_iterations": float(exact_iterations.mean())},
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    output = args.output or common.RESULTS_DIR / "probes_cpu.json"
    common.write_result(output, "bench_probes.py", machine, {**vars(args), "torch_threads": 1}, results)
    for name, row in solvers.items():
        logger.info(
            f"{name}: {row['ms_per_fit']:.1f} ms per fit, {row['mean_iterations']:.1f} iterations; equal to the "
            f"exact optimum's UAR in {row['against_exact']['equal']} of {len(fits)} fits (largest difference "
            f"{100 * row['against_exact']['max_abs_difference']:.1f} points), to the shipped probe's in "
            f"{row['against_shipped']['equal']}"
        )
    return results


if __name__ == "__main__":
    main()
