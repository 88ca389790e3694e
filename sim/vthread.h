/* vthread.h — virtual threads: each worker's pool of coroutines.
 *
 * A pool's size is a limit, not an allocation (PyTorch's default is 16):
 * a thread is created only when a task needs one, and a thread whose task
 * returned parks for reuse.  Tasks spawned while every thread is busy
 * (running or blocked) wait in a FIFO queue.  A thread starts or resumes only
 * from an event, so the order in which runnable threads run is the event
 * order: (time, seq), never an address.
 *
 * Blocking: sim_thread_block_on() suspends the calling thread until a future
 * completes; outside any thread (test code, the scenario driver, a timer
 * callback) it runs the kernel's loop until the future completes instead, and
 * reports a deadlock if the queue drains first.
 *
 * Teardown: sim_pool_free() resumes every blocked thread with an error
 * ("the simulation ended …") so that the code it was running unwinds and
 * releases what it held; blocking calls made during that unwinding fail at
 * once; queued tasks are dropped (their destroy notifiers run).
 */
#ifndef SIM_VTHREAD_H
#define SIM_VTHREAD_H

#include <glib.h>

#include "core/future.h"
#include "sim/kernel.h"

G_BEGIN_DECLS

#define SIM_POOL_DEFAULT_THREADS 16

typedef struct SimThreadPool SimThreadPool;
typedef struct SimThread SimThread;

SimThreadPool *sim_pool_new(SimKernel *k, gint worker, guint max_threads);
/* Stops taking tasks (queued ones are dropped); blocking calls fail from now
 * on.  A world closes every pool before freeing any, so that code unwinding
 * on one worker cannot hand work to another that is still open. */
void sim_pool_close(SimThreadPool *pool);
void sim_pool_free(SimThreadPool *pool);

/* A paused pool runs nothing: threads due to start or resume wait, in the
 * order they came due, until the pool is unpaused (a stopped process). */
void sim_pool_set_paused(SimThreadPool *pool, gboolean paused);
gboolean sim_pool_is_paused(const SimThreadPool *pool);
/* Numbers this pool's threads from base + 1 (before any is created), so two
 * pools of one worker have distinct thread ids in traces. */
void sim_pool_set_id_base(SimThreadPool *pool, guint base);

/* Runs fn(data) on one of the pool's threads, from an event at the current
 * time; queues it if all threads are busy.  destroy(data) runs after fn, or
 * when the task is dropped at teardown. */
void sim_pool_spawn(SimThreadPool *pool, RpcTaskFunc fn, gpointer data, GDestroyNotify destroy);

gint sim_pool_worker(const SimThreadPool *pool);
guint sim_pool_max_threads(const SimThreadPool *pool);
guint sim_pool_threads_created(const SimThreadPool *pool);
guint sim_pool_tasks_queued(const SimThreadPool *pool);
guint sim_pool_threads_blocked(const SimThreadPool *pool);
/* Threads due to run but held because the pool is paused. */
guint sim_pool_threads_held(const SimThreadPool *pool);
/* Largest number of threads busy at once so far. */
guint sim_pool_busy_high_water(const SimThreadPool *pool);

/* The running virtual thread, or NULL outside one. */
SimThread *sim_thread_current(const SimKernel *k);
guint sim_thread_id(const SimThread *t); /* id_base + 1, + 2, … within its pool */
gint sim_thread_worker(const SimThread *t);

/* Waits until fut is done (see above).  FALSE + error on deadlock (outside
 * a thread) or teardown. */
gboolean sim_thread_block_on(SimKernel *k, RpcFuture *fut, GError **error);

G_END_DECLS

#endif /* SIM_VTHREAD_H */
