"""The protocol's (seed, fold) runs, one after the other in this process or, with frozen backbones on CPU, side by
side in worker processes (`--parallel_runs N`).

How the parallel path works, and what "the same numbers" means:

- One pool of N workers serves first the feature extraction, then the runs (a worker's start costs seconds of imports,
  paid once, while the parent prepares the first fold: the pool starts every worker on entry). Before any run starts,
  every pooled feature the runs need is in the feature cache (`features.py`): the parent finds the rows missing from it,
  the workers extract them in contiguous shards of the missing utterances (each worker loads the pretrained backbones
  once, from the model arguments), and the parent merges the shards into the cache files, their one writer. With
  pretrained backbones that is one pass over the corpus; a preset's tiny backbones, drawn per seed with a vocabulary
  learnt per fold, are extracted in the parent (`warm_feature_cache`). The runs then only read the cache, so they never
  run a backbone.
- Features are extracted, and keyed, with one torch thread (`RunContext.feature_threads`), each utterance in its own
  forward: a vector does not depend on the worker or shard that computed it, and the rows are bit for bit those a
  sequential run with one thread (`OMP_NUM_THREADS=1`, as `make demo` runs) stores.
- Each worker is a `concurrent.futures.ProcessPoolExecutor` process started with the "spawn" method (as torch
  recommends for processes that use torch), with `OMP_NUM_THREADS=1` and `torch.set_num_threads(1)`: N runs use
  N cores, and no run's threads fight another's.
- The workers train one system of one run at a time, in the runs' order: every trained system of every (seed,
  fold) is a task, so the load evens out to within one system at the end instead of one whole run (5 runs on 2
  workers were 3 rounds of runs). A worker prepares a fold (its splits and cached features; pretrained backbones
  are loaded once per process, `fold_backbones`) at its first system of that fold and keeps its two latest folds.
  It writes what a sequential run writes of the system (its folder, its confusion matrix) and returns the test
  metrics to the parent, which writes the run records (their one writer, with the systems in the run's order),
  computes late fusion when speech and text are back, reports each finished system on the progress bar, and builds
  the table, the model folder and the card as before.
- The run records are identical to those of a sequential run whose heads train with one torch thread
  (`OMP_NUM_THREADS=1`, as `make demo` runs): floating-point sums depend on the thread count, so a sequential run
  with two threads gives records that differ in the last bits.
- A failing system does not stop the others: they finish and are recorded (the failed run's other systems too),
  then the error names the failed (seed, fold) and `--resume_from_checkpoint true` redoes only what is missing.
- Fine-tuning runs (`--freeze_backbones false`), a GPU and several processes (`accelerate launch`, world size > 1)
  run one (seed, fold) at a time, as before: each of those runs already uses the whole device, and every process of
  a multi-GPU launch must see the same runs in the same order.
"""

import collections
import concurrent.futures
import contextlib
import functools
import gc
import multiprocessing
import os

import torch
from tqdm.auto import tqdm
from transformers.utils import logging

from fdrl.data.corpus import column

from .features import extract_pooled, feature_encoder
from .progress import ProtocolProgress, configure_logging


logger = logging.get_logger(__name__)
SHARDS_PER_WORKER = 4  # feature shards per worker and modality: a moving bar and a balanced finish
FOLDS_PER_WORKER = 2  # prepared folds a worker keeps (the runs' systems are handed out in order: mostly one fold)
_WORKER_ENCODER = None  # a worker process's backbones for the extraction's shards, loaded by `_worker_extract`
_WORKER_FOLDS = collections.OrderedDict()  # a worker process's prepared folds, (seed, fold) -> FoldRun


def usable_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_workers(training_args, num_tasks):
    """How many worker processes train the runs' systems: `--parallel_runs`, by default min(systems to train,
    usable cores) for frozen backbones on CPU in a single process, else 1 (with a log line when a request is
    ignored)."""
    requested = training_args.parallel_runs
    if not training_args.freeze_backbones:  # arguments refuse --parallel_runs > 1 here
        return 1
    if training_args.world_size > 1 or training_args.device.type != "cpu":
        if requested and requested > 1:
            where = f"{training_args.world_size} processes" if training_args.world_size > 1 else training_args.device
            logger.warning(f"--parallel_runs {requested} ignored on {where}: the runs go one after the other")
        return 1
    return max(1, min(requested or usable_cores(), num_tasks))


def run_folds(context, pairs, run_fold, prepare_fold):
    """The records of every (seed, fold) in `pairs`, in that order, run in this process or, system by system, in
    worker processes (`parallel_workers`), with the protocol's progress bar over every system of every run."""
    from .protocol import release_backbones, resumed_fold

    args = context.training_args
    enabled = args.protocol_progress and args.local_process_index == 0
    context.progress = ProtocolProgress(len(pairs) * len(context.systems), enabled, "protocol")
    try:
        trained = [system.name for system in context.systems if system.trains]
        workers, tasks = parallel_workers(args, len(pairs) * len(trained)), []
        if workers > 1:  # the systems left to train (a resumed run's records hold some)
            runs = {pair: resumed_fold(context, *pair) for pair in pairs}
            tasks = [(pair, name) for pair in pairs for name in trained if name not in runs[pair].done]
            workers = min(workers, len(tasks))
        if workers <= 1:
            return [run_fold(context, seed, fold) for seed, fold in pairs]
        context.progress.bar.set_description(f"protocol, {workers} workers")
        context.feature_threads = 1  # the rows are extracted, and keyed, with the workers' one thread
        spawn = multiprocessing.get_context("spawn")
        # the workers inherit the environment when they start (at the first task): one OpenMP thread each, and no
        # tokenizers threads either
        with _environment(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false"):
            with _pool(spawn, workers, args.get_process_log_level()) as pool:
                extract = functools.partial(_extract_in_pool, pool, workers, context, enabled)
                warm_feature_cache(context, pairs, prepare_fold, extract)
                logger.info(f"{len(tasks)} systems of {len(pairs)} runs in {workers} worker processes, one thread each")
                failures = _train_in_pool(context, runs, tasks, pool, prepare_fold)
        return _records(context, pairs, runs, failures)
    finally:
        context.progress.close()
        context.progress = None
        release_backbones()  # those the folds shared (`fold_backbones`)
        gc.unfreeze()  # what `prepare_fold` froze (`freeze_long_lived_objects`) is collected as usual again


def _features_depend_on(model_args, data_args, seed, fold):
    """What, of (seed, fold), the pooled features depend on: a preset's backbones are drawn from the seed with a
    vocabulary learnt on the fold; pretrained backbones depend on neither, only test transcripts on the fold."""
    if model_args.model_preset:
        return seed, fold
    return fold if data_args.test_transcripts else None


def warm_feature_cache(context, pairs, prepare_fold, extract):
    """Fill the feature cache with every pooled feature the runs will read, before they start. This process finds
    the missing rows and merges them into the cache files (one writer); `extract` has the workers compute them. With
    pretrained backbones that is one pass over the corpus (a fold's splits hold every utterance). A preset's
    backbones are drawn per seed with a vocabulary learnt per fold, so a worker would have to rebuild them for each
    (seed, fold): they are tiny, and this process extracts their features itself, with one thread."""
    seen = set()
    for seed, fold in pairs:
        key = _features_depend_on(context.model_args, context.data_args, seed, fold)
        if key not in seen:
            seen.add(key)
            prepare_fold(context, seed, fold, extract=None if context.model_args.model_preset else extract)


def shard_bounds(count, shards):
    """`shards` contiguous (start, stop) ranges, in order, covering range(count) once; their sizes differ by at most
    one."""
    shards = max(1, min(shards, count))
    return [(count * index // shards, count * (index + 1) // shards) for index in range(shards)]


def _extract_in_pool(pool, workers, context, enabled, processor, jobs):
    """`extract_rows` in the worker processes: each modality's examples cut into contiguous shards, several per
    worker, so that the bar moves as shards finish and a worker done early takes the next one; each vector is
    computed by one worker, one utterance per forward with one thread, as a one-thread sequential run computes it.
    Yields (modality, vectors) as each modality's shards are all back."""
    shards = {
        pool.submit(
            _worker_extract, context.model_args, context.config_kwargs, processor, modality,
            examples.select(range(start, stop)), context.data_args.max_text_length,
        ): (modality, start)
        for modality, examples in jobs.items()
        for start, stop in shard_bounds(len(examples), SHARDS_PER_WORKER * workers)
    }  # fmt: skip
    parts = {modality: {} for modality in jobs}
    left = collections.Counter(modality for modality, _ in shards.values())
    total = sum(len(examples) for examples in jobs.values())
    with tqdm(total=total, desc="features", unit="utt", leave=False, disable=not enabled or not total) as bar:
        for future in concurrent.futures.as_completed(shards):
            modality, start = shards[future]
            parts[modality][start] = future.result()
            bar.update(len(parts[modality][start]))
            left[modality] -= 1
            if not left[modality]:
                yield modality, torch.cat([parts[modality][start] for start in sorted(parts[modality])])


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


@contextlib.contextmanager
def _pool(spawn, workers, level):
    """The one pool of the protocol: the extraction's shards, then the systems. On an error the shards and systems
    not started yet are cancelled; those running finish."""
    pool = concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_start_worker, initargs=(level,)
    )
    try:
        # every worker starts now (the pool starts one per submitted task while none is idle): their seconds of
        # imports (`_start_worker`) overlap this process's preparation of the first fold instead of following it
        for _ in range(workers):
            pool.submit(int)
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


def _train_in_pool(context, runs, tasks, pool, prepare_fold):
    """Every task (a trained system of a run) in the pool; each finished one is recorded, reported, and followed by
    the computed systems it completes. Returns {(seed, fold): the first error one of its systems raised}."""
    from .protocol import finish_system, report_system, write_run_record

    def record(fold, system, metrics):
        fold.done[system.name] = metrics
        write_run_record(context, fold)
        report_system(context, fold, system)

    def combine_ready(pair):  # late fusion, once speech and text are back (in the run's order)
        fold = runs[pair]
        for system in context.systems:
            if system.trains or system.name in fold.done or not all(r in fold.done for r in system.requires):
                continue
            if fold.splits is None:  # every input was in the record of an earlier run: the test labels are needed
                fold.splits = {"test": prepare_fold(context, *pair).splits["test"]}
            record(fold, system, finish_system(context, fold, system))

    for pair, fold in runs.items():
        for system in context.systems:
            if system.name in fold.done:
                report_system(context, fold, system, resumed=True)
        combine_ready(pair)
    by_name = {system.name: system for system in context.systems}
    futures = {pool.submit(_worker_system, context, *pair, name): (pair, name) for pair, name in tasks}
    failures = {}
    for future in concurrent.futures.as_completed(futures):
        pair, name = futures[future]
        if future.exception() is not None:
            failures.setdefault(pair, future.exception())
            continue
        metrics, test_rows = future.result()
        fold = runs[pair]
        if fold.splits is None:
            fold.splits = {"test": test_rows}
        record(fold, by_name[name], metrics)
        combine_ready(pair)
    return failures


def _records(context, pairs, runs, failures):
    """The records in the order of `pairs`; a failed run raises, naming every (seed, fold) that failed."""
    if failures:
        error = next(iter(failures.values()))
        names = "; ".join(f"seed {s}, fold {f}: {type(e).__name__}: {e}" for (s, f), e in failures.items())
        raise RuntimeError(
            f"{len(failures)} of {len(pairs)} runs failed in their worker process ({names}). Every other system "
            f"finished and is in the records in {context.training_args.output_dir}/runs; rerun with "
            f"--resume_from_checkpoint true to redo only what is missing"
        ) from error
    names = [system.name for system in context.systems]
    return [{"seed": s, "fold": f, "systems": {n: runs[(s, f)].done[n] for n in names}} for s, f in pairs]


def _start_worker(level):
    """A worker process's start: one torch thread, the parent's log level, and the tasks' code imported (torch,
    transformers, datasets and this package: several seconds, paid while the parent prepares the first fold)."""
    torch.set_num_threads(1)
    configure_logging(level, disable_progress_bars=True)
    from . import protocol  # noqa: F401


def _worker_extract(model_args, config_kwargs, processor, modality, examples, max_text_length):
    """One shard's pooled vectors, with this worker's one torch thread. The backbones are loaded from the model
    arguments at the worker's first shard, as `fold_backbones` loads them in the parent (the very weights the
    parent's cache key hashes), and kept for its next shards and then for the folds it prepares."""
    global _WORKER_ENCODER
    if _WORKER_ENCODER is None:
        from .protocol import fold_backbones

        _WORKER_ENCODER = feature_encoder(*fold_backbones(model_args, processor, None), config_kwargs)
    return extract_pooled(_WORKER_ENCODER, examples, processor, modality, max_text_length)


def _worker_system(context, seed, fold, name):
    """One system of one run, trained and tested in this worker (`finish_system`): (its test metrics, the test
    split's ids and labels, for the parent's record and late fusion)."""
    from .protocol import finish_system, prepare_fold

    global _WORKER_ENCODER
    _WORKER_ENCODER = None  # the extraction is over; its backbones stay for the folds (`fold_backbones`)
    context.training_args.disable_tqdm = True  # the parent's bar only: per-step bars of N processes would interleave
    prepared = _WORKER_FOLDS.pop((seed, fold), None) or prepare_fold(context, seed, fold)
    _WORKER_FOLDS[(seed, fold)] = prepared
    while len(_WORKER_FOLDS) > FOLDS_PER_WORKER:
        _WORKER_FOLDS.popitem(last=False)
    system = next(system for system in context.systems if system.name == name)
    metrics = finish_system(context, prepared, system)
    test = prepared.splits["test"]
    return metrics, [{"id": i, "label": label} for i, label in zip(column(test, "id"), column(test, "label"))]
