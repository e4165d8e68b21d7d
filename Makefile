# The README's two commands are `make demo` and `make test`; both install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE
export MLFLOW_DISABLE_TELEMETRY ?= true
export HF_HUB_OFFLINE ?= 1
# `mlflow run` starts entry points with the `python` on PATH: make it the project's.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install demo test test-fast ui optuna-dashboard lock clean-store

install:
	scripts/install.sh

# The main job on the embedded default data (same as `mlflow run . --env-manager local`).
demo: install
	$(VENV)/bin/mlflow run . --env-manager local

# Every test, the slow end-to-end ones included (CI runs exactly this).
test:
	scripts/install.sh --browser
	$(PY) -m pytest -q

# Unit + integration tiers, for the edit-test loop (tests/e2e and tests marked slow are left out).
test-fast: install
	$(PY) -m pytest -q -m "not slow" tests/unit tests/integration

ui: install
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

# Watch searches live (trials as they finish): optuna-dashboard on a search's storage, on
# 127.0.0.1 only. SEARCH_STORAGE as given to `-e search -P storage=...`; empty: the default.
SEARCH_STORAGE ?=
OPTUNA_PORT ?= 8080
optuna-dashboard: install
	$(PY) -m projects.search.watch --storage "$(SEARCH_STORAGE)" --port $(OPTUNA_PORT)

# Re-resolve every dependency to its newest allowed version (requirements/lock.txt), then
# reinstall from it; commit pyproject.toml and the lock together after the tests pass.
lock:
	scripts/lock.sh
	scripts/install.sh

clean-store:
	rm -rf mlruns
