"""Benchmarks of a real node on loopback; run ``python -m benchmarks --help``."""
