"""The checkpoint file of :class:`rnncore.RNNModel`: an ``.npz`` (a zip of ``.npy``
entries) holding ``__config__``, the model's constructor arguments as JSON, and one
entry per parameter. A configuration without ``cell``, ``proj_size``, ``merge_mode`` or
``checkpoint`` (written before them) is an Elman RNN without projection whose directions
are concatenated and which keeps every state for backward.

What it guarantees:

- A save to a path replaces the file atomically: it writes a temporary file in the same
  directory, flushes and fsyncs it, renames it over the target (``os.replace``) and
  syncs the directory, so a full disk, an error or a kill during the save leaves the
  previous file whole.
- A load checks the whole file before allocating anything: the configuration's keys and
  types, the arrays' names, shapes and dtypes as their ``.npy`` headers declare them,
  the headers against the sizes in the zip directory, and those sizes against the
  file's length. Only then is the model built and its arrays read, so a small crafted
  file cannot make a load allocate more than the model it consistently describes.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import zipfile
import zlib
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from . import functional
from ._params import CELLS

_TASKS = ("labeling", "classification")  # RNNModel's tasks; model.py takes them from here
_MAX_CONFIG_BYTES = 1 << 16             # the JSON configuration is a few hundred bytes
_DEFLATE_MAX_RATIO = 1040               # deflate expands at most ~1032-fold


def _is_count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _is_size(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


# Every key RNNModel.config() writes: (check, what it must be).
_CONFIG = {
    "output_size": (_is_count, "a positive integer"),
    "hidden_size": (_is_count, "a positive integer"),
    "vocab_size": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "embedding_dim": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "input_size": (lambda v: v is None or _is_count(v), "a positive integer or null"),
    "cell": (lambda v: v in CELLS, f"one of {CELLS}"),
    "num_layers": (_is_count, "a positive integer"),
    "nonlinearity": (lambda v: v in ("tanh", "relu"), "'tanh' or 'relu'"),
    "bias": (lambda v: isinstance(v, bool), "a boolean"),
    "bidirectional": (lambda v: isinstance(v, bool), "a boolean"),
    "proj_size": (_is_size, "a non-negative integer"),
    "merge_mode": (lambda v: v in functional.MERGE_MODES,
                   f"one of {functional.MERGE_MODES}"),
    "checkpoint": (lambda v: v == "auto" or _is_size(v), "0, a positive integer or 'auto'"),
    "batch_first": (lambda v: isinstance(v, bool), "a boolean"),
    "task": (lambda v: v in _TASKS, f"one of {_TASKS}"),
    "ignore_index": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer"),
    "dtype": (lambda v: v in ("float32", "float64"), "'float32' or 'float64'"),
}
# Keys a checkpoint written before the gated cells lacks, and the value they had then.
_DEFAULTS = {"cell": "rnn", "proj_size": 0, "merge_mode": "concat", "checkpoint": 0}
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
    config = {**_DEFAULTS, **config}
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
    if config["cell"] != "rnn" and config["nonlinearity"] != "tanh":
        raise ValueError(f"{where}: __config__ gives nonlinearity="
                         f"{config['nonlinearity']!r} for cell={config['cell']!r}, which "
                         f"takes only 'tanh'")
    if config["proj_size"] and (config["cell"] != "lstm"
                                or config["proj_size"] >= config["hidden_size"]):
        raise ValueError(f"{where}: __config__ gives proj_size={config['proj_size']}; "
                         f"it must be 0, or smaller than hidden_size="
                         f"{config['hidden_size']} for cell='lstm'; got "
                         f"cell={config['cell']!r}")
    return config


def _check_arrays(config: Mapping[str, Any], entries: Mapping[str, _Entry], where) -> None:
    """The arrays are exactly the configuration's, of its shapes, of real numbers."""
    D = 2 if config["bidirectional"] else 1
    L, H, P = config["num_layers"], config["hidden_size"], config["proj_size"]
    recurrent = L * D * ((4 if config["bias"] else 2) + (1 if P else 0))
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
                                          config["bidirectional"], cell=config["cell"],
                                          proj_size=P))
    merged = D == 2 and config["merge_mode"] != "concat"
    shapes["V"] = (config["output_size"], (1 if merged else D) * (P or H))
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


def save(path, config: Mapping[str, Any], params: Mapping[str, np.ndarray]) -> None:
    """Write ``config`` (as JSON) and ``params`` to ``path``, atomically.

    A str or path-like is written exactly as given, a symbolic link followed, through a
    temporary file renamed over it; a writable binary file is written in place.
    """
    arrays = dict(__config__=np.array(json.dumps(config)), **params)
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


def load(path, build: Callable[[dict[str, Any]], Any]) -> Any:
    """Check the checkpoint at ``path`` whole, then ``build(config)`` and fill its params.

    ``build`` receives the checked configuration and returns a model whose ``params``
    dict holds an array of every shape the configuration gives; each is overwritten
    with the file's. Returns that model.
    """
    where = (os.fsdecode(path) if isinstance(path, (str, bytes, os.PathLike))
             else "the file")
    if hasattr(path, "read"):
        return _load_from(path, where, build)
    try:
        fspath = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str, a path-like or a readable binary file; "
                        f"got {type(path).__name__}") from None
    with open(fspath, "rb") as f:
        return _load_from(f, where, build)


def _load_from(f, where, build):
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
        model = build(config)
        for key, entry in entries.items():
            model.params[key][...] = _read_entry(archive, entry, where)
    return model
