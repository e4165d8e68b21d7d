"""The MLflow client's retries, completed: a request whose answer was cut off mid-body is sent
again (installed by projects.core.tracking.setup_tracking, so every entry point has it)."""
from __future__ import annotations

import sys
import time

import requests

from projects.core.private_api import private_attr

_BODY_RETRY_ATTEMPTS = 3
BODY_RETRY_WARNING = "the answer was cut off mid-body"


def install_http_body_retry() -> None:
    """Retry MLflow requests whose response was cut off mid-body (a server killed mid-answer).

    MLflow's client retries refused and reset connections and 5xx answers with backoff
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR), but not a response
    whose headers arrived and whose body did not (`ChunkedEncodingError: IncompleteRead`):
    that fails the run at once. Seen in the load test whenever the server was SIGKILLed under
    load. Here such a request is sent again, up to 3 more times, each again with MLflow's own
    retries; a file being uploaded is rewound first. Every tracking write but create-run is
    idempotent on the server; a create-run answered too late may leave an empty twin run,
    which carries the job's host/pid tags and is closed as stale later (docs/team.md).
    """
    # MLflow has no public hook into its HTTP client's retries: the private function is wrapped.
    rest_utils = private_attr(
        "mlflow.utils.rest_utils", "", dist="mlflow",
        reason="its client retries a refused or reset connection and 5xx answers, not an answer "
               "cut off mid-body (ChunkedEncodingError), and has no public retry hook; "
               "projects/core/http_retry.py wraps rest_utils._get_http_response_with_retries",
        waits_for="mlflow/mlflow#8004 (truncated responses from the server) and #7732 "
                  "(InvalidChunkLength not retried)")
    original = rest_utils._get_http_response_with_retries
    if getattr(original, "_medimg_body_retry", False):
        return

    def with_body_retry(method, url, max_retries, backoff_factor, *args, **kwargs):
        data = kwargs.get("data")
        rewind = None
        if data is not None and hasattr(data, "seek") and hasattr(data, "tell"):
            rewind = data.tell()
        elif data is not None and not isinstance(data, (bytes, bytearray, str, dict, list, tuple)):
            return original(method, url, max_retries, backoff_factor, *args, **kwargs)  # cannot resend
        for attempt in range(_BODY_RETRY_ATTEMPTS + 1):
            try:
                return original(method, url, max_retries, backoff_factor, *args, **kwargs)
            except requests.exceptions.ChunkedEncodingError as exc:
                if attempt == _BODY_RETRY_ATTEMPTS or kwargs.get("stream"):
                    raise
                print(f"warning: {method} {url}: {BODY_RETRY_WARNING} ({exc}); sending it again",
                      file=sys.stderr, flush=True)
                if rewind is not None:
                    data.seek(rewind)
                time.sleep(min(float(backoff_factor or 0) * 2 ** attempt, 30.0))

    with_body_retry._medimg_body_retry = True
    with_body_retry.__wrapped__ = original
    rest_utils._get_http_response_with_retries = with_body_retry
