/* dist-autograd.h — distributed autograd (spec §7): contexts, send/recv
 * functions, FAST-mode backward, context cleanup, and a distributed SGD
 * optimizer over parameter RRefs.
 *
 * One container per worker (PyTorch's DistAutogradContainer), owned by the
 * worker's agent.  Context ids and autograd message ids are
 * (worker_id << 48) + n.  Each (virtual) thread of the worker has a current
 * context id (-1: none) and its own RpcAgThread (grad mode); both are keyed
 * by (agent, executor thread id), never by pointers.  A thread serving a
 * FORWARD_AUTOGRAD_REQ runs the request it carries with the caller's context
 * forced as its current one (spec §7.1), and the response to it is wrapped
 * with that same context even when it is produced later, by a continuation
 * on another thread (an RRef fetch waiting for its value, an async UDF).
 *
 * Forward (spec §7.2): a request of a user call (PYTHON_CALL, SCRIPT_CALL,
 * *_REMOTE_CALL, *_RREF_FETCH_CALL) sent by a thread with a current context
 * is wrapped in FORWARD_AUTOGRAD_REQ when the call forces it (Python UDFs,
 * fetches) or one of its tensors requires grad; a wrapped message with such
 * tensors gets a SendRpcBackward on the sender and one RecvRpcBackward on
 * the receiver.  Responses are wrapped (FORWARD_AUTOGRAD_RESP) only when one
 * of their tensors requires grad.
 *
 * Backward (spec §7.3-7.5): FAST mode.  Every send function of the context
 * is a start node of the worker's graph task and counts as outstanding
 * until its gradients arrive (BACKWARD_AUTOGRAD_REQ), so a send function
 * whose result the loss never used keeps the backward pass waiting forever:
 * in the simulator a deadlock whose report names the pass ("dist backward
 * of context 281474976710656 on worker1: waiting for 1 send function(s) to
 * receive gradients").  Leaf gradients go to the context, never to .grad.
 *
 * Errors use PyTorch's texts, e.g. "Could not find autograd context with
 * id: 100", "Error on Node 2: Simulate error on backward pass".
 */
#ifndef RPC_DIST_AUTOGRAD_H
#define RPC_DIST_AUTOGRAD_H

#include <glib.h>

#include "core/agent.h"
#include "core/autograd.h"
#include "core/message.h"
#include "core/registry.h"

G_BEGIN_DECLS

#define RPC_DIST_NO_CONTEXT       ((gint64)-1)
#define RPC_DIST_CLEANUP_RETRIES  20 /* kNumCleanupContextRetries */
#define RPC_DIST_SEND_NAME        "torch::distributed::autograd::SendRpcBackward"
#define RPC_DIST_RECV_NAME        "torch::distributed::autograd::RecvRpcBackward"
#define RPC_DIST_MSG_NO_CONTEXT   "Could not find autograd context with id: "
#define RPC_DIST_MSG_SIM_BACKWARD "Simulate error on backward pass"

typedef struct RpcDistAutograd RpcDistAutograd;

/* ---- the container (spec §7.1) ------------------------------------------ */

/* worker_id must be in [0, 65535]: "worker_id needs to be in the range
 * [0, 65535]". */
gboolean rpc_dist_autograd_check_worker_id(gint64 worker_id, GError **error);
/* dist_autograd.init(worker_id) on a's container (created with the agent,
 * for its id): TRUE for the same id; "Container is already initialized with
 * worker_id: X, cannot initialize with different worker_id: Y"; a NULL
 * agent: "Need to initialize distributed autograd using
 * torch.distributed.autograd.init()". */
gboolean rpc_dist_autograd_init(RpcAgent *a, gint64 worker_id, GError **error);
/* _get_max_id(): (worker_id << 48) | (2^48 - 1). */
gint64 rpc_dist_autograd_max_id(RpcAgent *a);

/* The autograd state of this worker and the thread context of the calling
 * (virtual) thread: grad mode, sequence numbers (transfer none; valid
 * while the agent lives).  Every op a UDF or a test body of this worker
 * runs takes the latter. */
RpcAgState *rpc_dist_autograd_state(RpcAgent *a);
RpcAgThread *rpc_dist_autograd_thread(RpcAgent *a);

/* `with dist_autograd.context() as id`: newContext() makes a context the
 * calling thread's current one and returns its id, or -1 and "Already have
 * an autograd context id for this thread.".  release() (the `with` exit,
 * _release_context) erases it, resets the calling thread's current id if it
 * was that one, and sends CLEANUP_AUTOGRAD_CONTEXT_REQ (retried up to
 * RPC_DIST_CLEANUP_RETRIES times) to every worker it knows; failures are
 * only logged ("Could not release Dist Autograd Context on node <w>:
 * <err>", a "dist_autograd.cleanup_failed" trace record).  Unknown id:
 * "Could not find autograd context with id: <id>". */
gint64 rpc_dist_autograd_context_new(RpcAgent *a, GError **error);
gboolean rpc_dist_autograd_context_release(RpcAgent *a, gint64 ctx_id, GError **error);
/* _current_context(): the calling thread's context id, or -1 and "Current
 * thread doesn't have a valid autograd context. Please wrap your code using:
 * `with torch.distributed.autograd.context() as context_id` to generate a
 * valid context". */
gint64 rpc_dist_autograd_current_context(RpcAgent *a, GError **error);
/* _retrieve_context(id): TRUE if this worker has it, else the error above. */
gboolean rpc_dist_autograd_retrieve_context(RpcAgent *a, gint64 ctx_id, GError **error);

/* The context's known workers (_known_worker_ids()), ascending (transfer
 * full, gint). */
GArray *rpc_dist_autograd_known_worker_ids(RpcAgent *a, gint64 ctx_id, GError **error);
/* _send_functions() / _recv_functions(): the nodes by autograd message id,
 * ascending (transfer container: a GPtrArray of RpcAgNode* that drops its
 * references). */
GPtrArray *rpc_dist_autograd_send_functions(RpcAgent *a, gint64 ctx_id, GError **error);
GPtrArray *rpc_dist_autograd_recv_functions(RpcAgent *a, gint64 ctx_id, GError **error);
/* get_gradients(id) for this worker's part: parallel arrays of leaves and
 * their accumulated gradients, in the order the leaves first got one
 * (transfer full; both drop their references). */
gboolean rpc_dist_autograd_get_gradients(RpcAgent *a, gint64 ctx_id, GPtrArray **tensors,
                                         GPtrArray **grads, GError **error);
/* One leaf's accumulated gradient (transfer full), NULL (no error) if it
 * has none in this context. */
RpcTensor *rpc_dist_autograd_get_gradient(RpcAgent *a, gint64 ctx_id, const RpcTensor *leaf,
                                          GError **error);

typedef struct RpcDistAutogradDebugInfo {
    guint num_current_backward_passes;
    guint num_autograd_contexts;
} RpcDistAutogradDebugInfo;

void rpc_dist_autograd_debug_info(RpcAgent *a, RpcDistAutogradDebugInfo *out);

/* ---- backward (spec §7.3, §7.4) -------------------------------------------- */

/* dist_autograd.backward(ctx_id, roots, retain_graph): blocks until this
 * worker's graph task and every gradient RPC it issued have completed.
 * roots == NULL (None): TypeError "incompatible function arguments".
 * Then, in PyTorch's order: the context ("Could not find autograd context
 * with id: <id>"), "No tensors provided for gradient computation.",
 * "requires_grad not set on root", " is not a scalar, all roots need to be
 * scalar", " does not have a valid gradient function." (PyTorch prints an
 * empty tensor name before the last two).  A failure of the pass: "Error on
 * Node <id>: <what>" (nested once per worker the error crossed). */
gboolean rpc_dist_autograd_backward(RpcAgent *a, gint64 ctx_id, RpcTensor *const *roots, guint n,
                                    gboolean retain_graph, GError **error);

/* RRef.backward(dist_autograd_ctx_id, retain_graph) (spec §7.4): on the
 * owner, a local backward (ctx_id -1; retain_graph unused, as in PyTorch)
 * or a distributed one of the value; on a user, RREF_BACKWARD_REQ to the
 * owner, which does the same there.  Errors: "RRef should contain a tensor
 * for .backward()", "User RRefs require 'dist_autograd_ctx_id' to be
 * specified". */
gboolean rpc_dist_autograd_rref_backward(RpcAgent *a, const RpcValue *rref, gint64 ctx_id,
                                         gboolean retain_graph, GError **error);

/* SimulateBackwardError.apply(t) (dist_autograd_test.py): identity forward;
 * its backward fails with Exception("Simulate error on backward pass")
 * while this worker's flag is set (initially set) (transfer full). */
RpcTensor *rpc_dist_autograd_simulate_backward_error(RpcAgent *a, RpcTensor *t, GError **error);
void rpc_dist_autograd_set_simulate_error(RpcAgent *a, gboolean on);

/* The catalogue's dist-autograd helpers (spec §11.0): my_py_add,
 * my_scalar_add, my_rref_add, my_nested_rref_add, ret_requires_grad,
 * my_py_nested_call, set_rpc_done, simulate_backward_error (the Function
 * applied on the callee), and the optimizer's internal step function.
 * set_rpc_done(ctx_id, dist) stores ctx_id in the callee's slot
 * "rpc_done/<dist>" and adds it to the list in slot "known_context_ids";
 * ret_requires_grad() returns the callee's ones(3, 3) leaf kept in slot
 * "requires_grad_tensor". */
void rpc_dist_autograd_register(RpcRegistry *reg);

/* ---- distributed optimizer ------------------------------------------------- */

/* DistributedOptimizer(optim.SGD, params, lr): params is a list of RRefs of
 * leaf tensors (transfer none; the optimizer keeps its own references).
 * step(ctx_id) runs `p -= lr * grads[ctx_id][p]` on each parameter's owner
 * (one RPC per owner, in owner order, concurrently; parameters without a
 * gradient in the context are skipped, as SGD skips p.grad None) and fails
 * with the first error. */
typedef struct RpcDistOptimizer RpcDistOptimizer;

RpcDistOptimizer *rpc_dist_optimizer_new_sgd(RpcAgent *a, const RpcValue *params, double lr,
                                             GError **error);
gboolean rpc_dist_optimizer_step(RpcDistOptimizer *o, gint64 ctx_id, GError **error);
void rpc_dist_optimizer_free(RpcDistOptimizer *o);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcDistOptimizer, rpc_dist_optimizer_free)

/* ---- hooks for agent.c only ------------------------------------------------ */

RpcDistAutograd *rpc_dist_autograd_new(RpcAgent *a);
/* Drops every context (no cleanup messages) and backward pass. */
void rpc_dist_autograd_free(RpcDistAutograd *d);
/* A request is about to be sent to dst: returns msg (taken) or its
 * FORWARD_AUTOGRAD_REQ wrapper (transfer full), recording the send
 * function and the known worker. */
RpcMessage *rpc_dist_autograd_wrap_request(RpcAgent *a, gint dst, RpcMessage *msg);
/* A response to `to` is about to be sent: wrapped in FORWARD_AUTOGRAD_RESP
 * if it answers a wrapped request and carries a tensor that requires grad
 * (msg taken, transfer full). */
RpcMessage *rpc_dist_autograd_wrap_response(RpcAgent *a, gint to, RpcMessage *msg);
/* A request arrived: a FORWARD_AUTOGRAD_REQ in *msg is replaced by the
 * request it wraps (recv function attached, response to be wrapped) and
 * its context is made the calling thread's current one until
 * request_end(scope).  Other requests pass unchanged.  FALSE + error if the
 * wrapper is malformed (*msg unchanged). */
gboolean rpc_dist_autograd_request_begin(RpcAgent *a, gint from, RpcMessage **msg, gint64 *scope,
                                         GError **error);
void rpc_dist_autograd_request_end(RpcAgent *a, gint64 scope);
/* The request (from, id), unwrapped earlier by request_begin on another
 * thread, continues on the calling one: its context becomes current until
 * request_end(returned scope). */
gint64 rpc_dist_autograd_request_resume(RpcAgent *a, gint from, gint64 id);
/* A response arrived: a FORWARD_AUTOGRAD_RESP in *msg is replaced by the
 * response it wraps, with its recv function attached. */
gboolean rpc_dist_autograd_unwrap_response(RpcAgent *a, gint from, RpcMessage **msg,
                                           GError **error);
/* Serves BACKWARD_AUTOGRAD_REQ, CLEANUP_AUTOGRAD_CONTEXT_REQ and
 * RREF_BACKWARD_REQ (body: the decoded payload, transfer none). */
void rpc_dist_autograd_serve(RpcAgent *a, gint from, gint64 id, RpcMessageType type,
                             RpcValue *body);

G_END_DECLS

#endif /* RPC_DIST_AUTOGRAD_H */
