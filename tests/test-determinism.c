/* test-determinism.c — the acceptance test for determinism rule 4: one seed,
 * one fingerprint.
 *
 * A randomized workload runs on a 4-worker world.  Jobs on each worker draw
 * from that worker's named stream ("workload", worker): random sleeps,
 * futures handed to another worker and completed there after a random
 * delay (sometimes with an error), timers, child jobs spawned on random
 * workers, then() chains and collect_all() fan-ins.  Every step is a trace
 * record (static kinds, integer ids, no pointers).  Two runs with one seed
 * must give the same fingerprint and the same lines, even when the process
 * has allocated other memory in between (so no address can leak into the
 * trace); another seed must give another fingerprint.
 *
 * Deadlock freedom by construction: at most MAX_JOBS jobs ever exist and
 * each worker has more threads than that, so a completer task always finds
 * a thread eventually, and completers only sleep.
 */
#include <string.h>

#include "core/future.h"
#include "sim/kernel.h"
#include "sim/world.h"

#define N_WORKERS    4
#define THREADS      48
#define INITIAL_JOBS 6 /* per worker */
#define MAX_JOBS     40
#define MAX_DEPTH    3
#define SEED         20240611u
#define MIN_RECORDS  500

static const SimTraceKind k_job_start = {"wl.job.start", {"job", "depth", NULL}};
static const SimTraceKind k_job_end = {"wl.job.end", {"job", "steps", NULL}};
static const SimTraceKind k_sleep = {"wl.sleep", {"job", "step", "ns"}};
static const SimTraceKind k_wake = {"wl.wake", {"job", "step", NULL}};
static const SimTraceKind k_send = {"wl.send", {"job", "fut", "to"}};
static const SimTraceKind k_complete = {"wl.complete", {"fut", "value", "delay"}};
static const SimTraceKind k_fail = {"wl.fail", {"fut", NULL, "delay"}};
static const SimTraceKind k_timer = {"wl.timer", {"fut", "value", NULL}};
static const SimTraceKind k_got = {"wl.got", {"job", "fut", "value"}};
static const SimTraceKind k_error = {"wl.error", {"job", "fut", "code"}};
static const SimTraceKind k_then = {"wl.then", {"fut", "in", "out"}};
static const SimTraceKind k_spawn = {"wl.spawn", {"job", "child", "to"}};
static const SimTraceKind k_collect = {"wl.collect", {"job", "n", "sum"}};

typedef struct {
    SimWorld *w;
    SimKernel *k;
    SimRng rng[N_WORKERS];
    guint64 next_job;
    guint64 next_fut;
    guint jobs_made;
} Ctx;

typedef struct {
    Ctx *c;
    guint worker;
    guint64 id;
    guint depth;
} Job;

/* Completes f on `worker`, after `delay`, from a thread (completer) or a
 * timer. */
typedef struct {
    Ctx *c;
    guint worker;
    RpcFuture *f; /* owned */
    guint64 fut;
    SimTime delay;
    gint64 value;
    gboolean fail;
} Completion;

static RpcExecutor *
ex_of(Ctx *c, guint worker)
{
    return sim_world_executor(c->w, worker);
}

static void
emit(Ctx *c, guint worker, const SimTraceKind *kind, gint64 a, gint64 b, gint64 d,
     const char *detail)
{
    sim_kernel_trace_emit(c->k, (gint)worker, kind, a, b, d, detail);
}

static void
completion_free(gpointer data)
{
    Completion *m = data;
    rpc_future_unref(m->f);
    g_free(m);
}

static void
completion_finish(Completion *m)
{
    if (m->fail) {
        char *msg = g_strdup_printf("fut %" G_GUINT64_FORMAT " failed on purpose", m->fut);
        emit(m->c, m->worker, &k_fail, (gint64)m->fut, 0, m->delay, msg);
        rpc_future_set_exception(m->f, rpc_value_new_error(RPC_ERROR_VALUE, msg), NULL);
        g_free(msg);
    } else {
        emit(m->c, m->worker, &k_complete, (gint64)m->fut, m->value, m->delay, NULL);
        rpc_future_set_result(m->f, rpc_value_new_int(m->value), NULL);
    }
}

/* On a thread of the target worker. */
static void
completer_run(gpointer data)
{
    Completion *m = data;
    if (rpc_executor_sleep(ex_of(m->c, m->worker), m->delay, NULL))
        completion_finish(m);
}

/* From a timer: no thread. */
static void
timer_fire(gpointer data)
{
    Completion *m = data;
    emit(m->c, m->worker, &k_timer, (gint64)m->fut, m->value, 0, NULL);
    completion_finish(m);
}

/* A future of `worker` that another (random) worker completes later, by a
 * task or by a timer.  Draws from the caller's stream. */
static RpcFuture *
remote_future(Job *j, SimRng *r, guint64 *fut_id)
{
    Ctx *c = j->c;
    RpcFuture *f = rpc_future_new(ex_of(c, j->worker));
    guint64 id = ++c->next_fut;
    char *desc = g_strdup_printf("fut %" G_GUINT64_FORMAT, id);
    rpc_future_set_description(f, desc);
    g_free(desc);
    Completion *m = g_new0(Completion, 1);
    m->c = c;
    m->worker = (guint)sim_rng_below(r, N_WORKERS);
    m->f = rpc_future_ref(f);
    m->fut = id;
    m->delay = (SimTime)sim_rng_below(r, 3000) * SIM_US;
    m->value = (gint64)sim_rng_below(r, 1000);
    m->fail = sim_rng_chance(r, 0.1);
    emit(c, j->worker, &k_send, (gint64)j->id, (gint64)id, m->worker, NULL);
    if (sim_rng_chance(r, 0.25))
        rpc_executor_call_after(ex_of(c, m->worker), m->delay, timer_fire, m, completion_free);
    else
        rpc_executor_spawn(ex_of(c, m->worker), completer_run, m, completion_free);
    *fut_id = id;
    return f;
}

static RpcValue *
add_one(RpcFuture *parent, gpointer data, GError **error)
{
    Ctx *c = ((Job *)data)->c;
    RpcValue *v = rpc_future_value(parent, error);
    if (v == NULL)
        return NULL;
    gint64 in = rpc_value_get_int(v);
    rpc_value_unref(v);
    emit(c, ((Job *)data)->worker, &k_then, (gint64)((Job *)data)->id, in, in + 1, NULL);
    return rpc_value_new_int(in + 1);
}

/* Waits on f and records the outcome. */
static void
wait_and_record(Job *j, RpcFuture *f, guint64 fut)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    if (v != NULL) {
        emit(j->c, j->worker, &k_got, (gint64)j->id, (gint64)fut, rpc_value_get_int(v), NULL);
        rpc_value_unref(v);
    } else {
        emit(j->c, j->worker, &k_error, (gint64)j->id, (gint64)fut, err->code, err->message);
        g_error_free(err);
    }
}

static void job_run(gpointer data);

static void
job_spawn(Ctx *c, guint worker, guint depth)
{
    Job *j = g_new0(Job, 1);
    j->c = c;
    j->worker = worker;
    j->id = ++c->next_job;
    j->depth = depth;
    c->jobs_made++;
    rpc_executor_spawn(ex_of(c, worker), job_run, j, g_free);
}

static void
job_run(gpointer data)
{
    Job *j = data;
    Ctx *c = j->c;
    RpcExecutor *ex = ex_of(c, j->worker);
    SimRng *r = &c->rng[j->worker];
    guint steps = 3 + (guint)sim_rng_below(r, 6);
    emit(c, j->worker, &k_job_start, (gint64)j->id, j->depth, 0, NULL);
    for (guint s = 0; s < steps; s++) {
        guint64 roll = sim_rng_below(r, 100);
        if (roll < 25) {
            SimTime ns = (SimTime)sim_rng_below(r, 5000) * SIM_US;
            emit(c, j->worker, &k_sleep, (gint64)j->id, s, ns, NULL);
            if (!rpc_executor_sleep(ex, ns, NULL))
                return;
            emit(c, j->worker, &k_wake, (gint64)j->id, s, 0, NULL);
        } else if (roll < 50) {
            guint64 fut;
            RpcFuture *f = remote_future(j, r, &fut);
            if (sim_rng_chance(r, 0.5)) {
                wait_and_record(j, f, fut);
            } else {
                RpcFuture *child = rpc_future_then(f, add_one, j, NULL, NULL);
                wait_and_record(j, child, fut);
                rpc_future_unref(child);
            }
            rpc_future_unref(f);
        } else if (roll < 65) {
            guint to = (guint)sim_rng_below(r, N_WORKERS);
            if (c->jobs_made < MAX_JOBS && j->depth < MAX_DEPTH) {
                emit(c, j->worker, &k_spawn, (gint64)j->id, (gint64)c->next_job + 1, to, NULL);
                job_spawn(c, to, j->depth + 1);
            }
        } else {
            guint n = 2 + (guint)sim_rng_below(r, 3);
            RpcFuture *fs[4];
            guint64 ids[4];
            for (guint i = 0; i < n; i++)
                fs[i] = remote_future(j, r, &ids[i]);
            RpcFuture *all = rpc_future_collect_all(ex, fs, n, NULL);
            GError *err = NULL;
            RpcValue *list = rpc_future_wait(all, &err);
            if (list != NULL) {
                gint64 sum = 0;
                for (guint i = 0; i < rpc_value_list_len(list); i++) {
                    RpcFuture *fi = rpc_value_get_future(rpc_value_list_get(list, i));
                    RpcValue *v = rpc_future_peek_value(fi);
                    sum += rpc_value_get_int(v);
                }
                emit(c, j->worker, &k_collect, (gint64)j->id, n, sum, NULL);
                rpc_value_unref(list);
            } else {
                emit(c, j->worker, &k_error, (gint64)j->id, (gint64)ids[0], err->code,
                     err->message);
                g_error_free(err);
            }
            rpc_future_unref(all);
            for (guint i = 0; i < n; i++)
                rpc_future_unref(fs[i]);
        }
    }
    emit(c, j->worker, &k_job_end, (gint64)j->id, steps, 0, NULL);
}

typedef struct {
    guint64 seed;
    guint64 fingerprint;
    guint64 records;
    guint64 events;
    SimTime end;
    GPtrArray *lines; /* (owned) NULL unless kept */
} Run;

static void
run_clear(Run *run)
{
    if (run->lines)
        g_ptr_array_unref(run->lines);
    memset(run, 0, sizeof *run);
}

static void
run_workload(guint64 seed, gboolean keep_lines, Run *out)
{
    guint live = rpc_future_live_count();
    Ctx c = {0};
    c.w = sim_world_new(seed, N_WORKERS, THREADS);
    c.k = sim_world_kernel(c.w);
    SimTrace *trace = sim_kernel_trace(c.k);
    if (keep_lines)
        sim_trace_keep_lines(trace, TRUE);
    for (guint w = 0; w < N_WORKERS; w++)
        sim_kernel_rng(c.k, "workload", w, &c.rng[w]);
    for (guint i = 0; i < INITIAL_JOBS; i++)
        for (guint w = 0; w < N_WORKERS; w++)
            job_spawn(&c, w, 0);
    SimRunResult res = sim_kernel_run(c.k);
    if (res != SIM_RUN_IDLE) {
        char *report = sim_kernel_deadlock_report(c.k);
        g_test_fail_printf("seed %" G_GUINT64_FORMAT ": run ended with %d\n%s", seed, res,
                           report ? report : "");
        g_free(report);
    }
    out->seed = seed;
    out->fingerprint = sim_trace_fingerprint(trace);
    out->records = sim_trace_count(trace);
    out->events = sim_kernel_events_run(c.k);
    out->end = sim_kernel_now(c.k);
    out->lines = NULL;
    if (keep_lines) {
        GPtrArray *lines = sim_trace_lines(trace);
        out->lines = g_ptr_array_new_full(lines->len, g_free);
        for (guint i = 0; i < lines->len; i++)
            g_ptr_array_add(out->lines, g_strdup(g_ptr_array_index(lines, i)));
    }
    sim_world_free(c.w);
    g_assert_cmpuint(rpc_future_live_count(), ==, live);
}

/* Same fingerprint and the same lines; on a mismatch, the seed and the first
 * line that differs. */
static void
assert_same_run(const Run *a, const Run *b)
{
    if (a->lines && b->lines) {
        guint n = MIN(a->lines->len, b->lines->len);
        for (guint i = 0; i < n; i++) {
            const char *la = g_ptr_array_index(a->lines, i);
            const char *lb = g_ptr_array_index(b->lines, i);
            if (strcmp(la, lb) != 0) {
                g_test_fail_printf("seed %" G_GUINT64_FORMAT ": line %u differs:\n  %s\n  %s",
                                   a->seed, i, la, lb);
                return;
            }
        }
        if (a->lines->len != b->lines->len)
            g_test_fail_printf("seed %" G_GUINT64_FORMAT ": %u lines vs %u", a->seed, a->lines->len,
                               b->lines->len);
    }
    if (a->fingerprint != b->fingerprint)
        g_test_fail_printf("seed %" G_GUINT64_FORMAT ": fingerprint %016" G_GINT64_MODIFIER
                           "x vs %016" G_GINT64_MODIFIER "x",
                           a->seed, a->fingerprint, b->fingerprint);
    g_assert_cmpuint(a->records, ==, b->records);
    g_assert_cmpuint(a->events, ==, b->events);
    g_assert_cmpint(a->end, ==, b->end);
}

static gboolean
lines_contain(const Run *run, const char *needle)
{
    for (guint i = 0; i < run->lines->len; i++)
        if (strstr(g_ptr_array_index(run->lines, i), needle) != NULL)
            return TRUE;
    return FALSE;
}

static void
test_same_seed(void)
{
    Run a, b;
    run_workload(SEED, TRUE, &a);
    run_workload(SEED, TRUE, &b);
    assert_same_run(&a, &b);
    /* Non-trivial: many records, time passed, every kind of step taken. */
    g_test_message("seed %u: %" G_GUINT64_FORMAT " records, %" G_GUINT64_FORMAT
                   " events, ended at %" G_GINT64_FORMAT " ns, fingerprint %016" G_GINT64_MODIFIER
                   "x",
                   SEED, a.records, a.events, a.end, a.fingerprint);
    g_assert_cmpuint(a.records, >=, MIN_RECORDS);
    g_assert_cmpuint(a.lines->len, ==, a.records);
    g_assert_cmpint(a.end, >, 0);
    static const char *const kinds[] = {
        "wl.job.start", "wl.job.end", "wl.sleep", "wl.wake", "wl.send",  "wl.complete", "wl.fail",
        "wl.timer",     "wl.got",     "wl.error", "wl.then", "wl.spawn", "wl.collect",
    };
    for (guint i = 0; i < G_N_ELEMENTS(kinds); i++) {
        char *needle = g_strdup_printf("] %s ", kinds[i]);
        if (!lines_contain(&a, needle))
            g_test_fail_printf("seed %u: no %s record", SEED, kinds[i]);
        g_free(needle);
    }
    /* Several workers and threads took part. */
    g_assert_true(lines_contain(&a, "[worker3/t"));
    g_assert_true(lines_contain(&a, "[worker0/t2]"));
    if (g_test_verbose())
        for (guint i = 0; i < 40 && i < a.lines->len; i++)
            g_test_message("%s", (const char *)g_ptr_array_index(a.lines, i));
    run_clear(&a);
    run_clear(&b);
}

static void
test_other_seed(void)
{
    Run a, b;
    run_workload(SEED, FALSE, &a);
    run_workload(SEED + 1, FALSE, &b);
    g_assert_cmpuint(a.fingerprint, !=, b.fingerprint);
    g_assert_cmpuint(b.records, >=, MIN_RECORDS / 2);
    run_clear(&a);
    run_clear(&b);
}

/* Text outputs never change the fingerprint. */
static void
test_lines_do_not_matter(void)
{
    Run a, b;
    run_workload(SEED, TRUE, &a);
    run_workload(SEED, FALSE, &b);
    g_assert_cmpuint(a.fingerprint, ==, b.fingerprint);
    g_assert_cmpuint(a.records, ==, b.records);
    run_clear(&a);
    run_clear(&b);
}

/* Other allocations between and during the runs move every heap address;
 * the trace must not notice. */
static void
test_heap_noise(void)
{
    Run a, b;
    run_workload(SEED, TRUE, &a);

    SimRng r;
    sim_rng_init_stream(&r, SEED, "heap-noise", 0);
    GPtrArray *kept = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0; i < 2000; i++) {
        gsize size = 1 + (gsize)sim_rng_below(&r, 4096);
        guint8 *block = g_malloc(size);
        memset(block, (int)i, size);
        if (sim_rng_chance(&r, 0.5))
            g_ptr_array_add(kept, block); /* alive during the second run */
        else
            g_free(block);
    }
    run_workload(SEED, TRUE, &b);
    g_ptr_array_unref(kept);
    assert_same_run(&a, &b);
    run_clear(&a);
    run_clear(&b);
}

/* future.c logs (g_info) every error it drops, e.g. a second input of a
 * collect_all failing after the first; expected here, and noise. */
static void
drop_info(const gchar *domain, GLogLevelFlags level, const gchar *message, gpointer data)
{
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_log_set_handler(NULL, G_LOG_LEVEL_INFO, drop_info, NULL);
    g_test_add_func("/determinism/same-seed-same-trace", test_same_seed);
    g_test_add_func("/determinism/other-seed-other-fingerprint", test_other_seed);
    g_test_add_func("/determinism/text-outputs-do-not-matter", test_lines_do_not_matter);
    g_test_add_func("/determinism/heap-noise", test_heap_noise);
    return g_test_run();
}
