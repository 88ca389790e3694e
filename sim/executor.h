/* executor.h — the simulator's RpcExecutor: virtual time, virtual threads.
 *
 * One per worker.  Timers are kernel events; spawn() runs tasks on the
 * worker's SimThreadPool; block_on() is sim_thread_block_on(); trace()
 * stamps records with the virtual time, the worker and the current thread.
 */
#ifndef SIM_EXECUTOR_H
#define SIM_EXECUTOR_H

#include "core/executor.h"
#include "sim/kernel.h"
#include "sim/vthread.h"

G_BEGIN_DECLS

typedef struct SimExecutor SimExecutor;

/* pool (transfer none) must outlive the executor. */
SimExecutor *sim_executor_new(SimKernel *k, SimThreadPool *pool, gint worker);
/* Cancels pending timers (their destroy notifiers run). */
void sim_executor_free(SimExecutor *ex);
RpcExecutor *sim_executor_base(SimExecutor *ex);
/* Timers scheduled and not yet fired or cancelled. */
guint sim_executor_pending_timers(const SimExecutor *ex);

G_END_DECLS

#endif /* SIM_EXECUTOR_H */
