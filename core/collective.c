/* collective.c — process groups and their collectives (see collective.h).
 *
 * Where things live.  Each agent has one group table (an opaque value in the
 * agent's slot PG_SLOT) mapping a group id to an Entry; the Entry holds the
 * chunks that arrived for that group before their collective started (and
 * before the group itself was created on this worker), and a weak pointer to
 * the RpcProcessGroup.  The table is refcounted: the slot holds one
 * reference and each group one more, so a group never touches its agent
 * when it is freed.
 *
 * A collective in flight is a Coll, owned by its group's `active` table
 * (seq → Coll).  Its state machine: `step` is the step whose incoming chunk
 * it waits for; when that chunk is in the Entry's buffer it is applied, the
 * step advances and the next step's chunk is sent, until n_steps.  Finishing
 * or failing detaches the Coll (table, timer, buffered chunks) and frees it
 * before its future completes, because the future's callbacks may issue new
 * collectives or free the group.
 *
 * Invariants: at most one Coll per seq; a chunk for a seq below next_seq
 * whose Coll is gone is late and dropped; the working tensor `buf` of a
 * reduction is referenced only by its Coll until the collective completes
 * (so it may be written in place).  Everything is keyed by integers; no
 * table is walked where order could matter except after sorting.
 */
#include "core/collective.h"

#include <math.h>
#include <string.h>

#include "core/agent-internal.h"
#include "core/codec.h"
#include "core/message.h"

#define PG_SLOT "__rpc_pg_table"

typedef enum {
    COLL_ALLREDUCE = 1,
    COLL_BROADCAST,
    COLL_ALLGATHER,
    COLL_REDUCE_SCATTER,
    COLL_BARRIER,
    COLL_N_KINDS
} CollKind;

static const char *const kind_names[COLL_N_KINDS] = {
    [COLL_ALLREDUCE] = "allreduce", [COLL_BROADCAST] = "broadcast",
    [COLL_ALLGATHER] = "allgather", [COLL_REDUCE_SCATTER] = "reduce_scatter",
    [COLL_BARRIER] = "barrier",
};

static const RpcTraceKind tk_start = {"pg.start", {"group", "seq", "numel"}};
static const RpcTraceKind tk_done = {"pg.done", {"group", "seq", NULL}};
static const RpcTraceKind tk_fail = {"pg.fail", {"group", "seq", NULL}};
static const RpcTraceKind tk_drop = {"pg.drop", {"group", "seq", "step"}};

/* --- the per-agent group table ------------------------------------------ */

typedef struct {
    gint64 seq;
    guint step;
} ChunkKey;

typedef struct {
    CollKind kind;
    guint src; /* sender's group rank */
    RpcValue *payload;
} Chunk;

typedef struct {
    gint64 id;
    RpcProcessGroup *pg; /* weak; NULL before creation and once retired */
    gboolean retired;
    GHashTable *early; /* ChunkKey* → Chunk* */
} Entry;

typedef struct {
    gint ref;
    GHashTable *entries; /* gint64 id → Entry* */
} PgTable;

typedef struct Coll Coll;

struct RpcProcessGroup {
    RpcAgent *a;
    RpcExecutor *ex;
    PgTable *table; /* a reference */
    Entry *entry;
    gint64 id;
    guint rank, n;
    gint *members; /* worker ids by group rank */
    char **names;  /* their names */
    gint64 next_seq;
    GHashTable *active; /* gint64 seq → Coll* */
    RpcTime timeout;
    gboolean destroying;
};

struct Coll {
    RpcProcessGroup *pg;
    CollKind kind;
    gint64 seq;
    guint n_steps;
    guint step;
    RpcReduceOp op;
    RpcPrecision prec;
    guint root;
    RpcTensor *buf;    /* reductions: the working tensor (only reference) */
    RpcTensor *input;  /* broadcast / allgather: this rank's tensor (a ref) */
    RpcTensor **items; /* allgather: by group rank */
    RpcFuture *result;
    RpcTime timeout; /* RPC_TIMEOUT_NEVER: none */
    guint64 timer;
};

static guint
chunk_key_hash(gconstpointer p)
{
    const ChunkKey *k = p;
    return g_int64_hash(&k->seq) * 31u + k->step;
}

static gboolean
chunk_key_equal(gconstpointer x, gconstpointer y)
{
    const ChunkKey *a = x, *b = y;
    return a->seq == b->seq && a->step == b->step;
}

static void
chunk_free(gpointer p)
{
    Chunk *c = p;
    rpc_value_unref(c->payload);
    g_free(c);
}

static void
entry_free(gpointer p)
{
    Entry *e = p;
    g_hash_table_unref(e->early);
    g_free(e);
}

static gpointer
table_ref(gpointer p)
{
    ((PgTable *)p)->ref++;
    return p;
}

static void
table_unref(gpointer p)
{
    PgTable *t = p;
    if (--t->ref > 0)
        return;
    g_hash_table_unref(t->entries);
    g_free(t);
}

static const RpcOpaqueType pg_table_type = {
    .name = "ProcessGroupTable",
    .ref = table_ref,
    .unref = table_unref,
};

/* The agent's table (transfer none), created on first use. */
static PgTable *
table_of(RpcAgent *a)
{
    RpcValue *v = rpc_agent_slot_get(a, PG_SLOT);
    if (v != NULL)
        return rpc_value_get_opaque(v, &pg_table_type);
    PgTable *t = g_new0(PgTable, 1);
    t->ref = 1;
    t->entries = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, entry_free);
    rpc_agent_slot_set(a, PG_SLOT, rpc_value_new_opaque(&pg_table_type, t));
    return t;
}

static Entry *
entry_of(PgTable *t, gint64 id)
{
    Entry *e = g_hash_table_lookup(t->entries, &id);
    if (e == NULL) {
        e = g_new0(Entry, 1);
        e->id = id;
        e->early = g_hash_table_new_full(chunk_key_hash, chunk_key_equal, g_free, chunk_free);
        g_hash_table_insert(t->entries, &e->id, e);
    }
    return e;
}

/* --- low-precision formats ------------------------------------------------ */

/* Rounds x to a binary format with `mbits` stored mantissa bits and
 * `ebits` exponent bits (IEEE layout in 16 bits), ties to even, by integer
 * arithmetic on the double's bits. */
static guint16
round_to_16(double x, guint mbits, guint ebits, guint16 nan)
{
    guint64 b;
    memcpy(&b, &x, sizeof b);
    guint16 sign = (guint16)((b >> 63) << 15);
    guint64 mag = b & G_GUINT64_CONSTANT(0x7fffffffffffffff);
    const gint bias = (1 << (ebits - 1)) - 1;
    const gint emax = (1 << ebits) - 1; /* the inf/NaN exponent field */
    const guint16 inf = (guint16)(emax << mbits);
    if (mag > G_GUINT64_CONSTANT(0x7ff0000000000000))
        return nan;
    if (mag >= G_GUINT64_CONSTANT(0x7ff0000000000000))
        return sign | inf;
    gint e = (gint)(mag >> 52) - 1023;
    if (e == -1023) /* a double subnormal: far below half the least subnormal */
        return sign;
    guint64 m = (mag & ((G_GUINT64_CONSTANT(1) << 52) - 1)) | (G_GUINT64_CONSTANT(1) << 52);
    gint te = e + bias; /* target's biased exponent */
    if (te >= emax)
        return sign | inf;
    guint shift = te >= 1 ? 52 - mbits : 52 - mbits + (guint)(1 - te);
    if (shift > 53)
        return sign; /* below half the least subnormal */
    guint64 q = m >> shift;
    guint64 rem = m & ((G_GUINT64_CONSTANT(1) << shift) - 1);
    guint64 half = G_GUINT64_CONSTANT(1) << (shift - 1);
    if (rem > half || (rem == half && (q & 1)))
        q++;
    if (te < 1) /* subnormal; q == 1 << mbits is the least normal, same bits */
        return sign | (guint16)q;
    if (q >> (mbits + 1)) {
        q >>= 1;
        te++;
        if (te >= emax)
            return sign | inf;
    }
    return sign | (guint16)((guint)te << mbits) | (guint16)(q & ((1u << mbits) - 1));
}

static double
from_16(guint16 h, guint mbits, guint ebits)
{
    const gint bias = (1 << (ebits - 1)) - 1;
    const guint emax = (1u << ebits) - 1;
    guint exp = (h >> mbits) & emax;
    guint man = h & ((1u << mbits) - 1);
    double v;
    if (exp == emax)
        v = man ? NAN : INFINITY;
    else if (exp == 0)
        v = ldexp((double)man, 1 - bias - (gint)mbits);
    else
        v = ldexp((double)(man | (1u << mbits)), (gint)exp - bias - (gint)mbits);
    return (h & 0x8000) ? -v : v;
}

guint16
rpc_fp16_from_double(double x)
{
    return round_to_16(x, 10, 5, (guint16)(signbit(x) ? 0xfe00 : 0x7e00));
}

guint16
rpc_fp16_from_float(float x)
{
    return rpc_fp16_from_double((double)x);
}

double
rpc_fp16_to_double(guint16 h)
{
    return from_16(h, 10, 5);
}

guint16
rpc_bf16_from_double(double x)
{
    return round_to_16(x, 7, 8, 0x7fc0);
}

guint16
rpc_bf16_from_float(float x)
{
    return rpc_bf16_from_double((double)x);
}

double
rpc_bf16_to_double(guint16 b)
{
    return from_16(b, 7, 8);
}

double
rpc_precision_round(RpcPrecision p, RpcDType dtype, double x)
{
    switch (p) {
    case RPC_PRECISION_FP16:
        return rpc_fp16_to_double(rpc_fp16_from_double(x));
    case RPC_PRECISION_BF16:
        return rpc_bf16_to_double(rpc_bf16_from_double(x));
    default:
        return dtype == RPC_DTYPE_FLOAT32 ? (double)(float)x : x;
    }
}

static guint16
lowp_encode(RpcPrecision p, double x)
{
    return p == RPC_PRECISION_FP16 ? rpc_fp16_from_double(x) : rpc_bf16_from_double(x);
}

static double
lowp_decode(RpcPrecision p, guint16 h)
{
    return p == RPC_PRECISION_FP16 ? rpc_fp16_to_double(h) : rpc_bf16_to_double(h);
}

RpcTensor *
rpc_lowp_tensor(const RpcTensor *t, RpcPrecision p)
{
    g_return_val_if_fail(t != NULL, NULL);
    if (p == RPC_PRECISION_NATIVE)
        return rpc_tensor_cast(t, rpc_tensor_dtype(t));
    RpcTensor *out =
        rpc_tensor_new_zeros(RPC_DTYPE_FLOAT32, rpc_tensor_ndim(t), rpc_tensor_shape(t));
    float *d = rpc_tensor_data_mut(out);
    gint64 n = rpc_tensor_numel(t);
    if (rpc_tensor_dtype(t) == RPC_DTYPE_FLOAT32) {
        const float *s = rpc_tensor_data(t);
        for (gint64 i = 0; i < n; i++)
            d[i] = (float)lowp_decode(p, lowp_encode(p, (double)s[i]));
    } else {
        const double *s = rpc_tensor_data(t);
        for (gint64 i = 0; i < n; i++)
            d[i] = (float)lowp_decode(p, lowp_encode(p, (double)(float)s[i]));
    }
    return out;
}

/* --- element access ----------------------------------------------------------- */

static void
read_doubles(const RpcTensor *t, gint64 off, gint64 len, double *out)
{
    if (rpc_tensor_dtype(t) == RPC_DTYPE_FLOAT32) {
        const float *s = (const float *)rpc_tensor_data(t) + off;
        for (gint64 i = 0; i < len; i++)
            out[i] = s[i];
    } else {
        memcpy(out, (const double *)rpc_tensor_data(t) + off, (gsize)len * sizeof(double));
    }
}

static RpcTensor *
slice_1d(const RpcTensor *t, gint64 off, gint64 len)
{
    RpcTensor *s = rpc_tensor_new_zeros(rpc_tensor_dtype(t), 1, &len);
    gsize es = rpc_tensor_dtype(t) == RPC_DTYPE_FLOAT32 ? sizeof(float) : sizeof(double);
    if (len > 0)
        memcpy(rpc_tensor_data_mut(s), (const char *)rpc_tensor_data(t) + (gsize)off * es,
               (gsize)len * es);
    return s;
}

static double
combine(RpcReduceOp op, double left, double mine)
{
    switch (op) {
    case RPC_REDUCE_MIN:
        return isnan(left) || isnan(mine) ? NAN : (mine < left ? mine : left);
    case RPC_REDUCE_MAX:
        return isnan(left) || isnan(mine) ? NAN : (mine > left ? mine : left);
    default:
        return left + mine;
    }
}

/* buf[off .. off+len) = round(f(left[i], buf[i])); f = combine, or a copy
 * of left when copy is set. */
static void
write_chunk(Coll *c, gint64 off, gint64 len, const double *left, gboolean copy)
{
    RpcDType dt = rpc_tensor_dtype(c->buf);
    gpointer data = rpc_tensor_data_mut(c->buf);
    for (gint64 i = 0; i < len; i++) {
        double mine =
            dt == RPC_DTYPE_FLOAT32 ? ((float *)data)[off + i] : ((double *)data)[off + i];
        double v = copy ? left[i] : rpc_precision_round(c->prec, dt, combine(c->op, left[i], mine));
        if (dt == RPC_DTYPE_FLOAT32)
            ((float *)data)[off + i] = (float)v;
        else
            ((double *)data)[off + i] = v;
    }
}

static void
divide_chunk(Coll *c, gint64 off, gint64 len, guint n)
{
    RpcDType dt = rpc_tensor_dtype(c->buf);
    gpointer data = rpc_tensor_data_mut(c->buf);
    for (gint64 i = 0; i < len; i++) {
        if (dt == RPC_DTYPE_FLOAT32) {
            float *f = (float *)data + off + i;
            *f = (float)rpc_precision_round(c->prec, dt, (double)*f / n);
        } else {
            double *d = (double *)data + off + i;
            *d = rpc_precision_round(c->prec, dt, *d / n);
        }
    }
}

/* --- chunk geometry and messages ---------------------------------------------- */

void
rpc_pg_chunk_bounds(gint64 numel, guint n, guint chunk, gint64 *offset, gint64 *length)
{
    *offset = *length = 0;
    g_return_if_fail(n > 0 && chunk < n && numel >= 0);
    gint64 base = numel / n, extra = numel % n;
    *length = base + ((gint64)chunk < extra ? 1 : 0);
    *offset = (gint64)chunk * base + MIN((gint64)chunk, extra);
}

static guint
mod_n(gint64 x, guint n)
{
    gint64 m = x % (gint64)n;
    return (guint)(m < 0 ? m + n : m);
}

/* The payload of a reduction chunk: a 1-d tensor, or 2 bytes per element. */
static RpcValue *
reduction_payload(Coll *c, guint chunk)
{
    gint64 off, len;
    rpc_pg_chunk_bounds(rpc_tensor_numel(c->buf), c->pg->n, chunk, &off, &len);
    if (c->prec == RPC_PRECISION_NATIVE)
        return rpc_value_new_tensor(slice_1d(c->buf, off, len));
    guint8 *bytes = g_malloc((gsize)len * 2 + 1);
    const float *d = (const float *)rpc_tensor_data(c->buf) + off;
    for (gint64 i = 0; i < len; i++) {
        guint16 h = lowp_encode(c->prec, d[i]);
        bytes[2 * i] = (guint8)(h & 0xff);
        bytes[2 * i + 1] = (guint8)(h >> 8);
    }
    RpcValue *v = rpc_value_new_bytes(bytes, (gsize)len * 2);
    g_free(bytes);
    return v;
}

static RpcValue *
chunk_body(gint64 group, gint64 seq, guint step, CollKind kind, guint src, RpcValue *payload)
{
    RpcValue *args = rpc_value_new_list();
    rpc_value_list_append(args, rpc_value_new_int(group));
    rpc_value_list_append(args, rpc_value_new_int(seq));
    rpc_value_list_append(args, rpc_value_new_int(step));
    rpc_value_list_append(args, rpc_value_new_int(kind));
    rpc_value_list_append(args, rpc_value_new_int(src));
    rpc_value_list_append(args, payload);
    RpcValue *body = rpc_value_new_list();
    rpc_value_list_append(body, rpc_value_new_string(RPC_PG_CHUNK_FUNC));
    rpc_value_list_append(body, args);
    rpc_value_list_append(body, rpc_value_new_dict());
    rpc_value_list_append(body, rpc_value_new_bool(FALSE));
    return body;
}

gsize
rpc_pg_step_message_bytes(RpcDType dtype, RpcPrecision precision, gint64 numel)
{
    RpcValue *payload;
    if (precision == RPC_PRECISION_NATIVE) {
        payload = rpc_value_new_tensor(rpc_tensor_new_zeros(dtype, 1, &numel));
    } else {
        guint8 *zeros = g_malloc0((gsize)numel * 2 + 1);
        payload = rpc_value_new_bytes(zeros, (gsize)numel * 2);
        g_free(zeros);
    }
    RpcValue *body = chunk_body(0, 1, 0, COLL_ALLREDUCE, 0, payload);
    GPtrArray *tensors = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    GBytes *bytes = rpc_codec_encode(body, tensors, NULL, NULL);
    rpc_value_unref(body);
    RpcMessage *msg = rpc_message_new(RPC_MSG_PYTHON_CALL, 1, bytes, tensors);
    GBytes *wire = rpc_message_encode(msg);
    gsize size = g_bytes_get_size(wire);
    g_bytes_unref(wire);
    rpc_message_unref(msg);
    return size;
}

/* --- the state machine ---------------------------------------------------------- */

static const char *
coll_name(const Coll *c)
{
    return kind_names[c->kind];
}

/* Who sends this rank its chunk of step s. */
static guint
coll_src(const Coll *c, guint s)
{
    if (c->kind == COLL_BROADCAST)
        return c->root;
    return mod_n((gint64)c->pg->rank - 1, c->pg->n);
}

/* Sends this rank's chunk for step s (broadcast's members send nothing). */
static gboolean
coll_send_step(Coll *c, guint s, GError **error)
{
    RpcProcessGroup *pg = c->pg;
    guint r = pg->rank, n = pg->n;
    RpcValue *payload;
    switch (c->kind) {
    case COLL_ALLREDUCE:
    case COLL_REDUCE_SCATTER:
        if (s < n - 1)
            payload = reduction_payload(c, mod_n((gint64)r - s - 1, n));
        else
            payload = reduction_payload(c, mod_n((gint64)r - (s - (n - 1)), n));
        break;
    case COLL_ALLGATHER:
        payload = rpc_value_new_tensor(rpc_tensor_ref(c->items[mod_n((gint64)r - s, n)]));
        break;
    case COLL_BARRIER:
        payload = rpc_value_none();
        break;
    default:
        return TRUE;
    }
    guint dst = (r + 1) % n;
    RpcValue *body = chunk_body(pg->id, c->seq, s, c->kind, r, payload);
    RpcFuture *ack = rpc_agent_send_request(pg->a, pg->members[dst], RPC_MSG_PYTHON_CALL, body,
                                            c->timeout, coll_name(c), error);
    rpc_value_unref(body);
    if (ack == NULL)
        return FALSE;
    rpc_future_unref(ack); /* acknowledgements are not waited for */
    return TRUE;
}

static gboolean
payload_error(Coll *c, guint s, guint src, const char *what, GError **error)
{
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "%s #%" G_GINT64_FORMAT " step %u: %s (rank %u) sent %s; every member must pass "
                "a tensor of the same dtype and size",
                coll_name(c), c->seq, s, c->pg->names[src], src, what);
    return FALSE;
}

/* Reads a reduction chunk of `len` elements into out (g_new'd). */
static gboolean
reduction_read(Coll *c, guint s, guint src, const RpcValue *payload, gint64 len, double **out,
               GError **error)
{
    double *vals = g_new(double, MAX(len, 1));
    if (c->prec == RPC_PRECISION_NATIVE) {
        const RpcTensor *t =
            rpc_value_type(payload) == RPC_VALUE_TENSOR ? rpc_value_get_tensor(payload) : NULL;
        if (t == NULL || rpc_tensor_numel(t) != len ||
            rpc_tensor_dtype(t) != rpc_tensor_dtype(c->buf)) {
            char *what =
                t == NULL ? g_strdup("no tensor")
                          : g_strdup_printf("%" G_GINT64_FORMAT " %s elements", rpc_tensor_numel(t),
                                            rpc_tensor_dtype(t) == RPC_DTYPE_FLOAT32 ? "float32"
                                                                                     : "float64");
            payload_error(c, s, src, what, error);
            g_free(what);
            g_free(vals);
            return FALSE;
        }
        read_doubles(t, 0, len, vals);
    } else {
        gsize blen = 0;
        const guint8 *b =
            rpc_value_type(payload) == RPC_VALUE_BYTES ? rpc_value_get_bytes(payload, &blen) : NULL;
        if (b == NULL || blen != (gsize)len * 2) {
            char *what = g_strdup_printf("%" G_GSIZE_FORMAT " bytes of 16-bit data", blen);
            payload_error(c, s, src, what, error);
            g_free(what);
            g_free(vals);
            return FALSE;
        }
        for (gint64 i = 0; i < len; i++)
            vals[i] = lowp_decode(c->prec, (guint16)(b[2 * i] | (b[2 * i + 1] << 8)));
    }
    *out = vals;
    return TRUE;
}

/* Applies the chunk of step s. */
static gboolean
coll_apply(Coll *c, guint s, guint src, const RpcValue *payload, GError **error)
{
    RpcProcessGroup *pg = c->pg;
    guint r = pg->rank, n = pg->n;
    switch (c->kind) {
    case COLL_ALLREDUCE:
    case COLL_REDUCE_SCATTER: {
        gboolean reducing = s < n - 1;
        guint chunk =
            reducing ? mod_n((gint64)r - s - 2, n) : mod_n((gint64)r - (s - (n - 1)) - 1, n);
        gint64 off, len;
        rpc_pg_chunk_bounds(rpc_tensor_numel(c->buf), n, chunk, &off, &len);
        double *vals;
        if (!reduction_read(c, s, src, payload, len, &vals, error))
            return FALSE;
        write_chunk(c, off, len, vals, !reducing);
        g_free(vals);
        if (s == n - 2 && c->op == RPC_REDUCE_AVG) {
            rpc_pg_chunk_bounds(rpc_tensor_numel(c->buf), n, r, &off, &len);
            divide_chunk(c, off, len, n);
        }
        return TRUE;
    }
    case COLL_ALLGATHER:
    case COLL_BROADCAST: {
        RpcTensor *t =
            rpc_value_type(payload) == RPC_VALUE_TENSOR ? rpc_value_get_tensor(payload) : NULL;
        if (t == NULL)
            return payload_error(c, s, src, "no tensor", error);
        if (c->kind == COLL_BROADCAST) {
            if (!rpc_tensor_same_shape(t, c->input) ||
                rpc_tensor_dtype(t) != rpc_tensor_dtype(c->input)) {
                char *shape = rpc_tensor_shape_string(t);
                char *what = g_strdup_printf("a tensor of shape %s", shape);
                payload_error(c, s, src, what, error);
                g_free(what);
                g_free(shape);
                return FALSE;
            }
            rpc_tensor_unref(c->input);
            c->input = rpc_tensor_ref(t);
        } else {
            c->items[mod_n((gint64)r - s - 1, n)] = rpc_tensor_ref(t);
        }
        return TRUE;
    }
    default: /* barrier: the arrival is all that matters */
        return TRUE;
    }
}

static void
coll_free(Coll *c)
{
    if (c->items != NULL)
        for (guint i = 0; i < c->pg->n; i++)
            if (c->items[i] != NULL)
                rpc_tensor_unref(c->items[i]);
    g_free(c->items);
    if (c->buf != NULL)
        rpc_tensor_unref(c->buf);
    if (c->input != NULL)
        rpc_tensor_unref(c->input);
    g_free(c);
}

/* Removes c from its group (table, timer, buffered chunks) and returns its
 * result future (transfer full); c is then the caller's to free. */
static RpcFuture *
coll_detach(Coll *c)
{
    RpcProcessGroup *pg = c->pg;
    g_hash_table_remove(pg->active, &c->seq);
    if (c->timer != 0)
        rpc_executor_cancel(pg->ex, c->timer);
    c->timer = 0;
    for (guint s = c->step; s < c->n_steps; s++) {
        ChunkKey k = {c->seq, s};
        g_hash_table_remove(pg->entry->early, &k);
    }
    RpcFuture *f = c->result;
    c->result = NULL;
    return f;
}

static void
coll_fail(Coll *c, GError *err)
{
    RpcFuture *f = coll_detach(c);
    rpc_executor_trace(c->pg->ex, &tk_fail, c->pg->id, c->seq, 0, err->message);
    coll_free(c);
    rpc_future_set_gerror(f, err, NULL);
    g_error_free(err);
    rpc_future_unref(f);
}

static void
coll_finish(Coll *c)
{
    RpcProcessGroup *pg = c->pg;
    RpcFuture *f = coll_detach(c);
    RpcValue *v = NULL;
    switch (c->kind) {
    case COLL_ALLREDUCE:
        if (pg->n == 1 && c->op == RPC_REDUCE_AVG)
            divide_chunk(c, 0, rpc_tensor_numel(c->buf), 1);
        v = rpc_value_new_tensor(c->buf);
        c->buf = NULL;
        break;
    case COLL_REDUCE_SCATTER: {
        gint64 off, len;
        rpc_pg_chunk_bounds(rpc_tensor_numel(c->buf), pg->n, pg->rank, &off, &len);
        v = rpc_value_new_tensor(slice_1d(c->buf, off, len));
        break;
    }
    case COLL_BROADCAST:
        v = rpc_value_new_tensor(rpc_tensor_ref(c->input));
        break;
    case COLL_ALLGATHER:
        v = rpc_value_new_list();
        for (guint i = 0; i < pg->n; i++) {
            rpc_value_list_append(v, rpc_value_new_tensor(c->items[i]));
            c->items[i] = NULL;
        }
        break;
    default:
        v = rpc_value_none();
    }
    rpc_executor_trace(pg->ex, &tk_done, pg->id, c->seq, 0, coll_name(c));
    coll_free(c);
    rpc_future_complete_if_needed(f, v);
    rpc_future_unref(f);
}

/* Applies buffered chunks while the awaited one is there.  c may be freed
 * when this returns (do not touch it, nor its group: a completion callback
 * may have freed that too). */
static void
coll_progress(Coll *c)
{
    Entry *e = c->pg->entry;
    for (;;) {
        ChunkKey k = {c->seq, c->step};
        gpointer key, val;
        if (!g_hash_table_steal_extended(e->early, &k, &key, &val))
            return;
        g_free(key);
        Chunk *ch = val;
        GError *err = NULL;
        guint want = coll_src(c, c->step);
        gboolean ok;
        if (ch->kind != c->kind) {
            g_set_error(&err, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "%s #%" G_GINT64_FORMAT " on %s (rank %u) met a %s from %s (rank %u): "
                        "every member must issue the same collectives in the same order",
                        coll_name(c), c->seq, c->pg->names[c->pg->rank], c->pg->rank,
                        kind_names[ch->kind], c->pg->names[ch->src], ch->src);
            ok = FALSE;
        } else if (ch->src != want) {
            g_set_error(&err, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "%s #%" G_GINT64_FORMAT " step %u: a chunk from rank %u, expected rank %u",
                        coll_name(c), c->seq, c->step, ch->src, want);
            ok = FALSE;
        } else {
            ok = coll_apply(c, c->step, ch->src, ch->payload, &err);
        }
        chunk_free(ch);
        if (!ok) {
            coll_fail(c, err);
            return;
        }
        c->step++;
        if (c->step == c->n_steps) {
            coll_finish(c);
            return;
        }
        if (!coll_send_step(c, c->step, &err)) {
            coll_fail(c, err);
            return;
        }
    }
}

static char *
format_ms(RpcTime t)
{
    if (t % RPC_MS == 0)
        return g_strdup_printf("%" G_GINT64_FORMAT, t / RPC_MS);
    return g_strdup_printf("%.6g", (double)t / (double)RPC_MS);
}

static void
coll_on_timeout(gpointer data)
{
    Coll *c = data;
    c->timer = 0;
    guint src = coll_src(c, c->step);
    char *ms = format_ms(c->timeout);
    GError *err = g_error_new(RPC_ERROR, RPC_ERROR_RUNTIME,
                              "Timed out after %s ms waiting for %s #%" G_GINT64_FORMAT
                              " step %u from %s (rank %u)",
                              ms, coll_name(c), c->seq, c->step, c->pg->names[src], src);
    g_free(ms);
    coll_fail(c, err);
}

static Coll *
coll_new(RpcProcessGroup *pg, CollKind kind, RpcTime timeout)
{
    Coll *c = g_new0(Coll, 1);
    c->pg = pg;
    c->kind = kind;
    c->seq = pg->next_seq++;
    c->timeout = timeout == RPC_TIMEOUT_UNSET ? pg->timeout : timeout;
    if (c->timeout < 0)
        c->timeout = RPC_TIMEOUT_NEVER;
    c->result = rpc_future_new(pg->ex);
    char *desc = g_strdup_printf("%s #%" G_GINT64_FORMAT " of process group %" G_GINT64_FORMAT,
                                 kind_names[kind], c->seq, pg->id);
    rpc_future_set_description(c->result, desc);
    g_free(desc);
    return c;
}

/* Starts c and returns its future (transfer full). */
static RpcFuture *
coll_start(Coll *c, gint64 numel)
{
    RpcProcessGroup *pg = c->pg;
    RpcFuture *f = rpc_future_ref(c->result);
    rpc_executor_trace(pg->ex, &tk_start, pg->id, c->seq, numel, coll_name(c));
    GError *err = NULL;
    if (pg->destroying) {
        g_set_error(&err, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Process group %" G_GINT64_FORMAT " is being destroyed", pg->id);
        coll_fail(c, err);
        return f;
    }
    if (c->kind == COLL_BROADCAST && pg->rank == c->root) {
        for (guint i = 0; i < pg->n; i++) {
            if (i == pg->rank)
                continue;
            RpcValue *body = chunk_body(pg->id, c->seq, 0, c->kind, pg->rank,
                                        rpc_value_new_tensor(rpc_tensor_ref(c->input)));
            RpcFuture *ack = rpc_agent_send_request(pg->a, pg->members[i], RPC_MSG_PYTHON_CALL,
                                                    body, c->timeout, coll_name(c), &err);
            rpc_value_unref(body);
            if (ack == NULL) {
                coll_fail(c, err);
                return f;
            }
            rpc_future_unref(ack);
        }
        coll_finish(c);
        return f;
    }
    if (c->n_steps == 0) {
        coll_finish(c);
        return f;
    }
    g_hash_table_insert(pg->active, &c->seq, c);
    if (c->timeout > 0)
        c->timer = rpc_executor_call_after(pg->ex, c->timeout, coll_on_timeout, c, NULL);
    if (!coll_send_step(c, 0, &err)) {
        coll_fail(c, err);
        return f;
    }
    coll_progress(c);
    return f;
}

/* --- receiving chunks ----------------------------------------------------------- */

static void
entry_on_chunk(RpcAgent *self, Entry *e, gint64 seq, guint step, CollKind kind, guint src,
               const RpcValue *payload)
{
    Coll *c = e->pg != NULL ? g_hash_table_lookup(e->pg->active, &seq) : NULL;
    ChunkKey k = {seq, step};
    /* Late: the group is gone, or the collective is over (or past that
     * step); a duplicate, or a step the collective does not have, is
     * dropped too. */
    gboolean late = e->retired || (e->pg != NULL && c == NULL && seq < e->pg->next_seq) ||
                    (c != NULL && (step < c->step || step >= c->n_steps)) ||
                    g_hash_table_contains(e->early, &k);
    if (late) {
        rpc_executor_trace(rpc_agent_executor(self), &tk_drop, e->id, seq, step, "late chunk");
        return;
    }
    Chunk *ch = g_new(Chunk, 1);
    ch->kind = kind;
    ch->src = src;
    ch->payload = rpc_value_ref((RpcValue *)payload);
    ChunkKey *key = g_new(ChunkKey, 1);
    *key = k;
    g_hash_table_insert(e->early, key, ch);
    if (c != NULL)
        coll_progress(c);
}

/* _rpc_pg_chunk(group, seq, step, kind, src, payload) -> None */
static RpcValue *
pg_chunk_fn(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    gboolean ok = rpc_value_type(args) == RPC_VALUE_LIST && rpc_value_list_len(args) == 6;
    for (guint i = 0; ok && i < 5; i++)
        ok = rpc_value_type(rpc_value_list_get(args, i)) == RPC_VALUE_INT;
    gint64 kind = ok ? rpc_value_get_int(rpc_value_list_get(args, 3)) : 0;
    gint64 step = ok ? rpc_value_get_int(rpc_value_list_get(args, 2)) : -1;
    gint64 src = ok ? rpc_value_get_int(rpc_value_list_get(args, 4)) : -1;
    if (!ok || kind < COLL_ALLREDUCE || kind >= COLL_N_KINDS || step < 0 || step > G_MAXINT ||
        src < 0 || src > G_MAXINT) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "malformed process group chunk");
        return NULL;
    }
    Entry *e = entry_of(table_of(self), rpc_value_get_int(rpc_value_list_get(args, 0)));
    if (e->pg != NULL && (guint)src >= e->pg->n) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                    "process group chunk from rank %" G_GINT64_FORMAT " of a group of %u", src,
                    e->pg->n);
        return NULL;
    }
    entry_on_chunk(self, e, rpc_value_get_int(rpc_value_list_get(args, 1)), (guint)step,
                   (CollKind)kind, (guint)src, rpc_value_list_get(args, 5));
    return rpc_value_none();
}

static const RpcFunctionDef pg_chunk_def = {
    .name = RPC_PG_CHUNK_FUNC,
    .fn = pg_chunk_fn,
    .flags = RPC_FUNC_INTERNAL,
    .min_args = 6,
    .max_args = 6,
    .doc = "one step of a process-group collective",
};

/* --- groups ------------------------------------------------------------------------ */

RpcProcessGroup *
rpc_pg_new(RpcAgent *a, gint64 group_id, const gint *members, guint n, GError **error)
{
    g_return_val_if_fail(a != NULL, NULL);
    g_return_val_if_fail(members == NULL || n > 0, NULL);
    if (!rpc_agent_is_running(a)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        return NULL;
    }
    guint world = rpc_agent_world_size(a);
    if (members == NULL)
        n = world;
    gint *ids = g_new(gint, n);
    gint self = rpc_agent_id(a);
    gint rank = -1;
    for (guint i = 0; i < n; i++) {
        ids[i] = members ? members[i] : (gint)i;
        if (ids[i] < 0 || (guint)ids[i] >= world) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "Invalid process group member %d (world size %u)", ids[i], world);
            goto fail;
        }
        for (guint j = 0; j < i; j++)
            if (ids[j] == ids[i]) {
                g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "Duplicate process group member %d",
                            ids[i]);
                goto fail;
            }
        if (ids[i] == self)
            rank = (gint)i;
    }
    if (rank < 0) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                    "%s is not a member of process group %" G_GINT64_FORMAT, rpc_agent_name(a),
                    group_id);
        goto fail;
    }
    PgTable *table = table_of(a);
    Entry *e = entry_of(table, group_id);
    if (e->pg != NULL || e->retired) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    e->pg ? "Process group %" G_GINT64_FORMAT " already exists on %s"
                          : "Process group %" G_GINT64_FORMAT " was already used on %s",
                    group_id, rpc_agent_name(a));
        goto fail;
    }
    rpc_registry_add(rpc_agent_registry(a), &pg_chunk_def);
    RpcProcessGroup *pg = g_new0(RpcProcessGroup, 1);
    pg->a = a;
    pg->ex = rpc_agent_executor(a);
    pg->table = table_ref(table);
    pg->entry = e;
    pg->id = group_id;
    pg->rank = (guint)rank;
    pg->n = n;
    pg->members = ids;
    pg->names = g_new0(char *, n + 1);
    for (guint i = 0; i < n; i++)
        pg->names[i] = g_strdup(rpc_agent_worker_name(a, ids[i]));
    pg->next_seq = 1;
    pg->active = g_hash_table_new(g_int64_hash, g_int64_equal);
    pg->timeout = RPC_PG_DEFAULT_TIMEOUT;
    e->pg = pg;
    return pg;
fail:
    g_free(ids);
    return NULL;
}

static gint
cmp_coll_seq(gconstpointer x, gconstpointer y)
{
    const Coll *a = *(Coll *const *)x, *b = *(Coll *const *)y;
    return a->seq < b->seq ? -1 : a->seq > b->seq;
}

void
rpc_pg_free(RpcProcessGroup *pg)
{
    if (pg == NULL)
        return;
    pg->destroying = TRUE;
    /* Fail what is pending, in sequence order; callbacks cannot start new
     * collectives on a group being destroyed. */
    GPtrArray *pending = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, pg->active);
    while (g_hash_table_iter_next(&it, NULL, &v))
        g_ptr_array_add(pending, v);
    g_ptr_array_sort(pending, cmp_coll_seq);
    for (guint i = 0; i < pending->len; i++) {
        Coll *c = g_ptr_array_index(pending, i);
        GError *err = g_error_new(RPC_ERROR, RPC_ERROR_RUNTIME,
                                  "Process group %" G_GINT64_FORMAT
                                  " was destroyed before %s #%" G_GINT64_FORMAT " completed",
                                  pg->id, coll_name(c), c->seq);
        coll_fail(c, err);
    }
    g_ptr_array_unref(pending);
    pg->entry->pg = NULL;
    pg->entry->retired = TRUE;
    g_hash_table_remove_all(pg->entry->early);
    table_unref(pg->table);
    g_hash_table_unref(pg->active);
    g_strfreev(pg->names);
    g_free(pg->members);
    g_free(pg);
}

gint64
rpc_pg_id(const RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, -1);
    return pg->id;
}

guint
rpc_pg_rank(const RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, 0);
    return pg->rank;
}

guint
rpc_pg_size(const RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, 0);
    return pg->n;
}

RpcAgent *
rpc_pg_agent(RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, NULL);
    return pg->a;
}

RpcExecutor *
rpc_pg_executor(RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, NULL);
    return pg->ex;
}

RpcTime
rpc_pg_get_timeout(const RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, 0);
    return pg->timeout;
}

void
rpc_pg_set_timeout(RpcProcessGroup *pg, RpcTime timeout)
{
    g_return_if_fail(pg != NULL && timeout >= 0);
    pg->timeout = timeout;
}

gint64
rpc_pg_seq(const RpcProcessGroup *pg)
{
    g_return_val_if_fail(pg != NULL, 0);
    return pg->next_seq - 1;
}

/* --- the collectives ------------------------------------------------------------------ */

static RpcFuture *
reduction(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op, RpcPrecision prec,
          RpcTime timeout, CollKind kind)
{
    Coll *c = coll_new(pg, kind, timeout);
    c->op = op;
    c->prec = prec;
    c->buf = prec == RPC_PRECISION_NATIVE ? rpc_tensor_cast(t, rpc_tensor_dtype(t))
                                          : rpc_lowp_tensor(t, prec);
    c->n_steps = kind == COLL_ALLREDUCE ? 2 * (pg->n - 1) : pg->n - 1;
    return coll_start(c, rpc_tensor_numel(t));
}

RpcFuture *
rpc_pg_allreduce(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL && t != NULL, NULL);
    g_return_val_if_fail(op >= RPC_REDUCE_SUM && op <= RPC_REDUCE_MAX, NULL);
    return reduction(pg, t, op, RPC_PRECISION_NATIVE, timeout, COLL_ALLREDUCE);
}

RpcFuture *
rpc_pg_allreduce_lowp(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op,
                      RpcPrecision precision, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL && t != NULL, NULL);
    g_return_val_if_fail(op >= RPC_REDUCE_SUM && op <= RPC_REDUCE_MAX, NULL);
    g_return_val_if_fail(precision <= RPC_PRECISION_BF16, NULL);
    return reduction(pg, t, op, precision, timeout, COLL_ALLREDUCE);
}

RpcFuture *
rpc_pg_reduce_scatter(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL && t != NULL, NULL);
    g_return_val_if_fail(op >= RPC_REDUCE_SUM && op <= RPC_REDUCE_MAX, NULL);
    return reduction(pg, t, op, RPC_PRECISION_NATIVE, timeout, COLL_REDUCE_SCATTER);
}

RpcFuture *
rpc_pg_broadcast(RpcProcessGroup *pg, const RpcTensor *t, guint root, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL && t != NULL, NULL);
    g_return_val_if_fail(root < pg->n, NULL);
    Coll *c = coll_new(pg, COLL_BROADCAST, timeout);
    c->root = root;
    c->input = rpc_tensor_ref((RpcTensor *)t);
    c->n_steps = pg->rank == root ? 0 : 1;
    return coll_start(c, rpc_tensor_numel(t));
}

RpcFuture *
rpc_pg_allgather(RpcProcessGroup *pg, const RpcTensor *t, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL && t != NULL, NULL);
    Coll *c = coll_new(pg, COLL_ALLGATHER, timeout);
    c->items = g_new0(RpcTensor *, pg->n);
    c->items[pg->rank] = rpc_tensor_ref((RpcTensor *)t);
    c->n_steps = pg->n - 1;
    return coll_start(c, rpc_tensor_numel(t));
}

RpcFuture *
rpc_pg_barrier(RpcProcessGroup *pg, RpcTime timeout)
{
    g_return_val_if_fail(pg != NULL, NULL);
    Coll *c = coll_new(pg, COLL_BARRIER, timeout);
    c->n_steps = pg->n - 1;
    return coll_start(c, 0);
}
