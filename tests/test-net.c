/* test-net.c — sim/net: every feature of the network model, at exact
 * virtual times.
 *
 * A message's wire bytes start with its id (8 bytes, little-endian), so the
 * callbacks can tell messages apart without the codec.  Actions at later
 * virtual times (sends, partitions, crashes, pauses) are kernel events
 * scheduled before the run.  Statistical checks draw from fixed seeds, so
 * they are deterministic; their bounds are several standard errors wide.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <glib.h>

#include "sim/kernel.h"
#include "sim/net.h"

#define SEED G_GUINT64_CONSTANT(0x6e65747465737431)

typedef struct {
    SimTime t;
    gint from, to;
    gint64 id;
    gsize size;
    gboolean bounced;
} Arrival;

typedef struct {
    SimKernel *k;
    SimNet *net;
    GArray *arrivals; /* Arrival, in callback order */
} Fx;

static gint64
wire_id(RpcWire *wire)
{
    gsize len;
    const guint8 *p = rpc_wire_data(wire);
    len = rpc_wire_size(wire);
    g_assert_cmpuint(len, >=, 8);
    guint64 v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return (gint64)v;
}

static RpcWire *
wire_new(gint64 id, gsize size)
{
    g_assert_cmpuint(size, >=, 8);
    guint8 *p;
    RpcWire *w = rpc_wire_new_uninit(size, &p);
    memset(p, 0, size);
    for (int i = 0; i < 8; i++)
        p[i] = (guint8)((guint64)id >> (8 * i));
    return w;
}

static void
record(Fx *fx, gint from, gint to, RpcWire *wire, gboolean bounced)
{
    Arrival a = {sim_kernel_now(fx->k), from, to, wire_id(wire), rpc_wire_size(wire), bounced};
    g_array_append_val(fx->arrivals, a);
}

static void
on_deliver(gpointer data, gint from, gint to, RpcWire *wire)
{
    record(data, from, to, wire, FALSE);
}

static void
on_bounce(gpointer data, gint from, gint to, RpcWire *wire, const char *reason)
{
    g_assert_cmpstr(reason, ==, "Connection closed by peer");
    record(data, from, to, wire, TRUE);
}

static void
fx_init(Fx *fx, guint64 seed, guint n)
{
    fx->k = sim_kernel_new(seed);
    fx->net = sim_net_new(fx->k, n, on_deliver, on_bounce, fx);
    fx->arrivals = g_array_new(FALSE, FALSE, sizeof(Arrival));
}

static void
fx_clear(Fx *fx)
{
    sim_net_free(fx->net);
    sim_kernel_free(fx->k);
    g_array_unref(fx->arrivals);
}

static void
fx_setup(Fx *fx, gconstpointer unused)
{
    fx_init(fx, SEED, 4);
}

static void
fx_teardown(Fx *fx, gconstpointer unused)
{
    fx_clear(fx);
}

static Arrival *
arrival(Fx *fx, guint i)
{
    g_assert_cmpuint(i, <, fx->arrivals->len);
    return &g_array_index(fx->arrivals, Arrival, i);
}

static void
send_now(Fx *fx, gint from, gint to, gint64 id, gsize size, SimTime extra)
{
    RpcWire *w = wire_new(id, size);
    sim_net_send(fx->net, from, to, w, "PYTHON_CALL", id, extra);
    rpc_wire_unref(w);
}

/* --- actions at later virtual times --------------------------------------- */

typedef enum { OP_SEND, OP_PARTITION, OP_HEAL, OP_DOWN, OP_UP, OP_PAUSE, OP_RESUME } Op;

typedef struct {
    Fx *fx;
    Op op;
    gint a, b;
    gboolean one_way;
    gint64 id;
} Action;

static void
action_run(gpointer data)
{
    Action *x = data;
    SimNet *net = x->fx->net;
    switch (x->op) {
    case OP_SEND:
        send_now(x->fx, x->a, x->b, x->id, 8, 0);
        break;
    case OP_PARTITION:
        sim_net_partition(net, x->a, x->b, x->one_way);
        break;
    case OP_HEAL:
        sim_net_heal(net, x->a, x->b, x->one_way);
        break;
    case OP_DOWN:
        sim_net_set_down(net, x->a, TRUE);
        break;
    case OP_UP:
        sim_net_set_down(net, x->a, FALSE);
        break;
    case OP_PAUSE:
        sim_net_set_paused(net, x->a, TRUE);
        break;
    case OP_RESUME:
        sim_net_set_paused(net, x->a, FALSE);
        break;
    }
}

static void
at(Fx *fx, SimTime t, Op op, gint a, gint b, gboolean one_way, gint64 id)
{
    Action *x = g_new(Action, 1);
    *x = (Action){fx, op, a, b, one_way, id};
    sim_kernel_at(fx->k, t, action_run, x, g_free);
}

#define at_send(fx, t, from, to, id) at((fx), (t), OP_SEND, (from), (to), FALSE, (id))

static void
set_default(Fx *fx, SimDist latency, SimTime jitter, guint64 bandwidth)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = latency;
    cfg.jitter = jitter;
    cfg.bandwidth = bandwidth;
    sim_net_set_default(fx->net, &cfg);
}

static SimNetStats
stats(Fx *fx)
{
    SimNetStats s;
    sim_net_get_stats(fx->net, &s);
    return s;
}

/* --- latency, bandwidth, jitter ------------------------------------------- */

static void
test_default_config(Fx *fx, gconstpointer unused)
{
    const SimLinkConfig *cfg = sim_net_get_default(fx->net);
    g_assert_cmpint(cfg->latency.kind, ==, SIM_DIST_CONSTANT);
    g_assert_cmpint(cfg->latency.a, ==, 0);
    g_assert_cmpuint(cfg->bandwidth, ==, 0);
    g_assert_cmpint(cfg->jitter, ==, 0);
    g_assert_true(cfg->loss == 0.0 && cfg->duplicate == 0.0 && cfg->reorder == 0.0);
    send_now(fx, 0, 1, 1, 8, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 0);
}

static void
test_constant_latency(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(5 * SIM_MS), 0, 0);
    send_now(fx, 0, 1, 1, 8, 0);
    at_send(fx, 2 * SIM_MS, 1, 0, 2);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 5 * SIM_MS);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->from, ==, 0);
    g_assert_cmpint(arrival(fx, 0)->to, ==, 1);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 7 * SIM_MS);
    g_assert_cmpint(arrival(fx, 1)->id, ==, 2);
}

static void
test_bandwidth(Fx *fx, gconstpointer unused)
{
    /* 1000 bytes at 1 MB/s: 1 ms on the wire, then 100 us of latency; the
     * second message waits for the wire. */
    set_default(fx, sim_dist_constant(100 * SIM_US), 0, 1000000);
    send_now(fx, 0, 1, 1, 1000, 0);
    send_now(fx, 0, 1, 2, 1000, 0);
    /* Another link has its own wire. */
    send_now(fx, 0, 2, 3, 1000, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 3);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 1100 * SIM_US);
    g_assert_cmpint(arrival(fx, 1)->id, ==, 3);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 1100 * SIM_US);
    g_assert_cmpint(arrival(fx, 2)->id, ==, 2);
    g_assert_cmpint(arrival(fx, 2)->t, ==, 2100 * SIM_US);
    g_assert_cmpuint(stats(fx).bytes_sent, ==, 3000);
}

static void
test_bandwidth_rounds_up(Fx *fx, gconstpointer unused)
{
    /* 8 bytes at 3 B/s: 8e9 / 3 = 2666666666.67 ns, rounded up. */
    set_default(fx, sim_dist_constant(0), 0, 3);
    send_now(fx, 0, 1, 1, 8, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 2666666667);
}

static void
test_bandwidth_idle_link(Fx *fx, gconstpointer unused)
{
    /* A link idle since its last message starts the next one at once. */
    set_default(fx, sim_dist_constant(0), 0, 1000000);
    send_now(fx, 0, 1, 1, 1000, 0);
    at(fx, 5 * SIM_MS, OP_SEND, 0, 1, FALSE, 2); /* 8 bytes: 8 us */
    sim_kernel_run(fx->k);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 1 * SIM_MS);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 5 * SIM_MS + 8 * SIM_US);
}

static void
test_extra_delay(Fx *fx, gconstpointer unused)
{
    /* The faulty agent's delay defers the write; FIFO is write order, so
     * a later undelayed message arrives first. */
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    send_now(fx, 0, 1, 1, 8, 1500 * SIM_MS);
    send_now(fx, 0, 1, 2, 8, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 1 * SIM_MS);
    g_assert_cmpint(arrival(fx, 1)->id, ==, 1);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 1501 * SIM_MS);
}

static void
test_jitter_bounds(Fx *fx, gconstpointer unused)
{
    /* Sends 10 ms apart never meet the FIFO clamp (latency <= 1.5 ms). */
    set_default(fx, sim_dist_constant(1 * SIM_MS), 500 * SIM_US, 0);
    const int n = 1000;
    for (int i = 0; i < n; i++)
        at_send(fx, (SimTime)i * 10 * SIM_MS, 0, 1, i);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, n);
    SimTime lo = G_MAXINT64, hi = 0;
    for (int i = 0; i < n; i++) {
        Arrival *a = arrival(fx, i);
        g_assert_cmpint(a->id, ==, i);
        SimTime d = a->t - (SimTime)i * 10 * SIM_MS;
        g_assert_cmpint(d, >=, 1 * SIM_MS);
        g_assert_cmpint(d, <=, 1500 * SIM_US);
        lo = MIN(lo, d);
        hi = MAX(hi, d);
    }
    /* The whole range is used. */
    g_assert_cmpint(lo, <, 1010 * SIM_US);
    g_assert_cmpint(hi, >, 1490 * SIM_US);
}

/* --- order ---------------------------------------------------------------- */

static void
send_burst_uniform(Fx *fx, int n, double reorder)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = (SimDist){.kind = SIM_DIST_UNIFORM, .a = 0, .b = 10 * SIM_MS};
    cfg.reorder = reorder;
    sim_net_set_default(fx->net, &cfg);
    for (int i = 0; i < n; i++)
        send_now(fx, 0, 1, i, 8, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, n);
}

static void
test_fifo_random_latency(Fx *fx, gconstpointer unused)
{
    send_burst_uniform(fx, 1000, 0.0);
    for (int i = 0; i < 1000; i++) {
        g_assert_cmpint(arrival(fx, i)->id, ==, i);
        if (i > 0)
            g_assert_cmpint(arrival(fx, i)->t, >=, arrival(fx, i - 1)->t);
    }
    /* The latencies were random, not all clamped to one value. */
    g_assert_cmpint(arrival(fx, 0)->t, <, arrival(fx, 999)->t);
    g_assert_cmpuint(stats(fx).reordered, ==, 0);
}

static void
test_reorder_overtakes(Fx *fx, gconstpointer unused)
{
    const int n = 1000;
    send_burst_uniform(fx, n, 1.0);
    /* Overtaken iff an earlier-sent message arrives later. */
    SimTime *t = g_new(SimTime, n);
    gboolean out_of_order = FALSE;
    for (int i = 0; i < n; i++) {
        t[arrival(fx, i)->id] = arrival(fx, i)->t;
        out_of_order |= arrival(fx, i)->id != i;
    }
    guint64 expected = 0;
    SimTime latest = 0;
    for (int i = 0; i < n; i++) {
        if (t[i] < latest)
            expected++;
        latest = MAX(latest, t[i]);
    }
    g_free(t);
    g_assert_true(out_of_order);
    g_assert_cmpuint(expected, >, 0);
    g_assert_cmpuint(stats(fx).reordered, ==, expected);
}

/* --- loss and duplication ------------------------------------------------- */

/* Sends n messages with the given loss; returns the number lost and the
 * fingerprint of the ids delivered. */
static guint64
run_loss(guint64 seed, int n, double loss, guint64 *ids_digest)
{
    Fx fx;
    fx_init(&fx, seed, 2);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(1 * SIM_MS);
    cfg.loss = loss;
    sim_net_set_default(fx.net, &cfg);
    for (int i = 0; i < n; i++)
        send_now(&fx, 0, 1, i, 8, 0);
    sim_kernel_run(fx.k);
    SimNetStats s = stats(&fx);
    g_assert_cmpuint(s.sent, ==, (guint64)n);
    g_assert_cmpuint(s.delivered + s.dropped_loss, ==, (guint64)n);
    g_assert_cmpuint(fx.arrivals->len, ==, s.delivered);
    guint64 h = 0xcbf29ce484222325;
    for (guint i = 0; i < fx.arrivals->len; i++)
        h = (h ^ (guint64)arrival(&fx, i)->id) * 0x100000001b3;
    *ids_digest = h;
    fx_clear(&fx);
    return s.dropped_loss;
}

static void
test_loss_rate(void)
{
    guint64 d1, d2, d3;
    guint64 lost1 = run_loss(SEED, 10000, 0.3, &d1);
    guint64 lost2 = run_loss(SEED, 10000, 0.3, &d2);
    g_assert_cmpuint(lost1, ==, lost2);
    g_assert_cmphex(d1, ==, d2);
    /* Binomial(10000, 0.3): sd ~46; +-200 is over 4 sd. */
    g_assert_cmpuint(lost1, >=, 2800);
    g_assert_cmpuint(lost1, <=, 3200);
    /* Another seed, another sample (but the same rate). */
    guint64 lost3 = run_loss(SEED + 1, 10000, 0.3, &d3);
    g_assert_cmphex(d3, !=, d1);
    g_assert_cmpuint(lost3, >=, 2800);
    g_assert_cmpuint(lost3, <=, 3200);
    /* The extremes. */
    g_assert_cmpuint(run_loss(SEED, 100, 0.0, &d3), ==, 0);
    g_assert_cmpuint(run_loss(SEED, 100, 1.0, &d3), ==, 100);
}

static void
test_duplicate_always(Fx *fx, gconstpointer unused)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(1 * SIM_MS);
    cfg.duplicate = 1.0;
    sim_net_set_default(fx->net, &cfg);
    for (int i = 0; i < 3; i++)
        send_now(fx, 0, 1, i, 8, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 6);
    /* Each copy right after its original, all at 1 ms, in FIFO order. */
    for (int i = 0; i < 6; i++) {
        g_assert_cmpint(arrival(fx, i)->id, ==, i / 2);
        g_assert_cmpint(arrival(fx, i)->t, ==, 1 * SIM_MS);
    }
    SimNetStats s = stats(fx);
    g_assert_cmpuint(s.sent, ==, 3);
    g_assert_cmpuint(s.duplicated, ==, 3);
    g_assert_cmpuint(s.delivered, ==, 6);
}

static void
test_duplicate_random(Fx *fx, gconstpointer unused)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = (SimDist){.kind = SIM_DIST_UNIFORM, .a = 0, .b = 10 * SIM_MS};
    cfg.duplicate = 0.5;
    sim_net_set_default(fx->net, &cfg);
    const int n = 1000;
    for (int i = 0; i < n; i++)
        send_now(fx, 0, 1, i, 8, 0);
    sim_kernel_run(fx->k);
    SimNetStats s = stats(fx);
    g_assert_cmpuint(s.duplicated, >, 400);
    g_assert_cmpuint(s.duplicated, <, 600);
    g_assert_cmpuint(fx->arrivals->len, ==, n + s.duplicated);
    /* Copies never overtake: ids are delivered in non-decreasing order, each
     * once or twice. */
    int copies = 0;
    for (guint i = 0; i < fx->arrivals->len; i++) {
        if (i > 0) {
            g_assert_cmpint(arrival(fx, i)->id, >=, arrival(fx, i - 1)->id);
            g_assert_cmpint(arrival(fx, i)->t, >=, arrival(fx, i - 1)->t);
        }
        copies = i > 0 && arrival(fx, i)->id == arrival(fx, i - 1)->id ? copies + 1 : 1;
        g_assert_cmpint(copies, <=, 2);
    }
}

/* --- partitions ----------------------------------------------------------- */

static void
test_partition_symmetric(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    at(fx, 10 * SIM_MS, OP_PARTITION, 0, 1, FALSE, 0);
    at(fx, 20 * SIM_MS, OP_HEAL, 0, 1, FALSE, 0);
    at_send(fx, 5 * SIM_MS, 0, 1, 1);
    at_send(fx, 5 * SIM_MS, 1, 0, 2);
    at_send(fx, 12 * SIM_MS, 0, 1, 3);
    at_send(fx, 12 * SIM_MS, 1, 0, 4);
    at_send(fx, 12 * SIM_MS, 0, 2, 5);
    at_send(fx, 25 * SIM_MS, 0, 1, 6);
    at_send(fx, 25 * SIM_MS, 1, 0, 7);

    sim_kernel_run_until(fx->k, 15 * SIM_MS);
    g_assert_true(sim_net_is_partitioned(fx->net, 0, 1));
    g_assert_true(sim_net_is_partitioned(fx->net, 1, 0));
    g_assert_false(sim_net_is_partitioned(fx->net, 0, 2));
    sim_kernel_run(fx->k);
    g_assert_false(sim_net_is_partitioned(fx->net, 0, 1));
    g_assert_false(sim_net_is_partitioned(fx->net, 1, 0));

    static const struct {
        gint64 id;
        SimTime t;
    } want[] = {
        {1, 6 * SIM_MS}, {2, 6 * SIM_MS}, {5, 13 * SIM_MS}, {6, 26 * SIM_MS}, {7, 26 * SIM_MS}};
    g_assert_cmpuint(fx->arrivals->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        g_assert_cmpint(arrival(fx, i)->id, ==, want[i].id);
        g_assert_cmpint(arrival(fx, i)->t, ==, want[i].t);
    }
    g_assert_cmpuint(stats(fx).dropped_partition, ==, 2);
}

static void
test_partition_one_way(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    at(fx, 10 * SIM_MS, OP_PARTITION, 0, 1, TRUE, 0);
    at_send(fx, 12 * SIM_MS, 0, 1, 1);
    at_send(fx, 12 * SIM_MS, 1, 0, 2);
    at(fx, 20 * SIM_MS, OP_HEAL, 0, 1, TRUE, 0);
    at_send(fx, 21 * SIM_MS, 0, 1, 3);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 13 * SIM_MS);
    g_assert_cmpint(arrival(fx, 1)->id, ==, 3);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 22 * SIM_MS);
    g_assert_cmpuint(stats(fx).dropped_partition, ==, 1);
}

static void
test_partition_heal_all(Fx *fx, gconstpointer unused)
{
    sim_net_partition(fx->net, 0, 1, FALSE);
    sim_net_partition(fx->net, 2, 3, TRUE);
    sim_net_partition(fx->net, 2, 3, TRUE); /* twice is once */
    g_assert_true(sim_net_is_partitioned(fx->net, 3, 2) == FALSE);
    g_assert_true(sim_net_is_partitioned(fx->net, 2, 3));
    sim_net_heal(fx->net, 1, 0, TRUE); /* only 1 → 0 */
    g_assert_true(sim_net_is_partitioned(fx->net, 0, 1));
    g_assert_false(sim_net_is_partitioned(fx->net, 1, 0));
    sim_net_heal_all(fx->net);
    g_assert_false(sim_net_is_partitioned(fx->net, 0, 1));
    g_assert_false(sim_net_is_partitioned(fx->net, 2, 3));
}

static void
test_partition_in_flight(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(10 * SIM_MS), 0, 0);
    sim_trace_keep_lines(sim_kernel_trace(fx->k), TRUE);
    /* id 1 arrives during the partition [5, 20) ms: dropped at 10 ms.
     * id 2 was sent before a partition [12, 14) ms that heals before it
     * arrives at 20 ms: delivered. */
    send_now(fx, 0, 1, 1, 8, 0);
    at(fx, 5 * SIM_MS, OP_PARTITION, 0, 1, FALSE, 0);
    at(fx, 10 * SIM_MS, OP_HEAL, 0, 1, FALSE, 0);
    at_send(fx, 10 * SIM_MS, 0, 1, 2);
    at(fx, 12 * SIM_MS, OP_PARTITION, 1, 0, FALSE, 0);
    at(fx, 14 * SIM_MS, OP_HEAL, 0, 1, FALSE, 0);
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 2);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 20 * SIM_MS);
    g_assert_cmpuint(stats(fx).dropped_partition, ==, 1);

    GPtrArray *lines = sim_trace_lines(sim_kernel_trace(fx->k));
    gboolean found = FALSE;
    for (guint i = 0; i < lines->len; i++)
        found |= g_strcmp0(g_ptr_array_index(lines, i),
                           "[0.010000000] [worker0] net.drop to=1 id=1 partition") == 0;
    g_assert_true(found);
}

/* --- down and paused workers ---------------------------------------------- */

static void
test_down_bounces(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    sim_net_set_down(fx->net, 1, TRUE);
    g_assert_true(sim_net_is_down(fx->net, 1));
    send_now(fx, 0, 1, 1, 8, 0); /* bounces at 1 ms */
    at(fx, 1500 * SIM_US, OP_UP, 1, 0, FALSE, 0);
    at_send(fx, 2 * SIM_MS, 0, 1, 2); /* delivered at 3 ms */
    at(fx, 3500 * SIM_US, OP_DOWN, 1, 0, FALSE, 0);
    at_send(fx, 3 * SIM_MS, 2, 1, 3); /* in flight when 1 goes down */
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 3);
    g_assert_true(arrival(fx, 0)->bounced);
    g_assert_cmpint(arrival(fx, 0)->id, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->from, ==, 0);
    g_assert_cmpint(arrival(fx, 0)->to, ==, 1);
    g_assert_cmpint(arrival(fx, 0)->t, ==, 1 * SIM_MS);
    g_assert_false(arrival(fx, 1)->bounced);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 3 * SIM_MS);
    g_assert_true(arrival(fx, 2)->bounced);
    g_assert_cmpint(arrival(fx, 2)->id, ==, 3);
    g_assert_cmpint(arrival(fx, 2)->t, ==, 4 * SIM_MS);
    SimNetStats s = stats(fx);
    g_assert_cmpuint(s.bounced, ==, 2);
    g_assert_cmpuint(s.delivered, ==, 1);
}

static void
test_pause_holds_in_order(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    sim_net_set_paused(fx->net, 1, TRUE);
    g_assert_true(sim_net_is_paused(fx->net, 1));
    at(fx, 50 * SIM_MS, OP_RESUME, 1, 0, FALSE, 0);
    send_now(fx, 0, 1, 1, 8, 0);        /* held at 1 ms */
    at_send(fx, 500 * SIM_US, 2, 1, 2); /* held at 1.5 ms */
    at_send(fx, 2 * SIM_MS, 0, 1, 3);   /* held at 3 ms */
    send_now(fx, 0, 2, 4, 8, 0);        /* not paused: 1 ms */
    at_send(fx, 49 * SIM_MS, 3, 1, 5);  /* arrives at 50 ms, after the resume */
    at_send(fx, 50 * SIM_MS, 0, 1, 6);  /* arrives at 51 ms: straight through */
    sim_kernel_run(fx->k);

    static const struct {
        gint64 id;
        SimTime t;
    } want[] = {{4, 1 * SIM_MS},  {1, 50 * SIM_MS}, {2, 50 * SIM_MS},
                {3, 50 * SIM_MS}, {5, 50 * SIM_MS}, {6, 51 * SIM_MS}};
    g_assert_cmpuint(fx->arrivals->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        g_assert_cmpint(arrival(fx, i)->id, ==, want[i].id);
        g_assert_cmpint(arrival(fx, i)->t, ==, want[i].t);
        g_assert_false(arrival(fx, i)->bounced);
    }
    g_assert_false(sim_net_is_paused(fx->net, 1));
    g_assert_cmpuint(stats(fx).held_paused, ==, 4);
}

static void
test_pause_then_down_bounces_held(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    at(fx, 0, OP_PAUSE, 1, 0, FALSE, 0);
    at_send(fx, 1 * SIM_MS, 0, 1, 1);
    at_send(fx, 2 * SIM_MS, 2, 1, 2);
    at(fx, 10 * SIM_MS, OP_DOWN, 1, 0, FALSE, 0);
    at_send(fx, 11 * SIM_MS, 0, 1, 3); /* down (and paused): bounces at 12 ms */
    sim_kernel_run(fx->k);
    g_assert_cmpuint(fx->arrivals->len, ==, 3);
    for (guint i = 0; i < 3; i++) {
        g_assert_true(arrival(fx, i)->bounced);
        g_assert_cmpint(arrival(fx, i)->id, ==, i + 1);
    }
    g_assert_cmpint(arrival(fx, 0)->t, ==, 10 * SIM_MS);
    g_assert_cmpint(arrival(fx, 1)->t, ==, 10 * SIM_MS);
    g_assert_cmpint(arrival(fx, 2)->t, ==, 12 * SIM_MS);
    SimNetStats s = stats(fx);
    g_assert_cmpuint(s.held_paused, ==, 2);
    g_assert_cmpuint(s.bounced, ==, 3);
}

/* Pausing again from inside a delivery stops the release there. */
typedef struct {
    Fx fx;
    gint64 pause_after;
} RepauseFx;

static void
repause_deliver(gpointer data, gint from, gint to, RpcWire *wire)
{
    RepauseFx *r = data;
    record(&r->fx, from, to, wire, FALSE);
    if (wire_id(wire) == r->pause_after)
        sim_net_set_paused(r->fx.net, to, TRUE);
}

static void
test_pause_from_callback(void)
{
    RepauseFx r = {.pause_after = 2};
    r.fx.k = sim_kernel_new(SEED);
    r.fx.net = sim_net_new(r.fx.k, 2, repause_deliver, NULL, &r);
    r.fx.arrivals = g_array_new(FALSE, FALSE, sizeof(Arrival));
    sim_net_set_paused(r.fx.net, 1, TRUE);
    for (int i = 1; i <= 4; i++)
        send_now(&r.fx, 0, 1, i, 8, 0);
    at(&r.fx, 10 * SIM_MS, OP_RESUME, 1, 0, FALSE, 0);
    at(&r.fx, 20 * SIM_MS, OP_RESUME, 1, 0, FALSE, 0);
    sim_kernel_run(r.fx.k);
    g_assert_cmpuint(r.fx.arrivals->len, ==, 4);
    g_assert_cmpint(arrival(&r.fx, 1)->t, ==, 10 * SIM_MS);
    g_assert_cmpint(arrival(&r.fx, 2)->id, ==, 3);
    g_assert_cmpint(arrival(&r.fx, 2)->t, ==, 20 * SIM_MS);
    g_assert_cmpint(arrival(&r.fx, 3)->t, ==, 20 * SIM_MS);
    fx_clear(&r.fx);
}

/* --- configuration -------------------------------------------------------- */

static void
test_link_override(Fx *fx, gconstpointer unused)
{
    set_default(fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    SimLinkConfig slow;
    sim_link_config_init(&slow);
    slow.latency = sim_dist_constant(7 * SIM_MS);
    sim_net_set_link(fx->net, 0, 1, &slow);
    send_now(fx, 0, 1, 1, 8, 0);
    send_now(fx, 1, 0, 2, 8, 0);
    send_now(fx, 0, 2, 3, 8, 0);
    at(fx, 10 * SIM_MS, OP_SEND, 0, 1, FALSE, 4);
    sim_kernel_run_until(fx->k, 9 * SIM_MS);
    sim_net_clear_link(fx->net, 0, 1);
    sim_net_clear_link(fx->net, 2, 3); /* never overridden: a no-op */
    sim_kernel_run(fx->k);
    static const struct {
        gint64 id;
        SimTime t;
    } want[] = {{2, 1 * SIM_MS}, {3, 1 * SIM_MS}, {1, 7 * SIM_MS}, {4, 11 * SIM_MS}};
    g_assert_cmpuint(fx->arrivals->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        g_assert_cmpint(arrival(fx, i)->id, ==, want[i].id);
        g_assert_cmpint(arrival(fx, i)->t, ==, want[i].t);
    }
}

/* Arrival times on link 2 → 3 with traffic and a given loss on 0 → 1. */
static GArray *
run_two_links(double loss01, guint64 *lost01)
{
    Fx fx;
    fx_init(&fx, SEED, 4);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = (SimDist){.kind = SIM_DIST_LOGNORMAL, .a = 2 * SIM_MS, .shape = 0.8};
    cfg.jitter = 1 * SIM_MS;
    cfg.reorder = 0.2;
    cfg.duplicate = 0.1;
    sim_net_set_default(fx.net, &cfg);
    cfg.loss = loss01;
    sim_net_set_link(fx.net, 0, 1, &cfg);
    for (int i = 0; i < 500; i++) {
        at_send(&fx, (SimTime)i * 100 * SIM_US, 0, 1, i);
        at_send(&fx, (SimTime)i * 100 * SIM_US, 2, 3, 1000 + i);
    }
    sim_kernel_run(fx.k);
    GArray *times = g_array_new(FALSE, FALSE, sizeof(SimTime));
    for (guint i = 0; i < fx.arrivals->len; i++) {
        Arrival *a = arrival(&fx, i);
        if (a->to == 3) {
            SimTime v = a->t * 10000 + a->id; /* time and identity */
            g_array_append_val(times, v);
        }
    }
    *lost01 = stats(&fx).dropped_loss;
    fx_clear(&fx);
    return times;
}

static void
test_stream_independence(void)
{
    guint64 lost_a, lost_b;
    GArray *a = run_two_links(0.0, &lost_a);
    GArray *b = run_two_links(0.5, &lost_b);
    g_assert_cmpuint(lost_a, ==, 0);
    g_assert_cmpuint(lost_b, >, 150);
    g_assert_cmpuint(a->len, >=, 500);
    g_assert_cmpuint(a->len, ==, b->len);
    g_assert_cmpmem(a->data, a->len * sizeof(SimTime), b->data, b->len * sizeof(SimTime));
    g_array_unref(a);
    g_array_unref(b);
}

static void
test_loss_does_not_shift_other_draws(void)
{
    /* On one link too: a message's latency does not depend on the loss
     * probability, only whether it is dropped. */
    Fx fx[2];
    for (int r = 0; r < 2; r++) {
        fx_init(&fx[r], SEED, 2);
        SimLinkConfig cfg;
        sim_link_config_init(&cfg);
        cfg.latency = (SimDist){.kind = SIM_DIST_UNIFORM, .a = 0, .b = 10 * SIM_MS};
        cfg.reorder = 1.0; /* no FIFO clamp: raw latencies */
        cfg.loss = r == 0 ? 0.0 : 0.5;
        sim_net_set_default(fx[r].net, &cfg);
        for (int i = 0; i < 200; i++)
            send_now(&fx[r], 0, 1, i, 8, 0);
        sim_kernel_run(fx[r].k);
    }
    SimTime t0[200] = {0};
    for (guint i = 0; i < fx[0].arrivals->len; i++)
        t0[arrival(&fx[0], i)->id] = arrival(&fx[0], i)->t;
    g_assert_cmpuint(fx[0].arrivals->len, ==, 200);
    g_assert_cmpuint(fx[1].arrivals->len, <, 150);
    for (guint i = 0; i < fx[1].arrivals->len; i++)
        g_assert_cmpint(arrival(&fx[1], i)->t, ==, t0[arrival(&fx[1], i)->id]);
    fx_clear(&fx[0]);
    fx_clear(&fx[1]);
}

/* --- trace ---------------------------------------------------------------- */

static void
test_trace_lines(Fx *fx, gconstpointer unused)
{
    SimTrace *tr = sim_kernel_trace(fx->k);
    sim_trace_keep_lines(tr, TRUE);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(1 * SIM_MS);
    cfg.duplicate = 1.0;
    sim_net_set_link(fx->net, 0, 1, &cfg);
    cfg.duplicate = 0.0;
    cfg.loss = 1.0;
    sim_net_set_link(fx->net, 0, 2, &cfg);
    sim_net_set_down(fx->net, 3, TRUE);
    sim_net_set_paused(fx->net, 2, TRUE);

    send_now(fx, 0, 1, 7, 12, 0);
    send_now(fx, 0, 2, 8, 8, 0);
    send_now(fx, 1, 3, 9, 8, 0);
    send_now(fx, 1, 2, 10, 8, 0);
    at(fx, 5 * SIM_MS, OP_RESUME, 2, 0, FALSE, 0);
    sim_kernel_run(fx->k);

    static const char *const want[] = {
        "[0.000000000] [worker0] net.send to=1 bytes=12 id=7 PYTHON_CALL",
        "[0.000000000] [worker0] net.dup to=1 id=7",
        "[0.000000000] [worker0] net.send to=2 bytes=8 id=8 PYTHON_CALL",
        "[0.000000000] [worker0] net.drop to=2 id=8 loss",
        "[0.000000000] [worker1] net.send to=3 bytes=8 id=9 PYTHON_CALL",
        "[0.000000000] [worker1] net.send to=2 bytes=8 id=10 PYTHON_CALL",
        "[0.000000000] [worker3] net.bounce from=1 bytes=8 id=9 Connection closed by peer",
        "[0.000000000] [worker2] net.hold from=1 bytes=8 id=10",
        "[0.001000000] [worker1] net.deliver from=0 bytes=12 id=7",
        "[0.001000000] [worker1] net.deliver from=0 bytes=12 id=7",
        "[0.005000000] [worker2] net.deliver from=1 bytes=8 id=10",
    };
    GPtrArray *lines = sim_trace_lines(tr);
    g_assert_cmpuint(lines->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++)
        g_assert_cmpstr(g_ptr_array_index(lines, i), ==, want[i]);
}

static guint64
run_mixed(guint64 seed)
{
    Fx fx;
    fx_init(&fx, seed, 4);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency =
        (SimDist){.kind = SIM_DIST_PARETO, .a = 500 * SIM_US, .b = 50 * SIM_MS, .shape = 1.5};
    cfg.jitter = 200 * SIM_US;
    cfg.bandwidth = 10000000;
    cfg.loss = 0.05;
    cfg.duplicate = 0.05;
    cfg.reorder = 0.1;
    sim_net_set_default(fx.net, &cfg);
    at(&fx, 20 * SIM_MS, OP_PARTITION, 1, 2, FALSE, 0);
    at(&fx, 40 * SIM_MS, OP_HEAL, 1, 2, FALSE, 0);
    at(&fx, 30 * SIM_MS, OP_PAUSE, 3, 0, FALSE, 0);
    at(&fx, 60 * SIM_MS, OP_RESUME, 3, 0, FALSE, 0);
    for (int i = 0; i < 400; i++)
        at_send(&fx, (SimTime)i * 250 * SIM_US, i % 4, (i / 4) % 4, i);
    sim_kernel_run(fx.k);
    guint64 fp = sim_trace_fingerprint(sim_kernel_trace(fx.k));
    g_assert_cmpuint(sim_trace_count(sim_kernel_trace(fx.k)), >, 800);
    fx_clear(&fx);
    return fp;
}

static void
test_fingerprint(void)
{
    guint64 a = run_mixed(SEED);
    guint64 b = run_mixed(SEED);
    guint64 c = run_mixed(SEED ^ 1);
    g_assert_cmphex(a, ==, b);
    g_assert_cmphex(a, !=, c);
}

/* --- stats and teardown --------------------------------------------------- */

static void
test_stats_exact(Fx *fx, gconstpointer unused)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(1 * SIM_MS);
    sim_net_set_default(fx->net, &cfg);
    cfg.loss = 1.0;
    sim_net_set_link(fx->net, 0, 1, &cfg);
    cfg.loss = 0.0;
    cfg.duplicate = 1.0;
    sim_net_set_link(fx->net, 1, 0, &cfg);
    sim_net_partition(fx->net, 0, 2, TRUE);
    sim_net_set_down(fx->net, 3, TRUE);

    for (int i = 0; i < 5; i++) {
        send_now(fx, 0, 1, i, 10, 0); /* lost */
        send_now(fx, 1, 0, i, 10, 0); /* delivered twice */
        send_now(fx, 0, 2, i, 10, 0); /* partitioned */
        send_now(fx, 2, 0, i, 10, 0); /* delivered */
        send_now(fx, 2, 3, i, 10, 0); /* bounced */
    }
    sim_kernel_run(fx->k);
    SimNetStats s = stats(fx);
    g_assert_cmpuint(s.sent, ==, 25);
    g_assert_cmpuint(s.bytes_sent, ==, 250);
    g_assert_cmpuint(s.dropped_loss, ==, 5);
    g_assert_cmpuint(s.dropped_partition, ==, 5);
    g_assert_cmpuint(s.duplicated, ==, 5);
    g_assert_cmpuint(s.delivered, ==, 15);
    g_assert_cmpuint(s.bounced, ==, 5);
    g_assert_cmpuint(s.reordered, ==, 0);
    g_assert_cmpuint(s.held_paused, ==, 0);
    g_assert_cmpuint(fx->arrivals->len, ==, 20);
}

static void
test_free_with_pending(void)
{
    /* Net freed first: nothing runs, the clock does not move. */
    Fx fx;
    fx_init(&fx, SEED, 2);
    set_default(&fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    sim_net_set_paused(fx.net, 1, TRUE);
    send_now(&fx, 0, 1, 1, 8, 0);
    send_now(&fx, 1, 0, 2, 8, 5 * SIM_MS);  /* deferred write */
    sim_kernel_run_until(fx.k, 2 * SIM_MS); /* 1 is held now */
    sim_net_set_paused(fx.net, 1, FALSE);   /* a release is scheduled */
    send_now(&fx, 0, 1, 3, 8, 0);
    sim_net_free(fx.net);
    fx.net = NULL;
    g_assert_cmpint(sim_kernel_run(fx.k), ==, SIM_RUN_IDLE);
    g_assert_cmpuint(fx.arrivals->len, ==, 0);
    g_assert_cmpint(sim_kernel_now(fx.k), ==, 2 * SIM_MS);
    sim_kernel_free(fx.k);
    g_array_unref(fx.arrivals);

    /* Kernel freed first, with the same kinds of events pending. */
    fx_init(&fx, SEED, 2);
    set_default(&fx, sim_dist_constant(1 * SIM_MS), 0, 0);
    sim_net_set_paused(fx.net, 1, TRUE);
    send_now(&fx, 0, 1, 1, 8, 0);
    sim_kernel_run(fx.k);
    sim_net_set_paused(fx.net, 1, FALSE);
    send_now(&fx, 0, 1, 2, 8, 0);
    send_now(&fx, 1, 0, 3, 8, 5 * SIM_MS);
    sim_kernel_free(fx.k);
    sim_net_free(fx.net);
    g_assert_cmpuint(fx.arrivals->len, ==, 0);
    g_array_unref(fx.arrivals);
}

/* --- distributions -------------------------------------------------------- */

#define N_SAMPLES 20000

static gint
cmp_time(gconstpointer a, gconstpointer b)
{
    SimTime x = *(const SimTime *)a, y = *(const SimTime *)b;
    return (x > y) - (x < y);
}

/* Draws N_SAMPLES, sorted; *mean gets their mean. */
static SimTime *
samples(const SimDist *d, double *mean)
{
    SimRng r;
    sim_rng_init_stream(&r, SEED, "test-dist", (guint64)d->kind);
    SimTime *v = g_new(SimTime, N_SAMPLES);
    double sum = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        v[i] = sim_dist_sample(d, &r);
        g_assert_cmpint(v[i], >=, 0);
        sum += (double)v[i];
    }
    qsort(v, N_SAMPLES, sizeof *v, cmp_time);
    *mean = sum / N_SAMPLES;
    return v;
}

static void
test_dist_constant(void)
{
    SimDist d = sim_dist_constant(3 * SIM_MS);
    SimRng r, before;
    sim_rng_seed(&r, SEED);
    before = r;
    g_assert_cmpint(sim_dist_sample(&d, &r), ==, 3 * SIM_MS);
    g_assert_cmpmem(&r, sizeof r, &before, sizeof before); /* no draw */
    d.a = -5;
    g_assert_cmpint(sim_dist_sample(&d, &r), ==, 0);
}

static void
test_dist_uniform(void)
{
    SimDist d = {.kind = SIM_DIST_UNIFORM, .a = 1 * SIM_MS, .b = 3 * SIM_MS};
    double mean;
    SimTime *v = samples(&d, &mean);
    g_assert_cmpint(v[0], >=, 1 * SIM_MS);
    g_assert_cmpint(v[N_SAMPLES - 1], <=, 3 * SIM_MS);
    g_assert_cmpint(v[0], <, 1 * SIM_MS + 5 * SIM_US);
    g_assert_cmpint(v[N_SAMPLES - 1], >, 3 * SIM_MS - 5 * SIM_US);
    /* sd of the mean ~4 us */
    g_assert_cmpfloat(fabs(mean - 2e6), <, 30e3);
    g_free(v);
}

static void
test_dist_normal(void)
{
    SimDist d = {.kind = SIM_DIST_NORMAL, .a = 10 * SIM_MS, .b = 1 * SIM_MS};
    double mean;
    SimTime *v = samples(&d, &mean);
    g_assert_cmpfloat(fabs(mean - 10e6), <, 50e3); /* sd of the mean ~7 us */
    SimTime median = v[N_SAMPLES / 2];
    g_assert_cmpint(median, >, 10 * SIM_MS - 50 * SIM_US);
    g_assert_cmpint(median, <, 10 * SIM_MS + 50 * SIM_US);
    /* ~68% within one sd */
    int within = 0;
    for (int i = 0; i < N_SAMPLES; i++)
        within += v[i] >= 9 * SIM_MS && v[i] <= 11 * SIM_MS;
    g_assert_cmpint(within, >, N_SAMPLES * 66 / 100);
    g_assert_cmpint(within, <, N_SAMPLES * 70 / 100);
    g_free(v);
}

static void
test_dist_normal_clamped(void)
{
    SimDist d = {.kind = SIM_DIST_NORMAL, .a = 0, .b = 1 * SIM_MS};
    double mean;
    SimTime *v = samples(&d, &mean); /* asserts every sample >= 0 */
    int zeros = 0;
    for (int i = 0; i < N_SAMPLES; i++)
        zeros += v[i] == 0;
    g_assert_cmpint(zeros, >, N_SAMPLES * 45 / 100);
    g_assert_cmpint(zeros, <, N_SAMPLES * 55 / 100);
    g_free(v);
}

static void
test_dist_lognormal(void)
{
    SimDist d = {.kind = SIM_DIST_LOGNORMAL, .a = 200 * SIM_US, .shape = 0.5};
    double mean;
    SimTime *v = samples(&d, &mean);
    SimTime median = v[N_SAMPLES / 2];
    g_assert_cmpint(median, >, 190 * SIM_US);
    g_assert_cmpint(median, <, 210 * SIM_US);
    /* mean = median * exp(sigma^2 / 2) = 226.6 us */
    g_assert_cmpfloat(fabs(mean - 226.6e3), <, 5e3);
    g_assert_cmpint(v[0], >, 0);
    g_free(v);
}

static void
test_dist_pareto(void)
{
    SimDist d = {.kind = SIM_DIST_PARETO, .a = 1 * SIM_MS, .shape = 2.0};
    double mean;
    SimTime *v = samples(&d, &mean);
    g_assert_cmpint(v[0], >=, 1 * SIM_MS);
    /* median = a * 2^(1/alpha) = 1.414 ms */
    SimTime median = v[N_SAMPLES / 2];
    g_assert_cmpint(median, >, 1380 * SIM_US);
    g_assert_cmpint(median, <, 1450 * SIM_US);
    g_assert_cmpint(v[N_SAMPLES - 1], >, 20 * SIM_MS); /* a heavy tail */
    g_free(v);
}

static void
test_dist_pareto_cap(void)
{
    SimDist d = {.kind = SIM_DIST_PARETO, .a = 1 * SIM_MS, .b = 5 * SIM_MS, .shape = 1.0};
    double mean;
    SimTime *v = samples(&d, &mean);
    g_assert_cmpint(v[0], >=, 1 * SIM_MS);
    g_assert_cmpint(v[N_SAMPLES - 1], ==, 5 * SIM_MS);
    /* P(X > 5a) = 1/5 for alpha = 1 */
    int capped = 0;
    for (int i = 0; i < N_SAMPLES; i++)
        capped += v[i] == 5 * SIM_MS;
    g_assert_cmpint(capped, >, N_SAMPLES * 18 / 100);
    g_assert_cmpint(capped, <, N_SAMPLES * 22 / 100);
    g_free(v);
}

static void
test_dist_to_string(void)
{
    static const struct {
        SimDist d;
        const char *s;
    } cases[] = {
        {{SIM_DIST_CONSTANT, 1 * SIM_MS, 0, 0}, "constant(1ms)"},
        {{SIM_DIST_CONSTANT, 0, 0, 0}, "constant(0s)"},
        {{SIM_DIST_CONSTANT, 2 * SIM_S, 0, 0}, "constant(2s)"},
        {{SIM_DIST_CONSTANT, 1500 * SIM_US, 0, 0}, "constant(1.5ms)"},
        {{SIM_DIST_CONSTANT, 17, 0, 0}, "constant(17ns)"},
        {{SIM_DIST_CONSTANT, SIM_S + 1, 0, 0}, "constant(1.000000001s)"},
        {{SIM_DIST_CONSTANT, 1234 * SIM_US, 0, 0}, "constant(1.234ms)"},
        {{SIM_DIST_CONSTANT, -250 * SIM_US, 0, 0}, "constant(-250us)"},
        {{SIM_DIST_UNIFORM, 0, 10 * SIM_MS, 0}, "uniform(0s, 10ms)"},
        {{SIM_DIST_NORMAL, 1 * SIM_MS, 200 * SIM_US, 0}, "normal(1ms, 200us)"},
        {{SIM_DIST_LOGNORMAL, 200 * SIM_US, 0, 0.5}, "lognormal(200us, 0.5)"},
        {{SIM_DIST_PARETO, 1 * SIM_MS, 0, 1.5}, "pareto(1ms, 1.5)"},
        {{SIM_DIST_PARETO, 1 * SIM_MS, 50 * SIM_MS, 2}, "pareto(1ms, 2, 50ms)"},
    };
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        char *s = sim_dist_to_string(&cases[i].d);
        g_assert_cmpstr(s, ==, cases[i].s);
        g_free(s);
    }
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define FX_TEST(path, fn) g_test_add("/net/" path, Fx, NULL, fx_setup, fn, fx_teardown)
    FX_TEST("config/default", test_default_config);
    FX_TEST("latency/constant", test_constant_latency);
    FX_TEST("bandwidth/serialises", test_bandwidth);
    FX_TEST("bandwidth/rounds-up", test_bandwidth_rounds_up);
    FX_TEST("bandwidth/idle-link", test_bandwidth_idle_link);
    FX_TEST("latency/extra-delay-defers-write", test_extra_delay);
    FX_TEST("jitter/bounds", test_jitter_bounds);
    FX_TEST("order/fifo-with-random-latency", test_fifo_random_latency);
    FX_TEST("order/reorder-overtakes", test_reorder_overtakes);
    g_test_add_func("/net/loss/rate-reproducible", test_loss_rate);
    FX_TEST("duplicate/always", test_duplicate_always);
    FX_TEST("duplicate/random-never-overtakes", test_duplicate_random);
    FX_TEST("partition/symmetric", test_partition_symmetric);
    FX_TEST("partition/one-way", test_partition_one_way);
    FX_TEST("partition/heal-all", test_partition_heal_all);
    FX_TEST("partition/drops-in-flight", test_partition_in_flight);
    FX_TEST("down/bounces-with-reason", test_down_bounces);
    FX_TEST("pause/holds-and-releases-in-order", test_pause_holds_in_order);
    FX_TEST("pause/down-bounces-held", test_pause_then_down_bounces_held);
    g_test_add_func("/net/pause/repause-from-callback", test_pause_from_callback);
    FX_TEST("link/override-beats-default", test_link_override);
    g_test_add_func("/net/rng/stream-independence", test_stream_independence);
    g_test_add_func("/net/rng/loss-does-not-shift-latency", test_loss_does_not_shift_other_draws);
    FX_TEST("trace/lines", test_trace_lines);
    g_test_add_func("/net/trace/fingerprint-by-seed", test_fingerprint);
    FX_TEST("stats/exact", test_stats_exact);
    g_test_add_func("/net/free/pending-events", test_free_with_pending);
    g_test_add_func("/net/dist/constant", test_dist_constant);
    g_test_add_func("/net/dist/uniform", test_dist_uniform);
    g_test_add_func("/net/dist/normal", test_dist_normal);
    g_test_add_func("/net/dist/normal-clamped", test_dist_normal_clamped);
    g_test_add_func("/net/dist/lognormal", test_dist_lognormal);
    g_test_add_func("/net/dist/pareto", test_dist_pareto);
    g_test_add_func("/net/dist/pareto-cap", test_dist_pareto_cap);
    g_test_add_func("/net/dist/to-string", test_dist_to_string);
#undef FX_TEST
    return g_test_run();
}
