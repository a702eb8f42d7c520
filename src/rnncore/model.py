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

import contextlib
import json
import math
import os
import secrets
import zipfile
import zlib
from typing import Any, Mapping, NamedTuple

import numpy as np

from . import functional
from .functional import _as_array
from .losses import affine, affine_backward, softmax, softmax_cross_entropy
from .rnn import RNN, _positive_int, make_rng

__all__ = ["RNNModel"]

_TASKS = ("labeling", "classification")
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


# ---------------------------------------------------------------------- checkpoints
_MAX_CONFIG_BYTES = 1 << 16          # the JSON configuration is a few hundred bytes
_DEFLATE_MAX_RATIO = 1040            # deflate expands at most ~1032-fold


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


# Every key RNNModel.config() writes: (check, what it must be).
_CONFIG = {
    "output_size": (_is_count, "a positive integer"),
    "hidden_size": (_is_count, "a positive integer"),
    "vocab_size": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "embedding_dim": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "input_size": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "num_layers": (_is_count, "a positive integer"),
    "nonlinearity": (lambda v: v in ("tanh", "relu"), "'tanh' or 'relu'"),
    "bias": (lambda v: isinstance(v, bool), "a boolean"),
    "bidirectional": (lambda v: isinstance(v, bool), "a boolean"),
    "batch_first": (lambda v: isinstance(v, bool), "a boolean"),
    "task": (lambda v: v in _TASKS, f"one of {_TASKS}"),
    "ignore_index": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
}
_ENTRY_ERRORS = (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile)


class _Entry(NamedTuple):
    """An ``.npy`` member of a checkpoint, as its header and the zip directory say."""
    info: zipfile.ZipInfo
    shape: tuple
    dtype: np.dtype


def _npy_entries(archive: zipfile.ZipFile, where, length: int) -> dict[str, _Entry]:
    """Every member's name, shape and dtype, read from the headers alone.

    Each header must agree with the member's size in the zip directory, and that size
    with what the file's ``length`` bytes can hold; no array data is read.
    """
    entries: dict[str, _Entry] = {}
    for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
            raise ValueError(f"{where} was not written by RNNModel.save: entry {name!r} "
                             f"is not an .npy array")
        if name[:-4] in entries:
            raise ValueError(f"{where}: entry {name!r} appears twice")
        if info.compress_type == zipfile.ZIP_STORED:
            most = info.compress_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            most = _DEFLATE_MAX_RATIO * info.compress_size + 1024
        else:
            raise ValueError(f"{where}: entry {name!r} must be stored or deflated; got "
                             f"zip compression method {info.compress_type}")
        if info.header_offset + info.compress_size > length or info.file_size > most:
            raise ValueError(f"{where}: entry {name!r} claims {info.file_size} bytes, "
                             f"more than the {length}-byte file can hold")
        try:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"format version {version}, expected (1, 0) or (2, 0)")
                header = member.tell()
        except _ENTRY_ERRORS as exc:
            raise ValueError(f"{where}: entry {name!r} has no valid .npy header "
                             f"({exc})") from None
        if dtype.hasobject or dtype.names is not None:
            raise ValueError(f"{where}: entry {name!r} must hold plain numbers; got "
                             f"dtype {dtype}")
        data = math.prod(shape) * dtype.itemsize
        if header + data != info.file_size:
            raise ValueError(f"{where}: entry {name!r} has a header declaring shape "
                             f"{shape} of {dtype} ({data} bytes of data) but holds "
                             f"{info.file_size - header} bytes of data")
        entries[name[:-4]] = _Entry(info, shape, dtype)
    return entries


def _read_entry(archive: zipfile.ZipFile, entry: _Entry, where) -> np.ndarray:
    try:
        with archive.open(entry.info) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    except _ENTRY_ERRORS as exc:
        raise ValueError(f"{where}: entry {entry.info.filename!r} is corrupt "
                         f"({exc})") from None


def _read_config(archive: zipfile.ZipFile, entry: _Entry, where) -> dict[str, Any]:
    """The JSON configuration, its keys and their types checked."""
    if (entry.dtype.kind != "U" or entry.shape != ()
            or entry.info.file_size > _MAX_CONFIG_BYTES):
        raise ValueError(f"{where}: __config__ must be a JSON string of at most "
                         f"{_MAX_CONFIG_BYTES} bytes; got shape {entry.shape}, dtype "
                         f"{entry.dtype}, {entry.info.file_size} bytes")
    try:
        config = json.loads(str(_read_entry(archive, entry, where)))
    except ValueError as exc:
        raise ValueError(f"{where}: __config__ is not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: __config__ must be a JSON object; got "
                         f"{type(config).__name__}")
    missing = sorted(set(_CONFIG) - set(config))
    unknown = sorted(set(config) - set(_CONFIG))
    if missing or unknown:
        raise ValueError(f"{where}: __config__ keys do not match RNNModel's arguments: "
                         f"missing {missing}, unknown {unknown}")
    for key, (valid, expected) in _CONFIG.items():
        if not valid(config[key]):
            raise ValueError(f"{where}: __config__[{key!r}] must be {expected}; got "
                             f"{config[key]!r}")
    if (config["vocab_size"] is None) == (config["input_size"] is None):
        raise ValueError(f"{where}: __config__ must give exactly one of vocab_size and "
                         f"input_size; got vocab_size={config['vocab_size']!r}, "
                         f"input_size={config['input_size']!r}")
    if config["embedding_dim"] is not None and config["vocab_size"] is None:
        raise ValueError(f"{where}: __config__ gives embedding_dim without vocab_size")
    return config


def _check_arrays(config: Mapping[str, Any], entries: Mapping[str, _Entry], where) -> None:
    """The arrays are exactly the configuration's, of its shapes, of real numbers."""
    D = 2 if config["bidirectional"] else 1
    L, H = config["num_layers"], config["hidden_size"]
    recurrent = L * D * (4 if config["bias"] else 2)
    if recurrent > len(entries):               # before listing L·D keys for a huge L
        raise ValueError(f"{where}: __config__ gives num_layers={L}, {recurrent} "
                         f"recurrent arrays, but the file holds {len(entries)} arrays")
    shapes: dict[str, tuple] = {}
    if config["vocab_size"] is not None:
        E = config["embedding_dim"] or H
        shapes["embedding"] = (config["vocab_size"], E)
        in_size = E
    else:
        in_size = config["input_size"]
    shapes.update(functional.param_shapes(in_size, H, L, config["bias"],
                                          config["bidirectional"]))
    shapes["V"] = (config["output_size"], D * H)
    shapes["c"] = (config["output_size"],)
    missing = sorted(set(shapes) - set(entries))
    unexpected = sorted(set(entries) - set(shapes))
    if missing or unexpected:
        raise ValueError(f"{where}: the arrays do not match its __config__: missing "
                         f"{missing}, unexpected {unexpected}")
    for key, shape in shapes.items():
        entry = entries[key]
        if entry.shape != shape:
            raise ValueError(f"{where}: {key} must have shape {shape} by its __config__; "
                             f"got {entry.shape}")
        if entry.dtype.kind not in "fiu":
            raise ValueError(f"{where}: {key} must hold real numbers; got dtype "
                             f"{entry.dtype}")


def _create_temporary(directory: str, name: str) -> tuple[str, int]:
    """A new file beside ``name``: (its path, an open descriptor), umask permissions."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable, where the system can sync a directory."""
    if os.name != "posix":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    batch_first : bool
        Inputs, targets and logits are (B, T, ...) instead of (T, B, ...); ``h0`` and
        ``h_n`` stay (L·D, B, H), as in torch.
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
        keys (``weight_ih_l0`` ...); ``V`` (O, D·H) and ``c`` (O,). The live arrays:
        optimisers update them in place.
    grads : dict of str to ndarray
        The gradients of the last :meth:`loss_and_grads` call, same keys and shapes.

    Notes
    -----
    Inputs are time-major unless ``batch_first``: tokens (T, B) of int or dense
    (T, B, K); targets (T, B) for labeling, (B,) for classification.

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
    """

    def __init__(self, output_size: int, hidden_size: int, *, vocab_size: int | None = None,
                 embedding_dim: int | None = None, input_size: int | None = None,
                 num_layers: int = 1, nonlinearity: str = "tanh", bias: bool = True,
                 bidirectional: bool = False, batch_first: bool = False,
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
                    num_layers=self.rnn.num_layers, nonlinearity=self.rnn.nonlinearity,
                    bias=self.rnn.bias, bidirectional=self.rnn.bidirectional,
                    batch_first=self.batch_first, task=self.task, ignore_index=self.ignore_index,
                    dtype=self.dtype.name)

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
            Initial states; zeros when omitted.

        Returns
        -------
        logits : ndarray, shape (T, B, O) (or (B, T, O)) for labeling, (B, O) for
            classification
        h_n : ndarray, shape (L·D, B, H)
        """
        logits, h_n, _ = self._forward(inputs, lengths, h0)
        return self._user_logits(logits), h_n

    def _user_logits(self, logits):
        if self.batch_first and self.task == "labeling":
            return logits.swapaxes(0, 1)
        return logits

    def _forward(self, inputs, lengths, h0):
        tokens, x = self._embed(inputs)
        y, h_n, record = functional.forward(x, self._rnn_params, h0, lengths,
                                            nonlinearity=self.rnn.nonlinearity,
                                            backend=self.rnn.backend)
        T, B = y.shape[:2]
        steps = (np.full(B, T, dtype=np.int64) if lengths is None
                 else np.asarray(lengths).reshape(B).astype(np.int64))
        feature = self._final_feature(y, steps) if self.task == "classification" else y
        logits = affine(feature, self.params["V"], self.params["c"])   # one product
        return logits, h_n, (tokens, y, record, steps, feature)

    def _final_feature(self, y, steps):
        """(B, D·H): forward state at each last valid step, reverse state at step 0."""
        if y.shape[0] == 0:
            raise ValueError("classification needs at least one step; got T = 0")
        H, B = self.hidden_size, y.shape[1]
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

    def _loss_and_output_grad(self, inputs, targets, lengths, h0):
        """Forward, loss, ∂loss/∂V, ∂loss/∂c and ∂loss/∂(RNN output) (T, B, D·H)."""
        logits, h_n, (tokens, y, record, steps, feature) = self._forward(inputs, lengths, h0)
        T, B = y.shape[:2]
        t = self._check_targets(targets, T, B, steps)
        O = self.output_size
        loss, dz = softmax_cross_entropy(logits.reshape(-1, O), t.reshape(-1), _SKIP)
        dfeature, dV, dc = affine_backward(feature, self.params["V"], dz.reshape(logits.shape))
        if self.task == "classification":
            H, rows = self.hidden_size, np.arange(B)
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
            Initial states, taken as constants (no gradient flows into them).
        return_h_n : bool
            Also return the final states, to carry into the next chunk of a long
            sequence (truncated BPTT).

        Returns
        -------
        loss : float
            Mean over the counted steps (labeling) or sequences (classification).
        grads : dict of str to ndarray
            The keys and shapes of ``params``; also stored as ``self.grads``.
        h_n : ndarray, shape (L·D, B, H)
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
        arrays = dict(__config__=np.array(json.dumps(self.config())), **self.params)
        if hasattr(path, "write"):
            np.savez(path, **arrays)
            return
        try:
            target = os.path.realpath(os.fsdecode(os.fspath(path)))
        except TypeError:
            raise TypeError(f"path must be a str, a path-like or a writable binary file; "
                            f"got {type(path).__name__}") from None
        directory, name = os.path.split(target)
        tmp, fd = _create_temporary(directory, name)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        _fsync_directory(directory)

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
        where = (os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike))
                 else "the file")
        if hasattr(path, "read"):
            return cls._load_from(path, where, backend)
        try:
            fspath = os.fspath(path)
        except TypeError:
            raise TypeError(f"path must be a str, a path-like or a readable binary file; "
                            f"got {type(path).__name__}") from None
        with open(fspath, "rb") as f:
            return cls._load_from(f, where, backend)

    @classmethod
    def _load_from(cls, f, where, backend):
        start = f.tell()
        length = f.seek(0, os.SEEK_END)
        f.seek(start)
        try:
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise ValueError(f"{where} was not written by RNNModel.save: it is not an "
                             f".npz (zip) file ({exc})") from None
        with archive:
            entries = _npy_entries(archive, where, length)
            if "__config__" not in entries:
                raise ValueError(f"{where} was not written by RNNModel.save: it has no "
                                 f"__config__ entry; got entries {sorted(entries)}")
            config = _read_config(archive, entries.pop("__config__"), where)
            _check_arrays(config, entries, where)
            model = cls(**{**config, "dtype": np.dtype(config["dtype"])}, backend=backend)
            for key, entry in entries.items():
                model.params[key][...] = _read_entry(archive, entry, where)
        return model

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
