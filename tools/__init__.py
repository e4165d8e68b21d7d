"""Tools that are not part of a run (the tracking-server load test)."""
