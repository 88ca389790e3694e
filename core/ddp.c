/* ddp.c — GradBucket, communication hooks, PowerSGD and the reducer (see
 * ddp.h; spec §9).
 *
 * Hooks never block: a hook that needs several collectives in a row
 * (PowerSGD: uncompressed part, then P, then Q) chains them with
 * done-callbacks, each stage starting the next collective, and completes
 * its own result future at the end.  Any failure fails that future.
 *
 * Arithmetic on buffers is done in double and rounded once per operation
 * to the buffer's format (rpc_precision_round): float64 exactly, float32
 * exactly as IEEE float32, fp16/bf16 as PyTorch's half ops (computed in
 * float and rounded; the same value, since one rounding from double is
 * innocuous for these formats).  Sums inside matrix products accumulate in
 * double and are rounded once per element (PyTorch's float32 matmul
 * accumulates in float, in its own order).
 */
#include "core/ddp.h"

#include <math.h>
#include <string.h>

#include "core/tensor-private.h"

/* --- GradBucket ------------------------------------------------------------------- */

struct RpcGradBucket {
    gint ref;
    gsize index, count;
    RpcTensor *buffer;
    RpcPrecision prec;
    guint n;
    RpcTensor **params;
    gint64 *offsets, *lengths;
};

RpcGradBucket *
rpc_grad_bucket_new(gsize index, gsize bucket_count, RpcTensor *buffer, RpcTensor *const *params,
                    guint n_params)
{
    g_return_val_if_fail(buffer != NULL && params != NULL && n_params > 0, NULL);
    g_return_val_if_fail(index < bucket_count, NULL);
    gint64 total = 0;
    for (guint i = 0; i < n_params; i++)
        total += rpc_tensor_numel(params[i]);
    g_return_val_if_fail(total == rpc_tensor_numel(buffer), NULL);
    RpcGradBucket *b = g_new0(RpcGradBucket, 1);
    b->ref = 1;
    b->index = index;
    b->count = bucket_count;
    b->n = n_params;
    b->params = g_new(RpcTensor *, n_params);
    b->offsets = g_new(gint64, n_params);
    b->lengths = g_new(gint64, n_params);
    gint64 off = 0;
    for (guint i = 0; i < n_params; i++) {
        b->params[i] = rpc_tensor_ref(params[i]);
        b->offsets[i] = off;
        b->lengths[i] = rpc_tensor_numel(params[i]);
        off += b->lengths[i];
    }
    b->buffer = buffer;
    return b;
}

RpcGradBucket *
rpc_grad_bucket_ref(RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, NULL);
    b->ref++;
    return b;
}

void
rpc_grad_bucket_unref(RpcGradBucket *b)
{
    if (b == NULL || --b->ref > 0)
        return;
    for (guint i = 0; i < b->n; i++)
        rpc_tensor_unref(b->params[i]);
    g_free(b->params);
    g_free(b->offsets);
    g_free(b->lengths);
    rpc_tensor_unref(b->buffer);
    g_free(b);
}

gsize
rpc_grad_bucket_index(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, 0);
    return b->index;
}

gsize
rpc_grad_bucket_count(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, 0);
    return b->count;
}

gboolean
rpc_grad_bucket_is_last(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, FALSE);
    return b->index == b->count - 1;
}

RpcTensor *
rpc_grad_bucket_buffer(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, NULL);
    return b->buffer;
}

RpcPrecision
rpc_grad_bucket_precision(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, RPC_PRECISION_NATIVE);
    return b->prec;
}

void
rpc_grad_bucket_set_buffer(RpcGradBucket *b, RpcTensor *buffer)
{
    g_return_if_fail(b != NULL && buffer != NULL);
    g_return_if_fail(rpc_tensor_numel(buffer) == rpc_tensor_numel(b->buffer));
    rpc_tensor_unref(b->buffer);
    b->buffer = buffer;
    b->prec = RPC_PRECISION_NATIVE;
}

void
rpc_grad_bucket_set_buffer_lowp(RpcGradBucket *b, const RpcTensor *buffer, RpcPrecision p)
{
    g_return_if_fail(b != NULL && buffer != NULL);
    g_return_if_fail(rpc_tensor_numel(buffer) == rpc_tensor_numel(b->buffer));
    RpcTensor *t = rpc_lowp_tensor(buffer, p);
    rpc_tensor_unref(b->buffer);
    b->buffer = t;
    b->prec = p;
}

/* numel doubles of t from off (g_new'd). */
static double *
doubles_of(const RpcTensor *t, gint64 off, gint64 len)
{
    double *d = g_new(double, MAX(len, 1));
    for (gint64 i = 0; i < len; i++)
        d[i] = rpc_tensor_get(t, off + i);
    return d;
}

GPtrArray *
rpc_grad_bucket_gradients(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, NULL);
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    for (guint i = 0; i < b->n; i++) {
        double *d = doubles_of(b->buffer, b->offsets[i], b->lengths[i]);
        g_ptr_array_add(out, rpc_tensor_new_from_doubles(rpc_tensor_dtype(b->buffer),
                                                         rpc_tensor_ndim(b->params[i]),
                                                         rpc_tensor_shape(b->params[i]), d));
        g_free(d);
    }
    return out;
}

guint
rpc_grad_bucket_n_params(const RpcGradBucket *b)
{
    g_return_val_if_fail(b != NULL, 0);
    return b->n;
}

RpcTensor *
rpc_grad_bucket_parameter(const RpcGradBucket *b, guint i)
{
    g_return_val_if_fail(b != NULL && i < b->n, NULL);
    return b->params[i];
}

gint64
rpc_grad_bucket_offset(const RpcGradBucket *b, guint i)
{
    g_return_val_if_fail(b != NULL && i < b->n, 0);
    return b->offsets[i];
}

gint64
rpc_grad_bucket_length(const RpcGradBucket *b, guint i)
{
    g_return_val_if_fail(b != NULL && i < b->n, 0);
    return b->lengths[i];
}

const gint64 *
rpc_grad_bucket_shape(const RpcGradBucket *b, guint i, guint *ndim)
{
    g_return_val_if_fail(b != NULL && i < b->n, NULL);
    if (ndim)
        *ndim = rpc_tensor_ndim(b->params[i]);
    return rpc_tensor_shape(b->params[i]);
}

/* --- hook plumbing ------------------------------------------------------------------ */

/* Python's type(x).__module__ + "." + __qualname__, and its class repr. */
static const char *
py_type_name(const RpcValue *v, gboolean qualified)
{
    if (v == NULL)
        return qualified ? "builtins.NoneType" : "NoneType";
    switch (rpc_value_type(v)) {
    case RPC_VALUE_NONE:
        return qualified ? "builtins.NoneType" : "NoneType";
    case RPC_VALUE_BOOL:
        return qualified ? "builtins.bool" : "bool";
    case RPC_VALUE_INT:
        return qualified ? "builtins.int" : "int";
    case RPC_VALUE_DOUBLE:
        return qualified ? "builtins.float" : "float";
    case RPC_VALUE_STRING:
        return qualified ? "builtins.str" : "str";
    case RPC_VALUE_BYTES:
        return qualified ? "builtins.bytes" : "bytes";
    case RPC_VALUE_LIST:
        return qualified ? "builtins.list" : "list";
    case RPC_VALUE_DICT:
        return qualified ? "builtins.dict" : "dict";
    case RPC_VALUE_TENSOR:
        return "torch.Tensor";
    case RPC_VALUE_WORKER_INFO:
        return qualified ? "torch._C._distributed_rpc.WorkerInfo"
                         : "torch.distributed.rpc.WorkerInfo";
    case RPC_VALUE_ERROR:
        return qualified ? "builtins.Exception" : "Exception";
    default:
        return rpc_value_opaque_type(v)->name;
    }
}

RpcFuture *
rpc_comm_hook_run(const RpcCommHook *hook, RpcGradBucket *bucket, GError **error)
{
    g_return_val_if_fail(hook != NULL && hook->fn != NULL && bucket != NULL, NULL);
    GError *err = NULL;
    RpcValue *v = hook->fn(hook->state, bucket, &err);
    if (v == NULL && err != NULL) {
        g_propagate_error(error, err);
        return NULL;
    }
    if (v != NULL && rpc_value_type(v) == RPC_VALUE_FUTURE) {
        RpcFuture *f = rpc_future_ref(rpc_value_get_future(v));
        rpc_value_unref(v);
        return f;
    }
    g_set_error(
        error, RPC_ERROR, RPC_ERROR_RUNTIME,
        "Unable to cast Python instance of type <class '%s'> to C++ type "
        "'std::shared_ptr<torch::jit::PythonFutureWrapper>'. " RPC_DDP_MSG_MUST_RETURN_FUTURE "%s",
        py_type_name(v, FALSE), py_type_name(v, TRUE));
    rpc_value_unref(v);
    return NULL;
}

RpcTensor *
rpc_comm_hook_parse_result(const RpcCommHook *hook, const RpcValue *result, GError **error)
{
    g_return_val_if_fail(hook != NULL, NULL);
    RpcValueType t = result ? rpc_value_type(result) : RPC_VALUE_NONE;
    if (t == RPC_VALUE_TENSOR)
        return rpc_tensor_ref(rpc_value_get_tensor(result));
    if (hook->builtin) {
        if (t == RPC_VALUE_LIST && rpc_value_list_len(result) > 0 &&
            rpc_value_type(rpc_value_list_get(result, 0)) == RPC_VALUE_TENSOR)
            return rpc_tensor_ref(rpc_value_get_tensor(rpc_value_list_get(result, 0)));
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "expected the hook result is either a Tensor or a TensorList");
        return NULL;
    }
    char *repr = result ? rpc_value_repr(result) : g_strdup("None");
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Unable to cast %s to Tensor", repr);
    g_free(repr);
    return NULL;
}

static RpcValue *
future_value_take(RpcFuture *f)
{
    RpcValue *v = rpc_value_new_future(f);
    rpc_future_unref(f);
    return v;
}

static gboolean
need_pg(gpointer pg, const char *hook, GError **error)
{
    if (pg != NULL)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "%s needs a process group as its state (there is no default group)", hook);
    return FALSE;
}

/* A copy of t with every element rounded to f(x) in format p. */
static RpcTensor *
map_tensor(const RpcTensor *t, RpcPrecision p, double scale_div)
{
    RpcTensor *out =
        rpc_tensor_new_zeros(rpc_tensor_dtype(t), rpc_tensor_ndim(t), rpc_tensor_shape(t));
    gint64 n = rpc_tensor_numel(t);
    RpcDType dt = rpc_tensor_dtype(t);
    gpointer d = rpc_tensor_data_mut(out);
    for (gint64 i = 0; i < n; i++) {
        double v = rpc_precision_round(p, dt, rpc_tensor_get(t, i) / scale_div);
        if (dt == RPC_DTYPE_FLOAT32)
            ((float *)d)[i] = (float)v;
        else
            ((double *)d)[i] = v;
    }
    return out;
}

/* allreduce_fut: tensor / size, then a SUM all-reduce in format p. */
static RpcFuture *
allreduce_mean_fut(RpcProcessGroup *pg, const RpcTensor *t, RpcPrecision p)
{
    RpcTensor *div = map_tensor(t, p, (double)rpc_pg_size(pg));
    RpcFuture *f = rpc_pg_allreduce_lowp(pg, div, RPC_REDUCE_SUM, p, RPC_TIMEOUT_UNSET);
    rpc_tensor_unref(div);
    return f;
}

RpcValue *
rpc_ddp_allreduce_hook(gpointer process_group, RpcGradBucket *bucket, GError **error)
{
    g_return_val_if_fail(bucket != NULL, NULL);
    if (!need_pg(process_group, "allreduce_hook", error))
        return NULL;
    return future_value_take(allreduce_mean_fut(process_group, bucket->buffer, bucket->prec));
}

/* decompress: the low-precision result copied into a tensor of dtype. */
static RpcValue *
decompress_cb(RpcFuture *parent, gpointer data, GError **error)
{
    /* fut.value() first, as PyTorch's decompress does: a failed allreduce
     * (e.g. a member's timeout) reaches the caller with its own text. */
    RpcValue *v = rpc_future_value(parent, error);
    if (v == NULL)
        return NULL;
    RpcValue *r = rpc_value_new_tensor(
        rpc_tensor_cast(rpc_value_get_tensor(v), (RpcDType)GPOINTER_TO_INT(data)));
    rpc_value_unref(v);
    return r;
}

static RpcValue *
compress_hook(RpcProcessGroup *pg, RpcGradBucket *bucket, RpcPrecision p, GError **error)
{
    RpcTensor *low = rpc_lowp_tensor(bucket->buffer, p);
    RpcFuture *f = allreduce_mean_fut(pg, low, p);
    rpc_tensor_unref(low);
    RpcFuture *child = rpc_future_then(
        f, decompress_cb, GINT_TO_POINTER((gint)rpc_tensor_dtype(bucket->buffer)), NULL, NULL);
    rpc_future_unref(f);
    return future_value_take(child);
}

RpcValue *
rpc_ddp_fp16_compress_hook(gpointer process_group, RpcGradBucket *bucket, GError **error)
{
    g_return_val_if_fail(bucket != NULL, NULL);
    if (!need_pg(process_group, "fp16_compress_hook", error))
        return NULL;
    return compress_hook(process_group, bucket, RPC_PRECISION_FP16, error);
}

RpcValue *
rpc_ddp_bf16_compress_hook(gpointer process_group, RpcGradBucket *bucket, GError **error)
{
    g_return_val_if_fail(bucket != NULL, NULL);
    if (!need_pg(process_group, "bf16_compress_hook", error))
        return NULL;
    return compress_hook(process_group, bucket, RPC_PRECISION_BF16, error);
}

RpcValue *
rpc_ddp_noop_hook(gpointer state, RpcGradBucket *bucket, GError **error)
{
    g_return_val_if_fail(bucket != NULL, NULL);
    RpcFuture *f = rpc_future_new(NULL);
    rpc_future_set_result(f, rpc_value_new_tensor(rpc_tensor_ref(bucket->buffer)), NULL);
    return future_value_take(f);
}

/* The wrapper's decompress: fut.value() copied into the low-precision
 * buffer — i.e. rounded to the format. */
static RpcValue *
wrapper_decompress_cb(RpcFuture *parent, gpointer data, GError **error)
{
    if (rpc_future_has_error(parent)) {
        rpc_value_propagate_error(rpc_future_peek_error(parent), error);
        return NULL;
    }
    RpcValue *v = rpc_future_peek_value(parent);
    if (rpc_value_type(v) != RPC_VALUE_TENSOR) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "copy_(): argument 'src' (position 1) must be Tensor, not %s",
                    py_type_name(v, FALSE));
        return NULL;
    }
    return rpc_value_new_tensor(
        rpc_lowp_tensor(rpc_value_get_tensor(v), (RpcPrecision)GPOINTER_TO_INT(data)));
}

static RpcValue *
compress_wrapper(RpcCompressWrapper *w, RpcGradBucket *bucket, RpcPrecision p, GError **error)
{
    g_return_val_if_fail(w != NULL && w->hook != NULL && bucket != NULL, NULL);
    rpc_grad_bucket_set_buffer_lowp(bucket, bucket->buffer, p);
    RpcCommHook inner = {w->hook, w->state, FALSE};
    RpcFuture *f = rpc_comm_hook_run(&inner, bucket, error);
    if (f == NULL)
        return NULL;
    RpcFuture *child =
        rpc_future_then(f, wrapper_decompress_cb, GINT_TO_POINTER((gint)p), NULL, NULL);
    rpc_future_unref(f);
    return future_value_take(child);
}

RpcValue *
rpc_ddp_fp16_compress_wrapper_hook(gpointer wrapper, RpcGradBucket *bucket, GError **error)
{
    return compress_wrapper(wrapper, bucket, RPC_PRECISION_FP16, error);
}

RpcValue *
rpc_ddp_bf16_compress_wrapper_hook(gpointer wrapper, RpcGradBucket *bucket, GError **error)
{
    return compress_wrapper(wrapper, bucket, RPC_PRECISION_BF16, error);
}

/* --- the generator ------------------------------------------------------------------- */

static guint64
splitmix64(guint64 *x)
{
    guint64 z = (*x += G_GUINT64_CONSTANT(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

void
rpc_ddp_rng_seed(RpcDdpRng *r, guint64 seed)
{
    g_return_if_fail(r != NULL);
    for (guint i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline guint64
rotl(guint64 x, gint k)
{
    return (x << k) | (x >> (64 - k));
}

guint64
rpc_ddp_rng_next(RpcDdpRng *r)
{
    g_return_val_if_fail(r != NULL, 0);
    guint64 *s = r->s;
    guint64 result = rotl(s[1] * 5, 7) * 9;
    guint64 t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double
rpc_ddp_rng_normal(RpcDdpRng *r)
{
    double u1 = (double)((rpc_ddp_rng_next(r) >> 11) + 1) * 0x1.0p-53; /* (0, 1] */
    double u2 = (double)(rpc_ddp_rng_next(r) >> 11) * 0x1.0p-53;       /* [0, 1) */
    return sqrt(-2.0 * log(u1)) * cos(2.0 * G_PI * u2);
}

/* --- PowerSGD ----------------------------------------------------------------------------- */

typedef struct {
    double *error; /* error_dict[bucket]; NULL until first use */
    gint64 error_len;
    double *p, *q; /* p_memory_dict / q_memory_dict; NULL when absent */
    gint64 p_len, q_len;
} PsgdMemory;

struct RpcPowerSGDState {
    RpcProcessGroup *pg;
    RpcPowerSGDConfig cfg;
    RpcDdpRng rng;
    gint64 iter;
    gint64 numel_before, numel_after;
    GHashTable *memory; /* gsize bucket index → PsgdMemory* */
};

void
rpc_powersgd_config_init(RpcPowerSGDConfig *cfg)
{
    g_return_if_fail(cfg != NULL);
    *cfg = (RpcPowerSGDConfig){
        .matrix_approximation_rank = 1,
        .start_powerSGD_iter = 1000,
        .min_compression_rate = 2,
        .use_error_feedback = TRUE,
        .warm_start = TRUE,
        .orthogonalization_epsilon = 0,
        .random_seed = 0,
    };
}

static void
memory_free(gpointer p)
{
    PsgdMemory *m = p;
    g_free(m->error);
    g_free(m->p);
    g_free(m->q);
    g_free(m);
}

static guint
gsize_hash(gconstpointer p)
{
    return g_int64_hash(p);
}

static gboolean
gsize_equal(gconstpointer a, gconstpointer b)
{
    return *(const gsize *)a == *(const gsize *)b;
}

RpcPowerSGDState *
rpc_powersgd_state_new(RpcProcessGroup *pg, const RpcPowerSGDConfig *cfg, GError **error)
{
    g_return_val_if_fail(pg != NULL && cfg != NULL, NULL);
    g_return_val_if_fail(cfg->matrix_approximation_rank >= 1, NULL);
    if ((cfg->use_error_feedback || cfg->warm_start) && cfg->start_powerSGD_iter <= 1) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, RPC_DDP_MSG_POWERSGD_START_ITER);
        return NULL;
    }
    RpcPowerSGDState *s = g_new0(RpcPowerSGDState, 1);
    s->pg = pg;
    s->cfg = *cfg;
    rpc_ddp_rng_seed(&s->rng, cfg->random_seed);
    s->memory = g_hash_table_new_full(gsize_hash, gsize_equal, g_free, memory_free);
    return s;
}

void
rpc_powersgd_state_free(RpcPowerSGDState *s)
{
    if (s == NULL)
        return;
    g_hash_table_unref(s->memory);
    g_free(s);
}

gint64
rpc_powersgd_state_iter(const RpcPowerSGDState *s)
{
    g_return_val_if_fail(s != NULL, 0);
    return s->iter;
}

void
rpc_powersgd_state_numel(const RpcPowerSGDState *s, gint64 *before, gint64 *after)
{
    g_return_if_fail(s != NULL);
    if (before)
        *before = s->numel_before;
    if (after)
        *after = s->numel_after;
}

static PsgdMemory *
memory_of(RpcPowerSGDState *s, gsize bucket)
{
    PsgdMemory *m = g_hash_table_lookup(s->memory, &bucket);
    if (m == NULL) {
        m = g_new0(PsgdMemory, 1);
        gsize *k = g_new(gsize, 1);
        *k = bucket;
        g_hash_table_insert(s->memory, k, m);
    }
    return m;
}

static void
maybe_increase_iter(RpcPowerSGDState *s, gboolean is_last)
{
    if (is_last)
        s->iter++;
}

/* One gradient compressed as an n×m matrix M (at offset off of the work
 * buffer), with P (n×r) at p_off of P memory and Q (m×r) at q_off. */
typedef struct {
    gint64 off, n, m, r, p_off, q_off;
} Mat;

typedef struct {
    RpcPowerSGDState *st;
    gsize bucket;
    gboolean is_last;
    RpcDType dtype;
    RpcPrecision prec;
    gint64 total;  /* the bucket's numel */
    gint64 padded; /* work's length (batched: side²) */
    double *work;  /* the input tensor (with the residual added) */
    double *cp;    /* its copy, for the new residual; NULL without feedback */
    GArray *mats;  /* Mat */
    GArray *plain; /* gint64 pairs (off, len): uncompressed gradients */
    gint64 plain_len;
    RpcFuture *result;
} Psgd;

static void
psgd_free(Psgd *j)
{
    g_free(j->work);
    g_free(j->cp);
    if (j->mats)
        g_array_unref(j->mats);
    if (j->plain)
        g_array_unref(j->plain);
    if (j->result)
        rpc_future_unref(j->result);
    g_free(j);
}

static double
psgd_round(const Psgd *j, double x)
{
    return rpc_precision_round(j->prec, j->dtype, x);
}

/* A 1-d tensor of len doubles in the work format (the low-precision
 * formats are stored as float32). */
static RpcTensor *
psgd_tensor(const Psgd *j, const double *v, gint64 len)
{
    RpcDType dt = j->prec == RPC_PRECISION_NATIVE ? j->dtype : RPC_DTYPE_FLOAT32;
    return rpc_tensor_new_from_doubles(dt, 1, &len, v);
}

/* Gram–Schmidt over the r columns of the rows×r row-major matrix a. */
static void
orthogonalize(const Psgd *j, double *a, gint64 rows, gint64 r, double eps)
{
    for (gint64 i = 0; i < r; i++) {
        double ss = 0;
        for (gint64 k = 0; k < rows; k++)
            ss += a[k * r + i] * a[k * r + i];
        double norm = psgd_round(j, sqrt(psgd_round(j, ss)));
        if (eps != 0)
            norm = psgd_round(j, norm + eps);
        for (gint64 k = 0; k < rows; k++)
            a[k * r + i] = psgd_round(j, a[k * r + i] / norm);
        for (gint64 c = i + 1; c < r; c++) {
            double dot = 0;
            for (gint64 k = 0; k < rows; k++)
                dot += psgd_round(j, a[k * r + i] * a[k * r + c]);
            dot = psgd_round(j, dot);
            for (gint64 k = 0; k < rows; k++)
                a[k * r + c] = psgd_round(j, a[k * r + c] - psgd_round(j, dot * a[k * r + i]));
        }
    }
}

/* out (rows×cols) = a (rows×inner) · b, with b given as (inner×cols), or as
 * its transpose (cols×inner) when bt; all row-major. */
static void
matmul(const Psgd *j, const double *a, gint64 a_stride, gboolean at, const double *b, gboolean bt,
       double *out, gint64 rows, gint64 inner, gint64 cols)
{
    for (gint64 i = 0; i < rows; i++)
        for (gint64 c = 0; c < cols; c++) {
            double acc = 0;
            for (gint64 k = 0; k < inner; k++) {
                double x = at ? a[k * a_stride + i] : a[i * a_stride + k];
                double y = bt ? b[c * inner + k] : b[k * cols + c];
                acc += x * y;
            }
            out[i * cols + c] = psgd_round(j, acc);
        }
}

static void
psgd_fail(Psgd *j, RpcFuture *f)
{
    RpcValue *err = rpc_future_peek_error(f);
    rpc_future_fail_if_needed(j->result, rpc_value_ref(err));
    psgd_free(j);
}

/* Copies a collective's tensor result into dst (len doubles). */
static void
take_result(RpcFuture *f, double *dst, gint64 len)
{
    const RpcTensor *t = rpc_value_get_tensor(rpc_future_peek_value(f));
    for (gint64 i = 0; i < len; i++)
        dst[i] = rpc_tensor_get(t, i);
}

static RpcFuture *
psgd_allreduce(Psgd *j, const double *v, gint64 len)
{
    RpcTensor *t = psgd_tensor(j, v, len);
    RpcFuture *f = rpc_pg_allreduce_lowp(j->st->pg, t, RPC_REDUCE_SUM, j->prec, RPC_TIMEOUT_UNSET);
    rpc_tensor_unref(t);
    return f;
}

static void
psgd_chain(Psgd *j, RpcFuture *f, RpcDoneFunc next)
{
    rpc_future_add_done_callback(f, next, j, NULL, NULL);
    rpc_future_unref(f);
}

/* The end: M = P·Qᵀ into work, the residual, the memories, the iteration. */
static gboolean
psgd_decompress(RpcFuture *f, gpointer data, GError **error)
{
    Psgd *j = data;
    if (rpc_future_has_error(f)) {
        psgd_fail(j, f);
        return TRUE;
    }
    RpcPowerSGDState *st = j->st;
    PsgdMemory *mem = memory_of(st, j->bucket);
    guint w = rpc_pg_size(st->pg);
    take_result(f, mem->q, mem->q_len);
    for (gint64 i = 0; i < mem->q_len; i++)
        mem->q[i] = psgd_round(j, mem->q[i] / w);
    for (guint i = 0; i < j->mats->len; i++) {
        Mat *m = &g_array_index(j->mats, Mat, i);
        matmul(j, mem->p + m->p_off, m->r, FALSE, mem->q + m->q_off, TRUE, j->work + m->off, m->n,
               m->r, m->m);
    }
    if (st->cfg.use_error_feedback) {
        for (gint64 i = 0; i < j->padded; i++)
            mem->error[i] = psgd_round(j, j->cp[i] - j->work[i]);
    }
    if (!st->cfg.warm_start) {
        g_clear_pointer(&mem->p, g_free);
        g_clear_pointer(&mem->q, g_free);
    }
    maybe_increase_iter(st, j->is_last);
    RpcFuture *result = rpc_future_ref(j->result);
    RpcTensor *t = psgd_tensor(j, j->work, j->total);
    psgd_free(j);
    rpc_future_complete_if_needed(result, rpc_value_new_tensor(t));
    rpc_future_unref(result);
    return TRUE;
}

/* P all-reduced: orthogonalize each P, Q = Mᵀ·P, all-reduce Q. */
static gboolean
psgd_compute_qs(RpcFuture *f, gpointer data, GError **error)
{
    Psgd *j = data;
    if (rpc_future_has_error(f)) {
        psgd_fail(j, f);
        return TRUE;
    }
    PsgdMemory *mem = memory_of(j->st, j->bucket);
    take_result(f, mem->p, mem->p_len);
    for (guint i = 0; i < j->mats->len; i++) {
        Mat *m = &g_array_index(j->mats, Mat, i);
        orthogonalize(j, mem->p + m->p_off, m->n, m->r, j->st->cfg.orthogonalization_epsilon);
        matmul(j, j->work + m->off, m->m, TRUE, mem->p + m->p_off, FALSE, mem->q + m->q_off, m->m,
               m->n, m->r);
    }
    psgd_chain(j, psgd_allreduce(j, mem->q, mem->q_len), psgd_decompress);
    return TRUE;
}

/* The uncompressed part all-reduced: mean it back into work, all-reduce P. */
static gboolean
psgd_unpack_and_allreduce_ps(RpcFuture *f, gpointer data, GError **error)
{
    Psgd *j = data;
    if (rpc_future_has_error(f)) {
        psgd_fail(j, f);
        return TRUE;
    }
    guint w = rpc_pg_size(j->st->pg);
    const RpcTensor *t = rpc_value_get_tensor(rpc_future_peek_value(f));
    gint64 idx = 0;
    for (guint i = 0; i < j->plain->len; i += 2) {
        gint64 off = g_array_index(j->plain, gint64, i),
               len = g_array_index(j->plain, gint64, i + 1);
        for (gint64 k = 0; k < len; k++)
            j->work[off + k] = psgd_round(j, rpc_tensor_get(t, idx++) / w);
    }
    PsgdMemory *mem = memory_of(j->st, j->bucket);
    psgd_chain(j, psgd_allreduce(j, mem->p, mem->p_len), psgd_compute_qs);
    return TRUE;
}

/* Fills each Q (in order) from a generator seeded by the state's next
 * draw, as torch.manual_seed(rng.randint(1e9)); torch.randn(...) does. */
static void
psgd_random_qs(Psgd *j, PsgdMemory *mem)
{
    RpcDdpRng q;
    rpc_ddp_rng_seed(&q, rpc_ddp_rng_next(&j->st->rng) % 1000000000u);
    for (gint64 i = 0; i < mem->q_len; i++)
        mem->q[i] = psgd_round(j, rpc_ddp_rng_normal(&q));
}

/* Common start: the vanilla phase, or the work buffer with the residual. */
static Psgd *
psgd_begin(RpcPowerSGDState *st, RpcGradBucket *b, gint64 padded)
{
    Psgd *j = g_new0(Psgd, 1);
    j->st = st;
    j->bucket = b->index;
    j->is_last = rpc_grad_bucket_is_last(b);
    j->dtype = rpc_tensor_dtype(b->buffer);
    j->prec = b->prec;
    j->total = rpc_tensor_numel(b->buffer);
    j->padded = padded;
    j->work = g_new0(double, MAX(padded, 1));
    for (gint64 i = 0; i < j->total; i++)
        j->work[i] = rpc_tensor_get(b->buffer, i);
    j->result = rpc_future_new(rpc_pg_executor(st->pg));
    if (st->cfg.use_error_feedback) {
        PsgdMemory *mem = memory_of(st, j->bucket);
        if (mem->error != NULL && mem->error_len == padded) {
            for (gint64 i = 0; i < padded; i++)
                j->work[i] = psgd_round(j, j->work[i] + mem->error[i]);
        } else {
            g_free(mem->error);
            mem->error = g_new0(double, MAX(padded, 1));
            mem->error_len = padded;
        }
        j->cp = g_memdup2(j->work, sizeof(double) * (gsize)MAX(padded, 1));
    }
    return j;
}

/* Allocates P and Q memories when absent (or without warm start); TRUE if
 * the Qs must be drawn. */
static gboolean
psgd_memories(Psgd *j, gint64 p_len, gint64 q_len)
{
    PsgdMemory *mem = memory_of(j->st, j->bucket);
    if (j->st->cfg.warm_start && mem->p != NULL && mem->p_len == p_len && mem->q_len == q_len)
        return FALSE;
    g_free(mem->p);
    g_free(mem->q);
    mem->p = g_new0(double, MAX(p_len, 1));
    mem->q = g_new0(double, MAX(q_len, 1));
    mem->p_len = p_len;
    mem->q_len = q_len;
    return TRUE;
}

RpcValue *
rpc_ddp_powersgd_hook(gpointer state, RpcGradBucket *bucket, GError **error)
{
    RpcPowerSGDState *st = state;
    g_return_val_if_fail(st != NULL && bucket != NULL, NULL);
    if (st->iter < st->cfg.start_powerSGD_iter) {
        maybe_increase_iter(st, rpc_grad_bucket_is_last(bucket));
        return rpc_ddp_allreduce_hook(st->pg, bucket, error);
    }
    Psgd *j = psgd_begin(st, bucket, rpc_tensor_numel(bucket->buffer));
    /* Step I: which gradients to compress. */
    j->mats = g_array_new(FALSE, FALSE, sizeof(Mat));
    j->plain = g_array_new(FALSE, FALSE, sizeof(gint64));
    gint64 p_len = 0, q_len = 0;
    for (guint i = 0; i < bucket->n; i++) {
        const RpcTensor *p = bucket->params[i];
        gint64 len = bucket->lengths[i];
        gboolean compress = FALSE;
        Mat m = {bucket->offsets[i], 0, 0, 0, 0, 0};
        if (rpc_tensor_ndim(p) >= 2 && len > 0) {
            m.n = rpc_tensor_shape(p)[0];
            m.m = len / m.n;
            m.r = MIN(MIN(m.n, m.m), (gint64)st->cfg.matrix_approximation_rank);
            compress =
                (double)((m.n + m.m) * m.r) * st->cfg.min_compression_rate < (double)(m.n * m.m);
        }
        st->numel_before += len;
        if (compress) {
            m.p_off = p_len;
            m.q_off = q_len;
            p_len += m.n * m.r;
            q_len += m.m * m.r;
            g_array_append_val(j->mats, m);
            st->numel_after += (m.n + m.m) * m.r;
        } else {
            gint64 pair[2] = {bucket->offsets[i], len};
            g_array_append_vals(j->plain, pair, 2);
            j->plain_len += len;
            st->numel_after += len;
        }
    }
    /* Step II/III: memories, Qs, Ps. */
    gboolean fresh = psgd_memories(j, p_len, q_len);
    PsgdMemory *mem = memory_of(st, j->bucket);
    if (fresh)
        psgd_random_qs(j, mem);
    for (guint i = 0; i < j->mats->len; i++) {
        Mat *m = &g_array_index(j->mats, Mat, i);
        orthogonalize(j, mem->q + m->q_off, m->m, m->r, st->cfg.orthogonalization_epsilon);
        matmul(j, j->work + m->off, m->m, FALSE, mem->q + m->q_off, FALSE, mem->p + m->p_off, m->n,
               m->m, m->r);
    }
    double *plain = g_new(double, MAX(j->plain_len, 1));
    gint64 idx = 0;
    for (guint i = 0; i < j->plain->len; i += 2) {
        gint64 off = g_array_index(j->plain, gint64, i),
               len = g_array_index(j->plain, gint64, i + 1);
        memcpy(plain + idx, j->work + off, sizeof(double) * (gsize)len);
        idx += len;
    }
    RpcFuture *result = rpc_future_ref(j->result);
    RpcFuture *f = psgd_allreduce(j, plain, j->plain_len);
    g_free(plain);
    psgd_chain(j, f, psgd_unpack_and_allreduce_ps);
    return future_value_take(result);
}

RpcValue *
rpc_ddp_batched_powersgd_hook(gpointer state, RpcGradBucket *bucket, GError **error)
{
    RpcPowerSGDState *st = state;
    g_return_val_if_fail(st != NULL && bucket != NULL, NULL);
    if (st->iter < st->cfg.start_powerSGD_iter) {
        maybe_increase_iter(st, rpc_grad_bucket_is_last(bucket));
        return rpc_ddp_allreduce_hook(st->pg, bucket, error);
    }
    gint64 total = rpc_tensor_numel(bucket->buffer);
    gint64 side = (gint64)ceil(sqrt((double)total));
    while (side * side < total)
        side++;
    while (side > 0 && (side - 1) * (side - 1) >= total)
        side--;
    gint64 r = MIN(side, (gint64)st->cfg.matrix_approximation_rank);
    st->numel_before += total;
    st->numel_after += side * r * 2;
    Psgd *j = psgd_begin(st, bucket, side * side);
    j->mats = g_array_new(FALSE, FALSE, sizeof(Mat));
    j->plain = g_array_new(FALSE, FALSE, sizeof(gint64));
    Mat m = {0, side, side, r, 0, 0};
    g_array_append_val(j->mats, m);
    PsgdMemory *mem = memory_of(st, j->bucket);
    if (psgd_memories(j, side * r, side * r))
        psgd_random_qs(j, mem);
    orthogonalize(j, mem->q, side, r, st->cfg.orthogonalization_epsilon);
    matmul(j, j->work, side, FALSE, mem->q, FALSE, mem->p, side, side, r);
    RpcFuture *result = rpc_future_ref(j->result);
    psgd_chain(j, psgd_allreduce(j, mem->p, mem->p_len), psgd_compute_qs);
    return future_value_take(result);
}

/* --- the reducer ---------------------------------------------------------------------------- */

typedef struct {
    guint *params; /* indices into RpcDdp.params, buffer order */
    guint n;
    RpcDType dtype;
} Bucket;

typedef struct {
    RpcDdp *d;
    guint param;
} ReadyHook;

struct RpcDdp {
    RpcProcessGroup *pg;
    guint n_params;
    RpcTensor **params;
    guint *hook_ids;
    guint *param_bucket;
    guint n_buckets;
    Bucket *buckets;
    RpcCommHook hook;
    gboolean has_hook;
    /* the current iteration */
    gboolean *ready;
    guint *pending; /* per bucket: parameters not ready yet */
    guint next_bucket;
    RpcFuture **futures;
    GError *error;
};

static void
ddp_reset(RpcDdp *d)
{
    for (guint b = 0; b < d->n_buckets; b++) {
        if (d->futures[b] != NULL)
            rpc_future_unref(d->futures[b]);
        d->futures[b] = NULL;
        d->pending[b] = d->buckets[b].n;
    }
    memset(d->ready, 0, sizeof(gboolean) * d->n_params);
    d->next_bucket = 0;
    g_clear_error(&d->error);
}

/* The flat buffer of bucket b from its parameters' .grad. */
static RpcTensor *
bucket_buffer(RpcDdp *d, guint b)
{
    Bucket *bk = &d->buckets[b];
    gint64 total = 0;
    for (guint i = 0; i < bk->n; i++)
        total += rpc_tensor_numel(d->params[bk->params[i]]);
    double *v = g_new(double, MAX(total, 1));
    gint64 off = 0;
    for (guint i = 0; i < bk->n; i++) {
        RpcTensor *g = rpc_ag_grad(d->params[bk->params[i]]);
        gint64 len = rpc_tensor_numel(d->params[bk->params[i]]);
        for (gint64 k = 0; k < len; k++)
            v[off + k] = rpc_tensor_get(g, k);
        off += len;
    }
    RpcTensor *t = rpc_tensor_new_from_doubles(bk->dtype, 1, &total, v);
    g_free(v);
    return t;
}

static void
launch_bucket(RpcDdp *d, guint b)
{
    Bucket *bk = &d->buckets[b];
    RpcTensor **ps = g_new(RpcTensor *, bk->n);
    for (guint i = 0; i < bk->n; i++)
        ps[i] = d->params[bk->params[i]];
    RpcGradBucket *gb = rpc_grad_bucket_new(b, d->n_buckets, bucket_buffer(d, b), ps, bk->n);
    g_free(ps);
    RpcCommHook dflt = {rpc_ddp_allreduce_hook, d->pg, TRUE};
    d->futures[b] = rpc_comm_hook_run(d->has_hook ? &d->hook : &dflt, gb, &d->error);
    rpc_grad_bucket_unref(gb);
}

static void
on_param_ready(RpcTensor *leaf, gpointer user_data)
{
    ReadyHook *h = user_data;
    RpcDdp *d = h->d;
    if (d->error != NULL)
        return;
    if (d->ready[h->param]) {
        g_set_error(&d->error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Expected to mark a variable ready only once. This error is caused by one "
                    "of the following reasons: 1) Use of a module parameter outside the "
                    "`forward` function. 2) Reused parameters in multiple reentrant backward "
                    "passes. Parameter at index %u has been marked as ready twice.",
                    h->param);
        return;
    }
    d->ready[h->param] = TRUE;
    d->pending[d->param_bucket[h->param]]--;
    while (d->error == NULL && d->next_bucket < d->n_buckets && d->pending[d->next_bucket] == 0)
        launch_bucket(d, d->next_bucket++);
}

static gint
cmp_bucket_min(gconstpointer x, gconstpointer y)
{
    const Bucket *a = x, *b = y;
    return a->params[0] < b->params[0] ? -1 : a->params[0] > b->params[0];
}

RpcDdp *
rpc_ddp_new(RpcProcessGroup *pg, RpcTensor *const *params, guint n_params, gsize bucket_cap_bytes,
            GError **error)
{
    g_return_val_if_fail(pg != NULL && (params != NULL || n_params == 0), NULL);
    GArray *used = g_array_new(FALSE, FALSE, sizeof(guint));
    for (guint i = 0; i < n_params; i++)
        if (rpc_ag_requires_grad(params[i]) && rpc_ag_is_leaf(params[i]))
            g_array_append_val(used, i);
    if (used->len == 0) {
        g_array_unref(used);
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "DistributedDataParallel is not needed when a module doesn't have any "
                            "parameter that requires a gradient.");
        return NULL;
    }
    if (bucket_cap_bytes == 0)
        bucket_cap_bytes = RPC_DDP_DEFAULT_BUCKET_CAP;
    RpcDdp *d = g_new0(RpcDdp, 1);
    d->pg = pg;
    d->n_params = n_params;
    d->params = g_new0(RpcTensor *, n_params);
    d->hook_ids = g_new0(guint, n_params);
    d->param_bucket = g_new0(guint, n_params);
    d->ready = g_new0(gboolean, n_params);
    for (guint i = 0; i < n_params; i++)
        d->params[i] = rpc_tensor_ref(params[i]);

    /* compute_bucket_assignment_by_size: one accumulator per dtype. */
    GArray *buckets = g_array_new(FALSE, FALSE, sizeof(Bucket));
    GArray *acc[2] = {g_array_new(FALSE, FALSE, sizeof(guint)),
                      g_array_new(FALSE, FALSE, sizeof(guint))};
    gsize size[2] = {0, 0};
    for (guint k = 0; k < used->len; k++) {
        guint i = g_array_index(used, guint, k);
        RpcDType dt = rpc_tensor_dtype(params[i]);
        g_array_append_val(acc[dt], i);
        size[dt] += rpc_tensor_nbytes(params[i]);
        if (size[dt] >= bucket_cap_bytes) {
            Bucket b = {NULL, acc[dt]->len, dt};
            b.params = (guint *)g_array_free(acc[dt], FALSE);
            g_array_append_val(buckets, b);
            acc[dt] = g_array_new(FALSE, FALSE, sizeof(guint));
            size[dt] = 0;
        }
    }
    for (guint dt = 0; dt < 2; dt++) {
        if (acc[dt]->len > 0) {
            Bucket b = {NULL, acc[dt]->len, (RpcDType)dt};
            b.params = (guint *)g_array_free(acc[dt], FALSE);
            g_array_append_val(buckets, b);
        } else {
            g_array_unref(acc[dt]);
        }
    }
    g_array_unref(used);
    /* by smallest parameter index, then reversed (below) */
    g_array_sort(buckets, cmp_bucket_min);
    d->n_buckets = buckets->len;
    d->buckets = g_new(Bucket, d->n_buckets);
    for (guint b = 0; b < d->n_buckets; b++) /* reversed */
        d->buckets[b] = g_array_index(buckets, Bucket, d->n_buckets - 1 - b);
    g_array_unref(buckets);
    d->pending = g_new0(guint, d->n_buckets);
    d->futures = g_new0(RpcFuture *, d->n_buckets);
    for (guint b = 0; b < d->n_buckets; b++)
        for (guint i = 0; i < d->buckets[b].n; i++)
            d->param_bucket[d->buckets[b].params[i]] = b;
    for (guint b = 0; b < d->n_buckets; b++)
        for (guint i = 0; i < d->buckets[b].n; i++) {
            guint p = d->buckets[b].params[i];
            ReadyHook *h = g_new(ReadyHook, 1);
            h->d = d;
            h->param = p;
            d->hook_ids[p] =
                rpc_ag_register_post_accumulate_hook(d->params[p], on_param_ready, h, g_free, NULL);
        }
    ddp_reset(d);
    return d;
}

void
rpc_ddp_free(RpcDdp *d)
{
    if (d == NULL)
        return;
    for (guint i = 0; i < d->n_params; i++) {
        if (d->hook_ids[i] != 0)
            rpc_ag_remove_hook(d->params[i], d->hook_ids[i]);
        rpc_tensor_unref(d->params[i]);
    }
    ddp_reset(d);
    for (guint b = 0; b < d->n_buckets; b++)
        g_free(d->buckets[b].params);
    g_free(d->buckets);
    g_free(d->futures);
    g_free(d->pending);
    g_free(d->ready);
    g_free(d->param_bucket);
    g_free(d->hook_ids);
    g_free(d->params);
    g_free(d);
}

guint
rpc_ddp_n_buckets(const RpcDdp *d)
{
    g_return_val_if_fail(d != NULL, 0);
    return d->n_buckets;
}

const guint *
rpc_ddp_bucket_params(const RpcDdp *d, guint bucket, guint *n)
{
    g_return_val_if_fail(d != NULL && bucket < d->n_buckets, NULL);
    if (n)
        *n = d->buckets[bucket].n;
    return d->buckets[bucket].params;
}

gboolean
rpc_ddp_register_comm_hook(RpcDdp *d, gpointer state, RpcCommHookFn hook, GError **error)
{
    g_return_val_if_fail(d != NULL, FALSE);
    if (hook == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, RPC_DDP_MSG_NOT_CALLABLE);
        return FALSE;
    }
    if (d->has_hook) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_DDP_MSG_HOOK_TWICE);
        return FALSE;
    }
    d->hook = (RpcCommHook){hook, state, FALSE};
    d->has_hook = TRUE;
    return TRUE;
}

gboolean
rpc_ddp_register_builtin_comm_hook(RpcDdp *d, RpcBuiltinCommHookType type, GError **error)
{
    g_return_val_if_fail(d != NULL, FALSE);
    g_return_val_if_fail(type <= RPC_BUILTIN_COMM_HOOK_FP16_COMPRESS, FALSE);
    if (d->has_hook) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_DDP_MSG_BUILTIN_HOOK_TWICE);
        return FALSE;
    }
    RpcCommHookFn fn = type == RPC_BUILTIN_COMM_HOOK_ALLREDUCE ? rpc_ddp_allreduce_hook
                                                               : rpc_ddp_fp16_compress_hook;
    d->hook = (RpcCommHook){fn, d->pg, TRUE};
    d->has_hook = TRUE;
    return TRUE;
}

gboolean
rpc_ddp_finalize_backward(RpcDdp *d, GError **error)
{
    g_return_val_if_fail(d != NULL, FALSE);
    gboolean ok = FALSE;
    if (d->error != NULL) {
        g_propagate_error(error, d->error);
        d->error = NULL;
        goto out;
    }
    if (d->next_bucket < d->n_buckets) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Expected to have finished reduction in the prior iteration before starting "
                    "a new one. This error indicates that your module has parameters that were "
                    "not used in producing loss. Bucket %u of %u never became ready.",
                    d->next_bucket, d->n_buckets);
        goto out;
    }
    const RpcCommHook *hook = d->has_hook ? &d->hook : NULL;
    RpcCommHook dflt = {rpc_ddp_allreduce_hook, d->pg, TRUE};
    for (guint b = 0; b < d->n_buckets; b++) {
        RpcValue *v = rpc_future_wait(d->futures[b], error);
        if (v == NULL)
            goto out;
        RpcTensor *t = rpc_comm_hook_parse_result(hook ? hook : &dflt, v, error);
        rpc_value_unref(v);
        if (t == NULL)
            goto out;
        Bucket *bk = &d->buckets[b];
        gint64 total = 0;
        for (guint i = 0; i < bk->n; i++)
            total += rpc_tensor_numel(d->params[bk->params[i]]);
        if (rpc_tensor_numel(t) != total) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "The communication hook's result for bucket %u has %" G_GINT64_FORMAT
                        " elements, but the bucket holds %" G_GINT64_FORMAT " gradient elements",
                        b, rpc_tensor_numel(t), total);
            rpc_tensor_unref(t);
            goto out;
        }
        gint64 off = 0;
        for (guint i = 0; i < bk->n; i++) {
            RpcTensor *p = d->params[bk->params[i]];
            gint64 len = rpc_tensor_numel(p);
            double *vals = doubles_of(t, off, len);
            RpcTensor *g = rpc_tensor_new_from_doubles(rpc_tensor_dtype(p), rpc_tensor_ndim(p),
                                                       rpc_tensor_shape(p), vals);
            g_free(vals);
            gboolean set = rpc_ag_set_grad(p, g, NULL);
            g_warn_if_fail(set);
            rpc_tensor_unref(g);
            off += len;
        }
        rpc_tensor_unref(t);
    }
    ok = TRUE;
out:
    ddp_reset(d);
    return ok;
}

gboolean
rpc_ddp_backward(RpcDdp *d, RpcAgThread *th, RpcTensor *loss, GError **error)
{
    g_return_val_if_fail(d != NULL && th != NULL && loss != NULL, FALSE);
    ddp_reset(d);
    if (!rpc_ag_backward(th, &loss, NULL, 1, FALSE, FALSE, error)) {
        ddp_reset(d);
        return FALSE;
    }
    return rpc_ddp_finalize_backward(d, error);
}

void
rpc_ddp_zero_grad(RpcDdp *d)
{
    g_return_if_fail(d != NULL);
    for (guint i = 0; i < d->n_params; i++)
        if (d->hook_ids[i] != 0)
            rpc_ag_set_grad(d->params[i], NULL, NULL);
}

void
rpc_ddp_sgd_step(RpcDdp *d, double lr)
{
    g_return_if_fail(d != NULL);
    for (guint i = 0; i < d->n_params; i++) {
        RpcTensor *g = d->hook_ids[i] != 0 ? rpc_ag_grad(d->params[i]) : NULL;
        if (g == NULL)
            continue;
        RpcTensor *step = rpc_tensor_mul_scalar(g, -lr);
        rpc_tensor_add_inplace(d->params[i], step);
        rpc_tensor_unref(step);
    }
}
