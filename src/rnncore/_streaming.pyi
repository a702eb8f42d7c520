"""Type stubs of the streaming extension (_streaming.pyx)."""
from typing import Any

import numpy as np

CELLS: tuple[str, ...]


class Stream:
    cell: str
    isa: str
    batch_size: int
    input_size: int
    hidden_size: int
    output_size: int
    num_layers: int
    batch_first: bool
    dtype: np.dtype

    def __init__(self, cell: str, layers: list[tuple[Any, ...]], batch_size: int,
                 relu: bool, batch_first: bool, h0: np.ndarray, c0: np.ndarray | None,
                 isa_index: int, own_gemm: bool) -> None: ...
    def step(self, x_t: Any) -> np.ndarray: ...
    def run(self, x_chunk: Any) -> np.ndarray: ...
    @property
    def state(self) -> np.ndarray | tuple[np.ndarray, np.ndarray]: ...
    def reset(self, index: Any = None) -> None: ...
