/* agent-internal.h — agent entry points for core/ siblings (stdlib, RRefs).
 *
 * Not part of the public API: the runtime's internal remote functions, the
 * request/response plumbing the RRef protocol builds on, and the per-worker
 * storage UDFs use.
 */
#ifndef RPC_AGENT_INTERNAL_H
#define RPC_AGENT_INTERNAL_H

#include "core/agent.h"
#include "core/message.h"

G_BEGIN_DECLS

typedef struct RpcRRefCtx RpcRRefCtx;

/* PyTorch's private api._ignore_rref_leak (default TRUE): FALSE makes
 * shutdown fail with the "Leaking RRef" lines (RpcAgentConfig's
 * raise_rref_leaks, settable after init). */
void rpc_agent_set_ignore_rref_leak(RpcAgent *a, gboolean ignore);

/* Per-worker named values (the catalogue's set_value VALUE slot). */
RpcValue *rpc_agent_slot_get(RpcAgent *a, const char *name);         /* transfer none */
void rpc_agent_slot_set(RpcAgent *a, const char *name, RpcValue *v); /* takes v */

/* _all_gather's remote halves (registered as internal functions). */
RpcValue *rpc_agent_internal_gather_to_leader(RpcAgent *a, const RpcValue *args,
                                              const RpcValue *kwargs, GError **error);
RpcValue *rpc_agent_internal_broadcast_to_followers(RpcAgent *a, const RpcValue *args,
                                                    const RpcValue *kwargs, GError **error);

/* The agent's RRef context (rref.c). */
RpcRRefCtx *rpc_agent_rref_ctx(RpcAgent *a);
/* The agent's distributed autograd container (dist-autograd.c). */
typedef struct RpcDistAutograd RpcDistAutograd;
RpcDistAutograd *rpc_agent_dist_autograd(RpcAgent *a);
/* Worker names by id (NULL before start). */
const char *rpc_agent_worker_name(RpcAgent *a, gint id);
/* Resolves a `to` value to a worker id, or -1 + error. */
gint rpc_agent_resolve(RpcAgent *a, const RpcValue *to, GError **error);

/* Sends a request whose body is one value (RRefs inside are forked); the
 * future completes with the response's decoded value or error. */
RpcFuture *rpc_agent_send_request(RpcAgent *a, gint dst, RpcMessageType type, RpcValue *body,
                                  RpcTime timeout, const char *what, GError **error);
/* sendWithRetries (spec §3.6): the same payload, resent on failure. */
RpcFuture *rpc_agent_send_with_retries(RpcAgent *a, gint dst, RpcMessageType type, RpcValue *body,
                                       guint max_retries, const char *what, GError **error);

/* Runs a registered function for a request.  The future completes with
 * the value to send back (for Python functions an error *value* when the
 * function raised, re-raised by the caller with its kind), or fails with
 * the text of an EXCEPTION response. */
RpcFuture *rpc_agent_run_function(RpcAgent *a, const char *name, const RpcValue *args,
                                  const RpcValue *kwargs, gboolean is_async, gboolean python);
/* Answers request (to, id) with out's outcome once it completes: its value
 * as a ret_type message, its error as an EXCEPTION. */
void rpc_agent_reply_when_done(RpcAgent *a, gint to, gint64 id, RpcMessageType ret_type,
                               RpcFuture *out);
/* Answers request (to, id) now (takes body). */
void rpc_agent_respond(RpcAgent *a, gint to, gint64 id, RpcMessageType type, RpcValue *body);
/* Splits a call body [name, args, kwargs, async, …] of exactly `want`
 * items; FALSE if malformed. */
gboolean rpc_agent_parse_call_body(const RpcValue *body, guint want, const char **name,
                                   const RpcValue **args, const RpcValue **kwargs,
                                   gboolean *is_async);

/* --- the RRef protocol (rref.c) --------------------------------------- */

/* What an unpickled request is waiting for. */
typedef struct {
    RpcAgent *a;
    gboolean collect;   /* collect the confirmations to wait for in `pending` */
    GPtrArray *pending; /* created on the first one: confirmation futures (refs) */
} RpcDecodeCtx;

/* Codec hooks: data is the sending RpcAgent* / an RpcDecodeCtx*.  RRefs
 * travel as the extension "RRef" (forked, spec §4.4); class instances as
 * "object" (core/object.h), rebuilt from the decoding agent's registry. */
gboolean rpc_rref_pickle(gpointer data, const RpcValue *opaque, const char **ext_name,
                         RpcValue **wire_value, GError **error);
RpcValue *rpc_rref_unpickle(gpointer data, const char *ext_name, RpcValue *wire_value,
                            GError **error);

/* Forks made by rpc_rref_pickle between begin and end (transfer full; NULL
 * if none).  undo takes back forks whose message never left (it could not
 * be encoded or sent): the owner's early registration or the parent's hold
 * on its child.  undo takes `forks` (nullable). */
void rpc_rref_forks_begin(RpcRRefCtx *c);
GArray *rpc_rref_forks_end(RpcRRefCtx *c);
void rpc_rref_forks_undo(RpcRRefCtx *c, GArray *forks);

/* Serves REMOTE_CALL, RREF_FETCH_CALL, USER_DELETE, FORK_REQUEST and
 * CHILD_ACCEPT requests (body: the decoded payload, transfer none). */
void rpc_rref_serve(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcValue *body);

/* _rref_typeof_on_owner(rref), registered as an internal function. */
RpcValue *rpc_rref_internal_typeof(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs,
                                   GError **error);
/* _rref_proxy_invoke(rref, method, args, kwargs) and its async_execution
 * twin: getattr(rref.local_value(), method)(*args, **kwargs) on the owner. */
RpcValue *rpc_rref_internal_invoke(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs,
                                   GError **error);

RpcRRefCtx *rpc_rref_ctx_new(RpcAgent *a);
/* Detaches every live RRef from the context and frees it. */
void rpc_rref_ctx_free(RpcRRefCtx *c);
/* Graceful shutdown, between the barrier and the join (spec §4.6): wait for
 * pending users and children, delete every user RRef, drop unforked
 * owners, wait for the owners to empty.  Timeouts are logged, not raised. */
void rpc_rref_ctx_delete_all_users(RpcRRefCtx *c, RpcTime timeout);
/* destroyInstance: later deletes send nothing; "Leaking RRef <id> with fork
 * Id <fork>" lines raised unless ignore_leak. */
gboolean rpc_rref_ctx_destroy(RpcRRefCtx *c, gboolean ignore_leak, GError **error);

G_END_DECLS

#endif /* RPC_AGENT_INTERNAL_H */
