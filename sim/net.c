/* net.c — the simulated network (see net.h for the model).
 *
 * Key invariant: everything observable is a pure function of the seed, the
 * configuration and the sequence of calls.  Per-link state lives in a small
 * open-addressing table keyed by from * n + to (links are created on first
 * use, so n = 100,000 workers cost only the links they use); the table is
 * only ever looked up by key, never walked (except to free it), so its
 * order cannot leak into a run.
 *
 * Draws.  Each write takes exactly one 64-bit value from its link's stream
 * ("net", from * n + to) and seeds a per-message generator with it; all of
 * the message's draws come from that generator, always all of them and
 * always in this order:
 *
 *     loss (chance), latency (dist), jitter (uniform [0, jitter]),
 *     reorder (chance), duplicate (chance),
 *     the duplicate's latency (dist), the duplicate's jitter (uniform)
 *
 * So a link's stream advances one value per message whatever the
 * configuration: changing a probability, a latency kind or the jitter of a
 * link changes that link's messages only where the changed value is used,
 * and never shifts the draws of later messages.  A message dropped at send
 * by a partition still consumes its value, for the same reason.
 *
 * Fast path: when the link's configuration needs no randomness (every
 * probability 0, no jitter, a constant latency) the value is still taken
 * from the link's stream, but no per-message generator is seeded and
 * nothing is drawn: every draw's result is known (chance(0) is FALSE, a
 * constant latency takes no draw, range(0, 0) is 0), so the outcome is
 * exactly what the draws would give, and the streams are unchanged.
 *
 * Timing of one write at time t on a link (bandwidth B bytes/s, S bytes):
 *
 *     start   = max(t, link free_at)
 *     end     = start + ceil(S * 1e9 / B)        (end = start when B = 0)
 *     arrival = end + latency + jitter, then FIFO: max(arrival, last_arrival)
 *               unless the reorder draw lets it overtake
 *
 * free_at becomes end (a lost message still occupied the wire);
 * last_arrival is the latest arrival scheduled on the link.  A message
 * counts as reordered only if it really arrives before an earlier one
 * (arrival < last_arrival; at equal times the earlier-scheduled event runs
 * first, so equality is not an overtake).  The duplicate copy does not
 * occupy the wire again and never arrives before its original.  Times
 * saturate at SIM_TIME_NEVER - 1 instead of overflowing.
 *
 * extra_delay (the faulty agent's per-type delay) defers the write: the
 * message is written, and its draws taken, extra_delay after the call.
 * Links are FIFO in write order, so a later undelayed message may arrive
 * first, as with PyTorch's faulty agent (which sleeps before the pipe
 * write).
 *
 * At arrival, in order: a partition of the link drops the message; a message
 * for a destination with a hold queue (paused, or with held messages not
 * yet released) joins the queue; a down destination bounces it; else it is
 * delivered.  A destination's hold queue is drained by one event (at the
 * time of the unpause, or of the crash, which bounces what is held) in
 * arrival order; an arrival that finds the queue non-empty joins its tail,
 * so release never reorders.  Held messages have already crossed the
 * network: partitions no longer apply to them.
 *
 * Trace records (worker = the sender at send, the receiver at arrival):
 *
 *     net.send    [from]  to= bytes= id=   detail: the message kind name
 *     net.drop    [from]  to= id=          detail: "loss" | "partition"
 *     net.dup     [from]  to= id=          (at write: a copy will follow)
 *     net.deliver [to]    from= bytes= id=
 *     net.bounce  [to]    from= bytes= id= detail: the bounce reason
 *     net.hold    [to]    from= bytes= id=
 *
 * net.drop always names the sender, also for a message dropped in flight
 * (it is recorded at the arrival time): "the message from → to was lost".
 *
 * Teardown: every scheduled event (deferred write, arrival, drain) carries a
 * Pending record on the net's intrusive list; when the kernel releases the
 * event the record goes on the net's spare list for the next message, so
 * steady traffic allocates no records.  sim_net_free() cancels them all,
 * detaches the records and frees the spare ones; the destroy notifiers of
 * detached records, which run whenever the kernel reaps the cancelled
 * events (or frees its queue), only free the record.  So the kernel may outlive the net, and the
 * net may outlive the kernel (the notifiers then unlink themselves from the net's list as the
 * kernel frees its queue).  Cancelled events neither run nor move the clock.
 */
#include "sim/net.h"

#include <math.h>

#include "sim/kernel-private.h"

/* The RPC layer's text for a connection that the peer closed. */
#define BOUNCE_REASON "Connection closed by peer"
#define TIME_MAX      (SIM_TIME_NEVER - 1)

static const SimTraceKind kind_send = {"net.send", {"to", "bytes", "id"}};
static const SimTraceKind kind_deliver = {"net.deliver", {"from", "bytes", "id"}};
static const SimTraceKind kind_drop = {"net.drop", {"to", "id", NULL}};
static const SimTraceKind kind_dup = {"net.dup", {"to", "id", NULL}};
static const SimTraceKind kind_bounce = {"net.bounce", {"from", "bytes", "id"}};
static const SimTraceKind kind_hold = {"net.hold", {"from", "bytes", "id"}};

typedef struct Link {
    guint64 key;          /* from * n + to */
    SimRng rng;           /* stream ("net", key) */
    SimTime free_at;      /* when the wire finishes its last message */
    SimTime last_arrival; /* latest arrival scheduled on this link */
    gboolean has_override;
    SimLinkConfig cfg;   /* valid when has_override */
    gboolean cfg_random; /* cfg needs draws (see needs_draws) */
} Link;

typedef enum {
    PENDING_WRITE,   /* a deferred write (extra_delay) */
    PENDING_ARRIVAL, /* a copy reaching its destination */
    PENDING_DRAIN,   /* releasing a destination's hold queue */
} PendingKind;

typedef struct Pending Pending;
struct Pending {
    SimNet *net;   /* NULL once detached by sim_net_free */
    SimEvent *ev;  /* valid while linked */
    Pending *prev; /* the net's list of scheduled events, or its free list (next only) */
    Pending *next;
    gboolean linked; /* on the scheduled-event list */
    PendingKind kind;
    gint from, to;
    RpcWire *wire; /* owned; NULL for drains */
    gsize size;    /* rpc_wire_size(wire), 0 for drains */
    gint64 id;
};

/* A message waiting at a paused (or draining) destination. */
typedef struct Held {
    gint from;
    RpcWire *wire; /* owned */
    gint64 id;
} Held;

typedef struct HoldQueue {
    GQueue q;       /* Held*, arrival order */
    Pending *drain; /* the scheduled drain, or NULL */
} HoldQueue;

/* Links by key: open addressing with linear probing over Link pointers
 * (NULL = empty), at most half full.  Only looked up by key, never walked
 * except to free the links. */
#define LINK_RECENT 16 /* power of two */

typedef struct LinkTable {
    Link **slots; /* (owned, and the links too) 1 << bits of them */
    guint bits;
    guint len;
    /* Links recently used, by key & (LINK_RECENT - 1) (NULL = none): a hit
     * skips the hash and the probe.  Links live as long as the net, so an
     * entry never dangles; which link an entry holds affects speed only. */
    Link *recent[LINK_RECENT];
} LinkTable;

struct SimNet {
    SimKernel *k;
    guint n;
    SimNetDeliverFunc deliver;
    SimNetBounceFunc bounce;
    gpointer data;
    SimLinkConfig dflt;
    gboolean dflt_random; /* dflt needs draws (see needs_draws) */
    LinkTable links;
    GHashTable *partitions; /* guint64* key → itself, blocked directed links */
    GHashTable *holds;      /* GINT_TO_POINTER(worker) → HoldQueue* (owned) */
    guint n_partitions;     /* entries of partitions: the per-message test without a call */
    guint n_holds;          /* entries of holds, likewise */
    guint8 *down;           /* n flags */
    guint8 *paused;         /* n flags */
    Pending *pending;       /* head of the scheduled-event list */
    Pending *spare;         /* released records, for reuse (chain through next) */
    SimNetStats stats;
};

/* --- time arithmetic ------------------------------------------------------ */

static SimTime
time_add(SimTime a, SimTime b)
{
    if (b <= 0)
        return a;
    return a > TIME_MAX - b ? TIME_MAX : a + b;
}

/* A non-negative duration from a double of nanoseconds, rounded to nearest;
 * NaN and negatives give 0, huge values saturate. */
static SimTime
time_from_double(double ns)
{
    if (!(ns > 0.0))
        return 0;
    if (ns >= 9.0e18)
        return TIME_MAX;
    return (SimTime)floor(ns + 0.5);
}

/* ceil(bytes * 1e9 / bandwidth): integer ns to put bytes on the wire. */
static SimTime
transmit_time(gsize bytes, guint64 bandwidth)
{
    if (bandwidth == 0 || bytes == 0)
        return 0;
#ifdef __SIZEOF_INT128__
    unsigned __int128 num = (unsigned __int128)bytes * (guint64)SIM_S;
    unsigned __int128 q = (num + bandwidth - 1) / bandwidth;
    return q > (unsigned __int128)TIME_MAX ? TIME_MAX : (SimTime)q;
#else
    /* Portable path: the 128-bit product as two words, then restoring
     * shift-and-subtract division (128 steps; only compilers without a
     * 128-bit type take it). */
    guint64 b0 = bytes & 0xffffffffu, b1 = (guint64)bytes >> 32, s = (guint64)SIM_S;
    guint64 p0 = b0 * s, p1 = b1 * s; /* s < 2^32: no overflow */
    guint64 lo = p0 + (p1 << 32);
    guint64 hi = (p1 >> 32) + (lo < p0);
    guint64 rem = 0, q_hi = 0, q_lo = 0;
    for (int i = 127; i >= 0; i--) {
        guint64 bit = i >= 64 ? (hi >> (i - 64)) & 1 : (lo >> i) & 1;
        gboolean carry = (rem >> 63) != 0;
        rem = (rem << 1) | bit;
        q_hi = (q_hi << 1) | (q_lo >> 63);
        q_lo <<= 1;
        if (carry || rem >= bandwidth) {
            rem -= bandwidth;
            q_lo |= 1;
        }
    }
    if (rem != 0 && ++q_lo == 0)
        q_hi++;
    return q_hi != 0 || q_lo > (guint64)TIME_MAX ? TIME_MAX : (SimTime)q_lo;
#endif
}

/* --- distributions -------------------------------------------------------- */

SimDist
sim_dist_constant(SimTime v)
{
    SimDist d = {.kind = SIM_DIST_CONSTANT, .a = v, .b = 0, .shape = 0.0};
    return d;
}

SimTime
sim_dist_sample(const SimDist *d, SimRng *r)
{
    g_return_val_if_fail(d != NULL && r != NULL, 0);
    switch (d->kind) {
    case SIM_DIST_CONSTANT:
        return MAX(d->a, 0);
    case SIM_DIST_UNIFORM: {
        SimTime lo = MIN(d->a, d->b), hi = MAX(d->a, d->b);
        return MAX(sim_rng_range(r, lo, hi), 0);
    }
    case SIM_DIST_NORMAL:
        return time_from_double((double)d->a + (double)d->b * sim_rng_normal(r));
    case SIM_DIST_LOGNORMAL: {
        /* Two draws (the normal) even when a <= 0 makes the result 0. */
        double z = sim_rng_normal(r);
        if (d->a <= 0)
            return 0;
        return time_from_double(exp(log((double)d->a) + d->shape * z));
    }
    case SIM_DIST_PARETO: {
        SimTime v;
        if (d->a <= 0 || !(d->shape > 0.0)) {
            (void)sim_rng_double(r); /* keep the one draw */
            v = MAX(d->a, 0);
        } else {
            v = time_from_double(sim_rng_pareto(r, (double)d->a, d->shape));
        }
        return d->b > 0 ? MIN(v, d->b) : v;
    }
    }
    g_return_val_if_reached(0);
}

/* "0s", "17ns", "200us", "1.5ms", "2s", "1.000000001s": the largest unit not
 * above |t|, with exactly the decimals needed (integer arithmetic only). */
static void
append_time(GString *out, SimTime t)
{
    static const struct {
        guint64 unit;
        int digits;
        const char *name;
    } units[] = {{SIM_S, 9, "s"}, {SIM_MS, 6, "ms"}, {SIM_US, 3, "us"}, {SIM_NS, 0, "ns"}};

    if (t == 0) {
        g_string_append(out, "0s");
        return;
    }
    guint64 mag = t < 0 ? (guint64)(-(t + 1)) + 1 : (guint64)t;
    if (t < 0)
        g_string_append_c(out, '-');
    for (gsize i = 0; i < G_N_ELEMENTS(units); i++) {
        if (mag < units[i].unit && units[i].unit != 1)
            continue;
        guint64 whole = mag / units[i].unit, frac = mag % units[i].unit;
        g_string_append_printf(out, "%" G_GUINT64_FORMAT, whole);
        if (frac != 0) {
            int digits = units[i].digits;
            while (frac % 10 == 0) {
                frac /= 10;
                digits--;
            }
            g_string_append_printf(out, ".%0*" G_GUINT64_FORMAT, digits, frac);
        }
        g_string_append(out, units[i].name);
        return;
    }
}

static void
append_double(GString *out, double v)
{
    char buf[G_ASCII_DTOSTR_BUF_SIZE];
    g_string_append(out, g_ascii_dtostr(buf, sizeof buf, v));
}

char *
sim_dist_to_string(const SimDist *d)
{
    g_return_val_if_fail(d != NULL, NULL);
    GString *out = g_string_new(NULL);
    switch (d->kind) {
    case SIM_DIST_CONSTANT:
        g_string_append(out, "constant(");
        append_time(out, d->a);
        break;
    case SIM_DIST_UNIFORM:
    case SIM_DIST_NORMAL:
        g_string_append(out, d->kind == SIM_DIST_UNIFORM ? "uniform(" : "normal(");
        append_time(out, d->a);
        g_string_append(out, ", ");
        append_time(out, d->b);
        break;
    case SIM_DIST_LOGNORMAL:
        g_string_append(out, "lognormal(");
        append_time(out, d->a);
        g_string_append(out, ", ");
        append_double(out, d->shape);
        break;
    case SIM_DIST_PARETO:
        g_string_append(out, "pareto(");
        append_time(out, d->a);
        g_string_append(out, ", ");
        append_double(out, d->shape);
        if (d->b > 0) {
            g_string_append(out, ", ");
            append_time(out, d->b);
        }
        break;
    default:
        g_string_append_printf(out, "invalid(%d", (int)d->kind);
        break;
    }
    g_string_append_c(out, ')');
    return g_string_free(out, FALSE);
}

void
sim_link_config_init(SimLinkConfig *cfg)
{
    g_return_if_fail(cfg != NULL);
    *cfg = (SimLinkConfig){.latency = sim_dist_constant(0)};
}

/* --- state ---------------------------------------------------------------- */

static guint64
link_key(const SimNet *net, gint from, gint to)
{
    return (guint64)from * net->n + (guint64)to;
}

static inline guint
link_slot(guint64 key, guint bits)
{
    return (guint)((key * G_GUINT64_CONSTANT(0x9e3779b97f4a7c15)) >> (64 - bits));
}

/* The link with this key, or NULL. */
static inline Link *
link_find(const SimNet *net, guint64 key)
{
    const LinkTable *lt = &net->links;
    if (lt->slots == NULL)
        return NULL;
    guint mask = (1u << lt->bits) - 1;
    for (guint i = link_slot(key, lt->bits);; i = (i + 1) & mask) {
        Link *l = lt->slots[i];
        if (l == NULL || l->key == key)
            return l;
    }
}

static void
link_table_put(LinkTable *lt, Link *l)
{
    guint mask = (1u << lt->bits) - 1;
    guint i = link_slot(l->key, lt->bits);
    while (lt->slots[i] != NULL)
        i = (i + 1) & mask;
    lt->slots[i] = l;
}

static void
link_table_grow(LinkTable *lt)
{
    Link **old = lt->slots;
    guint old_cap = old != NULL ? 1u << lt->bits : 0;
    lt->bits = old != NULL ? lt->bits + 1 : 4;
    lt->slots = g_new0(Link *, (gsize)1 << lt->bits);
    for (guint i = 0; i < old_cap; i++)
        if (old[i] != NULL)
            link_table_put(lt, old[i]);
    g_free(old);
}

static Link *
link_get(SimNet *net, gint from, gint to)
{
    guint64 key = link_key(net, from, to);
    LinkTable *lt = &net->links;
    Link **recent = &lt->recent[key & (LINK_RECENT - 1)];
    Link *l = *recent;
    if (G_LIKELY(l != NULL && l->key == key))
        return l;
    l = link_find(net, key);
    if (G_LIKELY(l != NULL)) {
        *recent = l;
        return l;
    }
    if (lt->slots == NULL || 2 * (lt->len + 1) > (1u << lt->bits))
        link_table_grow(lt);
    l = g_new0(Link, 1);
    l->key = key;
    sim_kernel_rng(net->k, "net", key, &l->rng);
    link_table_put(lt, l);
    lt->len++;
    *recent = l;
    return l;
}

static const SimLinkConfig *
link_config(const SimNet *net, const Link *l)
{
    return l->has_override ? &l->cfg : &net->dflt;
}

static gboolean
valid_worker(const SimNet *net, gint w)
{
    return w >= 0 && (guint)w < net->n;
}

/* TRUE when a message under cfg takes any random value: a probability
 * above 0, jitter, or a latency that is not constant.  Otherwise every draw
 * of write_message has a known result (chance(0) is FALSE, a constant
 * latency and range(0, 0) take nothing from the value), so it seeds no
 * generator: the result is the same as with the draws. */
static gboolean
needs_draws(const SimLinkConfig *cfg)
{
    return cfg->loss > 0.0 || cfg->reorder > 0.0 || cfg->duplicate > 0.0 || cfg->jitter > 0 ||
           cfg->latency.kind != SIM_DIST_CONSTANT;
}

static inline gboolean
partitioned(const SimNet *net, gint from, gint to)
{
    if (G_LIKELY(net->n_partitions == 0))
        return FALSE;
    guint64 key = link_key(net, from, to);
    return g_hash_table_contains(net->partitions, &key);
}

static void
held_free(gpointer p)
{
    Held *h = p;
    rpc_wire_unref(h->wire);
    g_free(h);
}

static void
hold_queue_free(gpointer p)
{
    HoldQueue *hq = p;
    /* Its drain, if any, is on the pending list and cancelled there. */
    g_queue_clear_full(&hq->q, held_free);
    g_free(hq);
}

/* --- scheduled events ----------------------------------------------------- */

static void
pending_unlink(Pending *p)
{
    SimNet *net = p->net;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        net->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->linked = FALSE;
    p->ev = NULL;
}

/* The event's destroy notifier: after the event ran, when its cancelled
 * event is reaped, or when the kernel frees its queue first.  A record of a
 * live net is kept for reuse; a detached one is freed. */
static void
pending_destroy(gpointer data)
{
    Pending *p = data;
    SimNet *net = p->net;
    if (p->wire != NULL)
        rpc_wire_unref(p->wire);
    if (net == NULL) {
        g_free(p);
        return;
    }
    if (p->linked)
        pending_unlink(p);
    p->wire = NULL;
    p->next = net->spare;
    net->spare = p;
}

static void pending_run(gpointer data);

/* Schedules p at t and links it; wire (transfer full, nullable). */
static Pending *
pending_schedule(SimNet *net, SimTime t, PendingKind kind, gint from, gint to, RpcWire *wire,
                 gsize size, gint64 id)
{
    Pending *p = net->spare;
    if (p != NULL)
        net->spare = p->next;
    else
        p = g_new0(Pending, 1);
    p->net = net;
    p->linked = TRUE;
    p->prev = NULL;
    p->kind = kind;
    p->from = from;
    p->to = to;
    p->wire = wire;
    p->size = size;
    p->id = id;
    p->next = net->pending;
    if (net->pending != NULL)
        net->pending->prev = p;
    net->pending = p;
    p->ev = sim_kernel__at(net->k, MAX(t, net->k->now), pending_run, p, pending_destroy);
    return p;
}

/* --- arrival -------------------------------------------------------------- */

static void
emit_drop(SimNet *net, gint from, gint to, gint64 id, const char *why)
{
    sim_kernel__trace_emit(net->k, from, &kind_drop, to, id, 0, why);
}

/* size is rpc_wire_size(wire), known by the callers. */
static void
do_deliver(SimNet *net, gint from, gint to, RpcWire *wire, gsize size, gint64 id)
{
    net->stats.delivered++;
    sim_kernel__trace_emit(net->k, to, &kind_deliver, from, (gint64)size, id, NULL);
    net->deliver(net->data, from, to, wire);
}

static void
do_bounce(SimNet *net, gint from, gint to, RpcWire *wire, gint64 id)
{
    net->stats.bounced++;
    sim_kernel__trace_emit(net->k, to, &kind_bounce, from, (gint64)rpc_wire_size(wire), id,
                           BOUNCE_REASON);
    if (net->bounce != NULL)
        net->bounce(net->data, from, to, wire, BOUNCE_REASON);
}

static void
schedule_drain(SimNet *net, gint worker)
{
    HoldQueue *hq = g_hash_table_lookup(net->holds, GINT_TO_POINTER(worker));
    if (hq == NULL || hq->drain != NULL || g_queue_is_empty(&hq->q))
        return;
    hq->drain = pending_schedule(net, net->k->now, PENDING_DRAIN, -1, worker, NULL, 0, 0);
}

/* Delivers, bounces or holds one copy that got through the network;
 * wire (transfer full). */
static void
arrive(SimNet *net, gint from, gint to, RpcWire *wire, gsize size, gint64 id)
{
    HoldQueue *hq = net->n_holds == 0 ? NULL : g_hash_table_lookup(net->holds, GINT_TO_POINTER(to));
    gboolean queued = hq != NULL && !g_queue_is_empty(&hq->q);

    if (queued || (net->paused[to] && !net->down[to])) {
        if (hq == NULL) {
            hq = g_new0(HoldQueue, 1);
            g_queue_init(&hq->q);
            g_hash_table_insert(net->holds, GINT_TO_POINTER(to), hq);
            net->n_holds++;
        }
        Held *h = g_new(Held, 1);
        h->from = from;
        h->wire = wire;
        h->id = id;
        g_queue_push_tail(&hq->q, h);
        net->stats.held_paused++;
        sim_kernel__trace_emit(net->k, to, &kind_hold, from, (gint64)size, id, NULL);
        return;
    }
    if (net->down[to])
        do_bounce(net, from, to, wire, id);
    else
        do_deliver(net, from, to, wire, size, id);
    rpc_wire_unref(wire);
}

static void
drain(SimNet *net, gint worker)
{
    HoldQueue *hq = g_hash_table_lookup(net->holds, GINT_TO_POINTER(worker));
    g_assert(hq != NULL);
    hq->drain = NULL;
    /* Callbacks may pause, crash or resume the worker again: re-check the
     * state before each message. */
    while (!g_queue_is_empty(&hq->q)) {
        if (net->paused[worker] && !net->down[worker])
            break;
        Held *h = g_queue_pop_head(&hq->q);
        if (net->down[worker])
            do_bounce(net, h->from, worker, h->wire, h->id);
        else
            do_deliver(net, h->from, worker, h->wire, rpc_wire_size(h->wire), h->id);
        held_free(h);
    }
    if (g_queue_is_empty(&hq->q) && hq->drain == NULL)
        if (g_hash_table_remove(net->holds, GINT_TO_POINTER(worker)))
            net->n_holds--;
}

static void write_message(SimNet *net, gint from, gint to, RpcWire *wire, gsize size, gint64 id);

static void
pending_run(gpointer data)
{
    Pending *p = data;
    SimNet *net = p->net;
    g_assert(net != NULL); /* a detached record's event was cancelled */
    pending_unlink(p);
    RpcWire *wire = g_steal_pointer(&p->wire);
    switch (p->kind) {
    case PENDING_WRITE:
        write_message(net, p->from, p->to, wire, p->size, p->id);
        rpc_wire_unref(wire);
        break;
    case PENDING_ARRIVAL:
        if (partitioned(net, p->from, p->to)) {
            net->stats.dropped_partition++;
            emit_drop(net, p->from, p->to, p->id, "partition");
            rpc_wire_unref(wire);
        } else {
            arrive(net, p->from, p->to, wire, p->size, p->id);
        }
        break;
    case PENDING_DRAIN:
        drain(net, p->to);
        break;
    }
    /* pending_destroy frees p once the kernel releases the event. */
}

/* --- send ----------------------------------------------------------------- */

/* Puts wire (transfer none, size bytes) on the link now: see the file
 * comment. */
static void
write_message(SimNet *net, gint from, gint to, RpcWire *wire, gsize size, gint64 id)
{
    Link *l = link_get(net, from, to);
    const SimLinkConfig *cfg = link_config(net, l);
    SimTime now = net->k->now;
    guint64 draw = sim_rng_next(&l->rng); /* always: one value per message */
    gboolean lost = FALSE, reorder = FALSE, dup = FALSE;
    SimTime latency, jit = 0, dup_latency = 0, dup_jit = 0;

    if (l->has_override ? l->cfg_random : net->dflt_random) {
        SimTime jitter = MAX(cfg->jitter, 0);
        SimRng m;
        sim_rng_seed(&m, draw);
        lost = sim_rng_chance(&m, cfg->loss);
        latency = sim_dist_sample(&cfg->latency, &m);
        jit = sim_rng_range(&m, 0, jitter);
        reorder = sim_rng_chance(&m, cfg->reorder);
        dup = sim_rng_chance(&m, cfg->duplicate);
        dup_latency = sim_dist_sample(&cfg->latency, &m);
        dup_jit = sim_rng_range(&m, 0, jitter);
    } else {
        /* What the draws would give: no loss, reorder or duplicate, the
         * constant latency, no jitter. */
        latency = MAX(cfg->latency.a, 0);
    }

    if (partitioned(net, from, to)) {
        net->stats.dropped_partition++;
        emit_drop(net, from, to, id, "partition");
        return;
    }

    SimTime start = MAX(now, l->free_at);
    SimTime end = time_add(start, transmit_time(size, cfg->bandwidth));
    l->free_at = end;
    if (lost) {
        net->stats.dropped_loss++;
        emit_drop(net, from, to, id, "loss");
        return;
    }

    SimTime arrival = time_add(time_add(end, latency), jit);
    if (!reorder)
        arrival = MAX(arrival, l->last_arrival);
    else if (arrival < l->last_arrival)
        net->stats.reordered++;
    l->last_arrival = MAX(l->last_arrival, arrival);
    pending_schedule(net, arrival, PENDING_ARRIVAL, from, to, rpc_wire_ref(wire), size, id);

    if (dup) {
        SimTime again = MAX(time_add(time_add(end, dup_latency), dup_jit), arrival);
        l->last_arrival = MAX(l->last_arrival, again);
        net->stats.duplicated++;
        sim_kernel__trace_emit(net->k, from, &kind_dup, to, id, 0, NULL);
        pending_schedule(net, again, PENDING_ARRIVAL, from, to, rpc_wire_ref(wire), size, id);
    }
}

void
sim_net_send(SimNet *net, gint from, gint to, RpcWire *wire, const char *kind_name, gint64 msg_id,
             SimTime extra_delay)
{
    g_return_if_fail(net != NULL && wire != NULL);
    g_return_if_fail(valid_worker(net, from) && valid_worker(net, to));

    gsize size = rpc_wire_size(wire);
    net->stats.sent++;
    net->stats.bytes_sent += size;
    sim_kernel__trace_emit(net->k, from, &kind_send, to, (gint64)size, msg_id, kind_name);
    if (extra_delay > 0)
        pending_schedule(net, time_add(net->k->now, extra_delay), PENDING_WRITE, from, to,
                         rpc_wire_ref(wire), size, msg_id);
    else
        write_message(net, from, to, wire, size, msg_id);
}

/* --- lifetime and configuration ------------------------------------------- */

SimNet *
sim_net_new(SimKernel *k, guint n_workers, SimNetDeliverFunc deliver, SimNetBounceFunc bounce,
            gpointer data)
{
    g_return_val_if_fail(k != NULL && deliver != NULL, NULL);
    g_return_val_if_fail(n_workers > 0 && n_workers <= (guint)G_MAXINT, NULL);
    SimNet *net = g_new0(SimNet, 1);
    net->k = k;
    net->n = n_workers;
    net->deliver = deliver;
    net->bounce = bounce;
    net->data = data;
    sim_link_config_init(&net->dflt);
    net->partitions = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    net->holds = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, hold_queue_free);
    net->down = g_new0(guint8, n_workers);
    net->paused = g_new0(guint8, n_workers);
    return net;
}

void
sim_net_free(SimNet *net)
{
    if (net == NULL)
        return;
    /* Cancel and detach every scheduled event; the kernel frees the records
     * (pending_destroy) when it reaps them.  Walk order is not observable:
     * cancelling runs nothing. */
    for (Pending *p = net->pending, *next; p != NULL; p = next) {
        next = p->next;
        sim_kernel_cancel(net->k, p->ev);
        p->net = NULL;
        p->ev = NULL;
        p->linked = FALSE;
        p->prev = p->next = NULL;
    }
    net->pending = NULL;
    for (Pending *p = net->spare, *next; p != NULL; p = next) {
        next = p->next;
        g_free(p);
    }
    net->spare = NULL;
    g_hash_table_destroy(net->holds);
    g_hash_table_destroy(net->partitions);
    if (net->links.slots != NULL) {
        for (guint i = 0; i < 1u << net->links.bits; i++)
            g_free(net->links.slots[i]);
        g_free(net->links.slots);
    }
    g_free(net->down);
    g_free(net->paused);
    g_free(net);
}

void
sim_net_set_default(SimNet *net, const SimLinkConfig *cfg)
{
    g_return_if_fail(net != NULL && cfg != NULL);
    net->dflt = *cfg;
    net->dflt_random = needs_draws(cfg);
}

const SimLinkConfig *
sim_net_get_default(const SimNet *net)
{
    g_return_val_if_fail(net != NULL, NULL);
    return &net->dflt;
}

void
sim_net_set_link(SimNet *net, gint from, gint to, const SimLinkConfig *cfg)
{
    g_return_if_fail(net != NULL && cfg != NULL);
    g_return_if_fail(valid_worker(net, from) && valid_worker(net, to));
    Link *l = link_get(net, from, to);
    l->cfg = *cfg;
    l->cfg_random = needs_draws(cfg);
    l->has_override = TRUE;
}

void
sim_net_clear_link(SimNet *net, gint from, gint to)
{
    g_return_if_fail(net != NULL);
    g_return_if_fail(valid_worker(net, from) && valid_worker(net, to));
    guint64 key = link_key(net, from, to);
    Link *l = link_find(net, key);
    if (l != NULL)
        l->has_override = FALSE; /* the link keeps its stream and timing */
}

/* --- partitions, crashes, pauses ------------------------------------------ */

static void
block(SimNet *net, gint from, gint to)
{
    guint64 key = link_key(net, from, to);
    if (!g_hash_table_contains(net->partitions, &key)) {
        guint64 *kp = g_memdup2(&key, sizeof key);
        g_hash_table_insert(net->partitions, kp, kp);
        net->n_partitions++;
    }
}

static void
unblock(SimNet *net, gint from, gint to)
{
    guint64 key = link_key(net, from, to);
    if (g_hash_table_remove(net->partitions, &key))
        net->n_partitions--;
}

void
sim_net_partition(SimNet *net, gint a, gint b, gboolean one_way)
{
    g_return_if_fail(net != NULL);
    g_return_if_fail(valid_worker(net, a) && valid_worker(net, b));
    block(net, a, b);
    if (!one_way)
        block(net, b, a);
}

void
sim_net_heal(SimNet *net, gint a, gint b, gboolean one_way)
{
    g_return_if_fail(net != NULL);
    g_return_if_fail(valid_worker(net, a) && valid_worker(net, b));
    unblock(net, a, b);
    if (!one_way)
        unblock(net, b, a);
}

void
sim_net_heal_all(SimNet *net)
{
    g_return_if_fail(net != NULL);
    g_hash_table_remove_all(net->partitions);
    net->n_partitions = 0;
}

gboolean
sim_net_is_partitioned(const SimNet *net, gint from, gint to)
{
    g_return_val_if_fail(net != NULL, FALSE);
    g_return_val_if_fail(valid_worker(net, from) && valid_worker(net, to), FALSE);
    if (net->n_partitions == 0)
        return FALSE;
    guint64 key = link_key(net, from, to);
    return g_hash_table_contains(net->partitions, &key);
}

void
sim_net_set_down(SimNet *net, gint worker, gboolean down)
{
    g_return_if_fail(net != NULL && valid_worker(net, worker));
    net->down[worker] = down ? 1 : 0;
    if (down)
        schedule_drain(net, worker); /* bounces what it was holding */
}

gboolean
sim_net_is_down(const SimNet *net, gint worker)
{
    g_return_val_if_fail(net != NULL && valid_worker(net, worker), FALSE);
    return net->down[worker] != 0;
}

void
sim_net_set_paused(SimNet *net, gint worker, gboolean paused)
{
    g_return_if_fail(net != NULL && valid_worker(net, worker));
    net->paused[worker] = paused ? 1 : 0;
    if (!paused)
        schedule_drain(net, worker);
}

gboolean
sim_net_is_paused(const SimNet *net, gint worker)
{
    g_return_val_if_fail(net != NULL && valid_worker(net, worker), FALSE);
    return net->paused[worker] != 0;
}

void
sim_net_get_stats(const SimNet *net, SimNetStats *out)
{
    g_return_if_fail(net != NULL && out != NULL);
    *out = net->stats;
}
