/* tensor-private.h — the body of RpcTensor, for tensor.c, autograd and tests.
 *
 * Everyone else goes through core/tensor.h.  Layout of one tensor: a single
 * g_malloc block holding this header, padded to TENSOR_HEADER_SIZE, then
 * numel elements of float (RPC_DTYPE_FLOAT32) or double (RPC_DTYPE_FLOAT64)
 * in row-major order; `data` points at them.
 *
 * Invariants:
 *   - 0 <= ndim <= RPC_TENSOR_MAX_DIMS; shape[i] >= 0 for i < ndim and
 *     shape[i] == 0 for i >= ndim (so shapes compare with memcmp);
 *   - numel == product of shape[0..ndim) (1 for a 0-d tensor);
 *   - numel * element size <= RPC_TENSOR_MAX_BYTES (1 GiB), so the byte count
 *     and every flat index fit comfortably in gint64 and gsize;
 *   - the elements are immutable once the tensor is shared (refcount > 1).
 */
#ifndef RPC_TENSOR_PRIVATE_H
#define RPC_TENSOR_PRIVATE_H

#include <glib.h>

#include "core/tensor.h"

G_BEGIN_DECLS

/* Largest storage one tensor may have, in bytes (rpc_tensor_new_checked). */
#define RPC_TENSOR_MAX_BYTES ((gint64)1 << 30)

struct RpcTensor {
    gatomicrefcount ref;
    RpcDType dtype;
    guint ndim;
    gint64 numel;
    gint64 shape[RPC_TENSOR_MAX_DIMS]; /* entries past ndim are 0 */
    /* Reserved for autograd metadata added later (requires_grad, grad_fn,
     * .grad …); NULL until then.  If set, autograd_free (when non-NULL) is
     * called on it when the last reference goes. */
    gpointer autograd;
    GDestroyNotify autograd_free;
    gpointer data; /* numel floats or doubles, in this same allocation */
    /* In-place modification count (torch's tensor._version), bumped by the
     * narrow in-place path below.  Read it through rpc_tensor_version(): an
     * alias keeps the count of its base, not this field. */
    guint32 version;
    /* (nullable) For an alias (rpc_tensor_alias()): the tensor that owns
     * the storage `data` points into and the version counter; never itself
     * an alias.  NULL for a tensor owning its storage. */
    RpcTensor *base;
    /* Keeps this block (header, version, elements) allocated: 1 for the
     * tensor's own references (dropped when `ref` reaches 0, after the
     * autograd metadata is freed) plus 1 per alias.  So an alias holds the
     * storage, never the base's metadata: autograd may save an output's
     * data inside the output's own grad_fn without a reference cycle. */
    gint storage_refs;
};

/* Like rpc_tensor_repr(), with extra PyTorch-style suffixes appended after
 * the dtype one, e.g. "requires_grad=True" or "grad_fn=<AddBackward0>";
 * suffixes is NULL-terminated and may be NULL.  Long suffixes wrap onto
 * their own line as PyTorch's _add_suffixes does (transfer full). */
char *rpc_tensor_repr_with_suffixes(const RpcTensor *t, const char *const *suffixes);

/* A new tensor header sharing t's storage and version counter, without
 * t's autograd metadata (autograd's detach() / view_as() and saved outputs).
 * It keeps the storage alive, not t: t's metadata goes with t's last
 * reference even while aliases live.
 * Writes through rpc_tensor_data_mut() are refused on an alias: only the
 * in-place functions below write shared storage (transfer full). */
RpcTensor *rpc_tensor_alias(RpcTensor *t);

/* The narrow in-place path (torch's add_ / mul_ on the data, without
 * autograd): writes t's storage, which every alias of it sees, and bumps
 * the shared version counter.  This is the one exception to "immutable once
 * shared"; core/autograd.c wraps it with the leaf and history rules. */
void rpc_tensor_bump_version(RpcTensor *t);
void rpc_tensor_add_scalar_inplace(RpcTensor *t, double s);
void rpc_tensor_mul_scalar_inplace(RpcTensor *t, double s);
/* t += other for other of t's shape (any dtype; rounded to t's). */
void rpc_tensor_add_inplace(RpcTensor *t, const RpcTensor *other);

G_END_DECLS

#endif /* RPC_TENSOR_PRIVATE_H */
