/* test-autograd-function.c — custom autograd functions (core/autograd-function.c).
 *
 * Every rule of shared/spec §8 and the custom-Function cases of §11.10
 * (154 backward twice, 155 wrong gradient count, 157 once_differentiable),
 * with PyTorch 1.13's exact texts and kinds.  As in test-autograd.c, each
 * test checks at teardown that no node outlived its tensors.
 */
#include <math.h>
#include <string.h>

#include "core/autograd.h"
#include "core/error.h"
#include "core/tensor.h"
#include "core/value.h"

#define F32        RPC_DTYPE_FLOAT32
#define F64        RPC_DTYPE_FLOAT64
#define SHAPE(...) ((const gint64[]){__VA_ARGS__})
#define VALS(...)  ((const double[]){__VA_ARGS__})

typedef struct {
    RpcAgState *state;
    RpcAgThread *th;
} Fx;

static void
fx_setup(Fx *fx, gconstpointer data)
{
    fx->state = rpc_ag_state_new();
    fx->th = rpc_ag_thread_new(fx->state);
}

static void
fx_teardown(Fx *fx, gconstpointer data)
{
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 0);
    rpc_ag_thread_free(fx->th);
    rpc_ag_state_unref(fx->state);
}

#define TEST(path, fn) g_test_add(path, Fx, NULL, fx_setup, fn, fx_teardown)

static RpcTensor *
tensor(guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = rpc_tensor_new_from_doubles(F64, ndim, shape, values);
    g_assert_nonnull(t);
    return t;
}

static RpcTensor *
leaf(guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = tensor(ndim, shape, values);
    g_assert_true(rpc_ag_set_requires_grad(t, TRUE, NULL));
    return t;
}

static void
check_values(const RpcTensor *t, guint ndim, const gint64 *shape, const double *want)
{
    g_assert_nonnull(t);
    g_assert_cmpuint(rpc_tensor_ndim(t), ==, ndim);
    for (guint i = 0; i < ndim; i++)
        g_assert_cmpint(rpc_tensor_shape(t)[i], ==, shape[i]);
    for (gint64 i = 0; i < rpc_tensor_numel(t); i++)
        g_assert_cmpfloat(rpc_tensor_get(t, i), ==, want[i]);
}

static void
check_error(GError **error, RpcErrorKind kind, const char *message)
{
    g_assert_error(*error, RPC_ERROR, (gint)kind);
    g_assert_cmpstr((*error)->message, ==, message);
    g_clear_error(error);
}

static RpcValue *
tv(RpcTensor *t)
{
    return rpc_value_new_tensor(rpc_tensor_ref(t));
}

/* fn.apply(*inputs); consumes inputs (array of n). */
static GPtrArray *
apply(Fx *fx, const RpcAgFunction *fn, RpcValue **inputs, guint n, GError **error)
{
    GPtrArray *out = rpc_ag_function_apply(fx->th, fn, inputs, n, error);
    for (guint i = 0; i < n; i++)
        rpc_value_unref(inputs[i]);
    return out;
}

/* Output i as a tensor (transfer full). */
static RpcTensor *
out_tensor(GPtrArray *out, guint i)
{
    return rpc_tensor_ref(rpc_value_get_tensor(g_ptr_array_index(out, i)));
}

/* One tensor in, tensor output 0 out; asserts success. */
static RpcTensor *
apply1(Fx *fx, const RpcAgFunction *fn, RpcTensor *x)
{
    GError *error = NULL;
    RpcValue *in[] = {tv(x)};
    GPtrArray *out = apply(fx, fn, in, 1, &error);
    g_assert_no_error(error);
    RpcTensor *t = out_tensor(out, 0);
    g_ptr_array_unref(out);
    return t;
}

static gboolean
backward_sum(Fx *fx, RpcTensor *t, gboolean retain, GError **error)
{
    g_autoptr(RpcTensor) s = rpc_ag_sum(fx->th, t, NULL);
    return rpc_ag_backward(fx->th, &s, NULL, 1, retain, FALSE, error);
}

static void
add_tensor(GPtrArray *out, RpcTensor *t)
{
    g_ptr_array_add(out, rpc_value_new_tensor(t));
}

/* ---- MyExp: save_for_backward(result) — case 154 ------------------------------- */

static gboolean
exp_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_assert_false(rpc_ag_thread_is_grad_enabled(rpc_ag_ctx_thread(ctx)));
    RpcTensor *r = rpc_tensor_exp(rpc_value_get_tensor(in[0]));
    RpcValue *rv = rpc_value_new_tensor(r);
    rpc_ag_ctx_save_for_backward(ctx, &rv, 1);
    g_ptr_array_add(out, rv);
    return TRUE;
}

static gboolean
exp_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    GPtrArray *saved = rpc_ag_ctx_saved_tensors(ctx, error);
    if (saved == NULL)
        return FALSE;
    add_tensor(out, rpc_ag_mul(rpc_ag_ctx_thread(ctx), g[0], g_ptr_array_index(saved, 0), error));
    g_ptr_array_unref(saved);
    return TRUE;
}

static const RpcAgFunction my_exp = {"MyExp", exp_forward, exp_backward, NULL, FALSE};

static void
test_backward_twice(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(0, 1));
    g_autoptr(RpcTensor) y = apply1(fx, &my_exp, x);
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(y)), ==, "MyExpBackward");
    g_assert_true(backward_sum(fx, y, FALSE, &error));
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(1, exp(1.0)));
    g_assert_false(backward_sum(fx, y, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
    /* ...and reading saved_tensors through the node afterwards. */
    RpcAgCtx *ctx = rpc_ag_node_ctx(rpc_ag_grad_fn(y));
    g_assert_nonnull(ctx);
    g_assert_null(rpc_ag_ctx_saved_tensors(ctx, &error));
    check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);

    /* retain_graph=True the first time: the second pass adds again. */
    g_assert_true(rpc_ag_set_grad(x, NULL, &error));
    g_autoptr(RpcTensor) y2 = apply1(fx, &my_exp, x);
    g_assert_true(backward_sum(fx, y2, TRUE, &error));
    g_assert_true(backward_sum(fx, y2, FALSE, &error));
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(2, 2 * exp(1.0)));

    /* Before any backward, saved_tensors gives the output with its grad_fn. */
    g_autoptr(RpcTensor) y3 = apply1(fx, &my_exp, x);
    GPtrArray *saved = rpc_ag_ctx_saved_tensors(rpc_ag_node_ctx(rpc_ag_grad_fn(y3)), &error);
    g_assert_cmpuint(saved->len, ==, 1);
    RpcTensor *s0 = g_ptr_array_index(saved, 0);
    g_assert_true(rpc_ag_grad_fn(s0) == rpc_ag_grad_fn(y3));
    g_assert_true(rpc_tensor_data(s0) == rpc_tensor_data(y3));
    g_ptr_array_unref(saved);
    /* A built-in node has no ctx. */
    g_autoptr(RpcTensor) z = rpc_ag_neg(fx->th, y3, NULL);
    g_assert_null(rpc_ag_node_ctx(rpc_ag_grad_fn(z)));

    /* The saved output modified in place: the version check names MyExpBackward. */
    g_autoptr(RpcTensor) xi = rpc_ag_mul_scalar(fx->th, x, 1, NULL);
    g_autoptr(RpcTensor) y4 = apply1(fx, &my_exp, xi);
    g_assert_true(rpc_ag_mul_scalar_(fx->th, y4, 2, &error));
    g_assert_false(backward_sum(fx, y4, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "one of the variables needed for gradient computation has been modified by an "
                "inplace operation: [torch.DoubleTensor [2]], which is output 0 of MyExpBackward, "
                "is at version 1; expected version 0 instead. Hint: enable anomaly detection to "
                "find the operation that failed to compute its gradient, with "
                "torch.autograd.set_detect_anomaly(True).");
}

/* ---- MyFn: two tensor inputs, a configurable number of gradients — 155 -------- */

typedef struct {
    int n_grads; /* how many values backward returns */
    int extra;   /* 0: extras are None; 1: a tensor */
} Arity;

static gboolean
add_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    add_tensor(out,
               rpc_tensor_add(rpc_value_get_tensor(in[0]), rpc_value_get_tensor(in[1]), error));
    return TRUE;
}

static gboolean
arity_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const Arity *a = rpc_ag_ctx_function(ctx)->user_data;
    for (int i = 0; i < a->n_grads; i++) {
        if (i < 2 || a->extra)
            add_tensor(out, rpc_tensor_ref(g[0]));
        else
            g_ptr_array_add(out, i % 2 ? rpc_value_none() : NULL); /* both mean None */
    }
    return TRUE;
}

static void
test_wrong_grad_count(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    struct {
        Arity arity;
        const char *message;
    } cases[] = {
        {{1, 0},
         "function MyFnBackward returned an incorrect number of gradients (expected 2, got 1)"},
        {{3, 1},
         "function MyFnBackward returned an incorrect number of gradients (expected 2, got 3)"},
        {{0, 0},
         "function MyFnBackward returned an incorrect number of gradients (expected 2, got 0)"},
        {{4, 0}, NULL}, /* trailing Nones are trimmed */
        {{2, 0}, NULL},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        RpcAgFunction fn = {"MyFn", add_forward, arity_backward, &cases[i].arity, FALSE};
        RpcValue *in[] = {tv(x), tv(x)};
        GPtrArray *out = apply(fx, &fn, in, 2, &error);
        g_autoptr(RpcTensor) y = out_tensor(out, 0);
        g_ptr_array_unref(out);
        rpc_ag_set_grad(x, NULL, NULL);
        if (cases[i].message != NULL) {
            g_assert_false(backward_sum(fx, y, FALSE, &error));
            check_error(&error, RPC_ERROR_RUNTIME, cases[i].message);
            g_assert_null(rpc_ag_grad(x));
        } else {
            g_assert_true(backward_sum(fx, y, FALSE, &error));
            check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(2, 2));
        }
    }
}

/* ---- non-tensor inputs and what backward may return ------------------------------- */

typedef struct {
    int mode; /* 0 ok, 1 grad for the int, 2 an int for the tensor, 3 opaque, 4 None */
} Ret;

static gboolean
scale_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_assert_true(rpc_ag_ctx_needs_input_grad(ctx, 0));
    g_assert_false(rpc_ag_ctx_needs_input_grad(ctx, 1));
    g_assert_cmpuint(rpc_ag_ctx_n_inputs(ctx), ==, 2);
    double k = (double)rpc_value_get_int(in[1]);
    add_tensor(out, rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), k));
    return TRUE;
}

static const RpcOpaqueType thing_type = {.name = "Thing"};
static int thing_object;

static gboolean
ret_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const Ret *r = rpc_ag_ctx_function(ctx)->user_data;
    switch (r->mode) {
    case 0:
        add_tensor(out, rpc_tensor_mul_scalar(g[0], 2));
        g_ptr_array_add(out, rpc_value_none());
        break;
    case 1:
        add_tensor(out, rpc_tensor_ref(g[0]));
        add_tensor(out, rpc_tensor_ref(g[0]));
        break;
    case 2:
        g_ptr_array_add(out, rpc_value_new_int(3));
        g_ptr_array_add(out, NULL);
        break;
    case 3:
        g_ptr_array_add(out, rpc_value_new_opaque(&thing_type, &thing_object));
        g_ptr_array_add(out, NULL);
        break;
    default: /* None for the tensor: no gradient for it */
        g_ptr_array_add(out, NULL);
        g_ptr_array_add(out, NULL);
    }
    return TRUE;
}

static void
test_backward_return_types(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    const char *messages[] = {
        NULL,
        "function W4Backward returned a gradient different than None at position 2, but the "
        "corresponding forward input was not a Variable",
        "expected Variable or None (got int)",
        "expected Variable or None (got Thing)",
        NULL,
    };
    for (int mode = 0; mode < 5; mode++) {
        Ret r = {mode};
        RpcAgFunction fn = {"W4", scale_forward, ret_backward, &r, FALSE};
        RpcValue *in[] = {tv(x), rpc_value_new_int(2)};
        GPtrArray *out = apply(fx, &fn, in, 2, &error);
        g_autoptr(RpcTensor) y = out_tensor(out, 0);
        g_ptr_array_unref(out);
        check_values(y, 1, SHAPE(2), VALS(2, 4));
        rpc_ag_set_grad(x, NULL, NULL);
        if (messages[mode] != NULL) {
            g_assert_false(backward_sum(fx, y, FALSE, &error));
            check_error(&error, RPC_ERROR_RUNTIME, messages[mode]);
        } else {
            g_assert_true(backward_sum(fx, y, FALSE, &error));
            if (mode == 0)
                check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(2, 2));
            else
                g_assert_null(rpc_ag_grad(x));
        }
    }
}

/* ---- missing forward / backward ------------------------------------------------ */

static gboolean
double_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    add_tensor(out, rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), 2));
    return TRUE;
}

static void
test_missing_callbacks(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    const RpcAgFunction no_forward = {"NF", NULL, exp_backward, NULL, FALSE};
    RpcValue *in[] = {tv(x)};
    g_assert_null(apply(fx, &no_forward, in, 1, &error));
    check_error(&error, RPC_ERROR_NOT_IMPLEMENTED,
                "You must implement the forward function for custom autograd.Function.");

    const RpcAgFunction no_backward = {"NB", double_forward, NULL, NULL, FALSE};
    g_autoptr(RpcTensor) y = apply1(fx, &no_backward, x);
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(y)), ==, "NBBackward");
    g_assert_false(backward_sum(fx, y, FALSE, &error));
    check_error(&error, RPC_ERROR_NOT_IMPLEMENTED,
                "You must implement either the backward or vjp method for your custom "
                "autograd.Function to use it with backward mode AD.");
}

/* ---- errors raised by forward and backward ------------------------------------- */

static gboolean
failing_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    add_tensor(out, rpc_tensor_ref(rpc_value_get_tensor(in[0]))); /* dropped on failure */
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "Expected error");
    return FALSE;
}

/* SimulateBackwardError of dist_autograd_test.py: identity forward,
 * backward raises while the flag in user_data is set. */
static gboolean
identity_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_ptr_array_add(out, rpc_value_ref(in[0]));
    return TRUE;
}

static gboolean
simulate_error_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    if (*(gboolean *)rpc_ag_ctx_function(ctx)->user_data) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_EXCEPTION,
                            "Simulate error on backward pass");
        return FALSE;
    }
    add_tensor(out, rpc_tensor_ref(g[0]));
    return TRUE;
}

static void
test_callback_errors(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    const RpcAgFunction fails = {"Fails", failing_forward, exp_backward, NULL, FALSE};
    RpcValue *in[] = {tv(x)};
    g_assert_null(apply(fx, &fails, in, 1, &error));
    check_error(&error, RPC_ERROR_VALUE, "Expected error");
    g_assert_true(rpc_ag_thread_is_grad_enabled(fx->th)); /* restored */

    gboolean simulate = TRUE;
    const RpcAgFunction sim = {"SimulateBackwardError", identity_forward, simulate_error_backward,
                               &simulate, FALSE};
    g_autoptr(RpcTensor) tmp = rpc_ag_mul(fx->th, x, x, NULL);
    g_autoptr(RpcTensor) y = apply1(fx, &sim, tmp);
    g_assert_false(y == tmp); /* an input comes back as a view */
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(y)), ==, "SimulateBackwardErrorBackward");
    for (int i = 0; i < 3; i++) {
        g_assert_false(backward_sum(fx, y, TRUE, &error));
        check_error(&error, RPC_ERROR_EXCEPTION, "Simulate error on backward pass");
    }
    g_assert_null(rpc_ag_grad(x));
    simulate = FALSE;
    g_assert_true(backward_sum(fx, y, TRUE, &error));
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(2, 4));
}

/* ---- save_for_backward ------------------------------------------------------------ */

typedef struct {
    int mode; /* 0: save (a, None); 1: save (a, 5); 2: save twice; 3: save input, read back */
} SaveMode;

static gboolean
save_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    const SaveMode *m = rpc_ag_ctx_function(ctx)->user_data;
    RpcValue *none = rpc_value_none();
    RpcValue *five = rpc_value_new_int(5);
    switch (m->mode) {
    case 0:
        rpc_ag_ctx_save_for_backward(ctx, (RpcValue *[]){in[0], none}, 2);
        break;
    case 1:
        rpc_ag_ctx_save_for_backward(ctx, (RpcValue *[]){in[0], five}, 2);
        break;
    case 2:
        rpc_ag_ctx_save_for_backward(ctx, (RpcValue *[]){five}, 1);
        rpc_ag_ctx_save_for_backward(ctx, (RpcValue *[]){in[0], in[0]}, 2);
        break;
    default:
        rpc_ag_ctx_save_for_backward(ctx, NULL, 0);
        rpc_ag_ctx_save_for_backward(ctx, &in[0], 1);
        break;
    }
    rpc_value_unref(none);
    rpc_value_unref(five);
    add_tensor(out, rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), 2));
    return TRUE;
}

static gboolean
save_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const SaveMode *m = rpc_ag_ctx_function(ctx)->user_data;
    GPtrArray *saved = rpc_ag_ctx_saved_tensors(ctx, error);
    if (saved == NULL)
        return FALSE;
    if (m->mode == 0) {
        g_assert_cmpuint(saved->len, ==, 2);
        g_assert_null(g_ptr_array_index(saved, 1)); /* None stays None */
    } else {
        g_assert_cmpuint(saved->len, ==, 2); /* the second call replaced the first */
    }
    /* A saved input is the input itself, not a copy. */
    add_tensor(out, rpc_ag_mul(rpc_ag_ctx_thread(ctx), g[0], g_ptr_array_index(saved, 0), error));
    g_ptr_array_unref(saved);
    return TRUE;
}

static void
test_save_for_backward(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(3, 4));
    for (int mode = 0; mode < 3; mode++) {
        SaveMode m = {mode};
        RpcAgFunction fn = {"S", save_forward, save_backward, &m, FALSE};
        RpcValue *in[] = {tv(x)};
        GPtrArray *out = apply(fx, &fn, in, 1, &error);
        if (mode == 1) {
            g_assert_null(out);
            check_error(&error, RPC_ERROR_TYPE,
                        "save_for_backward can only save variables, but argument 1 is of type "
                        "int");
            continue;
        }
        g_autoptr(RpcTensor) y = out_tensor(out, 0);
        g_ptr_array_unref(out);
        rpc_ag_set_grad(x, NULL, NULL);
        g_assert_true(backward_sum(fx, y, FALSE, &error));
        check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(3, 4));
    }
    /* Not executable (grad mode off): nothing is saved, nothing checked. */
    SaveMode m1 = {1};
    RpcAgFunction fn = {"S", save_forward, save_backward, &m1, FALSE};
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    RpcValue *in[] = {tv(x)};
    GPtrArray *out = apply(fx, &fn, in, 1, &error);
    g_assert_no_error(error);
    g_autoptr(RpcTensor) y = out_tensor(out, 0);
    g_ptr_array_unref(out);
    g_assert_false(rpc_ag_requires_grad(y));
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);

    /* A saved leaf input changed in place (under no_grad): version error
     * without "which is output". */
    SaveMode m3 = {3};
    RpcAgFunction fn3 = {"S", save_forward, save_backward, &m3, FALSE};
    g_autoptr(RpcTensor) w = leaf(1, SHAPE(2), VALS(1, 1));
    g_autoptr(RpcTensor) y3 = apply1(fx, &fn3, w);
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    g_assert_true(rpc_ag_add_scalar_(fx->th, w, 1, &error));
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);
    GPtrArray *s = rpc_ag_ctx_saved_tensors(rpc_ag_node_ctx(rpc_ag_grad_fn(y3)), &error);
    g_assert_null(s);
    check_error(&error, RPC_ERROR_RUNTIME,
                "one of the variables needed for gradient computation has been modified by an "
                "inplace operation: [torch.DoubleTensor [2]] is at version 1; expected version 0 "
                "instead. Hint: enable anomaly detection to find the operation that failed to "
                "compute its gradient, with torch.autograd.set_detect_anomaly(True).");
}

/* ---- mark_dirty ---------------------------------------------------------------------- */

typedef struct {
    int mode; /* 0: dirty a, return a; 1: dirty a, return b*1; 2: dirty (a, 5);
                 3: dirty a non-input */
} DirtyMode;

static gboolean
dirty_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    const DirtyMode *m = rpc_ag_ctx_function(ctx)->user_data;
    RpcAgThread *th = rpc_ag_ctx_thread(ctx);
    RpcTensor *a = rpc_value_get_tensor(in[0]);
    switch (m->mode) {
    case 0:
        g_assert_true(rpc_ag_mul_scalar_(th, a, 2, error)); /* under no-grad: allowed */
        rpc_ag_ctx_mark_dirty(ctx, &in[0], 1);
        g_ptr_array_add(out, rpc_value_ref(in[0]));
        break;
    case 1:
        g_assert_true(rpc_ag_mul_scalar_(th, a, 2, error));
        rpc_ag_ctx_mark_dirty(ctx, &in[0], 1);
        add_tensor(out, rpc_tensor_mul_scalar(rpc_value_get_tensor(in[n - 1]), 1));
        break;
    case 2: {
        RpcValue *five = rpc_value_new_int(5);
        rpc_ag_ctx_mark_dirty(ctx, (RpcValue *[]){in[0], five}, 2);
        rpc_value_unref(five);
        g_ptr_array_add(out, rpc_value_ref(in[0]));
        break;
    }
    default: {
        RpcValue *t = rpc_value_new_tensor(rpc_tensor_mul_scalar(a, 3));
        rpc_ag_ctx_mark_dirty(ctx, &t, 1);
        g_ptr_array_add(out, t);
        break;
    }
    }
    return TRUE;
}

static gboolean
times2_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    for (guint i = 0; i < rpc_ag_ctx_n_inputs(ctx); i++)
        add_tensor(out, rpc_tensor_mul_scalar(g[0], 2));
    return TRUE;
}

static void
test_mark_dirty(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    DirtyMode m = {0};
    RpcAgFunction fn = {"D2", dirty_forward, times2_backward, &m, FALSE};

    /* A leaf that requires grad. */
    RpcValue *in0[] = {tv(x)};
    g_assert_null(apply(fx, &fn, in0, 1, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "a leaf Variable that requires grad has been used in an in-place operation.");
    check_values(x, 1, SHAPE(2), VALS(2, 4)); /* forward ran, as in PyTorch */

    /* A non-leaf: the same tensor comes back, history rebased onto D2. */
    rpc_ag_set_grad(x, NULL, NULL);
    g_autoptr(RpcTensor) a = rpc_ag_mul_scalar(fx->th, x, 1, NULL);
    RpcAgNode *old = rpc_ag_grad_fn(a);
    g_assert_cmpuint(rpc_tensor_version(a), ==, 0);
    RpcValue *in1[] = {tv(a)};
    GPtrArray *out = apply(fx, &fn, in1, 1, &error);
    g_assert_no_error(error);
    g_assert_true(rpc_value_get_tensor(g_ptr_array_index(out, 0)) == a);
    g_ptr_array_unref(out);
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(a)), ==, "D2Backward");
    g_assert_true(rpc_ag_node_next(rpc_ag_grad_fn(a), 0, NULL) == old);
    g_assert_cmpuint(rpc_tensor_version(a), ==, 2); /* mul_ and mark_dirty */
    check_values(a, 1, SHAPE(2), VALS(4, 8));
    g_assert_true(backward_sum(fx, a, FALSE, &error));
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(2, 2));

    /* Under no_grad a leaf may be dirtied. */
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    RpcValue *in2[] = {tv(x)};
    out = apply(fx, &fn, in2, 1, &error);
    g_assert_no_error(error);
    g_ptr_array_unref(out);
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);
    check_values(x, 1, SHAPE(2), VALS(4, 8));
    g_assert_true(rpc_ag_is_leaf(x));

    /* Dirty but not returned (grad mode on or off). */
    m.mode = 1;
    for (int grad_mode = 0; grad_mode < 2; grad_mode++) {
        rpc_ag_thread_set_grad_enabled(fx->th, grad_mode);
        g_autoptr(RpcTensor) c = tensor(1, SHAPE(2), VALS(1, 1));
        RpcValue *in3[] = {tv(c), tv(x)};
        g_assert_null(apply(fx, &fn, in3, 2, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "Some elements marked as dirty during the forward method were not returned as "
                    "output. The inputs that are modified inplace must all be outputs of the "
                    "Function.");
    }
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);

    /* Not a tensor. */
    m.mode = 2;
    g_autoptr(RpcTensor) b = rpc_ag_mul_scalar(fx->th, x, 1, NULL);
    RpcValue *in4[] = {tv(b)};
    g_assert_null(apply(fx, &fn, in4, 1, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "mark_dirty can only accept variables, but argument 1 is of type int");

    /* A non-input: PyTorch only warns. */
    m.mode = 3;
    g_autoptr(RpcTensor) d = rpc_ag_mul_scalar(fx->th, x, 1, NULL);
    g_autoptr(RpcTensor) e = apply1(fx, &fn, d);
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(e)), ==, "D2Backward");
    check_values(e, 1, SHAPE(2), VALS(12, 24));
}

/* A leaf whose AccumulateGrad exists is dirtied after its requires_grad
 * was switched off: the accumulator finds it inside the graph. */
static void
test_leaf_moved_into_interior(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) w = leaf(1, SHAPE(2), VALS(1, 1));
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, NULL);
    g_assert_true(rpc_ag_set_requires_grad(x, FALSE, &error));
    DirtyMode m = {0};
    RpcAgFunction fn = {"D2", dirty_forward, times2_backward, &m, FALSE};
    RpcValue *in[] = {tv(x), tv(w)};
    GPtrArray *out = apply(fx, &fn, in, 2, &error);
    g_assert_no_error(error);
    g_ptr_array_unref(out);
    g_assert_false(rpc_ag_is_leaf(x));
    g_assert_false(backward_sum(fx, y, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME, "leaf variable has been moved into the graph interior");
}

/* ---- mark_non_differentiable, materialize_grads, several outputs ------------ */

typedef struct {
    gboolean materialize;
    gboolean mark_int; /* mark a non-tensor */
    GString *log;
} MultiMode;

static gboolean
multi_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    const MultiMode *m = rpc_ag_ctx_function(ctx)->user_data;
    RpcTensor *a = rpc_value_get_tensor(in[0]);
    rpc_ag_ctx_set_materialize_grads(ctx, m->materialize);
    RpcValue *b = rpc_value_new_tensor(rpc_tensor_mul_scalar(a, 2));
    RpcValue *c = rpc_value_new_tensor(rpc_tensor_mul_scalar(a, 3));
    RpcValue *seven = rpc_value_new_int(7);
    rpc_ag_ctx_mark_non_differentiable(ctx, m->mark_int ? &seven : &c, 1);
    g_ptr_array_add(out, b);
    g_ptr_array_add(out, c);
    g_ptr_array_add(out, seven);
    return TRUE;
}

static void
log_grad(GString *log, RpcTensor *g)
{
    if (g == NULL) {
        g_string_append(log, " None");
        return;
    }
    g_autofree char *r = rpc_tensor_repr(g);
    g_string_append_printf(log, " %s", r);
}

static gboolean
multi_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const MultiMode *m = rpc_ag_ctx_function(ctx)->user_data;
    g_assert_cmpuint(n, ==, 3);
    for (guint i = 0; i < n; i++)
        log_grad(m->log, g[i]);
    add_tensor(out, rpc_tensor_ref(g[0]));
    return TRUE;
}

static void
test_non_differentiable(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 1));
    MultiMode m = {TRUE, FALSE, g_string_new(NULL)};
    RpcAgFunction fn = {"M", multi_forward, multi_backward, &m, FALSE};
    for (int materialize = 1; materialize >= 0; materialize--) {
        m.materialize = materialize;
        g_string_truncate(m.log, 0);
        RpcValue *in[] = {tv(x)};
        GPtrArray *out = apply(fx, &fn, in, 1, &error);
        g_assert_no_error(error);
        g_assert_cmpuint(out->len, ==, 3);
        g_autoptr(RpcTensor) b = out_tensor(out, 0);
        g_autoptr(RpcTensor) c = out_tensor(out, 1);
        g_assert_cmpint(rpc_value_get_int(g_ptr_array_index(out, 2)), ==, 7);
        g_ptr_array_unref(out);
        g_assert_true(rpc_ag_requires_grad(b));
        g_assert_false(rpc_ag_requires_grad(c));
        g_assert_null(rpc_ag_grad_fn(c));
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(b)), ==, "MBackward");
        g_assert_cmpuint(rpc_ag_node_n_inputs(rpc_ag_grad_fn(b)), ==, 3);
        g_assert_true(backward_sum(fx, b, FALSE, &error));
        /* Zeros for the non-differentiable output; None for the int. */
        g_assert_cmpstr(m.log->str, ==,
                        materialize ? " tensor([1., 1.], dtype=torch.float64) tensor([0., 0.], "
                                      "dtype=torch.float64) None"
                                    : " tensor([1., 1.], dtype=torch.float64) None None");
    }
    m.mark_int = TRUE;
    RpcValue *in[] = {tv(x)};
    g_assert_null(apply(fx, &fn, in, 1, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "mark_non_differentiable only accepts variable arguments, but got int");
    g_string_free(m.log, TRUE);
}

/* Two differentiable outputs, one unused. */
static gboolean
two_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    const MultiMode *m = rpc_ag_ctx_function(ctx)->user_data;
    rpc_ag_ctx_set_materialize_grads(ctx, m->materialize);
    RpcTensor *a = rpc_value_get_tensor(in[0]);
    add_tensor(out, rpc_tensor_mul_scalar(a, 2));
    add_tensor(out, rpc_tensor_mul_scalar(a, 3));
    return TRUE;
}

static gboolean
two_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const MultiMode *m = rpc_ag_ctx_function(ctx)->user_data;
    log_grad(m->log, g[0]);
    log_grad(m->log, g[1]);
    add_tensor(out, rpc_tensor_ref(g[0]));
    return TRUE;
}

static void
test_materialize_grads(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 1));
    MultiMode m = {TRUE, FALSE, g_string_new(NULL)};
    RpcAgFunction fn = {"M3", two_forward, two_backward, &m, FALSE};
    for (int materialize = 1; materialize >= 0; materialize--) {
        m.materialize = materialize;
        g_string_truncate(m.log, 0);
        RpcValue *in[] = {tv(x)};
        GPtrArray *out = apply(fx, &fn, in, 1, &error);
        g_autoptr(RpcTensor) first = out_tensor(out, 0);
        g_assert_true(rpc_ag_output_nr(rpc_value_get_tensor(g_ptr_array_index(out, 1))) == 1);
        g_ptr_array_unref(out);
        g_assert_true(backward_sum(fx, first, FALSE, &error));
        g_assert_cmpstr(m.log->str, ==,
                        materialize ? " tensor([1., 1.], dtype=torch.float64) tensor([0., 0.], "
                                      "dtype=torch.float64)"
                                    : " tensor([1., 1.], dtype=torch.float64) None");
    }
    g_string_free(m.log, TRUE);
}

/* ---- inputs returned as outputs, needs_input_grad ------------------------------- */

typedef struct {
    GString *log;
} IMode;

static gboolean
pass_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    const IMode *m = rpc_ag_ctx_function(ctx)->user_data;
    g_string_append(m->log, "nig");
    for (guint i = 0; i < n; i++) {
        g_string_append(m->log, rpc_ag_ctx_needs_input_grad(ctx, i) ? " T" : " F");
        g_ptr_array_add(out, rpc_value_ref(in[i]));
    }
    return TRUE;
}

static gboolean
pass_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const IMode *m = rpc_ag_ctx_function(ctx)->user_data;
    g_string_append(m->log, ";bw");
    for (guint i = 0; i < n; i++) {
        log_grad(m->log, g[i]);
        g_ptr_array_add(out, g[i] ? rpc_value_new_tensor(rpc_tensor_ref(g[i])) : NULL);
    }
    return TRUE;
}

static void
test_inputs_as_outputs(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    IMode m = {g_string_new(NULL)};
    RpcAgFunction fn = {"I", pass_forward, pass_backward, &m, FALSE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 1));
    g_autoptr(RpcTensor) c = tensor(1, SHAPE(2), VALS(0, 0));
    RpcValue *in[] = {tv(x), tv(c)};
    GPtrArray *out = apply(fx, &fn, in, 2, &error);
    g_autoptr(RpcTensor) a = out_tensor(out, 0);
    g_autoptr(RpcTensor) b = out_tensor(out, 1);
    g_ptr_array_unref(out);
    /* Views: new tensors on the same storage and version, with this node
     * as grad_fn — even for the input that needed no grad. */
    g_assert_false(a == x);
    g_assert_true(rpc_tensor_data(a) == rpc_tensor_data(x));
    g_assert_false(b == c);
    g_assert_true(rpc_ag_requires_grad(b));
    g_assert_true(rpc_ag_grad_fn(a) == rpc_ag_grad_fn(b));
    g_assert_cmpuint(rpc_ag_output_nr(b), ==, 1);
    g_assert_true(rpc_ag_is_leaf(x));
    g_assert_true(backward_sum(fx, a, FALSE, &error));
    g_assert_cmpstr(m.log->str, ==,
                    "nig T F;bw tensor([1., 1.], dtype=torch.float64) tensor([0., 0.], "
                    "dtype=torch.float64)");
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(1, 1));
    /* The shared version counter: an in-place change of the view shows on x. */
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    g_assert_true(rpc_ag_add_scalar_(fx->th, b, 1, &error));
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);
    g_assert_cmpuint(rpc_tensor_version(c), ==, 1);
    check_values(c, 1, SHAPE(2), VALS(1, 1));

    /* Under no_grad: detached views and the non-tensor as is. */
    g_string_truncate(m.log, 0);
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    RpcValue *in2[] = {tv(x), rpc_value_new_int(3), tv(c)};
    out = apply(fx, &fn, in2, 3, &error);
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);
    g_assert_cmpstr(m.log->str, ==, "nig T F F");
    RpcTensor *ax = rpc_value_get_tensor(g_ptr_array_index(out, 0));
    g_assert_false(ax == x);
    g_assert_false(rpc_ag_requires_grad(ax));
    g_assert_cmpint(rpc_value_get_int(g_ptr_array_index(out, 1)), ==, 3);
    RpcTensor *cx = rpc_value_get_tensor(g_ptr_array_index(out, 2));
    g_assert_false(cx == c);
    g_assert_false(rpc_ag_requires_grad(cx));
    g_ptr_array_unref(out);

    /* No tensor requires grad: no node. */
    RpcValue *in3[] = {tv(c)};
    out = apply(fx, &fn, in3, 1, &error);
    g_assert_null(rpc_ag_grad_fn(rpc_value_get_tensor(g_ptr_array_index(out, 0))));
    g_ptr_array_unref(out);
    g_string_free(m.log, TRUE);
}

/* Outputs that require grad but are not differentiable get detached. */
static gboolean
leaky_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    RpcTensor *t = rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), 1);
    rpc_ag_set_requires_grad(t, TRUE, NULL); /* a fresh leaf made inside forward */
    RpcValue *v = rpc_value_new_tensor(t);
    rpc_ag_ctx_mark_non_differentiable(ctx, &v, 1);
    g_ptr_array_add(out, v);
    g_ptr_array_add(out, rpc_value_ref(in[0]));
    rpc_ag_ctx_mark_non_differentiable(ctx, (RpcValue *[]){v, in[0]}, 2);
    return TRUE;
}

static void
test_non_differentiable_detach(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    RpcAgFunction fn = {"L", leaky_forward, times2_backward, NULL, FALSE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 1));
    RpcValue *in[] = {tv(x)};
    GPtrArray *out = apply(fx, &fn, in, 1, &error);
    g_assert_no_error(error);
    RpcTensor *t = rpc_value_get_tensor(g_ptr_array_index(out, 0));
    RpcTensor *xi = rpc_value_get_tensor(g_ptr_array_index(out, 1));
    g_assert_false(rpc_ag_requires_grad(t)); /* detach_() */
    g_assert_false(xi == x);                 /* detach() of the input */
    g_assert_false(rpc_ag_requires_grad(xi));
    g_assert_true(rpc_ag_requires_grad(x));
    g_ptr_array_unref(out);
}

/* ---- once_differentiable — case 157 ------------------------------------------------ */

static gboolean
o_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    g_assert_false(rpc_ag_thread_is_grad_enabled(rpc_ag_ctx_thread(ctx))); /* no_grad */
    add_tensor(out, rpc_tensor_mul_scalar(g[0], 2));
    g_ptr_array_add(out, rpc_value_none()); /* a trailing None */
    return TRUE;
}

static void
test_once_differentiable(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    const RpcAgFunction o = {"O", double_forward, o_backward, NULL, TRUE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 1, 1));
    { /* Double backward: the gradient carries an Error node. */
        g_autoptr(RpcTensor) y = apply1(fx, &o, x);
        g_autoptr(RpcTensor) y2 = rpc_ag_pow(fx->th, y, 2, NULL);
        g_autoptr(RpcTensor) z = rpc_ag_sum(fx->th, y2, NULL);
        RpcTensor *g;
        g_assert_true(
            rpc_ag_autograd_grad(fx->th, &z, NULL, 1, &x, 1, TRUE, TRUE, FALSE, &g, &error));
        check_values(g, 1, SHAPE(3), VALS(8, 8, 8));
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(g)), ==, "torch::autograd::Error");
        g_assert_false(backward_sum(fx, g, FALSE, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "trying to differentiate twice a function that was marked with "
                    "@once_differentiable");
        rpc_tensor_unref(g);
        /* Through backward(create_graph) into .grad, likewise. */
        g_assert_true(rpc_ag_backward(fx->th, &z, NULL, 1, FALSE, TRUE, &error));
        RpcAgNode *copy = rpc_ag_grad_fn(rpc_ag_grad(x)); /* PyTorch: grad_fn=<CopyBackwards> */
        g_assert_cmpstr(rpc_ag_node_name(copy), ==, "CopyBackwards");
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_node_next(copy, 0, NULL)), ==,
                        "torch::autograd::Error");
        g_autoptr(RpcTensor) gx = rpc_tensor_ref(rpc_ag_grad(x));
        rpc_ag_set_grad(x, NULL, NULL); /* break the parameter <-> grad cycle */
        g_assert_false(backward_sum(fx, gx, FALSE, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "trying to differentiate twice a function that was marked with "
                    "@once_differentiable");
    }
    { /* create_graph, but the incoming gradient needs none: no wrapping. */
        g_autoptr(RpcTensor) y = apply1(fx, &o, x);
        g_autoptr(RpcTensor) z = rpc_ag_sum(fx->th, y, NULL);
        RpcTensor *g;
        g_assert_true(
            rpc_ag_autograd_grad(fx->th, &z, NULL, 1, &x, 1, FALSE, TRUE, FALSE, &g, &error));
        check_values(g, 1, SHAPE(3), VALS(2, 2, 2));
        g_assert_false(rpc_ag_requires_grad(g));
        rpc_tensor_unref(g);
    }
    { /* Plain first-order backward is unaffected. */
        g_autoptr(RpcTensor) y = apply1(fx, &o, x);
        g_assert_true(backward_sum(fx, y, FALSE, &error));
        check_values(rpc_ag_grad(x), 1, SHAPE(3), VALS(2, 2, 2));
        rpc_ag_set_grad(x, NULL, NULL);
    }
}

/* A Function whose backward is itself differentiable (built from ops on
 * the ctx's thread): second derivatives flow through it. */
static gboolean
cube_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    rpc_ag_ctx_save_for_backward(ctx, &in[0], 1);
    add_tensor(out, rpc_tensor_pow_scalar(rpc_value_get_tensor(in[0]), 3));
    return TRUE;
}

static gboolean
cube_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    RpcAgThread *th = rpc_ag_ctx_thread(ctx);
    GPtrArray *saved = rpc_ag_ctx_saved_tensors(ctx, error);
    g_autoptr(RpcTensor) sq = rpc_ag_pow(th, g_ptr_array_index(saved, 0), 2, error);
    g_autoptr(RpcTensor) d = rpc_ag_mul_scalar(th, sq, 3, error);
    add_tensor(out, rpc_ag_mul(th, g[0], d, error));
    g_ptr_array_unref(saved);
    return TRUE;
}

static void
test_double_backward(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    const RpcAgFunction cube = {"Cube", cube_forward, cube_backward, NULL, FALSE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(0.5, 2));
    g_autoptr(RpcTensor) y = apply1(fx, &cube, x);
    g_autoptr(RpcTensor) s = rpc_ag_sum(fx->th, y, NULL);
    RpcTensor *g;
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &x, 1, TRUE, TRUE, FALSE, &g, &error));
    check_values(g, 1, SHAPE(2), VALS(0.75, 12));
    g_assert_true(backward_sum(fx, g, FALSE, &error));
    check_values(rpc_ag_grad(x), 1, SHAPE(2), VALS(3, 12)); /* 6x */
    rpc_tensor_unref(g);
}

/* ---- gradient validation of a Function's results --------------------------------- */

typedef struct {
    guint ndim;
    gint64 shape[2];
    RpcDType dtype;
} Shape;

static gboolean
shaped_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    const Shape *s = rpc_ag_ctx_function(ctx)->user_data;
    add_tensor(out, rpc_tensor_new_ones(s->dtype, s->ndim, s->shape));
    return TRUE;
}

static void
test_gradient_validation(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 1, 1));
    struct {
        Shape shape;
        const char *message;
    } cases[] = {
        {{1, {2}, F64},
         "Function W6Backward returned an invalid gradient at index 0 - got [2] but expected "
         "shape compatible with [3]"},
        {{1, {1}, F64},
         "Function W6Backward returned an invalid gradient at index 0 - got [1] but expected "
         "shape compatible with [3]"},
        {{2, {3, 1}, F64},
         "Function W6Backward returned an invalid gradient at index 0 - got [3, 1] but expected "
         "shape compatible with [3]"},
        {{1, {3}, F32}, NULL},    /* cast to float64 */
        {{2, {2, 3}, F64}, NULL}, /* summed to [3] */
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        RpcAgFunction fn = {"W6", double_forward, shaped_backward, &cases[i].shape, FALSE};
        g_autoptr(RpcTensor) y = apply1(fx, &fn, x);
        rpc_ag_set_grad(x, NULL, NULL);
        if (cases[i].message != NULL) {
            g_assert_false(backward_sum(fx, y, FALSE, &error));
            check_error(&error, RPC_ERROR_RUNTIME, cases[i].message);
        } else {
            g_assert_true(backward_sum(fx, y, FALSE, &error));
            double v = cases[i].shape.ndim == 2 ? 2 : 1;
            check_values(rpc_ag_grad(x), 1, SHAPE(3), VALS(v, v, v));
            g_assert_cmpint(rpc_tensor_dtype(rpc_ag_grad(x)), ==, F64);
        }
    }
}

/* ---- ctx accessors ---------------------------------------------------------------- */

static int destroyed;

static void
count_destroy(gpointer p)
{
    destroyed++;
    g_free(p);
}

static gboolean
data_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_assert_true(rpc_ag_ctx_thread(ctx) != NULL);
    rpc_ag_ctx_set_user_data(ctx, g_strdup("first"), count_destroy);
    rpc_ag_ctx_set_user_data(ctx, g_strdup("kept"), count_destroy); /* frees "first" */
    add_tensor(out, rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), 1));
    g_ptr_array_add(out, NULL); /* NULL is None */
    return TRUE;
}

static gboolean
data_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    g_assert_cmpstr(rpc_ag_ctx_get_user_data(ctx), ==, "kept");
    g_assert_null(g[1]); /* a None output gets None, even materialized */
    add_tensor(out, rpc_tensor_ref(g[0]));
    return TRUE;
}

static void
test_ctx_data(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    const RpcAgFunction fn = {"Data", data_forward, data_backward, NULL, FALSE};
    destroyed = 0;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(1), VALS(1));
    RpcValue *in[] = {tv(x)};
    GPtrArray *out = apply(fx, &fn, in, 1, &error);
    g_assert_true(rpc_value_is_none(g_ptr_array_index(out, 1)));
    RpcTensor *y = out_tensor(out, 0);
    g_ptr_array_unref(out);
    RpcAgCtx *ctx = rpc_ag_node_ctx(rpc_ag_grad_fn(y));
    g_assert_true(rpc_ag_ctx_function(ctx) == &fn);
    g_assert_null(rpc_ag_ctx_thread(ctx)); /* outside the callbacks */
    g_assert_cmpint(destroyed, ==, 1);
    g_assert_true(backward_sum(fx, y, FALSE, &error));
    rpc_tensor_unref(y);
    g_assert_cmpint(destroyed, ==, 2);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    TEST("/autograd-function/backward-twice", test_backward_twice);
    TEST("/autograd-function/wrong-grad-count", test_wrong_grad_count);
    TEST("/autograd-function/backward-return-types", test_backward_return_types);
    TEST("/autograd-function/missing-callbacks", test_missing_callbacks);
    TEST("/autograd-function/callback-errors", test_callback_errors);
    TEST("/autograd-function/save-for-backward", test_save_for_backward);
    TEST("/autograd-function/mark-dirty", test_mark_dirty);
    TEST("/autograd-function/leaf-moved-into-interior", test_leaf_moved_into_interior);
    TEST("/autograd-function/mark-non-differentiable", test_non_differentiable);
    TEST("/autograd-function/non-differentiable-detach", test_non_differentiable_detach);
    TEST("/autograd-function/materialize-grads", test_materialize_grads);
    TEST("/autograd-function/inputs-as-outputs", test_inputs_as_outputs);
    TEST("/autograd-function/once-differentiable", test_once_differentiable);
    TEST("/autograd-function/double-backward", test_double_backward);
    TEST("/autograd-function/gradient-validation", test_gradient_validation);
    TEST("/autograd-function/ctx-data", test_ctx_data);
    return g_test_run();
}
