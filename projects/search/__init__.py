"""Architecture / hyper-parameter search over a study's `run(config)` with Optuna.

    python -m projects.search --study pathology --n-trials 20 --epochs 5
    mlflow run . -e search --env-manager local -P study=pathology -P n_trials=8 -P epochs=2

Each study declares its default space (`Study.default_space`, in the `--space` syntax of
projects.core.space); `driver.run_search` runs a search: one MLflow parent run per search,
one child run per trial. See docs/search.md.
"""
