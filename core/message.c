/* message.c — the RPC message envelope and its wire form (layout in message.h).
 *
 * A message is immutable once built except for its id (the agent stamps
 * requests just before sending); it is refcounted so the transport, the
 * faulty agent and a retry queue can share one without copying.  The count
 * is not atomic: a message lives on one thread (its wire GBytes may travel).
 *
 * The decoder is a pure function over untrusted bytes.  Invariants:
 *   - every read is preceded by a check that the bytes are there, phrased as
 *     n > len - pos so it cannot overflow;
 *   - nothing is allocated for a tensor until its shape has been validated
 *     (no negative entry, at most 1 GiB, no overflow) and its data is known
 *     to be present, so a hostile header cannot make us allocate more than
 *     the input justifies;
 *   - tensor data is memcpy'd out of the buffer, which need not be aligned;
 *   - the payload is not copied: rpc_message_decode_wire shares the wire's
 *     buffer (rpc_message_decode copies, having nothing to share); the
 *     codec decodes it later, lazily.
 * Messages without a payload or tensors share one empty GBytes / GPtrArray
 * (created once, never modified), so a bare message costs one record.
 * Every failure is one RuntimeError naming what was being read and where.
 */
#include "core/message.h"

#include <string.h>

#include "core/autograd.h"
#include "core/codec.h"
#include "core/error.h"
#include "core/pool.h"

#define WIRE_MAGIC      "RPCS"
#define WIRE_MAGIC_SIZE 4
/* dtype u8 + ndim u8 + the data of a 0-d float32: the smallest tensor. */
#define TENSOR_MIN_BYTES 6

struct RpcMessage {
    gint ref; /* plain: a message stays on one thread (see message.h) */
    RpcMessageType type;
    gint64 id;
    /* The payload is data[0 .. len), owned by `payload` (a message made
     * from a GBytes) or by `wire` (one built or decoded in an RpcWire:
     * `payload` is then a GBytes view made only on request, or NULL). */
    GBytes *payload;
    RpcWire *wire;
    const guint8 *data;
    gsize len;
    GPtrArray *tensors; /* RpcTensor*, rpc_tensor_unref; NULL: none */
};

/* ---- types ---------------------------------------------------------------- */

typedef struct {
    RpcMessageType type;
    const char *name;
} TypeName;

/* Indexed by the type's low byte (unique across the enum), so a lookup is
 * one load and a compare; the holes are zero (name NULL). */
#define T(name) [RPC_MSG_##name & 0xff] = {RPC_MSG_##name, #name}
static const TypeName type_names[] = {
    T(SCRIPT_CALL),
    T(SCRIPT_RET),
    T(PYTHON_CALL),
    T(PYTHON_RET),
    T(SCRIPT_REMOTE_CALL),
    T(PYTHON_REMOTE_CALL),
    T(REMOTE_RET),
    T(SCRIPT_RREF_FETCH_CALL),
    T(PYTHON_RREF_FETCH_CALL),
    T(SCRIPT_RREF_FETCH_RET),
    T(PYTHON_RREF_FETCH_RET),
    T(RREF_USER_DELETE),
    T(RREF_FORK_REQUEST),
    T(RREF_CHILD_ACCEPT),
    T(RREF_ACK),
    T(FORWARD_AUTOGRAD_REQ),
    T(FORWARD_AUTOGRAD_RESP),
    T(BACKWARD_AUTOGRAD_REQ),
    T(BACKWARD_AUTOGRAD_RESP),
    T(CLEANUP_AUTOGRAD_CONTEXT_REQ),
    T(CLEANUP_AUTOGRAD_CONTEXT_RESP),
    T(RUN_WITH_PROFILING_REQ),
    T(RUN_WITH_PROFILING_RESP),
    T(RREF_BACKWARD_REQ),
    T(RREF_BACKWARD_RESP),
    T(EXCEPTION),
    T(UNKNOWN),
};
#undef T

static const TypeName *
type_lookup(guint t)
{
    guint i = t & 0xff;
    if (i < G_N_ELEMENTS(type_names) && type_names[i].name != NULL &&
        (guint)type_names[i].type == t)
        return &type_names[i];
    return NULL;
}

gboolean
rpc_message_type_is_request(RpcMessageType t)
{
    return (t & RPC_MSG_REQUEST) != 0;
}

gboolean
rpc_message_type_is_response(RpcMessageType t)
{
    return (t & RPC_MSG_RESPONSE) != 0;
}

gboolean
rpc_message_type_is_known(guint t)
{
    return type_lookup(t) != NULL;
}

const char *
rpc_message_type_name(RpcMessageType t)
{
    const TypeName *tn = type_lookup((guint)t);
    return tn ? tn->name : "UNKNOWN";
}

gboolean
rpc_message_type_from_name(const char *name, RpcMessageType *out)
{
    g_return_val_if_fail(name != NULL, FALSE);
    for (gsize i = 0; i < G_N_ELEMENTS(type_names); i++) {
        if (type_names[i].name != NULL && strcmp(type_names[i].name, name) == 0) {
            if (out)
                *out = type_names[i].type;
            return TRUE;
        }
    }
    return FALSE;
}

/* ---- the envelope --------------------------------------------------------- */

/* The shared empty payload and tensor table (process lifetime). */
static GBytes *
empty_payload(void)
{
    static GBytes *empty;
    if (g_once_init_enter(&empty))
        g_once_init_leave(&empty, g_bytes_new_static("", 0));
    return empty;
}

static GPtrArray *
empty_tensors(void)
{
    static GPtrArray *empty;
    if (g_once_init_enter(&empty))
        g_once_init_leave(&empty, g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref));
    return empty;
}

/* A message over data[0 .. len) owned by `payload` or `wire` (one of them,
 * taken); tensors (taken, nullable or empty: none).  No argument checks:
 * for this file's callers. */
static RpcMessage *
message_new(RpcMessageType type, gint64 id, GBytes *payload, RpcWire *wire, const guint8 *data,
            gsize len, GPtrArray *tensors)
{
    RpcMessage *m = rpc_pool_new_raw(RpcMessage);
    m->ref = 1;
    m->type = type;
    m->id = id;
    m->payload = payload;
    m->wire = wire;
    m->data = data;
    m->len = len;
    if (tensors != NULL && tensors->len == 0 && tensors != empty_tensors()) {
        g_ptr_array_unref(tensors);
        tensors = NULL;
    }
    m->tensors = tensors; /* NULL: none (rpc_message_tensors shows the shared empty list) */
    return m;
}

RpcMessage *
rpc_message_new(RpcMessageType type, gint64 id, GBytes *payload, GPtrArray *tensors)
{
    g_return_val_if_fail(rpc_message_type_is_known((guint)type), NULL);
    g_return_val_if_fail(payload == NULL || g_bytes_get_size(payload) <= G_MAXUINT32, NULL);
    g_return_val_if_fail(tensors == NULL || tensors->len <= G_MAXUINT32, NULL);
    if (payload == NULL)
        payload = g_bytes_ref(empty_payload());
    gsize len;
    const guint8 *data = g_bytes_get_data(payload, &len);
    return message_new(type, id, payload, NULL, data, len, tensors);
}

RpcMessage *
rpc_message_ref(RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, NULL);
    m->ref++;
    return m;
}

void
rpc_message_unref(RpcMessage *m)
{
    if (m == NULL || --m->ref > 0)
        return;
    if (m->payload != NULL)
        g_bytes_unref(m->payload);
    rpc_wire_unref(m->wire);
    if (m->tensors != NULL)
        g_ptr_array_unref(m->tensors);
    rpc_pool_delete(RpcMessage, m);
}

RpcMessageType
rpc_message_type(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, RPC_MSG_UNKNOWN);
    return m->type;
}

gint64
rpc_message_id(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, -1);
    return m->id;
}

void
rpc_message_set_id(RpcMessage *m, gint64 id)
{
    g_return_if_fail(m != NULL);
    m->id = id;
}

GBytes *
rpc_message_payload(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, NULL);
    if (m->payload == NULL) {
        /* A cache on an otherwise immutable message (see message.h). */
        RpcMessage *mm = (RpcMessage *)m;
        gsize off = (gsize)(m->data - rpc_wire_data(m->wire));
        mm->payload = rpc_wire_bytes(m->wire, off, m->len);
    }
    return m->payload;
}

const guint8 *
rpc_message_payload_data(const RpcMessage *m, gsize *len)
{
    g_return_val_if_fail(m != NULL && len != NULL, NULL);
    *len = m->len;
    return m->data;
}

GPtrArray *
rpc_message_tensors(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, NULL);
    return m->tensors ? m->tensors : empty_tensors();
}

/* ---- encoding ------------------------------------------------------------- */

static gsize
dtype_size(RpcDType dtype)
{
    return dtype == RPC_DTYPE_FLOAT64 ? sizeof(double) : sizeof(float);
}

static inline guint8 *
wr_u16(guint8 *p, guint16 v)
{
    v = GUINT16_TO_LE(v);
    memcpy(p, &v, 2);
    return p + 2;
}

static inline guint8 *
wr_u32(guint8 *p, guint32 v)
{
    v = GUINT32_TO_LE(v);
    memcpy(p, &v, 4);
    return p + 4;
}

static inline guint8 *
wr_u64(guint8 *p, guint64 v)
{
    v = GUINT64_TO_LE(v);
    memcpy(p, &v, 8);
    return p + 8;
}

/* Copies n elements of size es between host order and little-endian (the
 * same operation both ways). */
static void
copy_le(guint8 *dst, const guint8 *src, gsize n, gsize es)
{
#if G_BYTE_ORDER == G_LITTLE_ENDIAN
    if (n > 0)
        memcpy(dst, src, n * es);
#else
    for (gsize i = 0; i < n; i++)
        for (gsize b = 0; b < es; b++)
            dst[i * es + b] = src[i * es + es - 1 - b];
#endif
}

static gsize
tensors_wire_size(const GPtrArray *tensors)
{
    gsize total = 4;
    for (guint i = 0; i < tensors->len; i++) {
        const RpcTensor *t = g_ptr_array_index(tensors, i);
        total += 2 + 8 * (gsize)rpc_tensor_ndim(t) + rpc_tensor_nbytes(t);
    }
    return total;
}

gsize
rpc_message_wire_size(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, 0);
    return RPC_WIRE_HEADER_SIZE + m->len + tensors_wire_size(rpc_message_tensors(m));
}

static guint8 *
write_header(guint8 *p, RpcMessageType type, gint64 id, gsize plen)
{
    memcpy(p, WIRE_MAGIC, WIRE_MAGIC_SIZE);
    p += WIRE_MAGIC_SIZE;
    *p++ = RPC_WIRE_VERSION;
    *p++ = 0; /* flags */
    p = wr_u16(p, (guint16)type);
    p = wr_u64(p, (guint64)id);
    return wr_u32(p, (guint32)plen);
}

static guint8 *
write_tensors(guint8 *p, const GPtrArray *tensors)
{
    p = wr_u32(p, tensors->len);
    for (guint i = 0; i < tensors->len; i++) {
        const RpcTensor *t = g_ptr_array_index(tensors, i);
        guint ndim = rpc_tensor_ndim(t);
        const gint64 *shape = rpc_tensor_shape(t);
        gsize es = dtype_size(rpc_tensor_dtype(t));
        gsize numel = (gsize)rpc_tensor_numel(t);
        *p++ = (guint8)rpc_tensor_dtype(t) | (rpc_ag_requires_grad(t) ? RPC_WIRE_REQUIRES_GRAD : 0);
        *p++ = (guint8)ndim;
        for (guint k = 0; k < ndim; k++)
            p = wr_u64(p, (guint64)shape[k]);
        copy_le(p, rpc_tensor_data(t), numel, es);
        p += numel * es;
    }
    return p;
}

GBytes *
rpc_message_encode(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, NULL);
    gsize total = rpc_message_wire_size(m);
    guint8 *out = g_malloc(total);
    guint8 *p = write_header(out, m->type, m->id, m->len);
    if (m->len > 0)
        memcpy(p, m->data, m->len);
    p = write_tensors(p + m->len, rpc_message_tensors(m));
    g_assert((gsize)(p - out) == total);
    return g_bytes_new_take(out, total);
}

RpcWire *
rpc_message_encode_wire(const RpcMessage *m)
{
    g_return_val_if_fail(m != NULL, NULL);
    gsize total = rpc_message_wire_size(m);
    guint8 *out;
    RpcWire *w = rpc_wire_new_uninit(total, &out);
    guint8 *p = write_header(out, m->type, m->id, m->len);
    if (m->len > 0)
        memcpy(p, m->data, m->len);
    p = write_tensors(p + m->len, rpc_message_tensors(m));
    g_assert((gsize)(p - out) == total);
    return w;
}

gboolean
rpc_message_value_body(RpcCodecBuffer *out, gconstpointer body, GPtrArray *tensors,
                       const RpcCodecHooks *hooks, GError **error)
{
    return rpc_codec_encode_append(out, body, tensors, hooks, error);
}

RpcMessage *
rpc_message_build(RpcMessageType type, gint64 id, const RpcValue *body, GPtrArray *tensors,
                  const RpcCodecHooks *hooks, RpcCodecBuffer *scratch, RpcWire **wire,
                  GError **error)
{
    g_return_val_if_fail(body != NULL, NULL);
    return rpc_message_build_with(type, id, rpc_message_value_body, body, tensors, hooks, scratch,
                                  wire, error);
}

RpcMessage *
rpc_message_build_with(RpcMessageType type, gint64 id, RpcMessageBodyFunc encode,
                       gconstpointer body, GPtrArray *tensors, const RpcCodecHooks *hooks,
                       RpcCodecBuffer *scratch, RpcWire **wire, GError **error)
{
    g_return_val_if_fail(rpc_message_type_is_known((guint)type), NULL);
    g_return_val_if_fail(encode != NULL && tensors != NULL && wire != NULL, NULL);
    guint base = tensors->len;
    RpcCodecBuffer local = {NULL, 0, 0};
    RpcCodecBuffer *buf = scratch ? scratch : &local;
    buf->len = 0;
    rpc_codec_buffer_reserve(buf, RPC_WIRE_HEADER_SIZE);
    if (!encode(buf, body, tensors, hooks, error)) {
        rpc_codec_buffer_clear(&local);
        return NULL;
    }
    gsize plen = buf->len - RPC_WIRE_HEADER_SIZE;
    if (plen > G_MAXUINT32) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "message payload too large: %" G_GSIZE_FORMAT " bytes", plen);
        while (tensors->len > base)
            rpc_tensor_unref(g_ptr_array_steal_index(tensors, tensors->len - 1));
        rpc_codec_buffer_clear(&local);
        return NULL;
    }
    guint8 *end = write_tensors(rpc_codec_buffer_reserve(buf, tensors_wire_size(tensors)), tensors);
    g_assert(end == buf->data + buf->len);
    write_header(buf->data, type, id, plen);
    /* One exact-size copy: the buffer stays with the caller (or is freed). */
    *wire = rpc_wire_new(buf->data, buf->len);
    rpc_codec_buffer_clear(&local);
    /* The payload is a slice of the wire. */
    const guint8 *wdata = rpc_wire_data(*wire);
    return message_new(type, id, NULL, rpc_wire_ref(*wire), wdata + RPC_WIRE_HEADER_SIZE, plen,
                       tensors->len > 0 ? g_ptr_array_ref(tensors) : NULL);
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct {
    const guint8 *data;
    gsize len;
    gsize pos;
} Reader;

static inline guint32
rd_u32(const guint8 *p)
{
    return (guint32)p[0] | (guint32)p[1] << 8 | (guint32)p[2] << 16 | (guint32)p[3] << 24;
}

static inline guint64
rd_u64(const guint8 *p)
{
    return (guint64)rd_u32(p) | (guint64)rd_u32(p + 4) << 32;
}

/* TRUE if n more bytes are available; else a truncation error.  `what` is
 * printf'd after "for " and may use one %u argument (`index`). */
static G_GNUC_NO_INLINE gboolean
truncated(Reader *r, gsize n, const char *what, guint index, GError **error)
{
    char *thing = g_strdup_printf(what, index);
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "truncated message: need %" G_GSIZE_FORMAT
                " byte%s for %s at offset %" G_GSIZE_FORMAT ", have %" G_GSIZE_FORMAT,
                n, n == 1 ? "" : "s", thing, r->pos, r->len - r->pos);
    g_free(thing);
    return FALSE;
}

static inline gboolean
need(Reader *r, gsize n, const char *what, guint index, GError **error)
{
    return G_LIKELY(n <= r->len - r->pos) || truncated(r, n, what, index, error);
}

/* Reads tensor `index`; NULL + error if malformed or truncated. */
static RpcTensor *
read_tensor(Reader *r, guint index, GError **error)
{
    if (!need(r, 2, "the dtype and ndim of tensor %u", index, error))
        return NULL;
    gboolean requires_grad = (r->data[r->pos] & RPC_WIRE_REQUIRES_GRAD) != 0;
    guint dtype = r->data[r->pos] & ~RPC_WIRE_REQUIRES_GRAD;
    guint ndim = r->data[r->pos + 1];
    if (dtype != RPC_DTYPE_FLOAT32 && dtype != RPC_DTYPE_FLOAT64) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "tensor %u has unknown dtype %u at offset %" G_GSIZE_FORMAT, index, dtype,
                    r->pos);
        return NULL;
    }
    if (ndim > RPC_TENSOR_MAX_DIMS) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "tensor %u has %u dimensions (max %d)",
                    index, ndim, RPC_TENSOR_MAX_DIMS);
        return NULL;
    }
    r->pos += 2;
    if (!need(r, 8 * (gsize)ndim, "the shape of tensor %u", index, error))
        return NULL;
    gint64 shape[RPC_TENSOR_MAX_DIMS];
    for (guint k = 0; k < ndim; k++)
        shape[k] = (gint64)rd_u64(r->data + r->pos + 8 * k);
    r->pos += 8 * (gsize)ndim;

    /* Element count without overflow: anything over RPC_WIRE_MAX_BYTES of
     * data cannot be in a valid message and is `huge`.  The tensor is
     * allocated only once its data is known to be present. */
    gsize es = dtype_size((RpcDType)dtype);
    gboolean negative = FALSE, zero = FALSE, huge = FALSE;
    guint64 numel = 1;
    for (guint k = 0; k < ndim; k++) {
        negative |= shape[k] < 0;
        zero |= shape[k] == 0;
    }
    if (!negative && !zero) {
        for (guint k = 0; k < ndim && !huge; k++) {
            if ((guint64)shape[k] > RPC_WIRE_MAX_BYTES / numel)
                huge = TRUE;
            else
                numel *= (guint64)shape[k];
        }
    }
    if (zero)
        numel = 0;
    if (!huge && numel * es > RPC_WIRE_MAX_BYTES)
        huge = TRUE;

    GError *local = NULL;
    RpcTensor *t = NULL;
    if (negative) {
        /* tensor.c words this one (PyTorch's text); it rejects a negative
         * entry before it computes a size, so it allocates nothing. */
        t = rpc_tensor_new_checked((RpcDType)dtype, ndim, shape, &local);
        if (t != NULL) { /* cannot happen; never trust it blindly */
            rpc_tensor_unref(t);
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "tensor %u has a negative dimension",
                        index);
            return NULL;
        }
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "tensor %u: %s", index, local->message);
        g_error_free(local);
        return NULL;
    }
    if (huge) {
        GString *s = g_string_new("[");
        for (guint k = 0; k < ndim; k++)
            g_string_append_printf(s, "%s%" G_GINT64_FORMAT, k ? ", " : "", shape[k]);
        g_string_append_c(s, ']');
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "tensor %u of shape %s is too large for a message (at most %" G_GSIZE_FORMAT
                    " bytes)",
                    index, s->str, RPC_WIRE_MAX_BYTES);
        g_string_free(s, TRUE);
        return NULL;
    }
    gsize nbytes = (gsize)numel * es;
    if (!need(r, nbytes, "the data of tensor %u", index, error))
        return NULL;
    t = rpc_tensor_new_checked((RpcDType)dtype, ndim, shape, &local);
    if (t == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "tensor %u: %s", index, local->message);
        g_error_free(local);
        return NULL;
    }
    copy_le(rpc_tensor_data_mut(t), r->data + r->pos, (gsize)numel, es);
    r->pos += nbytes;
    if (requires_grad)
        rpc_ag_set_requires_grad(t, TRUE, NULL); /* a fresh leaf: cannot fail */
    return t;
}

/* wire (nullable): what data comes from, so the payload can share it. */
static RpcMessage *
decode(const guint8 *data, gsize len, RpcWire *wire, GError **error)
{
    if (len > RPC_WIRE_MAX_BYTES) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "message too large: %" G_GSIZE_FORMAT " bytes (max %" G_GSIZE_FORMAT ")", len,
                    RPC_WIRE_MAX_BYTES);
        return NULL;
    }
    /* A prefix that already differs from the magic is "bad magic", not
     * "truncated": a stream reader can drop the connection at once. */
    if (len > 0 && memcmp(data, WIRE_MAGIC, MIN(len, WIRE_MAGIC_SIZE)) != 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "bad magic");
        return NULL;
    }
    Reader r = {data, len, 0};
    if (!need(&r, WIRE_MAGIC_SIZE, "the magic", 0, error))
        return NULL;
    r.pos += WIRE_MAGIC_SIZE;
    if (!need(&r, 1, "the version", 0, error))
        return NULL;
    if (data[r.pos] != RPC_WIRE_VERSION) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unsupported wire version %u",
                    data[r.pos]);
        return NULL;
    }
    r.pos++;
    if (!need(&r, 1, "the flags", 0, error))
        return NULL;
    if (data[r.pos] != 0) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unsupported flags 0x%02x at offset %d",
                    data[r.pos], 5);
        return NULL;
    }
    r.pos++;
    if (!need(&r, 2, "the type", 0, error))
        return NULL;
    guint type = (guint)data[r.pos] | (guint)data[r.pos + 1] << 8;
    if (!rpc_message_type_is_known(type)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown message type 0x%x", type);
        return NULL;
    }
    r.pos += 2;
    if (!need(&r, 8, "the id", 0, error))
        return NULL;
    gint64 id = (gint64)rd_u64(data + r.pos);
    r.pos += 8;
    if (!need(&r, 4, "the payload length", 0, error))
        return NULL;
    guint32 plen = rd_u32(data + r.pos);
    r.pos += 4;
    if (!need(&r, plen, "the payload", 0, error))
        return NULL;
    gsize payload_at = r.pos;
    r.pos += plen;
    if (!need(&r, 4, "the tensor count", 0, error))
        return NULL;
    guint32 count = rd_u32(data + r.pos);
    r.pos += 4;
    if ((guint64)count * TENSOR_MIN_BYTES > r.len - r.pos) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "truncated message: %u tensors need at least %" G_GUINT64_FORMAT
                    " bytes at offset %" G_GSIZE_FORMAT ", have %" G_GSIZE_FORMAT,
                    count, (guint64)count * TENSOR_MIN_BYTES, r.pos, r.len - r.pos);
        return NULL;
    }
    GPtrArray *tensors =
        count > 0 ? g_ptr_array_new_full(count, (GDestroyNotify)rpc_tensor_unref) : NULL;
    for (guint32 i = 0; i < count; i++) {
        RpcTensor *t = read_tensor(&r, i, error);
        if (t == NULL)
            goto fail_tensors;
        g_ptr_array_add(tensors, t);
    }
    if (r.pos != len) {
        gsize extra = len - r.pos;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "trailing bytes after message: %" G_GSIZE_FORMAT
                    " byte%s at offset %" G_GSIZE_FORMAT,
                    extra, extra == 1 ? "" : "s", r.pos);
        goto fail_tensors;
    }
    if (plen == 0 || wire == NULL)
        return rpc_message_new((RpcMessageType)type, id,
                               plen ? g_bytes_new(data + payload_at, plen) : NULL, tensors);
    /* The payload is a slice of the wire. */
    return message_new((RpcMessageType)type, id, NULL, rpc_wire_ref(wire), data + payload_at, plen,
                       tensors);

fail_tensors:
    if (tensors != NULL)
        g_ptr_array_unref(tensors);
    return NULL;
}

RpcMessage *
rpc_message_decode(const guint8 *data, gsize len, GError **error)
{
    g_return_val_if_fail(data != NULL || len == 0, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    return decode(data, len, NULL, error);
}

RpcMessage *
rpc_message_decode_wire(RpcWire *wire, GError **error)
{
    g_return_val_if_fail(wire != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    return decode(rpc_wire_data(wire), rpc_wire_size(wire), wire, error);
}
