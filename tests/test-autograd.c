/* test-autograd.c — unit tests for core/autograd.c and core/autograd-ops.c.
 *
 * Every test runs in a fixture that owns an RpcAgState and checks, at
 * teardown, that no node outlives the tensors of the test (the live-node
 * counter), so every test is also a leak test of the graph.  Gradients are
 * float64 and compared exactly against hand-computed values (cross-checked
 * with PyTorch 1.13); every op also passes a central-difference gradient
 * check, and most a second-order one through create_graph.  Error texts
 * are PyTorch's, exactly.
 */
#include <math.h>
#include <string.h>

#include "core/autograd-private.h"
#include "core/autograd.h"
#include "core/error.h"
#include "core/tensor.h"

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
    /* Every graph of the test went with its last tensor. */
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 0);
    rpc_ag_thread_free(fx->th);
    rpc_ag_state_unref(fx->state);
}

#define TEST(path, fn) g_test_add(path, Fx, NULL, fx_setup, fn, fx_teardown)

static RpcTensor *
tensor(RpcDType dtype, guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = rpc_tensor_new_from_doubles(dtype, ndim, shape, values);
    g_assert_nonnull(t);
    return t;
}

/* A float64 leaf that requires grad. */
static RpcTensor *
leaf(guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = tensor(F64, ndim, shape, values);
    g_assert_true(rpc_ag_set_requires_grad(t, TRUE, NULL));
    return t;
}

static RpcTensor *
scalar_leaf(double v)
{
    return leaf(0, NULL, VALS(v));
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
check_grad(const RpcTensor *t, guint ndim, const gint64 *shape, const double *want)
{
    RpcTensor *g = rpc_ag_grad(t);
    g_assert_nonnull(g);
    g_assert_cmpint(rpc_tensor_dtype(g), ==, rpc_tensor_dtype(t));
    check_values(g, ndim, shape, want);
}

static void
check_error(GError **error, RpcErrorKind kind, const char *message)
{
    g_assert_error(*error, RPC_ERROR, (gint)kind);
    g_assert_cmpstr((*error)->message, ==, message);
    g_clear_error(error);
}

/* backward(root) with no gradient, retain_graph as given; must succeed. */
static void
backward_ok(Fx *fx, RpcTensor *root, gboolean retain)
{
    GError *error = NULL;
    g_assert_true(rpc_ag_backward(fx->th, &root, NULL, 1, retain, FALSE, &error));
    g_assert_no_error(error);
}

static RpcTensor *
sum_of(Fx *fx, RpcTensor *t)
{
    RpcTensor *s = rpc_ag_sum(fx->th, t, NULL);
    g_assert_nonnull(s);
    return s;
}

/* Name of next edge i of node (NULL for an empty edge). */
static const char *
next_name(const RpcAgNode *node, guint i)
{
    RpcAgNode *n = rpc_ag_node_next(node, i, NULL);
    return n != NULL ? rpc_ag_node_name(n) : NULL;
}

/* ---- state, grad mode, metadata -------------------------------------------- */

static void
test_grad_mode(Fx *fx, gconstpointer data)
{
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_assert_true(rpc_ag_thread_is_grad_enabled(fx->th));
    g_assert_true(rpc_ag_thread_set_grad_enabled(fx->th, FALSE));
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, NULL);
    g_assert_false(rpc_ag_requires_grad(y));
    g_assert_null(rpc_ag_grad_fn(y));
    g_assert_false(rpc_ag_thread_set_grad_enabled(fx->th, TRUE));
    g_autoptr(RpcTensor) z = rpc_ag_mul_scalar(fx->th, x, 2, NULL);
    g_assert_true(rpc_ag_requires_grad(z));
    g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(z)), ==, "MulBackward0");
    g_assert_true(rpc_ag_thread_state(fx->th) == fx->state);
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 2); /* Mul + AccumulateGrad */

    /* Two thread contexts of one state: grad mode is per context, the
     * sequence counter per state. */
    RpcAgThread *other = rpc_ag_thread_new(fx->state);
    rpc_ag_thread_set_grad_enabled(other, FALSE);
    g_assert_true(rpc_ag_thread_is_grad_enabled(fx->th));
    g_autoptr(RpcTensor) w = rpc_ag_mul_scalar(fx->th, x, 3, NULL);
    g_assert_cmpuint(rpc_ag_node_sequence_nr(rpc_ag_grad_fn(w)), >,
                     rpc_ag_node_sequence_nr(rpc_ag_grad_fn(z)));
    rpc_ag_thread_free(other);
    rpc_ag_thread_free(NULL);
}

static void
test_requires_grad(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    g_assert_false(rpc_ag_requires_grad(c));
    g_assert_true(rpc_ag_is_leaf(c));
    g_assert_true(rpc_ag_set_requires_grad(c, FALSE, &error)); /* no metadata needed */
    g_assert_null(rpc_ag_grad(c));
    g_assert_cmpuint(rpc_ag_output_nr(c), ==, 0);

    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_assert_true(rpc_ag_requires_grad(x));
    g_assert_true(rpc_ag_is_leaf(x));
    g_autoptr(RpcTensor) y = rpc_ag_add(fx->th, x, c, &error);
    g_assert_false(rpc_ag_is_leaf(y));
    g_assert_true(rpc_ag_requires_grad(y));
    g_assert_false(rpc_ag_set_requires_grad(y, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "you can only change requires_grad flags of leaf variables. If you want to use a "
                "computed variable in a subgraph that doesn't require differentiation use "
                "var_no_grad = var.detach().");
    g_assert_false(rpc_ag_set_requires_grad(y, TRUE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "you can only change requires_grad flags of leaf variables.");

    /* Only leaves that require grad take part. */
    g_autoptr(RpcTensor) z = rpc_ag_add(fx->th, c, c, &error);
    g_assert_false(rpc_ag_requires_grad(z));
    g_assert_null(rpc_ag_grad_fn(z));

    /* A leaf switched off after the graph was built gets no .grad. */
    g_autoptr(RpcTensor) s = sum_of(fx, y);
    g_assert_true(rpc_ag_set_requires_grad(x, FALSE, &error));
    backward_ok(fx, s, FALSE);
    g_assert_null(rpc_ag_grad(x));

    /* detach(): same storage and version, no history. */
    g_autoptr(RpcTensor) d = rpc_ag_detach(y);
    g_assert_false(rpc_ag_requires_grad(d));
    g_assert_true(rpc_tensor_data(d) == rpc_tensor_data(y));
    g_assert_cmpuint(rpc_tensor_version(d), ==, rpc_tensor_version(y));
}

static void
test_set_grad(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) bad_size = tensor(F64, 1, SHAPE(3), VALS(1, 2, 3));
    g_autoptr(RpcTensor) bad_type = tensor(F32, 1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) g = tensor(F64, 1, SHAPE(2), VALS(10, 20));
    g_assert_false(rpc_ag_set_grad(x, bad_size, &error));
    check_error(&error, RPC_ERROR_RUNTIME, "assigned grad has data of a different size");
    g_assert_false(rpc_ag_set_grad(x, bad_type, &error));
    check_error(&error, RPC_ERROR_RUNTIME, "assigned grad has data of a different type");
    g_assert_true(rpc_ag_set_grad(x, g, &error));
    g_assert_true(rpc_ag_grad(x) == g);

    /* backward adds into the assigned tensor in place, as `grad += new`. */
    g_autoptr(RpcTensor) s = sum_of(fx, x);
    backward_ok(fx, s, TRUE);
    g_assert_true(rpc_ag_grad(x) == g);
    check_values(g, 1, SHAPE(2), VALS(11, 21));
    g_assert_cmpuint(rpc_tensor_version(g), ==, 1);

    g_assert_true(rpc_ag_set_grad(x, NULL, &error)); /* zero_grad(set_to_none) */
    g_assert_null(rpc_ag_grad(x));
    g_autoptr(RpcTensor) c = tensor(F64, 0, NULL, VALS(1));
    g_assert_true(rpc_ag_set_grad(c, NULL, &error));
}

static void
test_repr(Fx *fx, gconstpointer data)
{
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) c = tensor(F32, 1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, NULL);
    g_autofree char *rx = rpc_ag_tensor_repr(x);
    g_autofree char *ry = rpc_ag_tensor_repr(y);
    g_autofree char *rc = rpc_ag_tensor_repr(c);
    g_assert_cmpstr(rx, ==, "tensor([1., 2.], dtype=torch.float64, requires_grad=True)");
    g_assert_cmpstr(ry, ==, "tensor([2., 4.], dtype=torch.float64, grad_fn=<MulBackward0>)");
    g_assert_cmpstr(rc, ==, "tensor([1., 2.])");
}

/* ---- the tensor layer's additions for autograd ------------------------------ */

static void
test_tensor_additions(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) a = tensor(F64, 2, SHAPE(2, 2), VALS(-1, 0, 2, 4));
    g_autoptr(RpcTensor) relu = rpc_tensor_relu(a);
    check_values(relu, 2, SHAPE(2, 2), VALS(0, 0, 2, 4));
    g_autoptr(RpcTensor) nan_in = tensor(F64, 1, SHAPE(1), VALS(NAN));
    g_autoptr(RpcTensor) nan_out = rpc_tensor_relu(nan_in);
    g_assert_true(isnan(rpc_tensor_get(nan_out, 0)));
    g_autoptr(RpcTensor) sig = rpc_tensor_sigmoid(a);
    g_assert_cmpfloat(rpc_tensor_get(sig, 1), ==, 0.5);
    g_autoptr(RpcTensor) p = rpc_tensor_pow_scalar(a, 2);
    check_values(p, 2, SHAPE(2, 2), VALS(1, 0, 4, 16));
    g_autoptr(RpcTensor) d = rpc_tensor_div_scalar(a, 4);
    check_values(d, 2, SHAPE(2, 2), VALS(-0.25, 0, 0.5, 1));
    g_autoptr(RpcTensor) sn = rpc_tensor_sin(a);
    g_autoptr(RpcTensor) cs = rpc_tensor_cos(a);
    g_assert_cmpfloat(rpc_tensor_get(sn, 2), ==, sin(2.0));
    g_assert_cmpfloat(rpc_tensor_get(cs, 2), ==, cos(2.0));
    g_autoptr(RpcTensor) mean = rpc_tensor_mean(a);
    check_values(mean, 0, NULL, VALS(1.25));
    g_autoptr(RpcTensor) empty = rpc_tensor_new_zeros(F64, 1, SHAPE(0));
    g_autoptr(RpcTensor) mean0 = rpc_tensor_mean(empty);
    g_assert_true(isnan(rpc_tensor_get(mean0, 0)));

    g_autoptr(RpcTensor) row = tensor(F32, 2, SHAPE(1, 2), VALS(1, 2));
    g_autoptr(RpcTensor) ex = rpc_tensor_expand(row, 3, SHAPE(2, 3, 2), &error);
    check_values(ex, 3, SHAPE(2, 3, 2), VALS(1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2));
    g_assert_null(rpc_tensor_expand(row, 2, SHAPE(2, 3), &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "The expanded size of the tensor (3) must match the existing size (2) at "
                "non-singleton dimension 1.  Target sizes: [2, 3].  Tensor sizes: [1, 2]");
    g_assert_null(rpc_tensor_expand(a, 1, SHAPE(2), &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "expand(torch.DoubleTensor{[2, 2]}, size=[2]): the number of sizes provided (1) "
                "must be greater or equal to the number of dimensions in the tensor (2)");
    g_assert_null(rpc_tensor_expand(row, 1, SHAPE(2), &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "expand(torch.FloatTensor{[1, 2]}, size=[2]): the number of sizes provided (1) "
                "must be greater or equal to the number of dimensions in the tensor (2)");

    g_autoptr(RpcTensor) s1 = rpc_tensor_select(a, -1, &error);
    check_values(s1, 1, SHAPE(2), VALS(2, 4));
    g_assert_null(rpc_tensor_select(a, 2, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "select(): index 2 out of range for tensor of size [2, 2] at dimension 0");
    g_assert_null(rpc_tensor_select(mean, 0, &error));
    check_error(&error, RPC_ERROR_RUNTIME, "select() cannot be applied to a 0-dim tensor.");

    /* Aliases share storage and the version; they keep the storage, not
     * the base's metadata, alive. */
    RpcTensor *base = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    g_assert_nonnull(rpc_tensor_data_mut(base));
    RpcTensor *al = rpc_tensor_alias(base);
    RpcTensor *al2 = rpc_tensor_alias(al);
    g_assert_true(rpc_tensor_data(al2) == rpc_tensor_data(base));
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*");
    g_assert_null(rpc_tensor_data_mut(al)); /* shared storage */
    g_test_assert_expected_messages();
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*");
    g_assert_null(rpc_tensor_data_mut(base)); /* aliased */
    g_test_assert_expected_messages();
    rpc_tensor_mul_scalar_inplace(al2, 3);
    rpc_tensor_add_scalar_inplace(base, 1);
    g_assert_cmpuint(rpc_tensor_version(base), ==, 2);
    g_assert_cmpuint(rpc_tensor_version(al), ==, 2);
    rpc_tensor_unref(base);
    check_values(al, 1, SHAPE(2), VALS(4, 7));
    rpc_tensor_add_inplace(al, al2);
    check_values(al2, 1, SHAPE(2), VALS(8, 14));
    g_assert_cmpuint(rpc_tensor_version(al2), ==, 3);
    rpc_tensor_unref(al);
    rpc_tensor_unref(al2);
}

/* ---- node names and edges ---------------------------------------------------- */

static void
test_node_names(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) w = leaf(2, SHAPE(2, 2), VALS(1, 2, 3, 4));
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(2), VALS(3, 4));
    const char *acc = RPC_AG_ACCUMULATE_GRAD_NAME;
    struct {
        RpcTensor *t;
        const char *name;
        guint n_next;
        const char *next0, *next1;
    } cases[] = {
        {rpc_ag_mul_scalar(fx->th, x, 2, &error), "MulBackward0", 2, acc, NULL},
        {rpc_ag_add_scalar(fx->th, x, 2, &error), "AddBackward0", 2, acc, NULL},
        {rpc_ag_div_scalar(fx->th, x, 2, &error), "DivBackward0", 2, acc, NULL},
        {rpc_ag_sub(fx->th, x, c, &error), "SubBackward0", 2, acc, NULL},
        {rpc_ag_mul(fx->th, c, x, &error), "MulBackward0", 2, NULL, acc},
        {rpc_ag_div(fx->th, x, x, &error), "DivBackward0", 2, acc, acc},
        {rpc_ag_add(fx->th, x, x, &error), "AddBackward0", 2, acc, acc},
        {rpc_ag_neg(fx->th, x, &error), "NegBackward0", 1, acc, NULL},
        {rpc_ag_pow(fx->th, x, 2, &error), "PowBackward0", 1, acc, NULL},
        {rpc_ag_mean(fx->th, x, &error), "MeanBackward0", 1, acc, NULL},
        {rpc_ag_sum(fx->th, x, &error), "SumBackward0", 1, acc, NULL},
        {rpc_ag_matmul(fx->th, w, w, &error), "MmBackward0", 2, acc, acc},
        {rpc_ag_matmul(fx->th, x, x, &error), "DotBackward0", 2, acc, acc},
        {rpc_ag_matmul(fx->th, w, x, &error), "MvBackward0", 2, acc, acc},
        {rpc_ag_matmul(fx->th, x, w, &error), "SqueezeBackward3", 1, "MmBackward0", NULL},
        {rpc_ag_view(fx->th, x, 2, SHAPE(2, 1), &error), "ViewBackward0", 1, acc, NULL},
        {rpc_ag_stack(fx->th, (RpcTensor *[]){x, c}, 2, &error), "StackBackward0", 2, acc, NULL},
        {rpc_ag_relu(fx->th, x, &error), "ReluBackward0", 1, acc, NULL},
        {rpc_ag_sigmoid(fx->th, x, &error), "SigmoidBackward0", 1, acc, NULL},
        {rpc_ag_exp(fx->th, x, &error), "ExpBackward0", 1, acc, NULL},
        {rpc_ag_cos(fx->th, x, &error), "CosBackward0", 1, acc, NULL},
        {rpc_ag_sin(fx->th, x, &error), "SinBackward0", 1, acc, NULL},
        {rpc_ag_t(fx->th, w, &error), "TBackward0", 1, acc, NULL},
        {rpc_ag_expand(fx->th, x, 2, SHAPE(3, 2), &error), "ExpandBackward0", 1, acc, NULL},
        {rpc_ag_sum_to_size(fx->th, w, 1, SHAPE(2), &error), "SumBackward1", 1, acc, NULL},
        {rpc_ag_select(fx->th, w, 0, &error), "SelectBackward0", 1, acc, NULL},
        {rpc_ag_cast(fx->th, x, F32, &error), "ToCopyBackward0", 1, acc, NULL},
    };
    g_assert_no_error(error);
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        RpcAgNode *fn = rpc_ag_grad_fn(cases[i].t);
        g_assert_nonnull(fn);
        g_assert_cmpstr(rpc_ag_node_name(fn), ==, cases[i].name);
        g_assert_cmpuint(rpc_ag_node_n_next(fn), ==, cases[i].n_next);
        g_assert_cmpuint(rpc_ag_node_n_inputs(fn), ==, 1);
        g_assert_cmpstr(next_name(fn, 0), ==, cases[i].next0);
        if (cases[i].n_next > 1)
            g_assert_cmpstr(next_name(fn, 1), ==, cases[i].next1);
        g_assert_cmpuint(rpc_ag_output_nr(cases[i].t), ==, 0);
        rpc_tensor_unref(cases[i].t);
    }
    /* 1-d @ 2-d is PyTorch's unsqueeze -> mm -> squeeze. */
    g_autoptr(RpcTensor) vm = rpc_ag_matmul(fx->th, x, w, &error);
    RpcAgNode *mm = rpc_ag_node_next(rpc_ag_grad_fn(vm), 0, NULL);
    g_assert_cmpstr(next_name(mm, 0), ==, "UnsqueezeBackward0");
    g_assert_cmpstr(next_name(mm, 1), ==, acc);

    /* One AccumulateGrad per leaf while it lives, highest priority. */
    g_autoptr(RpcTensor) a = rpc_ag_neg(fx->th, x, &error);
    g_autoptr(RpcTensor) b = rpc_ag_neg(fx->th, x, &error);
    RpcAgNode *acc_a = rpc_ag_node_next(rpc_ag_grad_fn(a), 0, NULL);
    g_assert_true(acc_a == rpc_ag_node_next(rpc_ag_grad_fn(b), 0, NULL));
    g_assert_true(rpc_ag_node_is_accumulate_grad(acc_a));
    g_assert_false(rpc_ag_node_is_accumulate_grad(rpc_ag_grad_fn(a)));
    g_assert_true(rpc_ag_node_variable(acc_a) == x);
    g_assert_null(rpc_ag_node_variable(rpc_ag_grad_fn(a)));
    g_assert_cmpuint(rpc_ag_node_sequence_nr(acc_a), ==, G_MAXUINT64);
    g_assert_cmpuint(rpc_ag_node_sequence_nr(rpc_ag_grad_fn(b)), ==,
                     rpc_ag_node_sequence_nr(rpc_ag_grad_fn(a)) + 1);
}

/* ---- exact gradients ---------------------------------------------------------- */

static void
test_grad_elementwise(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    { /* add with broadcasting: (2,3) + (3) */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(3), VALS(1, 1, 1));
        g_autoptr(RpcTensor) y = rpc_ag_add(fx->th, a, b, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 3), VALS(1, 1, 1, 1, 1, 1));
        check_grad(b, 1, SHAPE(3), VALS(2, 2, 2));
    }
    { /* sub with (2,1) broadcast */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) b = leaf(2, SHAPE(2, 1), VALS(1, 2));
        g_autoptr(RpcTensor) y = rpc_ag_sub(fx->th, a, b, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 3), VALS(1, 1, 1, 1, 1, 1));
        check_grad(b, 2, SHAPE(2, 1), VALS(-3, -3));
    }
    { /* mul: grads are the other operand */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(3), VALS(1, 2, 3));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(3), VALS(4, 5, 6));
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, a, b, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(3), VALS(4, 5, 6));
        check_grad(b, 1, SHAPE(3), VALS(1, 2, 3));
    }
    { /* x * x: both edges into one accumulator, summed */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(2), VALS(3, -2));
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, a, a, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(2), VALS(6, -4));
    }
    { /* div */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(3), VALS(1, 2, 3));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(3), VALS(2, 4, 8));
        g_autoptr(RpcTensor) y = rpc_ag_div(fx->th, a, b, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(3), VALS(0.5, 0.25, 0.125));
        check_grad(b, 1, SHAPE(3), VALS(-0.25, -0.125, -0.046875));
    }
    { /* scalar ops and neg */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(2), VALS(1, 2));
        g_autoptr(RpcTensor) y1 = rpc_ag_add_scalar(fx->th, a, 5, &error);
        g_autoptr(RpcTensor) y2 = rpc_ag_mul_scalar(fx->th, y1, 3, &error);
        g_autoptr(RpcTensor) y3 = rpc_ag_div_scalar(fx->th, y2, 4, &error);
        g_autoptr(RpcTensor) y4 = rpc_ag_neg(fx->th, y3, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y4);
        check_values(y4, 1, SHAPE(2), VALS(-4.5, -5.25));
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(2), VALS(-0.75, -0.75));
    }
    { /* pow: 3x^2; p = 0 gives zeros; p = 0.5 and -1 */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(3), VALS(1, 2, 3));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(2), VALS(0, 2));
        g_autoptr(RpcTensor) c = leaf(1, SHAPE(2), VALS(4, 2));
        g_autoptr(RpcTensor) ya = rpc_ag_pow(fx->th, a, 3, &error);
        g_autoptr(RpcTensor) yb = rpc_ag_pow(fx->th, b, 0, &error);
        g_autoptr(RpcTensor) yc = rpc_ag_pow(fx->th, c, 0.5, &error);
        g_autoptr(RpcTensor) yd = rpc_ag_pow(fx->th, c, -1, &error);
        RpcTensor *roots[] = {sum_of(fx, ya), sum_of(fx, yb), sum_of(fx, yc), sum_of(fx, yd)};
        g_assert_true(rpc_ag_backward(fx->th, roots, NULL, 4, FALSE, FALSE, &error));
        check_grad(a, 1, SHAPE(3), VALS(3, 12, 27));
        check_grad(b, 1, SHAPE(2), VALS(0, 0));
        check_grad(c, 1, SHAPE(2), VALS(0.25 - 1.0 / 16, sqrt(2) / 4 - 0.25));
        for (guint i = 0; i < 4; i++)
            rpc_tensor_unref(roots[i]);
    }
    { /* exp, sin, cos: exact library values */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(2), VALS(0, 1));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(2), VALS(0.3, 1.7));
        g_autoptr(RpcTensor) c = leaf(1, SHAPE(2), VALS(0.3, 1.7));
        g_autoptr(RpcTensor) ya = rpc_ag_exp(fx->th, a, &error);
        g_autoptr(RpcTensor) yb = rpc_ag_cos(fx->th, b, &error);
        g_autoptr(RpcTensor) yc = rpc_ag_sin(fx->th, c, &error);
        RpcTensor *roots[] = {sum_of(fx, ya), sum_of(fx, yb), sum_of(fx, yc)};
        g_assert_true(rpc_ag_backward(fx->th, roots, NULL, 3, FALSE, FALSE, &error));
        check_grad(a, 1, SHAPE(2), VALS(1, exp(1.0)));
        check_grad(b, 1, SHAPE(2), VALS(-0.29552020666133955, -0.9916648104524686));
        check_grad(c, 1, SHAPE(2), VALS(cos(0.3), cos(1.7)));
        for (guint i = 0; i < 3; i++)
            rpc_tensor_unref(roots[i]);
    }
    { /* relu at -1, 0, 2; sigmoid y(1-y) */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(3), VALS(-1, 0, 2));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(3), VALS(0, 1, -2));
        g_autoptr(RpcTensor) ya = rpc_ag_relu(fx->th, a, &error);
        g_autoptr(RpcTensor) yb = rpc_ag_sigmoid(fx->th, b, &error);
        RpcTensor *roots[] = {sum_of(fx, ya), sum_of(fx, yb)};
        g_assert_true(rpc_ag_backward(fx->th, roots, NULL, 2, FALSE, FALSE, &error));
        check_values(ya, 1, SHAPE(3), VALS(0, 0, 2));
        check_grad(a, 1, SHAPE(3), VALS(0, 0, 1));
        check_grad(b, 1, SHAPE(3), VALS(0.25, 0.19661193324148185, 0.1049935854035065));
        for (guint i = 0; i < 2; i++)
            rpc_tensor_unref(roots[i]);
    }
}

static void
test_grad_reductions_and_shapes(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    { /* sum and mean */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) b = leaf(2, SHAPE(2, 2), VALS(1, 2, 3, 4));
        g_autoptr(RpcTensor) ma = rpc_ag_mean(fx->th, a, &error);
        g_autoptr(RpcTensor) mb = rpc_ag_mean(fx->th, b, &error);
        check_values(ma, 0, NULL, VALS(3.5));
        RpcTensor *roots[] = {ma, mb};
        g_assert_true(rpc_ag_backward(fx->th, roots, NULL, 2, FALSE, FALSE, &error));
        const double sixth = 1.0 / 6;
        check_grad(a, 2, SHAPE(2, 3), VALS(sixth, sixth, sixth, sixth, sixth, sixth));
        check_grad(b, 2, SHAPE(2, 2), VALS(0.25, 0.25, 0.25, 0.25));
    }
    { /* stack weighted by W: grads are W's rows */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(2), VALS(1, 2));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(2), VALS(3, 4));
        g_autoptr(RpcTensor) w = tensor(F64, 2, SHAPE(2, 2), VALS(1, 2, 3, 4));
        g_autoptr(RpcTensor) st = rpc_ag_stack(fx->th, (RpcTensor *[]){a, b}, 2, &error);
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, st, w, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(2), VALS(1, 2));
        check_grad(b, 1, SHAPE(2), VALS(3, 4));
    }
    { /* view, t, expand, sum_to_size, select */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) w = tensor(F64, 2, SHAPE(3, 2), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) v = rpc_ag_view(fx->th, a, 2, SHAPE(3, -1), &error);
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, v, w, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));

        g_autoptr(RpcTensor) b = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) bt = rpc_ag_t(fx->th, b, &error);
        g_autoptr(RpcTensor) y2 = rpc_ag_mul(fx->th, bt, w, &error);
        g_autoptr(RpcTensor) s2 = sum_of(fx, y2);
        backward_ok(fx, s2, FALSE);
        check_grad(b, 2, SHAPE(2, 3), VALS(1, 3, 5, 2, 4, 6));

        g_autoptr(RpcTensor) c = leaf(1, SHAPE(2), VALS(1, 2));
        g_autoptr(RpcTensor) ce = rpc_ag_expand(fx->th, c, 2, SHAPE(3, 2), &error);
        g_autoptr(RpcTensor) cs = rpc_ag_sum_to_size(fx->th, ce, 2, SHAPE(1, 2), &error);
        g_autoptr(RpcTensor) y3 = rpc_ag_mul_scalar(fx->th, cs, 2, &error);
        g_autoptr(RpcTensor) s3 = sum_of(fx, y3);
        backward_ok(fx, s3, FALSE);
        check_grad(c, 1, SHAPE(2), VALS(6, 6));

        g_autoptr(RpcTensor) d = leaf(2, SHAPE(3, 2), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) r0 = rpc_ag_select(fx->th, d, -1, &error);
        g_autoptr(RpcTensor) r1 = rpc_ag_select(fx->th, d, 0, &error);
        g_autoptr(RpcTensor) y4 = rpc_ag_mul(fx->th, r0, r1, &error);
        g_autoptr(RpcTensor) s4 = sum_of(fx, y4);
        backward_ok(fx, s4, FALSE);
        check_grad(d, 2, SHAPE(3, 2), VALS(5, 6, 0, 0, 1, 2));
    }
    { /* cast float64 -> float32 and back: grads keep each leaf's dtype */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(2), VALS(1.5, 2));
        g_autoptr(RpcTensor) f = rpc_ag_cast(fx->th, a, F32, &error);
        g_assert_cmpint(rpc_tensor_dtype(f), ==, F32);
        g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, f, 0.5, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 1, SHAPE(2), VALS(0.5, 0.5));
    }
}

static void
test_grad_matmul(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    { /* (2,2) @ (2,2) */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 2), VALS(1, 2, 3, 4));
        g_autoptr(RpcTensor) b = leaf(2, SHAPE(2, 2), VALS(5, 6, 7, 8));
        g_autoptr(RpcTensor) y = rpc_ag_matmul(fx->th, a, b, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 2), VALS(11, 15, 11, 15));
        check_grad(b, 2, SHAPE(2, 2), VALS(4, 4, 6, 6));
    }
    { /* dot */
        g_autoptr(RpcTensor) a = leaf(1, SHAPE(3), VALS(1, 2, 3));
        g_autoptr(RpcTensor) b = leaf(1, SHAPE(3), VALS(4, 5, 6));
        g_autoptr(RpcTensor) y = rpc_ag_matmul(fx->th, a, b, &error);
        check_values(y, 0, NULL, VALS(32));
        backward_ok(fx, y, FALSE);
        check_grad(a, 1, SHAPE(3), VALS(4, 5, 6));
        check_grad(b, 1, SHAPE(3), VALS(1, 2, 3));
    }
    { /* mv */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 2), VALS(1, 2, 3, 4));
        g_autoptr(RpcTensor) v = leaf(1, SHAPE(2), VALS(5, 6));
        g_autoptr(RpcTensor) y = rpc_ag_matmul(fx->th, a, v, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 2), VALS(5, 6, 5, 6));
        check_grad(v, 1, SHAPE(2), VALS(4, 6));
    }
    { /* vector @ matrix */
        g_autoptr(RpcTensor) v = leaf(1, SHAPE(2), VALS(1, 2));
        g_autoptr(RpcTensor) b = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
        g_autoptr(RpcTensor) y = rpc_ag_matmul(fx->th, v, b, &error);
        check_values(y, 1, SHAPE(3), VALS(9, 12, 15));
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(v, 1, SHAPE(2), VALS(6, 15));
        check_grad(b, 2, SHAPE(2, 3), VALS(1, 1, 1, 2, 2, 2));
    }
    { /* only one side requires grad: the other is not saved or computed */
        g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 2), VALS(1, 2, 3, 4));
        g_autoptr(RpcTensor) b = tensor(F64, 2, SHAPE(2, 2), VALS(5, 6, 7, 8));
        g_autoptr(RpcTensor) y = rpc_ag_matmul(fx->th, b, a, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(a, 2, SHAPE(2, 2), VALS(12, 12, 14, 14));
    }
    /* Shape errors come from the tensor layer, and leave no node behind. */
    g_autoptr(RpcTensor) a = leaf(2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
    g_autoptr(RpcTensor) v = leaf(1, SHAPE(2), VALS(1, 2));
    g_assert_null(rpc_ag_matmul(fx->th, a, a, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)");
    g_autoptr(RpcTensor) big = leaf(3, SHAPE(1, 1, 2), VALS(1, 2));
    g_assert_null(rpc_ag_matmul(fx->th, big, v, &error));
    check_error(&error, RPC_ERROR_RUNTIME, "matmul: only 1-d and 2-d tensors are supported");
    g_autoptr(RpcTensor) w = leaf(2, SHAPE(3, 2), VALS(1, 2, 3, 4, 5, 6));
    g_assert_null(rpc_ag_matmul(fx->th, v, w, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "mat1 and mat2 shapes cannot be multiplied (1x2 and 3x2)");
    g_assert_null(rpc_ag_add(fx->th, a, v, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "The size of tensor a (3) must match the size of tensor b (2) at non-singleton "
                "dimension 1");
}

/* ---- numerical gradient check -------------------------------------------------- */

typedef RpcTensor *(*OpFn)(RpcAgThread *th, RpcTensor **in, GError **error);

typedef struct {
    const char *name;
    OpFn fn;
    guint n;
    guint ndim[3];
    gint64 shape[3][3];
    double lo, hi; /* input range, to avoid kinks and poles */
    gboolean second_order;
} GradCase;

/* Deterministic values in [lo, hi): an LCG, no ambient randomness. */
static double
fill_value(guint64 *s, double lo, double hi)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (double)(*s >> 11) / (double)(1ULL << 53);
}

/* loss(x) = sum(op(x) * W) with fixed weights W. */
static RpcTensor *
weighted_loss(RpcAgThread *th, const GradCase *c, RpcTensor **in)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) out = c->fn(th, in, &error);
    g_assert_no_error(error);
    guint64 s = 99;
    g_autofree double *w = g_new(double, MAX(rpc_tensor_numel(out), 1));
    for (gint64 i = 0; i < rpc_tensor_numel(out); i++)
        w[i] = fill_value(&s, -1.0, 1.0);
    g_autoptr(RpcTensor) wt = tensor(F64, rpc_tensor_ndim(out), rpc_tensor_shape(out), w);
    g_autoptr(RpcTensor) prod = rpc_ag_mul(th, out, wt, &error);
    RpcTensor *loss = rpc_ag_sum(th, prod, &error);
    g_assert_no_error(error);
    return loss;
}

static double
loss_value(RpcAgThread *th, const GradCase *c, RpcTensor **in)
{
    g_autoptr(RpcTensor) l = weighted_loss(th, c, in);
    return rpc_tensor_get(l, 0);
}

/* A copy of t with element j moved by delta. */
static RpcTensor *
perturbed(const RpcTensor *t, gint64 j, double delta)
{
    g_autofree double *v = g_new(double, MAX(rpc_tensor_numel(t), 1));
    for (gint64 i = 0; i < rpc_tensor_numel(t); i++)
        v[i] = rpc_tensor_get(t, i) + (i == j ? delta : 0.0);
    return tensor(F64, rpc_tensor_ndim(t), rpc_tensor_shape(t), v);
}

static void
assert_close(double got, double want, double tol, const char *what, const char *name, gint64 j)
{
    if (!(fabs(got - want) <= tol * MAX(1.0, fabs(want))))
        g_error("%s %s: element %" G_GINT64_FORMAT ": analytical %.17g vs numerical %.17g", name,
                what, j, got, want);
}

/* First order: backward's .grad against central differences of loss.
 * Second order: d/dx of sum(grad(loss, x, create_graph) * V) against
 * central differences of that first gradient. */
static void
gradcheck(Fx *fx, const GradCase *c)
{
    const double eps = 1e-6;
    guint64 seed = 7;
    RpcTensor *in[3];
    for (guint i = 0; i < c->n; i++) {
        gint64 numel = 1;
        for (guint d = 0; d < c->ndim[i]; d++)
            numel *= c->shape[i][d];
        g_autofree double *v = g_new(double, MAX(numel, 1));
        for (gint64 k = 0; k < numel; k++)
            v[k] = fill_value(&seed, c->lo, c->hi);
        in[i] = leaf(c->ndim[i], c->shape[i], v);
    }
    g_autoptr(RpcTensor) loss = weighted_loss(fx->th, c, in);
    backward_ok(fx, loss, FALSE);

    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    for (guint i = 0; i < c->n; i++) {
        RpcTensor *g = rpc_ag_grad(in[i]);
        g_assert_nonnull(g);
        for (gint64 j = 0; j < rpc_tensor_numel(in[i]); j++) {
            RpcTensor *plus[3], *minus[3];
            for (guint k = 0; k < c->n; k++) {
                plus[k] = k == i ? perturbed(in[k], j, eps) : rpc_tensor_ref(in[k]);
                minus[k] = k == i ? perturbed(in[k], j, -eps) : rpc_tensor_ref(in[k]);
            }
            double num = (loss_value(fx->th, c, plus) - loss_value(fx->th, c, minus)) / (2 * eps);
            assert_close(rpc_tensor_get(g, j), num, 1e-6, "grad", c->name, j);
            for (guint k = 0; k < c->n; k++) {
                rpc_tensor_unref(plus[k]);
                rpc_tensor_unref(minus[k]);
            }
        }
    }
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);

    if (c->second_order) {
        /* h(x) = sum_i sum(grad_i(x) * V_i): analytic via create_graph. */
        GError *error = NULL;
        RpcTensor *g1[3];
        g_autoptr(RpcTensor) l1 = weighted_loss(fx->th, c, in);
        g_assert_true(
            rpc_ag_autograd_grad(fx->th, &l1, NULL, 1, in, c->n, TRUE, TRUE, TRUE, g1, &error));
        g_assert_no_error(error);
        RpcTensor *h = NULL;
        for (guint i = 0; i < c->n; i++) {
            if (g1[i] == NULL || !rpc_ag_requires_grad(g1[i]))
                continue; /* linear in this input */
            g_autoptr(RpcTensor) vs = rpc_tensor_new_full_like(g1[i], 0.5 + i);
            g_autoptr(RpcTensor) prod = rpc_ag_mul(fx->th, g1[i], vs, &error);
            g_autoptr(RpcTensor) part = rpc_ag_sum(fx->th, prod, &error);
            RpcTensor *nh = h == NULL ? rpc_tensor_ref(part) : rpc_ag_add(fx->th, h, part, &error);
            if (h != NULL)
                rpc_tensor_unref(h);
            h = nh;
        }
        for (guint i = 0; i < c->n; i++) {
            if (g1[i] != NULL)
                rpc_tensor_unref(g1[i]);
            rpc_ag_set_grad(in[i], NULL, NULL);
        }
        if (h != NULL) {
            /* Some inputs may not reach h (e.g. linear ones). */
            RpcTensor *g2[3];
            gboolean ok2 =
                rpc_ag_autograd_grad(fx->th, &h, NULL, 1, in, c->n, FALSE, FALSE, TRUE, g2, &error);
            g_assert_no_error(error);
            g_assert_true(ok2);
            rpc_tensor_unref(h);
            for (guint i = 0; i < c->n; i++) {
                for (gint64 j = 0; j < rpc_tensor_numel(in[i]); j++) {
                    double num = 0;
                    for (int sign = -1; sign <= 1; sign += 2) {
                        RpcTensor *p[3], *gp[3];
                        for (guint k = 0; k < c->n; k++) {
                            p[k] = k == i ? perturbed(in[k], j, sign * eps) : rpc_tensor_ref(in[k]);
                            rpc_ag_set_requires_grad(p[k], TRUE, NULL);
                        }
                        g_autoptr(RpcTensor) lp = weighted_loss(fx->th, c, p);
                        g_assert_true(rpc_ag_autograd_grad(fx->th, &lp, NULL, 1, p, c->n, FALSE,
                                                           FALSE, TRUE, gp, &error));
                        for (guint k = 0; k < c->n; k++) {
                            if (gp[k] != NULL && g1[k] != NULL) {
                                for (gint64 e = 0; e < rpc_tensor_numel(gp[k]); e++)
                                    num += sign * (0.5 + k) * rpc_tensor_get(gp[k], e);
                            }
                            if (gp[k] != NULL)
                                rpc_tensor_unref(gp[k]);
                            rpc_tensor_unref(p[k]);
                        }
                    }
                    num /= 2 * eps;
                    double got = g2[i] != NULL ? rpc_tensor_get(g2[i], j) : 0.0;
                    assert_close(got, num, 1e-5, "second-order grad", c->name, j);
                }
                if (g2[i] != NULL)
                    rpc_tensor_unref(g2[i]);
            }
        }
    }
    for (guint i = 0; i < c->n; i++)
        rpc_tensor_unref(in[i]);
}

#define OP2(fname, call)                                                                           \
    static RpcTensor *fname(RpcAgThread *th, RpcTensor **in, GError **error)                       \
    {                                                                                              \
        return call;                                                                               \
    }

OP2(op_add, rpc_ag_add(th, in[0], in[1], error))
OP2(op_sub, rpc_ag_sub(th, in[0], in[1], error))
OP2(op_mul, rpc_ag_mul(th, in[0], in[1], error))
OP2(op_div, rpc_ag_div(th, in[0], in[1], error))
OP2(op_matmul, rpc_ag_matmul(th, in[0], in[1], error))
OP2(op_sum, rpc_ag_sum(th, in[0], error))
OP2(op_mean, rpc_ag_mean(th, in[0], error))
OP2(op_pow2, rpc_ag_pow(th, in[0], 2, error))
OP2(op_pow3, rpc_ag_pow(th, in[0], 3, error))
OP2(op_pow_half, rpc_ag_pow(th, in[0], 0.5, error))
OP2(op_pow_neg, rpc_ag_pow(th, in[0], -1.5, error))
OP2(op_pow0, rpc_ag_pow(th, in[0], 0, error))
OP2(op_exp, rpc_ag_exp(th, in[0], error))
OP2(op_sin, rpc_ag_sin(th, in[0], error))
OP2(op_cos, rpc_ag_cos(th, in[0], error))
OP2(op_relu, rpc_ag_relu(th, in[0], error))
OP2(op_sigmoid, rpc_ag_sigmoid(th, in[0], error))
OP2(op_neg, rpc_ag_neg(th, in[0], error))
OP2(op_stack, rpc_ag_stack(th, in, 3, error))
OP2(op_view, rpc_ag_view(th, in[0], 2, SHAPE(3, 2), error))
OP2(op_view_flat, rpc_ag_view(th, in[0], 1, SHAPE(-1), error))
OP2(op_t, rpc_ag_t(th, in[0], error))
OP2(op_expand, rpc_ag_expand(th, in[0], 3, SHAPE(2, 2, 3), error))
OP2(op_sum_to_size, rpc_ag_sum_to_size(th, in[0], 2, SHAPE(1, 3), error))
OP2(op_select, rpc_ag_select(th, in[0], 1, error))
OP2(op_select_neg, rpc_ag_select(th, in[0], -2, error))
OP2(op_cast, rpc_ag_cast(th, in[0], F64, error))
OP2(op_add_scalar, rpc_ag_add_scalar(th, in[0], 1.5, error))
OP2(op_mul_scalar, rpc_ag_mul_scalar(th, in[0], -2.5, error))
OP2(op_div_scalar, rpc_ag_div_scalar(th, in[0], 3, error))

/* The in-place path on a non-leaf: (x * x).mul_(3).add_(1). */
static RpcTensor *
op_inplace(RpcAgThread *th, RpcTensor **in, GError **error)
{
    RpcTensor *y = rpc_ag_mul(th, in[0], in[0], error);
    g_assert_true(rpc_ag_mul_scalar_(th, y, 3, error));
    g_assert_true(rpc_ag_add_scalar_(th, y, 1, error));
    return y;
}

/* A composite: sigmoid(x @ w + b).mean() style layer, broadcasting b. */
static RpcTensor *
op_layer(RpcAgThread *th, RpcTensor **in, GError **error)
{
    g_autoptr(RpcTensor) xw = rpc_ag_matmul(th, in[0], in[1], error);
    g_autoptr(RpcTensor) z = rpc_ag_add(th, xw, in[2], error);
    return rpc_ag_sigmoid(th, z, error);
}

static const GradCase grad_cases[] = {
    {"add", op_add, 2, {2, 2}, {{2, 3}, {2, 3}}, -2, 2, TRUE},
    {"add-bcast-row", op_add, 2, {2, 1}, {{2, 3}, {3}}, -2, 2, TRUE},
    {"add-bcast-outer", op_add, 2, {2, 2}, {{2, 1}, {1, 3}}, -2, 2, TRUE},
    {"add-scalar-tensor", op_add, 2, {1, 0}, {{3}, {0}}, -2, 2, TRUE},
    {"add-0d-left", op_add, 2, {0, 2}, {{0}, {2, 2}}, -2, 2, TRUE},
    {"sub", op_sub, 2, {2, 2}, {{2, 3}, {2, 3}}, -2, 2, TRUE},
    {"sub-bcast", op_sub, 2, {2, 1}, {{2, 3}, {3}}, -2, 2, TRUE},
    {"sub-bcast-left", op_sub, 2, {2, 2}, {{1, 3}, {2, 1}}, -2, 2, TRUE},
    {"mul", op_mul, 2, {2, 2}, {{2, 3}, {2, 3}}, -2, 2, TRUE},
    {"mul-bcast", op_mul, 2, {2, 1}, {{2, 3}, {3}}, -2, 2, TRUE},
    {"mul-bcast-outer", op_mul, 2, {2, 2}, {{3, 1}, {1, 2}}, -2, 2, TRUE},
    {"mul-0d", op_mul, 2, {0, 1}, {{0}, {4}}, -2, 2, TRUE},
    {"div", op_div, 2, {2, 2}, {{2, 3}, {2, 3}}, 0.5, 2, TRUE},
    {"div-bcast", op_div, 2, {2, 1}, {{2, 3}, {3}}, 0.5, 2, TRUE},
    {"div-bcast-left", op_div, 2, {1, 2}, {{3}, {2, 3}}, 0.5, 2, TRUE},
    {"mm", op_matmul, 2, {2, 2}, {{2, 3}, {3, 4}}, -1, 1, TRUE},
    {"dot", op_matmul, 2, {1, 1}, {{3}, {3}}, -1, 1, TRUE},
    {"mv", op_matmul, 2, {2, 1}, {{2, 3}, {3}}, -1, 1, TRUE},
    {"vm", op_matmul, 2, {1, 2}, {{3}, {3, 4}}, -1, 1, TRUE},
    {"sum", op_sum, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"sum-0d", op_sum, 1, {0}, {{0}}, -1, 1, TRUE},
    {"mean", op_mean, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"pow2", op_pow2, 1, {2}, {{2, 3}}, -2, 2, TRUE},
    {"pow3", op_pow3, 1, {1}, {{4}}, -2, 2, TRUE},
    {"pow-half", op_pow_half, 1, {1}, {{4}}, 0.5, 2, TRUE},
    {"pow-neg", op_pow_neg, 1, {1}, {{4}}, 0.5, 2, TRUE},
    {"pow0", op_pow0, 1, {1}, {{4}}, 0.5, 2, TRUE},
    {"exp", op_exp, 1, {2}, {{2, 2}}, -1, 1, TRUE},
    {"sin", op_sin, 1, {1}, {{5}}, -3, 3, TRUE},
    {"cos", op_cos, 1, {1}, {{5}}, -3, 3, TRUE},
    {"relu-pos", op_relu, 1, {1}, {{4}}, 0.1, 2, TRUE},
    {"relu-neg", op_relu, 1, {1}, {{4}}, -2, -0.1, TRUE},
    {"sigmoid", op_sigmoid, 1, {2}, {{2, 2}}, -3, 3, TRUE},
    {"neg", op_neg, 1, {1}, {{3}}, -1, 1, TRUE},
    {"stack", op_stack, 3, {2, 2, 2}, {{2, 2}, {2, 2}, {2, 2}}, -1, 1, TRUE},
    {"view", op_view, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"view-flat", op_view_flat, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"t", op_t, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"expand", op_expand, 1, {2}, {{2, 1}}, -1, 1, TRUE},
    {"sum-to-size", op_sum_to_size, 1, {2}, {{2, 3}}, -1, 1, TRUE},
    {"select", op_select, 1, {2}, {{3, 2}}, -1, 1, TRUE},
    {"select-neg", op_select_neg, 1, {2}, {{3, 2}}, -1, 1, TRUE},
    {"cast", op_cast, 1, {1}, {{3}}, -1, 1, TRUE},
    {"add-scalar", op_add_scalar, 1, {1}, {{3}}, -1, 1, TRUE},
    {"mul-scalar", op_mul_scalar, 1, {1}, {{3}}, -1, 1, TRUE},
    {"div-scalar", op_div_scalar, 1, {1}, {{3}}, -1, 1, TRUE},
    {"inplace", op_inplace, 1, {1}, {{3}}, -1, 1, TRUE},
    {"layer", op_layer, 3, {2, 2, 1}, {{2, 3}, {3, 2}, {2}}, -1, 1, TRUE},
};

static void
test_gradcheck(Fx *fx, gconstpointer data)
{
    const GradCase *c = data;
    gradcheck(fx, c);
}

/* Every formula with nothing flowing in (a Function returning None for its
 * input), and a second pass without retain_graph: PyTorch's error exactly
 * when the node saved something. */
static gboolean
none_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    g_ptr_array_add(out,
                    rpc_value_new_tensor(rpc_tensor_mul_scalar(rpc_value_get_tensor(in[0]), 1)));
    return TRUE;
}

static gboolean
none_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    g_ptr_array_add(out, NULL);
    return TRUE;
}

static void
test_undefined_and_freed(Fx *fx, gconstpointer data)
{
    const RpcAgFunction none_fn = {"NoGrad", none_forward, none_backward, NULL, FALSE};
    for (guint k = 0; k < G_N_ELEMENTS(grad_cases); k++) {
        const GradCase *c = &grad_cases[k];
        GError *error = NULL;
        guint64 seed = 3;
        RpcTensor *in[3];
        for (guint i = 0; i < c->n; i++) {
            gint64 numel = 1;
            for (guint d = 0; d < c->ndim[i]; d++)
                numel *= c->shape[i][d];
            g_autofree double *v = g_new(double, MAX(numel, 1));
            for (gint64 j = 0; j < numel; j++)
                v[j] = fill_value(&seed, c->lo, c->hi);
            in[i] = leaf(c->ndim[i], c->shape[i], v);
        }
        g_autoptr(RpcTensor) out = c->fn(fx->th, in, &error);
        g_assert_no_error(error);
        RpcValue *arg = rpc_value_new_tensor(rpc_tensor_ref(out));
        GPtrArray *res = rpc_ag_function_apply(fx->th, &none_fn, &arg, 1, &error);
        rpc_value_unref(arg);
        g_autoptr(RpcTensor) s = sum_of(fx, rpc_value_get_tensor(g_ptr_array_index(res, 0)));
        g_ptr_array_unref(res);
        backward_ok(fx, s, TRUE);
        for (guint i = 0; i < c->n; i++)
            g_assert_null(rpc_ag_grad(in[i]));

        g_autoptr(RpcTensor) s2 = sum_of(fx, out);
        backward_ok(fx, s2, FALSE);
        if (!rpc_ag_backward(fx->th, &s2, NULL, 1, FALSE, FALSE, &error))
            check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
        for (guint i = 0; i < c->n; i++)
            rpc_tensor_unref(in[i]);
    }
}

/* ---- engine: roots and errors --------------------------------------------------- */

static void
test_root_errors(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 2, 3));
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, &error);
    g_autoptr(RpcTensor) s = sum_of(fx, y);

    g_assert_false(rpc_ag_backward(fx->th, &y, NULL, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "grad can be implicitly created only for scalar outputs");
    g_assert_false(rpc_ag_backward(fx->th, &c, NULL, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "element 0 of tensors does not require grad and does not have a grad_fn");
    RpcTensor *two[] = {s, c};
    g_assert_false(rpc_ag_backward(fx->th, two, NULL, 2, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "element 1 of tensors does not require grad and does not have a grad_fn");
    g_autoptr(RpcTensor) g2 = tensor(F64, 1, SHAPE(2), VALS(1, 1));
    g_assert_false(rpc_ag_backward(fx->th, &y, &g2, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "Mismatch in shape: grad_output[0] has a shape of torch.Size([2]) and output[0] "
                "has a shape of torch.Size([3]).");
    g_autoptr(RpcTensor) g1 = tensor(F64, 1, SHAPE(1), VALS(1));
    g_assert_false(rpc_ag_backward(fx->th, &s, &g1, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "Mismatch in shape: grad_output[0] has a shape of torch.Size([1]) and output[0] "
                "has a shape of torch.Size([]).");
    g_assert_null(rpc_ag_grad(x)); /* nothing ran */

    /* No roots: nothing to do. */
    g_assert_true(rpc_ag_backward(fx->th, NULL, NULL, 0, FALSE, FALSE, &error));

    /* An explicit gradient for a non-scalar root, of another dtype (cast). */
    g_autoptr(RpcTensor) g3 = tensor(F32, 1, SHAPE(3), VALS(1, 10, 100));
    g_assert_true(rpc_ag_backward(fx->th, &y, &g3, 1, TRUE, FALSE, &error));
    check_grad(x, 1, SHAPE(3), VALS(2, 20, 200));

    /* A leaf root accumulates directly; the caller's gradient is copied. */
    g_autoptr(RpcTensor) l = scalar_leaf(5);
    g_autoptr(RpcTensor) gl = tensor(F64, 0, NULL, VALS(3));
    g_assert_true(rpc_ag_backward(fx->th, &l, &gl, 1, FALSE, FALSE, &error));
    check_grad(l, 0, NULL, VALS(3));
    g_assert_true(rpc_ag_grad(l) != gl);
    backward_ok(fx, l, FALSE);
    check_grad(l, 0, NULL, VALS(4));
    check_values(gl, 0, NULL, VALS(3));
}

static void
test_backward_twice(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    /* Nodes that saved nothing can run again (PyTorch: x + 2). */
    g_autoptr(RpcTensor) a = rpc_ag_add_scalar(fx->th, x, 2, &error);
    g_autoptr(RpcTensor) sa = sum_of(fx, a);
    backward_ok(fx, sa, FALSE);
    backward_ok(fx, sa, FALSE);
    check_grad(x, 1, SHAPE(2), VALS(2, 2));
    rpc_ag_set_grad(x, NULL, NULL);

    /* x * 2 saved the wrapped 2: the second pass fails. */
    g_autoptr(RpcTensor) m = rpc_ag_mul_scalar(fx->th, x, 2, &error);
    g_autoptr(RpcTensor) sm = sum_of(fx, m);
    backward_ok(fx, sm, FALSE);
    g_assert_false(rpc_ag_backward(fx->th, &sm, NULL, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
    check_grad(x, 1, SHAPE(2), VALS(2, 2));
    rpc_ag_set_grad(x, NULL, NULL);

    /* retain_graph: the second pass adds the same again (2x). */
    g_autoptr(RpcTensor) e = rpc_ag_exp(fx->th, x, &error);
    g_autoptr(RpcTensor) q = rpc_ag_mul(fx->th, e, x, &error);
    g_autoptr(RpcTensor) sq = sum_of(fx, q);
    backward_ok(fx, sq, TRUE);
    RpcTensor *first = rpc_ag_grad(x);
    double g0 = rpc_tensor_get(first, 0), g1v = rpc_tensor_get(first, 1);
    g_assert_cmpfloat(g0, ==, exp(1.0) * 1 + exp(1.0));
    backward_ok(fx, sq, FALSE);
    g_assert_true(rpc_ag_grad(x) == first); /* accumulated in place */
    check_grad(x, 1, SHAPE(2), VALS(2 * g0, 2 * g1v));
    g_assert_false(rpc_ag_backward(fx->th, &sq, NULL, 1, FALSE, FALSE, &error));
    check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
}

static void
test_inplace_version(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 2, 3));
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(3), VALS(1, 1, 1));

    /* A leaf that requires grad cannot be changed in place... */
    g_assert_false(rpc_ag_mul_scalar_(fx->th, x, 2, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "a leaf Variable that requires grad is being used in an in-place operation.");
    g_assert_cmpuint(rpc_tensor_version(x), ==, 0);
    /* ...except under no_grad (an optimizer step), which bumps its version. */
    rpc_ag_thread_set_grad_enabled(fx->th, FALSE);
    g_assert_true(rpc_ag_mul_scalar_(fx->th, x, 2, &error));
    rpc_ag_thread_set_grad_enabled(fx->th, TRUE);
    check_values(x, 1, SHAPE(3), VALS(2, 4, 6));
    g_assert_cmpuint(rpc_tensor_version(x), ==, 1);
    g_assert_true(rpc_ag_is_leaf(x));

    { /* A saved leaf input changed: no "which is output" clause. */
        g_autoptr(RpcTensor) a = tensor(F64, 1, SHAPE(3), VALS(1, 1, 1));
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, x, a, &error);
        g_assert_true(rpc_ag_mul_scalar_(fx->th, a, 2, &error));
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        g_assert_false(rpc_ag_backward(fx->th, &s, NULL, 1, FALSE, FALSE, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "one of the variables needed for gradient computation has been modified by "
                    "an inplace operation: [torch.DoubleTensor [3]] is at version 1; expected "
                    "version 0 instead. Hint: enable anomaly detection to find the operation "
                    "that failed to compute its gradient, with "
                    "torch.autograd.set_detect_anomaly(True).");
    }
    { /* A saved output changed: named after its node. */
        g_autoptr(RpcTensor) y = rpc_ag_exp(fx->th, x, &error);
        g_assert_true(rpc_ag_add_scalar_(fx->th, y, 1, &error));
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(y)), ==, "AddBackward0");
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        g_assert_false(rpc_ag_backward(fx->th, &s, NULL, 1, FALSE, FALSE, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "one of the variables needed for gradient computation has been modified by "
                    "an inplace operation: [torch.DoubleTensor [3]], which is output 0 of "
                    "ExpBackward0, is at version 1; expected version 0 instead. Hint: enable "
                    "anomaly detection to find the operation that failed to compute its "
                    "gradient, with torch.autograd.set_detect_anomaly(True).");
    }
    { /* A saved non-leaf input changed: named after its current grad_fn. */
        g_autoptr(RpcTensor) x2 = rpc_ag_mul_scalar(fx->th, x, 2, &error);
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, x2, x2, &error);
        g_assert_true(rpc_ag_mul_scalar_(fx->th, x2, 2, &error));
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        g_assert_false(rpc_ag_backward(fx->th, &s, NULL, 1, FALSE, FALSE, &error));
        check_error(&error, RPC_ERROR_RUNTIME,
                    "one of the variables needed for gradient computation has been modified by "
                    "an inplace operation: [torch.DoubleTensor [3]], which is output 0 of "
                    "MulBackward0, is at version 1; expected version 0 instead. Hint: enable "
                    "anomaly detection to find the operation that failed to compute its "
                    "gradient, with torch.autograd.set_detect_anomaly(True).");
    }
    { /* Only what the formula needs is saved: x2 * c keeps c, not x2. */
        g_autoptr(RpcTensor) x2 = rpc_ag_mul_scalar(fx->th, x, 1, &error);
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, x2, c, &error);
        g_assert_true(rpc_ag_add_scalar_(fx->th, x2, 1, &error));
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(x, 1, SHAPE(3), VALS(1, 1, 1));
        rpc_ag_set_grad(x, NULL, NULL);
    }
    { /* The rebased history itself is differentiated correctly. */
        g_autoptr(RpcTensor) y = rpc_ag_mul(fx->th, x, c, &error);
        g_assert_true(rpc_ag_mul_scalar_(fx->th, y, 3, &error));
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, FALSE);
        check_grad(x, 1, SHAPE(3), VALS(3, 3, 3));
        g_assert_cmpuint(rpc_tensor_version(y), ==, 1);
    }
    /* Float32 in-place rounds the scalar to float first. */
    g_autoptr(RpcTensor) f = tensor(F32, 1, SHAPE(1), VALS(1));
    g_assert_true(rpc_ag_mul_scalar_(fx->th, f, 0.1, &error));
    g_assert_cmpfloat(rpc_tensor_get(f, 0), ==, (double)0.1f);
}

/* ---- hooks ---------------------------------------------------------------------- */

static gboolean
hook_scale(RpcTensor *grad, RpcTensor **replacement, gpointer user_data, GError **error)
{
    *replacement = rpc_tensor_mul_scalar(grad, *(double *)user_data);
    return TRUE;
}

static gboolean
hook_observe(RpcTensor *grad, RpcTensor **replacement, gpointer user_data, GError **error)
{
    GString *log = user_data;
    g_string_append_printf(log, "[%g]", rpc_tensor_get(grad, 0));
    return TRUE;
}

static gboolean
hook_fail(RpcTensor *grad, RpcTensor **replacement, gpointer user_data, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "hook says no");
    return FALSE;
}

static void
post_hook(RpcTensor *leaf_t, gpointer user_data)
{
    GString *log = user_data;
    g_string_append_printf(log, "(post %g)", rpc_tensor_get(rpc_ag_grad(leaf_t), 0));
}

/* A scale factor whose destruction is counted. */
typedef struct {
    double scale;
    int *destroyed;
} Scale;

static gboolean
hook_scale_counted(RpcTensor *grad, RpcTensor **replacement, gpointer user_data, GError **error)
{
    return hook_scale(grad, replacement, &((Scale *)user_data)->scale, error);
}

static void
scale_destroy(gpointer data)
{
    (*((Scale *)data)->destroyed)++;
}

static void
test_hooks(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    double two = 2, ten = 10;
    int destroyed = 0;
    GString *log = g_string_new(NULL);
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    g_assert_cmpuint(rpc_ag_register_hook(c, hook_scale, &two, NULL, &error), ==, 0);
    check_error(&error, RPC_ERROR_RUNTIME,
                "cannot register a hook on a tensor that doesn't require gradient");
    g_assert_cmpuint(rpc_ag_register_post_accumulate_hook(c, post_hook, log, NULL, &error), ==, 0);
    check_error(&error, RPC_ERROR_RUNTIME,
                "cannot register a hook on a tensor that doesn't require gradient");
    g_assert_false(rpc_ag_remove_hook(c, 1));

    { /* Leaf: hooks in order, then accumulation, then the post hook. */
        g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
        guint h1 = rpc_ag_register_hook(x, hook_observe, log, NULL, &error);
        Scale sc = {2, &destroyed};
        guint h2 = rpc_ag_register_hook(x, hook_scale_counted, &sc, scale_destroy, &error);
        (void)h1;
        guint h3 = rpc_ag_register_hook(x, hook_observe, log, NULL, &error);
        g_assert_cmpuint(rpc_ag_register_post_accumulate_hook(x, post_hook, log, NULL, &error), >,
                         0);
        g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 3, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        backward_ok(fx, s, TRUE);
        g_assert_cmpstr(log->str, ==, "[3][6](post 6)");
        check_grad(x, 1, SHAPE(2), VALS(6, 6));
        g_assert_true(rpc_ag_remove_hook(x, h2));
        g_assert_true(rpc_ag_remove_hook(x, h3));
        g_assert_false(rpc_ag_remove_hook(x, 999));
        g_string_truncate(log, 0);
        backward_ok(fx, s, FALSE);
        g_assert_cmpstr(log->str, ==, "[3](post 9)");
    }
    g_assert_cmpint(destroyed, ==, 1);
    { /* Non-leaf: the hook changes what flows on (PyTorch: 60 = 2*10*3). */
        g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 1, 1));
        g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, &error);
        static Scale sc10;
        sc10 = (Scale){ten, &destroyed};
        g_assert_cmpuint(rpc_ag_register_hook(y, hook_scale_counted, &sc10, scale_destroy, &error),
                         >, 0);
        g_assert_cmpuint(rpc_ag_register_hook(y, hook_observe, log, NULL, &error), >, 0);
        g_assert_cmpuint(rpc_ag_register_post_accumulate_hook(y, post_hook, log, NULL, &error), ==,
                         0);
        check_error(&error, RPC_ERROR_RUNTIME,
                    "post accumulate grad hooks cannot be registered on non-leaf tensors");
        g_autoptr(RpcTensor) z = rpc_ag_mul_scalar(fx->th, y, 3, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, z);
        g_string_truncate(log, 0);
        backward_ok(fx, s, FALSE);
        g_assert_cmpstr(log->str, ==, "[30]");
        check_grad(x, 1, SHAPE(3), VALS(60, 60, 60));
        g_assert_null(rpc_ag_grad(y)); /* non-leaves get no .grad */
    }
    g_assert_cmpint(destroyed, ==, 2);
    { /* A failing hook fails the pass with its error; nothing accumulates. */
        g_autoptr(RpcTensor) x = leaf(1, SHAPE(1), VALS(1));
        rpc_ag_register_hook(x, hook_fail, NULL, NULL, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, x);
        g_assert_false(rpc_ag_backward(fx->th, &s, NULL, 1, FALSE, FALSE, &error));
        check_error(&error, RPC_ERROR_VALUE, "hook says no");
        g_assert_null(rpc_ag_grad(x));
        g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, &error);
        rpc_ag_register_hook(y, hook_fail, NULL, NULL, &error);
        g_autoptr(RpcTensor) s2 = sum_of(fx, y);
        g_assert_false(rpc_ag_backward(fx->th, &s2, NULL, 1, FALSE, FALSE, &error));
        check_error(&error, RPC_ERROR_VALUE, "hook says no");
    }
    g_string_free(log, TRUE);
}

/* ---- ordering ------------------------------------------------------------------- */

/* Tag(x, name): identity whose backward logs name; a custom function with a
 * non-tensor input. */
static gboolean
tag_forward(RpcAgCtx *ctx, RpcValue *const *in, guint n, GPtrArray *out, GError **error)
{
    RpcTensor *x = rpc_value_get_tensor(in[0]);
    rpc_ag_ctx_set_user_data(ctx, g_strdup(rpc_value_get_string(in[1])), g_free);
    g_ptr_array_add(out,
                    rpc_value_new_tensor(rpc_ag_mul_scalar(rpc_ag_ctx_thread(ctx), x, 1, error)));
    return TRUE;
}

static gboolean
tag_backward(RpcAgCtx *ctx, RpcTensor *const *g, guint n, GPtrArray *out, GError **error)
{
    GString *log = rpc_ag_ctx_function(ctx)->user_data;
    g_string_append(log, rpc_ag_ctx_get_user_data(ctx));
    g_ptr_array_add(out, rpc_value_new_tensor(rpc_tensor_ref(g[0])));
    g_ptr_array_add(out, rpc_value_none());
    return TRUE;
}

static RpcTensor *
tag(Fx *fx, const RpcAgFunction *fn, RpcTensor *x, const char *name)
{
    GError *error = NULL;
    RpcValue *in[] = {rpc_value_new_tensor(rpc_tensor_ref(x)), rpc_value_new_string(name)};
    GPtrArray *out = rpc_ag_function_apply(fx->th, fn, in, 2, &error);
    g_assert_no_error(error);
    RpcTensor *t = rpc_tensor_ref(rpc_value_get_tensor(g_ptr_array_index(out, 0)));
    g_ptr_array_unref(out);
    rpc_value_unref(in[0]);
    rpc_value_unref(in[1]);
    return t;
}

static char *
join_executed(const GPtrArray *names)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < names->len; i++)
        g_string_append_printf(s, "%s%s", i ? " " : "", (const char *)names->pdata[i]);
    return g_string_free(s, FALSE);
}

static void
test_order_diamond(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    GString *log = g_string_new(NULL);
    const RpcAgFunction fn = {"Tag", tag_forward, tag_backward, log, FALSE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    for (int swap = 0; swap < 2; swap++) {
        /*   x -> A -> B --+--> add -> sum
         *          `-> C -'      (B, C made in the order given) */
        g_autoptr(RpcTensor) a = tag(fx, &fn, x, "A");
        RpcTensor *first = tag(fx, &fn, a, swap ? "C" : "B");
        RpcTensor *second = tag(fx, &fn, a, swap ? "B" : "C");
        RpcTensor *b = swap ? second : first, *c = swap ? first : second;
        g_autoptr(RpcTensor) d = rpc_ag_add(fx->th, b, c, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, d);
        g_string_truncate(log, 0);
        g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(fx->th, FALSE, FALSE);
        g_assert_true(rpc_ag_graph_task_add_root(task, s, NULL, 0, &error));
        g_assert_true(rpc_ag_graph_task_prepare(task, &error));
        g_assert_true(rpc_ag_graph_task_run(task, &error));
        g_assert_true(rpc_ag_graph_task_is_done(task));
        /* The later-made branch runs first, whatever the edge order. */
        g_assert_cmpstr(log->str, ==, swap ? "BCA" : "CBA");
        g_autofree char *order = join_executed(rpc_ag_graph_task_executed(task));
        g_assert_cmpstr(order, ==,
                        "SumBackward0 AddBackward0 TagBackward TagBackward TagBackward "
                        "torch::autograd::AccumulateGrad");
        check_grad(x, 1, SHAPE(2), VALS(2, 2));
        rpc_ag_set_grad(x, NULL, NULL);
        rpc_tensor_unref(first);
        rpc_tensor_unref(second);
    }
    g_string_free(log, TRUE);
}

/* Ready leaves run before anything else, by the AccumulateGrad priority. */
static void
test_order_accumulate_first(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    GString *log = g_string_new(NULL);
    const RpcAgFunction fn = {"Tag", tag_forward, tag_backward, log, FALSE};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(1), VALS(1));
    g_autoptr(RpcTensor) w = leaf(1, SHAPE(1), VALS(1));
    g_autoptr(RpcTensor) a = tag(fx, &fn, x, "A");
    g_autoptr(RpcTensor) y = rpc_ag_add(fx->th, a, w, &error);
    g_autoptr(RpcTensor) s = sum_of(fx, y);
    g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(fx->th, FALSE, FALSE);
    g_assert_true(rpc_ag_graph_task_add_root(task, s, NULL, 0, &error));
    g_assert_true(rpc_ag_graph_task_prepare(task, &error));
    g_assert_true(rpc_ag_graph_task_run(task, &error));
    g_autofree char *order = join_executed(rpc_ag_graph_task_executed(task));
    g_assert_cmpstr(order, ==,
                    "SumBackward0 AddBackward0 torch::autograd::AccumulateGrad TagBackward "
                    "torch::autograd::AccumulateGrad");
    g_autoptr(GPtrArray) reach = rpc_ag_graph_task_reachable(task);
    g_assert_cmpuint(reach->len, ==, 5);
    /* Highest sequence number first; the two accumulators lead. */
    g_assert_true(rpc_ag_node_is_accumulate_grad(reach->pdata[0]));
    g_assert_true(rpc_ag_node_is_accumulate_grad(reach->pdata[1]));
    g_assert_cmpstr(rpc_ag_node_name(reach->pdata[2]), ==, "SumBackward0");
    g_assert_cmpstr(rpc_ag_node_name(reach->pdata[4]), ==, "TagBackward");
    g_string_free(log, TRUE);
}

/* ---- the engine API for distributed autograd ---------------------------------- */

/* SendRpcBackward: no inputs; returns the gradients set from the network. */
typedef struct {
    GPtrArray *grads; /* RpcTensor*, one per next edge */
} SendData;

static gboolean
send_apply(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **gout,
           GError **error)
{
    SendData *d = rpc_ag_node_data(node);
    for (guint i = 0; i < d->grads->len; i++)
        gout[i] = rpc_tensor_ref(g_ptr_array_index(d->grads, i));
    return TRUE;
}

static void
send_finalize(gpointer p)
{
    SendData *d = p;
    g_ptr_array_unref(d->grads);
    g_free(d);
}

static const RpcAgNodeClass send_class = {
    .name = "SendRpcBackward", .apply = send_apply, .finalize = send_finalize};

/* RecvRpcBackward: no next edges; "sends" its (materialised) gradients. */
typedef struct {
    GString *log;
    gboolean fail;
} RecvData;

static gboolean
recv_apply(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **gout,
           GError **error)
{
    RecvData *d = rpc_ag_node_data(node);
    if (d->fail) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_EXCEPTION,
                            "Simulate error on backward pass");
        return FALSE;
    }
    for (guint i = 0; i < rpc_ag_node_n_inputs(node); i++) {
        g_autoptr(RpcTensor) g =
            gin[i] != NULL ? rpc_tensor_ref(gin[i]) : rpc_ag_node_input_zeros(node, i);
        g_autofree char *r = rpc_tensor_repr(g);
        g_string_append_printf(d->log, "send %u %s;", i, r);
    }
    return TRUE;
}

static const RpcAgNodeClass recv_class = {
    .name = "RecvRpcBackward", .apply = recv_apply, .finalize = g_free};

typedef struct {
    GString *log;
    int destroyed;
    RpcTensor *t1;
} Captured;

static void
capture_leaf(RpcTensor *leaf_t, RpcTensor *grad, gpointer user_data)
{
    Captured *c = user_data;
    g_autofree char *r = rpc_tensor_repr(grad);
    g_string_append_printf(c->log, "ctx[%s] += %s;", leaf_t == c->t1 ? "t1" : "t2", r);
}

static void
capture_destroy(gpointer user_data)
{
    ((Captured *)user_data)->destroyed++;
}

static void
test_dist_engine(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    double two = 2;
    g_autoptr(RpcTensor) t1 = leaf(1, SHAPE(2), VALS(1, 1));
    Captured cap = {g_string_new(NULL), 0, t1};
    g_autoptr(RpcTensor) t2 = leaf(1, SHAPE(2), VALS(0, 0));
    g_assert_cmpuint(rpc_ag_register_hook(t1, hook_scale, &two, NULL, &error), >, 0);

    /* Forward: rpc add(t1, t2) — a send function over both leaves, and the
     * result arriving with a recv function as grad_fn. */
    SendData *sd = g_new0(SendData, 1);
    sd->grads = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    RpcAgNode *send = rpc_ag_node_new(fx->th, &send_class, sd);
    rpc_ag_node_add_next_edge_for(send, fx->th, t1);
    rpc_ag_node_add_next_edge_for(send, fx->th, t2);
    g_assert_cmpuint(rpc_ag_node_n_next(send), ==, 2);
    g_assert_cmpstr(next_name(send, 0), ==, RPC_AG_ACCUMULATE_GRAD_NAME);
    RecvData *rd = g_new0(RecvData, 1);
    rd->log = g_string_new(NULL);
    RpcAgNode *recv = rpc_ag_node_new(fx->th, &recv_class, rd);
    g_autoptr(RpcTensor) ret = tensor(F64, 1, SHAPE(2), VALS(1, 1));
    g_autoptr(RpcTensor) ret2 = tensor(F64, 1, SHAPE(3), VALS(0, 0, 0));
    g_assert_cmpuint(rpc_ag_set_history(ret, recv), ==, 0);
    g_assert_cmpuint(rpc_ag_set_history(ret2, recv), ==, 1); /* unused: zeros */
    g_assert_true(rpc_ag_grad_fn(ret) == recv);
    g_assert_cmpuint(rpc_ag_output_nr(ret2), ==, 1);
    g_assert_cmpuint(rpc_ag_node_n_inputs(recv), ==, 2);
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, ret, 3, &error);
    g_autoptr(RpcTensor) loss = sum_of(fx, y);

    /* Backward on the initiator: roots and every send function. */
    g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(fx->th, TRUE, FALSE);
    rpc_ag_graph_task_set_capture(task, capture_leaf, &cap, capture_destroy);
    g_assert_true(rpc_ag_graph_task_add_root(task, loss, NULL, 0, &error));
    rpc_ag_graph_task_add_start_node(task, send);
    g_assert_false(rpc_ag_graph_task_is_done(task));
    g_assert_true(rpc_ag_graph_task_prepare(task, &error));
    g_assert_true(rpc_ag_graph_task_is_reachable(task, send));
    g_assert_true(rpc_ag_graph_task_is_reachable(task, recv));
    g_assert_true(rpc_ag_graph_task_is_reachable(task, rpc_ag_node_next(send, 0, NULL)));
    g_autoptr(GPtrArray) reach = rpc_ag_graph_task_reachable(task);
    g_assert_cmpuint(reach->len, ==, 6); /* 2 acc, send, recv, mul, sum */
    g_assert_true(rpc_ag_graph_task_run(task, &error));
    g_assert_cmpstr(rd->log->str, ==,
                    "send 0 tensor([3., 3.], dtype=torch.float64);"
                    "send 1 tensor([0., 0., 0.], dtype=torch.float64);");
    g_assert_cmpstr(cap.log->str, ==, "");
    g_assert_false(rpc_ag_graph_task_is_done(task)); /* the send is outstanding */

    /* BACKWARD_AUTOGRAD_REQ arrives for the send function. */
    g_ptr_array_add(sd->grads, tensor(F64, 1, SHAPE(2), VALS(1, 1)));
    g_ptr_array_add(sd->grads, tensor(F64, 1, SHAPE(2), VALS(1, 1)));
    g_assert_true(rpc_ag_graph_task_inject(task, send, NULL, 0, &error));
    g_assert_false(rpc_ag_graph_task_inject(task, send, NULL, 0, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "SendRpcBackward is not a pending start node of this graph task");
    RpcTensor *none2[2] = {NULL, NULL};
    g_assert_false(rpc_ag_graph_task_inject(task, recv, none2, 2, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "RecvRpcBackward is not a pending start node of this graph task");
    g_assert_true(rpc_ag_graph_task_run(task, &error));
    g_assert_true(rpc_ag_graph_task_is_done(task));
    /* Hooks ran before capture (t1 doubled); .grad untouched. */
    g_assert_cmpstr(cap.log->str, ==,
                    "ctx[t2] += tensor([1., 1.], dtype=torch.float64);"
                    "ctx[t1] += tensor([2., 2.], dtype=torch.float64);");
    g_assert_null(rpc_ag_grad(t1));
    g_assert_null(rpc_ag_grad(t2));
    g_autofree char *order = join_executed(rpc_ag_graph_task_executed(task));
    g_assert_cmpstr(order, ==, "SumBackward0 MulBackward0 RecvRpcBackward SendRpcBackward");
    g_clear_pointer(&task, rpc_ag_graph_task_free);
    g_assert_cmpint(cap.destroyed, ==, 1);

    /* A send function that never gets its gradient: never done (FAST mode). */
    g_autoptr(RpcAgGraphTask) hang = rpc_ag_graph_task_new(fx->th, TRUE, FALSE);
    g_assert_true(rpc_ag_graph_task_add_root(hang, loss, NULL, 0, &error));
    rpc_ag_graph_task_add_start_node(hang, send);
    rpc_ag_graph_task_add_start_node(hang, send); /* counted once */
    g_assert_true(rpc_ag_graph_task_prepare(hang, &error));
    g_assert_true(rpc_ag_graph_task_run(hang, &error));
    g_assert_false(rpc_ag_graph_task_is_done(hang));
    /* Without capture the leaves accumulate as a local backward would. */
    g_assert_null(rpc_ag_grad(t1));

    /* An error in a node fails the task, sticky, with its text. */
    rd->fail = TRUE;
    g_autoptr(RpcAgGraphTask) bad = rpc_ag_graph_task_new(fx->th, TRUE, FALSE);
    g_assert_true(rpc_ag_graph_task_add_root(bad, loss, NULL, 0, &error));
    rpc_ag_graph_task_add_start_node(bad, send);
    g_assert_true(rpc_ag_graph_task_prepare(bad, &error));
    g_assert_false(rpc_ag_graph_task_run(bad, &error));
    check_error(&error, RPC_ERROR_EXCEPTION, "Simulate error on backward pass");
    g_assert_true(rpc_ag_graph_task_is_done(bad));
    g_assert_false(rpc_ag_graph_task_run(bad, &error));
    check_error(&error, RPC_ERROR_EXCEPTION, "Simulate error on backward pass");
    g_assert_false(rpc_ag_graph_task_inject(bad, send, NULL, 0, &error));
    check_error(&error, RPC_ERROR_EXCEPTION, "Simulate error on backward pass");
    /* After the cause is gone, the retained graph works again. */
    rd->fail = FALSE;
    backward_ok(fx, loss, TRUE);

    /* A root given as an edge, e.g. to start at a node directly. */
    g_autoptr(RpcAgGraphTask) direct = rpc_ag_graph_task_new(fx->th, TRUE, FALSE);
    g_autoptr(RpcTensor) seed = tensor(F64, 1, SHAPE(2), VALS(5, 6));
    rpc_ag_graph_task_add_root_edge(direct, send, 0, NULL);
    rpc_ag_graph_task_add_root_edge(direct, recv, 0, seed);
    rpc_ag_graph_task_add_root_edge(direct, NULL, 0, NULL);
    g_string_truncate(rd->log, 0);
    g_assert_true(rpc_ag_graph_task_prepare(direct, &error));
    g_assert_true(rpc_ag_graph_task_run(direct, &error));
    g_assert_true(g_str_has_prefix(rd->log->str, "send 0 tensor([5., 6.]"));
    check_grad(t1, 1, SHAPE(2), VALS(2, 2)); /* send ran with no input: its stored grads */

    g_string_free(rd->log, TRUE);
    g_string_free(cap.log, TRUE);
    rpc_ag_node_unref(send);
    rpc_ag_node_unref(recv);
}

/* A start node with inputs (SendRpcBackward as an identity over injected
 * gradients) whose class frees something after a non-retained pass. */
static gboolean
identity_apply(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **gout,
               GError **error)
{
    for (guint i = 0; i < rpc_ag_node_n_next(node); i++)
        gout[i] = gin[i] != NULL ? rpc_tensor_ref(gin[i]) : NULL;
    return TRUE;
}

static void
identity_release(RpcAgNode *node)
{
    (*(int *)rpc_ag_node_data(node))++;
}

static const RpcAgNodeClass identity_class = {
    .name = "SendRpcBackward", .apply = identity_apply, .release_variables = identity_release};

static void
bump_int(gpointer p)
{
    (*(int *)p)++;
}

static void
test_start_node_inputs(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    int released = 0;
    g_autoptr(RpcTensor) t1 = leaf(1, SHAPE(2), VALS(1, 1));
    g_autoptr(RpcTensor) t2 = leaf(2, SHAPE(1, 2), VALS(1, 1));
    g_autoptr(RpcTensor) y = rpc_ag_exp(fx->th, t2, &error);
    g_autoptr(RpcAgNode) send = rpc_ag_node_new(fx->th, &identity_class, &released);
    rpc_ag_node_add_next_edge_for(send, fx->th, t1);
    rpc_ag_node_add_next_edge_for(send, fx->th, y);
    rpc_ag_node_add_next_edge(send, NULL, 7);
    g_assert_cmpuint(rpc_ag_node_add_input(send, t1), ==, 0);
    g_assert_cmpuint(rpc_ag_node_add_input(send, y), ==, 1);
    g_assert_cmpuint(rpc_ag_node_add_input(send, NULL), ==, 2);
    guint nr = 99;
    g_assert_null(rpc_ag_node_next(send, 2, &nr)); /* no grad: an empty edge */
    g_assert_cmpuint(nr, ==, 0);
    g_assert_nonnull(rpc_ag_node_next(send, 1, &nr));
    g_assert_cmpuint(nr, ==, 0);
    g_assert_null(rpc_ag_node_input_zeros(send, 2));
    g_autoptr(RpcTensor) z = rpc_ag_node_input_zeros(send, 1);
    check_values(z, 2, SHAPE(1, 2), VALS(0, 0));

    g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(fx->th, FALSE, FALSE);
    int unset = 0;
    rpc_ag_graph_task_set_capture(task, capture_leaf, &unset, bump_int);
    rpc_ag_graph_task_set_capture(task, NULL, NULL, NULL); /* replaces: destroy runs */
    g_assert_cmpint(unset, ==, 1);
    rpc_ag_graph_task_add_start_node(task, send);
    g_assert_true(rpc_ag_graph_task_prepare(task, &error));
    g_assert_true(rpc_ag_graph_task_run(task, &error)); /* nothing ready */
    g_assert_false(rpc_ag_graph_task_is_done(task));
    g_autoptr(RpcTensor) g1 = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    g_autoptr(RpcTensor) g2 = tensor(F32, 2, SHAPE(1, 2), VALS(3, 4));
    RpcTensor *grads[] = {g1, g2, NULL};
    g_assert_true(rpc_ag_graph_task_inject(task, send, grads, 3, &error));
    g_assert_true(rpc_ag_graph_task_run(task, &error));
    g_assert_true(rpc_ag_graph_task_is_done(task));
    g_assert_cmpint(released, ==, 1);
    check_grad(t1, 1, SHAPE(2), VALS(1, 2));
    check_grad(t2, 2, SHAPE(1, 2), VALS(3 * exp(1.0), 4 * exp(1.0)));
}

/* Post hooks can be removed; their destroy notifies run once. */
static void
test_remove_post_hook(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    GString *log = g_string_new(NULL);
    int destroyed = 0;
    Scale sc = {1, &destroyed};
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(1), VALS(1));
    guint h = rpc_ag_register_post_accumulate_hook(x, post_hook, log, NULL, &error);
    guint h2 = rpc_ag_register_post_accumulate_hook(x, post_hook, &sc, scale_destroy, &error);
    g_assert_true(rpc_ag_remove_hook(x, h2));
    g_assert_cmpint(destroyed, ==, 1);
    g_assert_true(rpc_ag_remove_hook(x, h));
    g_autoptr(RpcTensor) s = sum_of(fx, x);
    backward_ok(fx, s, FALSE);
    g_assert_cmpstr(log->str, ==, "");
    g_string_free(log, TRUE);
    /* Destroy notifies of post hooks still registered run with the tensor. */
    RpcTensor *w = leaf(1, SHAPE(1), VALS(1));
    rpc_ag_register_post_accumulate_hook(w, post_hook, &sc, scale_destroy, &error);
    rpc_tensor_unref(w);
    g_assert_cmpint(destroyed, ==, 2);
}

/* Output validation of a user node: broadcast shapes are reduced, dtypes
 * cast, others rejected with PyTorch's text. */
typedef struct {
    RpcTensor *grad;
} FixedData;

static gboolean
fixed_apply(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **gout,
            GError **error)
{
    FixedData *d = rpc_ag_node_data(node);
    gout[0] = rpc_tensor_ref(d->grad);
    return TRUE;
}

static void
fixed_finalize(gpointer p)
{
    FixedData *d = p;
    rpc_tensor_unref(d->grad);
    g_free(d);
}

static const RpcAgNodeClass fixed_class = {
    .name = "FixedBackward", .apply = fixed_apply, .finalize = fixed_finalize};

static void
run_fixed(Fx *fx, RpcTensor *x, RpcTensor *grad, GError **error)
{
    FixedData *d = g_new0(FixedData, 1);
    d->grad = grad;
    g_autoptr(RpcAgNode) node = rpc_ag_node_new(fx->th, &fixed_class, d);
    rpc_ag_node_add_next_edge_for(node, fx->th, x);
    g_autoptr(RpcTensor) out = tensor(F64, 0, NULL, VALS(0));
    rpc_ag_set_history(out, node);
    rpc_ag_backward(fx->th, &out, NULL, 1, FALSE, FALSE, error);
}

static void
test_validate_outputs(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(0, 0, 0));
    run_fixed(fx, x, tensor(F64, 1, SHAPE(2), VALS(1, 2)), &error);
    check_error(&error, RPC_ERROR_RUNTIME,
                "Function FixedBackward returned an invalid gradient at index 0 - got [2] but "
                "expected shape compatible with [3]");
    run_fixed(fx, x, tensor(F64, 2, SHAPE(3, 1), VALS(1, 2, 3)), &error);
    check_error(&error, RPC_ERROR_RUNTIME,
                "Function FixedBackward returned an invalid gradient at index 0 - got [3, 1] but "
                "expected shape compatible with [3]");
    run_fixed(fx, x, tensor(F64, 1, SHAPE(1), VALS(1)), &error);
    check_error(&error, RPC_ERROR_RUNTIME,
                "Function FixedBackward returned an invalid gradient at index 0 - got [1] but "
                "expected shape compatible with [3]");
    g_assert_null(rpc_ag_grad(x));
    run_fixed(fx, x, tensor(F64, 2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6)), &error);
    g_assert_no_error(error);
    check_grad(x, 1, SHAPE(3), VALS(5, 7, 9));
    run_fixed(fx, x, tensor(F32, 1, SHAPE(3), VALS(0.5, 0.5, 0.5)), &error);
    g_assert_no_error(error);
    check_grad(x, 1, SHAPE(3), VALS(5.5, 7.5, 9.5));
    g_autoptr(RpcTensor) s = tensor(F64, 0, NULL, VALS(0));
    g_assert_true(rpc_ag_set_requires_grad(s, TRUE, NULL));
    run_fixed(fx, s, tensor(F64, 0, NULL, VALS(0)), &error);
    run_fixed(fx, s, tensor(F64, 2, SHAPE(1, 2), VALS(1, 2)), &error);
    g_assert_no_error(error);
    check_grad(s, 0, NULL, VALS(3));
}

/* ---- autograd.grad and create_graph ------------------------------------------- */

static void
test_autograd_grad(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    RpcTensor *g[2];
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(3), VALS(1, 2, 3));
    g_autoptr(RpcTensor) z = leaf(1, SHAPE(3), VALS(1, 1, 1));
    g_autoptr(RpcTensor) c = tensor(F64, 1, SHAPE(3), VALS(1, 1, 1));
    g_autoptr(RpcTensor) y = rpc_ag_mul_scalar(fx->th, x, 2, &error);
    g_autoptr(RpcTensor) s = sum_of(fx, y);

    g_assert_false(
        rpc_ag_autograd_grad(fx->th, &s, NULL, 1, NULL, 0, TRUE, FALSE, FALSE, g, &error));
    check_error(&error, RPC_ERROR_VALUE, "grad requires non-empty inputs.");
    g_assert_false(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &c, 1, TRUE, FALSE, FALSE, g, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "One of the differentiated Tensors does not require grad");
    g_assert_false(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &z, 1, TRUE, FALSE, FALSE, g, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "One of the differentiated Tensors appears to not have been used in the graph. "
                "Set allow_unused=True if this is the desired behavior.");
    RpcTensor *xz[] = {x, z};
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, xz, 2, TRUE, FALSE, TRUE, g, &error));
    check_values(g[0], 1, SHAPE(3), VALS(2, 2, 2));
    g_assert_null(g[1]);
    g_assert_null(rpc_ag_grad(x)); /* .grad untouched */
    rpc_tensor_unref(g[0]);
    /* The same input twice, and a non-leaf input (captured at its node). */
    RpcTensor *xx[] = {x, x};
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, xx, 2, TRUE, FALSE, FALSE, g, &error));
    check_values(g[0], 1, SHAPE(3), VALS(2, 2, 2));
    check_values(g[1], 1, SHAPE(3), VALS(2, 2, 2));
    rpc_tensor_unref(g[0]);
    rpc_tensor_unref(g[1]);
    double ten = 10;
    g_assert_cmpuint(rpc_ag_register_hook(y, hook_scale, &ten, NULL, &error), >, 0);
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &y, 1, TRUE, FALSE, FALSE, g, &error));
    check_values(g[0], 1, SHAPE(3), VALS(1, 1, 1)); /* 1.13: input hooks not applied */
    rpc_tensor_unref(g[0]);
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &x, 1, TRUE, FALSE, FALSE, g, &error));
    check_values(g[0], 1, SHAPE(3), VALS(20, 20, 20)); /* upstream hooks are */
    rpc_tensor_unref(g[0]);
    /* Without retain_graph the saved wrapped 2 goes. */
    g_assert_true(rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &x, 1, FALSE, FALSE, FALSE, g, &error));
    rpc_tensor_unref(g[0]);
    g_assert_false(
        rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &x, 1, FALSE, FALSE, FALSE, g, &error));
    check_error(&error, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
    g_assert_null(g[0]);
    /* Root errors as for backward. */
    g_assert_false(
        rpc_ag_autograd_grad(fx->th, &c, NULL, 1, &x, 1, FALSE, FALSE, FALSE, g, &error));
    check_error(&error, RPC_ERROR_RUNTIME,
                "element 0 of tensors does not require grad and does not have a grad_fn");
}

static void
test_create_graph(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    RpcTensor *g;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(0.5, 1.5));
    { /* d/dx x^3 = 3x^2 with history; d/dx of its sum = 6x. */
        g_autoptr(RpcTensor) y = rpc_ag_pow(fx->th, x, 3, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        g_assert_true(
            rpc_ag_autograd_grad(fx->th, &s, NULL, 1, &x, 1, FALSE, TRUE, FALSE, &g, &error));
        check_values(g, 1, SHAPE(2), VALS(0.75, 6.75));
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(g)), ==, "MulBackward0");
        g_autoptr(RpcTensor) gs = sum_of(fx, g);
        rpc_tensor_unref(g);
        backward_ok(fx, gs, FALSE);
        check_grad(x, 1, SHAPE(2), VALS(3, 9));
        rpc_ag_set_grad(x, NULL, NULL);
    }
    { /* backward(create_graph): .grad has history; accumulating again
       * adds out of place (AddBackward0).  Reset .grad to break the
       * parameter <-> gradient cycle PyTorch warns about. */
        g_autoptr(RpcTensor) y = rpc_ag_exp(fx->th, x, &error);
        g_autoptr(RpcTensor) s = sum_of(fx, y);
        g_assert_true(rpc_ag_backward(fx->th, &s, NULL, 1, TRUE, TRUE, &error));
        RpcTensor *g1 = rpc_ag_grad(x);
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(g1)), ==, "CopyBackwards");
        g_assert_cmpstr(next_name(rpc_ag_grad_fn(g1), 0), ==, "MulBackward0");
        g_assert_true(rpc_ag_backward(fx->th, &s, NULL, 1, FALSE, TRUE, &error));
        g_assert_cmpstr(rpc_ag_node_name(rpc_ag_grad_fn(rpc_ag_grad(x))), ==, "AddBackward0");
        check_grad(x, 1, SHAPE(2), VALS(2 * exp(0.5), 2 * exp(1.5)));
        rpc_ag_set_grad(x, NULL, NULL);
    }
}

/* ---- graph lifetime --------------------------------------------------------------- */

static void
test_graph_lifetime(Fx *fx, gconstpointer data)
{
    GError *error = NULL;
    g_autoptr(RpcTensor) x = leaf(1, SHAPE(2), VALS(1, 2));
    RpcTensor *a = rpc_ag_exp(fx->th, x, &error);    /* Exp + AccumulateGrad */
    RpcTensor *b = rpc_ag_mul(fx->th, a, a, &error); /* Mul */
    RpcTensor *c = rpc_ag_sum(fx->th, b, &error);    /* Sum */
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 4);
    rpc_tensor_unref(b);
    rpc_tensor_unref(c); /* Sum and Mul go; a still holds Exp */
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 2);
    rpc_tensor_unref(a);
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 0);
    g_assert_null(rpc_ag_meta(x)->grad_accumulator); /* the weak link was cleared */

    /* A long chain, through edges and saved tensors alike, is released
     * without recursion (and backward through it is iterative too). */
    const int n = 20000;
    g_autoptr(RpcTensor) w = scalar_leaf(1.0);
    RpcTensor *y = rpc_tensor_ref(x);
    for (int i = 0; i < n; i++) {
        RpcTensor *next =
            (i % 2) ? rpc_ag_mul(fx->th, y, w, &error) : rpc_ag_add_scalar(fx->th, y, 1.0, &error);
        rpc_tensor_unref(y);
        y = next;
    }
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, n + 2);
    g_autoptr(RpcTensor) s = sum_of(fx, y);
    backward_ok(fx, s, TRUE);
    check_grad(x, 1, SHAPE(2), VALS(1, 1));
    rpc_tensor_unref(y);
    g_clear_pointer(&s, rpc_tensor_unref);
    g_assert_cmpint(rpc_ag_state_live_nodes(fx->state), ==, 0);

    /* The same chain dropped without any backward. */
    y = rpc_tensor_ref(x);
    for (int i = 0; i < n; i++) {
        RpcTensor *next = rpc_ag_mul(fx->th, y, w, &error);
        rpc_tensor_unref(y);
        y = next;
    }
    rpc_tensor_unref(y);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    TEST("/autograd/state/grad-mode", test_grad_mode);
    TEST("/autograd/meta/requires-grad", test_requires_grad);
    TEST("/autograd/meta/set-grad", test_set_grad);
    TEST("/autograd/meta/repr", test_repr);
    TEST("/autograd/tensor/additions", test_tensor_additions);
    TEST("/autograd/ops/node-names", test_node_names);
    TEST("/autograd/ops/grad-elementwise", test_grad_elementwise);
    TEST("/autograd/ops/grad-reductions-and-shapes", test_grad_reductions_and_shapes);
    TEST("/autograd/ops/grad-matmul", test_grad_matmul);
    for (guint i = 0; i < G_N_ELEMENTS(grad_cases); i++) {
        g_autofree char *path = g_strdup_printf("/autograd/gradcheck/%s", grad_cases[i].name);
        g_test_add(path, Fx, &grad_cases[i], fx_setup, test_gradcheck, fx_teardown);
    }
    TEST("/autograd/ops/undefined-and-freed", test_undefined_and_freed);
    TEST("/autograd/engine/root-errors", test_root_errors);
    TEST("/autograd/engine/backward-twice", test_backward_twice);
    TEST("/autograd/engine/inplace-version", test_inplace_version);
    TEST("/autograd/engine/hooks", test_hooks);
    TEST("/autograd/engine/order-diamond", test_order_diamond);
    TEST("/autograd/engine/order-accumulate-first", test_order_accumulate_first);
    TEST("/autograd/engine/dist-api", test_dist_engine);
    TEST("/autograd/engine/validate-outputs", test_validate_outputs);
    TEST("/autograd/engine/start-node-inputs", test_start_node_inputs);
    TEST("/autograd/engine/remove-post-hook", test_remove_post_hook);
    TEST("/autograd/engine/autograd-grad", test_autograd_grad);
    TEST("/autograd/engine/create-graph", test_create_graph);
    TEST("/autograd/memory/graph-lifetime", test_graph_lifetime);
    return g_test_run();
}
