"""pytest-benchmark suites over PERF.md's grid; see bench/test_grid.py."""
