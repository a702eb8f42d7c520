# The pieces of a split call that run without the GIL (_task.h): a chain of kernel
# calls, and the barrier between a call's two sections. Declared once for _kernels
# (which makes the tasks) and _openmp (which runs them as a region).
cdef extern from "_task.h" nogil:
    ctypedef struct rnn_task:
        int (*run)(void *) noexcept nogil
        void *arg
        rnn_task *next
    int rnn_run_tasks(const rnn_task *t)
    ctypedef struct rnn_barrier:
        int arrived
        int aborted
    int rnn_barrier_wait(rnn_barrier *b, int parts)
    void rnn_barrier_abort(rnn_barrier *b)
