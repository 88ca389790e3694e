/* bench-switch.c — cost of one coroutine switch, sim_coro vs glibc ucontext.
 *
 * A round trip main -> coroutine -> main counts as two switches.  Prints
 * figures only; asserts nothing (timings on a shared machine are noise for a
 * test).  Wall clock is fine here: bench/ is outside the simulated layers.
 *
 *   coro: switch ns=9.8 (10000000 switches)
 *   coro: swapcontext ns=130.2 (2000000 switches)
 */
#define _GNU_SOURCE /* ucontext.h: makecontext, swapcontext */

#include "sim/coro.h"

#include <stdio.h>
#include <ucontext.h>

#define CORO_SWITCHES 10000000 /* even: whole round trips */
#define UCTX_SWITCHES 2000000  /* swapcontext is 10-20x slower */
#define UCTX_STACK    (64 * 1024)

/* ---- sim_coro ------------------------------------------------------------- */

typedef struct {
    SimCoro *main;
    SimCoro *co;
    long rounds;
} Ping;

static void
pong_fn(gpointer arg)
{
    Ping *p = arg;

    for (long i = 0; i < p->rounds; i++)
        sim_coro_switch(p->co, p->main);
}

static double
bench_coro(long switches)
{
    Ping p = {.rounds = switches / 2 + 1}; /* +1: the untimed warm-up trip */
    gint64 t0, t1;

    p.main = sim_coro_new_main();
    p.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, pong_fn, &p);

    sim_coro_switch(p.main, p.co); /* warm up: first entry, stack page fault */
    t0 = g_get_monotonic_time();
    for (long i = 1; i < p.rounds; i++)
        sim_coro_switch(p.main, p.co);
    t1 = g_get_monotonic_time();
    sim_coro_switch(p.main, p.co); /* lets fn return */
    g_assert(sim_coro_finished(p.co));

    sim_coro_free(p.co);
    sim_coro_free(p.main);
    return (double)(t1 - t0) * 1000.0 / (double)(2 * (p.rounds - 1));
}

/* ---- glibc swapcontext ---------------------------------------------------- */

static ucontext_t uctx_main, uctx_co;
static long uctx_rounds;

static void
uctx_fn(void)
{
    for (;;)
        swapcontext(&uctx_co, &uctx_main);
}

static double
bench_swapcontext(long switches)
{
    void *stack = g_malloc(UCTX_STACK);
    gint64 t0, t1;

    uctx_rounds = switches / 2;
    getcontext(&uctx_co);
    uctx_co.uc_stack.ss_sp = stack;
    uctx_co.uc_stack.ss_size = UCTX_STACK;
    uctx_co.uc_link = NULL;
    makecontext(&uctx_co, uctx_fn, 0);

    swapcontext(&uctx_main, &uctx_co); /* warm up */
    t0 = g_get_monotonic_time();
    for (long i = 0; i < uctx_rounds; i++)
        swapcontext(&uctx_main, &uctx_co);
    t1 = g_get_monotonic_time();

    g_free(stack); /* uctx_fn stays suspended forever; nothing to unwind */
    return (double)(t1 - t0) * 1000.0 / (double)(2 * uctx_rounds);
}

int
main(void)
{
    double coro = bench_coro(CORO_SWITCHES);
    double uctx = bench_swapcontext(UCTX_SWITCHES);

    printf("coro: switch ns=%.1f (%d switches)\n", coro, CORO_SWITCHES);
    printf("coro: swapcontext ns=%.1f (%d switches)\n", uctx, UCTX_SWITCHES);
    printf("coro: speedup x%.1f\n", uctx / coro);
    return 0;
}
