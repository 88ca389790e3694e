/* rng.h — the simulator's only source of randomness.
 *
 * One master seed; any number of named substreams derived from it
 * (ns-3's RngSeedManager idea): stream "net" and stream "faults" are
 * independent, so adding a fault rule does not reshuffle every latency.
 * The generator is xoshiro256** (Blackman & Vigna), seeded through
 * splitmix64 from hash(master seed, stream name, index).  Never GLib's
 * random API: its seeding depends on the environment (and .ci/lint.sh
 * rejects its names anywhere in sim/, comments included).
 *
 * Streams are plain values (32 bytes of state) so they can be embedded.
 */
#ifndef SIM_RNG_H
#define SIM_RNG_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct SimRng {
    guint64 s[4];
} SimRng;

/* splitmix64 step: advances *state, returns the next output. */
guint64 sim_splitmix64(guint64 *state);

/* Seeds r directly from a 64-bit seed (via splitmix64). */
void sim_rng_seed(SimRng *r, guint64 seed);
/* Seeds r as substream (name, index) of master_seed.  Different names or
 * indices give independent streams; the same triple always the same one.
 * name (transfer none) must not be NULL; "" is a valid name. */
void sim_rng_init_stream(SimRng *r, guint64 master_seed, const char *name, guint64 index);

/* Draws.  chance consumes exactly one draw whatever p (so changing a
 * probability does not shift later draws), normal two, below/range usually
 * one (rejection).  range needs lo <= hi (any width, [G_MININT64,
 * G_MAXINT64] included); exponential needs mean >= 0.  Integer results are
 * bit-exact on every platform; the floating-point ones go through libm, whose
 * last bits may differ between C libraries. */
guint64 sim_rng_next(SimRng *r);                 /* uniform 64 bits */
guint64 sim_rng_below(SimRng *r, guint64 bound); /* uniform in [0, bound), unbiased; bound > 0 */
gint64 sim_rng_range(SimRng *r, gint64 lo, gint64 hi); /* uniform in [lo, hi] inclusive */
double sim_rng_double(SimRng *r);                      /* uniform in [0, 1), 53 bits */
gboolean sim_rng_chance(SimRng *r, double p);          /* TRUE with probability p */
double sim_rng_normal(SimRng *r); /* standard normal (Box–Muller, no caching) */
double sim_rng_exponential(SimRng *r, double mean);
/* Pareto with scale xm > 0 and shape alpha > 0 (heavy tail). */
double sim_rng_pareto(SimRng *r, double xm, double alpha);
/* Fisher–Yates shuffle of n guint elements. */
void sim_rng_shuffle_uint(SimRng *r, guint *a, gsize n);

G_END_DECLS

#endif /* SIM_RNG_H */
