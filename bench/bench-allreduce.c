/* bench-allreduce.c — simulated ring allreduce time against the ideal
 * bandwidth model.
 *
 * For n = 2, 4, 8 workers and float32 tensors of 1 MiB … 64 MiB on a
 * network of 1 GB/s (1e9 bytes/s) per directed link and 10 µs constant
 * latency, every worker calls rpc_pg_allreduce at t = 0; the simulated time
 * is when the last one completes.  Printed per row:
 *
 *   ideal = 2(n-1)/n · size / bandwidth        (bandwidth term only)
 *   model = 2(n-1) · (ceil(S·1e9/B) + L)        (S: one step's encoded
 *           request, rpc_pg_step_message_bytes — the exact prediction)
 *   fraction = ideal / simulated                 (target: >= 90%)
 *
 * Prints figures only; asserts nothing.
 */
#include <stdio.h>
#include <stdlib.h>

#include "core/collective.h"
#include "sim/net.h"
#include "sim/world.h"

#define BANDWIDTH 1000000000u /* bytes per second */
#define LATENCY   (10 * RPC_US)

typedef struct {
    SimWorld *w;
    guint worker;
    gint64 numel;
    SimTime done;
} Member;

static void
member_run(gpointer data)
{
    Member *m = data;
    GError *err = NULL;
    RpcProcessGroup *pg = rpc_pg_new(sim_world_agent(m->w, m->worker), 1, NULL, 0, &err);
    if (pg == NULL) {
        fprintf(stderr, "bench-allreduce: %s\n", err->message);
        exit(1);
    }
    RpcTensor *t = rpc_tensor_new_full(RPC_DTYPE_FLOAT32, 1, &m->numel, 1.0);
    RpcFuture *f = rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_NEVER);
    RpcValue *v = rpc_future_wait(f, &err);
    if (v == NULL) {
        fprintf(stderr, "bench-allreduce: %s\n", err->message);
        exit(1);
    }
    m->done = sim_kernel_now(sim_world_kernel(m->w));
    rpc_value_unref(v);
    rpc_future_unref(f);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static SimTime
run(guint n, gint64 numel)
{
    SimWorld *w = sim_world_new(1, n, 0);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(LATENCY);
    cfg.bandwidth = BANDWIDTH;
    sim_net_set_default(sim_world_net(w), &cfg);
    GError *err = NULL;
    if (!sim_world_init_rpc(w, &err)) {
        fprintf(stderr, "bench-allreduce: %s\n", err->message);
        exit(1);
    }
    SimTime t0 = sim_kernel_now(sim_world_kernel(w));
    Member *ms = g_new0(Member, n);
    for (guint i = 0; i < n; i++) {
        ms[i] = (Member){w, i, numel, 0};
        sim_world_spawn_program(w, i, member_run, &ms[i], NULL);
    }
    sim_kernel_run(sim_world_kernel(w));
    SimTime end = 0;
    for (guint i = 0; i < n; i++)
        end = MAX(end, ms[i].done);
    g_free(ms);
    sim_world_free(w);
    return end - t0;
}

int
main(int argc, char **argv)
{
    static const guint ns[] = {2, 4, 8};
    printf("allreduce: ring, float32, %u MB/s per link, %" G_GINT64_FORMAT " us latency\n",
           BANDWIDTH / 1000000u, LATENCY / RPC_US);
    printf("%3s %8s %12s %12s %12s %9s\n", "n", "size", "simulated", "model", "ideal", "fraction");
    for (guint i = 0; i < G_N_ELEMENTS(ns); i++) {
        guint n = ns[i];
        for (gint64 mib = 1; mib <= 64; mib *= 2) {
            gint64 bytes = mib << 20, numel = bytes / 4;
            SimTime sim = run(n, numel);
            gsize s = rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT32, RPC_PRECISION_NATIVE, numel / n);
            SimTime tx = (SimTime)(((guint64)s * 1000000000u + BANDWIDTH - 1) / BANDWIDTH);
            SimTime model = 2 * (SimTime)(n - 1) * (tx + LATENCY);
            double ideal = 2.0 * (n - 1) / n * (double)bytes / BANDWIDTH * 1e9; /* ns */
            printf("%3u %5" G_GINT64_FORMAT " MiB %9.3f ms %9.3f ms %9.3f ms %8.1f%%\n", n, mib,
                   sim / 1e6, model / 1e6, ideal / 1e6, 100.0 * ideal / (double)sim);
        }
    }
    return 0;
}
