"""Finding a checkpoint to resume from (the newest one that was written completely), and telling a full disk from
other failures while one is written."""

import errno
import re
import shutil
from pathlib import Path

from transformers.utils import logging

from modeling_fdrl import safetensors_problem


logger = logging.get_logger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What Trainer writes into every checkpoint; a run killed while saving leaves some of it missing.
REQUIRED_FILES = ("trainer_state.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
# torch.save reports a failed write as "[enforce fail at inline_container.cc:...] . unexpected pos ..." or
# "PytorchStreamWriter failed writing file ...", a RuntimeError without an errno; safetensors as "os error 28".
TORCH_WRITE_FAILURE = ("inline_container", "PytorchStreamWriter")
NO_SPACE_TEXT = ("No space left on device", "os error 28", "[Errno 28]")
LOW_SPACE_BYTES = 100 * 2**20  # a failed torch write with less than this left on the disk is taken as a full disk


def disk_full_error(error, folder):
    """`OSError(ENOSPC)` naming `folder` and its free space when `error`, raised while writing under `folder`, comes
    from a full disk, else None. A full disk reaches Trainer's checkpoint writes in three forms: an `OSError` with
    errno 28 (JSON, `open`), safetensors' error whose text says "os error 28", and torch.save's `RuntimeError` from
    its `inline_container` writer, whose text has no errno: that one counts as a full disk when less than 100 MiB
    is left on the folder's file system."""
    text = str(error)
    if isinstance(error, OSError) and error.errno == errno.ENOSPC or any(s in text for s in NO_SPACE_TEXT):
        full = True
    elif any(s in text for s in TORCH_WRITE_FAILURE):
        full = _free_bytes(folder) < LOW_SPACE_BYTES
    else:
        full = False
    if not full:
        return None
    free = _free_bytes(folder)
    return OSError(
        errno.ENOSPC,
        f"No space left on device while writing a checkpoint under {folder} "
        f"({free / 2**20:.1f} MiB free; {type(error).__name__}: {text})",
    )


def _free_bytes(folder):
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:  # the checkpoint folder may not have been created
        folder = folder.parent
    return shutil.disk_usage(folder).free


def missing_files(checkpoint):
    """The files a complete checkpoint has and `checkpoint` lacks (empty files count as missing)."""
    checkpoint = Path(checkpoint)

    def present(name):
        path = checkpoint / name
        return path.is_file() and path.stat().st_size > 0

    missing = [name for name in REQUIRED_FILES if not present(name)]
    if not any(present(name) for name in WEIGHT_FILES):
        missing.append(WEIGHT_FILES[0])
    return missing


def damaged_weights(checkpoint):
    """'name (problem)' for each of `checkpoint`'s safetensors files whose header does not describe its bytes (a
    copy cut short, a disk error): `modeling_fdrl.safetensors_problem`, the rule inference applies too."""
    found = []
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        problem = safetensors_problem(path)
        if problem:
            found.append(f"{path.name} ({problem})")
    return found


def latest_complete_checkpoint(folder):
    """The newest `checkpoint-N` in `folder` with every file a resume reads and undamaged weights, or None.
    Incomplete or damaged ones are named in a warning and left as they are."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    checkpoints = sorted(
        (int(m.group(1)), path) for path in folder.iterdir() if path.is_dir() and (m := _CHECKPOINT.match(path.name))
    )
    for _, path in reversed(checkpoints):
        missing = missing_files(path)
        damaged = [] if missing else damaged_weights(path)
        if damaged:
            logger.warning(f"skipping the checkpoint {path}: its weights are damaged ({'; '.join(damaged)})")
            continue
        if not missing:
            return str(path)
        logger.warning(
            f"skipping the incomplete checkpoint {path} (missing {', '.join(missing)}): it was probably "
            f"interrupted while saving"
        )
    return None
