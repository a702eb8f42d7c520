"""The classic RNN model: embedding or dense input, Elman recurrence, softmax output.

    x_t = E[token_t]  (or the dense input)
    h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)           (rnncore.functional)
    z_t = V h_t + c,   ŷ_t = softmax(z_t),   E = mean −log ŷ_t[target_t]

``task="labeling"`` puts the loss at every valid step (a language model, a tagger);
``task="classification"`` at the last valid step only. For a bidirectional network the
classification feature is [forward state at the last valid step, reverse state at step
0] — the two states that have seen the whole sequence, as ``h_n`` holds them.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np

from . import functional
from .losses import affine, affine_backward, softmax, softmax_cross_entropy
from .rnn import RNN, _positive_int

__all__ = ["RNNModel"]

_TASKS = ("labeling", "classification")


class RNNModel:
    """An Elman RNN with an affine softmax output, trained by BPTT.

    Parameters
    ----------
    output_size : int
        O, the number of classes.
    hidden_size : int
        H.
    vocab_size : int, optional
        Token input: integer ids in [0, vocab_size) pass through an embedding table.
    embedding_dim : int, optional
        Width of the embedding (default ``hidden_size``); only with ``vocab_size``.
    input_size : int, optional
        Dense input of this many features instead of tokens.
    num_layers, nonlinearity, bias, bidirectional
        The recurrence, as :class:`rnncore.RNN`.
    task : {"labeling", "classification"}
        Loss at every valid step, or at the last valid step only.
    ignore_index : int
        Target value that does not count (labeling), as torch's ``cross_entropy``.
    dtype : {np.float32, np.float64}
    seed : int or np.random.Generator, optional
        Initialisation as torch: the embedding N(0, 1), the recurrence and the output
        layer uniform in (−1/√fan_in, 1/√fan_in).
    backend : {"cython", "numpy"} or None

    Attributes
    ----------
    params : dict of str to ndarray
        ``embedding`` (vocab_size, E) when token input; the recurrence under torch's
        keys (``weight_ih_l0`` ...); ``V`` (O, D·H) and ``c`` (O,).

    Notes
    -----
    Inputs are time-major: tokens (T, B) or dense (T, B, K); targets (T, B) for
    labeling, (B,) for classification.
    """

    def __init__(self, output_size: int, hidden_size: int, *, vocab_size: int | None = None,
                 embedding_dim: int | None = None, input_size: int | None = None,
                 num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
                 bidirectional: bool = False, task: str = "labeling",
                 ignore_index: int = -100, dtype=np.float32, seed=None,
                 backend: str | None = None):
        if (vocab_size is None) == (input_size is None):
            raise ValueError("give exactly one of vocab_size (token input) and input_size "
                             f"(dense input); got vocab_size={vocab_size!r}, "
                             f"input_size={input_size!r}")
        if task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}; got {task!r}")
        if embedding_dim is not None and vocab_size is None:
            raise ValueError("embedding_dim goes with vocab_size (token input)")
        self.output_size = _positive_int("output_size", output_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.vocab_size = None if vocab_size is None else _positive_int("vocab_size", vocab_size)
        self.embedding_dim = (None if vocab_size is None else
                              _positive_int("embedding_dim", embedding_dim or hidden_size))
        in_size = self.embedding_dim if vocab_size is not None else _positive_int(
            "input_size", input_size)
        self.task = task
        self.ignore_index = int(ignore_index)
        rng = np.random.default_rng(seed)
        self.rnn = RNN(in_size, hidden_size, num_layers, nonlinearity, bias,
                       bidirectional=bidirectional, dtype=dtype, seed=rng, backend=backend)
        self.dtype = self.rnn.dtype
        DH = (2 if bidirectional else 1) * self.hidden_size
        bound = 1 / np.sqrt(DH)
        self.params: dict[str, np.ndarray] = {}
        if vocab_size is not None:
            self.params["embedding"] = rng.standard_normal(
                (self.vocab_size, self.embedding_dim)).astype(self.dtype)
        self.params.update(self.rnn.params)          # the same arrays: one set of weights
        self.params["V"] = rng.uniform(-bound, bound, (self.output_size, DH)).astype(self.dtype)
        self.params["c"] = rng.uniform(-bound, bound, self.output_size).astype(self.dtype)

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (without weights)."""
        return dict(output_size=self.output_size, hidden_size=self.hidden_size,
                    vocab_size=self.vocab_size,
                    embedding_dim=self.embedding_dim,
                    input_size=None if self.vocab_size else self.rnn.input_size,
                    num_layers=self.rnn.num_layers, nonlinearity=self.rnn.nonlinearity,
                    bias=self.rnn.bias, bidirectional=self.rnn.bidirectional,
                    task=self.task, ignore_index=self.ignore_index,
                    dtype=self.dtype.name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"RNNModel({args})"

    @property
    def _rnn_params(self) -> dict[str, np.ndarray]:
        return {k: self.params[k] for k in self.rnn.params}

    # ------------------------------------------------------------------ forward
    def _embed(self, inputs):
        if self.vocab_size is not None:
            tokens = np.asarray(inputs)
            if tokens.dtype.kind not in "iu":
                raise TypeError(f"inputs must be integer token ids for a model with "
                                f"vocab_size; got dtype {tokens.dtype}")
            if tokens.ndim != 2:
                raise ValueError(f"inputs must have shape (T, B); got {tokens.shape}")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise ValueError(f"inputs must lie in [0, {self.vocab_size}); got values "
                                 f"from {tokens.min()} to {tokens.max()}")
            return tokens, self.params["embedding"][tokens]    # a gather, not a matmul
        x = np.asarray(inputs)
        if x.ndim != 3:
            raise ValueError(f"inputs must have shape (T, B, {self.rnn.input_size}); "
                             f"got {x.shape}")
        return None, x

    def forward(self, inputs, lengths=None, h0=None):
        """Logits of every step (labeling) or of each sequence (classification).

        Parameters
        ----------
        inputs : ndarray, shape (T, B) of int, or (T, B, K)
        lengths : array_like of int, shape (B,), optional
        h0 : ndarray, shape (L·D, B, H), optional

        Returns
        -------
        logits : ndarray, shape (T, B, O) (labeling) or (B, O) (classification)
        h_n : ndarray, shape (L·D, B, H)
        """
        logits, h_n, _ = self._forward(inputs, lengths, h0)
        return logits, h_n

    def _forward(self, inputs, lengths, h0):
        tokens, x = self._embed(inputs)
        y, h_n, record = functional.forward(x, self._rnn_params, h0, lengths,
                                            nonlinearity=self.rnn.nonlinearity,
                                            backend=self.rnn.backend)
        T, B = y.shape[:2]
        steps = (np.full(B, T, dtype=np.int64) if lengths is None
                 else np.asarray(lengths).astype(np.int64))
        feature = self._final_feature(y, steps) if self.task == "classification" else y
        logits = affine(feature, self.params["V"], self.params["c"])
        return logits, h_n, (tokens, x, y, record, steps, feature)

    def _final_feature(self, y, steps):
        """(B, D·H): forward state at each last valid step, reverse state at step 0."""
        if y.shape[0] == 0:
            raise ValueError("classification needs at least one step; got T = 0")
        H, B = self.hidden_size, y.shape[1]
        feature = y[steps - 1, np.arange(B)].copy()
        if self.rnn.bidirectional:
            feature[:, H:] = y[0, :, H:]
        return feature

    def predict(self, inputs, lengths=None, h0=None) -> np.ndarray:
        """Most probable class.

        Returns
        -------
        ndarray of int, shape (T, B) (labeling; -1 at padded steps) or (B,)
        """
        logits, _ = self.forward(inputs, lengths, h0)
        classes = logits.argmax(axis=-1)
        if self.task == "labeling" and lengths is not None:
            classes[np.arange(classes.shape[0])[:, None] >= np.asarray(lengths)[None, :]] = -1
        return classes

    def predict_proba(self, inputs, lengths=None, h0=None) -> np.ndarray:
        """softmax of the logits: shape (T, B, O) or (B, O)."""
        return softmax(self.forward(inputs, lengths, h0)[0])

    # ------------------------------------------------------------------ loss and BPTT
    def _check_targets(self, targets, T, B, steps):
        t = np.asarray(targets)
        if t.dtype.kind not in "iu":
            raise TypeError(f"targets must be integer classes; got dtype {t.dtype}")
        expected = (T, B) if self.task == "labeling" else (B,)
        if t.shape != expected:
            raise ValueError(f"targets must have shape {expected} for task={self.task!r}; "
                             f"got {t.shape}")
        if self.task == "labeling":
            t = t.copy()
            t[np.arange(T)[:, None] >= steps[None, :]] = self.ignore_index  # padding
        return t

    def loss_and_grads(self, inputs, targets, lengths=None, h0=None):
        """Mean cross-entropy and its gradient for every parameter, by BPTT.

        Parameters
        ----------
        inputs : ndarray, shape (T, B) of int, or (T, B, K)
        targets : ndarray of int, shape (T, B) (labeling) or (B,) (classification)
            Classes in [0, O); ``ignore_index`` marks steps that do not count. Steps past
            ``lengths`` never count.
        lengths : array_like of int, shape (B,), optional
        h0 : ndarray, shape (L·D, B, H), optional

        Returns
        -------
        loss : float
            Mean over the counted steps (labeling) or sequences (classification).
        grads : dict of str to ndarray
            The keys and shapes of ``params``.
        h_n : ndarray, shape (L·D, B, H)
            Final states, to carry into the next chunk (truncated BPTT).
        """
        logits, h_n, (tokens, x, y, record, steps, feature) = self._forward(inputs, lengths, h0)
        T, B = y.shape[:2]
        t = self._check_targets(targets, T, B, steps)
        O = self.output_size
        loss, dz = softmax_cross_entropy(logits.reshape(-1, O), t.reshape(-1),
                                         self.ignore_index)
        dfeature, dV, dc = affine_backward(feature, self.params["V"], dz.reshape(logits.shape))
        if self.task == "classification":
            H = self.hidden_size
            dy = np.zeros_like(y)
            if self.rnn.bidirectional:
                dy[steps - 1, np.arange(B), :H] = dfeature[:, :H]
                dy[0, :, H:] += dfeature[:, H:]
            else:
                dy[steps - 1, np.arange(B)] = dfeature
        else:
            dy = dfeature
        dx, _, rnn_grads = functional.backward(record, dy, need_dx=tokens is not None)
        grads: dict[str, np.ndarray] = {}
        if tokens is not None:
            d_embedding = np.zeros_like(self.params["embedding"])
            np.add.at(d_embedding, tokens.reshape(-1), dx.reshape(-1, dx.shape[-1]))
            grads["embedding"] = d_embedding
        grads.update(rnn_grads)
        grads["V"], grads["c"] = dV, dc
        return loss, grads, h_n

    def loss(self, inputs, targets, lengths=None, h0=None) -> float:
        """Mean cross-entropy (no gradients)."""
        logits, _, (_, _, y, _, steps, _) = self._forward(inputs, lengths, h0)
        t = self._check_targets(targets, y.shape[0], y.shape[1], steps)
        return softmax_cross_entropy(logits.reshape(-1, self.output_size), t.reshape(-1),
                                     self.ignore_index)[0]

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the configuration and every parameter to an ``.npz`` file."""
        np.savez(path, __config__=np.array(json.dumps(self.config())), **self.params)

    @classmethod
    def load(cls, path, backend: str | None = None) -> "RNNModel":
        """Rebuild a model written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
        backend : {"cython", "numpy"} or None

        Returns
        -------
        RNNModel
        """
        with np.load(path, allow_pickle=False) as data:
            config = json.loads(str(data["__config__"]))
            config["dtype"] = np.dtype(config["dtype"])
            model = cls(**config, backend=backend)
            model.load_params({k: data[k] for k in data.files if k != "__config__"})
        return model

    def load_params(self, params: Mapping[str, Any]) -> None:
        """Copy parameters in (exactly this model's keys and shapes)."""
        missing = sorted(set(self.params) - set(params))
        extra = sorted(set(params) - set(self.params))
        if missing or extra:
            raise ValueError(f"params keys do not match this model: missing {missing}, "
                             f"unexpected {extra}")
        for key, value in params.items():
            a = np.asarray(value)
            if a.shape != self.params[key].shape:
                raise ValueError(f"params[{key!r}] must have shape {self.params[key].shape}; "
                                 f"got {a.shape}")
        for key, value in params.items():
            self.params[key][...] = value
