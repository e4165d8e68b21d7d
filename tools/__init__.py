"""Tools that are not part of a run: the tracking-server load test (loadtest) and the
side-by-side timing of two checkouts' test suites (suite_ab)."""
