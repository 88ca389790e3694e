/* tensor.c — small dense CPU tensors: storage, broadcasting arithmetic, repr.
 *
 * Purpose: just enough of torch.Tensor for the RPC catalogue and autograd,
 * with PyTorch's results and error texts where the catalogue can see them.
 *
 * Invariants (see tensor-private.h for the layout):
 *   - a tensor is one g_malloc block; its shape is valid (non-negative,
 *     ndim <= RPC_TENSOR_MAX_DIMS, at most RPC_TENSOR_MAX_BYTES of elements),
 *     so every flat index and byte count fits in gint64 without overflow;
 *   - ops never modify their inputs and return a fresh tensor (refcount 1)
 *     or NULL with a RuntimeError; elements are written only before the
 *     tensor is shared;
 *   - arithmetic runs in double and rounds once to the result dtype.  For
 *     + - * / on float32 operands this is exactly IEEE float32 arithmetic
 *     (double has more than 2*24+2 significand bits, so the double rounding
 *     is innocuous); for sums, matmul and exp it may differ from PyTorch's
 *     float kernels in the last bit on non-integral data.
 *
 * Costs: ops are naive loops (matmul is O(n*k*m) with no blocking); a
 * broadcast walk keeps an index odometer, O(ndim) per carry.  The tensors
 * this simulator moves are small.
 */
#include "core/tensor.h"

#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor-private.h"

/* Header padded so the elements that follow it are 16-byte aligned. */
#define TENSOR_HEADER_SIZE ((sizeof(RpcTensor) + 15) & ~(gsize)15)

/* torch's default print options (torch/_tensor_str.py). */
#define PRINT_PRECISION 4
#define PRINT_THRESHOLD 1000
#define PRINT_EDGEITEMS 3
#define PRINT_LINEWIDTH 80

/* ---- shapes and storage ------------------------------------------------- */

static gboolean
dtype_valid(RpcDType dtype)
{
    return dtype == RPC_DTYPE_FLOAT32 || dtype == RPC_DTYPE_FLOAT64;
}

static gint64
elem_size(RpcDType dtype)
{
    return dtype == RPC_DTYPE_FLOAT64 ? (gint64)sizeof(double) : (gint64)sizeof(float);
}

static RpcDType
promote(RpcDType a, RpcDType b)
{
    return (a == RPC_DTYPE_FLOAT64 || b == RPC_DTYPE_FLOAT64) ? RPC_DTYPE_FLOAT64
                                                              : RPC_DTYPE_FLOAT32;
}

/* Appends "[2, 3]" (PyTorch's IntArrayRef printing). */
static void
append_shape(GString *s, guint ndim, const gint64 *shape)
{
    g_string_append_c(s, '[');
    for (guint i = 0; i < ndim; i++)
        g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", shape[i]);
    g_string_append_c(s, ']');
}

static char *
shape_to_string(guint ndim, const gint64 *shape)
{
    GString *s = g_string_new(NULL);
    append_shape(s, ndim, shape);
    return g_string_free(s, FALSE);
}

/* Validates a shape from anywhere and computes its element count.  Never
 * overflows: the count is bounded by RPC_TENSOR_MAX_BYTES before each
 * multiplication, and a zero anywhere makes the product 0. */
static gboolean
shape_validate(RpcDType dtype, guint ndim, const gint64 *shape, gint64 *numel_out, GError **error)
{
    if (!dtype_valid(dtype)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown tensor dtype %d", (int)dtype);
        return FALSE;
    }
    if (ndim > RPC_TENSOR_MAX_DIMS) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "tensors with %u dimensions are not supported (at most %d)", ndim,
                    RPC_TENSOR_MAX_DIMS);
        return FALSE;
    }
    gboolean has_zero = FALSE;
    for (guint i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            g_autofree char *str = shape_to_string(ndim, shape);
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Trying to create tensor with negative dimension %" G_GINT64_FORMAT ": %s",
                        shape[i], str);
            return FALSE;
        }
        has_zero |= shape[i] == 0;
    }
    gint64 numel = 1;
    if (has_zero) {
        numel = 0;
    } else {
        const gint64 max_numel = RPC_TENSOR_MAX_BYTES / elem_size(dtype);
        for (guint i = 0; i < ndim; i++) {
            if (shape[i] > max_numel / numel) {
                g_autofree char *str = shape_to_string(ndim, shape);
                g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "tensor of shape %s is too large (at most %" G_GINT64_FORMAT
                            " bytes per tensor)",
                            str, RPC_TENSOR_MAX_BYTES);
                return FALSE;
            }
            numel *= shape[i];
        }
    }
    *numel_out = numel;
    return TRUE;
}

/* A tensor with uninitialised elements, or NULL and a RuntimeError. */
static RpcTensor *
tensor_alloc(RpcDType dtype, guint ndim, const gint64 *shape, GError **error)
{
    gint64 numel;
    if (!shape_validate(dtype, ndim, shape, &numel, error))
        return NULL;
    RpcTensor *t = g_malloc(TENSOR_HEADER_SIZE + (gsize)(numel * elem_size(dtype)));
    g_atomic_ref_count_init(&t->ref);
    t->dtype = dtype;
    t->ndim = ndim;
    t->numel = numel;
    memset(t->shape, 0, sizeof t->shape);
    if (ndim > 0)
        memcpy(t->shape, shape, ndim * sizeof shape[0]);
    t->autograd = NULL;
    t->autograd_free = NULL;
    t->data = (char *)t + TENSOR_HEADER_SIZE;
    t->version = 0;
    t->base = NULL;
    t->storage_refs = 1;
    return t;
}

/* For results no larger than an existing tensor: cannot fail. */
static RpcTensor *
tensor_alloc_like(RpcDType dtype, guint ndim, const gint64 *shape)
{
    RpcTensor *t = tensor_alloc(dtype, ndim, shape, NULL);
    g_assert(t != NULL);
    return t;
}

/* The public constructors treat a bad shape as the caller's bug: one
 * critical naming the problem, then NULL (g_return_val_if_fail style). */
static RpcTensor *
tensor_alloc_or_critical(const char *func, RpcDType dtype, guint ndim, const gint64 *shape)
{
    GError *error = NULL;
    if (ndim > 0 && shape == NULL) {
        g_critical("%s: shape is NULL but ndim is %u", func, ndim);
        return NULL;
    }
    RpcTensor *t = tensor_alloc(dtype, ndim, shape, &error);
    if (t == NULL) {
        g_critical("%s: %s", func, error->message);
        g_error_free(error);
    }
    return t;
}

static inline double
load(const RpcTensor *t, gint64 i)
{
    if (t->dtype == RPC_DTYPE_FLOAT64)
        return ((const double *)t->data)[i];
    return ((const float *)t->data)[i];
}

static inline void
store(RpcTensor *t, gint64 i, double v)
{
    if (t->dtype == RPC_DTYPE_FLOAT64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

/* v as it would be stored in dtype. */
static double
round_to(RpcDType dtype, double v)
{
    return dtype == RPC_DTYPE_FLOAT64 ? v : (double)(float)v;
}

static void
fill(RpcTensor *t, double v)
{
    for (gint64 i = 0; i < t->numel; i++)
        store(t, i, v);
}

/* Row-major strides of t's own shape. */
static void
contiguous_strides(guint ndim, const gint64 *shape, gint64 *strides)
{
    gint64 s = 1;
    for (guint i = ndim; i-- > 0;) {
        strides[i] = s;
        s *= shape[i];
    }
}

/* Strides of t seen through an n-dim iteration space whose trailing dims it
 * is aligned with: missing leading dims and size-1 dims get stride 0, which
 * is what makes broadcasting (and summing back to a shape) a plain walk. */
static void
aligned_strides(guint t_ndim, const gint64 *t_shape, guint n, gint64 *strides)
{
    gint64 s = 1;
    for (guint i = n; i-- > 0;) {
        guint from_right = n - 1 - i;
        if (from_right < t_ndim) {
            gint64 d = t_shape[t_ndim - 1 - from_right];
            strides[i] = d == 1 ? 0 : s;
            s *= d;
        } else {
            strides[i] = 0;
        }
    }
}

/* An odometer over an n-dim index space, tracking two flat offsets. */
typedef struct {
    guint ndim;
    const gint64 *shape;
    gint64 idx[RPC_TENSOR_MAX_DIMS];
    const gint64 *stride[2];
    gint64 off[2];
} Walk;

static void
walk_init(Walk *w, guint ndim, const gint64 *shape, const gint64 *stride0, const gint64 *stride1)
{
    w->ndim = ndim;
    w->shape = shape;
    memset(w->idx, 0, sizeof w->idx);
    w->stride[0] = stride0;
    w->stride[1] = stride1;
    w->off[0] = w->off[1] = 0;
}

static void
walk_next(Walk *w)
{
    for (guint d = w->ndim; d-- > 0;) {
        if (++w->idx[d] < w->shape[d]) {
            w->off[0] += w->stride[0][d];
            w->off[1] += w->stride[1][d];
            return;
        }
        w->idx[d] = 0;
        w->off[0] -= w->stride[0][d] * (w->shape[d] - 1);
        w->off[1] -= w->stride[1][d] * (w->shape[d] - 1);
    }
}

/* ---- construction and accessors ----------------------------------------- */

RpcTensor *
rpc_tensor_new_zeros(RpcDType dtype, guint ndim, const gint64 *shape)
{
    return rpc_tensor_new_full(dtype, ndim, shape, 0.0);
}

RpcTensor *
rpc_tensor_new_full(RpcDType dtype, guint ndim, const gint64 *shape, double value)
{
    RpcTensor *t = tensor_alloc_or_critical(G_STRFUNC, dtype, ndim, shape);
    if (t != NULL)
        fill(t, value);
    return t;
}

RpcTensor *
rpc_tensor_new_ones(RpcDType dtype, guint ndim, const gint64 *shape)
{
    return rpc_tensor_new_full(dtype, ndim, shape, 1.0);
}

RpcTensor *
rpc_tensor_new_from_doubles(RpcDType dtype, guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = tensor_alloc_or_critical(G_STRFUNC, dtype, ndim, shape);
    if (t == NULL)
        return NULL;
    if (values == NULL && t->numel > 0) {
        g_critical("%s: values is NULL for %" G_GINT64_FORMAT " elements", G_STRFUNC, t->numel);
        rpc_tensor_unref(t);
        return NULL;
    }
    for (gint64 i = 0; i < t->numel; i++)
        store(t, i, values[i]);
    return t;
}

RpcTensor *
rpc_tensor_new_scalar(RpcDType dtype, double v)
{
    return rpc_tensor_new_full(dtype, 0, NULL, v);
}

RpcTensor *
rpc_tensor_ones2(gint64 rows, gint64 cols)
{
    const gint64 shape[2] = {rows, cols};
    return rpc_tensor_new_full(RPC_DTYPE_FLOAT32, 2, shape, 1.0);
}

RpcTensor *
rpc_tensor_new_checked(RpcDType dtype, guint ndim, const gint64 *shape, GError **error)
{
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    RpcTensor *t = tensor_alloc(dtype, ndim, shape, error);
    if (t != NULL)
        memset(t->data, 0, (gsize)(t->numel * elem_size(dtype)));
    return t;
}

RpcTensor *
rpc_tensor_new_full_like(const RpcTensor *a, double value)
{
    g_return_val_if_fail(a != NULL, NULL);
    RpcTensor *t = tensor_alloc_like(a->dtype, a->ndim, a->shape);
    fill(t, value);
    return t;
}

RpcTensor *
rpc_tensor_ref(RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    g_atomic_ref_count_inc(&t->ref);
    return t;
}

static void
storage_unref(RpcTensor *t)
{
    if (g_atomic_int_dec_and_test(&t->storage_refs))
        g_free(t);
}

void
rpc_tensor_unref(RpcTensor *t)
{
    g_return_if_fail(t != NULL);
    if (!g_atomic_ref_count_dec(&t->ref))
        return;
    if (t->autograd != NULL && t->autograd_free != NULL)
        t->autograd_free(t->autograd);
    t->autograd = NULL;
    if (t->base != NULL)
        storage_unref(t->base);
    storage_unref(t);
}

RpcTensor *
rpc_tensor_alias(RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    RpcTensor *owner = t->base != NULL ? t->base : t;
    /* Header only: the elements stay in owner's block. */
    RpcTensor *a = g_malloc(sizeof *a);
    *a = *owner;
    g_atomic_ref_count_init(&a->ref);
    a->autograd = NULL;
    a->autograd_free = NULL;
    a->version = 0; /* unused: the owner's counter is the one */
    a->base = owner;
    a->storage_refs = 1;
    g_atomic_int_inc(&owner->storage_refs);
    return a;
}

guint32
rpc_tensor_version(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return t->base != NULL ? t->base->version : t->version;
}

void
rpc_tensor_bump_version(RpcTensor *t)
{
    g_return_if_fail(t != NULL);
    RpcTensor *owner = t->base != NULL ? t->base : t;
    owner->version++;
}

RpcDType
rpc_tensor_dtype(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, RPC_DTYPE_FLOAT32);
    return t->dtype;
}

guint
rpc_tensor_ndim(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return t->ndim;
}

const gint64 *
rpc_tensor_shape(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return t->shape;
}

gint64
rpc_tensor_numel(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return t->numel;
}

gsize
rpc_tensor_nbytes(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return (gsize)(t->numel * elem_size(t->dtype));
}

gconstpointer
rpc_tensor_data(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return t->data;
}

gpointer
rpc_tensor_data_mut(RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    /* Immutable once shared: a peer holding a ref must never see a change;
     * an alias shares its storage by construction. */
    g_return_val_if_fail(g_atomic_ref_count_compare(&t->ref, 1), NULL);
    g_return_val_if_fail(t->base == NULL && g_atomic_int_get(&t->storage_refs) == 1, NULL);
    return t->data;
}

double
rpc_tensor_get(const RpcTensor *t, gint64 i)
{
    g_return_val_if_fail(t != NULL, NAN);
    g_return_val_if_fail(i >= 0 && i < t->numel, NAN);
    return load(t, i);
}

gboolean
rpc_tensor_item(const RpcTensor *t, double *out, GError **error)
{
    g_return_val_if_fail(t != NULL, FALSE);
    g_return_val_if_fail(out != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    if (t->numel != 1) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "a Tensor with %" G_GINT64_FORMAT " elements cannot be converted to Scalar",
                    t->numel);
        return FALSE;
    }
    *out = load(t, 0);
    return TRUE;
}

/* ---- elementwise -------------------------------------------------------- */

typedef double (*BinaryFn)(double x, double y);

static double
op_add(double x, double y)
{
    return x + y;
}

static double
op_sub(double x, double y)
{
    return x - y;
}

static double
op_mul(double x, double y)
{
    return x * y;
}

static double
op_div(double x, double y)
{
    return x / y;
}

/* PyTorch's infer_size: trailing dims aligned, size 1 stretches.  Walks from
 * the right as PyTorch does, so the reported dimension (an index into the
 * result shape) is the rightmost mismatch. */
static gboolean
broadcast_shape(const RpcTensor *a, const RpcTensor *b, guint *ndim_out, gint64 *shape,
                GError **error)
{
    guint n = MAX(a->ndim, b->ndim);
    for (guint i = n; i-- > 0;) {
        guint from_right = n - 1 - i;
        gint64 da = from_right < a->ndim ? a->shape[a->ndim - 1 - from_right] : 1;
        gint64 db = from_right < b->ndim ? b->shape[b->ndim - 1 - from_right] : 1;
        if (da != db && da != 1 && db != 1) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "The size of tensor a (%" G_GINT64_FORMAT
                        ") must match the size of tensor b (%" G_GINT64_FORMAT
                        ") at non-singleton dimension %u",
                        da, db, i);
            return FALSE;
        }
        shape[i] = da == 1 ? db : da;
    }
    *ndim_out = n;
    return TRUE;
}

static RpcTensor *
binary_op(const RpcTensor *a, const RpcTensor *b, BinaryFn fn, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(b != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    guint n;
    gint64 shape[RPC_TENSOR_MAX_DIMS];
    if (!broadcast_shape(a, b, &n, shape, error))
        return NULL;
    /* Broadcasting can multiply sizes ((n,1) + (1,n)), so this may fail. */
    RpcTensor *out = tensor_alloc(promote(a->dtype, b->dtype), n, shape, error);
    if (out == NULL)
        return NULL;
    gint64 sa[RPC_TENSOR_MAX_DIMS], sb[RPC_TENSOR_MAX_DIMS];
    aligned_strides(a->ndim, a->shape, n, sa);
    aligned_strides(b->ndim, b->shape, n, sb);
    Walk w;
    walk_init(&w, n, out->shape, sa, sb);
    for (gint64 i = 0; i < out->numel; i++, walk_next(&w))
        store(out, i, fn(load(a, w.off[0]), load(b, w.off[1])));
    return out;
}

RpcTensor *
rpc_tensor_add(const RpcTensor *a, const RpcTensor *b, GError **error)
{
    return binary_op(a, b, op_add, error);
}

RpcTensor *
rpc_tensor_sub(const RpcTensor *a, const RpcTensor *b, GError **error)
{
    return binary_op(a, b, op_sub, error);
}

RpcTensor *
rpc_tensor_mul(const RpcTensor *a, const RpcTensor *b, GError **error)
{
    return binary_op(a, b, op_mul, error);
}

RpcTensor *
rpc_tensor_div(const RpcTensor *a, const RpcTensor *b, GError **error)
{
    return binary_op(a, b, op_div, error);
}

/* fn(x, s) elementwise into a's dtype and shape.  The scalar is rounded to
 * the dtype first: PyTorch's CPU kernels take a wrapped Python number as
 * the op's compute type (float for float32 tensors). */
static RpcTensor *
scalar_op(const RpcTensor *a, BinaryFn fn, double s)
{
    RpcTensor *out = tensor_alloc_like(a->dtype, a->ndim, a->shape);
    s = round_to(a->dtype, s);
    for (gint64 i = 0; i < a->numel; i++)
        store(out, i, fn(load(a, i), s));
    return out;
}

RpcTensor *
rpc_tensor_add_scalar(const RpcTensor *a, double s)
{
    g_return_val_if_fail(a != NULL, NULL);
    return scalar_op(a, op_add, s);
}

RpcTensor *
rpc_tensor_mul_scalar(const RpcTensor *a, double s)
{
    g_return_val_if_fail(a != NULL, NULL);
    return scalar_op(a, op_mul, s);
}

RpcTensor *
rpc_tensor_div_scalar(const RpcTensor *a, double s)
{
    g_return_val_if_fail(a != NULL, NULL);
    return scalar_op(a, op_div, s);
}

void
rpc_tensor_add_scalar_inplace(RpcTensor *t, double s)
{
    g_return_if_fail(t != NULL);
    s = round_to(t->dtype, s);
    for (gint64 i = 0; i < t->numel; i++)
        store(t, i, load(t, i) + s);
    rpc_tensor_bump_version(t);
}

void
rpc_tensor_mul_scalar_inplace(RpcTensor *t, double s)
{
    g_return_if_fail(t != NULL);
    s = round_to(t->dtype, s);
    for (gint64 i = 0; i < t->numel; i++)
        store(t, i, load(t, i) * s);
    rpc_tensor_bump_version(t);
}

void
rpc_tensor_add_inplace(RpcTensor *t, const RpcTensor *other)
{
    g_return_if_fail(t != NULL);
    g_return_if_fail(other != NULL);
    g_return_if_fail(rpc_tensor_same_shape(t, other));
    for (gint64 i = 0; i < t->numel; i++)
        store(t, i, load(t, i) + load(other, i));
    rpc_tensor_bump_version(t);
}

RpcTensor *
rpc_tensor_neg(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return scalar_op(a, op_mul, -1.0);
}

typedef double (*UnaryFn)(double x);

static RpcTensor *
unary_op(const RpcTensor *a, UnaryFn fn)
{
    RpcTensor *out = tensor_alloc_like(a->dtype, a->ndim, a->shape);
    for (gint64 i = 0; i < a->numel; i++)
        store(out, i, fn(load(a, i)));
    return out;
}

static double
op_relu(double x)
{
    return x > 0.0 || isnan(x) ? x : 0.0; /* NaN propagates, as clamp_min */
}

static double
op_sigmoid(double x)
{
    return 1.0 / (1.0 + exp(-x));
}

RpcTensor *
rpc_tensor_exp(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return unary_op(a, exp);
}

RpcTensor *
rpc_tensor_sin(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return unary_op(a, sin);
}

RpcTensor *
rpc_tensor_cos(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return unary_op(a, cos);
}

RpcTensor *
rpc_tensor_relu(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return unary_op(a, op_relu);
}

RpcTensor *
rpc_tensor_sigmoid(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    return unary_op(a, op_sigmoid);
}

RpcTensor *
rpc_tensor_pow_scalar(const RpcTensor *a, double p)
{
    g_return_val_if_fail(a != NULL, NULL);
    RpcTensor *out = tensor_alloc_like(a->dtype, a->ndim, a->shape);
    for (gint64 i = 0; i < a->numel; i++)
        store(out, i, pow(load(a, i), p));
    return out;
}

RpcTensor *
rpc_tensor_cast(const RpcTensor *a, RpcDType dtype)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(dtype_valid(dtype), NULL);
    RpcTensor *out = tensor_alloc_like(dtype, a->ndim, a->shape);
    for (gint64 i = 0; i < a->numel; i++)
        store(out, i, load(a, i));
    return out;
}

/* ---- matmul, reductions, shape ops -------------------------------------- */

RpcTensor *
rpc_tensor_matmul(const RpcTensor *a, const RpcTensor *b, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(b != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    if (a->ndim == 0 || b->ndim == 0) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "both arguments to matmul need to be at least 1D, but they are %uD and %uD",
                    a->ndim, b->ndim);
        return NULL;
    }
    if (a->ndim > 2 || b->ndim > 2) {
        /* torch.matmul batches these; we do not (yet). */
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "matmul: only 1-d and 2-d tensors are supported");
        return NULL;
    }
    /* View both as matrices: A is rows x inner, B is inner_b x cols. */
    gint64 rows = a->ndim == 2 ? a->shape[0] : 1;
    gint64 inner = a->shape[a->ndim - 1];
    gint64 inner_b = b->shape[0];
    gint64 cols = b->ndim == 2 ? b->shape[1] : 1;
    if (inner != inner_b) {
        if (a->ndim == 1 && b->ndim == 1)
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "inconsistent tensor size, expected tensor [%" G_GINT64_FORMAT
                        "] and src [%" G_GINT64_FORMAT
                        "] to have the same number of elements, but got %" G_GINT64_FORMAT
                        " and %" G_GINT64_FORMAT " elements respectively",
                        inner, inner_b, inner, inner_b);
        else if (b->ndim == 1) /* torch.mv, through addmv */
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "size mismatch, got input (%" G_GINT64_FORMAT "), mat (%" G_GINT64_FORMAT
                        "x%" G_GINT64_FORMAT "), vec (%" G_GINT64_FORMAT ")",
                        rows, rows, inner, inner_b);
        else /* torch.mm; a 1-d a is unsqueezed to 1 x inner first */
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "mat1 and mat2 shapes cannot be multiplied (%" G_GINT64_FORMAT
                        "x%" G_GINT64_FORMAT " and %" G_GINT64_FORMAT "x%" G_GINT64_FORMAT ")",
                        rows, inner, inner_b, cols);
        return NULL;
    }

    /* Result: 2-d only when both are; a 1-d operand's dim is dropped. */
    gint64 shape[2];
    guint n = 0;
    if (a->ndim == 2)
        shape[n++] = rows;
    if (b->ndim == 2)
        shape[n++] = cols;
    RpcTensor *out = tensor_alloc(promote(a->dtype, b->dtype), n, shape, error);
    if (out == NULL)
        return NULL;
    for (gint64 i = 0; i < rows; i++) {
        for (gint64 j = 0; j < cols; j++) {
            double acc = 0.0;
            for (gint64 k = 0; k < inner; k++)
                acc += load(a, i * inner + k) * load(b, k * cols + j);
            store(out, i * cols + j, acc);
        }
    }
    return out;
}

RpcTensor *
rpc_tensor_sum(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    double acc = 0.0;
    for (gint64 i = 0; i < a->numel; i++)
        acc += load(a, i);
    RpcTensor *out = tensor_alloc_like(a->dtype, 0, NULL);
    store(out, 0, acc);
    return out;
}

RpcTensor *
rpc_tensor_mean(const RpcTensor *a)
{
    g_return_val_if_fail(a != NULL, NULL);
    double acc = 0.0;
    for (gint64 i = 0; i < a->numel; i++)
        acc += load(a, i);
    RpcTensor *out = tensor_alloc_like(a->dtype, 0, NULL);
    store(out, 0, acc / (double)a->numel); /* 0/0: NaN, as torch */
    return out;
}

RpcTensor *
rpc_tensor_expand(const RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (ndim < a->ndim) {
        g_autofree char *have = shape_to_string(a->ndim, a->shape);
        g_autofree char *want = shape_to_string(ndim, shape);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "expand(torch.%s{%s}, size=%s): the number of sizes provided (%u) must be "
                    "greater or equal to the number of dimensions in the tensor (%u)",
                    a->dtype == RPC_DTYPE_FLOAT64 ? "DoubleTensor" : "FloatTensor", have, want,
                    ndim, a->ndim);
        return NULL;
    }
    for (guint i = 0; i < a->ndim; i++) {
        guint d = ndim - a->ndim + i;
        if (a->shape[i] != 1 && a->shape[i] != shape[d]) {
            g_autofree char *want = shape_to_string(ndim, shape);
            g_autofree char *have = shape_to_string(a->ndim, a->shape);
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "The expanded size of the tensor (%" G_GINT64_FORMAT
                        ") must match the existing size (%" G_GINT64_FORMAT
                        ") at non-singleton dimension %u.  Target sizes: %s.  Tensor sizes: %s",
                        shape[d], a->shape[i], d, want, have);
            return NULL;
        }
    }
    RpcTensor *out = tensor_alloc(a->dtype, ndim, shape, error);
    if (out == NULL)
        return NULL;
    gint64 sa[RPC_TENSOR_MAX_DIMS], so[RPC_TENSOR_MAX_DIMS];
    aligned_strides(a->ndim, a->shape, ndim, sa);
    contiguous_strides(ndim, out->shape, so);
    Walk w;
    walk_init(&w, ndim, out->shape, sa, so);
    for (gint64 i = 0; i < out->numel; i++, walk_next(&w))
        store(out, w.off[1], load(a, w.off[0]));
    return out;
}

RpcTensor *
rpc_tensor_select(const RpcTensor *a, gint64 index, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (a->ndim == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "select() cannot be applied to a 0-dim tensor.");
        return NULL;
    }
    gint64 n = a->shape[0];
    if (index < -n || index >= n) {
        g_autofree char *have = shape_to_string(a->ndim, a->shape);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "select(): index %" G_GINT64_FORMAT
                    " out of range for tensor of size %s at dimension 0",
                    index, have);
        return NULL;
    }
    if (index < 0)
        index += n;
    RpcTensor *out = tensor_alloc_like(a->dtype, a->ndim - 1, a->shape + 1);
    gint64 each = out->numel;
    memcpy(out->data, (const char *)a->data + (gsize)(index * each * elem_size(a->dtype)),
           (gsize)(each * elem_size(a->dtype)));
    return out;
}

RpcTensor *
rpc_tensor_t(const RpcTensor *a, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    if (a->ndim > 2) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "t() expects a tensor with <= 2 dimensions, but self is %uD", a->ndim);
        return NULL;
    }
    if (a->ndim < 2)
        return rpc_tensor_cast(a, a->dtype);
    const gint64 shape[2] = {a->shape[1], a->shape[0]};
    RpcTensor *out = tensor_alloc_like(a->dtype, 2, shape);
    for (gint64 i = 0; i < shape[0]; i++)
        for (gint64 j = 0; j < shape[1]; j++)
            store(out, i * shape[1] + j, load(a, j * shape[0] + i));
    return out;
}

RpcTensor *
rpc_tensor_sum_to_size(const RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    /* is_expandable_to(shape, a->shape) */
    gboolean ok = ndim <= a->ndim;
    for (guint i = 0; ok && i < ndim; i++) {
        gint64 d = shape[ndim - 1 - i];
        ok = d == a->shape[a->ndim - 1 - i] || d == 1;
    }
    if (!ok) {
        g_autofree char *want = shape_to_string(ndim, shape);
        g_autofree char *have = shape_to_string(a->ndim, a->shape);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "size {%s} is not expandable to size {%s}.", want, have);
        return NULL;
    }
    /* Walk a; each element lands where shape's stride-0 dims collapse it. */
    RpcTensor *out = tensor_alloc_like(a->dtype, ndim, shape);
    double *acc = g_new0(double, out->numel > 0 ? out->numel : 1);
    gint64 sa[RPC_TENSOR_MAX_DIMS], so[RPC_TENSOR_MAX_DIMS];
    contiguous_strides(a->ndim, a->shape, sa);
    aligned_strides(ndim, shape, a->ndim, so);
    Walk w;
    walk_init(&w, a->ndim, a->shape, sa, so);
    for (gint64 i = 0; i < a->numel; i++, walk_next(&w))
        acc[w.off[1]] += load(a, w.off[0]);
    for (gint64 i = 0; i < out->numel; i++)
        store(out, i, acc[i]);
    g_free(acc);
    return out;
}

RpcTensor *
rpc_tensor_stack(RpcTensor *const *ts, guint n, GError **error)
{
    g_return_val_if_fail(n == 0 || ts != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    for (guint i = 0; i < n; i++)
        g_return_val_if_fail(ts[i] != NULL, NULL);

    if (n == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "stack expects a non-empty TensorList");
        return NULL;
    }
    RpcDType dtype = ts[0]->dtype;
    for (guint i = 1; i < n; i++) {
        if (!rpc_tensor_same_shape(ts[0], ts[i])) {
            g_autofree char *s0 = rpc_tensor_shape_string(ts[0]);
            g_autofree char *si = rpc_tensor_shape_string(ts[i]);
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "stack expects each tensor to be equal size, but got %s at entry 0 and %s "
                        "at entry %u",
                        s0, si, i);
            return NULL;
        }
        dtype = promote(dtype, ts[i]->dtype);
    }
    gint64 shape[RPC_TENSOR_MAX_DIMS + 1];
    shape[0] = n;
    memcpy(shape + 1, ts[0]->shape, ts[0]->ndim * sizeof shape[0]);
    RpcTensor *out = tensor_alloc(dtype, ts[0]->ndim + 1, shape, error);
    if (out == NULL)
        return NULL;
    gint64 each = ts[0]->numel;
    for (guint i = 0; i < n; i++)
        for (gint64 j = 0; j < each; j++)
            store(out, i * each + j, load(ts[i], j));
    return out;
}

/* PyTorch's infer_size (InferSize.h), texts included. */
RpcTensor *
rpc_tensor_view(const RpcTensor *a, guint ndim, const gint64 *shape, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(ndim == 0 || shape != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);

    if (ndim > RPC_TENSOR_MAX_DIMS) {
        /* A script can ask for this, so it is an error, not a critical. */
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "view: tensors with %u dimensions are not supported (at most %d)", ndim,
                    RPC_TENSOR_MAX_DIMS);
        return NULL;
    }
    gint64 newsize = 1;
    gboolean overflow = FALSE;
    int infer = -1;
    for (guint i = 0; i < ndim; i++) {
        if (shape[i] == -1) {
            if (infer >= 0) {
                g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                    "only one dimension can be inferred");
                return NULL;
            }
            infer = (int)i;
        } else if (shape[i] >= 0) {
            /* A product that overflows is far beyond numel: "invalid". */
            if (shape[i] != 0 && newsize > G_MAXINT64 / shape[i])
                overflow = TRUE;
            else
                newsize *= shape[i];
        } else {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "invalid shape dimension %" G_GINT64_FORMAT, shape[i]);
            return NULL;
        }
    }
    gint64 numel = a->numel;
    gint64 out_shape[RPC_TENSOR_MAX_DIMS];
    if (ndim > 0)
        memcpy(out_shape, shape, ndim * sizeof shape[0]);
    if (!overflow && (numel == newsize || (infer >= 0 && newsize > 0 && numel % newsize == 0))) {
        if (infer >= 0) {
            if (newsize == 0) {
                g_autofree char *str = shape_to_string(ndim, shape);
                g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "cannot reshape tensor of 0 elements into shape %s because the "
                            "unspecified dimension size -1 can be any value and is ambiguous",
                            str);
                return NULL;
            }
            out_shape[infer] = numel / newsize;
        }
        RpcTensor *out = tensor_alloc_like(a->dtype, ndim, out_shape);
        memcpy(out->data, a->data, rpc_tensor_nbytes(a));
        return out;
    }
    g_autofree char *str = shape_to_string(ndim, shape);
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "shape '%s' is invalid for input of size %" G_GINT64_FORMAT, str, numel);
    return NULL;
}

/* ---- comparisons -------------------------------------------------------- */

gboolean
rpc_tensor_same_shape(const RpcTensor *a, const RpcTensor *b)
{
    g_return_val_if_fail(a != NULL, FALSE);
    g_return_val_if_fail(b != NULL, FALSE);
    /* Entries past ndim are 0, so the whole arrays compare. */
    return a->ndim == b->ndim && memcmp(a->shape, b->shape, sizeof a->shape) == 0;
}

gboolean
rpc_tensor_equal(const RpcTensor *a, const RpcTensor *b)
{
    g_return_val_if_fail(a != NULL, FALSE);
    g_return_val_if_fail(b != NULL, FALSE);
    if (!rpc_tensor_same_shape(a, b))
        return FALSE;
    for (gint64 i = 0; i < a->numel; i++)
        if (load(a, i) != load(b, i)) /* NaN != NaN, as torch.equal */
            return FALSE;
    return TRUE;
}

gboolean
rpc_tensor_allclose(const RpcTensor *a, const RpcTensor *b, double rtol, double atol)
{
    g_return_val_if_fail(a != NULL, FALSE);
    g_return_val_if_fail(b != NULL, FALSE);
    g_return_val_if_fail(rtol >= 0 && atol >= 0, FALSE);
    if (!rpc_tensor_same_shape(a, b))
        return FALSE;
    for (gint64 i = 0; i < a->numel; i++) {
        double x = load(a, i), y = load(b, i);
        if (x == y) /* also equal infinities */
            continue;
        if (!isfinite(x) || !isfinite(y) || !(fabs(x - y) <= atol + rtol * fabs(y)))
            return FALSE;
    }
    return TRUE;
}

char *
rpc_tensor_shape_string(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return shape_to_string(t->ndim, t->shape);
}

/* ---- repr: torch/_tensor_str.py with the default print options ---------- */
/* A transcription of _Formatter, _vector_str, _tensor_str_with_formatter,
 * get_summarized_data and _add_suffixes, so float32/float64 tensors print
 * as in PyTorch, quirks included (the width comes from nonzero finite
 * values only, so "nan" can be wider than its column; _add_suffixes counts
 * the last line one long).  Not modelled: torch.set_printoptions, a default
 * dtype other than float32, other dtypes, devices; autograd's suffixes come
 * in through rpc_tensor_repr_with_suffixes(). */

/* _Formatter: the mode and the column width, from the shown elements only
 * (get_summarized_data), the width from their nonzero finite values. */
typedef struct {
    gboolean int_mode;
    gboolean sci_mode;
    int width;
} Formatter;

/* Flat offsets of the elements repr shows, in order: all of them, or with
 * summarize only the first and last PRINT_EDGEITEMS of every dim longer
 * than twice that. */
static void
collect_shown(const RpcTensor *t, const gint64 *strides, guint dim, gint64 offset,
              gboolean summarize, GArray *out)
{
    if (dim == t->ndim) {
        g_array_append_val(out, offset);
        return;
    }
    gint64 n = t->shape[dim];
    for (gint64 i = 0; i < n; i++) {
        if (summarize && n > 2 * PRINT_EDGEITEMS && i == PRINT_EDGEITEMS)
            i = n - PRINT_EDGEITEMS;
        collect_shown(t, strides, dim + 1, offset + i * strides[dim], summarize, out);
    }
}

/* The value's text before padding; buf holds 64 bytes.  Shown finite values
 * are at most 1e8 in the fixed modes, so nothing is truncated. */
static const char *
format_raw(const Formatter *f, double v, char *buf)
{
    if (isnan(v))
        return "nan"; /* Python prints every NaN so, C may print "-nan" */
    if (isinf(v))
        return v > 0 ? "inf" : "-inf";
    if (f->sci_mode)
        g_snprintf(buf, 64, "%.*e", PRINT_PRECISION, v);
    else if (f->int_mode)
        g_snprintf(buf, 64, "%.0f.", v);
    else
        g_snprintf(buf, 64, "%.*f", PRINT_PRECISION, v);
    return buf;
}

static void
formatter_init(Formatter *f, const RpcTensor *t, const GArray *shown)
{
    f->int_mode = TRUE;
    f->sci_mode = FALSE;
    f->width = 1;
    double min_abs = INFINITY, max_abs = 0.0;
    gboolean any = FALSE;
    for (guint i = 0; i < shown->len; i++) {
        double v = load(t, g_array_index(shown, gint64, i));
        if (!isfinite(v) || v == 0.0)
            continue;
        any = TRUE;
        min_abs = MIN(min_abs, fabs(v));
        max_abs = MAX(max_abs, fabs(v));
        if (v != ceil(v))
            f->int_mode = FALSE;
    }
    if (!any)
        return;
    f->sci_mode =
        max_abs / min_abs > 1000.0 || max_abs > 1.0e8 || (!f->int_mode && min_abs < 1.0e-4);
    for (guint i = 0; i < shown->len; i++) {
        double v = load(t, g_array_index(shown, gint64, i));
        char buf[64];
        if (!isfinite(v) || v == 0.0)
            continue;
        f->width = MAX(f->width, (int)strlen(format_raw(f, v, buf)));
    }
}

static void
append_value(GString *s, const Formatter *f, double v)
{
    char buf[64];
    const char *text = format_raw(f, v, buf);
    int len = (int)strlen(text);
    for (int i = len; i < f->width; i++)
        g_string_append_c(s, ' ');
    g_string_append(s, text);
}

static void
append_newline_indent(GString *s, guint newlines, guint indent)
{
    g_string_append_c(s, ',');
    for (guint i = 0; i < newlines; i++)
        g_string_append_c(s, '\n');
    for (guint i = 0; i < indent; i++)
        g_string_append_c(s, ' ');
}

/* _vector_str: elements joined by ", ", wrapped so that a line holds
 * (linewidth - indent) / (width + 2) of them; " ..." counts as one. */
static void
append_vector(GString *s, const RpcTensor *t, const Formatter *f, gint64 offset, guint indent,
              gboolean summarize)
{
    gint64 n = t->shape[t->ndim - 1];
    gint64 per_line = MAX(1, (PRINT_LINEWIDTH - (gint64)indent) / (f->width + 2));
    gint64 k = 0; /* items emitted */
    g_string_append_c(s, '[');
    for (gint64 i = 0; i < n; i++, k++) {
        if (k > 0) {
            if (k % per_line == 0)
                append_newline_indent(s, 1, indent + 1);
            else
                g_string_append(s, ", ");
        }
        if (summarize && n > 2 * PRINT_EDGEITEMS && i == PRINT_EDGEITEMS) {
            g_string_append(s, " ...");
            i = n - PRINT_EDGEITEMS - 1;
            continue;
        }
        append_value(s, f, load(t, offset + i));
    }
    g_string_append_c(s, ']');
}

/* _tensor_str_with_formatter for ndim >= 1: slices joined by "," plus
 * (dims left - 1) newlines and an indent; "..." stands for skipped slices. */
static void
append_tensor(GString *s, const RpcTensor *t, const gint64 *strides, const Formatter *f, guint dim,
              gint64 offset, guint indent, gboolean summarize)
{
    guint left = t->ndim - dim;
    if (left == 1) {
        append_vector(s, t, f, offset, indent, summarize);
        return;
    }
    gint64 n = t->shape[dim];
    g_string_append_c(s, '[');
    for (gint64 i = 0; i < n; i++) {
        if (i > 0)
            append_newline_indent(s, left - 1, indent + 1);
        if (summarize && n > 2 * PRINT_EDGEITEMS && i == PRINT_EDGEITEMS) {
            g_string_append(s, "...");
            i = n - PRINT_EDGEITEMS - 1;
            continue;
        }
        append_tensor(s, t, strides, f, dim + 1, offset + i * strides[dim], indent + 1, summarize);
    }
    g_string_append_c(s, ']');
}

char *
rpc_tensor_repr_with_suffixes(const RpcTensor *t, const char *const *extra)
{
    g_return_val_if_fail(t != NULL, NULL);
    const guint indent = sizeof "tensor(" - 1;
    GString *s = g_string_new("tensor(");
    GPtrArray *suffixes = g_ptr_array_new_with_free_func(g_free);

    if (t->numel == 0) {
        /* Explicit size unless it is (0,), as NumPy does. */
        if (t->ndim != 1) {
            GString *size = g_string_new("size=(");
            for (guint i = 0; i < t->ndim; i++)
                g_string_append_printf(size, "%s%" G_GINT64_FORMAT, i ? ", " : "", t->shape[i]);
            g_string_append_c(size, ')');
            g_ptr_array_add(suffixes, g_string_free(size, FALSE));
        }
        g_string_append(s, "[]");
    } else {
        gint64 strides[RPC_TENSOR_MAX_DIMS];
        contiguous_strides(t->ndim, t->shape, strides);
        gboolean summarize = t->numel > PRINT_THRESHOLD;
        GArray *shown = g_array_new(FALSE, FALSE, sizeof(gint64));
        collect_shown(t, strides, 0, 0, summarize, shown);
        Formatter f;
        formatter_init(&f, t, shown);
        g_array_free(shown, TRUE);
        if (t->ndim == 0)
            append_value(s, &f, load(t, 0));
        else
            append_tensor(s, t, strides, &f, 0, 0, indent, summarize);
    }
    if (t->dtype != RPC_DTYPE_FLOAT32)
        g_ptr_array_add(suffixes, g_strdup("dtype=torch.float64"));
    for (const char *const *p = extra; p != NULL && *p != NULL; p++)
        g_ptr_array_add(suffixes, g_strdup(*p));

    /* _add_suffixes, including its count of the last line's length (one
     * more than the characters after the last newline, or len + 2). */
    const char *nl = strrchr(s->str, '\n');
    gsize last_line = nl ? s->len - (gsize)(nl - s->str) + 1 : s->len + 2;
    for (guint i = 0; i < suffixes->len; i++) {
        const char *suffix = g_ptr_array_index(suffixes, i);
        gsize len = strlen(suffix);
        if (last_line + len + 2 > PRINT_LINEWIDTH) {
            append_newline_indent(s, 1, indent);
            last_line = indent + len;
        } else {
            g_string_append(s, ", ");
            last_line += len + 2;
        }
        g_string_append(s, suffix);
    }
    g_string_append_c(s, ')');
    g_ptr_array_unref(suffixes);
    return g_string_free(s, FALSE);
}

char *
rpc_tensor_repr(const RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return rpc_tensor_repr_with_suffixes(t, NULL);
}
