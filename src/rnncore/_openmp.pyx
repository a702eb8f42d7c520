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
from libc.stdlib cimport calloc, free

cdef extern from "_openmp.h" nogil:
    ctypedef void (*rnn_omp_body)(void *) noexcept nogil
    ctypedef struct rnn_omp:
        void (*parallel)(rnn_omp_body, void *, unsigned, unsigned) noexcept nogil
        int (*num_threads)() noexcept nogil
        int (*thread_num)() noexcept nogil
    int rnn_omp_find(rnn_omp *omp, const char *soname)

from rnncore._task cimport (rnn_task, rnn_run_tasks, rnn_barrier, rnn_barrier_wait,
                            rnn_barrier_abort)

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    cdef struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clock, timespec *t)
    int CLOCK_MONOTONIC

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


cdef inline double seconds() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + 1e-9 * t.tv_nsec


# One section's part for one thread: a chain of the kernels' C tasks (the address of a
# _kernels.Part, run without the GIL), else a Python callable (called with it), else
# nothing (the section has fewer parts than threads).
cdef struct slot:
    rnn_task *task
    PyObject *call


cdef struct two_sections:
    slot *slots            # [2][parts]: the first section's, then the second's
    PyObject *errors       # list, the exception each thread's parts raised, or None
    double *times          # [parts][2]: each thread's time in each section
    rnn_barrier barrier
    int parts
    int ran                # set by thread 0 when the team had `parts` threads


cdef int run_slot(two_sections *r, int section, int i) noexcept nogil:
    """Thread i's part of a section: 0 if it ran (or there is none), -1 if it failed
    (its error in r.errors[i])."""
    cdef slot *s = &r.slots[section * r.parts + i]
    if s.task != NULL:
        if rnn_run_tasks(s.task) == 0:
            return 0
        with gil:
            (<list>r.errors)[i] = MemoryError("cannot allocate a kernel's buffers")
        return -1
    if s.call != NULL:
        with gil:
            try:
                (<object>s.call)()
            except BaseException as error:
                (<list>r.errors)[i] = error
                return -1
    return 0


cdef void _sections_part(void *data) noexcept nogil:
    cdef two_sections *r = <two_sections *>data
    if _omp.num_threads() != r.parts:   # as _part: every part must run at once
        return
    cdef int i = _omp.thread_num()
    cdef double start = seconds()
    if run_slot(r, 0, i) < 0:
        rnn_barrier_abort(&r.barrier)
    else:
        r.times[2 * i] = seconds() - start
        if rnn_barrier_wait(&r.barrier, r.parts):
            start = seconds()
            if run_slot(r, 1, i) == 0:
                r.times[2 * i + 1] = seconds() - start
    if i == 0:
        r.ran = 1


def run_sections(list first, list second):
    """Run two sections of a split call as one region of ``max(len(first),
    len(second))`` threads, this thread being thread 0: thread i runs ``first[i]``,
    waits at a barrier until every thread has run its part of ``first``, then runs
    ``second[i]``. A part is a ``_kernels.Part`` (run as C, without the GIL: a thread
    whose parts are all such never takes the GIL) or any other callable (called with
    the GIL). A part that fails before the barrier releases the others, who skip
    ``second``.

    Returns
    -------
    tuple or None
        ``(times, error)``: each thread's seconds in each section ([first, second];
        0.0 for a part that did not run whole) and the first thread's error (an
        exception a callable raised, or MemoryError for a Part that could not allocate
        its buffers), or None; None, with nothing run, if no runtime was found
        (:func:`find`) or the runtime gave the region fewer threads.
    """
    global _regions
    cdef int parts = max(len(first), len(second))
    if parts < 1:
        raise ValueError("first or second must hold at least one part; got none")
    if not find():
        return None
    cdef list errors = [None] * parts
    cdef two_sections r
    r.parts, r.ran = parts, 0
    r.barrier.arrived, r.barrier.aborted = 0, 0
    r.errors = <PyObject *>errors
    r.slots = <slot *>calloc(2 * parts, sizeof(slot))
    r.times = <double *>calloc(2 * parts, sizeof(double))
    cdef int section, i
    # the kernels are loaded by the time a split call runs; this links nothing
    from rnncore._kernels import Part
    try:
        if r.slots == NULL or r.times == NULL:
            raise MemoryError("cannot allocate a region's slots")
        for section, parts_of in enumerate((first, second)):
            for i, item in enumerate(parts_of):
                if type(item) is Part:
                    r.slots[section * parts + i].task = <rnn_task *><size_t>item.address
                elif item is not None:
                    r.slots[section * parts + i].call = <PyObject *>item
        with nogil:
            _omp.parallel(_sections_part, &r, <unsigned>parts, 0)
        if not r.ran:
            return None
        _regions += 1
        times = [[r.times[2 * i], r.times[2 * i + 1]] for i in range(parts)]
        error = next((e for e in errors if e is not None), None)
        return times, error
    finally:
        free(r.slots)
        free(r.times)
