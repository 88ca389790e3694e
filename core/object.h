/* object.h — classes and their instances: what a Python object is to RPC.
 *
 * A class is a static RpcClassDef: a name, an __init__, and methods, each
 * an instance, static or class method, optionally @async_execution.  Classes
 * are registered per worker (rpc_registry_add_class), like functions: a
 * worker can only rebuild an instance of a class it knows, as Python's
 * unpickler needs the class in the callee's module.
 *
 * An instance is an RpcObject with mutable named fields, carried as an
 * RPC_VALUE_OPAQUE value whose RpcOpaqueType is the class's own (so its type
 * name is the class name: "MyClass").  Instances are shared by reference on
 * one worker (increment_value through an RRef proxy is seen by the next
 * get_value) and copied by value across workers: they travel as the codec
 * extension "object", [class name, {field: value, …}] in field insertion
 * order, so RRefs held in fields are forked like any other argument.
 *
 * Method calls (rpc_object_call_method) follow getattr(obj, m)(*args) on
 * the worker that holds obj; rpc_type_lookup_method is the caller-side check
 * that an RRef proxy makes on the fetched type (spec §3.5, §4.7).  Besides
 * classes, Tensors answer size(), add(x), view(*dims) and sum().
 *
 * Also here: the catalogue's classes (spec §11.0) MyClass, AsyncExecutionClass
 * and MyParameterServer, and the helpers get_rref_list and
 * call_method_on_rref, registered by rpc_object_register().
 */
#ifndef RPC_OBJECT_H
#define RPC_OBJECT_H

#include <glib.h>

#include "core/registry.h"
#include "core/value.h"

G_BEGIN_DECLS

typedef struct RpcObject RpcObject;
typedef struct RpcClassDef RpcClassDef;

typedef enum {
    RPC_METHOD_INSTANCE = 0, /* def m(self, …) */
    RPC_METHOD_STATIC,       /* @staticmethod */
    RPC_METHOD_CLASS,        /* @classmethod */
} RpcMethodKind;

/* A method body, run on worker `self`.  obj is the instance for instance
 * methods (and __init__), NULL for static and class methods.  Returns a
 * value (transfer full) or NULL + error; an async method returns an
 * RPC_VALUE_FUTURE. */
typedef RpcValue *(*RpcMethodFunc)(RpcAgent *self, const RpcClassDef *cls, RpcObject *obj,
                                   const RpcValue *args, const RpcValue *kwargs, GError **error);

typedef struct RpcMethodDef {
    const char *name;
    RpcMethodKind kind;
    RpcMethodFunc fn;
    guint flags; /* RPC_FUNC_ASYNC: @rpc.functions.async_execution */
} RpcMethodDef;

struct RpcClassDef {
    RpcOpaqueType type;          /* first: instances' opaque type; RPC_OBJECT_TYPE(name) */
    RpcMethodFunc init;          /* __init__ (nullable: takes no arguments) */
    const RpcMethodDef *methods; /* terminated by an entry whose name is NULL */
};

/* The opaque type every class uses (type.name is the class name). */
gpointer rpc_object_type_ref(gpointer obj);
void rpc_object_type_unref(gpointer obj);
char *rpc_object_type_repr(gconstpointer obj);
#define RPC_OBJECT_TYPE(class_name)                                                                \
    {                                                                                              \
        .name = (class_name), .ref = rpc_object_type_ref, .unref = rpc_object_type_unref,          \
        .repr = rpc_object_type_repr                                                               \
    }

/* A new instance with no fields, __init__ not run (transfer full value). */
RpcValue *rpc_object_new(const RpcClassDef *cls);
/* cls(*args, **kwargs): a new instance after __init__ (transfer full). */
RpcValue *rpc_object_construct(RpcAgent *self, const RpcClassDef *cls, const RpcValue *args,
                               const RpcValue *kwargs, GError **error);
/* The instance inside v, or NULL if v is not an object (transfer none). */
RpcObject *rpc_value_get_object(const RpcValue *v);
const RpcClassDef *rpc_object_class(const RpcObject *obj);
/* A field (transfer none), NULL if unset. */
RpcValue *rpc_object_get(const RpcObject *obj, const char *name);
/* Sets a field (takes v); a new name is appended to the field order. */
void rpc_object_set(RpcObject *obj, const char *name, RpcValue *v);
/* A class's method by name, NULL if none. */
const RpcMethodDef *rpc_class_lookup_method(const RpcClassDef *cls, const char *name);

/* getattr(target, method)(*args, **kwargs) on this worker (args: list,
 * kwargs: dict, both nullable, transfer none).  AttributeError
 * "'<Type>' object has no attribute '<method>'"; TypeError
 * "'<type>' object is not callable" for a field that is not a method. */
RpcValue *rpc_object_call_method(RpcAgent *self, const RpcValue *target, const char *method,
                                 const RpcValue *args, const RpcValue *kwargs, GError **error);
/* getattr(<type>, method) on the caller, from a type name (_get_type's
 * value): TRUE and the method's flags (RpcFuncFlags), or AttributeError
 * "type object '<Type>' has no attribute '<method>'" (PyTorch 1.13's text). */
gboolean rpc_type_lookup_method(RpcRegistry *reg, const char *type_name, const char *method,
                                guint *flags, GError **error);

/* Codec extension "object" (spec: see the file comment).  pickle: the
 * extension's wire value (transfer full); unpickle: the instance (transfer
 * full), AttributeError "Can't get attribute '<C>' on <module '__main__'>"
 * when reg does not know the class, RuntimeError when malformed. */
#define RPC_OBJECT_EXT_NAME "object"
gboolean rpc_object_pickle(const RpcValue *opaque, RpcValue **wire_value, GError **error);
RpcValue *rpc_object_unpickle(RpcRegistry *reg, const RpcValue *wire_value, GError **error);

/* The catalogue's classes, their constructors and class-level callables as
 * functions ("MyClass", "MyClass.my_static_method", …), get_rref_list and
 * call_method_on_rref. */
void rpc_object_register(RpcRegistry *reg);
extern const RpcClassDef rpc_class_my_class;
extern const RpcClassDef rpc_class_async_execution_class;
extern const RpcClassDef rpc_class_my_parameter_server;

G_END_DECLS

#endif /* RPC_OBJECT_H */
