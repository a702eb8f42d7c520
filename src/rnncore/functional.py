"""The RNN computation without a class: validate, normalise, dispatch to a backend.

Everything public in rnncore reaches the kernels through :func:`forward` and
:func:`backward`. This module is the one place that checks user input (shapes, dtypes,
lengths), normalises it (time-major, C-contiguous, padded steps zeroed, a private copy
whenever something had to change) and walks the layers and directions; the backends only
ever see one layer-direction at a time, with arrays that are already checked.

Parameters are passed as a mapping with PyTorch's keys (``weight_ih_l0``,
``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``, ``..._reverse``, ``..._l1``, ...);
the number of layers, the directions, the sizes and whether there is a bias are read
from the keys and shapes.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import _parallel, reference

__all__ = ["forward", "backward", "backends", "Record", "param_shapes", "param_count",
           "check_param_memory"]

try:  # the compiled kernels; absent only in a source tree that was never built
    import scipy_openblas32  # noqa: F401  (loads the OpenBLAS the kernels link against)

    from . import _kernels
except ImportError:  # pragma: no cover - exercised only without a build
    _kernels = None

_BACKENDS = {"cython": _kernels, "numpy": reference} if _kernels else {"numpy": reference}
_FASTEST = next(iter(_BACKENDS.values()))
if _kernels:
    _parallel.configure_kernel_blas(_kernels)
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ndarray = np.ndarray                    # one global look-up per parameter, not two
_NONLINEARITIES = ("tanh", "relu")


def backends() -> tuple[str, ...]:
    """The names of the available backends, fastest first.

    Returns
    -------
    tuple of str
        ``("cython", "numpy")`` when the extension is built, else ``("numpy",)``.
    """
    return tuple(_BACKENDS)


def _backend_module(backend):
    if backend is None:
        return _FASTEST
    if not isinstance(backend, str) or backend not in _BACKENDS:
        raise ValueError(
            f"backend must be one of {tuple(_BACKENDS)} or None; got {backend!r}")
    return _BACKENDS[backend]


def param_shapes(input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, bidirectional: bool = False) -> dict[str, tuple]:
    """The parameter keys and shapes of an RNN, in PyTorch's order.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
        K, H and L.
    bias : bool
    bidirectional : bool

    Returns
    -------
    dict
        ``{"weight_ih_l0": (H, K), "weight_hh_l0": (H, H), "bias_ih_l0": (H,), ...}``,
        with ``_reverse`` keys after each layer's forward keys when bidirectional.
    """
    D = 2 if bidirectional else 1
    shapes = {}
    for k in range(num_layers):
        for sfx in ("", "_reverse")[:D]:
            shapes[f"weight_ih_l{k}{sfx}"] = (hidden_size,
                                              input_size if k == 0 else D * hidden_size)
            shapes[f"weight_hh_l{k}{sfx}"] = (hidden_size, hidden_size)
            if bias:
                shapes[f"bias_ih_l{k}{sfx}"] = (hidden_size,)
                shapes[f"bias_hh_l{k}{sfx}"] = (hidden_size,)
    return shapes


def param_count(input_size: int, hidden_size: int, num_layers: int = 1,
                bias: bool = True, bidirectional: bool = False) -> int:
    """The number of parameters :func:`param_shapes` describes, counted without it.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
    bias, bidirectional : bool

    Returns
    -------
    int
    """
    D = 2 if bidirectional else 1
    H = hidden_size
    per_direction = H * H + (2 * H if bias else 0)
    return D * (H * input_size + per_direction
                + (num_layers - 1) * (H * D * H + per_direction))


def check_param_memory(input_size: int, hidden_size: int, num_layers: int, bias: bool,
                       bidirectional: bool, dtype) -> None:
    """Raise ValueError, before anything is allocated, for parameters larger than memory.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
    bias, bidirectional : bool
    dtype : np.dtype
    """
    need = param_count(input_size, hidden_size, num_layers, bias, bidirectional) \
        * np.dtype(dtype).itemsize
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        return
    if need > have:
        raise ValueError(
            f"input_size={input_size}, hidden_size={hidden_size}, num_layers={num_layers}"
            f"{', bidirectional=True' if bidirectional else ''} need {need / 2**30:.1f} GiB "
            f"of {np.dtype(dtype).name} parameters, more than this machine's "
            f"{have / 2**30:.1f} GiB of memory")


_KEY = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")
_KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


@dataclass(frozen=True)
class _Config:
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: np.dtype

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1


def _check_float(name: str, a: np.ndarray) -> None:
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name} must be float32 or float64; got dtype {a.dtype}")


def _as_array(name: str, value) -> np.ndarray:
    """``value`` as an ndarray in native byte order, never a masked array.

    A masked array is rejected: its mask would be silently ignored. An array in the
    other byte order (``>f4`` on x86) is converted, here as in ``load_state_dict``.
    """
    if type(value) is not np.ndarray:
        if isinstance(value, np.ma.MaskedArray):
            raise TypeError(f"{name} must be a plain array; got a numpy.ma.MaskedArray "
                            f"(rnncore would ignore its mask: fill it or pass lengths)")
        try:
            value = np.asarray(value)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{name} must be an array; got {type(value).__name__}") from exc
    if not value.dtype.isnative:
        value = value.astype(value.dtype.newbyteorder("="))
    return value


def _read_params(params: Mapping[str, Any]) -> tuple[_Plan, list[np.ndarray]]:
    """Check a parameter mapping; its plan and its values as arrays, in its order.

    One pass over the mapping: only values that are not native-order ndarrays go
    through :func:`_as_array`. Everything else the checks need is in the signature
    (keys, shapes, dtypes), whose plan is computed once.
    """
    if type(params) is not dict and not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter names to arrays; "
                        f"got {type(params).__name__}")
    arrays, signature = [], []
    for key, value in params.items():
        if type(value) is not _ndarray or not value.dtype.isnative:
            value = _as_array(f"params[{key!r}]", value)
        arrays.append(value)
        signature.append((key, value.shape, value.dtype))
    return _plan_for(tuple(signature)), arrays


class _Plan:
    """What a call needs that depends only on the parameters' keys, shapes and dtypes.

    Built once per configuration by :func:`_plan_for`; it holds positions and names,
    never values, so it cannot go stale when the caller's arrays change.

    Attributes
    ----------
    cfg : _Config
    layers : tuple
        ``layers[l][d] = (w_ih, w_hh, b_ih, b_hh)``: the positions of layer ``l``,
        direction ``d``'s parameters in the mapping's order (the biases None without
        bias).
    grad_keys : tuple of str
        The parameter keys in PyTorch's order (:func:`param_shapes`).
    grad_slots : tuple
        ``grad_slots[l][d]``: the positions of the same four in ``grad_keys``.
    zero_bias : ndarray, shape (H,), read-only
        The bias of a configuration without bias.
    widest_input : int
        max(K, D*H), the widest input of a layer, for ``_kernels.check_sizes``.
    """

    __slots__ = ("cfg", "layers", "grad_keys", "grad_slots", "zero_bias", "widest_input")

    def __init__(self, cfg: _Config, keys: list[str]):
        self.cfg = cfg
        self.grad_keys = tuple(param_shapes(cfg.input_size, cfg.hidden_size,
                                            cfg.num_layers, cfg.bias, cfg.bidirectional))
        names = [[[f"{kind}_l{layer}{sfx}" for kind in _KINDS]
                  for sfx in ("", "_reverse")[:cfg.D]] for layer in range(cfg.num_layers)]
        in_mapping = {key: i for i, key in enumerate(keys)}
        in_grads = {key: i for i, key in enumerate(self.grad_keys)}
        self.layers = tuple(tuple(tuple(in_mapping.get(n) for n in direction)
                                  for direction in layer) for layer in names)
        self.grad_slots = tuple(tuple(tuple(in_grads.get(n) for n in direction)
                                      for direction in layer) for layer in names)
        self.zero_bias = np.zeros(cfg.hidden_size, dtype=cfg.dtype)
        self.zero_bias.setflags(write=False)
        self.widest_input = max(cfg.input_size, cfg.D * cfg.hidden_size)


@functools.lru_cache(maxsize=64)
def _plan_for(signature: tuple) -> _Plan:
    """The plan of the configuration described by ((key, shape, dtype), ...)."""
    return _Plan(_config_for(signature), [key for key, _, _ in signature])


def _config_for(signature: tuple) -> _Config:
    """The configuration described by ((key, shape, dtype), ...), or a clear error."""
    shapes = {}
    for key, shape, dtype in signature:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"params has an unexpected key {key!r}; expected keys like "
                             f"'weight_ih_l0', 'bias_hh_l1_reverse'")
        if dtype not in _FLOATS:
            raise TypeError(f"params[{key!r}] must be float32 or float64; got dtype {dtype}")
        shapes[key] = (shape, dtype)
    if "weight_ih_l0" not in shapes or "weight_hh_l0" not in shapes:
        raise ValueError("params must hold at least 'weight_ih_l0' and 'weight_hh_l0'; "
                         f"got keys {sorted(shapes)}")
    w_shape, w_dtype = shapes["weight_ih_l0"]
    if len(w_shape) != 2:
        raise ValueError(f"params['weight_ih_l0'] must have shape (hidden_size, "
                         f"input_size); got {w_shape}")
    H, K = w_shape
    if H < 1:
        raise ValueError(f"params['weight_ih_l0'] must have at least one row "
                         f"(hidden_size >= 1); got shape {w_shape}")
    L = 1 + max(int(_KEY.fullmatch(k).group(3)) for k in shapes)
    cfg = _Config(input_size=K, hidden_size=H, num_layers=L,
                  bidirectional="weight_ih_l0_reverse" in shapes,
                  bias="bias_ih_l0" in shapes, dtype=w_dtype)
    expected = param_shapes(K, H, L, cfg.bias, cfg.bidirectional)
    if set(shapes) != set(expected):
        missing = sorted(set(expected) - set(shapes))
        extra = sorted(set(shapes) - set(expected))
        raise ValueError(f"params keys do not describe one RNN (num_layers={L}, "
                         f"bidirectional={cfg.bidirectional}, bias={cfg.bias}): "
                         f"missing {missing}, unexpected {extra}")
    for key, shape in expected.items():
        given, dtype = shapes[key]
        if given != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape} for "
                             f"input_size={K}, hidden_size={H}; got {given}")
        if dtype != cfg.dtype:
            raise TypeError(f"all parameters must share one dtype; params[{key!r}] is "
                            f"{dtype} but params['weight_ih_l0'] is {cfg.dtype}")
    return cfg


def _layer_weights(plan: _Plan, arrays, layer: int, snapshot: bool) -> list[tuple]:
    """[(w_ih, w_hh, b) of each direction] of one layer: C-contiguous, b = b_ih + b_hh.

    With ``snapshot`` the weights are private copies: the record keeps them, so that
    backward differentiates the weights forward used even if the caller's arrays change
    in between (an optimiser step, say). Without it they are the caller's arrays
    whenever those are already C-contiguous.
    """
    ws = []
    for i_ih, i_hh, i_bih, i_bhh in plan.layers[layer]:
        if snapshot:
            w_ih, w_hh = arrays[i_ih].copy(), arrays[i_hh].copy()      # C order
        else:
            w_ih = np.ascontiguousarray(arrays[i_ih])
            w_hh = np.ascontiguousarray(arrays[i_hh])
        b = plan.zero_bias if i_bih is None else arrays[i_bih] + arrays[i_bhh]
        ws.append((w_ih, w_hh, b))
    return ws


def _read_lengths(lengths, B: int, T: int) -> np.ndarray:
    """Check the lengths a caller gave; a private (B,) int64 copy."""
    a = _as_array("lengths", lengths)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.dtype.kind == "f":
        if not np.isfinite(a).all() or (a != np.round(a)).any():
            raise ValueError(f"lengths must hold whole numbers; got {a!r}")
    elif a.dtype.kind not in "iu":
        raise TypeError(f"lengths must be integers; got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths must have shape ({B},) for batch size {B}; "
                         f"got {a.shape}")
    if B and (a.min() < 1 or a.max() > T):
        raise ValueError(f"lengths must lie in [1, {T}] for a sequence length of {T}; "
                         f"got values from {a.min()} to {a.max()}")
    return a.astype(np.int64)


def _as_weights_dtype(name: str, value, dtype: np.dtype) -> np.ndarray:
    """An array of floats in the weights' dtype, or a TypeError naming both dtypes."""
    if type(value) is np.ndarray and value.dtype == dtype:    # dtype is native: so is value
        return value
    a = _as_array(name, value)
    _check_float(name, a)
    if a.dtype != dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but the weights are {dtype}; "
                        f"they must match")
    return a


def _check_state(name: str, h, cfg: _Config, B: int, unbatched: bool) -> np.ndarray:
    """Validate h0 or dh_n; returns shape (L*D, B, H), C-contiguous."""
    a = _as_weights_dtype(name, h, cfg.dtype)
    LD = cfg.num_layers * cfg.D
    expected = (LD, cfg.hidden_size) if unbatched else (LD, B, cfg.hidden_size)
    if a.shape != expected:
        raise ValueError(
            f"{name} must have shape {expected} for num_layers={cfg.num_layers}, "
            f"bidirectional={cfg.bidirectional}"
            + ("" if unbatched else f", batch={B}")
            + f", hidden_size={cfg.hidden_size}; got {a.shape}")
    return np.ascontiguousarray(a.reshape(LD, B, cfg.hidden_size))


def _padded_mask(lengths: np.ndarray, T: int) -> np.ndarray | None:
    """(T, B) boolean, True at padded steps; None when nothing is padded."""
    if (lengths == T).all():
        return None
    return np.arange(T)[:, None] >= lengths[None, :]


class Record:
    """What :func:`backward` needs from a :func:`forward` call. Treat it as opaque.

    It holds private copies of the weights forward used, the hidden states of every
    layer-direction and each layer's input; it is never modified, so one record can be
    back-propagated any number of times. Changing the parameters in place after forward
    (an optimiser step) does not change what backward differentiates, unless forward was
    called with ``snapshot_weights=False``: the record then shares the caller's
    C-contiguous weight arrays. The input ``x`` is
    kept by reference when it was already C-contiguous and unpadded (a copy would double
    the memory of the call): changing its values in place before backward changes
    ∂W_ih of the first layer accordingly, as it would in any framework that does not
    copy its inputs. A tampered record cannot make the kernels read or write out of
    bounds: they check that the shapes agree.
    """

    __slots__ = ("plan", "backend", "relu", "weights", "inputs", "states", "lengths",
                 "padded", "T", "B", "batch_first", "unbatched")

    def __init__(self, plan, backend, relu, weights, inputs, states, lengths, padded, T, B,
                 batch_first, unbatched):
        self.plan, self.backend, self.relu = plan, backend, relu
        self.weights, self.inputs, self.states = weights, inputs, states
        self.lengths, self.padded, self.T, self.B = lengths, padded, T, B
        self.batch_first, self.unbatched = batch_first, unbatched

    @property
    def cfg(self) -> _Config:
        """The configuration (sizes, layers, directions, bias, dtype) of the call."""
        return self.plan.cfg


def forward(x, params: Mapping[str, Any], h0=None, lengths=None, *,
            nonlinearity: str = "tanh", batch_first: bool = False,
            backend: str | None = None, snapshot_weights: bool = True):
    """Run a (multi-layer, possibly bidirectional) Elman RNN over a batch.

    Parameters
    ----------
    x : array_like, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K)
        Input sequence, float32 or float64 (the dtype of the weights).
    params : mapping of str to array_like
        Weights with PyTorch's keys; see :func:`param_shapes`.
    h0 : array_like, shape (L*D, B, H) or (L*D, H) for unbatched input, optional
        Initial hidden states; zeros when omitted.
    lengths : array_like of int, shape (B,), optional
        True length of each sequence, ``1 <= lengths[i] <= T``. Outputs at padded steps
        are 0 and ``h_n`` holds each sequence's state at its last valid step.
    nonlinearity : {"tanh", "relu"}
    batch_first : bool
        If True, ``x`` and the output are (B, T, ...).
    backend : {"cython", "numpy"} or None
        None picks the fastest available (see :func:`backends`).
    snapshot_weights : bool
        True (the default): the record keeps private copies of the weights, so that
        :func:`backward` differentiates what forward ran even if ``params`` change in
        place in between (an optimiser step). False: the record shares the caller's
        weight arrays (those already C-contiguous), saving a copy of each per call; for
        callers that guarantee the weights do not change before backward, or detect it
        (PyTorch's version counters). Changing them in between then changes the
        gradients backward returns.

    Returns
    -------
    output : ndarray, shape (T, B, D*H) (or (B, T, D*H), or (T, D*H) unbatched)
    h_n : ndarray, shape (L*D, B, H) (or (L*D, H) unbatched)
    record : Record
        What :func:`backward` needs.
    """
    module = _FASTEST if backend is None else _backend_module(backend)
    if nonlinearity not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
    plan, arrays = _read_params(params)
    cfg = plan.cfg
    x = _as_weights_dtype("x", x, cfg.dtype)
    unbatched = x.ndim == 2
    if not unbatched and x.ndim != 3:
        raise ValueError(f"x must have shape (T, B, {cfg.input_size}), "
                         f"(B, T, {cfg.input_size}) with batch_first=True, or "
                         f"(T, {cfg.input_size}) unbatched; got {x.shape}")
    if unbatched:
        x = x[:, None, :]
    elif batch_first:
        x = x.transpose(1, 0, 2)
    T, B, K = x.shape
    if K != cfg.input_size:
        raise ValueError(f"x must have {cfg.input_size} features in its last axis "
                         f"(input_size of params['weight_ih_l0']); got shape "
                         f"{x.shape if not batch_first or unbatched else (B, T, K)}")
    if lengths is not None:
        lengths = _read_lengths(lengths, B, T)
    H, D = cfg.hidden_size, cfg.D
    LD = cfg.num_layers * D
    if module is _kernels:               # before anything is copied or allocated
        _kernels.check_sizes(T, B, plan.widest_input, H)
    # h_n doubles as the zero h0: slot l·D+d is read by layer l's kernels and written
    # only after they return.
    h_n = np.zeros((LD, B, H), cfg.dtype)
    h0 = h_n if h0 is None else _check_state("h0", h0, cfg, B, unbatched)
    padded = None if lengths is None else _padded_mask(lengths, T)
    if padded is not None:
        x = np.array(x, order="C")       # a private copy: padded steps are zeroed
        x[padded] = 0
    else:
        x = np.ascontiguousarray(x)
    steps = lengths if lengths is not None else _full_lengths(B, T)
    relu = nonlinearity == "relu"

    weights, inputs, states = [], [], []
    layer_in = x
    for layer in range(cfg.num_layers):
        first = layer * D                # the index in h0 and h_n of the forward one
        ws = _layer_weights(plan, arrays, layer, snapshot_weights)
        parts = _parts(module, layer_in, H, D)
        if parts > 1:
            hs = [_parallel.forward_direction(module, parts, layer_in, *w, h0[first + d],
                                              steps, d == 1, relu)
                  for d, w in enumerate(ws)]
            if D == 2:
                h_n[first + 1] = hs[1][0]
        elif D == 1:
            hs = [module.layer_forward(layer_in, *ws[0], h0[first], steps, False, relu)]
        else:
            hs = _parallel.map_directions(module.layer_forward, [
                (layer_in, *w, h0[first + d], steps, d == 1, relu)
                for d, w in enumerate(ws)])
            h_n[first + 1] = hs[1][0]
        h_n[first] = hs[0][T] if padded is None else hs[0][steps, np.arange(B)]
        weights.append(ws)
        inputs.append(layer_in)
        states.append(hs)
        layer_in = hs[0][1:] if D == 1 else _layer_output(hs, T, B, H, padded)
    output = layer_in
    if D == 1:
        output = output.copy()          # a view of hs, which the record keeps
    record = Record(plan, module, relu, weights, inputs, states, steps, padded, T, B,
                    batch_first, unbatched)
    return _to_user_layout(output, batch_first, unbatched), \
        (h_n[:, 0] if unbatched else h_n), record


def _parts(module, layer_in, H: int, D: int) -> int:
    """Into how many threads each direction of a layer is split (1: not split)."""
    if module is not _kernels:
        return 1
    T, B, K = layer_in.shape
    return _parallel.direction_parts(module, T * B * (K + H) * H, B, H, layer_in.dtype, D)


@functools.lru_cache(maxsize=64)
def _full_lengths(B: int, T: int) -> np.ndarray:
    """``lengths`` of a batch where nothing is padded: (B,) int64 of T, read-only."""
    steps = np.full(B, T, dtype=np.int64)
    steps.setflags(write=False)
    return steps


def _layer_output(hs, T, B, H, padded):
    """Concatenate the two directions' states into the layer's output (T, B, 2H).

    (With one direction the output is ``hs[0][1:]``: forward states are already 0 at
    padded steps.)
    """
    out = np.empty((T, B, 2 * H), dtype=hs[0].dtype)
    out[:, :, :H] = hs[0][1:]
    out[:, :, H:] = hs[1][:T]
    if padded is not None:
        out[padded] = 0                  # hs[1] holds h0 at the first padded slot
    return out


def _to_user_layout(a, batch_first, unbatched):
    if unbatched:
        return a[:, 0]
    if batch_first:
        return a.transpose(1, 0, 2)
    return a


def backward(record: Record, dy=None, dh_n=None, *, need_dx: bool = True):
    """Back-propagate through time through the computation of one :func:`forward`.

    Parameters
    ----------
    record : Record
        The third value returned by :func:`forward`.
    dy : array_like, optional
        ∂L/∂output, the shape of forward's output; zeros when omitted. Values at
        padded steps are ignored.
    dh_n : array_like, shape of forward's ``h_n``, optional
        ∂L/∂h_n; zeros when omitted.
    need_dx : bool
        Compute ∂L/∂x (skipping it saves one GEMM per layer-direction).

    Returns
    -------
    dx : ndarray, the shape of forward's ``x``, or None if not ``need_dx``
        Zero at padded steps.
    dh0 : ndarray, the shape of forward's ``h_n``
    grads : dict of str to ndarray
        ∂L/∂(each parameter), with the keys and shapes of forward's ``params``.
    """
    if not isinstance(record, Record):
        raise TypeError(f"record must be the Record returned by forward; "
                        f"got {type(record).__name__}")
    plan, T, B, module = record.plan, record.T, record.B, record.backend
    cfg = plan.cfg
    H, D, L = cfg.hidden_size, cfg.D, cfg.num_layers
    out_shape_tm = (T, B, D * H)
    dy = _read_dy(dy, record, out_shape_tm)
    dh_n = (np.zeros((L * D, B, H), cfg.dtype) if dh_n is None
            else _check_state("dh_n", dh_n, cfg, B, record.unbatched))
    grads = [None] * len(plan.grad_keys)
    dh0 = np.empty((L * D, B, H), cfg.dtype)
    dx = None
    for layer in reversed(range(L)):
        x, ws, hs = record.inputs[layer], record.weights[layer], record.states[layer]
        first = layer * D                # the index in dh_n and dh0 of the forward one
        parts = _parts(module, x, H, D)
        if parts > 1:
            results = [_parallel.backward_direction(
                module, parts, x, ws[d][0], ws[d][1], hs[d], dy[:, :, d * H:(d + 1) * H],
                dh_n[first + d], record.lengths, d == 1, record.relu) for d in range(D)]
        elif D == 1:
            results = [module.layer_backward(x, ws[0][0], ws[0][1], hs[0], dy, dh_n[first],
                                             record.lengths, False, record.relu)]
        else:
            results = _parallel.map_directions(module.layer_backward, [
                (x, ws[d][0], ws[d][1], hs[d], dy[:, :, d * H:(d + 1) * H], dh_n[first + d],
                 record.lengths, d == 1, record.relu) for d in range(D)])
        dx = np.empty(x.shape, cfg.dtype) if layer > 0 or need_dx else None
        if dx is not None:
            _input_grad(module, results, ws, dx, max(parts, D))
            if record.padded is not None:
                dx[record.padded] = 0    # δ is 0 there, but 0 · inf in W_ih is NaN
        for d, (dh0_d, dw_ih, dw_hh, db, _) in enumerate(results):
            dh0[first + d] = dh0_d
            i_ih, i_hh, i_bih, i_bhh = plan.grad_slots[layer][d]
            grads[i_ih], grads[i_hh] = dw_ih, dw_hh
            if i_bih is not None:
                grads[i_bih], grads[i_bhh] = db, db.copy()
        dy = dx
    dx_user = None if dx is None else _to_user_layout(dx, record.batch_first,
                                                      record.unbatched)
    return dx_user, (dh0[:, 0] if record.unbatched else dh0), \
        dict(zip(plan.grad_keys, grads))


def _input_grad(module, results, ws, dx, parts: int) -> None:
    """dx = Σ_d δ_d W_ih,d: written by the first direction, added by the second; in
    ``parts`` ranges of steps on as many threads.

    ``results`` are the directions' ``layer_backward`` results (δ last), ``ws`` their
    ``(w_ih, w_hh, b)``.
    """
    if len(results) == 1 and parts == 1:
        module.input_grad(results[0][4], ws[0][0], dx, False)
        return
    deltas, w_ihs = [r[4] for r in results], [w[0] for w in ws]

    def steps(start, stop):
        for d, (delta, w_ih) in enumerate(zip(deltas, w_ihs)):
            module.input_grad(delta[start:stop], w_ih, dx[start:stop], d > 0)

    T, B, K = dx.shape
    _parallel.split_steps(steps, T, T * B * K * deltas[0].shape[2], parts)


def _read_dy(dy, record: Record, shape_tm) -> np.ndarray:
    """Validate ∂L/∂output; returns it time-major, with padded steps zeroed."""
    cfg = record.cfg
    if dy is None:
        return np.zeros(shape_tm, dtype=cfg.dtype)
    a = _as_weights_dtype("dy", dy, cfg.dtype)
    T, B, DH = shape_tm
    if record.unbatched:
        expected = (T, DH)
    elif record.batch_first:
        expected = (B, T, DH)
    else:
        expected = shape_tm
    if a.shape != expected:
        raise ValueError(f"dy must have the shape of the forward output {expected}; "
                         f"got {a.shape}")
    if record.unbatched:
        a = a[:, None, :]
    elif record.batch_first:
        a = a.transpose(1, 0, 2)
    if record.padded is not None:
        a = np.array(a, order="C")       # a private copy: padded steps are ignored
        a[record.padded] = 0
    elif a.strides[-1] != a.itemsize:
        a = np.ascontiguousarray(a)      # the kernels read rows of dy contiguously
    return a
