/* registry.h — the functions a worker can run on request.
 *
 * PyTorch sends builtin operators by qualified name (SCRIPT_CALL, checked
 * against the operator's schema at the caller) and Python functions by
 * reference (PYTHON_CALL; the callee must have the same function).  Here both
 * are C functions registered by name; each worker has its own registry, so a
 * test can remove a function from one worker only (conformance case 22).
 *
 * A function runs on one of the callee's virtual threads and may block
 * (sleep, nested rpc_sync).  It receives its positional arguments as a list
 * and its keyword arguments as a dict, and returns a value (transfer full)
 * or NULL + error; the error's kind travels back to the caller.  An
 * async_execution function returns an RPC_VALUE_FUTURE; the response is
 * deferred until that future completes.
 */
#ifndef RPC_REGISTRY_H
#define RPC_REGISTRY_H

#include <glib.h>

#include "core/value.h"

G_BEGIN_DECLS

typedef struct RpcAgent RpcAgent;
typedef struct RpcRegistry RpcRegistry;
typedef struct RpcClassDef RpcClassDef; /* core/object.h */

/* self: the callee's agent (for its executor, id, nested calls). */
typedef RpcValue *(*RpcFunc)(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                             GError **error);

typedef enum {
    RPC_FUNC_BUILTIN = 1 << 0,  /* an operator: SCRIPT_CALL, schema-checked at the caller */
    RPC_FUNC_ASYNC = 1 << 1,    /* @rpc.functions.async_execution: returns a future */
    RPC_FUNC_INTERNAL = 1 << 2, /* used by the runtime itself (barriers); hidden from listings */
} RpcFuncFlags;

typedef struct RpcFunctionDef {
    const char *name;     /* what users call it: "add", "my_function" */
    const char *qualname; /* on the wire: "aten::add"; NULL = name */
    RpcFunc fn;
    guint flags;     /* RpcFuncFlags */
    gint min_args;   /* builtins: positional arity accepted by the schema */
    gint max_args;   /* -1: any */
    const char *doc; /* one line, for `rpcsim list functions` */
} RpcFunctionDef;

RpcRegistry *rpc_registry_new(void);
/* A registry with the standard library (stdlib.h), the catalogue's classes
 * (object.h) and the runtime's internal functions. */
RpcRegistry *rpc_registry_new_default(void);
void rpc_registry_free(RpcRegistry *reg);

/* def is not copied: it must outlive the registry (static tables).  A later
 * add with the same name replaces the earlier one. */
void rpc_registry_add(RpcRegistry *reg, const RpcFunctionDef *def);
gboolean rpc_registry_remove(RpcRegistry *reg, const char *name);
/* By name or qualified name; NULL if absent. */
const RpcFunctionDef *rpc_registry_lookup(const RpcRegistry *reg, const char *name);
/* All definitions sorted by name (transfer container). */
GPtrArray *rpc_registry_list(const RpcRegistry *reg);

const char *rpc_function_wire_name(const RpcFunctionDef *def);

/* Classes (core/object.h), by name (cls->type.name).  cls is not copied:
 * it must outlive the registry.  A later add with the same name replaces. */
void rpc_registry_add_class(RpcRegistry *reg, const RpcClassDef *cls);
/* NULL if absent. */
const RpcClassDef *rpc_registry_lookup_class(const RpcRegistry *reg, const char *name);

/* Argument helpers with Python's error texts, for function bodies.
 * rpc_args_check: "<f>() takes <max> positional arguments but <n> were given",
 * "<f>() missing 2 required positional arguments: 'b' and 'c'". names lists
 * the parameters (for kwargs and for the messages); NULL-terminated. */
gboolean rpc_args_bind(const char *func, const RpcValue *args, const RpcValue *kwargs,
                       const char *const *names, guint n_required, RpcValue **out, GError **error);

G_END_DECLS

#endif /* RPC_REGISTRY_H */
