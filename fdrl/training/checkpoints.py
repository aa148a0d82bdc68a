"""Finding a checkpoint to resume from: the newest one that was written completely."""

import re
from pathlib import Path

from transformers.utils import logging


logger = logging.get_logger(__name__)

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# What Trainer writes into every checkpoint; a run killed while saving leaves some of it missing.
REQUIRED_FILES = ("trainer_state.json",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


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


def latest_complete_checkpoint(folder):
    """The newest `checkpoint-N` in `folder` with every file a resume reads, or None. Incomplete ones are named in
    a warning and left as they are."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    checkpoints = sorted((int(m.group(1)), path) for path in folder.iterdir()
                         if path.is_dir() and (m := _CHECKPOINT.match(path.name)))
    for _, path in reversed(checkpoints):
        missing = missing_files(path)
        if not missing:
            return str(path)
        logger.warning(f"skipping the incomplete checkpoint {path} (missing {', '.join(missing)}): it was probably "
                       f"interrupted while saving")
    return None
