"""`make demo` after set-up, an old revision against the new one, alternating, as a first run on a fresh machine.

What a user times after `make test` on a fresh clone: `examples/demo.sh` (what `make demo` runs once `.venv` and
`pretrained/` exist) speaks the corpus, extracts the backbones' features into an empty cache, trains and tests the
demo's systems on 5 folds, and classifies one clip. Each tree is `git archive <revision>` unpacked in a temporary
folder (the new one: this working tree as it is, or `--new <revision>`), with a link to this checkout's
`pretrained/` only; each run starts without `demo_data/` and `demo_output/` and with an empty cache folder
(`XDG_CACHE_HOME`: the feature cache and the `datasets` cache), holding only a copy of matplotlib's font cache,
which `make test` has built on such a machine. The trees alternate run by run (old, new, new, old, ...), so both
see the same machine; the machine's speed drifts by 10% and more over minutes here, so `--repeats` of 3 or more
are worth their time.

    .venv/bin/python bench/bench_demo.py --old c4d7068 --repeats 3      # about 15 minutes on 2 cores

Written per run: the tree, the wall seconds, the 1-minute load average before and after, and the seconds the
script printed for itself; then each tree's mean and the old/new ratio of the means.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench_protocol import archive_tree, git, revision_info

import common
from common import logger


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", required=True, help="The old git revision (a commit, tag or branch).")
    parser.add_argument("--new", default=None, help="The new git revision (default: this working tree as it is).")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per tree (alternating).")
    parser.add_argument("--script", default="examples/demo.sh", help="What to time, relative to each tree's root.")
    parser.add_argument("--timeout_s", type=float, default=1800, help="Longest a single run may take.")
    parser.add_argument("--output", default=None, help="JSON path (default: bench/results/demo_cpu.json).")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    return args


def copy_working_tree(folder):
    """This working tree's tracked and untracked-but-not-ignored files (uncommitted edits included; no outputs,
    caches or model folders), with a link to this checkout's `pretrained/` when it has one."""
    listing = git("ls-files", "--cached", "--others", "--exclude-standard", "-z")
    for name in filter(None, listing.split("\0")):
        source = common.REPO / name
        if source.is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / name)
    if (common.REPO / "pretrained").exists():  # as `archive_tree` links it
        (folder / "pretrained").symlink_to((common.REPO / "pretrained").resolve())
    return folder


def fresh_cache(folder):
    """An empty cache folder but for a copy of matplotlib's font cache (the test suite builds it on set-up)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    fonts = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "matplotlib"
    if fonts.is_dir():
        shutil.copytree(fonts, folder / "matplotlib")
    return folder


def run_demo(tree, script, cache, log_path, timeout_s):
    """Wall seconds of `bash script` in `tree` as a first run: no corpus, no results, an empty cache."""
    for name in ("demo_data", "demo_output"):
        shutil.rmtree(tree / name, ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "PY": sys.executable, "XDG_CACHE_HOME": str(cache)}
    env.pop("OMP_NUM_THREADS", None)  # the script sets its own
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.run(
            ["bash", script], cwd=tree, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s
        )
    wall = time.perf_counter() - start
    if process.returncode != 0:
        tail = Path(log_path).read_text()[-3000:]
        raise RuntimeError(f"{script} failed in {tree} (exit {process.returncode}); log {log_path}:\n{tail}")
    return {"wall_s": wall, "load_average_1m_before": load_before, "load_average_1m_after": os.getloadavg()[0]}


def main(argv=None):
    args = parse_args(argv)
    common.setup_logging()
    machine = common.machine_info(torch.device("cpu"))
    revisions = {"old": revision_info(args.old), "new": revision_info(args.new)}
    runs = []
    with tempfile.TemporaryDirectory(prefix="fdrl-bench-demo-") as workdir:
        workdir = Path(workdir)
        trees = {"old": archive_tree(args.old, workdir / "old", linked=("pretrained",))}
        if args.new is None:  # this working tree as it is: its files git knows or would add, without what it ignores
            trees["new"] = copy_working_tree(workdir / "new")
        else:
            trees["new"] = archive_tree(args.new, workdir / "new", linked=("pretrained",))
        for index, label in enumerate(common.alternating(args.repeats)):
            logger.info(f"run {index + 1} of {2 * args.repeats}: {label}")
            cache = fresh_cache(workdir / f"cache_{label}")
            result = run_demo(trees[label], args.script, cache, workdir / f"{label}_{index}.log", args.timeout_s)
            runs.append({"tree": label, **result})
            logger.info(f"{label}: {result['wall_s']:.1f} s")
    means = {label: sum(r["wall_s"] for r in runs if r["tree"] == label) / args.repeats for label in ("old", "new")}
    results = {
        "revisions": revisions,
        "runs": runs,
        "mean_wall_s": means,
        "speedup_old_over_new": means["old"] / means["new"],
    }
    common.write_result(args.output or common.RESULTS_DIR / "demo_cpu.json", "bench_demo.py", machine, vars(args),
                        results)  # fmt: skip
    speedup = results["speedup_old_over_new"]
    logger.info(f"{args.script}: old {means['old']:.1f} s, new {means['new']:.1f} s (x{speedup:.2f})")
    return results


if __name__ == "__main__":
    main()
