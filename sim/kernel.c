/* kernel.c — virtual clock, event dispatch, deadlock detection.
 *
 * Invariant: the clock never goes backwards; an event scheduled for the past
 * is a caller bug.  Dispatch pops before running, so an event may schedule,
 * cancel or (through a blocking wait outside a thread) recursively dispatch
 * other events.
 */
#include "sim/kernel-private.h"

#include "sim/error.h"

/* clang-format off */
G_DEFINE_QUARK(sim-error-quark, sim_error)
/* clang-format on */

SimKernel *
sim_kernel_new(guint64 seed)
{
    SimKernel *k = g_new0(SimKernel, 1);
    k->seed = seed;
    k->evq = sim_evq_new();
    k->trace = sim_trace_new();
    k->main_coro = sim_coro_new_main();
    k->pools = g_ptr_array_new();
    return k;
}

void
sim_kernel_free(SimKernel *k)
{
    if (k == NULL)
        return;
    g_return_if_fail(k->pools->len == 0);
    sim_evq_free(k->evq);
    sim_trace_free(k->trace);
    sim_coro_free(k->main_coro);
    g_ptr_array_unref(k->pools);
    g_free(k);
}

SimTime
sim_kernel_now(const SimKernel *k)
{
    return k->now;
}

guint64
sim_kernel_seed(const SimKernel *k)
{
    return k->seed;
}

SimTrace *
sim_kernel_trace(SimKernel *k)
{
    return k->trace;
}

guint64
sim_kernel_events_run(const SimKernel *k)
{
    return k->events_run;
}

void
sim_kernel_rng(const SimKernel *k, const char *stream, guint64 index, SimRng *r)
{
    sim_rng_init_stream(r, k->seed, stream, index);
}

SimEvent *
sim_kernel_at(SimKernel *k, SimTime t, SimEventFunc fn, gpointer data, GDestroyNotify destroy)
{
    g_return_val_if_fail(k != NULL && fn != NULL, NULL);
    g_return_val_if_fail(t >= k->now, NULL);
    return sim_evq_push(k->evq, t, fn, data, destroy);
}

SimEvent *
sim_kernel_after(SimKernel *k, SimTime delay, SimEventFunc fn, gpointer data,
                 GDestroyNotify destroy)
{
    g_return_val_if_fail(delay >= 0, NULL);
    /* SIM_TIME_NEVER itself is not schedulable: clamp just below it. */
    SimTime t = delay >= SIM_TIME_NEVER - k->now ? SIM_TIME_NEVER - 1 : k->now + delay;
    return sim_kernel_at(k, t, fn, data, destroy);
}

void
sim_kernel_cancel(SimKernel *k, SimEvent *ev)
{
    sim_evq_cancel(k->evq, ev);
}

/* Runs a popped event: the clock moves to its time first. */
static inline void
run_event(SimKernel *k, SimEvent *ev)
{
    g_assert(ev->time >= k->now);
    k->now = ev->time;
    k->events_run++;
    ev->fn(ev->data);
    sim_evq_release(k->evq, ev);
}

gboolean
sim_kernel_step(SimKernel *k)
{
    SimEvent *ev = sim_evq_pop(k->evq);
    if (ev == NULL)
        return FALSE;
    run_event(k, ev);
    return TRUE;
}

static SimRunResult
run_loop(SimKernel *k, SimTime limit)
{
    k->stop = FALSE;
    for (;;) {
        if (k->stop) {
            k->stop = FALSE;
            return SIM_RUN_STOPPED;
        }
        /* One queue call per event: pops only what is due by limit. */
        SimEvent *ev = sim_evq_pop_until(k->evq, limit);
        if (ev == NULL) {
            if (sim_evq_len(k->evq) == 0)
                break;
            if (limit > k->now) /* never backwards */
                k->now = limit;
            return SIM_RUN_TIME_LIMIT;
        }
        run_event(k, ev);
    }
    return sim_kernel_deadlock_report_needed(k) ? SIM_RUN_DEADLOCK : SIM_RUN_IDLE;
}

SimRunResult
sim_kernel_run(SimKernel *k)
{
    g_return_val_if_fail(k != NULL, SIM_RUN_IDLE);
    return run_loop(k, SIM_TIME_NEVER);
}

SimRunResult
sim_kernel_run_until(SimKernel *k, SimTime limit)
{
    g_return_val_if_fail(k != NULL, SIM_RUN_IDLE);
    return run_loop(k, limit);
}

void
sim_kernel_stop(SimKernel *k)
{
    k->stop = TRUE;
}

guint
sim_kernel_blocked_threads(const SimKernel *k)
{
    return k->blocked;
}

gboolean
sim_kernel_deadlock_report_needed(const SimKernel *k)
{
    if (k->blocked > 0)
        return TRUE;
    for (guint i = 0; i < k->pools->len; i++) {
        SimThreadPool *pool = g_ptr_array_index(k->pools, i);
        if (sim_pool_tasks_queued(pool) > 0 || sim_pool_threads_held(pool) > 0)
            return TRUE;
    }
    return FALSE;
}

char *
sim_kernel_deadlock_report(const SimKernel *k)
{
    if (!sim_kernel_deadlock_report_needed(k))
        return NULL;
    char now[32];
    GString *out = g_string_new(NULL);
    g_string_append_printf(out,
                           "deadlock at t=%s: the event queue is empty and %u virtual thread%s "
                           "blocked\n",
                           sim_time_format(k->now, now, sizeof now), k->blocked,
                           k->blocked == 1 ? " is" : "s are");
    /* Pools are registered in creation order; sort by worker id so the
     * report does not depend on it. */
    GPtrArray *pools = g_ptr_array_copy(k->pools, NULL, NULL);
    g_ptr_array_sort(pools, sim_pool_compare_by_worker);
    for (guint i = 0; i < pools->len; i++)
        sim_pool_describe_blocked(g_ptr_array_index(pools, i), out);
    g_ptr_array_unref(pools);
    return g_string_free(out, FALSE);
}

void
sim_kernel_trace_emit(SimKernel *k, gint worker, const SimTraceKind *kind, gint64 a, gint64 b,
                      gint64 c, const char *detail)
{
    g_return_if_fail(k != NULL && kind != NULL && kind->name != NULL);
    sim_kernel__trace_emit(k, worker, kind, a, b, c, detail);
}
