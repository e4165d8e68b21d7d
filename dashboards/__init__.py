"""Dashboards: plotly pages comparing runs on accuracy AND efficiency, read from MLflow.

    python -m dashboards --out dashboards/out --ui-url http://127.0.0.1:5000

`dashboards.data` reads runs and the registry through MLflow's API into tidy pandas tables
(and finds Pareto fronts); `dashboards.pages` turns them into self-contained HTML pages
(plotly.js embedded once per page, images as data URIs: they open offline from disk);
`dashboards.build.build_and_log()` writes the pages and logs them to a `dashboard` run.
Nothing here imports training code: only `projects.core.tracking` (names) and the papers'
published numbers.
"""
from __future__ import annotations

import projects  # noqa: F401  (runtime defaults: offline, telemetry off, the embedded store)
