"""Benchmarks of rxbeanstalk against peer clients and a RAW pipelined ceiling.

``python -m benchmarks`` (or ``make bench``) runs the whole suite and writes
``benchmarks/results/latest.json`` and ``latest.md``; ``benchmarks.guard`` is the short
in-process run behind ``tests/test_perf_guard.py``. See ``benchmarks/README.md``.
"""
