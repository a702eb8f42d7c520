"""Type stubs of the compiled short path (_short.pyx)."""
from typing import Any, Mapping, Sequence

import numpy as np


def stacked_forward(plan: Any, arrays: list[np.ndarray], x: np.ndarray,
                    s0: Sequence[np.ndarray], steps: np.ndarray, relu: bool,
                    snapshot: bool) -> tuple[np.ndarray, np.ndarray, list, list, list]: ...
def forward(x: Any, params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, Any] | None: ...
def stacked_backward(record: Any, dy: np.ndarray, ds_n: Sequence[np.ndarray],
                     need_dx: bool, need_dh0: bool
                     ) -> tuple[np.ndarray | None, np.ndarray | None, list]: ...
def backward(record: Any, dy: Any, need_dx: bool, need_dh0: bool
             ) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, np.ndarray]] | None: ...
