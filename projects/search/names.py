"""Names the search writes: MLflow tags on its runs and Optuna attributes on its trials
(the shared ones come from projects.core.tracking)."""
from __future__ import annotations

import re

from projects.core import tracking

TAG_SEARCH_NAME = tracking.TAG_SEARCH_NAME
TAG_TRIAL_NUMBER = tracking.TAG_TRIAL_NUMBER
TAG_TRIAL_STATE = tracking.TAG_TRIAL_STATE
TAG_PARENT_RUN = tracking.TAG_PARENT_RUN
TAG_ELECTED = "search_parent_elected"
TAG_SEARCH_PARENT = "search_parent_run_id"
TAG_RETRY_OF = "retry_of_trial"
TAG_BEST = tracking.TAG_SEARCH_BEST
TAG_PARETO = tracking.TAG_PARETO
RUN_KIND_PARENT = tracking.RUN_KIND_SEARCH_PARENT
RUN_KIND_TRIAL = tracking.RUN_KIND_TRIAL
RUN_KIND_LAUNCHER = "search_launcher"  # an `mlflow run` launcher that resumed an existing search

ATTR_RUN_ID = "mlflow_run_id"
ATTR_HOST = "host"
ATTR_PID = "pid"
ATTR_COMPUTE = "compute"  # {"epochs": n, "cpu_s": s, "wall_s": s}, updated every epoch
ATTR_REJECTED = "rejected"
ATTR_SURPLUS = "surplus"
ATTR_DUPLICATE = "duplicate_of"  # the number of the trial that already trained these params
ATTR_EXHAUSTED = "space_exhausted"  # a duplicate for which no untried config could be found
ATTR_ERROR = "error"
STUDY_ATTR_DEFINITION = "search_definition"
STUDY_ATTR_PARENT = "mlflow_parent_run_id"

EFFICIENCY_OBJECTIVES = (tracking.M_SIZE_MB, tracking.M_LATENCY_P50, tracking.M_PARAMS, tracking.M_CPU_TOTAL)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
POLL_S = 2.0

