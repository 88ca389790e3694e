/* autograd-engine.c — the backward engine: graph tasks, backward, grad.
 *
 * Purpose: runs a graph task as PyTorch 1.13's engine does: dependency
 * counting over what is reachable from the roots (and the start nodes
 * distributed autograd adds), a ready queue ordered by (sequence number,
 * node id) descending, input buffers that sum gradients, output
 * validation (sum_to_size / cast / PyTorch's shape error), release of
 * saved values after each node unless retain_graph, and three ways to end
 * at a leaf: accumulate into .grad, capture for autograd.grad(), or hand
 * to a capture callback (distributed autograd).
 *
 * Key invariants:
 *   - nothing observable depends on an address: the node table is only
 *     looked up, never iterated; lists come out in discovery or sequence
 *     order;
 *   - a node runs at most once per task, after every edge into it that is
 *     reachable from the roots has delivered (or dropped) its gradient;
 *   - nothing blocks: run() drains the ready queue and returns; a task that
 *     waits for injected gradients simply is not done yet.
 *
 * Costs: the ready queue is a binary heap, O(log n) per node; prepare() is
 * a BFS plus, for autograd.grad(), one DFS over the reachable graph.
 */
#include "core/autograd.h"

#include <string.h>

#include "core/autograd-private.h"
#include "core/error.h"
#include "core/tensor-private.h"

/* ---- the engine ------------------------------------------------------------ */

static void
tensor_unref0(gpointer t)
{
    if (t != NULL)
        rpc_tensor_unref(t);
}

/* One node's state within a graph task. */
typedef struct {
    RpcAgNode *node;    /* owned reference */
    gint64 deps;        /* edges still to deliver */
    RpcTensor **buffer; /* node->inputs->len gradients, lazily allocated */
    gboolean visited, is_start, injected, queued, done;
    gboolean needed;  /* autograd.grad(): some capture lies below */
    GArray *captures; /* autograd.grad(): Capture */
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
    GArray *roots;     /* RootEdge */
    GPtrArray *starts; /* RpcAgNode* (owned) until prepare */
    GHashTable *tasks; /* RpcAgNode* -> NodeTask*; looked up only */
    GPtrArray *order;  /* NodeTask* in discovery order (owns them) */
    GPtrArray *heap;   /* ready NodeTask*, a max-heap on (seq_nr, id) */
    RpcAgCaptureFn capture;
    gpointer capture_data;
    GDestroyNotify capture_destroy;
    gboolean exec_info;             /* autograd.grad(): only needed nodes run */
    GPtrArray *captured;            /* autograd.grad() results (RpcTensor*, nullable) */
    const RpcAgEdge *capture_edges; /* autograd.grad(): edge i -> captured[i] */
    guint n_capture_edges;
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
node_task_get(RpcAgGraphTask *task, RpcAgNode *node)
{
    NodeTask *nt = g_hash_table_lookup(task->tasks, node);
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
    for (guint i = 0; i < task->roots->len; i++) {
        RootEdge *r = &g_array_index(task->roots, RootEdge, i);
        if (r->node == NULL)
            continue;
        NodeTask *nt = node_task_get(task, r->node);
        nt->deps++; /* the edge from the (virtual) GraphRoot */
        if (!nt->visited) {
            nt->visited = TRUE;
            g_queue_push_tail(&queue, nt);
        }
    }
    for (guint i = 0; i < task->starts->len; i++) {
        NodeTask *nt = node_task_get(task, g_ptr_array_index(task->starts, i));
        if (!nt->is_start)
            task->pending_starts++;
        nt->is_start = TRUE;
        if (!nt->visited) {
            nt->visited = TRUE;
            g_queue_push_tail(&queue, nt);
        }
    }
    while (!g_queue_is_empty(&queue)) {
        NodeTask *nt = g_queue_pop_head(&queue);
        for (guint i = 0; i < nt->node->next->len; i++) {
            RpcAgEdge e = g_array_index(nt->node->next, RpcAgEdge, i);
            if (e.node == NULL)
                continue;
            NodeTask *child = node_task_get(task, e.node);
            child->deps++;
            if (!child->visited) {
                child->visited = TRUE;
                g_queue_push_tail(&queue, child);
            }
        }
    }
    /* autograd.grad(): capture at the inputs' edges that are reachable. */
    for (guint i = 0; i < task->n_capture_edges; i++) {
        const RpcAgEdge *e = &task->capture_edges[i];
        NodeTask *nt = e->node != NULL ? g_hash_table_lookup(task->tasks, e->node) : NULL;
        if (nt == NULL)
            continue; /* unreachable: the gradient stays undefined */
        if (nt->captures == NULL)
            nt->captures = g_array_new(FALSE, FALSE, sizeof(Capture));
        Capture c = {e->input_nr, i};
        g_array_append_val(nt->captures, c);
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
                    g_string_append_printf(want, "%s%" G_GINT64_FORMAT, d ? ", " : "", m->shape[d]);
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
        return meta == NULL || rpc_ag_hook_list_run(meta->hooks, &buffer[0], error);
    }
    for (guint i = 0; node->pre_hooks != NULL && i < node->pre_hooks->len; i++) {
        RpcAgPreHook pre = g_array_index(node->pre_hooks, RpcAgPreHook, i);
        if (!rpc_ag_hook_list_run(pre.list, &buffer[pre.input_nr], error))
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
            RpcTensor **slot = (RpcTensor **)&g_ptr_array_index(task->captured, c.output_idx);
            if (*slot != NULL)
                rpc_tensor_unref(*slot);
            *slot = g != NULL ? rpc_tensor_ref(g) : NULL;
        }
        if (!nt->needed)
            return TRUE;
    }
    if (!run_pre_hooks(node, buffer, error))
        return FALSE;
    if (task->capture != NULL && rpc_ag_node_is_accumulate_grad(node)) {
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
    return add_roots(task, roots, grad_roots, n, error) && rpc_ag_graph_task_prepare(task, error) &&
           rpc_ag_graph_task_run(task, error);
}

gboolean
rpc_ag_autograd_grad(RpcAgThread *th, RpcTensor *const *outputs, RpcTensor *const *grad_outputs,
                     guint n_outputs, RpcTensor *const *inputs, guint n_inputs,
                     gboolean retain_graph, gboolean create_graph, gboolean allow_unused,
                     RpcTensor **grads_out, GError **error)
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
    task->captured = g_ptr_array_new_full(n_inputs, tensor_unref0);
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
    if (ok) {
        task->capture_edges = edges;
        task->n_capture_edges = n_inputs;
        ok = rpc_ag_graph_task_prepare(task, error) && rpc_ag_graph_task_run(task, error);
        task->capture_edges = NULL;
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
