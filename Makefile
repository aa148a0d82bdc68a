# Quick start: `make demo` and `make test`. Both set up everything they need first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system-deps test test-fast demo clean

# Debian packages: FFmpeg's shared libraries (torchcodec decodes audio with them) and
# espeak-ng (speaks the demo corpus). Installed only when missing; needs root or sudo.
system-deps:
	@missing=""; \
	command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		SUDO=""; [ "$$(id -u)" = "0" ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: system-deps $(STAMP)

test: setup
	$(PY) -m pytest -q -rs tests

demo: setup
	bash examples/demo.sh

clean:
	rm -rf $(VENV) demo_data demo_output .pytest_cache
