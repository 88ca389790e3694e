/* wire.h — a message's wire form: immutable bytes with a reference count.
 *
 * What the agent hands its transport and the transport hands the receiving
 * agent.  It replaces a GBytes per message on the RPC hot path: the header
 * and the bytes are one block, from core/pool when small (most messages
 * are a few dozen bytes), and the count is a plain integer — like an
 * RpcMessage, a wire is used by one thread at a time (a transport that
 * moves bytes between threads copies them, or hands the wire over whole).
 *
 *   RpcWire *w = rpc_wire_new(data, len);   copies the bytes
 *   rpc_wire_data(w) / rpc_wire_size(w)
 *   GBytes *b = rpc_wire_bytes(w);          a GBytes sharing them
 *   rpc_wire_unref(w);
 */
#ifndef RPC_WIRE_H
#define RPC_WIRE_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct RpcWire RpcWire;

/* A wire holding a copy of data[0 .. len) (data may be NULL when len is 0). */
RpcWire *rpc_wire_new(const guint8 *data, gsize len);
/* A wire of len bytes to fill in before anyone else sees it. */
RpcWire *rpc_wire_new_uninit(gsize len, guint8 **data);
RpcWire *rpc_wire_ref(RpcWire *w);
void rpc_wire_unref(RpcWire *w); /* NULL is a no-op */
const guint8 *rpc_wire_data(const RpcWire *w);
gsize rpc_wire_size(const RpcWire *w);
/* A GBytes over bytes [offset, offset + len) of w, keeping w alive
 * (transfer full). */
GBytes *rpc_wire_bytes(RpcWire *w, gsize offset, gsize len);

G_END_DECLS

#endif /* RPC_WIRE_H */
