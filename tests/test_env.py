"""The environment check that `make test` runs before any test imports torch."""

import subprocess
import sys

from conftest import REPO
from fdrl import env


def test_the_installed_environment_matches_the_lock():
    pins = env.read_lock()
    assert {"torch", "torchaudio", "torchcodec", "transformers", "datasets", "gradio"} <= set(pins)
    assert env.mismatches(pins) == []  # what CI runs on is exactly the lock


def test_a_torchaudio_that_does_not_match_the_lock_fails_loudly(tmp_path, monkeypatch, capsys):
    lock = (REPO / "requirements.lock").read_text()
    pins = env.read_lock()
    changed = lock.replace(f"torchaudio=={pins['torchaudio']} ", "torchaudio==2.11.1 ")
    assert changed != lock
    (tmp_path / "requirements.lock").write_text(changed)
    monkeypatch.setattr(env, "LOCK", tmp_path / "requirements.lock")
    assert env.main() == 2
    message = capsys.readouterr().err
    assert f"torchaudio: locked 2.11.1, installed {pins['torchaudio']}" in message
    assert "torch, torchaudio and torchcodec do not match requirements.lock" in message and "make clean-venv" in message


def test_a_missing_package_is_named(tmp_path, monkeypatch):
    (tmp_path / "requirements.lock").write_text("torch==2.11.0 \\\n    --hash=sha256:00\nno-such-package==1.0\n")
    monkeypatch.setattr(env, "LOCK", tmp_path / "requirements.lock")
    assert env.mismatches(env.read_lock()) == [("no-such-package", "1.0", None)]


def test_the_check_runs_as_a_command_without_importing_torch():
    code = "import runpy, sys; runpy.run_module('fdrl.env', run_name='__main__')"
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "environment matches requirements.lock" in result.stdout
    assert "| torch\n" not in result.stderr and " torch\n" not in result.stderr  # torch was never imported
