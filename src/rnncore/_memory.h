/* A cache of large freed blocks behind a NumPy memory handler (_memory.pyx).
 *
 * Every block carries a 64-byte header holding its capacity, so that free() and
 * realloc() never depend on the size NumPy passes back. Blocks of at least
 * RNN_CACHE_MIN_BYTES are rounded up to whole pages and, when freed, kept in a
 * first-in-first-out list of at most `limit` bytes; an allocation of the same rounded
 * size takes the newest such block. Smaller blocks go straight to malloc/free. A mutex
 * guards the list: blocks are freed wherever their arrays die.
 */
#ifndef RNNCORE_MEMORY_H
#define RNNCORE_MEMORY_H

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define RNN_CACHE_HEADER 64
#define RNN_CACHE_MIN_BYTES ((size_t)128 << 10)  /* glibc's first mmap threshold */
#define RNN_CACHE_PAGE ((size_t)4096)
#define RNN_CACHE_SLOTS 64

typedef struct {
    void *base[RNN_CACHE_SLOTS];     /* oldest first */
    size_t cap[RNN_CACHE_SLOTS];
    int count;
    size_t bytes, limit;
    unsigned long long hits, misses;
    pthread_mutex_t lock;
} rnn_cache;

static rnn_cache rnn_the_cache = {{0}, {0}, 0, 0, 0, 0, 0, PTHREAD_MUTEX_INITIALIZER};

static size_t rnn_cache_capacity(size_t size)
{
    if (size < RNN_CACHE_MIN_BYTES)
        return size ? size : 1;
    return (size + RNN_CACHE_PAGE - 1) / RNN_CACHE_PAGE * RNN_CACHE_PAGE;
}

static size_t *rnn_cache_header(void *user) { return (size_t *)((char *)user - RNN_CACHE_HEADER); }

/* Drop blocks, oldest first, until `bytes` more fit under the limit (lock held);
   the dropped bases go to `out` for freeing outside the lock. Returns their count. */
static int rnn_cache_make_room(rnn_cache *c, size_t bytes, void **out)
{
    int n = 0, i;
    while (c->count && (c->bytes + bytes > c->limit || c->count == RNN_CACHE_SLOTS)) {
        out[n++] = c->base[0];
        c->bytes -= c->cap[0];
        for (i = 1; i < c->count; i++) {
            c->base[i - 1] = c->base[i];
            c->cap[i - 1] = c->cap[i];
        }
        c->count--;
    }
    return n;
}

static void *rnn_cache_take(rnn_cache *c, size_t cap)
{
    void *base = NULL;
    int i, j;
    if (cap < RNN_CACHE_MIN_BYTES)
        return NULL;
    pthread_mutex_lock(&c->lock);
    for (i = c->count - 1; i >= 0; i--)
        if (c->cap[i] == cap)
            break;
    if (i >= 0) {
        base = c->base[i];
        c->bytes -= cap;
        for (j = i + 1; j < c->count; j++) {
            c->base[j - 1] = c->base[j];
            c->cap[j - 1] = c->cap[j];
        }
        c->count--;
        c->hits++;
    } else {
        c->misses++;
    }
    pthread_mutex_unlock(&c->lock);
    return base;
}

static void *rnn_cache_malloc(void *ctx, size_t size)
{
    size_t cap = rnn_cache_capacity(size);
    void *base = rnn_cache_take((rnn_cache *)ctx, cap);
    if (!base && posix_memalign(&base, 64, RNN_CACHE_HEADER + cap) != 0)
        return NULL;
    *(size_t *)base = cap;
    return (char *)base + RNN_CACHE_HEADER;
}

static void *rnn_cache_calloc(void *ctx, size_t nelem, size_t elsize)
{
    void *user;
    if (elsize && nelem > (size_t)-1 / 2 / elsize)
        return NULL;
    user = rnn_cache_malloc(ctx, nelem * elsize);
    if (user)
        memset(user, 0, nelem * elsize);
    return user;
}

static void rnn_cache_free(void *ctx, void *user, size_t size)
{
    rnn_cache *c = (rnn_cache *)ctx;
    void *drop[RNN_CACHE_SLOTS + 1];
    int n = 0, i;
    size_t cap;
    (void)size;
    if (!user)
        return;
    cap = *rnn_cache_header(user);
    if (cap >= RNN_CACHE_MIN_BYTES) {
        pthread_mutex_lock(&c->lock);
        if (cap <= c->limit) {
            n = rnn_cache_make_room(c, cap, drop);
            c->base[c->count] = rnn_cache_header(user);
            c->cap[c->count] = cap;
            c->count++;
            c->bytes += cap;
            user = NULL;
        }
        pthread_mutex_unlock(&c->lock);
    }
    if (user)
        drop[n++] = rnn_cache_header(user);
    for (i = 0; i < n; i++)
        free(drop[i]);
}

static void *rnn_cache_realloc(void *ctx, void *user, size_t new_size)
{
    void *moved;
    size_t old;
    if (!user)
        return rnn_cache_malloc(ctx, new_size);
    old = *rnn_cache_header(user);
    if (rnn_cache_capacity(new_size) == old)
        return user;
    moved = rnn_cache_malloc(ctx, new_size);
    if (!moved)
        return NULL;          /* the old block stays valid, as realloc's contract says */
    memcpy(moved, user, old < new_size ? old : new_size);
    rnn_cache_free(ctx, user, old);
    return moved;
}

/* In a child made by fork: the lock as new (another thread may have held it). */
static void rnn_cache_after_fork_in_child(void)
{
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    rnn_the_cache.lock = fresh;
}

/* Set the limit; blocks beyond it are freed. Returns the previous limit. */
static size_t rnn_cache_set_limit(rnn_cache *c, size_t limit)
{
    void *drop[RNN_CACHE_SLOTS + 1];
    size_t previous;
    int n, i;
    pthread_mutex_lock(&c->lock);
    previous = c->limit;
    c->limit = limit;
    n = rnn_cache_make_room(c, 0, drop);
    pthread_mutex_unlock(&c->lock);
    for (i = 0; i < n; i++)
        free(drop[i]);
    return previous;
}

#endif
