/* vthread.c — virtual threads and per-worker pools (see vthread.h).
 *
 * Thread states:
 *   IDLE      parked in its loop, waiting for a task (on pool->idle)
 *   WAKING    a resume event is scheduled
 *   RUNNING   the current thread
 *   BLOCKED   waiting for a future; its Waiter is registered on the future
 *
 * A blocked thread is woken by a done-callback holding a refcounted Waiter,
 * not the thread itself: at teardown the Waiter is disarmed, so a future
 * completing after the pool is gone touches nothing freed.  When the thread
 * resumes and the callback has already dropped its reference (the usual
 * case: a future releases a callback's data right after running it), the
 * thread keeps the Waiter for its next block.
 *
 * What a blocked thread waits for: it holds a reference to the future and
 * reads rpc_future_description() when a report or teardown error is built,
 * so the text is the future's description at that moment (a description set
 * after the thread blocked shows), and blocking copies no string.
 *
 * Allocation: queued tasks live by value in a per-pool ring buffer and
 * Waiters are reused per thread, so a steady state of spawns and blocks
 * allocates nothing here.
 */
#include "sim/kernel-private.h"

#include "sim/error.h"

typedef enum { T_IDLE, T_WAKING, T_RUNNING, T_BLOCKED, T_DONE } ThreadState;

typedef struct {
    RpcTaskFunc fn;
    gpointer data;
    GDestroyNotify destroy;
} Task;

/* A FIFO of tasks by value: a ring buffer that doubles when full, so a
 * steady state of spawns allocates nothing. */
typedef struct {
    Task *buf; /* (owned) capacity cap, a power of two (0 before first use) */
    guint cap;
    guint head; /* index of the oldest task */
    guint len;
} TaskQueue;

typedef struct {
    gint refcount;
    SimThread *thread; /* NULL once disarmed */
} Waiter;

struct SimThread {
    SimThreadPool *pool;
    guint id;
    ThreadState state;
    SimCoro *coro;
    RpcFuture *waiting_on; /* BLOCKED: what for (a reference; see block_on) */
    SimTime blocked_since;
    Waiter *waiter;       /* BLOCKED: the armed waiter */
    Waiter *spare;        /* a waiter no callback refers to any more, for reuse */
    SimEvent *resume_ev;  /* WAKING: the pending resume event */
    SimThread *next_idle; /* IDLE: the next parked thread */
};

struct SimThreadPool {
    SimKernel *k;
    gint worker;
    guint max_threads;
    GPtrArray *threads; /* SimThread*, by id - 1 (owned) */
    SimThread *idle;    /* parked threads, a stack through next_idle */
    TaskQueue tasks;    /* FIFO */
    guint busy;         /* WAKING + RUNNING + BLOCKED threads */
    guint busy_high_water;
    guint blocked;
    guint starting; /* threads woken from IDLE that have not yet taken a task */
    gboolean closing;
    guint id_base;   /* thread ids are id_base + 1, id_base + 2, … */
    gboolean paused; /* resumes are held (in order) until unpaused */
    GPtrArray *held; /* WAKING threads whose resume came while paused */
};

static void thread_main(gpointer arg);

static void
waiter_unref(gpointer p)
{
    Waiter *w = p;
    if (--w->refcount == 0)
        g_free(w);
}

static void
task_drop(const Task *t)
{
    if (t->destroy)
        t->destroy(t->data);
}

static void
tasks_push(TaskQueue *q, const Task *t)
{
    if (q->len == q->cap) {
        guint cap = q->cap ? q->cap * 2 : 8;
        Task *buf = g_new(Task, cap);
        /* Unroll the ring into the new buffer, oldest first. */
        for (guint i = 0; i < q->len; i++)
            buf[i] = q->buf[(q->head + i) & (q->cap - 1)];
        g_free(q->buf);
        q->buf = buf;
        q->cap = cap;
        q->head = 0;
    }
    q->buf[(q->head + q->len) & (q->cap - 1)] = *t;
    q->len++;
}

/* Takes the oldest task into *out; FALSE when the queue is empty. */
static gboolean
tasks_pop(TaskQueue *q, Task *out)
{
    if (q->len == 0)
        return FALSE;
    *out = q->buf[q->head];
    q->head = (q->head + 1) & (q->cap - 1);
    q->len--;
    return TRUE;
}

SimThreadPool *
sim_pool_new(SimKernel *k, gint worker, guint max_threads)
{
    g_return_val_if_fail(k != NULL && max_threads > 0, NULL);
    SimThreadPool *pool = g_new0(SimThreadPool, 1);
    pool->k = k;
    pool->worker = worker;
    pool->max_threads = max_threads;
    pool->threads = g_ptr_array_new();
    pool->held = g_ptr_array_new();
    g_ptr_array_add(k->pools, pool);
    return pool;
}

/* Switches from the scheduler into t and back. */
static void
resume(SimThread *t)
{
    SimKernel *k = t->pool->k;
    g_assert(k->current == NULL);
    k->current = t;
    k->current_id = t->id;
    t->state = T_RUNNING;
    sim_coro_switch(k->main_coro, t->coro);
    k->current = NULL;
    k->current_id = 0;
}

static void
resume_event(gpointer data)
{
    SimThread *t = data;
    t->resume_ev = NULL;
    if (t->state != T_WAKING)
        return;
    if (t->pool->paused && !t->pool->closing) {
        g_ptr_array_add(t->pool->held, t);
        return;
    }
    resume(t);
}

static void
wake(SimThread *t)
{
    g_assert(t->state == T_IDLE || t->state == T_BLOCKED);
    if (t->state == T_BLOCKED) {
        t->pool->blocked--;
        t->pool->k->blocked--;
    } else {
        t->pool->busy++;
        t->pool->starting++;
        if (t->pool->busy > t->pool->busy_high_water)
            t->pool->busy_high_water = t->pool->busy;
    }
    t->state = T_WAKING;
    t->resume_ev = sim_kernel__at(t->pool->k, t->pool->k->now, resume_event, t, NULL);
}

void
sim_pool_close(SimThreadPool *pool)
{
    g_return_if_fail(pool != NULL);
    pool->closing = TRUE;
    Task task;
    while (tasks_pop(&pool->tasks, &task))
        task_drop(&task);
}

void
sim_pool_free(SimThreadPool *pool)
{
    if (pool == NULL)
        return;
    SimKernel *k = pool->k;
    g_return_if_fail(k->current == NULL);
    sim_pool_close(pool);
    /* Let every started thread unwind and leave its loop. */
    for (guint i = 0; i < pool->threads->len; i++) {
        SimThread *t = g_ptr_array_index(pool->threads, i);
        if (t->state == T_BLOCKED) {
            t->waiter->thread = NULL;
            pool->blocked--;
            k->blocked--;
        }
        if (t->resume_ev != NULL) {
            sim_kernel_cancel(k, t->resume_ev);
            t->resume_ev = NULL;
        }
        if (t->state != T_DONE)
            resume(t);
        g_assert(t->state == T_DONE);
    }
    for (guint i = 0; i < pool->threads->len; i++) {
        SimThread *t = g_ptr_array_index(pool->threads, i);
        sim_coro_free(t->coro);
        g_assert(t->waiting_on == NULL);
        g_free(t->spare);
        g_free(t);
    }
    g_free(pool->tasks.buf);
    g_ptr_array_unref(pool->threads);
    g_ptr_array_unref(pool->held);
    g_ptr_array_remove(k->pools, pool);
    g_free(pool);
}

void
sim_pool_set_paused(SimThreadPool *pool, gboolean paused)
{
    g_return_if_fail(pool != NULL);
    pool->paused = paused;
    if (paused)
        return;
    /* Release held threads in the order their resumes came due. */
    for (guint i = 0; i < pool->held->len; i++) {
        SimThread *t = g_ptr_array_index(pool->held, i);
        t->resume_ev = sim_kernel__at(pool->k, pool->k->now, resume_event, t, NULL);
    }
    g_ptr_array_set_size(pool->held, 0);
}

void
sim_pool_set_id_base(SimThreadPool *pool, guint base)
{
    g_return_if_fail(pool != NULL && pool->threads->len == 0);
    pool->id_base = base;
}

gboolean
sim_pool_is_paused(const SimThreadPool *pool)
{
    return pool->paused;
}

void
sim_pool_spawn(SimThreadPool *pool, RpcTaskFunc fn, gpointer data, GDestroyNotify destroy)
{
    g_return_if_fail(pool != NULL && fn != NULL);
    const Task task = {fn, data, destroy};
    if (pool->closing) {
        task_drop(&task);
        return;
    }
    tasks_push(&pool->tasks, &task);
    /* Threads already starting will take queued tasks in order; wake or
     * create one more only if the queue outnumbers them. */
    if (pool->tasks.len <= pool->starting)
        return;
    if (pool->idle != NULL) {
        SimThread *t = pool->idle;
        pool->idle = t->next_idle;
        t->next_idle = NULL;
        wake(t);
    } else if (pool->threads->len < pool->max_threads) {
        SimThread *t = g_new0(SimThread, 1);
        t->pool = pool;
        t->id = pool->id_base + pool->threads->len + 1;
        t->state = T_IDLE;
        t->coro = sim_coro_new(SIM_CORO_DEFAULT_STACK, thread_main, t);
        g_ptr_array_add(pool->threads, t);
        wake(t);
    }
    /* else: every thread is busy; the task waits for the next free one. */
}

/* A thread's whole life: take tasks until the pool closes. */
static void
thread_main(gpointer arg)
{
    SimThread *t = arg;
    SimThreadPool *pool = t->pool;
    pool->starting--;
    for (;;) {
        Task task;
        if (pool->closing || !tasks_pop(&pool->tasks, &task)) {
            if (pool->closing)
                break;
            /* Park until spawn() wakes us. */
            t->state = T_IDLE;
            pool->busy--;
            t->next_idle = pool->idle;
            pool->idle = t;
            sim_coro_switch(t->coro, pool->k->main_coro);
            if (!pool->closing)
                pool->starting--; /* woken by spawn() */
            continue;
        }
        task.fn(task.data);
        task_drop(&task);
    }
    /* Only reached when the pool closes; its counters no longer matter. */
    t->state = T_DONE;
}

/* What a thread blocked on fut waits for, as of now. */
static const char *
describe_future(const RpcFuture *fut)
{
    const char *what = rpc_future_description(fut);
    return what != NULL ? what : "a future";
}

static gboolean
waiter_fire(RpcFuture *fut, gpointer data, GError **error)
{
    Waiter *w = data;
    if (w->thread != NULL && w->thread->state == T_BLOCKED)
        wake(w->thread);
    return TRUE;
}

gboolean
sim_thread_block_on(SimKernel *k, RpcFuture *fut, GError **error)
{
    g_return_val_if_fail(k != NULL && fut != NULL, FALSE);
    if (rpc_future_done(fut))
        return TRUE;
    SimThread *t = k->current;
    if (t == NULL) {
        /* Scheduler or driver context: run the loop until fut is done. */
        while (!rpc_future_done(fut)) {
            if (!sim_kernel_step(k)) {
                /* Read the description now: events may have changed it. */
                const char *what = describe_future(fut);
                char *report = sim_kernel_deadlock_report(k);
                char now[32];
                g_set_error(error, SIM_ERROR, SIM_ERROR_DEADLOCK,
                            "deadlock: the event queue drained at t=%s while waiting on %s%s%s",
                            sim_time_format(k->now, now, sizeof now), what, report ? "\n" : "",
                            report ? report : "");
                g_free(report);
                return FALSE;
            }
        }
        return TRUE;
    }
    SimThreadPool *pool = t->pool;
    if (pool->closing) {
        g_set_error(error, SIM_ERROR, SIM_ERROR_TEARDOWN,
                    "the simulation ended while worker%d/t%u was waiting on %s", pool->worker,
                    t->id, describe_future(fut));
        return FALSE;
    }
    Waiter *w = t->spare != NULL ? t->spare : g_new(Waiter, 1);
    t->spare = NULL;
    w->refcount = 2; /* ours + the callback's */
    w->thread = t;
    rpc_future_add_done_callback(fut, waiter_fire, w, waiter_unref, NULL);
    t->state = T_BLOCKED;
    t->waiter = w;
    t->waiting_on = rpc_future_ref(fut);
    t->blocked_since = k->now;
    pool->blocked++;
    k->blocked++;
    sim_coro_switch(t->coro, k->main_coro);
    /* Resumed: either fut completed, or the pool is closing. */
    t->waiter = NULL;
    t->waiting_on = NULL;
    w->thread = NULL;
    /* The future drops the callback's reference right after running it, so
     * in the common case ours is the last one: keep the record for the
     * thread's next block instead of freeing it. */
    if (w->refcount == 1)
        t->spare = w;
    else
        waiter_unref(w);
    gboolean done = rpc_future_done(fut);
    if (!done) {
        g_assert(pool->closing);
        g_set_error(error, SIM_ERROR, SIM_ERROR_TEARDOWN,
                    "the simulation ended while worker%d/t%u was waiting on %s", pool->worker,
                    t->id, describe_future(fut));
    }
    rpc_future_unref(fut);
    return done;
}

SimThread *
sim_thread_current(const SimKernel *k)
{
    return k->current;
}

guint
sim_thread_id(const SimThread *t)
{
    return t->id;
}

gint
sim_thread_worker(const SimThread *t)
{
    return t->pool->worker;
}

gint
sim_pool_worker(const SimThreadPool *pool)
{
    return pool->worker;
}

guint
sim_pool_max_threads(const SimThreadPool *pool)
{
    return pool->max_threads;
}

guint
sim_pool_threads_created(const SimThreadPool *pool)
{
    return pool->threads->len;
}

guint
sim_pool_tasks_queued(const SimThreadPool *pool)
{
    return pool->tasks.len;
}

guint
sim_pool_threads_held(const SimThreadPool *pool)
{
    return pool->held->len;
}

guint
sim_pool_threads_blocked(const SimThreadPool *pool)
{
    return pool->blocked;
}

guint
sim_pool_busy_high_water(const SimThreadPool *pool)
{
    return pool->busy_high_water;
}

gint
sim_pool_compare_by_worker(gconstpointer a, gconstpointer b)
{
    const SimThreadPool *pa = *(SimThreadPool *const *)a;
    const SimThreadPool *pb = *(SimThreadPool *const *)b;
    return (pa->worker > pb->worker) - (pa->worker < pb->worker);
}

void
sim_pool_describe_blocked(const SimThreadPool *pool, GString *out)
{
    char since[32];
    for (guint i = 0; i < pool->threads->len; i++) {
        const SimThread *t = g_ptr_array_index(pool->threads, i);
        if (t->state != T_BLOCKED)
            continue;
        g_string_append_printf(out, "  worker%d/t%u blocked since %s on: %s\n", pool->worker, t->id,
                               sim_time_format(t->blocked_since, since, sizeof since),
                               describe_future(t->waiting_on));
    }
    if (pool->held->len > 0)
        g_string_append_printf(out, "  worker%d: %u thread%s held because the worker is paused\n",
                               pool->worker, pool->held->len, pool->held->len == 1 ? "" : "s");
    guint queued = pool->tasks.len;
    if (queued > 0)
        g_string_append_printf(out,
                               "  worker%d: %u task%s queued, all %u threads busy (thread pool "
                               "exhausted)\n",
                               pool->worker, queued, queued == 1 ? "" : "s", pool->max_threads);
}
