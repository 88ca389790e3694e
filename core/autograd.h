/* autograd.h — local reverse-mode autograd: tensor metadata, differentiable
 * ops, the backward engine and custom autograd functions.
 *
 * The C counterpart of torch.autograd (PyTorch 1.13 semantics, texts and
 * node names), built so that distributed autograd can drive the same engine
 * (see "the engine, for distributed autograd" below).
 *
 * Context, not ambient state.  PyTorch keeps grad mode and the sequence
 * number counter in thread-locals.  Here several simulated workers and
 * virtual threads share one OS thread, so that state is explicit:
 *   - RpcAgState: one per worker (or per process for plain local use).
 *     Owns the node sequence-number counter and node ids, and counts live
 *     nodes (for leak tests).  Refcounted; every node holds a reference.
 *   - RpcAgThread: one per (virtual) thread of execution, i.e. whatever
 *     runs a task: the grad-mode flag (torch.is_grad_enabled()) and the
 *     RpcAgState it draws sequence numbers from.  Every op, the engine and
 *     custom functions take it as their first argument; a worker's executor
 *     keeps one per virtual thread (a virtual thread that yields inside a
 *     no-grad region must not switch grad mode off for its neighbours).
 *   Sequence numbers are unique per RpcAgState (PyTorch: per thread), so the
 *   engine's ready-queue order (highest sequence number first, AccumulateGrad
 *   first of all) is total and never depends on addresses.
 *
 * Tensors.  Autograd metadata lives in the tensor's reserved `autograd` slot
 * (tensor-private.h), created on first need.  A tensor is a leaf when it has
 * no grad_fn; only leaves that require grad get a .grad.  A non-leaf holds
 * a reference to its grad_fn node, a node holds references to its next nodes
 * and to the tensors it saved, an AccumulateGrad node holds its leaf.  So a
 * graph lives exactly as long as some tensor referencing it (no cycles,
 * except .grad computed with create_graph, as in PyTorch).  Releasing a long
 * chain is iterative, not recursive (small coroutine stacks).
 *
 * Threading: graph building and the engine are not thread-safe; a graph and
 * its tensors are used by one OS thread at a time (the simulator runs
 * everything on one).  The state's counters and refcounts are atomic, so
 * graphs of different workers may live on different OS threads (the TCP
 * transport).
 *
 * Errors are RPC_ERROR GErrors with PyTorch's texts, e.g. RuntimeError
 * "element 0 of tensors does not require grad and does not have a grad_fn".
 */
#ifndef RPC_AUTOGRAD_H
#define RPC_AUTOGRAD_H

#include <glib.h>

#include "core/tensor.h"
#include "core/value.h"

G_BEGIN_DECLS

typedef struct RpcAgState RpcAgState;
typedef struct RpcAgThread RpcAgThread;
typedef struct RpcAgNode RpcAgNode;
typedef struct RpcAgGraphTask RpcAgGraphTask;
typedef struct RpcAgCtx RpcAgCtx;

/* PyTorch's ERR_BACKWARD_TWICE, raised when freed saved values are used. */
#define RPC_AG_ERR_BACKWARD_TWICE                                                                  \
    "Trying to backward through the graph a second time (or directly access saved tensors "        \
    "after they have already been freed). Saved intermediate values of the graph are freed when "  \
    "you call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "  \
    "through the graph a second time or if you need to access saved tensors after calling "        \
    "backward."

/* Node.name() of the leaf-gradient node, as PyTorch prints it. */
#define RPC_AG_ACCUMULATE_GRAD_NAME "torch::autograd::AccumulateGrad"

/* ---- state and thread context ------------------------------------------ */

RpcAgState *rpc_ag_state_new(void);
RpcAgState *rpc_ag_state_ref(RpcAgState *state);
void rpc_ag_state_unref(RpcAgState *state);
/* Nodes created by this state and not yet freed (AccumulateGrad included). */
gint64 rpc_ag_state_live_nodes(const RpcAgState *state);

/* A thread context with grad mode on; holds a reference to state. */
RpcAgThread *rpc_ag_thread_new(RpcAgState *state);
void rpc_ag_thread_free(RpcAgThread *thread);
RpcAgState *rpc_ag_thread_state(const RpcAgThread *thread); /* (transfer none) */
gboolean rpc_ag_thread_is_grad_enabled(const RpcAgThread *thread);
/* Sets grad mode and returns the previous value, so a caller restores it
 * (torch.no_grad() / torch.enable_grad()). */
gboolean rpc_ag_thread_set_grad_enabled(RpcAgThread *thread, gboolean enabled);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcAgState, rpc_ag_state_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcAgThread, rpc_ag_thread_free)

/* ---- tensor metadata ----------------------------------------------------- */

gboolean rpc_ag_requires_grad(const RpcTensor *t);
gboolean rpc_ag_is_leaf(const RpcTensor *t);
/* `t.requires_grad = flag`: leaves only.  On a non-leaf: RuntimeError "you
 * can only change requires_grad flags of leaf variables." (plus " If you want
 * to use a computed variable in a subgraph that doesn't require
 * differentiation use var_no_grad = var.detach()." when flag is FALSE). */
gboolean rpc_ag_set_requires_grad(RpcTensor *t, gboolean flag, GError **error);
/* grad_fn and the output index of t in it; NULL for leaves (transfer none). */
RpcAgNode *rpc_ag_grad_fn(const RpcTensor *t);
guint rpc_ag_output_nr(const RpcTensor *t);
/* .grad (transfer none, nullable).  set_grad takes a reference (NULL clears:
 * zero_grad(set_to_none=True)); RuntimeError "assigned grad has data of a
 * different size" / "… different type".  Later local backward passes add
 * into .grad in place (as PyTorch's `grad += new`), so every holder of the
 * .grad tensor sees the sum; it bumps the grad's version. */
RpcTensor *rpc_ag_grad(const RpcTensor *t);
gboolean rpc_ag_set_grad(RpcTensor *t, RpcTensor *grad, GError **error);
/* detach(): an alias sharing storage and version, no history (transfer full). */
RpcTensor *rpc_ag_detach(RpcTensor *t);
/* repr with ", grad_fn=<MulBackward0>" or ", requires_grad=True" (transfer full). */
char *rpc_ag_tensor_repr(const RpcTensor *t);

/* Tensor hooks (register_hook): run on t's gradient before it is
 * accumulated into .grad (leaf) or passed on (non-leaf), in registration
 * order, never on an undefined gradient.  A hook may set *replacement
 * (transfer full) to change the gradient, or fail with an error that fails
 * the backward pass.  Returns a handle for rpc_ag_remove_hook(). */
typedef gboolean (*RpcAgTensorHook)(RpcTensor *grad, RpcTensor **replacement, gpointer user_data,
                                    GError **error);
/* RuntimeError "cannot register a hook on a tensor that doesn't require
 * gradient" (returns 0; destroy is not called). */
guint rpc_ag_register_hook(RpcTensor *t, RpcAgTensorHook hook, gpointer user_data,
                           GDestroyNotify destroy, GError **error);
/* Post-accumulate-grad hooks (PyTorch 2.1's register_post_accumulate_grad_hook):
 * run on a leaf after its .grad was updated by a local backward.  On a
 * non-leaf: RuntimeError "post accumulate grad hooks cannot be registered on
 * non-leaf tensors"; returns 0 then. */
typedef void (*RpcAgPostAccumulateHook)(RpcTensor *leaf, gpointer user_data);
guint rpc_ag_register_post_accumulate_hook(RpcTensor *t, RpcAgPostAccumulateHook hook,
                                           gpointer user_data, GDestroyNotify destroy,
                                           GError **error);
/* Removes either kind of hook; FALSE if handle is not registered on t. */
gboolean rpc_ag_remove_hook(RpcTensor *t, guint handle);

/* ---- differentiable ops -------------------------------------------------- */
/* Each computes the forward through core/tensor.c and, when grad mode is on
 * and an input requires grad, records a node named as PyTorch names it.
 * Results are (transfer full); NULL plus the tensor layer's RuntimeError on
 * bad shapes.  Broadcasting ops reduce gradients back with sum_to_size.
 * Backward formulas are built from these same ops, so create_graph gives
 * higher-order gradients.  Nodes:
 *
 *   add, add_scalar, add_scalar_  AddBackward0    sum          SumBackward0
 *   sub                           SubBackward0    mean         MeanBackward0
 *   mul, mul_scalar, mul_scalar_  MulBackward0    pow          PowBackward0
 *   div, div_scalar               DivBackward0    exp/sin/cos  ExpBackward0 …
 *   neg                           NegBackward0    relu         ReluBackward0
 *   stack                         StackBackward0  sigmoid      SigmoidBackward0
 *   view                          ViewBackward0   t            TBackward0
 *   expand                        ExpandBackward0 select       SelectBackward0
 *   sum_to_size                   SumBackward1    cast         ToCopyBackward0
 *   matmul: MmBackward0 (2-d @ 2-d), DotBackward0 (1-d @ 1-d), MvBackward0
 *   (2-d @ 1-d), and for 1-d @ 2-d PyTorch's chain UnsqueezeBackward0 ->
 *   MmBackward0 -> SqueezeBackward3.
 *
 * The scalar forms take a Python number s and keep a's dtype; their node's
 * second edge is empty, as PyTorch's wrapped-number operand gives.  select
 * works on dim 0.  sum_to_size is one node where PyTorch composes
 * sum(dims) and view. */
RpcTensor *rpc_ag_add(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error);
RpcTensor *rpc_ag_sub(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error);
RpcTensor *rpc_ag_mul(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error);
RpcTensor *rpc_ag_div(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error);
RpcTensor *rpc_ag_matmul(RpcAgThread *th, RpcTensor *a, RpcTensor *b, GError **error);
RpcTensor *rpc_ag_sum(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_mean(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_pow(RpcAgThread *th, RpcTensor *a, double exponent, GError **error);
RpcTensor *rpc_ag_exp(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_sin(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_cos(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_relu(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_sigmoid(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_neg(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_stack(RpcAgThread *th, RpcTensor *const *ts, guint n, GError **error);
RpcTensor *rpc_ag_view(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape,
                       GError **error);
RpcTensor *rpc_ag_t(RpcAgThread *th, RpcTensor *a, GError **error);
RpcTensor *rpc_ag_expand(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape,
                         GError **error);
RpcTensor *rpc_ag_sum_to_size(RpcAgThread *th, RpcTensor *a, guint ndim, const gint64 *shape,
                              GError **error);
RpcTensor *rpc_ag_select(RpcAgThread *th, RpcTensor *a, gint64 index, GError **error);
RpcTensor *rpc_ag_cast(RpcAgThread *th, RpcTensor *a, RpcDType dtype, GError **error);
RpcTensor *rpc_ag_add_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error);
RpcTensor *rpc_ag_mul_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error);
RpcTensor *rpc_ag_div_scalar(RpcAgThread *th, RpcTensor *a, double s, GError **error);
/* In place: t.add_(s), t.mul_(s).  Writes t's storage and bumps its version
 * (tensor-private.h).  With grad mode on, a leaf that requires grad fails
 * with "a leaf Variable that requires grad is being used in an in-place
 * operation."; a tensor with history gets it rebased onto a new node
 * (output 0), so saved copies of the old value fail their version check. */
gboolean rpc_ag_add_scalar_(RpcAgThread *th, RpcTensor *t, double s, GError **error);
gboolean rpc_ag_mul_scalar_(RpcAgThread *th, RpcTensor *t, double s, GError **error);

/* ---- backward --------------------------------------------------------- */

/* torch.autograd.backward(roots, grad_roots, retain_graph, create_graph).
 * grad_roots may be NULL, and any entry NULL: ones for a one-element root,
 * else RuntimeError "grad can be implicitly created only for scalar
 * outputs".  A root without history: "element <i> of tensors does not
 * require grad and does not have a grad_fn"; a gradient of another shape:
 * "Mismatch in shape: grad_output[<i>] has a shape of torch.Size([2]) and
 * output[<i>] has a shape of torch.Size([3])."  Gradients are accumulated
 * into leaves' .grad.  n == 0 does nothing. */
gboolean rpc_ag_backward(RpcAgThread *th, RpcTensor *const *roots, RpcTensor *const *grad_roots,
                         guint n, gboolean retain_graph, gboolean create_graph, GError **error);
/* torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph,
 * create_graph, allow_unused): grads_out[i] (transfer full) is the gradient
 * of inputs[i], NULL if unused and allow_unused; .grad is not touched.  As
 * in PyTorch 1.13, tensor hooks of the inputs themselves are not applied to
 * the captured gradients.  Errors: "grad requires non-empty inputs.", "One
 * of the differentiated Tensors does not require grad", "One of the
 * differentiated Tensors appears to not have been used in the graph. Set
 * allow_unused=True if this is the desired behavior." */
gboolean rpc_ag_autograd_grad(RpcAgThread *th, RpcTensor *const *outputs,
                              RpcTensor *const *grad_outputs, guint n_outputs,
                              RpcTensor *const *inputs, guint n_inputs, gboolean retain_graph,
                              gboolean create_graph, gboolean allow_unused, RpcTensor **grads_out,
                              GError **error);

/* ---- nodes ------------------------------------------------------------- */
/* A node is one backward function.  It has n_inputs gradient inputs (one per
 * output of the forward op that made it; each with the shape and dtype of
 * that output, or "undefined" for an output that carries no gradient) and
 * n_next next edges (one per forward input; an edge may be empty: that input
 * needs no gradient).  A gradient flowing along edge (node, input_nr) lands
 * in that node's input input_nr. */

/* User-defined node types (RecvRpcBackward, SendRpcBackward, …). */
typedef struct RpcAgNodeClass {
    const char *name; /* Node.name(), e.g. "RecvRpcBackward" */
    /* Computes gradients for the next edges.  grads_in has n_inputs entries
     * (transfer none; NULL = undefined: nothing flowed in);
     * grads_out has n_next slots, all NULL on entry, each to be left NULL or
     * set (transfer full).  Runs with grad mode = the pass's create_graph on
     * thread.  Returns FALSE with error to fail the backward pass; the error
     * reaches the caller with its text unchanged.  The engine then checks
     * each gradient against the next node's input (shape: sum_to_size when
     * broadcastable, else "Function <name> returned an invalid gradient at
     * index <i> - got [2] but expected shape compatible with [3]"; dtype:
     * cast). */
    gboolean (*apply)(RpcAgNode *node, RpcAgThread *thread, RpcTensor *const *grads_in,
                      RpcTensor **grads_out, GError **error);
    /* Frees saved values after a pass without retain_graph (nullable). */
    void (*release_variables)(RpcAgNode *node);
    /* Frees the node's data (nullable). */
    void (*finalize)(gpointer data);
} RpcAgNodeClass;

/* A node of klass with a fresh sequence number from thread's state; data is
 * owned by the node (klass->finalize).  No inputs, no next edges yet
 * (transfer full). */
RpcAgNode *rpc_ag_node_new(RpcAgThread *thread, const RpcAgNodeClass *klass, gpointer data);
RpcAgNode *rpc_ag_node_ref(RpcAgNode *node);
void rpc_ag_node_unref(RpcAgNode *node);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcAgNode, rpc_ag_node_unref)

const char *rpc_ag_node_name(const RpcAgNode *node);
guint64 rpc_ag_node_sequence_nr(const RpcAgNode *node); /* G_MAXUINT64: AccumulateGrad */
gpointer rpc_ag_node_data(const RpcAgNode *node);
guint rpc_ag_node_n_inputs(const RpcAgNode *node);
guint rpc_ag_node_n_next(const RpcAgNode *node);
/* Next edge i: its node (transfer none; NULL for an empty edge) and input. */
RpcAgNode *rpc_ag_node_next(const RpcAgNode *node, guint i, guint *input_nr);
/* Appends a next edge to next (nullable: an empty edge) at input_nr. */
void rpc_ag_node_add_next_edge(RpcAgNode *node, RpcAgNode *next, guint input_nr);
/* Appends the gradient edge of t (its grad_fn and output index, or its
 * leaf's AccumulateGrad node, created on first use; an empty edge if t does
 * not require grad) — collect_next_edges for one tensor. */
void rpc_ag_node_add_next_edge_for(RpcAgNode *node, RpcAgThread *thread, RpcTensor *t);
/* Appends an input shaped like like (NULL: an undefined input, whose
 * gradient is never materialised); returns its index. */
guint rpc_ag_node_add_input(RpcAgNode *node, const RpcTensor *like);
/* set_history: appends an input to node shaped like t and makes t's history
 * (node, that input); t then requires grad and is no leaf.  Returns the
 * input index. */
guint rpc_ag_set_history(RpcTensor *t, RpcAgNode *node);
/* Zeros shaped as node's input i (transfer full), NULL if that input is
 * undefined — for nodes that need every gradient (RecvRpcBackward). */
RpcTensor *rpc_ag_node_input_zeros(const RpcAgNode *node, guint i);
/* AccumulateGrad nodes: TRUE, and their leaf (transfer none). */
gboolean rpc_ag_node_is_accumulate_grad(const RpcAgNode *node);
RpcTensor *rpc_ag_node_variable(const RpcAgNode *node);

/* ---- the engine, for distributed autograd -------------------------------- */
/* rpc_ag_backward() is this sequence; dist autograd uses the parts:
 *
 *   task = rpc_ag_graph_task_new(thread, keep_graph, FALSE);
 *   rpc_ag_graph_task_set_capture(task, accumulate_into_context, ctx, NULL);
 *   rpc_ag_graph_task_add_root(task, loss, NULL, 0, &error);  (initiator)
 *   for each send function s of the context:
 *       rpc_ag_graph_task_add_start_node(task, s);            (a)
 *   rpc_ag_graph_task_prepare(task, &error);                  dependencies
 *   rpc_ag_graph_task_run(task, &error);                      drains (e)
 *   ... later, when BACKWARD_AUTOGRAD_REQ brings grads for send s:
 *   rpc_ag_graph_task_inject(task, s, grads, n, &error);      (a)
 *   rpc_ag_graph_task_run(task, &error);
 *   rpc_ag_graph_task_is_done(task): every start node injected and run.
 *
 * (a) Start nodes are extra roots of the dependency walk that become ready
 *     only once their gradients are injected (one outstanding task each, as
 *     the dist engine counts send functions).  A SendRpcBackward can be a
 *     node whose apply returns its injected inputs unchanged.
 * (b) With a capture callback, AccumulateGrad nodes are not executed: the
 *     leaf's tensor hooks run, then the callback receives (leaf, gradient);
 *     .grad and post-accumulate hooks are untouched (dist autograd
 *     accumulates into its context).
 * (c) User-defined node types (RpcAgNodeClass) run like built-in ones; a
 *     RecvRpcBackward has no next edges, and its apply sends its gradients
 *     over RPC and returns without outputs.
 * (d) rpc_ag_graph_task_is_reachable()/reachable() report the nodes found
 *     by prepare (roots and start nodes included).
 * (e) Nothing blocks: run() executes every ready node in order (highest
 *     sequence number first) and returns when none is ready.  A node error
 *     stops the task: run() and every later call return that error. */

/* Receives a leaf's gradient (transfer none) in capture mode. */
typedef void (*RpcAgCaptureFn)(RpcTensor *leaf, RpcTensor *grad, gpointer user_data);

RpcAgGraphTask *rpc_ag_graph_task_new(RpcAgThread *thread, gboolean keep_graph,
                                      gboolean create_graph);
void rpc_ag_graph_task_free(RpcAgGraphTask *task);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcAgGraphTask, rpc_ag_graph_task_free)
void rpc_ag_graph_task_set_capture(RpcAgGraphTask *task, RpcAgCaptureFn fn, gpointer user_data,
                                   GDestroyNotify destroy);
/* A root tensor and its gradient (NULL: ones for one element), validated as
 * by rpc_ag_backward(); index is the root's position in those messages. */
gboolean rpc_ag_graph_task_add_root(RpcAgGraphTask *task, RpcTensor *root, RpcTensor *grad,
                                    guint index, GError **error);
/* A root given as an edge with its gradient (transfer none; nullable). */
void rpc_ag_graph_task_add_root_edge(RpcAgGraphTask *task, RpcAgNode *node, guint input_nr,
                                     RpcTensor *grad);
void rpc_ag_graph_task_add_start_node(RpcAgGraphTask *task, RpcAgNode *node);
/* Counts dependencies over everything reachable from roots and start nodes
 * and queues the roots' gradients.  Once per task. */
gboolean rpc_ag_graph_task_prepare(RpcAgGraphTask *task, GError **error);
/* Gives start node its input gradients (n == its n_inputs; entries
 * nullable, transfer none) and queues it.  RuntimeError if node is not a
 * pending start node of this task. */
gboolean rpc_ag_graph_task_inject(RpcAgGraphTask *task, RpcAgNode *node, RpcTensor *const *grads,
                                  guint n, GError **error);
gboolean rpc_ag_graph_task_run(RpcAgGraphTask *task, GError **error);
gboolean rpc_ag_graph_task_is_done(const RpcAgGraphTask *task);
gboolean rpc_ag_graph_task_is_reachable(const RpcAgGraphTask *task, const RpcAgNode *node);
/* Reachable nodes, highest sequence number first (transfer container). */
GPtrArray *rpc_ag_graph_task_reachable(const RpcAgGraphTask *task);
/* Names of the nodes executed so far, in order (transfer none) — a trace. */
const GPtrArray *rpc_ag_graph_task_executed(const RpcAgGraphTask *task);

/* ---- custom functions (torch.autograd.Function) --------------------------- */

/* forward: inputs as given to apply (transfer none); append each output
 * (transfer full RpcValue: a tensor, or any other value) to outputs.  Runs
 * with grad mode off.
 * backward: one gradient per output of forward (transfer none; NULL =
 * None: a non-tensor output, or an undefined gradient when materialize_grads
 * is off); append one value per forward input to grad_inputs (transfer full
 * RpcValue tensor or None; NULL counts as None).  Returning FALSE with an
 * error fails the backward pass with that error. */
typedef gboolean (*RpcAgForwardFn)(RpcAgCtx *ctx, RpcValue *const *inputs, guint n_inputs,
                                   GPtrArray *outputs, GError **error);
typedef gboolean (*RpcAgBackwardFn)(RpcAgCtx *ctx, RpcTensor *const *grad_outputs,
                                    guint n_grad_outputs, GPtrArray *grad_inputs, GError **error);

typedef struct RpcAgFunction {
    const char *name;         /* "MyExp": the node is "MyExpBackward" */
    RpcAgForwardFn forward;   /* NULL: NotImplementedError at apply */
    RpcAgBackwardFn backward; /* NULL: NotImplementedError at backward */
    gpointer user_data;
    gboolean once_differentiable; /* @once_differentiable on backward */
} RpcAgFunction;

/* Function.apply(*inputs): runs forward with grad mode off; when grad mode
 * is on and a tensor input requires grad ("executable"), the outputs get a
 * "<name>Backward" node as grad_fn, output i at index i.  Returns the
 * outputs (transfer full, a GPtrArray of RpcValue* that frees them), or
 * NULL and an error.  Output rules (custom_function.cpp):
 *   - a tensor output that is an input (not dirty) comes back as a new
 *     tensor sharing the input's storage and version (view_as), with this
 *     node as grad_fn — or, when not executable, without history;
 *   - a dirty input comes back as itself, its history rebased here;
 *   - non-tensor outputs pass through and get an undefined gradient slot
 *     (None in backward, even with materialize_grads);
 *   - once_differentiable: backward runs with grad mode off; if grad mode
 *     was on (create_graph) and an incoming gradient requires grad, the
 *     returned gradients get a "torch::autograd::Error" node, so a double
 *     backward fails with "trying to differentiate twice a function that
 *     was marked with @once_differentiable".
 * After backward: one value per forward input, extra trailing Nones
 * trimmed, else RuntimeError "function <Name>Backward returned an incorrect
 * number of gradients (expected N, got M)"; a non-None for a non-tensor
 * input: "function <Name>Backward returned a gradient different than None
 * at position <i+1>, but the corresponding forward input was not a
 * Variable"; a non-tensor: "expected Variable or None (got <T>)". */
GPtrArray *rpc_ag_function_apply(RpcAgThread *th, const RpcAgFunction *fn, RpcValue *const *inputs,
                                 guint n_inputs, GError **error);

/* Context methods; the array arguments are (transfer none). */
const RpcAgFunction *rpc_ag_ctx_function(const RpcAgCtx *ctx);
/* The calling thread context, valid inside forward and backward only. */
RpcAgThread *rpc_ag_ctx_thread(const RpcAgCtx *ctx);
/* Arbitrary per-call state (ctx.foo = …); destroy runs when the node goes. */
void rpc_ag_ctx_set_user_data(RpcAgCtx *ctx, gpointer data, GDestroyNotify destroy);
gpointer rpc_ag_ctx_get_user_data(const RpcAgCtx *ctx);
/* ctx.needs_input_grad[i]: input i is a tensor that requires grad. */
gboolean rpc_ag_ctx_needs_input_grad(const RpcAgCtx *ctx, guint i);
guint rpc_ag_ctx_n_inputs(const RpcAgCtx *ctx);
/* save_for_backward(*values): tensors or None; a later call replaces the
 * earlier one (as PyTorch).  Checked after forward: TypeError
 * "save_for_backward can only save variables, but argument <i> is of type
 * <T>" (i from 0).  Saved with their version. */
void rpc_ag_ctx_save_for_backward(RpcAgCtx *ctx, RpcValue *const *values, guint n);
/* ctx.saved_tensors: a new array of n_saved tensors (transfer full; NULL
 * entries for None), or NULL and RPC_AG_ERR_BACKWARD_TWICE after the
 * buffers were freed, or "one of the variables needed for gradient
 * computation has been modified by an inplace operation: …" after an
 * in-place change. */
GPtrArray *rpc_ag_ctx_saved_tensors(RpcAgCtx *ctx, GError **error);
/* mark_dirty(*inputs): checked after forward — RuntimeError "mark_dirty can
 * only accept variables, but argument <i> is of type <T>", "Some elements
 * marked as dirty during the forward method were not returned as output.
 * The inputs that are modified inplace must all be outputs of the
 * Function.", "a leaf Variable that requires grad has been used in an
 * in-place operation."; bumps each version; the output's history is rebased
 * onto this node. */
void rpc_ag_ctx_mark_dirty(RpcAgCtx *ctx, RpcValue *const *values, guint n);
/* mark_non_differentiable(*outputs): they do not require grad; backward
 * still gets zeros for them (materialized).  RuntimeError
 * "mark_non_differentiable only accepts variable arguments, but got <T>". */
void rpc_ag_ctx_mark_non_differentiable(RpcAgCtx *ctx, RpcValue *const *values, guint n);
/* set_materialize_grads(v), default TRUE: undefined gradients of tensor
 * outputs reach backward as zeros (TRUE) or NULL (FALSE). */
void rpc_ag_ctx_set_materialize_grads(RpcAgCtx *ctx, gboolean materialize);
/* The ctx of a custom function's node (grad_fn of its outputs), for
 * reading saved_tensors outside backward; NULL for other nodes. */
RpcAgCtx *rpc_ag_node_ctx(const RpcAgNode *node);

G_END_DECLS

#endif /* RPC_AUTOGRAD_H */
