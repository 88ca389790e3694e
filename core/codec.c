/* codec.c — RpcValue <-> payload bytes ("our pickle"); layout in codec.h.
 *
 * Encoding walks the value once, appending to a growable buffer (our own,
 * or the caller's RpcCodecBuffer for rpc_codec_encode_append); tensors go
 * to the caller's side list and are replaced by their index there.  Each
 * occurrence of a tensor is appended, so a tensor referenced twice is sent
 * twice (simpler and linear; PyTorch's pickler memoizes it — bandwidth only,
 * since tensors are immutable once shared).  On failure the side list is
 * restored to its length on entry and the references taken are dropped.
 *
 * The encoder enforces what the decoder checks (UTF-8 without NUL, nesting
 * cap, u32 lengths), so anything rpc_codec_encode() produces decodes, and
 * decode(encode(v)) re-encodes to the same bytes (the encoding is canonical).
 *
 * Decoding is a pure recursive-descent function over untrusted bytes.
 * Invariants:
 *   - every read is preceded by a check against the bytes that remain
 *     (`need`), phrased so it cannot overflow: n > len - pos;
 *   - a count is checked against the remaining bytes times the smallest
 *     encoding of one element before anything is allocated for it, so the
 *     memory allocated is O(input length);
 *   - recursion depth is capped at RPC_CODEC_MAX_DEPTH containers (lists,
 *     dicts, extensions), so the C stack is bounded;
 *   - on error everything built so far is released: one GError, no leak.
 * Offsets in error messages are relative to the start of the payload.
 *
 * Strings are checked eight bytes at a time for the common case (ASCII,
 * no NUL); only other bytes go through memchr and g_utf8_validate_len, which
 * also locate the offending byte for the error.  A decoded str value is
 * built straight from the payload bytes (one copy), a list or dict with
 * room for its `count` items.
 *
 * Cost: decoding a dict is linear in its length: a dict indexes its keys
 * past a few entries (value.c), so the duplicate check is a hash lookup;
 * duplicate keys are rejected so the decoded dict has exactly `count`
 * entries.
 */
#include "core/codec.h"

#include <string.h>

#include "core/tensor.h"

enum {
    TAG_NONE = 0x00,
    TAG_FALSE = 0x01,
    TAG_TRUE = 0x02,
    TAG_INT = 0x03,
    TAG_FLOAT = 0x04,
    TAG_STR = 0x05,
    TAG_BYTES = 0x06,
    TAG_LIST = 0x07,
    TAG_DICT = 0x08,
    TAG_TENSOR = 0x09,
    TAG_WORKER_INFO = 0x0a,
    TAG_ERROR = 0x0b,
    TAG_EXTENSION = 0x0c,
};

/* Smallest encodings, for checking counts against the remaining bytes:
 * a value is at least its tag; a dict entry at least a key length and a tag. */
#define MIN_VALUE_BYTES      1
#define MIN_DICT_ENTRY_BYTES 5

/* ---- encoding ------------------------------------------------------------- */

/* The output buffer: a g_malloc'd block, ours or the caller's
 * RpcCodecBuffer's (copied in and back out around an append). */
typedef struct {
    guint8 *data;
    gsize len;
    gsize cap;
} Buf;

static G_GNUC_NO_INLINE void
buf_grow(Buf *b, gsize n)
{
    gsize cap = b->cap ? b->cap : 64;
    while (cap - b->len < n)
        cap *= 2;
    b->data = g_realloc(b->data, cap);
    b->cap = cap;
}

static inline guint8 *
buf_reserve(Buf *b, gsize n)
{
    if (G_UNLIKELY(b->cap - b->len < n))
        buf_grow(b, n);
    guint8 *p = b->data + b->len;
    b->len += n;
    return p;
}

static inline void
put_u8(Buf *b, guint8 v)
{
    *buf_reserve(b, 1) = v;
}

static inline void
put_u32(Buf *b, guint32 v)
{
    guint8 *p = buf_reserve(b, 4);
    for (int i = 0; i < 4; i++)
        p[i] = (guint8)(v >> (8 * i));
}

static inline void
put_u64(Buf *b, guint64 v)
{
    guint8 *p = buf_reserve(b, 8);
    for (int i = 0; i < 8; i++)
        p[i] = (guint8)(v >> (8 * i));
}

typedef struct {
    Buf buf;
    GPtrArray *tensors; /* nullable */
    const RpcCodecHooks *hooks;
} Encoder;

/* TRUE if the n bytes at s are all ASCII without NUL (1..0x7f): then they
 * are valid UTF-8 with no NUL, and neither memchr nor g_utf8_validate need
 * to look at them.  Eight bytes at a time: a byte b sets its high bit in
 * (b - 1) | b exactly when b == 0 or b >= 0x80 (a borrow only starts at a
 * zero byte, which is reported anyway). */
static inline gboolean
plain_ascii(const char *s, gsize n)
{
    const guint64 ones = G_GUINT64_CONSTANT(0x0101010101010101);
    const guint64 highs = G_GUINT64_CONSTANT(0x8080808080808080);
    gsize i = 0;
    for (; i + 8 <= n; i += 8) {
        guint64 w;
        memcpy(&w, s + i, 8);
        if (((w - ones) | w) & highs)
            return FALSE;
    }
    for (; i < n; i++) {
        guint8 c = (guint8)s[i];
        if ((guint8)(c - 1) >= 0x7f)
            return FALSE;
    }
    return TRUE;
}

/* A str body: u32 length, then the n bytes at s.  `what` names the string
 * in the error ("string", "dict key", …). */
static gboolean
put_str_len(Encoder *e, const char *s, gsize n, const char *what, GError **error)
{
    if (n > G_MAXUINT32) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Can not pickle %s of %" G_GSIZE_FORMAT " bytes (at most %u)", what, n,
                    G_MAXUINT32);
        return FALSE;
    }
    if (!plain_ascii(s, n) && !g_utf8_validate_len(s, n, NULL)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Can not pickle %s: invalid UTF-8", what);
        return FALSE;
    }
    guint8 *p = buf_reserve(&e->buf, 4 + n);
    for (int i = 0; i < 4; i++)
        p[i] = (guint8)(n >> (8 * i));
    memcpy(p + 4, s, n);
    return TRUE;
}

static gboolean
put_str(Encoder *e, const char *s, const char *what, GError **error)
{
    return put_str_len(e, s, strlen(s), what, error);
}

static gboolean
put_count(Encoder *e, gsize n, const char *what, GError **error)
{
    if (n > G_MAXUINT32) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Can not pickle %s of %" G_GSIZE_FORMAT " elements (at most %u)", what, n,
                    G_MAXUINT32);
        return FALSE;
    }
    put_u32(&e->buf, (guint32)n);
    return TRUE;
}

static gboolean encode_value(Encoder *e, const RpcValue *v, guint depth, GError **error);

/* Enters one container level; depth counts the containers around v. */
static gboolean
enter(guint depth, GError **error)
{
    if (depth >= RPC_CODEC_MAX_DEPTH) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Can not pickle a value nested deeper than %d levels", RPC_CODEC_MAX_DEPTH);
        return FALSE;
    }
    return TRUE;
}

static gboolean
encode_opaque(Encoder *e, const RpcValue *v, guint depth, GError **error)
{
    const RpcOpaqueType *type = rpc_value_opaque_type(v);
    const char *name = type->name ? type->name : "object";
    if (e->hooks == NULL || e->hooks->pickle == NULL) {
        if (strcmp(name, "RRef") == 0) /* PyRRef's __getstate__, outside RPC */
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "Can not pickle rref in python pickler, rref can only be pickled "
                                "when using RPC");
        else
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Can not pickle %s object", name);
        return FALSE;
    }
    const char *ext_name = NULL;
    RpcValue *wire = NULL;
    GError *local = NULL;
    if (!e->hooks->pickle(e->hooks->data, v, &ext_name, &wire, &local)) {
        if (wire != NULL)
            rpc_value_unref(wire);
        if (local == NULL)
            local = g_error_new(RPC_ERROR, RPC_ERROR_RUNTIME, "Can not pickle %s object", name);
        g_propagate_error(error, local);
        return FALSE;
    }
    g_clear_error(&local); /* a hook that reports success and an error: success wins */
    if (ext_name == NULL || wire == NULL) {
        if (wire != NULL)
            rpc_value_unref(wire);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Can not pickle %s object: the pickle hook returned no %s", name,
                    ext_name == NULL ? "extension name" : "value");
        return FALSE;
    }
    put_u8(&e->buf, TAG_EXTENSION);
    gboolean ok =
        put_str(e, ext_name, "extension name", error) && encode_value(e, wire, depth + 1, error);
    rpc_value_unref(wire);
    return ok;
}

static gboolean
encode_value(Encoder *e, const RpcValue *v, guint depth, GError **error)
{
    switch (rpc_value_type(v)) {
    case RPC_VALUE_NONE:
        put_u8(&e->buf, TAG_NONE);
        return TRUE;
    case RPC_VALUE_BOOL:
        put_u8(&e->buf, rpc_value_get_bool(v) ? TAG_TRUE : TAG_FALSE);
        return TRUE;
    case RPC_VALUE_INT:
        put_u8(&e->buf, TAG_INT);
        put_u64(&e->buf, (guint64)rpc_value_get_int(v));
        return TRUE;
    case RPC_VALUE_DOUBLE: {
        double d = rpc_value_get_double(v);
        guint64 bits;
        memcpy(&bits, &d, sizeof bits);
        put_u8(&e->buf, TAG_FLOAT);
        put_u64(&e->buf, bits);
        return TRUE;
    }
    case RPC_VALUE_STRING: {
        gsize n = 0;
        const char *str = rpc_value_get_string_len(v, &n);
        put_u8(&e->buf, TAG_STR);
        return put_str_len(e, str, n, "string", error);
    }
    case RPC_VALUE_BYTES: {
        gsize n = 0;
        const guint8 *p = rpc_value_get_bytes(v, &n);
        put_u8(&e->buf, TAG_BYTES);
        if (!put_count(e, n, "bytes", error))
            return FALSE;
        if (n > 0)
            memcpy(buf_reserve(&e->buf, n), p, n);
        return TRUE;
    }
    case RPC_VALUE_LIST: {
        guint n = rpc_value_list_len(v);
        if (!enter(depth, error))
            return FALSE;
        put_u8(&e->buf, TAG_LIST);
        if (!put_count(e, n, "list", error))
            return FALSE;
        for (guint i = 0; i < n; i++)
            if (!encode_value(e, rpc_value_list_get(v, i), depth + 1, error))
                return FALSE;
        return TRUE;
    }
    case RPC_VALUE_DICT: {
        guint n = rpc_value_dict_len(v);
        if (!enter(depth, error))
            return FALSE;
        put_u8(&e->buf, TAG_DICT);
        if (!put_count(e, n, "dict", error))
            return FALSE;
        for (guint i = 0; i < n; i++) {
            if (!put_str(e, rpc_value_dict_key_at(v, i), "dict key", error) ||
                !encode_value(e, rpc_value_dict_value_at(v, i), depth + 1, error))
                return FALSE;
        }
        return TRUE;
    }
    case RPC_VALUE_TENSOR:
        if (e->tensors == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "Can not pickle a Tensor without a tensor list");
            return FALSE;
        }
        if (e->tensors->len >= G_MAXUINT32) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Can not pickle more than %u tensors in one message", G_MAXUINT32);
            return FALSE;
        }
        put_u8(&e->buf, TAG_TENSOR);
        put_u32(&e->buf, e->tensors->len);
        g_ptr_array_add(e->tensors, rpc_tensor_ref(rpc_value_get_tensor(v)));
        return TRUE;
    case RPC_VALUE_WORKER_INFO:
        put_u8(&e->buf, TAG_WORKER_INFO);
        put_u32(&e->buf, (guint32)rpc_value_worker_id(v));
        return put_str(e, rpc_value_worker_name(v), "worker name", error);
    case RPC_VALUE_ERROR: {
        RpcErrorKind kind = rpc_value_error_kind(v);
        put_u8(&e->buf, TAG_ERROR);
        put_u8(&e->buf, (guint8)kind);
        return put_str(e, rpc_value_error_kind_name(v), "exception type", error) &&
               put_str(e, rpc_value_error_message(v), "exception message", error);
    }
    case RPC_VALUE_FUTURE:
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_CODEC_MSG_PICKLE_FUTURE);
        return FALSE;
    case RPC_VALUE_OPAQUE:
        if (!enter(depth, error))
            return FALSE;
        return encode_opaque(e, v, depth, error);
    default:
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Can not pickle a value of type %d",
                    (int)rpc_value_type(v));
        return FALSE;
    }
}

/* Encodes v at the end of e->buf; on failure drops the tensor references
 * taken (the caller resets the buffer). */
static gboolean
encode_root(Encoder *e, const RpcValue *v, GError **error)
{
    GPtrArray *tensors = e->tensors;
    guint base = tensors ? tensors->len : 0;
    if (encode_value(e, v, 0, error))
        return TRUE;
    /* Steal (not remove) so the caller's free func, whatever it is, is not
     * involved: we drop exactly the references we took. */
    while (tensors != NULL && tensors->len > base)
        rpc_tensor_unref(g_ptr_array_steal_index(tensors, tensors->len - 1));
    return FALSE;
}

GBytes *
rpc_codec_encode(const RpcValue *v, GPtrArray *tensors, const RpcCodecHooks *hooks, GError **error)
{
    g_return_val_if_fail(v != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    Encoder e = {{NULL, 0, 0}, tensors, hooks};
    if (!encode_root(&e, v, error)) {
        g_free(e.buf.data);
        return NULL;
    }
    return g_bytes_new_take(e.buf.data, e.buf.len);
}

gboolean
rpc_codec_encode_append(RpcCodecBuffer *out, const RpcValue *v, GPtrArray *tensors,
                        const RpcCodecHooks *hooks, GError **error)
{
    g_return_val_if_fail(out != NULL && v != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    gsize base = out->len;
    Encoder e = {{out->data, base, out->cap}, tensors, hooks};
    gboolean ok = encode_root(&e, v, error);
    out->data = e.buf.data; /* it may have moved */
    out->cap = e.buf.cap;
    out->len = ok ? e.buf.len : base;
    return ok;
}

gboolean
rpc_codec_encode_call_append(RpcCodecBuffer *out, const char *name, const RpcValue *args,
                             const RpcValue *kwargs, gboolean is_async, GPtrArray *tensors,
                             const RpcCodecHooks *hooks, GError **error)
{
    g_return_val_if_fail(out != NULL && name != NULL, FALSE);
    g_return_val_if_fail(args == NULL || rpc_value_type(args) == RPC_VALUE_LIST, FALSE);
    g_return_val_if_fail(kwargs == NULL || rpc_value_type(kwargs) == RPC_VALUE_DICT, FALSE);
    gsize base = out->len;
    guint tbase = tensors ? tensors->len : 0;
    Encoder e = {{out->data, base, out->cap}, tensors, hooks};
    /* Exactly what encode_value writes for the 4-item list (depth 0). */
    put_u8(&e.buf, TAG_LIST);
    put_u32(&e.buf, 4);
    put_u8(&e.buf, TAG_STR);
    gboolean ok = put_str(&e, name, "string", error);
    if (ok && args != NULL) {
        ok = encode_value(&e, args, 1, error);
    } else if (ok) {
        put_u8(&e.buf, TAG_LIST);
        put_u32(&e.buf, 0);
    }
    if (ok && kwargs != NULL) {
        ok = encode_value(&e, kwargs, 1, error);
    } else if (ok) {
        put_u8(&e.buf, TAG_DICT);
        put_u32(&e.buf, 0);
    }
    if (ok)
        put_u8(&e.buf, is_async ? TAG_TRUE : TAG_FALSE);
    while (!ok && tensors != NULL && tensors->len > tbase)
        rpc_tensor_unref(g_ptr_array_steal_index(tensors, tensors->len - 1));
    out->data = e.buf.data;
    out->cap = e.buf.cap;
    out->len = ok ? e.buf.len : base;
    return ok;
}

guint8 *
rpc_codec_buffer_reserve(RpcCodecBuffer *b, gsize n)
{
    Buf buf = {b->data, b->len, b->cap};
    guint8 *p = buf_reserve(&buf, n);
    b->data = buf.data;
    b->len = buf.len;
    b->cap = buf.cap;
    return p;
}

void
rpc_codec_buffer_clear(RpcCodecBuffer *b)
{
    g_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct {
    const guint8 *data;
    gsize len;
    gsize pos;
    GPtrArray *tensors; /* nullable: no tensors */
    const RpcCodecHooks *hooks;
} Decoder;

static G_GNUC_NO_INLINE gboolean
truncated(Decoder *d, gsize n, const char *what, GError **error)
{
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "truncated payload: need %" G_GSIZE_FORMAT
                " byte%s for %s at offset %" G_GSIZE_FORMAT ", have %" G_GSIZE_FORMAT,
                n, n == 1 ? "" : "s", what, d->pos, d->len - d->pos);
    return FALSE;
}

/* TRUE if n more bytes are available; else a truncation error naming what
 * was being read. */
static inline gboolean
need(Decoder *d, gsize n, const char *what, GError **error)
{
    if (G_LIKELY(n <= d->len - d->pos))
        return TRUE;
    return truncated(d, n, what, error);
}

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

static inline gboolean
get_u8(Decoder *d, guint8 *out, const char *what, GError **error)
{
    if (!need(d, 1, what, error))
        return FALSE;
    *out = d->data[d->pos++];
    return TRUE;
}

static inline gboolean
get_u32(Decoder *d, guint32 *out, const char *what, GError **error)
{
    if (!need(d, 4, what, error))
        return FALSE;
    *out = rd_u32(d->data + d->pos);
    d->pos += 4;
    return TRUE;
}

static inline gboolean
get_u64(Decoder *d, guint64 *out, const char *what, GError **error)
{
    if (!need(d, 8, what, error))
        return FALSE;
    *out = rd_u64(d->data + d->pos);
    d->pos += 8;
    return TRUE;
}

/* Rejects a NUL byte or invalid UTF-8 among the n bytes at s (which start
 * at offset d->pos). */
static G_GNUC_NO_INLINE gboolean
check_str_slow(Decoder *d, const char *s, guint32 n, const char *what, GError **error)
{
    const char *nul = memchr(s, '\0', n);
    if (nul != NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "NUL byte in %s at offset %" G_GSIZE_FORMAT, what, d->pos + (gsize)(nul - s));
        return FALSE;
    }
    const char *bad = NULL;
    if (!g_utf8_validate_len(s, n, &bad)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "invalid UTF-8 in %s at offset %" G_GSIZE_FORMAT, what,
                    d->pos + (gsize)(bad - s));
        return FALSE;
    }
    return TRUE;
}

/* A str body, checked (no NUL, valid UTF-8) but not copied: *s points into
 * the payload, *n is its length. */
static gboolean
get_str_view(Decoder *d, const char **s, guint32 *n, const char *what, GError **error)
{
    if (!get_u32(d, n, what, error) || !need(d, *n, what, error))
        return FALSE;
    const char *p = (const char *)d->data + d->pos;
    if (!plain_ascii(p, *n) && !check_str_slow(d, p, *n, what, error))
        return FALSE;
    d->pos += *n;
    *s = p;
    return TRUE;
}

/* A str body: returns a NUL-terminated copy (transfer full) or NULL. */
static char *
get_str(Decoder *d, const char *what, GError **error)
{
    const char *s;
    guint32 n;
    if (!get_str_view(d, &s, &n, what, error))
        return NULL;
    char *copy = g_malloc((gsize)n + 1);
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

/* Checks that `count` elements of at least `min_each` bytes can fit in what
 * remains, before anything is allocated for them. */
static gboolean
check_count(Decoder *d, guint32 count, gsize min_each, const char *what, gsize at, GError **error)
{
    gsize have = d->len - d->pos;
    if ((guint64)count * min_each <= have)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "truncated payload: %s of %u items at offset %" G_GSIZE_FORMAT
                " needs at least %" G_GUINT64_FORMAT " bytes, have %" G_GSIZE_FORMAT,
                what, count, at, (guint64)count * min_each, have);
    return FALSE;
}

static gboolean
check_depth(Decoder *d, guint depth, gsize at, GError **error)
{
    if (depth < RPC_CODEC_MAX_DEPTH)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                "value nested deeper than %d levels at offset %" G_GSIZE_FORMAT,
                RPC_CODEC_MAX_DEPTH, at);
    return FALSE;
}

static RpcValue *decode_value(Decoder *d, guint depth, GError **error);

static RpcValue *
decode_list(Decoder *d, gsize at, guint depth, GError **error)
{
    guint32 n;
    if (!check_depth(d, depth, at, error) || !get_u32(d, &n, "a list count", error) ||
        !check_count(d, n, MIN_VALUE_BYTES, "list", at, error))
        return NULL;
    RpcValue *list = rpc_value_new_list_sized(n);
    for (guint32 i = 0; i < n; i++) {
        RpcValue *item = decode_value(d, depth + 1, error);
        if (item == NULL) {
            rpc_value_unref(list);
            return NULL;
        }
        rpc_value_list_append(list, item);
    }
    return list;
}

static RpcValue *
decode_dict(Decoder *d, gsize at, guint depth, GError **error)
{
    guint32 n;
    if (!check_depth(d, depth, at, error) || !get_u32(d, &n, "a dict count", error) ||
        !check_count(d, n, MIN_DICT_ENTRY_BYTES, "dict", at, error))
        return NULL;
    RpcValue *dict = rpc_value_new_dict_sized(n);
    for (guint32 i = 0; i < n; i++) {
        gsize key_at = d->pos;
        char *key = get_str(d, "a dict key", error);
        if (key == NULL)
            goto fail;
        /* the dict indexes itself past a few keys, so this stays linear */
        if (rpc_value_dict_get(dict, key) != NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "duplicate dict key '%s' at offset %" G_GSIZE_FORMAT, key, key_at);
            g_free(key);
            goto fail;
        }
        RpcValue *item = decode_value(d, depth + 1, error);
        if (item == NULL) {
            g_free(key);
            goto fail;
        }
        gboolean added = rpc_value_dict_insert_take(dict, key, item);
        g_assert(added);
    }
    return dict;
fail:
    rpc_value_unref(dict);
    return NULL;
}

static RpcValue *
decode_error_value(Decoder *d, GError **error)
{
    guint8 kind;
    if (!get_u8(d, &kind, "an exception kind", error))
        return NULL;
    if (kind >= RPC_ERROR_N_KINDS) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "unknown exception kind %u at offset %" G_GSIZE_FORMAT, kind, d->pos - 1);
        return NULL;
    }
    gsize name_at = d->pos;
    char *name = get_str(d, "an exception type", error);
    if (name == NULL)
        return NULL;
    char *message = get_str(d, "an exception message", error);
    if (message == NULL) {
        g_free(name);
        return NULL;
    }
    /* Canonical form only, as the value constructors make it: a built-in
     * kind carries its own name, a user kind a name that is not built in. */
    RpcErrorKind named;
    gboolean builtin = rpc_error_kind_from_name(name, &named);
    RpcValue *v = NULL;
    if (kind == RPC_ERROR_USER ? builtin
                               : strcmp(name, rpc_error_kind_name((RpcErrorKind)kind)) != 0) {
        g_set_error(
            error, RPC_ERROR, RPC_ERROR_RUNTIME,
            "exception kind %u does not match its type name '%s' at offset %" G_GSIZE_FORMAT, kind,
            name, name_at);
    } else if (kind == RPC_ERROR_USER) {
        v = rpc_value_new_error_user(name, message);
    } else {
        v = rpc_value_new_error((RpcErrorKind)kind, message);
    }
    g_free(name);
    g_free(message);
    return v;
}

static RpcValue *
decode_extension(Decoder *d, gsize at, guint depth, GError **error)
{
    if (!check_depth(d, depth, at, error))
        return NULL;
    char *name = get_str(d, "an extension name", error);
    if (name == NULL)
        return NULL;
    RpcValue *wire = decode_value(d, depth + 1, error);
    RpcValue *v = NULL;
    if (wire == NULL)
        goto out;
    if ((d->hooks == NULL || d->hooks->unpickle == NULL) && strcmp(name, "RRef") == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Can not unpickle rref in python pickler, rref can only be unpickled "
                            "when using RPC");
        goto out;
    }
    if (d->hooks == NULL || d->hooks->unpickle == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Can not unpickle extension '%s' without codec hooks (offset %" G_GSIZE_FORMAT
                    ")",
                    name, at);
        goto out;
    }
    GError *local = NULL;
    v = d->hooks->unpickle(d->hooks->data, name, wire, &local);
    if (v == NULL) {
        if (local == NULL)
            local = g_error_new(RPC_ERROR, RPC_ERROR_RUNTIME,
                                "Can not unpickle extension '%s' (offset %" G_GSIZE_FORMAT ")",
                                name, at);
        g_propagate_error(error, local);
    } else {
        g_clear_error(&local);
    }
out:
    if (wire != NULL)
        rpc_value_unref(wire);
    g_free(name);
    return v;
}

static RpcValue *
decode_value(Decoder *d, guint depth, GError **error)
{
    gsize at = d->pos;
    guint8 tag;
    if (!get_u8(d, &tag, "a value tag", error))
        return NULL;
    switch (tag) {
    case TAG_NONE:
        return rpc_value_none();
    case TAG_FALSE:
        return rpc_value_new_bool(FALSE);
    case TAG_TRUE:
        return rpc_value_new_bool(TRUE);
    case TAG_INT: {
        guint64 u;
        if (!get_u64(d, &u, "an int", error))
            return NULL;
        return rpc_value_new_int((gint64)u);
    }
    case TAG_FLOAT: {
        guint64 u;
        double x;
        if (!get_u64(d, &u, "a float", error))
            return NULL;
        memcpy(&x, &u, sizeof x);
        return rpc_value_new_double(x);
    }
    case TAG_STR: {
        const char *s;
        guint32 n;
        if (!get_str_view(d, &s, &n, "a string", error))
            return NULL;
        return rpc_value_new_string_len(s, n);
    }
    case TAG_BYTES: {
        guint32 n;
        if (!get_u32(d, &n, "a bytes length", error) || !need(d, n, "bytes", error))
            return NULL;
        RpcValue *v = rpc_value_new_bytes(d->data + d->pos, n);
        d->pos += n;
        return v;
    }
    case TAG_LIST:
        return decode_list(d, at, depth, error);
    case TAG_DICT:
        return decode_dict(d, at, depth, error);
    case TAG_TENSOR: {
        guint32 idx;
        if (!get_u32(d, &idx, "a tensor index", error))
            return NULL;
        guint n = d->tensors ? d->tensors->len : 0;
        if (idx >= n) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "tensor index %u out of range (%u tensors) at offset %" G_GSIZE_FORMAT, idx,
                        n, at);
            return NULL;
        }
        return rpc_value_new_tensor(rpc_tensor_ref(g_ptr_array_index(d->tensors, idx)));
    }
    case TAG_WORKER_INFO: {
        guint32 id;
        if (!get_u32(d, &id, "a worker id", error))
            return NULL;
        char *name = get_str(d, "a worker name", error);
        if (name == NULL)
            return NULL;
        RpcValue *v = rpc_value_new_worker_info(name, (gint)(gint32)id);
        g_free(name);
        return v;
    }
    case TAG_ERROR:
        return decode_error_value(d, error);
    case TAG_EXTENSION:
        return decode_extension(d, at, depth, error);
    default:
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "unknown value tag 0x%02x at offset %" G_GSIZE_FORMAT, tag, at);
        return NULL;
    }
}

RpcCodecCallResult
rpc_codec_decode_call(const guint8 *data, gsize len, GPtrArray *tensors, const RpcCodecHooks *hooks,
                      RpcCodecCall *out, GError **error)
{
    g_return_val_if_fail(data != NULL || len == 0, RPC_CODEC_CALL_ERROR);
    g_return_val_if_fail(out != NULL && (error == NULL || *error == NULL), RPC_CODEC_CALL_ERROR);
    /* The prefix is only looked at: anything unexpected before the first
     * hook can run goes to rpc_codec_decode, which reports it its way. */
    Decoder d = {data, len, 0, tensors, hooks};
    if (len < 1 + 4 + 1 + 4 || data[0] != TAG_LIST || rd_u32(data + 1) != 4 || data[5] != TAG_STR)
        return RPC_CODEC_CALL_NOT_A_CALL;
    d.pos = 6;
    guint32 n = rd_u32(data + d.pos);
    d.pos += 4;
    if (n > len - d.pos)
        return RPC_CODEC_CALL_NOT_A_CALL;
    const char *name = (const char *)data + d.pos;
    if (!plain_ascii(name, n) &&
        (memchr(name, '\0', n) != NULL || !g_utf8_validate_len(name, n, NULL)))
        return RPC_CODEC_CALL_NOT_A_CALL;
    d.pos += n;
    /* From here on, exactly what decode_list does for items 1..3 (depth 1). */
    RpcValue *args = decode_value(&d, 1, error);
    RpcValue *kwargs = args ? decode_value(&d, 1, error) : NULL;
    RpcValue *flag = kwargs ? decode_value(&d, 1, error) : NULL;
    if (flag != NULL && d.pos != len) {
        gsize extra = len - d.pos;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "trailing bytes after value: %" G_GSIZE_FORMAT
                    " byte%s at offset %" G_GSIZE_FORMAT,
                    extra, extra == 1 ? "" : "s", d.pos);
        rpc_value_unref(flag);
        flag = NULL;
    }
    if (flag == NULL) {
        rpc_value_unref(kwargs);
        rpc_value_unref(args);
        return RPC_CODEC_CALL_ERROR;
    }
    out->name = name;
    out->name_len = n;
    out->args = args;
    out->kwargs = kwargs;
    out->flag = flag;
    return RPC_CODEC_CALL_OK;
}

RpcValue *
rpc_codec_decode(const guint8 *data, gsize len, GPtrArray *tensors, const RpcCodecHooks *hooks,
                 GError **error)
{
    g_return_val_if_fail(data != NULL || len == 0, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    Decoder d = {data, len, 0, tensors, hooks};
    RpcValue *v = decode_value(&d, 0, error);
    if (v != NULL && d.pos != len) {
        gsize extra = len - d.pos;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "trailing bytes after value: %" G_GSIZE_FORMAT
                    " byte%s at offset %" G_GSIZE_FORMAT,
                    extra, extra == 1 ? "" : "s", d.pos);
        rpc_value_unref(v);
        return NULL;
    }
    return v;
}
