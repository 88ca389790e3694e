/* evq.h — the event queue: a min-heap (4-ary, see evq.c) ordered by (time, seq),
 * with a FIFO lane for events scheduled at the time of the last pop.
 *
 * seq is taken from a per-queue counter when an event is scheduled, so two
 * events at the same time run in the order they were scheduled (FIFO), never
 * in address order (libuv's timer.c, ns-3's m_uid).  The heap array stores
 * the key next to the event pointer so sift operations touch one cache line
 * per level.
 *
 * Cancel removes the event from the heap at once (O(log n)); its destroy
 * notifier runs at the next pop or peek_time.  An event is owned by the
 * queue from schedule until it is popped; the popper then owns it and must
 * pass it to sim_evq_release() after running it.  Event records are
 * recycled through a free list, so steady-state scheduling does not call
 * malloc.
 */
#ifndef SIM_EVQ_H
#define SIM_EVQ_H

#include <glib.h>

#include "sim/time.h"

G_BEGIN_DECLS

typedef struct SimEvent SimEvent;
typedef void (*SimEventFunc)(gpointer data);

struct SimEvent {
    SimTime time;
    guint64 seq;
    SimEventFunc fn;
    gpointer data;
    GDestroyNotify destroy; /* called on data after fn runs, or when a cancelled event is reaped */
    gboolean cancelled;
    guint index;         /* position in the heap or the lane while queued, internal */
    SimEvent *next_free; /* free-list / dead-chain link, internal */
};

typedef struct SimEvq SimEvq;

SimEvq *sim_evq_new(void);
/* Frees the queue; pending events' destroy notifiers run (fn does not),
 * cancelled-but-unreaped ones included, each exactly once.  Those notifiers
 * may cancel events of q (a no-op by then) but must not push, pop or peek.
 * Release every popped event before freeing its queue. */
void sim_evq_free(SimEvq *q);

/* Schedules fn(data) at absolute time t.  Returns the event, owned by the
 * queue: valid until it is popped, for sim_evq_cancel().  fn must not be
 * NULL and t must not be SIM_TIME_NEVER (peek_time could not tell it from an
 * empty queue).  Takes seq from the queue's counter, so equal times pop in
 * push order. */
SimEvent *sim_evq_push(SimEvq *q, SimTime t, SimEventFunc fn, gpointer data,
                       GDestroyNotify destroy);
/* Cancels ev: it leaves the heap now and will never be returned by pop.
 * Its destroy notifier runs later, when the next pop/peek_time reaps every
 * cancelled event in cancel order (or at sim_evq_free), never inside this
 * call.
 * Cancelling an already-cancelled event is a no-op; a cancelled handle stays
 * valid for that only until the next pop/peek_time, which may reap it.
 * Cancelling an event that has been popped but not yet released (typically
 * from its own fn) is a documented no-op: it has already left the queue,
 * and sim_evq_release() still runs its destroy notifier once.  Handles
 * must not be used after sim_evq_release(): the record is recycled. */
void sim_evq_cancel(SimEvq *q, SimEvent *ev);

/* The earliest live event, removed from the queue (transfer full), or NULL
 * when no live event remains.  Cancelled events are reaped first. */
SimEvent *sim_evq_pop(SimEvq *q);
/* Like sim_evq_pop(), but NULL also when the earliest live event is later
 * than limit (it then stays queued): one call per event for a dispatch
 * loop with a time limit, instead of peek_time + pop.  sim_evq_len() tells
 * the two NULLs apart. */
SimEvent *sim_evq_pop_until(SimEvq *q, SimTime limit);
/* Time of the earliest live event, or SIM_TIME_NEVER. */
SimTime sim_evq_peek_time(SimEvq *q);
/* Runs destroy(data) (if any) and recycles the record.  ev must come from
 * sim_evq_pop() on q (transfer full); it is invalid afterwards. */
void sim_evq_release(SimEvq *q, SimEvent *ev);

/* Live (not cancelled) events in the queue. */
guint sim_evq_len(const SimEvq *q);
/* Total scheduled since creation. */
guint64 sim_evq_scheduled(const SimEvq *q);

G_END_DECLS

#endif /* SIM_EVQ_H */
