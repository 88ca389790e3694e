/* test-tensor.c — unit tests for core/tensor.c.
 *
 * Every op is checked against exact expected values (float32 results as the
 * float nearest the true result) and every RuntimeError against PyTorch's
 * exact text.  Caller bugs are checked as expected criticals.
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/tensor-private.h"
#include "core/tensor.h"

#define F32        RPC_DTYPE_FLOAT32
#define F64        RPC_DTYPE_FLOAT64
#define SHAPE(...) ((const gint64[]){__VA_ARGS__})
#define VALS(...)  ((const double[]){__VA_ARGS__})

static RpcTensor *
tensor(RpcDType dtype, guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = rpc_tensor_new_from_doubles(dtype, ndim, shape, values);
    g_assert_nonnull(t);
    return t;
}

/* Checks dtype, shape and every element exactly, then drops t. */
static void
check_and_free(RpcTensor *t, RpcDType dtype, guint ndim, const gint64 *shape, const double *want)
{
    g_assert_nonnull(t);
    g_assert_cmpint(rpc_tensor_dtype(t), ==, dtype);
    g_assert_cmpuint(rpc_tensor_ndim(t), ==, ndim);
    gint64 numel = 1;
    for (guint i = 0; i < ndim; i++) {
        g_assert_cmpint(rpc_tensor_shape(t)[i], ==, shape[i]);
        numel *= shape[i];
    }
    g_assert_cmpint(rpc_tensor_numel(t), ==, numel);
    for (gint64 i = 0; i < numel; i++)
        g_assert_cmpfloat(rpc_tensor_get(t, i), ==, want[i]);
    rpc_tensor_unref(t);
}

/* Checks *error and clears it for the next call. */
static void
check_runtime_error(GError **error, const char *message)
{
    g_assert_error(*error, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr((*error)->message, ==, message);
    g_clear_error(error);
}

static void
check_repr(const RpcTensor *t, const char *want)
{
    g_autofree char *got = rpc_tensor_repr(t);
    g_assert_cmpstr(got, ==, want);
}

static double
f32(double v)
{
    return (double)(float)v;
}

/* ---- construction ------------------------------------------------------- */

static void
test_construct(void)
{
    RpcTensor *z = rpc_tensor_new_zeros(F32, 2, SHAPE(2, 3));
    g_assert_cmpint(rpc_tensor_numel(z), ==, 6);
    g_assert_cmpuint(rpc_tensor_nbytes(z), ==, 24);
    const float *zd = rpc_tensor_data(z);
    for (int i = 0; i < 6; i++)
        g_assert_cmpfloat(zd[i], ==, 0.0f);
    check_and_free(z, F32, 2, SHAPE(2, 3), VALS(0, 0, 0, 0, 0, 0));

    RpcTensor *o = rpc_tensor_new_ones(F64, 1, SHAPE(3));
    g_assert_cmpuint(rpc_tensor_nbytes(o), ==, 24);
    const double *od = rpc_tensor_data(o);
    g_assert_cmpfloat(od[2], ==, 1.0);
    check_and_free(o, F64, 1, SHAPE(3), VALS(1, 1, 1));

    check_and_free(rpc_tensor_new_full(F32, 1, SHAPE(2), 0.1), F32, 1, SHAPE(2),
                   VALS(f32(0.1), f32(0.1)));
    check_and_free(rpc_tensor_new_full(F64, 1, SHAPE(2), 0.1), F64, 1, SHAPE(2), VALS(0.1, 0.1));
    check_and_free(rpc_tensor_ones2(2, 2), F32, 2, SHAPE(2, 2), VALS(1, 1, 1, 1));
    check_and_free(tensor(F32, 2, SHAPE(1, 2), VALS(0.1, -3)), F32, 2, SHAPE(1, 2),
                   VALS(f32(0.1), -3));

    /* 0-d: numel 1, shape NULL allowed. */
    RpcTensor *s = rpc_tensor_new_scalar(F64, 3.5);
    g_assert_cmpuint(rpc_tensor_ndim(s), ==, 0);
    g_assert_cmpint(rpc_tensor_numel(s), ==, 1);
    g_assert_cmpuint(rpc_tensor_nbytes(s), ==, 8);
    check_and_free(s, F64, 0, NULL, VALS(3.5));
    check_and_free(rpc_tensor_new_zeros(F32, 0, NULL), F32, 0, NULL, VALS(0));

    /* Empty tensors; values may be NULL when there are none. */
    RpcTensor *e = rpc_tensor_ones2(0, 0);
    g_assert_cmpint(rpc_tensor_numel(e), ==, 0);
    g_assert_cmpuint(rpc_tensor_nbytes(e), ==, 0);
    g_assert_nonnull(rpc_tensor_data(e));
    check_and_free(e, F32, 2, SHAPE(0, 0), NULL);
    check_and_free(rpc_tensor_new_from_doubles(F64, 2, SHAPE(3, 0), NULL), F64, 2, SHAPE(3, 0),
                   NULL);

    RpcTensor *src = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    check_and_free(rpc_tensor_new_full_like(src, 7), F64, 1, SHAPE(2), VALS(7, 7));
    rpc_tensor_unref(src);
}

static void
test_full_like_keeps_dtype(void)
{
    RpcTensor *a = tensor(F32, 2, SHAPE(1, 2), VALS(1, 2));
    check_and_free(rpc_tensor_new_full_like(a, 0.1), F32, 2, SHAPE(1, 2), VALS(f32(0.1), f32(0.1)));
    rpc_tensor_unref(a);
}

static void
free_counter(gpointer p)
{
    (*(int *)p)++;
}

static void
test_refcount(void)
{
    RpcTensor *t = rpc_tensor_ones2(2, 2);
    float *d = rpc_tensor_data_mut(t);
    g_assert_nonnull(d);
    d[3] = 5.0f;
    g_assert_cmpfloat(rpc_tensor_get(t, 3), ==, 5.0);

    g_assert_true(rpc_tensor_ref(t) == t);
    /* Shared now: immutable. */
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*g_atomic_ref_count_compare*");
    g_assert_null(rpc_tensor_data_mut(t));
    g_test_assert_expected_messages();
    rpc_tensor_unref(t);
    g_assert_nonnull(rpc_tensor_data_mut(t)); /* sole owner again */

    /* Autograd metadata is released with the last reference. */
    int freed = 0;
    t->autograd = &freed;
    t->autograd_free = free_counter;
    rpc_tensor_ref(t);
    rpc_tensor_unref(t);
    g_assert_cmpint(freed, ==, 0);
    rpc_tensor_unref(t);
    g_assert_cmpint(freed, ==, 1);

    /* Fresh tensors carry no autograd metadata. */
    RpcTensor *u = rpc_tensor_new_scalar(F32, 1);
    g_assert_null(u->autograd);
    rpc_tensor_unref(u);
}

static void
test_autoptr(void)
{
    g_autoptr(RpcTensor) t = rpc_tensor_ones2(1, 1);
    g_assert_cmpint(rpc_tensor_numel(t), ==, 1);
}

static void
test_item(void)
{
    GError *error = NULL;
    double v = 0;
    RpcTensor *s = rpc_tensor_new_scalar(F32, 2.5);
    g_assert_true(rpc_tensor_item(s, &v, &error));
    g_assert_no_error(error);
    g_assert_cmpfloat(v, ==, 2.5);
    rpc_tensor_unref(s);

    RpcTensor *one = rpc_tensor_new_full(F64, 2, SHAPE(1, 1), -4);
    g_assert_true(rpc_tensor_item(one, &v, NULL));
    g_assert_cmpfloat(v, ==, -4);
    rpc_tensor_unref(one);

    RpcTensor *four = rpc_tensor_ones2(2, 2);
    g_assert_false(rpc_tensor_item(four, &v, &error));
    check_runtime_error(&error, "a Tensor with 4 elements cannot be converted to Scalar");
    g_assert_false(rpc_tensor_item(four, &v, NULL));
    rpc_tensor_unref(four);

    RpcTensor *none = rpc_tensor_new_zeros(F32, 1, SHAPE(0));
    g_assert_false(rpc_tensor_item(none, &v, &error));
    check_runtime_error(&error, "a Tensor with 0 elements cannot be converted to Scalar");
    rpc_tensor_unref(none);
}

/* ---- elementwise -------------------------------------------------------- */

static void
test_add_same_shape(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4));
    RpcTensor *b = tensor(F32, 2, SHAPE(2, 2), VALS(10, 20, 30, 40));
    check_and_free(rpc_tensor_add(a, b, &error), F32, 2, SHAPE(2, 2), VALS(11, 22, 33, 44));
    g_assert_no_error(error);
    /* Inputs untouched. */
    check_and_free(a, F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4));
    check_and_free(b, F32, 2, SHAPE(2, 2), VALS(10, 20, 30, 40));
}

static void
test_add_broadcast(void)
{
    GError *error = NULL;
    /* (2,1) + (1,3) -> (2,3) */
    RpcTensor *col = tensor(F32, 2, SHAPE(2, 1), VALS(10, 20));
    RpcTensor *row = tensor(F32, 2, SHAPE(1, 3), VALS(1, 2, 3));
    check_and_free(rpc_tensor_add(col, row, &error), F32, 2, SHAPE(2, 3),
                   VALS(11, 12, 13, 21, 22, 23));
    check_and_free(rpc_tensor_add(row, col, &error), F32, 2, SHAPE(2, 3),
                   VALS(11, 12, 13, 21, 22, 23));
    g_assert_no_error(error);

    /* (3,) + (2,3): the missing leading dim stretches. */
    RpcTensor *v = tensor(F32, 1, SHAPE(3), VALS(1, 2, 3));
    RpcTensor *m = tensor(F32, 2, SHAPE(2, 3), VALS(0, 0, 0, 10, 10, 10));
    check_and_free(rpc_tensor_add(v, m, NULL), F32, 2, SHAPE(2, 3), VALS(1, 2, 3, 11, 12, 13));

    /* 0-d scalar with a matrix, either side. */
    RpcTensor *s = rpc_tensor_new_scalar(F32, 100);
    check_and_free(rpc_tensor_add(s, m, NULL), F32, 2, SHAPE(2, 3),
                   VALS(100, 100, 100, 110, 110, 110));
    check_and_free(rpc_tensor_sub(m, s, NULL), F32, 2, SHAPE(2, 3),
                   VALS(-100, -100, -100, -90, -90, -90));
    check_and_free(rpc_tensor_add(s, s, NULL), F32, 0, NULL, VALS(200));

    /* (2,1,3) + (4,1) -> (2,4,3): a stretch in the middle and both ends. */
    double av[6], bv[4];
    for (int i = 0; i < 6; i++)
        av[i] = i * 100;
    for (int j = 0; j < 4; j++)
        bv[j] = j;
    RpcTensor *a3 = tensor(F64, 3, SHAPE(2, 1, 3), av);
    RpcTensor *b2 = tensor(F64, 2, SHAPE(4, 1), bv);
    double want[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++)
                want[(i * 4 + j) * 3 + k] = av[i * 3 + k] + bv[j];
    check_and_free(rpc_tensor_add(a3, b2, NULL), F64, 3, SHAPE(2, 4, 3), want);

    rpc_tensor_unref(col);
    rpc_tensor_unref(row);
    rpc_tensor_unref(v);
    rpc_tensor_unref(m);
    rpc_tensor_unref(s);
    rpc_tensor_unref(a3);
    rpc_tensor_unref(b2);
}

static void
test_add_broadcast_mismatch(void)
{
    GError *error = NULL;
    RpcTensor *a = rpc_tensor_new_zeros(F32, 1, SHAPE(10));
    RpcTensor *b = rpc_tensor_new_zeros(F32, 1, SHAPE(5));
    g_assert_null(rpc_tensor_add(a, b, &error));
    check_runtime_error(&error, "The size of tensor a (10) must match the size of tensor b (5) at "
                                "non-singleton dimension 0");
    g_assert_null(rpc_tensor_mul(b, a, &error));
    check_runtime_error(&error, "The size of tensor a (5) must match the size of tensor b (10) at "
                                "non-singleton dimension 0");
    g_assert_null(rpc_tensor_add(a, b, NULL));

    /* The dimension is an index into the broadcast result, the rightmost
     * mismatch first. */
    RpcTensor *c = rpc_tensor_new_zeros(F32, 3, SHAPE(2, 3, 4));
    RpcTensor *d = rpc_tensor_new_zeros(F32, 2, SHAPE(5, 4));
    g_assert_null(rpc_tensor_sub(c, d, &error));
    check_runtime_error(&error, "The size of tensor a (3) must match the size of tensor b (5) at "
                                "non-singleton dimension 1");
    RpcTensor *e = rpc_tensor_new_zeros(F32, 2, SHAPE(2, 3));
    RpcTensor *f = rpc_tensor_new_zeros(F32, 2, SHAPE(3, 2));
    g_assert_null(rpc_tensor_div(e, f, &error));
    check_runtime_error(&error, "The size of tensor a (3) must match the size of tensor b (2) at "
                                "non-singleton dimension 1");
    /* 0 does not stretch to 2. */
    RpcTensor *z = rpc_tensor_new_zeros(F32, 1, SHAPE(0));
    RpcTensor *two = rpc_tensor_new_zeros(F32, 1, SHAPE(2));
    g_assert_null(rpc_tensor_add(z, two, &error));
    check_runtime_error(&error, "The size of tensor a (0) must match the size of tensor b (2) at "
                                "non-singleton dimension 0");
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(c);
    rpc_tensor_unref(d);
    rpc_tensor_unref(e);
    rpc_tensor_unref(f);
    rpc_tensor_unref(z);
    rpc_tensor_unref(two);
}

static void
test_add_empty(void)
{
    /* The catalogue: add(ones(i,i), ones(i,i)) for i = 0..99 == 2*ones. */
    for (gint64 i = 0; i < 100; i++) {
        GError *error = NULL;
        RpcTensor *a = rpc_tensor_ones2(i, i);
        RpcTensor *sum = rpc_tensor_add(a, a, &error);
        g_assert_no_error(error);
        RpcTensor *want = rpc_tensor_new_full(F32, 2, SHAPE(i, i), 2.0);
        g_assert_true(rpc_tensor_equal(sum, want));
        g_assert_cmpint(rpc_tensor_shape(sum)[0], ==, i);
        rpc_tensor_unref(a);
        rpc_tensor_unref(sum);
        rpc_tensor_unref(want);
    }
    /* A size-1 dim stretches to 0. */
    RpcTensor *e = rpc_tensor_new_zeros(F32, 2, SHAPE(0, 3));
    RpcTensor *r = rpc_tensor_new_ones(F64, 2, SHAPE(1, 3));
    check_and_free(rpc_tensor_add(e, r, NULL), F64, 2, SHAPE(0, 3), NULL);
    check_and_free(rpc_tensor_add(r, e, NULL), F64, 2, SHAPE(0, 3), NULL);
    rpc_tensor_unref(e);
    rpc_tensor_unref(r);
}

static void
test_sub_mul_div(void)
{
    RpcTensor *a = tensor(F64, 1, SHAPE(4), VALS(6, -3, 1, 0));
    RpcTensor *b = tensor(F64, 1, SHAPE(4), VALS(2, 4, 0, 0));
    check_and_free(rpc_tensor_sub(a, b, NULL), F64, 1, SHAPE(4), VALS(4, -7, 1, 0));
    check_and_free(rpc_tensor_mul(a, b, NULL), F64, 1, SHAPE(4), VALS(12, -12, 0, 0));
    RpcTensor *q = rpc_tensor_div(a, b, NULL);
    g_assert_cmpfloat(rpc_tensor_get(q, 0), ==, 3);
    g_assert_cmpfloat(rpc_tensor_get(q, 1), ==, -0.75);
    g_assert_true(isinf(rpc_tensor_get(q, 2)) && rpc_tensor_get(q, 2) > 0);
    g_assert_true(isnan(rpc_tensor_get(q, 3)));
    rpc_tensor_unref(q);
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);

    /* float32 division rounds once: 1/3 is the float nearest 1/3. */
    RpcTensor *one = rpc_tensor_new_scalar(F32, 1);
    RpcTensor *three = rpc_tensor_new_scalar(F32, 3);
    check_and_free(rpc_tensor_div(one, three, NULL), F32, 0, NULL, VALS(f32(1.0 / 3.0)));
    rpc_tensor_unref(one);
    rpc_tensor_unref(three);
}

static void
test_float32_rounding(void)
{
    RpcTensor *a = rpc_tensor_new_scalar(F32, 0.1);
    RpcTensor *b = rpc_tensor_new_scalar(F32, 0.2);
    RpcTensor *b64 = rpc_tensor_new_scalar(F64, 0.2);
    volatile float fa = 0.1f, fb = 0.2f;
    float fsum = fa + fb;

    RpcTensor *s = rpc_tensor_add(a, b, NULL);
    g_assert_cmpfloat(rpc_tensor_get(s, 0), ==, (double)fsum);
    g_assert_cmpfloat(rpc_tensor_get(s, 0), ==, 0.300000011920928955078125);
    g_assert_cmpfloat(rpc_tensor_get(s, 0), !=, 0.1 + 0.2);
    rpc_tensor_unref(s);

    /* Mixed: the float32 operand widens exactly, the result is float64. */
    check_and_free(rpc_tensor_add(a, b64, NULL), F64, 0, NULL, VALS((double)0.1f + 0.2));
    check_and_free(rpc_tensor_mul(b64, a, NULL), F64, 0, NULL, VALS(0.2 * (double)0.1f));

    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(b64);
}

static void
test_dtype_promotion(void)
{
    RpcTensor *a32 = rpc_tensor_ones2(1, 2);
    RpcTensor *a64 = rpc_tensor_new_ones(F64, 2, SHAPE(1, 2));
    RpcTensor *r;
    r = rpc_tensor_add(a32, a32, NULL);
    g_assert_cmpint(rpc_tensor_dtype(r), ==, F32);
    rpc_tensor_unref(r);
    r = rpc_tensor_add(a32, a64, NULL);
    g_assert_cmpint(rpc_tensor_dtype(r), ==, F64);
    rpc_tensor_unref(r);
    r = rpc_tensor_div(a64, a32, NULL);
    g_assert_cmpint(rpc_tensor_dtype(r), ==, F64);
    rpc_tensor_unref(r);
    r = rpc_tensor_matmul(a32, a64, NULL); /* (1,2) x (1,2) fails */
    g_assert_null(r);
    rpc_tensor_unref(a32);
    rpc_tensor_unref(a64);
}

static void
test_scalar_ops(void)
{
    RpcTensor *a = tensor(F32, 1, SHAPE(3), VALS(1, 2, 3));
    check_and_free(rpc_tensor_add_scalar(a, 2), F32, 1, SHAPE(3), VALS(3, 4, 5));
    check_and_free(rpc_tensor_mul_scalar(a, 0.5), F32, 1, SHAPE(3), VALS(0.5, 1, 1.5));
    check_and_free(rpc_tensor_mul_scalar(a, 0.1), F32, 1, SHAPE(3),
                   VALS(f32(0.1), f32(2 * (double)0.1f), f32(3 * (double)0.1f)));
    check_and_free(rpc_tensor_neg(a), F32, 1, SHAPE(3), VALS(-1, -2, -3));

    /* The scalar is rounded to float first, as PyTorch's float kernel
     * does: 1 + (2^-24 + 2^-50) is 1 + 2^-24 in float arithmetic, a tie
     * that rounds to even (1.0); rounding only the exact sum would give
     * 1 + 2^-23. */
    RpcTensor *one = rpc_tensor_new_scalar(F32, 1);
    check_and_free(rpc_tensor_add_scalar(one, ldexp(1, -24) + ldexp(1, -50)), F32, 0, NULL,
                   VALS(1.0));
    RpcTensor *one64 = rpc_tensor_new_scalar(F64, 1);
    check_and_free(rpc_tensor_add_scalar(one64, ldexp(1, -24) + ldexp(1, -50)), F64, 0, NULL,
                   VALS(1 + ldexp(1, -24) + ldexp(1, -50)));

    /* A Python number never promotes: float32 stays float32. */
    RpcTensor *e = rpc_tensor_ones2(0, 2);
    check_and_free(rpc_tensor_add_scalar(e, 1), F32, 2, SHAPE(0, 2), NULL);
    rpc_tensor_unref(e);
    rpc_tensor_unref(one);
    rpc_tensor_unref(one64);
    rpc_tensor_unref(a);
}

static void
test_exp(void)
{
    RpcTensor *a = tensor(F64, 1, SHAPE(3), VALS(0, 1, -INFINITY));
    check_and_free(rpc_tensor_exp(a), F64, 1, SHAPE(3), VALS(1, exp(1.0), 0));
    RpcTensor *b = tensor(F32, 1, SHAPE(2), VALS(0, 1));
    check_and_free(rpc_tensor_exp(b), F32, 1, SHAPE(2), VALS(1, f32(exp(1.0))));
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
}

/* ---- matmul ------------------------------------------------------------- */

static void
test_matmul_2d(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F32, 2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
    RpcTensor *b = tensor(F32, 2, SHAPE(3, 2), VALS(7, 8, 9, 10, 11, 12));
    check_and_free(rpc_tensor_matmul(a, b, &error), F32, 2, SHAPE(2, 2), VALS(58, 64, 139, 154));
    g_assert_no_error(error);
    check_and_free(rpc_tensor_matmul(b, a, NULL), F32, 2, SHAPE(3, 3),
                   VALS(39, 54, 69, 49, 68, 87, 59, 82, 105));
    /* Mixed dtypes give float64 (PyTorch refuses; see tensor.h). */
    RpcTensor *i64 = tensor(F64, 2, SHAPE(3, 3), VALS(1, 0, 0, 0, 1, 0, 0, 0, 1));
    check_and_free(rpc_tensor_matmul(a, i64, NULL), F64, 2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(i64);
}

static void
test_matmul_vectors(void)
{
    RpcTensor *v = tensor(F32, 1, SHAPE(3), VALS(1, 2, 3));
    RpcTensor *w = tensor(F64, 1, SHAPE(3), VALS(4, 5, 6));
    RpcTensor *m = tensor(F32, 2, SHAPE(2, 3), VALS(1, 0, 1, 0, 1, 0));
    RpcTensor *n = tensor(F32, 2, SHAPE(3, 2), VALS(1, 2, 3, 4, 5, 6));
    /* dot -> 0-d */
    check_and_free(rpc_tensor_matmul(v, w, NULL), F64, 0, NULL, VALS(32));
    /* (2,3) x (3) -> (2) */
    check_and_free(rpc_tensor_matmul(m, v, NULL), F32, 1, SHAPE(2), VALS(4, 2));
    /* (3) x (3,2) -> (2) */
    check_and_free(rpc_tensor_matmul(v, n, NULL), F32, 1, SHAPE(2), VALS(22, 28));
    rpc_tensor_unref(v);
    rpc_tensor_unref(w);
    rpc_tensor_unref(m);
    rpc_tensor_unref(n);
}

static void
test_matmul_empty(void)
{
    RpcTensor *a = rpc_tensor_ones2(2, 0);
    RpcTensor *b = rpc_tensor_ones2(0, 3);
    check_and_free(rpc_tensor_matmul(a, b, NULL), F32, 2, SHAPE(2, 3), VALS(0, 0, 0, 0, 0, 0));
    RpcTensor *c = rpc_tensor_ones2(3, 0);
    check_and_free(rpc_tensor_matmul(b, c, NULL), F32, 2, SHAPE(0, 0), NULL);
    rpc_tensor_unref(c);
    RpcTensor *e = rpc_tensor_ones2(0, 0);
    check_and_free(rpc_tensor_matmul(e, e, NULL), F32, 2, SHAPE(0, 0), NULL);
    RpcTensor *v = rpc_tensor_new_ones(F32, 1, SHAPE(0));
    check_and_free(rpc_tensor_matmul(v, v, NULL), F32, 0, NULL, VALS(0));
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(e);
    rpc_tensor_unref(v);
}

static void
test_matmul_errors(void)
{
    GError *error = NULL;
    RpcTensor *m23 = rpc_tensor_ones2(2, 3);
    RpcTensor *m32 = rpc_tensor_ones2(3, 2);
    RpcTensor *v3 = rpc_tensor_new_ones(F32, 1, SHAPE(3));
    RpcTensor *v4 = rpc_tensor_new_ones(F32, 1, SHAPE(4));
    RpcTensor *s = rpc_tensor_new_scalar(F32, 1);
    RpcTensor *t3 = rpc_tensor_new_ones(F32, 3, SHAPE(1, 2, 3));

    g_assert_null(rpc_tensor_matmul(m23, m23, &error));
    check_runtime_error(&error, "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)");
    g_assert_null(rpc_tensor_matmul(v3, v4, &error));
    check_runtime_error(&error, "inconsistent tensor size, expected tensor [3] and src [4] to "
                                "have the same number of elements, but got 3 and 4 elements "
                                "respectively");
    g_assert_null(rpc_tensor_matmul(m23, v4, &error));
    check_runtime_error(&error, "size mismatch, got input (2), mat (2x3), vec (4)");
    g_assert_null(rpc_tensor_matmul(v4, m32, &error));
    check_runtime_error(&error, "mat1 and mat2 shapes cannot be multiplied (1x4 and 3x2)");
    g_assert_null(rpc_tensor_matmul(s, m23, &error));
    check_runtime_error(&error,
                        "both arguments to matmul need to be at least 1D, but they are 0D and 2D");
    g_assert_null(rpc_tensor_matmul(v3, s, &error));
    check_runtime_error(&error,
                        "both arguments to matmul need to be at least 1D, but they are 1D and 0D");
    g_assert_null(rpc_tensor_matmul(t3, m32, &error));
    check_runtime_error(&error, "matmul: only 1-d and 2-d tensors are supported");
    g_assert_null(rpc_tensor_matmul(m23, t3, NULL));

    rpc_tensor_unref(m23);
    rpc_tensor_unref(m32);
    rpc_tensor_unref(v3);
    rpc_tensor_unref(v4);
    rpc_tensor_unref(s);
    rpc_tensor_unref(t3);
}

/* ---- reductions and shape ops ------------------------------------------- */

static void
test_sum(void)
{
    RpcTensor *a = tensor(F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4.5));
    check_and_free(rpc_tensor_sum(a), F32, 0, NULL, VALS(10.5));
    RpcTensor *b = tensor(F64, 1, SHAPE(3), VALS(0.1, 0.2, 0.3));
    check_and_free(rpc_tensor_sum(b), F64, 0, NULL, VALS(0.1 + 0.2 + 0.3));
    /* float32: accumulated in double, rounded once. */
    RpcTensor *c = tensor(F32, 1, SHAPE(3), VALS(0.1, 0.2, 0.3));
    check_and_free(rpc_tensor_sum(c), F32, 0, NULL,
                   VALS(f32((double)0.1f + (double)0.2f + (double)0.3f)));
    RpcTensor *e = rpc_tensor_ones2(0, 0);
    check_and_free(rpc_tensor_sum(e), F32, 0, NULL, VALS(0));
    RpcTensor *s = rpc_tensor_new_scalar(F64, -2);
    check_and_free(rpc_tensor_sum(s), F64, 0, NULL, VALS(-2));
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(c);
    rpc_tensor_unref(e);
    rpc_tensor_unref(s);
}

static void
test_stack(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F32, 1, SHAPE(2), VALS(1, 2));
    RpcTensor *b = tensor(F32, 1, SHAPE(2), VALS(3, 4));
    RpcTensor *c = tensor(F64, 1, SHAPE(2), VALS(5, 6));
    RpcTensor *ab[] = {a, b};
    RpcTensor *abc[] = {a, b, c};
    check_and_free(rpc_tensor_stack(ab, 2, &error), F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4));
    g_assert_no_error(error);
    check_and_free(rpc_tensor_stack(abc, 3, NULL), F64, 2, SHAPE(3, 2), VALS(1, 2, 3, 4, 5, 6));
    check_and_free(rpc_tensor_stack(ab, 1, NULL), F32, 2, SHAPE(1, 2), VALS(1, 2));

    /* 0-d inputs stack into a vector; empty inputs into (n, 0). */
    RpcTensor *s1 = rpc_tensor_new_scalar(F32, 7), *s2 = rpc_tensor_new_scalar(F32, 8);
    RpcTensor *ss[] = {s1, s2};
    check_and_free(rpc_tensor_stack(ss, 2, NULL), F32, 1, SHAPE(2), VALS(7, 8));
    RpcTensor *e = rpc_tensor_new_zeros(F32, 1, SHAPE(0));
    RpcTensor *ee[] = {e, e, e};
    check_and_free(rpc_tensor_stack(ee, 3, NULL), F32, 2, SHAPE(3, 0), NULL);

    rpc_tensor_unref(s1);
    rpc_tensor_unref(s2);
    rpc_tensor_unref(e);
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(c);
}

static void
test_stack_errors(void)
{
    GError *error = NULL;
    RpcTensor *a = rpc_tensor_new_zeros(F32, 1, SHAPE(2));
    RpcTensor *b = rpc_tensor_new_zeros(F32, 1, SHAPE(3));
    RpcTensor *m = rpc_tensor_ones2(1, 2);
    RpcTensor *s = rpc_tensor_new_scalar(F32, 1);

    g_assert_null(rpc_tensor_stack(NULL, 0, &error));
    check_runtime_error(&error, "stack expects a non-empty TensorList");
    RpcTensor *ab[] = {a, b};
    g_assert_null(rpc_tensor_stack(ab, 2, &error));
    check_runtime_error(&error, "stack expects each tensor to be equal size, but got [2] at entry "
                                "0 and [3] at entry 1");
    RpcTensor *aam[] = {a, a, m};
    g_assert_null(rpc_tensor_stack(aam, 3, &error));
    check_runtime_error(&error, "stack expects each tensor to be equal size, but got [2] at entry "
                                "0 and [1, 2] at entry 2");
    RpcTensor *sa[] = {s, a};
    g_assert_null(rpc_tensor_stack(sa, 2, &error));
    check_runtime_error(&error, "stack expects each tensor to be equal size, but got [] at entry "
                                "0 and [2] at entry 1");

    /* The new dim must fit too. */
    RpcTensor *d8 = rpc_tensor_new_zeros(F32, 8, SHAPE(1, 1, 1, 1, 1, 1, 1, 1));
    RpcTensor *dd[] = {d8};
    g_assert_null(rpc_tensor_stack(dd, 1, &error));
    check_runtime_error(&error, "tensors with 9 dimensions are not supported (at most 8)");

    rpc_tensor_unref(d8);
    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(m);
    rpc_tensor_unref(s);
}

static void
test_view(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4));
    check_and_free(rpc_tensor_view(a, 2, SHAPE(1, 4), &error), F32, 2, SHAPE(1, 4),
                   VALS(1, 2, 3, 4));
    g_assert_no_error(error);
    check_and_free(rpc_tensor_view(a, 1, SHAPE(-1), NULL), F32, 1, SHAPE(4), VALS(1, 2, 3, 4));
    check_and_free(rpc_tensor_view(a, 3, SHAPE(2, -1, 1), NULL), F32, 3, SHAPE(2, 2, 1),
                   VALS(1, 2, 3, 4));
    check_and_free(rpc_tensor_view(a, 2, SHAPE(-1, 4), NULL), F32, 2, SHAPE(1, 4),
                   VALS(1, 2, 3, 4));

    /* The result is a fresh tensor (immutable sharing makes that
     * indistinguishable from sharing storage). */
    RpcTensor *v = rpc_tensor_view(a, 1, SHAPE(4), NULL);
    g_assert_true(rpc_tensor_data(v) != rpc_tensor_data(a));
    rpc_tensor_unref(v);

    /* 0-d <-> one element. */
    RpcTensor *s = rpc_tensor_new_scalar(F64, 9);
    check_and_free(rpc_tensor_view(s, 1, SHAPE(-1), NULL), F64, 1, SHAPE(1), VALS(9));
    RpcTensor *one = rpc_tensor_new_full(F64, 2, SHAPE(1, 1), 3);
    check_and_free(rpc_tensor_view(one, 0, NULL, NULL), F64, 0, NULL, VALS(3));

    /* Empty: -1 resolves against a positive product. */
    RpcTensor *e = rpc_tensor_new_zeros(F32, 1, SHAPE(0));
    check_and_free(rpc_tensor_view(e, 2, SHAPE(-1, 3), NULL), F32, 2, SHAPE(0, 3), NULL);
    check_and_free(rpc_tensor_view(e, 2, SHAPE(5, 0), NULL), F32, 2, SHAPE(5, 0), NULL);

    rpc_tensor_unref(s);
    rpc_tensor_unref(one);
    rpc_tensor_unref(e);
    rpc_tensor_unref(a);
}

static void
test_view_errors(void)
{
    GError *error = NULL;
    RpcTensor *a = rpc_tensor_ones2(2, 2);
    g_assert_null(rpc_tensor_view(a, 2, SHAPE(3, 3), &error));
    check_runtime_error(&error, "shape '[3, 3]' is invalid for input of size 4");
    g_assert_null(rpc_tensor_view(a, 2, SHAPE(-1, 3), &error));
    check_runtime_error(&error, "shape '[-1, 3]' is invalid for input of size 4");
    g_assert_null(rpc_tensor_view(a, 2, SHAPE(-1, 0), &error));
    check_runtime_error(&error, "shape '[-1, 0]' is invalid for input of size 4");
    g_assert_null(rpc_tensor_view(a, 0, NULL, &error));
    check_runtime_error(&error, "shape '[]' is invalid for input of size 4");
    g_assert_null(rpc_tensor_view(a, 2, SHAPE(-1, -1), &error));
    check_runtime_error(&error, "only one dimension can be inferred");
    g_assert_null(rpc_tensor_view(a, 2, SHAPE(-2, 2), &error));
    check_runtime_error(&error, "invalid shape dimension -2");
    /* A product that would overflow is just invalid. */
    g_assert_null(rpc_tensor_view(a, 3, SHAPE(G_MAXINT64 / 2, 4, 1), &error));
    check_runtime_error(&error, "shape '[4611686018427387903, 4, 1]' is invalid for input of "
                                "size 4");
    g_assert_null(rpc_tensor_view(a, 9, SHAPE(1, 1, 1, 1, 1, 1, 1, 2, 2), &error));
    check_runtime_error(&error, "view: tensors with 9 dimensions are not supported (at most 8)");
    g_assert_null(rpc_tensor_view(a, 1, SHAPE(5), NULL));

    RpcTensor *e = rpc_tensor_ones2(0, 4);
    g_assert_null(rpc_tensor_view(e, 2, SHAPE(-1, 0), &error));
    check_runtime_error(&error, "cannot reshape tensor of 0 elements into shape [-1, 0] because "
                                "the unspecified dimension size -1 can be any value and is "
                                "ambiguous");
    rpc_tensor_unref(e);
    rpc_tensor_unref(a);
}

static void
test_cast(void)
{
    RpcTensor *a = tensor(F64, 1, SHAPE(2), VALS(0.1, 2));
    RpcTensor *b = rpc_tensor_cast(a, F32);
    g_assert_cmpfloat(rpc_tensor_get(b, 0), ==, f32(0.1));
    RpcTensor *c = rpc_tensor_cast(b, F64);
    check_and_free(c, F64, 1, SHAPE(2), VALS(f32(0.1), 2));
    check_and_free(rpc_tensor_cast(a, F64), F64, 1, SHAPE(2), VALS(0.1, 2));
    check_and_free(b, F32, 1, SHAPE(2), VALS(f32(0.1), 2));
    rpc_tensor_unref(a);
    /* Out of float range: infinity, as in PyTorch. */
    RpcTensor *big = tensor(F64, 1, SHAPE(2), VALS(1e300, -1e300));
    check_and_free(rpc_tensor_cast(big, F32), F32, 1, SHAPE(2), VALS(INFINITY, -INFINITY));
    rpc_tensor_unref(big);
}

static void
test_transpose(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F32, 2, SHAPE(2, 3), VALS(1, 2, 3, 4, 5, 6));
    check_and_free(rpc_tensor_t(a, &error), F32, 2, SHAPE(3, 2), VALS(1, 4, 2, 5, 3, 6));
    g_assert_no_error(error);
    RpcTensor *v = tensor(F64, 1, SHAPE(2), VALS(1, 2));
    check_and_free(rpc_tensor_t(v, NULL), F64, 1, SHAPE(2), VALS(1, 2));
    RpcTensor *t3 = rpc_tensor_new_zeros(F32, 3, SHAPE(1, 1, 1));
    g_assert_null(rpc_tensor_t(t3, &error));
    check_runtime_error(&error, "t() expects a tensor with <= 2 dimensions, but self is 3D");
    rpc_tensor_unref(a);
    rpc_tensor_unref(v);
    rpc_tensor_unref(t3);
}

static void
test_sum_to_size(void)
{
    GError *error = NULL;
    RpcTensor *a = tensor(F64, 2, SHAPE(2, 3), VALS(1, 2, 3, 10, 20, 30));
    check_and_free(rpc_tensor_sum_to_size(a, 1, SHAPE(3), &error), F64, 1, SHAPE(3),
                   VALS(11, 22, 33));
    g_assert_no_error(error);
    check_and_free(rpc_tensor_sum_to_size(a, 2, SHAPE(2, 1), NULL), F64, 2, SHAPE(2, 1),
                   VALS(6, 60));
    check_and_free(rpc_tensor_sum_to_size(a, 2, SHAPE(1, 3), NULL), F64, 2, SHAPE(1, 3),
                   VALS(11, 22, 33));
    check_and_free(rpc_tensor_sum_to_size(a, 2, SHAPE(1, 1), NULL), F64, 2, SHAPE(1, 1), VALS(66));
    check_and_free(rpc_tensor_sum_to_size(a, 0, NULL, NULL), F64, 0, NULL, VALS(66));
    check_and_free(rpc_tensor_sum_to_size(a, 2, SHAPE(2, 3), NULL), F64, 2, SHAPE(2, 3),
                   VALS(1, 2, 3, 10, 20, 30));

    /* A broadcast gradient round-trips: (2,1)+(1,3) -> sum back to (2,1). */
    RpcTensor *g = rpc_tensor_new_ones(F32, 2, SHAPE(2, 3));
    check_and_free(rpc_tensor_sum_to_size(g, 2, SHAPE(2, 1), NULL), F32, 2, SHAPE(2, 1),
                   VALS(3, 3));

    g_assert_null(rpc_tensor_sum_to_size(a, 1, SHAPE(2), &error));
    check_runtime_error(&error, "size {[2]} is not expandable to size {[2, 3]}.");
    g_assert_null(rpc_tensor_sum_to_size(a, 3, SHAPE(1, 2, 3), &error));
    check_runtime_error(&error, "size {[1, 2, 3]} is not expandable to size {[2, 3]}.");

    RpcTensor *e = rpc_tensor_ones2(0, 3);
    check_and_free(rpc_tensor_sum_to_size(e, 1, SHAPE(3), NULL), F32, 1, SHAPE(3), VALS(0, 0, 0));
    check_and_free(rpc_tensor_sum_to_size(e, 2, SHAPE(0, 1), NULL), F32, 2, SHAPE(0, 1), NULL);
    rpc_tensor_unref(e);
    rpc_tensor_unref(g);
    rpc_tensor_unref(a);
}

/* ---- comparisons -------------------------------------------------------- */

static void
test_compare(void)
{
    RpcTensor *a = tensor(F32, 2, SHAPE(1, 2), VALS(1, 2));
    RpcTensor *a64 = tensor(F64, 2, SHAPE(1, 2), VALS(1, 2));
    RpcTensor *flat = tensor(F32, 1, SHAPE(2), VALS(1, 2));
    RpcTensor *b = tensor(F32, 2, SHAPE(1, 2), VALS(1, 2.5));
    RpcTensor *nan = tensor(F32, 1, SHAPE(1), VALS(NAN));

    g_assert_true(rpc_tensor_same_shape(a, b));
    g_assert_false(rpc_tensor_same_shape(a, flat));
    g_assert_true(rpc_tensor_equal(a, a64)); /* dtype may differ */
    g_assert_false(rpc_tensor_equal(a, flat));
    g_assert_false(rpc_tensor_equal(a, b));
    g_assert_false(rpc_tensor_equal(nan, nan));

    RpcTensor *s0 = rpc_tensor_new_scalar(F32, 1);
    RpcTensor *s1 = rpc_tensor_new_full(F32, 1, SHAPE(1), 1);
    g_assert_false(rpc_tensor_same_shape(s0, s1));
    g_assert_true(rpc_tensor_same_shape(s0, s0));
    g_autofree char *sh = rpc_tensor_shape_string(a);
    g_autofree char *sh0 = rpc_tensor_shape_string(s0);
    g_assert_cmpstr(sh, ==, "[1, 2]");
    g_assert_cmpstr(sh0, ==, "[]");

    rpc_tensor_unref(s0);
    rpc_tensor_unref(s1);
    rpc_tensor_unref(a);
    rpc_tensor_unref(a64);
    rpc_tensor_unref(flat);
    rpc_tensor_unref(b);
    rpc_tensor_unref(nan);
}

static void
test_allclose(void)
{
    RpcTensor *a = tensor(F64, 1, SHAPE(2), VALS(1, 100));
    RpcTensor *b = tensor(F64, 1, SHAPE(2), VALS(1.5, 100));
    RpcTensor *c = tensor(F64, 1, SHAPE(2), VALS(1, 110));
    /* |1 - 1.5| = 0.5 <= atol */
    g_assert_true(rpc_tensor_allclose(a, b, 0, 0.5));
    g_assert_false(rpc_tensor_allclose(a, b, 0, 0.4999));
    /* rtol is relative to b (the second argument): 10 <= 0.1*110 but 10 > 0.09*110 */
    g_assert_true(rpc_tensor_allclose(a, c, 0.1, 0));
    g_assert_false(rpc_tensor_allclose(a, c, 0.09, 0));
    /* asymmetric: 10 <= r*100 needs r >= 0.1 */
    g_assert_true(rpc_tensor_allclose(c, a, 0.1, 0));
    g_assert_false(rpc_tensor_allclose(c, a, 0.0999, 0));
    /* PyTorch's defaults */
    RpcTensor *d = tensor(F32, 1, SHAPE(2), VALS(1 + 1e-6, 100 + 1e-4));
    g_assert_true(rpc_tensor_allclose(a, d, 1e-5, 1e-8));
    g_assert_false(rpc_tensor_allclose(a, c, 1e-5, 1e-8));

    RpcTensor *flat = tensor(F64, 2, SHAPE(1, 2), VALS(1, 100));
    g_assert_false(rpc_tensor_allclose(a, flat, 1, 1));
    RpcTensor *inf = tensor(F64, 1, SHAPE(2), VALS(INFINITY, -INFINITY));
    RpcTensor *ninf = tensor(F64, 1, SHAPE(2), VALS(-INFINITY, -INFINITY));
    RpcTensor *nan = tensor(F64, 1, SHAPE(2), VALS(NAN, 1));
    g_assert_true(rpc_tensor_allclose(inf, inf, 0, 0));
    g_assert_false(rpc_tensor_allclose(inf, ninf, 1e10, 1e10));
    g_assert_false(rpc_tensor_allclose(a, inf, 1e10, 1e10));
    g_assert_false(rpc_tensor_allclose(nan, nan, 1e10, 1e10));

    rpc_tensor_unref(a);
    rpc_tensor_unref(b);
    rpc_tensor_unref(c);
    rpc_tensor_unref(d);
    rpc_tensor_unref(flat);
    rpc_tensor_unref(inf);
    rpc_tensor_unref(ninf);
    rpc_tensor_unref(nan);
}

/* ---- repr --------------------------------------------------------------- */

static void
test_repr_basic(void)
{
    RpcTensor *t;

    t = rpc_tensor_new_full(F32, 2, SHAPE(2, 2), 2);
    check_repr(t, "tensor([[2., 2.],\n        [2., 2.]])");
    rpc_tensor_unref(t);

    t = rpc_tensor_new_scalar(F32, 3);
    check_repr(t, "tensor(3.)");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_scalar(F32, 0.5);
    check_repr(t, "tensor(0.5000)");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_scalar(F32, 0.1);
    check_repr(t, "tensor(0.1000)");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_scalar(F32, 0);
    check_repr(t, "tensor(0.)");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_scalar(F64, 3);
    check_repr(t, "tensor(3., dtype=torch.float64)");
    rpc_tensor_unref(t);

    t = tensor(F32, 1, SHAPE(2), VALS(1.5, 2));
    check_repr(t, "tensor([1.5000, 2.0000])");
    rpc_tensor_unref(t);
    t = tensor(F32, 1, SHAPE(3), VALS(0, 1, -2));
    check_repr(t, "tensor([ 0.,  1., -2.])");
    rpc_tensor_unref(t);
    t = tensor(F32, 1, SHAPE(2), VALS(-0.5, 0.25));
    check_repr(t, "tensor([-0.5000,  0.2500])");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_zeros(F32, 1, SHAPE(3));
    check_repr(t, "tensor([0., 0., 0.])");
    rpc_tensor_unref(t);
    t = tensor(F64, 2, SHAPE(1, 2), VALS(1, 2));
    check_repr(t, "tensor([[1., 2.]], dtype=torch.float64)");
    rpc_tensor_unref(t);
    t = tensor(F32, 1, SHAPE(3), VALS(NAN, 1, INFINITY));
    check_repr(t, "tensor([nan, 1., inf])");
    rpc_tensor_unref(t);
    t = tensor(F32, 1, SHAPE(2), VALS(-NAN, -INFINITY));
    check_repr(t, "tensor([nan, -inf])");
    rpc_tensor_unref(t);
    t = tensor(F32, 1, SHAPE(2), VALS(0.5, INFINITY));
    check_repr(t, "tensor([0.5000,    inf])");
    rpc_tensor_unref(t);
}

static void
test_repr_sci(void)
{
    RpcTensor *t;
    /* min < 1e-4 */
    t = tensor(F32, 1, SHAPE(2), VALS(1e-5, 1));
    check_repr(t, "tensor([1.0000e-05, 1.0000e+00])");
    rpc_tensor_unref(t);
    /* integral but > 1e8 */
    t = tensor(F32, 1, SHAPE(1), VALS(1e9));
    check_repr(t, "tensor([1.0000e+09])");
    rpc_tensor_unref(t);
    /* ratio > 1000, with a zero and an infinity padded to the width */
    t = tensor(F64, 1, SHAPE(4), VALS(1, 2000, 0, -INFINITY));
    check_repr(t, "tensor([1.0000e+00, 2.0000e+03, 0.0000e+00,       -inf], dtype=torch.float64)");
    rpc_tensor_unref(t);
}

static void
test_repr_layout(void)
{
    RpcTensor *t;
    t = rpc_tensor_new_ones(F32, 3, SHAPE(2, 1, 2));
    check_repr(t, "tensor([[[1., 1.]],\n\n        [[1., 1.]]])");
    rpc_tensor_unref(t);

    /* Lines hold (80 - indent) / (width + 2) elements. */
    double v[30];
    for (int i = 0; i < 30; i++)
        v[i] = i;
    t = tensor(F32, 1, SHAPE(30), v);
    check_repr(t, "tensor([ 0.,  1.,  2.,  3.,  4.,  5.,  6.,  7.,  8.,  9., 10., 11., 12., 13.,\n"
                  "        14., 15., 16., 17., 18., 19., 20., 21., 22., 23., 24., 25., 26., 27.,\n"
                  "        28., 29.])");
    rpc_tensor_unref(t);

    /* A suffix that does not fit on the last line goes on its own. */
    t = rpc_tensor_new_full(F64, 1, SHAPE(14), 10);
    check_repr(t, "tensor([10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10.],\n"
                  "       dtype=torch.float64)");
    rpc_tensor_unref(t);

    t = rpc_tensor_ones2(2, 2);
    const char *const suffixes[] = {"requires_grad=True", NULL};
    g_autofree char *r = rpc_tensor_repr_with_suffixes(t, suffixes);
    g_assert_cmpstr(r, ==, "tensor([[1., 1.],\n        [1., 1.]], requires_grad=True)");
    rpc_tensor_unref(t);

    /* After a wrapped suffix the next one fits on the new line. */
    t = rpc_tensor_new_full(F64, 1, SHAPE(14), 10);
    g_autofree char *r2 = rpc_tensor_repr_with_suffixes(t, suffixes);
    g_assert_cmpstr(
        r2, ==,
        "tensor([10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10., 10.],\n"
        "       dtype=torch.float64, requires_grad=True)");
    rpc_tensor_unref(t);
}

static void
test_repr_empty(void)
{
    RpcTensor *t;
    t = rpc_tensor_ones2(0, 0);
    check_repr(t, "tensor([], size=(0, 0))");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_zeros(F32, 1, SHAPE(0));
    check_repr(t, "tensor([])");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_zeros(F64, 1, SHAPE(0));
    check_repr(t, "tensor([], dtype=torch.float64)");
    rpc_tensor_unref(t);
    t = rpc_tensor_new_zeros(F64, 3, SHAPE(2, 0, 3));
    check_repr(t, "tensor([], size=(2, 0, 3), dtype=torch.float64)");
    rpc_tensor_unref(t);
}

static void
test_repr_summarized(void)
{
    RpcTensor *t = rpc_tensor_ones2(99, 99);
    const char *row = "[1., 1., 1.,  ..., 1., 1., 1.]";
    g_autofree char *want = g_strdup_printf("tensor([%s,\n        %s,\n        %s,\n        ...,\n"
                                            "        %s,\n        %s,\n        %s])",
                                            row, row, row, row, row, row);
    check_repr(t, want);
    rpc_tensor_unref(t);

    /* The formatter sees only the shown elements: 0..2 and 1997..1999,
     * whose ratio > 1000 selects scientific notation. */
    double *v = g_new(double, 2000);
    for (int i = 0; i < 2000; i++)
        v[i] = i;
    t = tensor(F32, 1, SHAPE(2000), v);
    check_repr(t, "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n"
                  "        1.9990e+03])");
    rpc_tensor_unref(t);
    /* The middle is not looked at: 1e9 hidden there keeps fixed notation. */
    for (int i = 0; i < 2000; i++)
        v[i] = 1 + i % 2;
    v[1000] = 1e9;
    t = tensor(F32, 1, SHAPE(2000), v);
    check_repr(t, "tensor([1., 2., 1.,  ..., 2., 1., 2.])");
    rpc_tensor_unref(t);
    g_free(v);

    /* 3-d summarized: only the leading dim is long. */
    t = rpc_tensor_new_zeros(F32, 3, SHAPE(1001, 1, 1));
    check_repr(t, "tensor([[[0.]],\n\n        [[0.]],\n\n        [[0.]],\n\n        ...,\n\n"
                  "        [[0.]],\n\n        [[0.]],\n\n        [[0.]]])");
    rpc_tensor_unref(t);
}

/* ---- checked construction and caller bugs ------------------------------- */

static void
test_new_checked(void)
{
    GError *error = NULL;
    RpcTensor *t = rpc_tensor_new_checked(F64, 2, SHAPE(2, 3), &error);
    g_assert_no_error(error);
    check_and_free(t, F64, 2, SHAPE(2, 3), VALS(0, 0, 0, 0, 0, 0));
    check_and_free(rpc_tensor_new_checked(F32, 0, NULL, NULL), F32, 0, NULL, VALS(0));
    /* Huge dims are fine when another is 0: nothing to store. */
    check_and_free(rpc_tensor_new_checked(F32, 2, SHAPE((gint64)1 << 62, 0), NULL), F32, 2,
                   SHAPE((gint64)1 << 62, 0), NULL);

    g_assert_null(rpc_tensor_new_checked(F32, 2, SHAPE(2, -1), &error));
    check_runtime_error(&error, "Trying to create tensor with negative dimension -1: [2, -1]");
    g_assert_null(rpc_tensor_new_checked(F32, 2, SHAPE(0, G_MININT64), &error));
    check_runtime_error(&error, "Trying to create tensor with negative dimension "
                                "-9223372036854775808: [0, -9223372036854775808]");
    g_assert_null(rpc_tensor_new_checked(F32, 9, SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1), &error));
    check_runtime_error(&error, "tensors with 9 dimensions are not supported (at most 8)");
    g_assert_null(rpc_tensor_new_checked((RpcDType)7, 1, SHAPE(1), &error));
    check_runtime_error(&error, "unknown tensor dtype 7");
    /* Would overflow gint64. */
    g_assert_null(rpc_tensor_new_checked(F32, 3, SHAPE(1 << 30, 1 << 30, 1 << 30), &error));
    check_runtime_error(&error, "tensor of shape [1073741824, 1073741824, 1073741824] is too "
                                "large (at most 1073741824 bytes per tensor)");
    /* Just over 1 GiB, for each element size. */
    g_assert_null(rpc_tensor_new_checked(F32, 1, SHAPE((1 << 28) + 1), &error));
    check_runtime_error(&error, "tensor of shape [268435457] is too large (at most 1073741824 "
                                "bytes per tensor)");
    g_assert_null(rpc_tensor_new_checked(F64, 2, SHAPE(1 << 14, (1 << 13) + 1), &error));
    check_runtime_error(&error, "tensor of shape [16384, 8193] is too large (at most 1073741824 "
                                "bytes per tensor)");
    g_assert_null(rpc_tensor_new_checked(F64, 1, SHAPE(G_MAXINT64), NULL));
}

static void
test_result_too_large(void)
{
    GError *error = NULL;
    /* Both inputs are 80 KB; the broadcast result would be 1.6 GB. */
    RpcTensor *col = rpc_tensor_new_zeros(F32, 2, SHAPE(20000, 1));
    RpcTensor *row = rpc_tensor_new_zeros(F32, 2, SHAPE(1, 20000));
    g_assert_null(rpc_tensor_add(col, row, &error));
    check_runtime_error(&error, "tensor of shape [20000, 20000] is too large (at most 1073741824 "
                                "bytes per tensor)");
    g_assert_null(rpc_tensor_matmul(col, row, &error));
    check_runtime_error(&error, "tensor of shape [20000, 20000] is too large (at most 1073741824 "
                                "bytes per tensor)");
    RpcTensor *many[20000];
    for (int i = 0; i < 20000; i++)
        many[i] = col;
    g_assert_null(rpc_tensor_stack(many, 20000, &error));
    check_runtime_error(&error, "tensor of shape [20000, 20000, 1] is too large (at most "
                                "1073741824 bytes per tensor)");
    rpc_tensor_unref(col);
    rpc_tensor_unref(row);
}

static void
expect_critical(const char *pattern)
{
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, pattern);
}

static void
test_caller_bugs(void)
{
    RpcTensor *a = rpc_tensor_ones2(1, 1);

    expect_critical("*negative dimension -2*");
    g_assert_null(rpc_tensor_new_zeros(F32, 1, SHAPE(-2)));
    expect_critical("*rpc_tensor_new_full*9 dimensions*");
    g_assert_null(rpc_tensor_new_ones(F32, 9, SHAPE(1, 1, 1, 1, 1, 1, 1, 1, 1)));
    expect_critical("*shape is NULL but ndim is 2*");
    g_assert_null(rpc_tensor_new_full(F64, 2, NULL, 1));
    expect_critical("*unknown tensor dtype 3*");
    g_assert_null(rpc_tensor_new_scalar((RpcDType)3, 1));
    expect_critical("*rpc_tensor_new_from_doubles*negative dimension -1*");
    g_assert_null(rpc_tensor_new_from_doubles(F32, 1, SHAPE(-1), VALS(1)));
    expect_critical("*values is NULL for 2 elements*");
    g_assert_null(rpc_tensor_new_from_doubles(F32, 1, SHAPE(2), NULL));
    expect_critical("*a != NULL*");
    g_assert_null(rpc_tensor_add(NULL, a, NULL));
    expect_critical("*b != NULL*");
    g_assert_null(rpc_tensor_matmul(a, NULL, NULL));
    expect_critical("*t != NULL*");
    rpc_tensor_unref(NULL);
    expect_critical("*t != NULL*");
    g_assert_null(rpc_tensor_repr(NULL));
    expect_critical("*i >= 0*");
    g_assert_true(isnan(rpc_tensor_get(a, 1)));
    expect_critical("*out != NULL*");
    g_assert_false(rpc_tensor_item(a, NULL, NULL));
    expect_critical("*ts[i] != NULL*");
    RpcTensor *with_null[] = {a, NULL};
    g_assert_null(rpc_tensor_stack(with_null, 2, NULL));
    expect_critical("*dtype_valid*");
    g_assert_null(rpc_tensor_cast(a, (RpcDType)5));
    expect_critical("*rtol >= 0*");
    g_assert_false(rpc_tensor_allclose(a, a, -1, 0));
    g_test_assert_expected_messages();

    /* An error already set is a caller bug too. */
    GError *error = g_error_new_literal(RPC_ERROR, RPC_ERROR_VALUE, "earlier");
    expect_critical("*error == NULL || *error == NULL*");
    g_assert_null(rpc_tensor_add(a, a, &error));
    g_test_assert_expected_messages();
    g_assert_cmpstr(error->message, ==, "earlier");
    g_error_free(error);
    rpc_tensor_unref(a);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/tensor/construct", test_construct);
    g_test_add_func("/tensor/full-like-keeps-dtype", test_full_like_keeps_dtype);
    g_test_add_func("/tensor/refcount", test_refcount);
    g_test_add_func("/tensor/autoptr", test_autoptr);
    g_test_add_func("/tensor/item", test_item);
    g_test_add_func("/tensor/add-same-shape", test_add_same_shape);
    g_test_add_func("/tensor/add-broadcast", test_add_broadcast);
    g_test_add_func("/tensor/add-broadcast-mismatch", test_add_broadcast_mismatch);
    g_test_add_func("/tensor/add-empty", test_add_empty);
    g_test_add_func("/tensor/sub-mul-div", test_sub_mul_div);
    g_test_add_func("/tensor/float32-rounding", test_float32_rounding);
    g_test_add_func("/tensor/dtype-promotion", test_dtype_promotion);
    g_test_add_func("/tensor/scalar-ops", test_scalar_ops);
    g_test_add_func("/tensor/exp", test_exp);
    g_test_add_func("/tensor/matmul-2d", test_matmul_2d);
    g_test_add_func("/tensor/matmul-vectors", test_matmul_vectors);
    g_test_add_func("/tensor/matmul-empty", test_matmul_empty);
    g_test_add_func("/tensor/matmul-errors", test_matmul_errors);
    g_test_add_func("/tensor/sum", test_sum);
    g_test_add_func("/tensor/stack", test_stack);
    g_test_add_func("/tensor/stack-errors", test_stack_errors);
    g_test_add_func("/tensor/view", test_view);
    g_test_add_func("/tensor/view-errors", test_view_errors);
    g_test_add_func("/tensor/cast", test_cast);
    g_test_add_func("/tensor/transpose", test_transpose);
    g_test_add_func("/tensor/sum-to-size", test_sum_to_size);
    g_test_add_func("/tensor/compare", test_compare);
    g_test_add_func("/tensor/allclose", test_allclose);
    g_test_add_func("/tensor/repr-basic", test_repr_basic);
    g_test_add_func("/tensor/repr-sci", test_repr_sci);
    g_test_add_func("/tensor/repr-layout", test_repr_layout);
    g_test_add_func("/tensor/repr-empty", test_repr_empty);
    g_test_add_func("/tensor/repr-summarized", test_repr_summarized);
    g_test_add_func("/tensor/new-checked", test_new_checked);
    g_test_add_func("/tensor/result-too-large", test_result_too_large);
    g_test_add_func("/tensor/caller-bugs", test_caller_bugs);
    return g_test_run();
}
