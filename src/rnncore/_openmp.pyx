"""The parts of a split call as one parallel region of an OpenMP runtime already
loaded in the process.

torch's CPU wheels load GNU OpenMP, and after each parallel op their worker threads
spin for milliseconds, waiting for the master's next region. A worker thread of
rnncore's own then shares its CPU with a spinning one. Run as a region of that runtime
from the same thread, the parts are taken by the spinning worker itself (docs/
perf-notes.md §86, §90). rnncore links no OpenMP: :func:`find` asks the dynamic loader
for a runtime that is already there: GNU's, or LLVM's and Intel's (torch builds of
other distributions), which serve GCC's entry point, ``GOMP_parallel``, with the same
meaning.
"""
from cpython.ref cimport PyObject

cdef extern from "_openmp.h" nogil:
    ctypedef void (*rnn_omp_body)(void *) noexcept nogil
    ctypedef struct rnn_omp:
        void (*parallel)(rnn_omp_body, void *, unsigned, unsigned) noexcept nogil
        int (*num_threads)() noexcept nogil
        int (*thread_num)() noexcept nogil
    int rnn_omp_find(rnn_omp *omp, const char *soname)

cdef rnn_omp _omp              # filled by find(), once it finds a runtime
cdef unsigned long long _regions = 0

# The runtimes looked for, by soname, in this order: GNU's (GCC's OpenMP programs,
# torch's wheels), LLVM's (as Debian and conda-forge name it) and Intel's.
SONAMES = ("libgomp.so.1", "libomp.so.5", "libomp.so", "libiomp5.so")
_runtime = None                # the soname find() found


def find():
    """Whether the process has loaded one of the OpenMP runtimes of :data:`SONAMES`;
    looked up until found, then kept (the runtime is never unloaded after that).

    Returns
    -------
    bool
    """
    global _runtime
    if _runtime is None:
        for soname in SONAMES:
            if rnn_omp_find(&_omp, soname.encode()):
                _runtime = soname
                break
    return _runtime is not None


def runtime():
    """The soname of the runtime :func:`find` found, or None.

    Returns
    -------
    str or None
    """
    return _runtime


def regions():
    """How many calls of :func:`run` ran as a region of the runtime (for tests).

    Returns
    -------
    int
    """
    return _regions


cdef struct region:
    PyObject *calls        # list of callables, one per thread
    PyObject *outcomes     # list, a (result, exception) pair per call
    int parts
    int ran                # set by thread 0 when the team had `parts` threads


cdef void _part(void *data) noexcept nogil:
    cdef region *r = <region *>data
    # A team of fewer threads (inside another region, or a thread limit) runs none:
    # a split call's parts wait for each other at a barrier, all must run at once.
    if _omp.num_threads() != r.parts:
        return
    cdef int i = _omp.thread_num()
    with gil:
        try:
            outcome = ((<object>r.calls)[i](), None)
        except BaseException as error:
            outcome = (None, error)
        (<list>r.outcomes)[i] = outcome
    if i == 0:
        r.ran = 1


def run(list calls):
    """Call ``calls[i]()`` on thread i of a region of ``len(calls)`` threads, this
    thread being thread 0.

    Parameters
    ----------
    calls : list of callable
        At least one; each called exactly once if the region runs.

    Returns
    -------
    list of tuple or None
        Each call's ``(result, None)`` or ``(None, the exception it raised)``, in the
        order of ``calls``; None, with nothing called, if no runtime was found
        (:func:`find`) or the runtime gave the region fewer threads than calls.
    """
    global _regions
    if not calls:
        raise ValueError("calls must hold at least one callable; got none")
    if not find():
        return None
    cdef list outcomes = [None] * len(calls)
    cdef region r
    r.calls = <PyObject *>calls
    r.outcomes = <PyObject *>outcomes
    r.parts = len(calls)
    r.ran = 0
    with nogil:
        _omp.parallel(_part, &r, <unsigned>r.parts, 0)
    if not r.ran:
        return None
    _regions += 1
    return outcomes
