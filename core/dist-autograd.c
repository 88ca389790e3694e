/* dist-autograd.c — distributed autograd (dist-autograd.h, spec §7).
 *
 * Purpose: PyTorch's DistAutogradContainer, DistAutogradContext,
 * SendRpcBackward / RecvRpcBackward, the FAST-mode DistEngine and the
 * cleanup protocol, driven by four hooks in agent.c (requests out, requests
 * in, responses out, responses in) and three request types it serves.
 *
 * Key invariants:
 *   - identities are counters: contexts and autograd messages by their ids,
 *     threads by the executor's thread id, send/recv functions by message id
 *     in ordered trees; tables keyed by pointers (the grad index, the live
 *     passes) are only looked up, never walked in an observable way;
 *   - a context is attached to at most one backward pass per worker
 *     (ctx->pass, a reference); the pass holds the context back, so the
 *     link is cut when the pass finishes (cleanupBackwardPass) and when the
 *     container goes;
 *   - a pass holds no reference to the gradient RPCs it issued (their
 *     callbacks hold the pass): a reply that never comes cannot keep a pass
 *     and its future alive past the agent's teardown;
 *   - a pass finishes once, with its future: OK when the graph task is done
 *     (every start node injected and run) and every gradient RPC answered;
 *     an error at the first failure — a local node ("Error on Node <me>: …"),
 *     a gradient RPC while the task still runs (the same prefix, as the
 *     graph task's error), or one after (its text unchanged, as
 *     clearAndWaitForOutstandingRpcsAsync reports it).
 *
 * Trade-offs: a continuation a UDF registers itself (a then() callback)
 * runs without the request's context unless it is the response itself
 * (PyTorch leaves the same gap, a TODO in processForwardAutogradReq).  Gradients accumulate into
 * fresh tensors rather than in place, so a tensor get_gradients() returned
 * earlier keeps its value.
 */
#include "core/dist-autograd.h"

#include <string.h>

#include "core/agent-internal.h"
#include "core/codec.h"
#include "core/error.h"
#include "core/future.h"
#include "core/rref.h"
#include "core/tensor-private.h"
#include "core/tensor.h"

#define WORKER_SHIFT 48
#define SCOPE_NONE   G_MININT64 /* request_begin changed nothing */

typedef struct Pass Pass;

/* The per-thread state: grad mode and the current context. */
typedef struct {
    RpcAgThread *th;
    gint64 ctx;
} ThreadState;

/* SimulateBackwardError's flag, shared with the nodes that read it. */
typedef struct {
    gint ref;
    gboolean on;
} SimFlag;

typedef struct {
    gint ref;
    gint64 id;
    GTree *sends;           /* gint64* message id → RpcAgNode* (owned) */
    GTree *recvs;           /* gint64* message id → RpcAgNode* (owned) */
    GArray *known;          /* gint worker ids, ascending, unique */
    GPtrArray *leaves;      /* RpcTensor*, in order of first gradient */
    GPtrArray *grads;       /* RpcTensor*, parallel to leaves */
    GHashTable *grad_index; /* RpcTensor* → index + 1; looked up only */
    Pass *pass;             /* the backward pass on this worker (reference) */
} Ctx;

struct Pass {
    gint ref;
    RpcDistAutograd *d; /* NULL once the container is gone */
    Ctx *ctx;           /* reference */
    RpcAgThread *thread;
    RpcAgGraphTask *task;
    gboolean keep_graph, running, finished;
    guint n_starts, n_injected;
    guint n_outstanding, n_outstanding_done;
    RpcFuture *done;
};

typedef struct {
    gint from;
    gint64 id;
} ReqKey;

/* What a RecvRpcBackward node knows of its container: nothing once the
 * container is gone (a tensor may outlive its worker's agent). */
typedef struct {
    gint ref;
    RpcDistAutograd *d; /* NULL once the container is freed */
} Handle;

struct RpcDistAutograd {
    RpcAgent *a;
    gint64 worker_id;
    gint64 next_context_id;
    gint64 next_message_id;
    gint64 max_id;
    Handle *handle;
    SimFlag *sim_flag;
    guint n_passes; /* passes attached to a context */
    /* Allocated on first use (ready()), so that an agent that never uses
     * distributed autograd pays for none of it; NULL until then. */
    RpcAgState *state;
    GHashTable *threads;  /* thread id + 1 → ThreadState* */
    GHashTable *contexts; /* gint64* id → Ctx* (reference) */
    GHashTable *wrapped;  /* ReqKey* → gint64* context: responses to wrap */
    GHashTable *passes;   /* RpcAgThread* → Pass* (weak): live passes, looked up only */
};

typedef struct {
    Handle *h;
    gint64 ctx_id;
    gint64 msg_id;
    gint from;
} RecvData;

/* --- trace kinds -------------------------------------------------------- */

static const RpcTraceKind tk_ctx = {"dist_autograd.context", {"ctx", "worker", NULL}};
static const RpcTraceKind tk_send_fn = {"dist_autograd.send_fn", {"ctx", "msg", "to"}};
static const RpcTraceKind tk_recv_fn = {"dist_autograd.recv_fn", {"ctx", "msg", "from"}};
static const RpcTraceKind tk_backward = {"dist_autograd.backward", {"ctx", "starts", "rpcs"}};
static const RpcTraceKind tk_cleanup_failed = {"dist_autograd.cleanup_failed",
                                               {"worker", "ctx", NULL}};

static void
trace(RpcDistAutograd *d, const RpcTraceKind *kind, gint64 x, gint64 y, gint64 z,
      const char *detail)
{
    rpc_executor_trace(rpc_agent_executor(d->a), kind, x, y, z, detail);
}

static RpcDistAutograd *
container(RpcAgent *a)
{
    return rpc_agent_dist_autograd(a);
}

static void thread_state_free(gpointer p);
static guint req_key_hash(gconstpointer p);
static gboolean req_key_equal(gconstpointer x, gconstpointer y);

static RpcDistAutograd *
ready(RpcDistAutograd *d)
{
    if (d->contexts == NULL) {
        d->state = rpc_ag_state_new();
        d->threads = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, thread_state_free);
        d->contexts = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        d->wrapped = g_hash_table_new_full(req_key_hash, req_key_equal, g_free, g_free);
        d->passes = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    return d;
}

static gpointer
find(GHashTable *t, gconstpointer key)
{
    return t != NULL ? g_hash_table_lookup(t, key) : NULL;
}

static void
no_context(gint64 id, GError **error)
{
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_DIST_MSG_NO_CONTEXT "%" G_GINT64_FORMAT,
                id);
}

static gint
cmp_int64(gconstpointer x, gconstpointer y, gpointer unused)
{
    gint64 a = *(const gint64 *)x, b = *(const gint64 *)y;
    return (a > b) - (a < b);
}

static gint64 *
int64_dup(gint64 v)
{
    return g_memdup2(&v, sizeof v);
}

/* --- keys -------------------------------------------------------------- */

static guint
req_key_hash(gconstpointer p)
{
    const ReqKey *k = p;
    return g_int64_hash(&k->id) ^ (guint)k->from * 2654435761u;
}

static gboolean
req_key_equal(gconstpointer x, gconstpointer y)
{
    const ReqKey *a = x, *b = y;
    return a->from == b->from && a->id == b->id;
}

/* --- contexts ------------------------------------------------------------ */

static Ctx *
ctx_new(gint64 id)
{
    Ctx *c = g_new0(Ctx, 1);
    c->ref = 1;
    c->id = id;
    c->sends = g_tree_new_full(cmp_int64, NULL, g_free, (GDestroyNotify)rpc_ag_node_unref);
    c->recvs = g_tree_new_full(cmp_int64, NULL, g_free, (GDestroyNotify)rpc_ag_node_unref);
    c->known = g_array_new(FALSE, FALSE, sizeof(gint));
    c->leaves = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    c->grads = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    c->grad_index = g_hash_table_new(g_direct_hash, g_direct_equal);
    return c;
}

static Ctx *
ctx_ref(Ctx *c)
{
    c->ref++;
    return c;
}

static void
ctx_unref(gpointer p)
{
    Ctx *c = p;
    if (c == NULL || --c->ref > 0)
        return;
    g_assert(c->pass == NULL);
    g_tree_unref(c->sends);
    g_tree_unref(c->recvs);
    g_array_unref(c->known);
    g_hash_table_unref(c->grad_index);
    g_ptr_array_unref(c->grads);
    g_ptr_array_unref(c->leaves);
    g_free(c);
}

static Ctx *
ctx_lookup(RpcDistAutograd *d, gint64 id, GError **error)
{
    Ctx *c = find(d->contexts, &id);
    if (c == NULL)
        no_context(id, error);
    return c;
}

/* getOrCreateContext: a callee learns of a context on first contact. */
static Ctx *
ctx_get_or_create(RpcDistAutograd *d, gint64 id)
{
    Ctx *c = find(ready(d)->contexts, &id);
    if (c == NULL) {
        c = ctx_new(id);
        g_hash_table_insert(d->contexts, int64_dup(id), c);
        trace(d, &tk_ctx, id, id >> WORKER_SHIFT, 0, "created");
    }
    return c;
}

static void
known_add(Ctx *c, gint worker)
{
    guint i = 0;
    while (i < c->known->len && g_array_index(c->known, gint, i) < worker)
        i++;
    if (i < c->known->len && g_array_index(c->known, gint, i) == worker)
        return;
    g_array_insert_val(c->known, i, worker);
}

/* The capture callback: a leaf's gradient goes to the context. */
static void
ctx_capture(RpcTensor *leaf, RpcTensor *grad, gpointer data)
{
    Ctx *c = data;
    guint idx = GPOINTER_TO_UINT(g_hash_table_lookup(c->grad_index, leaf));
    if (idx == 0) {
        g_ptr_array_add(c->leaves, rpc_tensor_ref(leaf));
        g_ptr_array_add(c->grads, rpc_tensor_ref(grad));
        g_hash_table_insert(c->grad_index, leaf, GUINT_TO_POINTER(c->leaves->len));
        return;
    }
    RpcTensor **slot = (RpcTensor **)&g_ptr_array_index(c->grads, idx - 1);
    RpcTensor *sum = rpc_tensor_add(*slot, grad, NULL);
    g_assert(sum != NULL); /* same leaf, same shape and dtype */
    rpc_tensor_unref(*slot);
    *slot = sum;
}

static gboolean
collect_node(gpointer key, gpointer value, gpointer data)
{
    g_ptr_array_add(data, rpc_ag_node_ref(value));
    return FALSE;
}

/* --- threads ------------------------------------------------------------- */

static void
thread_state_free(gpointer p)
{
    ThreadState *ts = p;
    rpc_ag_thread_free(ts->th);
    g_free(ts);
}

static ThreadState *
thread_state(RpcDistAutograd *d)
{
    guint id = rpc_executor_current_thread(rpc_agent_executor(d->a));
    gpointer key = GUINT_TO_POINTER(id + 1);
    ThreadState *ts = g_hash_table_lookup(ready(d)->threads, key);
    if (ts == NULL) {
        ts = g_new0(ThreadState, 1);
        ts->th = rpc_ag_thread_new(d->state);
        ts->ctx = RPC_DIST_NO_CONTEXT;
        g_hash_table_insert(d->threads, key, ts);
    }
    return ts;
}

/* --- the container ---------------------------------------------------------- */

gboolean
rpc_dist_autograd_check_worker_id(gint64 worker_id, GError **error)
{
    if (worker_id < 0 || worker_id > 65535) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "worker_id needs to be in the range [0, 65535]");
        return FALSE;
    }
    return TRUE;
}

static void
sim_flag_unref(gpointer p)
{
    SimFlag *f = p;
    if (--f->ref == 0)
        g_free(f);
}

RpcDistAutograd *
rpc_dist_autograd_new(RpcAgent *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(rpc_dist_autograd_check_worker_id(rpc_agent_id(a), NULL), NULL);
    RpcDistAutograd *d = g_new0(RpcDistAutograd, 1);
    d->a = a;
    d->worker_id = rpc_agent_id(a);
    d->next_context_id = d->worker_id << WORKER_SHIFT;
    d->next_message_id = d->worker_id << WORKER_SHIFT;
    d->max_id = (d->worker_id << WORKER_SHIFT) | (((gint64)1 << WORKER_SHIFT) - 1);
    d->handle = g_new(Handle, 1);
    d->handle->ref = 1;
    d->handle->d = d;
    d->sim_flag = g_new0(SimFlag, 1);
    d->sim_flag->ref = 1;
    d->sim_flag->on = TRUE;
    return d;
}

static void pass_unref(Pass *p);

static gint
cmp_id_ptr(gconstpointer x, gconstpointer y)
{
    return cmp_int64(*(const gint64 *const *)x, *(const gint64 *const *)y, NULL);
}

/* Context ids in ascending order (transfer container; the ids point into
 * the table's keys). */
static GPtrArray *
sorted_context_ids(RpcDistAutograd *d)
{
    GPtrArray *ids = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, d->contexts);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(ids, k);
    g_ptr_array_sort(ids, cmp_id_ptr);
    return ids;
}

static void
handle_unref(Handle *h)
{
    if (--h->ref == 0)
        g_free(h);
}

static void
recv_data_free(gpointer p)
{
    RecvData *rd = p;
    handle_unref(rd->h);
    g_free(rd);
}

void
rpc_dist_autograd_free(RpcDistAutograd *d)
{
    if (d == NULL)
        return;
    d->handle->d = NULL;
    handle_unref(d->handle);
    sim_flag_unref(d->sim_flag);
    if (d->contexts == NULL) {
        g_free(d);
        return;
    }
    /* Passes outlive the container only in callbacks that will never run
     * (their futures are dropped with the agent): cut them loose. */
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, d->passes);
    while (g_hash_table_iter_next(&it, NULL, &v))
        ((Pass *)v)->d = NULL;
    GPtrArray *ids = sorted_context_ids(d);
    for (guint i = 0; i < ids->len; i++) {
        gint64 id = *(gint64 *)g_ptr_array_index(ids, i);
        Ctx *c = g_hash_table_lookup(d->contexts, &id);
        g_hash_table_remove(d->contexts, &id);
        if (c->pass != NULL) {
            Pass *p = c->pass;
            c->pass = NULL;
            pass_unref(p);
        }
        ctx_unref(c);
    }
    g_ptr_array_unref(ids);
    g_hash_table_unref(d->contexts);
    g_hash_table_unref(d->passes);
    g_hash_table_unref(d->wrapped);
    g_hash_table_unref(d->threads);
    rpc_ag_state_unref(d->state);
    g_free(d);
}

gboolean
rpc_dist_autograd_init(RpcAgent *a, gint64 worker_id, GError **error)
{
    if (a == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Need to initialize distributed autograd using "
                            "torch.distributed.autograd.init()");
        return FALSE;
    }
    if (!rpc_dist_autograd_check_worker_id(worker_id, error))
        return FALSE;
    RpcDistAutograd *d = container(a);
    if (worker_id != d->worker_id) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Container is already initialized with worker_id: %" G_GINT64_FORMAT
                    ", cannot initialize with different worker_id: %" G_GINT64_FORMAT,
                    d->worker_id, worker_id);
        return FALSE;
    }
    return TRUE;
}

gint64
rpc_dist_autograd_max_id(RpcAgent *a)
{
    return container(a)->max_id;
}

RpcAgState *
rpc_dist_autograd_state(RpcAgent *a)
{
    return ready(container(a))->state;
}

RpcAgThread *
rpc_dist_autograd_thread(RpcAgent *a)
{
    return thread_state(container(a))->th;
}

gint64
rpc_dist_autograd_context_new(RpcAgent *a, GError **error)
{
    RpcDistAutograd *d = container(a);
    ThreadState *ts = thread_state(d);
    if (ts->ctx != RPC_DIST_NO_CONTEXT) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Already have an autograd context id for this thread.");
        return RPC_DIST_NO_CONTEXT;
    }
    if (d->next_context_id >= d->max_id) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "We have run out of autograd context ids!!!");
        return RPC_DIST_NO_CONTEXT;
    }
    gint64 id = d->next_context_id++;
    g_hash_table_insert(ready(d)->contexts, int64_dup(id), ctx_new(id));
    ts->ctx = id;
    trace(d, &tk_ctx, id, d->worker_id, 0, "new");
    return id;
}

static void send_release(RpcDistAutograd *d, GArray *workers, gint64 ctx_id);

/* eraseContextIdAndReset + sendReleaseContextRpc. */
static void
ctx_erase(RpcDistAutograd *d, gint64 id, const char *why)
{
    Ctx *c = g_hash_table_lookup(d->contexts, &id);
    GArray *known = g_array_ref(c->known);
    g_hash_table_remove(d->contexts, &id);
    ThreadState *ts = thread_state(d);
    if (ts->ctx == id)
        ts->ctx = RPC_DIST_NO_CONTEXT;
    trace(d, &tk_ctx, id, id >> WORKER_SHIFT, known->len, why);
    ctx_unref(c);
    send_release(d, known, id);
    g_array_unref(known);
}

gboolean
rpc_dist_autograd_context_release(RpcAgent *a, gint64 ctx_id, GError **error)
{
    RpcDistAutograd *d = container(a);
    if (ctx_lookup(d, ctx_id, error) == NULL)
        return FALSE;
    ctx_erase(d, ctx_id, "release");
    return TRUE;
}

gint64
rpc_dist_autograd_current_context(RpcAgent *a, GError **error)
{
    RpcDistAutograd *d = container(a);
    gint64 id = thread_state(d)->ctx;
    if (id == RPC_DIST_NO_CONTEXT || find(d->contexts, &id) == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Current thread doesn't have a valid autograd context. Please wrap "
                            "your code using: `with torch.distributed.autograd.context() as "
                            "context_id` to generate a valid context");
        return RPC_DIST_NO_CONTEXT;
    }
    return id;
}

gboolean
rpc_dist_autograd_retrieve_context(RpcAgent *a, gint64 ctx_id, GError **error)
{
    return ctx_lookup(container(a), ctx_id, error) != NULL;
}

GArray *
rpc_dist_autograd_known_worker_ids(RpcAgent *a, gint64 ctx_id, GError **error)
{
    Ctx *c = ctx_lookup(container(a), ctx_id, error);
    if (c == NULL)
        return NULL;
    GArray *out = g_array_sized_new(FALSE, FALSE, sizeof(gint), c->known->len);
    g_array_append_vals(out, c->known->data, c->known->len);
    return out;
}

static GPtrArray *
functions(RpcAgent *a, gint64 ctx_id, gboolean sends, GError **error)
{
    Ctx *c = ctx_lookup(container(a), ctx_id, error);
    if (c == NULL)
        return NULL;
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_ag_node_unref);
    g_tree_foreach(sends ? c->sends : c->recvs, collect_node, out);
    return out;
}

GPtrArray *
rpc_dist_autograd_send_functions(RpcAgent *a, gint64 ctx_id, GError **error)
{
    return functions(a, ctx_id, TRUE, error);
}

GPtrArray *
rpc_dist_autograd_recv_functions(RpcAgent *a, gint64 ctx_id, GError **error)
{
    return functions(a, ctx_id, FALSE, error);
}

gboolean
rpc_dist_autograd_get_gradients(RpcAgent *a, gint64 ctx_id, GPtrArray **tensors, GPtrArray **grads,
                                GError **error)
{
    g_return_val_if_fail(tensors != NULL && grads != NULL, FALSE);
    Ctx *c = ctx_lookup(container(a), ctx_id, error);
    if (c == NULL)
        return FALSE;
    *tensors = g_ptr_array_new_full(c->leaves->len, (GDestroyNotify)rpc_tensor_unref);
    *grads = g_ptr_array_new_full(c->grads->len, (GDestroyNotify)rpc_tensor_unref);
    for (guint i = 0; i < c->leaves->len; i++) {
        g_ptr_array_add(*tensors, rpc_tensor_ref(g_ptr_array_index(c->leaves, i)));
        g_ptr_array_add(*grads, rpc_tensor_ref(g_ptr_array_index(c->grads, i)));
    }
    return TRUE;
}

RpcTensor *
rpc_dist_autograd_get_gradient(RpcAgent *a, gint64 ctx_id, const RpcTensor *leaf, GError **error)
{
    Ctx *c = ctx_lookup(container(a), ctx_id, error);
    if (c == NULL)
        return NULL;
    guint idx = GPOINTER_TO_UINT(g_hash_table_lookup(c->grad_index, leaf));
    return idx ? rpc_tensor_ref(g_ptr_array_index(c->grads, idx - 1)) : NULL;
}

void
rpc_dist_autograd_debug_info(RpcAgent *a, RpcDistAutogradDebugInfo *out)
{
    RpcDistAutograd *d = container(a);
    out->num_current_backward_passes = d->n_passes;
    out->num_autograd_contexts = d->contexts ? g_hash_table_size(d->contexts) : 0;
}

/* --- send and recv functions ------------------------------------------------ */

/* SendRpcBackward: passes on the gradients its BACKWARD_AUTOGRAD_REQ
 * brought (injected as its inputs). */
static gboolean
send_apply(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in, RpcTensor **grads_out,
           GError **error)
{
    guint n = MIN(rpc_ag_node_n_next(node), rpc_ag_node_n_inputs(node));
    for (guint i = 0; i < n; i++)
        grads_out[i] = grads_in[i] != NULL ? rpc_tensor_ref(grads_in[i]) : NULL;
    return TRUE;
}

static const RpcAgNodeClass send_class = {
    .name = RPC_DIST_SEND_NAME,
    .apply = send_apply,
};

static void pass_add_outstanding(Pass *p, RpcFuture *f);

/* RecvRpcBackward: sends its gradients (zeros where none flowed in) to the
 * worker the tensors came from, as an outstanding RPC of the pass. */
static gboolean
recv_apply(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in, RpcTensor **grads_out,
           GError **error)
{
    RecvData *rd = rpc_ag_node_data(node);
    RpcDistAutograd *d = rd->h->d;
    Pass *p = d != NULL ? find(d->passes, thread) : NULL;
    if (d == NULL || find(d->contexts, &rd->ctx_id) == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Autograd context no longer valid! This usually means the autograd "
                            "context was cleaned up by a different thread due to an error before "
                            "RecvRcpBackward had a chance to run");
        return FALSE;
    }
    if (p == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "RecvRpcBackward of autograd context %" G_GINT64_FORMAT
                    " can only run in a distributed backward pass "
                    "(torch.distributed.autograd.backward)",
                    rd->ctx_id);
        return FALSE;
    }
    RpcValue *grads = rpc_value_new_list();
    for (guint i = 0; i < rpc_ag_node_n_inputs(node); i++) {
        RpcTensor *g =
            grads_in[i] != NULL ? rpc_tensor_ref(grads_in[i]) : rpc_ag_node_input_zeros(node, i);
        rpc_value_list_append(grads, g != NULL ? rpc_value_new_tensor(g) : rpc_value_none());
    }
    RpcValue *body = rpc_value_new_list();
    rpc_value_list_append(body, rpc_value_new_int(rd->ctx_id));
    rpc_value_list_append(body, rpc_value_new_int(rd->msg_id));
    rpc_value_list_append(body, grads);
    rpc_value_list_append(body, rpc_value_new_bool(p->keep_graph));
    RpcFuture *f = rpc_agent_send_request(d->a, rd->from, RPC_MSG_BACKWARD_AUTOGRAD_REQ, body,
                                          RPC_TIMEOUT_UNSET, "BACKWARD_AUTOGRAD_REQ", error);
    rpc_value_unref(body);
    if (f == NULL)
        return FALSE;
    pass_add_outstanding(p, f);
    rpc_future_unref(f);
    return TRUE;
}

static const RpcAgNodeClass recv_class = {
    .name = RPC_DIST_RECV_NAME,
    .apply = recv_apply,
    .finalize = recv_data_free,
};

/* --- forward: wrapping and unwrapping (spec §7.2) ------------------------- */

static gboolean
any_requires_grad(GPtrArray *tensors)
{
    for (guint i = 0; i < tensors->len; i++)
        if (rpc_ag_requires_grad(g_ptr_array_index(tensors, i)))
            return TRUE;
    return FALSE;
}

/* getMessageWithAutograd: msg (taken) as is, or wrapped in wrapper_type
 * with the send function recorded (transfer full).
 *
 * Wrapper payload (codec.h encoding, no tensors of its own; the wrapped
 * message's tensors stay the side list):
 *   [from_worker, context_id, autograd_message_id, wrapped_type, bytes] */
static RpcMessage *
wrap(RpcDistAutograd *d, Ctx *c, RpcAgThread *th, gint dst, RpcMessage *msg,
     RpcMessageType wrapper_type, gboolean force)
{
    GPtrArray *tensors = rpc_message_tensors(msg);
    gboolean grad = rpc_ag_thread_is_grad_enabled(th) && any_requires_grad(tensors);
    if (!force && !grad)
        return msg;
    gint64 msg_id = d->next_message_id++;
    if (grad) {
        RpcAgNode *send = rpc_ag_node_new(th, &send_class, NULL);
        for (guint i = 0; i < tensors->len; i++) {
            RpcTensor *t = g_ptr_array_index(tensors, i);
            if (!rpc_ag_requires_grad(t))
                continue;
            rpc_ag_node_add_input(send, t);
            rpc_ag_node_add_next_edge_for(send, th, t);
        }
        g_tree_insert(c->sends, int64_dup(msg_id), send);
        trace(d, &tk_send_fn, c->id, msg_id, dst, rpc_message_type_name(rpc_message_type(msg)));
    }
    known_add(c, dst);
    gsize len;
    const guint8 *bytes = rpc_message_payload_data(msg, &len);
    RpcValue *w = rpc_value_new_list();
    rpc_value_list_append(w, rpc_value_new_int(d->worker_id));
    rpc_value_list_append(w, rpc_value_new_int(c->id));
    rpc_value_list_append(w, rpc_value_new_int(msg_id));
    rpc_value_list_append(w, rpc_value_new_int(rpc_message_type(msg)));
    rpc_value_list_append(w, rpc_value_new_bytes(bytes, len));
    GBytes *payload = rpc_codec_encode(w, NULL, NULL, NULL);
    g_assert(payload != NULL); /* ints and bytes always encode */
    rpc_value_unref(w);
    RpcMessage *out =
        rpc_message_new(wrapper_type, rpc_message_id(msg), payload, g_ptr_array_ref(tensors));
    rpc_message_unref(msg);
    return out;
}

RpcMessage *
rpc_dist_autograd_wrap_request(RpcAgent *a, gint dst, RpcMessage *msg)
{
    gboolean force;
    switch (rpc_message_type(msg)) {
    case RPC_MSG_PYTHON_CALL:
    case RPC_MSG_PYTHON_REMOTE_CALL:
    case RPC_MSG_PYTHON_RREF_FETCH_CALL:
    case RPC_MSG_SCRIPT_RREF_FETCH_CALL:
        force = TRUE; /* the result may need grad recording */
        break;
    case RPC_MSG_SCRIPT_CALL:
    case RPC_MSG_SCRIPT_REMOTE_CALL:
        force = FALSE;
        break;
    default:
        return msg; /* internal messages are never wrapped */
    }
    RpcDistAutograd *d = container(a);
    if (d->contexts == NULL || g_hash_table_size(d->contexts) == 0)
        return msg; /* no context on this worker: nothing to look up */
    ThreadState *ts = thread_state(d);
    Ctx *c = ts->ctx != RPC_DIST_NO_CONTEXT ? find(d->contexts, &ts->ctx) : NULL;
    return c != NULL ? wrap(d, c, ts->th, dst, msg, RPC_MSG_FORWARD_AUTOGRAD_REQ, force) : msg;
}

RpcMessage *
rpc_dist_autograd_wrap_response(RpcAgent *a, gint to, RpcMessage *msg)
{
    RpcDistAutograd *d = container(a);
    if (d->wrapped == NULL || g_hash_table_size(d->wrapped) == 0)
        return msg; /* no wrapped request is being served */
    ReqKey k = {to, rpc_message_id(msg)};
    gint64 *ctx_id = find(d->wrapped, &k);
    if (ctx_id == NULL)
        return msg;
    Ctx *c = find(d->contexts, ctx_id);
    g_hash_table_remove(d->wrapped, &k);
    if (c == NULL || rpc_message_type(msg) == RPC_MSG_EXCEPTION)
        return msg;
    return wrap(d, c, thread_state(d)->th, to, msg, RPC_MSG_FORWARD_AUTOGRAD_RESP, FALSE);
}

/* Parses a wrapper and attaches the recv function (addRecvRpcBackward);
 * returns the wrapped message (transfer full) and its context id. */
static RpcMessage *
unwrap(RpcDistAutograd *d, gint from, RpcMessage *msg, gboolean request, gint64 *ctx_id,
       GError **error)
{
    gsize len;
    const guint8 *data = rpc_message_payload_data(msg, &len);
    RpcValue *w = rpc_codec_decode(data, len, NULL, NULL, error);
    if (w == NULL)
        return NULL;
    RpcMessage *inner = NULL;
    gboolean ok = rpc_value_type(w) == RPC_VALUE_LIST && rpc_value_list_len(w) == 5;
    for (guint i = 0; ok && i < 4; i++)
        ok = rpc_value_type(rpc_value_list_get(w, i)) == RPC_VALUE_INT;
    ok = ok && rpc_value_type(rpc_value_list_get(w, 4)) == RPC_VALUE_BYTES;
    gint64 sender = ok ? rpc_value_get_int(rpc_value_list_get(w, 0)) : -1;
    gint64 id = ok ? rpc_value_get_int(rpc_value_list_get(w, 1)) : -1;
    gint64 msg_id = ok ? rpc_value_get_int(rpc_value_list_get(w, 2)) : -1;
    gint64 type = ok ? rpc_value_get_int(rpc_value_list_get(w, 3)) : -1;
    ok = ok && sender == from && id >= 0 && msg_id >= 0 && type >= 0 && type <= G_MAXUINT16 &&
         rpc_message_type_is_known((guint)type) &&
         (request ? rpc_message_type_is_request((RpcMessageType)type)
                  : rpc_message_type_is_response((RpcMessageType)type)) &&
         type != RPC_MSG_FORWARD_AUTOGRAD_REQ && type != RPC_MSG_FORWARD_AUTOGRAD_RESP;
    if (!ok) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "malformed %s from worker %d",
                    rpc_message_type_name(rpc_message_type(msg)), from);
        goto out;
    }
    Ctx *c = ctx_get_or_create(d, id);
    GPtrArray *tensors = rpc_message_tensors(msg);
    RpcAgThread *th = thread_state(d)->th;
    if (rpc_ag_thread_is_grad_enabled(th) && any_requires_grad(tensors)) {
        RecvData *rd = g_new(RecvData, 1);
        *rd = (RecvData){d->handle, id, msg_id, from};
        d->handle->ref++;
        RpcAgNode *recv = rpc_ag_node_new(th, &recv_class, rd);
        for (guint i = 0; i < tensors->len; i++)
            if (rpc_ag_requires_grad(g_ptr_array_index(tensors, i)))
                rpc_ag_set_history(g_ptr_array_index(tensors, i), recv);
        g_tree_replace(c->recvs, int64_dup(msg_id), recv);
        trace(d, &tk_recv_fn, id, msg_id, from, rpc_message_type_name((RpcMessageType)type));
    }
    gsize plen;
    const guint8 *payload = rpc_value_get_bytes(rpc_value_list_get(w, 4), &plen);
    inner = rpc_message_new((RpcMessageType)type, rpc_message_id(msg), g_bytes_new(payload, plen),
                            g_ptr_array_ref(tensors));
    *ctx_id = id;
out:
    rpc_value_unref(w);
    return inner;
}

gboolean
rpc_dist_autograd_request_begin(RpcAgent *a, gint from, RpcMessage **msg, gint64 *scope,
                                GError **error)
{
    *scope = SCOPE_NONE;
    if (rpc_message_type(*msg) != RPC_MSG_FORWARD_AUTOGRAD_REQ)
        return TRUE;
    RpcDistAutograd *d = container(a);
    gint64 ctx_id;
    RpcMessage *inner = unwrap(d, from, *msg, TRUE, &ctx_id, error);
    if (inner == NULL)
        return FALSE;
    ReqKey *k = g_new(ReqKey, 1);
    *k = (ReqKey){from, rpc_message_id(inner)};
    g_hash_table_replace(d->wrapped, k, int64_dup(ctx_id));
    /* DistAutogradContextGuard: nested calls of the UDF carry the context. */
    ThreadState *ts = thread_state(d);
    *scope = ts->ctx;
    ts->ctx = ctx_id;
    rpc_message_unref(*msg);
    *msg = inner;
    return TRUE;
}

gint64
rpc_dist_autograd_request_resume(RpcAgent *a, gint from, gint64 id)
{
    RpcDistAutograd *d = container(a);
    ReqKey k = {from, id};
    gint64 *ctx_id = d->wrapped ? g_hash_table_lookup(d->wrapped, &k) : NULL;
    if (ctx_id == NULL)
        return SCOPE_NONE;
    ThreadState *ts = thread_state(d);
    gint64 scope = ts->ctx;
    ts->ctx = *ctx_id;
    return scope;
}

void
rpc_dist_autograd_request_end(RpcAgent *a, gint64 scope)
{
    if (scope != SCOPE_NONE)
        thread_state(container(a))->ctx = scope;
}

gboolean
rpc_dist_autograd_unwrap_response(RpcAgent *a, gint from, RpcMessage **msg, GError **error)
{
    if (rpc_message_type(*msg) != RPC_MSG_FORWARD_AUTOGRAD_RESP)
        return TRUE;
    gint64 ctx_id;
    RpcMessage *inner = unwrap(container(a), from, *msg, FALSE, &ctx_id, error);
    if (inner == NULL)
        return FALSE;
    rpc_message_unref(*msg);
    *msg = inner;
    return TRUE;
}

/* --- backward passes (spec §7.3) -------------------------------------------- */

static Pass *
pass_ref(Pass *p)
{
    p->ref++;
    return p;
}

static void
pass_unref(Pass *p)
{
    if (p == NULL || --p->ref > 0)
        return;
    g_assert(p->ctx->pass != p);
    if (p->d != NULL)
        g_hash_table_remove(p->d->passes, p->thread);
    rpc_ag_graph_task_free(p->task); /* before its thread */
    rpc_ag_thread_free(p->thread);
    rpc_future_unref(p->done);
    ctx_unref(p->ctx);
    g_free(p);
}

static void
pass_unref_cb(gpointer p)
{
    pass_unref(p);
}

static void
pass_describe(Pass *p)
{
    guint starts = p->n_starts - p->n_injected;
    char *desc = starts > 0 ? g_strdup_printf("dist backward of context %" G_GINT64_FORMAT
                                              " on %s: waiting for %u send function(s) to "
                                              "receive gradients",
                                              p->ctx->id, rpc_agent_name(p->d->a), starts)
                            : g_strdup_printf("dist backward of context %" G_GINT64_FORMAT
                                              " on %s: waiting for %u gradient RPC(s)",
                                              p->ctx->id, rpc_agent_name(p->d->a),
                                              p->n_outstanding - p->n_outstanding_done);
    rpc_future_set_description(p->done, desc);
    g_free(desc);
}

/* A new pass attached to c (the attachment holds a reference; so does the
 * caller's result). */
static Pass *
pass_new(RpcDistAutograd *d, Ctx *c, gboolean keep_graph)
{
    g_assert(c->pass == NULL);
    Pass *p = g_new0(Pass, 1);
    p->ref = 1;
    p->d = d;
    p->ctx = ctx_ref(c);
    p->keep_graph = keep_graph;
    p->thread = rpc_ag_thread_new(d->state);
    p->task = rpc_ag_graph_task_new(p->thread, keep_graph, FALSE);
    rpc_ag_graph_task_set_capture(p->task, ctx_capture, ctx_ref(c), ctx_unref);
    p->done = rpc_future_new(rpc_agent_executor(d->a));
    g_hash_table_insert(d->passes, p->thread, p);
    c->pass = pass_ref(p);
    d->n_passes++;
    return p;
}

/* cleanupBackwardPass, then the pass's future.  The caller holds a
 * reference. */
static void
pass_finish(Pass *p, const char *error_text)
{
    if (p->finished)
        return;
    p->finished = TRUE;
    if (p->ctx->pass == p) {
        p->ctx->pass = NULL;
        if (p->d != NULL)
            p->d->n_passes--;
        pass_unref(p);
    }
    if (p->d != NULL)
        trace(p->d, &tk_backward, p->ctx->id, p->n_starts, p->n_outstanding,
              error_text ? error_text : "done");
    if (error_text != NULL)
        rpc_future_fail_if_needed(p->done, rpc_value_new_error(RPC_ERROR_RUNTIME, error_text));
    else
        rpc_future_complete_if_needed(p->done, rpc_value_none());
}

/* The graph task failed (a node, or a gradient RPC while it ran). */
static void
pass_fail_on_node(Pass *p, const char *what)
{
    gint64 me = p->d != NULL ? p->d->worker_id : -1;
    char *text = g_strdup_printf("Error on Node %" G_GINT64_FORMAT ": %s", me, what);
    pass_finish(p, text);
    g_free(text);
}

static void
pass_check(Pass *p)
{
    if (p->finished || p->running || p->d == NULL)
        return;
    if (rpc_ag_graph_task_is_done(p->task) && p->n_outstanding_done == p->n_outstanding)
        pass_finish(p, NULL);
    else
        pass_describe(p);
}

static gboolean
outstanding_done(RpcFuture *f, gpointer data, GError **error)
{
    Pass *p = data;
    p->n_outstanding_done++;
    if (p->finished || p->d == NULL)
        return TRUE;
    RpcValue *err = rpc_future_peek_error(f);
    if (err == NULL)
        pass_check(p);
    else if (p->running || !rpc_ag_graph_task_is_done(p->task))
        pass_fail_on_node(p, rpc_value_error_message(err));
    else
        pass_finish(p, rpc_value_error_message(err));
    return TRUE;
}

static void
pass_add_outstanding(Pass *p, RpcFuture *f)
{
    p->n_outstanding++;
    rpc_future_add_done_callback(f, outstanding_done, pass_ref(p), pass_unref_cb, NULL);
}

static gboolean
add_start(gpointer key, gpointer value, gpointer data)
{
    Pass *p = data;
    rpc_ag_graph_task_add_start_node(p->task, value);
    p->n_starts++;
    return FALSE;
}

/* computeDependencies: every send function of the context is a start node. */
static gboolean
pass_prepare(Pass *p, GError **error)
{
    g_tree_foreach(p->ctx->sends, add_start, p);
    return rpc_ag_graph_task_prepare(p->task, error);
}

/* Runs the ready nodes.  A node may block (a custom function waiting for
 * something): gradients injected meanwhile by another thread are left to
 * the run in progress, which drains them, so the engine is never entered
 * twice. */
static void
pass_run(Pass *p)
{
    if (p->running)
        return;
    GError *err = NULL;
    p->running = TRUE;
    gboolean ok = rpc_ag_graph_task_run(p->task, &err);
    p->running = FALSE;
    if (!ok) {
        pass_fail_on_node(p, err->message);
        g_error_free(err);
        return;
    }
    pass_check(p);
}

static gboolean
pass_inject(Pass *p, RpcAgNode *send, RpcTensor *const *grads, guint n, GError **error)
{
    if (!rpc_ag_graph_task_inject(p->task, send, grads, n, error))
        return FALSE;
    p->n_injected++;
    return TRUE;
}

static gboolean
validate_roots(RpcTensor *const *roots, guint n, GError **error)
{
    if (n == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "No tensors provided for gradient computation.");
        return FALSE;
    }
    for (guint i = 0; i < n; i++) {
        RpcTensor *r = roots[i];
        if (r == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                                "backward(): incompatible function arguments. The following "
                                "argument types are supported:\n    1. (context_id: int, roots: "
                                "List[Tensor], retain_graph: bool = False) -> None");
            return FALSE;
        }
        const char *what = !rpc_ag_requires_grad(r)    ? "requires_grad not set on root"
                           : rpc_tensor_numel(r) != 1  ? " is not a scalar, all roots need to "
                                                         "be scalar"
                           : rpc_ag_grad_fn(r) == NULL ? " does not have a valid gradient "
                                                         "function."
                                                       : NULL;
        if (what != NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, what);
            return FALSE;
        }
    }
    return TRUE;
}

gboolean
rpc_dist_autograd_backward(RpcAgent *a, gint64 ctx_id, RpcTensor *const *roots, guint n,
                           gboolean retain_graph, GError **error)
{
    g_return_val_if_fail(a != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (roots == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "backward(): incompatible function arguments. The following argument "
                            "types are supported:\n    1. (context_id: int, roots: List[Tensor], "
                            "retain_graph: bool = False) -> None");
        return FALSE;
    }
    RpcDistAutograd *d = container(a);
    Ctx *c = ctx_lookup(d, ctx_id, error);
    if (c == NULL || !validate_roots(roots, n, error))
        return FALSE;
    if (c->pass != NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "A backward pass of autograd context %" G_GINT64_FORMAT
                    " is already running on this worker",
                    ctx_id);
        return FALSE;
    }
    Pass *p = pass_new(d, c, retain_graph);
    GError *err = NULL;
    gboolean ok = TRUE;
    for (guint i = 0; i < n && ok; i++)
        ok = rpc_ag_graph_task_add_root(p->task, roots[i], NULL, i, &err);
    ok = ok && pass_prepare(p, &err);
    trace(d, &tk_backward, ctx_id, p->n_starts, 0, "start");
    if (ok) {
        pass_run(p);
    } else {
        pass_fail_on_node(p, err->message);
        g_error_free(err);
    }
    RpcFuture *done = rpc_future_ref(p->done);
    RpcValue *v = rpc_future_wait(done, error);
    if (v == NULL && !p->finished)
        pass_finish(p, "the backward pass was abandoned"); /* the run is ending */
    rpc_future_unref(done);
    pass_unref(p);
    if (v == NULL)
        return FALSE;
    rpc_value_unref(v);
    return TRUE;
}

/* --- serving ------------------------------------------------------------- */

static void
respond_on_node(RpcDistAutograd *d, gint to, gint64 id, const char *what)
{
    char *text = g_strdup_printf("Error on Node %" G_GINT64_FORMAT ": %s", d->worker_id, what);
    rpc_agent_respond(d->a, to, id, RPC_MSG_EXCEPTION, rpc_value_new_string_take(text));
}

/* PropagateGradientsReq: [context_id, autograd_message_id, [grads], retain]. */
static void
serve_backward(RpcDistAutograd *d, gint from, gint64 id, RpcValue *body)
{
    gboolean ok = rpc_value_type(body) == RPC_VALUE_LIST && rpc_value_list_len(body) == 4 &&
                  rpc_value_type(rpc_value_list_get(body, 0)) == RPC_VALUE_INT &&
                  rpc_value_type(rpc_value_list_get(body, 1)) == RPC_VALUE_INT &&
                  rpc_value_type(rpc_value_list_get(body, 2)) == RPC_VALUE_LIST &&
                  rpc_value_type(rpc_value_list_get(body, 3)) == RPC_VALUE_BOOL;
    const RpcValue *list = ok ? rpc_value_list_get(body, 2) : NULL;
    for (guint i = 0; ok && i < rpc_value_list_len(list); i++) {
        RpcValueType t = rpc_value_type(rpc_value_list_get(list, i));
        ok = t == RPC_VALUE_TENSOR || t == RPC_VALUE_NONE;
    }
    if (!ok) {
        respond_on_node(d, from, id, "malformed BACKWARD_AUTOGRAD_REQ");
        return;
    }
    gint64 ctx_id = rpc_value_get_int(rpc_value_list_get(body, 0));
    gint64 msg_id = rpc_value_get_int(rpc_value_list_get(body, 1));
    gboolean retain = rpc_value_get_bool(rpc_value_list_get(body, 3));
    GError *err = NULL;
    Ctx *c = ctx_lookup(d, ctx_id, &err);
    RpcAgNode *send = c != NULL ? g_tree_lookup(c->sends, &msg_id) : NULL;
    guint n = rpc_value_list_len(list);
    if (c != NULL && send == NULL)
        g_set_error(&err, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Could not find send function for autograd message id: %" G_GINT64_FORMAT,
                    msg_id);
    else if (c != NULL && n != rpc_ag_node_n_inputs(send))
        g_set_error(&err, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "%u gradients for autograd message id %" G_GINT64_FORMAT
                    ", whose send function takes %u",
                    n, msg_id, rpc_ag_node_n_inputs(send));
    if (err != NULL) {
        respond_on_node(d, from, id, err->message);
        g_error_free(err);
        return;
    }
    RpcTensor **grads = g_new0(RpcTensor *, MAX(n, 1));
    for (guint i = 0; i < n; i++) {
        const RpcValue *g = rpc_value_list_get(list, i);
        grads[i] = rpc_value_type(g) == RPC_VALUE_TENSOR ? rpc_value_get_tensor(g) : NULL;
    }
    if (c->pass == NULL) {
        /* First contact in this pass: every send function is a start node;
         * the reply waits for the local engine and its gradient RPCs. */
        Pass *p = pass_new(d, c, retain);
        trace(d, &tk_backward, ctx_id, g_tree_nnodes(c->sends), 0, "join");
        if (pass_prepare(p, &err) && pass_inject(p, send, grads, n, &err)) {
            pass_run(p);
        } else {
            pass_fail_on_node(p, err->message);
            g_error_free(err);
        }
        rpc_agent_reply_when_done(d->a, from, id, RPC_MSG_BACKWARD_AUTOGRAD_RESP, p->done);
        pass_unref(p);
    } else {
        /* The pass is running here: queue this send function, reply now. */
        Pass *p = pass_ref(c->pass);
        if (pass_inject(p, send, grads, n, &err)) {
            pass_run(p);
            rpc_agent_respond(d->a, from, id, RPC_MSG_BACKWARD_AUTOGRAD_RESP, rpc_value_none());
        } else {
            respond_on_node(d, from, id, err->message);
            g_error_free(err);
        }
        pass_unref(p);
    }
    g_free(grads);
}

/* releaseContextIfPresent: idempotent, and cascades to the known workers. */
static void
serve_cleanup(RpcDistAutograd *d, gint from, gint64 id, RpcValue *body)
{
    if (rpc_value_type(body) != RPC_VALUE_INT) {
        respond_on_node(d, from, id, "malformed CLEANUP_AUTOGRAD_CONTEXT_REQ");
        return;
    }
    gint64 ctx_id = rpc_value_get_int(body);
    if (find(d->contexts, &ctx_id) != NULL)
        ctx_erase(d, ctx_id, "cleanup");
    rpc_agent_respond(d->a, from, id, RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_RESP, rpc_value_none());
}

static gboolean owner_backward(RpcDistAutograd *d, RpcRRef *r, gint64 ctx_id, gboolean retain,
                               GError **error);

/* RRefBackwardReq: [rref, context_id, retain_graph]; the RRef arrives as the
 * owner's own. */
static void
serve_rref_backward(RpcDistAutograd *d, gint from, gint64 id, RpcValue *body)
{
    RpcRRef *r = NULL;
    if (rpc_value_type(body) == RPC_VALUE_LIST && rpc_value_list_len(body) == 3 &&
        rpc_value_type(rpc_value_list_get(body, 1)) == RPC_VALUE_INT &&
        rpc_value_type(rpc_value_list_get(body, 2)) == RPC_VALUE_BOOL)
        r = rpc_value_get_rref(rpc_value_list_get(body, 0));
    if (r == NULL || !rpc_rref_is_owner(r)) {
        respond_on_node(d, from, id, "malformed RREF_BACKWARD_REQ");
        return;
    }
    GError *err = NULL;
    if (owner_backward(d, r, rpc_value_get_int(rpc_value_list_get(body, 1)),
                       rpc_value_get_bool(rpc_value_list_get(body, 2)), &err)) {
        rpc_agent_respond(d->a, from, id, RPC_MSG_RREF_BACKWARD_RESP, rpc_value_none());
    } else {
        respond_on_node(d, from, id, err->message);
        g_error_free(err);
    }
}

void
rpc_dist_autograd_serve(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    RpcDistAutograd *d = container(a);
    switch (type) {
    case RPC_MSG_BACKWARD_AUTOGRAD_REQ:
        serve_backward(d, from, id, body);
        break;
    case RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ:
        serve_cleanup(d, from, id, body);
        break;
    case RPC_MSG_RREF_BACKWARD_REQ:
        serve_rref_backward(d, from, id, body);
        break;
    default: {
        char *what = g_strdup_printf("Request type %u not supported.", (guint)type);
        respond_on_node(d, from, id, what);
        g_free(what);
    }
    }
}

/* --- cleanup (spec §7.5) ---------------------------------------------------- */

typedef struct {
    RpcAgent *a;
    gint worker;
    gint64 ctx_id;
} Release;

static void
release_failed(RpcAgent *a, gint worker, gint64 ctx_id, const char *what)
{
    char *text =
        g_strdup_printf("Could not release Dist Autograd Context on node %d: %s", worker, what);
    g_info("%s", text);
    rpc_executor_trace(rpc_agent_executor(a), &tk_cleanup_failed, worker, ctx_id, 0, text);
    g_free(text);
}

static gboolean
release_done(RpcFuture *f, gpointer data, GError **error)
{
    Release *r = data;
    RpcValue *err = rpc_future_peek_error(f);
    if (err != NULL)
        release_failed(r->a, r->worker, r->ctx_id, rpc_value_error_message(err));
    return TRUE;
}

/* sendReleaseContextRpc: best effort, to the workers in ascending order. */
static void
send_release(RpcDistAutograd *d, GArray *workers, gint64 ctx_id)
{
    for (guint i = 0; i < workers->len; i++) {
        gint w = g_array_index(workers, gint, i);
        RpcValue *body = rpc_value_new_int(ctx_id);
        GError *err = NULL;
        RpcFuture *f = rpc_agent_send_with_retries(d->a, w, RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ,
                                                   body, RPC_DIST_CLEANUP_RETRIES,
                                                   "CLEANUP_AUTOGRAD_CONTEXT_REQ", &err);
        rpc_value_unref(body);
        if (f == NULL) {
            release_failed(d->a, w, ctx_id, err->message);
            g_error_free(err);
            continue;
        }
        Release *r = g_new(Release, 1);
        *r = (Release){d->a, w, ctx_id};
        rpc_future_add_done_callback(f, release_done, r, g_free, NULL);
        rpc_future_unref(f);
    }
}

/* --- RRef.backward ------------------------------------------------------ */

#define MSG_RREF_NOT_TENSOR "RRef should contain a tensor for .backward()"

static gboolean
owner_backward(RpcDistAutograd *d, RpcRRef *r, gint64 ctx_id, gboolean retain, GError **error)
{
    RpcValue *v = rpc_rref_local_value(r, error);
    if (v == NULL)
        return FALSE;
    gboolean ok = FALSE;
    if (rpc_value_type(v) != RPC_VALUE_TENSOR) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, MSG_RREF_NOT_TENSOR);
    } else {
        RpcTensor *root = rpc_value_get_tensor(v);
        if (ctx_id == RPC_DIST_NO_CONTEXT)
            ok = rpc_ag_backward(thread_state(d)->th, &root, NULL, 1, FALSE, FALSE, error);
        else
            ok = rpc_dist_autograd_backward(d->a, ctx_id, &root, 1, retain, error);
    }
    rpc_value_unref(v);
    return ok;
}

gboolean
rpc_dist_autograd_rref_backward(RpcAgent *a, const RpcValue *rref, gint64 ctx_id,
                                gboolean retain_graph, GError **error)
{
    g_return_val_if_fail(a != NULL && rref != NULL, FALSE);
    RpcRRef *r = rpc_value_get_rref(rref);
    g_return_val_if_fail(r != NULL, FALSE);
    if (rpc_rref_is_owner(r))
        return owner_backward(container(a), r, ctx_id, retain_graph, error);
    if (ctx_id == RPC_DIST_NO_CONTEXT) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "User RRefs require 'dist_autograd_ctx_id' to be specified");
        return FALSE;
    }
    RpcValue *body = rpc_value_new_list();
    rpc_value_list_append(body, rpc_value_ref((RpcValue *)rref));
    rpc_value_list_append(body, rpc_value_new_int(ctx_id));
    rpc_value_list_append(body, rpc_value_new_bool(retain_graph));
    RpcFuture *f = rpc_agent_send_request(a, rpc_rref_owner_id(r), RPC_MSG_RREF_BACKWARD_REQ, body,
                                          RPC_TIMEOUT_UNSET, "RREF_BACKWARD_REQ", error);
    rpc_value_unref(body);
    if (f == NULL)
        return FALSE;
    RpcValue *v = rpc_future_wait(f, error);
    rpc_future_unref(f);
    if (v == NULL)
        return FALSE;
    rpc_value_unref(v);
    return TRUE;
}

/* --- SimulateBackwardError ------------------------------------------------- */

static gboolean
sim_forward(RpcAgCtx *ctx, RpcValue *const *inputs, guint n, GPtrArray *outputs, GError **error)
{
    g_ptr_array_add(outputs, rpc_value_ref(inputs[0]));
    return TRUE;
}

static gboolean
sim_backward(RpcAgCtx *ctx, RpcTensor *const *grads, guint n, GPtrArray *grad_inputs,
             GError **error)
{
    SimFlag *flag = rpc_ag_ctx_get_user_data(ctx);
    if (flag == NULL || flag->on) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_EXCEPTION, RPC_DIST_MSG_SIM_BACKWARD);
        return FALSE;
    }
    g_ptr_array_add(grad_inputs,
                    grads[0] ? rpc_value_new_tensor(rpc_tensor_ref(grads[0])) : rpc_value_none());
    return TRUE;
}

static const RpcAgFunction simulate_fn = {
    .name = "SimulateBackwardError",
    .forward = sim_forward,
    .backward = sim_backward,
};

RpcTensor *
rpc_dist_autograd_simulate_backward_error(RpcAgent *a, RpcTensor *t, GError **error)
{
    RpcDistAutograd *d = container(a);
    RpcValue *in = rpc_value_new_tensor(rpc_tensor_ref(t));
    GPtrArray *out = rpc_ag_function_apply(thread_state(d)->th, &simulate_fn, &in, 1, error);
    rpc_value_unref(in);
    if (out == NULL)
        return NULL;
    RpcTensor *r = rpc_tensor_ref(rpc_value_get_tensor(g_ptr_array_index(out, 0)));
    g_ptr_array_unref(out);
    RpcAgNode *fn = rpc_ag_grad_fn(r);
    RpcAgCtx *ctx = fn != NULL ? rpc_ag_node_ctx(fn) : NULL;
    if (ctx != NULL) {
        d->sim_flag->ref++;
        rpc_ag_ctx_set_user_data(ctx, d->sim_flag, sim_flag_unref);
    }
    return r;
}

void
rpc_dist_autograd_set_simulate_error(RpcAgent *a, gboolean on)
{
    container(a)->sim_flag->on = on;
}

/* --- the catalogue's helpers (spec §11.0) ---------------------------------- */

#define ARG(i) p[(i)]
#define BIND(fname, names, nreq)                                                                   \
    RpcValue *p[G_N_ELEMENTS(names)] = {0};                                                        \
    if (!rpc_args_bind(fname, args, kwargs, names, nreq, p, error))                                \
    return NULL

static gboolean
need_type(const char *f, const RpcValue *v, RpcValueType want, guint i, GError **error)
{
    if (rpc_value_type(v) == want)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s(): argument %u must be %s, not %s", f, i,
                rpc_value_type_name(want), rpc_value_type_name(rpc_value_type(v)));
    return FALSE;
}

static RpcValue *
tensor_add(RpcAgent *self, const RpcValue *x, const RpcValue *y, const char *f, GError **error)
{
    if (!need_type(f, x, RPC_VALUE_TENSOR, 0, error) ||
        !need_type(f, y, RPC_VALUE_TENSOR, 1, error))
        return NULL;
    RpcTensor *r = rpc_ag_add(rpc_dist_autograd_thread(self), rpc_value_get_tensor(x),
                              rpc_value_get_tensor(y), error);
    return r ? rpc_value_new_tensor(r) : NULL;
}

/* my_py_add(t1, t2): torch.add(t1, t2) */
static RpcValue *
udf_my_py_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"t1", "t2", NULL};
    BIND("my_py_add", names, 2);
    return tensor_add(self, ARG(0), ARG(1), "my_py_add", error);
}

/* my_scalar_add(a, b): a + b */
static RpcValue *
udf_my_scalar_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"a", "b", NULL};
    BIND("my_scalar_add", names, 2);
    if (!need_type("my_scalar_add", ARG(0), RPC_VALUE_INT, 0, error) ||
        !need_type("my_scalar_add", ARG(1), RPC_VALUE_INT, 1, error))
        return NULL;
    return rpc_value_new_int(rpc_value_get_int(ARG(0)) + rpc_value_get_int(ARG(1)));
}

/* my_rref_add(rref_t1, t2): rref_t1.local_value() + t2 */
static RpcValue *
udf_my_rref_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"rref_t1", "t2", NULL};
    BIND("my_rref_add", names, 2);
    RpcRRef *r = rpc_value_get_rref(ARG(0));
    if (r == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "my_rref_add(): argument 0 must be RRef, not %s",
                    rpc_value_type_name(rpc_value_type(ARG(0))));
        return NULL;
    }
    RpcValue *v = rpc_rref_local_value(r, error);
    if (v == NULL)
        return NULL;
    RpcValue *sum = tensor_add(self, v, ARG(1), "my_rref_add", error);
    rpc_value_unref(v);
    return sum;
}

/* my_nested_rref_add(dst, rref_t1, t2): rpc_sync(dst, my_rref_add, (rref_t1, t2)) */
static RpcValue *
udf_my_nested_rref_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", "rref_t1", "t2", NULL};
    BIND("my_nested_rref_add", names, 3);
    RpcValue *a = rpc_value_new_list();
    rpc_value_list_append(a, rpc_value_ref(ARG(1)));
    rpc_value_list_append(a, rpc_value_ref(ARG(2)));
    return rpc_sync(self, ARG(0), "my_rref_add", a, NULL, RPC_TIMEOUT_UNSET, error);
}

/* ret_requires_grad(): the callee's global ones(3, 3) leaf with requires_grad. */
static RpcValue *
udf_ret_requires_grad(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {NULL};
    BIND("ret_requires_grad", names, 0);
    RpcValue *v = rpc_agent_slot_get(self, "requires_grad_tensor");
    if (v == NULL) {
        static const gint64 shape[] = {3, 3};
        RpcTensor *t = rpc_tensor_new_ones(RPC_DTYPE_FLOAT32, 2, shape);
        rpc_ag_set_requires_grad(t, TRUE, NULL);
        v = rpc_value_new_tensor(t);
        rpc_agent_slot_set(self, "requires_grad_tensor", v);
    }
    return rpc_value_ref(v);
}

/* my_py_nested_call(t1, t2, dst, world_size, hops): forwards hops times,
 * then rpc_sync(next, my_py_add, (t1, t2)). */
static RpcValue *
udf_my_py_nested_call(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"t1", "t2", "dst", "world_size", "hops", NULL};
    BIND("my_py_nested_call", names, 5);
    for (guint i = 2; i < 5; i++)
        if (!need_type("my_py_nested_call", ARG(i), RPC_VALUE_INT, i, error))
            return NULL;
    gint64 ws = rpc_value_get_int(ARG(3)), hops = rpc_value_get_int(ARG(4));
    if (ws <= 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE,
                            "my_py_nested_call(): world_size must be positive");
        return NULL;
    }
    gint64 next = (rpc_value_get_int(ARG(2)) + 1) % ws;
    RpcValue *a = rpc_value_new_list();
    rpc_value_list_append(a, rpc_value_ref(ARG(0)));
    rpc_value_list_append(a, rpc_value_ref(ARG(1)));
    if (hops > 0) {
        rpc_value_list_append(a, rpc_value_new_int(next));
        rpc_value_list_append(a, rpc_value_new_int(ws));
        rpc_value_list_append(a, rpc_value_new_int(hops - 1));
    }
    RpcValue *to = rpc_value_new_int(next);
    RpcValue *r = rpc_sync(self, to, hops > 0 ? "my_py_nested_call" : "my_py_add", a, NULL,
                           RPC_TIMEOUT_UNSET, error);
    rpc_value_unref(to);
    return r;
}

/* set_rpc_done(ctx_id, rank_distance): records a peer's context id. */
static RpcValue *
udf_set_rpc_done(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"ctx_id", "rank_distance", NULL};
    BIND("set_rpc_done", names, 2);
    if (!need_type("set_rpc_done", ARG(0), RPC_VALUE_INT, 0, error) ||
        !need_type("set_rpc_done", ARG(1), RPC_VALUE_INT, 1, error))
        return NULL;
    char key[64];
    g_snprintf(key, sizeof key, "rpc_done/%" G_GINT64_FORMAT, rpc_value_get_int(ARG(1)));
    rpc_agent_slot_set(self, key, rpc_value_ref(ARG(0)));
    RpcValue *old = rpc_agent_slot_get(self, "known_context_ids");
    RpcValue *ids = rpc_value_new_list();
    gboolean seen = FALSE;
    for (guint i = 0; old != NULL && i < rpc_value_list_len(old); i++) {
        RpcValue *x = rpc_value_list_get(old, i);
        seen |= rpc_value_get_int(x) == rpc_value_get_int(ARG(0));
        rpc_value_list_append(ids, rpc_value_ref(x));
    }
    if (!seen)
        rpc_value_list_append(ids, rpc_value_ref(ARG(0)));
    rpc_agent_slot_set(self, "known_context_ids", ids);
    return rpc_value_none();
}

/* simulate_backward_error(t): SimulateBackwardError.apply(t) on the callee. */
static RpcValue *
udf_simulate_backward_error(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                            GError **error)
{
    static const char *const names[] = {"t", NULL};
    BIND("simulate_backward_error", names, 1);
    if (!need_type("simulate_backward_error", ARG(0), RPC_VALUE_TENSOR, 0, error))
        return NULL;
    RpcTensor *r =
        rpc_dist_autograd_simulate_backward_error(self, rpc_value_get_tensor(ARG(0)), error);
    return r ? rpc_value_new_tensor(r) : NULL;
}

/* _local_optimizer_step(ctx_id, lr, [param rrefs]) on their owner. */
static RpcValue *
fn_sgd_step(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"context_id", "lr", "params", NULL};
    BIND("_dist_optim_sgd_step", names, 3);
    if (!need_type("_dist_optim_sgd_step", ARG(0), RPC_VALUE_INT, 0, error) ||
        !need_type("_dist_optim_sgd_step", ARG(1), RPC_VALUE_DOUBLE, 1, error) ||
        !need_type("_dist_optim_sgd_step", ARG(2), RPC_VALUE_LIST, 2, error))
        return NULL;
    gint64 ctx_id = rpc_value_get_int(ARG(0));
    double lr = rpc_value_get_double(ARG(1));
    if (!rpc_dist_autograd_retrieve_context(self, ctx_id, error))
        return NULL;
    for (guint i = 0; i < rpc_value_list_len(ARG(2)); i++) {
        RpcRRef *r = rpc_value_get_rref(rpc_value_list_get(ARG(2), i));
        if (r == NULL || !rpc_rref_is_owner(r)) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "_dist_optim_sgd_step(): parameter %u is not an RRef owned by %s", i,
                        rpc_agent_name(self));
            return NULL;
        }
        RpcValue *v = rpc_rref_local_value(r, error);
        if (v == NULL)
            return NULL;
        RpcTensor *param = rpc_value_type(v) == RPC_VALUE_TENSOR ? rpc_value_get_tensor(v) : NULL;
        RpcTensor *grad = param ? rpc_dist_autograd_get_gradient(self, ctx_id, param, NULL) : NULL;
        if (grad != NULL) {
            /* torch.no_grad(): p.add_(grad, alpha=-lr) */
            RpcTensor *step = rpc_tensor_mul_scalar(grad, -lr);
            rpc_tensor_add_inplace(param, step);
            rpc_tensor_unref(step);
            rpc_tensor_unref(grad);
        }
        rpc_value_unref(v);
        if (param == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "_dist_optim_sgd_step(): parameter %u is not a tensor", i);
            return NULL;
        }
    }
    return rpc_value_none();
}

#define UDF(n, f, d)                                                                               \
    {                                                                                              \
        n, NULL, f, 0, 0, -1, d                                                                    \
    }

static const RpcFunctionDef dist_defs[] = {
    UDF("my_py_add", udf_my_py_add, "dist autograd: torch.add(t1, t2)"),
    UDF("my_scalar_add", udf_my_scalar_add, "dist autograd: a + b"),
    UDF("my_rref_add", udf_my_rref_add, "dist autograd: rref_t1.local_value() + t2"),
    UDF("my_nested_rref_add", udf_my_nested_rref_add,
        "dist autograd: rpc_sync(dst, my_rref_add, (rref_t1, t2))"),
    UDF("ret_requires_grad", udf_ret_requires_grad,
        "dist autograd: the callee's global ones(3, 3) leaf with requires_grad"),
    UDF("my_py_nested_call", udf_my_py_nested_call,
        "dist autograd: forwards (t1, t2) hops times, then my_py_add"),
    UDF("set_rpc_done", udf_set_rpc_done, "dist autograd: records a peer's context id"),
    UDF("simulate_backward_error", udf_simulate_backward_error,
        "dist autograd: SimulateBackwardError.apply(t) on the callee"),
    {"_dist_optim_sgd_step", "torch.distributed.optim.optimizer._local_optimizer_step", fn_sgd_step,
     RPC_FUNC_INTERNAL, 0, -1, "used by the runtime"},
};

void
rpc_dist_autograd_register(RpcRegistry *reg)
{
    for (gsize i = 0; i < G_N_ELEMENTS(dist_defs); i++)
        rpc_registry_add(reg, &dist_defs[i]);
}

/* --- the distributed optimizer ------------------------------------------------ */

struct RpcDistOptimizer {
    RpcAgent *a;
    double lr;
    GArray *owners;    /* gint, ascending */
    GPtrArray *params; /* RpcValue* list of RRefs, parallel to owners */
};

RpcDistOptimizer *
rpc_dist_optimizer_new_sgd(RpcAgent *a, const RpcValue *params, double lr, GError **error)
{
    g_return_val_if_fail(a != NULL && params != NULL, NULL);
    g_return_val_if_fail(rpc_value_type(params) == RPC_VALUE_LIST, NULL);
    for (guint i = 0; i < rpc_value_list_len(params); i++) {
        if (rpc_value_get_rref(rpc_value_list_get(params, i)) == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "DistributedOptimizer: parameter %u is not an RRef", i);
            return NULL;
        }
    }
    RpcDistOptimizer *o = g_new0(RpcDistOptimizer, 1);
    o->a = a;
    o->lr = lr;
    o->owners = g_array_new(FALSE, FALSE, sizeof(gint));
    o->params = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_value_unref);
    for (guint i = 0; i < rpc_value_list_len(params); i++) {
        RpcValue *v = rpc_value_list_get(params, i);
        gint owner = rpc_rref_owner_id(rpc_value_get_rref(v));
        guint k = 0;
        while (k < o->owners->len && g_array_index(o->owners, gint, k) < owner)
            k++;
        if (k == o->owners->len || g_array_index(o->owners, gint, k) != owner) {
            g_array_insert_val(o->owners, k, owner);
            g_ptr_array_insert(o->params, k, rpc_value_new_list());
        }
        rpc_value_list_append(g_ptr_array_index(o->params, k), rpc_value_ref(v));
    }
    return o;
}

gboolean
rpc_dist_optimizer_step(RpcDistOptimizer *o, gint64 ctx_id, GError **error)
{
    g_return_val_if_fail(o != NULL, FALSE);
    /* dist_autograd._is_valid_context(context_id) */
    if (!rpc_dist_autograd_retrieve_context(o->a, ctx_id, error))
        return FALSE;
    guint n = o->owners->len;
    RpcFuture **futs = g_new0(RpcFuture *, MAX(n, 1));
    gboolean ok = TRUE;
    for (guint i = 0; i < n && ok; i++) {
        RpcValue *args = rpc_value_new_list();
        rpc_value_list_append(args, rpc_value_new_int(ctx_id));
        rpc_value_list_append(args, rpc_value_new_double(o->lr));
        rpc_value_list_append(args, rpc_value_ref(g_ptr_array_index(o->params, i)));
        RpcValue *to = rpc_value_new_int(g_array_index(o->owners, gint, i));
        futs[i] = rpc_async(o->a, to, "_dist_optim_sgd_step", args, NULL, RPC_TIMEOUT_UNSET, error);
        rpc_value_unref(to);
        ok = futs[i] != NULL;
    }
    if (ok) {
        RpcValue *all = rpc_future_wait_all(rpc_agent_executor(o->a), futs, n, error);
        ok = all != NULL;
        rpc_value_unref(all);
    } else {
        /* wait for the calls already made before reporting the error */
        for (guint i = 0; i < n && futs[i] != NULL; i++) {
            RpcValue *v = rpc_future_wait(futs[i], NULL);
            rpc_value_unref(v);
        }
    }
    for (guint i = 0; i < n; i++)
        if (futs[i] != NULL)
            rpc_future_unref(futs[i]);
    g_free(futs);
    return ok;
}

void
rpc_dist_optimizer_free(RpcDistOptimizer *o)
{
    if (o == NULL)
        return;
    g_array_unref(o->owners);
    g_ptr_array_unref(o->params);
    g_free(o);
}
