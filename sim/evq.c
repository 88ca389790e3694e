/* evq.c — the simulator's event queue: an implicit d-ary min-heap of
 * (time, seq) keys, with cancel by marking and recycled event records.
 *
 * Key invariant: heap[] holds every scheduled event that has been neither
 * popped nor reaped, each exactly once, and every parent's (time, seq) is
 * strictly less than its children's.  seq is unique per queue, so the order
 * is total and never depends on an address or on the heap's shape: equal
 * times pop in scheduling order.
 *
 * Layout.  Each slot stores the key inline next to the record pointer, so a
 * sift compares keys without dereferencing records (a 24-byte slot; the
 * record is touched only at the top).  The arity is HEAP_ARITY, 4: half the
 * levels of a binary heap, and a node's four children sit in 96 contiguous
 * bytes.  Measured with bench/bench-evq.c (ns per pop + push, 2-core EPYC,
 * -O2, best of 3), binary vs 4-ary: 55 vs 63 at 1e3 pending, 134 vs 120 at
 * 1e5, 311 vs 233 at 1e6.  We give up ~8 ns on small queues for the large
 * ones, where a run with many workers spends its time.
 *
 * Where a record is, is encoded in its next_free field, so the public struct
 * needs no extra state:
 *   next_free == ev         queued (in heap[], live or cancelled)
 *   next_free == NULL       popped: owned by the caller until release
 *   anything else           on the free list (the last one points at
 *                           &free_list_end), or on a reap chain
 *
 * Counters: live = queued and not cancelled (sim_evq_len); dead = queued and
 * cancelled.  Cancelled events are reaped (destroy notifier, then recycled)
 * when they reach the top at pop/peek time, or all at once when they come to
 * outnumber the live ones (compaction, O(n), amortised over the >= n/2
 * cancels that caused it), so a workload that cancels most of its timers
 * (RPC timeouts) keeps the heap proportional to the live events.  Destroy
 * notifiers therefore run only inside pop, peek_time, release and free, and
 * always with the heap consistent, so they may push and cancel.
 */
#include "sim/evq.h"

#ifndef HEAP_ARITY
#define HEAP_ARITY 4 /* -DHEAP_ARITY=2 builds the binary heap, to re-measure */
#endif
#define HEAP_MIN_CAP 64
#define COMPACT_MIN  256 /* fewer dead events than this: reaping at the top is enough */
/* From this many slots (192 KiB) the lower levels fall out of L2, and the
 * walk down prefetches grandchildren; below it the prefetches only cost. */
#define PREFETCH_MIN_SLOTS 8192

#if defined(__GNUC__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif

typedef struct Slot {
    SimTime time;
    guint64 seq;
    SimEvent *ev;
} Slot;

struct SimEvq {
    Slot *heap; /* (owned) heap[0 .. n), capacity cap */
    guint n;
    guint cap;
    guint live; /* queued, not cancelled */
    guint dead; /* queued, cancelled, not yet reaped */
    guint64 next_seq;
    guint64 scheduled;
    SimEvent *free_list; /* (owned) chain through next_free, ends at &free_list_end */
    gboolean freeing;    /* inside sim_evq_free(): no new events */
};

/* Terminates the free list and reap chains; never dereferenced.  A distinct
 * object so that NULL keeps meaning "popped". */
static SimEvent free_list_end;

/* Heap comparisons have random outcomes, so a branch on them is mispredicted
 * half the time.  One 128-bit unsigned comparison of (time with the sign bit
 * flipped, seq) compiles to cmp/sbb, and the selection that uses it to cmov.
 * (Measured: ~10% faster at 1e3 pending; at 1e6 the branchy version wins
 * unless the walk down prefetches, because speculation down the predicted
 * path was acting as a prefetcher.) */
#if defined(__SIZEOF_INT128__)
static inline unsigned __int128
slot_key(const Slot *s)
{
    return (unsigned __int128)((guint64)s->time ^ G_GUINT64_CONSTANT(0x8000000000000000)) << 64 |
           s->seq;
}

static inline gboolean
slot_less(const Slot *a, const Slot *b)
{
    return slot_key(a) < slot_key(b);
}
#else
static inline gboolean
slot_less(const Slot *a, const Slot *b)
{
    return a->time < b->time || (a->time == b->time && a->seq < b->seq);
}
#endif

/* Moves the hole at i up until s fits, then stores s there. */
static inline void
sift_up(Slot *heap, guint i, Slot s)
{
    while (i > 0) {
        guint parent = (i - 1) / HEAP_ARITY;
        if (!slot_less(&s, &heap[parent]))
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = s;
}

/* Index of the least of the children first .. min(first + HEAP_ARITY, n). */
static inline guint
least_child(const Slot *heap, guint n, guint first)
{
    guint last = first + HEAP_ARITY < n ? first + HEAP_ARITY : n;
    guint best = first;

    for (guint c = first + 1; c < last; c++)
        best = slot_less(&heap[c], &heap[best]) ? c : best;
    return best;
}

/* Moves the hole at i down (heap of n slots) until s fits, then stores s. */
static void
sift_down(Slot *heap, guint n, guint i, Slot s)
{
    for (;;) {
        guint first = i * HEAP_ARITY + 1;
        if (first >= n)
            break;
        guint best = least_child(heap, n, first);
        if (!slot_less(&heap[best], &s))
            break;
        heap[i] = heap[best];
        i = best;
    }
    heap[i] = s;
}

static void
heapify(Slot *heap, guint n)
{
    if (n < 2)
        return;
    for (guint i = (n - 2) / HEAP_ARITY + 1; i-- > 0;)
        sift_down(heap, n, i, heap[i]);
}

/* Removes heap[0]; the caller has read it.  This is the hot path (~90% of a
 * pop + push at 1e5 pending), so:
 *  - bottom-up (Floyd): the hole walks to a leaf along the least children
 *    without comparing against the moved element, which then sifts up from
 *    there; the last slot is among the largest, so that sift-up is short;
 *  - on large heaps it prefetches the grandchildren, one level ahead;
 *  - once the root's least child (the next top) is known, it prefetches that
 *    event's record, which the next pop returns and its caller reads: the
 *    record was written when the event was pushed, long ago, and is cold. */
static inline void
remove_top(SimEvq *q)
{
    Slot *heap = q->heap;
    guint n = --q->n;
    guint i = 0;

    if (n == 0)
        return;
    for (;;) {
        guint first = i * HEAP_ARITY + 1;
        if (first >= n)
            break;
        if (n >= PREFETCH_MIN_SLOTS) {
            guint g = first * HEAP_ARITY + 1;
            if (g < n) {
                for (gsize k = 0; k < HEAP_ARITY * HEAP_ARITY * sizeof(Slot); k += 64)
                    PREFETCH((const char *)&heap[g] + k);
            }
        }
        guint best = least_child(heap, n, first);
        if (i == 0)
            PREFETCH(heap[best].ev);
        heap[i] = heap[best];
        i = best;
    }
    sift_up(heap, i, heap[n]);
}

static inline void
recycle(SimEvq *q, SimEvent *ev)
{
    ev->fn = NULL;
    ev->data = NULL;
    ev->destroy = NULL;
    ev->cancelled = FALSE;
    ev->next_free = q->free_list;
    q->free_list = ev;
}

/* Runs ev's destroy notifier and recycles it.  ev is in no container, so the
 * notifier may use the queue. */
static void
reap(SimEvq *q, SimEvent *ev)
{
    GDestroyNotify destroy = ev->destroy;
    gpointer data = ev->data;

    recycle(q, ev);
    if (destroy != NULL)
        destroy(data);
}

/* Drops every cancelled slot, re-heapifies, then reaps the dropped records. */
static void
compact(SimEvq *q)
{
    SimEvent *chain = &free_list_end;
    guint kept = 0;

    for (guint i = 0; i < q->n; i++) {
        SimEvent *ev = q->heap[i].ev;
        if (ev->cancelled) {
            ev->next_free = chain;
            chain = ev;
        } else {
            q->heap[kept++] = q->heap[i];
        }
    }
    g_assert(q->n - kept == q->dead);
    q->n = kept;
    q->dead = 0;
    heapify(q->heap, q->n);

    while (chain != &free_list_end) {
        SimEvent *next = chain->next_free;
        reap(q, chain);
        chain = next;
    }
}

/* Leaves a live event (or nothing) at the top. */
static void
reap_top(SimEvq *q)
{
    if (q->dead == 0)
        return;
    /* No early return after compacting: the notifiers it ran may have
     * cancelled events, the new top among them. */
    if (q->dead >= COMPACT_MIN && q->dead > q->live)
        compact(q);
    while (q->n > 0 && q->heap[0].ev->cancelled) {
        SimEvent *ev = q->heap[0].ev;
        remove_top(q);
        q->dead--;
        reap(q, ev);
    }
}

SimEvq *
sim_evq_new(void)
{
    SimEvq *q = g_new0(SimEvq, 1);

    q->cap = HEAP_MIN_CAP;
    q->heap = g_new(Slot, q->cap);
    q->free_list = &free_list_end;
    return q;
}

void
sim_evq_free(SimEvq *q)
{
    g_return_if_fail(q != NULL);

    /* Notifiers first, records after: a notifier may cancel another pending
     * event of this queue (a no-op on bookkeeping we are about to drop), so
     * no record may be freed while one can still run.  Each notifier is
     * cleared before it is called, so it runs exactly once. */
    q->freeing = TRUE;
    for (guint i = 0; i < q->n; i++) {
        SimEvent *ev = q->heap[i].ev;
        GDestroyNotify destroy = ev->destroy;
        if (destroy != NULL) {
            ev->destroy = NULL;
            destroy(ev->data);
        }
    }
    for (guint i = 0; i < q->n; i++)
        g_free(q->heap[i].ev);
    while (q->free_list != &free_list_end) {
        SimEvent *next = q->free_list->next_free;
        g_free(q->free_list);
        q->free_list = next;
    }
    g_free(q->heap);
    g_free(q);
}

SimEvent *
sim_evq_push(SimEvq *q, SimTime t, SimEventFunc fn, gpointer data, GDestroyNotify destroy)
{
    SimEvent *ev;

    g_return_val_if_fail(q != NULL, NULL);
    g_return_val_if_fail(fn != NULL, NULL);
    g_return_val_if_fail(t != SIM_TIME_NEVER, NULL);
    g_return_val_if_fail(!q->freeing, NULL);

    if (q->free_list != &free_list_end) {
        ev = q->free_list;
        q->free_list = ev->next_free;
    } else {
        ev = g_new(SimEvent, 1);
    }
    ev->time = t;
    ev->seq = q->next_seq++;
    ev->fn = fn;
    ev->data = data;
    ev->destroy = destroy;
    ev->cancelled = FALSE;
    ev->next_free = ev;

    if (q->n == q->cap) {
        q->cap *= 2;
        q->heap = g_renew(Slot, q->heap, q->cap);
    }
    sift_up(q->heap, q->n, (Slot){.time = t, .seq = ev->seq, .ev = ev});
    q->n++;
    q->live++;
    q->scheduled++;
    return ev;
}

void
sim_evq_cancel(SimEvq *q, SimEvent *ev)
{
    g_return_if_fail(q != NULL);
    g_return_if_fail(ev != NULL);

    if (ev->cancelled)
        return; /* already cancelled, not yet reaped */
    if (ev->next_free == NULL)
        return; /* popped: it is running or has run; release still destroys */
    g_return_if_fail(ev->next_free == ev); /* released / recycled record */
    if (q->freeing)
        return;

    ev->cancelled = TRUE;
    q->live--;
    q->dead++;
}

SimEvent *
sim_evq_pop(SimEvq *q)
{
    SimEvent *ev;

    g_return_val_if_fail(q != NULL, NULL);
    g_return_val_if_fail(!q->freeing, NULL);

    reap_top(q);
    if (q->n == 0)
        return NULL;
    ev = q->heap[0].ev;
    g_assert(q->dead == 0 || !ev->cancelled); /* no dereference when nothing is dead */
    remove_top(q);
    q->live--;
    ev->next_free = NULL;
    return ev;
}

SimTime
sim_evq_peek_time(SimEvq *q)
{
    g_return_val_if_fail(q != NULL, SIM_TIME_NEVER);
    g_return_val_if_fail(!q->freeing, SIM_TIME_NEVER);

    reap_top(q);
    return q->n > 0 ? q->heap[0].time : SIM_TIME_NEVER;
}

void
sim_evq_release(SimEvq *q, SimEvent *ev)
{
    g_return_if_fail(q != NULL);
    g_return_if_fail(ev != NULL);
    g_return_if_fail(ev->next_free == NULL); /* only popped events */

    reap(q, ev);
}

guint
sim_evq_len(const SimEvq *q)
{
    g_return_val_if_fail(q != NULL, 0);

    return q->live;
}

guint64
sim_evq_scheduled(const SimEvq *q)
{
    g_return_val_if_fail(q != NULL, 0);

    return q->scheduled;
}
