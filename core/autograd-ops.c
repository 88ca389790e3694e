/* autograd-ops.c — differentiable ops and their backward formulas.
 *
 * Purpose: each rpc_ag_<op> runs the forward through core/tensor.c and,
 * when grad mode is on and an input requires grad, records a node named as
 * PyTorch 1.13 names it, saving what the formula needs — only for the
 * inputs that need a gradient, as PyTorch's generated code does (so which
 * ops fail a second backward with "Trying to backward through the graph a
 * second time" matches: AddBackward0 saves nothing, MulBackward0 does).
 *
 * Invariant: every formula is written with these same differentiable ops
 * on the engine's thread, so under create_graph the gradients carry
 * history and can be differentiated again; with grad mode off (the normal
 * case) they are plain tensor arithmetic.  Formulas follow
 * tools/autograd/derivatives.yaml and FunctionsManual.cpp, operation order
 * included, so float64 results equal PyTorch's bit for bit.
 *
 * Deviation: ReluBackward0 multiplies by a 0/1 mask where PyTorch's
 * threshold_backward selects, so an infinite or NaN incoming gradient at an
 * inactive unit gives NaN instead of 0.
 */
#include "core/autograd.h"

#include <string.h>

#include "core/autograd-private.h"
#include "core/error.h"
#include "core/tensor-private.h"

/* What a built-in node keeps.  Saved values are owned by node->saved. */
typedef struct {
    RpcAgSavedVar *a, *b; /* saved operands / result (nullable) */
    double s;             /* exponent, scalar */
    gint64 n;             /* stack count, select index */
    RpcDType dtype[2];
    guint ndim[2];
    gint64 shape[2][RPC_TENSOR_MAX_DIMS]; /* the inputs' shapes */
} OpData;

#define TRY(expr)                                                                                  \
    do {                                                                                           \
        if (!(expr))                                                                               \
            goto fail;                                                                             \
    } while (0)

/* ---- recording ------------------------------------------------------------ */

static void
op_data_free(gpointer p)
{
    g_free(p);
}

/* A node for an op over inputs (NULL entries: a Python number operand, an
 * empty edge), or NULL when grad mode is off or nothing needs a gradient. */
static RpcAgNode *
op_begin(RpcAgThread *th, const RpcAgNodeClass *klass, const char *name, RpcTensor *const *inputs,
         guint n)
{
    if (!th->grad_enabled)
        return NULL;
    gboolean any = FALSE;
    for (guint i = 0; i < n; i++)
        any |= inputs[i] != NULL && rpc_ag_requires_grad(inputs[i]);
    if (!any)
        return NULL;
    OpData *d = g_new0(OpData, 1);
    RpcAgNode *node = rpc_ag_node_new_named(th, klass, name, d);
    for (guint i = 0; i < n; i++) {
        if (inputs[i] != NULL)
            rpc_ag_node_add_next_edge_for(node, th, inputs[i]);
        else
            rpc_ag_node_add_next_edge(node, NULL, 0);
        if (i < 2 && inputs[i] != NULL) {
            d->dtype[i] = inputs[i]->dtype;
            d->ndim[i] = inputs[i]->ndim;
            memcpy(d->shape[i], inputs[i]->shape, sizeof d->shape[i]);
        }
    }
    return node;
}

/* Attaches out to node (if any) and drops the caller's node reference. */
static RpcTensor *
op_finish(RpcTensor *out, RpcAgNode *node)
{
    if (node != NULL) {
        if (out != NULL)
            rpc_ag_set_history(out, node);
        rpc_ag_node_unref(node);
    }
    return out;
}

static OpData *
op_data(RpcAgNode *node)
{
    return node->data;
}

/* should_compute_output(i): edge i leads somewhere. */
static gboolean
needs(const RpcAgNode *node, guint i)
{
    return i < node->next->len && g_array_index(node->next, RpcAgEdge, i).node != NULL;
}

/* grad reduced to input i's shape (validate_outputs would do it too). */
static RpcTensor *
reduce_to(RpcAgThread *th, RpcTensor *grad, const OpData *d, guint i, GError **error)
{
    if (grad->ndim == d->ndim[i] && memcmp(grad->shape, d->shape[i], sizeof d->shape[i]) == 0)
        return rpc_tensor_ref(grad);
    return rpc_ag_sum_to_size(th, grad, d->ndim[i], d->shape[i], error);
}

/* A Python number as PyTorch wraps it: 0-d, in the other operand's dtype. */
static RpcTensor *
wrapped_scalar(RpcDType dtype, double s)
{
    return rpc_tensor_new_scalar(dtype, s);
}

/* ---- formulas ------------------------------------------------------------- */
/* Each: grads_in[0] is the output's gradient (NULL: nothing flows, so no
 * outputs); set out[i] for the inputs that need one. */

static gboolean
add_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0))
        TRY(out[0] = reduce_to(th, gin[0], d, 0, error));
    if (needs(node, 1))
        TRY(out[1] = reduce_to(th, gin[0], d, 1, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
sub_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) neg = NULL;
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0))
        TRY(out[0] = reduce_to(th, gin[0], d, 0, error));
    if (needs(node, 1)) {
        TRY(neg = rpc_ag_neg(th, gin[0], error));
        TRY(out[1] = reduce_to(th, neg, d, 1, error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
mul_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) b = NULL;
    g_autoptr(RpcTensor) ga = NULL;
    g_autoptr(RpcTensor) gb = NULL;
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0)) { /* grad * other */
        TRY(rpc_ag_saved_unpack(d->b, node, &b, error));
        TRY(ga = rpc_ag_mul(th, gin[0], b, error));
        TRY(out[0] = reduce_to(th, ga, d, 0, error));
    }
    if (needs(node, 1)) { /* grad * self */
        TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
        TRY(gb = rpc_ag_mul(th, gin[0], a, error));
        TRY(out[1] = reduce_to(th, gb, d, 1, error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
div_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) b = NULL;
    g_autoptr(RpcTensor) ga = NULL;
    g_autoptr(RpcTensor) q = NULL;
    g_autoptr(RpcTensor) q2 = NULL;
    g_autoptr(RpcTensor) neg = NULL;
    g_autoptr(RpcTensor) gb = NULL;
    if (gin[0] == NULL)
        return TRUE;
    TRY(rpc_ag_saved_unpack(d->b, node, &b, error));
    if (needs(node, 0)) { /* grad / other */
        TRY(ga = rpc_ag_div(th, gin[0], b, error));
        TRY(out[0] = reduce_to(th, ga, d, 0, error));
    }
    if (needs(node, 1)) { /* -grad * ((self / other) / other) */
        TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
        TRY(q = rpc_ag_div(th, a, b, error));
        TRY(q2 = rpc_ag_div(th, q, b, error));
        TRY(neg = rpc_ag_neg(th, gin[0], error));
        TRY(gb = rpc_ag_mul(th, neg, q2, error));
        TRY(out[1] = reduce_to(th, gb, d, 1, error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
neg_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = rpc_ag_neg(th, gin[0], error)) != NULL;
}

static gboolean
mm_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
            GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) b = NULL;
    g_autoptr(RpcTensor) at = NULL;
    g_autoptr(RpcTensor) bt = NULL;
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0)) { /* grad.mm(mat2.t()) */
        TRY(rpc_ag_saved_unpack(d->b, node, &b, error));
        TRY(bt = rpc_ag_t(th, b, error));
        TRY(out[0] = rpc_ag_matmul(th, gin[0], bt, error));
    }
    if (needs(node, 1)) { /* mat1.t().mm(grad) */
        TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
        TRY(at = rpc_ag_t(th, a, error));
        TRY(out[1] = rpc_ag_matmul(th, at, gin[0], error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
dot_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) b = NULL;
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0)) { /* grad * tensor */
        TRY(rpc_ag_saved_unpack(d->b, node, &b, error));
        TRY(out[0] = rpc_ag_mul(th, gin[0], b, error));
    }
    if (needs(node, 1)) { /* grad * self */
        TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
        TRY(out[1] = rpc_ag_mul(th, gin[0], a, error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
mv_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
            GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) v = NULL;
    g_autoptr(RpcTensor) col = NULL;
    g_autoptr(RpcTensor) row = NULL;
    g_autoptr(RpcTensor) at = NULL;
    if (gin[0] == NULL)
        return TRUE;
    if (needs(node, 0)) { /* grad.ger(vec): (m,1) @ (1,k) */
        TRY(rpc_ag_saved_unpack(d->b, node, &v, error));
        const gint64 cshape[2] = {gin[0]->shape[0], 1}, rshape[2] = {1, v->shape[0]};
        TRY(col = rpc_ag_view(th, gin[0], 2, cshape, error));
        TRY(row = rpc_ag_view(th, v, 2, rshape, error));
        TRY(out[0] = rpc_ag_matmul(th, col, row, error));
    }
    if (needs(node, 1)) { /* self.t().mv(grad) */
        TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
        TRY(at = rpc_ag_t(th, a, error));
        TRY(out[1] = rpc_ag_matmul(th, at, gin[0], error));
    }
    return TRUE;
fail:
    return FALSE;
}

static gboolean
sum_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = rpc_ag_expand(th, gin[0], d->ndim[0], d->shape[0], error)) != NULL;
}

static gboolean
mean_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
              GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) e = NULL;
    if (gin[0] == NULL)
        return TRUE;
    gint64 numel = 1;
    for (guint i = 0; i < d->ndim[0]; i++)
        numel *= d->shape[0][i];
    /* grad.expand(self.sizes()) / self.numel() */
    TRY(e = rpc_ag_expand(th, gin[0], d->ndim[0], d->shape[0], error));
    TRY(out[0] = rpc_ag_div_scalar(th, e, (double)numel, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
pow_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) p = NULL;
    g_autoptr(RpcTensor) sp = NULL;
    if (gin[0] == NULL)
        return TRUE;
    TRY(rpc_ag_saved_unpack(d->a, node, &a, error));
    if (d->s == 0.0) { /* zeros_like(self) */
        out[0] = rpc_tensor_new_full_like(a, 0.0);
        return TRUE;
    }
    /* grad * (exponent * self.pow(exponent - 1)) */
    TRY(p = rpc_ag_pow(th, a, d->s - 1.0, error));
    TRY(sp = rpc_ag_mul_scalar(th, p, d->s, error));
    TRY(out[0] = rpc_ag_mul(th, gin[0], sp, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
exp_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) result = NULL;
    if (gin[0] == NULL)
        return TRUE;
    TRY(rpc_ag_saved_unpack(d->a, node, &result, error)); /* grad * result */
    TRY(out[0] = rpc_ag_mul(th, gin[0], result, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
sin_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) c = NULL;
    if (gin[0] == NULL)
        return TRUE;
    TRY(rpc_ag_saved_unpack(d->a, node, &a, error)); /* grad * self.cos() */
    TRY(c = rpc_ag_cos(th, a, error));
    TRY(out[0] = rpc_ag_mul(th, gin[0], c, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
cos_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
             GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) a = NULL;
    g_autoptr(RpcTensor) s = NULL;
    g_autoptr(RpcTensor) ns = NULL;
    if (gin[0] == NULL)
        return TRUE;
    TRY(rpc_ag_saved_unpack(d->a, node, &a, error)); /* grad * -self.sin() */
    TRY(s = rpc_ag_sin(th, a, error));
    TRY(ns = rpc_ag_neg(th, s, error));
    TRY(out[0] = rpc_ag_mul(th, gin[0], ns, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
relu_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
              GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) result = NULL;
    g_autoptr(RpcTensor) mask = NULL;
    if (gin[0] == NULL)
        return TRUE;
    /* threshold_backward(grad, result, 0): grad where result > 0. */
    TRY(rpc_ag_saved_unpack(d->a, node, &result, error));
    double *m = g_new(double, MAX(result->numel, 1));
    for (gint64 i = 0; i < result->numel; i++)
        m[i] = rpc_tensor_get(result, i) > 0.0 ? 1.0 : 0.0;
    mask = rpc_tensor_new_from_doubles(result->dtype, result->ndim, result->shape, m);
    g_free(m);
    TRY(out[0] = rpc_ag_mul(th, gin[0], mask, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
sigmoid_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
                 GError **error)
{
    OpData *d = op_data(node);
    g_autoptr(RpcTensor) y = NULL;
    g_autoptr(RpcTensor) ny = NULL;
    g_autoptr(RpcTensor) one_minus = NULL;
    g_autoptr(RpcTensor) g1 = NULL;
    if (gin[0] == NULL)
        return TRUE;
    /* sigmoid_backward(grad, y) = grad * (1 - y) * y */
    TRY(rpc_ag_saved_unpack(d->a, node, &y, error));
    TRY(ny = rpc_ag_neg(th, y, error));
    TRY(one_minus = rpc_ag_add_scalar(th, ny, 1.0, error));
    TRY(g1 = rpc_ag_mul(th, gin[0], one_minus, error));
    TRY(out[0] = rpc_ag_mul(th, g1, y, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
stack_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
               GError **error)
{
    if (gin[0] == NULL)
        return TRUE;
    for (guint i = 0; i < node->next->len; i++) /* grad.unbind(0) */
        if (needs(node, i))
            TRY(out[i] = rpc_ag_select(th, gin[0], i, error));
    return TRUE;
fail:
    return FALSE;
}

static gboolean
view_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
              GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = rpc_ag_view(th, gin[0], d->ndim[0], d->shape[0], error)) != NULL;
}

static gboolean
t_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out, GError **error)
{
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = rpc_ag_t(th, gin[0], error)) != NULL;
}

static gboolean
expand_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
                GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = reduce_to(th, gin[0], d, 0, error)) != NULL;
}

static gboolean
select_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
                GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    /* select_backward: zeros of the input's shape with grad at index —
     * stacked from constant zero slices, so it stays differentiable. */
    guint n = (guint)d->shape[0][0];
    RpcTensor **slices = g_new0(RpcTensor *, n);
    for (guint i = 0; i < n; i++)
        slices[i] = (gint64)i == d->n
                        ? rpc_tensor_ref(gin[0])
                        : rpc_tensor_new_zeros(gin[0]->dtype, gin[0]->ndim, gin[0]->shape);
    out[0] = rpc_ag_stack(th, slices, n, error);
    for (guint i = 0; i < n; i++)
        rpc_tensor_unref(slices[i]);
    g_free(slices);
    return out[0] != NULL;
}

static gboolean
cast_backward(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *gin, RpcTensor **out,
              GError **error)
{
    OpData *d = op_data(node);
    if (gin[0] == NULL)
        return TRUE;
    return (out[0] = rpc_ag_cast(th, gin[0], d->dtype[0], error)) != NULL;
}

#define OP_CLASS(var, nm, fn)                                                                      \
    static const RpcAgNodeClass var = {.name = nm, .apply = fn, .finalize = op_data_free}

OP_CLASS(add_class, "AddBackward0", add_backward);
OP_CLASS(sub_class, "SubBackward0", sub_backward);
OP_CLASS(mul_class, "MulBackward0", mul_backward);
OP_CLASS(div_class, "DivBackward0", div_backward);
OP_CLASS(neg_class, "NegBackward0", neg_backward);
OP_CLASS(mm_class, "MmBackward0", mm_backward);
OP_CLASS(dot_class, "DotBackward0", dot_backward);
OP_CLASS(mv_class, "MvBackward0", mv_backward);
OP_CLASS(sum_class, "SumBackward0", sum_backward);
OP_CLASS(mean_class, "MeanBackward0", mean_backward);
OP_CLASS(pow_class, "PowBackward0", pow_backward);
OP_CLASS(exp_class, "ExpBackward0", exp_backward);
OP_CLASS(sin_class, "SinBackward0", sin_backward);
OP_CLASS(cos_class, "CosBackward0", cos_backward);
OP_CLASS(relu_class, "ReluBackward0", relu_backward);
OP_CLASS(sigmoid_class, "SigmoidBackward0", sigmoid_backward);
OP_CLASS(stack_class, "StackBackward0", stack_backward);
OP_CLASS(view_class, "ViewBackward0", view_backward);
OP_CLASS(t_class, "TBackward0", t_backward);
OP_CLASS(expand_class, "ExpandBackward0", expand_backward);
OP_CLASS(sum_to_size_class, "SumBackward1", sum_backward);
OP_CLASS(select_class, "SelectBackward0", select_backward);
OP_CLASS(cast_class, "ToCopyBackward0", cast_backward);
OP_CLASS(copy_class, "CopyBackwards", cast_backward);

/* ---- ops ------------------------------------------------------------------ */

#define CHECK_ARGS(th, a)                                                                          \
    g_return_val_if_fail((th) != NULL, NULL);                                                      \
    g_return_val_if_fail((a) != NULL, NULL);                                                       \
    g_return_val_if_fail(error == NULL || *error == NULL, NULL)

typedef RpcTensor *(*BinaryForward)(const RpcTensor *a, const RpcTensor *b, GError **error);

/* Elementwise a (op) b; saves a for input 1 and b for input 0 as asked. */
static RpcTensor *
binary(RpcAgThread *th, const RpcAgNodeClass *klass, BinaryForward fwd, RpcTensor *a, RpcTensor *b,
       gboolean save_b_for_a, gboolean save_a_for_b, gboolean save_b_for_b, GError **error)
{
    RpcTensor *in[2] = {a, b};
    RpcAgNode *node = op_begin(th, klass, NULL, in, 2);
    RpcTensor *out = fwd(a, b, error);
    if (node != NULL && out != NULL) {
        OpData *d = op_data(node);
        gboolean want_b = (needs(node, 0) && save_b_for_a) || (needs(node, 1) && save_b_for_b);
        if (needs(node, 1) && save_a_for_b)
            d->a = rpc_ag_node_save(node, a, FALSE);
        if (want_b)
            d->b = rpc_ag_node_save(node, b, FALSE);
    }
    return op_finish(out, node);
}

RpcTensor *
rpc_ag_add(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(b != NULL, NULL);
    return binary(th, &add_class, rpc_tensor_add, a, b, FALSE, FALSE, FALSE, error);
}

RpcTensor *
rpc_ag_sub(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(b != NULL, NULL);
    return binary(th, &sub_class, rpc_tensor_sub, a, b, FALSE, FALSE, FALSE, error);
}

RpcTensor *
rpc_ag_mul(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(b != NULL, NULL);
    return binary(th, &mul_class, rpc_tensor_mul, a, b, TRUE, TRUE, FALSE, error);
}

RpcTensor *
rpc_ag_div(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(b != NULL, NULL);
    return binary(th, &div_class, rpc_tensor_div, a, b, TRUE, TRUE, TRUE, error);
}

typedef RpcTensor *(*ScalarForward)(const RpcTensor *a, double s);

/* a (op) s for a Python number s: the node's second edge is empty; the
 * number is saved (wrapped) when the formula needs it. */
static RpcTensor *
scalar(RpcAgThread *th, const RpcAgNodeClass *klass, ScalarForward fwd, RpcTensor *a, double s,
       gboolean save_s)
{
    RpcTensor *in[2] = {a, NULL};
    RpcAgNode *node = op_begin(th, klass, NULL, in, 2);
    RpcTensor *out = fwd(a, s);
    if (node != NULL && save_s) {
        g_autoptr(RpcTensor) w = wrapped_scalar(a->dtype, s);
        op_data(node)->b = rpc_ag_node_save(node, w, FALSE);
    }
    return op_finish(out, node);
}

RpcTensor *
rpc_ag_add_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error)
{
    CHECK_ARGS(th, a);
    return scalar(th, &add_class, rpc_tensor_add_scalar, a, s, FALSE);
}

RpcTensor *
rpc_ag_mul_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error)
{
    CHECK_ARGS(th, a);
    return scalar(th, &mul_class, rpc_tensor_mul_scalar, a, s, TRUE);
}

RpcTensor *
rpc_ag_div_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error)
{
    CHECK_ARGS(th, a);
    return scalar(th, &div_class, rpc_tensor_div_scalar, a, s, TRUE);
}

typedef void (*InplaceForward)(RpcTensor *t, double s);

/* t.add_(s) / t.mul_(s): check_inplace, write, bump, rebase_history. */
static gboolean
inplace(RpcAgThread *th, const RpcAgNodeClass *klass, InplaceForward fwd, RpcTensor *t, double s,
        gboolean save_s, GError **error)
{
    g_return_val_if_fail(th != NULL, FALSE);
    g_return_val_if_fail(t != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (th->grad_enabled && rpc_ag_is_leaf(t) && rpc_ag_requires_grad(t)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "a leaf Variable that requires grad is being used in an in-place "
                            "operation.");
        return FALSE;
    }
    RpcTensor *in[2] = {t, NULL};
    RpcAgNode *node = op_begin(th, klass, NULL, in, 2);
    fwd(t, s);
    if (node != NULL) {
        if (save_s) {
            g_autoptr(RpcTensor) w = wrapped_scalar(t->dtype, s);
            op_data(node)->b = rpc_ag_node_save(node, w, FALSE);
        }
        rpc_ag_set_history(t, node);
        rpc_ag_node_unref(node);
    }
    return TRUE;
}

gboolean
rpc_ag_add_scalar_(RpcAgThread *th, RpcTensor *t, double s, GError **error)
{
    return inplace(th, &add_class, rpc_tensor_add_scalar_inplace, t, s, FALSE, error);
}

gboolean
rpc_ag_mul_scalar_(RpcAgThread *th, RpcTensor *t, double s, GError **error)
{
    return inplace(th, &mul_class, rpc_tensor_mul_scalar_inplace, t, s, TRUE, error);
}

typedef RpcTensor *(*UnaryForward)(const RpcTensor *a);

/* One-input op; save: 0 nothing, 1 the input, 2 the result. */
static RpcTensor *
unary(RpcAgThread *th, const RpcAgNodeClass *klass, UnaryForward fwd, RpcTensor *a, int save)
{
    RpcAgNode *node = op_begin(th, klass, NULL, &a, 1);
    RpcTensor *out = fwd(a);
    if (node != NULL && save == 1)
        op_data(node)->a = rpc_ag_node_save(node, a, FALSE);
    op_finish(out, node == NULL ? NULL : rpc_ag_node_ref(node));
    if (node != NULL) {
        if (save == 2) /* after set_history: the output is node's own */
            op_data(node)->a = rpc_ag_node_save(node, out, TRUE);
        rpc_ag_node_unref(node);
    }
    return out;
}

RpcTensor *
rpc_ag_neg(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &neg_class, rpc_tensor_neg, a, 0);
}

RpcTensor *
rpc_ag_exp(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &exp_class, rpc_tensor_exp, a, 2);
}

RpcTensor *
rpc_ag_sin(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &sin_class, rpc_tensor_sin, a, 1);
}

RpcTensor *
rpc_ag_cos(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &cos_class, rpc_tensor_cos, a, 1);
}

RpcTensor *
rpc_ag_relu(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &relu_class, rpc_tensor_relu, a, 2);
}

RpcTensor *
rpc_ag_sigmoid(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &sigmoid_class, rpc_tensor_sigmoid, a, 2);
}

RpcTensor *
rpc_ag_sum(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &sum_class, rpc_tensor_sum, a, 0);
}

RpcTensor *
rpc_ag_mean(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    return unary(th, &mean_class, rpc_tensor_mean, a, 0);
}

RpcTensor *
rpc_ag_pow(RpcAgThread *th, RpcTensor *a, double exponent, GError **error)
{
    CHECK_ARGS(th, a);
    RpcAgNode *node = op_begin(th, &pow_class, NULL, &a, 1);
    RpcTensor *out = rpc_tensor_pow_scalar(a, exponent);
    if (node != NULL) {
        op_data(node)->s = exponent;
        op_data(node)->a = rpc_ag_node_save(node, a, FALSE);
    }
    return op_finish(out, node);
}

RpcTensor *
rpc_ag_t(RpcAgThread *th, RpcTensor *a, GError **error)
{
    CHECK_ARGS(th, a);
    RpcAgNode *node = op_begin(th, &t_class, NULL, &a, 1);
    return op_finish(rpc_tensor_t(a, error), node);
}

/* A reshape recorded under name (ViewBackward0, or the unsqueeze/squeeze
 * of matmul's 1-d @ 2-d case). */
static RpcTensor *
view_named(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape, const char *name,
           GError **error)
{
    RpcAgNode *node = op_begin(th, &view_class, name, &a, 1);
    return op_finish(rpc_tensor_view(a, ndim, shape, error), node);
}

RpcTensor *
rpc_ag_view(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    return view_named(th, a, ndim, shape, NULL, error);
}

RpcTensor *
rpc_ag_expand(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    RpcAgNode *node = op_begin(th, &expand_class, NULL, &a, 1);
    return op_finish(rpc_tensor_expand(a, ndim, shape, error), node);
}

RpcTensor *
rpc_ag_sum_to_size(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    RpcAgNode *node = op_begin(th, &sum_to_size_class, NULL, &a, 1);
    return op_finish(rpc_tensor_sum_to_size(a, ndim, shape, error), node);
}

RpcTensor *
rpc_ag_select(RpcAgThread *th, RpcTensor *a, gint64 index, GError **error)
{
    CHECK_ARGS(th, a);
    RpcAgNode *node = op_begin(th, &select_class, NULL, &a, 1);
    RpcTensor *out = rpc_tensor_select(a, index, error);
    if (node != NULL && out != NULL)
        op_data(node)->n = index < 0 ? index + a->shape[0] : index;
    return op_finish(out, node);
}

RpcTensor *
rpc_ag_cast(RpcAgThread *th, RpcTensor *a, RpcDType dtype, GError **error)
{
    CHECK_ARGS(th, a);
    RpcAgNode *node = op_begin(th, &cast_class, NULL, &a, 1);
    return op_finish(rpc_tensor_cast(a, dtype), node);
}

RpcTensor *
rpc_ag_copy_for_grad(RpcAgThread *th, RpcTensor *a)
{
    RpcAgNode *node = op_begin(th, &copy_class, NULL, &a, 1);
    return op_finish(rpc_tensor_cast(a, a->dtype), node);
}

RpcTensor *
rpc_ag_stack(RpcAgThread *th, RpcTensor *const *ts, guint n, GError **error)
{
    g_return_val_if_fail(th != NULL, NULL);
    g_return_val_if_fail(n == 0 || ts != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    RpcAgNode *node = op_begin(th, &stack_class, NULL, ts, n);
    return op_finish(rpc_tensor_stack(ts, n, error), node);
}

/* Two-operand matmul node (mm, dot, mv): saves each operand for the other. */
static RpcTensor *
matmul_node(RpcAgThread *th, const RpcAgNodeClass *klass, RpcTensor *a, RpcTensor *b,
            GError **error)
{
    return binary(th, klass, rpc_tensor_matmul, a, b, TRUE, TRUE, FALSE, error);
}

RpcTensor *
rpc_ag_matmul(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error)
{
    CHECK_ARGS(th, a);
    g_return_val_if_fail(b != NULL, NULL);
    if (a->ndim == 2 && b->ndim == 2)
        return matmul_node(th, &mm_class, a, b, error);
    if (a->ndim == 1 && b->ndim == 1)
        return matmul_node(th, &dot_class, a, b, error);
    if (a->ndim == 2 && b->ndim == 1)
        return matmul_node(th, &mv_class, a, b, error);
    if (a->ndim == 1 && b->ndim == 2) {
        /* PyTorch: a.unsqueeze(0).mm(b).squeeze(0). */
        const gint64 row[2] = {1, a->shape[0]};
        g_autoptr(RpcTensor) a2 = view_named(th, a, 2, row, "UnsqueezeBackward0", error);
        g_autoptr(RpcTensor) m = rpc_ag_matmul(th, a2, b, error);
        if (m == NULL)
            return NULL;
        return view_named(th, m, 1, m->shape + 1, "SqueezeBackward3", error);
    }
    return rpc_tensor_matmul(a, b, error); /* 0-d or > 2-d: its error */
}
