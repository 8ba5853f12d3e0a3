"""Operational programs: the vendor emulator, demo and benchmarks."""
