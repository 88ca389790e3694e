/* value.c — refcounted immutable values.
 *
 * Invariant: a value reachable from more than one reference is never
 * modified; list_append/dict_set assert the caller holds the only one.
 * None, True and False are static singletons whose refcount is ignored.
 *
 * Storage (the RPC hot path builds and frees a handful of values per call,
 * so each costs one allocation where it can): a record is 32 bytes from
 * rpc_pool, followed in the same block by its characters (str, bytes,
 * worker name, error message and user kind name) or by a list's first
 * slots (4 for rpc_value_new_list, n for rpc_value_new_list_sized).  A list
 * that outgrows its slots moves to a heap array; the slots stay unused.
 * A dict is an entries array (none while empty) with g_malloc'd keys and,
 * past DICT_INDEX_MIN keys, a hash index.  rpc_value_new_string_take keeps
 * the caller's block.  The block's size is recomputed at free time from
 * the type and these fields (value_extra), so the record stores no size.
 */
#include "core/value.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/future.h"
#include "core/pool.h"
#include "core/tensor.h"

typedef struct {
    char *key; /* owned, g_malloc'd */
    RpcValue *value;
} DictEntry;

/* VF_INLINE: the value's characters (string, bytes, worker name, error
 * texts) or a list's first slots live in the same block as the record, right
 * after it; otherwise they are separate heap blocks. */
enum { VF_INLINE = 1 << 0 };

struct RpcValue {
    gint refcount; /* < 0: static singleton */
    guint8 type;   /* RpcValueType */
    guint8 flags;  /* VF_* */
    union {
        gboolean b;
        gint64 i;
        double d;
        struct {
            char *s; /* string, or bytes (with len); NUL-terminated */
            gsize len;
        } str;
        struct {
            RpcValue **items; /* the n_inline trailing slots, or a heap array */
            guint len;
            guint cap;
            guint n_inline; /* slots allocated after the record */
        } list;
        struct {
            DictEntry *entries; /* insertion order; NULL while cap == 0 */
            guint len;
            guint cap;
            GHashTable *index; /* key → position + 1, built past DICT_INDEX_MIN keys */
        } dict;
        RpcTensor *tensor;
        struct {
            char *name; /* trailing, name_len + 1 bytes */
            guint32 name_len;
            gint id;
        } worker;
        struct {
            RpcErrorKind kind;
            guint32 extra;         /* trailing bytes: message, then a user kind name */
            const char *kind_name; /* static for built-in kinds, else trailing */
            char *message;         /* trailing */
        } error;
        RpcFuture *future;
        struct {
            const RpcOpaqueType *type;
            gpointer obj;
        } opaque;
    } u;
};

/* The trailing storage begins right after the record, which is a multiple
 * of 8 bytes, so pointer slots there are aligned. */
G_STATIC_ASSERT(sizeof(RpcValue) % sizeof(gpointer) == 0);
#define TRAILING(v) ((char *)((v) + 1))

/* A fresh list has room for this many items in its own block: a call body
 * [name, args, kwargs, async] and most argument lists fit, so building one
 * costs a single allocation. */
#define LIST_INLINE_DEFAULT 4

static RpcValue none_value = {-1, RPC_VALUE_NONE, 0, {0}};
static RpcValue true_value = {-1, RPC_VALUE_BOOL, 0, {.b = TRUE}};
static RpcValue false_value = {-1, RPC_VALUE_BOOL, 0, {.b = FALSE}};

static const char *const type_names[RPC_VALUE_N_TYPES] = {
    [RPC_VALUE_NONE] = "NoneType",   [RPC_VALUE_BOOL] = "bool",
    [RPC_VALUE_INT] = "int",         [RPC_VALUE_DOUBLE] = "float",
    [RPC_VALUE_STRING] = "str",      [RPC_VALUE_BYTES] = "bytes",
    [RPC_VALUE_LIST] = "list",       [RPC_VALUE_DICT] = "dict",
    [RPC_VALUE_TENSOR] = "Tensor",   [RPC_VALUE_WORKER_INFO] = "WorkerInfo",
    [RPC_VALUE_ERROR] = "Exception", [RPC_VALUE_FUTURE] = "Future",
    [RPC_VALUE_OPAQUE] = "object",
};

/* A record with `extra` trailing bytes, from the pool (records up to
 * RPC_POOL_MAX_SIZE bytes are recycled; larger ones are plain g_malloc). */
static inline RpcValue *
value_alloc(RpcValueType type, gsize extra)
{
    RpcValue *v = rpc_pool_alloc(sizeof(RpcValue) + extra);
    v->refcount = 1;
    v->type = (guint8)type;
    v->flags = 0;
    memset(&v->u, 0, sizeof v->u);
    return v;
}

/* The trailing bytes of v's block, as value_alloc() was asked for them. */
static inline gsize
value_extra(const RpcValue *v)
{
    switch (v->type) {
    case RPC_VALUE_STRING:
    case RPC_VALUE_BYTES:
        return (v->flags & VF_INLINE) ? v->u.str.len + 1 : 0;
    case RPC_VALUE_LIST:
        return (gsize)v->u.list.n_inline * sizeof(RpcValue *);
    case RPC_VALUE_WORKER_INFO:
        return (gsize)v->u.worker.name_len + 1;
    case RPC_VALUE_ERROR:
        return v->u.error.extra;
    default:
        return 0;
    }
}

RpcValue *
rpc_value_ref(RpcValue *v)
{
    g_return_val_if_fail(v != NULL, NULL);
    if (v->refcount > 0)
        v->refcount++;
    return v;
}

static void
value_free(RpcValue *v)
{
    switch (v->type) {
    case RPC_VALUE_STRING:
    case RPC_VALUE_BYTES:
        if (!(v->flags & VF_INLINE))
            g_free(v->u.str.s);
        break;
    case RPC_VALUE_LIST:
        for (guint i = 0; i < v->u.list.len; i++)
            rpc_value_unref(v->u.list.items[i]);
        if (v->u.list.items != (RpcValue **)TRAILING(v))
            g_free(v->u.list.items);
        break;
    case RPC_VALUE_DICT:
        for (guint i = 0; i < v->u.dict.len; i++) {
            g_free(v->u.dict.entries[i].key);
            rpc_value_unref(v->u.dict.entries[i].value);
        }
        g_free(v->u.dict.entries);
        if (v->u.dict.index)
            g_hash_table_unref(v->u.dict.index);
        break;
    case RPC_VALUE_TENSOR:
        rpc_tensor_unref(v->u.tensor);
        break;
    case RPC_VALUE_FUTURE:
        rpc_future_unref(v->u.future);
        break;
    case RPC_VALUE_OPAQUE:
        if (v->u.opaque.type->unref)
            v->u.opaque.type->unref(v->u.opaque.obj);
        break;
    default:
        break;
    }
    rpc_pool_free(v, sizeof(RpcValue) + value_extra(v));
}

void
rpc_value_unref(RpcValue *v)
{
    if (v == NULL || v->refcount < 0)
        return;
    g_assert(v->refcount > 0);
    if (--v->refcount == 0)
        value_free(v);
}

RpcValue *
rpc_value_none(void)
{
    return &none_value;
}

RpcValue *
rpc_value_new_bool(gboolean b)
{
    return b ? &true_value : &false_value;
}

RpcValue *
rpc_value_new_int(gint64 i)
{
    RpcValue *v = value_alloc(RPC_VALUE_INT, 0);
    v->u.i = i;
    return v;
}

RpcValue *
rpc_value_new_double(double d)
{
    RpcValue *v = value_alloc(RPC_VALUE_DOUBLE, 0);
    v->u.d = d;
    return v;
}

/* A string or bytes value holding a copy of len bytes, NUL-terminated, in
 * the record's own block. */
static RpcValue *
new_inline_str(RpcValueType type, const void *data, gsize len)
{
    RpcValue *v = value_alloc(type, len + 1);
    v->flags = VF_INLINE;
    v->u.str.s = TRAILING(v);
    v->u.str.len = len;
    if (len)
        memcpy(v->u.str.s, data, len);
    v->u.str.s[len] = '\0';
    return v;
}

RpcValue *
rpc_value_new_string(const char *s)
{
    g_return_val_if_fail(s != NULL, NULL);
    return new_inline_str(RPC_VALUE_STRING, s, strlen(s));
}

RpcValue *
rpc_value_new_string_len(const char *s, gsize len)
{
    g_return_val_if_fail(s != NULL || len == 0, NULL);
    g_return_val_if_fail(len == 0 || memchr(s, '\0', len) == NULL, NULL);
    return new_inline_str(RPC_VALUE_STRING, s, len);
}

RpcValue *
rpc_value_new_string_take(char *s)
{
    g_return_val_if_fail(s != NULL, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_STRING, 0);
    v->u.str.s = s;
    v->u.str.len = strlen(s);
    return v;
}

RpcValue *
rpc_value_new_bytes(const guint8 *data, gsize len)
{
    g_return_val_if_fail(data != NULL || len == 0, NULL);
    return new_inline_str(RPC_VALUE_BYTES, data, len);
}

static RpcValue *
new_list(guint n_inline)
{
    RpcValue *v = value_alloc(RPC_VALUE_LIST, (gsize)n_inline * sizeof(RpcValue *));
    v->u.list.items = (RpcValue **)TRAILING(v);
    v->u.list.cap = n_inline;
    v->u.list.n_inline = n_inline;
    return v;
}

RpcValue *
rpc_value_new_list(void)
{
    return new_list(LIST_INLINE_DEFAULT);
}

RpcValue *
rpc_value_new_list_sized(guint n)
{
    return new_list(n);
}

RpcValue *
rpc_value_new_dict(void)
{
    return value_alloc(RPC_VALUE_DICT, 0);
}

RpcValue *
rpc_value_new_dict_sized(guint n)
{
    RpcValue *v = value_alloc(RPC_VALUE_DICT, 0);
    if (n > 0) {
        v->u.dict.entries = g_new(DictEntry, n);
        v->u.dict.cap = n;
    }
    return v;
}

RpcValue *
rpc_value_new_tensor(RpcTensor *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_TENSOR, 0);
    v->u.tensor = t;
    return v;
}

RpcValue *
rpc_value_new_worker_info(const char *name, gint id)
{
    g_return_val_if_fail(name != NULL, NULL);
    gsize n = strlen(name);
    g_return_val_if_fail(n < G_MAXUINT32, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_WORKER_INFO, n + 1);
    v->u.worker.name = TRAILING(v);
    memcpy(v->u.worker.name, name, n + 1);
    v->u.worker.name_len = (guint32)n;
    v->u.worker.id = id;
    return v;
}

/* An error value; kind_name is copied into the block unless it is the
 * built-in name of `kind` (a static string). */
static RpcValue *
new_error(RpcErrorKind kind, const char *kind_name, gboolean builtin, const char *message)
{
    gsize mlen = strlen(message) + 1;
    gsize klen = builtin ? 0 : strlen(kind_name) + 1;
    g_return_val_if_fail(mlen + klen <= G_MAXUINT32, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_ERROR, mlen + klen);
    v->u.error.kind = kind;
    v->u.error.extra = (guint32)(mlen + klen);
    v->u.error.message = TRAILING(v);
    memcpy(v->u.error.message, message, mlen);
    if (builtin) {
        v->u.error.kind_name = kind_name;
    } else {
        memcpy(TRAILING(v) + mlen, kind_name, klen);
        v->u.error.kind_name = TRAILING(v) + mlen;
    }
    return v;
}

RpcValue *
rpc_value_new_error(RpcErrorKind kind, const char *message)
{
    g_return_val_if_fail(message != NULL, NULL);
    return new_error(kind, rpc_error_kind_name(kind), TRUE, message);
}

RpcValue *
rpc_value_new_error_user(const char *kind_name, const char *message)
{
    g_return_val_if_fail(kind_name != NULL && message != NULL, NULL);
    RpcErrorKind kind;
    if (rpc_error_kind_from_name(kind_name, &kind))
        return rpc_value_new_error(kind, message);
    return new_error(RPC_ERROR_USER, kind_name, FALSE, message);
}

RpcValue *
rpc_value_new_error_from_gerror(const GError *error)
{
    g_return_val_if_fail(error != NULL, NULL);
    RpcErrorKind kind = RPC_ERROR_RUNTIME;
    if (error->domain == RPC_ERROR && error->code >= 0 && error->code < RPC_ERROR_N_KINDS)
        kind = (RpcErrorKind)error->code;
    return rpc_value_new_error(kind, error->message);
}

RpcValue *
rpc_value_new_future(RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_FUTURE, 0);
    v->u.future = rpc_future_ref(f);
    return v;
}

RpcValue *
rpc_value_new_opaque(const RpcOpaqueType *type, gpointer obj)
{
    g_return_val_if_fail(type != NULL && obj != NULL, NULL);
    RpcValue *v = value_alloc(RPC_VALUE_OPAQUE, 0);
    v->u.opaque.type = type;
    v->u.opaque.obj = obj;
    return v;
}

RpcValueType
rpc_value_type(const RpcValue *v)
{
    g_return_val_if_fail(v != NULL, RPC_VALUE_NONE);
    return (RpcValueType)v->type;
}

const char *
rpc_value_type_name(RpcValueType t)
{
    if ((int)t < 0 || t >= RPC_VALUE_N_TYPES)
        return "unknown";
    return type_names[t];
}

gboolean
rpc_value_is_none(const RpcValue *v)
{
    return v != NULL && v->type == RPC_VALUE_NONE;
}

#define CHECK_TYPE(v, t, ret) g_return_val_if_fail((v) != NULL && (v)->type == (t), ret)

gboolean
rpc_value_get_bool(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_BOOL, FALSE);
    return v->u.b;
}

gint64
rpc_value_get_int(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_INT, 0);
    return v->u.i;
}

double
rpc_value_get_double(const RpcValue *v)
{
    g_return_val_if_fail(v != NULL, 0.0);
    if (v->type == RPC_VALUE_INT)
        return (double)v->u.i;
    CHECK_TYPE(v, RPC_VALUE_DOUBLE, 0.0);
    return v->u.d;
}

const char *
rpc_value_get_string(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_STRING, NULL);
    return v->u.str.s;
}

const char *
rpc_value_get_string_len(const RpcValue *v, gsize *len)
{
    CHECK_TYPE(v, RPC_VALUE_STRING, NULL);
    if (len)
        *len = v->u.str.len;
    return v->u.str.s;
}

const guint8 *
rpc_value_get_bytes(const RpcValue *v, gsize *len)
{
    CHECK_TYPE(v, RPC_VALUE_BYTES, NULL);
    if (len)
        *len = v->u.str.len;
    return (const guint8 *)v->u.str.s;
}

RpcTensor *
rpc_value_get_tensor(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_TENSOR, NULL);
    return v->u.tensor;
}

RpcFuture *
rpc_value_get_future(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_FUTURE, NULL);
    return v->u.future;
}

gpointer
rpc_value_get_opaque(const RpcValue *v, const RpcOpaqueType *type)
{
    if (v == NULL || v->type != RPC_VALUE_OPAQUE || (type && v->u.opaque.type != type))
        return NULL;
    return v->u.opaque.obj;
}

const RpcOpaqueType *
rpc_value_opaque_type(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_OPAQUE, NULL);
    return v->u.opaque.type;
}

const char *
rpc_value_worker_name(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_WORKER_INFO, NULL);
    return v->u.worker.name;
}

gint
rpc_value_worker_id(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_WORKER_INFO, -1);
    return v->u.worker.id;
}

/* Moves a list's items to a heap array with room for at least one more. */
static void
list_grow(RpcValue *list)
{
    guint cap = list->u.list.cap < 4 ? 8 : list->u.list.cap * 2;
    g_assert(cap > list->u.list.cap); /* guint overflow: 2^31 items */
    if (list->u.list.items == (RpcValue **)TRAILING(list)) {
        RpcValue **items = g_new(RpcValue *, cap);
        if (list->u.list.len)
            memcpy(items, list->u.list.items, list->u.list.len * sizeof(RpcValue *));
        list->u.list.items = items;
    } else {
        list->u.list.items = g_renew(RpcValue *, list->u.list.items, cap);
    }
    list->u.list.cap = cap;
}

void
rpc_value_list_append(RpcValue *list, RpcValue *item)
{
    g_return_if_fail(list != NULL && list->type == RPC_VALUE_LIST);
    g_return_if_fail(item != NULL);
    g_assert(list->refcount == 1); /* only the builder may append */
    if (G_UNLIKELY(list->u.list.len == list->u.list.cap))
        list_grow(list);
    list->u.list.items[list->u.list.len++] = item;
}

guint
rpc_value_list_len(const RpcValue *list)
{
    CHECK_TYPE(list, RPC_VALUE_LIST, 0);
    return list->u.list.len;
}

RpcValue *
rpc_value_list_get(const RpcValue *list, guint i)
{
    CHECK_TYPE(list, RPC_VALUE_LIST, NULL);
    g_return_val_if_fail(i < list->u.list.len, NULL);
    return list->u.list.items[i];
}

/* Small dicts are searched linearly; past this many keys a hash index keeps
 * building and lookup linear overall (a decoded message can hold many). */
#define DICT_INDEX_MIN 8

static DictEntry *
dict_find(const RpcValue *dict, const char *key)
{
    if (dict->u.dict.index) {
        guint pos = GPOINTER_TO_UINT(g_hash_table_lookup(dict->u.dict.index, key));
        return pos ? &dict->u.dict.entries[pos - 1] : NULL;
    }
    for (guint i = 0; i < dict->u.dict.len; i++) {
        DictEntry *e = &dict->u.dict.entries[i];
        if (strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

/* Appends an entry for a key known to be absent, taking `key`. */
static void
dict_append(RpcValue *dict, char *key, RpcValue *item)
{
    if (dict->u.dict.len == dict->u.dict.cap) {
        guint cap = dict->u.dict.cap < 2 ? 4 : dict->u.dict.cap * 2;
        g_assert(cap > dict->u.dict.cap);
        dict->u.dict.entries = g_renew(DictEntry, dict->u.dict.entries, cap);
        dict->u.dict.cap = cap;
    }
    guint len = ++dict->u.dict.len;
    dict->u.dict.entries[len - 1] = (DictEntry){key, item};
    if (dict->u.dict.index) {
        g_hash_table_insert(dict->u.dict.index, key, GUINT_TO_POINTER(len));
    } else if (len > DICT_INDEX_MIN) {
        /* keys are owned by the entries, which never move their strings */
        dict->u.dict.index = g_hash_table_new(g_str_hash, g_str_equal);
        for (guint i = 0; i < len; i++)
            g_hash_table_insert(dict->u.dict.index, dict->u.dict.entries[i].key,
                                GUINT_TO_POINTER(i + 1));
    }
}

void
rpc_value_dict_set(RpcValue *dict, const char *key, RpcValue *item)
{
    g_return_if_fail(dict != NULL && dict->type == RPC_VALUE_DICT);
    g_return_if_fail(key != NULL && item != NULL);
    g_assert(dict->refcount == 1);
    DictEntry *e = dict_find(dict, key);
    if (e) {
        rpc_value_unref(e->value);
        e->value = item;
        return;
    }
    dict_append(dict, g_strdup(key), item);
}

gboolean
rpc_value_dict_insert_take(RpcValue *dict, char *key, RpcValue *item)
{
    g_return_val_if_fail(dict != NULL && dict->type == RPC_VALUE_DICT, FALSE);
    g_return_val_if_fail(key != NULL && item != NULL, FALSE);
    g_assert(dict->refcount == 1);
    if (dict_find(dict, key) != NULL)
        return FALSE;
    dict_append(dict, key, item);
    return TRUE;
}

RpcValue *
rpc_value_dict_get(const RpcValue *dict, const char *key)
{
    CHECK_TYPE(dict, RPC_VALUE_DICT, NULL);
    g_return_val_if_fail(key != NULL, NULL);
    DictEntry *e = dict_find(dict, key);
    return e ? e->value : NULL;
}

guint
rpc_value_dict_len(const RpcValue *dict)
{
    CHECK_TYPE(dict, RPC_VALUE_DICT, 0);
    return dict->u.dict.len;
}

const char *
rpc_value_dict_key_at(const RpcValue *dict, guint i)
{
    CHECK_TYPE(dict, RPC_VALUE_DICT, NULL);
    g_return_val_if_fail(i < dict->u.dict.len, NULL);
    return dict->u.dict.entries[i].key;
}

RpcValue *
rpc_value_dict_value_at(const RpcValue *dict, guint i)
{
    CHECK_TYPE(dict, RPC_VALUE_DICT, NULL);
    g_return_val_if_fail(i < dict->u.dict.len, NULL);
    return dict->u.dict.entries[i].value;
}

RpcErrorKind
rpc_value_error_kind(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_ERROR, RPC_ERROR_RUNTIME);
    return v->u.error.kind;
}

const char *
rpc_value_error_kind_name(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_ERROR, NULL);
    return v->u.error.kind_name;
}

const char *
rpc_value_error_message(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_ERROR, NULL);
    return v->u.error.message;
}

GError *
rpc_value_error_to_gerror(const RpcValue *v)
{
    CHECK_TYPE(v, RPC_VALUE_ERROR, NULL);
    return g_error_new_literal(RPC_ERROR, v->u.error.kind, v->u.error.message);
}

void
rpc_value_propagate_error(const RpcValue *v, GError **error)
{
    g_propagate_error(error, rpc_value_error_to_gerror(v));
}

gboolean
rpc_value_equal(const RpcValue *a, const RpcValue *b)
{
    if (a == b)
        return TRUE;
    if (a == NULL || b == NULL)
        return FALSE;
    /* Python: 1 == 1.0 */
    if ((a->type == RPC_VALUE_INT || a->type == RPC_VALUE_DOUBLE) &&
        (b->type == RPC_VALUE_INT || b->type == RPC_VALUE_DOUBLE) && a->type != b->type)
        return rpc_value_get_double(a) == rpc_value_get_double(b);
    if (a->type != b->type)
        return FALSE;
    switch (a->type) {
    case RPC_VALUE_NONE:
        return TRUE;
    case RPC_VALUE_BOOL:
        return a->u.b == b->u.b;
    case RPC_VALUE_INT:
        return a->u.i == b->u.i;
    case RPC_VALUE_DOUBLE:
        return a->u.d == b->u.d;
    case RPC_VALUE_STRING:
    case RPC_VALUE_BYTES:
        return a->u.str.len == b->u.str.len && memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
    case RPC_VALUE_LIST:
        if (a->u.list.len != b->u.list.len)
            return FALSE;
        for (guint i = 0; i < a->u.list.len; i++)
            if (!rpc_value_equal(a->u.list.items[i], b->u.list.items[i]))
                return FALSE;
        return TRUE;
    case RPC_VALUE_DICT:
        if (a->u.dict.len != b->u.dict.len)
            return FALSE;
        for (guint i = 0; i < a->u.dict.len; i++) {
            const DictEntry *e = &a->u.dict.entries[i];
            if (!rpc_value_equal(e->value, rpc_value_dict_get(b, e->key)))
                return FALSE;
        }
        return TRUE;
    case RPC_VALUE_TENSOR:
        return rpc_tensor_dtype(a->u.tensor) == rpc_tensor_dtype(b->u.tensor) &&
               rpc_tensor_equal(a->u.tensor, b->u.tensor);
    case RPC_VALUE_WORKER_INFO:
        return a->u.worker.id == b->u.worker.id && strcmp(a->u.worker.name, b->u.worker.name) == 0;
    case RPC_VALUE_ERROR:
        return a->u.error.kind == b->u.error.kind &&
               strcmp(a->u.error.kind_name, b->u.error.kind_name) == 0 &&
               strcmp(a->u.error.message, b->u.error.message) == 0;
    case RPC_VALUE_FUTURE:
        return a->u.future == b->u.future;
    case RPC_VALUE_OPAQUE:
        if (a->u.opaque.type != b->u.opaque.type)
            return FALSE;
        if (a->u.opaque.type->equal)
            return a->u.opaque.type->equal(a->u.opaque.obj, b->u.opaque.obj);
        return a->u.opaque.obj == b->u.opaque.obj;
    default:
        return FALSE;
    }
}

static void
repr_string(GString *out, const char *s, gsize len)
{
    g_string_append_c(out, '\'');
    for (gsize i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        switch (c) {
        case '\'':
            g_string_append(out, "\\'");
            break;
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            if (c < 0x20 || c == 0x7f)
                g_string_append_printf(out, "\\x%02x", c);
            else
                g_string_append_c(out, (char)c);
        }
    }
    g_string_append_c(out, '\'');
}

/* Python's float repr: the shortest digits that read back exactly; fixed
 * notation for decimal exponents -4..15 (whole numbers keep ".0"), else
 * scientific with a two-digit exponent. */
static void
repr_double(GString *out, double d)
{
    if (isnan(d)) {
        g_string_append(out, "nan");
        return;
    }
    if (isinf(d)) {
        g_string_append(out, d > 0 ? "inf" : "-inf");
        return;
    }
    char buf[64];
    int prec = 1;
    for (; prec < 17; prec++) {
        g_snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
        if (g_ascii_strtod(buf, NULL) == d)
            break;
    }
    g_snprintf(buf, sizeof buf, "%.*e", prec - 1, d);
    int exp10 = atoi(strchr(buf, 'e') + 1);
    if (exp10 >= -4 && exp10 < 16) {
        int decimals = prec - 1 - exp10;
        g_string_append_printf(out, "%.*f", decimals > 0 ? decimals : 0, d);
        if (decimals <= 0)
            g_string_append(out, ".0");
        return;
    }
    /* mantissa digits without trailing zeros, then e±XX */
    char *e = strchr(buf, 'e');
    *e = '\0';
    g_string_append(out, buf);
    g_string_append_printf(out, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
}

static void
repr_into(GString *out, const RpcValue *v)
{
    switch (v->type) {
    case RPC_VALUE_NONE:
        g_string_append(out, "None");
        break;
    case RPC_VALUE_BOOL:
        g_string_append(out, v->u.b ? "True" : "False");
        break;
    case RPC_VALUE_INT:
        g_string_append_printf(out, "%" G_GINT64_FORMAT, v->u.i);
        break;
    case RPC_VALUE_DOUBLE:
        repr_double(out, v->u.d);
        break;
    case RPC_VALUE_STRING:
        repr_string(out, v->u.str.s, v->u.str.len);
        break;
    case RPC_VALUE_BYTES:
        g_string_append_c(out, 'b');
        repr_string(out, v->u.str.s, v->u.str.len);
        break;
    case RPC_VALUE_LIST:
        g_string_append_c(out, '[');
        for (guint i = 0; i < v->u.list.len; i++) {
            if (i)
                g_string_append(out, ", ");
            repr_into(out, v->u.list.items[i]);
        }
        g_string_append_c(out, ']');
        break;
    case RPC_VALUE_DICT:
        g_string_append_c(out, '{');
        for (guint i = 0; i < v->u.dict.len; i++) {
            const DictEntry *e = &v->u.dict.entries[i];
            if (i)
                g_string_append(out, ", ");
            repr_string(out, e->key, strlen(e->key));
            g_string_append(out, ": ");
            repr_into(out, e->value);
        }
        g_string_append_c(out, '}');
        break;
    case RPC_VALUE_TENSOR: {
        char *t = rpc_tensor_repr(v->u.tensor);
        g_string_append(out, t);
        g_free(t);
        break;
    }
    case RPC_VALUE_WORKER_INFO:
        g_string_append_printf(out, "WorkerInfo(id=%d, name=%s)", v->u.worker.id, v->u.worker.name);
        break;
    case RPC_VALUE_ERROR:
        g_string_append_printf(out, "%s(", v->u.error.kind_name);
        repr_string(out, v->u.error.message, strlen(v->u.error.message));
        g_string_append_c(out, ')');
        break;
    case RPC_VALUE_FUTURE:
        g_string_append(out, "<torch.futures.Future>");
        break;
    case RPC_VALUE_OPAQUE:
        if (v->u.opaque.type->repr) {
            char *s = v->u.opaque.type->repr(v->u.opaque.obj);
            g_string_append(out, s);
            g_free(s);
        } else {
            g_string_append_printf(out, "<%s object>", v->u.opaque.type->name);
        }
        break;
    default:
        g_string_append(out, "<?>");
    }
}

char *
rpc_value_repr(const RpcValue *v)
{
    g_return_val_if_fail(v != NULL, NULL);
    GString *out = g_string_new(NULL);
    repr_into(out, v);
    return g_string_free(out, FALSE);
}

gboolean
rpc_value_contains_future(const RpcValue *v)
{
    g_return_val_if_fail(v != NULL, FALSE);
    switch (v->type) {
    case RPC_VALUE_FUTURE:
        return TRUE;
    case RPC_VALUE_LIST:
        for (guint i = 0; i < v->u.list.len; i++)
            if (rpc_value_contains_future(v->u.list.items[i]))
                return TRUE;
        return FALSE;
    case RPC_VALUE_DICT:
        for (guint i = 0; i < v->u.dict.len; i++)
            if (rpc_value_contains_future(v->u.dict.entries[i].value))
                return TRUE;
        return FALSE;
    default:
        return FALSE;
    }
}
