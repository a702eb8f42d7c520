"""The installed build is the one the test run means to exercise, and it checks what it says."""
import os

import numpy as np
import pytest

import rnncore

CHECKED_RUN = bool(os.environ.get("RNNCORE_EXPECT_CHECKED"))


def test_cython_backend_is_built_and_preferred():
    assert rnncore.backends()[0] == "cython"


@pytest.mark.skipif(not CHECKED_RUN, reason="only when the suite runs against the checked build")
def test_checked_build_says_it_is_checked():
    from rnncore import _kernels
    assert _kernels.CHECKED


@pytest.mark.skipif(not CHECKED_RUN, reason="only when the suite runs against the checked build")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_build_raises_index_error_for_an_index_past_the_end(dtype):
    """The bounds check is compiled into the kernels' module, not only announced by it."""
    from rnncore import _kernels
    a = np.arange(5, dtype=dtype)
    with pytest.raises(IndexError):
        _kernels._bounds_probe(a, 5)
    with pytest.raises(IndexError):
        _kernels._bounds_probe(a, -6)


@pytest.mark.skipif(not CHECKED_RUN, reason="only when the suite runs against the checked build")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_checked_build_raises_index_error_for_a_row_pointer_past_the_end(dtype):
    """The loops that reach rows by pointer check the row in the checked build too."""
    from rnncore import _kernels
    a = np.arange(12, dtype=dtype).reshape(3, 4)
    assert _kernels._row_probe(a, 2) == 8
    with pytest.raises(IndexError):
        _kernels._row_probe(a, 3)
    with pytest.raises(IndexError):
        _kernels._row_probe(a, -1)


@pytest.mark.skipif(not CHECKED_RUN, reason="only when the suite runs against the checked build")
def test_checked_build_wraps_negative_indices_around():
    from rnncore import _kernels
    assert _kernels._bounds_probe(np.arange(5.0), -1) == 4.0


@pytest.mark.skipif(CHECKED_RUN, reason="the release build")
def test_release_build_says_it_is_not_checked():
    from rnncore import _kernels
    assert not _kernels.CHECKED
