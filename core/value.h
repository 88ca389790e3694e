/* value.h — the refcounted, immutable values that RPCs carry.
 *
 * An RpcValue is what a Python object is to torch.distributed.rpc: an
 * argument, a return value, the content of a future or an RRef.  Values are
 * immutable once shared; a list or dict may be filled only while its creator
 * holds the only reference (asserted).  Dicts keep insertion order (like
 * Python's), so walking one is deterministic.
 *
 * Errors are values too (RPC_VALUE_ERROR): a kind, the kind's name and a
 * message.  A future holds a value XOR an error value; a UDF's exception
 * travels back as an error value, as PyTorch's RemoteException does.
 *
 * Ownership: constructors return (transfer full); containers take (transfer
 * full) of what is put in them; getters return (transfer none).
 */
#ifndef RPC_VALUE_H
#define RPC_VALUE_H

#include <glib.h>

#include "core/error.h"

G_BEGIN_DECLS

typedef struct RpcValue RpcValue;
typedef struct RpcTensor RpcTensor;
typedef struct RpcFuture RpcFuture;

typedef enum {
    RPC_VALUE_NONE = 0,
    RPC_VALUE_BOOL,
    RPC_VALUE_INT,
    RPC_VALUE_DOUBLE,
    RPC_VALUE_STRING,
    RPC_VALUE_BYTES,
    RPC_VALUE_LIST,
    RPC_VALUE_DICT,
    RPC_VALUE_TENSOR,
    RPC_VALUE_WORKER_INFO,
    RPC_VALUE_ERROR,
    RPC_VALUE_FUTURE, /* local only: never serialized */
    RPC_VALUE_OPAQUE, /* local only: a C object with a type name (RRefs, user objects) */
    RPC_VALUE_N_TYPES
} RpcValueType;

/* A type for RPC_VALUE_OPAQUE payloads: refcounting and printing. */
typedef struct RpcOpaqueType {
    const char *name; /* "RRef", "MyClass", … */
    gpointer (*ref)(gpointer obj);
    void (*unref)(gpointer obj);
    char *(*repr)(gconstpointer obj);                    /* (transfer full), may be NULL */
    gboolean (*equal)(gconstpointer a, gconstpointer b); /* NULL: identity */
} RpcOpaqueType;

RpcValue *rpc_value_ref(RpcValue *v);
void rpc_value_unref(RpcValue *v);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcValue, rpc_value_unref)

RpcValue *rpc_value_none(void);
RpcValue *rpc_value_new_bool(gboolean b);
RpcValue *rpc_value_new_int(gint64 i);
RpcValue *rpc_value_new_double(double d);
RpcValue *rpc_value_new_string(const char *s);
RpcValue *rpc_value_new_string_take(char *s);
/* A string of `len` bytes copied from s (no NUL among them; s need not be
 * NUL-terminated).  Like rpc_value_new_string, the bytes are not checked
 * for UTF-8: that is the codec's business. */
RpcValue *rpc_value_new_string_len(const char *s, gsize len);
RpcValue *rpc_value_new_bytes(const guint8 *data, gsize len);
RpcValue *rpc_value_new_list(void);
RpcValue *rpc_value_new_dict(void);
/* An empty list / dict with room reserved for n items (appending more still
 * works).  A list made by rpc_value_new_list() has room for 4 in its own
 * block; an empty dict allocates nothing beyond its record. */
RpcValue *rpc_value_new_list_sized(guint n);
RpcValue *rpc_value_new_dict_sized(guint n);
RpcValue *rpc_value_new_tensor(RpcTensor *t); /* takes t */
RpcValue *rpc_value_new_worker_info(const char *name, gint id);
RpcValue *rpc_value_new_error(RpcErrorKind kind, const char *message);
RpcValue *rpc_value_new_error_user(const char *kind_name, const char *message);
RpcValue *rpc_value_new_error_from_gerror(const GError *error);
RpcValue *rpc_value_new_future(RpcFuture *f);                            /* takes a reference */
RpcValue *rpc_value_new_opaque(const RpcOpaqueType *type, gpointer obj); /* takes obj */

RpcValueType rpc_value_type(const RpcValue *v);
const char *rpc_value_type_name(RpcValueType t);
gboolean rpc_value_is_none(const RpcValue *v);

gboolean rpc_value_get_bool(const RpcValue *v);
gint64 rpc_value_get_int(const RpcValue *v);
double rpc_value_get_double(const RpcValue *v); /* ints widen */
const char *rpc_value_get_string(const RpcValue *v);
/* The string and its length in bytes (len nullable). */
const char *rpc_value_get_string_len(const RpcValue *v, gsize *len);
const guint8 *rpc_value_get_bytes(const RpcValue *v, gsize *len);
RpcTensor *rpc_value_get_tensor(const RpcValue *v);
RpcFuture *rpc_value_get_future(const RpcValue *v);
gpointer rpc_value_get_opaque(const RpcValue *v,
                              const RpcOpaqueType *type); /* NULL if other type */
const RpcOpaqueType *rpc_value_opaque_type(const RpcValue *v);

/* Worker info: "WorkerInfo(id=<id>, name=<name>)". */
const char *rpc_value_worker_name(const RpcValue *v);
gint rpc_value_worker_id(const RpcValue *v);

/* Lists. */
void rpc_value_list_append(RpcValue *list, RpcValue *item); /* takes item */
guint rpc_value_list_len(const RpcValue *list);
RpcValue *rpc_value_list_get(const RpcValue *list, guint i);

/* Dicts with string keys, insertion-ordered. Setting an existing key replaces. */
void rpc_value_dict_set(RpcValue *dict, const char *key, RpcValue *item); /* takes item */
RpcValue *rpc_value_dict_get(const RpcValue *dict, const char *key);      /* NULL if absent */
/* Adds key (transfer full, g_malloc'd) → item (transfer full) at the end if
 * key is absent and returns TRUE; if key is present, changes nothing, takes
 * neither and returns FALSE. */
gboolean rpc_value_dict_insert_take(RpcValue *dict, char *key, RpcValue *item);
guint rpc_value_dict_len(const RpcValue *dict);
const char *rpc_value_dict_key_at(const RpcValue *dict, guint i);
RpcValue *rpc_value_dict_value_at(const RpcValue *dict, guint i);

/* Errors. */
RpcErrorKind rpc_value_error_kind(const RpcValue *v);
const char *rpc_value_error_kind_name(const RpcValue *v);
const char *rpc_value_error_message(const RpcValue *v);
/* A GError (RPC_ERROR, code = kind) with the same message (transfer full). */
GError *rpc_value_error_to_gerror(const RpcValue *v);
void rpc_value_propagate_error(const RpcValue *v, GError **error);

/* Structural equality; tensors compare shape, dtype and elements exactly. */
gboolean rpc_value_equal(const RpcValue *a, const RpcValue *b);
/* A Python-like repr (transfer full): None, True, 3, 1.5, 'abc', [..], {..}. */
char *rpc_value_repr(const RpcValue *v);
/* TRUE if v (recursively, through lists and dicts) holds a future: such a
 * value can never be sent ("Can not pickle torch.futures.Future"). */
gboolean rpc_value_contains_future(const RpcValue *v);

G_END_DECLS

#endif /* RPC_VALUE_H */
