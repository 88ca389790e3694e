/* rpcworld.c — the RPC test harness (see rpcworld.h).
 *
 * Every failure message names the run's seed, so a failing run can be
 * replayed.  Trace records are counted by kind name through a sink, so a
 * test can check that something observable happened without keeping text.
 */
#include "tests/lib/rpcworld.h"

#include <stdarg.h>
#include <string.h>

#include "sim/error.h"
#include "sim/trace.h"

typedef struct {
    RpcTestCtx *ctx;
    gint rank;
    RpcTestBody body;
} Program;

static void
count_kind(const SimTraceRecord *rec, gpointer data)
{
    GHashTable *kinds = data;
    gpointer old = g_hash_table_lookup(kinds, rec->kind->name);
    g_hash_table_insert(kinds, (gpointer)rec->kind->name,
                        GUINT_TO_POINTER(GPOINTER_TO_UINT(old) + 1));
}

RpcTestCtx *
rt_new(const RpcTestOptions *opts)
{
    RpcTestCtx *ctx = g_new0(RpcTestCtx, 1);
    if (opts != NULL)
        ctx->opts = *opts;
    RpcTestOptions *o = &ctx->opts;
    if (o->n_workers == 0)
        o->n_workers = RT_DEFAULT_WORKERS;
    if (o->seed == 0)
        o->seed = RT_DEFAULT_SEED;
    ctx->live_before = rpc_future_live_count();

    SimWorldConfig cfg;
    sim_world_config_init(&cfg, o->seed, o->n_workers);
    if (o->threads_per_worker != 0)
        cfg.threads_per_worker = o->threads_per_worker;
    if (o->rpc_timeout == RT_TIMEOUT_NEVER)
        cfg.rpc_timeout = RPC_TIMEOUT_NEVER;
    else if (o->rpc_timeout > 0)
        cfg.rpc_timeout = o->rpc_timeout;
    cfg.names = o->names;
    ctx->w = sim_world_new_full(&cfg);
    ctx->k = sim_world_kernel(ctx->w);
    ctx->n = o->n_workers;
    ctx->bodies = g_new0(RpcTestBody, ctx->n);
    /* Kind names are static strings: the table borrows them. */
    ctx->kinds = g_hash_table_new(g_str_hash, g_str_equal);
    sim_trace_add_sink(sim_kernel_trace(ctx->k), count_kind, ctx->kinds, NULL);
    if (o->pytorch_faults)
        for (guint i = 0; i < ctx->n; i++)
            sim_faults_set_pytorch_defaults(sim_world_faults(ctx->w, i));
    if (!o->no_init) {
        GError *err = NULL;
        if (!sim_world_init_rpc(ctx->w, &err))
            g_error("init_rpc failed (seed %" G_GUINT64_FORMAT "): %s", o->seed, err->message);
    }
    return ctx;
}

void
rt_free(RpcTestCtx *ctx)
{
    if (ctx == NULL)
        return;
    guint64 seed = ctx->opts.seed;
    sim_world_free(ctx->w); /* the trace (and our sink) go with the kernel */
    g_hash_table_unref(ctx->kinds);
    if (ctx->barrier != NULL)
        rpc_future_unref(ctx->barrier);
    g_free(ctx->deadlock_report);
    g_free(ctx->bodies);
    guint live = rpc_future_live_count(), before = ctx->live_before;
    g_free(ctx);
    if (live != before)
        g_error("%u RpcFuture(s) leaked (seed %" G_GUINT64_FORMAT ")", live - before, seed);
}

void
rt_on(RpcTestCtx *ctx, gint rank, RpcTestBody body)
{
    g_return_if_fail(rank < (gint)ctx->n);
    for (guint r = 0; r < ctx->n; r++)
        if (rank < 0 || (gint)r == rank)
            ctx->bodies[r] = body;
}

static void
program_run(gpointer data)
{
    Program *p = data;
    RpcTestCtx *ctx = p->ctx;
    if (p->body != NULL)
        p->body(ctx, p->rank);
    /* The body may have shut down, been crashed, or re-initialised RPC:
     * look the agent up again. */
    RpcAgent *a = sim_world_agent(ctx->w, (guint)p->rank);
    if (ctx->opts.shutdown != RT_SHUTDOWN_NONE && a != NULL && rpc_agent_is_running(a)) {
        GError *err = NULL;
        gboolean graceful = ctx->opts.shutdown == RT_SHUTDOWN_GRACEFUL;
        if (!rpc_agent_shutdown(a, graceful, 0, &err))
            g_error("worker%d: shutdown failed (seed %" G_GUINT64_FORMAT "): %s", p->rank,
                    ctx->opts.seed, err->message);
    }
    ctx->finished++;
}

static void
check_counters(RpcTestCtx *ctx)
{
    for (guint r = 0; r < ctx->n; r++) {
        RpcAgent *a = sim_world_agent(ctx->w, r);
        if (a == NULL)
            continue;
        RpcAgentCounters c;
        rpc_agent_get_counters(a, &c);
        if (c.client_active_calls != 0 || c.server_active_calls != 0 ||
            c.server_active_async_calls != 0)
            g_error("worker%u: active calls left at the end (seed %" G_GUINT64_FORMAT
                    "): client %" G_GINT64_FORMAT ", server %" G_GINT64_FORMAT
                    ", server async %" G_GINT64_FORMAT,
                    r, ctx->opts.seed, c.client_active_calls, c.server_active_calls,
                    c.server_active_async_calls);
    }
}

SimRunResult
rt_run(RpcTestCtx *ctx)
{
    ctx->running = ctx->finished = 0;
    for (guint r = 0; r < ctx->n; r++) {
        RpcAgent *a = sim_world_agent(ctx->w, r);
        gboolean shuts_down =
            ctx->opts.shutdown != RT_SHUTDOWN_NONE && a != NULL && rpc_agent_is_running(a);
        if (!sim_world_is_alive(ctx->w, r) || (ctx->bodies[r] == NULL && !shuts_down))
            continue;
        Program *p = g_new(Program, 1);
        p->ctx = ctx;
        p->rank = (gint)r;
        p->body = ctx->bodies[r];
        sim_world_spawn_program(ctx->w, r, program_run, p, g_free);
        ctx->running++;
    }
    memset(ctx->bodies, 0, ctx->n * sizeof *ctx->bodies);
    ctx->result = sim_kernel_run(ctx->k);
    g_free(ctx->deadlock_report);
    ctx->deadlock_report = sim_kernel_deadlock_report(ctx->k);
    if (ctx->opts.expect_deadlock) {
        if (ctx->result != SIM_RUN_DEADLOCK)
            g_error("expected a deadlock, the run ended with %d (seed %" G_GUINT64_FORMAT ")",
                    ctx->result, ctx->opts.seed);
        return ctx->result;
    }
    if (ctx->result != SIM_RUN_IDLE)
        g_error("the run ended with %d, not IDLE (seed %" G_GUINT64_FORMAT "):\n%s", ctx->result,
                ctx->opts.seed, ctx->deadlock_report ? ctx->deadlock_report : "");
    if (ctx->finished != ctx->running)
        g_error("%u of %u program threads did not finish (seed %" G_GUINT64_FORMAT ")",
                ctx->running - ctx->finished, ctx->running, ctx->opts.seed);
    if (!ctx->opts.skip_counter_check)
        check_counters(ctx);
    return ctx->result;
}

void
rt_run_world(const RpcTestOptions *opts, gint rank, RpcTestBody body, gpointer data)
{
    RpcTestCtx *ctx = rt_new(opts);
    ctx->data = data;
    rt_on(ctx, rank, body);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- threads and barriers --------------------------------------------------- */

void
rt_barrier(RpcTestCtx *ctx, gint rank)
{
    if (ctx->barrier == NULL) {
        ctx->barrier = rpc_future_new(rt_executor(ctx, rank));
        rpc_future_set_description(ctx->barrier, "the test's barrier");
    }
    RpcFuture *f = rpc_future_ref(ctx->barrier);
    if (++ctx->barrier_arrived == ctx->running) {
        RpcFuture *mine = ctx->barrier;
        ctx->barrier = NULL;
        ctx->barrier_arrived = 0;
        rpc_future_complete_if_needed(mine, rpc_value_none());
        rpc_future_unref(mine);
    }
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_no_error(err);
    rpc_value_unref(v);
    rpc_future_unref(f);
}

typedef struct {
    RpcTestCtx *ctx;
    gint rank;
    guint index;
    RpcTestThreadFunc fn;
    guint *remaining;
    RpcFuture *all_done;
} Extra;

static void
extra_run(gpointer data)
{
    Extra *e = data;
    e->fn(e->ctx, e->rank, e->index);
    if (--*e->remaining == 0)
        rpc_future_complete_if_needed(e->all_done, rpc_value_none());
}

static void
extra_free(gpointer data)
{
    Extra *e = data;
    rpc_future_unref(e->all_done);
    g_free(e);
}

void
rt_threads(RpcTestCtx *ctx, gint rank, guint n, RpcTestThreadFunc fn)
{
    guint remaining = n;
    RpcFuture *all_done = rpc_future_new(rt_executor(ctx, rank));
    rpc_future_set_description(all_done, "the test's extra threads to finish");
    for (guint i = 0; i < n; i++) {
        Extra *e = g_new(Extra, 1);
        *e = (Extra){ctx, rank, i, fn, &remaining, rpc_future_ref(all_done)};
        sim_world_spawn_program(ctx->w, (guint)rank, extra_run, e, extra_free);
    }
    if (n == 0)
        rpc_future_complete_if_needed(all_done, rpc_value_none());
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(all_done, &err);
    g_assert_no_error(err);
    rpc_value_unref(v);
    rpc_future_unref(all_done);
}

/* --- small accessors ------------------------------------------------------------ */

SimTime
rt_now(RpcTestCtx *ctx)
{
    return sim_kernel_now(ctx->k);
}

RpcAgent *
rt_agent(RpcTestCtx *ctx, gint rank)
{
    return sim_world_agent(ctx->w, (guint)rank);
}

RpcExecutor *
rt_executor(RpcTestCtx *ctx, gint rank)
{
    return sim_world_executor(ctx->w, (guint)rank);
}

void
rt_sleep(RpcTestCtx *ctx, gint rank, SimTime d)
{
    GError *err = NULL;
    g_assert_true(rpc_executor_sleep(rt_executor(ctx, rank), d, &err));
    g_assert_no_error(err);
}

gint
rt_next(RpcTestCtx *ctx, gint rank, gint k)
{
    return (rank + k) % (gint)ctx->n;
}

/* --- values ------------------------------------------------------------------------ */

RpcValue *
rt_full(gint64 rows, gint64 cols, double fill)
{
    gint64 shape[2] = {rows, cols};
    return rpc_value_new_tensor(rpc_tensor_new_full(RPC_DTYPE_FLOAT32, 2, shape, fill));
}

RpcValue *
rt_ones(gint64 rows, gint64 cols)
{
    return rt_full(rows, cols, 1.0);
}

RpcValue *
rt_ones1(gint64 n)
{
    return rpc_value_new_tensor(rpc_tensor_new_ones(RPC_DTYPE_FLOAT32, 1, &n));
}

RpcValue *
rt_int(gint64 i)
{
    return rpc_value_new_int(i);
}

RpcValue *
rt_str(const char *s)
{
    return rpc_value_new_string(s);
}

RpcValue *
rt_name(RpcTestCtx *ctx, gint rank)
{
    return rpc_value_new_string(sim_world_worker_name(ctx->w, (guint)rank));
}

RpcValue *
rt_args(RpcValue *first, ...)
{
    RpcValue *list = rpc_value_new_list();
    va_list ap;
    va_start(ap, first);
    for (RpcValue *v = first; v != NULL; v = va_arg(ap, RpcValue *))
        rpc_value_list_append(list, v);
    va_end(ap);
    return list;
}

RpcValue *
rt_kwargs(const char *first_key, ...)
{
    RpcValue *dict = rpc_value_new_dict();
    va_list ap;
    va_start(ap, first_key);
    for (const char *k = first_key; k != NULL; k = va_arg(ap, const char *))
        rpc_value_dict_set(dict, k, va_arg(ap, RpcValue *));
    va_end(ap);
    return dict;
}

RpcValue *
rt_sync(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args, RpcTime timeout,
        GError **error)
{
    RpcValue *dst = rt_name(ctx, to);
    RpcValue *v = rpc_sync(rt_agent(ctx, rank), dst, func, args, NULL, timeout, error);
    rpc_value_unref(dst);
    return v;
}

RpcFuture *
rt_async(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args, RpcTime timeout)
{
    RpcValue *dst = rt_name(ctx, to);
    GError *err = NULL;
    RpcFuture *f = rpc_async(rt_agent(ctx, rank), dst, func, args, NULL, timeout, &err);
    rpc_value_unref(dst);
    g_assert_no_error(err);
    return f;
}

/* --- assertions ------------------------------------------------------------------------ */

void
rt_assert_error(GError **err, RpcErrorKind kind, const char *substring)
{
    const char *want = rpc_error_kind_name(kind);
    if (*err == NULL)
        g_error("expected %s containing '%s', got no error", want, substring);
    if ((*err)->domain != RPC_ERROR || (*err)->code != (gint)kind ||
        strstr((*err)->message, substring) == NULL)
        g_error("expected %s containing '%s', got %s %d: %s", want, substring,
                g_quark_to_string((*err)->domain), (*err)->code, (*err)->message);
    g_clear_error(err);
}

void
rt_assert_value(RpcValue *got, RpcValue *want)
{
    if (got == NULL || !rpc_value_equal(got, want)) {
        char *g = got ? rpc_value_repr(got) : g_strdup("NULL");
        char *w = rpc_value_repr(want);
        g_error("value mismatch: got %s, want %s", g, w);
    }
    rpc_value_unref(got);
    rpc_value_unref(want);
}

void
rt_assert_wait(RpcFuture *f, RpcValue *want)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_no_error(err);
    rt_assert_value(v, want);
    rpc_future_unref(f);
}

void
rt_assert_wait_error(RpcFuture *f, RpcErrorKind kind, const char *substring)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    rt_assert_error(&err, kind, substring);
    rpc_future_unref(f);
}

guint
rt_trace_count(RpcTestCtx *ctx, const char *kind_name)
{
    return GPOINTER_TO_UINT(g_hash_table_lookup(ctx->kinds, kind_name));
}
