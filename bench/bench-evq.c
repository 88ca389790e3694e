/* bench-evq.c — events per second through the event queue in steady state.
 *
 * For each size N the queue is filled with N events, then every step pops
 * the earliest event and schedules one new event a random delay after it
 * (the "hold" model of event-list benchmarks), so the size stays N.  One
 * step = one event through the queue.  Delays are uniform in [1, 2·N µs],
 * so about N events are pending over one mean delay, and ties are rare but
 * possible.  Wall-clock timing is allowed here (bench/ only); the figures
 * vary from run to run, the bench asserts nothing.
 */
#include <stdio.h>

#include "sim/evq.h"

static guint64
splitmix64(guint64 *state)
{
    guint64 z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, span) for span < 2^32, by multiply-shift: a 64-bit
 * division here would cost as much as a heap level. */
static SimTime
below(guint64 *state, SimTime span)
{
    return (SimTime)(((splitmix64(state) >> 32) * (guint64)span) >> 32);
}

static void
noop(gpointer data)
{
}

static void
run(guint pending, guint64 steps)
{
    SimEvq *q = sim_evq_new();
    guint64 rng = 0x5eed0000u + pending;
    SimTime span = (SimTime)pending * 2 * SIM_US;
    SimTime now = 0;
    guint64 warm = steps / 4;
    gint64 t0 = 0;
    gint64 t1;
    double secs;

    for (guint i = 0; i < pending; i++)
        sim_evq_push(q, below(&rng, span) + 1, noop, NULL, NULL);

    for (guint64 i = 0; i < warm + steps; i++) {
        if (i == warm)
            t0 = g_get_monotonic_time();
        SimEvent *ev = sim_evq_pop(q);
        now = ev->time;
        ev->fn(ev->data);
        sim_evq_release(q, ev);
        sim_evq_push(q, now + below(&rng, span) + 1, noop, NULL, NULL);
    }
    t1 = g_get_monotonic_time();
    g_assert(sim_evq_len(q) == pending);

    secs = (double)(t1 - t0) / 1e6;
    printf("evq: pending=%u events/s=%.2g ns/event=%.1f\n", pending, (double)steps / secs,
           secs * 1e9 / (double)steps);
    fflush(stdout);
    sim_evq_free(q);
}

int
main(int argc, char **argv)
{
    run(1000, 4000000);
    run(100000, 4000000);
    run(1000000, 2000000);
    return 0;
}
