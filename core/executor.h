/* executor.h — how core/ sees time, timers, threads and blocking.
 *
 * core/ never includes sim/.  Everything it needs from the world it runs in
 * comes through one RpcExecutor per worker: the simulator implements it with
 * virtual time and coroutines (sim/world.c), a real transport with a
 * GMainContext and OS threads.  Methods take the object first, as in
 * SQLite's sqlite3_vfs; one const vtable per backend.
 *
 * Time is an integer count of nanoseconds (RpcTime), never floating point.
 *
 * Blocking: block_on() suspends only the calling (virtual) thread until the
 * future completes.  It can fail: when the run is torn down with the thread
 * still blocked (deadlock, or the world is freed), the thread is resumed with
 * an error so that the code above it unwinds and releases what it holds.
 * Callers must treat a FALSE return like any other error.
 *
 * Tracing: every observable step goes to trace(); the simulator folds the
 * record into the run's fingerprint.  The kind descriptor is static; only
 * its name (never its address) is observable.
 */
#ifndef RPC_EXECUTOR_H
#define RPC_EXECUTOR_H

#include <glib.h>

G_BEGIN_DECLS

typedef gint64 RpcTime; /* nanoseconds */
#define RPC_NS         ((RpcTime)1)
#define RPC_US         ((RpcTime)1000)
#define RPC_MS         ((RpcTime)1000000)
#define RPC_S          ((RpcTime)1000000000)
#define RPC_TIME_NEVER G_MAXINT64

typedef struct RpcFuture RpcFuture;
typedef struct RpcExecutor RpcExecutor;

typedef void (*RpcTaskFunc)(gpointer data);

/* A static description of one kind of trace record. */
typedef struct RpcTraceKind {
    const char *name;      /* "send", "deliver", "future.done", … */
    const char *labels[3]; /* labels of the numeric fields; NULL = unused */
} RpcTraceKind;

typedef struct RpcExecutorVTable {
    const char *name; /* "sim", "tcp" */
    /* Current time on this worker's clock. */
    RpcTime (*now)(RpcExecutor *ex);
    /* Runs fn(data) once, delay ns from now, outside any worker thread (like
     * PyTorch's timeout and retry threads).  Returns a timer id > 0.
     * destroy(data) runs after fn, or on cancel, or at teardown. */
    guint64 (*call_after)(RpcExecutor *ex, RpcTime delay, RpcTaskFunc fn, gpointer data,
                          GDestroyNotify destroy);
    /* Cancels a pending timer; FALSE if it already ran or was cancelled. */
    gboolean (*cancel)(RpcExecutor *ex, guint64 timer_id);
    /* Runs fn(data) on one of the worker's threads; queues when all are busy. */
    void (*spawn)(RpcExecutor *ex, RpcTaskFunc fn, gpointer data, GDestroyNotify destroy);
    /* Suspends the calling thread until fut is done.  FALSE + error when the
     * wait can never end (deadlock, teardown). */
    gboolean (*block_on)(RpcExecutor *ex, RpcFuture *fut, GError **error);
    /* Id of the calling virtual/OS thread on this worker; 0 outside one. */
    guint (*current_thread)(RpcExecutor *ex);
    /* Records one observable step. */
    void (*trace)(RpcExecutor *ex, const RpcTraceKind *kind, gint64 a, gint64 b, gint64 c,
                  const char *detail);
} RpcExecutorVTable;

/* Embedded at the start of each backend's executor struct. */
struct RpcExecutor {
    const RpcExecutorVTable *vt;
};

static inline RpcTime
rpc_executor_now(RpcExecutor *ex)
{
    return ex->vt->now(ex);
}

static inline guint64
rpc_executor_call_after(RpcExecutor *ex, RpcTime delay, RpcTaskFunc fn, gpointer data,
                        GDestroyNotify destroy)
{
    return ex->vt->call_after(ex, delay, fn, data, destroy);
}

static inline gboolean
rpc_executor_cancel(RpcExecutor *ex, guint64 timer_id)
{
    return ex->vt->cancel(ex, timer_id);
}

static inline void
rpc_executor_spawn(RpcExecutor *ex, RpcTaskFunc fn, gpointer data, GDestroyNotify destroy)
{
    ex->vt->spawn(ex, fn, data, destroy);
}

static inline gboolean
rpc_executor_block_on(RpcExecutor *ex, RpcFuture *fut, GError **error)
{
    return ex->vt->block_on(ex, fut, error);
}

static inline guint
rpc_executor_current_thread(RpcExecutor *ex)
{
    return ex->vt->current_thread(ex);
}

static inline void
rpc_executor_trace(RpcExecutor *ex, const RpcTraceKind *kind, gint64 a, gint64 b, gint64 c,
                   const char *detail)
{
    if (ex != NULL)
        ex->vt->trace(ex, kind, a, b, c, detail);
}

/* Blocks the calling thread for `duration` of the executor's time.
 * FALSE + error when the run is torn down during the sleep. */
gboolean rpc_executor_sleep(RpcExecutor *ex, RpcTime duration, GError **error);

G_END_DECLS

#endif /* RPC_EXECUTOR_H */
