"""Benchmarks and measurement scripts (run as `python perf/<script>.py`); see perf/README.md."""
