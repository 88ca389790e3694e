/* evq.c — the simulator's event queue: an implicit d-ary min-heap of
 * (time, seq) keys beside a FIFO "now lane", with removal on cancel and
 * recycled event records.
 *
 * Key invariant: heap[] and the lane together hold every scheduled event
 * that has been neither popped nor cancelled, each exactly once, at the
 * position its record's index field names (LANE_BIT set: a lane slot);
 * every heap parent's (time, seq) is strictly less than its children's, and
 * the lane's events all have one time and sit in seq order.  A pop takes
 * the lesser of the heap's top and the lane's head by (time, seq), so the
 * order is exactly that of one heap.  seq is unique per queue, so the order is total and never
 * depends on an address or on the heap's shape: equal times pop in
 * scheduling order.
 *
 * Layout.  Each slot stores the key inline next to the record pointer, so a
 * sift compares keys without dereferencing records (a 24-byte slot).  The
 * arity is HEAP_ARITY, 4: half the levels of a binary heap, and a node's
 * four children sit in 96 contiguous bytes (measured earlier, binary vs
 * 4-ary without the index stores: 55 vs 63 ns at 1e3 pending, 134 vs 120 at
 * 1e5, 311 vs 233 at 1e6).
 *
 * Cancel removes.  Every slot move also stores the slot's index in its
 * record, so a cancel finds the event in O(1) and takes it out in
 * O(log n): the heap holds only live events.  The RPC agent arms and
 * cancels a 60 s timeout per call; with cancel-by-marking those dead events
 * sank to the bottom, never reached the top, and kept a 2-worker ping-pong's
 * heap hundreds deep (pop + push ~2,500 instructions per round trip; now
 * ~900).  The price is a store into a record per level moved, which a large
 * heap whose records are out of cache pays on every pop.  Measured with
 * bench/bench-evq.c (the hold model: pop + push, no cancels; ns per event,
 * 2-core EPYC, -O2, best of 3 in one session), marking vs removal: 63 vs 64
 * at 1e3 pending, 124 vs 213 at 1e5, 322 vs 487 at 1e6.  We take that for
 * cancel-heavy RPC workloads: bench-rpc's 1,000-worker random run went from
 * 4.0e4-5.7e4 to 0.8e5-1.0e5 round trips/s (a shared, noisy machine) with
 * this and the other sim/ changes of the same commit series.  (A
 * side array of indexes by a dense record id would move those stores out of
 * the records, closer to the marking figures; not done.)
 *
 * The now lane.  Most events are scheduled for the current time (a thread
 * resume, a message with no latency): such an event's seq is the largest
 * yet and its time the least that can still be pushed, so in a heap it
 * sifts to the root only to be popped next.  A push at the time of the last
 * pop (or, lane non-empty, at the lane's time) is appended to a ring
 * instead: ~25 instructions instead of a sift up plus a walk down.  A
 * cancelled lane event leaves a hole (ev = NULL) that the head skips.
 * Measured (callgrind, lane on vs off): bench-rpc's 2-worker ping-pong,
 * where the heap holds little more than each agent's RPC timeout, 12,496 ->
 * 12,436 instructions per round trip; its 1,000-worker random run, whose
 * heap holds ~1,000 timeouts, 17,015 -> 14,967.  bench-evq never pushes at
 * the popped time, so it sees only the lane's tests (within run-to-run
 * noise: 62-64 / 135-151 / 364-419 ns per event at 1e3 / 1e5 / 1e6 pending
 * before the lane, 63-64 / 140-146 / 362-393 with it, same session).
 *
 * Where a record is, is encoded in its next_free field:
 *   next_free == ev         queued (in heap[] or the lane, at index)
 *   next_free == NULL       popped: owned by the caller until release
 *   anything else           on the free list or the dead chain (both end at
 *                           &free_list_end; cancelled is TRUE on the latter)
 *
 * Cancelled events wait on the dead chain, in cancel order, and are reaped
 * (destroy notifier, then recycled) all at once by the next pop or
 * peek_time, never inside the cancel.  Destroy notifiers therefore run only
 * inside pop, peek_time, release and free, and always with the heap
 * consistent, so they may push and cancel (a cancel from a notifier joins
 * the chain being reaped).
 */
#include "sim/evq.h"

#ifndef HEAP_ARITY
#define HEAP_ARITY 4 /* -DHEAP_ARITY=2 builds the binary heap, to re-measure */
#endif
#define HEAP_MIN_CAP 64
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
    Slot *heap; /* (owned) heap[0 .. n): the live events, capacity cap */
    guint n;
    guint cap;
    guint dead; /* cancelled, not yet reaped (on the dead chain) */
    guint64 next_seq;
    guint64 scheduled;
    SimEvent *free_list; /* (owned) chain through next_free, ends at &free_list_end */
    SimEvent *dead_head; /* (owned) cancelled events in cancel order, ends at &free_list_end */
    SimEvent *dead_tail; /* last of the dead chain, NULL when it is empty */
    gboolean freeing;    /* inside sim_evq_free(): no new events */
    /* The now lane (see the file comment): a ring of slots, all at
     * lane_time, in push (= seq) order; a cancelled one has ev == NULL.
     * lane_head and lane_tail run free (masked by lane_cap - 1, a power of
     * two); the slot at lane_head is never a cancelled one. */
    Slot *lane;
    guint lane_cap;
    guint lane_head, lane_tail;
    guint lane_live;   /* live events in the lane */
    SimTime lane_time; /* time of every event in the lane, when non-empty */
    SimTime last_time; /* time of the last popped event (0 before any) */
};

#define LANE_MIN_CAP 16
/* Set in a record's index when it is in the lane (the rest is the ring
 * position); a heap never holds 2^31 events. */
#define LANE_BIT 0x80000000u

/* Terminates the free list and the dead chain; never dereferenced.  A distinct
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

/* Stores s at heap[i] and tells its record where it is. */
static inline void
place(Slot *heap, guint i, Slot s)
{
    heap[i] = s;
    s.ev->index = i;
}

/* Moves the hole at i up until s fits, then stores s there. */
static inline void
sift_up(Slot *heap, guint i, Slot s)
{
    while (i > 0) {
        guint parent = (i - 1) / HEAP_ARITY;
        if (!slot_less(&s, &heap[parent]))
            break;
        place(heap, i, heap[parent]);
        i = parent;
    }
    place(heap, i, s);
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
        place(heap, i, heap[best]);
        i = best;
    }
    place(heap, i, s);
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
        place(heap, i, heap[best]);
        i = best;
    }
    sift_up(heap, i, heap[n]);
}

/* Removes heap[i] (a cancelled event): the last slot takes its place and
 * moves up or down from there. */
static void
remove_at(SimEvq *q, guint i)
{
    Slot *heap = q->heap;
    guint n = --q->n;

    if (i == n)
        return;
    Slot last = heap[n];
    if (i > 0 && slot_less(&last, &heap[(i - 1) / HEAP_ARITY]))
        sift_up(heap, i, last);
    else
        sift_down(heap, n, i, last);
}

/* Only the link changes: push sets every other field, and cancelled is
 * cleared by reap_dead (the one path that set it). */
static inline void
recycle(SimEvq *q, SimEvent *ev)
{
    ev->next_free = q->free_list;
    q->free_list = ev;
}

/* Runs ev's destroy notifier and recycles it.  ev is in no container, so the
 * notifier may use the queue. */
static inline void
reap(SimEvq *q, SimEvent *ev)
{
    GDestroyNotify destroy = ev->destroy;
    gpointer data = ev->data;

    recycle(q, ev);
    if (destroy != NULL)
        destroy(data);
}

/* Reaps the cancelled events, in the order they were cancelled.  A notifier
 * may cancel more: they join the tail and are reaped in this same call. */
static G_GNUC_NO_INLINE void
reap_dead(SimEvq *q)
{
    while (q->dead_head != &free_list_end) {
        SimEvent *ev = q->dead_head;
        q->dead_head = ev->next_free;
        if (q->dead_head == &free_list_end)
            q->dead_tail = NULL;
        q->dead--;
        ev->cancelled = FALSE;
        reap(q, ev);
    }
}

SimEvq *
sim_evq_new(void)
{
    SimEvq *q = g_new0(SimEvq, 1);

    q->cap = HEAP_MIN_CAP;
    q->heap = g_new(Slot, q->cap);
    q->lane_cap = LANE_MIN_CAP;
    q->lane = g_new(Slot, q->lane_cap);
    q->free_list = &free_list_end;
    q->dead_head = &free_list_end;
    return q;
}

/* sim_evq_free: runs ev's notifier once (cleared first). */
static void
destroy_at_free(SimEvent *ev)
{
    GDestroyNotify destroy = ev->destroy;
    if (destroy != NULL) {
        ev->destroy = NULL;
        destroy(ev->data);
    }
}

static void
free_chain(SimEvent *ev)
{
    while (ev != &free_list_end) {
        SimEvent *next = ev->next_free;
        g_free(ev);
        ev = next;
    }
}

void
sim_evq_free(SimEvq *q)
{
    g_return_if_fail(q != NULL);

    /* Notifiers first, records after: a notifier may cancel another pending
     * event of this queue (a no-op on bookkeeping we are about to drop), so
     * no record may be freed while one can still run.  Each notifier is
     * cleared before it is called, so it runs exactly once.  Cancelled
     * events first (in cancel order), then the live ones in heap order,
     * then the lane's in lane order. */
    const guint mask = q->lane_cap - 1;
    q->freeing = TRUE;
    for (SimEvent *ev = q->dead_head; ev != &free_list_end; ev = ev->next_free)
        destroy_at_free(ev);
    for (guint i = 0; i < q->n; i++)
        destroy_at_free(q->heap[i].ev);
    for (guint p = q->lane_head; p != q->lane_tail; p++) {
        if (q->lane[p & mask].ev != NULL)
            destroy_at_free(q->lane[p & mask].ev);
    }
    for (guint i = 0; i < q->n; i++)
        g_free(q->heap[i].ev);
    for (guint p = q->lane_head; p != q->lane_tail; p++)
        g_free(q->lane[p & mask].ev); /* NULL for cancelled slots: on the dead chain */
    free_chain(q->dead_head);
    free_chain(q->free_list);
    g_free(q->lane);
    g_free(q->heap);
    g_free(q);
}

/* Drops cancelled slots from the lane's head, so that a non-empty lane's
 * head is live. */
static inline void
lane_trim(SimEvq *q)
{
    const guint mask = q->lane_cap - 1;
    while (q->lane_head != q->lane_tail && q->lane[q->lane_head & mask].ev == NULL)
        q->lane_head++;
}

/* Doubles the lane's ring, keeping its order; live records learn their new
 * positions. */
static G_GNUC_NO_INLINE void
lane_grow(SimEvq *q)
{
    const guint used = q->lane_tail - q->lane_head;
    const guint mask = q->lane_cap - 1;
    Slot *ring = g_new(Slot, q->lane_cap * 2);

    for (guint i = 0; i < used; i++) {
        ring[i] = q->lane[(q->lane_head + i) & mask];
        if (ring[i].ev != NULL)
            ring[i].ev->index = LANE_BIT | i;
    }
    g_free(q->lane);
    q->lane = ring;
    q->lane_cap *= 2;
    q->lane_head = 0;
    q->lane_tail = used;
}

/* Push's and pop's rare paths (a fresh record, a bigger lane, reaping)
 * are out of line and reached by tail calls, so that they add no register
 * saves to the common ones.  The heap's own paths stay inline: out of line
 * they saved ~80 instructions per ping-pong round trip (the lane's path
 * then saves no registers) but cost bench-evq 5-10% at every size. */

static void
grow(SimEvq *q)
{
    q->cap *= 2;
    q->heap = g_renew(Slot, q->heap, q->cap);
}

/* The heap part of a push. */
static inline SimEvent *
heap_insert(SimEvq *q, Slot s)
{
    if (G_UNLIKELY(q->n == q->cap))
        grow(q);
    sift_up(q->heap, q->n++, s);
    return s.ev;
}

/* Appends s to the lane, which has room. */
static inline SimEvent *
lane_append(SimEvq *q, Slot s)
{
    const guint pos = q->lane_tail++ & (q->lane_cap - 1);
    q->lane[pos] = s;
    s.ev->index = LANE_BIT | pos;
    q->lane_time = s.time;
    q->lane_live++;
    return s.ev;
}

static G_GNUC_NO_INLINE SimEvent *
lane_append_grown(SimEvq *q, Slot s)
{
    lane_grow(q);
    return lane_append(q, s);
}

/* The free list is empty: give it a fresh record and push again. */
static G_GNUC_NO_INLINE SimEvent *
push_fresh(SimEvq *q, SimTime t, SimEventFunc fn, gpointer data, GDestroyNotify destroy)
{
    SimEvent *ev = g_new(SimEvent, 1);
    ev->next_free = q->free_list;
    q->free_list = ev;
    return sim_evq_push(q, t, fn, data, destroy);
}

/* Pops the heap's top (see remove_top). */
static inline SimEvent *
heap_pop(SimEvq *q)
{
    SimEvent *ev = q->heap[0].ev;
    remove_top(q);
    ev->next_free = NULL;
    q->last_time = ev->time;
    return ev;
}

/* sim_evq_push's argument checks, out of line: reports the caller's bug
 * (g_return_val_if_fail's critical) and returns NULL. */
static G_GNUC_NO_INLINE SimEvent *
push_rejected(SimEvq *q, SimEventFunc fn, SimTime t)
{
    g_return_val_if_fail(q != NULL, NULL);
    g_return_val_if_fail(fn != NULL, NULL);
    g_return_val_if_fail(t != SIM_TIME_NEVER, NULL);
    g_return_val_if_fail(!q->freeing, NULL);
    g_assert_not_reached();
    return NULL;
}

SimEvent *
sim_evq_push(SimEvq *q, SimTime t, SimEventFunc fn, gpointer data, GDestroyNotify destroy)
{
    SimEvent *ev;

    /* One test on the hot path; the reporter names the failed check. */
    if (G_UNLIKELY(q == NULL || fn == NULL || t == SIM_TIME_NEVER || q->freeing))
        return push_rejected(q, fn, t);

    ev = q->free_list;
    if (G_UNLIKELY(ev == &free_list_end))
        return push_fresh(q, t, fn, data, destroy);
    q->free_list = ev->next_free;
    const guint64 seq = q->next_seq++;
    ev->time = t;
    ev->seq = seq;
    ev->fn = fn;
    ev->data = data;
    ev->destroy = destroy;
    ev->cancelled = FALSE;
    ev->next_free = ev;

    q->scheduled++;
    /* The now lane: an event at the lane's time (or, lane empty, at the
     * time of the last pop) has the largest seq yet, so appending keeps the
     * lane sorted by (time, seq). */
    const Slot s = {.time = t, .seq = seq, .ev = ev};
    const guint used = q->lane_tail - q->lane_head;
    if (used != 0 ? t == q->lane_time : t == q->last_time) {
        if (G_UNLIKELY(used == q->lane_cap))
            return lane_append_grown(q, s);
        return lane_append(q, s);
    }
    return heap_insert(q, s);
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

    if (ev->index & LANE_BIT) {
        guint pos = ev->index & ~LANE_BIT;
        g_assert(pos < q->lane_cap && q->lane[pos].ev == ev);
        q->lane[pos].ev = NULL; /* skipped at the head, see lane_trim */
        q->lane_live--;
        lane_trim(q);
    } else {
        g_assert(ev->index < q->n && q->heap[ev->index].ev == ev);
        remove_at(q, ev->index);
    }
    ev->cancelled = TRUE;
    ev->next_free = &free_list_end;
    if (q->dead_tail != NULL)
        q->dead_tail->next_free = ev;
    else
        q->dead_head = ev;
    q->dead_tail = ev;
    q->dead++;
}

SimEvent *
sim_evq_pop(SimEvq *q)
{
    return sim_evq_pop_until(q, SIM_TIME_NEVER);
}

/* sim_evq_pop_until's argument checks, out of line (see push_rejected). */
static G_GNUC_NO_INLINE SimEvent *
pop_rejected(SimEvq *q)
{
    g_return_val_if_fail(q != NULL, NULL);
    g_return_val_if_fail(!q->freeing, NULL);
    g_assert_not_reached();
    return NULL;
}

static G_GNUC_NO_INLINE SimEvent *
pop_after_reaping(SimEvq *q, SimTime limit)
{
    reap_dead(q);
    return sim_evq_pop_until(q, limit);
}

SimEvent *
sim_evq_pop_until(SimEvq *q, SimTime limit)
{
    SimEvent *ev;

    if (G_UNLIKELY(q == NULL || q->freeing))
        return pop_rejected(q);

    if (G_UNLIKELY(q->dead_head != &free_list_end))
        return pop_after_reaping(q, limit);
    if (q->lane_head != q->lane_tail) {
        const Slot *l = &q->lane[q->lane_head & (q->lane_cap - 1)];
        if (q->n == 0 || slot_less(l, &q->heap[0])) {
            if (l->time > limit)
                return NULL;
            ev = l->ev;
            q->lane_head++;
            q->lane_live--;
            lane_trim(q);
            ev->next_free = NULL;
            q->last_time = ev->time;
            return ev;
        }
    }
    if (q->n == 0 || q->heap[0].time > limit)
        return NULL;
    return heap_pop(q);
}

SimTime
sim_evq_peek_time(SimEvq *q)
{
    g_return_val_if_fail(q != NULL, SIM_TIME_NEVER);
    g_return_val_if_fail(!q->freeing, SIM_TIME_NEVER);

    if (G_UNLIKELY(q->dead_head != &free_list_end))
        reap_dead(q);
    SimTime t = q->n > 0 ? q->heap[0].time : SIM_TIME_NEVER;
    if (q->lane_head != q->lane_tail && q->lane_time < t)
        t = q->lane_time;
    return t;
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

    return q->n + q->lane_live;
}

guint64
sim_evq_scheduled(const SimEvq *q)
{
    g_return_val_if_fail(q != NULL, 0);

    return q->scheduled;
}
