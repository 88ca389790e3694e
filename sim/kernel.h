/* kernel.h — the deterministic discrete-event kernel.
 *
 * One virtual clock, one event queue ordered by (time, seq), one trace, one
 * master seed.  Nothing inside a run reads the wall clock or an unseeded
 * generator; the same seed and inputs give the same sequence of events and
 * the same trace fingerprint.
 *
 * run() dispatches events until the queue is empty (or stop() is called, or
 * the time limit of run_until() is reached).  When the queue drains while
 * virtual threads are still blocked, the run ends in DEADLOCK and
 * sim_kernel_deadlock_report() names every blocked thread and what it waits
 * on — a run never hangs.
 */
#ifndef SIM_KERNEL_H
#define SIM_KERNEL_H

#include <glib.h>

#include "sim/evq.h"
#include "sim/rng.h"
#include "sim/time.h"
#include "sim/trace.h"

G_BEGIN_DECLS

typedef struct SimKernel SimKernel;

typedef enum {
    SIM_RUN_IDLE = 0,   /* queue empty, nothing blocked */
    SIM_RUN_DEADLOCK,   /* queue empty, threads blocked or tasks queued */
    SIM_RUN_TIME_LIMIT, /* run_until() reached its limit with events left */
    SIM_RUN_STOPPED,    /* sim_kernel_stop() was called */
} SimRunResult;

SimKernel *sim_kernel_new(guint64 seed);
/* Frees the kernel; every thread pool must have been freed first. */
void sim_kernel_free(SimKernel *k);

SimTime sim_kernel_now(const SimKernel *k);
guint64 sim_kernel_seed(const SimKernel *k);
SimTrace *sim_kernel_trace(SimKernel *k);
/* Events dispatched so far. */
guint64 sim_kernel_events_run(const SimKernel *k);

/* Seeds *r as the named substream of this run's master seed. */
void sim_kernel_rng(const SimKernel *k, const char *stream, guint64 index, SimRng *r);

/* Schedules fn(data) at absolute time t (>= now) or after delay.  The event
 * is valid for sim_kernel_cancel() until it runs. */
SimEvent *sim_kernel_at(SimKernel *k, SimTime t, SimEventFunc fn, gpointer data,
                        GDestroyNotify destroy);
SimEvent *sim_kernel_after(SimKernel *k, SimTime delay, SimEventFunc fn, gpointer data,
                           GDestroyNotify destroy);
void sim_kernel_cancel(SimKernel *k, SimEvent *ev);

/* Dispatches the next event; FALSE when none is left. */
gboolean sim_kernel_step(SimKernel *k);
SimRunResult sim_kernel_run(SimKernel *k);
/* Runs events with time <= limit; the clock ends at limit if the queue still
 * holds later events, else at the last event's time. */
SimRunResult sim_kernel_run_until(SimKernel *k, SimTime limit);
/* Makes the innermost run return SIM_RUN_STOPPED after the current event. */
void sim_kernel_stop(SimKernel *k);

/* Threads blocked right now (0 when none). */
guint sim_kernel_blocked_threads(const SimKernel *k);
/* Describes every blocked thread and queued task, sorted by worker and
 * thread id (transfer full); NULL when nothing is blocked. */
char *sim_kernel_deadlock_report(const SimKernel *k);

/* Emits a trace record stamped with the current time and thread. */
void sim_kernel_trace_emit(SimKernel *k, gint worker, const SimTraceKind *kind, gint64 a, gint64 b,
                           gint64 c, const char *detail);

G_END_DECLS

#endif /* SIM_KERNEL_H */
