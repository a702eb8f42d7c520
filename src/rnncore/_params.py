"""Parameter layouts of the three cells, and reading a parameter mapping into a plan.

A parameter mapping has PyTorch's keys (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``, LSTM's ``weight_hr_l0``, ``..._reverse``, ``..._l1``,
...). The cell is given by the caller (the shapes alone cannot tell an RNN of hidden
size 4H from an LSTM of hidden size H); the number of layers, the directions, the sizes,
the projection and whether there is a bias are read from the keys and shapes.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

__all__ = ["CELLS", "param_shapes", "param_count", "check_param_memory"]

CELLS = ("rnn", "lstm", "gru")
GATES = {"rnn": 1, "lstm": 4, "gru": 3}       # rows of W_ih and W_hh per hidden unit
_NAMES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")
KINDS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")


def check_cell(cell) -> str:
    """``cell`` if it names a cell, else a ValueError listing them."""
    if not isinstance(cell, str) or cell not in GATES:
        raise ValueError(f"cell must be one of {CELLS}; got {cell!r}")
    return cell


def param_shapes(input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, bidirectional: bool = False, *, cell: str = "rnn",
                 proj_size: int = 0) -> dict[str, tuple]:
    """The parameter keys and shapes of a cell's network, in PyTorch's order.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
        K, H and L.
    bias : bool
    bidirectional : bool
    cell : {"rnn", "lstm", "gru"}
        The gates G per hidden unit: 1, 4 (i, f, g, o) and 3 (r, z, n).
    proj_size : int
        P > 0 (LSTM only): the hidden state is projected to P values by ``weight_hr``.

    Returns
    -------
    dict
        ``{"weight_ih_l0": (G*H, K), "weight_hh_l0": (G*H, P or H), "bias_ih_l0":
        (G*H,), "bias_hh_l0": (G*H,), "weight_hr_l0": (P, H), ...}``, with ``_reverse``
        keys after each layer's forward keys when bidirectional; layer k > 0 takes
        D*(P or H) inputs.
    """
    G = GATES[check_cell(cell)]
    if proj_size and cell != "lstm":
        raise ValueError(f"proj_size is an LSTM option; got proj_size={proj_size} for "
                         f"cell={cell!r}")
    D = 2 if bidirectional else 1
    H, P = hidden_size, proj_size or hidden_size
    shapes = {}
    for k in range(num_layers):
        for sfx in ("", "_reverse")[:D]:
            shapes[f"weight_ih_l{k}{sfx}"] = (G * H, input_size if k == 0 else D * P)
            shapes[f"weight_hh_l{k}{sfx}"] = (G * H, P)
            if bias:
                shapes[f"bias_ih_l{k}{sfx}"] = (G * H,)
                shapes[f"bias_hh_l{k}{sfx}"] = (G * H,)
            if proj_size:
                shapes[f"weight_hr_l{k}{sfx}"] = (proj_size, H)
    return shapes


def param_count(input_size: int, hidden_size: int, num_layers: int = 1,
                bias: bool = True, bidirectional: bool = False, *, cell: str = "rnn",
                proj_size: int = 0) -> int:
    """The number of parameters :func:`param_shapes` describes, counted without it.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
    bias, bidirectional : bool
    cell : {"rnn", "lstm", "gru"}
    proj_size : int

    Returns
    -------
    int
    """
    G = GATES[check_cell(cell)]
    D = 2 if bidirectional else 1
    H, P = hidden_size, proj_size or hidden_size
    per_direction = G * H * P + (2 * G * H if bias else 0) + proj_size * H
    return D * (G * H * input_size + per_direction
                + (num_layers - 1) * (G * H * D * P + per_direction))


def check_param_memory(input_size: int, hidden_size: int, num_layers: int, bias: bool,
                       bidirectional: bool, dtype, *, cell: str = "rnn",
                       proj_size: int = 0) -> None:
    """Raise ValueError, before anything is allocated, for parameters larger than memory.

    Parameters
    ----------
    input_size, hidden_size, num_layers : int
    bias, bidirectional : bool
    dtype : np.dtype
    cell : {"rnn", "lstm", "gru"}
    proj_size : int
    """
    need = param_count(input_size, hidden_size, num_layers, bias, bidirectional,
                       cell=cell, proj_size=proj_size) * np.dtype(dtype).itemsize
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


@dataclass(frozen=True)
class Config:
    """The configuration a parameter mapping describes."""
    cell: str
    input_size: int
    hidden_size: int
    num_layers: int
    bidirectional: bool
    bias: bool
    dtype: np.dtype
    proj_size: int = 0

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def G(self) -> int:
        return GATES[self.cell]

    @property
    def out_size(self) -> int:
        """The width of the hidden state h (P with a projection, else H)."""
        return self.proj_size or self.hidden_size


def check_float(name: str, a: np.ndarray) -> None:
    if a.dtype not in FLOATS:
        raise TypeError(f"{name} must be float32 or float64; got dtype {a.dtype}")


def as_array(name: str, value) -> np.ndarray:
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


_ndarray = np.ndarray                    # one global look-up per parameter, not two


def read_params(params: Mapping[str, Any], cell: str) -> tuple[Plan, list[np.ndarray]]:
    """Check a parameter mapping of ``cell``; its plan and its values as arrays, in its
    order.

    One pass over the mapping: only values that are not native-order ndarrays go
    through :func:`as_array`. Everything else the checks need is in the signature
    (keys, shapes, dtypes), whose plan is computed once.
    """
    if type(params) is CheckedParams and params.cell == cell:
        return params.plan, params.arrays
    if type(params) is not dict and not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of parameter names to arrays; "
                        f"got {type(params).__name__}")
    arrays, signature = [], [cell]
    for key, value in params.items():
        if type(value) is not _ndarray or not value.dtype.isnative:
            value = as_array(f"params[{key!r}]", value)
        arrays.append(value)
        signature.append((key, value.shape, value.dtype))
    return _plan_for(tuple(signature)), arrays


class CheckedParams(Mapping):
    """A read-only parameter mapping checked once, for an owner that keeps it between
    calls (the torch drop-ins' plan): :func:`read_params` returns what it read when the
    mapping was made, without reading the parameters again.

    Its arrays are those given, not copies: their values may change in place (an
    optimiser step), never their shapes, dtypes or memory; an owner whose weights change
    otherwise makes a new mapping (the drop-ins' plan is rebuilt then).

    Parameters
    ----------
    params : mapping of str to ndarray
        As for :func:`rnncore.functional.forward`, native-order ndarrays.
    cell : {"rnn", "lstm", "gru"}

    Raises
    ------
    ValueError, TypeError
        As :func:`read_params`, for parameters that do not describe one ``cell``
        network.
    """

    __slots__ = ("_params", "cell", "plan", "arrays")

    def __init__(self, params: Mapping[str, Any], cell: str):
        self._params = dict(params)
        self.cell = cell
        self.plan, self.arrays = read_params(self._params, cell)

    def __getitem__(self, key):
        return self._params[key]

    def __iter__(self):
        return iter(self._params)

    def __len__(self) -> int:
        return len(self._params)


_MAX_KEPT_ZEROS = 1 << 16               # values of a zero state a plan keeps


class Plan:
    """What a call needs that depends only on the cell and the parameters' keys, shapes
    and dtypes.

    Built once per configuration by :func:`_plan_for`; it holds positions and names,
    never values, so it cannot go stale when the caller's arrays change.

    Attributes
    ----------
    cfg : Config
    layers : tuple
        ``layers[l][d] = (w_ih, w_hh, b_ih, b_hh, w_hr)``: the positions of layer ``l``,
        direction ``d``'s parameters in the mapping's order (None for those the
        configuration has not: biases without bias, ``w_hr`` without projection).
    grad_keys : tuple of str
        The parameter keys in PyTorch's order (:func:`param_shapes`).
    grad_slots : tuple
        ``grad_slots[l][d]``: the positions of the same five in ``grad_keys``.
    zero_bias : ndarray, shape (G*H,), read-only
        The bias of a configuration without bias.
    widest_input : int
        max(K, D*(P or H)), the widest input of a layer.
    widths : tuple of int
        (widest_input, G*H): the widths ``_kernels.check_sizes`` checks.
    stacked : bool
        An Elman network of one direction (any number of layers): the network whose
        calls take ``functional``'s short path, its layers back to back, when nothing
        else routes them around it.
    """

    __slots__ = ("cfg", "layers", "grad_keys", "grad_slots", "zero_bias", "widest_input",
                 "widths", "stacked", "_zero_states")

    def __init__(self, cfg: Config, keys: list[str]):
        self.cfg = cfg
        self.grad_keys = tuple(param_shapes(cfg.input_size, cfg.hidden_size,
                                            cfg.num_layers, cfg.bias, cfg.bidirectional,
                                            cell=cfg.cell, proj_size=cfg.proj_size))
        names = [[[f"{kind}_l{layer}{sfx}" for kind in KINDS]
                  for sfx in ("", "_reverse")[:cfg.D]] for layer in range(cfg.num_layers)]
        in_mapping = {key: i for i, key in enumerate(keys)}
        in_grads = {key: i for i, key in enumerate(self.grad_keys)}
        self.layers = tuple(tuple(tuple(in_mapping.get(n) for n in direction)
                                  for direction in layer) for layer in names)
        self.grad_slots = tuple(tuple(tuple(in_grads.get(n) for n in direction)
                                      for direction in layer) for layer in names)
        self.zero_bias = np.zeros(cfg.G * cfg.hidden_size, dtype=cfg.dtype)
        self.zero_bias.setflags(write=False)
        self.widest_input = max(cfg.input_size, cfg.D * cfg.out_size)
        self.widths = (self.widest_input, cfg.G * cfg.hidden_size)
        self.stacked = cfg.cell == "rnn" and cfg.D == 1
        self._zero_states: dict[int, np.ndarray] = {}

    def zero_state(self, B: int) -> np.ndarray:
        """A read-only (B, H) array of zeros in the configuration's dtype: the kernels'
        initial state when a call gives none, and ∂L/∂h_n when a backward gives none.
        Up to 65,536 values, it is kept for the next call of the same batch size (the
        few most recent sizes): for a short call, allocating it costs what the call's
        Python layer can least spare; a larger one is allocated each time.

        Parameters
        ----------
        B : int
            The batch size.

        Returns
        -------
        ndarray, shape (B, hidden_size), read-only
        """
        zeros = self._zero_states.get(B)
        if zeros is None:
            zeros = np.zeros((B, self.cfg.hidden_size), self.cfg.dtype)
            zeros.setflags(write=False)
            if zeros.size > _MAX_KEPT_ZEROS:
                return zeros
            if len(self._zero_states) >= 8:
                self._zero_states.clear()
            self._zero_states[B] = zeros
        return zeros


@functools.lru_cache(maxsize=64)
def _plan_for(signature: tuple) -> Plan:
    """The plan of the configuration described by (cell, (key, shape, dtype), ...)."""
    return Plan(_config_for(signature[0], signature[1:]), [k for k, _, _ in signature[1:]])


def _config_for(cell: str, signature: tuple) -> Config:
    """The configuration described by ((key, shape, dtype), ...), or a clear error."""
    shapes = {}
    for key, shape, dtype in signature:
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ValueError(f"params has an unexpected key {key!r}; expected keys like "
                             f"'weight_ih_l0', 'bias_hh_l1_reverse'")
        if dtype not in FLOATS:
            raise TypeError(f"params[{key!r}] must be float32 or float64; got dtype {dtype}")
        shapes[key] = (shape, dtype)
    if "weight_ih_l0" not in shapes or "weight_hh_l0" not in shapes:
        raise ValueError("params must hold at least 'weight_ih_l0' and 'weight_hh_l0'; "
                         f"got keys {sorted(shapes)}")
    G, name = GATES[cell], _NAMES[cell]
    rows = "hidden_size" if G == 1 else f"{G}*hidden_size"
    w_shape, w_dtype = shapes["weight_ih_l0"]
    if len(w_shape) != 2:
        raise ValueError(f"params['weight_ih_l0'] must have shape ({rows}, input_size); "
                         f"got {w_shape}")
    GH, K = w_shape
    if GH < G or GH % G:
        what = "at least one row" if G == 1 else f"a positive multiple of {G} rows ({rows})"
        raise ValueError(f"params['weight_ih_l0'] must have {what} (hidden_size >= 1); "
                         f"got shape {w_shape}")
    H = GH // G
    hr = shapes.get("weight_hr_l0", ((0,), None))[0]
    P = hr[0] if cell == "lstm" and len(hr) == 2 else 0
    L = 1 + max(int(_KEY.fullmatch(k).group(3)) for k in shapes)
    cfg = Config(cell=cell, input_size=K, hidden_size=H, num_layers=L,
                 bidirectional="weight_ih_l0_reverse" in shapes,
                 bias="bias_ih_l0" in shapes, dtype=w_dtype, proj_size=P)
    expected = param_shapes(K, H, L, cfg.bias, cfg.bidirectional, cell=cell, proj_size=P)
    if set(shapes) != set(expected):
        missing = sorted(set(expected) - set(shapes))
        extra = sorted(set(shapes) - set(expected))
        raise ValueError(f"params keys do not describe one {name} (num_layers={L}, "
                         f"bidirectional={cfg.bidirectional}, bias={cfg.bias}"
                         f"{f', proj_size={P}' if P else ''}): "
                         f"missing {missing}, unexpected {extra}")
    for key, shape in expected.items():
        given, dtype = shapes[key]
        if given != shape:
            raise ValueError(f"params[{key!r}] must have shape {shape} for "
                             f"input_size={K}, hidden_size={H}"
                             f"{f', proj_size={P}' if P else ''}; got {given}")
        if dtype != cfg.dtype:
            raise TypeError(f"all parameters must share one dtype; params[{key!r}] is "
                            f"{dtype} but params['weight_ih_l0'] is {cfg.dtype}")
    return cfg
