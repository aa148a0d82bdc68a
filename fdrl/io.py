"""Atomic file writes: a reader (a resumed run, another process) never sees half a file."""

import json
import os
from pathlib import Path


def atomic_write(path, write):
    """Call `write(temporary_path)`, then move the temporary file onto `path` in one step. The temporary name carries
    the process id, so processes writing the same file never share one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write(temporary)
    temporary.replace(path)
    return path


def write_json(path, payload):
    """Write `payload` as JSON (indent 1) atomically."""
    return atomic_write(path, lambda temporary: temporary.write_text(json.dumps(payload, indent=1)))
