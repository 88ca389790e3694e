/* test-ddp-train.c — the registered training functions (core/ddp-train.h):
 * ddp_train, single_train, ddp_loss, max_abs_diff.
 *
 * What is checked, and against what:
 *  - ddp_train with "allreduce" / "none" equals single_train bit for bit,
 *    for several data seeds, bucket caps (1 to 4 buckets), world sizes
 *    (1, 2, 3, 4, 5: chunks of unequal length, empty chunks) and random
 *    latencies; through an RPC to self as scenarios call it, and directly;
 *  - single_train and ddp_loss agree with an independent computation here
 *    (the header's data generation, hand-written backpropagation, plain
 *    full-batch gradient descent) to 1e-12;
 *  - the other hooks: noop on rank 0 = training on shard 0 alone (exactly);
 *    fp16/bf16 within their documented tolerances and equal to their
 *    wrappers; PowerSGD exact during warm-up, close afterwards;
 *  - errors: a member crash fails the others with the collective's timeout,
 *    at an exact virtual time; a dead member times the rendezvous out; members
 *    with different arguments all fail; an existing group id; PowerSGD's
 *    ValueError; every argument check's TypeError / ValueError text.
 */
#include <math.h>
#include <string.h>

#include "core/collective.h"
#include "core/ddp-train.h"
#include "core/ddp.h"
#include "core/error.h"
#include "sim/net.h"
#include "tests/lib/rpcworld.h"

#define NUMEL RPC_DDP_TRAIN_NUMEL
#define D_IN  RPC_DDP_TRAIN_D_IN
#define HID   RPC_DDP_TRAIN_HID
#define SHARD RPC_DDP_TRAIN_SHARD

static gboolean
under_valgrind(void)
{
    return g_getenv("RPCSIM_UNDER_VALGRIND") != NULL;
}

/* --- calling the functions ----------------------------------------------------------------- */

/* Runs a registered function directly on this agent's registry (args and
 * kwargs taken; kwargs may be NULL). */
static RpcValue *
call(RpcAgent *a, const char *fn, RpcValue *args, RpcValue *kwargs, GError **error)
{
    const RpcFunctionDef *def = rpc_registry_lookup(rpc_agent_registry(a), fn);
    g_assert_nonnull(def);
    RpcValue *r = def->fn(a, args, kwargs, error);
    rpc_value_unref(args);
    if (kwargs)
        rpc_value_unref(kwargs);
    return r;
}

/* The same through rpc_sync to self, as a scenario calls it. */
static RpcValue *
call_rpc(RpcAgent *a, const char *fn, RpcValue *args, RpcValue *kwargs, GError **error)
{
    RpcValue *me = rpc_value_new_string(rpc_agent_name(a));
    RpcValue *r = rpc_sync(a, me, fn, args, kwargs, RPC_TIMEOUT_UNSET, error);
    rpc_value_unref(me);
    return r;
}

static RpcValue *
train_args(const char *hook, gint64 steps, gint64 seed, gint64 cap)
{
    return rt_args(rt_str(hook), rt_int(steps), rt_int(seed), rt_int(cap), NULL);
}

static RpcValue *
must_call(RpcAgent *a, const char *fn, RpcValue *args, RpcValue *kwargs)
{
    GError *err = NULL;
    RpcValue *r = call(a, fn, args, kwargs, &err);
    g_assert_no_error(err);
    g_assert_nonnull(r);
    return r;
}

static double
max_diff(const RpcValue *a, const RpcValue *b)
{
    const RpcTensor *x = rpc_value_get_tensor(a), *y = rpc_value_get_tensor(b);
    g_assert_cmpint(rpc_tensor_numel(x), ==, rpc_tensor_numel(y));
    double m = 0;
    for (gint64 i = 0; i < rpc_tensor_numel(x); i++)
        m = MAX(m, fabs(rpc_tensor_get(x, i) - rpc_tensor_get(y, i)));
    return m;
}

static void
assert_equal_weights(const RpcValue *got, const RpcValue *want, const char *what)
{
    g_assert_cmpint(rpc_value_type(got), ==, RPC_VALUE_TENSOR);
    const RpcTensor *g = rpc_value_get_tensor(got), *w = rpc_value_get_tensor(want);
    g_assert_cmpint(rpc_tensor_dtype(g), ==, RPC_DTYPE_FLOAT64);
    g_assert_cmpint(rpc_tensor_numel(g), ==, NUMEL);
    for (gint64 i = 0; i < NUMEL; i++)
        if (rpc_tensor_get(g, i) != rpc_tensor_get(w, i))
            g_error("%s: weight %" G_GINT64_FORMAT ": %.17g != %.17g", what, i,
                    rpc_tensor_get(g, i), rpc_tensor_get(w, i));
}

static void
set_latency(RpcTestCtx *ctx, SimDist latency)
{
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = latency;
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
}

/* --- an independent reference -------------------------------------------------------------- */

/* The header's data: teacher, initial weights, then samples, from one
 * RpcDdpRng seeded with the seed. */
typedef struct {
    double w[NUMEL];
    double *x, *y;
    gint64 n;
} RefData;

static void
ref_data(guint64 seed, guint world, RefData *d)
{
    RpcDdpRng r;
    rpc_ddp_rng_seed(&r, seed);
    double a[D_IN];
    for (guint j = 0; j < D_IN; j++)
        a[j] = rpc_ddp_rng_normal(&r) / sqrt(D_IN);
    for (guint i = 0; i < NUMEL; i++) {
        double z = rpc_ddp_rng_normal(&r);
        if (i < D_IN * HID)
            d->w[i] = z / sqrt(D_IN);
        else if (i < D_IN * HID + HID)
            d->w[i] = 0.1 * z;
        else if (i < D_IN * HID + 2 * HID)
            d->w[i] = z / sqrt(HID);
        else
            d->w[i] = 0.1 * z;
    }
    d->n = (gint64)world * SHARD;
    d->x = g_new(double, d->n *D_IN);
    d->y = g_new(double, d->n);
    for (gint64 s = 0; s < d->n; s++) {
        double dot = 0;
        for (guint j = 0; j < D_IN; j++) {
            d->x[s * D_IN + j] = rpc_ddp_rng_normal(&r);
            dot += a[j] * d->x[s * D_IN + j];
        }
        d->y[s] = dot + 0.1 * rpc_ddp_rng_normal(&r);
    }
}

/* Loss over all samples and (if grad) its gradient, by hand. */
static double
ref_loss_grad(const RefData *d, const double *w, double *grad)
{
    const double *w1 = w, *b1 = w + D_IN * HID, *w2 = b1 + HID, *b2 = w2 + HID;
    if (grad)
        memset(grad, 0, NUMEL * sizeof *grad);
    double loss = 0;
    for (gint64 s = 0; s < d->n; s++) {
        const double *x = d->x + s * D_IN;
        double z[HID], h[HID], o = b2[0];
        for (guint k = 0; k < HID; k++) {
            z[k] = b1[k];
            for (guint j = 0; j < D_IN; j++)
                z[k] += x[j] * w1[j * HID + k];
            h[k] = z[k] > 0 ? z[k] : 0;
            o += h[k] * w2[k];
        }
        double r = o - d->y[s];
        loss += r * r;
        if (grad == NULL)
            continue;
        double go = 2 * r / (double)d->n;
        grad[NUMEL - 1] += go;
        for (guint k = 0; k < HID; k++) {
            grad[D_IN * HID + HID + k] += go * h[k];
            double gz = z[k] > 0 ? go * w2[k] : 0;
            grad[D_IN * HID + k] += gz;
            for (guint j = 0; j < D_IN; j++)
                grad[j * HID + k] += gz * x[j];
        }
    }
    return loss / (double)d->n;
}

static void
ref_clear(RefData *d)
{
    g_free(d->x);
    g_free(d->y);
}

/* --- allreduce training = single_train ------------------------------------------------------ */

typedef struct {
    guint64 seed;
    gint64 steps, cap;
    gboolean via_rpc;
} ExactCase;

static void
body_exact(RpcTestCtx *ctx, gint rank)
{
    const ExactCase *c = ctx->data;
    RpcAgent *a = rt_agent(ctx, rank);
    RpcValue *(*f)(RpcAgent *, const char *, RpcValue *, RpcValue *, GError **) =
        c->via_rpc ? call_rpc : call;
    GError *err = NULL;
    RpcValue *want =
        f(a, "single_train",
          rt_args(rt_int(c->steps), rt_int((gint64)c->seed), rt_int(c->cap), NULL), NULL, &err);
    g_assert_no_error(err);
    static const char *const hooks[] = {"allreduce", "none"};
    for (guint h = 0; h < G_N_ELEMENTS(hooks); h++) {
        RpcValue *got =
            f(a, "ddp_train", train_args(hooks[h], c->steps, (gint64)c->seed, c->cap), NULL, &err);
        g_assert_no_error(err);
        assert_equal_weights(got, want, hooks[h]);
        rpc_value_unref(got);
    }
    rpc_value_unref(want);
}

static void
run_exact(guint n_workers, guint64 world_seed, SimDist latency, const ExactCase *c)
{
    RpcTestOptions o = {.n_workers = n_workers, .seed = world_seed};
    RpcTestCtx *ctx = rt_new(&o);
    set_latency(ctx, latency);
    ctx->data = (gpointer)c;
    rt_on(ctx, -1, body_exact);
    rt_run(ctx);
    rt_free(ctx);
}

/* Data seeds × bucket caps (one bucket; [b1, w2, b2] + [w1]; one per
 * parameter) over 4 workers and random latency, through RPC. */
static void
test_exact_seeds_and_caps(void)
{
    static const gint64 caps[] = {0, 512, 8};
    guint seeds = under_valgrind() ? 2 : 6;
    for (guint s = 0; s < seeds; s++)
        for (guint k = 0; k < G_N_ELEMENTS(caps); k++) {
            ExactCase c = {.seed = 3 * s + 1, .steps = 4, .cap = caps[k], .via_rpc = TRUE};
            run_exact(4, 100 + s * 7 + k, (SimDist){SIM_DIST_UNIFORM, 50 * RPC_US, 500 * RPC_US, 0},
                      &c);
        }
}

/* World sizes whose ring cuts 161 (and 1, 16, 128) elements unevenly, and a
 * world of one; called directly from the program threads. */
static void
test_exact_world_sizes(void)
{
    static const guint sizes[] = {1, 2, 3, 5};
    for (guint i = 0; i < G_N_ELEMENTS(sizes); i++) {
        ExactCase c = {.seed = 40 + i, .steps = 3, .cap = i % 2 ? 8 : 0};
        run_exact(sizes[i], 7, sim_dist_constant(100 * RPC_US), &c);
    }
}

/* single_train is DDP's arithmetic; plain gradient descent on the whole
 * data set with hand-written backpropagation agrees to rounding, and
 * ddp_loss is that loss. */
static void
body_reference(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = rt_agent(ctx, 0);
    const guint worlds[] = {4, 1, 3};
    for (guint i = 0; i < G_N_ELEMENTS(worlds); i++) {
        guint64 seed = 5 + i;
        RefData d;
        ref_data(seed, worlds[i], &d);
        double l0 = ref_loss_grad(&d, d.w, NULL);
        RpcValue *wsz = rt_kwargs("world_size", rt_int(worlds[i]), NULL);
        RpcValue *lv = must_call(a, "ddp_loss", rt_args(rt_int((gint64)seed), NULL), wsz);
        g_assert_cmpfloat(fabs(rpc_value_get_double(lv) - l0), <=, 1e-12 * l0);
        rpc_value_unref(lv);
        double grad[NUMEL];
        for (guint step = 0; step < 10; step++) {
            ref_loss_grad(&d, d.w, grad);
            for (guint e = 0; e < NUMEL; e++)
                d.w[e] -= 0.05 * grad[e];
        }
        RpcValue *got = must_call(
            a, "single_train", rt_args(rt_int(10), rt_int((gint64)seed), NULL),
            rt_kwargs("world_size", rt_int(worlds[i]), "lr", rpc_value_new_double(0.05), NULL));
        for (guint e = 0; e < NUMEL; e++)
            g_assert_cmpfloat(fabs(rpc_tensor_get(rpc_value_get_tensor(got), e) - d.w[e]), <=,
                              1e-12 * (1 + fabs(d.w[e])));
        /* ddp_loss at given weights */
        lv = must_call(a, "ddp_loss", rt_args(rt_int((gint64)seed), rpc_value_ref(got), NULL),
                       rt_kwargs("world_size", rt_int(worlds[i]), NULL));
        double want = ref_loss_grad(&d, d.w, NULL);
        g_assert_cmpfloat(fabs(rpc_value_get_double(lv) - want), <=, 1e-12 * want);
        g_assert_cmpfloat(want, <, l0);
        rpc_value_unref(lv);
        rpc_value_unref(got);
        ref_clear(&d);
    }
    /* zero steps: the initial weights; ddp_loss(seed) is their loss */
    RpcValue *w0 = must_call(a, "single_train", rt_args(rt_int(0), rt_int(9), NULL), NULL);
    RpcValue *l1 = must_call(a, "ddp_loss", rt_args(rt_int(9), NULL), NULL);
    RpcValue *l2 = must_call(a, "ddp_loss", rt_args(rt_int(9), w0, NULL), NULL);
    g_assert_cmpfloat(rpc_value_get_double(l1), ==, rpc_value_get_double(l2));
    rpc_value_unref(l1);
    rpc_value_unref(l2);
}

static void
test_single_train_reference(void)
{
    rt_run_world(NULL, -1, body_reference, NULL);
}

/* --- the other hooks -------------------------------------------------------------------------- */

static void
body_hooks(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    guint seeds = under_valgrind() ? 1 : 4;
    for (guint s = 0; s < seeds; s++) {
        gint64 seed = 7 + 11 * s;
        RpcValue *ref = must_call(a, "single_train", rt_args(rt_int(20), rt_int(seed), NULL), NULL);
        /* noop: local training on this rank's shard; rank 0's is shard 0 */
        RpcValue *z = must_call(a, "ddp_train", train_args("noop", 20, seed, 0), NULL);
        RpcValue *local = must_call(a, "single_train", rt_args(rt_int(20), rt_int(seed), NULL),
                                    rt_kwargs("world_size", rt_int(1), NULL));
        if (rank == 0)
            assert_equal_weights(z, local, "noop");
        else
            g_assert_false(rpc_value_equal(z, local));
        g_assert_cmpfloat(max_diff(z, ref), >, 0.01);
        rpc_value_unref(local);
        rpc_value_unref(z);
        /* compression: lossy, within the documented bounds, = the wrappers */
        static const struct {
            const char *hook, *wrapper;
            double tol;
        } lowp[] = {{"fp16", "fp16_wrapper", 1.5e-3}, {"bf16", "bf16_wrapper", 1.2e-2}};
        for (guint i = 0; i < G_N_ELEMENTS(lowp); i++) {
            RpcValue *h = must_call(a, "ddp_train", train_args(lowp[i].hook, 20, seed, 0), NULL);
            RpcValue *w = must_call(a, "ddp_train", train_args(lowp[i].wrapper, 20, seed, 0), NULL);
            assert_equal_weights(w, h, lowp[i].wrapper);
            double d = max_diff(h, ref);
            g_assert_cmpfloat(d, >, 0);
            g_assert_cmpfloat(d, <, lowp[i].tol);
            rpc_value_unref(h);
            rpc_value_unref(w);
        }
        /* PowerSGD: exact while warming up, close afterwards */
        RpcValue *ref2 = must_call(a, "single_train", rt_args(rt_int(2), rt_int(seed), NULL), NULL);
        RpcValue *p2 = must_call(a, "ddp_train", train_args("powersgd", 2, seed, 0), NULL);
        assert_equal_weights(p2, ref2, "powersgd warm-up");
        RpcValue *p = must_call(a, "ddp_train", train_args("powersgd", 20, seed, 0), NULL);
        double d = max_diff(p, ref);
        g_assert_cmpfloat(d, >, 0);
        g_assert_cmpfloat(d, <, 0.06);
        rpc_value_unref(p);
        rpc_value_unref(p2);
        rpc_value_unref(ref2);
        rpc_value_unref(ref);
    }
}

static void
test_other_hooks(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    set_latency(ctx, sim_dist_constant(50 * RPC_US));
    rt_on(ctx, -1, body_hooks);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- errors ------------------------------------------------------------------------------------
 */

static void
crash_worker(gpointer data)
{
    RpcTestCtx *ctx = data;
    sim_world_crash(ctx->w, GPOINTER_TO_UINT(ctx->data));
}

/* Latency 1 ms, unlimited bandwidth: the self-call reaches ddp_train at
 * 1 ms; every member hears from every other at 2 ms and starts allreduce
 * #1; worker2 crashes at 3.5 ms, in its second ring step; nobody can
 * finish allreduce #1, which fails 1 s after it started, at 1.002 s on
 * every member; the error takes 1 ms back to the caller. */
static void
body_crash(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    if (rank == 0)
        rpc_executor_call_after(rt_executor(ctx, 0), 3500 * RPC_US, crash_worker, ctx, NULL);
    GError *err = NULL;
    RpcValue *r = call_rpc(a, "ddp_train", train_args("allreduce", 5, 7, 0),
                           rt_kwargs("pg_timeout", rpc_value_new_double(1.0), NULL), &err);
    g_assert_null(r);
    if (rank == 2) {
        g_clear_error(&err);
        return;
    }
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_nonnull(
        strstr(err->message, "Timed out after 1000 ms waiting for allreduce #1 step "));
    g_clear_error(&err);
    g_assert_cmpint(rt_now(ctx), ==, RPC_S + 3 * RPC_MS);
}

static void
test_member_crash(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NON_GRACEFUL};
    RpcTestCtx *ctx = rt_new(&o);
    set_latency(ctx, sim_dist_constant(RPC_MS));
    ctx->data = GUINT_TO_POINTER(2);
    rt_on(ctx, -1, body_crash);
    rt_run(ctx);
    g_assert_false(sim_world_is_alive(ctx->w, 2));
    rt_free(ctx);
}

/* worker0 is dead before anyone calls: the others wait for it at the
 * rendezvous for the group's timeout (their joins to it bounce), then fail
 * naming it — exactly 100 ms after their call. */
static void
body_dead_member(RpcTestCtx *ctx, gint rank)
{
    if (rank == 0)
        return;
    rt_sleep(ctx, rank, 10 * RPC_MS);
    GError *err = NULL;
    g_assert_null(call(rt_agent(ctx, rank), "ddp_train", train_args("allreduce", 1, 7, 0),
                       rt_kwargs("pg_timeout", rpc_value_new_double(0.1), NULL), &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==,
                    "Timed out after 100 ms waiting for worker0 (rank 0) to join process group "
                    "1000 (3 of 4 members arrived)");
    g_clear_error(&err);
    g_assert_cmpint(rt_now(ctx), ==, 110 * RPC_MS);
}

static void
test_dead_member(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NON_GRACEFUL};
    RpcTestCtx *ctx = rt_new(&o);
    set_latency(ctx, sim_dist_constant(RPC_MS));
    ctx->data = GUINT_TO_POINTER(0);
    rpc_executor_call_after(rt_executor(ctx, 0), RPC_MS, crash_worker, ctx, NULL);
    rt_on(ctx, -1, body_dead_member);
    rt_run(ctx);
    rt_free(ctx);
}

/* Different arguments on one member: everybody fails; PowerSGD's check
 * fails everybody; a group id taken by someone else fails that member
 * before it meets the others (so the others time out meeting it). */
static void
body_together(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    GError *err = NULL;
    g_assert_null(call(a, "ddp_train", train_args("allreduce", 2, rank == 3 ? 8 : 7, 0),
                       rt_kwargs("lr", rpc_value_new_double(0.1), NULL), &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    char *want = rank == 3 ? g_strdup("ddp_train(): every member must be called with the same "
                                      "arguments, but worker0 passed seed=7 where worker3 passed "
                                      "seed=8")
                           : g_strdup_printf("ddp_train(): every member must be called with the "
                                             "same arguments, but worker3 passed seed=8 where "
                                             "worker%d passed seed=7",
                                             rank);
    g_assert_cmpstr(err->message, ==, want);
    g_free(want);
    g_clear_error(&err);

    g_assert_null(call(a, "ddp_train", train_args("powersgd", 2, 7, 0),
                       rt_kwargs("start_powersgd_iter", rt_int(1), NULL), &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
    g_assert_cmpstr(err->message, ==, RPC_DDP_MSG_POWERSGD_START_ITER);
    g_clear_error(&err);

    /* the next call still trains together: group 1002 */
    RpcValue *w = must_call(a, "ddp_train", train_args("allreduce", 2, 7, 0), NULL);
    RpcValue *ref = must_call(a, "single_train", rt_args(rt_int(2), rt_int(7), NULL), NULL);
    assert_equal_weights(w, ref, "after errors");
    rpc_value_unref(w);
    rpc_value_unref(ref);

    /* rank 1 holds group 1003 already: it fails at once, the others wait
     * for it at the rendezvous for the group's timeout */
    RpcValue *timeout = rt_kwargs("pg_timeout", rpc_value_new_double(0.05), NULL);
    RpcTime t0 = rt_now(ctx);
    if (rank == 1) {
        RpcProcessGroup *pg = rpc_pg_new(a, RPC_DDP_TRAIN_GROUP_BASE + 3, NULL, 0, &err);
        g_assert_no_error(err);
        g_assert_null(call(a, "ddp_train", train_args("allreduce", 2, 7, 0), timeout, &err));
        g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
        g_assert_cmpstr(err->message, ==, "Process group 1003 already exists on worker1");
        g_clear_error(&err);
        rpc_pg_free(pg);
        g_assert_cmpint(rt_now(ctx), ==, t0);
    } else {
        g_assert_null(call(a, "ddp_train", train_args("allreduce", 2, 7, 0), timeout, &err));
        g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
        g_assert_cmpstr(err->message, ==,
                        "Timed out after 50 ms waiting for worker1 (rank 1) to join process "
                        "group 1003 (3 of 4 members arrived)");
        g_assert_cmpint(rt_now(ctx), ==, t0 + 50 * RPC_MS);
        g_clear_error(&err);
    }
}

static void
test_members_fail_together(void)
{
    RpcTestOptions o = {.rpc_timeout = 100 * RPC_MS};
    RpcTestCtx *ctx = rt_new(&o);
    set_latency(ctx, sim_dist_constant(RPC_MS));
    rt_on(ctx, -1, body_together);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- argument checks -------------------------------------------------------------------------- */

typedef struct {
    const char *fn;
    RpcValue *args, *kwargs; /* taken */
    RpcErrorKind kind;
    const char *message;
} BadCall;

static void
body_arguments(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = rt_agent(ctx, 0);
    BadCall cases[] = {
        {"ddp_train", train_args("adam", 1, 7, 0), NULL, RPC_ERROR_VALUE,
         "ddp_train(): unknown hook 'adam' (expected one of none, allreduce, fp16, bf16, "
         "fp16_wrapper, bf16_wrapper, powersgd, noop)"},
        {"ddp_train", rt_args(rt_int(1), rt_int(1), rt_int(7), rt_int(0), NULL), NULL,
         RPC_ERROR_TYPE, "ddp_train(): argument 'hook' must be str, not int"},
        {"ddp_train", train_args("allreduce", -1, 7, 0), NULL, RPC_ERROR_VALUE,
         "ddp_train(): steps must be between 0 and 100000, got -1"},
        {"ddp_train", train_args("allreduce", 100001, 7, 0), NULL, RPC_ERROR_VALUE,
         "ddp_train(): steps must be between 0 and 100000, got 100001"},
        {"ddp_train",
         rt_args(rt_str("none"), rpc_value_new_double(1.5), rt_int(7), rt_int(0), NULL), NULL,
         RPC_ERROR_TYPE, "ddp_train(): argument 'steps' must be int, not float"},
        {"ddp_train", train_args("allreduce", 1, -7, 0), NULL, RPC_ERROR_VALUE,
         "ddp_train(): seed must be at least 0, got -7"},
        {"ddp_train", train_args("allreduce", 1, 7, -1), NULL, RPC_ERROR_VALUE,
         "ddp_train(): bucket_cap_bytes must be at least 0, got -1"},
        {"ddp_train", rt_args(rt_str("none"), rt_int(1), rt_int(7), NULL), NULL, RPC_ERROR_TYPE,
         "ddp_train() missing 1 required positional argument: 'bucket_cap_bytes'"},
        {"ddp_train", train_args("allreduce", 1, 7, 0),
         rt_kwargs("lr", rpc_value_new_double(-0.1), NULL), RPC_ERROR_VALUE,
         "Invalid learning rate: -0.1"},
        {"ddp_train", train_args("allreduce", 1, 7, 0),
         rt_kwargs("lr", rpc_value_new_double(INFINITY), NULL), RPC_ERROR_VALUE,
         "Invalid learning rate: inf"},
        {"ddp_train", train_args("allreduce", 1, 7, 0),
         rt_kwargs("lr", rpc_value_new_double(NAN), NULL), RPC_ERROR_VALUE,
         "Invalid learning rate: nan"},
        {"ddp_train", train_args("allreduce", 1, 7, 0), rt_kwargs("lr", rt_str("fast"), NULL),
         RPC_ERROR_TYPE, "ddp_train(): argument 'lr' must be float, not str"},
        {"ddp_train", train_args("allreduce", 1, 7, 0), rt_kwargs("pg_timeout", rt_int(0), NULL),
         RPC_ERROR_VALUE, "ddp_train(): pg_timeout must be a positive number of seconds, got 0"},
        {"ddp_train", train_args("allreduce", 1, 7, 0),
         rt_kwargs("pg_timeout", rpc_value_new_double(1e300), NULL), RPC_ERROR_VALUE,
         "ddp_train(): pg_timeout must be a positive number of seconds, got 1e+300"},
        {"ddp_train", train_args("allreduce", 1, 7, 0), rt_kwargs("pg_timeout", rt_str("1s"), NULL),
         RPC_ERROR_TYPE, "ddp_train(): argument 'pg_timeout' must be float, not str"},
        {"ddp_train", train_args("powersgd", 1, 7, 0), rt_kwargs("powersgd_rank", rt_int(0), NULL),
         RPC_ERROR_VALUE, "ddp_train(): powersgd_rank must be between 1 and 2147483647, got 0"},
        {"ddp_train", train_args("allreduce", 1, 7, 0), rt_kwargs("momentum", rt_int(0), NULL),
         RPC_ERROR_TYPE, "ddp_train() got an unexpected keyword argument 'momentum'"},
        {"single_train", rt_args(rt_int(1), NULL), NULL, RPC_ERROR_TYPE,
         "single_train() missing 1 required positional argument: 'seed'"},
        {"single_train", rt_args(rt_int(1), rt_int(7), NULL),
         rt_kwargs("world_size", rt_int(0), NULL), RPC_ERROR_VALUE,
         "single_train(): world_size must be between 1 and 4096, got 0"},
        {"single_train", rt_args(rt_int(1), rt_int(7), NULL),
         rt_kwargs("world_size", rt_str("4"), NULL), RPC_ERROR_TYPE,
         "single_train(): argument 'world_size' must be int, not str"},
        {"single_train", rt_args(rt_int(1), rt_int(7), rt_int(-5), NULL), NULL, RPC_ERROR_VALUE,
         "single_train(): bucket_cap_bytes must be at least 0, got -5"},
        {"single_train", rt_args(rt_int(1), rt_int(7), NULL),
         rt_kwargs("lr", rpc_value_new_double(-1), NULL), RPC_ERROR_VALUE,
         "Invalid learning rate: -1"},
        {"ddp_loss", rt_args(rt_str("7"), NULL), NULL, RPC_ERROR_TYPE,
         "ddp_loss(): argument 'seed' must be int, not str"},
        {"ddp_loss", rt_args(rt_int(7), rt_ones1(3), NULL), NULL, RPC_ERROR_VALUE,
         "ddp_loss(): weights must have 161 elements, got 3"},
        {"ddp_loss", rt_args(rt_int(7), rt_int(3), NULL), NULL, RPC_ERROR_TYPE,
         "ddp_loss(): argument 'weights' must be Tensor, not int"},
        {"ddp_loss", rt_args(rt_int(7), NULL), rt_kwargs("world_size", rt_int(5000), NULL),
         RPC_ERROR_VALUE, "ddp_loss(): world_size must be between 1 and 4096, got 5000"},
        {"max_abs_diff", rt_args(rt_ones(2, 2), rt_ones1(3), NULL), NULL, RPC_ERROR_VALUE,
         "max_abs_diff(): shapes [2, 2] and [3] differ"},
        {"max_abs_diff", rt_args(rt_int(1), rt_ones1(3), NULL), NULL, RPC_ERROR_TYPE,
         "max_abs_diff(): argument 'a' must be Tensor, not int"},
        {"max_abs_diff", rt_args(rt_ones1(3), rt_str("x"), NULL), NULL, RPC_ERROR_TYPE,
         "max_abs_diff(): argument 'b' must be Tensor, not str"},
        {"max_abs_diff", rt_args(rt_ones1(3), NULL), NULL, RPC_ERROR_TYPE,
         "max_abs_diff() missing 1 required positional argument: 'b'"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        RpcValue *r = call(a, cases[i].fn, cases[i].args, cases[i].kwargs, &err);
        g_assert_null(r);
        if (err == NULL || err->domain != RPC_ERROR || err->code != (gint)cases[i].kind ||
            strcmp(err->message, cases[i].message) != 0)
            g_error("case %u: want %s '%s', got %s", i, rpc_error_kind_name(cases[i].kind),
                    cases[i].message, err ? err->message : "no error");
        g_clear_error(&err);
    }
    /* nothing was created: a valid call now uses group 1000 … on a world
     * whose other members never call — so only check a zero-step world of
     * one below (test_one_worker) */
    /* through RPC, the kind and text travel back */
    GError *err = NULL;
    g_assert_null(call_rpc(a, "ddp_train", train_args("sgd", 1, 7, 0), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_VALUE, "ddp_train(): unknown hook 'sgd'");
}

static void
test_arguments(void)
{
    rt_run_world(NULL, -1, body_arguments, NULL);
}

/* max_abs_diff's values: the largest difference, NaN through, empty 0. */
static void
body_max_abs_diff(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    double x[3] = {1, -2, 3}, y[3] = {1.5, 2, 3};
    gint64 three = 3, zero = 0;
    RpcValue *r = must_call(
        a, "max_abs_diff",
        rt_args(rpc_value_new_tensor(rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &three, x)),
                rpc_value_new_tensor(rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT32, 1, &three, y)),
                NULL),
        NULL);
    g_assert_cmpfloat(rpc_value_get_double(r), ==, 4.0);
    rpc_value_unref(r);
    y[0] = NAN;
    r = must_call(
        a, "max_abs_diff",
        rt_args(rpc_value_new_tensor(rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &three, x)),
                rpc_value_new_tensor(rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &three, y)),
                NULL),
        NULL);
    g_assert_true(isnan(rpc_value_get_double(r)));
    rpc_value_unref(r);
    r = must_call(a, "max_abs_diff",
                  rt_args(rpc_value_new_tensor(rpc_tensor_new_zeros(RPC_DTYPE_FLOAT64, 1, &zero)),
                          rpc_value_new_tensor(rpc_tensor_new_zeros(RPC_DTYPE_FLOAT64, 1, &zero)),
                          NULL),
                  NULL);
    g_assert_cmpfloat(rpc_value_get_double(r), ==, 0.0);
    rpc_value_unref(r);
}

static void
test_max_abs_diff(void)
{
    rt_run_world(NULL, 0, body_max_abs_diff, NULL);
}

/* A world of one: zero steps return the initial weights; the trace shows
 * one ddp.step per step; registration adds the four functions. */
static void
body_one_worker(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, 0);
    RpcValue *w0 = must_call(a, "ddp_train", train_args("allreduce", 0, 3, 0), NULL);
    RpcValue *i0 = must_call(a, "single_train", rt_args(rt_int(0), rt_int(3), NULL), NULL);
    assert_equal_weights(w0, i0, "zero steps");
    rpc_value_unref(w0);
    rpc_value_unref(i0);
    /* the rendezvous' own function: malformed arrivals are refused; a late
     * one (group 1000 is done) and a duplicate are dropped */
    RpcValue *bad[] = {
        rt_args(rt_int(1000), rt_int(0), NULL),
        rt_args(rt_str("1000"), rt_int(0), rpc_value_new_dict(), NULL),
        rt_args(rt_int(1000), rt_int(1), rpc_value_new_dict(), NULL),
        rt_args(rt_int(1000), rt_int(-1), rpc_value_new_dict(), NULL),
        rt_args(rt_int(1000), rt_int(0), rt_int(3), NULL),
    };
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        GError *err = NULL;
        g_assert_null(call(a, "_ddp_train_join", bad[i], NULL, &err));
        g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
        g_assert_cmpstr(err->message, ==, "malformed ddp_train rendezvous");
        g_clear_error(&err);
    }
    for (guint i = 0; i < 3; i++) {
        RpcValue *r = must_call(a, "_ddp_train_join",
                                rt_args(rt_int(i == 0 ? 1000 : 5000), rt_int(0),
                                        rt_kwargs("seed", rt_int(i), NULL), NULL),
                                NULL);
        g_assert_true(rpc_value_is_none(r));
        rpc_value_unref(r);
    }
    guint before = rt_trace_count(ctx, "ddp.step");
    RpcValue *w = must_call(a, "ddp_train", train_args("fp16", 3, 3, 0), NULL);
    g_assert_cmpuint(rt_trace_count(ctx, "ddp.step") - before, ==, 3);
    rpc_value_unref(w);
}

static void
test_one_worker(void)
{
    RpcTestOptions o = {.n_workers = 1};
    rt_run_world(&o, 0, body_one_worker, NULL);
    RpcRegistry *reg = rpc_registry_new();
    rpc_ddp_train_register(reg);
    GPtrArray *defs = rpc_registry_list(reg);
    /* the four functions and the rendezvous' internal one */
    g_assert_cmpuint(defs->len, ==, 5);
    static const char *const names[] = {"_ddp_train_join", "ddp_loss", "ddp_train", "max_abs_diff",
                                        "single_train"};
    for (guint i = 0; i < 5; i++) {
        const RpcFunctionDef *def = g_ptr_array_index(defs, i);
        g_assert_cmpstr(def->name, ==, names[i]);
        g_assert_cmpint(def->flags, ==, i == 0 ? RPC_FUNC_INTERNAL : 0);
    }
    g_ptr_array_unref(defs);
    rpc_registry_free(reg);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/ddp-train/allreduce/equals_single_train", test_exact_seeds_and_caps);
    g_test_add_func("/ddp-train/allreduce/world_sizes", test_exact_world_sizes);
    g_test_add_func("/ddp-train/single_train/vs_plain_descent", test_single_train_reference);
    g_test_add_func("/ddp-train/hooks/noop_lowp_powersgd", test_other_hooks);
    g_test_add_func("/ddp-train/errors/member_crash_times_out", test_member_crash);
    g_test_add_func("/ddp-train/errors/dead_member", test_dead_member);
    g_test_add_func("/ddp-train/errors/members_fail_together", test_members_fail_together);
    g_test_add_func("/ddp-train/errors/arguments", test_arguments);
    g_test_add_func("/ddp-train/max_abs_diff", test_max_abs_diff);
    g_test_add_func("/ddp-train/one_worker_and_registry", test_one_worker);
    return g_test_run();
}
