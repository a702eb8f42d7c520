"""The RNN class: parameters, gradients and state_dict over :mod:`rnncore.functional`."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import functional

__all__ = ["RNN"]


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

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 bidirectional: bool = False, dtype=np.float32, seed=None,
                 backend: str | None = None):
        self.input_size = _positive_int("input_size", input_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_layers = _positive_int("num_layers", num_layers)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu'; got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.bias = bool(bias)
        self.batch_first = bool(batch_first)
        self.bidirectional = bool(bidirectional)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:
            raise TypeError(f"dtype must be float32 or float64; got {dtype!r}") from exc
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64; got {self.dtype}")
        if backend is not None and backend not in functional.backends():
            raise ValueError(f"backend must be one of {functional.backends()} or None; "
                             f"got {backend!r}")
        self.backend = backend
        functional.check_param_memory(self.input_size, self.hidden_size, self.num_layers,
                                      self.bias, self.bidirectional, self.dtype)
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
                                       self.bias, self.bidirectional)

    def __repr__(self) -> str:
        extra = "".join(f", {name}={getattr(self, name)!r}" for name, default in
                        (("num_layers", 1), ("nonlinearity", "tanh"), ("bias", True),
                         ("batch_first", False), ("bidirectional", False))
                        if getattr(self, name) != default)
        return (f"RNN({self.input_size}, {self.hidden_size}{extra}, "
                f"dtype={self.dtype.name})")

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
        h_n : ndarray, shape (L*D, B, H) (or (L*D, H))
        """
        y, h_n, self._record = functional.forward(
            x, self.params, h0, lengths, nonlinearity=self.nonlinearity,
            batch_first=self.batch_first, backend=self.backend)
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
