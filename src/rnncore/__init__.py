"""rnncore: forward pass and backpropagation through time for recurrent networks:
Elman RNNs (tanh, ReLU), LSTM and GRU.

The time loops run in typed Cython kernels (``backend="cython"``); a plain NumPy
implementation of the same computation (``backend="numpy"``) is the readable reference.
"""
from . import functional, losses, optim
from ._memory import array_cache_info, set_array_cache
from ._parallel import get_num_threads, set_num_threads
from .diagnostics import gradient_norms, plot_gradient_norms, recurrent_regimes
from .functional import backends
from .gradcheck import gradient_check
from .model import RNNModel
from .optim import SGD, Adagrad, Adam, clip_grad_norm, clip_grad_value, truncated_bptt
from .rnn import GRU, LSTM, RNN

__all__ = ["RNN", "LSTM", "GRU", "RNNModel", "functional", "losses", "optim", "backends",
           "get_num_threads", "set_num_threads", "set_array_cache",
           "array_cache_info", "SGD", "Adagrad", "Adam",
           "clip_grad_norm", "clip_grad_value", "truncated_bptt", "gradient_check",
           "gradient_norms", "recurrent_regimes", "plot_gradient_norms", "__version__"]
__version__ = "0.1.0"
