"""Where one FDRL system's time goes when its heads train on cached features (the frozen-backbone protocol).

One system on one fold, run as `run_fdrl.py` runs it (in this process, one torch thread), after an untimed run has
filled the feature cache. Wall-clock timers around the parts of the training loop record, for the timed run: the
system's whole training and test (`train_system`), the figures drawn after it (`--save_figures`), the training
steps (forward, backward, AdamW step, gradient clipping, batch assembly) and the per-epoch evaluations, of which the
alignment diagnostics
(`fdrl.evaluation.alignment`, the two cross-modal transfer probes included) and the training vectors they need as
a reference. The diagnostics' cost per evaluation, and its share of the system's time, is the figure the README
quotes. The timers wrap the methods in place for this process only; nothing else is changed.

    .venv/bin/python bench/bench_heads.py                    # S0 on fold 1, the demo's recipe, about a minute
    .venv/bin/python bench/bench_heads.py --system S3 --fold 2
"""

import argparse
import collections
import contextlib
import functools
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

import common
from common import logger


# (owner, method name, label): what is timed, each call of it
def _timed_parts():
    import accelerate
    from transformers import Trainer

    import fdrl.training.protocol as protocol
    from fdrl.evaluation.metrics import fdrl_metrics
    from fdrl.training.trainer import FDRLTrainer
    from modeling_fdrl import FDRLModel

    return [
        (protocol, "train_system", "system"),
        (Trainer, "training_step", "training_step"),
        (FDRLModel, "forward", "forward"),
        (accelerate.Accelerator, "backward", "backward"),
        (torch.optim.AdamW, "step", "optimizer_step"),
        (Trainer, "_clip_grad_norm", "gradient_clipping"),
        (Trainer, "get_batch_samples", "batches"),
        (Trainer, "_evaluate", "evaluation"),
        (fdrl_metrics, "alignment", "alignment_diagnostics"),
        (FDRLTrainer, "training_representations", "alignment_reference"),
        # the figures the protocol draws after the system (`--save_figures`), by the names it calls them under
        (protocol, "draw_training_curves", "figure_training_curves"),
        (protocol, "draw_confusion", "figure_confusion_matrix"),
    ]


@contextlib.contextmanager
def timers(parts):
    """{label: [seconds, calls]} filled while the block runs; the methods are restored after."""
    totals = collections.defaultdict(lambda: [0.0, 0])
    saved = []
    for owner, name, label in parts:
        original = getattr(owner, name)
        saved.append((owner, name, original))

        @functools.wraps(original)
        def timed(*args, _original=original, _label=label, **kwargs):
            start = time.perf_counter()
            try:
                return _original(*args, **kwargs)
            finally:
                totals[_label][0] += time.perf_counter() - start
                totals[_label][1] += 1

        setattr(owner, name, timed)
    try:
        yield totals
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def add_system_arguments(parser):
    """The arguments naming one FDRL system's run on cached features (`system_on_cached_features`)."""
    parser.add_argument("--system", default="S0", help="The FDRL system (S0-S6).")
    parser.add_argument("--fold", default="1", help="Its test session.")
    parser.add_argument(
        "--config", nargs="+", default=["examples/base.yaml", "examples/demo.yaml"], help="run_fdrl.py's files."
    )
    parser.add_argument("--tiny", action="store_true", help="The tiny preset on --data_dir, 2 epochs (smoke test).")
    parser.add_argument("--data_dir", default=None, help="The corpus (default: the files').")


def system_on_cached_features(args, workdir, extra_flags=()):
    """`run(name)`, which runs `args.system` on fold `args.fold` in this process as `run_fdrl.py` runs it (one torch
    thread) into `workdir/name`, once an untimed run (made here) has filled a feature cache in `workdir`."""
    from bench_protocol import TINY_BASE

    import run_fdrl

    torch.set_num_threads(1)  # as make demo and the --parallel_runs workers train
    files = [str(common.REPO / path) for path in args.config]
    if args.tiny:
        tiny = Path(workdir) / "tiny.yaml"
        tiny.write_text(yaml.safe_dump({**TINY_BASE, "data_dir": str(Path(args.data_dir).resolve())}))
        files = [str(tiny), str(common.REPO / "examples/demo.yaml")]
    flags = ["--systems", args.system, "--folds", args.fold, "--parallel_runs", "1", "--protocol_progress", "false"]
    flags += ["--feature_cache_dir", f"{workdir}/features", *extra_flags]
    if args.data_dir:
        flags += ["--data_dir", str(Path(args.data_dir).resolve())]
    logger.info("untimed run: fills the feature cache")
    run_fdrl.main([*files, *flags, "--output_dir", f"{workdir}/warmup"])
    return lambda name: run_fdrl.main([*files, *flags, "--output_dir", f"{workdir}/{name}"])


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_system_arguments(parser)
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/heads_cpu.json).")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    common.setup_logging()
    machine = common.machine_info(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="fdrl-bench-heads-") as workdir:
        run = system_on_cached_features(args, workdir)
        logger.info(f"timed run: {args.system} on fold {args.fold}")
        start = time.perf_counter()
        with timers(_timed_parts()) as totals:
            run("timed")
        wall = time.perf_counter() - start
    parts = {label: {"seconds": seconds, "calls": calls} for label, (seconds, calls) in totals.items()}
    system_s = parts["system"]["seconds"]
    evaluations = parts["evaluation"]["calls"]
    diagnostics = parts["alignment_diagnostics"]["seconds"] + parts["alignment_reference"]["seconds"]
    results = {
        "run_wall_s": wall,
        "parts": parts,
        "steps": parts["training_step"]["calls"],
        "ms_per_training_step": 1000 * parts["training_step"]["seconds"] / parts["training_step"]["calls"],
        "evaluations": evaluations,
        "ms_per_evaluation": 1000 * parts["evaluation"]["seconds"] / evaluations,
        # per call: the validation evaluations and the test predictions (which carry them too)
        "alignment_diagnostics_ms_per_evaluation": 1000 * diagnostics / parts["alignment_diagnostics"]["calls"],
        "alignment_diagnostics_share_of_system": diagnostics / system_s,
        # drawn after `system` (not part of it): what `--save_figures false` saves per FDRL system
        "figures_s": parts["figure_training_curves"]["seconds"] + parts["figure_confusion_matrix"]["seconds"],
        "load_average_1m_at_end": os.getloadavg()[0],
    }
    settings = {**vars(args), "torch_threads": 1}
    common.write_result(args.output or common.RESULTS_DIR / "heads_cpu.json", "bench_heads.py", machine, settings,
                        results)  # fmt: skip
    logger.info(
        f"{args.system}, fold {args.fold}: {system_s:.1f} s; {results['ms_per_training_step']:.2f} ms per training "
        f"step; {results['ms_per_evaluation']:.1f} ms per evaluation, of which the alignment diagnostics "
        f"{results['alignment_diagnostics_ms_per_evaluation']:.1f} ms "
        f"({100 * results['alignment_diagnostics_share_of_system']:.1f}% of the system); its figures "
        f"{results['figures_s']:.2f} s after it"
    )
    return results


if __name__ == "__main__":
    main()
