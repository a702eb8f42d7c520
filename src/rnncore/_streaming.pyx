# cython: language_level=3
"""The hot path of streaming inference: a network's weights packed once, its state
carried from call to call, one step (or a chunk of steps) per call.

A :class:`Stream` is opened by ``rnn.stream()`` (``_stream.py`` reads the parameters and
the initial state and checks them in the user's terms). Its constructor packs W_ih, W_hh
and LSTM's W_hr the way the kernels of ``_kernels.pyx`` pack them for one call, and
allocates every buffer a step needs; a step then allocates only the array it returns.

The loops are those of ``layer_forward`` and ``gated_forward`` (``_kernels.pyx``) with
the whole-sequence input projection done per chunk, through the same products and
passes of ``_plan.pxd``: per layer one product x W_ihᵀ over the chunk's T'·B rows, then
per step h_{t-1} W_hhᵀ and the cell's fused pass. Each row of the projection is one
chain of FMAs whatever the rows beside it (``_gemm.h``), so under the packed kernels a
stream's outputs are bit for bit those of one ``forward`` over the whole sequence,
however the sequence is cut into calls.

The policy (instruction set, who computes the products) is the one in force in
``_kernels`` when the stream is opened, read once into the stream's plan; a later
``set_isa`` does not change an open stream. Every call runs with denormals flushed to
zero, as the kernels do, and gives the caller's MXCSR back.
"""
import numpy as np

cimport numpy as cnp
from libc.string cimport memcpy, memset

from rnncore._blas cimport floating
from rnncore._vmath cimport *
from rnncore._plan cimport *
from rnncore._checks cimport Sizes, check_sizes_c

cnp.import_array()
rnn_policy_init()              # this module's own table of policies (_vmath.h)

cdef extern from "stdlib.h" nogil:
    int posix_memalign(void **memptr, size_t alignment, size_t size)
    void free(void *ptr)

cdef extern from "_gemm.h":
    enum: RNN_G_KB                  # the depth chunk of the whole-sequence products

CELLS = ("rnn", "lstm", "gru")


cdef struct Layer:
    Py_ssize_t K        # the layer's input width: K for layer 0, W above
    char *w_ih          # W_ihᵀ packed in depth chunks of RNN_G_KB rows if the plan owns
                        # the whole-sequence products, else W_ih (G·H × K) row-major
    char *w_hh          # W_hhᵀ (W × G·H) packed if the step form is PACKED, else W_hh
    char *w_hr          # LSTM's W_hrᵀ (H × P) packed or W_hr (P × H); NULL without
    char *b1            # (G·H,) Elman and LSTM: b_ih + b_hh; GRU: b_ih
    char *b2            # (G·H,) GRU: b_hh; else b1 again (not read)
    char *h             # (B × W) h_{t-1}, the state
    char *c             # (B × H) LSTM's c_{t-1}
    char *c_next        # (B × H) where the next step writes c_t (then the two swap)


cdef struct Net:
    Plan plan
    bint elman, relu, own_gemm
    CellKind kind
    Py_ssize_t L, B, H, P, W, GH, S, nr_seq
    Layer *layers
    char *rec           # (B × G·H) h_{t-1} W_hhᵀ
    char *m             # (B × H) LSTM's m_t, before the projection


cdef void *alloc(Py_ssize_t count, size_t itemsize) except NULL:
    """``count`` (at least 1) elements of ``itemsize`` bytes, 64-byte aligned."""
    cdef void *p = NULL
    if posix_memalign(&p, 64, <size_t>(count if count > 1 else 1) * itemsize) != 0:
        raise MemoryError(f"cannot allocate {count} elements of {itemsize} bytes")
    return p


cdef inline void project(const Net *net, const Layer *layer, Py_ssize_t M,
                         const floating *a, floating *c, Py_ssize_t ldc) noexcept nogil:
    """c (M × G·H, rows ldc apart) = a (M × K) · W_ihᵀ: the input projection of M rows.

    On the packed kernels, one depth chunk of RNN_G_KB after the other, accumulating, as
    the whole-sequence product of ``forward`` runs (so each element gets its bits); else
    on the BLAS, as ``forward`` then does too.
    """
    cdef Py_ssize_t K = layer.K, k0, kb
    cdef int N = <int>net.GH
    cdef const floating *w = <const floating *>layer.w_ih
    if not net.own_gemm:
        seq_product(&net.plan, M, N, K, a, K, 1, w, 1, K, c, ldc, False, NULL)
        return
    k0 = 0
    while k0 < K:
        kb = K - k0 if K - k0 < RNN_G_KB else RNN_G_KB
        if floating is float:
            net.plan.policy.vm.gemm_packed_f(M, N, kb, a + k0, K, 1, w, c, ldc, k0 > 0)
        else:
            net.plan.policy.vm.gemm_packed_d(M, N, kb, a + k0, K, 1, w, c, ldc, k0 > 0)
        w += rnn_packed_size(kb, N, <int>net.nr_seq)
        k0 += kb


cdef void advance(Net *net, Py_ssize_t T, const floating *x, floating *y,
                  floating *proj, floating *mid0, floating *mid1) noexcept nogil:
    """Run T steps from the state in ``net``, and leave the state after them there.

    x (T, B, K) the inputs, y (T, B, W) the outputs of the last layer; proj (T·B × S)
    the gated cells' projections (unused for Elman), mid0 and mid1 (T, B, W) the outputs
    of the layers below the last.
    """
    cdef const Plan *plan = &net.plan
    cdef Py_ssize_t B = net.B, H = net.H, P = net.P, W = net.W, GH = net.GH, S = net.S
    cdef Py_ssize_t l, t, i
    cdef Layer *layer
    cdef const floating *a = x                  # the layer's input, T·B rows
    cdef floating *out                          # the layer's output (T, B, W)
    cdef floating *h_prev
    cdef floating *h_t
    cdef floating *c_swap
    cdef floating *rec = <floating *>net.rec
    cdef floating *m = <floating *>net.m
    cdef floating *b1
    cdef floating *b2
    if T == 0:
        return
    for l in range(net.L):
        layer = &net.layers[l]
        out = y if l == net.L - 1 else (mid0 if l % 2 == 0 else mid1)
        b1, b2 = <floating *>layer.b1, <floating *>layer.b2
        # (T·B × G·H) = (T·B × K)(G·H × K)ᵀ: the input projection of the chunk, into
        # the rows of h_t (Elman, whose pass works in place) or the cell's saved rows
        if net.elman:
            project(net, layer, T * B, a, out, H)
        else:
            project(net, layer, T * B, a, proj, S)
        for t in range(T):
            h_prev = <floating *>layer.h if t == 0 else out + (t - 1) * B * W
            h_t = out + t * B * W
            # (B × G·H) = (B × W)(G·H × W)ᵀ: the recurrent product of every gate
            rect_product(plan, <int>B, <int>GH, <int>W, h_prev, W,
                         <floating *>layer.w_hh, True, <floating *>layer.w_hh, rec, GH,
                         False)
            for i in range(B):
                if net.elman:
                    step_pass(plan, net.relu, <int>H, h_t + i * H, rec + i * GH, b1)
                else:
                    cell_step(plan, net.kind, <int>H, proj + (t * B + i) * S,
                              rec + i * GH, b1, b2, h_prev + i * W,
                              m + i * H if P else h_t + i * W,
                              <floating *>layer.c + i * H if layer.c else NULL,
                              <floating *>layer.c_next + i * H if layer.c else NULL)
            if P:
                # (B × P) = (B × H)(P × H)ᵀ: h_t = m_t W_hrᵀ
                rect_product(plan, <int>B, <int>P, <int>H, m, H, <floating *>layer.w_hr,
                             True, <floating *>layer.w_hr, h_t, P, False)
            if layer.c:
                c_swap = <floating *>layer.c
                layer.c, layer.c_next = layer.c_next, <char *>c_swap
        memcpy(layer.h, out + (T - 1) * B * W, B * W * sizeof(floating))
        a = out


cdef class Stream:
    """A recurrent network's state carried from call to call, for inference.

    Opened by ``rnn.stream(batch_size, h0)`` on an :class:`rnncore.RNN`,
    :class:`rnncore.LSTM` or :class:`rnncore.GRU` (one direction, any number of
    layers); see SPEC.md, "Streaming". The weights are packed when the stream is
    opened: later changes to ``rnn.params`` do not reach it. Outputs equal those of one
    ``rnn.forward`` over the whole sequence, however it is cut into calls. No
    gradients.

    A stream is used by one thread at a time (a second thread's call while one runs
    raises RuntimeError); open one stream per thread, or per batch of requests.

    Attributes
    ----------
    cell : {"rnn", "lstm", "gru"}
    batch_size : int
        B, the rows stepped together (independent sequences).
    input_size : int
        K, the features of each input step.
    hidden_size : int
        H.
    output_size : int
        W, the width of the output and of h: H, or an LSTM's proj_size P.
    num_layers : int
        L.
    batch_first : bool
        Whether :meth:`run` takes and returns (B, T', ·) instead of (T', B, ·).
    dtype : numpy.dtype
        float32 or float64, the weights'; inputs must have it.
    isa : str
        The instruction set the stream's passes and products run on (the kernels' when
        it was opened).

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> rnn = rnncore.RNN(3, 5, num_layers=2, seed=0)
    >>> x = np.random.default_rng(0).standard_normal((8, 1, 3)).astype(np.float32)
    >>> s = rnn.stream()
    >>> y = np.concatenate([s.run(x[:3]), s.step(x[3])[None], s.run(x[4:])])
    >>> bool(np.array_equal(y, rnn.forward(x)[0]))
    True
    """

    cdef Net net
    cdef int typenum
    cdef bint busy
    cdef char *step_proj
    cdef char *step_mid0
    cdef char *step_mid1
    cdef readonly str cell, isa
    cdef readonly Py_ssize_t batch_size, input_size, hidden_size, output_size, num_layers
    cdef readonly bint batch_first
    cdef readonly object dtype

    def __init__(self, str cell, list layers, Py_ssize_t batch_size, bint relu,
                 bint batch_first, h0, c0, int isa_index, bint own_gemm):
        """Pack the weights and copy the initial state in; for ``_stream.open_stream``.

        Parameters
        ----------
        cell : {"rnn", "lstm", "gru"}
        layers : list of tuple
            Per layer (w_ih (G·H, K), w_hh (G·H, W), b1 (G·H,), b2 (G·H,), w_hr (P, H) or
            None), C-contiguous, all of one float dtype; b1, b2 as :class:`Layer` says.
        batch_size : int
        relu : bool
            The Elman RNN's nonlinearity is ReLU (else tanh).
        batch_first : bool
        h0 : ndarray, shape (L, B, W)
        c0 : ndarray, shape (L, B, H), or None but for LSTM
        isa_index, own_gemm
            The kernels' policy: the index of their instruction set in
            ``_kernels.ISAS`` and whether they compute the whole-sequence products.
        """
        if self.net.layers != NULL:
            raise RuntimeError("a Stream is initialised once")
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}; got {cell!r}")
        if not layers:
            raise ValueError("layers must hold at least one layer")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if rnn_vm_resolve(isa_index) != isa_index:
            raise ValueError(f"isa_index {isa_index} names no instruction set this CPU runs")
        w_ih0, w_hh0 = layers[0][0], layers[0][1]
        self.dtype = np.dtype(w_ih0.dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"the weights must be float32 or float64; got {self.dtype}")
        cdef bint single = self.dtype == np.float32
        cdef size_t size = 4 if single else 8
        cdef Py_ssize_t G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
        cdef Py_ssize_t L = len(layers), B = batch_size
        cdef Py_ssize_t GH = w_hh0.shape[0], W = w_hh0.shape[1]
        cdef Py_ssize_t H = GH // G
        cdef Py_ssize_t P = 0 if layers[0][4] is None else layers[0][4].shape[0]
        if GH < G or GH % G or W != (P or H):
            raise ValueError(f"w_hh of layer 0 must have shape ({G}H, P or H); got "
                             f"{w_hh0.shape}")
        self.cell, self.batch_size, self.num_layers = cell, B, L
        self.input_size, self.hidden_size, self.output_size = w_ih0.shape[1], H, W
        self.batch_first = batch_first
        self.typenum = cnp.PyArray_TYPE(w_ih0)
        # the kernels' policy, read once into the plan of every call of this stream
        # (stored and loaded while the GIL is held: no other stream can interleave)
        rnn_policy_store(isa_index, own_gemm)
        cdef Net *net = &self.net
        net.plan = make_plan(B, GH, single, -1, HOLDS_M, W)
        self.isa = rnn_vm_name(net.plan.policy.isa).decode()
        net.elman, net.relu = cell == "rnn", relu
        net.own_gemm = net.plan.policy.own_gemm
        net.kind = LSTM_CELL if cell == "lstm" else GRU_CELL
        net.L, net.B, net.H, net.P, net.W, net.GH = L, B, H, P, W, GH
        net.S = GH if cell != "gru" else 4 * H        # GRU saves [r z n gh_n]
        net.nr_seq = (net.plan.policy.vm.gemm_info_f if single
                      else net.plan.policy.vm.gemm_info_d).nr
        check_sizes_c(Sizes(1, B, max(self.input_size, W), GH))
        net.layers = <Layer *>alloc(L, sizeof(Layer))
        memset(net.layers, 0, L * sizeof(Layer))
        net.rec = <char *>alloc(B * GH, size)
        net.m = <char *>alloc(B * H if P else 1, size)
        self.step_proj = <char *>alloc(B * net.S, size)
        self.step_mid0 = <char *>alloc(B * W, size)
        self.step_mid1 = <char *>alloc(B * W, size)
        cdef Py_ssize_t l
        for l in range(L):
            self._pack_layer(l, layers[l], self.input_size if l == 0 else W, size)
        self._write_state(h0, c0)

    cdef _pack_layer(self, Py_ssize_t l, tuple weights, Py_ssize_t K, size_t size):
        """Check layer l's arrays against the stream's sizes and pack them."""
        cdef Net *net = &self.net
        cdef Layer *layer = &net.layers[l]
        cdef Py_ssize_t GH = net.GH, W = net.W, H = net.H, P = net.P
        cdef cnp.ndarray w_ih, w_hh, b1, b2, w_hr
        w_ih, w_hh, b1, b2, w_hr = weights
        for name, a, shape in (("w_ih", w_ih, (GH, K)), ("w_hh", w_hh, (GH, W)),
                               ("b1", b1, (GH,)), ("b2", b2, (GH,)),
                               ("w_hr", w_hr, (P, H) if P else None)):
            if shape is None:
                if a is not None:
                    raise ValueError(f"layer {l}: {name} must be None without a projection")
                continue
            if a.shape != shape or a.dtype != self.dtype or not a.flags.c_contiguous:
                raise ValueError(f"layer {l}: {name} must be a C-contiguous {self.dtype} "
                                 f"array of shape {shape}; got {a.dtype} {a.shape}")
        layer.K = K
        cdef int nr = net.plan.nr, nr_seq = <int>net.nr_seq
        cdef bint packed = net.plan.form == PACKED
        cdef Py_ssize_t k0, kb, n, KB = RNN_G_KB
        cdef char *dst
        # W_ihᵀ in depth chunks, as the whole-sequence product packs it, or W_ih itself
        if net.own_gemm:
            n = 0
            for k0 in range(0, K, KB):
                n += rnn_packed_size(min(K - k0, KB), <int>GH, nr_seq)
            layer.w_ih = dst = <char *>alloc(n, size)
            for k0 in range(0, K, KB):
                kb = min(K - k0, KB)
                # element (k, j) of W_ihᵀ is w_ih[j, k0 + k]
                if size == 4:
                    rnn_pack_s(kb, <int>GH, nr_seq, <float *>w_ih.data + k0, 1, K,
                               <float *>dst)
                else:
                    rnn_pack_d(kb, <int>GH, nr_seq, <double *>w_ih.data + k0, 1, K,
                               <double *>dst)
                dst += rnn_packed_size(kb, <int>GH, nr_seq) * size
        else:
            layer.w_ih = <char *>alloc(GH * K, size)
            memcpy(layer.w_ih, w_ih.data, GH * K * size)
        layer.w_hh = self._pack_rect(w_hh, W, GH, packed, nr, size)
        if P:
            layer.w_hr = self._pack_rect(w_hr, H, P, packed, nr, size)
        layer.b1 = <char *>alloc(GH, size)
        layer.b2 = <char *>alloc(GH, size)
        memcpy(layer.b1, b1.data, GH * size)
        memcpy(layer.b2, b2.data, GH * size)
        layer.h = <char *>alloc(net.B * W, size)
        if self.cell == "lstm":
            layer.c = <char *>alloc(net.B * H, size)
            layer.c_next = <char *>alloc(net.B * H, size)

    cdef char *_pack_rect(self, cnp.ndarray w, Py_ssize_t K, Py_ssize_t N, bint packed,
                          int nr, size_t size) except NULL:
        """op(w) = wᵀ of a row-major (N × K) w, packed for rect_product (pack_rect), or
        a private copy of w where the plan's form reads it as it is."""
        cdef char *dst
        if not packed:
            dst = <char *>alloc(N * K, size)
            memcpy(dst, w.data, N * K * size)
            return dst
        dst = <char *>alloc(rnn_packed_size(K, <int>N, nr), size)
        if size == 4:
            pack_rect(&self.net.plan, <int>K, <int>N, <float *>w.data, True, <float *>dst)
        else:
            pack_rect(&self.net.plan, <int>K, <int>N, <double *>w.data, True, <double *>dst)
        return dst

    def __dealloc__(self):
        cdef Py_ssize_t l
        cdef Layer *layer
        if self.net.layers != NULL:
            for l in range(self.net.L):
                layer = &self.net.layers[l]
                free(layer.w_ih)
                free(layer.w_hh)
                free(layer.w_hr)
                free(layer.b1)
                free(layer.b2)
                free(layer.h)
                free(layer.c)
                free(layer.c_next)
            free(self.net.layers)
        free(self.net.rec)
        free(self.net.m)
        free(self.step_proj)
        free(self.step_mid0)
        free(self.step_mid1)

    # -- the calls ------------------------------------------------------------------

    cdef inline bint _fits(self, object value, int ndim, Py_ssize_t d0, Py_ssize_t d1,
                           Py_ssize_t d2):
        """Whether ``value`` is an ndarray the kernels can read as it is: the stream's
        dtype in native byte order, aligned, C-contiguous, of shape (d0, d1, d2)[:ndim]."""
        if type(value) is not cnp.ndarray:
            return False
        cdef cnp.ndarray a = <cnp.ndarray>value
        if (cnp.PyArray_TYPE(a) != self.typenum or cnp.PyArray_NDIM(a) != ndim
                or not cnp.PyArray_ISCARRAY_RO(a) or not cnp.PyArray_ISNOTSWAPPED(a)):
            return False
        cdef cnp.npy_intp *dims = cnp.PyArray_DIMS(a)
        return (dims[0] == d0 and (ndim < 2 or dims[1] == d1)
                and (ndim < 3 or dims[2] == d2))

    cdef object _float_array(self, str name, object value, str what):
        """``value`` as an array of the stream's dtype (not copied if it is one), else a
        ValueError (NumPy cannot read it: ragged lists and the like) or a TypeError
        naming ``name``; ``what`` says which arrays are expected."""
        if isinstance(value, np.ndarray):
            a = value
        else:
            try:
                a = np.asarray(value)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{name} must be an array {what}; got a "
                                 f"{type(value).__name__} NumPy cannot read as one "
                                 f"({exc})") from None
        if a.dtype.kind != "f":
            raise TypeError(f"{name} must hold floats ({self.dtype}, the weights' dtype); "
                            f"got dtype {a.dtype}")
        if a.dtype != self.dtype:
            raise TypeError(f"{name} has dtype {a.dtype} but the stream's weights are "
                            f"{self.dtype}; they must match")
        return a

    cdef cnp.ndarray _read_input(self, str name, object value, tuple shapes):
        """``value`` as a C-contiguous array of the stream's dtype and one of
        ``shapes`` (the first that fits its number of axes), else a TypeError or
        ValueError naming ``name``, what was expected and what was given. A copy only
        if the caller's array cannot be read as it is; never modified."""
        a = self._float_array(name, value, f"of shape {' or '.join(map(str, shapes))}")
        if a.shape not in shapes:
            raise ValueError(
                f"{name} must have shape {' or '.join(map(str, shapes))} for "
                f"batch_size={self.batch_size}, input_size={self.input_size}"
                + (", batch_first=True" if name == "x_chunk" and self.batch_first else "")
                + f"; got {a.shape}")
        return np.ascontiguousarray(a)

    cdef int _enter(self) except -1:
        """Mark the stream busy, or raise if another thread's call is running on it."""
        if self.busy:
            raise RuntimeError("this stream is in use by another thread's call; a stream "
                               "serves one thread at a time (open one per thread)")
        self.busy = True
        return 0

    cdef void _advance(self, Py_ssize_t T, char *x, char *y, char *proj, char *mid0,
                       char *mid1) noexcept nogil:
        """advance() in the stream's dtype, with denormals flushed (the caller's MXCSR
        given back)."""
        cdef unsigned int csr = rnn_flush_denormals()
        if self.typenum == cnp.NPY_FLOAT:
            advance(&self.net, T, <float *>x, <float *>y, <float *>proj, <float *>mid0,
                    <float *>mid1)
        else:
            advance(&self.net, T, <double *>x, <double *>y, <double *>proj,
                    <double *>mid0, <double *>mid1)
        rnn_restore_mxcsr(csr)

    def step(self, x_t):
        """Advance every row of the batch by one step.

        Parameters
        ----------
        x_t : ndarray, shape (B, K), or (K,) when B = 1
            The input of this step, of the stream's dtype (array-likes are converted).

        Returns
        -------
        ndarray, shape (B, W), or (W,) for a (K,) input
            The last layer's h_t (W = H, or an LSTM's P), a new array.
        """
        cdef Py_ssize_t B = self.batch_size, K = self.input_size
        cdef bint flat = False
        cdef cnp.ndarray x
        if self._fits(x_t, 2, B, K, 0):
            x = <cnp.ndarray>x_t
        elif B == 1 and self._fits(x_t, 1, K, 0, 0):
            x, flat = <cnp.ndarray>x_t, True
        else:
            shapes = [(B, K), (K,)] if B == 1 else [(B, K)]
            x = self._read_input("x_t", x_t, tuple(shapes))
            flat = x.ndim == 1
        cdef cnp.npy_intp dims[2]
        dims[0] = self.output_size if flat else B
        dims[1] = self.output_size
        cdef cnp.ndarray y = cnp.PyArray_EMPTY(1 if flat else 2, dims, self.typenum, 0)
        self._enter()
        with nogil:
            self._advance(1, cnp.PyArray_BYTES(x), cnp.PyArray_BYTES(y), self.step_proj,
                          self.step_mid0, self.step_mid1)
        self.busy = False
        return y

    def run(self, x_chunk):
        """Advance every row of the batch by T' steps, as one ``forward`` over them.

        Parameters
        ----------
        x_chunk : ndarray, shape (T', B, K), (B, T', K) if ``batch_first``, or (T', K)
            when B = 1
            The inputs of the next T' steps (T' >= 0), of the stream's dtype.

        Returns
        -------
        ndarray, shape (T', B, W), (B, T', W) if ``batch_first``, or (T', W)
            The last layer's h_t of every step, a new array.
        """
        cdef Py_ssize_t B = self.batch_size, K = self.input_size
        cdef Py_ssize_t W = self.output_size, L = self.num_layers
        cdef int bf = self.batch_first
        x = x_chunk
        if not (isinstance(x, np.ndarray) and x.dtype == self.dtype
                and ((x.ndim == 3 and x.shape[2] == K and x.shape[1 - bf] == B)
                     or (B == 1 and x.ndim == 2 and x.shape[1] == K))):
            x = self._read_input_chunk(x)
        flat = x.ndim == 2
        if flat:
            x = x[:, None, :]
        elif bf:
            x = x.transpose(1, 0, 2)
        cdef cnp.ndarray xc = np.ascontiguousarray(x)
        cdef Py_ssize_t T = xc.shape[0]
        check_sizes_c(Sizes(T, B, max(K, W), self.net.GH))
        cdef cnp.ndarray y = np.empty((T, B, W), self.dtype)
        cdef size_t size = self.dtype.itemsize
        cdef char *proj = self.step_proj
        cdef char *mid0 = self.step_mid0
        cdef char *mid1 = self.step_mid1
        cdef bint own = T > 1
        self._enter()
        try:
            if own:                     # the chunk's buffers: T·B rows each
                proj = mid0 = mid1 = NULL
                proj = <char *>alloc(T * B * self.net.S if not self.net.elman else 1, size)
                mid0 = <char *>alloc(T * B * W if L > 1 else 1, size)
                mid1 = <char *>alloc(T * B * W if L > 2 else 1, size)
            with nogil:
                self._advance(T, cnp.PyArray_BYTES(xc), cnp.PyArray_BYTES(y), proj, mid0,
                              mid1)
        finally:
            if own:
                free(proj)
                free(mid0)
                free(mid1)
            self.busy = False
        if flat:
            return y[:, 0]
        return y.transpose(1, 0, 2) if bf else y

    cdef object _read_input_chunk(self, object value):
        """run's input checked: its dtype, then its shape, in the user's terms."""
        cdef Py_ssize_t B = self.batch_size, K = self.input_size
        a = self._float_array("x_chunk", value, "of (T', B, K) or (B, T', K) values")
        expected = f"(B, T', K) = ({B}, T', {K})" if self.batch_first else \
            f"(T', B, K) = (T', {B}, {K})"
        if B == 1:
            expected += f" or (T', K) = (T', {K})"
        ok = ((a.ndim == 3 and a.shape[2] == K and a.shape[1 - self.batch_first] == B)
              or (B == 1 and a.ndim == 2 and a.shape[1] == K))
        if not ok:
            raise ValueError(f"x_chunk must have shape {expected} for batch_size={B}, "
                             f"input_size={K}" + (", batch_first=True" if self.batch_first
                                                  else "") + f"; got {a.shape}")
        return a

    # -- the state --------------------------------------------------------------------

    @property
    def state(self):
        """A copy of the current state.

        Returns
        -------
        h : ndarray, shape (L, B, W)
            Each layer's last h_t, as ``forward``'s h_n; for an LSTM the pair
            ``(h, c)``, c (L, B, H).
        """
        cdef Py_ssize_t l, size = self.dtype.itemsize
        cdef Py_ssize_t B = self.batch_size, W = self.output_size, H = self.hidden_size
        cdef cnp.ndarray h = np.empty((self.num_layers, B, W), self.dtype)
        cdef cnp.ndarray c = np.empty([self.num_layers, B, H] if self.cell == "lstm"
                                      else [0], self.dtype)
        for l in range(self.num_layers):
            memcpy(cnp.PyArray_BYTES(h) + l * B * W * size, self.net.layers[l].h,
                   B * W * size)
            if self.cell == "lstm":
                memcpy(cnp.PyArray_BYTES(c) + l * B * H * size, self.net.layers[l].c,
                       B * H * size)
        return (h, c) if self.cell == "lstm" else h

    cdef _write_state(self, h0, c0):
        """Copy h0 (L, B, W) and, for an LSTM, c0 (L, B, H) into the state."""
        cdef Py_ssize_t l, size = self.dtype.itemsize
        cdef Py_ssize_t L = self.num_layers, B = self.batch_size
        cdef Py_ssize_t W = self.output_size, H = self.hidden_size
        cdef cnp.ndarray h, c
        for name, a, shape in (("h0", h0, (L, B, W)),
                               ("c0", c0, (L, B, H) if self.cell == "lstm" else None)):
            if shape is None:
                continue
            if (not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != self.dtype
                    or not a.flags.c_contiguous):
                raise ValueError(f"{name} must be a C-contiguous {self.dtype} array of "
                                 f"shape {shape}; got {getattr(a, 'dtype', type(a))} "
                                 f"{getattr(a, 'shape', '')}")
        h = h0
        for l in range(L):
            memcpy(self.net.layers[l].h, cnp.PyArray_BYTES(h) + l * B * W * size,
                   B * W * size)
        if self.cell == "lstm":
            c = c0
            for l in range(L):
                memcpy(self.net.layers[l].c, cnp.PyArray_BYTES(c) + l * B * H * size,
                       B * H * size)

    def reset(self, index=None):
        """Zero the state of every layer, for all rows or some.

        Parameters
        ----------
        index : None, int, sequence of int, or bool array of shape (B,)
            The rows to zero (0 <= index < B), e.g. the slot where a new sequence
            starts; None zeroes all.
        """
        cdef Py_ssize_t B = self.batch_size, W = self.output_size, H = self.hidden_size
        cdef Py_ssize_t size = self.dtype.itemsize, l, i
        rows = self._rows(index)
        self._enter()
        try:
            for l in range(self.num_layers):
                for i in rows:
                    memset(self.net.layers[l].h + i * W * size, 0, W * size)
                    if self.cell == "lstm":
                        memset(self.net.layers[l].c + i * H * size, 0, H * size)
        finally:
            self.busy = False

    cdef list _rows(self, index):
        """reset's ``index`` as a list of rows in [0, B), else TypeError/ValueError."""
        cdef Py_ssize_t B = self.batch_size
        if index is None:
            return list(range(B))
        what = (f"index must be None, an int, a sequence of ints or a bool array of "
                f"shape ({B},)")
        if isinstance(index, (bool, np.bool_)):
            raise TypeError(f"{what}; got {index!r}")
        if isinstance(index, (int, np.integer)):
            if not 0 <= index < B:
                raise ValueError(f"index must lie in [0, {B}) for batch_size={B}; got "
                                 f"{index}")
            return [int(index)]
        if isinstance(index, (list, tuple)):
            if not index:
                return []                        # no rows
            kinds = {isinstance(v, (bool, np.bool_)) for v in index}
            if len(kinds) > 1:                   # [True, 0] would read as rows [1, 0]
                raise TypeError(f"{what}, not bools and ints mixed; got {index!r}")
        a = np.asarray(index)
        if a.dtype == bool:
            if a.shape != (B,):
                raise ValueError(f"{what}: a bool index must have shape ({B},) for "
                                 f"batch_size={B}; got {a.shape}")
            return [int(i) for i in np.flatnonzero(a)]
        if a.dtype.kind not in "iu" or a.ndim > 1:
            raise TypeError(f"{what}; got {index!r}")
        rows = [int(i) for i in a.reshape(-1)]
        bad = [i for i in rows if not 0 <= i < B]
        if bad:
            raise ValueError(f"index must lie in [0, {B}) for batch_size={B}; got "
                             f"{bad[0]}")
        return rows

    def __repr__(self):
        return (f"Stream(cell={self.cell!r}, batch_size={self.batch_size}, "
                f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, num_layers={self.num_layers}, "
                f"dtype={self.dtype.name}, isa={self.isa!r})")
