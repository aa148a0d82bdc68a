"""The alignment study's table: each candidate's S0 paired with the S1 trained at the same learning rate, budget,
folds and seeds (issue 20, item 4), from the run records the protocol writes (`<results>/runs/seed*_fold*.json`).

    python experiments/alignment/study.py > experiments/alignment/study.md      # the six frozen candidates
    python experiments/alignment/study.py experiments/alignment/results_reversal \\
        experiments/alignment/results_confusion [--s1 experiments/alignment/results_reversal] > table.md

Without folders it tabulates the study's six candidates on the demo's frozen recipe, in the order of the docs, with
`results_reversal`'s S1 (not `results_paper_regime`, a fine-tuned run of another recipe that no S1 here pairs).
A candidate whose folder holds no S1 is paired with the S1 of `--s1` (S1 has alpha = beta = 0, so the adversarial
objective does not change it: the same config, seeds and folds give the same S1). Per candidate: the runs; S0's and
S1's test UAR at the kept epoch and at the last one; how many runs are stable (S0's largest validation norm of S_a, S_t
at most 3x S1's, and S0's last-epoch UAR within 3 points of its kept one); the largest norm ratio; and, on the test
session at the kept epoch, the relative centroid distance and the cross-modal transfer of both, with the runs where
S0 is more aligned (lower distance; higher transfer in both directions).
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np


HERE = Path(__file__).resolve().parent
CANDIDATES = (
    "reversal",
    "confusion",
    "confusion_labels",
    "reversal_adv_lr",
    "confusion_labels_strong",
    "confusion_labels_no_disparity",
)


def records(folder):
    return {
        (r["seed"], r["fold"]): r["systems"]
        for r in (json.loads(p.read_text()) for p in sorted(Path(folder, "runs").glob("seed*_fold*.json")))
    }


def row(name, runs, s1_runs):
    keys = sorted(k for k in runs if "S0" in runs[k] and "S1" in (runs[k] if "S1" in runs[k] else s1_runs.get(k, {})))
    pairs = [(runs[k]["S0"], runs[k].get("S1") or s1_runs[k]["S1"]) for k in keys]
    if not pairs:
        return None

    def values(system, key):
        return np.array([p[system].get(key, np.nan) for p in pairs], dtype=float)

    s0, s1 = 0, 1
    uar0, uar1 = values(s0, "uar"), values(s1, "uar")
    last0, last1 = values(s0, "last_test_uar"), values(s1, "last_test_uar")
    ratio = values(s0, "max_eval_alignment_norm") / values(s1, "max_eval_alignment_norm")
    stable = (ratio <= 3.0) & (np.abs(last0 - uar0) <= 0.03)
    distance0, distance1 = (values(s, "test_alignment_relative_centroid_distance") for s in (s0, s1))
    at0, at1 = (values(s, "test_alignment_transfer_audio_to_text") for s in (s0, s1))
    ta0, ta1 = (values(s, "test_alignment_transfer_text_to_audio") for s in (s0, s1))
    closer = distance0 < distance1
    transfers = (at0 > at1) & (ta0 > ta1)
    difference = uar0 - uar1
    return (
        f"| {name} | {len(pairs)} | {100 * uar0.mean():.1f} / {100 * last0.mean():.1f} | "
        f"{100 * uar1.mean():.1f} / {100 * last1.mean():.1f} | {100 * difference.mean():+.1f} ± "
        f"{100 * difference.std(ddof=1):.1f} | {stable.sum()} | {np.nanmax(ratio):.3g} | "
        f"{distance0.mean():.2f} vs {distance1.mean():.2f} ({closer.sum()}) | "
        f"{100 * at0.mean():.1f} / {100 * ta0.mean():.1f} vs {100 * at1.mean():.1f} / {100 * ta1.mean():.1f} "
        f"({transfers.sum()}) | {(closer & transfers).sum()} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "folders", nargs="*", help="Result folders of the candidates (each with runs/); default: the study's six."
    )
    parser.add_argument("--s1", help="The result folder whose S1 pairs candidates that ran S0 only.")
    args = parser.parse_args(argv)
    if not args.folders:
        args.folders = [HERE / f"results_{name}" for name in CANDIDATES]
        args.s1 = args.s1 or HERE / "results_reversal"
    s1_runs = records(args.s1) if args.s1 else {}
    lines = [
        "| candidate (S0 setting) | runs | S0 UAR kept / last | S1 UAR kept / last | UAR S0 - S1 (paired) | "
        "stable runs | max norm ratio S0/S1 | rel. centroid distance S0 vs S1 (S0 lower) | "
        "transfer a->t / t->a, S0 vs S1 (S0 higher in both) | S0 more aligned on both |",
        "|" + " --- |" * 10,
    ]
    for folder in args.folders:
        line = row(Path(folder).name.removeprefix("results_"), records(folder), s1_runs)
        if line:
            lines.append(line)
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
