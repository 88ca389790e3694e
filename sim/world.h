/* world.h — a simulated world: the kernel, the network and the workers.
 *
 * Worker i has an RPC thread pool (PyTorch's num_worker_threads, default 16;
 * it serves requests and responses), a pool of program threads (the user's
 * own threads: scenario programs, test bodies; ids from 101), an executor, a
 * faulty-agent rule set, and, once RPC is initialised, an RpcAgent.  All
 * workers share the network and the store.
 *
 * Faults: crash (the worker stops at once: its threads are unwound and its
 * agent killed; peers with calls pending on it learn through a close notice
 * sent on its links, behind the data it wrote, and handled on their thread
 * pool behind earlier replies — "Connection closed by peer"; messages to it
 * bounce), restart (a fresh agent with the same name and id), pause (the
 * worker runs nothing and receives nothing until resumed).  Pause and restart
 * act at once; a crash requested from inside a virtual thread takes effect
 * from an event at the current time (a thread cannot unwind its own pool).
 *
 * Teardown order is part of the contract: close every pool, unwind every
 * thread, free the agents, the executors (pending timers cancelled), the
 * network, the store, then the kernel (pending events' notifiers run).
 */
#ifndef SIM_WORLD_H
#define SIM_WORLD_H

#include "core/agent.h"
#include "core/executor.h"
#include "sim/faults.h"
#include "sim/kernel.h"
#include "sim/net.h"
#include "sim/vthread.h"

G_BEGIN_DECLS

#define SIM_PROGRAM_THREAD_BASE 100

typedef struct SimWorld SimWorld;

typedef struct SimWorldConfig {
    guint64 seed;
    guint n_workers;
    guint threads_per_worker; /* 0: RPC_DEFAULT_NUM_WORKER_THREADS */
    RpcTime rpc_timeout;      /* RPC_TIMEOUT_UNSET: RPC_DEFAULT_TIMEOUT */
    const char *const *names; /* NULL: worker0, worker1, … */
} SimWorldConfig;

void sim_world_config_init(SimWorldConfig *cfg, guint64 seed, guint n_workers);

SimWorld *sim_world_new_full(const SimWorldConfig *cfg);
/* A world of n workers named worker0…, default settings. */
SimWorld *sim_world_new(guint64 seed, guint n_workers, guint threads_per_worker);
void sim_world_free(SimWorld *w);

SimKernel *sim_world_kernel(SimWorld *w);
SimNet *sim_world_net(SimWorld *w);
guint sim_world_n_workers(const SimWorld *w);
RpcExecutor *sim_world_executor(SimWorld *w, guint worker);
SimThreadPool *sim_world_pool(SimWorld *w, guint worker);
SimFaults *sim_world_faults(SimWorld *w, guint worker);
const char *sim_world_worker_name(const SimWorld *w, guint worker);

/* init_rpc on every worker at once (static group): creates the agents,
 * publishes every name, then starts each.  Fails (and leaves no agent) with
 * the first worker's error, e.g. "RPC worker name x is not unique.". */
gboolean sim_world_init_rpc(SimWorld *w, GError **error);
/* init_rpc on one worker; blocks (through the store) until every worker
 * has published.  "RPC is already initialized" if its agent is running. */
gboolean sim_world_init_worker(SimWorld *w, guint worker, const char *name, GError **error);
/* The worker's agent (transfer none), or NULL before init / after a crash. */
RpcAgent *sim_world_agent(SimWorld *w, guint worker);

/* Runs fn(data) on a new program thread of the worker. */
void sim_world_spawn_program(SimWorld *w, guint worker, RpcTaskFunc fn, gpointer data,
                             GDestroyNotify destroy);

void sim_world_crash(SimWorld *w, guint worker);
gboolean sim_world_restart(SimWorld *w, guint worker, GError **error);
void sim_world_pause(SimWorld *w, guint worker, gboolean paused);
gboolean sim_world_is_alive(const SimWorld *w, guint worker);

typedef struct SimWorldStats {
    guint64 messages_sent;
    guint64 faults_failed_sends; /* faulty-agent fail rules that fired */
    guint64 faults_delays;       /* faulty-agent delay rules that fired */
    guint64 faults_drops;        /* drop rules that fired */
    guint64 crashes, restarts, pauses;
} SimWorldStats;

void sim_world_get_stats(const SimWorld *w, SimWorldStats *out);

G_END_DECLS

#endif /* SIM_WORLD_H */
