/* intmap.h — an open-addressing map from gint64 keys to non-NULL pointers.
 *
 * For the agent's table of pending calls by request id, which GHashTable
 * served at ~150 instructions and an allocation per operation (the
 * requests served are kept as ranges instead: idset.h).  Linear probing over a power-of-two
 * table kept at most half full; deletion shifts the following entries back,
 * so there are no tombstones and lookups stay short.  No allocation except
 * when the table grows.
 *
 * Values must not be NULL (NULL marks an empty slot).  Iteration order is
 * the slot order, which depends on the keys' hashes: never let it decide
 * anything observable (collect and sort, as the agent does).
 *
 *   RpcIntMap m;
 *   rpc_intmap_init(&m);
 *   rpc_intmap_insert(&m, 42, p);
 *   p = rpc_intmap_lookup(&m, 42);
 *   rpc_intmap_remove(&m, 42);      returns the value, or NULL
 *   rpc_intmap_clear(&m);           frees the table (values are the caller's)
 */
#ifndef RPC_INTMAP_H
#define RPC_INTMAP_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
    gint64 key;
    gpointer value; /* NULL: empty */
} RpcIntMapSlot;

typedef struct {
    RpcIntMapSlot *slots; /* NULL until the first insert */
    guint mask;           /* capacity - 1 */
    guint len;
} RpcIntMap;

void rpc_intmap_init(RpcIntMap *m);
void rpc_intmap_clear(RpcIntMap *m);
/* Inserts or replaces; returns the previous value (or NULL). */
gpointer rpc_intmap_insert(RpcIntMap *m, gint64 key, gpointer value);
gpointer rpc_intmap_remove(RpcIntMap *m, gint64 key);
guint rpc_intmap_len(const RpcIntMap *m);

static inline guint
rpc_intmap_slot_of(const RpcIntMap *m, gint64 key)
{
    guint64 h = (guint64)key * G_GUINT64_CONSTANT(0x9e3779b97f4a7c15);
    return (guint)(h >> 32) & m->mask;
}

static inline gpointer
rpc_intmap_lookup(const RpcIntMap *m, gint64 key)
{
    if (m->slots == NULL)
        return NULL;
    for (guint i = rpc_intmap_slot_of(m, key);; i = (i + 1) & m->mask) {
        const RpcIntMapSlot *s = &m->slots[i];
        if (s->value == NULL)
            return NULL;
        if (s->key == key)
            return s->value;
    }
}

/* Iteration: for (guint i = 0; i < rpc_intmap_capacity(m); i++) if
 * (m->slots[i].value) ... — slot order, not observable. */
static inline guint
rpc_intmap_capacity(const RpcIntMap *m)
{
    return m->slots ? m->mask + 1 : 0;
}

G_END_DECLS

#endif /* RPC_INTMAP_H */
