/* transport.h — how an agent's messages leave the worker.
 *
 * The agent encodes each message (message.h) and hands the bytes, an
 * RpcWire (wire.h), to its transport; the transport delivers them to the destination's agent with
 * rpc_agent_deliver(), or reports a broken connection with
 * rpc_agent_connection_failed().  A send may also fail at once (the faulty
 * agent's injected failures, an unreachable peer): the caller's future then
 * fails with that error and nothing is delivered.
 *
 * The simulator implements this with its network model (sim/net.c); a real
 * transport with sockets.  Sending consumes nothing: msg and wire stay owned
 * by the caller (take a reference to keep them).
 */
#ifndef RPC_TRANSPORT_H
#define RPC_TRANSPORT_H

#include <glib.h>

#include "core/message.h"

G_BEGIN_DECLS

typedef struct RpcTransport RpcTransport;

typedef struct RpcTransportVTable {
    const char *name;
    gboolean (*send)(RpcTransport *t, gint from, gint to, const RpcMessage *msg, RpcWire *wire,
                     GError **error);
    /* The agent of worker `self` stopped (shutdown or death): its
     * connections close, and peers' calls waiting on it fail. */
    void (*closed)(RpcTransport *t, gint self);
} RpcTransportVTable;

struct RpcTransport {
    const RpcTransportVTable *vt;
};

static inline gboolean
rpc_transport_send(RpcTransport *t, gint from, gint to, const RpcMessage *msg, RpcWire *wire,
                   GError **error)
{
    return t->vt->send(t, from, to, msg, wire, error);
}

G_END_DECLS

#endif /* RPC_TRANSPORT_H */
