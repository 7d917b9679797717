"""Side-by-side performance scripts: ``python -m benchmarks.<name> [--quick]``; results in ``benchmarks/results``."""
