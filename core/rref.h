/* rref.h — remote references (spec §1.5, §3.4–3.6, §4).
 *
 * An RRef names a value that lives on one worker, its owner.  The owner
 * holds the OwnerRRef (the value's future); every other holder has a
 * UserRRef, one per fork.  Sending an RRef inside an RPC forks it; the
 * protocol messages (RREF_FORK_REQUEST, RREF_CHILD_ACCEPT, RREF_USER_DELETE,
 * each answered by RREF_ACK and retried on the §3.6 schedule) keep the
 * owner's count of live users exact, so that the value is freed exactly
 * when the last user is gone, and graceful shutdown can check for leaks.
 *
 * In values an RRef is an RPC_VALUE_OPAQUE of type rpc_rref_type (see
 * rpc_value_get_rref); a UserRRef whose last reference drops sends its
 * USER_DELETE.  Ids print as PyTorch prints them:
 *   "OwnerRRef(GloballyUniqueId(created_on=0, local_id=0))"
 *   "UserRRef(RRefId = GloballyUniqueId(created_on=0, local_id=1), ForkId = …)"
 */
#ifndef RPC_RREF_H
#define RPC_RREF_H

#include <glib.h>

#include "core/agent.h"
#include "core/future.h"
#include "core/value.h"

G_BEGIN_DECLS

typedef struct RpcRRef RpcRRef;

typedef struct {
    gint16 created_on;
    gint64 local_id;
} RpcGlobalId;

extern const RpcOpaqueType rpc_rref_type;

/* The RRef inside v, or NULL (transfer none). */
RpcRRef *rpc_value_get_rref(const RpcValue *v);

/* RRef(value): a local OwnerRRef (transfer full value).  "Current RPC agent
 * is not set! Did you initialize the RPC framework..." without an agent. */
RpcValue *rpc_rref_new_local(RpcAgent *a, RpcValue *value, GError **error);

/* remote(to, func, args, kwargs, timeout): an RRef value (transfer full). */
RpcValue *rpc_remote(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args,
                     RpcValue *kwargs, RpcTime timeout, GError **error);

gboolean rpc_rref_is_owner(const RpcRRef *r);
gint rpc_rref_owner_id(const RpcRRef *r);
/* WorkerInfo of the owner (transfer full). */
RpcValue *rpc_rref_owner(const RpcRRef *r);
const char *rpc_rref_owner_name(const RpcRRef *r);
gboolean rpc_rref_confirmed_by_owner(const RpcRRef *r);
RpcGlobalId rpc_rref_id(const RpcRRef *r);
RpcGlobalId rpc_rref_fork_id(const RpcRRef *r); /* owners: their rref id */
/* str(rref) (transfer full). */
char *rpc_rref_repr(const RpcRRef *r);

/* to_here(timeout): the value (transfer full).  Blocks. */
RpcValue *rpc_rref_to_here(RpcRRef *r, RpcTime timeout, GError **error);
/* local_value(): owner only; blocks until set. */
RpcValue *rpc_rref_local_value(RpcRRef *r, GError **error);
/* _get_future(): the creation future (transfer none; owners: completed). */
RpcFuture *rpc_rref_creation_future(RpcRRef *r);
/* _get_type(timeout, blocking): the value's type name as a string value
 * ("Tensor", "int", "MyClass"); a value the owner stores as an error (the
 * remote function raised) fails it with that error's kind.  On a user the
 * first call sends "_rref_typeof_on_owner" with this timeout; the future is
 * cached after it succeeds, and every call meanwhile gets the same future
 * (a failed one is forgotten: the next call asks again).  Blocking is the
 * caller's wait on it (transfer full). */
RpcFuture *rpc_rref_get_type(RpcRRef *r, RpcTime timeout, GError **error);

/* The proxies (spec §3.5, §4.7): rref.rpc_sync(timeout).m(*args, **kwargs),
 * rref.rpc_async(timeout).m(…), rref.remote(timeout).m(…) — method m of the
 * owner's value, run there by "_rref_proxy_invoke" (or its async_execution
 * twin when m is @async_execution).  Each resolves the type first with
 * rpc_rref_get_type(r, timeout) and checks on the caller that the type has
 * attribute m: AttributeError "type object '<T>' has no attribute '<m>'".
 * sync and remote wait for the type, so its errors (a timeout) are raised
 * by the call itself; async returns a fresh future at once that receives
 * the type's error, the AttributeError or the call's outcome.  The call uses
 * the same timeout.  args (list) and kwargs (dict) are (transfer full) and
 * nullable, as for rpc_async. */
RpcValue *rpc_rref_proxy_sync(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                              RpcTime timeout, GError **error);
RpcFuture *rpc_rref_proxy_async(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                                RpcTime timeout, GError **error);
/* An RRef value (transfer full) of the method's result on the owner. */
RpcValue *rpc_rref_proxy_remote(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                                RpcTime timeout, GError **error);

/* _rref_context_get_debug_info() of the agent's RRef context. */
typedef struct RpcRRefDebugInfo {
    guint num_owner_rrefs;
    guint num_pending_futures;
    guint num_pending_users;
    guint num_forks;
    guint num_pending_children;
    guint num_confirmed_users;
} RpcRRefDebugInfo;

void rpc_rref_debug_info(RpcAgent *a, RpcRRefDebugInfo *out);

G_END_DECLS

#endif /* RPC_RREF_H */
