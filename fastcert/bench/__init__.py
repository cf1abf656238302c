"""Benchmark workloads shared by ``benchmarks/`` and the ``bench`` subcommand."""
