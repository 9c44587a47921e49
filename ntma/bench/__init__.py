"""Benchmarks run on the namespace lab (end to end, real tools)."""
