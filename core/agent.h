/* agent.h — one worker's RPC endpoint: rpc_sync/rpc_async, timeouts,
 * serving requests, graceful shutdown (spec §1, §3, §5, §6).
 *
 * An agent sees the world only through its executor (time, threads,
 * blocking), its transport (messages out; rpc_agent_deliver() brings them
 * in), the group's store (init and the join barrier) and its registry (what
 * it can run).  Nothing here knows whether it runs in the simulator.
 *
 * Lifecycle: rpc_agent_new() → rpc_agent_publish() (every worker) →
 * rpc_agent_start() (waits until every worker published; checks names are
 * unique) → calls → rpc_agent_shutdown() → rpc_agent_free().  After shutdown
 * every API call fails with "RPC has not been initialized. Call
 * torch.distributed.rpc.init_rpc first.".
 *
 * Accounting (spec §1.4): client_active_calls counts sent requests whose
 * future is not complete; it drops only after the future's callbacks ran, so
 * RPCs issued from callbacks are counted before the count can reach 0.
 * server_active_calls counts requests being served; server_active_async_calls
 * those waiting on an async_execution future.
 */
#ifndef RPC_AGENT_H
#define RPC_AGENT_H

#include <glib.h>

#include "core/executor.h"
#include "core/future.h"
#include "core/registry.h"
#include "core/store.h"
#include "core/transport.h"
#include "core/value.h"

G_BEGIN_DECLS

#define RPC_DEFAULT_TIMEOUT            (60 * RPC_S)
#define RPC_TIMEOUT_UNSET              ((RpcTime)-1) /* use the agent's default at send time */
#define RPC_TIMEOUT_NEVER              ((RpcTime)0)
#define RPC_DEFAULT_NUM_WORKER_THREADS 16
#define RPC_MAX_NAME_LEN               128

#define RPC_MSG_NOT_INITIALIZED                                                                    \
    "RPC has not been initialized. Call torch.distributed.rpc.init_rpc first."
#define RPC_MSG_TIMEOUT_FMT                                                                        \
    "RPC ran for more than set timeout (%" G_GINT64_FORMAT " ms) and will now be marked with an "  \
    "error"
#define RPC_MSG_CONNECTION_CLOSED "Connection closed by peer"

typedef struct RpcAgentConfig {
    const char *name;
    gint id;
    guint world_size;
    RpcTime rpc_timeout;       /* the default; RPC_DEFAULT_TIMEOUT if 0 is not meant */
    RpcExecutor *executor;     /* transfer none; outlives the agent */
    RpcTransport *transport;   /* transfer none */
    RpcStore *store;           /* transfer none */
    RpcRegistry *registry;     /* transfer full */
    const char *store_prefix;  /* nullable: namespaces this group's store keys
                                 (a group re-initialised after shutdown uses
                                 a new prefix, as PyTorch's tests do) */
    gint64 first_message_id;   /* ids of this agent's requests start here: a worker's
                                  later agent starts past its earlier ones', so a
                                  stale reply to one of those matches no call */
    gboolean raise_rref_leaks; /* graceful shutdown fails with "Leaking RRef …" lines
                                  (PyTorch's _ignore_rref_leak = False); default: log */
} RpcAgentConfig;

typedef struct RpcAgentCounters {
    gint64 client_active_calls;
    gint64 server_active_calls;
    gint64 server_active_async_calls;
    guint64 requests_sent;
    guint64 responses_received;
    guint64 requests_served;
    guint64 timeouts;
    guint64 late_responses; /* responses that arrived after their call ended */
    guint64 decode_errors;
} RpcAgentCounters;

/* Validates the name and id (spec §6.1). */
gboolean rpc_agent_validate_name(const char *name, GError **error);
gboolean rpc_agent_validate_id(gint64 id, GError **error);

RpcAgent *rpc_agent_new(const RpcAgentConfig *cfg, GError **error);
void rpc_agent_free(RpcAgent *a);
/* Publishes rank → name in the store. */
void rpc_agent_publish(RpcAgent *a);
/* Waits until every rank published; "RPC worker name <n> is not unique." */
gboolean rpc_agent_start(RpcAgent *a, GError **error);
gboolean rpc_agent_is_running(const RpcAgent *a);

const char *rpc_agent_name(const RpcAgent *a);
gint rpc_agent_id(const RpcAgent *a);
guint rpc_agent_world_size(const RpcAgent *a);
RpcExecutor *rpc_agent_executor(RpcAgent *a);
RpcRegistry *rpc_agent_registry(RpcAgent *a);
void rpc_agent_get_counters(const RpcAgent *a, RpcAgentCounters *out);

/* The default timeout (spec §3.1): get_rpc_timeout / _set_rpc_timeout. */
RpcTime rpc_agent_get_rpc_timeout(const RpcAgent *a);
void rpc_agent_set_rpc_timeout(RpcAgent *a, RpcTime timeout);

/* get_worker_info(to): to is NULL (self), a name (str), an id (int) or a
 * WorkerInfo.  Errors: "name:<self>,rank:<id> could not find destination name
 * <n>", "… destination id <n>", ValueError "Cannot get WorkerInfo from name
 * <to>".  Returns a WorkerInfo value (transfer full). */
RpcValue *rpc_agent_get_worker_info(RpcAgent *a, const RpcValue *to, GError **error);
/* All workers' infos, by id (transfer full list). */
RpcValue *rpc_agent_get_worker_infos(RpcAgent *a);

/* rpc_async(to, func, args, kwargs, timeout).  args: a list (transfer full,
 * NULL = no args); kwargs: a dict (transfer full, NULL = none).  timeout:
 * RPC_TIMEOUT_UNSET, RPC_TIMEOUT_NEVER or a duration.  Fails synchronously
 * (NULL + error) for addressing, init, schema and pickling errors. */
RpcFuture *rpc_async(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args,
                     RpcValue *kwargs, RpcTime timeout, GError **error);
/* rpc_sync = rpc_async(…).wait() */
RpcValue *rpc_sync(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args,
                   RpcValue *kwargs, RpcTime timeout, GError **error);

/* _all_gather(obj, names, timeout): a dict name → obj over the named workers
 * (NULL = all), through the leader min(names) (spec §3.7, §6.4). */
RpcValue *rpc_agent_all_gather(RpcAgent *a, RpcValue *obj, const char *const *names,
                               RpcTime timeout, GError **error);
/* _barrier(names): errors are logged, not raised (returns FALSE). */
gboolean rpc_agent_barrier(RpcAgent *a, const char *const *names);

/* shutdown(graceful, timeout) (spec §6.4).  Blocking. */
gboolean rpc_agent_shutdown(RpcAgent *a, gboolean graceful, RpcTime timeout, GError **error);
/* The worker died: stop at once, fail every pending call, answer nothing. */
void rpc_agent_kill(RpcAgent *a, const char *reason);

/* Transport side: a message arrived (scheduler context; the agent takes a
 * reference to wire if it keeps it). */
void rpc_agent_deliver(RpcAgent *a, gint from, RpcWire *wire);
/* The connection to peer broke: fail the pending call with that message id,
 * or every pending call to peer if message_id < 0. */
void rpc_agent_connection_failed(RpcAgent *a, gint peer, gint64 message_id, const char *reason);

/* Calls of this agent still waiting on peer (a count, order-free). */
guint rpc_agent_pending_calls_to(const RpcAgent *a, gint peer);

/* Hooks for later layers (RRefs, autograd) to extend shutdown. */
typedef gboolean (*RpcShutdownHook)(RpcAgent *a, gpointer data, GError **error);

G_END_DECLS

#endif /* RPC_AGENT_H */
