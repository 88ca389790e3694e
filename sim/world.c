/* world.c — kernel + workers; see world.h for the teardown order. */
#include "sim/world.h"

#include "sim/executor.h"

typedef struct {
    SimThreadPool *pool;
    SimExecutor *ex;
} Worker;

struct SimWorld {
    SimKernel *k;
    guint n;
    Worker *workers;
};

SimWorld *
sim_world_new(guint64 seed, guint n_workers, guint threads_per_worker)
{
    g_return_val_if_fail(n_workers > 0 && threads_per_worker > 0, NULL);
    SimWorld *w = g_new0(SimWorld, 1);
    w->k = sim_kernel_new(seed);
    w->n = n_workers;
    w->workers = g_new0(Worker, n_workers);
    for (guint i = 0; i < n_workers; i++) {
        w->workers[i].pool = sim_pool_new(w->k, (gint)i, threads_per_worker);
        w->workers[i].ex = sim_executor_new(w->k, w->workers[i].pool, (gint)i);
    }
    return w;
}

void
sim_world_free(SimWorld *w)
{
    if (w == NULL)
        return;
    for (guint i = 0; i < w->n; i++)
        sim_pool_close(w->workers[i].pool);
    for (guint i = 0; i < w->n; i++)
        sim_pool_free(w->workers[i].pool);
    for (guint i = 0; i < w->n; i++)
        sim_executor_free(w->workers[i].ex);
    sim_kernel_free(w->k);
    g_free(w->workers);
    g_free(w);
}

SimKernel *
sim_world_kernel(SimWorld *w)
{
    return w->k;
}

guint
sim_world_n_workers(const SimWorld *w)
{
    return w->n;
}

RpcExecutor *
sim_world_executor(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return sim_executor_base(w->workers[worker].ex);
}

SimThreadPool *
sim_world_pool(SimWorld *w, guint worker)
{
    g_return_val_if_fail(worker < w->n, NULL);
    return w->workers[worker].pool;
}
