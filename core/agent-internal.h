/* agent-internal.h — agent entry points for core/ siblings (stdlib, RRefs).
 *
 * Not part of the public API: the runtime's internal remote functions and
 * the per-worker storage UDFs use.
 */
#ifndef RPC_AGENT_INTERNAL_H
#define RPC_AGENT_INTERNAL_H

#include "core/agent.h"

G_BEGIN_DECLS

/* Per-worker named values (the catalogue's set_value VALUE slot). */
RpcValue *rpc_agent_slot_get(RpcAgent *a, const char *name); /* transfer none */
void rpc_agent_slot_set(RpcAgent *a, const char *name, RpcValue *v); /* takes v */

/* _all_gather's remote halves (registered as internal functions). */
RpcValue *rpc_agent_internal_gather_to_leader(RpcAgent *a, const RpcValue *args,
                                              const RpcValue *kwargs, GError **error);
RpcValue *rpc_agent_internal_broadcast_to_followers(RpcAgent *a, const RpcValue *args,
                                                    const RpcValue *kwargs, GError **error);

G_END_DECLS

#endif /* RPC_AGENT_INTERNAL_H */
