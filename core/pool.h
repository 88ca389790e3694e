/* pool.h — per-thread free lists for small fixed-size records.
 *
 * The RPC hot path allocates and frees the same few record sizes (values,
 * futures, messages, pending calls, events) tens of times per round trip.
 * glibc's tcache keeps only 7 blocks per size, so bursts spill into
 * _int_free; here each size class keeps its own LIFO free list, and a
 * steady-state alloc/free is a few loads and stores.
 *
 *   T *p = rpc_pool_new(T);      zeroed, like g_new0(T, 1)
 *   rpc_pool_delete(T, p);       like g_free(p); p must come from rpc_pool_new(T)
 *
 * Sizes up to RPC_POOL_MAX_SIZE bytes are pooled (rounded up to 16); larger
 * ones go straight to g_malloc/g_free.  A block must be freed with the size
 * it was allocated with.  The lists are per thread (C11 _Thread_local), so
 * no locking; a block may be freed on another thread than it came from (it
 * joins that thread's list).  Each class keeps at most RPC_POOL_MAX_CACHED
 * free blocks; beyond that blocks go back to g_free, so a burst does not pin
 * memory forever.
 *
 * Under valgrind (RUNNING_ON_VALGRIND) or AddressSanitizer, or when
 * RPCSIM_NO_POOL is set in the
 * environment at first use, every call goes to g_malloc/g_free, so memcheck
 * sees each record's real lifetime: use after free and leaks stay visible.
 * RPCSIM_POOL set keeps the pool on under valgrind (for callgrind counts
 * of the build as it normally runs; bench/rpc-callgrind.sh sets it).
 *
 * rpc_pool_trim() returns this thread's cached blocks to g_free (tests call
 * it before exit so that the heap summary shows nothing cached).
 */
#ifndef RPC_POOL_H
#define RPC_POOL_H

#include <glib.h>
#include <string.h>

G_BEGIN_DECLS

#define RPC_POOL_MAX_SIZE   256
#define RPC_POOL_MAX_CACHED 4096

gpointer rpc_pool_alloc0(gsize size);
void rpc_pool_trim(void);
/* TRUE when blocks are recycled (not under valgrind / RPCSIM_NO_POOL). */
gboolean rpc_pool_enabled(void);

/* --- the inline fast path (internals: use the functions above/below) ---- */

#define RPC_POOL_CLASS_SHIFT_ 4 /* 16-byte classes */
#define RPC_POOL_N_CLASSES_   (RPC_POOL_MAX_SIZE >> RPC_POOL_CLASS_SHIFT_)

typedef struct RpcPoolBlock_ {
    struct RpcPoolBlock_ *next;
} RpcPoolBlock_;

typedef struct {
    int mode; /* 0: not decided yet; 1: pooling; 2: straight to g_malloc */
    RpcPoolBlock_ *list[RPC_POOL_N_CLASSES_];
    guint count[RPC_POOL_N_CLASSES_];
} RpcPoolCache_;

extern _Thread_local RpcPoolCache_ rpc_pool_cache_;
gpointer rpc_pool_alloc_slow_(gsize size);
void rpc_pool_free_slow_(gpointer p, gsize size);

static inline gpointer
rpc_pool_alloc(gsize size)
{
    RpcPoolCache_ *c = &rpc_pool_cache_;
    if (G_LIKELY(c->mode == 1 && size - 1 < RPC_POOL_MAX_SIZE)) {
        guint k = (guint)((size - 1) >> RPC_POOL_CLASS_SHIFT_);
        RpcPoolBlock_ *b = c->list[k];
        if (G_LIKELY(b != NULL)) {
            c->list[k] = b->next;
            c->count[k]--;
            return b;
        }
    }
    return rpc_pool_alloc_slow_(size);
}

static inline void
rpc_pool_free(gpointer p, gsize size)
{
    RpcPoolCache_ *c = &rpc_pool_cache_;
    if (G_LIKELY(p != NULL && c->mode == 1 && size - 1 < RPC_POOL_MAX_SIZE)) {
        guint k = (guint)((size - 1) >> RPC_POOL_CLASS_SHIFT_);
        if (G_LIKELY(c->count[k] < RPC_POOL_MAX_CACHED)) {
            RpcPoolBlock_ *b = p;
            b->next = c->list[k];
            c->list[k] = b;
            c->count[k]++;
            return;
        }
    }
    rpc_pool_free_slow_(p, size);
}

#define rpc_pool_new(T)       ((T *)memset(rpc_pool_alloc(sizeof(T)), 0, sizeof(T)))
#define rpc_pool_new_raw(T)   ((T *)rpc_pool_alloc(sizeof(T)))
#define rpc_pool_delete(T, p) rpc_pool_free((p), sizeof(T))

G_END_DECLS

#endif /* RPC_POOL_H */
