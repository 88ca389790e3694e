/* world.h — a simulated world: the kernel and its workers.
 *
 * Worker i has a thread pool and an executor; later layers (network, RPC
 * agents) hang off the same world.  Teardown order is part of the contract:
 * close every pool, unwind every thread, free the executors (their pending
 * timers are cancelled), then the kernel (pending events' notifiers run).
 */
#ifndef SIM_WORLD_H
#define SIM_WORLD_H

#include "core/executor.h"
#include "sim/kernel.h"
#include "sim/vthread.h"

G_BEGIN_DECLS

typedef struct SimWorld SimWorld;

SimWorld *sim_world_new(guint64 seed, guint n_workers, guint threads_per_worker);
void sim_world_free(SimWorld *w);

SimKernel *sim_world_kernel(SimWorld *w);
guint sim_world_n_workers(const SimWorld *w);
RpcExecutor *sim_world_executor(SimWorld *w, guint worker);
SimThreadPool *sim_world_pool(SimWorld *w, guint worker);

G_END_DECLS

#endif /* SIM_WORLD_H */
