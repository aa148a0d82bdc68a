"""Check that the installed packages are exactly the ones ``requirements.lock`` names.

Run as ``python -m fdrl.env`` (``make test`` and ``.ci/run`` do, before anything imports torch). It reads the lock,
compares every locked package's installed version, and exits 2 with one message that says what to do. torch,
torchaudio and torchcodec are checked first and named on their own: a torchaudio that does not match torch's exact
release fails to load with an undefined-symbol error deep inside ``import transformers``.
"""

import re
import sys
from importlib import metadata
from pathlib import Path


LOCK = Path(__file__).resolve().parents[1] / "requirements.lock"
TORCH_SET = ("torch", "torchaudio", "torchcodec")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def _normalise(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path=None):
    """Map each package name in a pip-compiled lock (default: the repository's) to its pinned version."""
    path = LOCK if path is None else path
    pins = {}
    for line in Path(path).read_text().splitlines():
        match = _PIN.match(line)
        if match:
            pins[_normalise(match.group(1))] = match.group(2)
    if not pins:
        raise ValueError(f"{path} holds no `name==version` lines: is it a lock file?")
    return pins


def installed_version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def mismatches(pins, names=None):
    """``[(name, locked, installed)]`` for every package whose installed version is not the locked one."""
    found = []
    for name in names or sorted(pins):
        installed = installed_version(name)
        if installed != pins[name]:
            found.append((name, pins[name], installed))
    return found


def main(argv=None):
    pins = read_lock()
    torch_set = mismatches(pins, [n for n in TORCH_SET if n in pins])
    others = [m for m in mismatches(pins) if m[0] not in TORCH_SET]
    if not torch_set and not others:
        print(
            f"environment matches {LOCK.name}: {len(pins)} packages, "
            + ", ".join(f"{n} {pins[n]}" for n in TORCH_SET if n in pins)
        )
        return 0
    lines = [
        f"{name}: locked {locked}, installed {installed or 'nothing'}" for name, locked, installed in torch_set + others
    ]
    head = (
        "torch, torchaudio and torchcodec do not match requirements.lock (a mismatched torchaudio fails to load "
        "inside `import transformers`)"
        if torch_set
        else "installed packages do not match requirements.lock"
    )
    print(
        f"ERROR: {head}:\n  "
        + "\n  ".join(lines[:20])
        + ("\n  ..." if len(lines) > 20 else "")
        + "\nFix: `make clean-venv setup` rebuilds .venv from the lock (or `make lock` if you meant to move the lock).",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
