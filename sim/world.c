/* world.c — kernel, network, store and workers; see world.h.
 *
 * The simulated transport: a send first meets the sending worker's
 * faulty-agent rules (fail at once, or a delay), then the network.  At
 * arrival the destination's agent gets the bytes, or, if the destination is
 * down or its agent is not running, the sender's agent learns that the
 * connection closed (for requests; lost responses are just lost).
 */
#include "sim/world.h"

#include <string.h>

#include "core/message.h"
#include "sim/executor.h"
#include "sim/store.h"

#define PROGRAM_POOL_LIMIT 4096

typedef struct {
    SimThreadPool *pool;     /* RPC threads */
    SimThreadPool *programs; /* the user's threads */
    SimExecutor *ex;
    SimFaults *faults;
    RpcAgent *agent;
    GPtrArray *retired; /* agents replaced by a re-init; freed with the threads */
    char *name;
    guint inits;       /* times init_rpc ran on this worker: the store namespace */
    guint agents_made; /* agents created for this worker: their message ids */
    gboolean alive;
} Worker;

typedef struct {
    RpcTransport base;
    SimWorld *w;
} SimTransport;

struct SimWorld {
    SimKernel *k;
    SimNet *net;
    SimStore *store;
    SimTransport tr;
    guint n;
    guint threads;
    RpcTime rpc_timeout;
    Worker *workers;
    SimWorldStats stats;
    /* rpc_message_type_name() by type & 63 (it scans a table): the name is
     * the function's, the cache only saves the scan.  type -1 = empty. */
    struct {
        gint type;
        const char *name;
    } type_names[64];
};

static const char *
type_name(SimWorld *w, RpcMessageType type)
{
    guint i = (guint)type & 63;
    if (G_UNLIKELY(w->type_names[i].type != (gint)type)) {
        w->type_names[i].type = (gint)type;
        w->type_names[i].name = rpc_message_type_name(type);
    }
    return w->type_names[i].name;
}

static const RpcTraceKind tk_crash = {"world.crash", {NULL, NULL, NULL}};
static const RpcTraceKind tk_restart = {"world.restart", {NULL, NULL, NULL}};
static const RpcTraceKind tk_pause = {"world.pause", {"paused", NULL, NULL}};
static const RpcTraceKind tk_fault_fail = {"fault.fail_send", {"to", "id", NULL}};
static const RpcTraceKind tk_fault_delay = {"fault.delay", {"to", "id", "ns"}};
static const RpcTraceKind tk_fault_drop = {"fault.drop", {"to", "id", NULL}};

void
sim_world_config_init(SimWorldConfig *cfg, guint64 seed, guint n_workers)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->seed = seed;
    cfg->n_workers = n_workers;
    cfg->threads_per_worker = RPC_DEFAULT_NUM_WORKER_THREADS;
    cfg->rpc_timeout = RPC_TIMEOUT_UNSET;
}

/* --- transport --------------------------------------------------------------- */

static gboolean
tr_send(RpcTransport *t, gint from, gint to, const RpcMessage *msg, RpcWire *wire, GError **error)
{
    SimWorld *w = ((SimTransport *)t)->w;
    Worker *src = &w->workers[from];
    RpcMessageType type = rpc_message_type(msg);
    gint64 id = rpc_message_id(msg);
    SimTime delay = 0;
    if (sim_faults_active(src->faults)) {
        if (sim_faults_check_send(src->faults, type, rpc_message_payload(msg), error)) {
            sim_kernel_trace_emit(w->k, from, &tk_fault_fail, to, id, 0, type_name(w, type));
            return FALSE;
        }
        if (sim_faults_should_drop(src->faults, type)) {
            /* Lost on the way: the send looks fine to the agent. */
            sim_kernel_trace_emit(w->k, from, &tk_fault_drop, to, id, 0, type_name(w, type));
            return TRUE;
        }
        delay = sim_faults_delay_for(src->faults, type);
        if (delay > 0)
            sim_kernel_trace_emit(w->k, from, &tk_fault_delay, to, id, delay, type_name(w, type));
    }
    w->stats.messages_sent++;
    sim_net_send(w->net, from, to, wire, type_name(w, type), id, delay);
    return TRUE;
}

/* The endpoint `self` closed (shutdown or crash).  A peer waiting on it
 * learns through a close notice sent on the link self → peer, so it arrives
 * after every message self wrote before closing (TCP's FIN follows the data)
 * and is subject to the link's latency, loss and partitions.  A notice is an
 * empty message; only peers with calls pending on self get one. */
static void
tr_closed(RpcTransport *t, gint self)
{
    SimWorld *w = ((SimTransport *)t)->w;
    RpcWire *notice = rpc_wire_new(NULL, 0);
    for (guint j = 0; j < w->n; j++) {
        RpcAgent *peer = w->workers[j].agent;
        if ((gint)j != self && peer != NULL && rpc_agent_is_running(peer) &&
            rpc_agent_pending_calls_to(peer, self) > 0)
            sim_net_send(w->net, self, (gint)j, notice, "CLOSE", -1, 0);
    }
    rpc_wire_unref(notice);
}

static const RpcTransportVTable sim_transport_vtable = {
    .name = "sim",
    .send = tr_send,
    .closed = tr_closed,
};

/* The message from → to could not be delivered: if it was a request, its
 * caller's call fails. */
static void
bounce_to_sender(SimWorld *w, gint from, gint to, RpcWire *wire, const char *reason)
{
    RpcAgent *sender = w->workers[from].agent;
    if (sender == NULL || !rpc_agent_is_running(sender))
        return;
    RpcMessage *msg = rpc_message_decode_wire(wire, NULL);
    if (msg == NULL)
        return;
    if (rpc_message_type_is_request(rpc_message_type(msg)))
        rpc_agent_connection_failed(sender, to, rpc_message_id(msg), reason);
    rpc_message_unref(msg);
}

typedef struct {
    SimWorld *w;
    gint from, to;
    RpcAgent *agent; /* the agent the notice was for */
} CloseNotice;

static void
close_notice_run(gpointer data)
{
    CloseNotice *n = data;
    RpcAgent *dst = n->w->workers[n->to].agent;
    if (dst == n->agent && rpc_agent_is_running(dst))
        rpc_agent_connection_failed(dst, n->from, -1, RPC_MSG_CONNECTION_CLOSED);
}

static void
on_deliver(gpointer data, gint from, gint to, RpcWire *wire)
{
    SimWorld *w = data;
    RpcAgent *dst = w->workers[to].agent;
    if (rpc_wire_size(wire) == 0) { /* a close notice (tr_closed) */
        if (dst == NULL || !rpc_agent_is_running(dst))
            return;
        /* Through the thread pool, behind the responses that arrived
         * before it: the data read before a pipe error is processed first. */
        CloseNotice *n = g_new(CloseNotice, 1);
        *n = (CloseNotice){w, from, to, dst};
        rpc_executor_spawn(sim_executor_base(w->workers[to].ex), close_notice_run, n, g_free);
        return;
    }
    if (dst != NULL && rpc_agent_is_running(dst))
        rpc_agent_deliver(dst, from, wire);
    else
        bounce_to_sender(w, from, to, wire, RPC_MSG_CONNECTION_CLOSED);
}

static void
on_bounce(gpointer data, gint from, gint to, RpcWire *wire, const char *reason)
{
    bounce_to_sender(data, from, to, wire, reason);
}

/* --- workers ------------------------------------------------------------------- */

static void
worker_up(SimWorld *w, guint i)
{
    Worker *wk = &w->workers[i];
    wk->pool = sim_pool_new(w->k, (gint)i, w->threads);
    wk->programs = sim_pool_new(w->k, (gint)i, PROGRAM_POOL_LIMIT);
    sim_pool_set_id_base(wk->programs, SIM_PROGRAM_THREAD_BASE);
    wk->ex = sim_executor_new(w->k, wk->pool, (gint)i);
    wk->alive = TRUE;
}

/* A re-init replaces a shut-down agent, but the worker's threads may still
 * be running its tasks (a UDF finishing after a non-graceful shutdown, as
 * PyTorch's pool drains): the old agent lives until those threads are
 * gone. */
static void
worker_retire_agent(Worker *wk)
{
    if (wk->agent == NULL)
        return;
    if (wk->retired == NULL)
        wk->retired = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_agent_free);
    g_ptr_array_add(wk->retired, wk->agent);
    wk->agent = NULL;
}

static void
worker_free_agents(Worker *wk)
{
    rpc_agent_free(wk->agent);
    wk->agent = NULL;
    if (wk->retired != NULL)
        g_ptr_array_unref(wk->retired);
    wk->retired = NULL;
}

/* Frees the worker's threads, agents and executor (after its pools were
 * closed). */
static void
worker_free_parts(Worker *wk)
{
    sim_pool_free(wk->pool);
    sim_pool_free(wk->programs);
    wk->pool = wk->programs = NULL;
    worker_free_agents(wk);
    sim_executor_free(wk->ex);
    wk->ex = NULL;
}

SimWorld *
sim_world_new_full(const SimWorldConfig *cfg)
{
    g_return_val_if_fail(cfg != NULL && cfg->n_workers > 0, NULL);
    SimWorld *w = g_new0(SimWorld, 1);
    w->k = sim_kernel_new(cfg->seed);
    w->n = cfg->n_workers;
    w->threads = cfg->threads_per_worker ? cfg->threads_per_worker : RPC_DEFAULT_NUM_WORKER_THREADS;
    w->rpc_timeout = cfg->rpc_timeout == RPC_TIMEOUT_UNSET ? RPC_DEFAULT_TIMEOUT : cfg->rpc_timeout;
    w->net = sim_net_new(w->k, w->n, on_deliver, on_bounce, w);
    w->store = sim_store_new();
    w->tr.base.vt = &sim_transport_vtable;
    w->tr.w = w;
    w->workers = g_new0(Worker, w->n);
    for (guint i = 0; i < G_N_ELEMENTS(w->type_names); i++)
        w->type_names[i].type = -1;
    for (guint i = 0; i < w->n; i++) {
        Worker *wk = &w->workers[i];
        wk->name = cfg->names ? g_strdup(cfg->names[i]) : g_strdup_printf("worker%u", i);
        wk->faults = sim_faults_new();
        sim_faults_seed(wk->faults, cfg->seed, i);
        worker_up(w, i);
    }
    return w;
}

SimWorld *
sim_world_new(guint64 seed, guint n_workers, guint threads_per_worker)
{
    SimWorldConfig cfg;
    sim_world_config_init(&cfg, seed, n_workers);
    cfg.threads_per_worker = threads_per_worker;
    return sim_world_new_full(&cfg);
}

void
sim_world_free(SimWorld *w)
{
    if (w == NULL)
        return;
    for (guint i = 0; i < w->n; i++) {
        if (w->workers[i].pool) {
            sim_pool_close(w->workers[i].pool);
            sim_pool_close(w->workers[i].programs);
        }
    }
    for (guint i = 0; i < w->n; i++)
        if (w->workers[i].pool) {
            sim_pool_free(w->workers[i].pool);
            sim_pool_free(w->workers[i].programs);
            w->workers[i].pool = w->workers[i].programs = NULL;
        }
    for (guint i = 0; i < w->n; i++)
        worker_free_agents(&w->workers[i]);
    for (guint i = 0; i < w->n; i++) {
        sim_executor_free(w->workers[i].ex);
        sim_faults_free(w->workers[i].faults);
        g_free(w->workers[i].name);
    }
    sim_net_free(w->net);
    sim_store_free(w->store);
    sim_kernel_free(w->k);
    g_free(w->workers);
    g_free(w);
}

SimKernel *
sim_world_kernel(SimWorld *w)
{
    return w->k;
}

SimNet *
sim_world_net(SimWorld *w)
{
    return w->net;
}

guint
sim_world_n_workers(const SimWorld *w)
{
    return w->n;
}

RpcExecutor *
sim_world_executor(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].ex ? sim_executor_base(w->workers[worker].ex) : NULL;
}

SimThreadPool *
sim_world_pool(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].pool;
}

SimFaults *
sim_world_faults(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].faults;
}

const char *
sim_world_worker_name(const SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].name;
}

RpcAgent *
sim_world_agent(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].agent;
}

gboolean
sim_world_is_alive(const SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, FALSE);
    return w->workers[worker].alive;
}

/* --- init ------------------------------------------------------------------------ */

static RpcAgent *
make_agent(SimWorld *w, guint i, const char *name, GError **error)
{
    Worker *wk = &w->workers[i];
    char prefix[32];
    g_snprintf(prefix, sizeof prefix, "g%u/", wk->inits);
    RpcAgentConfig cfg = {
        .name = name,
        .id = (gint)i,
        .world_size = w->n,
        .rpc_timeout = w->rpc_timeout,
        .executor = sim_executor_base(wk->ex),
        .transport = &w->tr.base,
        .store = sim_store_base(w->store),
        .registry = rpc_registry_new_default(),
        .store_prefix = prefix,
        /* Each agent of a worker has its own id range (2^40 ids): a reply
         * still on the wire to an earlier agent never matches a new call. */
        .first_message_id = (gint64)wk->agents_made++ << 40,
    };
    return rpc_agent_new(&cfg, error);
}

static gboolean
check_not_initialized(SimWorld *w, guint i, GError **error)
{
    RpcAgent *a = w->workers[i].agent;
    if (a != NULL && rpc_agent_is_running(a)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "RPC is already initialized");
        return FALSE;
    }
    return TRUE;
}

gboolean
sim_world_init_rpc(SimWorld *w, GError **error)
{
    for (guint i = 0; i < w->n; i++)
        if (!check_not_initialized(w, i, error))
            return FALSE;
    RpcAgent **made = g_new0(RpcAgent *, w->n);
    gboolean ok = TRUE;
    for (guint i = 0; ok && i < w->n; i++)
        ok = (made[i] = make_agent(w, i, w->workers[i].name, error)) != NULL;
    for (guint i = 0; ok && i < w->n; i++)
        rpc_agent_publish(made[i]);
    for (guint i = 0; ok && i < w->n; i++)
        ok = rpc_agent_start(made[i], error);
    for (guint i = 0; i < w->n; i++) {
        w->workers[i].inits++;
        if (ok) {
            worker_retire_agent(&w->workers[i]);
            w->workers[i].agent = made[i];
        } else {
            rpc_agent_free(made[i]);
        }
    }
    g_free(made);
    return ok;
}

gboolean
sim_world_init_worker(SimWorld *w, guint worker, const char *name, GError **error)
{
    g_return_val_if_fail(worker < w->n, FALSE);
    if (!check_not_initialized(w, worker, error))
        return FALSE;
    RpcAgent *a = make_agent(w, worker, name ? name : w->workers[worker].name, error);
    w->workers[worker].inits++;
    if (a == NULL)
        return FALSE;
    rpc_agent_publish(a);
    if (!rpc_agent_start(a, error)) {
        rpc_agent_free(a);
        return FALSE;
    }
    worker_retire_agent(&w->workers[worker]);
    w->workers[worker].agent = a;
    return TRUE;
}

void
sim_world_spawn_program(SimWorld *w, guint worker, RpcTaskFunc fn, gpointer data,
                        GDestroyNotify destroy)
{
    g_return_if_fail(worker < w->n);
    Worker *wk = &w->workers[worker];
    if (!wk->alive) {
        if (destroy)
            destroy(data);
        return;
    }
    sim_pool_spawn(wk->programs, fn, data, destroy);
}

/* --- faults ------------------------------------------------------------------------ */

typedef struct {
    SimWorld *w;
    guint worker;
    gboolean flag;
} WorldOp;

static void
do_crash(SimWorld *w, guint i)
{
    Worker *wk = &w->workers[i];
    if (!wk->alive)
        return;
    sim_kernel_trace_emit(w->k, (gint)i, &tk_crash, 0, 0, 0, NULL);
    w->stats.crashes++;
    wk->alive = FALSE;
    if (wk->agent)
        rpc_agent_kill(wk->agent, "crashed"); /* close notices go out first */
    sim_net_set_down(w->net, (gint)i, TRUE);
    sim_pool_close(wk->pool);
    sim_pool_close(wk->programs);
    worker_free_parts(wk);
}

static void
crash_event(gpointer data)
{
    WorldOp *op = data;
    do_crash(op->w, op->worker);
}

static void
pause_event(gpointer data)
{
    WorldOp *op = data;
    Worker *wk = &op->w->workers[op->worker];
    if (!wk->alive)
        return;
    sim_kernel_trace_emit(op->w->k, (gint)op->worker, &tk_pause, op->flag, 0, 0, NULL);
    if (op->flag)
        op->w->stats.pauses++;
    sim_pool_set_paused(wk->pool, op->flag);
    sim_pool_set_paused(wk->programs, op->flag);
    sim_net_set_paused(op->w->net, (gint)op->worker, op->flag);
}

static void
run_or_defer(SimWorld *w, guint worker, gboolean flag, SimEventFunc fn)
{
    WorldOp *op = g_new(WorldOp, 1);
    op->w = w;
    op->worker = worker;
    op->flag = flag;
    if (sim_thread_current(w->k) == NULL) {
        fn(op);
        g_free(op);
    } else {
        /* A thread cannot free its own pool: act from an event, now. */
        sim_kernel_at(w->k, sim_kernel_now(w->k), fn, op, g_free);
    }
}

void
sim_world_crash(SimWorld *w, guint worker)
{
    g_return_if_fail(worker < w->n);
    run_or_defer(w, worker, TRUE, crash_event);
}

void
sim_world_pause(SimWorld *w, guint worker, gboolean paused)
{
    g_return_if_fail(worker < w->n);
    /* Immediate, even from a thread of that worker: the calling thread runs
     * on until it next blocks, then is held like the others. */
    WorldOp op = {w, worker, paused};
    pause_event(&op);
}

gboolean
sim_world_restart(SimWorld *w, guint worker, GError **error)
{
    g_return_val_if_fail(worker < w->n, FALSE);
    Worker *wk = &w->workers[worker];
    if (wk->alive) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "%s is not down", wk->name);
        return FALSE;
    }
    sim_kernel_trace_emit(w->k, (gint)worker, &tk_restart, 0, 0, 0, NULL);
    w->stats.restarts++;
    worker_up(w, worker);
    sim_net_set_down(w->net, (gint)worker, FALSE);
    /* Same group, same store namespace: the names are already published. */
    wk->inits--;
    RpcAgent *a = make_agent(w, worker, wk->name, error);
    wk->inits++;
    if (a == NULL)
        return FALSE;
    rpc_agent_publish(a);
    if (!rpc_agent_start(a, error)) {
        rpc_agent_free(a);
        return FALSE;
    }
    wk->agent = a;
    return TRUE;
}

void
sim_world_get_stats(const SimWorld *w, SimWorldStats *out)
{
    *out = w->stats;
    out->faults_failed_sends = 0;
    out->faults_delays = 0;
    out->faults_drops = 0;
    for (guint i = 0; i < w->n; i++) {
        out->faults_failed_sends += sim_faults_fired_fails(w->workers[i].faults);
        out->faults_delays += sim_faults_fired_delays(w->workers[i].faults);
        out->faults_drops += sim_faults_fired_drops(w->workers[i].faults);
    }
}
