"""Project-level pytest configuration. The bootmatrix plugin itself is loaded through its `pytest11`
entry point (pyproject.toml), so it works the same for users who install bootmatrix into their own suite.
"""

pytest_plugins = ["pytester"]  # tests/unit/test_sharding.py runs pytest in pytest
