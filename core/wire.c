/* wire.c — refcounted immutable message bytes (see wire.h).
 *
 * Layout: one block, the RpcWire header then the bytes, from core/pool
 * (which takes blocks above its largest class straight to g_malloc), freed
 * with the size it was allocated with.  Invariant: ref > 0 while reachable.
 */
#include "core/wire.h"

#include <string.h>

#include "core/pool.h"

struct RpcWire {
    gint ref;
    gsize len;
    guint8 data[]; /* len bytes */
};

RpcWire *
rpc_wire_new_uninit(gsize len, guint8 **data)
{
    g_return_val_if_fail(data != NULL, NULL);
    g_return_val_if_fail(len <= G_MAXSIZE - sizeof(RpcWire), NULL);
    RpcWire *w = rpc_pool_alloc(sizeof(RpcWire) + len);
    w->ref = 1;
    w->len = len;
    *data = w->data;
    return w;
}

RpcWire *
rpc_wire_new(const guint8 *data, gsize len)
{
    g_return_val_if_fail(data != NULL || len == 0, NULL);
    guint8 *p;
    RpcWire *w = rpc_wire_new_uninit(len, &p);
    if (len > 0)
        memcpy(p, data, len);
    return w;
}

RpcWire *
rpc_wire_ref(RpcWire *w)
{
    g_return_val_if_fail(w != NULL && w->ref > 0, NULL);
    w->ref++;
    return w;
}

void
rpc_wire_unref(RpcWire *w)
{
    if (w == NULL)
        return;
    g_assert(w->ref > 0);
    if (--w->ref == 0)
        rpc_pool_free(w, sizeof(RpcWire) + w->len);
}

const guint8 *
rpc_wire_data(const RpcWire *w)
{
    g_return_val_if_fail(w != NULL, NULL);
    return w->data;
}

gsize
rpc_wire_size(const RpcWire *w)
{
    g_return_val_if_fail(w != NULL, 0);
    return w->len;
}

GBytes *
rpc_wire_bytes(RpcWire *w, gsize offset, gsize len)
{
    g_return_val_if_fail(w != NULL && offset <= w->len && len <= w->len - offset, NULL);
    return g_bytes_new_with_free_func(w->data + offset, len, (GDestroyNotify)rpc_wire_unref,
                                      rpc_wire_ref(w));
}
