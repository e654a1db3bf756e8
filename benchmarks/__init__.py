"""Benchmarks behind docs/benchmarks.md. Run one with `python -m benchmarks NAME` (or `nox -s bench -- NAME`)."""
