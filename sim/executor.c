/* executor.c — RpcExecutor over the kernel (see executor.h).
 *
 * Timer ids are the executor's own counter (1, 2, …), never addresses; the
 * id → timer table is only looked up, never iterated in an observable way
 * (teardown cancels in id order).
 */
#include "sim/executor.h"

#include "sim/kernel-private.h"

struct SimExecutor {
    RpcExecutor base; /* first: RpcExecutor* casts to SimExecutor* */
    SimKernel *k;
    SimThreadPool *pool;
    gint worker;
    guint64 next_timer;
    GHashTable *timers; /* guint64 id → Timer* */
};

typedef struct {
    SimExecutor *ex;
    guint64 id;
    SimEvent *ev;
    RpcTaskFunc fn;
    gpointer data;
    GDestroyNotify destroy;
} Timer;

static void
timer_free(gpointer p)
{
    Timer *t = p;
    if (t->destroy)
        t->destroy(t->data);
    g_free(t);
}

static void
timer_fire(gpointer p)
{
    Timer *t = p;
    g_hash_table_remove(t->ex->timers, &t->id);
    t->fn(t->data);
}

static RpcTime
ex_now(RpcExecutor *base)
{
    return ((SimExecutor *)base)->k->now;
}

static guint64
ex_call_after(RpcExecutor *base, RpcTime delay, RpcTaskFunc fn, gpointer data,
              GDestroyNotify destroy)
{
    SimExecutor *ex = (SimExecutor *)base;
    Timer *t = g_new(Timer, 1);
    t->ex = ex;
    t->id = ++ex->next_timer;
    t->fn = fn;
    t->data = data;
    t->destroy = destroy;
    t->ev = sim_kernel_after(ex->k, delay < 0 ? 0 : delay, timer_fire, t, timer_free);
    g_hash_table_insert(ex->timers, &t->id, t);
    return t->id;
}

static gboolean
ex_cancel(RpcExecutor *base, guint64 id)
{
    SimExecutor *ex = (SimExecutor *)base;
    Timer *t = g_hash_table_lookup(ex->timers, &id);
    if (t == NULL)
        return FALSE;
    g_hash_table_remove(ex->timers, &id);
    sim_kernel_cancel(ex->k, t->ev); /* the queue frees t when it reaps the event */
    return TRUE;
}

static void
ex_spawn(RpcExecutor *base, RpcTaskFunc fn, gpointer data, GDestroyNotify destroy)
{
    sim_pool_spawn(((SimExecutor *)base)->pool, fn, data, destroy);
}

static gboolean
ex_block_on(RpcExecutor *base, RpcFuture *fut, GError **error)
{
    return sim_thread_block_on(((SimExecutor *)base)->k, fut, error);
}

static guint
ex_current_thread(RpcExecutor *base)
{
    SimExecutor *ex = (SimExecutor *)base;
    SimThread *t = sim_thread_current(ex->k);
    return (t && sim_thread_worker(t) == ex->worker) ? sim_thread_id(t) : 0;
}

static void
ex_trace(RpcExecutor *base, const RpcTraceKind *kind, gint64 a, gint64 b, gint64 c,
         const char *detail)
{
    SimExecutor *ex = (SimExecutor *)base;
    sim_kernel_trace_emit(ex->k, ex->worker, kind, a, b, c, detail);
}

static const RpcExecutorVTable sim_executor_vtable = {
    .name = "sim",
    .now = ex_now,
    .call_after = ex_call_after,
    .cancel = ex_cancel,
    .spawn = ex_spawn,
    .block_on = ex_block_on,
    .current_thread = ex_current_thread,
    .trace = ex_trace,
};

SimExecutor *
sim_executor_new(SimKernel *k, SimThreadPool *pool, gint worker)
{
    g_return_val_if_fail(k != NULL && pool != NULL, NULL);
    SimExecutor *ex = g_new0(SimExecutor, 1);
    ex->base.vt = &sim_executor_vtable;
    ex->k = k;
    ex->pool = pool;
    ex->worker = worker;
    ex->timers = g_hash_table_new(g_int64_hash, g_int64_equal);
    return ex;
}

static gint
cmp_timer_id(gconstpointer a, gconstpointer b)
{
    guint64 x = ((const Timer *)a)->id, y = ((const Timer *)b)->id;
    return (x > y) - (x < y);
}

void
sim_executor_free(SimExecutor *ex)
{
    if (ex == NULL)
        return;
    GList *timers = g_list_sort(g_hash_table_get_values(ex->timers), cmp_timer_id);
    for (GList *l = timers; l != NULL; l = l->next)
        ex_cancel(&ex->base, ((Timer *)l->data)->id);
    g_list_free(timers);
    g_hash_table_unref(ex->timers);
    g_free(ex);
}

RpcExecutor *
sim_executor_base(SimExecutor *ex)
{
    return &ex->base;
}

guint
sim_executor_pending_timers(const SimExecutor *ex)
{
    return g_hash_table_size(ex->timers);
}
