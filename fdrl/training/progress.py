"""What a user sees while the protocol runs: one progress bar over every system of every (seed, fold), with tqdm's
estimate of the time left, and one line per finished system with its validation and test UAR. It has its own switch
(`--protocol_progress`, on by default), independent of `--log_level` and of `--disable_tqdm` (which hides the
Trainer's per-step bars), so that `make demo` stays quiet and still shows where it is. Under `--parallel_runs` the
parent reports each system as its result comes back from a worker."""

import logging
import sys

import datasets
import transformers
from tqdm.auto import tqdm


logger = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level, disable_progress_bars=False):
    """The log level of this project, transformers and datasets, on stdout; `disable_progress_bars` also hides the
    libraries' own bars (shard writing, dataset maps). Used by `run_fdrl.py` and by each worker process."""
    logging.basicConfig(format=LOG_FORMAT, datefmt="%H:%M:%S", handlers=[logging.StreamHandler(sys.stdout)])
    logging.getLogger("fdrl").setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)
    transformers.utils.logging.enable_default_handler()
    if disable_progress_bars:
        transformers.utils.logging.disable_progress_bar()
        datasets.disable_progress_bars()


def system_line(seed, fold, name, metrics):
    """`seed 0, fold 1, S0: validation UAR 0.6120, test UAR 0.6400 (WAR 0.6500), 18 epochs`; late fusion, which is
    not trained, has no validation UAR (`-`) and no epochs (nor has a record written before they were recorded)."""
    validation = metrics.get("best_validation_uar")
    validation = "-" if validation is None else f"{validation:.4f}"
    epochs = metrics.get("epochs_trained")
    epochs = "" if epochs is None else f", {epochs:g} epochs"
    return (
        f"seed {seed}, fold {fold}, {name}: validation UAR {validation}, test UAR {metrics['uar']:.4f} "
        f"(WAR {metrics['war']:.4f}){epochs}"
    )


class ProtocolProgress:
    """The bar over `total` systems (runs x systems) and the per-system lines. Disabled, the lines go to the log
    (level INFO) instead, as before the bar existed."""

    def __init__(self, total, enabled=True, description="protocol"):
        self.enabled = enabled
        self.bar = tqdm(total=total, desc=description, unit="system", disable=not enabled, file=sys.stderr)

    def system_done(self, seed, fold, name, metrics, resumed=False):
        """One system of one run finished (`resumed`: read from the run record of an earlier, interrupted run)."""
        if not resumed:
            line = system_line(seed, fold, name, metrics)
            if self.enabled:
                self.bar.write(line, file=sys.stderr)
            else:
                logger.info(line)
        self.bar.update(1)

    def close(self):
        self.bar.close()
