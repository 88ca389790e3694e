/* autograd-function.c — custom autograd functions (torch.autograd.Function).
 *
 * Purpose: the C counterpart of Function.apply and PyNode
 * (torch/csrc/autograd/python_function.cpp, custom_function.cpp, 1.13):
 * forward under no-grad, then the output wrapping rules (mark_dirty,
 * mark_non_differentiable, inputs returned as outputs, non-tensor outputs),
 * save_for_backward with version checks, and on backward the
 * materialisation of undefined gradients, the arity and type checks on
 * what backward returns, and @once_differentiable.
 *
 * Invariant: the node ("<Name>Backward") owns its RpcAgCtx; outputs own
 * the node.  A call whose node is not executable (grad mode off or no
 * tensor input requiring grad) frees node and ctx before returning.
 *
 * Not representable in C and so not modelled: calling a Function instance
 * (the legacy non-static forward error) and defining both backward and vjp.
 */
#include "core/autograd.h"

#include <string.h>

#include "core/autograd-private.h"
#include "core/error.h"
#include "core/value.h"

struct RpcAgCtx {
    const RpcAgFunction *fn;
    RpcAgThread *thread; /* inside forward/backward only */
    RpcAgNode *node;     /* weak: the node owns this ctx */
    guint n_inputs;
    gboolean *is_tensor_input;
    gboolean *needs_input_grad;
    gboolean executable;
    GPtrArray *to_save;  /* RpcValue*, until the outputs are wrapped */
    GPtrArray *dirty;    /* RpcValue* */
    GPtrArray *non_diff; /* RpcValue* */
    gboolean materialize_grads;
    GArray *output_info; /* RpcAgInputMeta per output, for zeros */
    gpointer user_data;
    GDestroyNotify user_destroy;
};

#define ERR_ONCE_DIFFERENTIABLE                                                                    \
    "trying to differentiate twice a function that was marked with @once_differentiable"

static void
value_unref0(gpointer v)
{
    if (v != NULL)
        rpc_value_unref(v);
}

static void
tensor_unref0(gpointer t)
{
    if (t != NULL)
        rpc_tensor_unref(t);
}

/* Python's type(v).__name__ for the error texts. */
static const char *
type_name(const RpcValue *v)
{
    if (v == NULL)
        return "NoneType";
    if (rpc_value_type(v) == RPC_VALUE_OPAQUE)
        return rpc_value_opaque_type(v)->name;
    return rpc_value_type_name(rpc_value_type(v));
}

static gboolean
is_none(const RpcValue *v)
{
    return v == NULL || rpc_value_is_none(v);
}

static RpcTensor *
as_tensor(const RpcValue *v)
{
    return v != NULL && rpc_value_type(v) == RPC_VALUE_TENSOR ? rpc_value_get_tensor(v) : NULL;
}

static GPtrArray *
values_copy(RpcValue *const *values, guint n)
{
    GPtrArray *a = g_ptr_array_new_full(n, value_unref0);
    for (guint i = 0; i < n; i++)
        g_ptr_array_add(a, values[i] != NULL ? rpc_value_ref(values[i]) : NULL);
    return a;
}

static void
ctx_free(gpointer p)
{
    RpcAgCtx *ctx = p;
    g_free(ctx->is_tensor_input);
    g_free(ctx->needs_input_grad);
    if (ctx->to_save != NULL)
        g_ptr_array_unref(ctx->to_save);
    if (ctx->dirty != NULL)
        g_ptr_array_unref(ctx->dirty);
    if (ctx->non_diff != NULL)
        g_ptr_array_unref(ctx->non_diff);
    g_array_free(ctx->output_info, TRUE);
    if (ctx->user_destroy != NULL)
        ctx->user_destroy(ctx->user_data);
    g_free(ctx);
}

/* ---- the error node of @once_differentiable -------------------------------- */

static gboolean
error_apply(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in, RpcTensor **grads_out,
            GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, ERR_ONCE_DIFFERENTIABLE);
    return FALSE;
}

static const RpcAgNodeClass error_class = {
    .name = "torch::autograd::Error",
    .apply = error_apply,
};

/* once_differentiable's wrapper: with grad mode on and a gradient argument
 * requiring grad, each returned tensor becomes an output of an error node,
 * so differentiating through it again fails. */
static void
wrap_once_differentiable(RpcAgThread *th, GPtrArray *results)
{
    RpcAgNode *err = rpc_ag_node_new(th, &error_class, NULL);
    for (guint i = 0; i < results->len; i++) {
        RpcTensor *t = as_tensor(g_ptr_array_index(results, i));
        if (t == NULL)
            continue;
        guint nr = rpc_ag_node_add_input(err, t);
        RpcValue *v = rpc_value_new_tensor(rpc_ag_alias_with_history(t, err, nr));
        rpc_value_unref(g_ptr_array_index(results, i));
        g_ptr_array_index(results, i) = v;
    }
    rpc_ag_node_unref(err);
}

/* ---- PyNode ------------------------------------------------------------------ */

static gboolean
py_node_apply(RpcAgNode *node, RpcAgThread *th, RpcTensor *const *grads_in, RpcTensor **grads_out,
              GError **error)
{
    RpcAgCtx *ctx = node->data;
    const RpcAgFunction *fn = ctx->fn;
    const char *name = rpc_ag_node_name(node);
    guint n = node->inputs->len;
    gboolean ok = FALSE;

    if (fn->backward == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_NOT_IMPLEMENTED,
                            "You must implement either the backward or vjp method for your "
                            "custom autograd.Function to use it with backward mode AD.");
        return FALSE;
    }
    GPtrArray *grads = g_ptr_array_new_full(n, tensor_unref0);
    gboolean any_requires_grad = FALSE;
    for (guint i = 0; i < n; i++) {
        const RpcAgInputMeta *info = &g_array_index(ctx->output_info, RpcAgInputMeta, i);
        RpcTensor *g = NULL;
        if (grads_in[i] != NULL)
            g = rpc_tensor_ref(grads_in[i]);
        else if (ctx->materialize_grads && info->defined)
            g = rpc_tensor_new_zeros(info->dtype, info->ndim, info->shape);
        any_requires_grad |= g != NULL && rpc_ag_requires_grad(g);
        g_ptr_array_add(grads, g);
    }

    gboolean outer_grad_mode = th->grad_enabled;
    if (fn->once_differentiable)
        rpc_ag_thread_set_grad_enabled(th, FALSE);
    GPtrArray *results = g_ptr_array_new_with_free_func(value_unref0);
    ctx->thread = th;
    gboolean called = fn->backward(ctx, (RpcTensor *const *)grads->pdata, n, results, error);
    ctx->thread = NULL;
    rpc_ag_thread_set_grad_enabled(th, outer_grad_mode);
    if (!called)
        goto out;
    if (fn->once_differentiable && outer_grad_mode && any_requires_grad)
        wrap_once_differentiable(th, results);

    /* Too many results are fine when the extra ones are all None. */
    guint got = results->len, want = ctx->n_inputs;
    if (got > want) {
        gboolean all_none = TRUE;
        for (guint i = want; i < got; i++)
            all_none &= is_none(g_ptr_array_index(results, i));
        if (all_none)
            got = want;
    }
    if (got != want) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "function %s returned an incorrect number of gradients (expected %u, got %u)",
                    name, want, got);
        goto out;
    }
    guint edge = 0;
    for (guint i = 0; i < want; i++) {
        RpcValue *v = g_ptr_array_index(results, i);
        if (!ctx->is_tensor_input[i]) {
            if (!is_none(v)) {
                g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "function %s returned a gradient different than None at position %u, "
                            "but the corresponding forward input was not a Variable",
                            name, i + 1);
                goto out;
            }
            continue;
        }
        if (!is_none(v) && as_tensor(v) == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "expected Variable or None (got %s)",
                        type_name(v));
            goto out;
        }
        if (!is_none(v))
            grads_out[edge] = rpc_tensor_ref(as_tensor(v));
        edge++;
    }
    ok = TRUE;
out:
    if (!ok) {
        for (guint i = 0; i < node->next->len; i++)
            g_clear_pointer(&grads_out[i], rpc_tensor_unref);
    }
    g_ptr_array_unref(results);
    g_ptr_array_unref(grads);
    return ok;
}

static const RpcAgNodeClass py_node_class = {
    .name = "Backward",
    .apply = py_node_apply,
    .finalize = ctx_free,
};

RpcAgCtx *
rpc_ag_node_ctx(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, NULL);
    return node->klass == &py_node_class ? node->data : NULL;
}

/* ---- apply --------------------------------------------------------------------- */

static gboolean
in_set(GHashTable *set, const RpcTensor *t)
{
    return g_hash_table_contains(set, t);
}

/* _wrap_outputs and _save_variables (process_outputs). */
static gboolean
process_outputs(RpcAgCtx *ctx, RpcValue *const *inputs, GPtrArray *outputs, GError **error)
{
    RpcAgNode *node = ctx->node;
    gboolean ok = FALSE;
    /* Pointer sets, only ever looked up (never iterated). */
    GHashTable *non_diff = g_hash_table_new(g_direct_hash, g_direct_equal);
    GHashTable *dirty = g_hash_table_new(g_direct_hash, g_direct_equal);
    GHashTable *input_set = g_hash_table_new(g_direct_hash, g_direct_equal);
    GHashTable *output_set = g_hash_table_new(g_direct_hash, g_direct_equal);

    for (guint i = 0; ctx->non_diff != NULL && i < ctx->non_diff->len; i++) {
        RpcValue *v = g_ptr_array_index(ctx->non_diff, i);
        if (as_tensor(v) == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "mark_non_differentiable only accepts variable arguments, but got %s",
                        type_name(v));
            goto out;
        }
        g_hash_table_add(non_diff, as_tensor(v));
    }
    for (guint i = 0; ctx->dirty != NULL && i < ctx->dirty->len; i++) {
        RpcValue *v = g_ptr_array_index(ctx->dirty, i);
        if (as_tensor(v) == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "mark_dirty can only accept variables, but argument %u is of type %s", i,
                        type_name(v));
            goto out;
        }
        g_hash_table_add(dirty, as_tensor(v));
        rpc_tensor_bump_version(as_tensor(v));
    }
    for (guint i = 0; i < ctx->n_inputs; i++)
        if (ctx->is_tensor_input[i])
            g_hash_table_add(input_set, as_tensor(inputs[i]));

    for (guint i = 0; i < outputs->len; i++) {
        RpcValue *v = g_ptr_array_index(outputs, i);
        RpcTensor *var = as_tensor(v);
        RpcAgInputMeta info = {0};
        if (var == NULL) { /* non-tensor outputs get an undefined slot */
            if (ctx->executable) {
                rpc_ag_node_add_input(node, NULL);
                g_array_append_val(ctx->output_info, info);
            }
            continue;
        }
        g_hash_table_add(output_set, var);
        gboolean is_input = in_set(input_set, var);
        gboolean is_modified = in_set(dirty, var);
        gboolean is_diff = ctx->executable && !in_set(non_diff, var);
        if (ctx->executable) {
            rpc_ag_node_add_input(node, is_diff ? var : NULL);
            info = (RpcAgInputMeta){TRUE, var->dtype, var->ndim, {0}};
            memcpy(info.shape, var->shape, sizeof info.shape);
            g_array_append_val(ctx->output_info, info);
        }
        RpcTensor *replacement = NULL;
        if (!is_diff) {
            if (!rpc_ag_requires_grad(var)) {
                if (is_input && !is_modified) /* a view of the input, no grad */
                    replacement = rpc_tensor_alias(var);
            } else if (is_input) { /* a detached alias */
                replacement = rpc_tensor_alias(var);
            } else { /* var.detach_() */
                RpcAgMeta *meta = rpc_ag_meta(var);
                if (meta->grad_fn != NULL)
                    g_clear_pointer(&meta->grad_fn, rpc_ag_node_unref);
                meta->requires_grad = FALSE;
            }
        } else if (is_modified) {
            if (rpc_ag_is_leaf(var) && rpc_ag_requires_grad(var)) {
                g_set_error_literal(
                    error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "a leaf Variable that requires grad has been used in an in-place operation.");
                goto out;
            }
            if (!is_input) /* PyTorch warns, once */
                g_info("Only input Tensors should be given to ctx.mark_dirty(). If a Tensor is "
                       "not an input, there is no need to pass it to mark_dirty().");
            rpc_ag_set_gradient_edge(var, node, i); /* rebase_history */
        } else if (is_input) {                      /* an unmodified input comes back as a view */
            replacement = rpc_ag_alias_with_history(var, node, i);
        } else {
            rpc_ag_set_gradient_edge(var, node, i);
        }
        if (replacement != NULL) {
            g_ptr_array_index(outputs, i) = rpc_value_new_tensor(replacement);
            rpc_value_unref(v);
        }
    }
    for (guint i = 0; ctx->dirty != NULL && i < ctx->dirty->len; i++) {
        if (!in_set(output_set, as_tensor(g_ptr_array_index(ctx->dirty, i)))) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "Some elements marked as dirty during the forward method were not "
                                "returned as output. The inputs that are modified inplace must all "
                                "be outputs of the Function.");
            goto out;
        }
    }
    /* After wrapping, so a saved output knows it is this node's. */
    for (guint i = 0; ctx->executable && ctx->to_save != NULL && i < ctx->to_save->len; i++) {
        RpcValue *v = g_ptr_array_index(ctx->to_save, i);
        RpcTensor *t = as_tensor(v);
        if (t == NULL && !is_none(v)) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "save_for_backward can only save variables, but argument %u is of type %s",
                        i, type_name(v));
            goto out;
        }
        rpc_ag_node_save(node, t, t != NULL && rpc_ag_grad_fn(t) == node);
    }
    ok = TRUE;
out:
    g_clear_pointer(&ctx->to_save, g_ptr_array_unref);
    g_clear_pointer(&ctx->dirty, g_ptr_array_unref);
    g_clear_pointer(&ctx->non_diff, g_ptr_array_unref);
    g_hash_table_destroy(non_diff);
    g_hash_table_destroy(dirty);
    g_hash_table_destroy(input_set);
    g_hash_table_destroy(output_set);
    return ok;
}

GPtrArray *
rpc_ag_function_apply(RpcAgThread *th, const RpcAgFunction *fn, RpcValue *const *inputs,
                      guint n_inputs, GError **error)
{
    g_return_val_if_fail(th != NULL, NULL);
    g_return_val_if_fail(fn != NULL && fn->name != NULL, NULL);
    g_return_val_if_fail(n_inputs == 0 || inputs != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (fn->forward == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_NOT_IMPLEMENTED,
                            "You must implement the forward function for custom "
                            "autograd.Function.");
        return NULL;
    }
    RpcAgCtx *ctx = g_new0(RpcAgCtx, 1);
    ctx->fn = fn;
    ctx->n_inputs = n_inputs;
    ctx->is_tensor_input = g_new0(gboolean, MAX(n_inputs, 1));
    ctx->needs_input_grad = g_new0(gboolean, MAX(n_inputs, 1));
    ctx->materialize_grads = TRUE;
    ctx->output_info = g_array_new(FALSE, TRUE, sizeof(RpcAgInputMeta));
    g_autofree char *name = g_strdup_printf("%sBackward", fn->name);
    RpcAgNode *node = rpc_ag_node_new_named(th, &py_node_class, name, ctx);
    ctx->node = node;

    gboolean any = FALSE;
    for (guint i = 0; i < n_inputs; i++) {
        RpcTensor *t = as_tensor(inputs[i]);
        ctx->is_tensor_input[i] = t != NULL;
        ctx->needs_input_grad[i] = t != NULL && rpc_ag_requires_grad(t);
        any |= ctx->needs_input_grad[i];
    }
    ctx->executable = th->grad_enabled && any;
    for (guint i = 0; ctx->executable && i < n_inputs; i++)
        if (ctx->is_tensor_input[i])
            rpc_ag_node_add_next_edge_for(node, th, as_tensor(inputs[i]));

    GPtrArray *outputs = g_ptr_array_new_with_free_func(value_unref0);
    gboolean prev = rpc_ag_thread_set_grad_enabled(th, FALSE);
    ctx->thread = th;
    gboolean ok = fn->forward(ctx, inputs, n_inputs, outputs, error);
    ctx->thread = NULL;
    rpc_ag_thread_set_grad_enabled(th, prev);
    for (guint i = 0; ok && i < outputs->len; i++)
        if (g_ptr_array_index(outputs, i) == NULL)
            g_ptr_array_index(outputs, i) = rpc_value_none();
    if (ok)
        ok = process_outputs(ctx, inputs, outputs, error);
    rpc_ag_node_unref(node); /* the outputs hold it if it is attached */
    if (!ok) {
        g_ptr_array_unref(outputs);
        return NULL;
    }
    return outputs;
}

/* ---- ctx ------------------------------------------------------------------------ */

const RpcAgFunction *
rpc_ag_ctx_function(const RpcAgCtx *ctx)
{
    g_return_val_if_fail(ctx != NULL, NULL);
    return ctx->fn;
}

RpcAgThread *
rpc_ag_ctx_thread(const RpcAgCtx *ctx)
{
    g_return_val_if_fail(ctx != NULL, NULL);
    return ctx->thread;
}

void
rpc_ag_ctx_set_user_data(RpcAgCtx *ctx, gpointer data, GDestroyNotify destroy)
{
    g_return_if_fail(ctx != NULL);
    if (ctx->user_destroy != NULL)
        ctx->user_destroy(ctx->user_data);
    ctx->user_data = data;
    ctx->user_destroy = destroy;
}

gpointer
rpc_ag_ctx_get_user_data(const RpcAgCtx *ctx)
{
    g_return_val_if_fail(ctx != NULL, NULL);
    return ctx->user_data;
}

gboolean
rpc_ag_ctx_needs_input_grad(const RpcAgCtx *ctx, guint i)
{
    g_return_val_if_fail(ctx != NULL, FALSE);
    g_return_val_if_fail(i < ctx->n_inputs, FALSE);
    return ctx->needs_input_grad[i];
}

guint
rpc_ag_ctx_n_inputs(const RpcAgCtx *ctx)
{
    g_return_val_if_fail(ctx != NULL, 0);
    return ctx->n_inputs;
}

void
rpc_ag_ctx_save_for_backward(RpcAgCtx *ctx, RpcValue *const *values, guint n)
{
    g_return_if_fail(ctx != NULL);
    g_return_if_fail(n == 0 || values != NULL);
    if (ctx->to_save != NULL)
        g_ptr_array_unref(ctx->to_save);
    ctx->to_save = values_copy(values, n);
}

GPtrArray *
rpc_ag_ctx_saved_tensors(RpcAgCtx *ctx, GError **error)
{
    g_return_val_if_fail(ctx != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    RpcAgNode *node = ctx->node;
    if (node->released) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
        return NULL;
    }
    GPtrArray *out = g_ptr_array_new_with_free_func(tensor_unref0);
    for (guint i = 0; node->saved != NULL && i < node->saved->len; i++) {
        RpcTensor *t;
        if (!rpc_ag_saved_unpack(g_ptr_array_index(node->saved, i), node, &t, error)) {
            g_ptr_array_unref(out);
            return NULL;
        }
        g_ptr_array_add(out, t);
    }
    return out;
}

void
rpc_ag_ctx_mark_dirty(RpcAgCtx *ctx, RpcValue *const *values, guint n)
{
    g_return_if_fail(ctx != NULL);
    g_return_if_fail(n == 0 || values != NULL);
    if (ctx->dirty != NULL)
        g_ptr_array_unref(ctx->dirty);
    ctx->dirty = values_copy(values, n);
}

void
rpc_ag_ctx_mark_non_differentiable(RpcAgCtx *ctx, RpcValue *const *values, guint n)
{
    g_return_if_fail(ctx != NULL);
    g_return_if_fail(n == 0 || values != NULL);
    if (ctx->non_diff != NULL)
        g_ptr_array_unref(ctx->non_diff);
    ctx->non_diff = values_copy(values, n);
}

void
rpc_ag_ctx_set_materialize_grads(RpcAgCtx *ctx, gboolean materialize)
{
    g_return_if_fail(ctx != NULL);
    ctx->materialize_grads = materialize != FALSE;
}
