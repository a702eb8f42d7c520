"""functional's short path, compiled: the call of a one-direction Elman network whose
layers each run in one kernel call on one thread.

At the grid's tiny size (T = 100, B = 1, K = 32, H = 64) the kernels run a call in
~18 µs and the interpreter around them took ~5 µs each way: reading the parameter
mapping, the checks, the lists of the record, the gradients' dict. Here that path is
written once, in two layers:

- :func:`stacked_forward` and :func:`stacked_backward` run the layers back to back on
  the kernels: what :func:`rnncore.functional._stacked_forward` and
  :func:`~rnncore.functional._backward_stacked` do on that backend, after functional's
  checks;
- :func:`forward` and :func:`backward` are :func:`rnncore.functional.forward` and
  :func:`~rnncore.functional.backward` for a call whose arguments are exactly what
  that path takes, every option at its default (a dict of native ndarrays or a
  ``CheckedParams``, ``x`` a C-contiguous (T, B, K) ndarray of their dtype, no h0,
  lengths none or a list, tuple or integer ndarray of them; ``dy`` of the output's
  shape and layout, no ∂L/∂h_n), or None for any other call. Lengths that pad
  something run the walker's steps for them here too (§85 of docs/perf-notes.md).
  They accept, never reject: a call they decline, a bad one included, goes through
  functional, which checks it and raises. The results, the record and the bits are
  functional's.
"""
cimport numpy as cnp
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.stdint cimport int32_t, int64_t, uint32_t
from libc.string cimport memcpy, memset

import numpy as np

from rnncore import _chunks, _kernels
from rnncore._params import CheckedParams, _plan_for

from rnncore._checks cimport Sizes, check_sizes_c

cnp.import_array()

cdef object _ndarray = np.ndarray
cdef object _layer_forward_owned = _kernels.layer_forward_owned
cdef object _layer_backward = _kernels.layer_backward_arrays
cdef object _F = None                  # rnncore.functional, looked up at the first call


cdef object _functional():
    global _F
    if _F is None:
        from rnncore import functional
        _F = functional
    return _F


cdef inline bint _c_array_of(object a, int typenum, int ndim):
    """Whether ``a`` is exactly an ndarray, C-contiguous, of ``ndim`` dimensions none of
    them empty, in the native byte order of dtype ``typenum``."""
    if type(a) is not _ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)):
        return False
    cdef int d
    for d in range(ndim):
        if cnp.PyArray_DIM(arr, d) == 0:
            return False
    return True


# The parameters of the last dict read: its keys (the objects), each value's dtype
# and shape, and their plan. A call with the same keys, dtypes and shapes (the next call
# of a training loop, whatever the values) reuses the plan without building the
# signature that finds it (~0.7 µs of tuples and hashing at tiny).
DEF _KEPT_PARAMS = 64
cdef object _kept_keys = ()
cdef object _kept_plan = None
cdef int _kept_type[_KEPT_PARAMS]
cdef int _kept_ndim[_KEPT_PARAMS]
cdef Py_ssize_t _kept_dims[_KEPT_PARAMS][2]


cdef object _read_params(dict params):
    """(plan, arrays) of a dict whose values are all native-order ndarrays (what
    ``read_params`` does for it, and the same plan), or None for any other dict."""
    global _kept_keys, _kept_plan
    cdef Py_ssize_t pos = 0, i = 0, n = len(params)
    cdef PyObject *key
    cdef PyObject *value
    cdef cnp.ndarray arr
    cdef int nd
    cdef bint kept = n == len(_kept_keys)
    arrays = []
    while PyDict_Next(params, &pos, &key, &value):
        v = <object>value
        if type(v) is not _ndarray or not cnp.PyArray_ISNOTSWAPPED(<cnp.ndarray>v):
            return None
        arrays.append(v)
        if kept:
            arr = <cnp.ndarray>v
            nd = cnp.PyArray_NDIM(arr)
            kept = (key == <PyObject *>PyTuple_GET_ITEM(_kept_keys, i)
                    and nd == _kept_ndim[i] and cnp.PyArray_TYPE(arr) == _kept_type[i]
                    and cnp.PyArray_DIM(arr, 0) == _kept_dims[i][0]
                    and (nd == 1 or cnp.PyArray_DIM(arr, 1) == _kept_dims[i][1]))
        i += 1
    if kept:
        return _kept_plan, arrays
    keys = tuple(params)
    plan = _plan_for(("rnn", *[(k, a.shape, a.dtype) for k, a in zip(keys, arrays)]))
    _kept_keys = ()                      # (none kept while the arrays below change)
    if n > _KEPT_PARAMS:
        return plan, arrays
    for i in range(n):
        arr = <cnp.ndarray>arrays[i]
        nd = cnp.PyArray_NDIM(arr)
        if nd < 1 or nd > 2:             # (not a plan's)
            return plan, arrays
        _kept_ndim[i], _kept_type[i] = nd, cnp.PyArray_TYPE(arr)
        _kept_dims[i][0] = cnp.PyArray_DIM(arr, 0)
        _kept_dims[i][1] = cnp.PyArray_DIM(arr, 1) if nd == 2 else 0
    _kept_keys, _kept_plan = keys, plan
    return plan, arrays


# The last forward's values that depend on its plan, T and B alone (one call in one
# chunk, small enough for the short path; lengths all T; the zero initial states, which
# are also backward's zero ∂L/∂h_n), kept for the next call of the same shape: a
# training loop's next calls find them here. Written and read as one entry, with no
# call in between (see forward).
cdef object _kept_call_plan = None
cdef Py_ssize_t _kept_T = -1, _kept_B = -1
cdef bint _kept_fits = False
cdef object _kept_steps = None, _kept_s0 = None


def forget_kept():
    """Drop the values kept for the last call's plan, T and B, so that the next call
    works them out afresh: for a caller that changed what they are worked out from
    (``_chunks.chunk_steps``, ``functional._CACHED_ELEMENTS``), as tests do."""
    global _kept_call_plan, _kept_T, _kept_B, _kept_fits, _kept_steps, _kept_s0
    _kept_call_plan, _kept_T, _kept_B, _kept_fits, _kept_steps, _kept_s0 = (
        None, -1, -1, False, None, None)


cdef inline void _extent(const int64_t *v, Py_ssize_t B, int64_t *least,
                         int64_t *most) noexcept:
    """The least and the greatest of v[0:B], B ≥ 1, into ``least`` and ``most``."""
    least[0] = most[0] = v[0]
    cdef Py_ssize_t i
    for i in range(1, B):
        if v[i] < least[0]:
            least[0] = v[i]
        elif v[i] > most[0]:
            most[0] = v[i]


cdef object _read_lengths(object lengths, Py_ssize_t B, Py_ssize_t T, int64_t *least,
                          int64_t *most):
    """The caller's ``lengths`` in one of the usual forms (a list or tuple of ints, a
    1-D ndarray of 32- or 64-bit signed integers) as a new (B,) int64 array, their
    least and greatest in ``least`` and ``most``; None for any other form, and for
    values functional's check rejects (the wrong count, outside [1, T]): functional
    then reads them itself, and raises. ``B`` ≥ 1."""
    cdef cnp.npy_intp dims[1]
    dims[0] = B
    cdef cnp.ndarray out, a
    cdef int64_t *o
    cdef Py_ssize_t i, stride, size
    cdef char *p
    if type(lengths) is list or type(lengths) is tuple:
        if len(lengths) != B:
            return None
        out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        o = <int64_t *>cnp.PyArray_DATA(out)
        for i in range(B):
            item = lengths[i]
            if type(item) is not int:    # (nor bool, a subclass)
                return None
            try:
                o[i] = item
            except OverflowError:
                return None
    elif type(lengths) is _ndarray:
        a = <cnp.ndarray>lengths
        size = cnp.PyArray_ITEMSIZE(a)
        if (cnp.PyArray_NDIM(a) != 1 or cnp.PyArray_DIM(a, 0) != B
                or not cnp.PyArray_ISSIGNED(a) or not cnp.PyArray_ISALIGNED(a)
                or not cnp.PyArray_ISNOTSWAPPED(a) or (size != 8 and size != 4)):
            return None
        out = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
        o = <int64_t *>cnp.PyArray_DATA(out)
        p, stride = <char *>cnp.PyArray_DATA(a), cnp.PyArray_STRIDE(a, 0)
        for i in range(B):
            o[i] = (<int64_t *>(p + i * stride))[0] if size == 8 \
                else (<int32_t *>(p + i * stride))[0]
    else:
        return None
    _extent(o, B, least, most)
    if least[0] < 1 or most[0] > T:
        return None
    return out


cdef void _zero_padded(cnp.ndarray a, cnp.ndarray lengths) noexcept:
    """Zero a C-contiguous (T, B, W) array at each row's padded steps, t ≥ lengths[i]
    (lengths a C-contiguous (B,) int64 array): ``a[padded] = 0`` in place."""
    cdef Py_ssize_t T = cnp.PyArray_DIM(a, 0), B = cnp.PyArray_DIM(a, 1), i, t
    cdef size_t row_bytes = cnp.PyArray_DIM(a, 2) * cnp.PyArray_ITEMSIZE(a)
    cdef char *data = <char *>cnp.PyArray_DATA(a)
    cdef const int64_t *steps = <const int64_t *>cnp.PyArray_DATA(lengths)
    for i in range(B):
        for t in range(max(steps[i], 0), T):
            memset(data + (t * B + i) * row_bytes, 0, row_bytes)


cdef cnp.ndarray _unpadded_copy(cnp.ndarray a, Py_ssize_t T, cnp.ndarray lengths,
                                Py_ssize_t least):
    """A new C-contiguous copy of the first T steps of a C-contiguous (≥ T, B, W) array,
    zero at each row's padded steps (t ≥ lengths[i]): what functional makes of x for a
    call whose lengths pad something. The steps below ``least``, the shortest length
    (≥ 0), which every row runs, are one copy."""
    cdef Py_ssize_t B = cnp.PyArray_DIM(a, 1), i, t
    cdef size_t row_bytes = cnp.PyArray_DIM(a, 2) * cnp.PyArray_ITEMSIZE(a)
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = T, B, cnp.PyArray_DIM(a, 2)
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(3, dims, cnp.PyArray_TYPE(a), 0)
    cdef const int64_t *steps = <const int64_t *>cnp.PyArray_DATA(lengths)
    cdef char *src = <char *>cnp.PyArray_DATA(a)
    cdef char *dst = <char *>cnp.PyArray_DATA(out)
    memcpy(dst, src, least * B * row_bytes)
    for t in range(least, T):
        for i in range(B):
            if t < steps[i]:
                memcpy(dst + (t * B + i) * row_bytes, src + (t * B + i) * row_bytes,
                       row_bytes)
            else:
                memset(dst + (t * B + i) * row_bytes, 0, row_bytes)
    return out


cdef cnp.ndarray _padded_mask(cnp.ndarray lengths, Py_ssize_t T):
    """(T, B) bool, True at padded steps (t ≥ lengths[i]): functional's ``padded``."""
    cdef Py_ssize_t B = cnp.PyArray_DIM(lengths, 0), i, t
    cdef cnp.npy_intp dims[2]
    dims[0], dims[1] = T, B
    cdef cnp.ndarray mask = cnp.PyArray_EMPTY(2, dims, cnp.NPY_BOOL, 0)
    cdef char *m = <char *>cnp.PyArray_DATA(mask)
    cdef const int64_t *steps = <const int64_t *>cnp.PyArray_DATA(lengths)
    for t in range(T):
        for i in range(B):
            m[t * B + i] = t >= steps[i]
    return mask


def steps_to_run(x, lengths):
    """:func:`rnncore.functional._steps_to_run` of a C-contiguous (T, B, K) ndarray
    ``x`` (B ≥ 1) and read ``lengths`` (a (B,) int64 ndarray, values in [1, T]): the
    same arrays, x copied and zeroed in one pass.

    Returns
    -------
    x : ndarray, shape (T', B, K)
        T' the longest length: a view of x where no row is shorter or x is already
        +0.0 at every padded step, else a copy zeroed at the padded steps.
    padded : ndarray of bool, shape (T', B), or None
    """
    if not _c_array_of(lengths, cnp.NPY_INT64, 1) or len(lengths) != x.shape[1]:
        raise ValueError(f"lengths must be a C-contiguous ({x.shape[1]},) int64 array; "
                         f"got {lengths!r}")
    cdef cnp.ndarray steps = <cnp.ndarray>lengths
    cdef int64_t least, most
    _extent(<const int64_t *>cnp.PyArray_DATA(steps), cnp.PyArray_DIM(steps, 0), &least,
            &most)
    if least < 1 or most > x.shape[0]:
        raise ValueError(f"lengths must lie in [1, {x.shape[0]}]; got values from {least} "
                         f"to {most}")
    return _steps_to_run(x, steps, least, most)


cdef tuple _steps_to_run(cnp.ndarray x, cnp.ndarray lengths, int64_t least,
                         int64_t most):
    """:func:`steps_to_run` with the lengths' least and greatest known. Where x is
    already +0.0 at every padded step (a batch padded with zeros: ``pad_sequence``'s,
    the torch drop-in's) the zeroed copy would be x itself, bit for bit: x is run in
    place, as an unpadded one is."""
    ran = x if most == cnp.PyArray_DIM(x, 0) else x[:most]
    if least == most:                    # every row as long as the longest: no mask
        return ran, None
    if _zero_at_padded_steps(x, most, lengths):
        return ran, _padded_mask(lengths, most)
    return _unpadded_copy(x, most, lengths, least), _padded_mask(lengths, most)


cdef bint _zero_at_padded_steps(cnp.ndarray a, Py_ssize_t T, cnp.ndarray lengths):
    """Whether every element of a C-contiguous (≥ T, B, W) float array is +0.0 (all bits
    zero) at each row's padded steps t < T, t ≥ lengths[i]: one read of those rows."""
    cdef Py_ssize_t B = cnp.PyArray_DIM(a, 1), i, t, j
    cdef Py_ssize_t words = cnp.PyArray_DIM(a, 2) * cnp.PyArray_ITEMSIZE(a) // 4
    cdef const uint32_t *data = <const uint32_t *>cnp.PyArray_DATA(a)
    cdef const int64_t *steps = <const int64_t *>cnp.PyArray_DATA(lengths)
    cdef const uint32_t *row
    cdef uint32_t bits
    for i in range(B):
        for t in range(max(steps[i], 0), T):
            row = data + (t * B + i) * words
            bits = 0
            for j in range(words):
                bits |= row[j]
            if bits:
                return False
    return True


cdef object _zero_after(cnp.ndarray a, Py_ssize_t full_T):
    """A time-major ``a`` (T, B, W) of the steps run, over the caller's ``full_T`` ≥ T
    steps: zero after step T (functional's ``_all_steps``)."""
    cdef Py_ssize_t T = cnp.PyArray_DIM(a, 0)
    if T == full_T:
        return a
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = full_T, cnp.PyArray_DIM(a, 1), cnp.PyArray_DIM(a, 2)
    cdef cnp.ndarray out = cnp.PyArray_ZEROS(3, dims, cnp.PyArray_TYPE(a), 0)
    memcpy(cnp.PyArray_DATA(out), cnp.PyArray_DATA(a), cnp.PyArray_NBYTES(a))
    return out


cpdef tuple stacked_forward(plan, list arrays, x, s0, steps, bint relu, bint snapshot):
    """The layers of a one-direction Elman network back to back on the kernels, each
    one ``layer_forward_owned`` call.

    Parameters
    ----------
    plan : rnncore._params.Plan
        Its configuration's ``stacked``.
    arrays : list of ndarray
        The parameters in the plan's order, checked.
    x : ndarray, shape (T, B, K), C-contiguous, the weights' dtype
    s0 : sequence of ndarray, shape (B, H)
        Each layer's initial state.
    steps : ndarray of int64, shape (B,)
        T in every row.
    relu, snapshot : bool
        f is ReLU (else tanh); the record keeps copies of the weights.

    Returns
    -------
    output : ndarray, shape (T, B, H)
    h_n : ndarray, shape (L, B, H)
    weights, inputs, states : list
        The record's: per layer ``[(w_ih, w_hh, b)]``, its input, ``[hs]``.
    """
    cfg = plan.cfg
    cdef Py_ssize_t L = cfg.num_layers, layer
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = L, cnp.PyArray_DIM(xa, 1), cfg.hidden_size
    h_n = cnp.PyArray_EMPTY(3, dims, cnp.PyArray_TYPE(xa), 0)
    weights, inputs, states = [], [], []
    layer_in = x
    output = None
    for layer in range(L):
        i_ih, i_hh, i_bih, i_bhh, _ = plan.layers[layer][0]
        hs, w, output = _layer_forward_owned(
            layer_in, arrays[i_ih], arrays[i_hh],
            plan.zero_bias if i_bih is None else arrays[i_bih],
            None if i_bih is None else arrays[i_bhh], s0[layer], steps, relu, snapshot,
            h_n[layer], layer == L - 1)
        weights.append([w])
        inputs.append(layer_in)
        states.append([hs])
        if layer < L - 1:
            layer_in = hs[1:]
    return output, h_n, weights, inputs, states


def forward(x, params, bint snapshot=True, lengths=None):
    """:func:`rnncore.functional.forward` ``(x, params, lengths=lengths,
    snapshot_weights=snapshot)`` with every other option at its default, for a dict of
    native-order ndarrays (or a ``CheckedParams`` of "rnn"), a C-contiguous (T, B, K)
    ``x`` of their dtype and ``lengths`` None or in a form :func:`_read_lengths` reads,
    whose call takes the short path; None for any other call.

    Lengths that pad nothing run the call without them, as functional does. Lengths
    that pad something run what functional's walker runs for them: the steps after
    the longest sequence dropped, x copied with its padded steps zeroed (none copied
    where every row is as long as the longest), the same kernels given the lengths,
    each row's h_n read at its last step, the output zero at padded steps and after
    the longest; the walker's record.

    Returns
    -------
    (output, h_n, record) or None
    """
    if type(x) is not _ndarray:
        return None
    if type(params) is dict:
        read = _read_params(<dict>params)
        if read is None:
            return None
        plan, arrays = read
    elif type(params) is CheckedParams and params.cell == "rnn":
        plan, arrays = params.plan, params.arrays
    else:
        return None
    if not plan.stacked:
        return None
    cfg = plan.cfg
    if not _c_array_of(x, cfg.dtype.num, 3):
        return None
    cdef cnp.ndarray xa = <cnp.ndarray>x
    cdef Py_ssize_t T = cnp.PyArray_DIM(xa, 0), B = cnp.PyArray_DIM(xa, 1)
    cdef Py_ssize_t K = cnp.PyArray_DIM(xa, 2), H = cfg.hidden_size
    if K != cfg.input_size:
        return None
    cdef int64_t least = T, most = T
    if lengths is not None:
        lengths = _read_lengths(lengths, B, T, &least, &most)
        if lengths is None:
            return None
    check_sizes_c(Sizes(T, B, K, H))     # raises as functional would, before any copy
    if least < T:
        return _padded_forward(plan, arrays, xa, lengths, least, most, snapshot)
    F = _functional()
    global _kept_call_plan, _kept_T, _kept_B, _kept_fits, _kept_steps, _kept_s0
    cdef bint fits
    if plan is _kept_call_plan and T == _kept_T and B == _kept_B:
        # read together, with no call in between: another thread's call can replace
        # them only at a call (where the interpreter may switch threads)
        fits, steps, s0 = _kept_fits, _kept_steps, _kept_s0
    else:
        fits = T <= _chunks.chunk_steps(B, T) and not F._large(T * B, K, H)
        steps = F._full_lengths(B, T)
        s0 = (plan.zero_state(B),) * cfg.num_layers
        _kept_call_plan, _kept_T, _kept_B, _kept_fits, _kept_steps, _kept_s0 = (
            plan, T, B, fits, steps, s0)                   # likewise, all at once
    # (a BLAS of several threads: functional's path, which holds it at one for the call)
    if not fits or _kernels.blas_threads() > 1 or not F._one_part_each(_kernels, T, B, cfg):
        return None
    output, h_n, weights, inputs, states = stacked_forward(
        plan, arrays, x, s0, steps, False, snapshot)
    record = F.Record(plan, _kernels, False, weights, inputs, states,
                      [F._NOTHING_SAVED] * cfg.num_layers, steps, None, T, B, False,
                      False, "concat", True)
    return output, h_n, record


cdef object _padded_forward(plan, list arrays, cnp.ndarray x, cnp.ndarray lengths,
                            int64_t least, int64_t most, bint snapshot):
    """:func:`forward` of a call whose ``lengths`` (read, least < T) pad something:
    the walker's steps for it (see there), or None where the walker would split the
    call over threads, run it in chunks or through the block cache, or hold a BLAS of
    several threads at one."""
    cfg = plan.cfg
    cdef Py_ssize_t T = cnp.PyArray_DIM(x, 0), B = cnp.PyArray_DIM(x, 1)
    cdef Py_ssize_t K = cnp.PyArray_DIM(x, 2), H = cfg.hidden_size, ran = most
    F = _functional()
    if (F._large(T * B, K, H) or ran > _chunks.chunk_steps(B, ran)
            or _kernels.blas_threads() > 1 or not F._one_part_each(_kernels, ran, B, cfg)):
        return None
    x_run, padded = _steps_to_run(x, lengths, least, most)
    output, h_n, weights, inputs, states = stacked_forward(
        plan, arrays, x_run, (plan.zero_state(B),) * cfg.num_layers, lengths, False,
        snapshot)
    record = F.Record(plan, _kernels, False, weights, inputs, states,
                      [F._NOTHING_SAVED] * cfg.num_layers, lengths, padded, ran, B, False,
                      False, "concat", True, 0, None, T)
    return _zero_after(output, T), h_n, record


cpdef tuple stacked_backward(record, dy, ds_n, bint need_dx, bint need_dh0):
    """BPTT of a :func:`stacked_forward` record on the kernels: the layers back to back
    from the last, each one ``layer_backward_arrays`` call with ∂x in it.

    Parameters
    ----------
    record : rnncore.functional.Record
        Of a one-direction Elman call run in one call per layer.
    dy : ndarray, shape (T, B, H)
        ∂L/∂output, time-major, rows contiguous; its values at padded steps are not
        read (the kernels' δ is zero there whatever dy holds), and ∂x is zeroed there,
        layer by layer.
    ds_n : sequence of ndarray, shape (B, H)
        ∂L/∂h_n of each layer.
    need_dx, need_dh0 : bool

    Returns
    -------
    dx : ndarray, shape (T, B, K), or None without ``need_dx``
    dh0 : ndarray, shape (L, B, H), or None without ``need_dh0``
    grads : list of ndarray
        In the order of the plan's ``grad_keys``.
    """
    plan = record.plan
    cfg = plan.cfg
    cdef Py_ssize_t L = cfg.num_layers, layer
    lengths, relu, inputs = record.lengths, record.relu, record.inputs
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = L, record.B, cfg.hidden_size
    cdef cnp.ndarray ds0 = cnp.PyArray_EMPTY(3, dims, cfg.dtype.num, 0) if need_dh0 else None
    cdef size_t state_bytes = dims[1] * dims[2] * (ds0.itemsize if need_dh0 else 0)
    grads = [None] * len(plan.grad_keys)
    dx = None
    for layer in range(L - 1, -1, -1):
        x = inputs[layer]
        w_ih, w_hh, _ = record.weights[layer][0]
        dx = cnp.PyArray_EMPTY(3, cnp.PyArray_DIMS(<cnp.ndarray>x),
                               cnp.PyArray_TYPE(<cnp.ndarray>x), 0) \
            if layer or need_dx else None
        dh0, dw_ih, dw_hh, db = _layer_backward(
            x, w_ih, w_hh, record.states[layer][0], dy, ds_n[layer], lengths, relu, dx,
            need_dh0)
        if dx is not None and record.padded is not None:
            # δ is 0 there, but 0 · inf in W_ih is NaN
            _zero_padded(dx, lengths)
        if need_dh0:                     # dh0: a new C-ordered (B, H) array
            memcpy(<char *>cnp.PyArray_DATA(ds0) + layer * state_bytes,
                   cnp.PyArray_DATA(<cnp.ndarray>dh0), state_bytes)
        i_ih, i_hh, i_bih, i_bhh, _ = plan.grad_slots[layer][0]
        grads[i_ih] = dw_ih
        grads[i_hh] = dw_hh
        if i_bih is not None:
            grads[i_bih] = db
            grads[i_bhh] = cnp.PyArray_NewCopy(<cnp.ndarray>db, cnp.NPY_CORDER)
        dy = dx
    return dx, ds0, grads


def backward(record, dy, bint need_dx, bint need_dh0):
    """:func:`rnncore.functional.backward` ``(record, dy, need_dx=, need_dh0=)`` with
    no ∂L/∂h_n, for a record of :func:`forward` (or of functional's short path with
    every option at its default, lengths included) and ``dy`` a C-contiguous ndarray
    of the output's shape and dtype, when the kernels' BLAS runs on one thread; None
    for any other call. With lengths that pad something, dy's values at padded steps
    and after the longest sequence are not read; ∂x is zero there.

    Returns
    -------
    (dx, dh0, grads) or None
    """
    F = _functional()
    if type(record) is not F.Record or type(dy) is not _ndarray:
        return None
    if (record.backend is not _kernels or record.chunk or record.batch_first
            or record.unbatched or record.merge_mode != "concat"):
        return None
    plan = record.plan
    if not plan.stacked:
        return None
    cfg = plan.cfg
    cdef Py_ssize_t T = record.T, B = record.B, H = cfg.hidden_size
    cdef Py_ssize_t full_T = record.full_T
    if not _c_array_of(dy, cfg.dtype.num, 3):
        return None
    cdef cnp.ndarray dya = <cnp.ndarray>dy
    if (cnp.PyArray_DIM(dya, 0) != full_T or cnp.PyArray_DIM(dya, 1) != B
            or cnp.PyArray_DIM(dya, 2) != H):
        return None
    cdef bint fits
    if plan is _kept_call_plan and T == _kept_T and B == _kept_B:   # (read together)
        fits, zeros = _kept_fits, _kept_s0
    else:
        fits = not F._large(T * B, cfg.input_size, H)
        zeros = (plan.zero_state(B),) * cfg.num_layers
    if (not fits or _kernels.blas_threads() > 1
            or not F._one_part_each(_kernels, T, B, cfg)):
        return None
    if record.padded is not None and (not _c_array_of(record.lengths, cnp.NPY_INT64, 1)
                                      or len(record.lengths) != B):
        return None
    if full_T != T:                      # the steps after the longest: ignored
        dy = dy[:T]                      # (and the kernels ignore the padded ones, §89)
    dx, ds0, grads = stacked_backward(record, dy, zeros, need_dx, need_dh0)
    if dx is not None:
        dx = _zero_after(dx, full_T)
    cdef tuple keys = plan.grad_keys
    cdef dict named = {}
    cdef Py_ssize_t i
    for i in range(len(keys)):
        named[keys[i]] = grads[i]
    return dx, ds0, named
