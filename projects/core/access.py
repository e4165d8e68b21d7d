"""A tracking server that refused a request (MLflow's basic-auth app): one line naming the
permission that was missing, instead of a traceback.

The team server (`scripts/team_server.sh start --auth`, docs/team.md) gives everyone signed
in READ and three roles (tools/team_users.py): `trainer` edits runs in the experiments,
`registry` also manages registered models (aliases, version tags), `reader` reads. MLflow's
client reports a refusal as an MlflowException with error code PERMISSION_DENIED (HTTP 403)
or UNAUTHENTICATED (401) and the REST endpoint in its message; which role a write needs
follows from the endpoint.
"""
from __future__ import annotations

import os
import re

from mlflow.exceptions import MlflowException

from projects.core import runtime

REFUSED_CODES = ("PERMISSION_DENIED", "UNAUTHENTICATED")
# Endpoint prefix (after /api/<version>/mlflow/) -> the permission a write there needs.
_NEEDS = (
    (("registered-models/", "model-versions/"), "MANAGE on registered models (role registry)"),
    (("runs/", "experiments/", "logged-models", "artifacts"), "EDIT on the experiment (role trainer or registry)"),
)
_ENDPOINT = re.compile(r"/api/[0-9.]+/mlflow(?:-artifacts)?/(\S+?)(?:\s|$|\?)")


def is_refusal(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and exc.error_code in REFUSED_CODES


def refusal_line(exc: MlflowException, what: str | None = None) -> str:
    """`<server>: permission denied: user 'u' lacks <permission> (<endpoint>)` on one line."""
    server = runtime.tracking_uri()
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if exc.error_code == "UNAUTHENTICATED":
        who = f"user {user!r} was not accepted (wrong password?)" if user else "no user given"
        return (f"{server}: not authenticated: {who}; set MLFLOW_TRACKING_USERNAME and "
                "MLFLOW_TRACKING_PASSWORD (docs/team.md)")
    match = _ENDPOINT.search(str(exc))
    endpoint = match.group(1) if match else "?"
    needs = next((need for prefixes, need in _NEEDS if endpoint.startswith(prefixes)), "a permission it lacks")
    action = f" to {what}" if what else ""
    return (f"{server}: permission denied: user {user or '?'!r} needs {needs}{action} "
            f"(refused: {endpoint})")
