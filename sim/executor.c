/* executor.c — RpcExecutor over the kernel (see executor.h).
 *
 * Timers.  Each timer record is bound for good to a slot of the executor's
 * slot array; a record whose event has been released goes on a free list
 * and its slot is reused.  A timer id is (n << SLOT_BITS) | slot, where n is
 * the executor's own call counter (1, 2, …): ids grow with every call, are
 * never addresses, and a cancel finds its record by indexing the slot and
 * comparing the id, so a stale id (fired, cancelled, or its slot reused)
 * matches nothing.  Nothing walks the slots in an observable way except
 * teardown, which cancels the pending timers in id order.
 *
 * A record lives until the kernel releases its event (after the callback,
 * or when it reaps the cancelled event), because the event holds it; only
 * then may the slot be reused.  When the executor is freed first, its
 * records are detached (ex = NULL) and the event's destroy notifier frees
 * them instead of recycling them.
 */
#include "sim/executor.h"

#include "sim/kernel-private.h"

#define SLOT_BITS 24 /* at most 2^24 timers of one executor alive at once */
#define SLOT_MASK ((G_GUINT64_CONSTANT(1) << SLOT_BITS) - 1)

typedef enum {
    TIMER_FREE,  /* on the free list: the slot may be reused */
    TIMER_ARMED, /* scheduled, not fired, not cancelled */
    TIMER_SPENT, /* firing, fired or cancelled; its event not yet released */
} TimerState;

typedef struct Timer Timer;
struct Timer {
    SimExecutor *ex; /* NULL once detached by sim_executor_free */
    guint64 id;
    guint slot;
    TimerState state;
    SimEvent *ev;
    RpcTaskFunc fn;
    gpointer data;
    GDestroyNotify destroy;
    Timer *next_free;
};

struct SimExecutor {
    RpcExecutor base; /* first: RpcExecutor* casts to SimExecutor* */
    SimKernel *k;
    SimThreadPool *pool;
    gint worker;
    guint64 calls;    /* call_after calls so far: the high part of ids */
    GPtrArray *slots; /* Timer*, by slot (owned while attached) */
    Timer *free;      /* records whose slot may be reused */
    guint armed;      /* TIMER_ARMED records */
};

/* The event's destroy notifier: after the callback ran, when the cancelled
 * event is reaped, or when the kernel frees its queue. */
static void
timer_free(gpointer p)
{
    Timer *t = p;
    GDestroyNotify destroy = t->destroy;
    gpointer data = t->data;
    SimExecutor *ex = t->ex;

    if (ex != NULL) {
        g_assert(t->state == TIMER_SPENT);
        t->state = TIMER_FREE;
        t->fn = NULL;
        t->data = NULL;
        t->destroy = NULL;
        t->ev = NULL;
        t->next_free = ex->free;
        ex->free = t;
    } else {
        g_free(t);
    }
    /* Last: the notifier may free the executor, which no longer needs t. */
    if (destroy)
        destroy(data);
}

static void
timer_fire(gpointer p)
{
    Timer *t = p;
    g_assert(t->ex != NULL && t->state == TIMER_ARMED); /* detached timers were cancelled */
    t->state = TIMER_SPENT;
    t->ex->armed--;
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
    Timer *t = ex->free;
    if (t != NULL) {
        ex->free = t->next_free;
        t->next_free = NULL;
    } else {
        g_assert(ex->slots->len <= SLOT_MASK);
        t = g_new0(Timer, 1);
        t->ex = ex;
        t->slot = ex->slots->len;
        g_ptr_array_add(ex->slots, t);
    }
    t->id = ++ex->calls << SLOT_BITS | t->slot;
    t->state = TIMER_ARMED;
    t->fn = fn;
    t->data = data;
    t->destroy = destroy;
    ex->armed++;
    /* sim_kernel_after's clamp, then straight to the queue. */
    SimKernel *k = ex->k;
    if (delay < 0)
        delay = 0;
    SimTime at = delay >= SIM_TIME_NEVER - k->now ? SIM_TIME_NEVER - 1 : k->now + delay;
    t->ev = sim_kernel__at(k, at, timer_fire, t, timer_free);
    return t->id;
}

static gboolean
ex_cancel(RpcExecutor *base, guint64 id)
{
    SimExecutor *ex = (SimExecutor *)base;
    guint64 slot = id & SLOT_MASK;
    if (slot >= ex->slots->len)
        return FALSE;
    Timer *t = g_ptr_array_index(ex->slots, slot);
    if (t->id != id || t->state != TIMER_ARMED)
        return FALSE;
    t->state = TIMER_SPENT;
    ex->armed--;
    sim_evq_cancel(ex->k->evq, t->ev); /* the queue releases t when it reaps the event */
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
    sim_kernel__trace_emit(ex->k, ex->worker, kind, a, b, c, detail);
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
    ex->slots = g_ptr_array_new();
    return ex;
}

static gint
cmp_timer_id(gconstpointer a, gconstpointer b)
{
    guint64 x = (*(Timer *const *)a)->id, y = (*(Timer *const *)b)->id;
    return (x > y) - (x < y);
}

void
sim_executor_free(SimExecutor *ex)
{
    if (ex == NULL)
        return;
    /* Cancel what is pending, in id order. */
    GPtrArray *armed = g_ptr_array_new();
    for (guint i = 0; i < ex->slots->len; i++) {
        Timer *t = g_ptr_array_index(ex->slots, i);
        if (t->state == TIMER_ARMED)
            g_ptr_array_add(armed, t);
    }
    g_ptr_array_sort(armed, cmp_timer_id);
    for (guint i = 0; i < armed->len; i++)
        ex_cancel(&ex->base, ((Timer *)g_ptr_array_index(armed, i))->id);
    g_ptr_array_unref(armed);
    /* Records still held by an event are freed by its destroy notifier. */
    for (guint i = 0; i < ex->slots->len; i++) {
        Timer *t = g_ptr_array_index(ex->slots, i);
        if (t->state == TIMER_FREE)
            g_free(t);
        else
            t->ex = NULL;
    }
    g_ptr_array_unref(ex->slots);
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
    return ex->armed;
}
