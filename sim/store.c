/* store.c — in-memory RpcStore (see store.h).
 *
 * Waiters are kept per key in a FIFO list and completed in that order when
 * the key is set; the key table itself is never iterated, so hash order
 * cannot leak into a run.
 */
#include "sim/store.h"

#include <stdlib.h>

struct SimStore {
    RpcStore base;
    GHashTable *values;  /* key → char* */
    GHashTable *waiters; /* key → GPtrArray of RpcFuture* */
};

static gint64
st_add(RpcStore *base, const char *key, gint64 delta)
{
    SimStore *s = (SimStore *)base;
    const char *old = g_hash_table_lookup(s->values, key);
    gint64 v = (old ? g_ascii_strtoll(old, NULL, 10) : 0) + delta;
    g_hash_table_replace(s->values, g_strdup(key), g_strdup_printf("%" G_GINT64_FORMAT, v));
    return v;
}

static void
st_set(RpcStore *base, const char *key, const char *value)
{
    SimStore *s = (SimStore *)base;
    g_hash_table_replace(s->values, g_strdup(key), g_strdup(value));
    gpointer owned_key, w_ptr;
    if (!g_hash_table_steal_extended(s->waiters, key, &owned_key, &w_ptr))
        return;
    g_free(owned_key); /* stealing skips the table's key destructor */
    GPtrArray *w = w_ptr;
    for (guint i = 0; i < w->len; i++)
        rpc_future_complete_if_needed(g_ptr_array_index(w, i), rpc_value_none());
    g_ptr_array_unref(w);
}

static char *
st_get(RpcStore *base, const char *key)
{
    SimStore *s = (SimStore *)base;
    return g_strdup(g_hash_table_lookup(s->values, key));
}

static RpcFuture *
st_wait(RpcStore *base, const char *key, RpcExecutor *ex)
{
    SimStore *s = (SimStore *)base;
    RpcFuture *f = rpc_future_new(ex);
    if (g_hash_table_contains(s->values, key)) {
        rpc_future_complete_if_needed(f, rpc_value_none());
        return f;
    }
    GPtrArray *w = g_hash_table_lookup(s->waiters, key);
    if (w == NULL) {
        w = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
        g_hash_table_insert(s->waiters, g_strdup(key), w);
    }
    g_ptr_array_add(w, rpc_future_ref(f));
    return f;
}

static const RpcStoreVTable sim_store_vtable = {
    .add = st_add,
    .set = st_set,
    .get = st_get,
    .wait = st_wait,
};

SimStore *
sim_store_new(void)
{
    SimStore *s = g_new0(SimStore, 1);
    s->base.vt = &sim_store_vtable;
    s->values = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    s->waiters =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_ptr_array_unref);
    return s;
}

void
sim_store_free(SimStore *s)
{
    if (s == NULL)
        return;
    g_hash_table_unref(s->values);
    g_hash_table_unref(s->waiters);
    g_free(s);
}

RpcStore *
sim_store_base(SimStore *s)
{
    return &s->base;
}
