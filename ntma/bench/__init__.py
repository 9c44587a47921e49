"""Benchmarks: each stage and the whole pipeline in process, and end to end on the lab."""
