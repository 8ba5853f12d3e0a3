"""scribe-bench: bounded, loopback-only benchmarks of the pipeline (see docs/benchmarks.md)."""
