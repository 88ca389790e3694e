/* tensor.h — small dense CPU tensors (float32 / float64), refcounted.
 *
 * Just enough of torch.Tensor for the RPC catalogue and, later, autograd:
 * contiguous row-major storage, a shape of up to RPC_TENSOR_MAX_DIMS dims
 * (0-d tensors are scalars), NumPy/PyTorch broadcasting for elementwise ops.
 * Results of mixed dtypes are float64.  Ops never modify their inputs and
 * return a new tensor (transfer full), or NULL and a RuntimeError with
 * PyTorch's message text (e.g. "The size of tensor a (10) must match the
 * size of tensor b (5) at non-singleton dimension 0").
 *
 * Tensors are immutable once shared, except through rpc_tensor_data_mut(),
 * which the creator uses to fill a fresh tensor, and autograd's narrow
 * in-place path (tensor-private.h), which bumps rpc_tensor_version().
 *
 * A caller's bug (NULL tensor, bad dtype, negative shape entry, more than
 * RPC_TENSOR_MAX_DIMS dims) logs a critical and returns NULL, as
 * g_return_val_if_fail does; shapes from untrusted input (the message
 * decoder) go through rpc_tensor_new_checked() instead.
 * One tensor holds at most 1 GiB of elements; an op whose result would be
 * larger fails with a RuntimeError instead of allocating it.
 *
 * Arithmetic is done in double and rounded once to the result dtype, which
 * for + - * / on float32 inputs gives exactly the float32 result.  Sums and
 * matmul accumulate in double, so float32 results can differ from PyTorch's
 * float accumulation in the last bit for non-integral data.
 */
#ifndef RPC_TENSOR_H
#define RPC_TENSOR_H

#include <glib.h>

G_BEGIN_DECLS

#define RPC_TENSOR_MAX_DIMS 8

typedef enum {
    RPC_DTYPE_FLOAT32 = 0,
    RPC_DTYPE_FLOAT64 = 1,
} RpcDType;

typedef struct RpcTensor RpcTensor;

/* Construction.  shape may be NULL when ndim == 0.  All return (transfer full). */
RpcTensor *rpc_tensor_new_zeros(RpcDType dtype, guint ndim, const gint64 *shape);
RpcTensor *rpc_tensor_new_full(RpcDType dtype, guint ndim, const gint64 *shape, double fill);
RpcTensor *rpc_tensor_new_ones(RpcDType dtype, guint ndim, const gint64 *shape);
/* Copies n = numel doubles, converted to dtype. */
RpcTensor *rpc_tensor_new_from_doubles(RpcDType dtype, guint ndim, const gint64 *shape,
                                       const double *values);
RpcTensor *rpc_tensor_new_scalar(RpcDType dtype, double v); /* 0-d */
/* ones(n, n) as float32, the catalogue's favourite. */
RpcTensor *rpc_tensor_ones2(gint64 rows, gint64 cols);
/* zeros(shape) for a shape from untrusted input: RuntimeError (NULL) if an
 * entry is negative (PyTorch's "Trying to create tensor with negative
 * dimension -1: [-1]"), ndim > RPC_TENSOR_MAX_DIMS, dtype unknown, or the
 * storage would exceed 1 GiB or overflow. */
RpcTensor *rpc_tensor_new_checked(RpcDType dtype, guint ndim, const gint64 *shape, GError **error);
/* A tensor of a's dtype and shape, every element fill (torch.full_like). */
RpcTensor *rpc_tensor_new_full_like(const RpcTensor *a, double fill);

RpcTensor *rpc_tensor_ref(RpcTensor *t);
void rpc_tensor_unref(RpcTensor *t);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcTensor, rpc_tensor_unref)

RpcDType rpc_tensor_dtype(const RpcTensor *t);
guint rpc_tensor_ndim(const RpcTensor *t);
const gint64 *rpc_tensor_shape(const RpcTensor *t);
gint64 rpc_tensor_numel(const RpcTensor *t);
gsize rpc_tensor_nbytes(const RpcTensor *t);
/* Raw storage: float* or double* depending on dtype (transfer none).
 * data_mut is for the creator only: NULL (critical) once t is shared. */
gconstpointer rpc_tensor_data(const RpcTensor *t);
gpointer rpc_tensor_data_mut(RpcTensor *t);
/* Element i (row-major flat index) as double. */
double rpc_tensor_get(const RpcTensor *t, gint64 i);
/* The single element of a one-element tensor ("item()"); RuntimeError
 * "a Tensor with 4 elements cannot be converted to Scalar" otherwise. */
gboolean rpc_tensor_item(const RpcTensor *t, double *out, GError **error);

/* Elementwise with broadcasting.  float64 if either input is float64. */
RpcTensor *rpc_tensor_add(const RpcTensor *a, const RpcTensor *b, GError **error);
RpcTensor *rpc_tensor_sub(const RpcTensor *a, const RpcTensor *b, GError **error);
RpcTensor *rpc_tensor_mul(const RpcTensor *a, const RpcTensor *b, GError **error);
RpcTensor *rpc_tensor_div(const RpcTensor *a, const RpcTensor *b, GError **error);
/* a + s, a * s keeping a's dtype (a Python number does not promote a float
 * tensor); s is first rounded to that dtype, as PyTorch does. */
RpcTensor *rpc_tensor_add_scalar(const RpcTensor *a, double s);
RpcTensor *rpc_tensor_mul_scalar(const RpcTensor *a, double s);
/* a / s keeping a's dtype, s rounded to it first (as add/mul_scalar). */
RpcTensor *rpc_tensor_div_scalar(const RpcTensor *a, double s);
/* Elementwise, same dtype and shape: -a, exp, sin, cos, relu (max(a, 0);
 * NaN stays NaN), sigmoid (1 / (1 + exp(-a))), and a ** p for a scalar
 * exponent p (C's pow(); p == 2 is a*a exactly). */
RpcTensor *rpc_tensor_neg(const RpcTensor *a);
RpcTensor *rpc_tensor_exp(const RpcTensor *a);
RpcTensor *rpc_tensor_sin(const RpcTensor *a);
RpcTensor *rpc_tensor_cos(const RpcTensor *a);
RpcTensor *rpc_tensor_relu(const RpcTensor *a);
RpcTensor *rpc_tensor_sigmoid(const RpcTensor *a);
RpcTensor *rpc_tensor_pow_scalar(const RpcTensor *a, double p);
/* 2-d x 2-d (and 1-d vectors as in torch.matmul).  Mixed dtypes give
 * float64 (PyTorch refuses them); more than 2 dims is a RuntimeError
 * "matmul: only 1-d and 2-d tensors are supported" (our limitation). */
RpcTensor *rpc_tensor_matmul(const RpcTensor *a, const RpcTensor *b, GError **error);
/* Sum of all elements, 0-d result of the same dtype. */
RpcTensor *rpc_tensor_sum(const RpcTensor *a);
/* Mean of all elements (sum / numel, NaN for no elements), 0-d. */
RpcTensor *rpc_tensor_mean(const RpcTensor *a);
/* Tensor.expand(shape): broadcasts a up to shape (a copy).  RuntimeError
 * "The expanded size of the tensor (3) must match the existing size (2) at
 * non-singleton dimension 1.  Target sizes: [2, 3].  Tensor sizes: [2]", or
 * "expand(torch.DoubleTensor{[2, 3]}, size=[3]): the number of sizes
 * provided (1) must be greater or equal to the number of dimensions in the
 * tensor (2)". */
RpcTensor *rpc_tensor_expand(const RpcTensor *a, guint ndim, const gint64 *shape, GError **error);
/* Tensor.select(0, index): the index-th slice along dim 0 (a copy); index
 * may be negative.  RuntimeError "select(): index 5 out of range for tensor
 * of size [2, 3] at dimension 0", or "select() cannot be applied to a 0-dim
 * tensor." */
RpcTensor *rpc_tensor_select(const RpcTensor *a, gint64 index, GError **error);
/* torch.t(): transpose of a 2-d tensor; 0-d and 1-d come back as copies.
 * RuntimeError "t() expects a tensor with <= 2 dimensions, but self is 3D". */
RpcTensor *rpc_tensor_t(const RpcTensor *a, GError **error);
/* Tensor.sum_to_size(): sums a broadcast result back down to shape (how a
 * gradient reaches a broadcast input).  RuntimeError "size {[2]} is not
 * expandable to size {[2, 3]}." when shape does not broadcast to a's. */
RpcTensor *rpc_tensor_sum_to_size(const RpcTensor *a, guint ndim, const gint64 *shape,
                                  GError **error);
/* torch.stack along a new dim 0; all inputs of one shape. */
RpcTensor *rpc_tensor_stack(RpcTensor *const *ts, guint n, GError **error);
/* Reshape; one entry may be -1.  "shape '[3, 3]' is invalid for input of size 4".
 * Returns a copy: tensors are immutable once shared, so sharing storage as
 * PyTorch's view does would be indistinguishable. */
RpcTensor *rpc_tensor_view(const RpcTensor *a, guint ndim, const gint64 *shape, GError **error);
RpcTensor *rpc_tensor_cast(const RpcTensor *a, RpcDType dtype);

/* torch's tensor._version: how many in-place writes t's storage has seen
 * (shared by aliases; see tensor-private.h).  0 for a fresh tensor. */
guint32 rpc_tensor_version(const RpcTensor *t);

/* Comparisons. */
gboolean rpc_tensor_same_shape(const RpcTensor *a, const RpcTensor *b);
/* Same shape and exactly equal elements (dtype may differ). */
gboolean rpc_tensor_equal(const RpcTensor *a, const RpcTensor *b);
/* |a-b| <= atol + rtol*|b| elementwise, same shape (FALSE otherwise; PyTorch
 * would broadcast).  NaN is never close; equal infinities are. */
gboolean rpc_tensor_allclose(const RpcTensor *a, const RpcTensor *b, double rtol, double atol);

/* "tensor([[2., 2.],\n        [2., 2.]])"-like text, as torch's repr with the
 * default print options (precision 4, threshold 1000, edgeitems 3,
 * linewidth 80, default dtype float32) (transfer full). */
char *rpc_tensor_repr(const RpcTensor *t);
/* "[2, 2]" (transfer full). */
char *rpc_tensor_shape_string(const RpcTensor *t);

G_END_DECLS

#endif /* RPC_TENSOR_H */
