/* kernel-private.h — SimKernel's body, shared by the sim/ files that need
 * it (kernel.c, vthread.c, executor.c, net.c), and the inline trace glue. */
#ifndef SIM_KERNEL_PRIVATE_H
#define SIM_KERNEL_PRIVATE_H

#include "sim/coro.h"
#include "sim/kernel.h"
#include "sim/trace-private.h"
#include "sim/vthread.h"

struct SimKernel {
    SimTime now;
    guint64 seed;
    SimEvq *evq;
    SimTrace *trace;
    guint64 events_run;
    gboolean stop;
    SimCoro *main_coro; /* the OS thread's own context */
    SimThread *current; /* running virtual thread, NULL in the scheduler */
    guint current_id;   /* its sim_thread_id(), 0 in the scheduler (for trace stamps) */
    GPtrArray *pools;   /* SimThreadPool*, in creation order (not owned) */
    guint blocked;      /* threads blocked right now, all pools */
};

/* vthread.c: appends one pool's part of the deadlock report. */
void sim_pool_describe_blocked(const SimThreadPool *pool, GString *out);
/* GCompareFunc for g_ptr_array_sort (pointers to SimThreadPool*) by worker id. */
gint sim_pool_compare_by_worker(gconstpointer a, gconstpointer b);
/* TRUE when threads are blocked or tasks queued. */
gboolean sim_kernel_deadlock_report_needed(const SimKernel *k);

/* sim_kernel_at() for sim/ callers that schedule at k->now or later by
 * construction (a resume at now, a net event at MAX(t, now)): straight to
 * the queue, without the public entry's argument checks. */
static inline SimEvent *
sim_kernel__at(SimKernel *k, SimTime t, SimEventFunc fn, gpointer data, GDestroyNotify destroy)
{
    return sim_evq_push(k->evq, t, fn, data, destroy);
}

/* sim_kernel_trace_emit() inline: stamps the record with the clock and the
 * running thread and folds it in place (8 records per simulated round
 * trip, so the two calls it saves matter). */
static inline void
sim_kernel__trace_emit(SimKernel *k, gint worker, const SimTraceKind *kind, gint64 a, gint64 b,
                       gint64 c, const char *detail)
{
    sim_trace_emit_inline(k->trace, k->now, worker, k->current_id, kind, a, b, c, detail);
}

#endif /* SIM_KERNEL_PRIVATE_H */
