"""The platform's core: what every study and tool builds on, and which knows no study.

runtime (defaults, store), errors, cli, config (settings declared once), tracking (run
conventions), training (the shared loop), efficiency and timing (size, CPU protocol), onnx
runtime, space (search spaces), grid, study (the Study interface and the registry of
studies), entry (every study's command line).
"""
