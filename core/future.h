/* future.h — RpcFuture, torch.futures.Future's semantics (spec §2).
 *
 * A future completes once, with a value XOR an error (both RpcValues, the
 * error one of type RPC_VALUE_ERROR).  Callbacks registered with then() and
 * add_done_callback() share one FIFO list; at completion they run in
 * registration order, synchronously, on the thread that completed the
 * future; a callback registered on a completed future runs at once, inline.
 * (PyTorch documents the order as unspecified; the implementation is FIFO and
 * so are we.)
 *
 * Blocking (wait, wait_all) goes through the future's executor, which
 * suspends only the calling virtual thread.  A future with no executor can be
 * waited on only once it is complete.
 *
 * Not thread-safe: one executor drives a future at a time (the simulator is
 * single-threaded; a real transport must serialise completion per worker).
 */
#ifndef RPC_FUTURE_H
#define RPC_FUTURE_H

#include <glib.h>

#include "core/executor.h"
#include "core/value.h"

G_BEGIN_DECLS

/* The texts users search for. */
#define RPC_FUTURE_MSG_COMPLETED_TWICE                                                             \
    "Attempting to mark a completed Future as complete again. Note that a Future can only be "     \
    "marked completed once."
#define RPC_FUTURE_MSG_CALLBACK_ERROR    "Got the following error when running the callback: "
#define RPC_FUTURE_MSG_NONE_IN_LIST      "Future can't be None"
#define RPC_FUTURE_MSG_INCOMPATIBLE_ARGS "incompatible function arguments."
#define RPC_FUTURE_MSG_SKIP_ERROR                                                                  \
    "Skipping setting following error on the Future since it is already marked completed (this "   \
    "is not necessarily an error): "

/* then() callback: returns the child's value (transfer full; NULL with no
 * error set means None), or NULL and sets error to fail the child. */
typedef RpcValue *(*RpcThenFunc)(RpcFuture *parent, gpointer data, GError **error);
/* add_done_callback() callback: an error it sets is logged and ignored. */
typedef gboolean (*RpcDoneFunc)(RpcFuture *fut, gpointer data, GError **error);

/* A new incomplete future (transfer full).  ex (nullable, transfer none) must
 * outlive the future; it is used for blocking and tracing. */
RpcFuture *rpc_future_new(RpcExecutor *ex);
RpcFuture *rpc_future_ref(RpcFuture *f);
void rpc_future_unref(RpcFuture *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcFuture, rpc_future_unref)

RpcExecutor *rpc_future_executor(const RpcFuture *f);
/* What a thread blocked on this future is waiting for, for deadlock reports
 * ("rpc_sync to worker1: my_sleep_func (message 7)"). */
void rpc_future_set_description(RpcFuture *f, const char *desc);
/* The same, formatted only when someone asks (a deadlock report): fmt is a
 * static printf format with exactly two %s, which a and b are copied for.
 * The RPC hot path sets one per call and almost never reads it. */
void rpc_future_set_description_lazy(RpcFuture *f, const char *fmt, const char *a, const char *b);
const char *rpc_future_description(const RpcFuture *f); /* nullable */

/* done(): completed, with a value or an error. */
gboolean rpc_future_done(const RpcFuture *f);
/* completed with an error */
gboolean rpc_future_has_error(const RpcFuture *f);

/* set_result(v): takes v.  Fails (and drops v) with RuntimeError
 * RPC_FUTURE_MSG_COMPLETED_TWICE if already complete. */
gboolean rpc_future_set_result(RpcFuture *f, RpcValue *v, GError **error);
/* set_exception(e): e (transfer full) must be an error value, else
 * AssertionError "<repr(e)> is of type <type>, not an Exception."; then as
 * set_result. */
gboolean rpc_future_set_exception(RpcFuture *f, RpcValue *e, GError **error);
/* Convenience: set_exception from a GError (transfer none). */
gboolean rpc_future_set_gerror(RpcFuture *f, const GError *e, GError **error);

/* The tolerant variants RPC internals use when several sources race
 * (response, timeout, pipe error): the first completes, later ones are
 * dropped.  Return TRUE if this call completed the future. */
gboolean rpc_future_complete_if_needed(RpcFuture *f, RpcValue *v); /* takes v */
gboolean rpc_future_fail_if_needed(RpcFuture *f, RpcValue *err);   /* takes err */

/* wait(): blocks until complete; returns the value (transfer full) or NULL and
 * the stored error — the same kind and message on every call. */
RpcValue *rpc_future_wait(RpcFuture *f, GError **error);
/* value(): as wait() for a completed future; RuntimeError if incomplete. */
RpcValue *rpc_future_value(RpcFuture *f, GError **error);
/* The stored result without blocking (transfer none; NULL if not done or
 * completed with the other kind). */
RpcValue *rpc_future_peek_value(const RpcFuture *f);
RpcValue *rpc_future_peek_error(const RpcFuture *f);

/* then(cb): a child future (transfer full).  cb == NULL: TypeError
 * RPC_FUTURE_MSG_INCOMPATIBLE_ARGS.  When cb fails, the child fails with
 * RuntimeError "Got the following error when running the callback: <Kind>:
 * <msg>".  destroy(data) runs once cb has run or the parent is freed. */
RpcFuture *rpc_future_then(RpcFuture *f, RpcThenFunc cb, gpointer data, GDestroyNotify destroy,
                           GError **error);
/* add_done_callback(cb): errors from cb are logged and ignored. */
gboolean rpc_future_add_done_callback(RpcFuture *f, RpcDoneFunc cb, gpointer data,
                                      GDestroyNotify destroy, GError **error);

/* collect_all(futs): a future whose value is the list of the input futures
 * (RPC_VALUE_FUTURE items, input order) once all succeeded, or the first
 * error as soon as one fails.  A NULL element: RuntimeError
 * RPC_FUTURE_MSG_NONE_IN_LIST.  The result uses ex (nullable) or the first
 * input's executor. */
RpcFuture *rpc_future_collect_all(RpcExecutor *ex, RpcFuture *const *futs, guint n, GError **error);
/* wait_all(futs): the list of values in input order (transfer full), or the
 * first error as soon as it occurs, without waiting for the others. */
RpcValue *rpc_future_wait_all(RpcExecutor *ex, RpcFuture *const *futs, guint n, GError **error);

/* Live futures (created and not yet freed) in this process, for leak checks
 * in tests. */
guint rpc_future_live_count(void);

G_END_DECLS

#endif /* RPC_FUTURE_H */
