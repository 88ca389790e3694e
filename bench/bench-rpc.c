/* bench-rpc.c — simulated rpc_sync round trips per wall-second.
 *
 *   bench-rpc               both workloads (best and median of 3 runs each)
 *   bench-rpc pingpong N    N round trips worker0 → worker1 (for callgrind)
 *   bench-rpc random N      N round trips spread over 1,000 workers
 *
 * Wall-clock time is measured here, in bench/, only; nothing is asserted.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/agent.h"
#include "sim/world.h"

typedef struct {
    SimWorld *w;
    guint worker;
    guint n;
    gboolean random_peer;
} Load;

static void
load_run(gpointer data)
{
    Load *l = data;
    RpcAgent *a = sim_world_agent(l->w, l->worker);
    guint nw = sim_world_n_workers(l->w);
    SimRng rng;
    sim_kernel_rng(sim_world_kernel(l->w), "bench", l->worker, &rng);
    /* The destination is a value the caller builds; ping-pong builds it once,
     * as a program calling one peer in a loop would. */
    RpcValue *fixed = l->random_peer ? NULL : rpc_value_new_int(1);
    for (guint i = 0; i < l->n; i++) {
        RpcValue *to =
            fixed ? rpc_value_ref(fixed) : rpc_value_new_int((gint64)sim_rng_below(&rng, nw));
        GError *err = NULL;
        RpcValue *v = rpc_sync(a, to, "light_rpc", NULL, NULL, RPC_TIMEOUT_UNSET, &err);
        rpc_value_unref(to);
        if (v == NULL) {
            fprintf(stderr, "bench-rpc: %s\n", err->message);
            exit(1);
        }
        rpc_value_unref(v);
    }
    rpc_value_unref(fixed);
}

/* Runs `total` round trips over n_workers (each worker's program sends its
 * share); returns wall seconds. */
static double
run(guint n_workers, guint total, gboolean random_peer, guint64 *events)
{
    SimWorld *w = sim_world_new(1, n_workers, 16);
    GError *err = NULL;
    if (!sim_world_init_rpc(w, &err)) {
        fprintf(stderr, "bench-rpc: %s\n", err->message);
        exit(1);
    }
    guint senders = random_peer ? n_workers : 1;
    Load *loads = g_new0(Load, senders);
    for (guint i = 0; i < senders; i++) {
        loads[i] = (Load){w, i, total / senders, random_peer};
        sim_world_spawn_program(w, i, load_run, &loads[i], NULL);
    }
    gint64 t0 = g_get_monotonic_time();
    sim_kernel_run(sim_world_kernel(w));
    gint64 t1 = g_get_monotonic_time();
    *events = sim_kernel_events_run(sim_world_kernel(w));
    sim_world_free(w);
    g_free(loads);
    return (double)(t1 - t0) / 1e6;
}

static int
cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int
main(int argc, char **argv)
{
    guint64 events;
    if (argc == 3) {
        guint n = (guint)strtoul(argv[2], NULL, 10);
        gboolean random_peer = strcmp(argv[1], "random") == 0;
        run(random_peer ? 1000 : 2, n, random_peer, &events);
        printf("rpc: %s %u round trips, %" G_GUINT64_FORMAT " events\n", argv[1], n, events);
        return 0;
    }
    /* Best and median of three runs each: the machine may be shared, and a
     * neighbour's burst only ever makes a run slower. */
    const guint n = 200000;
    for (int w = 0; w < 2; w++) {
        gboolean random_peer = w == 1;
        double s[3];
        for (int r = 0; r < 3; r++)
            s[r] = run(random_peer ? 1000 : 2, n, random_peer, &events);
        qsort(s, 3, sizeof s[0], cmp_double);
        printf("rpc: %s: %u round trips, best of 3 %.3f s = %.3g round trips/s (%.0f ns each), "
               "median %.3g round trips/s, %.1f events each\n",
               random_peer ? "1000 workers, random peers" : "ping-pong 2 workers", n, s[0],
               n / s[0], s[0] * 1e9 / n, n / s[1], (double)events / n);
    }
    return 0;
}
