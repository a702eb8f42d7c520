/* The pieces of a split call that run without the GIL: a chain of kernel calls
 * (rnn_task, made by _kernels.Part) and the barrier between a call's two sections.
 * Both _kernels (the parts, and its Barrier for rnncore's own workers) and _openmp (a
 * region of an OpenMP runtime running whole sections) include it.
 */
#ifndef RNNCORE_TASK_H
#define RNNCORE_TASK_H

#include <sched.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RNN_CPU_RELAX() _mm_pause()
#else
#define RNN_CPU_RELAX() ((void)0)
#endif

/* One kernel call: run(arg) returns 0, or -1 where it could not allocate its buffers
   (it then computed nothing); `next`, if not NULL, runs after it on the same thread. */
typedef struct rnn_task {
    int (*run)(void *);
    void *arg;
    struct rnn_task *next;
} rnn_task;

/* Run a chain of tasks in order: 0, or -1 at the first that fails (the rest not run). */
static int rnn_run_tasks(const rnn_task *t)
{
    for (; t != NULL; t = t->next)
        if (t->run(t->arg) < 0)
            return -1;
    return 0;
}

/* A barrier of one use for the parts of one split call: each part arrives once
   and waits, spinning (the parts run at once on threads of their own; the wait is
   the parts' imbalance, tens of microseconds) for 2,000 pauses (45 us on Zen 5,
   ~80 on Intel cores), then yielding the CPU: the part it waits for may be queued
   on the same CPU (more parts than free CPUs, or a worker woken onto its caller's
   CPU), and a yield with nothing else to run returns in under a microsecond
   (perf-notes section 61). 1 when every part arrived, 0 when one gave up
   (rnn_barrier_abort: it failed before arriving). */
#define RNN_BARRIER_SPINS 2000
typedef struct { int arrived; int aborted; } rnn_barrier;

static int rnn_barrier_wait(rnn_barrier *b, int parts)
{
    long spins = 0;
    __atomic_fetch_add(&b->arrived, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&b->arrived, __ATOMIC_ACQUIRE) < parts) {
        if (__atomic_load_n(&b->aborted, __ATOMIC_ACQUIRE))
            return 0;
        if (++spins < RNN_BARRIER_SPINS)
            RNN_CPU_RELAX();
        else
            sched_yield();
    }
    return !__atomic_load_n(&b->aborted, __ATOMIC_ACQUIRE);
}

static void rnn_barrier_abort(rnn_barrier *b)
{
    __atomic_store_n(&b->aborted, 1, __ATOMIC_RELEASE);
}

#endif
