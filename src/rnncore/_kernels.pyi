"""Type stub of the compiled kernels (see _kernels.pyx)."""
import numpy as np
from numpy.typing import NDArray

CHECKED: bool
ISAS: tuple[str, ...]
FORWARD_WRITES_OUTPUT: bool

def isa() -> str: ...
def supported_isas() -> tuple[str, ...]: ...
def set_isa(name: str | None = ...) -> None: ...
def short_call_rows() -> int: ...
def set_short_call_rows(rows: int | None = ...) -> None: ...
def blas_threads() -> int: ...
def set_blas_threads(n: int) -> None: ...
def layer_forward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                  w_hh: NDArray[np.floating], b: NDArray[np.floating],
                  h0: NDArray[np.floating], lengths: NDArray[np.int64],
                  reverse: bool, relu: bool, out: NDArray[np.floating] | None = ...,
                  rows: tuple[int, int] | None = ..., projected: bool = ...,
                  y: NDArray[np.floating] | None = ...) -> NDArray[np.floating]: ...
class Barrier:
    parts: int
    def __init__(self, parts: int) -> None: ...
    def wait(self) -> bool: ...
    def abort(self) -> None: ...
    @property
    def arrived(self) -> int: ...
def layer_forward_owned(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                        w_hh: NDArray[np.floating], b_ih: NDArray[np.floating],
                        b_hh: NDArray[np.floating] | None, h0: NDArray[np.floating],
                        lengths: NDArray[np.int64], relu: bool, snapshot: bool,
                        h_n: NDArray[np.floating] | None = ..., output: bool = ...
                        ) -> tuple[NDArray[np.floating], tuple, NDArray[np.floating] | None]: ...
def input_projection(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                     out: NDArray[np.floating], reverse: bool,
                     steps: tuple[int, int] | None = ...) -> None: ...
def backward_steps(w_hh: NDArray[np.floating], hs: NDArray[np.floating],
                   dy: NDArray[np.floating], dh_n: NDArray[np.floating],
                   lengths: NDArray[np.int64], reverse: bool, relu: bool,
                   delta: NDArray[np.floating], dh0: NDArray[np.floating],
                   rows: tuple[int, int] | None = ...) -> None: ...
def backward_weights(x: NDArray[np.floating], hs: NDArray[np.floating],
                     delta: NDArray[np.floating], reverse: bool,
                     dw_ih: NDArray[np.floating], dw_hh: NDArray[np.floating],
                     db: NDArray[np.floating],
                     part: tuple[int, int] | tuple[int, int, int] | None = ...,
                     eps: NDArray[np.floating] | None = ...,
                     db_hh: NDArray[np.floating] | None = ...,
                     dhs: NDArray[np.floating] | None = ...,
                     ms: NDArray[np.floating] | None = ...,
                     dw_hr: NDArray[np.floating] | None = ...) -> None: ...
def _row_probe(a: NDArray[np.floating], row: int) -> float: ...
def splits_are_exact(B: int, H: int, single: bool, rows: int = ...) -> bool: ...
def layer_backward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                   w_hh: NDArray[np.floating], hs: NDArray[np.floating],
                   dy: NDArray[np.floating], dh_n: NDArray[np.floating],
                   lengths: NDArray[np.int64], reverse: bool, relu: bool,
                   dx: NDArray[np.floating] | None = ..., need_dh0: bool = ...
                   ) -> tuple[NDArray[np.floating] | None, NDArray[np.floating],
                              NDArray[np.floating], NDArray[np.floating],
                              NDArray[np.floating]]: ...
def layer_backward_arrays(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                          w_hh: NDArray[np.floating], hs: NDArray[np.floating],
                          dy: NDArray[np.floating], dh_n: NDArray[np.floating],
                          lengths: NDArray[np.int64], relu: bool,
                          dx: NDArray[np.floating] | None = ..., need_dh0: bool = ...
                          ) -> tuple[NDArray[np.floating] | None, NDArray[np.floating],
                                     NDArray[np.floating], NDArray[np.floating]]: ...
def input_grad(delta: NDArray[np.floating], w_ih: NDArray[np.floating],
               dx: NDArray[np.floating], accumulate: bool, rows: int = ...) -> None: ...
def matmul(a: NDArray[np.floating], b: NDArray[np.floating], out: NDArray[np.floating],
           trans_a: bool = ..., trans_b: bool = ...) -> None: ...
def check_sizes(T: int, B: int, K: int, H: int) -> None: ...
def _bounds_probe(a: NDArray[np.floating], i: int) -> float: ...
def blas_core() -> str: ...
def whole_sequence_gemm() -> str: ...
def set_whole_sequence_gemm(name: str | None = ...) -> None: ...
def lstm_layer_forward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                       w_hh: NDArray[np.floating], b: NDArray[np.floating],
                       w_hr: NDArray[np.floating] | None, h0: NDArray[np.floating],
                       c0: NDArray[np.floating], lengths: NDArray[np.int64], reverse: bool,
                       out: tuple[NDArray[np.floating], NDArray[np.floating],
                                  NDArray[np.floating]] | None = ...,
                       rows: tuple[int, int] | None = ..., projected: bool = ...,
                       y: NDArray[np.floating] | None = ...
                       ) -> tuple[NDArray[np.floating], NDArray[np.floating],
                                  NDArray[np.floating]]: ...
def lstm_backward_steps(w_hh: NDArray[np.floating], w_hr: NDArray[np.floating] | None,
                        hs: NDArray[np.floating], cs: NDArray[np.floating],
                        gates: NDArray[np.floating], dy: NDArray[np.floating],
                        dh_n: NDArray[np.floating], dc_n: NDArray[np.floating],
                        lengths: NDArray[np.int64], reverse: bool,
                        delta: NDArray[np.floating], dh0: NDArray[np.floating],
                        dc0: NDArray[np.floating], dhs: NDArray[np.floating] | None = ...,
                        ms: NDArray[np.floating] | None = ...,
                        rows: tuple[int, int] | None = ...) -> None: ...
def gru_backward_steps(w_hh: NDArray[np.floating], hs: NDArray[np.floating],
                       saved: NDArray[np.floating], dy: NDArray[np.floating],
                       dh_n: NDArray[np.floating], lengths: NDArray[np.int64],
                       reverse: bool, delta: NDArray[np.floating],
                       eps: NDArray[np.floating], dh0: NDArray[np.floating],
                       rows: tuple[int, int] | None = ...) -> None: ...
def lstm_layer_backward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                        w_hh: NDArray[np.floating], w_hr: NDArray[np.floating] | None,
                        hs: NDArray[np.floating], cs: NDArray[np.floating],
                        gates: NDArray[np.floating], dy: NDArray[np.floating],
                        dh_n: NDArray[np.floating], dc_n: NDArray[np.floating],
                        lengths: NDArray[np.int64], reverse: bool
                        ) -> tuple[NDArray[np.floating], NDArray[np.floating],
                                   NDArray[np.floating], NDArray[np.floating],
                                   NDArray[np.floating], NDArray[np.floating] | None,
                                   NDArray[np.floating]]: ...
def gru_layer_forward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                      w_hh: NDArray[np.floating], b_ih: NDArray[np.floating],
                      b_hh: NDArray[np.floating], h0: NDArray[np.floating],
                      lengths: NDArray[np.int64], reverse: bool,
                      out: tuple[NDArray[np.floating], NDArray[np.floating]] | None = ...,
                      rows: tuple[int, int] | None = ..., projected: bool = ...,
                      y: NDArray[np.floating] | None = ...
                      ) -> tuple[NDArray[np.floating], NDArray[np.floating]]: ...
def gru_layer_backward(x: NDArray[np.floating], w_ih: NDArray[np.floating],
                       w_hh: NDArray[np.floating], hs: NDArray[np.floating],
                       saved: NDArray[np.floating], dy: NDArray[np.floating],
                       dh_n: NDArray[np.floating], lengths: NDArray[np.int64], reverse: bool
                       ) -> tuple[NDArray[np.floating], NDArray[np.floating],
                                  NDArray[np.floating], NDArray[np.floating],
                                  NDArray[np.floating], NDArray[np.floating]]: ...
