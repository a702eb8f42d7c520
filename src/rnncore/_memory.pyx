"""A cache of large blocks for the arrays rnncore's calls allocate.

A large block that glibc's malloc takes from the operating system (mmap, or the top of
the heap it trims again when the block is freed) costs a page fault per 4 KiB page on
first touch, about 1 µs each on these machines: 250 µs for a 1 MiB weight gradient,
more than a short call's arithmetic. A training loop frees the previous step's
gradients and outputs just before it asks for the same sizes again, so rnncore keeps
recently freed blocks of at least 128 KiB (up to :func:`set_array_cache`'s limit) and
hands them out again.

The cache is a NumPy memory handler (NEP 49) made current only inside rnncore's own
calls (:func:`enter`, :func:`leave`, per thread and context): the caller's other arrays
never pass through it. An array allocated inside remembers its handler and returns its
block to the cache whenever it dies, wherever that is. ``RNNCORE_ARRAY_CACHE_MB`` sets
the limit at import (default 256 MiB; 0 turns the cache off).
"""
import os

from cpython.pycapsule cimport PyCapsule_New
from libc.string cimport strcpy

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *, size_t) noexcept nogil
        void *(*calloc)(void *, size_t, size_t) noexcept nogil
        void *(*realloc)(void *, void *, size_t) noexcept nogil
        void (*free)(void *, void *, size_t) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        unsigned char version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    int _import_array() except -1

cdef extern from "_memory.h" nogil:
    ctypedef struct rnn_cache:
        int count
        size_t bytes, limit
        unsigned long long hits, misses
    rnn_cache rnn_the_cache
    void *rnn_cache_malloc(void *ctx, size_t size) noexcept
    void *rnn_cache_calloc(void *ctx, size_t nelem, size_t elsize) noexcept
    void *rnn_cache_realloc(void *ctx, void *ptr, size_t size) noexcept
    void rnn_cache_free(void *ctx, void *ptr, size_t size) noexcept
    size_t rnn_cache_set_limit(rnn_cache *c, size_t limit) noexcept
    size_t RNN_CACHE_MIN_BYTES
    void rnn_cache_after_fork_in_child() noexcept
    int pthread_atfork(void (*prepare)() noexcept, void (*parent)() noexcept,
                       void (*child)() noexcept)

_import_array()

cdef PyDataMem_Handler _handler
strcpy(_handler.name, b"rnncore_block_cache")
_handler.version = 1
_handler.allocator.ctx = &rnn_the_cache
_handler.allocator.malloc = rnn_cache_malloc
_handler.allocator.calloc = rnn_cache_calloc
_handler.allocator.realloc = rnn_cache_realloc
_handler.allocator.free = rnn_cache_free
# NumPy requires the capsule's name; the capsule lives as long as the module, which
# every array allocated through it keeps alive by holding the capsule.
cdef object _capsule = PyCapsule_New(&_handler, "mem_handler", NULL)

MIN_BYTES = RNN_CACHE_MIN_BYTES


def _limit_from_environment():
    value = os.environ.get("RNNCORE_ARRAY_CACHE_MB", "").strip()
    if not value:
        return 256 << 20
    try:
        mib = float(value)
    except ValueError:
        raise ValueError(f"RNNCORE_ARRAY_CACHE_MB must be a number of MiB >= 0; "
                         f"got {value!r}") from None
    if not mib >= 0:
        raise ValueError(f"RNNCORE_ARRAY_CACHE_MB must be a number of MiB >= 0; "
                         f"got {value!r}")
    return int(mib * (1 << 20))


rnn_cache_set_limit(&rnn_the_cache, _limit_from_environment())
# a child made by fork while another thread held the lock starts with it free
if pthread_atfork(NULL, NULL, rnn_cache_after_fork_in_child) != 0:
    raise MemoryError("cannot register the block cache's fork handler")


cdef void *cache_alloc(size_t nbytes) noexcept nogil:
    return rnn_cache_malloc(&rnn_the_cache, nbytes)


cdef void cache_release(void *block) noexcept nogil:
    rnn_cache_free(&rnn_the_cache, block, 0)


def enter():
    """Make the cache the NumPy memory handler of this thread's context.

    Returns the handler it replaced, for :func:`leave`; None (and nothing changed)
    when the cache's limit is 0.
    """
    if rnn_the_cache.limit == 0:
        return None
    return PyDataMem_SetHandler(_capsule)


def leave(previous):
    """Give back the handler :func:`enter` replaced (nothing if it returned None)."""
    if previous is not None:
        PyDataMem_SetHandler(previous)


def set_array_cache(max_bytes):
    """Set how many bytes of freed blocks rnncore keeps for its next calls.

    Parameters
    ----------
    max_bytes : int
        The limit, at least 0. 0 frees every cached block and turns the cache off.
        Blocks beyond a lowered limit are freed at once, the oldest first.

    Returns
    -------
    int
        The previous limit.
    """
    if isinstance(max_bytes, bool) or not hasattr(max_bytes, "__index__"):
        raise TypeError(f"max_bytes must be an int >= 0; got {type(max_bytes).__name__}")
    max_bytes = max_bytes.__index__()
    if max_bytes < 0:
        raise ValueError(f"max_bytes must be an int >= 0; got {max_bytes}")
    return rnn_cache_set_limit(&rnn_the_cache, max_bytes)


def array_cache_info():
    """What the block cache holds and has done.

    Returns
    -------
    dict
        ``blocks`` and ``bytes`` held now, ``limit``, and since import ``hits`` (large
        allocations served from the cache) and ``misses`` (large allocations it could
        not serve).
    """
    return {"blocks": rnn_the_cache.count, "bytes": rnn_the_cache.bytes,
            "limit": rnn_the_cache.limit, "hits": rnn_the_cache.hits,
            "misses": rnn_the_cache.misses}
