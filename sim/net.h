/* net.h — the simulated network: latency, bandwidth, loss, partitions.
 *
 * Every directed link (from → to) has a configuration: the default, or a
 * per-link override.  A message of S bytes sent at time t on a link with
 * bandwidth B starts transmitting when the link is free (links serialise
 * their messages), takes S/B to transmit, then travels for a latency drawn
 * from the link's distribution plus a uniform jitter.  Links are FIFO: a
 * message never arrives before one sent earlier on the same link, unless the
 * link's reorder probability lets it overtake.  Loss drops a message;
 * duplication delivers a second copy (drawn independently).
 *
 * Partitions block a link (one way or both) from when they start: messages
 * sent across them, and messages still in flight when they arrive, are
 * dropped.  A worker that is down (crashed) receives nothing: a message
 * arriving for it bounces back to the sender's side through the bounce
 * callback (the connection-closed error).  A paused worker's incoming
 * messages wait, in order, until it resumes.
 *
 * Randomness: each link draws from its own stream ("net", from × n + to) of
 * the run's seed, so changing one link's settings or traffic does not change
 * the draws of any other link.  Every send, delivery, drop, duplicate and
 * bounce is a trace record.
 */
#ifndef SIM_NET_H
#define SIM_NET_H

#include <glib.h>

#include "core/wire.h"
#include "sim/kernel.h"
#include "sim/rng.h"

G_BEGIN_DECLS

typedef enum {
    SIM_DIST_CONSTANT = 0, /* a */
    SIM_DIST_UNIFORM,      /* uniform in [a, b] */
    SIM_DIST_NORMAL,       /* mean a, standard deviation b, clamped at 0 */
    SIM_DIST_LOGNORMAL,    /* median a, shape sigma (exp(ln a + sigma·N(0,1))) */
    SIM_DIST_PARETO,       /* scale a, shape alpha (heavy tail), capped at b if b > 0 */
} SimDistKind;

typedef struct SimDist {
    SimDistKind kind;
    SimTime a;
    SimTime b;
    double shape; /* sigma (lognormal) or alpha (pareto) */
} SimDist;

/* A duration >= 0, rounded to the nearest ns (negative parameters give 0).
 * Draws: constant none, uniform one (rarely more: rejection), normal and
 * lognormal two, pareto one. */
SimTime sim_dist_sample(const SimDist *d, SimRng *r);
/* "constant(1ms)", "uniform(0s, 10ms)", "normal(1ms, 200us)",
 * "lognormal(200us, 0.5)", "pareto(1ms, 1.5)" or with its cap
 * "pareto(1ms, 1.5, 50ms)": times in the largest unit not above them, with
 * the exact decimals ("1.5ms", "2s", "17ns", "0s") (transfer full). */
char *sim_dist_to_string(const SimDist *d);
SimDist sim_dist_constant(SimTime v);

typedef struct SimLinkConfig {
    SimDist latency;
    guint64 bandwidth; /* bytes per second; 0 = unlimited */
    SimTime jitter;    /* extra latency, uniform in [0, jitter] */
    double loss;       /* probability of dropping a message */
    double duplicate;  /* probability of delivering it twice */
    double reorder;    /* probability it ignores FIFO order on its link */
} SimLinkConfig;

/* The default: constant zero latency, unlimited bandwidth, no faults. */
void sim_link_config_init(SimLinkConfig *cfg);

/* Called at arrival with the message bytes (transfer none). */
typedef void (*SimNetDeliverFunc)(gpointer data, gint from, gint to, RpcWire *wire);
/* Called at arrival when the destination is down, with reason "Connection
 * closed by peer" (transfer none).  May be NULL: the bounce is then only
 * counted and traced.  A duplicated message may bounce twice. */
typedef void (*SimNetBounceFunc)(gpointer data, gint from, gint to, RpcWire *wire,
                                 const char *reason);

typedef struct SimNet SimNet;

SimNet *sim_net_new(SimKernel *k, guint n_workers, SimNetDeliverFunc deliver,
                    SimNetBounceFunc bounce, gpointer data);
/* Cancels the net's pending events (deferred writes, arrivals, releases of
 * held messages): none of its callbacks runs afterwards, and the kernel may
 * be freed before or after the net.  Not from inside one of its callbacks. */
void sim_net_free(SimNet *net);

void sim_net_set_default(SimNet *net, const SimLinkConfig *cfg);
const SimLinkConfig *sim_net_get_default(const SimNet *net);
/* Override one directed link. */
void sim_net_set_link(SimNet *net, gint from, gint to, const SimLinkConfig *cfg);
void sim_net_clear_link(SimNet *net, gint from, gint to);

/* Blocks a → b, and b → a unless one_way. */
void sim_net_partition(SimNet *net, gint a, gint b, gboolean one_way);
void sim_net_heal(SimNet *net, gint a, gint b, gboolean one_way);
void sim_net_heal_all(SimNet *net);
gboolean sim_net_is_partitioned(const SimNet *net, gint from, gint to);

/* Checked at arrival.  Taking a worker down also bounces what it held while
 * paused (at the time of the call, from an event).  Resuming a paused worker
 * releases its held messages, in arrival order, at the time of the call
 * (from an event scheduled then); arrivals meanwhile queue behind them. */
void sim_net_set_down(SimNet *net, gint worker, gboolean down);
gboolean sim_net_is_down(const SimNet *net, gint worker);
void sim_net_set_paused(SimNet *net, gint worker, gboolean paused);
gboolean sim_net_is_paused(const SimNet *net, gint worker);

/* Sends wire (a reference is taken) from → to.  extra_delay is added before
 * transmission (the faulty agent's per-type delays): the message is written
 * onto the link, and its draws taken, extra_delay later, so FIFO order is
 * write order.  kind_name/msg_id only label the trace records (kind_name is
 * read during the call only). */
void sim_net_send(SimNet *net, gint from, gint to, RpcWire *wire, const char *kind_name,
                  gint64 msg_id, SimTime extra_delay);

typedef struct SimNetStats {
    guint64 sent;      /* sim_net_send calls */
    guint64 delivered; /* deliver callbacks, duplicates included */
    guint64 bytes_sent;
    guint64 dropped_loss;
    guint64 dropped_partition;
    guint64 duplicated; /* extra copies scheduled */
    guint64 reordered;  /* messages that overtook an earlier one */
    guint64 bounced;
    guint64 held_paused; /* arrivals held (paused destination, or behind its held ones) */
} SimNetStats;

void sim_net_get_stats(const SimNet *net, SimNetStats *out);

G_END_DECLS

#endif /* SIM_NET_H */
