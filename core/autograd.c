/* autograd.c — autograd metadata, nodes, saved values and the engine.
 *
 * Purpose: the graph side of torch.autograd (PyTorch 1.13): per-tensor
 * metadata, backward nodes with sequence numbers, SavedVariable's version
 * and freed-buffer checks, AccumulateGrad, and the engine that runs a
 * graph task: dependency counting over what is reachable from the roots
 * (and the start nodes dist autograd adds), a ready queue ordered by
 * (sequence number, node id) descending, input buffers that sum
 * gradients, output validation, and three ways to finish at a leaf:
 * accumulate into .grad, capture for autograd.grad(), or hand to a capture
 * callback (distributed autograd).  Ops live in autograd-ops.c, custom
 * functions in autograd-function.c.
 *
 * Key invariants:
 *   - nothing observable depends on an address: nodes are ordered by
 *     counters from RpcAgState; the engine's hash table is only looked up,
 *     and lists come out in discovery or sequence order;
 *   - a node runs at most once per graph task, after every edge into it
 *     reachable from the roots has delivered (or dropped) its gradient;
 *   - freeing a graph is iterative (node_dispose's work list), so a chain of
 *     any length is freed in constant stack.
 *
 * Costs: the ready queue is a binary heap, O(log n) per node; prepare() is
 * a BFS plus, for autograd.grad(), one DFS over the reachable graph.
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

/* Runs list's hooks on *grad (owned by the caller, replaced in place). */
static gboolean
hook_list_run(RpcAgHookList *list, RpcTensor **grad, GError **error)
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

static void node_unref_list(GPtrArray *work);

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
rpc_ag_register_hook(RpcTensor *t, RpcAgTensorHook hook, gpointer user_data,
                     GDestroyNotify destroy, GError **error)
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
rpc_ag_register_post_accumulate_hook(RpcTensor *t, RpcAgPostAccumulateHook hook,
                                     gpointer user_data, GDestroyNotify destroy, GError **error)
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
rpc_ag_node_new_named(RpcAgThread *th, const RpcAgNodeClass *klass, const char *name,
                      gpointer data)
{
    RpcAgNode *node =
        node_alloc(th->state, klass, atomic_fetch_add(&th->state->next_seq, 1), data);
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

void
rpc_ag_rebase_history(RpcTensor *t, RpcAgNode *node)
{
    rpc_ag_set_history(t, node);
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
        /* Steal the engine's buffer when nobody else holds it. */
        if (thread->grad_enabled || g_atomic_ref_count_compare(&grad->ref, 2))
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
        g_autofree char *which =
            fn != NULL ? g_strdup_printf(", which is output %u of %s,", sv->output_nr,
                                         rpc_ag_node_name(fn))
                       : g_strdup("");
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "one of the variables needed for gradient computation has been modified by "
                    "an inplace operation: [%s %s]%s is at version %u; expected version %u "
                    "instead. Hint: enable anomaly detection to find the operation that failed "
                    "to compute its gradient, with torch.autograd.set_detect_anomaly(True).",
                    rpc_ag_type_string(sv->data->dtype), shape, which, version,
                    sv->saved_version);
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

/* ---- the engine ------------------------------------------------------------ */

/* One node's state within a graph task. */
typedef struct {
    RpcAgNode *node; /* owned reference */
    gint64 deps;     /* edges still to deliver */
    RpcTensor **buffer; /* node->inputs->len gradients, lazily allocated */
    gboolean is_start, injected, queued, done;
    gboolean needed;   /* autograd.grad(): some capture lies below */
    GArray *captures;  /* autograd.grad(): Capture */
} NodeTask;

typedef struct {
    guint input_nr;
    guint output_idx;
} Capture;

typedef struct {
    RpcAgNode *node; /* owned; NULL for an empty root edge */
    guint input_nr;
    RpcTensor *grad; /* owned, nullable */
} RootEdge;

struct RpcAgGraphTask {
    RpcAgThread *thread;
    gboolean keep_graph, create_graph;
    GArray *roots;      /* RootEdge */
    GPtrArray *starts;  /* RpcAgNode* (owned) until prepare */
    GHashTable *tasks;  /* RpcAgNode* -> NodeTask*; looked up only */
    GPtrArray *order;   /* NodeTask* in discovery order (owns them) */
    GPtrArray *heap;    /* ready NodeTask*, a max-heap on (seq_nr, id) */
    RpcAgCaptureFn capture;
    gpointer capture_data;
    GDestroyNotify capture_destroy;
    gboolean exec_info; /* autograd.grad(): only needed nodes run */
    GPtrArray *captured; /* autograd.grad() results (RpcTensor*, nullable) */
    GPtrArray *executed; /* const char* node names, in order */
    GError *error;       /* sticky */
    gboolean prepared;
    guint pending_starts;
};

static void
node_task_free(gpointer p)
{
    NodeTask *nt = p;
    if (nt->buffer != NULL) {
        for (guint i = 0; i < nt->node->inputs->len; i++)
            if (nt->buffer[i] != NULL)
                rpc_tensor_unref(nt->buffer[i]);
        g_free(nt->buffer);
    }
    if (nt->captures != NULL)
        g_array_free(nt->captures, TRUE);
    rpc_ag_node_unref(nt->node);
    g_free(nt);
}

RpcAgGraphTask *
rpc_ag_graph_task_new(RpcAgThread *thread, gboolean keep_graph, gboolean create_graph)
{
    g_return_val_if_fail(thread != NULL, NULL);
    RpcAgGraphTask *task = g_new0(RpcAgGraphTask, 1);
    task->thread = thread;
    task->keep_graph = keep_graph;
    task->create_graph = create_graph;
    task->roots = g_array_new(FALSE, FALSE, sizeof(RootEdge));
    task->starts = g_ptr_array_new();
    task->tasks = g_hash_table_new(g_direct_hash, g_direct_equal);
    task->order = g_ptr_array_new_with_free_func(node_task_free);
    task->heap = g_ptr_array_new();
    task->executed = g_ptr_array_new();
    return task;
}

void
rpc_ag_graph_task_free(RpcAgGraphTask *task)
{
    if (task == NULL)
        return;
    for (guint i = 0; i < task->roots->len; i++) {
        RootEdge *r = &g_array_index(task->roots, RootEdge, i);
        if (r->node != NULL)
            rpc_ag_node_unref(r->node);
        if (r->grad != NULL)
            rpc_tensor_unref(r->grad);
    }
    g_array_free(task->roots, TRUE);
    for (guint i = 0; i < task->starts->len; i++)
        rpc_ag_node_unref(g_ptr_array_index(task->starts, i));
    g_ptr_array_free(task->starts, TRUE);
    g_hash_table_destroy(task->tasks);
    g_ptr_array_free(task->heap, TRUE);
    g_ptr_array_free(task->executed, TRUE);
    /* Node tasks last: executed names point into their nodes. */
    g_ptr_array_free(task->order, TRUE);
    if (task->captured != NULL)
        g_ptr_array_free(task->captured, TRUE);
    if (task->capture_destroy != NULL)
        task->capture_destroy(task->capture_data);
    g_clear_error(&task->error);
    g_free(task);
}

void
rpc_ag_graph_task_set_capture(RpcAgGraphTask *task, RpcAgCaptureFn fn, gpointer user_data,
                              GDestroyNotify destroy)
{
    g_return_if_fail(task != NULL);
    g_return_if_fail(!task->prepared);
    if (task->capture_destroy != NULL)
        task->capture_destroy(task->capture_data);
    task->capture = fn;
    task->capture_data = user_data;
    task->capture_destroy = destroy;
}

static char *
torch_size(const RpcTensor *t)
{
    g_autofree char *s = rpc_tensor_shape_string(t);
    return g_strdup_printf("torch.Size(%s)", s);
}

/* _make_grads for root i: *out = the seed gradient (transfer full; NULL
 * when root needs none and none was given). */
static gboolean
make_grad(RpcTensor *root, RpcTensor *grad, guint i, RpcTensor **out, GError **error)
{
    *out = NULL;
    if (grad != NULL) {
        if (!rpc_tensor_same_shape(grad, root)) {
            g_autofree char *gs = torch_size(grad);
            g_autofree char *rs = torch_size(root);
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Mismatch in shape: grad_output[%u] has a shape of %s and output[%u] has "
                        "a shape of %s.",
                        i, gs, i, rs);
            return FALSE;
        }
        *out = rpc_tensor_ref(grad);
    } else if (rpc_ag_requires_grad(root)) {
        if (rpc_tensor_numel(root) != 1) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "grad can be implicitly created only for scalar outputs");
            return FALSE;
        }
        *out = rpc_tensor_new_full_like(root, 1.0);
    }
    return TRUE;
}

/* Casts a root gradient to the root's dtype (validate_outputs on the
 * graph root).  Takes grad. */
static RpcTensor *
root_grad_cast(RpcAgThread *th, RpcTensor *grad, RpcDType dtype)
{
    if (grad == NULL || grad->dtype == dtype)
        return grad;
    RpcTensor *cast = rpc_ag_cast(th, grad, dtype, NULL);
    rpc_tensor_unref(grad);
    return cast;
}

static gboolean
root_edge(RpcAgThread *th, RpcTensor *root, guint i, RpcAgEdge *e, GError **error)
{
    *e = rpc_ag_gradient_edge(th, root);
    if (e->node == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "element %u of tensors does not require grad and does not have a grad_fn", i);
        return FALSE;
    }
    return TRUE;
}

static void
add_root(RpcAgGraphTask *task, RpcAgEdge e, RpcTensor *grad)
{
    RootEdge r = {e.node, e.input_nr, grad};
    g_array_append_val(task->roots, r);
}

gboolean
rpc_ag_graph_task_add_root(RpcAgGraphTask *task, RpcTensor *root, RpcTensor *grad, guint index,
                           GError **error)
{
    g_return_val_if_fail(task != NULL, FALSE);
    g_return_val_if_fail(root != NULL, FALSE);
    g_return_val_if_fail(!task->prepared, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    RpcTensor *seed;
    RpcAgEdge e;
    if (!make_grad(root, grad, index, &seed, error))
        return FALSE;
    if (!root_edge(task->thread, root, index, &e, error)) {
        if (seed != NULL)
            rpc_tensor_unref(seed);
        return FALSE;
    }
    add_root(task, e, root_grad_cast(task->thread, seed, root->dtype));
    return TRUE;
}

void
rpc_ag_graph_task_add_root_edge(RpcAgGraphTask *task, RpcAgNode *node, guint input_nr,
                                RpcTensor *grad)
{
    g_return_if_fail(task != NULL);
    g_return_if_fail(!task->prepared);
    RpcAgEdge e = {node != NULL ? rpc_ag_node_ref(node) : NULL, input_nr};
    add_root(task, e, grad != NULL ? rpc_tensor_ref(grad) : NULL);
}

void
rpc_ag_graph_task_add_start_node(RpcAgGraphTask *task, RpcAgNode *node)
{
    g_return_if_fail(task != NULL);
    g_return_if_fail(node != NULL);
    g_return_if_fail(!task->prepared);
    g_ptr_array_add(task->starts, rpc_ag_node_ref(node));
}

static NodeTask *
node_task_get(RpcAgGraphTask *task, RpcAgNode *node, gboolean *created)
{
    NodeTask *nt = g_hash_table_lookup(task->tasks, node);
    *created = nt == NULL;
    if (nt == NULL) {
        nt = g_new0(NodeTask, 1);
        nt->node = rpc_ag_node_ref(node);
        g_hash_table_insert(task->tasks, node, nt);
        g_ptr_array_add(task->order, nt);
    }
    return nt;
}

/* Ready-queue order: higher sequence number first, then higher id. */
static gboolean
runs_before(const NodeTask *a, const NodeTask *b)
{
    if (a->node->seq_nr != b->node->seq_nr)
        return a->node->seq_nr > b->node->seq_nr;
    return a->node->id > b->node->id;
}

static void
heap_push(GPtrArray *heap, NodeTask *nt)
{
    g_ptr_array_add(heap, nt);
    guint i = heap->len - 1;
    while (i > 0) {
        guint parent = (i - 1) / 2;
        if (!runs_before(heap->pdata[i], heap->pdata[parent]))
            break;
        gpointer tmp = heap->pdata[i];
        heap->pdata[i] = heap->pdata[parent];
        heap->pdata[parent] = tmp;
        i = parent;
    }
}

static NodeTask *
heap_pop(GPtrArray *heap)
{
    NodeTask *top = heap->pdata[0];
    heap->pdata[0] = heap->pdata[heap->len - 1];
    g_ptr_array_set_size(heap, heap->len - 1);
    guint i = 0;
    for (;;) {
        guint l = 2 * i + 1, r = l + 1, best = i;
        if (l < heap->len && runs_before(heap->pdata[l], heap->pdata[best]))
            best = l;
        if (r < heap->len && runs_before(heap->pdata[r], heap->pdata[best]))
            best = r;
        if (best == i)
            break;
        gpointer tmp = heap->pdata[i];
        heap->pdata[i] = heap->pdata[best];
        heap->pdata[best] = tmp;
        i = best;
    }
    return top;
}

static gboolean
should_execute(const RpcAgGraphTask *task, const NodeTask *nt)
{
    return !task->exec_info || nt->needed || nt->captures != NULL;
}

static void
maybe_ready(RpcAgGraphTask *task, NodeTask *nt)
{
    if (nt->deps == 0 && (!nt->is_start || nt->injected) && !nt->queued && !nt->done) {
        nt->queued = TRUE;
        heap_push(task->heap, nt);
    }
}

/* InputBuffer::add: takes grad. */
static gboolean
buffer_add(RpcAgGraphTask *task, NodeTask *nt, guint input_nr, RpcTensor *grad, GError **error)
{
    if (grad == NULL)
        return TRUE;
    if (nt->buffer == NULL)
        nt->buffer = g_new0(RpcTensor *, MAX(nt->node->inputs->len, 1));
    g_assert(input_nr < nt->node->inputs->len);
    RpcTensor *old = nt->buffer[input_nr];
    if (old == NULL) {
        nt->buffer[input_nr] = grad;
        return TRUE;
    }
    RpcTensor *sum = rpc_ag_add(task->thread, old, grad, error);
    rpc_tensor_unref(grad);
    if (sum == NULL)
        return FALSE;
    rpc_tensor_unref(old);
    nt->buffer[input_nr] = sum;
    return TRUE;
}

/* autograd.grad(): a node is needed when a capture or a needed node lies
 * below it.  Iterative post-order DFS over the reachable graph. */
static void
compute_needed(RpcAgGraphTask *task)
{
    typedef struct {
        NodeTask *nt;
        guint next;
    } Frame;
    GArray *stack = g_array_new(FALSE, FALSE, sizeof(Frame));
    GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (guint r = 0; r < task->order->len; r++) {
        NodeTask *root = g_ptr_array_index(task->order, r);
        if (g_hash_table_contains(seen, root))
            continue;
        g_hash_table_add(seen, root);
        Frame f0 = {root, 0};
        g_array_append_val(stack, f0);
        while (stack->len > 0) {
            Frame *f = &g_array_index(stack, Frame, stack->len - 1);
            RpcAgNode *node = f->nt->node;
            if (f->next < node->next->len) {
                RpcAgEdge e = g_array_index(node->next, RpcAgEdge, f->next++);
                if (e.node == NULL)
                    continue;
                NodeTask *child = g_hash_table_lookup(task->tasks, e.node);
                if (!g_hash_table_contains(seen, child)) {
                    g_hash_table_add(seen, child);
                    Frame fc = {child, 0};
                    g_array_append_val(stack, fc);
                }
                continue;
            }
            /* All children finished (a DAG has no back edges). */
            NodeTask *nt = f->nt;
            for (guint i = 0; i < node->next->len && !nt->needed; i++) {
                RpcAgEdge e = g_array_index(node->next, RpcAgEdge, i);
                if (e.node == NULL)
                    continue;
                NodeTask *child = g_hash_table_lookup(task->tasks, e.node);
                nt->needed = child->needed || child->captures != NULL;
            }
            g_array_set_size(stack, stack->len - 1);
        }
    }
    g_hash_table_destroy(seen);
    g_array_free(stack, TRUE);
}

static gboolean
task_fail(RpcAgGraphTask *task, GError *error, GError **out)
{
    if (task->error == NULL)
        task->error = error;
    else
        g_error_free(error);
    g_ptr_array_set_size(task->heap, 0);
    if (out != NULL)
        *out = g_error_copy(task->error);
    return FALSE;
}

gboolean
rpc_ag_graph_task_prepare(RpcAgGraphTask *task, GError **error)
{
    g_return_val_if_fail(task != NULL, FALSE);
    g_return_val_if_fail(!task->prepared, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    task->prepared = TRUE;

    /* BFS from the roots and the start nodes, counting incoming edges. */
    GQueue queue = G_QUEUE_INIT;
    gboolean created;
    for (guint i = 0; i < task->roots->len; i++) {
        RootEdge *r = &g_array_index(task->roots, RootEdge, i);
        if (r->node == NULL)
            continue;
        NodeTask *nt = node_task_get(task, r->node, &created);
        nt->deps++; /* the edge from the (virtual) GraphRoot */
        if (created)
            g_queue_push_tail(&queue, nt);
    }
    for (guint i = 0; i < task->starts->len; i++) {
        NodeTask *nt = node_task_get(task, g_ptr_array_index(task->starts, i), &created);
        if (!nt->is_start)
            task->pending_starts++;
        nt->is_start = TRUE;
        if (created)
            g_queue_push_tail(&queue, nt);
    }
    while (!g_queue_is_empty(&queue)) {
        NodeTask *nt = g_queue_pop_head(&queue);
        for (guint i = 0; i < nt->node->next->len; i++) {
            RpcAgEdge e = g_array_index(nt->node->next, RpcAgEdge, i);
            if (e.node == NULL)
                continue;
            NodeTask *child = node_task_get(task, e.node, &created);
            child->deps++;
            if (created)
                g_queue_push_tail(&queue, child);
        }
    }
    if (task->exec_info)
        compute_needed(task);

    /* Run the GraphRoot: deliver each root's gradient. */
    GError *local = NULL;
    for (guint i = 0; i < task->roots->len; i++) {
        RootEdge *r = &g_array_index(task->roots, RootEdge, i);
        if (r->node == NULL)
            continue;
        NodeTask *nt = g_hash_table_lookup(task->tasks, r->node);
        if (!should_execute(task, nt))
            continue;
        RpcTensor *grad = r->grad;
        r->grad = NULL;
        if (!buffer_add(task, nt, r->input_nr, grad, &local))
            return task_fail(task, local, error);
        nt->deps--;
        maybe_ready(task, nt);
    }
    return TRUE;
}

gboolean
rpc_ag_graph_task_inject(RpcAgGraphTask *task, RpcAgNode *node, RpcTensor *const *grads, guint n,
                         GError **error)
{
    g_return_val_if_fail(task != NULL, FALSE);
    g_return_val_if_fail(node != NULL, FALSE);
    g_return_val_if_fail(task->prepared, FALSE);
    g_return_val_if_fail(n == node->inputs->len, FALSE);
    g_return_val_if_fail(n == 0 || grads != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (task->error != NULL) {
        g_propagate_error(error, g_error_copy(task->error));
        return FALSE;
    }
    NodeTask *nt = g_hash_table_lookup(task->tasks, node);
    if (nt == NULL || !nt->is_start || nt->injected) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "%s is not a pending start node of this graph task", rpc_ag_node_name(node));
        return FALSE;
    }
    GError *local = NULL;
    for (guint i = 0; i < n; i++) {
        if (grads[i] != NULL && !buffer_add(task, nt, i, rpc_tensor_ref(grads[i]), &local))
            return task_fail(task, local, error);
    }
    nt->injected = TRUE;
    task->pending_starts--;
    maybe_ready(task, nt);
    return TRUE;
}

/* validate_outputs: each gradient against the input it flows into. */
static gboolean
validate_outputs(RpcAgGraphTask *task, RpcAgNode *node, RpcTensor **grads, GError **error)
{
    for (guint i = 0; i < node->next->len; i++) {
        RpcAgEdge e = g_array_index(node->next, RpcAgEdge, i);
        RpcTensor *grad = grads[i];
        if (e.node == NULL || grad == NULL)
            continue;
        const RpcAgInputMeta *m = &g_array_index(e.node->inputs, RpcAgInputMeta, e.input_nr);
        if (!m->defined)
            continue;
        if (grad->ndim != m->ndim || memcmp(grad->shape, m->shape, sizeof m->shape) != 0) {
            /* is_expandable_to(expected, grad): then reduce, else fail. */
            gboolean ok = m->ndim <= grad->ndim;
            for (guint d = 0; ok && d < m->ndim; d++) {
                gint64 want = m->shape[m->ndim - 1 - d];
                ok = want == 1 || want == grad->shape[grad->ndim - 1 - d];
            }
            if (!ok) {
                g_autofree char *got = rpc_tensor_shape_string(grad);
                GString *want = g_string_new("[");
                for (guint d = 0; d < m->ndim; d++)
                    g_string_append_printf(want, "%s%" G_GINT64_FORMAT, d ? ", " : "",
                                           m->shape[d]);
                g_string_append_c(want, ']');
                g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Function %s returned an invalid gradient at index %u - got %s but "
                            "expected shape compatible with %s",
                            rpc_ag_node_name(node), i, got, want->str);
                g_string_free(want, TRUE);
                return FALSE;
            }
            RpcTensor *r = rpc_ag_sum_to_size(task->thread, grad, m->ndim, m->shape, error);
            if (r == NULL)
                return FALSE;
            rpc_tensor_unref(grad);
            grads[i] = grad = r;
        }
        if (grad->dtype != m->dtype) {
            RpcTensor *r = rpc_ag_cast(task->thread, grad, m->dtype, error);
            if (r == NULL)
                return FALSE;
            rpc_tensor_unref(grad);
            grads[i] = r;
        }
    }
    return TRUE;
}

/* Pre-hooks: a leaf's tensor hooks (AccumulateGrad) or non-leaf hooks
 * registered on node's inputs. */
static gboolean
run_pre_hooks(RpcAgNode *node, RpcTensor **buffer, GError **error)
{
    if (node->variable != NULL) {
        RpcAgMeta *meta = rpc_ag_meta(node->variable);
        return meta == NULL || hook_list_run(meta->hooks, &buffer[0], error);
    }
    for (guint i = 0; node->pre_hooks != NULL && i < node->pre_hooks->len; i++) {
        RpcAgPreHook pre = g_array_index(node->pre_hooks, RpcAgPreHook, i);
        if (!hook_list_run(pre.list, &buffer[pre.input_nr], error))
            return FALSE;
    }
    return TRUE;
}

static gboolean
evaluate(RpcAgGraphTask *task, NodeTask *nt, GError **error)
{
    RpcAgNode *node = nt->node;
    guint n_in = node->inputs->len, n_out = node->next->len;
    nt->done = TRUE;
    if (nt->buffer == NULL)
        nt->buffer = g_new0(RpcTensor *, MAX(n_in, 1));
    RpcTensor **buffer = nt->buffer;

    if (task->exec_info) {
        for (guint i = 0; nt->captures != NULL && i < nt->captures->len; i++) {
            Capture c = g_array_index(nt->captures, Capture, i);
            RpcTensor *g = buffer[c.input_nr];
            g_ptr_array_index(task->captured, c.output_idx) = g ? rpc_tensor_ref(g) : NULL;
        }
        if (!nt->needed)
            return TRUE;
    }
    if (!run_pre_hooks(node, buffer, error))
        return FALSE;
    if (task->capture != NULL && node->klass == &accumulate_grad_class) {
        if (buffer[0] != NULL)
            task->capture(node->variable, buffer[0], task->capture_data);
        return TRUE;
    }

    RpcTensor **out = g_new0(RpcTensor *, MAX(n_out, 1));
    gboolean ok = node->klass->apply(node, task->thread, buffer, out, error) &&
                  validate_outputs(task, node, out, error);
    if (ok) {
        if (!task->keep_graph) {
            rpc_ag_node_release_saved(node);
            if (node->klass->release_variables != NULL)
                node->klass->release_variables(node);
        }
        g_ptr_array_add(task->executed, (gpointer)rpc_ag_node_name(node));
    }
    for (guint i = 0; i < n_out; i++) {
        RpcAgEdge e = g_array_index(node->next, RpcAgEdge, i);
        RpcTensor *g = out[i];
        out[i] = NULL;
        if (!ok || e.node == NULL) {
            if (g != NULL)
                rpc_tensor_unref(g);
            continue;
        }
        NodeTask *child = g_hash_table_lookup(task->tasks, e.node);
        if (!should_execute(task, child)) {
            if (g != NULL)
                rpc_tensor_unref(g);
            continue;
        }
        if (ok && !buffer_add(task, child, e.input_nr, g, error))
            ok = FALSE;
        child->deps--;
        maybe_ready(task, child);
    }
    g_free(out);
    /* The inputs are consumed. */
    for (guint i = 0; i < n_in; i++)
        g_clear_pointer(&buffer[i], rpc_tensor_unref);
    return ok;
}

gboolean
rpc_ag_graph_task_run(RpcAgGraphTask *task, GError **error)
{
    g_return_val_if_fail(task != NULL, FALSE);
    g_return_val_if_fail(task->prepared, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (task->error != NULL) {
        g_propagate_error(error, g_error_copy(task->error));
        return FALSE;
    }
    /* Backward functions run with grad mode = create_graph. */
    gboolean prev = rpc_ag_thread_set_grad_enabled(task->thread, task->create_graph);
    GError *local = NULL;
    gboolean ok = TRUE;
    while (task->heap->len > 0) {
        NodeTask *nt = heap_pop(task->heap);
        if (!evaluate(task, nt, &local)) {
            ok = task_fail(task, local, error);
            break;
        }
    }
    rpc_ag_thread_set_grad_enabled(task->thread, prev);
    return ok;
}

gboolean
rpc_ag_graph_task_is_done(const RpcAgGraphTask *task)
{
    g_return_val_if_fail(task != NULL, FALSE);
    return task->prepared &&
           (task->error != NULL || (task->pending_starts == 0 && task->heap->len == 0));
}

gboolean
rpc_ag_graph_task_is_reachable(const RpcAgGraphTask *task, const RpcAgNode *node)
{
    g_return_val_if_fail(task != NULL, FALSE);
    g_return_val_if_fail(node != NULL, FALSE);
    return g_hash_table_contains(task->tasks, node);
}

static gint
by_sequence_desc(gconstpointer a, gconstpointer b)
{
    const RpcAgNode *x = *(RpcAgNode *const *)a, *y = *(RpcAgNode *const *)b;
    if (x->seq_nr != y->seq_nr)
        return x->seq_nr > y->seq_nr ? -1 : 1;
    return x->id > y->id ? -1 : x->id < y->id;
}

GPtrArray *
rpc_ag_graph_task_reachable(const RpcAgGraphTask *task)
{
    g_return_val_if_fail(task != NULL, NULL);
    GPtrArray *out = g_ptr_array_sized_new(task->order->len);
    for (guint i = 0; i < task->order->len; i++)
        g_ptr_array_add(out, ((NodeTask *)g_ptr_array_index(task->order, i))->node);
    g_ptr_array_sort(out, by_sequence_desc);
    return out;
}

const GPtrArray *
rpc_ag_graph_task_executed(const RpcAgGraphTask *task)
{
    g_return_val_if_fail(task != NULL, NULL);
    return task->executed;
}

/* ---- backward and grad ---------------------------------------------------- */

/* _make_grads for every root, then the edges (PyTorch's order of checks). */
static gboolean
add_roots(RpcAgGraphTask *task, RpcTensor *const *roots, RpcTensor *const *grad_roots, guint n,
          GError **error)
{
    RpcTensor **seeds = g_new0(RpcTensor *, MAX(n, 1));
    gboolean ok = TRUE;
    for (guint i = 0; i < n && ok; i++)
        ok = make_grad(roots[i], grad_roots ? grad_roots[i] : NULL, i, &seeds[i], error);
    for (guint i = 0; i < n && ok; i++) {
        RpcAgEdge e;
        ok = root_edge(task->thread, roots[i], i, &e, error);
        if (ok) {
            add_root(task, e, root_grad_cast(task->thread, seeds[i], roots[i]->dtype));
            seeds[i] = NULL;
        }
    }
    for (guint i = 0; i < n; i++)
        if (seeds[i] != NULL)
            rpc_tensor_unref(seeds[i]);
    g_free(seeds);
    return ok;
}

gboolean
rpc_ag_backward(RpcAgThread *th, RpcTensor *const *roots, RpcTensor *const *grad_roots, guint n,
                gboolean retain_graph, gboolean create_graph, GError **error)
{
    g_return_val_if_fail(th != NULL, FALSE);
    g_return_val_if_fail(n == 0 || roots != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    for (guint i = 0; i < n; i++)
        g_return_val_if_fail(roots[i] != NULL, FALSE);
    g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(th, retain_graph, create_graph);
    return add_roots(task, roots, grad_roots, n, error) &&
           rpc_ag_graph_task_prepare(task, error) && rpc_ag_graph_task_run(task, error);
}

gboolean
rpc_ag_grad(RpcAgThread *th, RpcTensor *const *outputs, RpcTensor *const *grad_outputs,
            guint n_outputs, RpcTensor *const *inputs, guint n_inputs, gboolean retain_graph,
            gboolean create_graph, gboolean allow_unused, RpcTensor **grads_out, GError **error)
{
    g_return_val_if_fail(th != NULL, FALSE);
    g_return_val_if_fail(n_outputs == 0 || outputs != NULL, FALSE);
    g_return_val_if_fail(n_inputs == 0 || (inputs != NULL && grads_out != NULL), FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    for (guint i = 0; i < n_inputs; i++)
        grads_out[i] = NULL;
    if (n_inputs == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "grad requires non-empty inputs.");
        return FALSE;
    }
    g_autoptr(RpcAgGraphTask) task = rpc_ag_graph_task_new(th, retain_graph, create_graph);
    task->exec_info = TRUE;
    task->captured = g_ptr_array_new_full(n_inputs, (GDestroyNotify)rpc_tensor_unref);
    g_ptr_array_set_size(task->captured, n_inputs);
    if (!add_roots(task, outputs, grad_outputs, n_outputs, error))
        return FALSE;
    /* The inputs' edges: grad_fn, or a leaf's existing accumulator. */
    RpcAgEdge *edges = g_new0(RpcAgEdge, n_inputs);
    gboolean ok = TRUE;
    for (guint i = 0; i < n_inputs && ok; i++) {
        if (!rpc_ag_requires_grad(inputs[i])) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "One of the differentiated Tensors does not require grad");
            ok = FALSE;
            break;
        }
        RpcAgMeta *meta = rpc_ag_meta(inputs[i]);
        edges[i].node = meta->grad_fn != NULL ? meta->grad_fn : meta->grad_accumulator;
        edges[i].input_nr = meta->grad_fn != NULL ? meta->output_nr : 0;
    }
    /* Captures are attached after the BFS: prepare() computes needed
     * nodes from them, so attach through a pre-pass over the graph. */
    if (ok) {
        task->prepared = TRUE; /* reuse the BFS below without the GraphRoot */
        task->prepared = FALSE;
    }
    if (ok) {
        /* Walk once to learn what is reachable, attach captures, then let
         * prepare() count and mark.  node_task_get() is idempotent. */
        GQueue queue = G_QUEUE_INIT;
        gboolean created;
        for (guint i = 0; i < task->roots->len; i++) {
            RootEdge *r = &g_array_index(task->roots, RootEdge, i);
            NodeTask *nt = node_task_get(task, r->node, &created);
            if (created)
                g_queue_push_tail(&queue, nt);
        }
        while (!g_queue_is_empty(&queue)) {
            NodeTask *nt = g_queue_pop_head(&queue);
            for (guint i = 0; i < nt->node->next->len; i++) {
                RpcAgEdge e = g_array_index(nt->node->next, RpcAgEdge, i);
                if (e.node == NULL)
                    continue;
                NodeTask *child = node_task_get(task, e.node, &created);
                if (created)
                    g_queue_push_tail(&queue, child);
            }
        }
        for (guint i = 0; i < n_inputs; i++) {
            NodeTask *nt = edges[i].node ? g_hash_table_lookup(task->tasks, edges[i].node) : NULL;
            if (nt == NULL)
                continue; /* not reachable: unused */
            if (nt->captures == NULL)
                nt->captures = g_array_new(FALSE, FALSE, sizeof(Capture));
            Capture c = {edges[i].input_nr, i};
            g_array_append_val(nt->captures, c);
        }
        ok = rpc_ag_graph_task_prepare(task, error) && rpc_ag_graph_task_run(task, error);
    }
    g_free(edges);
    if (!ok)
        return FALSE;
    for (guint i = 0; i < n_inputs; i++) {
        if (g_ptr_array_index(task->captured, i) == NULL && !allow_unused) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "One of the differentiated Tensors appears to not have been used "
                                "in the graph. Set allow_unused=True if this is the desired "
                                "behavior.");
            for (guint j = 0; j < n_inputs; j++)
                g_clear_pointer(&g_ptr_array_index(task->captured, j), rpc_tensor_unref);
            return FALSE;
        }
    }
    for (guint i = 0; i < n_inputs; i++)
        grads_out[i] = g_ptr_array_steal_index(task->captured, 0);
    return TRUE;
}
