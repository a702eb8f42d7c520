"""The memory-safety preconditions every kernel checks before it allocates or releases
the GIL: shapes that agree with each other, lengths within [0, T], and sizes that fit
the BLAS's 32-bit integer arguments. O(B) each; messages name the argument, the shape
expected (and the sizes it was derived from) and the shape given.
"""
from libc.stdint cimport int64_t

cdef enum:
    BLAS_INT_MAX = 2147483647       # the largest int a 32-bit BLAS argument holds


cdef struct Sizes:
    Py_ssize_t T, B, K, H


cdef inline int check_sizes_c(Sizes sz) except -1:
    if sz.B and sz.T > BLAS_INT_MAX // sz.B:
        what = ("T*B", sz.T * <object>sz.B, "rows of the whole-sequence products")
    elif sz.K > BLAS_INT_MAX:
        what = ("K", sz.K, "input features")
    elif sz.H > BLAS_INT_MAX:
        what = ("H", sz.H, "hidden units")
    else:
        return 0
    raise ValueError(f"{what[0]} = {what[1]} ({what[2]}) exceeds the 32-bit BLAS limit "
                     f"of {BLAS_INT_MAX}")


cdef inline int expect_shape(str name, int ndim, const Py_ssize_t *given, Py_ssize_t e0,
                      Py_ssize_t e1, Py_ssize_t e2, Sizes sz, str source) except -1:
    """ValueError unless ``given[:ndim]`` is (e0, e1, e2)[:ndim]."""
    cdef Py_ssize_t e[3]
    e[0], e[1], e[2] = e0, e1, e2
    cdef int d
    for d in range(ndim):
        if given[d] != e[d]:
            raise ValueError(
                f"{name} must have shape {tuple([e[i] for i in range(ndim)])} for "
                f"(T, B, K, H) = {(sz.T, sz.B, sz.K, sz.H)} read off {source}; got "
                f"{tuple([given[i] for i in range(ndim)])}")
    return 0


cdef inline int check_layer(Sizes sz, const Py_ssize_t *w_ih, const Py_ssize_t *w_hh,
                     const int64_t[::1] lengths) except -1:
    """The preconditions every layer kernel shares; sz read off x (T, B, K) and w_hh."""
    if sz.H < 1:
        raise ValueError(f"w_hh must have at least one row; got shape "
                         f"({w_hh[0]}, {w_hh[1]})")
    expect_shape("w_hh", 2, w_hh, sz.H, sz.H, 0, sz, "x and w_hh")
    expect_shape("w_ih", 2, w_ih, sz.H, sz.K, 0, sz, "x and w_hh")
    expect_shape("lengths", 1, &lengths.shape[0], sz.B, 0, 0, sz, "x and w_hh")
    check_lengths(sz, &lengths[0] if sz.B else NULL)
    return 0


cdef inline int check_lengths(Sizes sz, const int64_t *lengths) except -1:
    """Each of the B ``lengths`` within [0, T], and the sizes within the BLAS's."""
    cdef Py_ssize_t i
    for i in range(sz.B):
        if lengths[i] < 0 or lengths[i] > sz.T:
            raise ValueError(f"lengths must lie in [0, {sz.T}]; got {lengths[i]} at "
                             f"index {i}")
    check_sizes_c(sz)
    return 0
