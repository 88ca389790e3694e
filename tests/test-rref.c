/* test-rref.c — RRefs, their protocol and proxies, and class instances, on
 * the simulated conformance world (spec §1.5, §3.4–3.6, §4, §6.4, §10;
 * conformance cases of §11.5, the RRef cases of §11.8, the remote modes of
 * cases 4, 91, 94 and 95, and cases 11, 32, 92 and 97 which need classes).
 *
 * Each test is named after the PyTorch test it mirrors; tests of our own
 * have plain names.  A body runs on every rank unless the case says
 * otherwise, then every rank shuts down gracefully (tests/lib/rpcworld.h).
 * Latency is 0 unless a fault or a link setting adds some, so every time
 * asserted below is exact.
 *
 * Not covered, on purpose:
 *  - cases 88 and 89 (RRef.backward): rref.h has no backward yet; it comes
 *    with distributed autograd (core/autograd.c, in progress elsewhere);
 *  - case 85's unpickling half needs bytes from Python's pickler; the C
 *    form decodes an "RRef" extension without hooks instead.
 *
 * Choices where the catalogue is abstract or differs from PyTorch 1.13:
 *  - case 67: the catalogue gives only the result, 2·ones + 10; the RRefs
 *    hold my_function(ones, 2, 3) and my_function(ones, 1, 4);
 *  - case 80: the missing-attribute check runs on the caller against the
 *    fetched type, as rref_proxy.py's getattr(rref_type, name) does, so the
 *    text is 1.13's "type object 'Tensor' has no attribute 'non_exist'"
 *    (checked against a running 1.13); the owner-side getattr on an
 *    instance says "'MyClass' object has no attribute 'x'";
 *  - a bound method (MyClass(2).my_instance_method) is sent as the function
 *    "MyClass.my_instance_method" with the instance as first argument — how
 *    Python pickles a bound method (the instance, by value, and the name);
 *  - call_method_on_rref takes the method's name ("MyClass.get_value").
 */
#include <string.h>

#include "core/agent-internal.h"
#include "core/codec.h"
#include "core/object.h"
#include "core/registry.h"
#include "core/rref.h"
#include "core/stdlib.h"
#include "sim/faults.h"
#include "sim/net.h"
#include "sim/trace.h"
#include "tests/lib/rpcworld.h"

#define UNSET RPC_TIMEOUT_UNSET
#define TIMEOUT_MSG(ms)                                                                            \
    "RPCErr:1:RPC ran for more than set timeout (" #ms " ms) and will now be marked with an error"
#define MSG_CREATION                                                                               \
    "RRef creation via rpc.remote() timed out, and it is possible that the RRef on the owner "     \
    "node does not exist."

/* --- helpers ------------------------------------------------------------------ */

static void
assert_error_exact(GError **err, RpcErrorKind kind, const char *exact)
{
    g_assert_nonnull(*err);
    g_assert_cmpstr((*err)->message, ==, exact);
    rt_assert_error(err, kind, exact);
}

static RpcValue *
dst_value(RpcTestCtx *ctx, gint to)
{
    return rt_name(ctx, to);
}

/* remote(worker<to>, func, args) from rank: an RRef value (transfer full). */
static RpcValue *
remote_t(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args, RpcTime timeout)
{
    GError *err = NULL;
    RpcValue *dst = dst_value(ctx, to);
    RpcValue *v = rpc_remote(rt_agent(ctx, rank), dst, func, args, NULL, timeout, &err);
    rpc_value_unref(dst);
    g_assert_no_error(err);
    g_assert_nonnull(rpc_value_get_rref(v));
    return v;
}

static RpcValue *
remote_ok(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args)
{
    return remote_t(ctx, rank, to, func, args, UNSET);
}

static RpcRRef *
R(const RpcValue *v)
{
    RpcRRef *r = rpc_value_get_rref(v);
    g_assert_nonnull(r);
    return r;
}

static RpcValue *
to_here_ok(const RpcValue *rref)
{
    GError *err = NULL;
    RpcValue *v = rpc_rref_to_here(R(rref), UNSET, &err);
    g_assert_no_error(err);
    return v;
}

/* Asserts rref.to_here() == want (taken). */
static void
assert_to_here(const RpcValue *rref, RpcValue *want)
{
    rt_assert_value(to_here_ok(rref), want);
}

static RpcValue *
sync_ok(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcValue *args)
{
    GError *err = NULL;
    RpcValue *v = rt_sync(ctx, rank, to, func, args, UNSET, &err);
    g_assert_no_error(err);
    return v;
}

static RpcValue *
local_rref(RpcTestCtx *ctx, gint rank, RpcValue *value)
{
    GError *err = NULL;
    RpcValue *v = rpc_rref_new_local(rt_agent(ctx, rank), value, &err);
    g_assert_no_error(err);
    return v;
}

static RpcRRefDebugInfo
info(RpcTestCtx *ctx, gint rank)
{
    RpcRRefDebugInfo d;
    rpc_rref_debug_info(rt_agent(ctx, rank), &d);
    return d;
}

static char *
repr(const RpcValue *rref)
{
    return rpc_rref_repr(R(rref));
}

static void
assert_repr(const RpcValue *rref, const char *want)
{
    char *s = repr(rref);
    g_assert_cmpstr(s, ==, want);
    g_free(s);
}

/* wait_until_pending_futures_and_users_flushed(): polls every 10 ms, at
 * most 20 s, as PyTorch's helper does. */
static void
wait_flushed(RpcTestCtx *ctx, gint rank)
{
    for (int i = 0; i < 2000; i++) {
        RpcRRefDebugInfo d = info(ctx, rank);
        if (d.num_pending_futures == 0 && d.num_pending_users == 0)
            return;
        rt_sleep(ctx, rank, 10 * RPC_MS);
    }
    g_error("worker%d: pending futures and users not flushed within 20 s", rank);
}

/* wait_until_owners_and_forks_on_rank(o, f, rank), polled from `me`. */
static void
wait_owners_forks(RpcTestCtx *ctx, gint me, guint owners, guint forks, gint rank)
{
    for (int i = 0; i < 2000; i++) {
        RpcRRefDebugInfo d = info(ctx, rank);
        if (d.num_owner_rrefs == owners && d.num_forks == forks)
            return;
        rt_sleep(ctx, me, 10 * RPC_MS);
    }
    RpcRRefDebugInfo d = info(ctx, rank);
    g_error("worker%d: (owners, forks) = (%u, %u), want (%u, %u)", rank, d.num_owner_rrefs,
            d.num_forks, owners, forks);
}

static RpcValue *
ones_plus(gint64 n, double k)
{
    return rt_full(n, n, 1.0 + k);
}

/* A registered function called locally, as the Python tests call one. */
static RpcValue *
call_local(RpcTestCtx *ctx, gint rank, const char *func, RpcValue *args, GError **error)
{
    RpcAgent *a = rt_agent(ctx, rank);
    const RpcFunctionDef *def = rpc_registry_lookup(rpc_agent_registry(a), func);
    g_assert_nonnull(def);
    RpcValue *v = def->fn(a, args, NULL, error);
    rpc_value_unref(args);
    return v;
}

/* rpc_object_construct / rpc_object_call_method, taking args (nullable). */
static RpcValue *
construct(RpcAgent *a, const RpcClassDef *cls, RpcValue *args, RpcValue *kwargs, GError **error)
{
    RpcValue *v = rpc_object_construct(a, cls, args, kwargs, error);
    rpc_value_unref(args);
    rpc_value_unref(kwargs);
    return v;
}

static RpcValue *
call_m(RpcAgent *a, const RpcValue *target, const char *m, RpcValue *args, RpcValue *kwargs,
       GError **error)
{
    RpcValue *v = rpc_object_call_method(a, target, m, args, kwargs, error);
    rpc_value_unref(args);
    rpc_value_unref(kwargs);
    return v;
}

/* Counts trace records of one kind whose detail is `detail`. */
typedef struct {
    const char *kind;
    const char *detail;
    guint count;
} DetailCount;

static void
count_detail(const SimTraceRecord *rec, gpointer data)
{
    DetailCount *dc = data;
    if (strcmp(rec->kind->name, dc->kind) == 0 && rec->detail != NULL &&
        strcmp(rec->detail, dc->detail) == 0)
        dc->count++;
}

static DetailCount *
watch_detail(RpcTestCtx *ctx, const char *kind, const char *detail)
{
    DetailCount *dc = g_new0(DetailCount, 1);
    dc->kind = kind;
    dc->detail = detail;
    sim_trace_add_sink(sim_kernel_trace(ctx->k), count_detail, dc, g_free);
    return dc;
}

/* Times of the records of one kind (and worker, -2 for any), in order. */
typedef struct {
    const char *kind;
    gint worker;
    GArray *times; /* SimTime */
} TimeLog;

static void
log_time(const SimTraceRecord *rec, gpointer data)
{
    TimeLog *tl = data;
    if (strcmp(rec->kind->name, tl->kind) == 0 && (tl->worker == -2 || tl->worker == rec->worker))
        g_array_append_val(tl->times, rec->time);
}

static void
time_log_free(gpointer p)
{
    TimeLog *tl = p;
    g_array_unref(tl->times);
    g_free(tl);
}

static TimeLog *
watch_times(RpcTestCtx *ctx, const char *kind, gint worker)
{
    TimeLog *tl = g_new0(TimeLog, 1);
    tl->kind = kind;
    tl->worker = worker;
    tl->times = g_array_new(FALSE, FALSE, sizeof(SimTime));
    sim_trace_add_sink(sim_kernel_trace(ctx->k), log_time, tl, time_log_free);
    return tl;
}

static void
assert_times(const TimeLog *tl, guint n, const SimTime *want)
{
    g_assert_cmpuint(tl->times->len, ==, n);
    for (guint i = 0; i < n; i++)
        g_assert_cmpint(g_array_index(tl->times, SimTime, i), ==, want[i]);
}

/* --- case 4 (remote mode), case 32, case 11 ---------------------------------------- */

static void
body_send_to_rank_remote(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    GError *err = NULL;
    RpcValue *to = rt_int(rt_next(ctx, rank, 1));
    RpcValue *r =
        rpc_remote(a, to, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL), NULL, UNSET, &err);
    g_assert_no_error(err);
    assert_to_here(r, rt_full(2, 2, 2));
    rpc_value_unref(r);
    rpc_value_unref(to);
    const gint64 bad[] = {5, -1};
    for (guint i = 0; i < G_N_ELEMENTS(bad); i++) {
        to = rt_int(bad[i]);
        g_assert_null(
            rpc_remote(a, to, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL), NULL, UNSET, &err));
        rt_assert_error(&err, RPC_ERROR_RUNTIME, "could not find destination");
        rpc_value_unref(to);
    }
    const double off[] = {-0.5, 0.5};
    for (guint i = 0; i < G_N_ELEMENTS(off); i++) {
        to = rpc_value_new_double(rt_next(ctx, rank, 1) + off[i]);
        g_assert_null(
            rpc_remote(a, to, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL), NULL, UNSET, &err));
        rt_assert_error(&err, RPC_ERROR_VALUE, "Cannot get WorkerInfo from name");
        rpc_value_unref(to);
    }
    /* Nothing was created for the failed calls: the next remote() still
     * gets local ids 2 and 3. */
    r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_int(1), rt_int(1), NULL));
    g_assert_cmpint(rpc_rref_id(R(r)).local_id, ==, 2);
    g_assert_cmpint(rpc_rref_fork_id(R(r)).local_id, ==, 3);
    rpc_value_unref(r);
}

static void
test_send_to_rank_remote(void)
{
    rt_run_world(NULL, -1, body_send_to_rank_remote, NULL);
}

static void
test_pg_init_no_rpc_init(void)
{
    RpcTestOptions o = {.no_init = TRUE, .shutdown = RT_SHUTDOWN_NONE};
    RpcTestCtx *ctx = rt_new(&o);
    GError *err = NULL;
    g_assert_null(rt_agent(ctx, 0));
    g_assert_null(rpc_rref_new_local(rt_agent(ctx, 0), rt_ones(2, 2), &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME,
                       "Current RPC agent is not set! Did you initialize the RPC framework (e.g. "
                       "calling `rpc.init_rpc`)?");
    rt_free(ctx);
}

static void
body_py_class_methods(RpcTestCtx *ctx, gint rank)
{
    gint next = rt_next(ctx, rank, 1);
    gint64 n = rank + 1;
    /* test_py_class_constructor */
    RpcValue *v = sync_ok(ctx, rank, next, "MyClass", rt_args(rt_int(n), NULL));
    RpcObject *o = rpc_value_get_object(v);
    g_assert_nonnull(o);
    g_assert_true(rpc_object_class(o) == &rpc_class_my_class);
    rt_assert_value(rpc_value_ref(rpc_object_get(o, "a")), rt_int(n));
    rpc_value_unref(v);
    /* test_py_class_instance_method: MyClass(2).my_instance_method */
    GError *err = NULL;
    RpcValue *obj =
        construct(rt_agent(ctx, rank), &rpc_class_my_class, rt_args(rt_int(2), NULL), NULL, &err);
    g_assert_no_error(err);
    rt_assert_value(
        sync_ok(ctx, rank, next, "MyClass.my_instance_method", rt_args(obj, rt_int(n), NULL)),
        rt_int(2 + n));
    /* test_py_class_method, test_py_class_static_method */
    rt_assert_value(sync_ok(ctx, rank, next, "MyClass.my_class_method",
                            rt_args(rt_int(n), rt_int(n + 1), NULL)),
                    rt_int(2 * n + 1));
    rt_assert_value(
        sync_ok(ctx, rank, next, "MyClass.my_static_method", rt_args(rt_int(n + 10), NULL)),
        rpc_value_new_bool(TRUE));
    rt_assert_value(sync_ok(ctx, rank, next, "MyClass.my_static_method", rt_args(rt_int(n), NULL)),
                    rpc_value_new_bool(FALSE));
}

static void
test_py_class_methods(void)
{
    rt_run_world(NULL, -1, body_py_class_methods, NULL);
}

/* --- §11.5 RRef semantics ------------------------------------------------------------ */

/* 61 test_builtin_remote_self */
static void
body_builtin_remote_self(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = remote_ok(ctx, rank, rank, "add", rt_args(rt_ones(2, 2), rt_ones(2, 2), NULL));
    g_assert_true(rpc_rref_is_owner(R(r)));
    GError *err = NULL;
    rt_assert_value(rpc_rref_local_value(R(r), &err), rt_full(2, 2, 2));
    g_assert_no_error(err);
    char want[96];
    g_snprintf(want, sizeof want, "OwnerRRef(GloballyUniqueId(created_on=%d, local_id=0))", rank);
    assert_repr(r, want);
    rpc_value_unref(r);
}

static void
test_builtin_remote_self(void)
{
    rt_run_world(NULL, -1, body_builtin_remote_self, NULL);
}

/* 62 test_multi_builtin_remote_ret */
static void
body_multi_builtin_remote_ret(RpcTestCtx *ctx, gint rank)
{
    enum { M = 10 };
    gint64 n = rank + 1;
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *rrefs[M];
    gint64 sizes[M];
    for (int i = 0; i < M; i++) {
        n = n + i;
        sizes[i] = n;
        rrefs[i] = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(n, n), rt_ones(n, n), NULL));
    }
    for (int i = 0; i < M; i++) {
        assert_to_here(rrefs[i], rt_full(sizes[i], sizes[i], 2));
        rpc_value_unref(rrefs[i]);
    }
}

static void
test_multi_builtin_remote_ret(void)
{
    rt_run_world(NULL, -1, body_multi_builtin_remote_ret, NULL);
}

/* 64 test_self_remote_rref_as_remote_arg / _rpc_arg / _self_rpc_arg */
static void
body_self_remote_rref_as_arg(RpcTestCtx *ctx, gint rank)
{
    gint dsts[] = {rt_next(ctx, rank, 1), rank};
    for (guint i = 0; i < G_N_ELEMENTS(dsts); i++) {
        RpcValue *rref = remote_ok(ctx, rank, rank, "my_function",
                                   rt_args(rt_ones(2, 2), rt_int(1), rt_int(3), NULL));
        /* remote(dst, add_rref_to_value, (rref, x)).to_here() == x + 4 + x */
        RpcValue *ret = remote_ok(ctx, rank, dsts[i], "add_rref_to_value",
                                  rt_args(rpc_value_ref(rref), rt_ones(2, 2), NULL));
        assert_to_here(ret, rt_full(2, 2, 6));
        rpc_value_unref(ret);
        /* the rpc_async / rpc_sync forms */
        RpcFuture *fut = rt_async(ctx, rank, dsts[i], "add_rref_to_value",
                                  rt_args(rpc_value_ref(rref), rt_ones(2, 2), NULL), UNSET);
        rt_assert_value(sync_ok(ctx, rank, dsts[i], "add_rref_to_value",
                                rt_args(rpc_value_ref(rref), rt_full(2, 2, 2), NULL)),
                        rt_full(2, 2, 7));
        rt_assert_wait(fut, rt_full(2, 2, 6));
        rpc_value_unref(rref);
    }
}

static void
test_self_remote_rref_as_arg(void)
{
    rt_run_world(NULL, -1, body_self_remote_rref_as_arg, NULL);
}

/* 65 test_py_rref_args (user → owner forks) */
static void
body_py_rref_args(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *a = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    RpcValue *b = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(2), NULL));
    RpcValue *c = remote_ok(ctx, rank, dst, "my_rref_function", rt_args(a, b, NULL));
    assert_to_here(c, rt_full(2, 2, 5));
    rpc_value_unref(c);
}

static void
test_py_rref_args(void)
{
    rt_run_world(NULL, -1, body_py_rref_args, NULL);
}

/* 67 test_py_rpc_rref_args */
static void
body_py_rpc_rref_args(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    gint64 n = rank + 1;
    RpcValue *a = remote_ok(ctx, rank, dst, "my_function",
                            rt_args(rt_ones(n, n), rt_int(2), rt_int(3), NULL));
    RpcValue *b = remote_ok(ctx, rank, dst, "my_function",
                            rt_args(rt_ones(n, n), rt_int(1), rt_int(4), NULL));
    rt_assert_value(sync_ok(ctx, rank, dst, "my_rref_function", rt_args(a, b, NULL)),
                    rt_full(n, n, 12)); /* 2·ones + 10 */
}

static void
test_py_rpc_rref_args(void)
{
    rt_run_world(NULL, -1, body_py_rpc_rref_args, NULL);
}

/* 68 test_nested_remote */
static void
body_nested_remote(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "nested_remote",
                            rt_args(rt_name(ctx, rt_next(ctx, rank, 2)), NULL));
    assert_to_here(r, ones_plus(2, 3));
    rpc_value_unref(r);
}

static void
test_nested_remote(void)
{
    rt_run_world(NULL, -1, body_nested_remote, NULL);
}

/* 70 test_rpc_return_rref (a user → user fork in a response) */
static void
body_rpc_return_rref(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = sync_ok(ctx, rank, rt_next(ctx, rank, 1), "rpc_return_rref",
                          rt_args(rt_name(ctx, rt_next(ctx, rank, 2)), NULL));
    g_assert_false(rpc_rref_is_owner(R(r)));
    g_assert_cmpint(rpc_rref_owner_id(R(r)), ==, rt_next(ctx, rank, 2));
    assert_to_here(r, ones_plus(2, 1));
    rpc_value_unref(r);
}

static void
test_rpc_return_rref(void)
{
    rt_run_world(NULL, -1, body_rpc_return_rref, NULL);
}

/* 71 test_rref_forward_chain */
static void
body_rref_forward_chain(RpcTestCtx *ctx, gint rank)
{
    const gint64 ttl = 8;
    gint64 n = rank + 1;
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *rref = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(n, n), rt_int(1), NULL));
    GError *err = NULL;
    RpcValue *ret = call_local(
        ctx, rank, "rref_forward_chain",
        rt_args(rt_int(dst), rt_int(ctx->n), rpc_value_ref(rref), rt_int(ttl), NULL), &err);
    g_assert_no_error(err);
    for (gint64 i = 0; i < ttl; i++) {
        g_assert_cmpint(rpc_value_type(ret), ==, RPC_VALUE_LIST);
        g_assert_cmpuint(rpc_value_list_len(ret), ==, 1);
        RpcValue *next = to_here_ok(rpc_value_list_get(ret, 0));
        rpc_value_unref(ret);
        ret = next;
    }
    rt_assert_value(ret, ones_plus(n, 1));
    rpc_value_unref(rref);
}

static void
test_rref_forward_chain(void)
{
    rt_run_world(NULL, -1, body_rref_forward_chain, NULL);
}

/* 73 test_local_value_not_on_owner */
static void
body_local_value_not_on_owner(RpcTestCtx *ctx, gint rank)
{
    gint next = rt_next(ctx, rank, 1);
    RpcValue *r = remote_ok(ctx, rank, next, "add", rt_args(rt_ones1(1), rt_ones1(1), NULL));
    GError *err = NULL;
    g_assert_null(rpc_rref_local_value(R(r), &err));
    char *want = g_strdup_printf(
        "For UserRRef(rref_id=GloballyUniqueId(created_on=%d, local_id=0), "
        "fork_id=GloballyUniqueId(created_on=%d, local_id=1)), can't call localValue() on user "
        "WorkerInfo(id=%d, name=worker%d). Call it on owner WorkerInfo(id=%d, name=worker%d)",
        rank, rank, rank, rank, next, next);
    assert_error_exact(&err, RPC_ERROR_RUNTIME, want);
    g_free(want);
    rpc_value_unref(r);
}

static void
test_local_value_not_on_owner(void)
{
    rt_run_world(NULL, -1, body_local_value_not_on_owner, NULL);
}

/* 74 test_rref_str */
static void
body_rref_str(RpcTestCtx *ctx, gint rank)
{
    RpcValue *own = local_rref(ctx, rank, rt_int(rank));
    char want[160];
    g_snprintf(want, sizeof want, "OwnerRRef(GloballyUniqueId(created_on=%d, local_id=0))", rank);
    assert_repr(own, want);
    RpcValue *user =
        remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    g_snprintf(want, sizeof want,
               "UserRRef(RRefId = GloballyUniqueId(created_on=%d, local_id=1), ForkId = "
               "GloballyUniqueId(created_on=%d, local_id=2))",
               rank, rank);
    assert_repr(user, want);
    /* the value form prints the same */
    char *s = rpc_value_repr(user);
    g_assert_cmpstr(s, ==, want);
    g_free(s);
    rpc_value_unref(own);
    rpc_value_unref(user);
}

static void
test_rref_str(void)
{
    rt_run_world(NULL, -1, body_rref_str, NULL);
}

/* 76 test_pass_local_rrefs (owner → user forks) */
static void
body_pass_local_rrefs(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *rref = local_rref(ctx, rank, rt_int(40));
    rt_assert_value(sync_ok(ctx, rank, dst, "add_rref_to_value",
                            rt_args(rpc_value_ref(rref), rt_int(50), NULL)),
                    rt_int(90));
    rt_assert_wait(rt_async(ctx, rank, dst, "add_rref_to_value",
                            rt_args(rpc_value_ref(rref), rt_int(50), NULL), UNSET),
                   rt_int(90));
    RpcValue *r = remote_ok(ctx, rank, dst, "add_rref_to_value",
                            rt_args(rpc_value_ref(rref), rt_int(50), NULL));
    assert_to_here(r, rt_int(90));
    rpc_value_unref(r);
    rpc_value_unref(rref);
}

static void
test_pass_local_rrefs(void)
{
    rt_run_world(NULL, -1, body_pass_local_rrefs, NULL);
}

/* 77 test_remote_same_worker */
static void
body_remote_same_worker(RpcTestCtx *ctx, gint rank)
{
    gint64 n = rank + 1;
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *a = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(n, n), rt_int(2), NULL));
    RpcValue *b = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(n, n), rt_int(1), NULL));
    RpcValue *c = remote_ok(ctx, rank, dst, "my_rref_function", rt_args(a, b, NULL));
    assert_to_here(c, ones_plus(n, 4));
    rpc_value_unref(c);
}

static void
test_remote_same_worker(void)
{
    rt_run_world(NULL, -1, body_remote_same_worker, NULL);
}

/* 79 test_owner_equality */
static void
body_owner_equality(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *a = local_rref(ctx, rank, rt_int(40));
    RpcValue *b = local_rref(ctx, rank, rt_int(50));
    RpcValue *oa = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    RpcValue *ob = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    rpc_value_unref(to_here_ok(oa));
    rpc_value_unref(to_here_ok(ob));
    RpcValue *wa = rpc_rref_owner(R(a)), *wb = rpc_rref_owner(R(b));
    RpcValue *woa = rpc_rref_owner(R(oa)), *wob = rpc_rref_owner(R(ob));
    g_assert_true(rpc_value_equal(woa, wob));
    g_assert_false(rpc_value_equal(wa, woa));
    g_assert_true(rpc_value_equal(wa, wb));
    GError *err = NULL;
    RpcValue *self = rpc_agent_get_worker_info(rt_agent(ctx, rank), NULL, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_value_equal(wa, self));
    g_assert_cmpstr(rpc_rref_owner_name(R(oa)), ==, rpc_value_worker_name(woa));
    /* a dict keyed by owner has 2 entries */
    GHashTable *by_owner = g_hash_table_new(g_direct_hash, g_direct_equal);
    RpcValue *owners[] = {wa, wb, woa, wob};
    for (guint i = 0; i < G_N_ELEMENTS(owners); i++)
        g_hash_table_add(by_owner, GINT_TO_POINTER(rpc_value_worker_id(owners[i])));
    g_assert_cmpuint(g_hash_table_size(by_owner), ==, 2);
    g_hash_table_unref(by_owner);
    rpc_value_unref(self);
    for (guint i = 0; i < G_N_ELEMENTS(owners); i++)
        rpc_value_unref(owners[i]);
    rpc_value_unref(a);
    rpc_value_unref(b);
    rpc_value_unref(oa);
    rpc_value_unref(ob);
}

static void
test_owner_equality(void)
{
    rt_run_world(NULL, -1, body_owner_equality, NULL);
}

/* 80 test_rref_proxy_tensor / _class / _reuse / _non_exist */
static RpcValue *
proxy_sync_ok(const RpcValue *rref, const char *m, RpcValue *args)
{
    GError *err = NULL;
    RpcValue *v = rpc_rref_proxy_sync(R(rref), m, args, NULL, UNSET, &err);
    g_assert_no_error(err);
    return v;
}

static RpcValue *
proxy_async_ok(const RpcValue *rref, const char *m, RpcValue *args)
{
    GError *err = NULL;
    RpcFuture *f = rpc_rref_proxy_async(R(rref), m, args, NULL, UNSET, &err);
    g_assert_no_error(err);
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_no_error(err);
    rpc_future_unref(f);
    return v;
}

static RpcValue *
proxy_remote_ok(const RpcValue *rref, const char *m, RpcValue *args)
{
    GError *err = NULL;
    RpcValue *r = rpc_rref_proxy_remote(R(rref), m, args, NULL, UNSET, &err);
    g_assert_no_error(err);
    RpcValue *v = to_here_ok(r);
    rpc_value_unref(r);
    return v;
}

typedef RpcValue *(*ProxyOk)(const RpcValue *rref, const char *m, RpcValue *args);
static const ProxyOk proxies[] = {proxy_sync_ok, proxy_async_ok, proxy_remote_ok};

static void
body_rref_proxy_tensor(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "my_function",
                            rt_args(rt_ones(2, 2), rt_int(1), rt_int(3), NULL));
    rt_assert_value(proxy_sync_ok(r, "size", NULL), rt_args(rt_int(2), rt_int(2), NULL));
    rt_assert_value(proxy_async_ok(r, "add", rt_args(rt_int(1), NULL)), rt_full(2, 2, 6));
    gint64 shape[2] = {1, 4};
    RpcValue *want = rpc_value_new_tensor(rpc_tensor_new_full(RPC_DTYPE_FLOAT32, 2, shape, 5.0));
    rt_assert_value(proxy_remote_ok(r, "view", rt_args(rt_int(1), rt_int(4), NULL)), want);
    /* sum(), and view() given one list */
    rt_assert_value(proxy_sync_ok(r, "sum", NULL),
                    rpc_value_new_tensor(rpc_tensor_new_scalar(RPC_DTYPE_FLOAT32, 20)));
    shape[0] = 4;
    shape[1] = 1;
    rt_assert_value(proxy_sync_ok(r, "view", rt_args(rt_args(rt_int(4), rt_int(1), NULL), NULL)),
                    rpc_value_new_tensor(rpc_tensor_new_full(RPC_DTYPE_FLOAT32, 2, shape, 5.0)));
    rpc_value_unref(r);
}

static void
test_rref_proxy_tensor(void)
{
    rt_run_world(NULL, -1, body_rref_proxy_tensor, NULL);
}

static void
body_rref_proxy_class(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "MyClass", rt_args(rt_int(7), NULL));
    for (guint i = 0; i < G_N_ELEMENTS(proxies); i++)
        rt_assert_value(proxies[i](r, "get_value", NULL), rt_int(7));
    for (guint i = 0; i < G_N_ELEMENTS(proxies); i++)
        rt_assert_value(proxies[i](r, "increment_value", rt_args(rt_int(1), NULL)),
                        rpc_value_none());
    for (guint i = 0; i < G_N_ELEMENTS(proxies); i++)
        rt_assert_value(proxies[i](r, "get_value", NULL), rt_int(10));
    for (guint i = 0; i < G_N_ELEMENTS(proxies); i++) {
        rt_assert_value(proxies[i](r, "my_instance_method", rt_args(rt_int(2), NULL)), rt_int(12));
        rt_assert_value(proxies[i](r, "my_static_method", rt_args(rt_int(12), NULL)),
                        rpc_value_new_bool(TRUE));
        rt_assert_value(proxies[i](r, "my_class_method", rt_args(rt_int(2), rt_int(3), NULL)),
                        rt_int(5));
    }
    rpc_value_unref(r);
}

static void
test_rref_proxy_class(void)
{
    rt_run_world(NULL, -1, body_rref_proxy_class, NULL);
}

/* test_rref_proxy_reuse: one proxy used many times (in C a proxy is just
 * (rref, api, timeout)); the type is fetched once. */
static void
body_rref_proxy_reuse(RpcTestCtx *ctx, gint rank)
{
    DetailCount *typeof_sends = ctx->data;
    guint before = typeof_sends->count;
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "my_function",
                            rt_args(rt_ones(2, 2), rt_int(1), rt_int(3), NULL));
    for (int i = 0; i < 10; i++) {
        rt_assert_value(proxy_sync_ok(r, "add", rt_args(rt_int(i), NULL)), rt_full(2, 2, 5 + i));
        rt_assert_value(proxy_async_ok(r, "add", rt_args(rt_int(i), NULL)), rt_full(2, 2, 5 + i));
        rt_assert_value(proxy_remote_ok(r, "add", rt_args(rt_int(i), NULL)), rt_full(2, 2, 5 + i));
    }
    /* Every rank runs this at the same instants: each fetched its type once. */
    g_assert_cmpuint(typeof_sends->count - before, <=, ctx->n);
    rpc_value_unref(r);
}

static void
test_rref_proxy_reuse(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    DetailCount *typeof_sends = watch_detail(ctx, "rpc.send", "_rref_typeof_on_owner");
    ctx->data = typeof_sends;
    rt_on(ctx, -1, body_rref_proxy_reuse);
    rt_run(ctx);
    g_assert_cmpuint(typeof_sends->count, ==, ctx->n);
    rt_free(ctx);
}

static void
body_rref_proxy_non_exist(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "my_function",
                            rt_args(rt_ones(2, 2), rt_int(1), rt_int(3), NULL));
    const char *msg = "type object 'Tensor' has no attribute 'non_exist'";
    GError *err = NULL;
    g_assert_null(rpc_rref_proxy_sync(R(r), "non_exist", NULL, NULL, UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, msg);
    RpcFuture *f = rpc_rref_proxy_async(R(r), "non_exist", NULL, NULL, UNSET, &err);
    g_assert_no_error(err);
    rt_assert_wait_error(f, RPC_ERROR_ATTRIBUTE, msg);
    g_assert_null(rpc_rref_proxy_remote(R(r), "non_exist", NULL, NULL, UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, msg);
    /* a class instance, and a plain value owned here */
    RpcValue *c = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "MyClass", rt_args(rt_int(1), NULL));
    g_assert_null(rpc_rref_proxy_sync(R(c), "non_exist", NULL, NULL, UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE,
                       "type object 'MyClass' has no attribute 'non_exist'");
    RpcValue *i = local_rref(ctx, rank, rt_int(5));
    g_assert_null(rpc_rref_proxy_sync(R(i), "bit_length", NULL, NULL, UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE,
                       "type object 'int' has no attribute 'bit_length'");
    rpc_value_unref(i);
    rpc_value_unref(c);
    rpc_value_unref(r);
}

static void
test_rref_proxy_non_exist(void)
{
    rt_run_world(NULL, -1, body_rref_proxy_non_exist, NULL);
}

/* 82 test_rref_type_blocking / non_blocking / with_error / owner */
static void
body_rref_type(RpcTestCtx *ctx, gint rank)
{
    DetailCount *typeof_sends = ctx->data;
    GError *err = NULL;
    RpcValue *r =
        remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_ones1(2), rt_int(1), NULL));
    guint before = typeof_sends->count;
    RpcFuture *first = rpc_rref_get_type(R(r), UNSET, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(typeof_sends->count, ==, before + 1);
    /* non-blocking calls while in flight return the same future */
    for (int i = 0; i < 10; i++) {
        RpcFuture *again = rpc_rref_get_type(R(r), UNSET, &err);
        g_assert_true(again == first);
        rpc_future_unref(again);
    }
    rt_assert_value(rpc_future_wait(first, &err), rt_str("Tensor"));
    g_assert_no_error(err);
    /* blocking calls after it: no more RPCs, the same cached future */
    for (int i = 0; i < 10; i++) {
        RpcFuture *again = rpc_rref_get_type(R(r), UNSET, &err);
        g_assert_true(again == first);
        rt_assert_value(rpc_future_wait(again, &err), rt_str("Tensor"));
        rpc_future_unref(again);
    }
    g_assert_cmpuint(typeof_sends->count, ==, before + 1);
    rpc_future_unref(first);
    rpc_value_unref(r);

    /* a class */
    r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "MyClass", rt_args(rt_int(0), NULL));
    RpcFuture *t = rpc_rref_get_type(R(r), UNSET, &err);
    rt_assert_wait(t, rt_str("MyClass"));
    rpc_value_unref(r);

    /* test_rref_type_with_error: the stored error, with its kind */
    r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "raise_func", NULL);
    t = rpc_rref_get_type(R(r), UNSET, &err);
    rt_assert_wait_error(t, RPC_ERROR_VALUE, "Expected error");
    /* a failed fetch is not cached: asking again sends again */
    guint n = typeof_sends->count;
    t = rpc_rref_get_type(R(r), UNSET, &err);
    g_assert_cmpuint(typeof_sends->count, ==, n + 1);
    rt_assert_wait_error(t, RPC_ERROR_VALUE, "Expected error");
    rpc_value_unref(r);

    /* test_rref_type_owner: local, no RPC; a builtin's error keeps its kind */
    n = typeof_sends->count;
    r = local_rref(ctx, rank, rt_int(3));
    t = rpc_rref_get_type(R(r), UNSET, &err);
    RpcFuture *t2 = rpc_rref_get_type(R(r), UNSET, &err);
    g_assert_true(t == t2);
    rpc_future_unref(t2);
    rt_assert_wait(t, rt_str("int"));
    rpc_value_unref(r);
    r = remote_ok(ctx, rank, rank, "raise_func", NULL);
    rt_assert_wait_error(rpc_rref_get_type(R(r), UNSET, &err), RPC_ERROR_VALUE, "Expected error");
    rpc_value_unref(r);
    r = remote_ok(ctx, rank, rank, "add", rt_args(rt_ones1(10), rt_ones1(5), NULL));
    rt_assert_wait_error(rpc_rref_get_type(R(r), UNSET, &err), RPC_ERROR_RUNTIME,
                         "The size of tensor a (10) must match the size of tensor b (5)");
    rpc_value_unref(r);
    g_assert_cmpuint(typeof_sends->count, ==, n);
}

static void
test_rref_type(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    DetailCount *typeof_sends = watch_detail(ctx, "rpc.send", "_rref_typeof_on_owner");
    ctx->data = typeof_sends;
    rt_on(ctx, 0, body_rref_type);
    rt_run(ctx);
    g_assert_cmpuint(typeof_sends->count, ==, 4); /* Tensor, MyClass, the error twice */
    rt_free(ctx);
}

/* 83 test_user_rrefs_confirmed (+_remote) */
static void
body_user_rrefs_confirmed(RpcTestCtx *ctx, gint rank)
{
    RpcValue *rref = remote_ok(ctx, rank, rt_next(ctx, rank, 2), "add",
                               rt_args(rt_full(2, 2, 0), rt_int(1), NULL));
    rt_assert_value(sync_ok(ctx, rank, rt_next(ctx, rank, 1), "check_rref_confirmed",
                            rt_args(rpc_value_ref(rref), NULL)),
                    rpc_value_new_bool(TRUE));
    RpcValue *r = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "check_rref_confirmed",
                            rt_args(rpc_value_ref(rref), NULL));
    assert_to_here(r, rpc_value_new_bool(TRUE));
    rpc_value_unref(r);
    rpc_value_unref(rref);
}

static void
test_user_rrefs_confirmed(void)
{
    rt_run_world(NULL, -1, body_user_rrefs_confirmed, NULL);
}

/* §14: confirmed_by_owner() of a fresh remote() is False, True once the
 * REMOTE_RET arrived; an owner → user child is False (1.13). */
static void
body_confirmed_by_owner(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r =
        remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_int(1), rt_int(1), NULL));
    g_assert_false(rpc_rref_confirmed_by_owner(R(r)));
    assert_to_here(r, rt_int(2));
    g_assert_true(rpc_rref_confirmed_by_owner(R(r)));
    rpc_value_unref(r);
    RpcValue *list = sync_ok(ctx, rank, rt_next(ctx, rank, 1), "get_rref_list",
                             rt_args(rt_args(rt_int(1), NULL), NULL));
    g_assert_false(rpc_rref_confirmed_by_owner(R(rpc_value_list_get(list, 0))));
    rpc_value_unref(list);
    RpcValue *own = local_rref(ctx, rank, rt_int(1));
    g_assert_true(rpc_rref_confirmed_by_owner(R(own)));
    rpc_value_unref(own);
}

static void
test_confirmed_by_owner(void)
{
    rt_run_world(NULL, 0, body_confirmed_by_owner, NULL);
}

/* 85 test_rref_py_pickle_not_supported */
static void
body_rref_py_pickle_not_supported(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r = local_rref(ctx, rank, rt_int(35));
    GError *err = NULL;
    g_assert_null(rpc_codec_encode(r, NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME,
                       "Can not pickle rref in python pickler, rref can only be pickled when "
                       "using RPC");
    /* the unpickling half: an "RRef" extension without RPC's hooks */
    static const guint8 ext[] = {0x0c, 4, 0, 0, 0, 'R', 'R', 'e', 'f', 0x00};
    g_assert_null(rpc_codec_decode(ext, sizeof ext, NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME,
                       "Can not unpickle rref in python pickler, rref can only be unpickled when "
                       "using RPC");
    rpc_value_unref(r);
}

static void
test_rref_py_pickle_not_supported(void)
{
    rt_run_world(NULL, 0, body_rref_py_pickle_not_supported, NULL);
}

/* 86 test_use_rref_after_shutdown */
static void
body_use_rref_after_shutdown(RpcTestCtx *ctx, gint rank)
{
    gint64 n = rank + 1;
    RpcValue *rref = remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add",
                               rt_args(rt_ones(n, n), rt_ones(n, n), NULL));
    GError *err = NULL;
    g_assert_true(rpc_agent_shutdown(rt_agent(ctx, rank), TRUE, 0, &err));
    g_assert_no_error(err);
    char *s = rpc_rref_repr(R(rref));
    g_assert_null(rpc_rref_to_here(R(rref), UNSET, &err));
    char *want = g_strdup_printf(
        "UserRRef(rref_id=GloballyUniqueId(created_on=%d, local_id=0), "
        "fork_id=GloballyUniqueId(created_on=%d, local_id=1)) has been deleted. Cannot call "
        "to_here() on it after deletion.",
        rank, rank);
    assert_error_exact(&err, RPC_ERROR_RUNTIME, want);
    g_free(want);
    /* internal.serialize(rref): the RPC pickler itself */
    const char *ext = NULL;
    RpcValue *wire = NULL;
    g_assert_false(rpc_rref_pickle(rt_agent(ctx, rank), rref, &ext, &wire, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "Cannot call fork an UserRRef after deletion.");
    g_free(s);
    /* the proxies and _get_type need a running agent */
    g_assert_null(rpc_rref_proxy_sync(R(rref), "sum", NULL, NULL, UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RPC has not been initialized");
    g_assert_null(rpc_rref_proxy_async(R(rref), "sum", NULL, NULL, UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RPC has not been initialized");
    g_assert_null(rpc_rref_get_type(R(rref), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RPC has not been initialized");
    rpc_value_unref(rref);
}

static void
test_use_rref_after_shutdown(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE};
    rt_run_world(&o, -1, body_use_rref_after_shutdown, NULL);
}

/* test_rref_context_debug_info: a local RRef is not in owners_ until it is
 * shared; sharing it and remote() update the owner's tables. */
static void
body_rref_context_debug_info(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *rref1 = local_rref(ctx, rank, rt_int(rank));
    RpcRRefDebugInfo d = info(ctx, rank);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 0);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    rt_barrier(ctx, rank);
    /* set_global_rref: the callee keeps the RRef */
    rpc_value_unref(sync_ok(ctx, rank, dst, "set_value", rt_args(rpc_value_ref(rref1), NULL)));
    wait_flushed(ctx, rank);
    rt_barrier(ctx, rank);
    d = info(ctx, rank);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 1);
    g_assert_cmpuint(d.num_forks, ==, 1);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    rt_barrier(ctx, rank);
    /* clear_global_rref: the callee's user goes, so does the owner's entry */
    rpc_value_unref(sync_ok(ctx, rank, dst, "set_value", rt_args(rpc_value_none(), NULL)));
    wait_owners_forks(ctx, rank, 0, 0, rank);
    rt_barrier(ctx, rank);
    RpcValue *rref2 = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    RpcValue *rref3 = remote_ok(ctx, rank, dst, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    rpc_value_unref(to_here_ok(rref2));
    rpc_value_unref(to_here_ok(rref3));
    wait_flushed(ctx, rank);
    rt_barrier(ctx, rank);
    d = info(ctx, rank);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 2);
    g_assert_cmpuint(d.num_forks, ==, 2);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    g_assert_cmpuint(d.num_confirmed_users, ==, 2);
    rt_barrier(ctx, rank);
    rpc_value_unref(rref1);
    rpc_value_unref(rref2);
    rpc_value_unref(rref3);
}

static void
test_rref_context_debug_info(void)
{
    rt_run_world(NULL, -1, body_rref_context_debug_info, NULL);
}

/* test_return_local_rrefs: owner → user forks in a response, then user →
 * owner forks back as arguments; the owner's objects are mutated in place. */
static void
body_return_local_rrefs(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *list = sync_ok(ctx, rank, dst, "get_rref_list",
                             rt_args(rt_args(rt_int(1), rt_int(2), rt_int(3), NULL), NULL));
    g_assert_cmpuint(rpc_value_list_len(list), ==, 3);
    for (guint i = 0; i < 3; i++) {
        RpcRRef *r = R(rpc_value_list_get(list, i));
        g_assert_cmpint(rpc_rref_owner_id(r), ==, dst);
        rpc_value_unref(
            sync_ok(ctx, rank, dst, "call_method_on_rref",
                    rt_args(rt_str("MyClass.increment_value"),
                            rpc_value_ref(rpc_value_list_get(list, i)), rt_int(10), NULL)));
    }
    for (guint i = 0; i < 3; i++)
        rt_assert_value(
            sync_ok(ctx, rank, dst, "call_method_on_rref",
                    rt_args(rt_str("get_value"), rpc_value_ref(rpc_value_list_get(list, i)), NULL)),
            rt_int(11 + i));
    /* a method of another class, or one that does not exist */
    GError *err = NULL;
    g_assert_null(rt_sync(ctx, rank, dst, "call_method_on_rref",
                          rt_args(rt_str("AsyncExecutionClass.bound_async_add"),
                                  rpc_value_ref(rpc_value_list_get(list, 0)), NULL),
                          UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE,
                    "bound_async_add() requires a 'AsyncExecutionClass' object");
    g_assert_null(rt_sync(ctx, rank, dst, "call_method_on_rref",
                          rt_args(rt_str("nope"), rpc_value_ref(rpc_value_list_get(list, 0)), NULL),
                          UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_ATTRIBUTE, "'MyClass' object has no attribute 'nope'");
    g_assert_null(rt_sync(ctx, rank, dst, "call_method_on_rref",
                          rt_args(rt_str("a"), rpc_value_ref(rpc_value_list_get(list, 0)), NULL),
                          UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "'int' object is not callable");
    g_assert_null(
        rt_sync(ctx, rank, dst, "call_method_on_rref", rt_args(rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "takes a method name and an RRef");
    rpc_value_unref(list);
}

static void
test_return_local_rrefs(void)
{
    rt_run_world(NULL, -1, body_return_local_rrefs, NULL);
}

/* --- timeouts (cases 56, 58) -------------------------------------------------------- */

/* 56 test_rref_timeout */
static void
body_rref_timeout(RpcTestCtx *ctx, gint rank)
{
    RpcValue *rref = remote_t(ctx, rank, 1, "my_sleep_func", rt_args(rt_int(2), NULL), 10 * RPC_MS);
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(rpc_rref_creation_future(R(rref)), &err);
    g_assert_null(v);
    assert_error_exact(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(10));
    g_assert_cmpint(rt_now(ctx), ==, 10 * RPC_MS);
    wait_flushed(ctx, rank);
    g_assert_null(rpc_rref_to_here(R(rref), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    /* forking it fails the same way, synchronously */
    g_assert_null(
        rt_sync(ctx, rank, 2, "rref_to_here", rt_args(rpc_value_ref(rref), NULL), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    wait_owners_forks(ctx, rank, 1, 1, 1);
    rpc_value_unref(rref);
    /* the owner learns: its (owners, forks) drop to (0, 0) */
    wait_owners_forks(ctx, rank, 0, 0, 1);
}

static void
test_rref_timeout(void)
{
    rt_run_world(NULL, 0, body_rref_timeout, NULL);
}

/* 58 test_rref_proxy_timeout, for api in {rpc_sync, rpc_async, remote} */
typedef enum { API_SYNC, API_ASYNC, API_REMOTE } Api;

/* rref.<api>(timeout).m(args): the error, whichever step raised it. */
static void
proxy_call_expect_error(const RpcValue *rref, Api api, const char *m, RpcValue *args,
                        RpcTime timeout, const char *exact)
{
    GError *err = NULL;
    if (api == API_SYNC) {
        g_assert_null(rpc_rref_proxy_sync(R(rref), m, args, NULL, timeout, &err));
    } else if (api == API_ASYNC) {
        RpcFuture *f = rpc_rref_proxy_async(R(rref), m, args, NULL, timeout, &err);
        g_assert_no_error(err);
        g_assert_null(rpc_future_wait(f, &err));
        rpc_future_unref(f);
    } else {
        RpcValue *r = rpc_rref_proxy_remote(R(rref), m, args, NULL, timeout, &err);
        if (r != NULL) {
            g_assert_null(rpc_future_wait(rpc_rref_creation_future(R(r)), &err));
            rpc_value_unref(r);
        }
    }
    assert_error_exact(&err, RPC_ERROR_RUNTIME, exact);
}

static void
body_rref_proxy_timeout(RpcTestCtx *ctx, gint rank)
{
    gint dst = rt_next(ctx, rank, 1);
    for (Api api = API_SYNC; api <= API_REMOTE; api++) {
        RpcValue *rref = remote_ok(ctx, rank, dst, "MyClass", rt_args(rt_ones(2, 2), NULL));
        rpc_value_unref(to_here_ok(rref));
        SimTime t0 = rt_now(ctx);
        proxy_call_expect_error(rref, api, "my_slow_method", rt_args(rt_ones(2, 2), NULL),
                                2 * RPC_S, TIMEOUT_MSG(2000));
        g_assert_cmpint(rt_now(ctx), ==, t0 + 2 * RPC_S);
        /* rpc.remote() stuck in the 2 s constructor: the type fetch times out */
        RpcValue *slow = remote_ok(ctx, rank, dst, "MyClass",
                                   rt_args(rt_ones(2, 2), rpc_value_new_bool(TRUE), NULL));
        t0 = rt_now(ctx);
        proxy_call_expect_error(slow, api, "my_instance_method", rt_args(rt_ones(2, 2), NULL),
                                10 * RPC_MS, TIMEOUT_MSG(10));
        g_assert_cmpint(rt_now(ctx), ==, t0 + 10 * RPC_MS);
        RpcValue *obj = to_here_ok(slow);
        g_assert_cmpint(rt_now(ctx), ==, t0 + 2 * RPC_S);
        g_assert_nonnull(rpc_value_get_object(obj));
        /* the failed type fetch was not cached: the proxy works now */
        GError *err = NULL;
        RpcValue *v = rpc_rref_proxy_sync(R(slow), "get_value", NULL, NULL, UNSET, &err);
        g_assert_no_error(err);
        rt_assert_value(v, rt_ones(2, 2));
        rpc_value_unref(obj);
        rpc_value_unref(slow);
        rpc_value_unref(rref);
    }
}

static void
test_rref_proxy_timeout(void)
{
    rt_run_world(NULL, -1, body_rref_proxy_timeout, NULL);
}

/* --- async_execution with remote() and classes (cases 91, 92, 94, 95, 97) -------------- */

static void
body_async_remote_modes(RpcTestCtx *ctx, gint rank)
{
    gint dst1 = rt_next(ctx, rank, 1), dst2 = rt_next(ctx, rank, 2);
    /* 91: future_ctor / chained / nested → ones + 3 */
    const char *f91[] = {"async_add_with_future_ctor", "async_add_chained", "async_add_nested"};
    for (guint i = 0; i < G_N_ELEMENTS(f91); i++) {
        RpcValue *r =
            remote_ok(ctx, rank, dst1, f91[i],
                      rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_int(1), rt_int(2), NULL));
        assert_to_here(r, ones_plus(2, 3));
        rpc_value_unref(r);
    }
    /* 94: multi_chained / multi_fanout → ones + 60 */
    const char *f94[] = {"async_add_chained_multi", "async_add_multi_fanout"};
    for (guint i = 0; i < G_N_ELEMENTS(f94); i++) {
        RpcValue *r =
            remote_ok(ctx, rank, dst1, f94[i],
                      rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_int(20), rt_int(3), NULL));
        assert_to_here(r, ones_plus(2, 60));
        rpc_value_unref(r);
    }
    /* 95: async_raise_func → RuntimeError "Expected error" at to_here */
    RpcValue *r = remote_ok(ctx, rank, dst1, "async_raise_func", NULL);
    GError *err = NULL;
    g_assert_null(rpc_rref_to_here(R(r), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "Expected error");
    rpc_value_unref(r);
    /* async_wrong_type through remote(): the owner stores the cast error */
    r = remote_ok(ctx, rank, dst1, "async_wrong_type", NULL);
    g_assert_null(rpc_rref_to_here(R(r), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "Functions decorated with @rpc.async_function must return a "
                    "torch.futures.Future object,");
    rpc_value_unref(r);
}

static void
test_async_remote_modes(void)
{
    rt_run_world(NULL, -1, body_async_remote_modes, NULL);
}

/* 92 test_async_static_method / test_async_class_method (sync, async and
 * remote modes), and test_async_class_rref_proxy. */
static void
body_async_class_methods(RpcTestCtx *ctx, gint rank)
{
    gint dst1 = rt_next(ctx, rank, 1), dst2 = rt_next(ctx, rank, 2);
    const char *fns[] = {"AsyncExecutionClass.static_async_add",
                         "AsyncExecutionClass.class_async_add"};
    for (guint i = 0; i < G_N_ELEMENTS(fns); i++) {
        rt_assert_value(
            sync_ok(ctx, rank, dst1, fns[i],
                    rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_int(1), rt_int(2), NULL)),
            ones_plus(2, 3));
        rt_assert_wait(
            rt_async(ctx, rank, dst1, fns[i],
                     rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_int(1), rt_int(2), NULL), UNSET),
            ones_plus(2, 3));
        RpcValue *r =
            remote_ok(ctx, rank, dst1, fns[i],
                      rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_int(1), rt_int(2), NULL));
        assert_to_here(r, ones_plus(2, 3));
        rpc_value_unref(r);
    }
    /* test_async_class_rref_proxy: x + x + y with x = ones, y = ones + 1,
     * three times → 3 · 4 · x, through each proxy */
    RpcValue *rref = remote_ok(ctx, rank, dst1, "AsyncExecutionClass", NULL);
    const char *methods[] = {"static_async_add", "class_async_add", "bound_async_add"};
    for (guint p = 0; p < G_N_ELEMENTS(proxies); p++) {
        RpcValue *total = NULL;
        for (guint m = 0; m < G_N_ELEMENTS(methods); m++) {
            RpcValue *v = proxies[p](
                rref, methods[m],
                rt_args(rt_name(ctx, dst2), rt_ones(2, 2), rt_ones(2, 2), rt_full(2, 2, 2), NULL));
            if (total == NULL) {
                total = v;
            } else {
                GError *err = NULL;
                RpcValue *sum = rpc_stdlib_arith(0, total, v, &err);
                g_assert_no_error(err);
                rpc_value_unref(total);
                rpc_value_unref(v);
                total = sum;
            }
        }
        rt_assert_value(total, rt_full(2, 2, 12));
    }
    rpc_value_unref(rref);
}

static void
test_async_class_methods(void)
{
    rt_run_world(NULL, -1, body_async_class_methods, NULL);
}

/* 97 test_my_parameter_server: the trainer runs on the 3 other ranks. */
static RpcValue *
trainer_func(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    const RpcValue *rref = rpc_value_list_get(args, 0);
    gint me = rpc_agent_id(self);
    for (gint64 i = 0; i < 10; i++) {
        RpcValue *grad = rt_full(2, 2, (double)(me * 100 + i));
        RpcFuture *fut = rpc_rref_proxy_async(
            R(rref), "average", rt_args(rpc_value_ref((RpcValue *)rref), rt_int(i), grad, NULL),
            NULL, UNSET, error);
        if (fut == NULL)
            return NULL;
        RpcValue *gradient = rpc_future_wait(fut, error);
        rpc_future_unref(fut);
        if (gradient == NULL)
            return NULL;
        RpcValue *ps_gradient =
            rpc_rref_proxy_sync(R(rref), "get_gradient",
                                rt_args(rpc_value_ref((RpcValue *)rref), NULL), NULL, UNSET, error);
        if (ps_gradient == NULL) {
            rpc_value_unref(gradient);
            return NULL;
        }
        g_assert_true(rpc_value_equal(gradient, ps_gradient));
        rpc_value_unref(gradient);
        rpc_value_unref(ps_gradient);
    }
    return rpc_value_none();
}

static const RpcFunctionDef trainer_def = {
    "_trainer_func", NULL, trainer_func, 0, 0, -1, "test_my_parameter_server's trainer"};

static void
body_my_parameter_server(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    RpcValue *ps = construct(rt_agent(ctx, rank), &rpc_class_my_parameter_server,
                             rt_args(rt_int(ctx->n - 1), NULL), NULL, &err);
    g_assert_no_error(err);
    RpcValue *ps_rref = local_rref(ctx, rank, ps);
    RpcFuture *futs[8];
    for (guint index = 1; index < ctx->n; index++)
        futs[index - 1] = rt_async(ctx, rank, rt_next(ctx, rank, index), "_trainer_func",
                                   rt_args(rpc_value_ref(ps_rref), NULL), UNSET);
    RpcValue *all = rpc_future_wait_all(rt_executor(ctx, rank), futs, ctx->n - 1, &err);
    g_assert_no_error(err);
    rpc_value_unref(all);
    for (guint i = 0; i + 1 < ctx->n; i++)
        rpc_future_unref(futs[i]);
    /* The last iteration's average: the total is never reset (as in
     * PyTorch's test), so it sums all 10 iterations of the 3 trainers. */
    RpcValue *v = rpc_rref_local_value(R(ps_rref), &err);
    RpcObject *o = rpc_value_get_object(v);
    double total = 0;
    for (guint index = 1; index < ctx->n; index++)
        for (gint64 i = 0; i < 10; i++)
            total += rt_next(ctx, rank, index) * 100 + i;
    rt_assert_value(rpc_value_ref(rpc_object_get(o, "gradient")),
                    rt_full(2, 2, total / (ctx->n - 1)));
    rt_assert_value(rpc_value_ref(rpc_object_get(o, "iteration")), rt_int(9));
    rpc_value_unref(v);
    rpc_value_unref(ps_rref);
}

static void
test_my_parameter_server(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    for (guint r = 0; r < ctx->n; r++)
        rpc_registry_add(rpc_agent_registry(rt_agent(ctx, (gint)r)), &trainer_def);
    rt_on(ctx, -1, body_my_parameter_server);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- §11.8 the faulty agent (cases 109, 110, 112) ---------------------------------- */

/* The faulty fixture (spec §10) with overrides: fail (NULL: keep the four
 * retryable types) and the delays replaced by delay_type (NULL: none). */
static RpcTestCtx *
faulty_world(const char *const *fail, guint n_fail, const char *delay_type, SimTime delay)
{
    RpcTestOptions o = {.pytorch_faults = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    for (guint w = 0; w < ctx->n; w++) {
        SimFaults *f = sim_world_faults(ctx->w, w);
        GError *err = NULL;
        if (fail != NULL) {
            sim_faults_clear_fail_types(f);
            for (guint i = 0; i < n_fail; i++)
                g_assert_true(sim_faults_add_fail(f, fail[i], &err));
        }
        sim_faults_clear_delay_types(f);
        if (delay_type != NULL)
            g_assert_true(sim_faults_add_delay(f, delay_type, delay, &err));
        g_assert_no_error(err);
    }
    return ctx;
}

typedef struct {
    const char *func;
    gboolean builtin;
    gint dst; /* -1: next */
} DroppedCase;

static void
body_remote_message_dropped_timeout(RpcTestCtx *ctx, gint rank)
{
    const DroppedCase *dc = ctx->data;
    gint dst = dc->dst < 0 ? rt_next(ctx, rank, 1) : dc->dst;
    RpcValue *args = dc->builtin ? rt_args(rt_int(1), rt_int(1), NULL) : rt_args(rt_int(2), NULL);
    RpcValue *rref = remote_ok(ctx, rank, dst, dc->func, args);
    /* The send failed synchronously: the creation future is already done. */
    g_assert_true(rpc_future_done(rpc_rref_creation_future(R(rref))));
    GError *err = NULL;
    g_assert_null(rpc_future_wait(rpc_rref_creation_future(R(rref)), &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RPCErr:2:Send attempt failed intentionally for");
    wait_flushed(ctx, rank);
    g_assert_null(rpc_rref_to_here(R(rref), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    if (dst == rank) { /* local_value checks the flag as well */
        g_assert_null(rpc_rref_local_value(R(rref), &err));
        assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
        g_assert_null(rpc_rref_proxy_sync(R(rref), "sum", NULL, NULL, UNSET, &err));
        assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    }
    g_assert_cmpuint(info(ctx, dst).num_owner_rrefs, ==, 0);
    rpc_value_unref(rref);
    g_assert_cmpint(rt_now(ctx), ==, 0);
}

static void
test_remote_message_dropped_timeout(gconstpointer data)
{
    const DroppedCase *dc = data;
    const char *fail[] = {dc->builtin ? "SCRIPT_REMOTE_CALL" : "PYTHON_REMOTE_CALL"};
    RpcTestCtx *ctx = faulty_world(fail, 1, NULL, 0);
    ctx->data = (gpointer)dc;
    rt_on(ctx, 0, body_remote_message_dropped_timeout);
    rt_run(ctx);
    rt_free(ctx);
}

static const DroppedCase dropped_builtin = {"add", TRUE, -1};
static const DroppedCase dropped_builtin_self = {"add", TRUE, 0};
static const DroppedCase dropped_udf = {"my_sleep_func", FALSE, -1};
static const DroppedCase dropped_udf_self = {"my_sleep_func", FALSE, 0};

/* 110 test_udf_remote_message_delay_timeout (+_to_self) */
static void
body_udf_remote_message_delay_timeout(RpcTestCtx *ctx, gint rank)
{
    gint dst = GPOINTER_TO_INT(ctx->data) < 0 ? rt_next(ctx, rank, 1) : GPOINTER_TO_INT(ctx->data);
    RpcValue *rref = remote_t(ctx, rank, dst, "my_sleep_func", rt_args(rt_int(2), NULL), RPC_MS);
    GError *err = NULL;
    g_assert_null(rpc_future_wait(rpc_rref_creation_future(R(rref)), &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(1));
    g_assert_cmpint(rt_now(ctx), ==, RPC_MS);
    wait_flushed(ctx, rank);
    g_assert_null(rpc_rref_to_here(R(rref), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    if (dst != rank) {
        RpcValue *slow =
            remote_t(ctx, rank, dst, "my_sleep_func", rt_args(rt_int(2), NULL), 2 * RPC_S);
        SimTime t0 = rt_now(ctx);
        g_assert_null(rpc_rref_to_here(R(slow), RPC_MS, &err));
        assert_error_exact(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(1));
        g_assert_cmpint(rt_now(ctx), ==, t0 + RPC_MS);
        /* Both REMOTE_CALLs are written 2 s after they were sent. */
        wait_owners_forks(ctx, rank, 2, 2, dst);
        g_assert_cmpint(rt_now(ctx), >=, t0 + 2 * RPC_S);
        rpc_value_unref(slow);
    }
    rpc_value_unref(rref);
}

static void
test_udf_remote_message_delay_timeout(gconstpointer data)
{
    static const char *const none[] = {NULL};
    RpcTestCtx *ctx = faulty_world(none, 0, "PYTHON_REMOTE_CALL", 2 * RPC_S);
    ctx->data = (gpointer)data;
    rt_on(ctx, 0, body_udf_remote_message_delay_timeout);
    rt_run(ctx);
    rt_free(ctx);
}

/* 112 test_rref_to_here_timeout */
static void
body_rref_to_here_timeout(RpcTestCtx *ctx, gint rank)
{
    RpcValue *rref = remote_ok(ctx, rank, 1, "add", rt_args(rt_int(1), rt_int(1), NULL));
    GError *err = NULL;
    g_assert_null(rpc_rref_to_here(R(rref), 10 * RPC_MS, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(10));
    g_assert_cmpint(rt_now(ctx), ==, 10 * RPC_MS);
    rt_assert_value(rpc_rref_to_here(R(rref), UNSET, &err), rt_int(2));
    g_assert_no_error(err);
    g_assert_cmpint(rt_now(ctx), ==, 10 * RPC_MS + RPC_S);
    rpc_value_unref(rref);
}

static void
test_rref_to_here_timeout(void)
{
    RpcTestCtx *ctx = faulty_world(NULL, 0, "SCRIPT_RREF_FETCH_CALL", RPC_S);
    rt_on(ctx, 0, body_rref_to_here_timeout);
    rt_run(ctx);
    rt_free(ctx);
}

/* The fixture's retried control messages: FORK_REQUEST, CHILD_ACCEPT and
 * USER_DELETE each fail 3 times, so each gets through on its attempt at
 * +3.5 s (attempts at +0, +1, +2 fail; §3.6, §10). */
static void
body_faulty_control_messages(RpcTestCtx *ctx, gint rank)
{
    TimeLog *fails = ctx->data;
    RpcValue *a = remote_ok(ctx, rank, 1, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    assert_to_here(a, ones_plus(2, 1));
    g_assert_cmpint(rt_now(ctx), ==, 0);
    /* worker2 gets a user → user child: its FORK_REQUEST to worker1 fails
     * at 0, 1, 2 s and gets through at 3.5 s; only then does the call run. */
    rt_assert_value(sync_ok(ctx, rank, 2, "rref_to_here", rt_args(rpc_value_ref(a), NULL)),
                    ones_plus(2, 1));
    g_assert_cmpint(rt_now(ctx), ==, 3500 * RPC_MS);
    RpcRRefDebugInfo d = info(ctx, 0);
    g_assert_cmpuint(d.num_pending_children, ==, 1);
    /* worker2 dropped its child right after the call.  Its USER_DELETE got
     * through at once: the faulty agent keys on payload bytes alone, and a
     * USER_DELETE carries the same (rrefId, forkId) bytes as the
     * FORK_REQUEST that already failed 3 times — as in PyTorch, where both
     * are ForkMessageBase payloads. */
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 1);
    /* worker2's CHILD_ACCEPT fails at 3.5, 4.5, 5.5 s and arrives at 7 s */
    rt_sleep(ctx, rank, 3500 * RPC_MS - 1);
    g_assert_cmpuint(info(ctx, 0).num_pending_children, ==, 1);
    rt_sleep(ctx, rank, 2);
    g_assert_cmpuint(info(ctx, 0).num_pending_children, ==, 0);
    rpc_value_unref(a);
    /* ours: sent at 7 s + 1 ns, through at 10.5 s + 1 ns */
    rt_sleep(ctx, rank, 3500 * RPC_MS - 1);
    g_assert_cmpuint(info(ctx, 1).num_owner_rrefs, ==, 1);
    rt_sleep(ctx, rank, 2);
    g_assert_cmpuint(info(ctx, 1).num_owner_rrefs, ==, 0);
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 0);
    /* Every failed attempt: FORK_REQUEST (worker2) at 0, 1, 2 s;
     * CHILD_ACCEPT (worker2) at 3.5, 4.5, 5.5 s; USER_DELETE (worker0) at
     * 7, 8, 9 s (+ 1 ns). */
    const SimTime want[] = {0,
                            RPC_S,
                            2 * RPC_S,
                            3500 * RPC_MS,
                            4500 * RPC_MS,
                            5500 * RPC_MS,
                            7 * RPC_S + 1,
                            8 * RPC_S + 1,
                            9 * RPC_S + 1};
    assert_times(fails, G_N_ELEMENTS(want), want);
}

static void
test_faulty_control_messages(void)
{
    RpcTestCtx *ctx = faulty_world(NULL, 0, NULL, 0);
    ctx->data = watch_times(ctx, "fault.fail_send", -2);
    rt_on(ctx, 0, body_faulty_control_messages);
    rt_run(ctx);
    rt_free(ctx);
}

/* test_rref_leak / test_ignore_rref_leak: with the user deletes skipped
 * (PyTorch mocks _delete_all_user_and_unforked_owner_rrefs; a non-graceful
 * shutdown skips them too), every owner still has its predecessor's fork
 * at the leak check. */
static void
body_rref_leak(RpcTestCtx *ctx, gint rank)
{
    gboolean ignore = GPOINTER_TO_INT(ctx->data);
    RpcAgent *a = rt_agent(ctx, rank);
    if (!ignore)
        rpc_agent_set_ignore_rref_leak(a, FALSE);
    RpcValue *rref =
        remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    rpc_value_unref(to_here_ok(rref));
    rt_barrier(ctx, rank);
    GError *err = NULL;
    gboolean ok = rpc_agent_shutdown(a, FALSE, 0, &err);
    if (ignore) {
        g_assert_true(ok);
        g_assert_no_error(err);
    } else {
        gint prev = (rank + (gint)ctx->n - 1) % (gint)ctx->n;
        char *want = g_strdup_printf("Leaking RRef GloballyUniqueId(created_on=%d, local_id=0) "
                                     "with fork Id GloballyUniqueId(created_on=%d, local_id=1)\n",
                                     prev, prev);
        g_assert_false(ok);
        assert_error_exact(&err, RPC_ERROR_RUNTIME, want);
        g_free(want);
    }
    rpc_value_unref(rref); /* after shutdown: sends nothing */
}

static void
test_rref_leak(gconstpointer data)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE};
    RpcTestCtx *ctx = rt_new(&o);
    ctx->data = (gpointer)data;
    rt_on(ctx, -1, body_rref_leak);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, ctx->n);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.user_delete"), ==, 0);
    rt_free(ctx);
}

/* Graceful shutdown with _ignore_rref_leak = False after a busy RRef run:
 * every user deleted, no leak. */
static void
body_no_leak_after_graceful_shutdown(RpcTestCtx *ctx, gint rank)
{
    rpc_agent_set_ignore_rref_leak(rt_agent(ctx, rank), FALSE);
    body_pass_local_rrefs(ctx, rank);
    body_py_rref_args(ctx, rank);
    body_rpc_return_rref(ctx, rank);
    /* users still held at shutdown, and held in a peer's slot */
    RpcValue *kept =
        remote_ok(ctx, rank, rt_next(ctx, rank, 1), "add", rt_args(rt_int(1), rt_int(2), NULL));
    RpcValue *mine = local_rref(ctx, rank, rt_int(rank));
    rpc_value_unref(
        sync_ok(ctx, rank, rt_next(ctx, rank, 2), "set_value", rt_args(rpc_value_ref(kept), NULL)));
    rpc_value_unref(
        sync_ok(ctx, rank, rt_next(ctx, rank, 3), "set_value", rt_args(rpc_value_ref(mine), NULL)));
    GError *err = NULL;
    g_assert_true(rpc_agent_shutdown(rt_agent(ctx, rank), TRUE, 0, &err));
    g_assert_no_error(err);
    RpcRRefDebugInfo d = info(ctx, rank);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 0);
    g_assert_cmpuint(d.num_forks, ==, 0);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    g_assert_cmpuint(d.num_pending_children, ==, 0);
    rpc_value_unref(kept);
    rpc_value_unref(mine);
}

static void
test_no_leak_after_graceful_shutdown(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE};
    RpcTestCtx *ctx = rt_new(&o);
    rt_on(ctx, -1, body_no_leak_after_graceful_shutdown);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* --- class instances ---------------------------------------------------------------- */

static void
test_object_fields(void)
{
    RpcValue *v = rpc_object_new(&rpc_class_my_class);
    RpcObject *o = rpc_value_get_object(v);
    g_assert_nonnull(o);
    g_assert_null(rpc_value_get_object(NULL));
    RpcValue *i = rt_int(1);
    g_assert_null(rpc_value_get_object(i));
    rpc_value_unref(i);
    g_assert_null(rpc_object_get(o, "a"));
    rpc_object_set(o, "a", rt_int(1));
    rpc_object_set(o, "b", rt_str("x"));
    rpc_object_set(o, "a", rt_int(2)); /* replaces, keeps the order */
    rt_assert_value(rpc_value_ref(rpc_object_get(o, "a")), rt_int(2));
    char *s = rpc_value_repr(v);
    g_assert_cmpstr(s, ==, "<__main__.MyClass object>");
    g_free(s);
    g_assert_cmpstr(rpc_value_opaque_type(v)->name, ==, "MyClass");
    GError *err = NULL;
    RpcValue *wire = NULL;
    g_assert_true(rpc_object_pickle(v, &wire, &err));
    s = rpc_value_repr(wire);
    g_assert_cmpstr(s, ==, "['MyClass', {'a': 2, 'b': 'x'}]");
    g_free(s);
    RpcRegistry *reg = rpc_registry_new_default();
    RpcValue *back = rpc_object_unpickle(reg, wire, &err);
    g_assert_no_error(err);
    RpcObject *ob = rpc_value_get_object(back);
    g_assert_true(ob != o);
    rt_assert_value(rpc_value_ref(rpc_object_get(ob, "b")), rt_str("x"));
    g_assert_false(rpc_value_equal(v, back)); /* identity, as Python's default */
    rpc_value_unref(back);
    rpc_value_unref(wire);
    /* unknown class, malformed data, not an object */
    RpcValue *bad = rt_args(rt_str("Nope"), rpc_value_new_dict(), NULL);
    g_assert_null(rpc_object_unpickle(reg, bad, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE,
                       "Can't get attribute 'Nope' on <module '__main__'>");
    rpc_value_unref(bad);
    bad = rt_args(rt_str("MyClass"), NULL);
    g_assert_null(rpc_object_unpickle(reg, bad, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "malformed object data");
    rpc_value_unref(bad);
    bad = rt_int(3);
    g_assert_false(rpc_object_pickle(bad, &wire, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Can not pickle int object");
    rpc_value_unref(bad);
    /* the caller-side lookup: flags of an async method */
    guint flags = 0;
    g_assert_true(
        rpc_type_lookup_method(reg, "AsyncExecutionClass", "bound_async_add", &flags, &err));
    g_assert_cmpuint(flags & RPC_FUNC_ASYNC, !=, 0);
    g_assert_true(rpc_type_lookup_method(reg, "Tensor", "view", &flags, &err));
    g_assert_cmpuint(flags, ==, 0);
    g_assert_false(rpc_type_lookup_method(reg, "Tensor", "a", &flags, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "type object 'Tensor' has no attribute 'a'");
    g_assert_null(rpc_registry_lookup_class(reg, "Tensor"));
    rpc_registry_free(reg);
    rpc_value_unref(v);
}

static void
body_object_calls(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    GError *err = NULL;
    /* objects travel by value: identity() returns a copy with the fields */
    RpcValue *obj = construct(a, &rpc_class_my_class, rt_args(rt_int(5), NULL), NULL, &err);
    g_assert_no_error(err);
    RpcValue *back = sync_ok(ctx, rank, 1, "identity", rt_args(rpc_value_ref(obj), NULL));
    g_assert_true(rpc_value_get_object(back) != rpc_value_get_object(obj));
    rt_assert_value(rpc_value_ref(rpc_object_get(rpc_value_get_object(back), "a")), rt_int(5));
    rpc_value_unref(back);
    /* method calls: arity, fields, missing attributes, other types */
    g_assert_null(call_m(a, obj, "my_instance_method", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_TYPE,
                       "my_instance_method() missing 1 required positional argument: 'b'");
    g_assert_null(call_m(a, obj, "a", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_TYPE, "'int' object is not callable");
    g_assert_null(call_m(a, obj, "zz", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "'MyClass' object has no attribute 'zz'");
    RpcValue *t = rt_ones(2, 2);
    g_assert_null(call_m(a, t, "zz", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "'Tensor' object has no attribute 'zz'");
    g_assert_null(call_m(a, t, "view", rt_args(rt_str("x"), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "view(): argument 'size' must be tuple of ints");
    g_assert_null(call_m(a, t, "view", rt_args(rt_int(3), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "shape '[3]' is invalid for input of size 4");
    g_assert_null(call_m(a, t, "size", rt_args(rt_int(3), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "size() takes 0 positional arguments but 1 was given");
    g_assert_null(call_m(a, t, "add", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_TYPE,
                       "add() missing 1 required positional argument: 'other'");
    g_assert_null(call_m(a, t, "sum", rt_args(rt_int(1), NULL), NULL, &err));
    assert_error_exact(&err, RPC_ERROR_TYPE, "sum() takes 0 positional arguments but 1 was given");
    g_assert_null(call_m(a, t, "view", NULL, rt_kwargs("x", rt_int(1), NULL), &err));
    assert_error_exact(&err, RPC_ERROR_TYPE, "view() received an invalid combination of arguments");
    rpc_value_unref(t);
    /* MyClass's own argument checks */
    RpcValue *quick =
        construct(a, &rpc_class_my_class, rt_args(rt_int(1), rt_int(0), NULL), NULL, &err);
    g_assert_no_error(err);
    g_assert_null(call_m(a, quick, "get_value", rt_args(rt_int(1), NULL), NULL, &err));
    assert_error_exact(&err, RPC_ERROR_TYPE,
                       "get_value() takes 0 positional arguments but 1 was given");
    g_assert_null(call_m(a, quick, "increment_value", NULL, NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "missing 1 required positional argument: 'increment'");
    g_assert_null(call_m(a, quick, "my_class_method", rt_args(rt_int(1), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "missing 1 required positional argument: 'e'");
    g_assert_null(call_m(a, quick, "my_slow_method", NULL, NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "missing 1 required positional argument");
    rt_assert_value(
        call_m(a, quick, "my_static_method", rt_args(rpc_value_new_bool(TRUE), NULL), NULL, &err),
        rpc_value_new_bool(FALSE));
    rpc_value_unref(quick);
    RpcValue *bare = rpc_object_new(&rpc_class_my_class); /* no __init__: no field a */
    g_assert_null(call_m(a, bare, "increment_value", rt_args(rt_int(1), NULL), NULL, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "'MyClass' object has no attribute 'a'");
    rt_assert_value(call_m(a, bare, "get_value", NULL, NULL, &err), rpc_value_none());
    rpc_value_unref(bare);
    RpcValue *aec = construct(a, &rpc_class_async_execution_class, NULL, NULL, &err);
    g_assert_null(call_m(a, aec, "static_async_add", rt_args(rt_int(1), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "static_async_add() missing 3 required positional");
    g_assert_null(call_m(a, aec, "class_async_add",
                         rt_args(rt_int(9), rt_int(1), rt_int(1), rt_int(1), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "could not find destination id 9");
    g_assert_null(call_m(a, aec, "bound_async_add",
                         rt_args(rt_int(9), rt_int(1), rt_int(1), rt_int(1), NULL), NULL, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "could not find destination id 9");
    /* an async add whose add fails: the error reaches the returned future */
    RpcValue *fv =
        call_m(a, aec, "class_async_add",
               rt_args(rt_int(1), rt_ones1(10), rt_ones1(5), rt_int(1), NULL), NULL, &err);
    g_assert_no_error(err);
    rt_assert_wait_error(rpc_future_ref(rpc_value_get_future(fv)), RPC_ERROR_RUNTIME,
                         "The size of tensor a (10) must match the size of tensor b (5)");
    rpc_value_unref(fv);
    rpc_value_unref(aec);
    RpcValue *i = rt_int(1);
    g_assert_null(call_m(a, i, "real", NULL, NULL, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "'int' object has no attribute 'real'");
    rpc_value_unref(i);
    /* a static method through an instance; class-level callables' checks */
    rt_assert_value(call_m(a, obj, "my_static_method", rt_args(rt_int(11), NULL), NULL, &err),
                    rpc_value_new_bool(TRUE));
    g_assert_null(rt_sync(ctx, rank, 1, "MyClass.my_instance_method",
                          rt_args(rt_int(1), rt_int(2), NULL), UNSET, &err));
    rt_assert_error(
        &err, RPC_ERROR_TYPE,
        "MyClass.my_instance_method() needs a 'MyClass' instance as its first argument");
    g_assert_null(
        rt_sync(ctx, rank, 1, "MyClass.my_static_method", rt_args(rt_str("x"), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "'>' not supported between instances of 'str' and 'int'");
    g_assert_null(
        rt_sync(ctx, rank, 1, "AsyncExecutionClass", rt_args(rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE,
                    "AsyncExecutionClass() takes 0 positional arguments but 1 was given");
    g_assert_null(rt_sync(ctx, rank, 1, "MyClass", NULL, UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "__init__() missing 1 required positional argument: 'a'");
    /* an object holding a future cannot travel */
    RpcValue *ps =
        construct(a, &rpc_class_my_parameter_server, rt_args(rt_int(1), NULL), NULL, &err);
    RpcFuture *f = rpc_future_new(rt_executor(ctx, rank));
    RpcObject *pso = rpc_value_get_object(ps);
    rpc_object_set(pso, "futures", rt_args(rpc_value_new_future(f), NULL));
    rpc_future_unref(f);
    g_assert_null(rt_sync(ctx, rank, 1, "identity", rt_args(ps, NULL), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Can not pickle torch.futures.Future");
    /* MyParameterServer's static methods need an RRef to a server */
    RpcValue *not_ps = local_rref(ctx, rank, rpc_value_ref(obj));
    g_assert_null(rt_sync(ctx, rank, rank, "MyParameterServer.get_gradient",
                          rt_args(rpc_value_ref(not_ps), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_ATTRIBUTE, "'MyClass' object has no attribute 'gradient'");
    g_assert_null(rt_sync(ctx, rank, rank, "MyParameterServer.get_gradient",
                          rt_args(rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "get_gradient() expects an RRef, not int");
    g_assert_null(rt_sync(ctx, rank, rank, "MyParameterServer.average",
                          rt_args(rpc_value_ref(not_ps), rt_str("x"), rt_int(1), NULL), UNSET,
                          &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "'>' not supported between instances of 'str' and 'int'");
    rpc_value_unref(not_ps);
    /* a server whose fields came from a peer's pickle: checked, not trusted */
    RpcValue *odd = rpc_object_new(&rpc_class_my_parameter_server);
    rpc_object_set(rpc_value_get_object(odd), "trainers", rt_str("3"));
    RpcValue *odd_rref = local_rref(ctx, rank, odd);
    g_assert_null(rt_sync(ctx, rank, rank, "MyParameterServer.average",
                          rt_args(rpc_value_ref(odd_rref), rt_int(0), rt_int(1), NULL), UNSET,
                          &err));
    rt_assert_error(&err, RPC_ERROR_ATTRIBUTE,
                    "'MyParameterServer' object has no attribute 'trainers'");
    rpc_value_unref(odd_rref);
    /* proxies on an OwnerRRef: the calls go to this worker itself */
    RpcValue *mine = local_rref(ctx, rank, rpc_value_ref(obj));
    for (guint p = 0; p < G_N_ELEMENTS(proxies); p++)
        rt_assert_value(proxies[p](mine, "my_instance_method", rt_args(rt_int(1), NULL)),
                        rt_int(6));
    rt_assert_value(proxy_sync_ok(mine, "increment_value", rt_args(rt_int(1), NULL)),
                    rpc_value_none());
    rt_assert_value(rpc_value_ref(rpc_object_get(rpc_value_get_object(obj), "a")), rt_int(6));
    rpc_value_unref(mine);
    /* MyParameterServer constructed remotely, then averaged by one trainer */
    RpcValue *ps_rref = remote_ok(ctx, rank, 1, "MyParameterServer", rt_args(rt_int(1), NULL));
    rt_assert_value(sync_ok(ctx, rank, 1, "MyParameterServer.average",
                            rt_args(rpc_value_ref(ps_rref), rt_int(0), rt_ones(2, 2), NULL)),
                    rt_ones(2, 2));
    rt_assert_value(sync_ok(ctx, rank, 1, "MyParameterServer.get_gradient",
                            rt_args(rpc_value_ref(ps_rref), NULL)),
                    rt_ones(2, 2));
    rpc_value_unref(ps_rref);
    /* get_rref_list's argument must be a list */
    g_assert_null(rt_sync(ctx, rank, 1, "get_rref_list", rt_args(rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "'int' object is not iterable");
    /* _rref_proxy_invoke called directly with bad arguments, or a missing method */
    g_assert_null(
        rt_sync(ctx, rank, 1, "_rref_proxy_invoke", rt_args(rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE,
                    "_rref_proxy_invoke() takes (rref, func_name, args, kwargs)");
    RpcValue *r = remote_ok(ctx, rank, 1, "MyClass", rt_args(rt_int(1), NULL));
    g_assert_null(rt_sync(
        ctx, rank, 1, "_rref_proxy_invoke",
        rt_args(rpc_value_ref(r), rt_str("nope"), rpc_value_new_list(), rpc_value_new_dict(), NULL),
        UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_ATTRIBUTE, "'MyClass' object has no attribute 'nope'");
    rpc_value_unref(r);
    rpc_value_unref(obj);
}

static void
test_object_calls(void)
{
    rt_run_world(NULL, 0, body_object_calls, NULL);
}

/* A class known on worker0 only: worker1 cannot rebuild its instance. */
static const RpcClassDef only_here = {
    .type = RPC_OBJECT_TYPE("OnlyHere"),
    .init = NULL,
    .methods = NULL,
};

static void
body_class_not_on_callee(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    RpcValue *obj = construct(rt_agent(ctx, rank), &only_here, NULL, NULL, &err);
    g_assert_no_error(err);
    g_assert_null(rt_sync(ctx, rank, 1, "identity", rt_args(obj, NULL), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME,
                       "Error on Node 1: Can't get attribute 'OnlyHere' on <module '__main__'>");
    /* the caller's own check of a type it does not know */
    guint flags;
    g_assert_false(rpc_type_lookup_method(rpc_agent_registry(rt_agent(ctx, 1)), "OnlyHere", "x",
                                          &flags, &err));
    assert_error_exact(&err, RPC_ERROR_ATTRIBUTE, "type object 'OnlyHere' has no attribute 'x'");
}

static void
test_class_not_on_callee(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    rpc_registry_add_class(rpc_agent_registry(rt_agent(ctx, 0)), &only_here);
    rt_on(ctx, 0, body_class_not_on_callee);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- the protocol under reordering, loss, drops and crashes -------------------------- */

static RpcTestCtx *
delay_world(const char *type, SimTime delay, RpcTime rpc_timeout)
{
    RpcTestOptions o = {.rpc_timeout = rpc_timeout};
    RpcTestCtx *ctx = rt_new(&o);
    for (guint w = 0; w < ctx->n; w++) {
        GError *err = NULL;
        g_assert_true(sim_faults_add_delay(sim_world_faults(ctx->w, w), type, delay, &err));
    }
    return ctx;
}

/* A fetch overtakes the REMOTE_CALL (delayed 1 s at the sender): the owner
 * parks it until the OwnerRRef exists and has its value. */
static void
body_fetch_overtakes_remote_call(RpcTestCtx *ctx, gint rank)
{
    RpcValue *r =
        remote_ok(ctx, rank, 1, "my_sleep_func", rt_args(rpc_value_new_double(0.5), NULL));
    assert_to_here(r, rt_int(1));
    g_assert_cmpint(rt_now(ctx), ==, 1500 * RPC_MS);
    rpc_value_unref(r);
}

static void
test_fetch_overtakes_remote_call(void)
{
    RpcTestCtx *ctx = delay_world("PYTHON_REMOTE_CALL", RPC_S, 0);
    rt_on(ctx, 0, body_fetch_overtakes_remote_call);
    rt_run(ctx);
    rt_free(ctx);
}

/* The REMOTE_CALL is lost: the parked fetch times out at its caller, and
 * the owner answers it when its context goes (the callee's count of active
 * calls must return to 0). */
static void
body_fetch_for_lost_remote_call(RpcTestCtx *ctx, gint rank)
{
    SimNet *net = sim_world_net(ctx->w);
    SimLinkConfig lossy;
    sim_link_config_init(&lossy);
    lossy.loss = 1.0;
    sim_net_set_link(net, 0, 1, &lossy);
    RpcValue *r = remote_ok(ctx, rank, 1, "add", rt_args(rt_int(1), rt_int(2), NULL));
    sim_net_clear_link(net, 0, 1);
    GError *err = NULL;
    g_assert_null(rpc_rref_to_here(R(r), RPC_S, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(1000));
    g_assert_cmpuint(info(ctx, 1).num_owner_rrefs, ==, 0);
    rpc_value_unref(r); /* still pending: deleted once its creation times out */
}

static void
test_fetch_for_lost_remote_call(void)
{
    RpcTestOptions o = {.rpc_timeout = 5 * RPC_S};
    RpcTestCtx *ctx = rt_new(&o);
    rt_on(ctx, 0, body_fetch_for_lost_remote_call);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.timed_out"), ==, 1);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.user_delete"), ==, 1);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* worker2's FORK_REQUEST reaches the owner before the REMOTE_CALL that
 * creates the OwnerRRef (delayed 1 s): the fork is known first, the owner
 * later; worker2's fetch waits for both. */
static void
body_fork_request_overtakes_remote_call(RpcTestCtx *ctx, gint rank)
{
    if (rank == 3) { /* an observer */
        rt_sleep(ctx, rank, 500 * RPC_MS);
        RpcRRefDebugInfo d = info(ctx, 1);
        g_assert_cmpuint(d.num_owner_rrefs, ==, 0);
        g_assert_cmpuint(d.num_forks, ==, 1);
        return;
    }
    RpcValue *a = remote_ok(ctx, rank, 1, "identity", rt_args(rt_int(7), NULL));
    rt_assert_value(sync_ok(ctx, rank, 2, "rref_to_here", rt_args(rpc_value_ref(a), NULL)),
                    rt_int(7));
    g_assert_cmpint(rt_now(ctx), ==, RPC_S);
    wait_owners_forks(ctx, rank, 1, 1, 1);
    rpc_value_unref(a);
    wait_owners_forks(ctx, rank, 0, 0, 1);
}

static void
test_fork_request_overtakes_remote_call(void)
{
    RpcTestCtx *ctx = delay_world("PYTHON_REMOTE_CALL", RPC_S, 0);
    rt_on(ctx, 0, body_fork_request_overtakes_remote_call);
    rt_on(ctx, 3, body_fork_request_overtakes_remote_call);
    rt_run(ctx);
    rt_free(ctx);
}

/* worker2's first FORK_REQUEST is slow (5 s on its link); it times out
 * after 1 s, the retry at 2 s gets through a link made fast meanwhile, the
 * child is confirmed, used and deleted.  When the stale first attempt
 * finally arrives at 5 s, the owner must not resurrect the deleted fork. */
static void
body_stale_fork_request(RpcTestCtx *ctx, gint rank)
{
    SimNet *net = sim_world_net(ctx->w);
    if (rank == 3) {
        rt_sleep(ctx, rank, 1500 * RPC_MS);
        SimLinkConfig fast;
        sim_link_config_init(&fast);
        fast.reorder = 1.0;
        sim_net_set_link(net, 2, 1, &fast);
        rt_sleep(ctx, rank, 500 * RPC_MS + 1);
        /* at 2 s: worker2's child was confirmed, used and deleted */
        g_assert_cmpuint(info(ctx, 1).num_forks, ==, 1);
        rt_sleep(ctx, rank, 3 * RPC_S);
        /* at 5 s the stale FORK_REQUEST arrived: still one fork */
        g_assert_cmpuint(info(ctx, 1).num_forks, ==, 1);
        return;
    }
    rpc_agent_set_ignore_rref_leak(rt_agent(ctx, rank), FALSE);
    SimLinkConfig slow;
    sim_link_config_init(&slow);
    slow.latency = sim_dist_constant(5 * RPC_S);
    slow.reorder = 1.0;
    sim_net_set_link(net, 2, 1, &slow);
    RpcValue *a = remote_ok(ctx, rank, 1, "identity", rt_args(rt_int(7), NULL));
    rpc_value_unref(to_here_ok(a));
    GError *err = NULL;
    rt_assert_value(
        rt_sync(ctx, rank, 2, "rref_to_here", rt_args(rpc_value_ref(a), NULL), 10 * RPC_S, &err),
        rt_int(7));
    g_assert_no_error(err);
    g_assert_cmpint(rt_now(ctx), ==, 2 * RPC_S);
    rt_sleep(ctx, rank, 4 * RPC_S);
    RpcRRefDebugInfo d = info(ctx, 1);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 1);
    g_assert_cmpuint(d.num_forks, ==, 1);
    rpc_value_unref(a);
    wait_owners_forks(ctx, rank, 0, 0, 1);
}

static void
test_stale_fork_request(void)
{
    RpcTestOptions o = {.rpc_timeout = RPC_S};
    RpcTestCtx *ctx = rt_new(&o);
    rpc_agent_set_ignore_rref_leak(rt_agent(ctx, 1), FALSE);
    DetailCount *served = watch_detail(ctx, "rpc.serve", "RREF_FORK_REQUEST");
    rt_on(ctx, 0, body_stale_fork_request);
    rt_on(ctx, 3, body_stale_fork_request);
    rt_run(ctx);
    g_assert_cmpuint(served->count, ==, 2); /* the retry, then the stale first attempt */
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* G2 under latency: worker2's CHILD_ACCEPT takes 3 s to reach worker0, so
 * worker0's RRef, dropped at once, is held (as the parent of a pending
 * child) and deleted only when the accept arrives. */
static void
body_slow_child_accept(RpcTestCtx *ctx, gint rank)
{
    SimLinkConfig slow;
    sim_link_config_init(&slow);
    slow.latency = sim_dist_constant(3 * RPC_S);
    RpcValue *a = remote_ok(ctx, rank, 1, "add", rt_args(rt_int(1), rt_int(1), NULL));
    assert_to_here(a, rt_int(2));
    sim_net_set_link(sim_world_net(ctx->w), 2, 0, &slow);
    RpcFuture *f = rt_async(ctx, rank, 2, "set_value", rt_args(rpc_value_ref(a), NULL), UNSET);
    rpc_value_unref(a);
    rt_sleep(ctx, rank, 1);
    g_assert_cmpuint(info(ctx, rank).num_pending_children, ==, 1);
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 2);
    rt_assert_wait(f, rpc_value_none());
    g_assert_cmpint(rt_now(ctx), ==, 3 * RPC_S);
    rt_sleep(ctx, rank, 1);
    g_assert_cmpuint(info(ctx, rank).num_pending_children, ==, 0);
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 1); /* worker2's, in its slot */
    sim_net_clear_link(sim_world_net(ctx->w), 2, 0);
}

static void
test_slow_child_accept(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    TimeLog *deletes = watch_times(ctx, "rref.user_delete", 0);
    rt_on(ctx, 0, body_slow_child_accept);
    rt_run(ctx);
    const SimTime want[] = {3 * RPC_S};
    assert_times(deletes, 1, want);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* Per fork id, how many USER_DELETEs were issued (never more than one). */
static void
count_deletes(const SimTraceRecord *rec, gpointer data)
{
    if (strcmp(rec->kind->name, "rref.user_delete") != 0)
        return;
    GHashTable *per_fork = data;
    gint64 *k = g_new(gint64, 1);
    *k = rec->c;
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(per_fork, k));
    g_hash_table_replace(per_fork, k, GUINT_TO_POINTER(n + 1));
}

static GHashTable *
watch_deletes(RpcTestCtx *ctx)
{
    GHashTable *per_fork = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    sim_trace_add_sink(sim_kernel_trace(ctx->k), count_deletes, per_fork,
                       (GDestroyNotify)g_hash_table_unref);
    return per_fork;
}

static guint
max_deletes(GHashTable *per_fork)
{
    guint max = 0;
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, per_fork);
    while (g_hash_table_iter_next(&it, NULL, &v))
        max = MAX(max, GPOINTER_TO_UINT(v));
    return max;
}

/* Users dropped before their owner confirmed them: a remote() result, and
 * a user → user child received in a response (its ACK slowed down). */
static void
body_drop_before_confirmed(RpcTestCtx *ctx, gint rank)
{
    /* (a) remote(): the pending user keeps it until REMOTE_RET at 1 s */
    RpcValue *r = remote_ok(ctx, rank, 1, "my_sleep_func", rt_args(rt_int(1), NULL));
    rpc_value_unref(r);
    RpcRRefDebugInfo d = info(ctx, rank);
    g_assert_cmpuint(d.num_pending_users, ==, 1);
    rt_sleep(ctx, rank, RPC_S + 1);
    d = info(ctx, rank);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    g_assert_cmpuint(d.num_confirmed_users, ==, 0);
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 0); /* its USER_DELETE went at 1 s */
    /* (b) worker1 returns an RRef owned by worker2: our FORK_REQUEST's ACK
     * takes 10 ms; we drop the RRef before it arrives */
    SimLinkConfig slow;
    sim_link_config_init(&slow);
    slow.latency = sim_dist_constant(10 * RPC_MS);
    sim_net_set_link(sim_world_net(ctx->w), 2, 0, &slow);
    SimTime t0 = rt_now(ctx);
    RpcValue *v = sync_ok(ctx, rank, 1, "rpc_return_rref", rt_args(rt_name(ctx, 2), NULL));
    g_assert_false(rpc_rref_confirmed_by_owner(R(v)));
    rpc_value_unref(v);
    g_assert_cmpuint(info(ctx, rank).num_pending_users, ==, 1);
    g_assert_cmpuint(info(ctx, 1).num_pending_children, ==, 1);
    rt_sleep(ctx, rank, 10 * RPC_MS + 1);
    g_assert_cmpint(rt_now(ctx), ==, t0 + 10 * RPC_MS + 1);
    d = info(ctx, rank);
    g_assert_cmpuint(d.num_pending_users, ==, 0);
    g_assert_cmpuint(d.num_confirmed_users, ==, 0);
    /* confirmed, deleted, and worker1 released its hold */
    g_assert_cmpuint(info(ctx, 1).num_pending_children, ==, 0);
    wait_owners_forks(ctx, rank, 0, 0, 2);
}

static void
test_drop_before_confirmed(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    GHashTable *per_fork = watch_deletes(ctx);
    rt_on(ctx, 0, body_drop_before_confirmed);
    rt_run(ctx);
    g_assert_cmpuint(max_deletes(per_fork), ==, 1);
    g_assert_cmpuint(g_hash_table_size(per_fork), ==, 3); /* (a), (b)'s, worker1's */
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* An RRef forwarded through 8 workers, each hop a remote(). */
static void
test_forward_chain_8_workers(void)
{
    RpcTestOptions o = {.n_workers = 8};
    RpcTestCtx *ctx = rt_new(&o);
    GHashTable *per_fork = watch_deletes(ctx);
    rt_on(ctx, -1, body_rref_forward_chain);
    rt_run(ctx);
    g_assert_cmpuint(max_deletes(per_fork), ==, 1);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    for (guint r = 0; r < ctx->n; r++) {
        RpcRRefDebugInfo d = info(ctx, (gint)r);
        g_assert_cmpuint(d.num_forks, ==, 0);
        g_assert_cmpuint(d.num_pending_users, ==, 0);
        g_assert_cmpuint(d.num_pending_children, ==, 0);
    }
    rt_free(ctx);
}

/* The owner crashes: users fail cleanly (connection closed), their
 * deletes give up after the retries, nothing hangs. */
static void
body_owner_crash(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    if (rank == 2) {
        /* a fetch in flight when the owner dies */
        RpcValue *r = remote_ok(ctx, rank, 1, "my_sleep_func", rt_args(rt_int(5), NULL));
        g_assert_null(rpc_rref_to_here(R(r), UNSET, &err));
        assert_error_exact(&err, RPC_ERROR_RUNTIME, "Connection closed by peer");
        g_assert_cmpint(rt_now(ctx), ==, RPC_S);
        rpc_value_unref(r);
        return;
    }
    if (rank != 0) { /* worker1 lives until it crashes; worker3 until the end */
        gboolean alive = rpc_executor_sleep(rt_executor(ctx, rank), 30 * RPC_S, &err);
        g_assert_true(alive == (rank == 3));
        g_clear_error(&err);
        return;
    }
    RpcValue *a = remote_ok(ctx, rank, 1, "add", rt_args(rt_ones(2, 2), rt_int(1), NULL));
    RpcValue *b = remote_ok(ctx, rank, 1, "add", rt_args(rt_ones(2, 2), rt_int(2), NULL));
    assert_to_here(a, ones_plus(2, 1));
    assert_to_here(b, ones_plus(2, 2));
    rpc_value_unref(sync_ok(ctx, rank, 3, "set_value", rt_args(rpc_value_ref(a), NULL)));
    rt_sleep(ctx, rank, RPC_S);
    sim_world_crash(ctx->w, 1);
    rt_sleep(ctx, rank, 1);
    g_assert_null(rpc_rref_to_here(R(a), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Connection closed by peer");
    rpc_value_unref(b); /* its USER_DELETE bounces, is retried, gives up */
    g_assert_null(rpc_rref_proxy_sync(R(a), "sum", NULL, NULL, UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Connection closed by peer");
    RpcFuture *f = rpc_rref_proxy_async(R(a), "sum", NULL, NULL, UNSET, &err);
    rt_assert_wait_error(f, RPC_ERROR_RUNTIME, "Connection closed by peer");
    /* The type fetches carried forks of `a` that bounced: as in PyTorch,
     * the parent is held until a CHILD_ACCEPT that will never come (G2),
     * so dropping `a` sends nothing. */
    g_assert_cmpuint(info(ctx, rank).num_pending_children, ==, 2);
    rpc_value_unref(a);
    rt_sleep(ctx, rank, 20 * RPC_S);
    g_assert_cmpuint(info(ctx, rank).num_pending_futures, ==, 0);
}

static void
test_owner_crash(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NON_GRACEFUL};
    RpcTestCtx *ctx = rt_new(&o);
    TimeLog *gave_up = watch_times(ctx, "rref.log", 0);
    rt_on(ctx, -1, body_owner_crash);
    DetailCount *deletes = watch_detail(ctx, "rpc.send", "RREF_USER_DELETE");
    rt_run(ctx);
    /* worker0's USER_DELETE for b: sent at 1 s, retried at 2, 3, 4.5, 6.75
     * and 10.125 s (+ 1 ns), given up then; worker2's was cut short by its
     * own shutdown at 1 s */
    g_assert_cmpuint(gave_up->times->len, ==, 1);
    g_assert_cmpint(g_array_index(gave_up->times, SimTime, 0), ==, 10125 * RPC_MS + 1);
    g_assert_cmpuint(deletes->count, ==, 6 + 1);
    rt_free(ctx);
}

/* A message that cannot be encoded (an RRef whose creation timed out, after
 * one that was forked already) or that the transport refuses takes its
 * forks back: the owner's early registration, the parent's hold. */
static void
body_forks_undone(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    RpcValue *own = local_rref(ctx, rank, rt_int(5));
    RpcValue *user = remote_ok(ctx, rank, 2, "add", rt_args(rt_int(1), rt_int(1), NULL));
    assert_to_here(user, rt_int(2));
    RpcValue *late = remote_t(ctx, rank, 1, "add", rt_args(rt_int(1), rt_int(1), NULL), RPC_MS);
    g_assert_null(rpc_future_wait(rpc_rref_creation_future(R(late)), &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, TIMEOUT_MSG(1));
    g_assert_null(rt_sync(ctx, rank, 3, "my_rref_function",
                          rt_args(rpc_value_ref(own), rpc_value_ref(late), NULL), UNSET, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    RpcValue *to3 = rt_name(ctx, 3);
    g_assert_null(rpc_remote(rt_agent(ctx, rank), to3, "my_rref_function",
                             rt_args(rpc_value_ref(user), rpc_value_ref(late), NULL), NULL, UNSET,
                             &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, MSG_CREATION);
    rpc_value_unref(to3);
    RpcRRefDebugInfo d = info(ctx, rank);
    g_assert_cmpuint(d.num_owner_rrefs, ==, 0); /* `own` was never really shared */
    g_assert_cmpuint(d.num_forks, ==, 0);
    g_assert_cmpuint(d.num_pending_children, ==, 0);
    /* the transport refuses the PYTHON_CALL (the faulty agent, once) */
    GError *e2 = NULL;
    SimFaults *f = sim_world_faults(ctx->w, (guint)rank);
    g_assert_true(sim_faults_add_fail(f, "PYTHON_CALL", &e2));
    sim_faults_set_num_fail_sends(f, 1);
    g_assert_null(rt_sync(ctx, rank, 3, "add_rref_to_value",
                          rt_args(rpc_value_ref(user), rt_int(1), NULL), UNSET, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "Send attempt failed intentionally");
    sim_faults_clear_fail_types(f);
    g_assert_cmpuint(info(ctx, rank).num_pending_children, ==, 0);
    rpc_value_unref(own);
    rpc_value_unref(user);
    rpc_value_unref(late);
}

static void
test_forks_undone(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    SimLinkConfig slow;
    sim_link_config_init(&slow);
    slow.latency = sim_dist_constant(10 * RPC_MS);
    sim_net_set_link(sim_world_net(ctx->w), 0, 1, &slow);
    rt_on(ctx, 0, body_forks_undone);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.fork_undone"), ==, 3);
    g_assert_cmpuint(rt_trace_count(ctx, "rref.leak"), ==, 0);
    rt_free(ctx);
}

/* An RRef used as an argument on its owner although its remote() call was
 * lost: the owner makes the OwnerRRef when the fork arrives, and the UDF
 * waits for a value nothing will set — until the creator gives up (its
 * USER_DELETE) or the owner's context goes (non-graceful shutdown). */
static void
body_arg_for_lost_remote_call(RpcTestCtx *ctx, gint rank)
{
    gboolean graceful = ctx->opts.shutdown == RT_SHUTDOWN_GRACEFUL;
    if (rank != 0) { /* stay up while worker0 works */
        rt_sleep(ctx, rank, 2 * RPC_S);
        return;
    }
    SimNet *net = sim_world_net(ctx->w);
    SimLinkConfig lossy;
    sim_link_config_init(&lossy);
    lossy.loss = 1.0;
    sim_net_set_link(net, 0, 1, &lossy);
    RpcValue *r = remote_ok(ctx, rank, 1, "add", rt_args(rt_int(1), rt_int(2), NULL));
    sim_net_clear_link(net, 0, 1);
    GError *err = NULL;
    RpcFuture *f = rt_async(ctx, rank, 1, "rref_to_here", rt_args(rpc_value_ref(r), NULL),
                            graceful ? 10 * RPC_S : RPC_S);
    rpc_value_unref(r);
    rt_sleep(ctx, rank, 1);
    g_assert_cmpuint(info(ctx, 1).num_owner_rrefs, ==, 1);
    g_assert_cmpuint(info(ctx, 1).num_forks, ==, 0);
    if (graceful) {
        /* the creation times out at 5 s; the creator's delete frees the UDF */
        rt_assert_wait_error(f, RPC_ERROR_RUNTIME,
                             "OwnerRRef(rref_id=GloballyUniqueId(created_on=0, local_id=0)) was "
                             "deleted on its owner before rpc.remote() created it");
        g_assert_cmpint(rt_now(ctx), ==, 5 * RPC_S);
        g_assert_cmpuint(info(ctx, 1).num_owner_rrefs, ==, 0);
    } else {
        rt_assert_wait_error(f, RPC_ERROR_RUNTIME, TIMEOUT_MSG(1000));
    }
    (void)err;
}

static void
test_arg_for_lost_remote_call(gconstpointer data)
{
    RpcTestOptions o = {.rpc_timeout = 5 * RPC_S, .shutdown = GPOINTER_TO_INT(data)};
    RpcTestCtx *ctx = rt_new(&o);
    TimeLog *never = watch_times(ctx, "rref.owner_delete", 1);
    rt_on(ctx, -1, body_arg_for_lost_remote_call);
    rt_run(ctx);
    if (o.shutdown == RT_SHUTDOWN_GRACEFUL)
        g_assert_cmpuint(never->times->len, ==, 1);
    rt_free(ctx);
}

/* Malformed protocol messages are answered with an error, never trusted. */
static void
body_malformed_protocol(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = rt_agent(ctx, rank);
    const struct {
        RpcMessageType type;
        const char *error;
    } cases[] = {
        {RPC_MSG_RREF_USER_DELETE, "malformed RRef protocol message"},
        {RPC_MSG_RREF_FORK_REQUEST, "malformed RRef protocol message"},
        {RPC_MSG_RREF_CHILD_ACCEPT, "malformed RRef protocol message"},
        {RPC_MSG_PYTHON_RREF_FETCH_CALL, "malformed fetch request"},
        {RPC_MSG_SCRIPT_REMOTE_CALL, "malformed remote call request"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        RpcValue *body = rt_args(rt_int(1), NULL);
        RpcFuture *f = rpc_agent_send_request(a, 1, cases[i].type, body, UNSET, "bad", &err);
        rpc_value_unref(body);
        g_assert_no_error(err);
        rt_assert_wait_error(f, RPC_ERROR_RUNTIME, cases[i].error);
    }
    /* the unpickler's own checks */
    RpcDecodeCtx d = {a, FALSE, NULL};
    GError *err = NULL;
    RpcValue *w = rt_args(rt_int(1), NULL);
    g_assert_null(rpc_rref_unpickle(&d, "Other", w, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Can not unpickle 'Other' objects");
    g_assert_null(rpc_rref_unpickle(&d, "RRef", w, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "malformed RRef fork data");
    rpc_value_unref(w);
    w = rt_args(rt_int(9), rt_args(rt_int(0), rt_int(0), NULL), rt_args(rt_int(0), rt_int(1), NULL),
                rt_int(0), rt_str(""), rpc_value_new_bool(TRUE), NULL);
    g_assert_null(rpc_rref_unpickle(&d, "RRef", w, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "malformed RRef fork data: no such worker");
    rpc_value_unref(w);
    /* pickling another agent's RRef, or something that is not an object */
    RpcValue *r = local_rref(ctx, 1, rt_int(1));
    const char *ext;
    g_assert_false(rpc_rref_pickle(a, r, &ext, &w, &err));
    assert_error_exact(&err, RPC_ERROR_RUNTIME, "Can not pickle an RRef of another RPC agent");
    rpc_value_unref(r);
    r = local_rref(ctx, rank, rt_int(1));
    RpcValue *same = rpc_value_ref(r);
    g_assert_true(rpc_value_equal(r, same));
    rpc_value_unref(same);
    rpc_value_unref(r);
}

static void
test_malformed_protocol(void)
{
    rt_run_world(NULL, 0, body_malformed_protocol, NULL);
}

/* --- randomized sweep ------------------------------------------------------------------
 * A mixed RRef workload on 4 workers under random loss, duplication,
 * reordering and jitter, then a graceful shutdown.  Loss applies only while
 * the workload runs: after it, every rank meets at an external barrier and
 * the network is made lossless, because a lost barrier RPC would fail the
 * shutdown itself (spec §6.4: user RPCs are never retried).  Retried
 * control messages recover from loss; user calls may fail, and that is fine.
 *
 * What loss can legitimately break: a user message that carried a fork and
 * was dropped.  PyTorch never retries user messages, so an owner → user
 * fork registered early stays on the owner forever (a leak the shutdown
 * check reports).  The sweep tracks which forks rode in dropped messages
 * and asserts that every leak is one of those — and no leak, no fork left
 * anywhere, when none was dropped. */

typedef struct {
    guint64 s;
} Prng; /* splitmix64: the test's own stream, seeded by the run's seed */

static guint64
prng_next(Prng *p)
{
    guint64 z = (p->s += G_GUINT64_CONSTANT(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static guint
prng_below(Prng *p, guint n)
{
    return (guint)(prng_next(p) % n);
}

typedef struct {
    guint64 seed;
    guint n_workers;
    GArray *cur[8];         /* per worker: forks made since its last net.send */
    GArray *last[8];        /* forks of its last message put on the network */
    GHashTable *lost_forks; /* set of fork keys that rode in a dropped message */
    GHashTable *leaked;     /* set of fork keys reported as leaks */
    GHashTable *deletes;    /* fork key → USER_DELETEs issued */
    guint ops_ok, ops_failed;
} Sweep;

static void
key_add(GHashTable *set, gint64 k)
{
    gint64 *p = g_new(gint64, 1);
    *p = k;
    g_hash_table_add(set, p);
}

static void
sweep_sink(const SimTraceRecord *rec, gpointer data)
{
    Sweep *sw = data;
    const char *k = rec->kind->name;
    gint w = rec->worker;
    if (w < 0 || w >= (gint)sw->n_workers)
        return;
    if (strcmp(k, "rref.fork") == 0) {
        g_array_append_val(sw->cur[w], rec->c);
    } else if (strcmp(k, "rref.fork_undone") == 0) {
        for (guint i = 0; i < sw->cur[w]->len; i++)
            if (g_array_index(sw->cur[w], gint64, i) == rec->c)
                g_array_remove_index(sw->cur[w], i--);
    } else if (strcmp(k, "net.send") == 0) {
        GArray *t = sw->last[w];
        sw->last[w] = sw->cur[w];
        sw->cur[w] = t;
        g_array_set_size(sw->cur[w], 0);
    } else if (strcmp(k, "net.drop") == 0) {
        for (guint i = 0; i < sw->last[w]->len; i++)
            key_add(sw->lost_forks, g_array_index(sw->last[w], gint64, i));
        g_array_set_size(sw->last[w], 0);
    } else if (strcmp(k, "rref.leak") == 0) {
        key_add(sw->leaked, rec->b);
    } else if (strcmp(k, "rref.user_delete") == 0) {
        gint64 *p = g_new(gint64, 1);
        *p = rec->c;
        guint n = GPOINTER_TO_UINT(g_hash_table_lookup(sw->deletes, p));
        g_hash_table_replace(sw->deletes, p, GUINT_TO_POINTER(n + 1));
    }
}

static void
sweep_reset(Sweep *sw, guint64 seed, guint n)
{
    sw->seed = seed;
    sw->n_workers = n;
    for (guint i = 0; i < n; i++) {
        if (sw->cur[i] == NULL) {
            sw->cur[i] = g_array_new(FALSE, FALSE, sizeof(gint64));
            sw->last[i] = g_array_new(FALSE, FALSE, sizeof(gint64));
        }
        g_array_set_size(sw->cur[i], 0);
        g_array_set_size(sw->last[i], 0);
    }
    if (sw->lost_forks == NULL) {
        sw->lost_forks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        sw->leaked = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        sw->deletes = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    }
    g_hash_table_remove_all(sw->lost_forks);
    g_hash_table_remove_all(sw->leaked);
    g_hash_table_remove_all(sw->deletes);
}

static void
sweep_clear(Sweep *sw)
{
    for (guint i = 0; i < G_N_ELEMENTS(sw->cur); i++) {
        if (sw->cur[i] != NULL) {
            g_array_unref(sw->cur[i]);
            g_array_unref(sw->last[i]);
        }
    }
    if (sw->lost_forks != NULL) {
        g_hash_table_unref(sw->lost_forks);
        g_hash_table_unref(sw->leaked);
        g_hash_table_unref(sw->deletes);
    }
}

#define POOL 6

typedef struct {
    Sweep *sw;
    Prng rng;
} SweepRank;

static void
sweep_note(Sweep *sw, GError **err)
{
    if (*err == NULL) {
        sw->ops_ok++;
        return;
    }
    /* Infrastructure errors only: user functions here never raise. */
    g_assert_cmpint((*err)->domain, ==, RPC_ERROR);
    sw->ops_failed++;
    g_clear_error(err);
}

static void
pool_put(RpcValue **pool, Prng *rng, RpcValue *v)
{
    if (v == NULL)
        return;
    guint i = prng_below(rng, POOL);
    rpc_value_unref(pool[i]);
    pool[i] = v;
}

static RpcValue *
pool_pick(RpcValue **pool, Prng *rng)
{
    return pool[prng_below(rng, POOL)];
}

static void
body_sweep(RpcTestCtx *ctx, gint rank)
{
    Sweep *sw = ctx->data;
    RpcAgent *a = rt_agent(ctx, rank);
    Prng rng = {sw->seed * 1000003u + (guint64)rank};
    RpcValue *pool[POOL] = {0};
    RpcFuture *pending[8] = {0};
    guint n_pending = 0;
    GError *err = NULL;
    guint n_ops = 6 + prng_below(&rng, 6);
    for (guint op = 0; op < n_ops; op++) {
        gint dst = (gint)prng_below(&rng, ctx->n);
        RpcValue *to = rt_int(dst);
        RpcValue *r = pool_pick(pool, &rng);
        RpcValue *r2 = pool_pick(pool, &rng);
        switch (prng_below(&rng, 12)) {
        case 0:
        case 1:
            pool_put(pool, &rng,
                     rpc_remote(a, to, "add", rt_args(rt_ones(2, 2), rt_int(op), NULL), NULL, UNSET,
                                &err));
            break;
        case 2:
            pool_put(pool, &rng, rpc_rref_new_local(a, rt_int(rank * 100 + op), &err));
            break;
        case 3:
            if (r != NULL)
                rpc_value_unref(rpc_sync(a, to, "add_rref_to_value",
                                         rt_args(rpc_value_ref(r), rt_int(1), NULL), NULL, UNSET,
                                         &err));
            break;
        case 4:
            pool_put(pool, &rng,
                     rpc_sync(a, to, "rpc_return_rref",
                              rt_args(rt_int(prng_below(&rng, ctx->n)), NULL), NULL, UNSET, &err));
            break;
        case 5:
            if (r != NULL && r2 != NULL)
                pool_put(pool, &rng,
                         rpc_remote(a, to, "my_rref_function",
                                    rt_args(rpc_value_ref(r), rpc_value_ref(r2), NULL), NULL, UNSET,
                                    &err));
            break;
        case 6:
            if (r != NULL)
                rpc_value_unref(rpc_rref_to_here(R(r), UNSET, &err));
            break;
        case 7: {
            guint i = prng_below(&rng, POOL);
            g_clear_pointer(&pool[i], rpc_value_unref);
            break;
        }
        case 8:
            if (r != NULL)
                rpc_value_unref(rpc_rref_proxy_sync(R(r), "size", NULL, NULL, UNSET, &err));
            if (err != NULL && err->code == RPC_ERROR_ATTRIBUTE) /* an int's RRef */
                g_clear_error(&err);
            break;
        case 9:
            rpc_value_unref(rpc_sync(a, to, "set_value",
                                     rt_args(r ? rpc_value_ref(r) : rpc_value_none(), NULL), NULL,
                                     UNSET, &err));
            break;
        case 10:
            if (r != NULL && n_pending < G_N_ELEMENTS(pending)) {
                RpcFuture *f =
                    rpc_async(a, to, "add_rref_to_value",
                              rt_args(rpc_value_ref(r), rt_int(2), NULL), NULL, UNSET, &err);
                if (f != NULL)
                    pending[n_pending++] = f;
            }
            break;
        default:
            if (r != NULL && n_pending < G_N_ELEMENTS(pending)) {
                RpcFuture *f =
                    rpc_rref_proxy_async(R(r), "add", rt_args(rt_int(1), NULL), NULL, UNSET, &err);
                if (f != NULL)
                    pending[n_pending++] = f;
            }
            break;
        }
        sweep_note(sw, &err);
        rpc_value_unref(to);
    }
    for (guint i = 0; i < n_pending; i++) {
        rpc_value_unref(rpc_future_wait(pending[i], &err));
        if (err != NULL && err->code == RPC_ERROR_ATTRIBUTE)
            g_clear_error(&err);
        sweep_note(sw, &err);
        rpc_future_unref(pending[i]);
    }
    for (guint i = 0; i < POOL; i++)
        rpc_value_unref(pool[i]);
    /* The workload is over everywhere: make the network lossless for the
     * shutdown (see the comment above). */
    rt_barrier(ctx, rank);
    if (rank == 0) {
        SimLinkConfig clean;
        sim_link_config_init(&clean);
        sim_net_set_default(sim_world_net(ctx->w), &clean);
    }
    rt_barrier(ctx, rank);
}

/* One seed: runs the world, checks the invariants, returns the fingerprint. */
static guint64
sweep_run(Sweep *sw, guint64 seed, guint *lossy_forks)
{
    RpcTestOptions o = {.seed = seed, .rpc_timeout = 2 * RPC_S};
    RpcTestCtx *ctx = rt_new(&o);
    if (g_getenv("RREF_SWEEP_TRACE") != NULL)
        sim_trace_write_to(sim_kernel_trace(ctx->k), stderr);
    sweep_reset(sw, seed, ctx->n);
    sim_trace_add_sink(sim_kernel_trace(ctx->k), sweep_sink, sw, NULL);
    Prng rng = {seed};
    SimLinkConfig cfg;
    sim_link_config_init(&cfg);
    cfg.latency.kind = SIM_DIST_UNIFORM;
    cfg.latency.a = 0;
    cfg.latency.b = RPC_MS;
    cfg.loss = (double)prng_below(&rng, 6) / 100.0; /* 0 – 5 % */
    cfg.duplicate = 0.03;
    cfg.reorder = 0.2;
    sim_net_set_default(sim_world_net(ctx->w), &cfg);
    ctx->data = sw;
    rt_on(ctx, -1, body_sweep);
    rt_run(ctx);
    for (guint r = 0; r < ctx->n; r++) {
        RpcRRefDebugInfo d = info(ctx, (gint)r);
        if (d.num_pending_users != 0 || d.num_owner_rrefs != 0)
            g_error("seed %" G_GUINT64_FORMAT ": worker%u has %u owners, %u pending users "
                    "after shutdown",
                    seed, r, d.num_owner_rrefs, d.num_pending_users);
        if (g_hash_table_size(sw->lost_forks) == 0 &&
            (d.num_forks != 0 || d.num_pending_children != 0))
            g_error("seed %" G_GUINT64_FORMAT ": worker%u has %u forks, %u pending children "
                    "after shutdown, and no fork was lost",
                    seed, r, d.num_forks, d.num_pending_children);
    }
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, sw->leaked);
    while (g_hash_table_iter_next(&it, &k, NULL))
        if (!g_hash_table_contains(sw->lost_forks, k))
            g_error("seed %" G_GUINT64_FORMAT ": fork %" G_GINT64_FORMAT
                    " leaked although its message was delivered",
                    seed, *(gint64 *)k);
    g_hash_table_iter_init(&it, sw->deletes);
    while (g_hash_table_iter_next(&it, &k, &v))
        if (GPOINTER_TO_UINT(v) > 1)
            g_error("seed %" G_GUINT64_FORMAT ": fork %" G_GINT64_FORMAT " deleted %u times", seed,
                    *(gint64 *)k, GPOINTER_TO_UINT(v));
    *lossy_forks = g_hash_table_size(sw->lost_forks);
    guint64 fp = sim_trace_fingerprint(sim_kernel_trace(ctx->k));
    rt_free(ctx);
    return fp;
}

static void
test_sweep(void)
{
    gboolean valgrind = g_getenv("RPCSIM_UNDER_VALGRIND") != NULL;
    guint n_seeds = valgrind ? 100 : 1000;
    Sweep sw = {0};
    guint with_lost = 0, lost_total = 0;
    guint64 first = 1;
    if (g_getenv("RREF_SWEEP_SEED") != NULL) /* replay one seed */
        first = n_seeds = g_ascii_strtoull(g_getenv("RREF_SWEEP_SEED"), NULL, 10);
    for (guint64 seed = first; seed <= n_seeds; seed++) {
        guint lost = 0;
        guint64 fp = sweep_run(&sw, seed, &lost);
        with_lost += lost > 0;
        lost_total += lost;
        /* determinism: every seed twice */
        {
            guint again_lost = 0;
            guint64 again = sweep_run(&sw, seed, &again_lost);
            if (again != fp || again_lost != lost)
                g_error("seed %" G_GUINT64_FORMAT ": fingerprint %016" G_GINT64_MODIFIER
                        "x, then %016" G_GINT64_MODIFIER "x",
                        seed, fp, again);
        }
    }
    g_test_message("%u seeds: %u ops ok, %u failed; %u runs lost %u forked messages' forks",
                   n_seeds, sw.ops_ok, sw.ops_failed, with_lost, lost_total);
    sweep_clear(&sw);
}

/* --- main ------------------------------------------------------------------------------ */

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* conformance cases */
    g_test_add_func("/rref/test_send_to_rank_remote", test_send_to_rank_remote);
    g_test_add_func("/rref/test_pg_init_no_rpc_init", test_pg_init_no_rpc_init);
    g_test_add_func("/rref/test_py_class_methods", test_py_class_methods);
    g_test_add_func("/rref/test_builtin_remote_self", test_builtin_remote_self);
    g_test_add_func("/rref/test_multi_builtin_remote_ret", test_multi_builtin_remote_ret);
    g_test_add_func("/rref/test_self_remote_rref_as_arg", test_self_remote_rref_as_arg);
    g_test_add_func("/rref/test_py_rref_args", test_py_rref_args);
    g_test_add_func("/rref/test_py_rpc_rref_args", test_py_rpc_rref_args);
    g_test_add_func("/rref/test_nested_remote", test_nested_remote);
    g_test_add_func("/rref/test_rpc_return_rref", test_rpc_return_rref);
    g_test_add_func("/rref/test_rref_forward_chain", test_rref_forward_chain);
    g_test_add_func("/rref/test_local_value_not_on_owner", test_local_value_not_on_owner);
    g_test_add_func("/rref/test_rref_str", test_rref_str);
    g_test_add_func("/rref/test_pass_local_rrefs", test_pass_local_rrefs);
    g_test_add_func("/rref/test_remote_same_worker", test_remote_same_worker);
    g_test_add_func("/rref/test_owner_equality", test_owner_equality);
    g_test_add_func("/rref/test_rref_proxy_tensor", test_rref_proxy_tensor);
    g_test_add_func("/rref/test_rref_proxy_class", test_rref_proxy_class);
    g_test_add_func("/rref/test_rref_proxy_reuse", test_rref_proxy_reuse);
    g_test_add_func("/rref/test_rref_proxy_non_exist", test_rref_proxy_non_exist);
    g_test_add_func("/rref/test_rref_type", test_rref_type);
    g_test_add_func("/rref/test_user_rrefs_confirmed", test_user_rrefs_confirmed);
    g_test_add_func("/rref/confirmed_by_owner", test_confirmed_by_owner);
    g_test_add_func("/rref/test_rref_py_pickle_not_supported", test_rref_py_pickle_not_supported);
    g_test_add_func("/rref/test_use_rref_after_shutdown", test_use_rref_after_shutdown);
    g_test_add_func("/rref/test_rref_context_debug_info", test_rref_context_debug_info);
    g_test_add_func("/rref/test_return_local_rrefs", test_return_local_rrefs);
    g_test_add_func("/rref/test_rref_timeout", test_rref_timeout);
    g_test_add_func("/rref/test_rref_proxy_timeout", test_rref_proxy_timeout);
    g_test_add_func("/rref/test_async_remote_modes", test_async_remote_modes);
    g_test_add_func("/rref/test_async_class_methods", test_async_class_methods);
    g_test_add_func("/rref/test_my_parameter_server", test_my_parameter_server);
    g_test_add_data_func("/rref/test_builtin_remote_message_dropped_timeout", &dropped_builtin,
                         test_remote_message_dropped_timeout);
    g_test_add_data_func("/rref/test_builtin_remote_message_dropped_timeout_to_self",
                         &dropped_builtin_self, test_remote_message_dropped_timeout);
    g_test_add_data_func("/rref/test_udf_remote_message_dropped_timeout", &dropped_udf,
                         test_remote_message_dropped_timeout);
    g_test_add_data_func("/rref/test_udf_remote_message_dropped_timeout_to_self", &dropped_udf_self,
                         test_remote_message_dropped_timeout);
    g_test_add_data_func("/rref/test_udf_remote_message_delay_timeout", GINT_TO_POINTER(-1),
                         test_udf_remote_message_delay_timeout);
    g_test_add_data_func("/rref/test_udf_remote_message_delay_timeout_to_self", GINT_TO_POINTER(0),
                         test_udf_remote_message_delay_timeout);
    g_test_add_func("/rref/test_rref_to_here_timeout", test_rref_to_here_timeout);
    g_test_add_data_func("/rref/test_rref_leak", GINT_TO_POINTER(FALSE), test_rref_leak);
    g_test_add_data_func("/rref/test_ignore_rref_leak", GINT_TO_POINTER(TRUE), test_rref_leak);
    /* our own */
    g_test_add_func("/rref/faulty_control_messages", test_faulty_control_messages);
    g_test_add_func("/rref/no_leak_after_graceful_shutdown", test_no_leak_after_graceful_shutdown);
    g_test_add_func("/rref/object/fields_and_pickling", test_object_fields);
    g_test_add_func("/rref/object/calls", test_object_calls);
    g_test_add_func("/rref/object/class_not_on_callee", test_class_not_on_callee);
    g_test_add_func("/rref/protocol/fetch_overtakes_remote_call", test_fetch_overtakes_remote_call);
    g_test_add_func("/rref/protocol/fetch_for_lost_remote_call", test_fetch_for_lost_remote_call);
    g_test_add_func("/rref/protocol/fork_request_overtakes_remote_call",
                    test_fork_request_overtakes_remote_call);
    g_test_add_func("/rref/protocol/stale_fork_request", test_stale_fork_request);
    g_test_add_func("/rref/protocol/slow_child_accept", test_slow_child_accept);
    g_test_add_func("/rref/protocol/drop_before_confirmed", test_drop_before_confirmed);
    g_test_add_func("/rref/protocol/forward_chain_8_workers", test_forward_chain_8_workers);
    g_test_add_func("/rref/protocol/owner_crash", test_owner_crash);
    g_test_add_func("/rref/protocol/forks_undone", test_forks_undone);
    g_test_add_data_func("/rref/protocol/arg_for_lost_remote_call",
                         GINT_TO_POINTER(RT_SHUTDOWN_GRACEFUL), test_arg_for_lost_remote_call);
    g_test_add_data_func("/rref/protocol/arg_for_lost_remote_call_non_graceful",
                         GINT_TO_POINTER(RT_SHUTDOWN_NON_GRACEFUL), test_arg_for_lost_remote_call);
    g_test_add_func("/rref/protocol/malformed", test_malformed_protocol);
    g_test_add_func("/rref/protocol/sweep", test_sweep);
    return g_test_run();
}
