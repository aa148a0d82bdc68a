"""The protocol's wall time, an old revision against the new one in the same run, with both tables to show they agree.

Each tree runs `run_fdrl.py` as a user would, in its own folder with this venv (`PYTHONPATH` set to the tree, so
the tree's own code is imported), with `OMP_NUM_THREADS=1` and `TOKENIZERS_PARALLELISM=false` as `make demo` sets
them. The old tree is `git archive <revision>` unpacked in a temporary folder (with links to this checkout's
`pretrained/` and `demo_data/`); the new one is this working tree (or `--new <revision>`, archived the same way).
Old and new alternate case by case, so both see the same machine load, and within a case with `--repeats N`
(old, new, new, old, ...): this machine's speed drifts within a benchmark by more than many gains measured here,
and whichever tree runs second can gain from it, so only repeated, alternated runs compare (`wall_s` is a tree's
mean, its `runs` each run).

Cases (the argument files are the tree's own):

- `demo`: `make demo`'s protocol after set-up, `examples/base.yaml examples/demo.yaml`, with a fresh feature cache
  (`--warm_cache` to time it with the cache filled first, as on a second run, by an untimed run of the speech
  system alone: the cache's rows do not depend on the systems);
- `ablations`: the whole `experiments/ablations.yaml` on the same base (`--seeds 0` to time a subset), fresh cache;
- `fdrl_system`: one FDRL system (S0) on one fold on cached features: an untimed run (speech) fills the cache,
  then the timed run reads it.

Recorded per case and tree: wall seconds (each run's and their mean), the 1-minute load average before and after
each run, and the table's numbers (every system's mean WAR, UAR and macro F1, and the UAR of every run); then
whether old and new agree exactly, on the table and on every run record (`runs/*.json`: metrics,
log-probabilities, diagnostics).

    .venv/bin/python bench/bench_protocol.py --old eb616c9 --cases demo fdrl_system     # minutes
    .venv/bin/python bench/bench_protocol.py --old eb616c9 --cases ablations --seeds 0 # the 5-run subset
    .venv/bin/python bench/bench_protocol.py --old 94d006a --cases ablations --seeds 0 --folds 1 2 \
        --warm_cache --repeats 3                                                      # 2 runs, 3 times each
    .venv/bin/python bench/bench_protocol.py --tiny --data_dir FIXTURE --old HEAD --new HEAD  # smoke test
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
import yaml

import common
from common import logger
from fdrl.training.parallel import usable_cores


CASES = ("demo", "ablations", "fdrl_system")
LINKED = ("pretrained", "demo_data")  # what an archived tree needs from this checkout
TINY_BASE = {
    "model_preset": "tiny",
    "freeze_backbones": True,
    "folds": [1, 2, 3],
    "num_train_epochs": 2,
    "learning_rate": 0.001,
    "per_device_train_batch_size": 8,
    "validation_fraction": 0.3,
    "use_cpu": True,
    "logging_steps": 10,
    "disable_tqdm": True,
    "log_level": "warning",
    "report_to": "none",
    "dataloader_num_workers": 0,
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="The old git revision (a commit, tag or branch).")
    parser.add_argument("--new", default=None, help="The new git revision (default: this working tree as it is).")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES, help="What to time.")
    parser.add_argument("--seeds", nargs="+", default=None, help="Seeds of the ablations case (default: the file's).")
    parser.add_argument("--folds", nargs="+", default=None, help="Test sessions of every case (default: the files').")
    parser.add_argument("--warm_cache", action="store_true", help="Time demo and ablations on a filled cache.")
    parser.add_argument("--tiny", action="store_true", help="The tiny preset on --data_dir, 2 epochs (smoke test).")
    parser.add_argument("--data_dir", default=None, help="The corpus (IEMOCAP layout; default: the base file's).")
    parser.add_argument(
        "--repeats", type=int, default=1, help="Timed runs per tree and case, alternating (old, new, new, old, ...)."
    )
    parser.add_argument("--timeout_s", type=float, default=3 * 3600, help="Longest a single run may take.")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/protocol_cpu.json).")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    if args.tiny and not args.data_dir:
        parser.error("--tiny needs --data_dir (an IEMOCAP-layout corpus with sessions 1-3)")
    if args.data_dir and not Path(args.data_dir).is_dir():
        parser.error(f"--data_dir {args.data_dir} is not a folder")
    return args


def git(*argv):
    return subprocess.run(["git", *argv], cwd=common.REPO, capture_output=True, text=True, check=True).stdout.strip()


def revision_info(revision):
    """The commit a revision names (None: this working tree, with whether it has uncommitted changes)."""
    if revision is None:
        return {"revision": "working tree", "commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "-s"))}
    return {"revision": revision, "commit": git("rev-parse", "--verify", f"{revision}^{{commit}}"), "dirty": False}


def archive_tree(revision, folder, linked=LINKED):
    """`git archive` of `revision` unpacked in `folder`, with links to this checkout's `linked` folders (pretrained/
    and demo_data/)."""
    folder.mkdir(parents=True)
    tar = folder.parent / f"{folder.name}.tar"
    subprocess.run(["git", "archive", "--format=tar", "-o", str(tar), revision], cwd=common.REPO, check=True)
    with tarfile.open(tar) as archive:
        archive.extractall(folder, filter="data")
    tar.unlink()
    for name in linked:
        if (common.REPO / name).exists() and not (folder / name).exists():
            (folder / name).symlink_to((common.REPO / name).resolve())
    return folder


def case_arguments(case, base, seeds):
    """The run_fdrl.py argument files and flags of a case, relative to the tree's root."""
    if case == "demo":
        return [base, "examples/demo.yaml"]
    if case == "ablations":
        return [base, "experiments/ablations.yaml", *(["--seeds", *seeds] if seeds else [])]
    return [base, "examples/demo.yaml", "--systems", "S0", "--folds", "1"]


def run_tree(tree, argv, log_path, timeout_s):
    """Wall seconds of `python run_fdrl.py argv` in `tree`, the load average around it, and the CPU seconds (user +
    system) of the run and of every process it started and waited for (its `--parallel_runs` workers): over the
    wall time and the usable cores, how busy the cores were (`cpu_utilisation`, 1.0: every core all the time)."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["HF_HUB_OFFLINE"] = "1"
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu_s()
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.run(
            [sys.executable, "run_fdrl.py", *argv], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT,
            timeout=timeout_s,
        )  # fmt: skip
    wall = time.perf_counter() - start
    if process.returncode != 0:
        tail = Path(log_path).read_text()[-3000:]
        raise RuntimeError(f"run_fdrl.py failed in {tree} (exit {process.returncode}); log {log_path}:\n{tail}")
    cpu = _children_cpu_s() - cpu_before
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "cpu_utilisation": cpu / (wall * usable_cores()),
        "load_average_1m_before": load_before,
        "load_average_1m_after": os.getloadavg()[0],
    }


def _children_cpu_s():
    """User + system CPU seconds of this process's children that have ended and been waited for, theirs included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def table_numbers(output_dir):
    """Every system's mean WAR, UAR and macro F1, and each run's UAR, from a run's results.json."""
    import json

    summary = json.loads((Path(output_dir) / "results.json").read_text())
    means = {name: {k: row["mean"][k] for k in ("war", "uar", "macro_f1")} for name, row in summary["systems"].items()}
    runs = {
        f"seed{run['seed']}_fold{run['fold']}": {name: metrics["uar"] for name, metrics in run["systems"].items()}
        for run in summary["runs"]
    }
    return {"mean": means, "run_uar": runs}


def run_records(output_dir):
    """Every run record (`runs/seed{S}_fold{F}.json`: each system's metrics, log-probabilities, diagnostics)."""
    import json

    return {path.name: json.loads(path.read_text()) for path in sorted((Path(output_dir) / "runs").glob("*.json"))}


def differing_entries(old, new, limit=10):
    """The first `limit` leaves (paths) where two run-record trees differ."""
    old_leaves, new_leaves = _leaves(old), _leaves(new)
    keys = sorted(old_leaves.keys() | new_leaves.keys())
    return [key for key in keys if old_leaves.get(key, None) != new_leaves.get(key, None)][:limit]


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() for k, v in _leaves(value, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for index, value in enumerate(tree) for k, v in _leaves(value, f"{prefix}/{index}").items()}
    return {prefix: tree}


def compare(old, new):
    """Whether two tables hold exactly the same numbers, and the largest difference between them."""
    old_leaves, new_leaves = _leaves(old), _leaves(new)
    same_keys = old_leaves.keys() == new_leaves.keys()
    common_keys = old_leaves.keys() & new_leaves.keys()
    difference = max((abs(old_leaves[k] - new_leaves[k]) for k in common_keys), default=0.0)
    return {
        "equal": same_keys and old_leaves == new_leaves,
        "same_entries": same_keys,
        "max_abs_difference": difference,
    }


def run_case(case, trees, base_for, args, workdir):
    """Old and new on one case, `--repeats` timed runs each in alternating order (`common.alternating`); each tree
    with its own feature cache, filled once by an untimed run first where the case is timed on a filled cache. A
    tree's `wall_s` is the mean of its runs; the tables and records compared are those of each tree's first run, and
    every later run must write the same records as its tree's first."""
    warm = case == "fdrl_system" or args.warm_cache
    result = {"feature_cache": "warm (filled by an untimed run)" if warm else "fresh (empty)"}
    argv_for, records, runs = {}, {}, {label: [] for label in trees}
    for label, tree in trees.items():
        folder = workdir / label / case
        flags = ["--cache_dir", str(workdir / label / "datasets")]
        if args.data_dir:
            flags += ["--data_dir", str(Path(args.data_dir).resolve())]
        if args.folds and case != "fdrl_system":
            flags += ["--folds", *args.folds]
        argv_for[label] = case_arguments(case, base_for[label], args.seeds) + flags
        folder.mkdir(parents=True, exist_ok=True)
        if warm:  # the cheapest system: the cache's rows do not depend on which systems read them
            logger.info(f"{case}, {label}: untimed run to fill the feature cache (speech only)")
            warmup = ["--feature_cache_dir", str(folder / "features"), "--systems", "speech"]
            run_tree(tree, argv_for[label] + warmup + ["--output_dir", str(folder / "warmup")], folder / "warmup.log",
                     args.timeout_s)  # fmt: skip
    for index, label in enumerate(common.alternating(args.repeats)):
        folder, attempt = workdir / label / case, len(runs[label])
        # a fresh cache is fresh for every run; a filled one is the tree's, filled above
        cache = folder / ("features" if warm else f"features_{attempt}")
        output = folder / f"output_{attempt}"
        logger.info(f"{case}, run {index + 1} of {2 * args.repeats}: {label}")
        timing = run_tree(trees[label], argv_for[label] + ["--feature_cache_dir", str(cache), "--output_dir",
                          str(output)], folder / f"run_{attempt}.log", args.timeout_s)  # fmt: skip
        runs[label].append(timing)
        logger.info(f"{case}, {label}: {timing['wall_s']:.1f} s")
        if attempt == 0:
            result[label] = {"table": table_numbers(output)}
            records[label] = run_records(output)
        elif differing_entries(records[label], run_records(output)):
            raise RuntimeError(f"{case}: {label}'s run {attempt + 1} wrote other records than its first ({output})")
    for label in trees:
        result[label] = {
            "wall_s": sum(r["wall_s"] for r in runs[label]) / args.repeats,
            "cpu_s": sum(r["cpu_s"] for r in runs[label]) / args.repeats,
            **result[label],
        }
        result[label]["runs"] = runs[label]
    result["order"] = common.alternating(args.repeats)
    result["speedup_old_over_new"] = result["old"]["wall_s"] / result["new"]["wall_s"]
    result["tables"] = compare(result["old"]["table"], result["new"]["table"])
    differing = differing_entries(records["old"], records["new"])
    result["run_records"] = {"equal": not differing, "first_differing_entries": differing}
    return result


def main(argv=None):
    args = parse_args(argv)
    common.setup_logging()
    machine = common.machine_info(torch.device("cpu"))
    revisions = {"old": revision_info(args.old), "new": revision_info(args.new)}
    workdir = Path(tempfile.mkdtemp(prefix="fdrl-bench-protocol-"))
    try:
        trees = {"old": archive_tree(args.old, workdir / "tree-old")}
        trees["new"] = archive_tree(args.new, workdir / "tree-new") if args.new else common.REPO
        base_for = {label: "examples/base.yaml" for label in trees}
        if args.tiny:  # every tree reads the same tiny base file, its demo and ablation files on top
            tiny = workdir / "tiny_base.yaml"
            tiny.write_text(yaml.safe_dump({**TINY_BASE, "data_dir": str(Path(args.data_dir).resolve())}))
            base_for = {label: str(tiny) for label in trees}
        results = {"revisions": revisions}
        results["cases"] = {case: run_case(case, trees, base_for, args, workdir) for case in args.cases}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    settings = {
        **vars(args),
        "environment": {"OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"},
        "python": sys.executable,
    }
    output = args.output or common.RESULTS_DIR / "protocol_cpu.json"
    common.write_result(output, "bench_protocol.py", machine, settings, results)
    for case, row in results["cases"].items():
        logger.info(
            f"{case}: old {row['old']['wall_s']:.1f} s ({row['old']['cpu_s']:.0f} CPU s), new "
            f"{row['new']['wall_s']:.1f} s ({row['new']['cpu_s']:.0f} CPU s) (x{row['speedup_old_over_new']:.2f}), "
            f"tables equal: {row['tables']['equal']}, run records equal: {row['run_records']['equal']}"
        )
    return results


if __name__ == "__main__":
    main()
