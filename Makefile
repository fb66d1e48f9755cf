# The developer loop. `make run` and `make test` each do the whole set-up first.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2  # pytest-xdist: most tests wait on processes and servers
RUN_ARGS ?=

.PHONY: setup run test check format lint types bench clean

setup:
	@bash scripts/setup.sh

run: setup
	$(VENV)/bin/lepton server --demo $(RUN_ARGS)

# The whole developer loop, as CI runs it: format check, lint, types, then every test.
test: lint types
	$(PY) -m pytest --durations=25 $(PYTEST_ARGS)

format: setup
	$(VENV)/bin/ruff format src tests benchmarks

lint: setup
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/ruff check src tests benchmarks

types: setup
	$(VENV)/bin/mypy

check: test

bench: setup
	$(PY) benchmarks/train_mnist.py
	$(PY) benchmarks/trainer_overhead.py
	$(PY) benchmarks/registry.py
	$(PY) benchmarks/articles.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/generate_images.py --quick
	$(PY) benchmarks/generate.py --minutes 8 --d-model 64 --layers 2 --heads 4 --context 64 --lr 5e-3

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build src/*.egg-info
