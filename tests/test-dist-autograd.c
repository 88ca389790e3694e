/* test-dist-autograd.c — distributed autograd (core/dist-autograd.h).
 *
 * The conformance cases of spec §11.9 (numbered as there), graph shapes of
 * §7.2, errors, cleanup (with the faulty agent of §10, case 115), RRef
 * backward (cases 88, 89), and three acceptance runs:
 *   - /dist-autograd/sweep/mlp: gradients of a small float64 MLP whose
 *     layers run on random workers equal a local backward exactly, over 500
 *     seeds (100 under valgrind);
 *   - /dist-autograd/ps/trains-under-control-loss: a parameter server with
 *     3 trainers, 20 SGD steps through the distributed optimizer, with
 *     CLEANUP_AUTOGRAD_CONTEXT_REQ (a retried control message) randomly lost
 *     by the faulty agent's drop rule (p = 0.3) and every link jittered,
 *     reordering and duplicating; user calls are never lost (they are never
 *     retried, by design).  The optimizer steps are serialised by barriers so
 *     that the parameters cannot depend on timing: the loss decreases and the
 *     run matches a fault-free one bit for bit;
 *   - determinism: one seed, one fingerprint.
 *
 * Every rank's body runs in each world unless a test says otherwise; ids of
 * contexts cross ranks through set_rpc_done (as in PyTorch's tests) or the
 * test's own shared state.
 */
#include <string.h>

#include "core/agent-internal.h"
#include "core/autograd.h"
#include "core/dist-autograd.h"
#include "core/message.h"
#include "core/registry.h"
#include "core/rref.h"
#include "core/tensor.h"
#include "sim/error.h"
#include "sim/faults.h"
#include "sim/net.h"
#include "sim/trace.h"
#include "tests/lib/rpcworld.h"

#define UNSET   RPC_TIMEOUT_UNSET
#define NO_CTX  RPC_DIST_NO_CONTEXT
#define ACC     RPC_AG_ACCUMULATE_GRAD_NAME
#define SENDN   RPC_DIST_SEND_NAME
#define RECVN   RPC_DIST_RECV_NAME
#define NOT_CTX RPC_DIST_MSG_NO_CONTEXT

static gboolean
under_valgrind(void)
{
    return g_getenv("RPCSIM_UNDER_VALGRIND") != NULL;
}

/* --- small helpers ------------------------------------------------------------ */

static RpcAgent *
agent(RpcTestCtx *ctx, gint rank)
{
    return rt_agent(ctx, rank);
}

static RpcAgThread *
th_of(RpcTestCtx *ctx, gint rank)
{
    return rpc_dist_autograd_thread(agent(ctx, rank));
}

/* A rows × cols tensor of dtype filled from vals (or with fill). */
static RpcTensor *
tensor_dt(RpcDType dt, gint64 rows, gint64 cols, double fill, const double *vals, gboolean rg)
{
    gint64 shape[2] = {rows, cols};
    RpcTensor *t = vals ? rpc_tensor_new_from_doubles(dt, 2, shape, vals)
                        : rpc_tensor_new_full(dt, 2, shape, fill);
    if (rg)
        g_assert_true(rpc_ag_set_requires_grad(t, TRUE, NULL));
    return t;
}

static RpcTensor *
mat(gint64 rows, gint64 cols, double fill, gboolean rg)
{
    return tensor_dt(RPC_DTYPE_FLOAT32, rows, cols, fill, NULL, rg);
}

/* "torch.rand": deterministic values from a small generator. */
static guint64
mix64(guint64 *s)
{
    guint64 z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double
unit(guint64 *s)
{
    return (double)(mix64(s) >> 11) / 9007199254740992.0;
}

static RpcTensor *
rand_dt(guint64 *s, RpcDType dt, gint64 rows, gint64 cols, gboolean rg)
{
    double *v = g_new(double, rows *cols);
    for (gint64 i = 0; i < rows * cols; i++)
        v[i] = unit(s) * 2 - 1;
    RpcTensor *t = tensor_dt(dt, rows, cols, 0, v, rg);
    g_free(v);
    return t;
}

static RpcValue *
tv(RpcTensor *t)
{
    return rpc_value_new_tensor(rpc_tensor_ref(t));
}

static RpcTensor *
take_tensor(RpcValue *v)
{
    g_assert_nonnull(v);
    g_assert_cmpint(rpc_value_type(v), ==, RPC_VALUE_TENSOR);
    RpcTensor *t = rpc_tensor_ref(rpc_value_get_tensor(v));
    rpc_value_unref(v);
    return t;
}

static gint64
ctx_enter(RpcTestCtx *ctx, gint rank)
{
    GError *err = NULL;
    gint64 id = rpc_dist_autograd_context_new(agent(ctx, rank), &err);
    g_assert_no_error(err);
    g_assert_cmpint(id, >=, 0);
    return id;
}

static void
ctx_exit(RpcTestCtx *ctx, gint rank, gint64 id)
{
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_context_release(agent(ctx, rank), id, &err));
    g_assert_no_error(err);
}

static gboolean
has_ctx(RpcTestCtx *ctx, gint rank, gint64 id)
{
    return rpc_dist_autograd_retrieve_context(agent(ctx, rank), id, NULL);
}

static void
assert_no_ctx(RpcAgent *a, gint64 id)
{
    GError *err = NULL;
    g_assert_false(rpc_dist_autograd_retrieve_context(a, id, &err));
    char *want = g_strdup_printf(NOT_CTX "%" G_GINT64_FORMAT, id);
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, want);
    g_free(want);
    g_clear_error(&err);
}

typedef enum { MODE_LOCAL, MODE_RPC_SYNC, MODE_REMOTE } ExecMode;

/* _exec_func: func(*args) here (LOCAL: the registered function called
 * directly on this thread), via rpc_sync, or via remote().to_here(). */
static RpcValue *
exec_func(RpcTestCtx *ctx, gint rank, ExecMode mode, gint dst, const char *func, RpcValue *args,
          GError **error)
{
    RpcAgent *a = agent(ctx, rank);
    if (mode == MODE_LOCAL) {
        const RpcFunctionDef *def = rpc_registry_lookup(rpc_agent_registry(a), func);
        g_assert_nonnull(def);
        RpcValue *kw = rpc_value_new_dict();
        RpcValue *v = def->fn(a, args, kw, error);
        rpc_value_unref(kw);
        rpc_value_unref(args);
        return v;
    }
    RpcValue *to = rpc_value_new_int(dst);
    RpcValue *v = NULL;
    if (mode == MODE_RPC_SYNC) {
        v = rpc_sync(a, to, func, args, NULL, UNSET, error);
    } else {
        RpcValue *rref = rpc_remote(a, to, func, args, NULL, UNSET, error);
        if (rref != NULL)
            v = rpc_rref_to_here(rpc_value_get_rref(rref), UNSET, error);
        rpc_value_unref(rref);
    }
    rpc_value_unref(to);
    return v;
}

static RpcTensor *
exec_t(RpcTestCtx *ctx, gint rank, ExecMode mode, gint dst, const char *func, RpcValue *args)
{
    GError *err = NULL;
    RpcValue *v = exec_func(ctx, rank, mode, dst, func, args, &err);
    g_assert_no_error(err);
    return take_tensor(v);
}

/* rpc_sync(to, f, (x, y)) with tensors. */
static RpcTensor *
call2(RpcTestCtx *ctx, gint rank, gint to, const char *func, RpcTensor *x, RpcTensor *y)
{
    return exec_t(ctx, rank, MODE_RPC_SYNC, to, func, rt_args(tv(x), tv(y), NULL));
}

static RpcTensor *
sum_of(RpcTestCtx *ctx, gint rank, RpcTensor *t)
{
    RpcTensor *s = rpc_ag_sum(th_of(ctx, rank), t, NULL);
    g_assert_nonnull(s);
    return s;
}

static void
set_rpc_done(RpcTestCtx *ctx, gint rank, gint to, gint64 ctx_id, gint dist)
{
    GError *err = NULL;
    RpcValue *v = rt_sync(ctx, rank, to, "set_rpc_done",
                          rt_args(rt_int(ctx_id), rt_int(dist), NULL), UNSET, &err);
    g_assert_no_error(err);
    rpc_value_unref(v);
}

/* _check_rpc_done(dist): waits for set_rpc_done from the rank `dist` before
 * this one and returns the context id it sent. */
static gint64
rpc_done_ctx(RpcTestCtx *ctx, gint rank, gint dist)
{
    char key[64];
    g_snprintf(key, sizeof key, "rpc_done/%d", dist);
    for (;;) {
        RpcValue *v = rpc_agent_slot_get(agent(ctx, rank), key);
        if (v != NULL)
            return rpc_value_get_int(v);
        rt_sleep(ctx, rank, SIM_MS);
    }
}

/* _all_contexts_cleaned_up(10 s): every context id this rank learnt of
 * through set_rpc_done is gone. */
static gboolean
all_contexts_cleaned_up(RpcTestCtx *ctx, gint rank)
{
    SimTime until = rt_now(ctx) + 10 * SIM_S;
    for (;;) {
        RpcValue *ids = rpc_agent_slot_get(agent(ctx, rank), "known_context_ids");
        gboolean all = TRUE;
        for (guint i = 0; ids != NULL && i < rpc_value_list_len(ids); i++)
            all &= !has_ctx(ctx, rank, rpc_value_get_int(rpc_value_list_get(ids, i)));
        if (all)
            return TRUE;
        if (rt_now(ctx) >= until)
            return FALSE;
        rt_sleep(ctx, rank, 10 * SIM_MS);
    }
}

static guint
n_grads(RpcAgent *a, gint64 ctx_id)
{
    GPtrArray *ts, *gs;
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_get_gradients(a, ctx_id, &ts, &gs, &err));
    g_assert_no_error(err);
    guint n = ts->len;
    g_assert_cmpuint(gs->len, ==, n);
    g_ptr_array_unref(ts);
    g_ptr_array_unref(gs);
    return n;
}

static void
assert_tensor_eq(RpcTensor *got, RpcTensor *want)
{
    g_assert_nonnull(got);
    g_assert_nonnull(want);
    if (!rpc_tensor_equal(got, want) || rpc_tensor_dtype(got) != rpc_tensor_dtype(want)) {
        char *g = rpc_tensor_repr(got), *w = rpc_tensor_repr(want);
        g_error("tensor mismatch:\n got %s\nwant %s", g, w);
    }
}

/* get_gradients(ctx)[leaf] == want, exactly. */
static void
assert_grad(RpcAgent *a, gint64 ctx_id, RpcTensor *leaf, RpcTensor *want)
{
    GError *err = NULL;
    RpcTensor *g = rpc_dist_autograd_get_gradient(a, ctx_id, leaf, &err);
    g_assert_no_error(err);
    if (want == NULL) {
        g_assert_null(g);
        return;
    }
    assert_tensor_eq(g, want);
    rpc_tensor_unref(g);
}

static void
assert_error_matches(GError **err, const char *pattern)
{
    g_assert_nonnull(*err);
    if (!g_regex_match_simple(pattern, (*err)->message, 0, 0))
        g_error("error '%s' does not match /%s/", (*err)->message, pattern);
    g_clear_error(err);
}

/* --- graph shapes (spec §7.2) ------------------------------------------------ */

static RpcAgNode *
next_fn(RpcAgNode *n, guint i, guint *input_nr)
{
    g_assert_cmpuint(i, <, rpc_ag_node_n_next(n));
    return rpc_ag_node_next(n, i, input_nr);
}

/* _verify_graph_for_first_rpc_call */
static void
verify_first_rpc_call(RpcAgNode *send, RpcAgNode *recv, RpcTensor *t1, RpcTensor *t2,
                      RpcTensor *ret)
{
    g_assert_cmpstr(rpc_ag_node_name(send), ==, SENDN);
    g_assert_cmpuint(rpc_ag_node_n_next(send), ==, 2);
    guint nr = 9;
    RpcAgNode *a = next_fn(send, 0, &nr);
    g_assert_cmpstr(rpc_ag_node_name(a), ==, ACC);
    g_assert_true(rpc_ag_node_variable(a) == t1);
    g_assert_cmpuint(nr, ==, 0);
    RpcAgNode *b = next_fn(send, 1, &nr);
    g_assert_cmpstr(rpc_ag_node_name(b), ==, ACC);
    g_assert_true(rpc_ag_node_variable(b) == t2);
    g_assert_cmpuint(nr, ==, 0);
    g_assert_true(rpc_ag_grad_fn(ret) == recv);
    g_assert_cmpstr(rpc_ag_node_name(recv), ==, RECVN);
}

/* _verify_graph_for_rpc_call_exec */
static void
verify_rpc_call_exec(RpcAgNode *send)
{
    g_assert_cmpuint(rpc_ag_node_n_next(send), ==, 1);
    RpcAgNode *add = next_fn(send, 0, NULL);
    g_assert_cmpstr(rpc_ag_node_name(add), ==, "AddBackward0");
    g_assert_cmpuint(rpc_ag_node_n_next(add), ==, 2);
    RpcAgNode *r0 = next_fn(add, 0, NULL), *r1 = next_fn(add, 1, NULL);
    g_assert_cmpstr(rpc_ag_node_name(r0), ==, RECVN);
    g_assert_cmpstr(rpc_ag_node_name(r1), ==, RECVN);
    g_assert_true(r0 == r1);
}

/* _verify_graph_for_nested_rpc_call */
static void
verify_nested_rpc_call(RpcAgent *a, gint64 ctx_id)
{
    GPtrArray *sends = rpc_dist_autograd_send_functions(a, ctx_id, NULL);
    g_assert_cmpuint(sends->len, ==, 2);
    RpcAgNode *fwd = g_ptr_array_index(sends, 0);
    g_assert_cmpuint(rpc_ag_node_n_next(fwd), ==, 2);
    g_assert_cmpstr(rpc_ag_node_name(next_fn(fwd, 0, NULL)), ==, RECVN);
    g_assert_cmpstr(rpc_ag_node_name(next_fn(fwd, 1, NULL)), ==, RECVN);
    g_assert_true(next_fn(fwd, 0, NULL) == next_fn(fwd, 1, NULL));
    RpcAgNode *ret = g_ptr_array_index(sends, 1);
    g_assert_cmpuint(rpc_ag_node_n_next(ret), ==, 1);
    g_assert_cmpstr(rpc_ag_node_name(next_fn(ret, 0, NULL)), ==, RECVN);
    g_ptr_array_unref(sends);
}

static GPtrArray *
sends_of(RpcAgent *a, gint64 ctx_id)
{
    GError *err = NULL;
    GPtrArray *s = rpc_dist_autograd_send_functions(a, ctx_id, &err);
    g_assert_no_error(err);
    return s;
}

static GPtrArray *
recvs_of(RpcAgent *a, gint64 ctx_id)
{
    GError *err = NULL;
    GPtrArray *s = rpc_dist_autograd_recv_functions(a, ctx_id, &err);
    g_assert_no_error(err);
    return s;
}

/* --- 116 test_autograd_context, container errors --------------------------- */

static void
body_autograd_context(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    gint64 base = (gint64)rank << 48;
    g_assert_cmpint(rpc_dist_autograd_max_id(a), ==, 281474976710655 + base);
    GError *err = NULL;
    g_assert_cmpint(rpc_dist_autograd_current_context(a, &err), ==, NO_CTX);
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "Current thread doesn't have a valid autograd context. Please wrap your code "
                    "using: `with torch.distributed.autograd.context() as context_id` to generate "
                    "a valid context");
    for (gint64 i = 0; i < 200; i++) {
        gint64 id = ctx_enter(ctx, rank);
        g_assert_cmpint(id, ==, base + i);
        g_assert_true(rpc_dist_autograd_retrieve_context(a, id, &err));
        g_assert_cmpint(id >> 48, ==, rank);
        g_assert_cmpint(rpc_dist_autograd_current_context(a, &err), ==, id);
        g_assert_cmpint(rpc_dist_autograd_context_new(a, &err), ==, NO_CTX);
        rt_assert_error(&err, RPC_ERROR_RUNTIME,
                        "Already have an autograd context id for this thread.");
        ctx_exit(ctx, rank, id);
        assert_no_ctx(a, id);
    }
    g_assert_false(rpc_dist_autograd_context_release(a, 100, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "100");
    g_clear_error(&err);
    GPtrArray *ts = NULL, *gs = NULL;
    g_assert_false(rpc_dist_autograd_get_gradients(a, 100, &ts, &gs, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "100");
    g_clear_error(&err);
    g_assert_null(rpc_dist_autograd_known_worker_ids(a, 7, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "7");
    g_clear_error(&err);
    g_assert_null(rpc_dist_autograd_send_functions(a, 7, &err));
    g_clear_error(&err);
    g_assert_null(rpc_dist_autograd_get_gradient(a, 7, NULL, &err));
    g_clear_error(&err);
    RpcDistAutogradDebugInfo info;
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_autograd_contexts, ==, 0);
    g_assert_cmpuint(info.num_current_backward_passes, ==, 0);
}

static void
test_autograd_context(void)
{
    rt_run_world(NULL, -1, body_autograd_context, NULL);
}

static void
test_container_init(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    RpcAgent *a = agent(ctx, 2);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_init(a, 2, &err));
    g_assert_false(rpc_dist_autograd_init(a, 3, &err));
    g_assert_cmpstr(err->message, ==,
                    "Container is already initialized with worker_id: 2, cannot initialize with "
                    "different worker_id: 3");
    g_clear_error(&err);
    g_assert_false(rpc_dist_autograd_init(a, 65536, &err));
    g_assert_cmpstr(err->message, ==, "worker_id needs to be in the range [0, 65535]");
    g_clear_error(&err);
    g_assert_false(rpc_dist_autograd_check_worker_id(-1, &err));
    g_clear_error(&err);
    g_assert_false(rpc_dist_autograd_init(NULL, 0, &err));
    g_assert_cmpstr(err->message, ==,
                    "Need to initialize distributed autograd using "
                    "torch.distributed.autograd.init()");
    g_clear_error(&err);
    g_assert_true(rpc_dist_autograd_state(a) != rpc_dist_autograd_state(agent(ctx, 1)));
    rt_run(ctx);
    rt_free(ctx);
}

/* --- 118 graph for builtin / python / remote calls -------------------------- */

typedef struct {
    const char *func;
    ExecMode mode;
} GraphCase;

static void
body_graph_for_call(RpcTestCtx *ctx, gint rank)
{
    const GraphCase *gc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 0, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = exec_t(ctx, rank, gc->mode, next, gc->func, rt_args(tv(t1), tv(t2), NULL));
    RpcTensor *want = mat(3, 3, 1, FALSE);
    assert_tensor_eq(ret, want);
    rpc_tensor_unref(want);
    set_rpc_done(ctx, rank, next, id, 1);

    /* this rank's context: one send function and one recv function */
    GPtrArray *sends = sends_of(a, id), *recvs = recvs_of(a, id);
    g_assert_cmpuint(sends->len, ==, 1);
    g_assert_cmpuint(recvs->len, ==, 1);
    verify_first_rpc_call(g_ptr_array_index(sends, 0), g_ptr_array_index(recvs, 0), t1, t2, ret);
    g_ptr_array_unref(sends);
    g_ptr_array_unref(recvs);

    /* the previous rank's context on this one: send -> AddBackward0 -> recv */
    gint64 prev = rpc_done_ctx(ctx, rank, 1);
    g_assert_cmpint(prev >> 48, ==, rt_next(ctx, rank, 3));
    sends = sends_of(a, prev);
    recvs = recvs_of(a, prev);
    g_assert_cmpuint(sends->len, ==, 1);
    g_assert_cmpuint(recvs->len, ==, 1);
    verify_rpc_call_exec(g_ptr_array_index(sends, 0));
    g_assert_true(next_fn(next_fn(g_ptr_array_index(sends, 0), 0, NULL), 0, NULL) ==
                  g_ptr_array_index(recvs, 0));
    g_ptr_array_unref(sends);
    g_ptr_array_unref(recvs);
    GArray *known = rpc_dist_autograd_known_worker_ids(a, prev, NULL);
    g_assert_cmpuint(known->len, ==, 1); /* the response was wrapped: the caller */
    g_assert_cmpint(g_array_index(known, gint, 0), ==, rt_next(ctx, rank, 3));
    g_array_unref(known);

    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rt_barrier(ctx, rank);
    GError *err = NULL;
    assert_no_ctx(a, id);
    g_assert_cmpint(rpc_dist_autograd_current_context(a, &err), ==, NO_CTX);
    g_clear_error(&err);
    g_assert_true(all_contexts_cleaned_up(ctx, rank));
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_graph_for_call(gconstpointer data)
{
    rt_run_world(NULL, -1, body_graph_for_call, (gpointer)data);
}

static const GraphCase graph_builtin = {"add", MODE_RPC_SYNC};
static const GraphCase graph_python = {"my_py_add", MODE_RPC_SYNC};
static const GraphCase graph_builtin_remote = {"add", MODE_REMOTE};
static const GraphCase graph_python_remote = {"my_py_add", MODE_REMOTE};

/* --- 119 test_graph_for_py_nested_call (+ _itself) --------------------------- */

static void
body_graph_nested(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 0, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = exec_t(ctx, rank, MODE_RPC_SYNC, next, "my_py_nested_call",
                            rt_args(tv(t1), tv(t2), rt_int(next), rt_int(4), rt_int(1), NULL));
    for (gint d = 1; d < 4; d++)
        set_rpc_done(ctx, rank, rt_next(ctx, rank, d), id, d);

    GPtrArray *sends = sends_of(a, id), *recvs = recvs_of(a, id);
    g_assert_cmpuint(sends->len, ==, 1);
    g_assert_cmpuint(recvs->len, ==, 1);
    verify_first_rpc_call(g_ptr_array_index(sends, 0), g_ptr_array_index(recvs, 0), t1, t2, ret);
    g_ptr_array_unref(sends);
    g_ptr_array_unref(recvs);
    /* the first and second hops forward the arguments and return the result */
    verify_nested_rpc_call(a, rpc_done_ctx(ctx, rank, 1));
    verify_nested_rpc_call(a, rpc_done_ctx(ctx, rank, 2));
    /* the last hop executes the add */
    gint64 last = rpc_done_ctx(ctx, rank, 3);
    sends = sends_of(a, last);
    g_assert_cmpuint(sends->len, ==, 1);
    verify_rpc_call_exec(g_ptr_array_index(sends, 0));
    g_ptr_array_unref(sends);

    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rt_barrier(ctx, rank);
    g_assert_true(all_contexts_cleaned_up(ctx, rank));
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_graph_for_py_nested_call(void)
{
    rt_run_world(NULL, -1, body_graph_nested, NULL);
}

/* rank → next → rank: the origin's context is reused, with 2 sends and 2
 * recvs; then a backward through the loop gives the local gradients. */
static void
body_graph_nested_itself(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1), prev = rt_next(ctx, rank, 3);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 0, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = exec_t(ctx, rank, MODE_RPC_SYNC, next, "my_py_nested_call",
                            rt_args(tv(t1), tv(t2), rt_int(prev), rt_int(4), rt_int(0), NULL));
    set_rpc_done(ctx, rank, next, id, 1);
    GPtrArray *sends = sends_of(a, id), *recvs = recvs_of(a, id);
    g_assert_cmpuint(sends->len, ==, 2);
    g_assert_cmpuint(recvs->len, ==, 2);
    verify_first_rpc_call(g_ptr_array_index(sends, 0), g_ptr_array_index(recvs, 1), t1, t2, ret);
    verify_rpc_call_exec(g_ptr_array_index(sends, 1));
    g_ptr_array_unref(sends);
    g_ptr_array_unref(recvs);
    verify_nested_rpc_call(a, rpc_done_ctx(ctx, rank, 1));
    rt_barrier(ctx, rank);

    /* A → B → A backward: ones for both, on the origin only */
    RpcTensor *loss = sum_of(ctx, rank, ret);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    RpcTensor *ones = mat(3, 3, 1, FALSE);
    assert_grad(a, id, t1, ones);
    assert_grad(a, id, t2, ones);
    g_assert_cmpuint(n_grads(a, id), ==, 2);
    g_assert_null(rpc_ag_grad(t1));
    rt_barrier(ctx, rank);
    g_assert_cmpuint(n_grads(a, rpc_done_ctx(ctx, rank, 1)), ==, 0);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(ones);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_graph_for_py_nested_call_itself(void)
{
    rt_run_world(NULL, -1, body_graph_nested_itself, NULL);
}

/* --- 121 no graph with tensors not requiring grad ----------------------------- */

static void
body_no_graph(RpcTestCtx *ctx, gint rank)
{
    const GraphCase *gc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *t1 = mat(3, 3, 1, FALSE), *t2 = mat(3, 3, 0, FALSE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = exec_t(ctx, rank, gc->mode, next, gc->func, rt_args(tv(t1), tv(t2), NULL));
    g_assert_false(rpc_ag_requires_grad(ret));
    set_rpc_done(ctx, rank, next, id, 1);
    GPtrArray *sends = sends_of(a, id), *recvs = recvs_of(a, id);
    g_assert_cmpuint(sends->len, ==, 0);
    g_assert_cmpuint(recvs->len, ==, 0);
    g_ptr_array_unref(sends);
    g_ptr_array_unref(recvs);
    /* the UDF path always carries the context to the callee */
    g_assert_true(has_ctx(ctx, rank, rpc_done_ctx(ctx, rank, 1)));
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_no_graph_with_tensors_not_require_grad(gconstpointer data)
{
    rt_run_world(NULL, -1, body_no_graph, (gpointer)data);
}

/* --- 122 test_grad_only_on_return_value ---------------------------------------- */

static void
body_grad_only_on_return_value(RpcTestCtx *ctx, gint rank)
{
    const GraphCase *gc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    gint64 id = ctx_enter(ctx, rank);
    GError *err = NULL;
    RpcTensor *ret = exec_t(ctx, rank, gc->mode, next, "ret_requires_grad", NULL);
    RpcTensor *loss = sum_of(ctx, rank, ret);
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    set_rpc_done(ctx, rank, next, id, 1);
    g_assert_cmpuint(n_grads(a, id), ==, 0);
    /* next's global tensor got ones(3, 3) in this rank's context */
    gint64 prev = rpc_done_ctx(ctx, rank, 1);
    rt_barrier(ctx, rank);
    RpcValue *global = rpc_agent_slot_get(a, "requires_grad_tensor");
    g_assert_nonnull(global);
    g_assert_cmpuint(n_grads(a, prev), ==, 1);
    RpcTensor *ones = mat(3, 3, 1, FALSE);
    assert_grad(a, prev, rpc_value_get_tensor(global), ones);
    g_assert_null(rpc_ag_grad(rpc_value_get_tensor(global)));
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(ones);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(ret);
}

static void
test_grad_only_on_return_value(gconstpointer data)
{
    rt_run_world(NULL, -1, body_grad_only_on_return_value, (gpointer)data);
}

static const GraphCase mode_sync = {NULL, MODE_RPC_SYNC};
static const GraphCase mode_remote = {NULL, MODE_REMOTE};

/* --- 124 test_worker_ids_recorded ------------------------------------------------ */

static void
assert_known(RpcAgent *a, gint64 id, gint rank, guint n)
{
    GArray *known = rpc_dist_autograd_known_worker_ids(a, id, NULL);
    g_assert_cmpuint(known->len, ==, n - 1);
    for (guint i = 0, w = 0; w < n; w++)
        if ((gint)w != rank)
            g_assert_cmpint(g_array_index(known, gint, i++), ==, (gint)w);
    g_array_unref(known);
}

static void
body_worker_ids_recorded(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, FALSE), *t2 = mat(3, 3, 0, FALSE);
    for (gint d = 1; d < 4; d++) {
        RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, d), "add", t1, t2);
        rpc_tensor_unref(r);
        set_rpc_done(ctx, rank, rt_next(ctx, rank, d), id, 1);
    }
    assert_known(a, id, rank, 4);
    rpc_ag_set_requires_grad(t1, TRUE, NULL);
    rpc_ag_set_requires_grad(t2, TRUE, NULL);
    for (gint d = 1; d < 4; d++) {
        RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, d), "add", t1, t2);
        rpc_tensor_unref(r);
        set_rpc_done(ctx, rank, rt_next(ctx, rank, d), id, 1);
    }
    assert_known(a, id, rank, 4);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_worker_ids_recorded(void)
{
    rt_run_world(NULL, -1, body_worker_ids_recorded, NULL);
}

/* --- 125 context cleanup; 115 with the faulty agent ------------------------------ */

typedef enum { CLEAN_WITH_GRAD, CLEAN_NO_GRAD, CLEAN_NO_TENSORS, CLEAN_NESTED } CleanKind;

static void
body_context_cleanup(RpcTestCtx *ctx, gint rank)
{
    CleanKind kind = GPOINTER_TO_INT(ctx->data);
    RpcAgent *a = agent(ctx, rank);
    gboolean rg = kind == CLEAN_WITH_GRAD || kind == CLEAN_NESTED;
    RpcTensor *t1 = mat(3, 3, 1, rg), *t2 = mat(3, 3, 0, rg);
    gint next = rt_next(ctx, rank, 1);
    gint64 id = ctx_enter(ctx, rank);
    for (gint d = 1; d < 4; d++) {
        gint dst = rt_next(ctx, rank, d);
        if (kind == CLEAN_NESTED && d > 1)
            break;
        GError *err = NULL;
        RpcValue *args = kind == CLEAN_NO_TENSORS ? rt_args(rt_int(1), rt_int(1), NULL)
                         : kind == CLEAN_NESTED
                             ? rt_args(tv(t1), tv(t2), rt_int(next), rt_int(4), rt_int(0), NULL)
                             : rt_args(tv(t1), tv(t2), NULL);
        const char *f = kind == CLEAN_NO_TENSORS ? "my_scalar_add"
                        : kind == CLEAN_NESTED   ? "my_py_nested_call"
                                                 : "add";
        RpcValue *r = rt_sync(ctx, rank, dst, f, args, UNSET, &err);
        g_assert_no_error(err);
        rpc_value_unref(r);
        set_rpc_done(ctx, rank, dst, id, 1);
        if (kind == CLEAN_NESTED)
            set_rpc_done(ctx, rank, rt_next(ctx, rank, 2), id, 2);
    }
    ctx_exit(ctx, rank, id);
    assert_no_ctx(a, id);
    rt_barrier(ctx, rank);
    g_assert_true(all_contexts_cleaned_up(ctx, rank));
    if (ctx->opts.pytorch_faults)
        rt_sleep(ctx, rank, 10 * SIM_S); /* the cascades back retry until 3.5 s */
    rt_barrier(ctx, rank);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_context_cleanup(gconstpointer data)
{
    RpcTestCtx *ctx = rt_new(NULL);
    ctx->data = (gpointer)data;
    rt_on(ctx, -1, body_context_cleanup);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 0);
    for (gint r = 0; r < 4; r++) {
        RpcDistAutogradDebugInfo info;
        rpc_dist_autograd_debug_info(agent(ctx, r), &info);
        g_assert_cmpuint(info.num_autograd_contexts, ==, 0);
    }
    rt_free(ctx);
}

/* Records (time, worker, failed?) of every CLEANUP_AUTOGRAD_CONTEXT_REQ send. */
typedef struct {
    GArray *sends; /* CleanupSend */
} CleanupLog;

typedef struct {
    SimTime time;
    gint worker;
    gint64 to;
    gboolean failed;
} CleanupSend;

static void
log_cleanup(const SimTraceRecord *rec, gpointer data)
{
    CleanupLog *log = data;
    if (rec->detail == NULL || strcmp(rec->detail, "CLEANUP_AUTOGRAD_CONTEXT_REQ") != 0)
        return;
    if (strcmp(rec->kind->name, "rpc.send") == 0) {
        CleanupSend s = {rec->time, rec->worker, rec->a, FALSE};
        g_array_append_val(log->sends, s);
    }
}

static void
log_cleanup_failed(const SimTraceRecord *rec, gpointer data)
{
    CleanupLog *log = data;
    if (strcmp(rec->kind->name, "rpc.send_failed") != 0 || log->sends->len == 0)
        return;
    CleanupSend *last = &g_array_index(log->sends, CleanupSend, log->sends->len - 1);
    if (last->time == rec->time && last->worker == rec->worker && last->to == rec->a)
        last->failed = TRUE;
}

static void
body_cleanup_faulty_rank0(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 0, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    for (gint d = 1; d < 4; d++) {
        RpcTensor *r = call2(ctx, rank, d, "add", t1, t2);
        rpc_tensor_unref(r);
        set_rpc_done(ctx, rank, d, id, 1);
    }
    g_assert_cmpint(rt_now(ctx), ==, 0); /* wrapped calls are not delayed */
    ctx_exit(ctx, rank, id);
    /* within 10 s every peer has released it (the retries at 1 s succeed) */
    for (gint w = 1; w < 4; w++)
        g_assert_true(has_ctx(ctx, w, id));
    rt_sleep(ctx, rank, SIM_S + SIM_MS);
    for (gint w = 1; w < 4; w++)
        g_assert_false(has_ctx(ctx, w, id));
    rt_sleep(ctx, rank, 10 * SIM_S); /* the cascades' retries end at 4.5 s */
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

/* Case 115: CLEANUP fails 3 times per payload; the faulty agent keys on the
 * payload (the context id), so worker0's three first sends use up the
 * failures and the retries 1 s later get through; each peer's cascade
 * back to worker0 (a payload new to it) fails at 1, 2, 3 s and gets through
 * at 4.5 s (the §3.6 schedule: 0, 1, 2, 3.5 s after its first attempt). */
static void
test_context_cleanup_faulty(void)
{
    RpcTestOptions o = {.pytorch_faults = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    CleanupLog log = {g_array_new(FALSE, FALSE, sizeof(CleanupSend))};
    sim_trace_add_sink(sim_kernel_trace(ctx->k), log_cleanup, &log, NULL);
    sim_trace_add_sink(sim_kernel_trace(ctx->k), log_cleanup_failed, &log, NULL);
    rt_on(ctx, -1, body_cleanup_faulty_rank0);
    rt_run(ctx);
    /* worker0: 3 failed at 0, 3 through at 1 s (to 1, 2, 3 in order) */
    guint n0 = 0, n_peer[4] = {0};
    for (guint i = 0; i < log.sends->len; i++) {
        CleanupSend *s = &g_array_index(log.sends, CleanupSend, i);
        if (s->worker == 0) {
            g_assert_cmpint(s->time, ==, n0 < 3 ? 0 : SIM_S);
            g_assert_cmpint(s->to, ==, (gint64)(n0 % 3) + 1);
            g_assert_cmpint(s->failed, ==, n0 < 3);
            n0++;
        } else {
            static const SimTime at[] = {SIM_S, 2 * SIM_S, 3 * SIM_S, 4500 * SIM_MS};
            guint k = n_peer[s->worker]++;
            g_assert_cmpuint(k, <, 4);
            g_assert_cmpint(s->time, ==, at[k]);
            g_assert_cmpint(s->to, ==, 0);
            g_assert_cmpint(s->failed, ==, k < 3);
        }
    }
    g_assert_cmpuint(n0, ==, 6);
    for (gint w = 1; w < 4; w++)
        g_assert_cmpuint(n_peer[w], ==, 4);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 0);
    g_array_unref(log.sends);
    rt_free(ctx);
}

/* Case 115 as PyTorch runs it: every rank, the fixture's failures. */
static void
test_context_cleanup_tensor_with_grad_faulty(void)
{
    RpcTestOptions o = {.pytorch_faults = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    ctx->data = GINT_TO_POINTER(CLEAN_WITH_GRAD);
    rt_on(ctx, -1, body_context_cleanup);
    rt_run(ctx);
    SimWorldStats st;
    sim_world_get_stats(ctx->w, &st);
    /* each rank's payload fails 3 times, so does each cascade back */
    g_assert_cmpuint(st.faults_failed_sends, ==, 4 * 3 + 12 * 3);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 0);
    rt_free(ctx);
}

/* Cleanup messages lost by the network-level drop rule: recovered by the
 * retries after their (short) timeout. */
static void
body_cleanup_dropped(RpcTestCtx *ctx, gint rank)
{
    RpcTensor *t1 = mat(2, 2, 1, TRUE), *t2 = mat(2, 2, 3, TRUE);
    for (gint round = 0; round < 5; round++) {
        gint64 id = ctx_enter(ctx, rank);
        for (gint d = 1; d < 4; d++) {
            RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, d), "my_py_add", t1, t2);
            rpc_tensor_unref(r);
            set_rpc_done(ctx, rank, rt_next(ctx, rank, d), id, d);
        }
        ctx_exit(ctx, rank, id);
        rt_barrier(ctx, rank);
    }
    SimTime until = rt_now(ctx) + 600 * SIM_S;
    for (;;) {
        RpcDistAutogradDebugInfo info;
        rpc_dist_autograd_debug_info(agent(ctx, rank), &info);
        if (info.num_autograd_contexts == 0)
            break;
        g_assert_cmpint(rt_now(ctx), <, until);
        rt_sleep(ctx, rank, 100 * SIM_MS);
    }
    rt_sleep(ctx, rank, 300 * SIM_S); /* cascades to released contexts retry too */
    rt_barrier(ctx, rank);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_context_cleanup_dropped(void)
{
    RpcTestOptions o = {.rpc_timeout = SIM_S};
    RpcTestCtx *ctx = rt_new(&o);
    for (guint w = 0; w < 4; w++)
        g_assert_true(sim_faults_add_drop(sim_world_faults(ctx->w, w),
                                          "CLEANUP_AUTOGRAD_CONTEXT_REQ", 0.3, NULL));
    rt_on(ctx, -1, body_cleanup_dropped);
    rt_run(ctx);
    SimWorldStats st;
    sim_world_get_stats(ctx->w, &st);
    g_assert_cmpuint(st.faults_drops, >, 10);
    g_assert_cmpuint(rt_trace_count(ctx, "rpc.timeout"), ==, st.faults_drops);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 0);
    rt_free(ctx);
}

/* A CLEANUP that fails for good (the peer is gone) is only logged. */
static void
body_cleanup_peer_dead(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcTensor *t1 = mat(2, 2, 1, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r = call2(ctx, rank, 1, "my_py_add", t1, t1);
    rpc_tensor_unref(r);
    sim_world_crash(ctx->w, 1);
    rt_sleep(ctx, rank, SIM_MS);
    ctx_exit(ctx, rank, id);
    rt_sleep(ctx, rank, 60 * SIM_S);
    rpc_tensor_unref(t1);
}

static void
test_context_cleanup_peer_dead(void)
{
    RpcTestOptions o = {.n_workers = 2, .shutdown = RT_SHUTDOWN_NONE, .skip_counter_check = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    rt_on(ctx, -1, body_cleanup_peer_dead);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 1);
    rt_free(ctx);
}

/* --- 127/128 backward simple; no .grad ---------------------------------------------- */

typedef struct {
    ExecMode mode;
    gint dst_offset; /* 0: self */
} BackwardCase;

static void
body_backward_simple(RpcTestCtx *ctx, gint rank)
{
    const BackwardCase *bc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    gint dst = rt_next(ctx, rank, bc->dst_offset);
    guint64 seed = 17 + rank;
    RpcTensor *t1 = rand_dt(&seed, RPC_DTYPE_FLOAT32, 3, 3, TRUE);
    RpcTensor *t2 = rand_dt(&seed, RPC_DTYPE_FLOAT32, 3, 3, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = exec_t(ctx, rank, bc->mode, dst, "add", rt_args(tv(t1), tv(t2), NULL));
    RpcTensor *loss = sum_of(ctx, rank, ret);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    RpcTensor *ones = mat(3, 3, 1, FALSE);
    if (bc->mode == MODE_LOCAL) {
        g_assert_cmpuint(n_grads(a, id), ==, 2);
    } else {
        g_assert_cmpuint(n_grads(a, id), ==, 2);
    }
    assert_grad(a, id, t1, ones);
    assert_grad(a, id, t2, ones);
    g_assert_null(rpc_ag_grad(t1));
    g_assert_null(rpc_ag_grad(t2));
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(ones);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_backward_simple(gconstpointer data)
{
    rt_run_world(NULL, -1, body_backward_simple, (gpointer)data);
}

static const BackwardCase bs_sync = {MODE_RPC_SYNC, 1};
static const BackwardCase bs_self = {MODE_RPC_SYNC, 0};
static const BackwardCase bs_remote = {MODE_REMOTE, 1};
static const BackwardCase bs_remote_self = {MODE_REMOTE, 0};
static const BackwardCase bs_local = {MODE_LOCAL, 0};

static void
body_backward_no_grad_on_tensor(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    guint64 seed = 99 + rank;
    RpcTensor *t1 = rand_dt(&seed, RPC_DTYPE_FLOAT32, 3, 3, TRUE);
    RpcTensor *t2 = rand_dt(&seed, RPC_DTYPE_FLOAT32, 3, 3, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *ret = call2(ctx, rank, rt_next(ctx, rank, 1), "add", t1, t2);
    RpcTensor *loss = sum_of(ctx, rank, ret);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, TRUE, &err));
    g_assert_null(rpc_ag_grad(t1));
    g_assert_null(rpc_ag_grad(t2));
    /* a local backward fills .grad; dist backward leaves it alone */
    RpcTensor *local = rpc_ag_add(th, t1, t2, NULL);
    RpcTensor *local_loss = rpc_ag_sum(th, local, NULL);
    g_assert_true(rpc_ag_backward(th, &local_loss, NULL, 1, FALSE, FALSE, &err));
    RpcTensor *g1 = rpc_tensor_ref(rpc_ag_grad(t1)), *g2 = rpc_tensor_ref(rpc_ag_grad(t2));
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    g_assert_true(rpc_ag_grad(t1) == g1);
    g_assert_true(rpc_ag_grad(t2) == g2);
    RpcTensor *twos = mat(3, 3, 2, FALSE), *ones = mat(3, 3, 1, FALSE);
    assert_tensor_eq(g1, ones);
    assert_grad(a, id, t1, twos); /* two passes accumulated in the context */
    rpc_tensor_unref(ones);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(twos);
    rpc_tensor_unref(g1);
    rpc_tensor_unref(g2);
    rpc_tensor_unref(local_loss);
    rpc_tensor_unref(local);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(ret);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_backward_no_grad_on_tensor(void)
{
    rt_run_world(NULL, -1, body_backward_no_grad_on_tensor, NULL);
}

/* Multiple roots (all scalar): each seeded with one, on different workers'
 * graphs, accumulated like a local backward of both. */
static void
body_multiple_roots(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    guint64 seed = 31 + rank;
    RpcTensor *t1 = rand_dt(&seed, RPC_DTYPE_FLOAT64, 2, 3, TRUE),
              *t2 = rand_dt(&seed, RPC_DTYPE_FLOAT64, 2, 3, TRUE);
    RpcTensor *l1 = rpc_ag_add(th, t1, t2, NULL), *l2 = rpc_ag_mul(th, t1, t2, NULL);
    RpcTensor *local[2] = {rpc_ag_sum(th, l1, NULL), rpc_ag_sum(th, l2, NULL)};
    g_assert_true(rpc_ag_backward(th, local, NULL, 2, FALSE, FALSE, NULL));
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r1 = call2(ctx, rank, rt_next(ctx, rank, 1), "add", t1, t2);
    RpcTensor *r2 = call2(ctx, rank, rt_next(ctx, rank, 2), "mul", t1, t2);
    RpcTensor *roots[2] = {sum_of(ctx, rank, r1), sum_of(ctx, rank, r2)};
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, roots, 2, FALSE, &err));
    g_assert_no_error(err);
    assert_grad(a, id, t1, rpc_ag_grad(t1));
    assert_grad(a, id, t2, rpc_ag_grad(t2));
    g_assert_cmpuint(n_grads(a, id), ==, 2);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    RpcTensor *ts[] = {t1, t2, l1, l2, local[0], local[1], r1, r2, roots[0], roots[1]};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_multiple_roots(void)
{
    rt_run_world(NULL, -1, body_multiple_roots, NULL);
}

/* --- 130 test_trainer_ps -------------------------------------------------------------- */

/* create_tensor(): ones(3, 3) requiring grad, made on the owner */
static RpcValue *
udf_create_tensor(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_new_tensor(mat(3, 3, 1, TRUE));
}

/* _run_trainer(rref_t1, t2, ps, rank_diff) on a trainer's RPC thread. */
static RpcValue *
udf_run_trainer(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    const RpcValue *rref = rpc_value_list_get(args, 0), *t2 = rpc_value_list_get(args, 1);
    const RpcValue *ps = rpc_value_list_get(args, 2), *diff = rpc_value_list_get(args, 3);
    gint64 id = rpc_dist_autograd_context_new(self, error);
    if (id == NO_CTX)
        return NULL;
    RpcValue *ret =
        rpc_sync(self, ps, "my_rref_add",
                 rt_args(rpc_value_ref((RpcValue *)rref), rpc_value_ref((RpcValue *)t2), NULL),
                 NULL, UNSET, error);
    g_assert_nonnull(ret);
    RpcTensor *loss = rpc_ag_sum(rpc_dist_autograd_thread(self), rpc_value_get_tensor(ret), NULL);
    g_assert_true(rpc_dist_autograd_backward(self, id, &loss, 1, FALSE, error));
    RpcValue *v =
        rpc_sync(self, ps, "set_rpc_done",
                 rt_args(rt_int(id), rpc_value_ref((RpcValue *)diff), NULL), NULL, UNSET, error);
    rpc_value_unref(v);
    /* hold the context until the ps has checked it */
    v = rpc_sync(self, ps, "block_until_unblocked", NULL, NULL, UNSET, error);
    g_assert_nonnull(v);
    rpc_value_unref(v);
    g_assert_true(rpc_dist_autograd_context_release(self, id, error));
    rpc_tensor_unref(loss);
    rpc_value_unref(ret);
    return rpc_value_none();
}

static void
body_trainer_ps(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 1, TRUE);
    RpcTensor *local = rpc_ag_add(th, t1, t2, NULL);
    RpcTensor *local_loss = rpc_ag_sum(th, local, NULL);
    g_assert_true(rpc_ag_backward(th, &local_loss, NULL, 1, FALSE, FALSE, NULL));
    GError *err = NULL;
    RpcValue *self = rt_name(ctx, 0);
    RpcValue *rref = rpc_remote(a, self, "create_tensor", NULL, NULL, UNSET, &err);
    g_assert_no_error(err);
    RpcFuture *futs[3];
    for (gint d = 1; d < 4; d++)
        futs[d - 1] =
            rt_async(ctx, rank, d, "run_trainer",
                     rt_args(rpc_value_ref(rref), tv(t2), rt_name(ctx, 0), rt_int(d), NULL), UNSET);
    RpcValue *local_t1 = rpc_rref_local_value(rpc_value_get_rref(rref), &err);
    g_assert_no_error(err);
    for (gint d = 1; d < 4; d++) {
        gint64 id = rpc_done_ctx(ctx, rank, d);
        g_assert_cmpint(id >> 48, ==, d);
        g_assert_cmpuint(n_grads(a, id), ==, 1);
        assert_grad(a, id, rpc_value_get_tensor(local_t1), rpc_ag_grad(t1));
    }
    RpcValue *v = rt_sync(ctx, rank, 0, "unblock", NULL, UNSET, &err);
    g_assert_no_error(err);
    rpc_value_unref(v);
    RpcValue *all = rpc_future_wait_all(rt_executor(ctx, 0), futs, 3, &err);
    g_assert_no_error(err);
    rpc_value_unref(all);
    for (gint i = 0; i < 3; i++)
        rpc_future_unref(futs[i]);
    rpc_value_unref(local_t1);
    rpc_value_unref(rref);
    rpc_value_unref(self);
    rpc_tensor_unref(local_loss);
    rpc_tensor_unref(local);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static const RpcFunctionDef test_defs_ps[] = {
    {"create_tensor", NULL, udf_create_tensor, 0, 0, -1, "ones(3, 3) with requires_grad"},
    {"run_trainer", NULL, udf_run_trainer, 0, 0, -1, "_run_trainer"},
};

static void
register_defs(RpcTestCtx *ctx, const RpcFunctionDef *defs, guint n)
{
    for (guint w = 0; w < ctx->n; w++)
        for (guint i = 0; i < n; i++)
            rpc_registry_add(rpc_agent_registry(agent(ctx, (gint)w)), &defs[i]);
}

static void
test_trainer_ps(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    register_defs(ctx, test_defs_ps, G_N_ELEMENTS(test_defs_ps));
    rt_on(ctx, -1, body_trainer_ps);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- 131/133 backward equals local, 134/136 accumulate ------------------------------- */

typedef void (*Computation)(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in,
                            RpcTensor **loss);

/* _verify_backwards over LOCAL, RPC_SYNC and REMOTE: the context's
 * gradients equal the local .grad, leaf by leaf, and only leaves that
 * require grad and were reached appear. */
static void
verify_modes(RpcTestCtx *ctx, gint rank, Computation comp, RpcTensor **in, guint n_in)
{
    RpcAgent *a = agent(ctx, rank);
    RpcTensor **local = g_new0(RpcTensor *, n_in);
    for (ExecMode mode = MODE_LOCAL; mode <= MODE_REMOTE; mode++) {
        gint64 id = ctx_enter(ctx, rank);
        RpcTensor *loss = NULL;
        comp(ctx, rank, mode, in, &loss);
        GError *err = NULL;
        if (mode == MODE_LOCAL) {
            g_assert_true(rpc_ag_backward(th_of(ctx, rank), &loss, NULL, 1, FALSE, FALSE, &err));
            for (guint i = 0; i < n_in; i++)
                local[i] = rpc_ag_grad(in[i]) ? rpc_tensor_ref(rpc_ag_grad(in[i])) : NULL;
        } else {
            g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
            g_assert_no_error(err);
            guint ngrads = 0;
            for (guint i = 0; i < n_in; i++) {
                RpcTensor *g = rpc_dist_autograd_get_gradient(a, id, in[i], NULL);
                if (local[i] == NULL) {
                    g_assert_null(g);
                    continue;
                }
                g_assert_nonnull(g);
                if (!rpc_tensor_allclose(g, local[i], 1e-6, 1e-7)) {
                    char *x = rpc_tensor_repr(g), *y = rpc_tensor_repr(local[i]);
                    g_error("rank %d mode %d input %u: dist %s != local %s", rank, mode, i, x, y);
                }
                rpc_tensor_unref(g);
                ngrads++;
            }
            g_assert_cmpuint(n_grads(a, id), ==, ngrads);
        }
        rpc_tensor_unref(loss);
        ctx_exit(ctx, rank, id);
    }
    for (guint i = 0; i < n_in; i++)
        if (local[i] != NULL)
            rpc_tensor_unref(local[i]);
    g_free(local);
}

static RpcTensor *
op2(RpcTestCtx *ctx, gint rank, ExecMode mode, gint dst, const char *f, RpcTensor *x, RpcTensor *y)
{
    return exec_t(ctx, rank, mode, dst, f, rt_args(tv(x), tv(y), NULL));
}

static RpcTensor *
stack2(RpcTestCtx *ctx, gint rank, ExecMode mode, gint dst, RpcTensor *x, RpcTensor *y)
{
    return exec_t(ctx, rank, mode, dst, "stack", rt_args(rt_args(tv(x), tv(y), NULL), NULL));
}

/* test_backward_multiple_round_trips (bmm as matmul of the stacked rows) */
static void
comp_round_trips(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in, RpcTensor **loss)
{
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *val = op2(ctx, rank, mode, rt_next(ctx, rank, 1), "add", in[0], in[1]);
    RpcTensor *v2 = op2(ctx, rank, mode, rt_next(ctx, rank, 2), "mul", in[2], val);
    RpcTensor *s1 = stack2(ctx, rank, mode, rt_next(ctx, rank, 3), in[3], v2);
    RpcTensor *s2 = stack2(ctx, rank, mode, rt_next(ctx, rank, 1), in[4], v2);
    RpcTensor *r1 = rpc_ag_select(th, s1, 1, NULL), *r2 = rpc_ag_select(th, s2, 1, NULL);
    RpcTensor *m = op2(ctx, rank, mode, rt_next(ctx, rank, 2), "matmul", r1, r2);
    RpcTensor *mm = op2(ctx, rank, mode, rt_next(ctx, rank, 3), "matmul", m, m);
    *loss = rpc_ag_sum(th, mm, NULL);
    RpcTensor *ts[] = {val, v2, s1, s2, r1, r2, m, mm};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

/* test_backward_different_tensor_dims */
static void
comp_different_dims(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in, RpcTensor **loss)
{
    RpcTensor *val = op2(ctx, rank, mode, rt_next(ctx, rank, 1), "matmul", in[0], in[1]);
    RpcTensor *v2 = op2(ctx, rank, mode, rt_next(ctx, rank, 2), "matmul", val, in[2]);
    RpcTensor *v3 = op2(ctx, rank, mode, rt_next(ctx, rank, 3), "mul", v2, in[3]);
    *loss = rpc_ag_sum(th_of(ctx, rank), v3, NULL);
    rpc_tensor_unref(val);
    rpc_tensor_unref(v2);
    rpc_tensor_unref(v3);
}

/* test_backward_unused_tensors: the middle stacked row gets no gradient */
static void
comp_unused_tensors(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in, RpcTensor **loss)
{
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *s = exec_t(ctx, rank, mode, rt_next(ctx, rank, 1), "stack",
                          rt_args(rt_args(tv(in[0]), tv(in[1]), tv(in[2]), NULL), NULL));
    RpcTensor *a0 = rpc_ag_select(th, s, 0, NULL), *a2 = rpc_ag_select(th, s, 2, NULL);
    RpcTensor *val = op2(ctx, rank, mode, rt_next(ctx, rank, 2), "matmul", a0, a2);
    *loss = rpc_ag_sum(th, val, NULL);
    rpc_tensor_unref(s);
    rpc_tensor_unref(a0);
    rpc_tensor_unref(a2);
    rpc_tensor_unref(val);
}

/* test_backward_simple_python_udf / complex: my_py_add chains and a nested
 * call that comes back through this rank */
static void
comp_python_udf(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in, RpcTensor **loss)
{
    RpcTensor *v = op2(ctx, rank, mode, rt_next(ctx, rank, 1), "my_py_add", in[0], in[1]);
    /* the nested chain ends in my_py_add(v, in[0]); run locally as such */
    RpcTensor *w = mode == MODE_LOCAL
                       ? op2(ctx, rank, mode, 0, "my_py_add", v, in[0])
                       : exec_t(ctx, rank, mode, rt_next(ctx, rank, 1), "my_py_nested_call",
                                rt_args(tv(v), tv(in[0]), rt_int(rt_next(ctx, rank, 1)), rt_int(4),
                                        rt_int(2), NULL));
    RpcTensor *x = op2(ctx, rank, mode, rt_next(ctx, rank, 2), "mul", w, v);
    *loss = rpc_ag_sum(th_of(ctx, rank), x, NULL);
    rpc_tensor_unref(v);
    rpc_tensor_unref(w);
    rpc_tensor_unref(x);
}

/* test_backward_different_dtypes: float32 and float64 through remote */
static void
comp_dtypes(RpcTestCtx *ctx, gint rank, ExecMode mode, RpcTensor **in, RpcTensor **loss)
{
    RpcTensor *v = op2(ctx, rank, mode, rt_next(ctx, rank, 1), "mul", in[0], in[1]);
    *loss = rpc_ag_sum(th_of(ctx, rank), v, NULL);
    rpc_tensor_unref(v);
}

typedef struct {
    Computation comp;
    guint n_in;
    gint64 rows[5], cols[5];
    gboolean rg[5];
    RpcDType dt[5];
} CompCase;

static void
body_verify_modes(RpcTestCtx *ctx, gint rank)
{
    const CompCase *cc = ctx->data;
    guint64 seed = 1000 + rank;
    RpcTensor *in[5];
    for (guint i = 0; i < cc->n_in; i++)
        in[i] = rand_dt(&seed, cc->dt[i], cc->rows[i], cc->cols[i], cc->rg[i]);
    verify_modes(ctx, rank, cc->comp, in, cc->n_in);
    rt_barrier(ctx, rank);
    for (guint i = 0; i < cc->n_in; i++)
        rpc_tensor_unref(in[i]);
}

#define F32 RPC_DTYPE_FLOAT32
#define F64 RPC_DTYPE_FLOAT64
static const CompCase cc_round_trips = {
    comp_round_trips,         5, {3, 3, 3, 3, 3}, {3, 3, 3, 3, 3}, {TRUE, FALSE, TRUE, FALSE, TRUE},
    {F32, F32, F32, F32, F32}};
static const CompCase cc_dims = {
    comp_different_dims, 4, {2, 3, 5, 2}, {3, 5, 2, 2}, {TRUE, TRUE, TRUE, TRUE},
    {F32, F32, F32, F32}};
static const CompCase cc_unused = {comp_unused_tensors, 3, {3, 3, 3}, {3, 3, 3}, {TRUE, TRUE, TRUE},
                                   {F32, F32, F32}};
static const CompCase cc_python = {comp_python_udf, 2, {3, 3}, {3, 3}, {TRUE, TRUE}, {F32, F32}};
static const CompCase cc_dtypes = {comp_dtypes, 2, {3, 3}, {3, 3}, {TRUE, TRUE}, {F32, F64}};

static void
test_backward_equals_local(gconstpointer data)
{
    rt_run_world(NULL, -1, body_verify_modes, (gpointer)data);
}

/* 134 test_backward_accumulate_grads and 136 the nested variant */
static void
body_accumulate_grads(RpcTestCtx *ctx, gint rank)
{
    gboolean nested = GPOINTER_TO_INT(ctx->data);
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    guint64 seed = 5 + rank;
    RpcTensor *t1 = rand_dt(&seed, F32, 3, 3, TRUE), *t2 = rand_dt(&seed, F32, 3, 3, TRUE);
    RpcTensor *t3 = rpc_ag_matmul(th, t1, t2, NULL);
    RpcTensor *l = rpc_ag_sum(th, t3, NULL);
    g_assert_true(rpc_ag_backward(th, &l, NULL, 1, TRUE, FALSE, NULL));
    g_assert_true(rpc_ag_backward(th, &l, NULL, 1, FALSE, FALSE, NULL));
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r =
        nested ? exec_t(ctx, rank, MODE_RPC_SYNC, rt_next(ctx, rank, 1), "my_py_nested_call",
                        rt_args(tv(t1), tv(t2), rt_int(rt_next(ctx, rank, 1)), rt_int(4), rt_int(1),
                                NULL))
               : call2(ctx, rank, rt_next(ctx, rank, 1), "matmul", t1, t2);
    RpcTensor *loss = sum_of(ctx, rank, r);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, TRUE, &err));
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(n_grads(a, id), ==, 2);
    if (!nested) {
        assert_grad(a, id, t1, rpc_ag_grad(t1));
        assert_grad(a, id, t2, rpc_ag_grad(t2));
    }
    /* a third pass: MmBackward0 on next freed what it saved (the local
     * autograd error, from next); the add chain saves nothing */
    if (nested) {
        g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    } else {
        g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
        char *want =
            g_strdup_printf("Error on Node %d: Error on Node %d: " RPC_AG_ERR_BACKWARD_TWICE, rank,
                            rt_next(ctx, rank, 1));
        g_assert_cmpstr(err->message, ==, want);
        g_free(want);
        g_clear_error(&err);
    }
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(r);
    rpc_tensor_unref(l);
    rpc_tensor_unref(t3);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_backward_accumulate_grads(gconstpointer data)
{
    rt_run_world(NULL, -1, body_accumulate_grads, (gpointer)data);
}

/* --- 137/139 errors in backward ---------------------------------------------------- */

static void
body_backward_engine_error(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    guint64 seed = 77 + rank;
    RpcTensor *t1 = rand_dt(&seed, F32, 3, 3, TRUE), *t2 = rand_dt(&seed, F32, 3, 3, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *s = rpc_ag_add(th, t1, t2, NULL);
    RpcTensor *tmp = rpc_ag_pow(th, s, 2, NULL);
    GError *err = NULL;
    RpcTensor *t3 = rpc_dist_autograd_simulate_backward_error(a, tmp, &err);
    g_assert_no_error(err);
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *v1 = call2(ctx, rank, next, "add", t3, t1);
    RpcTensor *v2 = call2(ctx, rank, next, "mul", v1, t2);
    RpcTensor *v3 = call2(ctx, rank, next, "matmul", v2, t2);
    RpcTensor *v4 = call2(ctx, rank, next, "div", v3, t2);
    RpcTensor *loss = sum_of(ctx, rank, v4);
    g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    char *want = g_strdup_printf("Error on Node %d: " RPC_DIST_MSG_SIM_BACKWARD, rank);
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, want);
    g_free(want);
    assert_error_matches(&err, "Error on Node [0-9]+: Simulate error on backward pass");
    rt_barrier(ctx, rank);
    /* the other ranks' passes through this one finish soon after */
    for (guint i = 0;; i++) {
        RpcDistAutogradDebugInfo info;
        rpc_dist_autograd_debug_info(a, &info);
        if (info.num_current_backward_passes == 0)
            break;
        g_assert_cmpuint(i, <, 10);
        rt_sleep(ctx, rank, SIM_MS);
    }
    ctx_exit(ctx, rank, id);
    RpcTensor *ts[] = {t1, t2, s, tmp, t3, v1, v2, v3, v4, loss};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_backward_autograd_engine_error(void)
{
    rt_run_world(NULL, -1, body_backward_engine_error, NULL);
}

/* _python_udf_with_backward_error(t1, t2): SimulateBackwardError(t1 + t2) */
static RpcValue *
udf_with_backward_error(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                        GError **error)
{
    RpcTensor *s = rpc_ag_add(rpc_dist_autograd_thread(self),
                              rpc_value_get_tensor(rpc_value_list_get(args, 0)),
                              rpc_value_get_tensor(rpc_value_list_get(args, 1)), error);
    RpcTensor *r = rpc_dist_autograd_simulate_backward_error(self, s, error);
    rpc_tensor_unref(s);
    return rpc_value_new_tensor(r);
}

static const RpcFunctionDef test_defs_err[] = {
    {"python_udf_with_backward_error", NULL, udf_with_backward_error, 0, 0, -1, "t1 + t2"},
};

static void
body_multiple_backward_with_errors(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    guint64 seed = 3 + rank;
    RpcTensor *t1 = rand_dt(&seed, F32, 3, 3, TRUE), *t2 = rand_dt(&seed, F32, 3, 3, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r = call2(ctx, rank, next, "python_udf_with_backward_error", t1, t2);
    RpcTensor *loss = sum_of(ctx, rank, r);
    guint n = under_valgrind() ? 5 : 20;
    for (guint i = 0; i < 2 * n + 1; i++) {
        GError *err = NULL;
        if (i < n) {
            g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, TRUE, &err));
            char *want = g_strdup_printf(
                "Error on Node %d: Error on Node %d: " RPC_DIST_MSG_SIM_BACKWARD, rank, next);
            g_assert_cmpstr(err->message, ==, want);
            g_free(want);
            assert_error_matches(&err, "Error on Node [0-9]+: Simulate error on backward pass");
        } else if (i > n) {
            g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, TRUE, &err));
            g_assert_no_error(err);
        } else {
            rt_barrier(ctx, rank);
            rpc_dist_autograd_set_simulate_error(a, FALSE);
            rt_barrier(ctx, rank);
        }
    }
    /* n successful passes accumulated n × ones */
    RpcTensor *want = mat(3, 3, n, FALSE);
    assert_grad(a, id, t1, want);
    assert_grad(a, id, t2, want);
    rpc_tensor_unref(want);
    rt_barrier(ctx, rank);
    rpc_dist_autograd_set_simulate_error(a, TRUE);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(r);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_multiple_backward_with_errors(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NON_GRACEFUL};
    RpcTestCtx *ctx = rt_new(&o);
    register_defs(ctx, test_defs_err, G_N_ELEMENTS(test_defs_err));
    rt_on(ctx, -1, body_multiple_backward_with_errors);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- 140/142 invalid arguments --------------------------------------------------------- */

static void
body_backward_invalid_args(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    GError *err = NULL;
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *plain = mat(1, 1, 1, FALSE);
    RpcTensor *s = rpc_ag_sum(th, t1, NULL);
    g_assert_false(rpc_dist_autograd_backward(a, 100, &s, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "100");
    g_clear_error(&err);
    gint64 id = ctx_enter(ctx, rank);
    g_assert_false(rpc_dist_autograd_backward(a, id, NULL, 0, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "incompatible function arguments");
    g_assert_false(rpc_dist_autograd_backward(a, id, &s, 0, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "No tensors provided for gradient computation.");
    RpcTensor *none[] = {NULL};
    g_assert_false(rpc_dist_autograd_backward(a, id, none, 1, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "incompatible function arguments");
    g_assert_false(rpc_dist_autograd_backward(a, id, &plain, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==, "requires_grad not set on root");
    g_clear_error(&err);
    RpcTensor *vec = rpc_ag_mul_scalar(th, t1, 2, NULL);
    g_assert_false(rpc_dist_autograd_backward(a, id, &vec, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==, " is not a scalar, all roots need to be scalar");
    g_clear_error(&err);
    RpcTensor *leaf = mat(1, 1, 1, TRUE);
    g_assert_false(rpc_dist_autograd_backward(a, id, &leaf, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==, " does not have a valid gradient function.");
    g_clear_error(&err);
    /* a local backward cannot cross an RPC boundary */
    RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, 1), "add", t1, t1);
    RpcTensor *rs = rpc_ag_sum(th, r, NULL);
    g_assert_false(rpc_ag_backward(th, &rs, NULL, 1, TRUE, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "can only run in a distributed backward pass");
    /* the same tensor twice: two edges, gradients summed (case 88) */
    g_assert_true(rpc_dist_autograd_backward(a, id, &rs, 1, FALSE, &err));
    g_assert_no_error(err);
    RpcTensor *twos = mat(3, 3, 2, FALSE);
    assert_grad(a, id, t1, twos);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    /* once the context is gone, its recv function says so */
    g_assert_false(rpc_ag_backward(th, &rs, NULL, 1, FALSE, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "Autograd context no longer valid! This usually means the autograd context was "
                    "cleaned up by a different thread due to an error before RecvRcpBackward had a "
                    "chance to run");
    RpcTensor *ts[] = {t1, plain, s, vec, leaf, r, rs, twos};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_backward_invalid_args(void)
{
    rt_run_world(NULL, -1, body_backward_invalid_args, NULL);
}

/* --- 143 unused send function: a deadlock that names the pass --------------------- */

static void
body_unused_send_function(RpcTestCtx *ctx, gint rank)
{
    if (rank != 1)
        return;
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 2, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    g_assert_cmpint(id, ==, 281474976710656);
    RpcTensor *unused = call2(ctx, rank, 2, "add", t1, t2);
    RpcTensor *m = rpc_ag_mul(th, t1, t2, NULL);
    RpcTensor *loss = rpc_ag_sum(th, m, NULL);
    GError *err = NULL;
    g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    /* only reached at teardown */
    g_assert_error(err, SIM_ERROR, SIM_ERROR_TEARDOWN);
    g_clear_error(&err);
    RpcDistAutogradDebugInfo info;
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_current_backward_passes, ==, 0);
    RpcTensor *ts[] = {t1, t2, unused, m, loss};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_backward_unused_send_function(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE, .expect_deadlock = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    rt_on(ctx, -1, body_unused_send_function);
    g_assert_cmpint(rt_run(ctx), ==, SIM_RUN_DEADLOCK);
    const char *report = ctx->deadlock_report;
    g_assert_nonnull(report);
    if (strstr(report, "dist backward of context 281474976710656 on worker1: waiting for 1 send "
                       "function(s) to receive gradients") == NULL)
        g_error("unexpected report:\n%s", report);
    g_assert_nonnull(strstr(report, "worker1/t101"));
    rt_free(ctx);
}

/* The unused result's send function on the callee instead: the callee's
 * pass waits for it and never answers, so the initiator's gradient RPC to
 * it times out (the default timeout, as PyTorch's recv function sends with
 * it); the callee's pass stays until its agent goes. */
static void
body_unused_send_function_callee(RpcTestCtx *ctx, gint rank)
{
    if (rank != 1)
        return;
    RpcAgent *a = agent(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 2, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *used = call2(ctx, rank, 2, "add", t1, t2);
    RpcTensor *unused = call2(ctx, rank, 2, "add", t1, t2);
    RpcTensor *loss = sum_of(ctx, rank, used);
    GError *err = NULL;
    g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==,
                    "Error on Node 1: RPCErr:1:RPC ran for more than set timeout (60000 ms) and "
                    "will now be marked with an error");
    g_assert_cmpint(rt_now(ctx), ==, 60 * SIM_S);
    g_clear_error(&err);
    RpcDistAutogradDebugInfo info;
    rpc_dist_autograd_debug_info(agent(ctx, 2), &info);
    g_assert_cmpuint(info.num_current_backward_passes, ==, 1); /* stuck on worker 2 */
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_current_backward_passes, ==, 0);
    RpcTensor *ts[] = {t1, t2, used, unused, loss};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_backward_unused_send_function_callee(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE, .skip_counter_check = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    rt_on(ctx, -1, body_unused_send_function_callee);
    rt_run(ctx);
    rt_free(ctx); /* frees worker 2's pass with its container */
}

/* --- 145 node failure: a worker dies before / during the backward pass ---------------- */

typedef struct {
    SimTime crash_after; /* < 0: crash before the backward starts */
    SimTime latency;
} CrashCase;

static void
body_node_failure(RpcTestCtx *ctx, gint rank)
{
    const CrashCase *cc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 2, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *res = exec_t(ctx, rank, MODE_RPC_SYNC, next, "my_py_nested_call",
                            rt_args(tv(t1), tv(t2), rt_int(next), rt_int(4), rt_int(1), NULL));
    rt_barrier(ctx, rank);
    if (rank == 0) {
        if (cc->crash_after < 0) {
            sim_world_crash(ctx->w, 2);
            rt_sleep(ctx, rank, SIM_MS);
        }
        RpcTensor *loss = sum_of(ctx, rank, res);
        GError *err = NULL;
        SimTime t0 = rt_now(ctx);
        g_assert_false(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
        g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
        if (cc->crash_after < 0)
            g_assert_cmpstr(err->message, ==,
                            "Error on Node 0: Error on Node 1: Connection closed by peer");
        else
            g_assert_nonnull(strstr(err->message, "Connection closed by peer"));
        g_assert_cmpint(rt_now(ctx), >=, t0 + (cc->crash_after < 0 ? 0 : cc->crash_after));
        g_clear_error(&err);
        rpc_tensor_unref(loss);
    }
    rpc_tensor_unref(res);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

/* The crash mid-backward: rank 3's program thread kills worker 2 while the
 * gradients travel (each hop takes `latency`). */
static void
crash_later(RpcTestCtx *ctx, gint rank)
{
    const CrashCase *cc = ctx->data;
    rt_sleep(ctx, rank, cc->crash_after);
    sim_world_crash(ctx->w, 2);
}

static void
body_node_failure_mid(RpcTestCtx *ctx, gint rank)
{
    if (rank == 3) {
        rt_barrier(ctx, rank);
        crash_later(ctx, rank);
        return;
    }
    body_node_failure(ctx, rank);
}

static void
run_node_failure(const CrashCase *cc)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE, .skip_counter_check = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    ctx->data = (gpointer)cc;
    if (cc->latency > 0) {
        SimLinkConfig lc;
        sim_link_config_init(&lc);
        lc.latency = sim_dist_constant(cc->latency);
        sim_net_set_default(sim_world_net(ctx->w), &lc);
    }
    rt_on(ctx, -1, cc->crash_after < 0 ? body_node_failure : body_node_failure_mid);
    rt_run(ctx);
    g_assert_false(sim_world_is_alive(ctx->w, 2));
    rt_free(ctx);
}

static void
test_backward_node_failure_python_udf(void)
{
    static const CrashCase before = {-1, 0};
    run_node_failure(&before);
}

static void
test_backward_node_failure_mid(void)
{
    /* worker 2 dies 7 ms into the pass, while worker 1 waits for the
     * gradient RPC it sent worker 2 at 2 ms (hops take 2 ms) */
    static const CrashCase mid = {7 * SIM_MS, 2 * SIM_MS};
    run_node_failure(&mid);
}

/* --- 146 hooks; 148 thread-local context id; 149 debug info ------------------------- */

static gboolean
double_hook(RpcTensor *grad, RpcTensor **replacement, gpointer user_data, GError **error)
{
    *replacement = rpc_tensor_mul_scalar(grad, 2);
    return TRUE;
}

static void
body_backward_verify_hooks(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 1, TRUE);
    g_assert_cmpuint(rpc_ag_register_hook(t1, double_hook, NULL, NULL, NULL), >, 0);
    RpcTensor *l = rpc_ag_add(th, t1, t2, NULL), *ls = rpc_ag_sum(th, l, NULL);
    g_assert_true(rpc_ag_backward(th, &ls, NULL, 1, FALSE, FALSE, NULL));
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, 1), "add", t1, t2);
    RpcTensor *loss = sum_of(ctx, rank, r);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    assert_grad(a, id, t1, rpc_ag_grad(t1));
    assert_grad(a, id, t2, rpc_ag_grad(t2));
    RpcTensor *twos = mat(3, 3, 2, FALSE);
    assert_tensor_eq(rpc_ag_grad(t1), twos);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    RpcTensor *ts[] = {t1, t2, l, ls, r, loss, twos};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_backward_verify_hooks(void)
{
    rt_run_world(NULL, -1, body_backward_verify_hooks, NULL);
}

/* _slow_add(t1, t2): sleep 1 s, then a leaf t1 + t2 with requires_grad */
static RpcValue *
udf_slow_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    if (!rpc_executor_sleep(rpc_agent_executor(self), RPC_S, error))
        return NULL;
    RpcTensor *t = rpc_tensor_add(rpc_value_get_tensor(rpc_value_list_get(args, 0)),
                                  rpc_value_get_tensor(rpc_value_list_get(args, 1)), error);
    rpc_ag_set_requires_grad(t, TRUE, NULL);
    return rpc_value_new_tensor(t);
}

/* _compare_owner_value(context_id, rref, grad) */
static RpcValue *
udf_compare_owner_value(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                        GError **error)
{
    gint64 id = rpc_value_get_int(rpc_value_list_get(args, 0));
    RpcValue *v = rpc_rref_local_value(rpc_value_get_rref(rpc_value_list_get(args, 1)), error);
    RpcTensor *g = rpc_dist_autograd_get_gradient(self, id, rpc_value_get_tensor(v), error);
    gboolean eq =
        g != NULL && rpc_tensor_equal(g, rpc_value_get_tensor(rpc_value_list_get(args, 2)));
    rpc_tensor_unref(g);
    rpc_value_unref(v);
    return rpc_value_new_bool(eq);
}

static const RpcFunctionDef test_defs_slow[] = {
    {"slow_add", NULL, udf_slow_add, 0, 0, -1, "_slow_add"},
    {"compare_owner_value", NULL, udf_compare_owner_value, 0, 0, -1, "_compare_owner_value"},
};

static void
body_thread_local_context_id(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 0.5, FALSE), *t2 = mat(3, 3, 0.25, FALSE);
    RpcTensor *t3 = rpc_tensor_add(t1, t2, NULL);
    rpc_ag_set_requires_grad(t3, TRUE, NULL);
    RpcTensor *s3 = rpc_ag_sum(th, t3, NULL);
    g_assert_true(rpc_ag_backward(th, &s3, NULL, 1, FALSE, FALSE, NULL));
    gint dst = rt_next(ctx, rank, 1);
    RpcValue *to = rpc_value_new_int(dst);
    GError *err = NULL;
    RpcValue *rref =
        rpc_remote(a, to, "slow_add", rt_args(tv(t1), tv(t2), NULL), NULL, UNSET, &err);
    g_assert_no_error(err);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *v = take_tensor(rpc_rref_to_here(rpc_value_get_rref(rref), UNSET, &err));
    g_assert_cmpint(rt_now(ctx), ==, SIM_S); /* answered by a continuation */
    RpcTensor *loss = sum_of(ctx, rank, v);
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    RpcValue *eq = rpc_sync(a, to, "compare_owner_value",
                            rt_args(rt_int(id), rpc_value_ref(rref), tv(rpc_ag_grad(t3)), NULL),
                            NULL, UNSET, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_value_get_bool(eq));
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_value_unref(eq);
    rpc_value_unref(rref);
    rpc_value_unref(to);
    RpcTensor *ts[] = {t1, t2, t3, s3, v, loss};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_thread_local_context_id(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    register_defs(ctx, test_defs_slow, G_N_ELEMENTS(test_defs_slow));
    rt_on(ctx, -1, body_thread_local_context_id);
    rt_run(ctx);
    rt_free(ctx);
}

/* MyBackwardFunc: identity; its backward reads the debug info mid-pass. */
typedef struct {
    RpcAgent *a;
    guint *seen;
} DebugProbe;

static gboolean
probe_forward(RpcAgCtx *c, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_ptr_array_add(out, rpc_value_ref(in[0]));
    return TRUE;
}

static gboolean
probe_backward(RpcAgCtx *c, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    DebugProbe *p = rpc_ag_ctx_get_user_data(c);
    RpcDistAutogradDebugInfo info;
    rpc_dist_autograd_debug_info(p->a, &info);
    g_assert_cmpuint(info.num_current_backward_passes, >=, 1);
    g_assert_cmpuint(info.num_current_backward_passes, <=, 4);
    (*p->seen)++;
    g_ptr_array_add(out, rpc_value_new_tensor(rpc_tensor_ref(g[0])));
    return TRUE;
}

static const RpcAgFunction probe_fn = {"MyBackwardFunc", probe_forward, probe_backward, NULL, TRUE};

static void
body_debug_info(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 1, TRUE);
    guint seen = 0;
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *res = rpc_tensor_ref(t1);
    for (gint d = 1; d < 4; d++) {
        RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, d), "add", res, t2);
        rpc_tensor_unref(res);
        res = r;
    }
    RpcValue *in = tv(res);
    GPtrArray *out = rpc_ag_function_apply(th, &probe_fn, &in, 1, NULL);
    rpc_value_unref(in);
    rpc_tensor_unref(res);
    res = rpc_tensor_ref(rpc_value_get_tensor(g_ptr_array_index(out, 0)));
    g_ptr_array_unref(out);
    DebugProbe probe = {a, &seen};
    rpc_ag_ctx_set_user_data(rpc_ag_node_ctx(rpc_ag_grad_fn(res)), &probe, NULL);
    for (gint d = 1; d < 4; d++) {
        RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, d), "add", res, t2);
        rpc_tensor_unref(res);
        res = r;
    }
    RpcTensor *loss = sum_of(ctx, rank, res);
    GError *err = NULL;
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    g_assert_cmpuint(seen, ==, 1);
    RpcDistAutogradDebugInfo info;
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_autograd_contexts, >=, 1);
    g_assert_cmpuint(info.num_autograd_contexts, <=, 4);
    ctx_exit(ctx, rank, id);
    for (gint d = 1; d < 4; d++)
        set_rpc_done(ctx, rank, rt_next(ctx, rank, d), id, d);
    rt_barrier(ctx, rank);
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_current_backward_passes, ==, 0);
    g_assert_true(all_contexts_cleaned_up(ctx, rank));
    rpc_dist_autograd_debug_info(a, &info);
    g_assert_cmpuint(info.num_autograd_contexts, ==, 0);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(res);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_debug_info(void)
{
    rt_run_world(NULL, -1, body_debug_info, NULL);
}

/* 151: 100 hops in one context, then backward with a bogus id; and a
 * context released while its backward pass waits. */
static void
body_clean_context_during_backward(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 1, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    guint hops = under_valgrind() ? 20 : 100;
    RpcTensor *res = rpc_tensor_ref(t1);
    for (guint i = 0; i < hops; i++) {
        RpcTensor *r = call2(ctx, rank, rt_next(ctx, rank, 1), "add", res, t2);
        rpc_tensor_unref(res);
        res = r;
    }
    GPtrArray *sends = sends_of(a, id);
    g_assert_cmpuint(sends->len, ==, hops);
    g_ptr_array_unref(sends);
    RpcTensor *loss = sum_of(ctx, rank, res);
    GError *err = NULL;
    g_assert_false(rpc_dist_autograd_backward(a, 100, &loss, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "100");
    g_clear_error(&err);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(res);
    rpc_tensor_unref(t1);
    rpc_tensor_unref(t2);
}

static void
test_clean_context_during_backward(void)
{
    rt_run_world(NULL, -1, body_clean_context_during_backward, NULL);
}

/* A context released on its initiator while its pass waits: the next
 * gradients for it find no context, and the pass fails with that. */
typedef struct {
    gint64 id;
    RpcTensor *loss;
    GError *err;
} ReleaseMid;

static void
release_mid_thread(RpcTestCtx *ctx, gint rank, guint index)
{
    ReleaseMid *rm = ctx->data;
    if (index == 0) {
        g_assert_false(
            rpc_dist_autograd_backward(agent(ctx, rank), rm->id, &rm->loss, 1, FALSE, &rm->err));
    } else if (index == 2) {
        /* a second backward of the same context while the first runs */
        GError *err = NULL;
        rt_sleep(ctx, rank, SIM_MS);
        g_assert_false(
            rpc_dist_autograd_backward(agent(ctx, rank), rm->id, &rm->loss, 1, FALSE, &err));
        char *want = g_strdup_printf("A backward pass of autograd context %" G_GINT64_FORMAT
                                     " is already running on this worker",
                                     rm->id);
        g_assert_cmpstr(err->message, ==, want);
        g_free(want);
        g_clear_error(&err);
    } else {
        rt_sleep(ctx, rank, 3 * SIM_MS);
        ctx_exit(ctx, rank, rm->id);
    }
}

static void
body_release_during_backward(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    ReleaseMid *rm = ctx->data;
    RpcTensor *t1 = mat(3, 3, 1, TRUE), *t2 = mat(3, 3, 1, TRUE);
    rm->id = ctx_enter(ctx, rank);
    RpcTensor *r = call2(ctx, rank, 1, "add", t1, t2);
    RpcTensor *r2 = call2(ctx, rank, 1, "mul", r, t2);
    rm->loss = sum_of(ctx, rank, r2);
    SimTime t0 = rt_now(ctx);
    rt_threads(ctx, rank, 3, release_mid_thread);
    g_assert_cmpint(rt_now(ctx), >, t0 + 3 * SIM_MS);
    g_assert_nonnull(rm->err);
    char *want = g_strdup_printf(NOT_CTX "%" G_GINT64_FORMAT, rm->id);
    if (strstr(rm->err->message, want) == NULL)
        g_error("unexpected: %s", rm->err->message);
    g_free(want);
    g_clear_error(&rm->err);
    assert_no_ctx(agent(ctx, rank), rm->id);
    RpcTensor *ts[] = {t1, t2, r, r2, rm->loss};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_release_during_backward(void)
{
    RpcTestOptions o = {.n_workers = 2};
    RpcTestCtx *ctx = rt_new(&o);
    ReleaseMid rm = {0};
    ctx->data = &rm;
    SimLinkConfig lc;
    sim_link_config_init(&lc);
    lc.latency = sim_dist_constant(SIM_MS);
    sim_net_set_default(sim_world_net(ctx->w), &lc);
    rt_on(ctx, -1, body_release_during_backward);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- 88/89 RRef backward -------------------------------------------------------------- */

static RpcValue *
udf_sum_value(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcTensor *t = rpc_ag_sum(rpc_dist_autograd_thread(self),
                              rpc_value_get_tensor(rpc_value_list_get(args, 0)), error);
    return t ? rpc_value_new_tensor(t) : NULL;
}

static const RpcFunctionDef test_defs_rref[] = {
    {"sum_value", NULL, udf_sum_value, 0, 0, -1, "torch.sum(t) as a UDF"},
};

static void
body_rref_backward(RpcTestCtx *ctx, gint rank)
{
    RpcAgent *a = agent(ctx, rank);
    RpcAgThread *th = th_of(ctx, rank);
    GError *err = NULL;
    gint next = rt_next(ctx, rank, 1);
    RpcTensor *t1 = mat(3, 3, 1, TRUE);
    /* 88: owner, no context: a local backward */
    RpcTensor *s1 = rpc_ag_sum(th, t1, NULL), *s2 = rpc_ag_sum(th, t1, NULL);
    RpcTensor *s = rpc_ag_add(th, s1, s2, NULL);
    RpcValue *own = rpc_rref_new_local(a, rpc_value_new_tensor(rpc_tensor_ref(s)), &err);
    g_assert_true(rpc_dist_autograd_rref_backward(a, own, NO_CTX, FALSE, &err));
    g_assert_no_error(err);
    RpcTensor *twos = mat(3, 3, 2, FALSE), *fours = mat(3, 3, 4, FALSE);
    assert_tensor_eq(rpc_ag_grad(t1), twos);
    /* 88: owner, in a context */
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *t2 = call2(ctx, rank, next, "add", t1, t1);
    RpcTensor *t2s = rpc_ag_sum(th, t2, NULL);
    RpcValue *own2 = rpc_rref_new_local(a, rpc_value_new_tensor(rpc_tensor_ref(t2s)), &err);
    g_assert_true(rpc_dist_autograd_rref_backward(a, own2, id, TRUE, &err));
    assert_grad(a, id, t1, twos);
    g_assert_true(rpc_dist_autograd_rref_backward(a, own2, id, FALSE, &err));
    g_assert_no_error(err);
    assert_grad(a, id, t1, fours);
    /* 88: errors */
    RpcTensor *r10 = mat(1, 10, 1, FALSE);
    RpcValue *bad = rpc_rref_new_local(a, rpc_value_new_tensor(rpc_tensor_ref(r10)), &err);
    g_assert_false(rpc_dist_autograd_rref_backward(a, bad, NO_CTX, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "tensors does not require grad and does not have a "
                    "grad_fn");
    RpcTensor *vec = rpc_ag_mul_scalar(th, t1, 1, NULL);
    RpcValue *nonscalar = rpc_rref_new_local(a, rpc_value_new_tensor(rpc_tensor_ref(vec)), &err);
    g_assert_false(rpc_dist_autograd_rref_backward(a, nonscalar, NO_CTX, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "grad can be implicitly created only for scalar outputs");
    g_assert_false(rpc_dist_autograd_rref_backward(a, own2, 100, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, NOT_CTX "100");
    RpcValue *foo = rpc_rref_new_local(a, rpc_value_new_string("foo"), &err);
    g_assert_false(rpc_dist_autograd_rref_backward(a, foo, NO_CTX, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RRef should contain a tensor for .backward()");
    /* 89: a user RRef runs the backward on its owner */
    ctx_exit(ctx, rank, id);
    id = ctx_enter(ctx, rank);
    RpcValue *to = rpc_value_new_int(next);
    RpcValue *user = rpc_remote(a, to, "sum_value", rt_args(tv(t1), NULL), NULL, UNSET, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_dist_autograd_rref_backward(a, user, id, TRUE, &err));
    g_assert_no_error(err);
    g_assert_true(rpc_dist_autograd_rref_backward(a, user, id, FALSE, &err));
    g_assert_no_error(err);
    assert_grad(a, id, t1, twos);
    g_assert_false(rpc_dist_autograd_rref_backward(a, user, NO_CTX, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME,
                    "User RRefs require 'dist_autograd_ctx_id' to be specified");
    RpcValue *ufoo = rpc_remote(a, to, "identity", rt_args(rt_str("foo"), NULL), NULL, UNSET, &err);
    g_assert_false(rpc_dist_autograd_rref_backward(a, ufoo, id, FALSE, &err));
    rt_assert_error(&err, RPC_ERROR_RUNTIME, "RRef should contain a tensor for .backward()");
    g_assert_false(rpc_dist_autograd_rref_backward(a, user, 100, FALSE, &err));
    char *want = g_strdup_printf("Error on Node %d: " NOT_CTX "100", next);
    rt_assert_error(&err, RPC_ERROR_RUNTIME, want);
    g_free(want);
    rt_barrier(ctx, rank);
    ctx_exit(ctx, rank, id);
    RpcValue *vs[] = {own, own2, bad, nonscalar, foo, user, ufoo, to};
    for (guint i = 0; i < G_N_ELEMENTS(vs); i++)
        rpc_value_unref(vs[i]);
    RpcTensor *ts[] = {t1, s1, s2, s, twos, fours, t2, t2s, r10, vec};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
}

static void
test_rref_backward(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    register_defs(ctx, test_defs_rref, G_N_ELEMENTS(test_defs_rref));
    rt_on(ctx, -1, body_rref_backward);
    rt_run(ctx);
    rt_free(ctx);
}

/* --- the catalogue's helpers: argument errors, nested RRef add, remote errors ---------- */

static void
body_catalogue(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = agent(ctx, rank);
    GError *err = NULL;
    RpcValue *v =
        rt_sync(ctx, 0, 1, "my_scalar_add", rt_args(rt_str("a"), rt_int(1), NULL), UNSET, &err);
    g_assert_null(v);
    rt_assert_error(&err, RPC_ERROR_TYPE, "my_scalar_add(): argument 0 must be int, not str");
    v = rt_sync(ctx, 0, 1, "my_rref_add", rt_args(rt_int(1), rt_int(2), NULL), UNSET, &err);
    rt_assert_error(&err, RPC_ERROR_TYPE, "my_rref_add(): argument 0 must be RRef, not int");
    v = rt_sync(ctx, 0, 1, "my_py_add", rt_args(rt_int(1), rt_int(2), NULL), UNSET, &err);
    rt_assert_error(&err, RPC_ERROR_TYPE, "my_py_add(): argument 0 must be Tensor, not int");
    v = rt_sync(ctx, 0, 1, "simulate_backward_error", rt_args(rt_int(1), NULL), UNSET, &err);
    rt_assert_error(&err, RPC_ERROR_TYPE, "simulate_backward_error(): argument 0 must be Tensor");
    v = rt_sync(ctx, 0, 1, "my_py_nested_call",
                rt_args(rt_int(1), rt_int(2), rt_int(0), rt_int(0), rt_int(0), NULL), UNSET, &err);
    rt_assert_error(&err, RPC_ERROR_VALUE, "my_py_nested_call(): world_size must be positive");
    v = rt_sync(ctx, 0, 1, "my_py_nested_call",
                rt_args(rt_int(1), rt_int(2), rt_str("x"), rt_int(0), rt_int(0), NULL), UNSET,
                &err);
    rt_assert_error(&err, RPC_ERROR_TYPE, "my_py_nested_call(): argument 2 must be int");
    v = rt_sync(ctx, 0, 1, "set_rpc_done", rt_args(rt_str("x"), rt_int(1), NULL), UNSET, &err);
    rt_assert_error(&err, RPC_ERROR_TYPE, "set_rpc_done(): argument 0 must be int");

    /* my_nested_rref_add: worker 2 adds worker 1's value to our t2 */
    RpcTensor *t2 = mat(3, 3, 2, TRUE);
    RpcValue *one = rpc_value_new_int(1);
    RpcValue *rref = rpc_remote(a, one, "create_tensor", NULL, NULL, UNSET, &err);
    g_assert_no_error(err);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r =
        take_tensor(rt_sync(ctx, 0, 2, "my_nested_rref_add",
                            rt_args(rt_int(1), rpc_value_ref(rref), tv(t2), NULL), UNSET, &err));
    RpcTensor *threes = mat(3, 3, 3, FALSE), *ones = mat(3, 3, 1, FALSE);
    assert_tensor_eq(r, threes);
    RpcTensor *loss = sum_of(ctx, rank, r);
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_no_error(err);
    assert_grad(a, id, t2, ones);
    RpcValue *owned = rpc_rref_to_here(rpc_value_get_rref(rref), UNSET, &err);
    g_assert_no_error(err);
    g_assert_cmpuint(n_grads(agent(ctx, 1), id), ==, 1); /* the owner's leaf */
    rpc_value_unref(owned);

    /* SimulateBackwardError applied on the callee: the error crosses one worker */
    RpcTensor *s = take_tensor(
        rt_sync(ctx, 0, 3, "simulate_backward_error", rt_args(tv(t2), NULL), UNSET, &err));
    RpcTensor *sl = sum_of(ctx, rank, s);
    g_assert_false(rpc_dist_autograd_backward(a, id, &sl, 1, FALSE, &err));
    g_assert_cmpstr(err->message, ==,
                    "Error on Node 0: Error on Node 3: " RPC_DIST_MSG_SIM_BACKWARD);
    g_clear_error(&err);
    ctx_exit(ctx, rank, id);

    /* a context released after shutdown: its cleanup cannot be sent */
    id = ctx_enter(ctx, rank);
    RpcTensor *u = call2(ctx, rank, 1, "add", t2, t2);
    g_assert_true(rpc_agent_shutdown(a, FALSE, 0, &err));
    ctx_exit(ctx, rank, id);
    RpcTensor *ts[] = {t2, r, threes, ones, loss, s, sl, u};
    for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
        rpc_tensor_unref(ts[i]);
    rpc_value_unref(rref);
    rpc_value_unref(one);
}

static void
test_catalogue(void)
{
    RpcTestOptions o = {.shutdown = RT_SHUTDOWN_NONE, .skip_counter_check = TRUE};
    RpcTestCtx *ctx = rt_new(&o);
    register_defs(ctx, test_defs_ps, G_N_ELEMENTS(test_defs_ps));
    rt_on(ctx, -1, body_catalogue);
    rt_run(ctx);
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 1);
    rt_free(ctx);
}

/* --- the wire's requires_grad bit ------------------------------------------------------ */

static void
test_wire_requires_grad(void)
{
    RpcAgState *st = rpc_ag_state_new();
    RpcTensor *t = mat(2, 2, 1.5, TRUE);
    RpcTensor *u = tensor_dt(F64, 1, 3, 2, NULL, FALSE);
    GPtrArray *ts = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    g_ptr_array_add(ts, rpc_tensor_ref(t));
    g_ptr_array_add(ts, rpc_tensor_ref(u));
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_CALL, 7, NULL, ts);
    GBytes *wire = rpc_message_encode(m);
    gsize len;
    const guint8 *b = g_bytes_get_data(wire, &len);
    GError *err = NULL;
    RpcMessage *d = rpc_message_decode(b, len, &err);
    g_assert_no_error(err);
    RpcTensor *t2 = g_ptr_array_index(rpc_message_tensors(d), 0);
    RpcTensor *u2 = g_ptr_array_index(rpc_message_tensors(d), 1);
    g_assert_true(rpc_ag_requires_grad(t2) && rpc_ag_is_leaf(t2));
    g_assert_false(rpc_ag_requires_grad(u2));
    assert_tensor_eq(t2, t);
    assert_tensor_eq(u2, u);
    /* the layout: tensor 0's dtype byte right after the tensor count */
    g_assert_cmpuint(b[RPC_WIRE_HEADER_SIZE + 4], ==, RPC_DTYPE_FLOAT32 | RPC_WIRE_REQUIRES_GRAD);
    /* a message without the bit (every older message) decodes as before */
    guint8 *copy = g_memdup2(b, len);
    copy[RPC_WIRE_HEADER_SIZE + 4] = RPC_DTYPE_FLOAT32;
    RpcMessage *old = rpc_message_decode(copy, len, &err);
    g_assert_no_error(err);
    g_assert_false(rpc_ag_requires_grad(g_ptr_array_index(rpc_message_tensors(old), 0)));
    copy[RPC_WIRE_HEADER_SIZE + 4] = 0x82;
    g_assert_null(rpc_message_decode(copy, len, &err));
    g_assert_cmpstr(err->message, ==, "tensor 0 has unknown dtype 2 at offset 24");
    g_clear_error(&err);
    rpc_message_unref(old);
    g_free(copy);
    rpc_message_unref(d);
    rpc_message_unref(m);
    g_bytes_unref(wire);
    rpc_tensor_unref(t);
    rpc_tensor_unref(u);
    rpc_ag_state_unref(st);
}

/* --- malformed autograd messages --------------------------------------------------------- */

static void
body_malformed(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = agent(ctx, rank);
    GError *err = NULL;
    struct {
        RpcMessageType type;
        RpcValue *body;
        const char *want;
    } cases[] = {
        {RPC_MSG_BACKWARD_AUTOGRAD_REQ, rt_int(3),
         "Error on Node 1: malformed BACKWARD_AUTOGRAD_REQ"},
        {RPC_MSG_BACKWARD_AUTOGRAD_REQ,
         rt_args(rt_int(5), rt_int(6), rt_args(rt_int(1), NULL), rpc_value_new_bool(FALSE), NULL),
         "Error on Node 1: malformed BACKWARD_AUTOGRAD_REQ"},
        {RPC_MSG_BACKWARD_AUTOGRAD_REQ,
         rt_args(rt_int(5), rt_int(6), rpc_value_new_list(), rpc_value_new_bool(FALSE), NULL),
         "Error on Node 1: " NOT_CTX "5"},
        {RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ, rt_str("x"),
         "Error on Node 1: malformed CLEANUP_AUTOGRAD_CONTEXT_REQ"},
        {RPC_MSG_RREF_BACKWARD_REQ, rt_int(1), "Error on Node 1: malformed RREF_BACKWARD_REQ"},
        {RPC_MSG_FORWARD_AUTOGRAD_REQ, rt_int(1), "malformed FORWARD_AUTOGRAD_REQ from worker 0"},
        {RPC_MSG_FORWARD_AUTOGRAD_REQ,
         rt_args(rt_int(0), rt_int(1), rt_int(2), rt_int(RPC_MSG_SCRIPT_RET),
                 rpc_value_new_bytes((const guint8 *)"", 0), NULL),
         "malformed FORWARD_AUTOGRAD_REQ from worker 0"},
        {RPC_MSG_FORWARD_AUTOGRAD_REQ, rpc_value_new_bytes((const guint8 *)"\xff", 1),
         "Error on Node 1: malformed FORWARD_AUTOGRAD_REQ from worker 0"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        RpcFuture *f =
            rpc_agent_send_request(a, 1, cases[i].type, cases[i].body, UNSET, "bad", &err);
        g_assert_no_error(err);
        RpcValue *v = rpc_future_wait(f, &err);
        g_assert_null(v);
        if (strstr(err->message, cases[i].want) == NULL)
            g_error("case %u: '%s' lacks '%s'", i, err->message, cases[i].want);
        g_clear_error(&err);
        rpc_future_unref(f);
        rpc_value_unref(cases[i].body);
    }
    /* a send function asked for the wrong number of gradients, or twice */
    RpcTensor *t1 = mat(2, 2, 1, TRUE);
    gint64 id = ctx_enter(ctx, rank);
    RpcTensor *r = call2(ctx, rank, 1, "add", t1, t1);
    RpcValue *body =
        rt_args(rt_int(id), rt_int(7), rpc_value_new_list(), rpc_value_new_bool(FALSE), NULL);
    RpcFuture *f =
        rpc_agent_send_request(a, 0, RPC_MSG_BACKWARD_AUTOGRAD_REQ, body, UNSET, "bad", &err);
    rpc_value_unref(body);
    g_assert_null(rpc_future_wait(f, &err));
    g_assert_cmpstr(err->message, ==,
                    "Error on Node 0: Could not find send function for autograd "
                    "message id: 7");
    g_clear_error(&err);
    rpc_future_unref(f);
    body = rt_args(rt_int(id), rt_int(0), rpc_value_new_list(), rpc_value_new_bool(FALSE), NULL);
    f = rpc_agent_send_request(a, 0, RPC_MSG_BACKWARD_AUTOGRAD_REQ, body, UNSET, "bad", &err);
    rpc_value_unref(body);
    g_assert_null(rpc_future_wait(f, &err));
    g_assert_cmpstr(err->message, ==,
                    "Error on Node 0: 0 gradients for autograd message id 0, whose send function "
                    "takes 2");
    g_clear_error(&err);
    rpc_future_unref(f);
    ctx_exit(ctx, rank, id);
    rpc_tensor_unref(r);
    rpc_tensor_unref(t1);
}

static void
test_malformed(void)
{
    rt_run_world(NULL, -1, body_malformed, NULL);
}

/* --- acceptance: random MLP splits equal a local backward exactly --------------------- */

#define MLP_MAX_LAYERS 3

typedef struct {
    guint64 seed;
    guint n_workers;
    gint initiator;
    guint batch, n_layers;
    guint dims[MLP_MAX_LAYERS + 1];
    gint resident[MLP_MAX_LAYERS]; /* -1: W is sent by the initiator, else its holder */
    gint mm_worker[MLP_MAX_LAYERS], act_worker[MLP_MAX_LAYERS];
    gint act[MLP_MAX_LAYERS];                                /* 0 relu, 1 sigmoid, 2 none */
    RpcTensor *x, *W[MLP_MAX_LAYERS], *b[MLP_MAX_LAYERS];    /* values (no grad) */
    RpcTensor *gx, *gW[MLP_MAX_LAYERS], *gb[MLP_MAX_LAYERS]; /* local gradients */
    gint64 ctx_id;
    guint checked;
} MlpCase;

static RpcTensor *
leaf_copy(RpcTensor *v)
{
    RpcTensor *t = rpc_tensor_new_full_like(v, 0);
    memcpy(rpc_tensor_data_mut(t), rpc_tensor_data(v), rpc_tensor_nbytes(v));
    rpc_ag_set_requires_grad(t, TRUE, NULL);
    return t;
}

static RpcTensor *
activate(RpcAgThread *th, RpcTensor *z, gint kind)
{
    if (kind == 0)
        return rpc_ag_relu(th, z, NULL);
    if (kind == 1)
        return rpc_ag_sigmoid(th, z, NULL);
    return rpc_tensor_ref(z);
}

/* t_bias_act(h, b, kind): act(h + b) */
static RpcValue *
udf_bias_act(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcAgThread *th = rpc_dist_autograd_thread(self);
    RpcTensor *z = rpc_ag_add(th, rpc_value_get_tensor(rpc_value_list_get(args, 0)),
                              rpc_value_get_tensor(rpc_value_list_get(args, 1)), error);
    RpcTensor *h = activate(th, z, (gint)rpc_value_get_int(rpc_value_list_get(args, 2)));
    rpc_tensor_unref(z);
    return rpc_value_new_tensor(h);
}

/* t_resident_matmul(h, l): h @ W_l, W_l a leaf kept by this worker */
static RpcValue *
udf_resident_matmul(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    char key[32];
    g_snprintf(key, sizeof key, "mlp/W%" G_GINT64_FORMAT,
               rpc_value_get_int(rpc_value_list_get(args, 1)));
    RpcValue *w = rpc_agent_slot_get(self, key);
    g_assert_nonnull(w);
    RpcTensor *r = rpc_ag_matmul(rpc_dist_autograd_thread(self),
                                 rpc_value_get_tensor(rpc_value_list_get(args, 0)),
                                 rpc_value_get_tensor(w), error);
    return r ? rpc_value_new_tensor(r) : NULL;
}

static const RpcFunctionDef test_defs_mlp[] = {
    {"t_bias_act", NULL, udf_bias_act, 0, 0, -1, "act(h + b)"},
    {"t_resident_matmul", NULL, udf_resident_matmul, 0, 0, -1, "h @ W (W kept here)"},
};

static void
mlp_case_init(MlpCase *mc, guint64 seed)
{
    memset(mc, 0, sizeof *mc);
    mc->seed = seed;
    guint64 s = seed * 0x2545f4914f6cdd1dull + 1;
    mc->n_workers = 2 + (guint)(mix64(&s) % 5);
    mc->initiator = (gint)(mix64(&s) % mc->n_workers);
    mc->batch = 1 + (guint)(mix64(&s) % 3);
    mc->n_layers = 1 + (guint)(mix64(&s) % MLP_MAX_LAYERS);
    for (guint l = 0; l <= mc->n_layers; l++)
        mc->dims[l] = 1 + (guint)(mix64(&s) % 4);
    mc->x = rand_dt(&s, F64, mc->batch, mc->dims[0], FALSE);
    for (guint l = 0; l < mc->n_layers; l++) {
        mc->W[l] = rand_dt(&s, F64, mc->dims[l], mc->dims[l + 1], FALSE);
        gint64 shape[1] = {mc->dims[l + 1]};
        double *v = g_new(double, mc->dims[l + 1]);
        for (guint i = 0; i < mc->dims[l + 1]; i++)
            v[i] = unit(&s) - 0.5;
        mc->b[l] = rpc_tensor_new_from_doubles(F64, 1, shape, v);
        g_free(v);
        mc->resident[l] = mix64(&s) % 3 == 0 ? (gint)(mix64(&s) % mc->n_workers) : -1;
        mc->mm_worker[l] =
            mc->resident[l] >= 0 ? mc->resident[l] : (gint)(mix64(&s) % mc->n_workers);
        mc->act_worker[l] = (gint)(mix64(&s) % mc->n_workers);
        mc->act[l] = (gint)(mix64(&s) % 3);
    }
    /* the local reference, on its own autograd state */
    RpcAgState *st = rpc_ag_state_new();
    RpcAgThread *th = rpc_ag_thread_new(st);
    RpcTensor *x = leaf_copy(mc->x), *W[MLP_MAX_LAYERS], *b[MLP_MAX_LAYERS];
    RpcTensor *h = rpc_tensor_ref(x);
    for (guint l = 0; l < mc->n_layers; l++) {
        W[l] = leaf_copy(mc->W[l]);
        b[l] = leaf_copy(mc->b[l]);
        RpcTensor *m = rpc_ag_matmul(th, h, W[l], NULL);
        RpcTensor *z = rpc_ag_add(th, m, b[l], NULL);
        rpc_tensor_unref(h);
        h = activate(th, z, mc->act[l]);
        rpc_tensor_unref(m);
        rpc_tensor_unref(z);
    }
    RpcTensor *loss = rpc_ag_sum(th, h, NULL);
    g_assert_true(rpc_ag_backward(th, &loss, NULL, 1, FALSE, FALSE, NULL));
    mc->gx = rpc_tensor_ref(rpc_ag_grad(x));
    for (guint l = 0; l < mc->n_layers; l++) {
        mc->gW[l] = rpc_tensor_ref(rpc_ag_grad(W[l]));
        mc->gb[l] = rpc_tensor_ref(rpc_ag_grad(b[l]));
        rpc_tensor_unref(W[l]);
        rpc_tensor_unref(b[l]);
    }
    rpc_tensor_unref(loss);
    rpc_tensor_unref(h);
    rpc_tensor_unref(x);
    rpc_ag_thread_free(th);
    rpc_ag_state_unref(st);
}

static void
mlp_case_clear(MlpCase *mc)
{
    rpc_tensor_unref(mc->x);
    rpc_tensor_unref(mc->gx);
    for (guint l = 0; l < mc->n_layers; l++) {
        rpc_tensor_unref(mc->W[l]);
        rpc_tensor_unref(mc->b[l]);
        rpc_tensor_unref(mc->gW[l]);
        rpc_tensor_unref(mc->gb[l]);
    }
}

static void
body_mlp(RpcTestCtx *ctx, gint rank)
{
    MlpCase *mc = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    /* the parameters this worker keeps */
    RpcTensor *mine[MLP_MAX_LAYERS] = {0};
    for (guint l = 0; l < mc->n_layers; l++) {
        if (mc->resident[l] != rank)
            continue;
        mine[l] = leaf_copy(mc->W[l]);
        char key[32];
        g_snprintf(key, sizeof key, "mlp/W%u", l);
        rpc_agent_slot_set(a, key, tv(mine[l]));
    }
    rt_barrier(ctx, rank);
    RpcTensor *x = NULL, *W[MLP_MAX_LAYERS] = {0}, *b[MLP_MAX_LAYERS] = {0};
    if (rank == mc->initiator) {
        mc->ctx_id = ctx_enter(ctx, rank);
        x = leaf_copy(mc->x);
        RpcTensor *h = rpc_tensor_ref(x);
        for (guint l = 0; l < mc->n_layers; l++) {
            b[l] = leaf_copy(mc->b[l]);
            RpcTensor *m;
            if (mc->resident[l] >= 0) {
                m = exec_t(ctx, rank, MODE_RPC_SYNC, mc->mm_worker[l], "t_resident_matmul",
                           rt_args(tv(h), rt_int(l), NULL));
            } else {
                W[l] = leaf_copy(mc->W[l]);
                m = call2(ctx, rank, mc->mm_worker[l], "matmul", h, W[l]);
            }
            rpc_tensor_unref(h);
            h = exec_t(ctx, rank, MODE_RPC_SYNC, mc->act_worker[l], "t_bias_act",
                       rt_args(tv(m), tv(b[l]), rt_int(mc->act[l]), NULL));
            rpc_tensor_unref(m);
        }
        RpcTensor *loss = sum_of(ctx, rank, h);
        GError *err = NULL;
        if (!rpc_dist_autograd_backward(a, mc->ctx_id, &loss, 1, FALSE, &err))
            g_error("seed %" G_GUINT64_FORMAT ": %s", mc->seed, err->message);
        rpc_tensor_unref(loss);
        rpc_tensor_unref(h);
    }
    rt_barrier(ctx, rank);
    /* every worker compares its own part with the local gradients */
    guint expect = 0;
    if (rank == mc->initiator) {
        assert_grad(a, mc->ctx_id, x, mc->gx);
        expect++;
        for (guint l = 0; l < mc->n_layers; l++) {
            assert_grad(a, mc->ctx_id, b[l], mc->gb[l]);
            expect++;
            if (W[l] != NULL) {
                assert_grad(a, mc->ctx_id, W[l], mc->gW[l]);
                expect++;
            }
        }
    }
    for (guint l = 0; l < mc->n_layers; l++) {
        if (mine[l] != NULL) {
            assert_grad(a, mc->ctx_id, mine[l], mc->gW[l]);
            expect++;
        }
    }
    if (rank == mc->initiator || expect > 0 || has_ctx(ctx, rank, mc->ctx_id))
        g_assert_cmpuint(n_grads(a, mc->ctx_id), ==, expect);
    mc->checked += expect;
    rt_barrier(ctx, rank);
    if (rank == mc->initiator)
        ctx_exit(ctx, rank, mc->ctx_id);
    if (x != NULL)
        rpc_tensor_unref(x);
    for (guint l = 0; l < MLP_MAX_LAYERS; l++) {
        if (mine[l] != NULL)
            rpc_tensor_unref(mine[l]);
        if (W[l] != NULL)
            rpc_tensor_unref(W[l]);
        if (b[l] != NULL)
            rpc_tensor_unref(b[l]);
    }
}

static struct {
    guint by_size[7];
    guint grads, remote_grads, self_hops;
} mlp_stats;

static guint64
run_mlp(guint64 seed)
{
    MlpCase mc;
    mlp_case_init(&mc, seed);
    mlp_stats.by_size[mc.n_workers]++;
    mlp_stats.grads += 1 + 2 * mc.n_layers;
    for (guint l = 0; l < mc.n_layers; l++) {
        mlp_stats.remote_grads += mc.resident[l] >= 0 && mc.resident[l] != mc.initiator;
        mlp_stats.self_hops += mc.mm_worker[l] == mc.initiator || mc.act_worker[l] == mc.initiator;
    }
    RpcTestOptions o = {.n_workers = mc.n_workers, .seed = seed + 1};
    RpcTestCtx *ctx = rt_new(&o);
    register_defs(ctx, test_defs_mlp, G_N_ELEMENTS(test_defs_mlp));
    ctx->data = &mc;
    rt_on(ctx, -1, body_mlp);
    rt_run(ctx);
    guint want = 1 + 2 * mc.n_layers;
    g_assert_cmpuint(mc.checked, ==, want);
    guint64 fp = sim_trace_fingerprint(sim_kernel_trace(ctx->k));
    rt_free(ctx);
    mlp_case_clear(&mc);
    return fp;
}

static void
test_sweep_mlp(void)
{
    guint n = under_valgrind() ? 100 : 500;
    memset(&mlp_stats, 0, sizeof mlp_stats);
    for (guint64 seed = 1; seed <= n; seed++)
        run_mlp(seed);
    g_test_message(
        "%u worlds; by size 2..6: %u %u %u %u %u; %u gradients compared, %u of them "
        "kept by a worker other than the initiator; %u layers ran a hop on the initiator "
        "itself",
        n, mlp_stats.by_size[2], mlp_stats.by_size[3], mlp_stats.by_size[4], mlp_stats.by_size[5],
        mlp_stats.by_size[6], mlp_stats.grads, mlp_stats.remote_grads, mlp_stats.self_hops);
    g_assert_cmpuint(mlp_stats.remote_grads, >, n / 10);
    g_assert_cmpuint(mlp_stats.self_hops, >, n / 10);
}

/* --- acceptance: a parameter server with 3 trainers -------------------------------- */

#define PS_STEPS    20
#define PS_TRAINERS 3
#define PS_FEAT     4
#define PS_BATCH    5

typedef struct {
    gboolean lossy;
    guint drops;
    double lr;
    double losses[PS_STEPS][PS_TRAINERS + 1];
    double final_w[PS_FEAT + 1];
} PsRun;

/* t_ps_params(): the list of the ps's parameter RRefs */
static RpcValue *
udf_ps_params(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcValue *v = rpc_agent_slot_get(self, "ps/params");
    g_assert_nonnull(v);
    return rpc_value_ref(v);
}

/* t_ps_forward(x): x @ W + b with the ps's parameters */
static RpcValue *
udf_ps_forward(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcValue *params = rpc_agent_slot_get(self, "ps/params");
    RpcValue *w = rpc_rref_local_value(rpc_value_get_rref(rpc_value_list_get(params, 0)), error);
    RpcValue *b = rpc_rref_local_value(rpc_value_get_rref(rpc_value_list_get(params, 1)), error);
    RpcAgThread *th = rpc_dist_autograd_thread(self);
    RpcTensor *m = rpc_ag_matmul(th, rpc_value_get_tensor(rpc_value_list_get(args, 0)),
                                 rpc_value_get_tensor(w), error);
    RpcTensor *r = rpc_ag_add(th, m, rpc_value_get_tensor(b), error);
    rpc_tensor_unref(m);
    rpc_value_unref(w);
    rpc_value_unref(b);
    return rpc_value_new_tensor(r);
}

static const RpcFunctionDef test_defs_ps2[] = {
    {"t_ps_params", NULL, udf_ps_params, 0, 0, -1, "the ps's parameter RRefs"},
    {"t_ps_forward", NULL, udf_ps_forward, 0, 0, -1, "x @ W + b on the ps"},
};

static void
ps_data(gint trainer, RpcTensor **x, RpcTensor **y)
{
    static const double w_true[PS_FEAT] = {0.5, -1.0, 2.0, 0.25};
    guint64 s = 4242 + trainer;
    *x = rand_dt(&s, F64, PS_BATCH, PS_FEAT, FALSE);
    double yv[PS_BATCH];
    for (guint i = 0; i < PS_BATCH; i++) {
        yv[i] = 0.75;
        for (guint j = 0; j < PS_FEAT; j++)
            yv[i] += rpc_tensor_get(*x, i * PS_FEAT + j) * w_true[j];
    }
    *y = tensor_dt(F64, PS_BATCH, 1, 0, yv, FALSE);
}

static void
body_ps(RpcTestCtx *ctx, gint rank)
{
    PsRun *run = ctx->data;
    RpcAgent *a = agent(ctx, rank);
    GError *err = NULL;
    if (rank == 0) {
        RpcTensor *w = tensor_dt(F64, PS_FEAT, 1, 0, NULL, TRUE);
        gint64 bs[1] = {1};
        RpcTensor *b = rpc_tensor_new_zeros(F64, 1, bs);
        rpc_ag_set_requires_grad(b, TRUE, NULL);
        RpcValue *params = rpc_value_new_list();
        rpc_value_list_append(params, rpc_rref_new_local(a, rpc_value_new_tensor(w), &err));
        rpc_value_list_append(params, rpc_rref_new_local(a, rpc_value_new_tensor(b), &err));
        rpc_agent_slot_set(a, "ps/params", params);
    }
    rt_barrier(ctx, rank);
    RpcTensor *x = NULL, *y = NULL;
    RpcDistOptimizer *opt = NULL;
    if (rank > 0) {
        ps_data(rank, &x, &y);
        RpcValue *params = rt_sync(ctx, rank, 0, "t_ps_params", NULL, UNSET, &err);
        g_assert_no_error(err);
        opt = rpc_dist_optimizer_new_sgd(a, params, run->lr, &err);
        g_assert_no_error(err);
        rpc_value_unref(params);
    }
    for (guint step = 0; step < PS_STEPS; step++) {
        gint64 id = NO_CTX;
        if (rank > 0) {
            RpcAgThread *th = th_of(ctx, rank);
            id = ctx_enter(ctx, rank);
            RpcTensor *pred =
                exec_t(ctx, rank, MODE_RPC_SYNC, 0, "t_ps_forward", rt_args(tv(x), NULL));
            RpcTensor *diff = rpc_ag_sub(th, pred, y, NULL);
            RpcTensor *sq = rpc_ag_mul(th, diff, diff, NULL);
            RpcTensor *loss = rpc_ag_mean(th, sq, NULL);
            g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
            g_assert_no_error(err);
            run->losses[step][rank] = rpc_tensor_get(loss, 0);
            RpcTensor *ts[] = {pred, diff, sq, loss};
            for (guint i = 0; i < G_N_ELEMENTS(ts); i++)
                rpc_tensor_unref(ts[i]);
        }
        rt_barrier(ctx, rank);
        /* the optimizer steps go one trainer at a time, so that the
         * parameters never depend on message timing */
        for (gint k = 1; k <= PS_TRAINERS; k++) {
            if (rank == k) {
                g_assert_true(rpc_dist_optimizer_step(opt, id, &err));
                g_assert_no_error(err);
            }
            rt_barrier(ctx, rank);
        }
        if (rank > 0)
            ctx_exit(ctx, rank, id);
        rt_barrier(ctx, rank);
    }
    /* every context is released everywhere, through the retries */
    SimTime until = rt_now(ctx) + 600 * SIM_S;
    for (;;) {
        RpcDistAutogradDebugInfo info;
        rpc_dist_autograd_debug_info(a, &info);
        if (info.num_autograd_contexts == 0)
            break;
        g_assert_cmpint(rt_now(ctx), <, until);
        rt_sleep(ctx, rank, 100 * SIM_MS);
    }
    rt_sleep(ctx, rank, 300 * SIM_S); /* cascades to released contexts retry too */
    rt_barrier(ctx, rank);
    if (rank == 0) {
        RpcValue *params = rpc_agent_slot_get(a, "ps/params");
        for (guint p = 0; p < 2; p++) {
            RpcValue *v =
                rpc_rref_local_value(rpc_value_get_rref(rpc_value_list_get(params, p)), &err);
            RpcTensor *t = rpc_value_get_tensor(v);
            for (gint64 i = 0; i < rpc_tensor_numel(t); i++)
                run->final_w[p == 0 ? i : PS_FEAT] = rpc_tensor_get(t, i);
            rpc_value_unref(v);
        }
    }
    rt_barrier(ctx, rank);
    rpc_dist_optimizer_free(opt);
    if (x != NULL) {
        rpc_tensor_unref(x);
        rpc_tensor_unref(y);
    }
}

static guint64
run_ps(PsRun *run, guint64 seed)
{
    RpcTestOptions o = {.seed = seed, .rpc_timeout = 2 * SIM_S};
    RpcTestCtx *ctx = rt_new(&o);
    register_defs(ctx, test_defs_ps2, G_N_ELEMENTS(test_defs_ps2));
    if (run->lossy) {
        for (guint w = 0; w < 4; w++)
            g_assert_true(sim_faults_add_drop(sim_world_faults(ctx->w, w),
                                              "CLEANUP_AUTOGRAD_CONTEXT_REQ", 0.3, NULL));
        SimLinkConfig lc;
        sim_link_config_init(&lc);
        lc.latency = sim_dist_constant(SIM_MS);
        lc.jitter = 2 * SIM_MS;
        lc.duplicate = 0.05;
        lc.reorder = 0.05;
        sim_net_set_default(sim_world_net(ctx->w), &lc);
    }
    ctx->data = run;
    rt_on(ctx, -1, body_ps);
    rt_run(ctx);
    if (run->lossy) {
        SimWorldStats st;
        sim_world_get_stats(ctx->w, &st);
        g_assert_cmpuint(st.faults_drops, >, 5);
        run->drops = (guint)st.faults_drops;
        SimNetStats ns;
        sim_net_get_stats(sim_world_net(ctx->w), &ns);
        g_assert_cmpuint(ns.duplicated, >, 0);
    }
    g_assert_cmpuint(rt_trace_count(ctx, "dist_autograd.cleanup_failed"), ==, 0);
    guint64 fp = sim_trace_fingerprint(sim_kernel_trace(ctx->k));
    rt_free(ctx);
    return fp;
}

static void
test_ps_trains(void)
{
    PsRun clean = {.lossy = FALSE, .lr = 0.05};
    PsRun lossy = {.lossy = TRUE, .lr = 0.05};
    run_ps(&clean, RT_DEFAULT_SEED);
    run_ps(&lossy, RT_DEFAULT_SEED);
    double first = 0, last = 0;
    for (guint k = 1; k <= PS_TRAINERS; k++) {
        first += clean.losses[0][k] / PS_TRAINERS;
        last += clean.losses[PS_STEPS - 1][k] / PS_TRAINERS;
    }
    g_test_message("mean loss %.6f at step 0, %.6f at step %d; dropped cleanups %u", first, last,
                   PS_STEPS - 1, lossy.drops);
    for (guint k = 1; k <= PS_TRAINERS; k++)
        g_assert_cmpfloat(clean.losses[PS_STEPS - 1][k], <, 0.5 * clean.losses[0][k]);
    for (guint s = 1; s < PS_STEPS; s++) {
        double now = 0, before = 0;
        for (guint k = 1; k <= PS_TRAINERS; k++) {
            now += clean.losses[s][k];
            before += clean.losses[s - 1][k];
        }
        g_assert_cmpfloat(now, <, before);
    }
    /* bit for bit the fault-free run */
    g_assert_cmpmem(clean.losses, sizeof clean.losses, lossy.losses, sizeof lossy.losses);
    g_assert_cmpmem(clean.final_w, sizeof clean.final_w, lossy.final_w, sizeof lossy.final_w);
    g_assert_cmpfloat(clean.final_w[2], >, 0.1); /* moving toward w_true = 2 */
}

/* --- determinism ------------------------------------------------------------------ */

static void
test_determinism(void)
{
    PsRun r1 = {.lossy = TRUE, .lr = 0.05}, r2 = r1, r3 = r1;
    guint64 a = run_ps(&r1, 7), b = run_ps(&r2, 7), c = run_ps(&r3, 8);
    g_assert_cmphex(a, ==, b);
    g_assert_cmphex(a, !=, c);
    g_assert_cmpuint(run_mlp(33), ==, run_mlp(33));
}

/* --- the distributed optimizer over several owners ----------------------------------- */

static RpcValue *
udf_make_param(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcTensor *t =
        tensor_dt(F64, 2, 2, rpc_value_get_double(rpc_value_list_get(args, 0)), NULL, TRUE);
    return rpc_value_new_tensor(t);
}

static RpcValue *
udf_use_param(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcValue *v = rpc_rref_local_value(rpc_value_get_rref(rpc_value_list_get(args, 0)), error);
    RpcTensor *r = rpc_ag_mul(rpc_dist_autograd_thread(self), rpc_value_get_tensor(v),
                              rpc_value_get_tensor(rpc_value_list_get(args, 1)), error);
    rpc_value_unref(v);
    return rpc_value_new_tensor(r);
}

static const RpcFunctionDef test_defs_opt[] = {
    {"make_param", NULL, udf_make_param, 0, 0, -1, "a 2x2 float64 leaf"},
    {"use_param", NULL, udf_use_param, 0, 0, -1, "param * x on the owner"},
};

static void
body_optimizer(RpcTestCtx *ctx, gint rank)
{
    if (rank != 0)
        return;
    RpcAgent *a = agent(ctx, rank);
    GError *err = NULL;
    RpcValue *params = rpc_value_new_list();
    for (gint w = 3; w >= 0; w--) {
        RpcValue *to = rpc_value_new_int(w == 0 ? 1 : w); /* two on worker 1 */
        rpc_value_list_append(params, rpc_remote(a, to, "make_param",
                                                 rt_args(rpc_value_new_double(w), NULL), NULL,
                                                 UNSET, &err));
        rpc_value_unref(to);
    }
    RpcDistOptimizer *opt = rpc_dist_optimizer_new_sgd(a, params, 0.5, &err);
    g_assert_no_error(err);
    RpcTensor *x = tensor_dt(F64, 2, 2, 2, NULL, FALSE);
    gint64 id = ctx_enter(ctx, rank);
    /* only the params on workers 3 and 2 get a gradient (2 each) */
    RpcTensor *loss = NULL;
    for (guint i = 0; i < 2; i++) {
        RpcValue *to = rpc_value_new_int(3 - (gint)i);
        RpcValue *v = rpc_sync(a, to, "use_param",
                               rt_args(rpc_value_ref(rpc_value_list_get(params, i)), tv(x), NULL),
                               NULL, UNSET, &err);
        g_assert_no_error(err);
        RpcTensor *s = rpc_ag_sum(th_of(ctx, rank), rpc_value_get_tensor(v), NULL);
        if (loss == NULL) {
            loss = s;
        } else {
            RpcTensor *l2 = rpc_ag_add(th_of(ctx, rank), loss, s, NULL);
            rpc_tensor_unref(loss);
            rpc_tensor_unref(s);
            loss = l2;
        }
        rpc_value_unref(v);
        rpc_value_unref(to);
    }
    g_assert_true(rpc_dist_autograd_backward(a, id, &loss, 1, FALSE, &err));
    g_assert_true(rpc_dist_optimizer_step(opt, id, &err));
    g_assert_no_error(err);
    /* p -= 0.5 * 2: 3 → 2, 2 → 1, and 1, 0 (no gradient) stay */
    static const double want[] = {2, 1, 1, 0};
    for (guint i = 0; i < 4; i++) {
        RpcValue *v =
            rpc_rref_to_here(rpc_value_get_rref(rpc_value_list_get(params, i)), UNSET, &err);
        g_assert_no_error(err);
        RpcTensor *t = tensor_dt(F64, 2, 2, want[i], NULL, FALSE);
        assert_tensor_eq(rpc_value_get_tensor(v), t);
        rpc_tensor_unref(t);
        rpc_value_unref(v);
    }
    g_assert_false(rpc_dist_optimizer_step(opt, 12345, &err));
    g_assert_cmpstr(err->message, ==, NOT_CTX "12345");
    g_clear_error(&err);
    ctx_exit(ctx, rank, id);
    RpcValue *bad = rt_args(rt_int(1), NULL);
    g_assert_null(rpc_dist_optimizer_new_sgd(a, bad, 0.1, &err));
    rt_assert_error(&err, RPC_ERROR_TYPE, "DistributedOptimizer: parameter 0 is not an RRef");
    rpc_value_unref(bad);
    rpc_dist_optimizer_free(opt);
    rpc_tensor_unref(loss);
    rpc_tensor_unref(x);
    rpc_value_unref(params);
}

static void
test_optimizer(void)
{
    RpcTestCtx *ctx = rt_new(NULL);
    register_defs(ctx, test_defs_opt, G_N_ELEMENTS(test_defs_opt));
    rt_on(ctx, -1, body_optimizer);
    rt_run(ctx);
    rt_free(ctx);
}

int
main(int argc, char *argv[])
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/dist-autograd/wire/requires-grad-bit", test_wire_requires_grad);
    g_test_add_func("/dist-autograd/container/init", test_container_init);
    g_test_add_func("/dist-autograd/test_autograd_context", test_autograd_context);
    g_test_add_data_func("/dist-autograd/test_graph_for_builtin_call", &graph_builtin,
                         test_graph_for_call);
    g_test_add_data_func("/dist-autograd/test_graph_for_python_call", &graph_python,
                         test_graph_for_call);
    g_test_add_data_func("/dist-autograd/test_graph_for_builtin_remote_call", &graph_builtin_remote,
                         test_graph_for_call);
    g_test_add_data_func("/dist-autograd/test_graph_for_python_remote_call", &graph_python_remote,
                         test_graph_for_call);
    g_test_add_func("/dist-autograd/test_graph_for_py_nested_call", test_graph_for_py_nested_call);
    g_test_add_func("/dist-autograd/test_graph_for_py_nested_call_itself",
                    test_graph_for_py_nested_call_itself);
    g_test_add_data_func("/dist-autograd/test_no_graph_with_tensors_not_require_grad",
                         &graph_builtin, test_no_graph_with_tensors_not_require_grad);
    g_test_add_data_func("/dist-autograd/test_no_graph_with_tensors_not_require_grad_remote",
                         &graph_python_remote, test_no_graph_with_tensors_not_require_grad);
    g_test_add_data_func("/dist-autograd/test_grad_only_on_return_value", &mode_sync,
                         test_grad_only_on_return_value);
    g_test_add_data_func("/dist-autograd/test_grad_only_on_return_value_remote", &mode_remote,
                         test_grad_only_on_return_value);
    g_test_add_func("/dist-autograd/test_worker_ids_recorded", test_worker_ids_recorded);
    g_test_add_data_func("/dist-autograd/test_context_cleanup_tensor_with_grad",
                         GINT_TO_POINTER(CLEAN_WITH_GRAD), test_context_cleanup);
    g_test_add_data_func("/dist-autograd/test_context_cleanup_tensor_no_grad",
                         GINT_TO_POINTER(CLEAN_NO_GRAD), test_context_cleanup);
    g_test_add_data_func("/dist-autograd/test_context_cleanup_no_tensors",
                         GINT_TO_POINTER(CLEAN_NO_TENSORS), test_context_cleanup);
    g_test_add_data_func("/dist-autograd/test_context_cleanup_nested_rpc",
                         GINT_TO_POINTER(CLEAN_NESTED), test_context_cleanup);
    g_test_add_func("/dist-autograd/faulty/test_context_cleanup_tensor_with_grad",
                    test_context_cleanup_tensor_with_grad_faulty);
    g_test_add_func("/dist-autograd/faulty/cleanup-retry-times", test_context_cleanup_faulty);
    g_test_add_func("/dist-autograd/cleanup/dropped", test_context_cleanup_dropped);
    g_test_add_func("/dist-autograd/cleanup/peer-dead", test_context_cleanup_peer_dead);
    g_test_add_data_func("/dist-autograd/test_backward_simple", &bs_sync, test_backward_simple);
    g_test_add_data_func("/dist-autograd/test_backward_simple_self", &bs_self,
                         test_backward_simple);
    g_test_add_data_func("/dist-autograd/test_backward_rref", &bs_remote, test_backward_simple);
    g_test_add_data_func("/dist-autograd/test_backward_rref_self", &bs_remote_self,
                         test_backward_simple);
    g_test_add_data_func("/dist-autograd/test_backward_local", &bs_local, test_backward_simple);
    g_test_add_func("/dist-autograd/test_backward_no_grad_on_tensor",
                    test_backward_no_grad_on_tensor);
    g_test_add_func("/dist-autograd/multiple-roots", test_multiple_roots);
    g_test_add_func("/dist-autograd/test_trainer_ps", test_trainer_ps);
    g_test_add_data_func("/dist-autograd/test_backward_multiple_round_trips", &cc_round_trips,
                         test_backward_equals_local);
    g_test_add_data_func("/dist-autograd/test_backward_different_tensor_dims", &cc_dims,
                         test_backward_equals_local);
    g_test_add_data_func("/dist-autograd/test_backward_unused_tensors", &cc_unused,
                         test_backward_equals_local);
    g_test_add_data_func("/dist-autograd/test_backward_complex_python_udf", &cc_python,
                         test_backward_equals_local);
    g_test_add_data_func("/dist-autograd/test_backward_different_dtypes", &cc_dtypes,
                         test_backward_equals_local);
    g_test_add_data_func("/dist-autograd/test_backward_accumulate_grads", GINT_TO_POINTER(FALSE),
                         test_backward_accumulate_grads);
    g_test_add_data_func("/dist-autograd/test_nested_backward_accumulate_grads",
                         GINT_TO_POINTER(TRUE), test_backward_accumulate_grads);
    g_test_add_func("/dist-autograd/test_backward_autograd_engine_error",
                    test_backward_autograd_engine_error);
    g_test_add_func("/dist-autograd/test_multiple_backward_with_errors",
                    test_multiple_backward_with_errors);
    g_test_add_func("/dist-autograd/test_backward_invalid_args", test_backward_invalid_args);
    g_test_add_func("/dist-autograd/test_backward_unused_send_function",
                    test_backward_unused_send_function);
    g_test_add_func("/dist-autograd/unused-send-function-on-callee",
                    test_backward_unused_send_function_callee);
    g_test_add_func("/dist-autograd/test_backward_node_failure_python_udf",
                    test_backward_node_failure_python_udf);
    g_test_add_func("/dist-autograd/node-failure-mid-backward", test_backward_node_failure_mid);
    g_test_add_func("/dist-autograd/test_backward_verify_hooks", test_backward_verify_hooks);
    g_test_add_func("/dist-autograd/test_thread_local_context_id", test_thread_local_context_id);
    g_test_add_func("/dist-autograd/test_debug_info", test_debug_info);
    g_test_add_func("/dist-autograd/test_clean_context_during_backward",
                    test_clean_context_during_backward);
    g_test_add_func("/dist-autograd/rref/test_owner_and_user_rref_backward", test_rref_backward);
    g_test_add_func("/dist-autograd/malformed", test_malformed);
    g_test_add_func("/dist-autograd/catalogue", test_catalogue);
    g_test_add_func("/dist-autograd/optimizer/sgd", test_optimizer);
    g_test_add_func("/dist-autograd/sweep/mlp", test_sweep_mlp);
    g_test_add_func("/dist-autograd/ps/trains-under-control-loss", test_ps_trains);
    g_test_add_func("/dist-autograd/determinism", test_determinism);
    g_test_add_func("/dist-autograd/release-during-backward", test_release_during_backward);
    return g_test_run();
}
