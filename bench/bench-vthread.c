/* bench-vthread.c — cost of a virtual-thread switch through the scheduler,
 * and kernel event throughput.
 *
 * Prints figures only; asserts nothing (timings on a shared machine are
 * noise for a test).  Wall clock is fine here: bench/ is outside the
 * simulated layers.
 *
 *   ping-pong   two threads of one worker hand a token back and forth
 *               through futures: each handoff completes a future (waking the
 *               other thread with an event), blocks on another, and the
 *               scheduler resumes the woken thread.  One "switch" is one
 *               handoff: two coroutine switches, one event, one future and
 *               its waiter.
 *   sleep(0)    one thread calls rpc_executor_sleep(ex, 0) in a loop:
 *               future + executor timer + event + block + resume.
 *   timers      1,000 self-rescheduling kernel events with random delays
 *               (a heap of ~1,000), dispatched by sim_kernel_run(); then the
 *               same through the executor's call_after().
 *
 * Measured on the 2-core dev box (noisy, another build running):
 *
 *   vthread: ping-pong ns/switch=243.4 (2000000 switches, 2000002 events)
 *   vthread: sleep(0) ns/sleep=450.4 (1000000 sleeps)
 *   vthread: kernel timers events/s=13984958 (5000000 events, 1000 pending, 71.5 ns/event)
 *   vthread: executor timers events/s=7279451 (2000000 events, 1000 pending, 137.4 ns/event)
 */
#include <stdio.h>

#include "core/executor.h"
#include "core/future.h"
#include "sim/kernel.h"
#include "sim/world.h"

#define PINGPONG_ROUNDS 1000000 /* two switches each */
#define SLEEPS          1000000
#define TIMER_CHAINS    1000
#define KERNEL_EVENTS   5000000
#define EXEC_EVENTS     2000000

/* ---- ping-pong -------------------------------------------------------------- */

typedef struct {
    RpcExecutor *ex;
    RpcFuture *box[2]; /* box[i]: what player i waits on next */
    long rounds;
} Table;

typedef struct {
    Table *t;
    int me;
} Player;

/* Waits until box[me] is done, then re-arms it. */
static void
take(Table *t, int me)
{
    if (!rpc_executor_block_on(t->ex, t->box[me], NULL))
        g_error("ping-pong: wait failed");
    rpc_future_unref(t->box[me]);
    t->box[me] = rpc_future_new(t->ex);
}

static void
give(Table *t, int to)
{
    rpc_future_set_result(t->box[to], rpc_value_none(), NULL);
}

static void
player_run(gpointer data)
{
    Player *p = data;
    Table *t = p->t;
    for (long i = 0; i < t->rounds; i++) {
        if (p->me == 0) {
            give(t, 1);
            take(t, 0);
        } else {
            take(t, 1);
            give(t, 0);
        }
    }
}

static void
bench_pingpong(void)
{
    SimWorld *w = sim_world_new(1, 1, 2);
    SimKernel *k = sim_world_kernel(w);
    Table t = {.ex = sim_world_executor(w, 0), .rounds = PINGPONG_ROUNDS};
    Player p0 = {&t, 0}, p1 = {&t, 1};
    t.box[0] = rpc_future_new(t.ex);
    t.box[1] = rpc_future_new(t.ex);
    rpc_executor_spawn(t.ex, player_run, &p1, NULL);
    rpc_executor_spawn(t.ex, player_run, &p0, NULL);
    /* Warm-up: both threads created and started, a few handoffs made.  All
     * of it happens at virtual time 0, so step rather than run_until(0). */
    for (int i = 0; i < 16; i++)
        sim_kernel_step(k);

    gint64 t0 = g_get_monotonic_time();
    SimRunResult res = sim_kernel_run(k);
    gint64 t1 = g_get_monotonic_time();
    if (res != SIM_RUN_IDLE)
        g_error("ping-pong: run ended with %d", res);

    long switches = 2L * PINGPONG_ROUNDS;
    printf("vthread: ping-pong ns/switch=%.1f (%ld switches, %" G_GUINT64_FORMAT " events)\n",
           (double)(t1 - t0) * 1000.0 / (double)switches, switches, sim_kernel_events_run(k));
    rpc_future_unref(t.box[0]);
    rpc_future_unref(t.box[1]);
    sim_world_free(w);
}

/* ---- sleep(0) --------------------------------------------------------------- */

typedef struct {
    RpcExecutor *ex;
    long n;
} Sleeper;

static void
sleeper_run(gpointer data)
{
    Sleeper *s = data;
    for (long i = 0; i < s->n; i++)
        if (!rpc_executor_sleep(s->ex, 0, NULL))
            g_error("sleep(0) failed");
}

static void
bench_sleep0(void)
{
    SimWorld *w = sim_world_new(1, 1, 1);
    SimKernel *k = sim_world_kernel(w);
    Sleeper s = {sim_world_executor(w, 0), SLEEPS};
    rpc_executor_spawn(s.ex, sleeper_run, &s, NULL);
    gint64 t0 = g_get_monotonic_time();
    sim_kernel_run(k);
    gint64 t1 = g_get_monotonic_time();
    printf("vthread: sleep(0) ns/sleep=%.1f (%ld sleeps)\n",
           (double)(t1 - t0) * 1000.0 / (double)SLEEPS, (long)SLEEPS);
    sim_world_free(w);
}

/* ---- timers ------------------------------------------------------------------ */

typedef struct {
    SimKernel *k;
    RpcExecutor *ex; /* NULL: schedule on the kernel directly */
    SimRng rng;
    guint64 left; /* events still to schedule, all chains together */
} Timers;

typedef struct {
    Timers *ts;
} Chain;

static void
chain_fire(gpointer data)
{
    Chain *c = data;
    Timers *ts = c->ts;
    if (ts->left == 0)
        return;
    ts->left--;
    SimTime delay = (SimTime)(1 + sim_rng_below(&ts->rng, 1000)) * SIM_US;
    if (ts->ex != NULL)
        rpc_executor_call_after(ts->ex, delay, chain_fire, c, NULL);
    else
        sim_kernel_after(ts->k, delay, chain_fire, c, NULL);
}

static void
bench_timers(gboolean through_executor, guint64 events)
{
    SimWorld *w = sim_world_new(7, 1, 1);
    Timers ts = {.k = sim_world_kernel(w),
                 .ex = through_executor ? sim_world_executor(w, 0) : NULL,
                 .left = events};
    sim_kernel_rng(ts.k, "bench", 0, &ts.rng);
    Chain *chains = g_new(Chain, TIMER_CHAINS);
    for (guint i = 0; i < TIMER_CHAINS; i++) {
        chains[i].ts = &ts;
        chain_fire(&chains[i]);
    }
    guint64 before = sim_kernel_events_run(ts.k);
    gint64 t0 = g_get_monotonic_time();
    sim_kernel_run(ts.k);
    gint64 t1 = g_get_monotonic_time();
    guint64 ran = sim_kernel_events_run(ts.k) - before;
    printf("vthread: %s timers events/s=%.0f (%" G_GUINT64_FORMAT " events, %u pending, "
           "%.1f ns/event)\n",
           through_executor ? "executor" : "kernel", (double)ran * 1e6 / (double)(t1 - t0), ran,
           TIMER_CHAINS, (double)(t1 - t0) * 1000.0 / (double)ran);
    sim_world_free(w);
    g_free(chains);
}

int
main(void)
{
    bench_pingpong();
    bench_sleep0();
    bench_timers(FALSE, KERNEL_EVENTS);
    bench_timers(TRUE, EXEC_EVENTS);
    return 0;
}
