"""Benchmarks, one table per section: ``python -m bench`` (``make bench``)."""
