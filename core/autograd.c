/* autograd.c — autograd metadata, hooks, nodes, saved values, AccumulateGrad.
 *
 * Purpose: the graph side of torch.autograd (PyTorch 1.13): per-tensor
 * metadata in the tensor's reserved slot, tensor hooks, backward nodes with
 * sequence numbers and input metadata, SavedVariable's version and
 * freed-buffer checks, and AccumulateGrad.  The engine that runs graphs is
 * autograd-engine.c; ops are autograd-ops.c; custom functions
 * autograd-function.c.
 *
 * Key invariants:
 *   - identity is never an address: sequence numbers and node ids come
 *     from RpcAgState counters;
 *   - ownership points one way (autograd-private.h), so a graph goes with
 *     its last tensor; freeing is iterative (node_dispose's work list), so
 *     a chain of any length is freed in constant stack.
 */
#include "core/autograd.h"

#include <string.h>

#include "core/autograd-private.h"
#include "core/error.h"
#include "core/tensor-private.h"

/* ---- state and thread ---------------------------------------------------- */

RpcAgState *
rpc_ag_state_new(void)
{
    RpcAgState *state = g_new0(RpcAgState, 1);
    g_atomic_ref_count_init(&state->ref);
    atomic_init(&state->next_seq, 0);
    atomic_init(&state->next_id, 0);
    atomic_init(&state->live_nodes, 0);
    return state;
}

RpcAgState *
rpc_ag_state_ref(RpcAgState *state)
{
    g_return_val_if_fail(state != NULL, NULL);
    g_atomic_ref_count_inc(&state->ref);
    return state;
}

void
rpc_ag_state_unref(RpcAgState *state)
{
    g_return_if_fail(state != NULL);
    if (g_atomic_ref_count_dec(&state->ref))
        g_free(state);
}

gint64
rpc_ag_state_live_nodes(const RpcAgState *state)
{
    g_return_val_if_fail(state != NULL, 0);
    return (gint64)atomic_load(&((RpcAgState *)state)->live_nodes);
}

RpcAgThread *
rpc_ag_thread_new(RpcAgState *state)
{
    g_return_val_if_fail(state != NULL, NULL);
    RpcAgThread *th = g_new0(RpcAgThread, 1);
    th->state = rpc_ag_state_ref(state);
    th->grad_enabled = TRUE;
    return th;
}

void
rpc_ag_thread_free(RpcAgThread *thread)
{
    if (thread == NULL)
        return;
    rpc_ag_state_unref(thread->state);
    g_free(thread);
}

RpcAgState *
rpc_ag_thread_state(const RpcAgThread *thread)
{
    g_return_val_if_fail(thread != NULL, NULL);
    return thread->state;
}

gboolean
rpc_ag_thread_is_grad_enabled(const RpcAgThread *thread)
{
    g_return_val_if_fail(thread != NULL, FALSE);
    return thread->grad_enabled;
}

gboolean
rpc_ag_thread_set_grad_enabled(RpcAgThread *thread, gboolean enabled)
{
    g_return_val_if_fail(thread != NULL, FALSE);
    gboolean prev = thread->grad_enabled;
    thread->grad_enabled = enabled != FALSE;
    return prev;
}

/* ---- hooks ---------------------------------------------------------------- */

static RpcAgHookList *
hook_list_new(void)
{
    RpcAgHookList *list = g_new0(RpcAgHookList, 1);
    g_atomic_ref_count_init(&list->ref);
    list->hooks = g_array_new(FALSE, FALSE, sizeof(RpcAgHook));
    return list;
}

static RpcAgHookList *
hook_list_ref(RpcAgHookList *list)
{
    g_atomic_ref_count_inc(&list->ref);
    return list;
}

static void
hook_list_unref(RpcAgHookList *list)
{
    if (!g_atomic_ref_count_dec(&list->ref))
        return;
    for (guint i = 0; i < list->hooks->len; i++) {
        RpcAgHook *h = &g_array_index(list->hooks, RpcAgHook, i);
        if (h->destroy != NULL)
            h->destroy(h->data);
    }
    g_array_free(list->hooks, TRUE);
    g_free(list);
}

gboolean
rpc_ag_hook_list_run(RpcAgHookList *list, RpcTensor **grad, GError **error)
{
    for (guint i = 0; list != NULL && i < list->hooks->len && *grad != NULL; i++) {
        RpcAgHook h = g_array_index(list->hooks, RpcAgHook, i);
        RpcTensor *replacement = NULL;
        if (!h.fn(*grad, &replacement, h.data, error))
            return FALSE;
        if (replacement != NULL) {
            rpc_tensor_unref(*grad);
            *grad = replacement;
        }
    }
    return TRUE;
}

/* ---- metadata --------------------------------------------------------------- */

static void
meta_free(gpointer p)
{
    RpcAgMeta *meta = p;
    if (meta->grad_fn != NULL)
        rpc_ag_node_unref(meta->grad_fn);
    if (meta->grad != NULL)
        rpc_tensor_unref(meta->grad);
    if (meta->hooks != NULL)
        hook_list_unref(meta->hooks);
    if (meta->post_hooks != NULL) {
        for (guint i = 0; i < meta->post_hooks->len; i++) {
            RpcAgPostHook *h = &g_array_index(meta->post_hooks, RpcAgPostHook, i);
            if (h->destroy != NULL)
                h->destroy(h->data);
        }
        g_array_free(meta->post_hooks, TRUE);
    }
    g_free(meta);
}

RpcAgMeta *
rpc_ag_meta(const RpcTensor *t)
{
    return t->autograd_free == meta_free ? t->autograd : NULL;
}

RpcAgMeta *
rpc_ag_meta_ensure(RpcTensor *t)
{
    RpcAgMeta *meta = rpc_ag_meta(t);
    if (meta != NULL)
        return meta;
    /* The slot is ours (tensor-private.h); nobody else may have filled it. */
    g_assert(t->autograd == NULL);
    meta = g_new0(RpcAgMeta, 1);
    t->autograd = meta;
    t->autograd_free = meta_free;
    return meta;
}

gboolean
rpc_ag_requires_grad(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, FALSE);
    RpcAgMeta *meta = rpc_ag_meta(t);
    return meta != NULL && (meta->requires_grad || meta->grad_fn != NULL);
}

gboolean
rpc_ag_is_leaf(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, TRUE);
    RpcAgMeta *meta = rpc_ag_meta(t);
    return meta == NULL || meta->grad_fn == NULL;
}

gboolean
rpc_ag_set_requires_grad(RpcTensor *t, gboolean flag, GError **error)
{
    g_return_val_if_fail(t != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (!rpc_ag_is_leaf(t)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "you can only change requires_grad flags of leaf variables.%s",
                    flag ? ""
                         : " If you want to use a computed variable in a subgraph that doesn't "
                           "require differentiation use var_no_grad = var.detach().");
        return FALSE;
    }
    if (!flag && rpc_ag_meta(t) == NULL)
        return TRUE;
    rpc_ag_meta_ensure(t)->requires_grad = flag != FALSE;
    return TRUE;
}

RpcAgNode *
rpc_ag_grad_fn(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    RpcAgMeta *meta = rpc_ag_meta(t);
    return meta != NULL ? meta->grad_fn : NULL;
}

guint
rpc_ag_output_nr(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, 0);
    RpcAgMeta *meta = rpc_ag_meta(t);
    return meta != NULL ? meta->output_nr : 0;
}

RpcTensor *
rpc_ag_grad(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    RpcAgMeta *meta = rpc_ag_meta(t);
    return meta != NULL ? meta->grad : NULL;
}

gboolean
rpc_ag_set_grad(RpcTensor *t, RpcTensor *grad, GError **error)
{
    g_return_val_if_fail(t != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (grad != NULL && !rpc_tensor_same_shape(t, grad)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "assigned grad has data of a different size");
        return FALSE;
    }
    if (grad != NULL && rpc_tensor_dtype(t) != rpc_tensor_dtype(grad)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "assigned grad has data of a different type");
        return FALSE;
    }
    if (grad == NULL && rpc_ag_meta(t) == NULL)
        return TRUE;
    RpcAgMeta *meta = rpc_ag_meta_ensure(t);
    RpcTensor *old = meta->grad;
    meta->grad = grad != NULL ? rpc_tensor_ref(grad) : NULL;
    if (old != NULL)
        rpc_tensor_unref(old);
    return TRUE;
}

RpcTensor *
rpc_ag_detach(RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return rpc_tensor_alias(t);
}

char *
rpc_ag_tensor_repr(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    RpcAgNode *fn = rpc_ag_grad_fn(t);
    g_autofree char *suffix = NULL;
    if (fn != NULL)
        suffix = g_strdup_printf("grad_fn=<%s>", rpc_ag_node_name(fn));
    else if (rpc_ag_requires_grad(t))
        suffix = g_strdup("requires_grad=True");
    const char *suffixes[] = {suffix, NULL};
    return rpc_tensor_repr_with_suffixes(t, suffixes);
}

guint
rpc_ag_register_hook(RpcTensor *t, RpcAgTensorHook hook, gpointer user_data, GDestroyNotify destroy,
                     GError **error)
{
    g_return_val_if_fail(t != NULL, 0);
    g_return_val_if_fail(hook != NULL, 0);
    g_return_val_if_fail(error == NULL || *error == NULL, 0);
    if (!rpc_ag_requires_grad(t)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "cannot register a hook on a tensor that doesn't require gradient");
        return 0;
    }
    RpcAgMeta *meta = rpc_ag_meta_ensure(t);
    if (meta->hooks == NULL) {
        meta->hooks = hook_list_new();
        /* A non-leaf's hooks run as a pre-hook of its grad_fn, on the
         * input that is this tensor; a leaf's run in AccumulateGrad. */
        if (meta->grad_fn != NULL) {
            RpcAgNode *fn = meta->grad_fn;
            if (fn->pre_hooks == NULL)
                fn->pre_hooks = g_array_new(FALSE, FALSE, sizeof(RpcAgPreHook));
            RpcAgPreHook pre = {meta->output_nr, hook_list_ref(meta->hooks)};
            g_array_append_val(fn->pre_hooks, pre);
        }
    }
    RpcAgHook h = {++meta->next_hook_id, hook, user_data, destroy};
    g_array_append_val(meta->hooks->hooks, h);
    return h.id;
}

guint
rpc_ag_register_post_accumulate_hook(RpcTensor *t, RpcAgPostAccumulateHook hook, gpointer user_data,
                                     GDestroyNotify destroy, GError **error)
{
    g_return_val_if_fail(t != NULL, 0);
    g_return_val_if_fail(hook != NULL, 0);
    g_return_val_if_fail(error == NULL || *error == NULL, 0);
    if (!rpc_ag_is_leaf(t)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "post accumulate grad hooks cannot be registered on non-leaf tensors");
        return 0;
    }
    if (!rpc_ag_requires_grad(t)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "cannot register a hook on a tensor that doesn't require gradient");
        return 0;
    }
    RpcAgMeta *meta = rpc_ag_meta_ensure(t);
    if (meta->post_hooks == NULL)
        meta->post_hooks = g_array_new(FALSE, FALSE, sizeof(RpcAgPostHook));
    RpcAgPostHook h = {++meta->next_hook_id, hook, user_data, destroy};
    g_array_append_val(meta->post_hooks, h);
    return h.id;
}

gboolean
rpc_ag_remove_hook(RpcTensor *t, guint handle)
{
    g_return_val_if_fail(t != NULL, FALSE);
    RpcAgMeta *meta = rpc_ag_meta(t);
    if (meta == NULL)
        return FALSE;
    for (guint i = 0; meta->hooks != NULL && i < meta->hooks->hooks->len; i++) {
        RpcAgHook h = g_array_index(meta->hooks->hooks, RpcAgHook, i);
        if (h.id == handle) {
            g_array_remove_index(meta->hooks->hooks, i);
            if (h.destroy != NULL)
                h.destroy(h.data);
            return TRUE;
        }
    }
    for (guint i = 0; meta->post_hooks != NULL && i < meta->post_hooks->len; i++) {
        RpcAgPostHook h = g_array_index(meta->post_hooks, RpcAgPostHook, i);
        if (h.id == handle) {
            g_array_remove_index(meta->post_hooks, i);
            if (h.destroy != NULL)
                h.destroy(h.data);
            return TRUE;
        }
    }
    return FALSE;
}

/* ---- nodes ---------------------------------------------------------------- */

static RpcAgNode *
node_alloc(RpcAgState *state, const RpcAgNodeClass *klass, guint64 seq_nr, gpointer data)
{
    RpcAgNode *node = g_new0(RpcAgNode, 1);
    g_atomic_ref_count_init(&node->ref);
    node->klass = klass;
    node->state = rpc_ag_state_ref(state);
    node->seq_nr = seq_nr;
    node->id = atomic_fetch_add(&state->next_id, 1);
    node->inputs = g_array_new(FALSE, TRUE, sizeof(RpcAgInputMeta));
    node->next = g_array_new(FALSE, TRUE, sizeof(RpcAgEdge));
    node->data = data;
    atomic_fetch_add(&state->live_nodes, 1);
    return node;
}

RpcAgNode *
rpc_ag_node_new_named(RpcAgThread *th, const RpcAgNodeClass *klass, const char *name, gpointer data)
{
    RpcAgNode *node = node_alloc(th->state, klass, atomic_fetch_add(&th->state->next_seq, 1), data);
    if (name != NULL)
        node->name = g_strdup(name);
    return node;
}

RpcAgNode *
rpc_ag_node_new(RpcAgThread *thread, const RpcAgNodeClass *klass, gpointer data)
{
    g_return_val_if_fail(thread != NULL, NULL);
    g_return_val_if_fail(klass != NULL && klass->apply != NULL, NULL);
    return rpc_ag_node_new_named(thread, klass, NULL, data);
}

RpcAgNode *
rpc_ag_node_ref(RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, NULL);
    g_atomic_ref_count_inc(&node->ref);
    return node;
}

/* Drops t; if that frees it, its grad_fn reference moves to work instead of
 * being dropped recursively. */
static void
tensor_unref_into(RpcTensor *t, GPtrArray *work)
{
    if (t == NULL)
        return;
    if (g_atomic_ref_count_compare(&t->ref, 1)) {
        RpcAgMeta *meta = rpc_ag_meta(t);
        if (meta != NULL && meta->grad_fn != NULL) {
            g_ptr_array_add(work, meta->grad_fn);
            meta->grad_fn = NULL;
        }
    }
    rpc_tensor_unref(t);
}

/* Frees node (refcount 0); the references it held on other nodes go to
 * work, for node_unref_list to drop. */
static void
node_dispose(RpcAgNode *node, GPtrArray *work)
{
    for (guint i = 0; i < node->next->len; i++) {
        RpcAgEdge *e = &g_array_index(node->next, RpcAgEdge, i);
        if (e->node != NULL)
            g_ptr_array_add(work, e->node);
    }
    if (node->saved != NULL) {
        for (guint i = 0; i < node->saved->len; i++) {
            RpcAgSavedVar *sv = g_ptr_array_index(node->saved, i);
            tensor_unref_into(sv->data, work);
            g_free(sv);
        }
        g_ptr_array_free(node->saved, TRUE);
    }
    if (node->variable != NULL) {
        RpcAgMeta *meta = rpc_ag_meta(node->variable);
        if (meta != NULL && meta->grad_accumulator == node)
            meta->grad_accumulator = NULL;
        tensor_unref_into(node->variable, work);
    }
    if (node->pre_hooks != NULL) {
        for (guint i = 0; i < node->pre_hooks->len; i++)
            hook_list_unref(g_array_index(node->pre_hooks, RpcAgPreHook, i).list);
        g_array_free(node->pre_hooks, TRUE);
    }
    if (node->klass->finalize != NULL)
        node->klass->finalize(node->data);
    g_array_free(node->inputs, TRUE);
    g_array_free(node->next, TRUE);
    g_free(node->name);
    atomic_fetch_sub(&node->state->live_nodes, 1);
    rpc_ag_state_unref(node->state);
    g_free(node);
}

static void
node_unref_list(GPtrArray *work)
{
    while (work->len > 0) {
        RpcAgNode *n = g_ptr_array_steal_index_fast(work, work->len - 1);
        if (g_atomic_ref_count_dec(&n->ref))
            node_dispose(n, work);
    }
}

void
rpc_ag_node_unref(RpcAgNode *node)
{
    g_return_if_fail(node != NULL);
    if (!g_atomic_ref_count_dec(&node->ref))
        return;
    GPtrArray *work = g_ptr_array_new();
    node_dispose(node, work);
    node_unref_list(work);
    g_ptr_array_free(work, TRUE);
}

const char *
rpc_ag_node_name(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, NULL);
    return node->name != NULL ? node->name : node->klass->name;
}

guint64
rpc_ag_node_sequence_nr(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, 0);
    return node->seq_nr;
}

gpointer
rpc_ag_node_data(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, NULL);
    return node->data;
}

guint
rpc_ag_node_n_inputs(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, 0);
    return node->inputs->len;
}

guint
rpc_ag_node_n_next(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, 0);
    return node->next->len;
}

RpcAgNode *
rpc_ag_node_next(const RpcAgNode *node, guint i, guint *input_nr)
{
    g_return_val_if_fail(node != NULL, NULL);
    g_return_val_if_fail(i < node->next->len, NULL);
    RpcAgEdge e = g_array_index(node->next, RpcAgEdge, i);
    if (input_nr != NULL)
        *input_nr = e.input_nr;
    return e.node;
}

void
rpc_ag_node_add_next_edge(RpcAgNode *node, RpcAgNode *next, guint input_nr)
{
    g_return_if_fail(node != NULL);
    RpcAgEdge e = {next != NULL ? rpc_ag_node_ref(next) : NULL, next != NULL ? input_nr : 0};
    g_array_append_val(node->next, e);
}

void
rpc_ag_node_add_next_edge_for(RpcAgNode *node, RpcAgThread *thread, RpcTensor *t)
{
    g_return_if_fail(node != NULL);
    g_return_if_fail(thread != NULL);
    g_return_if_fail(t != NULL);
    RpcAgEdge e = rpc_ag_gradient_edge(thread, t);
    g_array_append_val(node->next, e); /* takes e's reference */
}

guint
rpc_ag_node_add_input(RpcAgNode *node, const RpcTensor *t)
{
    g_return_val_if_fail(node != NULL, 0);
    RpcAgInputMeta m = {0};
    if (t != NULL) {
        m.defined = TRUE;
        m.dtype = t->dtype;
        m.ndim = t->ndim;
        memcpy(m.shape, t->shape, sizeof m.shape);
    }
    g_array_append_val(node->inputs, m);
    return node->inputs->len - 1;
}

static RpcTensor *
input_zeros(const RpcAgInputMeta *m)
{
    return m->defined ? rpc_tensor_new_zeros(m->dtype, m->ndim, m->shape) : NULL;
}

RpcTensor *
rpc_ag_node_input_zeros(const RpcAgNode *node, guint i)
{
    g_return_val_if_fail(node != NULL, NULL);
    g_return_val_if_fail(i < node->inputs->len, NULL);
    return input_zeros(&g_array_index(node->inputs, RpcAgInputMeta, i));
}

/* Makes (node, output_nr) t's history. */
static void
set_gradient_edge(RpcTensor *t, RpcAgNode *node, guint output_nr)
{
    RpcAgMeta *meta = rpc_ag_meta_ensure(t);
    RpcAgNode *old = meta->grad_fn;
    meta->grad_fn = rpc_ag_node_ref(node);
    meta->output_nr = output_nr;
    meta->requires_grad = TRUE;
    if (old != NULL)
        rpc_ag_node_unref(old);
}

guint
rpc_ag_set_history(RpcTensor *t, RpcAgNode *node)
{
    g_return_val_if_fail(t != NULL, 0);
    g_return_val_if_fail(node != NULL, 0);
    guint nr = rpc_ag_node_add_input(node, t);
    set_gradient_edge(t, node, nr);
    return nr;
}

RpcTensor *
rpc_ag_alias_with_history(RpcTensor *t, RpcAgNode *node, guint output_nr)
{
    RpcTensor *a = rpc_tensor_alias(t);
    set_gradient_edge(a, node, output_nr);
    return a;
}

void
rpc_ag_set_gradient_edge(RpcTensor *t, RpcAgNode *node, guint output_nr)
{
    set_gradient_edge(t, node, output_nr);
}

/* ---- AccumulateGrad ---------------------------------------------------------- */

static gboolean accumulate_apply(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in,
                                 RpcTensor **grads_out, GError **error);

static const RpcAgNodeClass accumulate_grad_class = {
    .name = RPC_AG_ACCUMULATE_GRAD_NAME,
    .apply = accumulate_apply,
};

gboolean
rpc_ag_node_is_accumulate_grad(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, FALSE);
    return node->klass == &accumulate_grad_class;
}

RpcTensor *
rpc_ag_node_variable(const RpcAgNode *node)
{
    g_return_val_if_fail(node != NULL, NULL);
    return node->variable;
}

/* AccumulateGrad::apply: .grad = grad (stolen or copied), else .grad +=
 * grad in place — or out of place, recording history, under create_graph. */
static gboolean
accumulate_apply(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in,
                 RpcTensor **grads_out, GError **error)
{
    RpcTensor *grad = grads_in[0];
    RpcTensor *var = node->variable;
    RpcAgMeta *meta = rpc_ag_meta_ensure(var);
    if (grad == NULL)
        return TRUE;
    if (meta->grad_fn != NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "leaf variable has been moved into the graph interior");
        return FALSE;
    }
    if (!meta->requires_grad)
        return TRUE;
    if (meta->grad == NULL) {
        /* Steal the engine's buffer when nobody else holds it, else copy
         * (recorded under create_graph, as PyTorch's clone). */
        if (thread->grad_enabled)
            meta->grad = rpc_ag_copy_for_grad(thread, grad);
        else if (g_atomic_ref_count_compare(&grad->ref, 1) && grad->base == NULL)
            meta->grad = rpc_tensor_ref(grad);
        else
            meta->grad = rpc_tensor_cast(grad, grad->dtype);
    } else if (thread->grad_enabled) {
        RpcTensor *sum = rpc_ag_add(thread, meta->grad, grad, error);
        if (sum == NULL)
            return FALSE;
        rpc_tensor_unref(meta->grad);
        meta->grad = sum;
    } else {
        rpc_tensor_add_inplace(meta->grad, grad);
    }
    for (guint i = 0; meta->post_hooks != NULL && i < meta->post_hooks->len; i++) {
        RpcAgPostHook h = g_array_index(meta->post_hooks, RpcAgPostHook, i);
        h.fn(var, h.data);
    }
    return TRUE;
}

static RpcAgNode *
grad_accumulator(RpcAgThread *th, RpcTensor *leaf)
{
    RpcAgMeta *meta = rpc_ag_meta_ensure(leaf);
    if (meta->grad_accumulator != NULL)
        return rpc_ag_node_ref(meta->grad_accumulator);
    /* PyTorch gives AccumulateGrad UINT64_MAX: ready leaves run first. */
    RpcAgNode *node = node_alloc(th->state, &accumulate_grad_class, G_MAXUINT64, NULL);
    node->variable = rpc_tensor_ref(leaf);
    rpc_ag_node_add_input(node, leaf);
    meta->grad_accumulator = node; /* weak */
    return node;
}

RpcAgEdge
rpc_ag_gradient_edge(RpcAgThread *th, RpcTensor *t)
{
    RpcAgEdge e = {NULL, 0};
    RpcAgMeta *meta = rpc_ag_meta(t);
    if (meta == NULL)
        return e;
    if (meta->grad_fn != NULL) {
        e.node = rpc_ag_node_ref(meta->grad_fn);
        e.input_nr = meta->output_nr;
    } else if (meta->requires_grad) {
        e.node = grad_accumulator(th, t);
    }
    return e;
}

/* ---- saved values --------------------------------------------------------- */

const char *
rpc_ag_type_string(RpcDType dtype)
{
    return dtype == RPC_DTYPE_FLOAT64 ? "torch.DoubleTensor" : "torch.FloatTensor";
}

RpcAgSavedVar *
rpc_ag_node_save(RpcAgNode *node, RpcTensor *t, gboolean is_output)
{
    RpcAgSavedVar *sv = g_new0(RpcAgSavedVar, 1);
    if (t != NULL) {
        sv->defined = TRUE;
        sv->saved_version = rpc_tensor_version(t);
        sv->is_leaf = rpc_ag_is_leaf(t);
        sv->requires_grad = rpc_ag_requires_grad(t);
        sv->output_nr = rpc_ag_output_nr(t);
        sv->is_output = is_output && !sv->is_leaf;
        /* An output saved by its own node must not own that node. */
        sv->data = sv->is_output ? rpc_tensor_alias(t) : rpc_tensor_ref(t);
    }
    if (node->saved == NULL)
        node->saved = g_ptr_array_new();
    g_ptr_array_add(node->saved, sv);
    return sv;
}

gboolean
rpc_ag_saved_unpack(const RpcAgSavedVar *sv, RpcAgNode *node, RpcTensor **out, GError **error)
{
    *out = NULL;
    if (!sv->defined)
        return TRUE;
    if (sv->data == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_AG_ERR_BACKWARD_TWICE);
        return FALSE;
    }
    guint32 version = rpc_tensor_version(sv->data);
    if (version != sv->saved_version) {
        /* The node named is the saver for an output, else the tensor's
         * current grad_fn (none for a leaf), as SavedVariable::unpack. */
        RpcAgNode *fn = sv->is_output ? node : rpc_ag_grad_fn(sv->data);
        g_autofree char *shape = rpc_tensor_shape_string(sv->data);
        g_autofree char *which = fn != NULL ? g_strdup_printf(", which is output %u of %s,",
                                                              sv->output_nr, rpc_ag_node_name(fn))
                                            : g_strdup("");
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "one of the variables needed for gradient computation has been modified by "
                    "an inplace operation: [%s %s]%s is at version %u; expected version %u "
                    "instead. Hint: enable anomaly detection to find the operation that failed "
                    "to compute its gradient, with torch.autograd.set_detect_anomaly(True).",
                    rpc_ag_type_string(sv->data->dtype), shape, which, version, sv->saved_version);
        return FALSE;
    }
    if (sv->is_output)
        *out = rpc_ag_alias_with_history(sv->data, node, sv->output_nr);
    else
        *out = rpc_tensor_ref(sv->data);
    return TRUE;
}

void
rpc_ag_node_release_saved(RpcAgNode *node)
{
    for (guint i = 0; node->saved != NULL && i < node->saved->len; i++) {
        RpcAgSavedVar *sv = g_ptr_array_index(node->saved, i);
        g_clear_pointer(&sv->data, rpc_tensor_unref);
    }
    node->released = TRUE;
}
