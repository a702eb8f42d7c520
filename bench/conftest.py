"""pytest-benchmark suites over PERF.md's grid; see bench/test_grid.py.

Run from the repository root, with rnncore importable (installed, or ``PYTHONPATH=src``)::

    pytest bench/ --benchmark-group-by=group --benchmark-columns=median,iqr,rounds
"""
