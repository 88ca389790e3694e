/* rpcworld.h — a small harness for the RPC test suites.
 *
 * A test makes a simulated world (by default the conformance world of spec
 * §11.0: 4 workers worker0..worker3, 16 threads each, default timeout 60 s)
 * with RPC initialised, says which body runs on which rank, and runs the
 * kernel.  Each rank's body runs on a program thread of that worker (a user
 * thread, not one of the RPC pool's), so it may block in rpc_sync, wait or
 * sleep.  After its body, every rank shuts down gracefully (or as
 * RpcTestOptions.shutdown says) — ranks without a body too, since a graceful
 * shutdown is a barrier over all of them.  rt_run() asserts the run ended
 * IDLE (no deadlock) and that every agent's active-call counters are back at
 * 0, unless the options say otherwise; rt_free() frees the world and asserts
 * that no RpcFuture leaked.
 *
 * Time assertions are exact: rt_now() is the kernel's virtual clock.
 * Asserting inside a body aborts the test binary, as g_assert does anywhere.
 */
#ifndef RPC_TEST_RPCWORLD_H
#define RPC_TEST_RPCWORLD_H

#include <glib.h>

#include "core/agent.h"
#include "core/future.h"
#include "core/tensor.h"
#include "sim/kernel.h"
#include "sim/world.h"

G_BEGIN_DECLS

#define RT_DEFAULT_SEED    20240611u
#define RT_DEFAULT_WORKERS 4

typedef enum {
    RT_SHUTDOWN_GRACEFUL = 0, /* rpc.shutdown() after each rank's body */
    RT_SHUTDOWN_NON_GRACEFUL, /* rpc.shutdown(graceful=False) */
    RT_SHUTDOWN_NONE,         /* the body shuts down itself (or never) */
} RtShutdown;

typedef struct RpcTestOptions {
    guint n_workers;          /* 0: RT_DEFAULT_WORKERS */
    guint threads_per_worker; /* 0: RPC_DEFAULT_NUM_WORKER_THREADS */
    guint64 seed;             /* 0: RT_DEFAULT_SEED */
    RpcTime rpc_timeout;      /* 0: RPC_DEFAULT_TIMEOUT; RT_TIMEOUT_NEVER: none */
    const char *const *names; /* NULL: worker0, worker1, … */
    gboolean no_init;         /* do not init_rpc before the bodies run */
    gboolean pytorch_faults;  /* every worker gets the faulty fixture's defaults (§10) */
    RtShutdown shutdown;
    gboolean expect_deadlock;    /* rt_run() expects SIM_RUN_DEADLOCK instead of IDLE */
    gboolean skip_counter_check; /* leave active calls as they are at the end */
} RpcTestOptions;

/* rpc_timeout value meaning "no timeout" (0 already means the default). */
#define RT_TIMEOUT_NEVER ((RpcTime)-2)

typedef struct RpcTestCtx RpcTestCtx;
typedef void (*RpcTestBody)(RpcTestCtx *ctx, gint rank);

struct RpcTestCtx {
    SimWorld *w;
    SimKernel *k;
    guint n;
    RpcTestOptions opts;
    gpointer data;         /* the test's own state (not freed) */
    SimRunResult result;   /* of the last rt_run() */
    char *deadlock_report; /* of the last rt_run(), NULL if none */
    /* private */
    RpcTestBody *bodies; /* by rank, for the next run */
    guint running;       /* program threads of the current run */
    guint finished;      /* of those, how many returned */
    guint barrier_arrived;
    RpcFuture *barrier;
    guint live_before;
    GHashTable *kinds; /* trace kind name → records so far */
};

/* opts may be NULL (the defaults).  Initialises RPC unless opts->no_init. */
RpcTestCtx *rt_new(const RpcTestOptions *opts);
/* Frees the world, then asserts every RpcFuture made since rt_new is gone. */
void rt_free(RpcTestCtx *ctx);

/* body runs on rank (every rank if rank < 0) in the next rt_run(). */
void rt_on(RpcTestCtx *ctx, gint rank, RpcTestBody body);
/* Spawns one program thread per live worker (body, then shutdown), runs the
 * kernel to the end, checks the result (see above) and forgets the bodies. */
SimRunResult rt_run(RpcTestCtx *ctx);
/* rt_new + rt_on + rt_run + rt_free. */
void rt_run_world(const RpcTestOptions *opts, gint rank, RpcTestBody body, gpointer data);

/* An external barrier (dist.barrier(), not RPC) across this run's program
 * threads; call from a body. */
void rt_barrier(RpcTestCtx *ctx, gint rank);
/* Runs fn on n more program threads of rank and waits for all of them. */
typedef void (*RpcTestThreadFunc)(RpcTestCtx *ctx, gint rank, guint index);
void rt_threads(RpcTestCtx *ctx, gint rank, guint n, RpcTestThreadFunc fn);

SimTime rt_now(RpcTestCtx *ctx);
RpcAgent *rt_agent(RpcTestCtx *ctx, gint rank); /* transfer none; NULL if none */
RpcExecutor *rt_executor(RpcTestCtx *ctx, gint rank);
void rt_sleep(RpcTestCtx *ctx, gint rank, SimTime d);
gint rt_next(RpcTestCtx *ctx, gint rank, gint k); /* (rank + k) % n */

/* Values (transfer full). */
RpcValue *rt_ones(gint64 rows, gint64 cols);
RpcValue *rt_ones1(gint64 n);
RpcValue *rt_full(gint64 rows, gint64 cols, double fill);
RpcValue *rt_int(gint64 i);
RpcValue *rt_str(const char *s);
RpcValue *rt_name(RpcTestCtx *ctx, gint rank); /* "worker<rank>" as a string value */
/* A list of the given items (taken), NULL-terminated. */
RpcValue *rt_args(RpcValue *first, ...) G_GNUC_NULL_TERMINATED;
/* A dict from key, value (taken) pairs, NULL-terminated. */
RpcValue *rt_kwargs(const char *first_key, ...) G_GNUC_NULL_TERMINATED;

/* rpc_sync / rpc_async from rank to worker `to` (by name). */
RpcValue *rt_sync(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args,
                  RpcTime timeout, GError **error);
RpcFuture *rt_async(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args,
                    RpcTime timeout);

/* Assertions.  rt_assert_error checks kind and substring, then clears *err. */
void rt_assert_error(GError **err, RpcErrorKind kind, const char *substring);
/* got and want are taken; equality is rpc_value_equal (tensors exactly). */
void rt_assert_value(RpcValue *got, RpcValue *want);
/* Waits on f (taken) and asserts its value equals want (taken). */
void rt_assert_wait(RpcFuture *f, RpcValue *want);
/* Waits on f (taken) and asserts the error. */
void rt_assert_wait_error(RpcFuture *f, RpcErrorKind kind, const char *substring);

/* Trace records of this kind ("rpc.send", "fault.delay") so far. */
guint rt_trace_count(RpcTestCtx *ctx, const char *kind_name);

G_END_DECLS

#endif /* RPC_TEST_RPCWORLD_H */
