"""Benchmarks that print JSON: `python -m benchmarks.throughput`."""
