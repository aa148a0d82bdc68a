"""The protocol's (seed, fold) runs, one after the other in this process or, with frozen backbones on CPU, side by
side in worker processes (`--parallel_runs N`).

How the parallel path works, and what "the same numbers" means:

- The parent first extracts the backbones' pooled features of every utterance the runs need (the feature cache,
  `features.py`), with the torch thread count the parent has, i.e. the count a sequential run extracts with; the
  cache key records that count. Workers only read the cache: they key their look-up with the parent's count
  (`RunContext.feature_threads`), so they never run a backbone.
- Each worker is a `concurrent.futures.ProcessPoolExecutor` process started with the "spawn" method (as torch
  recommends for processes that use torch), with `OMP_NUM_THREADS=1` and `torch.set_num_threads(1)`: N runs use
  N cores, and no run's threads fight another's.
- A worker writes the same files a sequential run writes (`runs/seed{S}_fold{F}.json`, the fold folders) and
  returns its run's record to the parent, which builds the table, the model folder and the card as before. Its
  finished systems reach the parent's progress bar through a queue.
- The run records are identical to those of a sequential run whose heads train with one torch thread
  (`OMP_NUM_THREADS=1`, as `make demo` runs): floating-point sums depend on the thread count, so a sequential run
  with two threads gives records that differ in the last bits.
- A failing run does not stop the others: they finish and keep their records, then the error names the failed
  (seed, fold) and `--resume_from_checkpoint true` redoes only what is missing.
- Fine-tuning runs (`--freeze_backbones false`), a GPU and several processes (`accelerate launch`, world size > 1)
  run one (seed, fold) at a time, as before: each of those runs already uses the whole device, and every process of
  a multi-GPU launch must see the same runs in the same order.
"""

import concurrent.futures
import contextlib
import multiprocessing
import os

import torch
from transformers.utils import logging

from .progress import ProtocolProgress, QueueProgress, configure_logging, drain


logger = logging.get_logger(__name__)
_WORKER_PROGRESS = None  # a worker process's QueueProgress, set by `_start_worker`


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_workers(training_args, num_runs):
    """How many worker processes run the (seed, fold) runs: `--parallel_runs`, by default min(runs, usable cores)
    for frozen backbones on CPU in a single process, else 1 (with a log line when a request is ignored)."""
    requested = training_args.parallel_runs
    if not training_args.freeze_backbones:  # arguments refuse --parallel_runs > 1 here
        return 1
    if training_args.world_size > 1 or training_args.device.type != "cpu":
        if requested and requested > 1:
            where = f"{training_args.world_size} processes" if training_args.world_size > 1 else training_args.device
            logger.warning(f"--parallel_runs {requested} ignored on {where}: the runs go one after the other")
        return 1
    return max(1, min(requested or usable_cores(), num_runs))


def run_folds(context, pairs, run_fold, prepare_fold):
    """The records of every (seed, fold) in `pairs`, in that order, run in this process or in worker processes
    (`parallel_workers`), with the protocol's progress bar over every system of every run."""
    args = context.training_args
    workers = parallel_workers(args, len(pairs))
    enabled = args.protocol_progress and args.local_process_index == 0
    description = "protocol" if workers == 1 else f"protocol, {workers} runs at a time"
    context.progress = ProtocolProgress(len(pairs) * len(context.systems), enabled, description)
    try:
        if workers == 1:
            return [run_fold(context, seed, fold) for seed, fold in pairs]
        warm_feature_cache(context, pairs, prepare_fold)
        logger.info(f"{len(pairs)} runs in {workers} worker processes, one torch thread each")
        return _run_in_pool(context, pairs, workers)
    finally:
        context.progress.close()
        context.progress = None


def _features_depend_on(model_args, data_args, seed, fold):
    """What, of (seed, fold), the pooled features depend on: a preset's backbones are drawn from the seed with a
    vocabulary learnt on the fold; pretrained backbones depend on neither, only test transcripts on the fold."""
    if model_args.model_preset:
        return seed, fold
    return fold if data_args.test_transcripts else None


def warm_feature_cache(context, pairs, prepare_fold):
    """Extract, in this process, every pooled feature the runs will read; with pretrained backbones that is one
    pass over the corpus (a fold's splits hold every utterance)."""
    seen = set()
    for seed, fold in pairs:
        key = _features_depend_on(context.model_args, context.data_args, seed, fold)
        if key not in seen:
            seen.add(key)
            prepare_fold(context, seed, fold)


@contextlib.contextmanager
def _environment(**values):
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run_in_pool(context, pairs, workers):
    spawn = multiprocessing.get_context("spawn")
    queue = spawn.Queue()
    level = context.training_args.get_process_log_level()
    records, failures = {}, []
    # the workers inherit the environment at start: one OpenMP thread each, and no tokenizers threads either
    with _environment(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"):
        with concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=spawn, initializer=_start_worker, initargs=(queue, level)
        ) as pool:
            futures = {pool.submit(_worker_run_fold, context, seed, fold): (seed, fold) for seed, fold in pairs}
            pending = set(futures)
            while pending:
                done, pending = concurrent.futures.wait(pending, timeout=0.5)
                drain(queue, context.progress)
                for future in done:
                    error = future.exception()
                    if error is None:
                        records[futures[future]] = future.result()
                    else:
                        failures.append((*futures[future], error))
    drain(queue, context.progress)
    if failures:
        seed, fold, error = failures[0]
        runs = "; ".join(f"seed {s}, fold {f}: {type(e).__name__}: {e}" for s, f, e in failures)
        raise RuntimeError(
            f"{len(failures)} of {len(pairs)} runs failed in their worker process ({runs}). The other runs' records "
            f"are in {context.training_args.output_dir}/runs; rerun with --resume_from_checkpoint true to redo only "
            f"what is missing"
        ) from error
    return [records[pair] for pair in pairs]


def _start_worker(queue, level):
    """A worker process's start: one torch thread, the parent's log level, progress through the queue."""
    global _WORKER_PROGRESS
    torch.set_num_threads(1)
    configure_logging(level, disable_progress_bars=True)
    _WORKER_PROGRESS = QueueProgress(queue)


def _worker_run_fold(context, seed, fold):
    from .protocol import run_fold

    context.progress = _WORKER_PROGRESS
    context.training_args.disable_tqdm = True  # the parent's bar only: per-step bars of N processes would interleave
    return run_fold(context, seed, fold)
