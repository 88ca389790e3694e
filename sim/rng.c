/* rng.c — splitmix64, xoshiro256** and named substreams.
 *
 * Invariant: every output is a pure function of (master seed, stream name,
 * stream index, number of draws so far).  Nothing here reads the clock, the
 * environment or a pointer value, and no function keeps hidden state between
 * calls (Box–Muller discards its second variate rather than caching it), so
 * a SimRng copied by value continues the same sequence.
 *
 * Generators (public-domain reference algorithms by Steele, Lea & Flood and
 * by Blackman & Vigna, re-implemented from their description):
 *   splitmix64     state += 0x9e3779b97f4a7c15, then a 3-step xor-shift-
 *                  multiply finaliser; used only for seeding.
 *   xoshiro256**   256-bit state, period 2^256 - 1; output rotl(s1 * 5, 7) * 9.
 *
 * Substream derivation, absorbed one word at a time through splitmix64:
 *     k1 = splitmix64(master), k2 = splitmix64(k1 ^ fnv1a64(name)),
 *     k3 = splitmix64(k2 ^ index); the stream is sim_rng_seed(k3).
 * Each step is a bijection of its input, so for a fixed master two names
 * with different hashes (same index), or two indices (same name), always
 * give different seeds.
 *
 * Portability of results: the integer paths (next, below, range, chance,
 * shuffle) are bit-exact on every platform.  normal, exponential and pareto
 * go through libm (log, cos, pow), whose last-ulp results may differ between
 * C libraries; never feed their raw bits into a fingerprint.
 */
#include "sim/rng.h"

#include <math.h>

#define FNV64_OFFSET G_GUINT64_CONSTANT(0xcbf29ce484222325)
#define FNV64_PRIME  G_GUINT64_CONSTANT(0x100000001b3)

guint64
sim_splitmix64(guint64 *state)
{
    g_return_val_if_fail(state != NULL, 0);
    guint64 z = (*state += G_GUINT64_CONSTANT(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static guint64
fnv1a64(const char *s)
{
    guint64 h = FNV64_OFFSET;
    for (const guchar *p = (const guchar *)s; *p != '\0'; p++) {
        h ^= *p;
        h *= FNV64_PRIME;
    }
    return h;
}

static inline guint64
rotl(guint64 x, int k)
{
    return (x << k) | (x >> (64 - k));
}

void
sim_rng_seed(SimRng *r, guint64 seed)
{
    g_return_if_fail(r != NULL);
    guint64 st = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = sim_splitmix64(&st);
    /* The all-zero state is xoshiro's one fixed point (it would emit zeros
     * forever).  Four consecutive splitmix64 outputs are all zero for no
     * known seed, but the guard costs nothing. */
    if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
        r->s[0] = G_GUINT64_CONSTANT(0x9e3779b97f4a7c15);
}

void
sim_rng_init_stream(SimRng *r, guint64 master_seed, const char *name, guint64 index)
{
    g_return_if_fail(r != NULL);
    g_return_if_fail(name != NULL);
    guint64 st = master_seed;
    guint64 k = sim_splitmix64(&st);
    st = k ^ fnv1a64(name);
    k = sim_splitmix64(&st);
    st = k ^ index;
    k = sim_splitmix64(&st);
    sim_rng_seed(r, k);
}

guint64
sim_rng_next(SimRng *r)
{
    guint64 *s = r->s;
    const guint64 result = rotl(s[1] * 5, 7) * 9;
    const guint64 t = s[1] << 17;

    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Full 64x64 -> 128-bit product, split into halves. */
static inline guint64
mul_128(guint64 x, guint64 y, guint64 *lo)
{
#ifdef __SIZEOF_INT128__
    unsigned __int128 m = (unsigned __int128)x * y;
    *lo = (guint64)m;
    return (guint64)(m >> 64);
#else
    guint64 x0 = x & 0xffffffffu, x1 = x >> 32;
    guint64 y0 = y & 0xffffffffu, y1 = y >> 32;
    guint64 p00 = x0 * y0, p01 = x0 * y1, p10 = x1 * y0, p11 = x1 * y1;
    guint64 mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *lo = (mid << 32) | (p00 & 0xffffffffu);
    return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
#endif
}

/* Lemire's multiply-shift ("Fast random integer generation in an
 * interval", 2019): the high word of x * bound is uniform in [0, bound)
 * once the low words below 2^64 mod bound are rejected.  The modulo (a
 * division) is only computed in the rare case that a rejection is possible;
 * expected draws per call are < 2 for any bound, ~1 for small ones. */
guint64
sim_rng_below(SimRng *r, guint64 bound)
{
    g_return_val_if_fail(r != NULL, 0);
    g_return_val_if_fail(bound > 0, 0);
    guint64 lo;
    guint64 hi = mul_128(sim_rng_next(r), bound, &lo);
    if (lo < bound) {
        const guint64 threshold = (0 - bound) % bound; /* 2^64 mod bound */
        while (lo < threshold)
            hi = mul_128(sim_rng_next(r), bound, &lo);
    }
    return hi;
}

gint64
sim_rng_range(SimRng *r, gint64 lo, gint64 hi)
{
    g_return_val_if_fail(r != NULL, lo);
    g_return_val_if_fail(lo <= hi, lo);
    /* Width - 1 computed in unsigned arithmetic, so [G_MININT64, G_MAXINT64]
     * does not overflow; the full range is every 64-bit value. */
    const guint64 span = (guint64)hi - (guint64)lo;
    guint64 off = span == G_MAXUINT64 ? sim_rng_next(r) : sim_rng_below(r, span + 1);
    /* Two's-complement wrap back into gint64 (GCC/Clang define the
     * conversion as modulo 2^64). */
    return (gint64)((guint64)lo + off);
}

double
sim_rng_double(SimRng *r)
{
    g_return_val_if_fail(r != NULL, 0.0);
    /* Top 53 bits: every double k * 2^-53, k in [0, 2^53), equally likely. */
    return (double)(sim_rng_next(r) >> 11) * 0x1.0p-53;
}

gboolean
sim_rng_chance(SimRng *r, double p)
{
    g_return_val_if_fail(r != NULL, FALSE);
    /* Always one draw, whatever p, so that changing a probability does not
     * shift every later draw of the stream.  p <= 0 (and NaN) is never,
     * p >= 1 always. */
    return sim_rng_double(r) < p;
}

double
sim_rng_normal(SimRng *r)
{
    g_return_val_if_fail(r != NULL, 0.0);
    /* Box–Muller, cosine half only: two draws per variate, no cached sine
     * variate (a cache would make the stream's state more than its 32
     * bytes).  u1 in (0, 1] keeps log() finite. */
    double u1 = 1.0 - sim_rng_double(r);
    double u2 = sim_rng_double(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * G_PI * u2);
}

double
sim_rng_exponential(SimRng *r, double mean)
{
    g_return_val_if_fail(r != NULL, 0.0);
    g_return_val_if_fail(mean >= 0.0, 0.0);
    /* Inverse CDF.  u in [0, 1) so log1p(-u) is finite and <= 0; log1p
     * keeps precision for small u and gives +0.0 (not -0.0) at u = 0. */
    return mean * -log1p(-sim_rng_double(r));
}

double
sim_rng_pareto(SimRng *r, double xm, double alpha)
{
    g_return_val_if_fail(r != NULL, 0.0);
    g_return_val_if_fail(xm > 0.0 && alpha > 0.0, 0.0);
    /* Inverse CDF: xm / v^(1/alpha) with v = 1 - u in (0, 1], so the result
     * is >= xm and at most xm * 2^(53/alpha) (+inf only for alpha < ~0.05). */
    double v = 1.0 - sim_rng_double(r);
    return xm / pow(v, 1.0 / alpha);
}

void
sim_rng_shuffle_uint(SimRng *r, guint *a, gsize n)
{
    g_return_if_fail(r != NULL);
    g_return_if_fail(a != NULL || n == 0);
    /* Fisher–Yates, back to front: n - 1 draws. */
    for (gsize i = n; i > 1; i--) {
        gsize j = (gsize)sim_rng_below(r, i);
        guint tmp = a[i - 1];
        a[i - 1] = a[j];
        a[j] = tmp;
    }
}
