# The two commands of README.md:  make demo  (the main job)  and  make test  (the whole suite).
# Both install what they need first: host packages (scripts/setup-host) and Python deps into .venv.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Tests are strict by default: a cell that cannot run here (missing QEMU, unreachable packages, a locked
# package gone from the mirror) is an error naming the reason. BOOTMATRIX_STRICT=0 make test opts out
# (skips with the reason, and re-resolves a gone package with a warning).
JOBS   ?= auto
# The images built here must be the bytes of the committed manifest (docs/reproducibility.md); where the
# user opted out of strict mode, images of re-resolved packages are reported as not comparable.
VERIFY_FLAGS := $(if $(filter 0,$(BOOTMATRIX_STRICT)),--allow-drift,)
# The Debian roots of aarch64 and riscv64 take 7-11 minutes each to build under TCG here: make test
# verifies the x86_64 one (which its tests build) and `bootmatrix verify debian` all three.
VERIFY_SKIP  := --skip 'aarch64-*-debian' --skip 'riscv64-*-debian'
# Every test run leaves JUnit XML, allure results and a pytest-html page in results/. allure's own
# --clean-alluredir is not safe with xdist (each worker would delete the folder), so it is cleaned here.
REPORTS := --alluredir=results/allure-results --junitxml=results/junit.xml --html=results/report.html --self-contained-html

.PHONY: demo test setup host host-tests report-tools lint type unit vm bench compare report durations clean fresh-clone-check

demo: setup
	$(BIN)/bootmatrix run

test: setup host-tests
	$(BIN)/ruff check .
	$(BIN)/mypy
	TOX=$(BIN)/tox scripts/unit-pythons
	rm -rf results/allure-results
	$(BIN)/pytest -n $(JOBS) --durations=15 $(REPORTS)
	scripts/check-no-qemu-left
	$(BIN)/bootmatrix verify $(VERIFY_FLAGS) $(VERIFY_SKIP)

setup: host $(STAMP) report-tools

# The Allure 3 report CLI (npm package `allure`, no Java), when Node is here; `make report` falls back
# to pytest-html otherwise.
report-tools:
	@if command -v npm >/dev/null && [ ! -x .tools/node_modules/.bin/allure ]; then \
		npm install --no-audit --no-fund --silent --prefix .tools allure@3 || echo "allure CLI not installed"; \
	fi

host:
	scripts/setup-host

# What only the suite needs on top: lava-dispatcher, for the LAVA export test (tests/vm/test_lava.py).
host-tests:
	scripts/setup-host --tests

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Lint and type checks need only the Python packages: no host set-up (apt), no allure CLI.
lint: $(STAMP)
	$(BIN)/ruff check .

type: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -n $(JOBS) -m "not vm"

vm: setup
	$(BIN)/pytest -n $(JOBS) -m vm

bench: setup
	$(BIN)/python -m pip install -q -e '.[dev,bench]'
	$(BIN)/python bench/boot_overhead.py
	$(BIN)/python bench/net_throughput.py
	$(BIN)/python bench/vfat_writers.py --stick
	$(BIN)/python bench/compile_latency.py --build warm
	$(BIN)/python bench/warm_prepare.py --no-network
	$(BIN)/python bench/snapshot.py
	$(BIN)/python bench/iso_writers.py --boot
	$(BIN)/python bench/run_jobs.py

report:
	scripts/make-report

# Test durations for pytest-split, so N CI runners get shards of equal length (see README).
durations: setup
	$(BIN)/pytest -n 0 --store-durations --durations-path .test_durations

compare: setup
	$(BIN)/bootmatrix compare --firmware-set bookworm --firmware-set trixie

# Clone HEAD into a temporary folder and run `make demo` and `make test` there with an empty cache, timed.
fresh-clone-check:
	scripts/fresh-clone-check

clean:
	rm -rf $(VENV) results .tools .pytest_cache .mypy_cache .ruff_cache
