"""Benchmarks of the jobs against their plain-SQL / plain-Redis / plain-Celery limits (SPEC §8).

Run with ``python -m bench`` (``make bench``); see :mod:`bench.__main__`.
"""
