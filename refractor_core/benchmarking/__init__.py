"""Benchmarks and ablations: suites, per-case metrics, structure matching, executors, plots."""
