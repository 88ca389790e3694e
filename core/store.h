/* store.h — the key-value store the workers of a group share (c10d Store).
 *
 * PyTorch's agents use a TCPStore, outside RPC, for init (rank → name) and
 * for the join barrier that counts active calls (syncCallCount).  Here it is a
 * seam: the simulator provides an in-memory store, a real deployment a
 * server.  Keys and values are strings; add() treats a missing key as 0.
 */
#ifndef RPC_STORE_H
#define RPC_STORE_H

#include <glib.h>

#include "core/executor.h"
#include "core/future.h"

G_BEGIN_DECLS

typedef struct RpcStore RpcStore;

typedef struct RpcStoreVTable {
    /* Adds delta to the integer at key; returns the new value. */
    gint64 (*add)(RpcStore *s, const char *key, gint64 delta);
    void (*set)(RpcStore *s, const char *key, const char *value);
    /* (transfer full), NULL if absent */
    char *(*get)(RpcStore *s, const char *key);
    /* A future (on ex) completed once key is set. */
    RpcFuture *(*wait)(RpcStore *s, const char *key, RpcExecutor *ex);
} RpcStoreVTable;

struct RpcStore {
    const RpcStoreVTable *vt;
};

G_END_DECLS

#endif /* RPC_STORE_H */
