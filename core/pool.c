/* pool.c — per-thread free lists for small records (see pool.h).
 *
 * Invariant: a block on list[c] is exactly class_size(c) bytes, came from
 * g_malloc, and is linked through its first word; count[c] is the length
 * of list[c] and never exceeds RPC_POOL_MAX_CACHED.
 */
#include "core/pool.h"

#include <string.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND_H 1
#endif
#endif

/* Under AddressSanitizer recycled blocks would hide use after free. */
#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED TRUE
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED TRUE
#endif
#endif
#ifndef SANITIZED
#define SANITIZED FALSE
#endif

#define CLASS_SHIFT RPC_POOL_CLASS_SHIFT_
#define N_CLASSES   RPC_POOL_N_CLASSES_

typedef RpcPoolBlock_ Block;

_Thread_local RpcPoolCache_ rpc_pool_cache_;
#define cache rpc_pool_cache_

static int
decide(void)
{
    gboolean off = g_getenv("RPCSIM_NO_POOL") != NULL || SANITIZED;
#ifdef HAVE_VALGRIND_H
    /* RPCSIM_POOL=1 keeps the pool on under valgrind: callgrind measures
     * the build as it runs; memcheck wants every lifetime exact. */
    off = off || (RUNNING_ON_VALGRIND && g_getenv("RPCSIM_POOL") == NULL);
#endif
    cache.mode = off ? 2 : 1;
    return cache.mode;
}

static inline gboolean
pooled(gsize size)
{
    int m = cache.mode != 0 ? cache.mode : decide();
    return m == 1 && size - 1 < RPC_POOL_MAX_SIZE;
}

static inline guint
class_of(gsize size)
{
    return (guint)((size - 1) >> CLASS_SHIFT);
}

gboolean
rpc_pool_enabled(void)
{
    return pooled(1);
}

/* The inline path missed: the mode is not decided yet (decide, then take
 * the inline path again), the size is not pooled, the pool is off, or the
 * class's list is empty (a fresh block of the whole class size). */
gpointer
rpc_pool_alloc_slow_(gsize size)
{
    if (cache.mode == 0) {
        decide();
        return rpc_pool_alloc(size);
    }
    return g_malloc(pooled(size) ? (gsize)(class_of(size) + 1) << CLASS_SHIFT : size);
}

gpointer
rpc_pool_alloc0(gsize size)
{
    gpointer p = rpc_pool_alloc(size);
    memset(p, 0, size);
    return p;
}

/* The inline path missed: NULL, the mode is not decided yet (decide, then
 * take the inline path again), the size is not pooled, the pool is off, or
 * the class's list is full. */
void
rpc_pool_free_slow_(gpointer p, gsize size)
{
    if (p != NULL && cache.mode == 0) {
        decide();
        rpc_pool_free(p, size);
        return;
    }
    g_free(p);
}

void
rpc_pool_trim(void)
{
    for (guint c = 0; c < N_CLASSES; c++) {
        while (cache.list[c] != NULL) {
            Block *b = cache.list[c];
            cache.list[c] = b->next;
            g_free(b);
        }
        cache.count[c] = 0;
    }
}
