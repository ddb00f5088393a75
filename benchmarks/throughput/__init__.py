"""Speed benchmarks: each writes immutable records (CSV or JSON) under ``benchmarks/results/``."""
