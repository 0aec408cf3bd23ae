# The two commands of README.md:  make demo  (the main job)  and  make test  (the whole suite).
# Both install what they need first: host packages (scripts/setup-host) and Python deps into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# CI turns "cannot run here" (missing QEMU, unreachable packages) from a skip into an error.
STRICT := $(if $(CI),--bootmatrix-strict,)
JOBS   ?= auto

.PHONY: demo test setup host lint type unit vm bench compare clean

demo: setup
	$(BIN)/bootmatrix run

test: setup
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n $(JOBS) $(STRICT)
	scripts/check-no-qemu-left

setup: host $(STAMP)

host:
	scripts/setup-host

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

lint: setup
	$(BIN)/ruff check .

type: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -n $(JOBS) -m "not vm"

vm: setup
	$(BIN)/pytest -n $(JOBS) -m vm $(STRICT)

bench: setup
	$(BIN)/python bench/boot_overhead.py
	$(BIN)/python bench/net_throughput.py
	$(BIN)/python bench/vfat_writers.py --stick

compare: setup
	$(BIN)/bootmatrix compare --firmware-set bookworm --firmware-set trixie

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
