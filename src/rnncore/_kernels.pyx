# cython: language_level=3
"""The time loops of one layer in one direction, for float32 and float64.

These functions have the arguments, results and names of their twins in
``reference.py``; read them side by side. What differs is the shape of the computation
(PERF.md): the input projection of all T steps is one GEMM before the loop, into the
same (T+1, B, H) array that will hold the hidden states; each step is then one recurrent
product into a (B, H) scratch block and one fused pass (bias, nonlinearity, store) over
it while it is in cache; the backward loop keeps only δ_t·W_hh per step, and ∂W_ih,
∂W_hh, ∂b and ∂x are whole-sequence GEMMs (M = T·B) after it.

Every ``def`` entry point checks its own memory-safety preconditions before it allocates
or releases the GIL — shapes that agree with each other, lengths within [0, T], sizes
that fit the BLAS's 32-bit arguments — at O(B) cost, so that no call from Python, private
ones included, reads or writes out of bounds. ``functional.py`` checks the user's input
(with messages in the user's terms) before these are called; nothing below raises inside
``nogil`` code.

The recurrence kernels run with denormals flushed to zero (MXCSR's FTZ and DAZ, the
caller's MXCSR given back on return; ``_vmath.h`` says why and what it costs).

The policy (instruction set of the element-wise passes, who computes the products) is
one value that :func:`set_isa` and :func:`set_whole_sequence_gemm` swap whole; each call
reads it once, at its start, into the plan its loops receive (``_plan.pxd``). The
preconditions are in ``_checks.pxd``.
"""
import operator
import os

import numpy as np

cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.string cimport memcpy, memset

from rnncore._blas cimport (floating, gemm, scipy_openblas_get_corename,
                            scipy_openblas_get_num_threads, scipy_openblas_set_num_threads)
from rnncore._vmath cimport *
from rnncore._plan cimport *
from rnncore._checks cimport (BLAS_INT_MAX, Sizes, check_sizes_c, check_layer,
                              check_lengths, expect_shape)

from rnncore._memory cimport cache_alloc, cache_release
from rnncore._task cimport (rnn_task, rnn_run_tasks, rnn_barrier, rnn_barrier_wait,
                            rnn_barrier_abort)


cnp.import_array()


cdef object new_array(int nd, Py_ssize_t d0, Py_ssize_t d1, Py_ssize_t d2, bint single):
    """An uninitialised C-contiguous float32 (``single``) or float64 array of shape
    (d0,), (d0, d1) or (d0, d1, d2): NumPy's C API, without ``np.empty``'s Python call
    (a fixed cost a tiny call pays for each array it returns)."""
    cdef cnp.npy_intp dims[3]
    dims[0], dims[1], dims[2] = d0, d1, d2
    return cnp.PyArray_EMPTY(nd, dims, cnp.NPY_FLOAT32 if single else cnp.NPY_FLOAT64, 0)


cdef void *workspace(Py_ssize_t count, size_t itemsize) except NULL:
    """``count`` (at least 1) elements of ``itemsize`` bytes, 64-byte aligned, for the
    buffers a call only hands to C (W_hhᵀ, packed panels, GEMM workspace): cheaper than
    an ndarray and its memoryview, which a short call feels. From the block cache
    (_memory.pyx), so that a large one is not faulted in page by page on every call;
    the caller gives it back with :func:`release`."""
    cdef void *p = cache_alloc(<size_t>(count if count > 1 else 1) * itemsize)
    if p == NULL:
        raise MemoryError(f"cannot allocate {count} elements of {itemsize} bytes")
    return p


cdef extern from *:
    """
    /* Tests: the next n blocks fail as if memory had run out (_fail_next_blocks). */
    static int rnn_failing_blocks = 0;
    static int rnn_block_fails(void) {
        int n = __atomic_load_n(&rnn_failing_blocks, __ATOMIC_RELAXED);
        while (n > 0 && !__atomic_compare_exchange_n(&rnn_failing_blocks, &n, n - 1, 0,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            ;
        return n > 0;
    }
    """
    int rnn_failing_blocks
    int rnn_block_fails() noexcept nogil


def _fail_next_blocks(int n):
    """Make the next ``n`` buffers the kernels allocate without the GIL fail, as if
    memory had run out (tests of the paths that must then raise MemoryError and
    release every thread; 0 ends it). Returns how many were still to fail."""
    global rnn_failing_blocks
    cdef int left = rnn_failing_blocks
    rnn_failing_blocks = max(n, 0)
    return left


cdef inline void *block(Py_ssize_t count, size_t itemsize) noexcept nogil:
    """:func:`workspace` without the GIL: NULL where it cannot be allocated (the
    caller returns -1, and the function that holds the GIL raises: :func:`allocated`)."""
    if rnn_block_fails():
        return NULL
    return cache_alloc(<size_t>(count if count > 1 else 1) * itemsize)


cdef inline void release(void *block) noexcept nogil:
    """Give back a block of :func:`workspace` or :func:`block` (NULL allowed)."""
    cache_release(block)


cdef inline void release_all(void *a, void *b, void *c, void *d=NULL,
                             void *e=NULL) noexcept nogil:
    """:func:`release` of each."""
    release(a)
    release(b)
    release(c)
    release(d)
    release(e)


cdef int allocated(int status) except -1:
    """``status`` of a kernel that runs without the GIL; MemoryError for its -1 (a
    buffer it could not allocate)."""
    if status < 0:
        raise MemoryError("cannot allocate a kernel's buffers")
    return status

cdef extern from *:
    """
    #ifndef RNNCORE_CHECKED
    #define RNNCORE_CHECKED 0
    #endif
    """
    int RNNCORE_CHECKED

CHECKED = bool(RNNCORE_CHECKED)   # built with RNNCORE_CHECKED=1: bounds checks on
ISAS = ("baseline", "avx2", "avx512")


# -- the policy ------------------------------------------------------------------------

def _store_policy(int isa_index, gemm=None):
    """Make ``isa_index`` the policy, with rnncore's packed kernels (_gemm.h) for the
    whole-sequence products if ``gemm`` is "rnncore", the BLAS if "blas", and if None
    wherever the instruction set has them (AVX2, AVX-512).

    The packed kernels compute each row of a product alone, in an order that does not
    depend on the rows beside it, so splitting a call over threads changes no bit of the
    result; OpenBLAS does not promise that (tests/test_row_splits.py). They are also as
    fast as OpenBLAS's own kernels, or faster, on the grid's sizes but for the weight
    gradients of the largest (docs/perf-notes.md).
    """
    own = rnn_vm_tables_have_gemm(isa_index) if gemm is None else gemm == "rnncore"
    rnn_policy_store(isa_index, own)


rnn_policy_init()
_store_policy(rnn_vm_resolve(-1))


def blas_core():
    """The CPU kernel set OpenBLAS chose (OpenBLAS's name, e.g. "Haswell", "SkylakeX")."""
    return scipy_openblas_get_corename().decode()


def whole_sequence_gemm():
    """Who computes the whole-sequence products: "rnncore" (_gemm.h) or "blas"."""
    return "rnncore" if rnn_policy_load().own_gemm else "blas"


def set_whole_sequence_gemm(name=None):
    """Force "rnncore" or "blas" for the whole-sequence products (None: choose again).

    For tests and benchmarks that compare the two; "rnncore" needs an isa with packed
    kernels (avx2 or avx512). Safe while kernels run: a running call keeps the policy
    it started with.
    """
    cdef rnn_policy now = rnn_policy_load()
    if not (name is None or name == "blas" or (name == "rnncore" and now.vm.gemm_f != NULL)):
        raise ValueError(f"name must be 'blas', 'rnncore' (with the avx2 or avx512 isa) "
                         f"or None; got {name!r}")
    _store_policy(now.isa, name)


def _short_rows_default():
    """The built-in short-call limit, or RNNCORE_SHORT_CALL_ROWS (0: every call packs;
    how the test suite runs the packed kernels on its small inputs, RNNCORE_CHECKED)."""
    text = os.environ.get("RNNCORE_SHORT_CALL_ROWS", "").strip()
    if not text:
        return rnn_short_rows_load()
    if not text.isdigit():
        raise ValueError(f"RNNCORE_SHORT_CALL_ROWS must be an integer >= 0; got {text!r}")
    return int(text)


_SHORT_ROWS_DEFAULT = _short_rows_default()
rnn_short_rows_store(_SHORT_ROWS_DEFAULT)


def short_call_rows():
    """Calls with fewer rows of steps (T·B) than this run on the BLAS unpacked."""
    return rnn_short_rows_load()


def set_short_call_rows(rows=None):
    """Set the T·B below which a call packs nothing (None: the default). For tests and
    benchmarks that compare the short-call path with the packed one (0: never short).
    Safe while kernels run: a running call keeps the value it started with."""
    cdef long n = _SHORT_ROWS_DEFAULT if rows is None else rows
    if n < 0:
        raise ValueError(f"rows must be >= 0 or None; got {rows!r}")
    rnn_short_rows_store(n)


def isa():
    """The instruction set of the element-wise passes in use: "baseline", "avx2" or "avx512"."""
    return rnn_vm_name(rnn_policy_load().isa).decode()


def supported_isas():
    """The instruction sets this CPU can run, e.g. ``("baseline", "avx2", "avx512")``."""
    cdef int mask = rnn_vm_supported()
    return tuple(name for i, name in enumerate(ISAS) if mask >> i & 1)


def set_isa(name=None):
    """Use the element-wise passes compiled for ``name`` (None: the best supported).

    Also chooses the whole-sequence products again (see :func:`set_whole_sequence_gemm`).
    Meant for tests and benchmarks that compare the code paths. Safe while kernels run:
    a running call keeps the policy it started with.
    """
    cdef int index = -1 if name is None else (ISAS.index(name) if name in ISAS else -2)
    if index == -2 or rnn_vm_resolve(index) < 0:
        raise ValueError(f"isa must be one of {supported_isas()} or None; got {name!r}")
    _store_policy(rnn_vm_resolve(index))


def blas_threads():
    """The size of the thread pool of the OpenBLAS the kernels call."""
    return scipy_openblas_get_num_threads()


def set_blas_threads(int n):
    """Resize the thread pool of the OpenBLAS the kernels call (process-wide)."""
    scipy_openblas_set_num_threads(n)

# -- preconditions (_checks.pxd) -------------------------------------------------------

def check_sizes(Py_ssize_t T, Py_ssize_t B, Py_ssize_t K, Py_ssize_t H):
    """Raise ValueError if a size reaches past the BLAS's 32-bit integer arguments.

    The BLAS receives T·B (the rows of the whole-sequence products), K and H (their
    widths and depths, and the leading dimensions); every index the kernels compute
    themselves is a Py_ssize_t. Called by ``functional`` before it copies anything, and
    by every kernel.
    """
    check_sizes_c(Sizes(T, B, K, H))


def _bounds_probe(const floating[::1] a, Py_ssize_t i):
    """``a[i]``, indexed as the kernels index, under the directives of this build.

    For the tests of the build only: in the checked build an index outside [-n, n)
    raises IndexError and a negative one wraps around; the release build trusts it.
    """
    return a[i]


# -- the kernels -------------------------------------------------------------------------

def _row_probe(const floating[:, ::1] a, Py_ssize_t row):
    """``a[row, 0]`` read through a pointer to its row, as the kernels' loops reach
    rows (``row_of``), under this build's checks.

    For the tests of the build only: in the checked build a row outside [0, n) raises
    IndexError; the release build trusts it.
    """
    cdef Py_ssize_t rows = a.shape[0]
    if rows == 0 or a.shape[1] == 0:
        raise ValueError("a must have at least one element")
    if not (RNNCORE_CHECKED or 0 <= row < rows):
        return float("nan")              # (the release build would read outside a)
    return row_of(&a[0, 0], row, rows, a.shape[1])[0]


cdef int check_rows(str name, Py_ssize_t row0, Py_ssize_t row1, Py_ssize_t n) except -1:
    if not 0 <= row0 <= row1 <= n:
        raise ValueError(f"{name} must satisfy 0 <= {name}[0] <= {name}[1] <= {n}; "
                         f"got ({row0}, {row1})")
    return 0


cdef class Barrier:
    """Where the parts of one split call, each on a thread of its own, wait for each
    other between two phases split differently (the input projection by steps, then
    the recurrence by rows; the recurrence of BPTT by rows, then the weight gradients
    by columns): the threads run both phases in one dispatch, without handing the work
    back and out again in between (each hand-over wakes a sleeping thread, 20-50 µs).
    Waiting spins without the GIL. One use: a new barrier for each call.

    Parameters
    ----------
    parts : int
        How many parts arrive (each exactly once).
    """
    cdef rnn_barrier state
    cdef readonly int parts

    def __cinit__(self, int parts):
        if parts < 1:
            raise ValueError(f"parts must be >= 1; got {parts}")
        self.parts = parts
        self.state.arrived = 0
        self.state.aborted = 0

    def wait(self):
        """Arrive, and wait (without the GIL) until every part has arrived: True, or
        False if a part gave up (:meth:`abort`)."""
        cdef int ok
        with nogil:
            ok = rnn_barrier_wait(&self.state, self.parts)
        return bool(ok)

    def abort(self):
        """Release the parts waiting (their :meth:`wait` returns False): for a part
        that raised before it arrived, whose error is then the call's."""
        rnn_barrier_abort(&self.state)

    @property
    def arrived(self):
        """How many parts have arrived."""
        return self.state.arrived


# -- the pieces of a split call, checked with the GIL and run without it ----------------
#
# A kernel function called with ``defer=True`` checks its arguments as it always does
# and returns a Part instead of computing: the call, ready to run on any thread
# without the GIL. The threads of a split call run their parts one after another,
# with the barrier between the sections in C (rnncore._openmp.run_sections): no thread
# takes the GIL between the first part and the last, where each return to Python cost
# a hand-over of the GIL, 30-100 µs in a VM (docs/perf-notes.md §99).

ctypedef struct projection_args:      # projection_c
    bint single
    const void *x
    const void *w_ih
    void *out
    Py_ssize_t M, N, K, ldo, B, rows

ctypedef struct forward_args:         # forward_steps
    bint single, reverse, relu, projected
    const void *x
    const void *w_ih
    const void *w_hh
    const void *b
    const void *h0
    const int64_t *lengths
    void *hs
    void *y
    Py_ssize_t T, B, K, H, row0, row1, ldy

ctypedef struct backward_args:        # backward_steps_c
    bint single, reverse, relu, need_dh0
    const void *w_hh
    const void *hs
    const void *dy
    const void *dh_n
    const int64_t *lengths
    void *delta
    void *dh0
    Py_ssize_t dy_t, dy_b, T, B, H, row0, row1

ctypedef struct weights_args:         # weight_products_c
    bint single, two_biases, proj
    const void *x
    const void *h
    const void *delta
    const void *eps
    const void *dh
    const void *m
    void *dw_ih
    void *dw_hh
    void *db
    void *db2
    void *dw_r
    Py_ssize_t T, B, K, N, W, Hm, lo, hi, den

ctypedef struct input_grad_args:      # input_grad_c
    bint single, accumulate
    const void *delta
    const void *w_ih
    void *dx
    Py_ssize_t M, B, K, H, rows

cdef union part_args:
    projection_args projection
    forward_args forward
    backward_args backward
    weights_args weights
    input_grad_args input_grad


# Each kind's call on its arguments for one dtype: ``kind`` (NULL) picks the
# specialisation, float or double, that the part's ``single`` names.

cdef inline int projection_of(projection_args *a, const floating *kind) noexcept nogil:
    return projection_c(<const floating *>a.x, <const floating *>a.w_ih,
                        <floating *>a.out, a.M, a.N, a.K, a.ldo, a.B, a.rows)


cdef inline int forward_of(forward_args *a, const floating *kind) noexcept nogil:
    return forward_steps(<const floating *>a.x, <const floating *>a.w_ih,
                         <const floating *>a.w_hh, <const floating *>a.b,
                         <const floating *>a.h0, a.lengths, <floating *>a.hs, a.T, a.B,
                         a.K, a.H, a.row0, a.row1, a.reverse, a.relu, a.projected,
                         <floating *>a.y, a.ldy)


cdef inline int backward_of(backward_args *a, const floating *kind) noexcept nogil:
    return backward_steps_c(<const floating *>a.w_hh, <const floating *>a.hs,
                            <const floating *>a.dy, a.dy_t, a.dy_b,
                            <const floating *>a.dh_n, a.lengths, <floating *>a.delta,
                            <floating *>a.dh0, a.T, a.B, a.H, a.row0, a.row1, a.reverse,
                            a.relu, a.need_dh0)


cdef inline int weights_of(weights_args *a, const floating *kind) noexcept nogil:
    return weight_products_c(<const floating *>a.x, <const floating *>a.h,
                             <const floating *>a.delta, <const floating *>a.eps,
                             <floating *>a.dw_ih, <floating *>a.dw_hh, <floating *>a.db,
                             <floating *>a.db2, a.two_biases, a.proj,
                             <const floating *>a.dh, <const floating *>a.m,
                             <floating *>a.dw_r, a.T, a.B, a.K, a.N, a.W, a.Hm, a.lo,
                             a.hi, a.den)


cdef inline int input_grad_of(input_grad_args *a, const floating *kind) noexcept nogil:
    return input_grad_c(<const floating *>a.delta, <const floating *>a.w_ih,
                        <floating *>a.dx, a.M, a.B, a.K, a.H, a.accumulate, a.rows)


cdef int part_projection(void *p) noexcept nogil:
    cdef projection_args *a = <projection_args *>p
    return (projection_of(a, <float *>NULL) if a.single
            else projection_of(a, <double *>NULL))


cdef int part_forward(void *p) noexcept nogil:
    cdef forward_args *a = <forward_args *>p
    return forward_of(a, <float *>NULL) if a.single else forward_of(a, <double *>NULL)


cdef int part_backward(void *p) noexcept nogil:
    cdef backward_args *a = <backward_args *>p
    return backward_of(a, <float *>NULL) if a.single else backward_of(a, <double *>NULL)


cdef int part_weights(void *p) noexcept nogil:
    cdef weights_args *a = <weights_args *>p
    return weights_of(a, <float *>NULL) if a.single else weights_of(a, <double *>NULL)


cdef int part_input_grad(void *p) noexcept nogil:
    cdef input_grad_args *a = <input_grad_args *>p
    return (input_grad_of(a, <float *>NULL) if a.single
            else input_grad_of(a, <double *>NULL))


cdef class Part:
    """One kernel call, its arguments checked, ready to run without the GIL: made by a
    kernel function called with ``defer=True`` (:func:`input_projection`,
    :func:`layer_forward`, :func:`backward_steps`, :func:`backward_weights`,
    :func:`input_grad`). Calling it runs the call here (releasing the GIL);
    rnncore._openmp.run_sections runs it as C, on a thread of a region, by
    :attr:`address`. It holds the arrays the call reads and writes.
    """
    cdef rnn_task task
    cdef part_args args
    cdef object arrays        # what the call reads and writes, kept alive
    cdef Part following       # the part :meth:`then` chained after this one

    def __call__(self):
        """Run the call (and those chained after it) here, without the GIL; MemoryError
        where a call could not allocate its buffers."""
        cdef int status
        with nogil:
            status = rnn_run_tasks(&self.task)
        allocated(status)

    def then(self, Part other not None):
        """Chain ``other`` to run after this part (and after any chained already), on
        the same thread; returns this part."""
        cdef Part last = self
        while last.following is not None:
            last = last.following
        last.following = other
        last.task.next = &other.task
        return self

    @property
    def address(self):
        """The address of the part's C task (an ``rnn_task`` of _task.h), valid while
        the part lives."""
        return <size_t>&self.task


cdef Part new_part(int (*run)(void *) noexcept nogil, arrays):
    """A Part that runs ``run`` on its args (which the caller fills), holding
    ``arrays``."""
    cdef Part part = Part.__new__(Part)
    part.task.run = run
    part.task.arg = &part.args
    part.task.next = NULL
    part.arrays = arrays
    return part


cdef object done(Part part, bint defer):
    """``part`` if ``defer``, else None once the part has run here."""
    if defer:
        return part
    part()
    return None


# layer_forward copies the states into an output array as it goes (``y``)
FORWARD_WRITES_OUTPUT = True


def layer_forward(const floating[:, :, ::1] x,      # IN  (T, B, K), 0 at padded steps
                  const floating[:, ::1] w_ih,      # IN  (H, K)
                  const floating[:, ::1] w_hh,      # IN  (H, H)
                  const floating[::1] b,            # IN  (H,)  b_ih + b_hh
                  const floating[:, ::1] h0,        # IN  (B, H)
                  const int64_t[::1] lengths,       # IN  (B,)  in [0, T]
                  bint reverse, bint relu,
                  out=None,                         # OUT (T+1, B, H), optional
                  rows=None,                        # (row0, row1), optional
                  bint projected=False,
                  y=None,                           # OUT (T, B, H), optional
                  bint defer=False):
    """Run one layer in one direction; see ``reference.layer_forward``.

    The rows of a batch are independent recurrences: with ``out`` and ``rows`` the
    call computes rows [row0, row1) of the batch into ``out`` (the other rows are left
    as they are), so that threads can each run a range of rows into one array. A row
    gets the same bits whatever range it runs in. With ``projected``, ``out`` already
    holds the input projection (:func:`input_projection`) and the call runs only the
    recurrence.

    ``y``, an array of shape (T, B, H) whose rows of H elements are contiguous and
    evenly spaced (a layer's output, or a direction's columns of it), receives a copy
    of the states of steps 0..T-1 of the rows run (``hs[t+1]``, in reverse ``hs[t]``),
    each step's rows copied as soon as they are computed, while they are in cache.

    With ``defer`` (and ``out``), nothing is computed: the call, checked, is returned
    as a :class:`Part` to run later, on any thread.

    Returns
    -------
    hs : ndarray, shape (T+1, B, H)
        ``out`` if given. Forward: ``hs[0] = h0``, ``hs[t+1] = h_t``. Reverse:
        ``hs[t] = h_t`` and ``hs[lengths[b], b] = h0[b]``. Zero at padded steps.
        With ``defer``, the :class:`Part` instead.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], H = w_hh.shape[0]
    cdef Sizes sz = Sizes(T, B, K, H)
    check_layer(sz, w_ih.shape, w_hh.shape, lengths)
    expect_shape("b", 1, b.shape, H, 0, 0, sz, "x and w_hh")
    expect_shape("h0", 2, h0.shape, B, H, 0, sz, "x and w_hh")
    cdef Py_ssize_t row0 = 0 if rows is None else rows[0]
    cdef Py_ssize_t row1 = B if rows is None else rows[1]
    check_rows("rows", row0, row1, B)
    if projected and out is None:
        raise ValueError("projected=True needs out, holding the input projection")
    hs_arr = new_array(3, T + 1, B, H, floating is float) if out is None else out
    cdef floating[:, :, ::1] hs = hs_arr
    expect_shape("out", 3, hs.shape, T + 1, B, H, sz, "x and w_hh")
    cdef Py_ssize_t ldy = 0 if y is None else output_row_stride(y, hs_arr, T, B, H)
    if defer and out is None:
        raise ValueError("defer=True needs out, which the part writes")
    cdef Part part = new_part(part_forward, (x, w_ih, w_hh, b, h0, lengths, out, y)
                              if defer else None)
    cdef forward_args *a = &part.args.forward
    a.single, a.reverse, a.relu, a.projected = floating is float, reverse, relu, projected
    a.x = &x[0, 0, 0] if T * B * K else NULL
    a.w_ih = &w_ih[0, 0] if K else NULL
    a.w_hh, a.b = &w_hh[0, 0], &b[0]
    a.h0 = &h0[0, 0] if B else NULL
    a.lengths = &lengths[0] if B else NULL
    a.hs = &hs[0, 0, 0] if B else NULL
    a.y = cnp.PyArray_DATA(<cnp.ndarray>y) if ldy else NULL
    a.T, a.B, a.K, a.H, a.row0, a.row1, a.ldy = T, B, K, H, row0, row1, ldy
    return done(part, defer) or hs_arr


cdef Py_ssize_t output_row_stride(y, hs, Py_ssize_t T, Py_ssize_t B,
                                  Py_ssize_t H) except -1:
    """The elements from one row of ``y`` to the next, an array that
    :func:`layer_forward` may write the states into: of hs's dtype, shape (T, B, H),
    writeable and aligned, its rows of H elements contiguous and evenly spaced
    (0 where it has no element); ValueError or TypeError else."""
    if not isinstance(y, cnp.ndarray):
        raise TypeError(f"y must be an ndarray or None; got {type(y).__name__}")
    cdef cnp.ndarray a = <cnp.ndarray>y
    if cnp.PyArray_TYPE(a) != cnp.PyArray_TYPE(<cnp.ndarray>hs):
        raise TypeError(f"y must be of dtype {hs.dtype}; got {a.dtype}")
    if a.ndim != 3 or a.shape[0] != T or a.shape[1] != B or a.shape[2] != H:
        raise ValueError(f"y must have shape ({T}, {B}, {H}); got {y.shape}")
    if not cnp.PyArray_ISWRITEABLE(a) or not cnp.PyArray_ISALIGNED(a):
        raise ValueError("y must be writeable and aligned")
    if T * B * H == 0:
        return 0
    # the rows of y, in the order t·B + i, lie ``ld`` bytes apart
    cdef Py_ssize_t item = a.itemsize, ld = H * item
    if B > 1:
        ld = a.strides[1]
    elif T > 1:
        ld = a.strides[0]
    if (ld % item or ld < H * item or (H > 1 and a.strides[2] != item)
            or (B > 1 and T > 1 and a.strides[0] != B * ld)):
        raise ValueError(f"y's rows of {H} elements must be contiguous and evenly "
                         f"spaced (strides (B·s, s, {item}) bytes); got strides "
                         f"{y.strides}")
    return ld // item


cdef inline floating *row_of(const floating *base, Py_ssize_t row, Py_ssize_t rows,
                             Py_ssize_t width) except NULL nogil:
    """Row ``row`` of the ``rows`` rows of ``width`` elements that start at ``base``
    (not NULL): where the kernels' loops index their arrays by pointer, the checked
    build checks the row as it checks a memoryview's index (IndexError outside
    [0, rows)); the release build trusts it."""
    if RNNCORE_CHECKED and not 0 <= row < rows:
        with gil:
            raise IndexError(f"row {row} of an array of {rows} rows")
    return <floating *>base + row * width


cdef inline floating *rows_of(const floating *base, Py_ssize_t row, Py_ssize_t count,
                              Py_ssize_t rows, Py_ssize_t width) except NULL nogil:
    """Rows [row, row + count) of ``rows`` rows of ``width`` elements, back to back,
    for a pass over all of them at once: :func:`row_of` of the first, the checked build
    checking the last too."""
    row_of(base, row + count - 1, rows, width)
    return row_of(base, row, rows, width)


# Rows this short or shorter (bytes) take the forward's activation pass over all rows
# of a step at once (§59 of docs/perf-notes.md).
DEF SHORT_ROW_BYTES = 256
# A step's rows this long or longer (bytes) are copied into the forward's output ``y``
# at that step; shorter ones after the last step (§68 of docs/perf-notes.md).
DEF STEP_COPY_BYTES = 4096


cdef inline int64_t shortest_length(const int64_t *lengths, Py_ssize_t row0,
                                    Py_ssize_t row1) noexcept nogil:
    """The least of lengths[row0:row1] (0 for no rows): steps below it run every row."""
    cdef int64_t least = lengths[row0] if row1 > row0 else 0
    cdef Py_ssize_t i
    for i in range(row0 + 1, row1):
        if lengths[i] < least:
            least = lengths[i]
    return least


cdef int copy_states(const floating *hs, floating *y, Py_ssize_t t0, Py_ssize_t t1,
                     Py_ssize_t T, Py_ssize_t B, Py_ssize_t row0, Py_ssize_t R,
                     Py_ssize_t W, Py_ssize_t ldy, int out_slot) except -1 nogil:
    """The states of steps [t0, t1) of rows [row0, row0 + R) — hs (T+1, B, W), step
    t's in slot t + ``out_slot`` — into a forward's output ``y``, row t·B + i of which
    starts at y + (t·B + i)·ldy: one copy where the rows lie back to back in both."""
    cdef Py_ssize_t t, i, steps = (T + 1) * B
    if R == B and ldy == W:
        memcpy(rows_of(y, t0 * B, (t1 - t0) * B, T * B, W),
               rows_of(hs, (t0 + out_slot) * B, (t1 - t0) * B, steps, W),
               (t1 - t0) * B * W * sizeof(floating))
        return 0
    for t in range(t0, t1):
        for i in range(row0, row0 + R):
            memcpy(row_of(y, t * B + i, T * B, ldy), row_of(hs, (t + out_slot) * B + i,
                                                           steps, W),
                   W * sizeof(floating))
    return 0


cdef inline bint copies_each_step(const void *y, Py_ssize_t R, Py_ssize_t W,
                                  size_t itemsize) noexcept nogil:
    """Whether a forward copies its states into ``y`` (not NULL) at each step, while
    they are in cache: where a step's rows fill a page at least. Shorter ones are
    copied after the last step (a copy per step would cost more calls than it saves
    reads: the whole of hs then stays in cache)."""
    return y != NULL and R * W * itemsize >= STEP_COPY_BYTES


cdef int forward_steps(const floating *x, const floating *w_ih, const floating *w_hh,
                       const floating *b, const floating *h0, const int64_t *lengths,
                       floating *hs, Py_ssize_t T, Py_ssize_t B, Py_ssize_t K,
                       Py_ssize_t H, Py_ssize_t row0, Py_ssize_t row1, bint reverse,
                       bint relu, bint projected, floating *y,
                       Py_ssize_t ldy) noexcept nogil:
    """:func:`layer_forward` on C-ordered arrays given by their first elements (x
    (T, B, K), NULL if empty; w_ih (H, K), NULL if K = 0; w_hh (H, H); b (H,); h0
    (B, H); lengths (B,); hs (T+1, B, H): NULL where B = 0), checked by the caller;
    y (T·B rows of H elements, ``ldy`` apart) NULL, or receiving each step's states.
    0, or -1 (nothing computed) where its buffers cannot be allocated."""
    cdef Py_ssize_t R = row1 - row0                # the rows this call runs
    cdef Py_ssize_t steps = (T + 1) * B            # the rows of hs
    # every choice is made for the whole batch, so that each row's bits do not depend
    # on the rows it runs with
    cdef Plan plan = make_plan(B, H, floating is float, T * B, HOLDS_M_T)
    # W_hhᵀ for the forms that read m = W_hhᵀ itself, W_hhᵀ in panels if PACKED, the
    # workspace of the projection, the (R × H) per-step product: C buffers, freed below
    cdef bint need_t = reads_m(&plan)
    cdef floating *w_hh_t = NULL
    cdef floating *packed = NULL
    cdef floating *work = NULL
    cdef floating *scratch = NULL
    cdef Py_ssize_t s, t, i, row_bytes = H * sizeof(floating)
    cdef int prev_slot = 1 if reverse else 0       # hs index of h_{t-1} is t + prev_slot
    cdef int out_slot = 0 if reverse else 1        # hs index of h_t is t + out_slot
    cdef Py_ssize_t extra = T if reverse else 0    # the row the projection leaves free
    cdef floating *h
    cdef bint onto                                 # this step's product onto hs
    # the steps every row runs take one pass over all R rows where rows are short
    # (b then repeated R times in b_rows; longer rows keep reading the one b)
    cdef int64_t shortest = shortest_length(lengths, row0, row1)
    cdef floating *b_rows = NULL
    cdef bint per_step = copies_each_step(y, R, H, sizeof(floating))
    cdef unsigned int csr
    w_hh_t = <floating *>block(H * H if need_t else 1, sizeof(floating))
    packed = <floating *>block(rnn_packed_size(H, <int>H, plan.nr)
                               if plan.form == PACKED else 1, sizeof(floating))
    work = <floating *>block(workspace_size(&plan, H, K, 1, floating is float),
                             sizeof(floating))
    scratch = <floating *>block(R * H, sizeof(floating))
    if R > 1 and shortest > 0 and H * sizeof(floating) <= SHORT_ROW_BYTES:
        b_rows = <floating *>block(R * H, sizeof(floating))
    if w_hh_t == NULL or packed == NULL or work == NULL or scratch == NULL:
        release_all(w_hh_t, packed, work, scratch, b_rows)
        return -1
    csr = rnn_flush_denormals()       # given back below
    if b_rows != NULL:
        for i in range(R):
            memcpy(b_rows + i * H, b, row_bytes)
    if R:
        # (T·R × H) = (T·R × K)(H × K)ᵀ: the input projection of every
        # step; one product over all rows of all steps when the call runs
        # the whole batch
        if projected:
            pass                     # hs holds x_t W_ihᵀ already
        elif R == B and T:
            seq_product(&plan, T * B, <int>H, K, x, K, 1, w_ih, 1, K,
                        row_of(hs, out_slot * B, steps, H), H, False, work)
        else:
            for t in range(T):
                seq_product(&plan, R, <int>H, K,
                            x + (t * B + row0) * K if K else NULL, K, 1,
                            w_ih, 1, K,
                            row_of(hs, (t + out_slot) * B + row0, steps, H),
                            H, False, work)
        memset(row_of(hs, extra * B + row0, steps, H), 0, R * row_bytes)
        for i in range(row0, row1):
            memcpy(row_of(hs, (lengths[i] if reverse else 0) * B + i, steps, H),
                   row_of(h0, i, B, H), row_bytes)
        if plan.form == PACKED:      # element (k, c) of W_hhᵀ is w_hh[c, k]
            pack_step_matrix(&plan, <int>H, w_hh, 1, H, packed)
        if need_t:
            transpose(H, w_hh, w_hh_t)
        for s in range(T):
            t = T - 1 - s if reverse else s
            # the packed product adds h_{t-1} W_hhᵀ onto the projection where
            # it lies, its tile of it fetched while the tile is computed (the
            # pass reading it from a separate product waited on memory),
            # unless a row's h0 sits in step t's slot (reverse,
            # lengths[i] == t)
            onto = plan.form == PACKED
            if onto and reverse:
                for i in range(row0, row1):
                    if lengths[i] == t:
                        onto = False
            if onto:
                # (R × H) += (R × H)(H × H): x_t W_ihᵀ + h_{t-1} W_hhᵀ
                step_product_onto(
                    &plan, <int>R, <int>H,
                    row_of(hs, (t + prev_slot) * B + row0, steps, H), packed,
                    row_of(hs, (t + out_slot) * B + row0, steps, H))
            else:
                # (R × H) = (R × H)(H × H): the recurrent product
                # h_{t-1} W_hhᵀ
                step_product(&plan, <int>R, <int>H,
                             row_of(hs, (t + prev_slot) * B + row0, steps, H),
                             w_hh_t, w_hh, packed, scratch)
            if t < shortest and b_rows != NULL:
                # every row runs step t: one pass over the R·H values,
                # b repeated in b_rows (§59)
                step_pass(&plan, relu, <int>(R * H),
                          rows_of(hs, (t + out_slot) * B + row0, R, steps, H),
                          NULL if onto else scratch, b_rows)
            else:
                for i in range(row0, row1):
                    h = row_of(hs, (t + out_slot) * B + i, steps, H)
                    if t < lengths[i]:
                        step_pass(&plan, relu, <int>H, h,
                                  NULL if onto else scratch + (i - row0) * H,
                                  b)
                    elif not (reverse and t == lengths[i]):  # h0's slot
                        memset(h, 0, row_bytes)
            if per_step:
                copy_states(hs, y, t, t + 1, T, B, row0, R, H, ldy, out_slot)
        if y != NULL and not per_step and R:
            copy_states(hs, y, 0, T, T, B, row0, R, H, ldy, out_slot)
    rnn_restore_mxcsr(csr)
    release_all(w_hh_t, packed, work, scratch, b_rows)
    return 0


def layer_forward_owned(x, w_ih, w_hh, b_ih, b_hh, h0, lengths, bint relu,
                        bint snapshot, h_n=None, bint output=False):
    """:func:`layer_forward` of one forward direction with what ``functional``'s short
    path makes around it made here, without a Python call for each array (the fixed
    cost of a tiny call): the weights as a record keeps them, b = b_ih + b_hh, the final
    state into ``h_n`` and, if ``output``, a private copy of the states hs[1:].

    Parameters
    ----------
    x, h0, lengths, relu
        As :func:`layer_forward` (forward direction).
    w_ih : ndarray, shape (H, K);  w_hh : ndarray, shape (H, H)
        Any layout: C-ordered private copies if ``snapshot``, else C-ordered views (or
        copies where they are not C-contiguous), as ``np.ascontiguousarray``.
    b_ih : ndarray, shape (H,);  b_hh : ndarray, shape (H,), or None
        b = b_ih + b_hh; ``b_hh`` None: b = b_ih (the zero bias of a layer without
        bias).
    h_n : ndarray, shape (B, H), C-contiguous, optional
        Receives each row's final state, hs[lengths[i], i] (hs[T] where nothing is
        padded).
    output : bool
        Also return hs[1:] copied into an array of its own.

    Returns
    -------
    hs : ndarray, shape (T+1, B, H)
    weights : tuple
        (w_ih, w_hh, b) as the call used them.
    y : ndarray, shape (T, B, H), or None
    """
    if snapshot:
        w_ih, w_hh = c_copy(w_ih), c_copy(w_hh)
    else:
        w_ih = cnp.PyArray_GETCONTIGUOUS(w_ih)
        w_hh = cnp.PyArray_GETCONTIGUOUS(w_hh)
    b = b_ih if b_hh is None else vector_sum(b_ih, b_hh)
    # the output, written by the kernel as it goes (layer_forward's y)
    cdef Sizes sz
    cdef int typenum = layer_sizes(x, w_hh, &sz) if output else 0
    y = new_array(3, sz.T, sz.B, sz.H, typenum == cnp.NPY_FLOAT32) if typenum else None
    cdef cnp.ndarray hs = forward_arrays(x, w_ih, w_hh, b, h0, lengths, relu, y)
    if hs is None:                       # not all C arrays of one dtype: checked there
        hs = layer_forward(x, w_ih, w_hh, b, h0, lengths, False, relu, y=y)
    if output and y is None:             # sizes layer_sizes could not read off x, w_hh
        y = hs[1:].copy()
    cdef Py_ssize_t B = hs.shape[1], H = hs.shape[2]
    cdef cnp.ndarray dst
    if h_n is not None:
        dst = h_n
        if (dst.ndim != 2 or dst.shape[0] != B or dst.shape[1] != H
                or cnp.PyArray_TYPE(dst) != cnp.PyArray_TYPE(hs)
                or not cnp.PyArray_IS_C_CONTIGUOUS(dst)):
            raise ValueError(f"h_n must be a C-contiguous ({B}, {H}) array of {hs.dtype}; "
                             f"got {dst.dtype} {h_n.shape}")
        if not is_c_array(lengths, cnp.NPY_INT64, 1, B, 0, 0):
            lengths = np.ascontiguousarray(lengths, np.int64)   # (checked by the kernel)
        final_states(hs, <const int64_t *>data_of(lengths), dst)
    return hs, (w_ih, w_hh, b), y


cdef void final_states(cnp.ndarray hs, const int64_t *lengths, cnp.ndarray h_n) noexcept:
    """Row i of h_n (B, W) = hs[lengths[i], i] of hs (T+1, B, W), both C-contiguous of
    one dtype, lengths in [0, T]: one copy of hs[T] where every row is T long."""
    cdef Py_ssize_t T = hs.shape[0] - 1, B = hs.shape[1], i
    cdef size_t row_bytes = hs.shape[2] * hs.itemsize
    cdef char *src = <char *>cnp.PyArray_DATA(hs)
    cdef char *dst = <char *>cnp.PyArray_DATA(h_n)
    for i in range(B):
        if lengths[i] != T:
            break
    else:
        memcpy(dst, src + T * B * row_bytes, B * row_bytes)
        return
    for i in range(B):
        memcpy(dst + i * row_bytes, src + (lengths[i] * B + i) * row_bytes, row_bytes)


cdef inline bint is_c_array(object a, int typenum, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                            Py_ssize_t d2):
    """Whether ``a`` is an ndarray of dtype ``typenum`` in native byte order, aligned
    and C-contiguous, of shape (d0, d1, d2)[:ndim]: what a typed memoryview of it would
    accept, read off the array without one (a memoryview costs ~0.15 µs)."""
    if not isinstance(a, cnp.ndarray):
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if (cnp.PyArray_TYPE(arr) != typenum or cnp.PyArray_NDIM(arr) != ndim
            or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISALIGNED(arr)
            or not cnp.PyArray_ISNOTSWAPPED(arr)):
        return False
    return (cnp.PyArray_DIM(arr, 0) == d0 and (ndim < 2 or cnp.PyArray_DIM(arr, 1) == d1)
            and (ndim < 3 or cnp.PyArray_DIM(arr, 2) == d2))


cdef inline void *data_of(object a) noexcept:
    """The first element of an ndarray :func:`is_c_array` accepted; NULL if it has
    none."""
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return cnp.PyArray_DATA(arr) if cnp.PyArray_SIZE(arr) else NULL


cdef int layer_sizes(x, w_hh, Sizes *sz) noexcept:
    """The dtype (NPY_FLOAT32 or NPY_FLOAT64) of x (T, B, K) and w_hh (H, ...), H >= 1,
    with ``sz`` (T, B, K, H) read off them, if both are ndarrays of that dtype with
    those dimensions; 0 else."""
    if not isinstance(x, cnp.ndarray) or not isinstance(w_hh, cnp.ndarray):
        return 0
    cdef cnp.ndarray xa = <cnp.ndarray>x, wa = <cnp.ndarray>w_hh
    cdef int typenum = cnp.PyArray_TYPE(xa)
    if (cnp.PyArray_NDIM(xa) != 3 or cnp.PyArray_NDIM(wa) != 2 or cnp.PyArray_DIM(wa, 0) < 1
            or (typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64)):
        return 0
    sz.T, sz.B = cnp.PyArray_DIM(xa, 0), cnp.PyArray_DIM(xa, 1)
    sz.K, sz.H = cnp.PyArray_DIM(xa, 2), cnp.PyArray_DIM(wa, 0)
    return typenum


cdef object forward_arrays(x, w_ih, w_hh, b, h0, lengths, bint relu, y):
    """``layer_forward(x, w_ih, w_hh, b, h0, lengths, False, relu, y=y)`` for ndarrays
    that are all C-contiguous, of one float dtype (lengths int64), with shapes that
    agree (y, if not None, a new (T, B, H) array of :func:`new_array`), without a
    memoryview of each; None for any other arguments (:func:`layer_forward` then checks
    them and says what is wrong)."""
    cdef Sizes sz
    cdef int typenum = layer_sizes(x, w_hh, &sz)
    cdef Py_ssize_t T = sz.T, B = sz.B, K = sz.K, H = sz.H
    if not (typenum and is_c_array(x, typenum, 3, T, B, K)
            and is_c_array(w_ih, typenum, 2, H, K, 0)
            and is_c_array(w_hh, typenum, 2, H, H, 0) and is_c_array(b, typenum, 1, H, 0, 0)
            and is_c_array(h0, typenum, 2, B, H, 0)
            and is_c_array(lengths, cnp.NPY_INT64, 1, B, 0, 0)):
        return None
    check_lengths(sz, <const int64_t *>data_of(lengths))
    cdef bint single = typenum == cnp.NPY_FLOAT32
    hs = new_array(3, T + 1, B, H, single)
    cdef forward_args a              # the whole batch, as layer_forward's part runs it
    a.single, a.reverse, a.relu, a.projected = single, False, relu, False
    a.x, a.w_ih, a.w_hh, a.b, a.h0 = (data_of(x), data_of(w_ih), data_of(w_hh),
                                      data_of(b), data_of(h0))
    a.lengths = <const int64_t *>data_of(lengths)
    a.hs, a.y = data_of(hs), NULL if y is None else data_of(y)
    a.T, a.B, a.K, a.H, a.row0, a.row1, a.ldy = T, B, K, H, 0, B, H
    cdef int status
    with nogil:
        status = part_forward(&a)
    allocated(status)
    return hs


cdef object c_copy(a):
    """A C-ordered copy of the ndarray ``a``: for a C-contiguous one an empty array and
    one memcpy (``PyArray_NewCopy`` goes through NumPy's general assignment, ~0.3 µs
    more for a small weight)."""
    cdef cnp.ndarray src = a
    if not cnp.PyArray_IS_C_CONTIGUOUS(src):
        return cnp.PyArray_NewCopy(src, cnp.NPY_CORDER)
    cdef cnp.ndarray dst = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(src), cnp.PyArray_DIMS(src),
                                             cnp.PyArray_TYPE(src), 0)
    memcpy(cnp.PyArray_DATA(dst), cnp.PyArray_DATA(src), cnp.PyArray_NBYTES(src))
    return dst


cdef object vector_sum(a, b):
    """a + b of two C-contiguous vectors of one length and one float dtype, into a new
    array: a ufunc's fixed cost is more than the sum of a layer's two biases."""
    cdef cnp.ndarray u = a, v = b
    cdef int typenum = cnp.PyArray_TYPE(u)
    cdef Py_ssize_t n = cnp.PyArray_SIZE(u)
    if (cnp.PyArray_NDIM(u) != 1 or cnp.PyArray_NDIM(v) != 1 or cnp.PyArray_SIZE(v) != n
            or cnp.PyArray_TYPE(v) != typenum
            or not (cnp.PyArray_IS_C_CONTIGUOUS(u) and cnp.PyArray_IS_C_CONTIGUOUS(v))
            or typenum not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64)):
        return a + b
    cdef cnp.ndarray out = new_array(1, n, 0, 0, typenum == cnp.NPY_FLOAT32)
    if typenum == cnp.NPY_FLOAT32:
        add_vectors(n, <const float *>cnp.PyArray_DATA(u),
                    <const float *>cnp.PyArray_DATA(v), <float *>cnp.PyArray_DATA(out))
    else:
        add_vectors(n, <const double *>cnp.PyArray_DATA(u),
                    <const double *>cnp.PyArray_DATA(v), <double *>cnp.PyArray_DATA(out))
    return out


cdef void add_vectors(Py_ssize_t n, const floating *a, const floating *b,
                      floating *out) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        out[i] = a[i] + b[i]


def input_projection(const floating[:, :, ::1] x,   # IN  (T, B, K)
                     const floating[:, ::1] w_ih,   # IN  (N, K)
                     floating[:, :, ::1] out,       # OUT (T+1, B, N) or (T, B, S >= N)
                     bint reverse,
                     steps=None,                    # (t0, t1), optional
                     bint defer=False):
    """The input projection x_t W_ihᵀ of steps [t0, t1) (all when ``steps`` is None)
    into the slots where the layer's forward reads it, so that the forward then runs
    only the recurrence (``projected=True``).

    ``out`` is :func:`layer_forward`'s hs (T+1, B, H), step t going where it keeps h_t;
    or a gated cell's ``saved`` (T, B, S), step t into the first N = G·H columns of
    ``out[t]`` (:func:`lstm_layer_forward`, :func:`gru_layer_forward`).

    Each row of the product is computed alone on the packed kernels, so steps split
    over threads give the bits of one call; with the BLAS they may not. With
    ``defer``, nothing is computed: the call, checked, is returned as a :class:`Part`.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], N = w_ih.shape[0]
    cdef Sizes sz = Sizes(T, B, K, N)
    check_sizes_c(sz)
    expect_shape("w_ih", 2, w_ih.shape, N, K, 0, sz, "x and w_ih")
    cdef bint in_hs = out.shape[0] != T          # layer_forward's hs, else saved
    expect_shape("out", 3, out.shape, T + 1 if in_hs else T, B,
                 N if in_hs or out.shape[2] < N else out.shape[2], sz, "x and w_ih")
    cdef Py_ssize_t t0 = 0 if steps is None else steps[0]
    cdef Py_ssize_t t1 = T if steps is None else steps[1]
    check_rows("steps", t0, t1, T)
    cdef int out_slot = (0 if reverse else 1) if in_hs else 0
    cdef Part part = new_part(part_projection, (x, w_ih, out) if defer else None)
    cdef projection_args *a = &part.args.projection
    a.single = floating is float
    a.M, a.N, a.K, a.ldo, a.B, a.rows = (t1 - t0) * B, N, K, out.shape[2], B, T * B
    a.x = &x[t0, 0, 0] if a.M and K else NULL
    a.w_ih = &w_ih[0, 0] if K else NULL
    a.out = &out[t0 + out_slot, 0, 0] if a.M else NULL
    return done(part, defer)


cdef int projection_c(const floating *x, const floating *w_ih, floating *out,
                      Py_ssize_t M, Py_ssize_t N, Py_ssize_t K, Py_ssize_t ldo,
                      Py_ssize_t B, Py_ssize_t rows) noexcept nogil:
    """:func:`input_projection` on C arrays given by their first elements, checked by
    the caller: x (M, K) the rows of its steps, w_ih (N, K), out (M rows of N elements,
    ``ldo`` apart); every choice made for a call of ``rows`` = T·B rows of B. 0, or -1
    (nothing computed) where its workspace cannot be allocated."""
    if M == 0:
        return 0
    cdef Plan plan = make_plan(B, N, floating is float, rows)   # the whole call's T
    cdef floating *work = <floating *>block(
        workspace_size(&plan, N, K, 1, floating is float), sizeof(floating))
    if work == NULL:
        return -1
    cdef unsigned int csr = rnn_flush_denormals()       # given back below
    # (M × N) = (M × K)(N × K)ᵀ over the rows of steps t0..t1
    seq_product(&plan, M, <int>N, K, x, K, 1, w_ih, 1, K, out, ldo, False, work)
    rnn_restore_mxcsr(csr)
    release(work)
    return 0


def splits_are_exact(Py_ssize_t B, Py_ssize_t H, bint single, Py_ssize_t rows=-1):
    """Whether the current policy computes every row of every product alone (the
    packed per-step form and the packed whole-sequence products), so that splitting a
    call by batch rows, steps or rows of the weight gradients changes no bit; ``rows``
    is the call's T·B (-1: a long call; a short one runs on the BLAS)."""
    cdef Plan plan = make_plan(B, H, single, rows)
    return plan.form == PACKED and bool(plan.policy.own_gemm)


def backward_steps(const floating[:, ::1] w_hh,     # IN  (H, H)
                   const floating[:, :, ::1] hs,    # IN  (T+1, B, H) from layer_forward
                   const floating[:, :, :] dy,      # IN  (T, B, H) ∂L/∂h_t; rows contiguous
                   const floating[:, ::1] dh_n,     # IN  (B, H)
                   const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                   bint reverse, bint relu,
                   floating[:, :, ::1] delta,       # OUT (T, B, H) δ_t = ∂L/∂a_t
                   floating[:, ::1] dh0,            # OUT (B, H)
                   rows=None,                       # (row0, row1), optional
                   bint defer=False):
    """The recurrence of BPTT: δ_t of every step and dh0, rows [row0, row1) of the
    batch (all when ``rows`` is None); the other rows are left as they are. A row gets
    the same bits whatever range it runs in. See :func:`layer_backward`. With
    ``defer``, nothing is computed: the call, checked, is returned as a :class:`Part`.
    """
    cdef Py_ssize_t B = hs.shape[1]
    cdef Py_ssize_t row0 = 0 if rows is None else rows[0]
    cdef Py_ssize_t row1 = B if rows is None else rows[1]
    return done(backward_steps_part(w_hh, hs, dy, dh_n, lengths, reverse, relu, delta, dh0,
                                    row0, row1, (w_hh, hs, dy, dh_n, lengths, delta, dh0)
                                    if defer else None), defer)


cdef Part backward_steps_part(const floating[:, ::1] w_hh, const floating[:, :, ::1] hs,
                              const floating[:, :, :] dy, const floating[:, ::1] dh_n,
                              const int64_t[::1] lengths, bint reverse, bint relu,
                              floating[:, :, ::1] delta, floating[:, ::1] dh0,
                              Py_ssize_t row0, Py_ssize_t row1, arrays):
    """:func:`backward_steps` on arrays already taken as memoryviews: the Part, holding
    ``arrays``."""
    if hs.shape[0] < 1:
        raise ValueError(f"hs must have T+1 >= 1 rows; got shape ({hs.shape[0]}, {hs.shape[1]}, {hs.shape[2]})")
    cdef Py_ssize_t T = hs.shape[0] - 1, B = hs.shape[1], H = w_hh.shape[0]
    cdef Sizes sz = Sizes(T, B, 0, H)
    cdef Py_ssize_t no_w_ih[2]          # this phase reads no W_ih: a shape that agrees
    no_w_ih[0], no_w_ih[1] = H, 0
    check_layer(sz, no_w_ih, w_hh.shape, lengths)
    expect_shape("dy", 3, dy.shape, T, B, H, sz, "hs and w_hh")
    expect_shape("dh_n", 2, dh_n.shape, B, H, 0, sz, "hs and w_hh")
    expect_shape("delta", 3, delta.shape, T, B, H, sz, "hs and w_hh")
    expect_shape("dh0", 2, dh0.shape, B, H, 0, sz, "hs and w_hh")
    if H > 1 and dy.strides[2] != sizeof(floating):
        raise ValueError("dy must have contiguous rows (unit stride in its last axis)")
    check_rows("rows", row0, row1, B)
    cdef Py_ssize_t item = sizeof(floating)
    cdef Part part = new_part(part_backward, arrays)
    cdef backward_args *a = &part.args.backward
    a.single, a.reverse, a.relu, a.need_dh0 = floating is float, reverse, relu, True
    a.w_hh = &w_hh[0, 0]
    a.hs = &hs[0, 0, 0] if B else NULL
    a.dy = &dy[0, 0, 0] if T * B else NULL
    a.dh_n = &dh_n[0, 0] if B else NULL
    a.lengths = &lengths[0] if B else NULL
    a.delta = &delta[0, 0, 0] if T * B else NULL
    a.dh0 = &dh0[0, 0] if B else NULL
    a.dy_t, a.dy_b = dy.strides[0] // item, dy.strides[1] // item
    a.T, a.B, a.H, a.row0, a.row1 = T, B, H, row0, row1
    return part


cdef int backward_steps_c(const floating *w_hh, const floating *hs, const floating *dy,
                          Py_ssize_t dy_t, Py_ssize_t dy_b, const floating *dh_n,
                          const int64_t *lengths, floating *delta, floating *dh0,
                          Py_ssize_t T, Py_ssize_t B, Py_ssize_t H, Py_ssize_t row0,
                          Py_ssize_t row1, bint reverse, bint relu,
                          bint need_dh0) noexcept nogil:
    """The call of :func:`backward_steps_part` on C arrays given by their first
    elements (w_hh (H, H); hs (T+1, B, H); dh_n, dh0 (B, H); lengths (B,); delta
    (T, B, H); NULL where empty) and dy (T, B, H) with its rows at strides dy_t, dy_b (elements) and
    contiguous, checked by the caller. Without ``need_dh0`` the last step's product
    δ W_hh, which only dh0 reads, is skipped and dh0 left holding dh_n. 0, or -1
    (nothing computed) where its buffers cannot be allocated."""
    cdef Py_ssize_t R = row1 - row0
    cdef Plan plan = make_plan(B, H, floating is float, T * B, HOLDS_M)
    # W_hhᵀ for the form that reads mᵀ of m = W_hh; else a placeholder
    cdef bint need_t = plan.form == GEMM_NT or plan.form == GEMV_T
    cdef floating *w_hh_t = NULL
    cdef floating *packed = NULL                        # W_hh in panels, if PACKED
    cdef floating *carry = NULL                         # (R × H) δ_{t+1} W_hh
    cdef Py_ssize_t s, t, i, j, row_bytes = H * sizeof(floating)
    cdef Py_ssize_t steps = T * B                       # the rows of delta
    cdef int out_slot = 0 if reverse else 1
    cdef int64_t t_final, t_initial      # the steps that produced h_n and consumed h_0
    cdef const floating *dh_n_i
    cdef int64_t shortest = shortest_length(lengths, row0, row1)
    cdef unsigned int csr
    w_hh_t = <floating *>block(H * H if need_t else 1, sizeof(floating))
    packed = <floating *>block(rnn_packed_size(H, <int>H, plan.nr)
                               if plan.form == PACKED else 1, sizeof(floating))
    carry = <floating *>block(R * H, sizeof(floating))
    if w_hh_t == NULL or packed == NULL or carry == NULL:
        release_all(w_hh_t, packed, carry)
        return -1
    csr = rnn_flush_denormals()       # given back below
    memset(carry, 0, R * row_bytes)
    for i in range(row0, row1):      # rows of length 0 pass dh_n through
        memcpy(row_of(dh0, i, B, H), row_of(dh_n, i, B, H), row_bytes)
    if R and T:
        if plan.form == PACKED:
            pack_step_matrix(&plan, <int>H, w_hh, H, 1, packed)
        if need_t:
            transpose(H, w_hh, w_hh_t)
        for s in range(T):                           # backward in time
            t = s if reverse else T - 1 - s
            for i in range(row0, row1):
                t_final = 0 if reverse else lengths[i] - 1
                if t == t_final:
                    dh_n_i = row_of(dh_n, i, B, H)
                    for j in range(H):
                        carry[(i - row0) * H + j] += dh_n_i[j]
            if t < shortest and dy_b == H:
                # every row runs step t and the rows of each array lie
                # back to back: one pass over the R·H values (§59)
                grad_pass(&plan, relu, <int>(R * H),
                          rows_of(delta, t * B + row0, R, steps, H),
                          rows_of(row_of(dy, t, T, dy_t), row0, R, B, dy_b),
                          carry,
                          rows_of(hs, (t + out_slot) * B + row0, R, steps + B,
                                  H))
            else:
                for i in range(row0, row1):
                    if t < lengths[i]:
                        grad_pass(&plan, relu, <int>H,
                                  row_of(delta, t * B + i, steps, H),
                                  row_of(row_of(dy, t, T, dy_t), i, B, dy_b),
                                  carry + (i - row0) * H,
                                  row_of(hs, (t + out_slot) * B + i, steps + B,
                                         H))
                    else:
                        memset(row_of(delta, t * B + i, steps, H), 0,
                               row_bytes)
            if s == T - 1 and not need_dh0:
                break                # δ_t W_hh would reach dh0 only
            # (R × H) = (R × H)(H × H): δ_t W_hh, carried to step t-1
            step_product(&plan, <int>R, <int>H,
                         row_of(delta, t * B + row0, steps, H), w_hh, w_hh_t,
                         packed, carry)
            for i in range(row0, row1):
                t_initial = lengths[i] - 1 if reverse else 0
                if t == t_initial and t < lengths[i]:
                    memcpy(row_of(dh0, i, B, H), carry + (i - row0) * H,
                           row_bytes)
    rnn_restore_mxcsr(csr)
    release_all(w_hh_t, packed, carry)
    return 0


include "_weight_grads.pxi"


def layer_backward(const floating[:, :, ::1] x,     # IN  (T, B, K)
                   const floating[:, ::1] w_ih,     # IN  (H, K)
                   const floating[:, ::1] w_hh,     # IN  (H, H)
                   const floating[:, :, ::1] hs,    # IN  (T+1, B, H) from layer_forward
                   const floating[:, :, :] dy,      # IN  (T, B, H) ∂L/∂h_t; rows contiguous
                   const floating[:, ::1] dh_n,     # IN  (B, H)
                   const int64_t[::1] lengths,      # IN  (B,)  in [0, T]
                   bint reverse, bint relu,
                   dx=None,                         # OUT (T, B, K), optional
                   bint need_dh0=True):
    """BPTT through one layer in one direction; see ``reference.layer_backward``.

    :func:`backward_steps` then :func:`backward_weights`, over everything, and with
    ``dx`` :func:`input_grad` into it (written over): one call where a short sequence
    would pay the fixed cost of three. Without ``need_dh0`` the product that only dh0
    needs (the first step's δ W_hh: half of a call at T = 1) is skipped.

    Returns
    -------
    dh0 : ndarray, shape (B, H), or None without ``need_dh0``
        A sequence of length 0 passes ``dh_n`` through.
    dw_ih : ndarray, shape (H, K)
    dw_hh : ndarray, shape (H, H)
    db : ndarray, shape (H,)
    delta : ndarray, shape (T, B, H)
        δ_t = ∂L/∂a_t, for :func:`input_grad`.
    """
    cdef Py_ssize_t T = x.shape[0], B = x.shape[1], K = x.shape[2], H = w_hh.shape[0]
    cdef Sizes sz = Sizes(T, B, K, H)
    check_layer(sz, w_ih.shape, w_hh.shape, lengths)
    expect_shape("hs", 3, hs.shape, T + 1, B, H, sz, "x and w_hh")
    cdef floating[:, :, ::1] dx_v
    if dx is not None:
        dx_v = dx
        expect_shape("dx", 3, dx_v.shape, T, B, K, sz, "x and w_hh")
    cdef bint single = floating is float
    delta, dh0 = new_array(3, T, B, H, single), new_array(2, B, H, 0, single)
    dw_ih, dw_hh, db = (new_array(2, H, K, 0, single), new_array(2, H, H, 0, single),
                        new_array(1, H, 0, 0, single))
    expect_shape("dy", 3, dy.shape, T, B, H, sz, "hs and w_hh")
    expect_shape("dh_n", 2, dh_n.shape, B, H, 0, sz, "hs and w_hh")
    if H > 1 and dy.strides[2] != sizeof(floating):
        raise ValueError("dy must have contiguous rows (unit stride in its last axis)")
    cdef floating[:, :, ::1] delta_v = delta
    cdef floating[:, ::1] dh0_v = dh0, dw_ih_v = dw_ih, dw_hh_v = dw_hh
    cdef floating[::1] db_v = db
    cdef Py_ssize_t item = sizeof(floating)
    cdef const floating *px = &x[0, 0, 0] if T * B * K else NULL
    cdef const floating *pw_ih = &w_ih[0, 0] if K else NULL
    cdef const floating *phs = &hs[0, 0, 0] if B else NULL
    cdef const floating *pdy = &dy[0, 0, 0] if T * B else NULL
    cdef const floating *pdh_n = &dh_n[0, 0] if B else NULL
    cdef const int64_t *plengths = &lengths[0] if B else NULL
    cdef floating *pdelta = &delta_v[0, 0, 0] if T * B else NULL
    cdef floating *pdh0 = &dh0_v[0, 0] if B else NULL
    cdef floating *pdw_ih = &dw_ih_v[0, 0] if K else NULL
    cdef floating *pdx = &dx_v[0, 0, 0] if dx is not None and T * B * K else NULL
    cdef const floating *pw_hh = &w_hh[0, 0]
    cdef floating *pdw_hh = &dw_hh_v[0, 0]
    cdef floating *pdb = &db_v[0]
    cdef Py_ssize_t dy_t = dy.strides[0] // item, dy_b = dy.strides[1] // item
    cdef bint want_dx = dx is not None
    cdef int status
    with nogil:
        status = backward_layer_c(px, pw_ih, pw_hh, phs, pdy, dy_t, dy_b, pdh_n, plengths,
                                  pdelta, pdh0, pdw_ih, pdw_hh, pdb, pdx, want_dx, T, B,
                                  K, H, reverse, relu, need_dh0)
    allocated(status)
    return (dh0 if need_dh0 else None), dw_ih, dw_hh, db, delta


def layer_backward_arrays(x, w_ih, w_hh, hs, dy, dh_n, lengths, bint relu, dx=None,
                          bint need_dh0=True):
    """:func:`layer_backward` of one forward direction, δ kept to itself, for a short
    call: ndarrays that are all C-contiguous, of one float dtype (lengths int64), with
    shapes that agree, are read without a memoryview of each (~0.15 µs apiece, a dozen
    per layer); any other arguments go through :func:`layer_backward`, which checks
    them.

    Returns
    -------
    dh0 : ndarray, shape (B, H), or None without ``need_dh0``
    dw_ih : ndarray, shape (H, K)
    dw_hh : ndarray, shape (H, H)
    db : ndarray, shape (H,)
    """
    grads = backward_arrays(x, w_ih, w_hh, hs, dy, dh_n, lengths, relu, dx, need_dh0)
    if grads is None:
        grads = layer_backward(x, w_ih, w_hh, hs, dy, dh_n, lengths, False, relu, dx,
                               need_dh0)[:4]
    return grads


cdef object backward_arrays(x, w_ih, w_hh, hs, dy, dh_n, lengths, bint relu, dx,
                            bint need_dh0):
    """:func:`layer_backward_arrays` for arrays it reads directly; None for others."""
    cdef Sizes sz
    cdef int typenum = layer_sizes(x, w_hh, &sz)
    cdef Py_ssize_t T = sz.T, B = sz.B, K = sz.K, H = sz.H
    if not (typenum and is_c_array(x, typenum, 3, T, B, K)
            and is_c_array(w_ih, typenum, 2, H, K, 0)
            and is_c_array(w_hh, typenum, 2, H, H, 0)
            and is_c_array(hs, typenum, 3, T + 1, B, H)
            and is_c_array(dy, typenum, 3, T, B, H)
            and is_c_array(dh_n, typenum, 2, B, H, 0)
            and is_c_array(lengths, cnp.NPY_INT64, 1, B, 0, 0)
            and (dx is None or is_c_array(dx, typenum, 3, T, B, K))):
        return None
    check_lengths(sz, <const int64_t *>data_of(lengths))
    cdef bint single = typenum == cnp.NPY_FLOAT32
    dh0, dw_ih, dw_hh, db = (new_array(2, B, H, 0, single), new_array(2, H, K, 0, single),
                             new_array(2, H, H, 0, single), new_array(1, H, 0, 0, single))
    cdef const void *px = data_of(x)
    cdef const void *pw_ih = data_of(w_ih)
    cdef const void *pw_hh = data_of(w_hh)
    cdef const void *phs = data_of(hs)
    cdef const void *pdy = data_of(dy)
    cdef const void *pdh_n = data_of(dh_n)
    cdef const int64_t *plengths = <const int64_t *>data_of(lengths)
    cdef void *pdh0 = data_of(dh0)
    cdef void *pdw_ih = data_of(dw_ih)
    cdef void *pdw_hh = data_of(dw_hh)
    cdef void *pdb = data_of(db)
    cdef void *pdx = NULL if dx is None else data_of(dx)
    cdef void *delta = workspace(T * B * H, 4 if single else 8)   # δ (T, B, H)
    cdef bint want_dx = dx is not None
    cdef int status
    with nogil:
        if single:
            status = backward_layer_c(
                <const float *>px, <const float *>pw_ih, <const float *>pw_hh,
                <const float *>phs, <const float *>pdy, B * H, H, <const float *>pdh_n,
                plengths, <float *>delta, <float *>pdh0, <float *>pdw_ih, <float *>pdw_hh,
                <float *>pdb, <float *>pdx, want_dx, T, B, K, H, False, relu, need_dh0)
        else:
            status = backward_layer_c(
                <const double *>px, <const double *>pw_ih, <const double *>pw_hh,
                <const double *>phs, <const double *>pdy, B * H, H,
                <const double *>pdh_n, plengths, <double *>delta, <double *>pdh0,
                <double *>pdw_ih, <double *>pdw_hh, <double *>pdb, <double *>pdx,
                want_dx, T, B, K, H, False, relu, need_dh0)
        release(delta)
    allocated(status)
    return (dh0 if need_dh0 else None), dw_ih, dw_hh, db


cdef int backward_layer_c(const floating *x, const floating *w_ih, const floating *w_hh,
                          const floating *hs, const floating *dy, Py_ssize_t dy_t,
                          Py_ssize_t dy_b, const floating *dh_n, const int64_t *lengths,
                          floating *delta, floating *dh0, floating *dw_ih, floating *dw_hh,
                          floating *db, floating *dx, bint want_dx, Py_ssize_t T,
                          Py_ssize_t B, Py_ssize_t K, Py_ssize_t H, bint reverse, bint relu,
                          bint need_dh0) noexcept nogil:
    """What :func:`layer_backward` runs (every row), on C arrays given by their first
    elements (NULL where empty; dy's rows at strides dy_t, dy_b), checked by the
    caller: BPTT's recurrence, the weight gradients, and ∂x if ``want_dx``. 0, or -1
    where a buffer could not be allocated."""
    if backward_steps_c(w_hh, hs, dy, dy_t, dy_b, dh_n, lengths, delta, dh0, T, B, H, 0,
                        B, reverse, relu, need_dh0) < 0:
        return -1
    if weight_products_c(x, hs + B * H if reverse and T * B else hs,     # H_prev
                         delta, delta, dw_ih, dw_hh, db, db, False, False, NULL, NULL,
                         NULL, T, B, K, H, H, 0, 0, 1, 1) < 0:
        return -1
    if want_dx:
        return input_grad_c(delta, w_ih, dx, T * B, B, K, H, False, T * B)
    return 0


def input_grad(const floating[:, :, ::1] delta,    # IN  (T, B, H)
               const floating[:, ::1] w_ih,        # IN  (H, K)
               floating[:, :, ::1] dx,             # OUT (T, B, K)
               bint accumulate,
               Py_ssize_t rows=-1,                 # the whole call's T·B, if known
               bint defer=False):
    """∂L/∂x_t = δ_t W_ih for every step at once; see ``reference.input_grad``.

    ∂x may be computed in ranges of steps (threads, chunks): the product's path is
    chosen from ``rows``, the T·B of the whole call the range belongs to, so that each
    range runs what the whole call would (-1: a long call, the packed path). With
    ``defer``, nothing is computed: the call, checked, is returned as a :class:`Part`.
    """
    return done(input_grad_part(delta, w_ih, dx, accumulate, rows,
                                (delta, w_ih, dx) if defer else None), defer)


cdef Part input_grad_part(const floating[:, :, ::1] delta, const floating[:, ::1] w_ih,
                          floating[:, :, ::1] dx, bint accumulate, Py_ssize_t rows,
                          arrays):
    """:func:`input_grad` on arrays already taken as memoryviews: the Part, holding
    ``arrays``."""
    cdef Py_ssize_t T = delta.shape[0], B = delta.shape[1], H = delta.shape[2]
    cdef Py_ssize_t K = w_ih.shape[1]
    cdef Sizes sz = Sizes(T, B, K, H)
    expect_shape("w_ih", 2, w_ih.shape, H, K, 0, sz, "delta and w_ih")
    expect_shape("dx", 3, dx.shape, T, B, K, sz, "delta and w_ih")
    check_sizes_c(sz)
    cdef Part part = new_part(part_input_grad, arrays)
    cdef input_grad_args *a = &part.args.input_grad
    a.single, a.accumulate = floating is float, accumulate
    a.delta = &delta[0, 0, 0] if T * B * H else NULL
    a.w_ih = &w_ih[0, 0] if H * K else NULL
    a.dx = &dx[0, 0, 0] if T * B * K else NULL
    a.M, a.B, a.K, a.H, a.rows = T * B, B, K, H, rows
    return part


cdef int input_grad_c(const floating *delta, const floating *w_ih, floating *dx,
                      Py_ssize_t M, Py_ssize_t B, Py_ssize_t K, Py_ssize_t H,
                      bint accumulate, Py_ssize_t rows) noexcept nogil:
    """:func:`run_input_grad` on C arrays given by their first elements (delta (M, H),
    w_ih (H, K), dx (M, K), M = T·B; NULL where empty), checked by the caller. 0, or
    -1 (nothing computed) where its workspace cannot be allocated."""
    if M * K == 0:
        return 0
    cdef Plan plan = make_plan(B, H, floating is float, rows)
    cdef floating *work = <floating *>block(
        workspace_size(&plan, K, H, 1, floating is float), sizeof(floating))
    if work == NULL:
        return -1
    cdef unsigned int csr = rnn_flush_denormals()       # given back below
    # (T·B × K) = (T·B × H)(H × K), added into dx or written over it
    seq_product(&plan, M, <int>K, H, delta, H, 1, w_ih, K, 1, dx, K, accumulate, work)
    rnn_restore_mxcsr(csr)
    release(work)
    return 0


def matmul(const floating[:, ::1] a,               # IN  (m, k), or (k, m) if trans_a
           const floating[:, ::1] b,               # IN  (k, n), or (n, k) if trans_b
           floating[:, ::1] out,                   # OUT (m, n)
           bint trans_a=False, bint trans_b=False):
    """out = op(a) · op(b) through the kernels' BLAS (one thread unless configured).

    For the products around the recurrence (the output layer of the model), so that a
    training step wakes one OpenBLAS pool, not NumPy's as well.
    """
    cdef Py_ssize_t m = a.shape[1] if trans_a else a.shape[0]
    cdef Py_ssize_t k = a.shape[0] if trans_a else a.shape[1]
    cdef Py_ssize_t kb = b.shape[1] if trans_b else b.shape[0]
    cdef Py_ssize_t n = b.shape[0] if trans_b else b.shape[1]
    if kb != k or out.shape[0] != m or out.shape[1] != n:
        raise ValueError(f"matmul: op(a) is ({m}, {k}), op(b) is ({kb}, {n}) and out is "
                         f"({out.shape[0]}, {out.shape[1]}); they do not fit")
    for name, value in (("m", m), ("k", k), ("n", n)):
        if value > BLAS_INT_MAX:
            raise ValueError(f"matmul: {name} = {value} exceeds the 32-bit BLAS limit "
                             f"of {BLAS_INT_MAX}")
    if m * n == 0:
        return
    with nogil:
        gemm(trans_a, trans_b, <int>m, <int>n, <int>k, <floating>1,
             &a[0, 0] if a.shape[0] * a.shape[1] else NULL, <int>a.shape[1],
             &b[0, 0] if b.shape[0] * b.shape[1] else NULL, <int>b.shape[1],
             <floating>0, &out[0, 0], <int>n)


# -- the gated cells (LSTM, GRU) ----------------------------------------------------------

include "_gated.pxi"
include "_gated_api.pxi"
