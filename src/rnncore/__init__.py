"""rnncore: forward pass and backpropagation through time for Elman RNNs.

The time loops run in typed Cython kernels (``backend="cython"``); a plain NumPy
implementation of the same computation (``backend="numpy"``) is the readable reference.
"""
from . import functional
from ._parallel import get_num_threads, set_num_threads
from .functional import backends
from .rnn import RNN

__all__ = ["RNN", "functional", "backends", "get_num_threads", "set_num_threads",
           "__version__"]
__version__ = "0.1.0"
