/* autograd-private.h — struct bodies shared by autograd.c, autograd-engine.c,
 * autograd-ops.c, autograd-function.c and their tests.
 *
 * Ownership (no cycles, so a graph goes with its last tensor):
 *   tensor --meta.grad_fn--> node --next[i].node--> node ...
 *   node --saved[i].data--> tensor (a saved input: the tensor itself; a
 *        saved output of the same node: an alias without metadata, which
 *        keeps the storage alive but not the output tensor — see
 *        storage_refs in tensor-private.h — so no output owns its own
 *        grad_fn through the node)
 *   AccumulateGrad --variable--> leaf; leaf --meta.grad_accumulator--> it,
 *        weakly (cleared when the node goes).
 * Node pre-hooks share a tensor's hook list (refcounted), never the tensor.
 */
#ifndef RPC_AUTOGRAD_PRIVATE_H
#define RPC_AUTOGRAD_PRIVATE_H

#include <stdatomic.h>

#include <glib.h>

#include "core/autograd.h"
#include "core/tensor-private.h"

G_BEGIN_DECLS

struct RpcAgState {
    gatomicrefcount ref;
    atomic_uint_fast64_t next_seq; /* sequence numbers of non-accumulate nodes */
    atomic_uint_fast64_t next_id;  /* every node: the ready-queue tie-break */
    atomic_int_fast64_t live_nodes;
};

struct RpcAgThread {
    RpcAgState *state; /* owned reference */
    gboolean grad_enabled;
};

typedef struct {
    RpcAgNode *node; /* owned; NULL: an empty edge */
    guint input_nr;
} RpcAgEdge;

/* What a node's input expects: the forward output's shape and dtype. */
typedef struct {
    gboolean defined; /* FALSE: a non-tensor or non-differentiable output */
    RpcDType dtype;
    guint ndim;
    gint64 shape[RPC_TENSOR_MAX_DIMS];
} RpcAgInputMeta;

/* Hooks of one tensor, shared with the node that runs them. */
typedef struct {
    guint id;
    RpcAgTensorHook fn;
    gpointer data;
    GDestroyNotify destroy;
} RpcAgHook;

typedef struct {
    gatomicrefcount ref;
    GArray *hooks; /* RpcAgHook, registration order */
} RpcAgHookList;

typedef struct {
    guint input_nr;
    RpcAgHookList *list; /* owned reference */
} RpcAgPreHook;

typedef struct {
    guint id;
    RpcAgPostAccumulateHook fn;
    gpointer data;
    GDestroyNotify destroy;
} RpcAgPostHook;

/* The autograd metadata in RpcTensor.autograd. */
typedef struct {
    gboolean requires_grad; /* leaves; a non-leaf always requires grad */
    RpcAgNode *grad_fn;     /* owned; NULL for a leaf */
    guint output_nr;
    RpcAgNode *grad_accumulator; /* weak; leaves only */
    RpcTensor *grad;             /* owned, nullable */
    RpcAgHookList *hooks;        /* owned, nullable */
    GArray *post_hooks;          /* RpcAgPostHook, nullable */
    guint next_hook_id;
} RpcAgMeta;

/* torch's SavedVariable. */
typedef struct {
    gboolean defined;   /* FALSE: None was saved */
    RpcTensor *data;    /* owned; NULL once released */
    gboolean is_output; /* an output of the saving node: data is an alias */
    gboolean is_leaf;
    gboolean requires_grad;
    guint output_nr;
    guint32 saved_version;
} RpcAgSavedVar;

struct RpcAgNode {
    gatomicrefcount ref;
    const RpcAgNodeClass *klass;
    char *name; /* owned, nullable: overrides klass->name */
    RpcAgState *state;
    guint64 seq_nr;
    guint64 id;
    GArray *inputs;      /* RpcAgInputMeta */
    GArray *next;        /* RpcAgEdge */
    GArray *pre_hooks;   /* RpcAgPreHook, nullable */
    GPtrArray *saved;    /* RpcAgSavedVar*, nullable; released as a group */
    gboolean released;   /* release_variables ran */
    RpcTensor *variable; /* AccumulateGrad: the leaf (owned) */
    gpointer data;
};

/* ---- shared helpers (autograd.c, except where noted) ------------------------ */

/* Runs list's hooks on *grad (owned by the caller, replaced in place). */
gboolean rpc_ag_hook_list_run(RpcAgHookList *list, RpcTensor **grad, GError **error);

RpcAgMeta *rpc_ag_meta(const RpcTensor *t);  /* nullable */
RpcAgMeta *rpc_ag_meta_ensure(RpcTensor *t); /* created on demand */
/* Gradient edge of t (owned node ref in the result); empty if no grad. */
RpcAgEdge rpc_ag_gradient_edge(RpcAgThread *th, RpcTensor *t);
/* rpc_ag_node_new() with a name overriding klass->name (copied). */
RpcAgNode *rpc_ag_node_new_named(RpcAgThread *th, const RpcAgNodeClass *klass, const char *name,
                                 gpointer data);
/* Saves t in node (TRUE is_output: t is node's own output); returns the
 * slot.  t may be NULL (None). */
RpcAgSavedVar *rpc_ag_node_save(RpcAgNode *node, RpcTensor *t, gboolean is_output);
/* Unpacks a saved value for node: TRUE and *out (transfer full; NULL for
 * None), or FALSE with the freed-buffer or version error. */
gboolean rpc_ag_saved_unpack(const RpcAgSavedVar *sv, RpcAgNode *node, RpcTensor **out,
                             GError **error);
/* Frees every saved value of node (release_variables). */
void rpc_ag_node_release_saved(RpcAgNode *node);
/* Makes (node, output_nr) t's history (input output_nr must exist);
 * rpc_ag_set_history() adds that input first — in-place ops rebase so. */
void rpc_ag_set_gradient_edge(RpcTensor *t, RpcAgNode *node, guint output_nr);
/* "torch.DoubleTensor" / "torch.FloatTensor". */
const char *rpc_ag_type_string(RpcDType dtype);
/* autograd-ops.c: a copy of t recorded as "CopyBackwards" (AccumulateGrad's
 * clone_obey_contract under create_graph) (transfer full). */
RpcTensor *rpc_ag_copy_for_grad(RpcAgThread *th, RpcTensor *t);
/* Makes t an alias with history (node, output_nr) (transfer full). */
RpcTensor *rpc_ag_alias_with_history(RpcTensor *t, RpcAgNode *node, guint output_nr);

G_END_DECLS

#endif /* RPC_AUTOGRAD_PRIVATE_H */
