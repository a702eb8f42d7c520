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
  ``CheckedParams``, ``x`` a C-contiguous (T, B, K) ndarray of their dtype, no h0 and
  no lengths; ``dy`` of the output's shape and layout, no ∂L/∂h_n), or None for any
  other call. They accept, never reject: a call they decline, a bad one included,
  goes through functional, which checks it and raises. The results, the record and
  the bits are functional's.
"""
cimport numpy as cnp
from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject
from cpython.tuple cimport PyTuple_GET_ITEM
from libc.string cimport memcpy

import numpy as np

from rnncore import _chunks, _kernels
from rnncore._inputs import zero_padded
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


def forward(x, params, bint snapshot=True):
    """:func:`rnncore.functional.forward` ``(x, params, snapshot_weights=snapshot)``
    with every other option at its default, for a dict of native-order ndarrays (or a ``CheckedParams`` of "rnn") and
    a C-contiguous (T, B, K) ``x`` of their dtype whose call takes the short path; None
    for any other call.

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
    check_sizes_c(Sizes(T, B, K, H))     # raises as functional would, before any copy
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


cpdef tuple stacked_backward(record, dy, ds_n, bint need_dx, bint need_dh0):
    """BPTT of a :func:`stacked_forward` record on the kernels: the layers back to back
    from the last, each one ``layer_backward_arrays`` call with ∂x in it.

    Parameters
    ----------
    record : rnncore.functional.Record
        Of a one-direction Elman call run in one call per layer.
    dy : ndarray, shape (T, B, H)
        ∂L/∂output, time-major, rows contiguous, zero at padded steps (∂x is zeroed
        there too, layer by layer).
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
            zero_padded(dx, lengths, record.padded)
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
    every option at its default) and ``dy`` a C-contiguous ndarray of the output's
    shape and dtype, when the kernels' BLAS runs on one thread; None for any other
    call.

    Returns
    -------
    (dx, dh0, grads) or None
    """
    F = _functional()
    if type(record) is not F.Record or type(dy) is not _ndarray:
        return None
    if (record.backend is not _kernels or record.chunk or record.padded is not None
            or record.batch_first or record.unbatched or record.merge_mode != "concat"):
        return None
    plan = record.plan
    if not plan.stacked:
        return None
    cfg = plan.cfg
    cdef Py_ssize_t T = record.T, B = record.B, H = cfg.hidden_size
    if record.full_T != T or not _c_array_of(dy, cfg.dtype.num, 3):
        return None
    cdef cnp.ndarray dya = <cnp.ndarray>dy
    if (cnp.PyArray_DIM(dya, 0) != T or cnp.PyArray_DIM(dya, 1) != B
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
    dx, ds0, grads = stacked_backward(record, dy, zeros, need_dx, need_dh0)
    cdef tuple keys = plan.grad_keys
    cdef dict named = {}
    cdef Py_ssize_t i
    for i in range(len(keys)):
        named[keys[i]] = grads[i]
    return dx, ds0, named
