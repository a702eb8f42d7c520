"""The installed build is the one the test run means to exercise."""
import os

import pytest

import rnncore


def test_cython_backend_is_built_and_preferred():
    assert rnncore.backends()[0] == "cython"


@pytest.mark.skipif(not os.environ.get("RNNCORE_EXPECT_CHECKED"),
                    reason="only when the suite runs against the checked build")
def test_checked_build_has_bounds_checks_on():
    from rnncore import _kernels
    assert _kernels.CHECKED
