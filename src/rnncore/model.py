"""The classic RNN model: embedding or dense input, a recurrence, softmax output.

    x_t = E[token_t]  (or the dense input)
    h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)           (rnncore.functional)
    z_t = V h_t + c,   ŷ_t = softmax(z_t),   E = mean −log ŷ_t[target_t]

The recurrence is the Elman RNN above (``cell="rnn"``), an LSTM (``cell="lstm"``, whose
state is the pair (h_t, c_t); the output layer reads h_t) or a GRU (``cell="gru"``), with
SPEC.md's equations for the gated cells.

``task="labeling"`` puts the loss at every valid step (a language model, a tagger);
``task="classification"`` at the last valid step only. For a bidirectional network the
classification feature is [forward state at the last valid step, reverse state at step
0] — the two states that have seen the whole sequence, as ``h_n`` holds them.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import _checkpoint, functional
from ._checkpoint import _TASKS
from ._params import as_array as _as_array
from .losses import affine, affine_backward, softmax, softmax_cross_entropy
from ._params import check_cell
from .rnn import GRU, LSTM, RNN, _positive_int, make_rng

__all__ = ["RNNModel"]

_SKIP = -1          # the class of a step that does not count, in the int64 targets


def _scatter_add_rows(ids: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """out[i] = Σ rows[j] over j with ids[j] == i; shape (n, rows.shape[1]).

    Sorting the ids and summing runs with ``np.add.reduceat`` is several times faster
    than ``np.add.at`` for (T·B, E) rows.
    """
    out = np.zeros((n, rows.shape[1]), dtype=rows.dtype)
    if ids.size == 0:
        return out
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    out[sorted_ids[starts]] = np.add.reduceat(rows[order], starts, axis=0)
    return out


class RNNModel:
    """A recurrent network (Elman RNN, LSTM or GRU) with an affine softmax output,
    trained by BPTT.

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
    cell : {"rnn", "lstm", "gru"}
        The recurrence: :class:`rnncore.RNN`, :class:`rnncore.LSTM` or
        :class:`rnncore.GRU`.
    num_layers, nonlinearity, bias, bidirectional
        The recurrence, as :class:`rnncore.RNN`; the gated cells take only
        ``nonlinearity="tanh"``.
    proj_size : int
        P, LSTM only: 0 (none) or 0 < P < H, the hidden state h_t = W_hr (o ⊙ tanh(c_t))
        is P wide, and so is what the output layer reads.
    merge_mode : {"concat", "sum", "mean", "mul"}
        How a bidirectional network's top layer combines its two directions into what
        the output layer reads, as :func:`rnncore.functional.forward`: side by side
        (D·P wide, the default) or merged (P wide). Merged outputs go with
        ``task="labeling"``: the classification feature is [forward state at the last
        valid step, reverse state at step 0], two states the merged output never holds
        side by side.
    checkpoint : int or "auto"
        Checkpointed BPTT for long sequences, as :func:`rnncore.functional.forward`: 0
        (the default) keeps every state for backward; k > 0 keeps them every k steps
        and recomputes the segments in backward ("auto": ⌈√T⌉). Same gradients, bit
        for bit.
    batch_first : bool
        Inputs, targets and logits are (B, T, ...) instead of (T, B, ...); ``h0`` and
        ``h_n`` stay (L·D, B, H) (an LSTM's pair too), as in torch.
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
        keys (``weight_ih_l0`` ...); ``V`` (O, D·P) and ``c`` (O,), where P is H, or
        ``proj_size`` for an LSTM with a projection. The live arrays: optimisers update
        them in place.
    grads : dict of str to ndarray
        The gradients of the last :meth:`loss_and_grads` call, same keys and shapes.

    Notes
    -----
    Inputs are time-major unless ``batch_first``: tokens (T, B) of int or dense
    (T, B, K); targets (T, B) for labeling, (B,) for classification. The state ``h0``
    and ``h_n`` is one array (L·D, B, H) for the Elman RNN and the GRU, and the pair
    ``(h, c)`` of (L·D, B, P) and (L·D, B, H) for an LSTM; truncated BPTT carries it
    from chunk to chunk as it is.

    With ``task="classification"`` and ``bidirectional=True`` the feature fed to the
    output layer is the concatenation [forward state at each sequence's last valid step,
    reverse state at step 0] of the top layer — the two states that have read the whole
    sequence, i.e. ``torch.cat([h_n[-2], h_n[-1]], dim=1)`` as torch users write it.

    Examples
    --------
    >>> import numpy as np, rnncore
    >>> model = rnncore.RNNModel(output_size=5, hidden_size=8, vocab_size=5, seed=0)
    >>> tokens = np.array([[0, 1], [2, 3], [4, 0]])          # (T=3, B=2)
    >>> loss, grads = model.loss_and_grads(tokens[:-1], tokens[1:])
    >>> sorted(grads) == sorted(model.params)
    True
    >>> model.predict(tokens).shape
    (3, 2)
    >>> lstm = rnncore.RNNModel(output_size=5, hidden_size=8, vocab_size=5, cell="lstm")
    >>> logits, (h_n, c_n) = lstm.forward(tokens)
    >>> h_n.shape, c_n.shape
    ((1, 2, 8), (1, 2, 8))
    """

    def __init__(self, output_size: int, hidden_size: int, *, vocab_size: int | None = None,
                 embedding_dim: int | None = None, input_size: int | None = None,
                 cell: str = "rnn", num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, bidirectional: bool = False, proj_size: int = 0,
                 merge_mode: str = "concat", checkpoint=0, batch_first: bool = False,
                 task: str = "labeling",
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
        self.cell = check_cell(cell)
        if cell != "rnn" and nonlinearity != "tanh":
            raise ValueError(f"nonlinearity is an option of the Elman RNN; cell={cell!r} "
                             f"takes only 'tanh', got {nonlinearity!r}")
        if cell != "lstm" and not (isinstance(proj_size, (int, np.integer))
                                   and proj_size == 0):
            raise ValueError(f"proj_size is an LSTM option; got proj_size={proj_size!r} "
                             f"for cell={cell!r}")
        if task == "classification" and bidirectional and merge_mode != "concat":
            raise ValueError(f"task='classification' with bidirectional=True reads the "
                             f"forward state at the last valid step beside the reverse "
                             f"state at step 0, which needs merge_mode='concat'; got "
                             f"merge_mode={merge_mode!r}")
        self.output_size = _positive_int("output_size", output_size)
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.vocab_size = None if vocab_size is None else _positive_int("vocab_size", vocab_size)
        self.embedding_dim = (None if vocab_size is None else
                              _positive_int("embedding_dim", hidden_size if embedding_dim is None
                                            else embedding_dim))
        in_size = self.embedding_dim if vocab_size is not None else _positive_int(
            "input_size", input_size)
        self.task = task
        self.batch_first = bool(batch_first)
        if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
            raise TypeError(f"ignore_index must be an integer; got {ignore_index!r}")
        self.ignore_index = int(ignore_index)
        rng = make_rng(seed)
        if cell == "rnn":
            self.rnn = RNN(in_size, hidden_size, num_layers, nonlinearity, bias,
                           bidirectional=bidirectional, dtype=dtype, seed=rng,
                           backend=backend, merge_mode=merge_mode,
                           checkpoint=checkpoint)
        elif cell == "lstm":
            self.rnn = LSTM(in_size, hidden_size, num_layers, bias,
                            bidirectional=bidirectional, proj_size=proj_size, dtype=dtype,
                            seed=rng, backend=backend, merge_mode=merge_mode,
                           checkpoint=checkpoint)
        else:
            self.rnn = GRU(in_size, hidden_size, num_layers, bias,
                           bidirectional=bidirectional, dtype=dtype, seed=rng,
                           backend=backend, merge_mode=merge_mode,
                           checkpoint=checkpoint)
        self.dtype = self.rnn.dtype
        self.proj_size = self.rnn.proj_size
        self._width = self.proj_size or self.hidden_size     # P: what the output reads
        DH = (2 if bidirectional and merge_mode == "concat" else 1) * self._width
        bound = 1 / np.sqrt(DH)
        self.params: dict[str, np.ndarray] = {}
        if vocab_size is not None:
            self.params["embedding"] = rng.standard_normal(
                (self.vocab_size, self.embedding_dim)).astype(self.dtype)
        self.params.update(self.rnn.params)          # the same arrays: one set of weights
        self.params["V"] = rng.uniform(-bound, bound, (self.output_size, DH)).astype(self.dtype)
        self.params["c"] = rng.uniform(-bound, bound, self.output_size).astype(self.dtype)
        self.grads: dict[str, np.ndarray] = {k: np.zeros_like(p) for k, p in self.params.items()}

    # ------------------------------------------------------------------ config
    def config(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this model (without weights).

        Returns
        -------
        dict
            Keyword arguments of :class:`RNNModel`, JSON-serialisable (dtype by name).
        """
        return dict(output_size=self.output_size, hidden_size=self.hidden_size,
                    vocab_size=self.vocab_size,
                    embedding_dim=self.embedding_dim,
                    input_size=None if self.vocab_size else self.rnn.input_size,
                    cell=self.cell, num_layers=self.rnn.num_layers,
                    nonlinearity=self.rnn.nonlinearity, bias=self.rnn.bias,
                    bidirectional=self.rnn.bidirectional, proj_size=self.proj_size,
                    merge_mode=self.rnn.merge_mode, checkpoint=self.rnn.checkpoint,
                    batch_first=self.batch_first, task=self.task,
                    ignore_index=self.ignore_index, dtype=self.dtype.name)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if v is not None)
        return f"RNNModel({args})"

    @property
    def _rnn_params(self) -> dict[str, np.ndarray]:
        return {k: self.params[k] for k in self.rnn.params}

    # ------------------------------------------------------------------ forward
    def _time_major(self, a, name):
        """(B, T, ...) -> (T, B, ...) when batch_first; a view, never a copy."""
        if not self.batch_first:
            return a
        if a.ndim < 2:
            raise ValueError(f"{name} must have at least 2 dimensions (B, T, ...) with "
                             f"batch_first=True; got shape {a.shape}")
        return a.swapaxes(0, 1)

    def _embed(self, inputs):
        """Check the inputs; returns (token ids or None, x) time-major."""
        layout = "(B, T)" if self.batch_first else "(T, B)"
        if self.vocab_size is not None:
            tokens = _as_array("inputs", inputs)
            if tokens.dtype.kind not in "iu":
                raise TypeError(f"inputs must be integer token ids for a model with "
                                f"vocab_size; got dtype {tokens.dtype}")
            if tokens.ndim != 2:
                raise ValueError(f"inputs must have shape {layout}; got {tokens.shape}")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
                raise ValueError(f"inputs must lie in [0, {self.vocab_size}); got values "
                                 f"from {tokens.min()} to {tokens.max()}")
            tokens = self._time_major(tokens, "inputs")
            return tokens, self.params["embedding"][tokens]    # a gather, not a matmul
        x = _as_array("inputs", inputs)
        K = self.rnn.input_size
        if x.ndim != 3 or x.shape[2] != K:
            raise ValueError(f"inputs must have shape {layout[:-1]}, {K}); got {x.shape}")
        return None, self._time_major(x, "inputs")

    def forward(self, inputs, lengths=None, h0=None) -> tuple[np.ndarray, np.ndarray]:
        """Logits of every step (labeling) or of each sequence (classification).

        Parameters
        ----------
        inputs : ndarray, shape (T, B) of int, or (T, B, K); (B, T, ...) if batch_first
        lengths : array_like of int, shape (B,), optional
            True length of each sequence, ``1 <= lengths[i] <= T``.
        h0 : ndarray, shape (L·D, B, H), optional
            Initial states; zeros when omitted. For an LSTM the pair ``(h0, c0)``,
            (L·D, B, P) and (L·D, B, H).

        Returns
        -------
        logits : ndarray, shape (T, B, O) (or (B, T, O)) for labeling, (B, O) for
            classification
        h_n : ndarray, shape (L·D, B, H)
            For an LSTM the pair ``(h_n, c_n)``.
        """
        logits, h_n, _ = self._forward(inputs, lengths, h0)
        return self._user_logits(logits), h_n

    def _user_logits(self, logits):
        if self.batch_first and self.task == "labeling":
            return logits.swapaxes(0, 1)
        return logits

    def _forward(self, inputs, lengths, h0, checkpoint=None):
        tokens, x = self._embed(inputs)
        y, h_n, record = functional.forward(x, self._rnn_params, h0, lengths,
                                            cell=self.cell,
                                            nonlinearity=self.rnn.nonlinearity,
                                            merge_mode=self.rnn.merge_mode,
                                            backend=self.rnn.backend,
                                            checkpoint=self.rnn.checkpoint
                                            if checkpoint is None else checkpoint)
        T, B = y.shape[:2]
        steps = (np.full(B, T, dtype=np.int64) if lengths is None
                 else np.asarray(lengths).reshape(B).astype(np.int64))
        feature = self._final_feature(y, steps) if self.task == "classification" else y
        logits = affine(feature, self.params["V"], self.params["c"])   # one product
        return logits, h_n, (tokens, y, record, steps, feature)

    def _final_feature(self, y, steps):
        """(B, D·P): forward state at each last valid step, reverse state at step 0."""
        if y.shape[0] == 0:
            raise ValueError("classification needs at least one step; got T = 0")
        H, B = self._width, y.shape[1]
        feature = y[steps - 1, np.arange(B)]          # fancy indexing: a new array
        if self.rnn.bidirectional:
            feature[:, H:] = y[0, :, H:]
        return feature

    def predict(self, inputs, lengths=None, h0=None) -> np.ndarray:
        """The most probable class.

        Parameters
        ----------
        inputs, lengths, h0
            As for :meth:`forward`.

        Returns
        -------
        ndarray of int64, shape (T, B) (or (B, T)) for labeling, with -1 at padded
            steps; shape (B,) for classification
        """
        logits, _, (_, y, _, steps, _) = self._forward(inputs, lengths, h0)
        classes = logits.argmax(axis=-1)
        if self.task == "labeling":
            classes[np.arange(y.shape[0])[:, None] >= steps[None, :]] = -1
        return self._user_logits(classes)

    def predict_proba(self, inputs, lengths=None, h0=None) -> np.ndarray:
        """Class probabilities, softmax of the logits.

        Returns
        -------
        ndarray, shape (T, B, O) (or (B, T, O)) for labeling, (B, O) for classification
        """
        return softmax(self.forward(inputs, lengths, h0)[0])

    # ------------------------------------------------------------------ loss and BPTT
    def _check_targets(self, targets, T, B, steps):
        """Check the targets; returns int64 classes in the logits' layout, with
        ``_SKIP`` at every step or sequence that does not count (ignored or padded).

        The comparisons run on the caller's values, so targets of any integer dtype
        (uint8 bytes, say) work with any ``ignore_index``, -100 included.
        """
        t = np.asarray(targets)
        if t.dtype.kind not in "iu":
            raise TypeError(f"targets must be integer classes; got dtype {t.dtype}")
        if self.task == "labeling":
            expected = (B, T) if self.batch_first else (T, B)
        else:
            expected = (B,)
        if t.shape != expected:
            raise ValueError(f"targets must have shape {expected} for task={self.task!r}"
                             f"{', batch_first=True' if self.batch_first else ''}; "
                             f"got {t.shape}")
        if self.task == "labeling":
            t = self._time_major(t, "targets")
            counted = np.arange(T)[:, None] < steps[None, :]       # padding never counts
        else:
            counted = np.ones(t.shape, dtype=bool)
        counted &= t != self.ignore_index
        classes = t[counted]
        if classes.size and (classes.min() < 0 or classes.max() >= self.output_size):
            raise ValueError(f"targets must lie in [0, {self.output_size}) or equal "
                             f"ignore_index={self.ignore_index}; got values from "
                             f"{classes.min()} to {classes.max()}")
        out = np.full(t.shape, _SKIP, dtype=np.int64)
        out[counted] = classes
        return out

    def _loss_and_output_grad(self, inputs, targets, lengths, h0, checkpoint=None):
        """Forward, loss, ∂loss/∂V, ∂loss/∂c and ∂loss/∂(RNN output) (T, B, D·P);
        ``checkpoint`` None: the model's."""
        logits, h_n, (tokens, y, record, steps, feature) = self._forward(
            inputs, lengths, h0, checkpoint)
        T, B = y.shape[:2]
        t = self._check_targets(targets, T, B, steps)
        O = self.output_size
        loss, dz = softmax_cross_entropy(logits.reshape(-1, O), t.reshape(-1), _SKIP)
        dfeature, dV, dc = affine_backward(feature, self.params["V"], dz.reshape(logits.shape))
        if self.task == "classification":
            H, rows = self._width, np.arange(B)
            dy = np.zeros_like(y)
            if self.rnn.bidirectional:
                dy[steps - 1, rows, :H] = dfeature[:, :H]
                dy[0, :, H:] += dfeature[:, H:]
            else:
                dy[steps - 1, rows] = dfeature
        else:
            dy = dfeature
        return loss, dV, dc, dy, tokens, record, h_n

    def loss_and_grads(self, inputs, targets, lengths=None, h0=None, *,
                       return_h_n: bool = False) -> tuple:
        """Mean cross-entropy and its gradient for every parameter, by BPTT.

        Parameters
        ----------
        inputs : ndarray, shape (T, B) of int, or (T, B, K); (B, T, ...) if batch_first
        targets : ndarray of int, shape (T, B) (or (B, T)) for labeling, (B,) for
            classification
            Classes in [0, O); ``ignore_index`` marks steps or sequences that do not
            count. Steps past ``lengths`` never count, whatever they hold.
        lengths : array_like of int, shape (B,), optional
            True length of each sequence, ``1 <= lengths[i] <= T``.
        h0 : ndarray, shape (L·D, B, H), optional
            Initial states, taken as constants (no gradient flows into them). For an
            LSTM the pair ``(h0, c0)``.
        return_h_n : bool
            Also return the final states, to carry into the next chunk of a long
            sequence (truncated BPTT).

        Returns
        -------
        loss : float
            Mean over the counted steps (labeling) or sequences (classification).
        grads : dict of str to ndarray
            The keys and shapes of ``params``; also stored as ``self.grads``.
        h_n : ndarray, shape (L·D, B, H), or the pair ``(h_n, c_n)`` for an LSTM
            Only with ``return_h_n=True``.
        """
        loss, dV, dc, dy, tokens, record, h_n = self._loss_and_output_grad(
            inputs, targets, lengths, h0)
        dx, _, rnn_grads = functional.backward(record, dy, need_dx=tokens is not None)
        grads: dict[str, np.ndarray] = {}
        if tokens is not None:
            # the gather's adjoint: a scatter-add of ∂L/∂x_t into the rows read
            grads["embedding"] = _scatter_add_rows(tokens.reshape(-1),
                                                   dx.reshape(-1, dx.shape[-1]),
                                                   self.vocab_size)
        grads.update(rnn_grads)
        grads["V"], grads["c"] = dV, dc
        self.grads = grads
        return (loss, grads, h_n) if return_h_n else (loss, grads)

    def loss(self, inputs, targets, lengths=None, h0=None) -> float:
        """Mean cross-entropy, without gradients.

        Parameters
        ----------
        inputs, targets, lengths, h0
            As for :meth:`loss_and_grads`.

        Returns
        -------
        float
        """
        logits, _, (_, y, _, steps, _) = self._forward(inputs, lengths, h0)
        t = self._check_targets(targets, y.shape[0], y.shape[1], steps)
        return softmax_cross_entropy(logits.reshape(-1, self.output_size), t.reshape(-1),
                                     _SKIP)[0]

    # ------------------------------------------------------------------ persistence
    def save(self, path) -> None:
        """Write the configuration and every parameter to an ``.npz`` file, atomically.

        Parameters
        ----------
        path : str, path-like or writable binary file
            Written exactly as given, whatever its suffix (``save("ckpt")`` writes
            ``ckpt``, which ``load("ckpt")`` reads); a symbolic link is followed.

        Notes
        -----
        The checkpoint goes to a temporary file in the same directory, is flushed to
        disk, then renamed over ``path`` (``os.replace``), and the directory is synced:
        a full disk, an error or a kill during the save leaves the previous file at
        ``path`` whole. On an error the temporary file is removed; a kill can leave one
        behind, named ``.<name>.<random>.tmp``, which may be deleted. A file object is
        written in place, without these guarantees.
        """
        _checkpoint.save(path, self.config(), self.params)

    @classmethod
    def load(cls, path, backend: str | None = None) -> "RNNModel":
        """Rebuild a model written by :meth:`save`.

        Parameters
        ----------
        path : str, path-like or readable binary file
            Read exactly as given: the name :meth:`save` was given.
        backend : {"cython", "numpy"} or None

        Returns
        -------
        RNNModel

        Raises
        ------
        ValueError
            When the file is not a checkpoint this class wrote or could have written:
            not a zip of ``.npy`` entries, no ``__config__`` entry, configuration keys
            missing or unknown or of the wrong type, arrays missing or unexpected or of
            a shape or dtype the configuration does not give, an entry whose ``.npy``
            header disagrees with its size, or a corrupt entry.

        Notes
        -----
        A checkpoint is checked whole before anything is built: the configuration
        against the names, shapes and dtypes in the ``.npy`` headers, the headers
        against the sizes in the zip directory, and those sizes against the file's
        own length. Only then are the model and its arrays allocated, so a small
        crafted file cannot make ``load`` allocate more than the model it describes
        consistently, and no entry is decompressed before its name is known and its
        size is the expected one. Entries may be stored (as :meth:`save` writes them)
        or deflated (``np.savez_compressed``); a deflated entry expands at most about
        a thousandfold, which bounds what a file of a given length can declare.
        """
        def build(config):
            return cls(**{**config, "dtype": np.dtype(config["dtype"])}, backend=backend)

        return _checkpoint.load(path, build)

    def load_params(self, params: Mapping[str, Any]) -> None:
        """Copy parameters in: exactly this model's keys, each of its shape.

        Parameters
        ----------
        params : mapping of str to array_like
            Real numbers; converted to the model's dtype.
        """
        if not isinstance(params, Mapping):
            raise TypeError(f"params must be a mapping; got {type(params).__name__}")
        missing = sorted(set(self.params) - set(params))
        extra = sorted(set(params) - set(self.params))
        if missing or extra:
            raise ValueError(f"params keys do not match this model: missing {missing}, "
                             f"unexpected {extra}")
        arrays = {}
        for key, value in params.items():
            a = np.asarray(value)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"params[{key!r}] must hold real numbers; got dtype "
                                f"{a.dtype}")
            if a.shape != self.params[key].shape:
                raise ValueError(f"params[{key!r}] must have shape "
                                 f"{self.params[key].shape}; got {a.shape}")
            arrays[key] = a
        for key, a in arrays.items():
            self.params[key][...] = a
