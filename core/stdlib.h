/* stdlib.h — the catalogue's functions (spec §11.0), registered on every
 * worker by rpc_registry_new_default(). */
#ifndef RPC_STDLIB_H
#define RPC_STDLIB_H

#include "core/future.h"
#include "core/registry.h"

G_BEGIN_DECLS

void rpc_stdlib_register(RpcRegistry *reg);

/* Python-style arithmetic on values: op 0 +, 1 -, 2 *, 3 / (numbers, strings
 * for +, tensors with broadcasting).  (transfer full) or NULL + error. */
RpcValue *rpc_stdlib_arith(int op, const RpcValue *a, const RpcValue *b, GError **error);

/* A then() callback: the parent's value + data (an RpcValue*, transfer none). */
RpcValue *rpc_stdlib_then_add(RpcFuture *parent, gpointer data, GError **error);

G_END_DECLS

#endif /* RPC_STDLIB_H */
