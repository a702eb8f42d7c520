/* An OpenMP parallel region, looked up in a runtime some other library of the process
 * has already loaded (torch's CPU wheels load libgomp.so.1). rnncore does not link
 * OpenMP: it joins the pool that is there (_openmp.pyx, docs/perf-notes.md §90).
 *
 * GOMP_parallel(fn, data, n, 0) runs fn(data) on a team of up to n threads, the caller
 * being thread 0, and returns when all have returned: the entry point GCC (4.9 and
 * later) compiles `#pragma omp parallel num_threads(n)` into, which LLVM's and Intel's
 * runtimes serve too.
 */
#ifndef RNNCORE_OPENMP_H
#define RNNCORE_OPENMP_H

typedef void (*rnn_omp_body)(void *);

typedef struct {
    void (*parallel)(rnn_omp_body, void *, unsigned, unsigned);
    int (*num_threads)(void);
    int (*thread_num)(void);
} rnn_omp;

#if defined(__unix__) || defined(__APPLE__)
#include <dlfcn.h>

/* Fill `omp` from the runtime of soname `soname` if it is loaded (nothing is loaded
   here): 1, else 0. The handle is kept, so the runtime stays loaded. */
static int rnn_omp_find(rnn_omp *omp, const char *soname)
{
    void *lib = dlopen(soname, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL)
        return 0;
    *(void **)&omp->parallel = dlsym(lib, "GOMP_parallel");
    *(void **)&omp->num_threads = dlsym(lib, "omp_get_num_threads");
    *(void **)&omp->thread_num = dlsym(lib, "omp_get_thread_num");
    if (omp->parallel && omp->num_threads && omp->thread_num)
        return 1;
    dlclose(lib);
    return 0;
}
#else
static int rnn_omp_find(rnn_omp *omp, const char *soname) { (void)omp; (void)soname; return 0; }
#endif

#endif
