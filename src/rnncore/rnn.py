"""The RNN, LSTM and GRU classes: parameters, gradients and state_dict over
:mod:`rnncore.functional`."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import functional
from ._chunks import checkpoint_steps

__all__ = ["RNN", "LSTM", "GRU"]


def _positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def make_rng(seed) -> np.random.Generator:
    """``np.random.default_rng(seed)``, with an error that names ``seed``."""
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"seed must be a non-negative int, a np.random.Generator or "
                        f"None; got {seed!r}") from exc


class RNN:
    """An Elman RNN with PyTorch's ``nn.RNN`` interface, on NumPy arrays.

    Parameters
    ----------
    input_size : int
        K, the number of features of each input step.
    hidden_size : int
        H, the size of the hidden state.
    num_layers : int
        L, stacked layers; layer k > 0 takes layer k-1's output as input.
    nonlinearity : {"tanh", "relu"}
    bias : bool
        Whether the layers have ``bias_ih`` and ``bias_hh``.
    batch_first : bool
        Input and output are (B, T, ...) instead of (T, B, ...).
    bidirectional : bool
        Each layer also runs over the reversed sequence; outputs are 2H wide.
    dtype : {np.float32, np.float64}
    seed : int, np.random.Generator or None
        Seeds the initialisation: every parameter uniform in (-1/√H, 1/√H), as torch.
    backend : {"cython", "numpy"} or None
        None picks the fastest available (:func:`rnncore.backends`).
    merge_mode : {"concat", "sum", "mean", "mul"}
        How a bidirectional network's last layer combines its two directions into the
        output: side by side (2H wide, PyTorch's), or summed, averaged or multiplied
        (H wide); see :func:`rnncore.functional.forward`. Parameters and h_n do not
        depend on it.
    checkpoint : int or "auto"
        Checkpointed BPTT for long sequences: 0 keeps every state for
        :meth:`backward`; k keeps them every k steps and recomputes the segments in
        :meth:`backward` ("auto": k = ⌈√T⌉); the gradients are bitwise the same. See
        :func:`rnncore.functional.forward`.

    Attributes
    ----------
    params : dict of str to ndarray
        The live parameter arrays under PyTorch's keys, e.g. ``weight_hh_l0`` (H, H).
    grads : dict of str to ndarray
        Gradients of the same keys and shapes, accumulated (``+=``) by :meth:`backward`.

    Notes
    -----
    An instance remembers its last :meth:`forward` for :meth:`backward` and adds into
    one ``grads``: it is not meant to be shared between threads that call it at the
    same time (one thread's backward would use another's forward). Give each thread its
    own instance, or call :mod:`rnncore.functional`, which keeps no state: its forward
    returns the record that its backward takes, and any number of threads may call it
    at once on shared parameters.

    :meth:`backward` differentiates the weights the last :meth:`forward` used, even
    if ``params`` changed in between (an optimiser step).

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> rnn = rnncore.RNN(3, 5, seed=0)
    >>> y, h_n = rnn(np.ones((7, 2, 3), dtype=np.float32))
    >>> y.shape, h_n.shape
    ((7, 2, 5), (1, 2, 5))
    >>> dx, dh0 = rnn.backward(np.ones_like(y))
    >>> dx.shape, rnn.grads["weight_hh_l0"].shape
    ((7, 2, 3), (5, 5))
    """

    _cell = "rnn"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, dtype=np.float32, seed=None,
                 backend: str | None = None, merge_mode: str = "concat", checkpoint=0):
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                    dtype, seed, backend, merge_mode=merge_mode, checkpoint=checkpoint)

    def _setup(self, input_size, hidden_size, num_layers, bias, batch_first,
               bidirectional, dtype, seed, backend, proj_size=0, merge_mode="concat",
               checkpoint=0):
        if not isinstance(merge_mode, str) or merge_mode not in functional.MERGE_MODES:
            raise ValueError(f"merge_mode must be one of {functional.MERGE_MODES}; "
                             f"got {merge_mode!r}")
        self.merge_mode = merge_mode
        checkpoint_steps(checkpoint, 1, 1)     # raises for a bad value
        self.checkpoint = checkpoint
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        self.proj_size = _positive_int("proj_size", proj_size, minimum=0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(f"proj_size must be smaller than hidden_size "
                             f"({self.hidden_size}); got {self.proj_size}")
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be float32 or float64; got {dtype!r}") from exc
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64; got {self.dtype}")
        able = functional.backends_for(self._cell)
        if backend is not None and backend not in able:
            raise ValueError(f"backend must be one of {able} or None; got {backend!r}")
        self.backend = backend
        functional.check_param_memory(self.input_size, self.hidden_size, self.num_layers,
                                      self.bias, self.bidirectional, self.dtype,
                                      cell=self._cell, proj_size=self.proj_size)
        rng = make_rng(seed)
        bound = 1.0 / np.sqrt(self.hidden_size)
        self.params: dict[str, np.ndarray] = {
            key: rng.uniform(-bound, bound, size=shape).astype(self.dtype)
            for key, shape in self._shapes().items()}
        self.grads: dict[str, np.ndarray] = {}
        self.zero_grad()
        self._record = None

    def _shapes(self) -> dict[str, tuple]:
        return functional.param_shapes(self.input_size, self.hidden_size, self.num_layers,
                                       self.bias, self.bidirectional, cell=self._cell,
                                       proj_size=self.proj_size)

    _REPR_OPTIONS = (("num_layers", 1), ("nonlinearity", "tanh"), ("bias", True),
                     ("batch_first", False), ("bidirectional", False),
                     ("merge_mode", "concat"), ("checkpoint", 0))

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name, default in
                        self._REPR_OPTIONS if getattr(self, name) != default)
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}{extra}, "
                f"dtype={self.dtype.name})")

    def _forward_options(self) -> dict:
        return {"nonlinearity": self.nonlinearity}

    def forward(self, x, h0=None, lengths=None):
        """Run the RNN and remember what :meth:`backward` needs.

        Parameters
        ----------
        x : array_like, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K)
        h0 : array_like, shape (L*D, B, H) (or (L*D, H) unbatched), optional
            Zeros when omitted.
        lengths : array_like of int, shape (B,), optional
            True length of each sequence (1 <= lengths[i] <= T).

        Returns
        -------
        output : ndarray, shape (T, B, D*H) (or (B, T, D*H), or (T, D*H))
            H wide when bidirectional with a ``merge_mode`` other than "concat".
        h_n : ndarray, shape (L*D, B, H) (or (L*D, H))
        """
        y, h_n, self._record = functional.forward(
            x, self.params, h0, lengths, cell=self._cell, batch_first=self.batch_first,
            backend=self.backend, merge_mode=self.merge_mode, checkpoint=self.checkpoint,
            **self._forward_options())
        return y, h_n

    __call__ = forward

    def backward(self, dy=None, dh_n=None):
        """BPTT of the last :meth:`forward`; adds the parameter gradients into ``grads``.

        Parameters
        ----------
        dy : array_like, the shape of the last output, optional
            ∂L/∂output; zeros when omitted.
        dh_n : array_like, the shape of the last h_n, optional
            ∂L/∂h_n; zeros when omitted.

        Returns
        -------
        dx : ndarray, the shape of the last input
        dh0 : ndarray, the shape of h_n
        """
        if self._record is None:
            raise RuntimeError("backward called before forward")
        dx, dh0, grads = functional.backward(self._record, dy, dh_n)
        for key, g in grads.items():
            self.grads[key] += g
        return dx, dh0

    def zero_grad(self) -> None:
        """Set every gradient in ``grads`` to zero."""
        self.grads = {key: np.zeros_like(p) for key, p in self.params.items()}

    def stream(self, batch_size: int = 1, h0=None):
        """Open a stream: the state carried from call to call, for inference.

        The weights are packed now; later changes to ``params`` do not reach the
        stream. Unidirectional networks only (SPEC.md, "Streaming").

        Parameters
        ----------
        batch_size : int
            B, the independent sequences stepped together.
        h0 : array_like, shape (L, B, H) (or (L, H) when B = 1), optional
            Zeros when omitted; for an LSTM a pair (h0, c0), h0 (L, B, P or H), c0
            (L, B, H).

        Returns
        -------
        rnncore._streaming.Stream
            ``step(x_t)`` (B, K) → (B, H), ``run(x_chunk)`` (T', B, K) → (T', B, H),
            ``state``, ``reset(index)``.
        """
        from ._stream import open_stream
        return open_stream(self, batch_size, h0)

    def state_dict(self) -> dict[str, np.ndarray]:
        """A copy of the parameters under PyTorch's keys.

        Returns
        -------
        dict of str to ndarray
            ``weight_ih_l{k}{sfx}`` (H, K or D*H), ``weight_hh_l{k}{sfx}`` (H, H),
            ``bias_ih_l{k}{sfx}`` and ``bias_hh_l{k}{sfx}`` (H,).
        """
        return {key: p.copy() for key, p in self.params.items()}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Copy parameters in from a mapping with PyTorch's keys.

        Parameters
        ----------
        state_dict : mapping of str to array_like
            Exactly this RNN's keys, each of its shape; values are converted to this
            RNN's dtype (a torch tensor works through ``np.asarray``).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping; got {type(state_dict).__name__}")
        shapes = self._shapes()
        missing = sorted(set(shapes) - set(state_dict))
        extra = sorted(set(state_dict) - set(shapes))
        if missing or extra:
            raise ValueError(f"state_dict keys do not match this RNN: missing {missing}, "
                             f"unexpected {extra}")
        new = {}
        for key, shape in shapes.items():
            value = state_dict[key]
            if hasattr(value, "detach"):          # a torch tensor
                value = value.detach().cpu().numpy()
            a = np.asarray(value)
            if a.dtype.kind not in "fiu" or a.dtype.kind == "b":
                raise TypeError(f"state_dict[{key!r}] must be real numbers; "
                                f"got dtype {a.dtype}")
            if a.shape != shape:
                raise ValueError(f"state_dict[{key!r}] must have shape {shape}; "
                                 f"got {a.shape}")
            new[key] = a
        for key, a in new.items():
            self.params[key][...] = a


class LSTM(RNN):
    """A long short-term memory network with PyTorch's ``nn.LSTM`` interface, on NumPy
    arrays.

    Gates [i f g o] as PyTorch (SPEC.md, "Gated cells"): ``weight_ih_l{k}`` (4H, K),
    ``weight_hh_l{k}`` (4H, P or H), ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (4H,), with a
    projection ``weight_hr_l{k}`` (P, H).

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
        K, H and L.
    bias, batch_first, bidirectional : bool
        As :class:`RNN`.
    proj_size : int
        P, 0 <= P < H: with P > 0 the hidden state is h_t = W_hr (o ⊙ tanh(c_t)), P wide.
    dtype, seed, backend, merge_mode, checkpoint
        As :class:`RNN`.

    Attributes
    ----------
    params, grads : dict of str to ndarray
        As :class:`RNN`, with the LSTM's keys and shapes.

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> lstm = rnncore.LSTM(3, 5, seed=0, backend="numpy")
    >>> y, (h_n, c_n) = lstm(np.ones((7, 2, 3), dtype=np.float32))
    >>> y.shape, h_n.shape, c_n.shape
    ((7, 2, 5), (1, 2, 5), (1, 2, 5))
    >>> dx, (dh0, dc0) = lstm.backward(np.ones_like(y))
    >>> rnncore.LSTM(3, 5, proj_size=2, seed=0).params["weight_hh_l0"].shape
    (20, 2)
    """

    _cell = "lstm"
    nonlinearity = "tanh"
    _REPR_OPTIONS = (("num_layers", 1), ("bias", True), ("batch_first", False),
                     ("bidirectional", False), ("merge_mode", "concat"), ("checkpoint", 0),
                     ("proj_size", 0))

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, bidirectional: bool = False,
                 proj_size: int = 0, dtype=np.float32, seed=None,
                 backend: str | None = None, merge_mode: str = "concat", checkpoint=0):
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                    dtype, seed, backend, proj_size, merge_mode, checkpoint)

    def _forward_options(self) -> dict:
        return {}

    def forward(self, x, hx=None, lengths=None):
        """Run the LSTM and remember what :meth:`backward` needs.

        Parameters
        ----------
        x : array_like, shape (T, B, K), (B, T, K) if ``batch_first``, or (T, K)
        hx : pair (h0, c0), optional
            h0 (L*D, B, P or H) and c0 (L*D, B, H) (without B unbatched); zeros when
            omitted.
        lengths : array_like of int, shape (B,), optional

        Returns
        -------
        output : ndarray, shape (T, B, D*(P or H)) (or (B, T, ·), or (T, ·))
        (h_n, c_n) : pair of ndarray, the shapes of (h0, c0)
        """
        return super().forward(x, hx, lengths)

    __call__ = forward

    def backward(self, dy=None, dhx=None):
        """BPTT of the last :meth:`forward`; adds the parameter gradients into ``grads``.

        Parameters
        ----------
        dy : array_like, the shape of the last output, optional
        dhx : pair (dh_n, dc_n), optional
            Either may be None (zeros).

        Returns
        -------
        dx : ndarray, the shape of the last input
        (dh0, dc0) : pair of ndarray
        """
        return super().backward(dy, dhx)


class GRU(RNN):
    """A gated recurrent unit network with PyTorch's ``nn.GRU`` interface, on NumPy
    arrays.

    Gates [r z n] as PyTorch (SPEC.md, "Gated cells"), n = tanh(W_in x + b_in +
    r ⊙ (W_hn h + b_hn)): ``weight_ih_l{k}`` (3H, K), ``weight_hh_l{k}`` (3H, H),
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` (3H,). Options, ``forward`` and ``backward``
    as :class:`RNN` (without ``nonlinearity``).

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> gru = rnncore.GRU(3, 5, seed=0)
    >>> y, h_n = gru(np.ones((7, 2, 3), dtype=np.float32))
    >>> y.shape, gru.params["weight_ih_l0"].shape
    ((7, 2, 5), (15, 3))
    """

    _cell = "gru"
    nonlinearity = "tanh"
    _REPR_OPTIONS = LSTM._REPR_OPTIONS[:-1]

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, bidirectional: bool = False,
                 dtype=np.float32, seed=None, backend: str | None = None,
                 merge_mode: str = "concat", checkpoint=0):
        self._setup(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                    dtype, seed, backend, merge_mode=merge_mode, checkpoint=checkpoint)

    def _forward_options(self) -> dict:
        return {}
