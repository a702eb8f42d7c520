# The block cache of _memory.pyx, for the kernels' own buffers (workspaces, packed
# panels): the same cache, and limit, as the arrays rnncore's calls allocate.
cdef void *cache_alloc(size_t nbytes) noexcept nogil   # 64-byte aligned; NULL if out of memory
cdef void cache_release(void *block) noexcept nogil    # NULL is allowed
