/* test-collective.c — process groups (core/collective.h) on simulated
 * worlds: every collective and reduce op with exact float64 results, the
 * ring's virtual time against its analytic model, concurrent collectives,
 * crash and partition timeouts, determinism, and the fp16/bf16 conversions.
 *
 * Expected reductions are computed here by the order collective.h documents
 * (chunk c is reduced starting at member c+1), each ⊕ rounded to the dtype,
 * and compared bit for bit on every member.
 *
 * Timing model (the network's, sim/net.h): a message of S bytes on a free
 * link of bandwidth B and constant latency L arrives ceil(S·1e9/B) ns + L
 * after it is written.  Ring allreduce has 2(n-1) dependent steps, each one
 * request of S = rpc_pg_step_message_bytes(dtype, NATIVE, N/n) bytes, so it
 * ends at t0 + 2(n-1)·(ceil(S·1e9/B) + L) on every member, exactly.  The
 * acknowledgements travel on the reverse links (for n = 2 they follow the
 * data on the same link and are transmitted within the latency window).
 *
 * RPCSIM_UNDER_VALGRIND=1 shrinks the exhaustive conversion loops.
 */
#include <math.h>
#include <string.h>

#include "core/collective.h"
#include "sim/net.h"
#include "sim/rng.h"
#include "sim/trace.h"
#include "tests/lib/rpcworld.h"

#define GROUP 1

static gboolean
under_valgrind(void)
{
    return g_getenv("RPCSIM_UNDER_VALGRIND") != NULL;
}

/* --- helpers ----------------------------------------------------------------- */

static RpcValue *
wait_ok(RpcFuture *f)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_no_error(err);
    rpc_future_unref(f);
    return v;
}

static void
wait_error(RpcFuture *f, const char *exact_or_prefix, gboolean exact)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    g_assert_nonnull(err);
    g_assert_cmpint(err->code, ==, RPC_ERROR_RUNTIME);
    if (exact)
        g_assert_cmpstr(err->message, ==, exact_or_prefix);
    else if (strstr(err->message, exact_or_prefix) == NULL)
        g_error("error \"%s\" lacks \"%s\"", err->message, exact_or_prefix);
    g_error_free(err);
    rpc_future_unref(f);
}

static RpcProcessGroup *
pg_all(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    RpcProcessGroup *pg = rpc_pg_new(rt_agent(ctx, rank), GROUP, NULL, 0, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(rpc_pg_rank(pg), ==, (guint)rank);
    return pg;
}

/* Rank r's test data: values of very different magnitudes and signs, so
 * that the order of additions changes the rounded result. */
static double
datum(guint64 seed, guint rank, gint64 i)
{
    SimRng r;
    sim_rng_seed(&r, seed * 1000003u + rank * 7919u + (guint64)i);
    double m = sim_rng_normal(&r);
    return ldexp(m, (gint)sim_rng_range(&r, -30, 30));
}

static RpcTensor *
data_tensor(RpcDType dt, guint64 seed, guint rank, gint64 numel)
{
    double *v = g_new(double, MAX(numel, 1));
    for (gint64 i = 0; i < numel; i++)
        v[i] = datum(seed, rank, i);
    RpcTensor *t = rpc_tensor_new_from_doubles(dt, 1, &numel, v);
    g_free(v);
    return t;
}

static double
ref_combine(RpcReduceOp op, double left, double mine)
{
    switch (op) {
    case RPC_REDUCE_MIN:
        return isnan(left) || isnan(mine) ? NAN : fmin(left, mine);
    case RPC_REDUCE_MAX:
        return isnan(left) || isnan(mine) ? NAN : fmax(left, mine);
    default:
        return left + mine;
    }
}

static double
round_dt(RpcDType dt, double x)
{
    return dt == RPC_DTYPE_FLOAT32 ? (double)(float)x : x;
}

/* The documented ring order: element of chunk c = ((x[c+1] ⊕ x[c+2]) ⊕ …) ⊕ x[c]. */
static double
ref_reduce(RpcReduceOp op, RpcDType dt, const double *x, guint n, guint chunk)
{
    double acc = x[(chunk + 1) % n];
    for (guint k = 2; k <= n; k++)
        acc = round_dt(dt, ref_combine(op, acc, x[(chunk + k) % n]));
    if (op == RPC_REDUCE_AVG)
        acc = round_dt(dt, acc / n);
    return acc;
}

/* The expected allreduce of data_tensor(dt, seed, r, numel) over n ranks. */
static RpcTensor *
ref_allreduce(RpcReduceOp op, RpcDType dt, guint64 seed, guint n, gint64 numel)
{
    RpcTensor **in = g_new(RpcTensor *, n);
    for (guint r = 0; r < n; r++)
        in[r] = data_tensor(dt, seed, r, numel);
    double *out = g_new(double, MAX(numel, 1));
    double *x = g_new(double, n);
    for (guint c = 0; c < n; c++) {
        gint64 off, len;
        rpc_pg_chunk_bounds(numel, n, c, &off, &len);
        for (gint64 i = off; i < off + len; i++) {
            for (guint r = 0; r < n; r++)
                x[r] = rpc_tensor_get(in[r], i);
            out[i] = ref_reduce(op, dt, x, n, c);
        }
    }
    RpcTensor *t = rpc_tensor_new_from_doubles(dt, 1, &numel, out);
    for (guint r = 0; r < n; r++)
        rpc_tensor_unref(in[r]);
    g_free(in);
    g_free(out);
    g_free(x);
    return t;
}

static void
assert_tensor_bits(const RpcTensor *got, const RpcTensor *want)
{
    g_assert_cmpint(rpc_tensor_dtype(got), ==, rpc_tensor_dtype(want));
    g_assert_true(rpc_tensor_same_shape(got, want));
    g_assert_cmpmem(rpc_tensor_data(got), rpc_tensor_nbytes(got), rpc_tensor_data(want),
                    rpc_tensor_nbytes(want));
}

/* --- chunk geometry ------------------------------------------------------------- */

static void
test_chunk_bounds(void)
{
    static const gint64 sizes[] = {0, 1, 3, 4, 5, 10, 17, 1000};
    for (guint n = 1; n <= 9; n++)
        for (guint s = 0; s < G_N_ELEMENTS(sizes); s++) {
            gint64 next = 0, lo = G_MAXINT64, hi = 0;
            for (guint c = 0; c < n; c++) {
                gint64 off, len;
                rpc_pg_chunk_bounds(sizes[s], n, c, &off, &len);
                g_assert_cmpint(off, ==, next);
                next = off + len;
                lo = MIN(lo, len);
                hi = MAX(hi, len);
            }
            g_assert_cmpint(next, ==, sizes[s]);
            g_assert_cmpint(hi - lo, <=, 1);
        }
}

/* --- allreduce: every op, exact -------------------------------------------------- */

typedef struct {
    RpcReduceOp op;
    RpcDType dt;
    gint64 numel;
    guint64 seed;
} ReduceCase;

static void
body_allreduce_cases(RpcTestCtx *ctx, gint rank)
{
    static const gint64 sizes[] = {0, 1, 3, 4, 10, 17, 64};
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    guint64 seed = 11;
    for (RpcReduceOp op = RPC_REDUCE_SUM; op <= RPC_REDUCE_MAX; op++)
        for (guint d = 0; d < 2; d++)
            for (guint s = 0; s < G_N_ELEMENTS(sizes); s++, seed++) {
                RpcDType dt = d ? RPC_DTYPE_FLOAT64 : RPC_DTYPE_FLOAT32;
                RpcTensor *t = data_tensor(dt, seed, (guint)rank, sizes[s]);
                RpcValue *v = wait_ok(rpc_pg_allreduce(pg, t, op, RPC_TIMEOUT_UNSET));
                RpcTensor *want = ref_allreduce(op, dt, seed, ctx->n, sizes[s]);
                assert_tensor_bits(rpc_value_get_tensor(v), want);
                rpc_tensor_unref(want);
                rpc_tensor_unref(t);
                rpc_value_unref(v);
            }
    g_assert_cmpint(rpc_pg_seq(pg), ==, 4 * 2 * G_N_ELEMENTS(sizes));
    rpc_pg_free(pg);
}

static void
test_allreduce_ops(void)
{
    for (guint n = 1; n <= 5; n++) {
        RpcTestOptions o = {.n_workers = n};
        rt_run_world(&o, -1, body_allreduce_cases, NULL);
    }
}

/* The reduction order matters: with these values a rank-order sum and the
 * ring's differ, and every member still gets the same bits. */
static void
body_order_matters(RpcTestCtx *ctx, gint rank)
{
    static const double vals[4] = {1e16, 1.0, -1e16, 1.0};
    RpcProcessGroup *pg = pg_all(ctx, rank);
    gint64 one = 1;
    RpcTensor *t = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &one, &vals[rank]);
    RpcValue *v = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET));
    /* one element: chunk 0, summed from member 1: ((1 + -1e16) + 1) + 1e16 */
    double got = rpc_tensor_get(rpc_value_get_tensor(v), 0);
    g_assert_cmpfloat(got, ==, ((1.0 + -1e16) + 1.0) + 1e16);
    g_assert_cmpfloat(got, !=, ((1e16 + 1.0) + -1e16) + 1.0);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_allreduce_order(void)
{
    rt_run_world(NULL, -1, body_order_matters, NULL);
}

static void
body_nan(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    double vals[3] = {rank == 2 ? NAN : rank, -(double)rank, rank == 0 ? INFINITY : 0.5};
    gint64 three = 3;
    RpcTensor *t = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &three, vals);
    RpcValue *mn = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_MIN, RPC_TIMEOUT_UNSET));
    RpcValue *mx = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_MAX, RPC_TIMEOUT_UNSET));
    RpcValue *sum = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET));
    g_assert_true(isnan(rpc_tensor_get(rpc_value_get_tensor(mn), 0)));
    g_assert_true(isnan(rpc_tensor_get(rpc_value_get_tensor(mx), 0)));
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(mn), 1), ==, -3.0);
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(mx), 1), ==, 0.0);
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(mn), 2), ==, 0.5);
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(mx), 2), ==, INFINITY);
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(sum), 2), ==, INFINITY);
    rpc_value_unref(mn);
    rpc_value_unref(mx);
    rpc_value_unref(sum);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_allreduce_nan(void)
{
    rt_run_world(NULL, -1, body_nan, NULL);
}

/* 2-d tensors keep their shape. */
static void
body_shape(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    RpcTensor *t = rpc_tensor_ones2(3, 5);
    RpcValue *v = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_AVG, RPC_TIMEOUT_UNSET));
    RpcTensor *want = rpc_tensor_ones2(3, 5);
    assert_tensor_bits(rpc_value_get_tensor(v), want);
    rpc_tensor_unref(want);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_allreduce_shape(void)
{
    rt_run_world(NULL, -1, body_shape, NULL);
}

/* --- broadcast, allgather, reduce_scatter, barrier --------------------------------- */

static void
body_other_collectives(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    guint n = ctx->n;
    rt_barrier(ctx, rank);
    for (guint root = 0; root < n; root++) {
        RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 5, (guint)rank, 7);
        RpcValue *v = wait_ok(rpc_pg_broadcast(pg, t, root, RPC_TIMEOUT_UNSET));
        RpcTensor *want = data_tensor(RPC_DTYPE_FLOAT64, 5, root, 7);
        assert_tensor_bits(rpc_value_get_tensor(v), want);
        rpc_tensor_unref(want);
        rpc_tensor_unref(t);
        rpc_value_unref(v);
    }
    /* allgather: different sizes and dtypes per member are fine */
    RpcTensor *mine =
        data_tensor(rank % 2 ? RPC_DTYPE_FLOAT32 : RPC_DTYPE_FLOAT64, 6, (guint)rank, rank + 1);
    RpcValue *list = wait_ok(rpc_pg_allgather(pg, mine, RPC_TIMEOUT_UNSET));
    g_assert_cmpuint(rpc_value_list_len(list), ==, n);
    for (guint r = 0; r < n; r++) {
        RpcTensor *want = data_tensor(r % 2 ? RPC_DTYPE_FLOAT32 : RPC_DTYPE_FLOAT64, 6, r, r + 1);
        assert_tensor_bits(rpc_value_get_tensor(rpc_value_list_get(list, r)), want);
        rpc_tensor_unref(want);
    }
    rpc_value_unref(list);
    rpc_tensor_unref(mine);
    /* reduce_scatter: this rank's chunk of the allreduce */
    for (RpcReduceOp op = RPC_REDUCE_SUM; op <= RPC_REDUCE_MAX; op++) {
        RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 8 + op, (guint)rank, 10);
        RpcValue *v = wait_ok(rpc_pg_reduce_scatter(pg, t, op, RPC_TIMEOUT_UNSET));
        RpcTensor *all = ref_allreduce(op, RPC_DTYPE_FLOAT64, 8 + op, n, 10);
        gint64 off, len;
        rpc_pg_chunk_bounds(10, n, (guint)rank, &off, &len);
        RpcTensor *got = rpc_value_get_tensor(v);
        g_assert_cmpuint(rpc_tensor_ndim(got), ==, 1);
        g_assert_cmpint(rpc_tensor_numel(got), ==, len);
        for (gint64 i = 0; i < len; i++)
            g_assert_cmpfloat(rpc_tensor_get(got, i), ==, rpc_tensor_get(all, off + i));
        rpc_tensor_unref(all);
        rpc_tensor_unref(t);
        rpc_value_unref(v);
    }
    /* barrier: nobody leaves before the last member (rank n-1, 5 ms late) enters */
    static SimTime last_entry;
    rt_barrier(ctx, rank);
    if (rank == (gint)n - 1) {
        rt_sleep(ctx, rank, 5 * RPC_MS);
        last_entry = rt_now(ctx);
    }
    RpcValue *none = wait_ok(rpc_pg_barrier(pg, RPC_TIMEOUT_UNSET));
    g_assert_true(rpc_value_is_none(none));
    g_assert_cmpint(rt_now(ctx), >=, last_entry);
    if (n > 1 && rank != (gint)n - 1)
        g_assert_cmpint(rt_now(ctx), >, last_entry);
    rpc_pg_free(pg);
}

static void
test_other_collectives(void)
{
    for (guint n = 1; n <= 5; n++) {
        RpcTestOptions o = {.n_workers = n};
        RpcTestCtx *ctx = rt_new(&o);
        SimLinkConfig cfg;
        sim_link_config_init(&cfg);
        cfg.latency = sim_dist_constant(100 * RPC_US);
        sim_net_set_default(sim_world_net(ctx->w), &cfg);
        rt_on(ctx, -1, body_other_collectives);
        rt_run(ctx);
        rt_free(ctx);
    }
}

/* --- virtual time against the analytic model ----------------------------------------- */

typedef struct {
    gint64 numel;
    RpcDType dt;
    RpcPrecision prec;
    SimTime latency;
    guint64 bandwidth;
    SimTime t0;
    SimTime expected;
} TimingCase;

static void
body_timing(RpcTestCtx *ctx, gint rank)
{
    TimingCase *tc = ctx->data;
    RpcProcessGroup *pg = pg_all(ctx, rank);
    RpcTensor *t = data_tensor(tc->dt, 3, (guint)rank, tc->numel);
    rt_barrier(ctx, rank);
    g_assert_cmpint(rt_now(ctx), ==, tc->t0);
    RpcValue *v =
        wait_ok(rpc_pg_allreduce_lowp(pg, t, RPC_REDUCE_SUM, tc->prec, RPC_TIMEOUT_UNSET));
    g_assert_cmpint(rt_now(ctx) - tc->t0, ==, tc->expected);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
run_timing(guint n, gint64 numel, RpcDType dt, RpcPrecision prec, SimTime latency,
           guint64 bandwidth)
{
    RpcTestOptions o = {.n_workers = n};
    RpcTestCtx *ctx = rt_new(&o);
    TimingCase tc = {numel, dt, prec, latency, bandwidth, rt_now(ctx), 0};
    gsize s = rpc_pg_step_message_bytes(dt, prec, numel / n);
    /* ceil(S·1e9/B), in integers */
    SimTime tx = (SimTime)(((guint64)s * 1000000000u + bandwidth - 1) / bandwidth);
    tc.expected = 2 * (SimTime)(n - 1) * (tx + latency);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(latency);
    cfg.bandwidth = bandwidth;
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    SimNetStats before, after;
    sim_net_get_stats(sim_world_net(ctx->w), &before);
    ctx->data = &tc;
    rt_on(ctx, -1, body_timing);
    rt_run(ctx);
    sim_net_get_stats(sim_world_net(ctx->w), &after);
    /* Every chunk message had exactly the size the model charged for. */
    g_assert_cmpuint(after.bytes_sent - before.bytes_sent, >=, (guint64)s * 2 * (n - 1) * n);
    rt_free(ctx);
}

static void
test_timing_model(void)
{
    static const guint ns[] = {2, 3, 4, 8};
    for (guint i = 0; i < G_N_ELEMENTS(ns); i++) {
        guint n = ns[i];
        run_timing(n, 1024 * n, RPC_DTYPE_FLOAT32, RPC_PRECISION_NATIVE, 10 * RPC_US, 1000000000u);
        run_timing(n, 3000 * n, RPC_DTYPE_FLOAT64, RPC_PRECISION_NATIVE, 250 * RPC_US, 12500000u);
        run_timing(n, 4096 * n, RPC_DTYPE_FLOAT32, RPC_PRECISION_FP16, 10 * RPC_US, 1000000000u);
        run_timing(n, 7 * n, RPC_DTYPE_FLOAT64, RPC_PRECISION_BF16, 1 * RPC_MS, 333333u);
    }
}

/* The message size the model uses is the real one: the low-precision
 * formats send 2 bytes per element, float32 4 and float64 8. */
static void
test_step_message_bytes(void)
{
    gsize base = rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT32, RPC_PRECISION_NATIVE, 0);
    g_assert_cmpuint(rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT32, RPC_PRECISION_NATIVE, 100), ==,
                     base + 400);
    g_assert_cmpuint(rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT64, RPC_PRECISION_NATIVE, 100), ==,
                     base + 800);
    gsize lbase = rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT32, RPC_PRECISION_FP16, 0);
    g_assert_cmpuint(rpc_pg_step_message_bytes(RPC_DTYPE_FLOAT64, RPC_PRECISION_BF16, 100), ==,
                     lbase + 200);
}

/* --- concurrency, late members, callbacks ------------------------------------------------ */

/* Three collectives issued back to back before any is waited for, on a
 * jittery, reordering network, with members starting at different times:
 * chunks arrive early, out of order, for collectives not yet started. */
static void
body_concurrent(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    rt_sleep(ctx, rank, (SimTime)rank * 3 * RPC_MS);
    RpcTensor *a = data_tensor(RPC_DTYPE_FLOAT64, 21, (guint)rank, 33);
    RpcTensor *b = data_tensor(RPC_DTYPE_FLOAT32, 22, (guint)rank, 5);
    RpcFuture *f1 = rpc_pg_allreduce(pg, a, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET);
    RpcFuture *f2 = rpc_pg_allgather(pg, b, RPC_TIMEOUT_UNSET);
    RpcFuture *f3 = rpc_pg_allreduce(pg, b, RPC_REDUCE_MAX, RPC_TIMEOUT_UNSET);
    RpcFuture *f4 = rpc_pg_barrier(pg, RPC_TIMEOUT_UNSET);
    /* wait in reverse order */
    RpcValue *v4 = wait_ok(f4);
    RpcValue *v3 = wait_ok(f3);
    RpcValue *v2 = wait_ok(f2);
    RpcValue *v1 = wait_ok(f1);
    RpcTensor *w1 = ref_allreduce(RPC_REDUCE_SUM, RPC_DTYPE_FLOAT64, 21, ctx->n, 33);
    RpcTensor *w3 = ref_allreduce(RPC_REDUCE_MAX, RPC_DTYPE_FLOAT32, 22, ctx->n, 5);
    assert_tensor_bits(rpc_value_get_tensor(v1), w1);
    assert_tensor_bits(rpc_value_get_tensor(v3), w3);
    g_assert_cmpuint(rpc_value_list_len(v2), ==, ctx->n);
    g_assert_true(rpc_value_is_none(v4));
    rpc_tensor_unref(w1);
    rpc_tensor_unref(w3);
    rpc_value_unref(v1);
    rpc_value_unref(v2);
    rpc_value_unref(v3);
    rpc_value_unref(v4);
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_pg_free(pg);
}

static guint64
run_concurrent(guint64 seed)
{
    RpcTestOptions o = {.seed = seed};
    RpcTestCtx *ctx = rt_new(&o);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = (SimDist){SIM_DIST_LOGNORMAL, 200 * RPC_US, 0, 1.0};
    cfg.jitter = 500 * RPC_US;
    cfg.reorder = 0.3;
    cfg.duplicate = 0.05;
    cfg.bandwidth = 10000000;
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    rt_on(ctx, -1, body_concurrent);
    rt_run(ctx);
    guint64 fp = sim_trace_fingerprint(sim_kernel_trace(ctx->k));
    rt_free(ctx);
    return fp;
}

static void
test_concurrent(void)
{
    guint seeds = under_valgrind() ? 3 : 20;
    for (guint s = 1; s <= seeds; s++)
        run_concurrent(s);
}

/* Same seed, same fingerprint; another seed, another run. */
static void
test_determinism(void)
{
    guint64 a = run_concurrent(77), b = run_concurrent(77), c = run_concurrent(78);
    g_assert_cmpuint(a, ==, b);
    g_assert_cmpuint(a, !=, c);
}

/* A second group, created late on one member: its chunks wait for it. */
static void
body_late_group(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    if (rank == 3)
        rt_sleep(ctx, rank, 10 * RPC_MS);
    GError *err = NULL;
    RpcProcessGroup *g2 = rpc_pg_new(rt_agent(ctx, rank), 2, NULL, 0, &err);
    g_assert_no_error(err);
    RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 31, (guint)rank, 9);
    RpcValue *v = wait_ok(rpc_pg_allreduce(g2, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET));
    RpcTensor *want = ref_allreduce(RPC_REDUCE_SUM, RPC_DTYPE_FLOAT64, 31, ctx->n, 9);
    assert_tensor_bits(rpc_value_get_tensor(v), want);
    g_assert_cmpint(rt_now(ctx), >=, 10 * RPC_MS);
    rpc_tensor_unref(want);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(g2);
    rpc_pg_free(pg);
}

static void
test_late_group(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(RPC_MS);
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    rt_on(ctx, -1, body_late_group);
    rt_run(ctx);
    rt_free(ctx);
}

/* A subgroup {3, 1}: group rank 0 is worker3. */
static void
body_subgroup(RpcTestCtx *ctx, gint rank)
{
    static const gint members[] = {3, 1};
    if (rank != 1 && rank != 3)
        return;
    GError *err = NULL;
    RpcProcessGroup *pg = rpc_pg_new(rt_agent(ctx, rank), 9, members, 2, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(rpc_pg_size(pg), ==, 2);
    g_assert_cmpuint(rpc_pg_rank(pg), ==, rank == 3 ? 0u : 1u);
    g_assert_cmpint(rpc_pg_id(pg), ==, 9);
    g_assert_true(rpc_pg_agent(pg) == rt_agent(ctx, rank));
    g_assert_true(rpc_pg_executor(pg) == rt_executor(ctx, rank));
    gint64 one = 1;
    double x = rank;
    RpcTensor *t = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &one, &x);
    RpcValue *v = wait_ok(rpc_pg_broadcast(pg, t, 0, RPC_TIMEOUT_UNSET));
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(v), 0), ==, 3.0);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_subgroup(void)
{
    rt_run_world(NULL, -1, body_subgroup, NULL);
}

/* Collectives issued from a completion callback, chained three deep. */
typedef struct {
    RpcProcessGroup *pg;
    RpcFuture *last;
    guint depth;
} Chain;

static gboolean
chain_next(RpcFuture *f, gpointer data, GError **error)
{
    Chain *c = data;
    RpcTensor *t = rpc_value_get_tensor(rpc_future_peek_value(f));
    RpcFuture *next = rpc_pg_allreduce(c->pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET);
    if (++c->depth < 3) {
        rpc_future_add_done_callback(next, chain_next, c, NULL, NULL);
        rpc_future_unref(next);
    } else {
        c->last = next;
    }
    return TRUE;
}

static void
body_from_callback(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    Chain c = {pg, NULL, 0};
    gint64 one = 1;
    double x = 1.0;
    RpcTensor *t = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &one, &x);
    RpcFuture *f = rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET);
    rpc_future_add_done_callback(f, chain_next, &c, NULL, NULL);
    RpcValue *v0 = wait_ok(f);
    rpc_value_unref(v0);
    while (c.last == NULL)
        rt_sleep(ctx, rank, RPC_MS);
    RpcValue *v = wait_ok(c.last);
    g_assert_cmpfloat(rpc_tensor_get(rpc_value_get_tensor(v), 0), ==, 256.0); /* 4^4 */
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_from_callback(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(50 * RPC_US);
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    rt_on(ctx, -1, body_from_callback);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- failures ------------------------------------------------------------------------ */

/* worker2 crashes 2.5 ms into an allreduce (1 ms per step): every other
 * member fails with the timeout naming the step it waited for, exactly
 * `timeout` after it started. */
static void
crash_worker2(gpointer data)
{
    sim_world_crash(data, 2);
}

static void
body_crash(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    SimTime t0 = rt_now(ctx);
    if (rank == 0)
        rpc_executor_call_after(rt_executor(ctx, 0), 2500 * RPC_US, crash_worker2, ctx->w, NULL);
    RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 41, (guint)rank, 40);
    RpcFuture *f = rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, 2 * RPC_S);
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    g_assert_nonnull(err);
    rpc_future_unref(f);
    if (rank != 2) {
        /* the step each survivor is stuck at: worker2's step-2 chunk, sent
         * at 2 ms, still arrives (3 ms), so rank 3 waits for step 3 from
         * it; ranks 0 and 1 run out of input one and two hops later */
        static const char *const want[4] = {
            "Timed out after 2000 ms waiting for allreduce #1 step 4 from worker3 (rank 3)",
            "Timed out after 2000 ms waiting for allreduce #1 step 5 from worker0 (rank 0)",
            NULL,
            "Timed out after 2000 ms waiting for allreduce #1 step 3 from worker2 (rank 2)",
        };
        g_assert_cmpstr(err->message, ==, want[rank]);
        g_assert_cmpint(err->code, ==, RPC_ERROR_RUNTIME);
        g_assert_cmpint(rt_now(ctx), ==, t0 + 2 * RPC_S);
    }
    g_error_free(err);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_crash_times_out(void)
{
    /* a graceful shutdown is a barrier the dead worker never joins */
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NON_GRACEFUL};
    RpcTestCtx *ctx = rt_new(&o);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(RPC_MS);
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    rt_on(ctx, -1, body_crash);
    rt_run(ctx);
    g_assert_false(sim_world_is_alive(ctx->w, 2));
    rt_free(ctx);
}

/* A partition between worker1 and worker2: every member times out; once
 * healed, the next collective (#2 everywhere) works, and the stale chunks
 * of #1 are dropped. */
static void
body_partition(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rpc_pg_set_timeout(pg, 500 * RPC_MS);
    g_assert_cmpint(rpc_pg_get_timeout(pg), ==, 500 * RPC_MS);
    rt_barrier(ctx, rank);
    if (rank == 0)
        sim_net_partition(sim_world_net(ctx->w), 1, 2, FALSE);
    rt_barrier(ctx, rank);
    SimTime t0 = rt_now(ctx);
    RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 51, (guint)rank, 8);
    wait_error(rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET),
               "Timed out after 500 ms waiting for allreduce #1 step ", FALSE);
    g_assert_cmpint(rt_now(ctx), ==, t0 + 500 * RPC_MS);
    rt_barrier(ctx, rank);
    if (rank == 0)
        sim_net_heal_all(sim_world_net(ctx->w));
    rt_barrier(ctx, rank);
    RpcValue *v = wait_ok(rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET));
    RpcTensor *want = ref_allreduce(RPC_REDUCE_SUM, RPC_DTYPE_FLOAT64, 51, ctx->n, 8);
    assert_tensor_bits(rpc_value_get_tensor(v), want);
    g_assert_cmpint(rpc_pg_seq(pg), ==, 2);
    rpc_tensor_unref(want);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_partition_times_out(void)
{
    RpcTestOptions o = {.rpc_timeout = 300 * RPC_MS};
    RpcTestCtx *ctx = rt_new(&o);
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency = sim_dist_constant(RPC_MS);
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    rt_on(ctx, -1, body_partition);
    rt_run(ctx);
    rt_free(ctx);
}

/* Timeouts that are not whole milliseconds print with decimals. */
static void
body_fractional_timeout(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    if (rank == 1) {
        wait_error(rpc_pg_barrier(pg, 1500 * RPC_US),
                   "Timed out after 1.5 ms waiting for barrier #1 step 0 from worker0 (rank 0)",
                   TRUE);
    }
    rpc_pg_free(pg);
}

static void
test_fractional_timeout(void)
{
    RpcTestOptions o = {.n_workers = 2};
    rt_run_world(&o, -1, body_fractional_timeout, NULL);
}

/* Members that disagree: rank 0 broadcasts while the others allreduce. */
static void
body_mismatch(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    RpcTensor *t = rpc_tensor_ones2(2, 2);
    RpcFuture *f = rank == 0 ? rpc_pg_broadcast(pg, t, 0, 100 * RPC_MS)
                             : rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, 100 * RPC_MS);
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    rpc_future_unref(f);
    if (rank == 0) { /* the root is done once it has sent */
        g_assert_no_error(err);
        rpc_value_unref(v);
    } else if (rank == 1) { /* gets the broadcast chunk where it expected the ring's */
        g_assert_nonnull(err);
        g_assert_cmpstr(err->message, ==,
                        "allreduce #1 on worker1 (rank 1) met a broadcast from worker0 (rank 0): "
                        "every member must issue the same collectives in the same order");
        g_error_free(err);
    } else {
        g_assert_nonnull(err);
        g_error_free(err);
    }
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_mismatch(void)
{
    rt_run_world(NULL, -1, body_mismatch, NULL);
}

/* Different sizes or dtypes on different members fail clearly. */
static void
body_size_mismatch(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    /* 6 elements on rank 1, 8 elsewhere: chunks of 2,2,1,1 against 2,2,2,2 */
    RpcTensor *t = rank == 1 ? rpc_tensor_ones2(2, 3) : rpc_tensor_ones2(2, 4);
    GError *err = NULL;
    RpcFuture *f = rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, 100 * RPC_MS);
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    rpc_future_unref(f);
    if (rank == 1)
        g_assert_cmpstr(err->message, ==,
                        "allreduce #1 step 0: worker0 (rank 0) sent 2 float32 elements; every "
                        "member must pass a tensor of the same dtype and size");
    g_clear_error(&err);
    /* a broadcast of another shape */
    RpcTensor *b = rank == 3 ? rpc_tensor_ones2(3, 1) : rpc_tensor_ones2(2, 2);
    f = rpc_pg_broadcast(pg, b, 0, RPC_S); /* members arrive up to 100 ms apart */
    v = rpc_future_wait(f, &err);
    rpc_future_unref(f);
    if (rank == 3) {
        g_assert_cmpstr(err->message, ==,
                        "broadcast #2 step 0: worker0 (rank 0) sent a tensor of shape [2, 2]; "
                        "every member must pass a tensor of the same dtype and size");
        g_error_free(err);
    } else {
        g_assert_no_error(err);
        rpc_value_unref(v);
    }
    rpc_tensor_unref(b);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_size_mismatch(void)
{
    rt_run_world(NULL, -1, body_size_mismatch, NULL);
}

/* Low-precision chunks of the wrong length, and a native chunk where 2-byte
 * data was expected: rank 0 runs fp16 while the others run float32. */
static void
body_lowp_mismatch(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    RpcTensor *t = rpc_tensor_ones2(2, 4);
    RpcFuture *f =
        rank == 0 ? rpc_pg_allreduce_lowp(pg, t, RPC_REDUCE_SUM, RPC_PRECISION_FP16, 100 * RPC_MS)
                  : rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, 100 * RPC_MS);
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    if (rank == 0)
        g_assert_cmpstr(err->message, ==,
                        "allreduce #1 step 0: worker3 (rank 3) sent 0 bytes of 16-bit data; "
                        "every member must pass a tensor of the same dtype and size");
    if (rank == 1)
        g_assert_cmpstr(err->message, ==,
                        "allreduce #1 step 0: worker0 (rank 0) sent no tensor; every member "
                        "must pass a tensor of the same dtype and size");
    g_error_free(err);
    rpc_future_unref(f);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_lowp_mismatch(void)
{
    rt_run_world(NULL, -1, body_lowp_mismatch, NULL);
}

/* rpc_pg_new's errors. */
static void
body_new_errors(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = rt_agent(ctx, 0);
    GError *err = NULL;
    static const gint bad[] = {0, 7}, dup[] = {0, 1, 1}, other[] = {1, 2};
    g_assert_null(rpc_pg_new(a, 5, bad, 2, &err));
    g_assert_cmpstr(err->message, ==, "Invalid process group member 7 (world size 4)");
    g_assert_cmpint(err->code, ==, RPC_ERROR_VALUE);
    g_clear_error(&err);
    g_assert_null(rpc_pg_new(a, 5, dup, 3, &err));
    g_assert_cmpstr(err->message, ==, "Duplicate process group member 1");
    g_clear_error(&err);
    g_assert_null(rpc_pg_new(a, 5, other, 2, &err));
    g_assert_cmpstr(err->message, ==, "worker0 is not a member of process group 5");
    g_clear_error(&err);
    RpcProcessGroup *pg = rpc_pg_new(a, 5, NULL, 0, &err);
    g_assert_no_error(err);
    g_assert_null(rpc_pg_new(a, 5, NULL, 0, &err));
    g_assert_cmpstr(err->message, ==, "Process group 5 already exists on worker0");
    g_assert_cmpint(err->code, ==, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    /* a pending collective fails when its group goes */
    gint64 one = 1;
    RpcTensor *t = rpc_tensor_new_zeros(RPC_DTYPE_FLOAT64, 1, &one);
    RpcFuture *f = rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_NEVER);
    RpcFuture *g = rpc_pg_allgather(pg, t, RPC_TIMEOUT_NEVER);
    rpc_pg_free(pg);
    wait_error(f, "Process group 5 was destroyed before allreduce #1 completed", TRUE);
    wait_error(g, "Process group 5 was destroyed before allgather #2 completed", TRUE);
    g_assert_null(rpc_pg_new(a, 5, NULL, 0, &err));
    g_assert_cmpstr(err->message, ==, "Process group 5 was already used on worker0");
    g_clear_error(&err);
    rpc_tensor_unref(t);
    rpc_pg_free(NULL);
}

static void
test_new_errors(void)
{
    rt_run_world(NULL, -1, body_new_errors, NULL);
}

/* A group whose agent was shut down fails its collectives at once; a group
 * cannot be made on a stopped agent. */
static void
body_after_shutdown(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    GError *err = NULL;
    g_assert_true(rpc_agent_shutdown(rt_agent(ctx, rank), TRUE, 0, &err));
    g_assert_no_error(err);
    RpcTensor *t = rpc_tensor_ones2(2, 2);
    wait_error(rpc_pg_allreduce(pg, t, RPC_REDUCE_SUM, RPC_TIMEOUT_UNSET), RPC_MSG_NOT_INITIALIZED,
               TRUE);
    if (rank == 0)
        wait_error(rpc_pg_broadcast(pg, t, 0, RPC_TIMEOUT_UNSET), RPC_MSG_NOT_INITIALIZED, TRUE);
    g_assert_null(rpc_pg_new(rt_agent(ctx, rank), 8, NULL, 0, &err));
    g_assert_cmpstr(err->message, ==, RPC_MSG_NOT_INITIALIZED);
    g_clear_error(&err);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_after_shutdown(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE};
    rt_run_world(&o, -1, body_after_shutdown, NULL);
}

/* Garbage sent to the chunk function is refused with a ValueError. */
static void
body_malformed_chunk(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    if (rank == 0) {
        GError *err = NULL;
        RpcValue *v = rt_sync(ctx, 0, 1, RPC_PG_CHUNK_FUNC, rt_args(rt_int(1), NULL),
                              RPC_TIMEOUT_UNSET, &err);
        g_assert_null(v);
        rt_assert_error(&err, RPC_ERROR_VALUE, "malformed process group chunk");
        v = rt_sync(ctx, 0, 1, RPC_PG_CHUNK_FUNC,
                    rt_args(rt_int(GROUP), rt_int(1), rt_int(0), rt_int(1), rt_int(9),
                            rpc_value_none(), NULL),
                    RPC_TIMEOUT_UNSET, &err);
        g_assert_null(v);
        rt_assert_error(&err, RPC_ERROR_VALUE, "process group chunk from rank 9 of a group of 4");
        /* a well-formed chunk ahead of its collective: buffered and used by
         * worker1's barrier #1; the real one from worker0 is then dropped */
        v = rt_sync(ctx, 0, 1, RPC_PG_CHUNK_FUNC,
                    rt_args(rt_int(GROUP), rt_int(1), rt_int(0), rt_int(5), rt_int(0),
                            rpc_value_none(), NULL),
                    RPC_TIMEOUT_UNSET, &err);
        g_assert_no_error(err);
        rpc_value_unref(v);
    }
    if (rank == 1) /* barrier #1 is running when the stray chunks arrive */
        rt_sleep(ctx, rank, 10 * RPC_MS);
    RpcValue *v = wait_ok(rpc_pg_barrier(pg, RPC_TIMEOUT_UNSET));
    rpc_value_unref(v);
    rt_barrier(ctx, rank);
    rpc_pg_free(pg);
}

static void
test_malformed_chunk(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    rt_on(ctx, -1, body_malformed_chunk);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "pg.drop"), >=, 1);
    rt_free(ctx);
}

/* --- low-precision allreduce ----------------------------------------------------------- */

static void
body_lowp(RpcTestCtx *ctx, gint rank)
{
    RpcProcessGroup *pg = pg_all(ctx, rank);
    rt_barrier(ctx, rank);
    for (RpcPrecision p = RPC_PRECISION_FP16; p <= RPC_PRECISION_BF16; p++)
        for (RpcReduceOp op = RPC_REDUCE_SUM; op <= RPC_REDUCE_MAX; op++) {
            const gint64 numel = 23;
            RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 60 + op, (guint)rank, numel);
            RpcValue *v = wait_ok(rpc_pg_allreduce_lowp(pg, t, op, p, RPC_TIMEOUT_UNSET));
            RpcTensor *got = rpc_value_get_tensor(v);
            g_assert_cmpint(rpc_tensor_dtype(got), ==, RPC_DTYPE_FLOAT32);
            /* reference: each contribution converted as .to(fp16) does (through
             * float32), each ⊕ rounded to the format, the ring's order */
            double x[8];
            for (gint64 i = 0; i < numel; i++) {
                for (guint r = 0; r < ctx->n; r++) {
                    double d = (double)(float)datum(60 + op, r, i);
                    x[r] = p == RPC_PRECISION_FP16 ? rpc_fp16_to_double(rpc_fp16_from_double(d))
                                                   : rpc_bf16_to_double(rpc_bf16_from_double(d));
                }
                gint64 off, len;
                guint c = 0;
                for (; c < ctx->n; c++) {
                    rpc_pg_chunk_bounds(numel, ctx->n, c, &off, &len);
                    if (i >= off && i < off + len)
                        break;
                }
                double acc = x[(c + 1) % ctx->n];
                for (guint k = 2; k <= ctx->n; k++)
                    acc = rpc_precision_round(p, RPC_DTYPE_FLOAT32,
                                              ref_combine(op, acc, x[(c + k) % ctx->n]));
                if (op == RPC_REDUCE_AVG)
                    acc = rpc_precision_round(p, RPC_DTYPE_FLOAT32, acc / ctx->n);
                double g = rpc_tensor_get(got, i);
                if (isnan(acc))
                    g_assert_true(isnan(g));
                else
                    g_assert_cmpfloat(g, ==, acc);
            }
            rpc_value_unref(v);
            rpc_tensor_unref(t);
        }
    /* NATIVE through the low-precision entry point is the plain allreduce */
    RpcTensor *t = data_tensor(RPC_DTYPE_FLOAT64, 70, (guint)rank, 5);
    RpcValue *v = wait_ok(
        rpc_pg_allreduce_lowp(pg, t, RPC_REDUCE_SUM, RPC_PRECISION_NATIVE, RPC_TIMEOUT_UNSET));
    RpcTensor *want = ref_allreduce(RPC_REDUCE_SUM, RPC_DTYPE_FLOAT64, 70, ctx->n, 5);
    assert_tensor_bits(rpc_value_get_tensor(v), want);
    rpc_tensor_unref(want);
    rpc_value_unref(v);
    rpc_tensor_unref(t);
    rpc_pg_free(pg);
}

static void
test_lowp_allreduce(void)
{
    for (guint n = 1; n <= 4; n += 3) {
        RpcTestOptions o = {.n_workers = n};
        rt_run_world(&o, -1, body_lowp, NULL);
    }
}

/* --- the conversions ---------------------------------------------------------------------- */

/* An arithmetic reference: x rounded to p significant bits with exponent
 * range [emin, emax] (emin = the least normal exponent), ties to even via
 * rint() in double, which is exact for these scalings. */
static double
ref_round(double x, gint p, gint emin, gint emax)
{
    if (isnan(x) || isinf(x) || x == 0)
        return x;
    double ax = fabs(x);
    gint e;
    frexp(ax, &e);
    e -= 1; /* ax in [2^e, 2^(e+1)) */
    if (e < emin)
        e = emin; /* subnormal: fixed quantum */
    double q = rint(ldexp(ax, p - 1 - e));
    double r = ldexp(q, e - (p - 1));
    double max = ldexp(2.0 - ldexp(1.0, 1 - p), emax);
    if (r > max)
        r = INFINITY;
    return copysign(r, x);
}

static double
ref_fp16(double x)
{
    return ref_round(x, 11, -14, 15);
}

static double
ref_bf16(double x)
{
    return ref_round(x, 8, -126, 127);
}

static void
check_same(double got, double want, double x)
{
    if (isnan(want)) {
        if (!isnan(got))
            g_error("%a: got %a, want NaN", x, got);
        return;
    }
    if (got != want || signbit(got) != signbit(want))
        g_error("%a: got %a, want %a", x, got, want);
}

static void
test_fp16_all_values(void)
{
    /* every half round-trips exactly (NaNs stay NaNs) */
    for (guint h = 0; h < 65536; h++) {
        double d = rpc_fp16_to_double((guint16)h);
        if (isnan(d)) {
            g_assert_cmpuint((h >> 10) & 0x1f, ==, 0x1f);
            g_assert_cmpuint(h & 0x3ff, !=, 0);
            continue;
        }
        g_assert_cmpuint(rpc_fp16_from_double(d), ==, h);
        g_assert_cmpuint(rpc_fp16_from_float((float)d), ==, h);
        /* the tie above h (between h and the next half) rounds to even */
        if ((h & 0x7fff) < 0x7bff) {
            double next = rpc_fp16_to_double((guint16)(h + 1));
            double mid = (d + next) / 2;
            guint16 even = (h & 1) ? (guint16)(h + 1) : (guint16)h;
            g_assert_cmpuint(rpc_fp16_from_double(mid), ==, even);
            g_assert_cmpuint(rpc_fp16_from_float((float)mid), ==, even);
            g_assert_cmpuint(rpc_fp16_from_double(nextafter(mid, 0)), ==, (guint16)h);
            g_assert_cmpuint(rpc_fp16_from_double(nextafter(mid, copysign(INFINITY, d))), ==,
                             (guint16)(h + 1));
        }
    }
}

static void
test_bf16_all_values(void)
{
    for (guint h = 0; h < 65536; h++) {
        double d = rpc_bf16_to_double((guint16)h);
        if (isnan(d))
            continue;
        g_assert_cmpuint(rpc_bf16_from_double(d), ==, h);
        g_assert_cmpuint(rpc_bf16_from_float((float)d), ==, h);
        if ((h & 0x7fff) < 0x7f7f) {
            double next = rpc_bf16_to_double((guint16)(h + 1));
            double mid = (d + next) / 2;
            guint16 even = (h & 1) ? (guint16)(h + 1) : (guint16)h;
            g_assert_cmpuint(rpc_bf16_from_double(mid), ==, even);
            g_assert_cmpuint(rpc_bf16_from_double(nextafter(mid, 0)), ==, (guint16)h);
        }
    }
}

/* float32 inputs against the arithmetic reference (and against the
 * compiler's _Float16 where it has one): every 257th bit pattern (16.7
 * million values, every exponent and sign; every 65537th under valgrind). */
static void
test_float_inputs(void)
{
    guint32 stride = under_valgrind() ? 65537u : 257u;
    for (guint64 b = 0; b <= G_MAXUINT32; b += stride) {
        guint32 bits = (guint32)b;
        float f;
        memcpy(&f, &bits, sizeof f);
        check_same(rpc_fp16_to_double(rpc_fp16_from_float(f)), ref_fp16(f), f);
        check_same(rpc_bf16_to_double(rpc_bf16_from_float(f)), ref_bf16(f), f);
#ifdef __FLT16_MAX__
        _Float16 c = (_Float16)f;
        if (!isnan(f))
            check_same(rpc_fp16_to_double(rpc_fp16_from_float(f)), (double)c, f);
#endif
    }
}

/* double inputs: random doubles of every exponent, against the reference. */
static void
test_double_inputs(void)
{
    SimRng r;
    sim_rng_seed(&r, 4242);
    guint n = under_valgrind() ? 20000 : 2000000;
    for (guint i = 0; i < n; i++) {
        guint64 bits = sim_rng_next(&r);
        /* concentrate on exponents near the formats' ranges */
        if (i % 2) {
            guint64 e = 1023 + (guint64)sim_rng_range(&r, -140, 130);
            bits = (bits & G_GUINT64_CONSTANT(0x800fffffffffffff)) | (e << 52);
        }
        double x;
        memcpy(&x, &bits, sizeof x);
        check_same(rpc_fp16_to_double(rpc_fp16_from_double(x)), ref_fp16(x), x);
        check_same(rpc_bf16_to_double(rpc_bf16_from_double(x)), ref_bf16(x), x);
    }
}

static void
test_conversion_edges(void)
{
    /* fp16: limits, overflow, subnormals, ties, signed zeros, NaN */
    g_assert_cmpuint(rpc_fp16_from_double(65504.0), ==, 0x7bff);
    g_assert_cmpuint(rpc_fp16_from_double(65519.99), ==, 0x7bff);
    g_assert_cmpuint(rpc_fp16_from_double(65520.0), ==, 0x7c00); /* tie to even: inf */
    g_assert_cmpuint(rpc_fp16_from_double(1e6), ==, 0x7c00);
    g_assert_cmpuint(rpc_fp16_from_double(-1e300), ==, 0xfc00);
    g_assert_cmpuint(rpc_fp16_from_double(INFINITY), ==, 0x7c00);
    g_assert_cmpuint(rpc_fp16_from_double(-INFINITY), ==, 0xfc00);
    g_assert_cmpuint(rpc_fp16_from_double(NAN), ==, 0x7e00);
    g_assert_cmpuint(rpc_fp16_from_double(-NAN), ==, 0xfe00);
    g_assert_cmpuint(rpc_fp16_from_double(0.0), ==, 0x0000);
    g_assert_cmpuint(rpc_fp16_from_double(-0.0), ==, 0x8000);
    g_assert_cmpuint(rpc_fp16_from_double(ldexp(1, -24)), ==, 0x0001); /* least subnormal */
    g_assert_cmpuint(rpc_fp16_from_double(ldexp(1, -25)), ==, 0x0000); /* tie: to even 0 */
    g_assert_cmpuint(rpc_fp16_from_double(nextafter(ldexp(1, -25), 1)), ==, 0x0001);
    g_assert_cmpuint(rpc_fp16_from_double(ldexp(3, -25)), ==, 0x0002);      /* 1.5 ulp: to even 2 */
    g_assert_cmpuint(rpc_fp16_from_double(ldexp(1, -14)), ==, 0x0400);      /* least normal */
    g_assert_cmpuint(rpc_fp16_from_double(ldexp(1023.5, -24)), ==, 0x0400); /* rounds up to it */
    g_assert_cmpuint(rpc_fp16_from_double(-ldexp(1, -30)), ==, 0x8000);
    g_assert_cmpuint(rpc_fp16_from_double(5e-324), ==, 0x0000);              /* double subnormal */
    g_assert_cmpuint(rpc_fp16_from_double(1.0 + ldexp(1, -11)), ==, 0x3c00); /* tie, even */
    g_assert_cmpuint(rpc_fp16_from_double(1.0 + ldexp(3, -11)), ==, 0x3c02); /* tie, even */
    g_assert_cmpuint(rpc_fp16_from_double(2049.0), ==, 0x6800);              /* tie: 2048 */
    g_assert_cmpfloat(rpc_fp16_to_double(0x3555), ==, 0.333251953125);
    g_assert_true(isinf(rpc_fp16_to_double(0x7c00)));
    g_assert_true(isnan(rpc_fp16_to_double(0x7c01)));
    g_assert_true(signbit(rpc_fp16_to_double(0x8000)));
    /* bf16 */
    g_assert_cmpuint(rpc_bf16_from_double(1.0), ==, 0x3f80);
    g_assert_cmpuint(rpc_bf16_from_double(NAN), ==, 0x7fc0);
    g_assert_cmpuint(rpc_bf16_from_double(-NAN), ==, 0x7fc0);
    g_assert_cmpuint(rpc_bf16_from_double(3.3895313892515355e38), ==, 0x7f7f); /* max */
    g_assert_cmpuint(rpc_bf16_from_double(3.39e38), ==, 0x7f7f); /* within half an ulp */
    g_assert_cmpuint(rpc_bf16_from_double(3.4e38), ==, 0x7f80);  /* inf */
    g_assert_cmpuint(rpc_bf16_from_double(1e39), ==, 0x7f80);
    g_assert_cmpuint(rpc_bf16_from_double(ldexp(1, -133)), ==, 0x0001);
    g_assert_cmpuint(rpc_bf16_from_double(ldexp(1, -134)), ==, 0x0000);
    g_assert_cmpuint(rpc_bf16_from_double(1.0 + ldexp(1, -8)), ==, 0x3f80); /* tie, even */
    g_assert_cmpuint(rpc_bf16_from_double(1.0 + ldexp(3, -8)), ==, 0x3f82);
    g_assert_cmpuint(rpc_bf16_from_float(-0.0f), ==, 0x8000);
    /* float64 tensors convert through float32, as PyTorch does: a value just
     * above an fp16 tie whose excess float32 cannot hold lands on the tie */
    double x = 1.0 + ldexp(1, -11) + ldexp(1, -40);
    g_assert_cmpuint(rpc_fp16_from_double(x), ==, 0x3c01);
    gint64 one = 1;
    RpcTensor *t = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &one, &x);
    RpcTensor *h = rpc_lowp_tensor(t, RPC_PRECISION_FP16);
    g_assert_cmpint(rpc_tensor_dtype(h), ==, RPC_DTYPE_FLOAT32);
    g_assert_cmpfloat(rpc_tensor_get(h, 0), ==, 1.0);
    RpcTensor *same = rpc_lowp_tensor(t, RPC_PRECISION_NATIVE);
    assert_tensor_bits(same, t);
    RpcTensor *f = rpc_tensor_cast(t, RPC_DTYPE_FLOAT32);
    RpcTensor *bf = rpc_lowp_tensor(f, RPC_PRECISION_BF16);
    g_assert_cmpfloat(rpc_tensor_get(bf, 0), ==, 1.0);
    g_assert_cmpfloat(rpc_precision_round(RPC_PRECISION_NATIVE, RPC_DTYPE_FLOAT64, x), ==, x);
    g_assert_cmpfloat(rpc_precision_round(RPC_PRECISION_NATIVE, RPC_DTYPE_FLOAT32, x), ==,
                      (double)(float)x);
    rpc_tensor_unref(bf);
    rpc_tensor_unref(f);
    rpc_tensor_unref(same);
    rpc_tensor_unref(h);
    rpc_tensor_unref(t);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/collective/chunk_bounds", test_chunk_bounds);
    g_test_add_func("/collective/allreduce/every_op_and_size", test_allreduce_ops);
    g_test_add_func("/collective/allreduce/documented_order", test_allreduce_order);
    g_test_add_func("/collective/allreduce/nan_and_inf", test_allreduce_nan);
    g_test_add_func("/collective/allreduce/keeps_shape", test_allreduce_shape);
    g_test_add_func("/collective/broadcast_allgather_reduce_scatter_barrier",
                    test_other_collectives);
    g_test_add_func("/collective/step_message_bytes", test_step_message_bytes);
    g_test_add_func("/collective/timing_matches_model", test_timing_model);
    g_test_add_func("/collective/concurrent_and_early_chunks", test_concurrent);
    g_test_add_func("/collective/determinism", test_determinism);
    g_test_add_func("/collective/group_created_late", test_late_group);
    g_test_add_func("/collective/subgroup", test_subgroup);
    g_test_add_func("/collective/from_callbacks", test_from_callback);
    g_test_add_func("/collective/crash_times_out", test_crash_times_out);
    g_test_add_func("/collective/partition_times_out_then_heals", test_partition_times_out);
    g_test_add_func("/collective/fractional_timeout_text", test_fractional_timeout);
    g_test_add_func("/collective/mismatched_collectives", test_mismatch);
    g_test_add_func("/collective/mismatched_sizes", test_size_mismatch);
    g_test_add_func("/collective/mismatched_precision", test_lowp_mismatch);
    g_test_add_func("/collective/new_errors_and_free_pending", test_new_errors);
    g_test_add_func("/collective/after_shutdown", test_after_shutdown);
    g_test_add_func("/collective/malformed_chunks", test_malformed_chunk);
    g_test_add_func("/collective/lowp_allreduce", test_lowp_allreduce);
    g_test_add_func("/lowp/fp16_every_value_and_tie", test_fp16_all_values);
    g_test_add_func("/lowp/bf16_every_value_and_tie", test_bf16_all_values);
    g_test_add_func("/lowp/float_inputs", test_float_inputs);
    g_test_add_func("/lowp/double_inputs", test_double_inputs);
    g_test_add_func("/lowp/edges", test_conversion_edges);
    return g_test_run();
}
