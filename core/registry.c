/* registry.c — name → function definition, per worker.
 *
 * Lookup is by name or by qualified (wire) name; listing sorts by name so it
 * never depends on hash order.
 */
#include "core/registry.h"

#include <string.h>

#include "core/ddp-train.h"
#include "core/error.h"
#include "core/object.h"
#include "core/stdlib.h"

struct RpcRegistry {
    GHashTable *by_name; /* name → def (defs not owned) */
    GHashTable *by_qual; /* qualname → def, only when it differs from name */
    GHashTable *classes; /* class name → RpcClassDef (not owned) */
    /* The last lookup's answer: a worker tends to call, and serve, the same
     * function many times in a row.  Cleared by add and remove.  Compared
     * by content (strcmp), never by pointer. */
    const char *last_key; /* the def's name or qualname that matched */
    const RpcFunctionDef *last;
};

RpcRegistry *
rpc_registry_new(void)
{
    RpcRegistry *reg = g_new0(RpcRegistry, 1);
    reg->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    reg->by_qual = g_hash_table_new(g_str_hash, g_str_equal);
    reg->classes = g_hash_table_new(g_str_hash, g_str_equal);
    return reg;
}

RpcRegistry *
rpc_registry_new_default(void)
{
    RpcRegistry *reg = rpc_registry_new();
    rpc_stdlib_register(reg);
    rpc_object_register(reg);
    rpc_ddp_train_register(reg);
    return reg;
}

void
rpc_registry_free(RpcRegistry *reg)
{
    if (reg == NULL)
        return;
    g_hash_table_unref(reg->by_name);
    g_hash_table_unref(reg->by_qual);
    g_hash_table_unref(reg->classes);
    g_free(reg);
}

const char *
rpc_function_wire_name(const RpcFunctionDef *def)
{
    return def->qualname ? def->qualname : def->name;
}

void
rpc_registry_add(RpcRegistry *reg, const RpcFunctionDef *def)
{
    g_return_if_fail(reg != NULL && def != NULL && def->name != NULL && def->fn != NULL);
    rpc_registry_remove(reg, def->name);
    reg->last = NULL;
    g_hash_table_insert(reg->by_name, (gpointer)def->name, (gpointer)def);
    if (def->qualname && strcmp(def->qualname, def->name) != 0)
        g_hash_table_insert(reg->by_qual, (gpointer)def->qualname, (gpointer)def);
}

gboolean
rpc_registry_remove(RpcRegistry *reg, const char *name)
{
    g_return_val_if_fail(reg != NULL && name != NULL, FALSE);
    const RpcFunctionDef *def = g_hash_table_lookup(reg->by_name, name);
    if (def == NULL)
        return FALSE;
    reg->last = NULL;
    if (def->qualname)
        g_hash_table_remove(reg->by_qual, def->qualname);
    g_hash_table_remove(reg->by_name, name);
    return TRUE;
}

const RpcFunctionDef *
rpc_registry_lookup(const RpcRegistry *reg, const char *name)
{
    g_return_val_if_fail(reg != NULL && name != NULL, NULL);
    if (reg->last != NULL && strcmp(reg->last_key, name) == 0)
        return reg->last;
    const RpcFunctionDef *def = g_hash_table_lookup(reg->by_name, name);
    const char *key = def ? def->name : NULL;
    if (def == NULL && (def = g_hash_table_lookup(reg->by_qual, name)) != NULL)
        key = def->qualname;
    if (def != NULL) {
        RpcRegistry *mreg = (RpcRegistry *)reg; /* the cache is not observable */
        mreg->last = def;
        mreg->last_key = key;
    }
    return def;
}

static gint
cmp_def_name(gconstpointer a, gconstpointer b)
{
    const RpcFunctionDef *x = *(const RpcFunctionDef *const *)a;
    const RpcFunctionDef *y = *(const RpcFunctionDef *const *)b;
    return strcmp(x->name, y->name);
}

GPtrArray *
rpc_registry_list(const RpcRegistry *reg)
{
    GPtrArray *out = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, reg->by_name);
    while (g_hash_table_iter_next(&it, NULL, &v))
        g_ptr_array_add(out, v);
    g_ptr_array_sort(out, cmp_def_name);
    return out;
}

void
rpc_registry_add_class(RpcRegistry *reg, const RpcClassDef *cls)
{
    g_return_if_fail(reg != NULL && cls != NULL && cls->type.name != NULL);
    g_hash_table_replace(reg->classes, (gpointer)cls->type.name, (gpointer)cls);
}

const RpcClassDef *
rpc_registry_lookup_class(const RpcRegistry *reg, const char *name)
{
    g_return_val_if_fail(reg != NULL && name != NULL, NULL);
    return g_hash_table_lookup(reg->classes, name);
}

/* Python's wording: "missing 1 required positional argument: 'a'",
 * "missing 2 required positional arguments: 'b' and 'c'",
 * "missing 3 …: 'a', 'b', and 'c'". */
static char *
missing_text(const char *func, GPtrArray *missing)
{
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "%s() missing %u required positional argument%s: ", func,
                           missing->len, missing->len == 1 ? "" : "s");
    for (guint i = 0; i < missing->len; i++) {
        if (i > 0)
            g_string_append(s, missing->len == 2 ? " and "
                                                 : (i + 1 == missing->len ? ", and " : ", "));
        g_string_append_printf(s, "'%s'", (const char *)g_ptr_array_index(missing, i));
    }
    return g_string_free(s, FALSE);
}

gboolean
rpc_args_bind(const char *func, const RpcValue *args, const RpcValue *kwargs,
              const char *const *names, guint n_required, RpcValue **out, GError **error)
{
    guint n_params = 0;
    while (names && names[n_params])
        n_params++;
    guint n_pos = args ? rpc_value_list_len(args) : 0;
    if (n_pos > n_params) {
        if (n_params == 0)
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "%s() takes 0 positional arguments but %u %s given", func, n_pos,
                        n_pos == 1 ? "was" : "were");
        else
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "%s() takes %u positional argument%s but %u %s given", func, n_params,
                        n_params == 1 ? "" : "s", n_pos, n_pos == 1 ? "was" : "were");
        return FALSE;
    }
    for (guint i = 0; i < n_params; i++)
        out[i] = i < n_pos ? rpc_value_list_get(args, i) : NULL;
    guint n_kw = kwargs ? rpc_value_dict_len(kwargs) : 0;
    for (guint k = 0; k < n_kw; k++) {
        const char *key = rpc_value_dict_key_at(kwargs, k);
        guint i = 0;
        while (i < n_params && strcmp(names[i], key) != 0)
            i++;
        if (i == n_params) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "%s() got an unexpected keyword argument '%s'", func, key);
            return FALSE;
        }
        if (out[i] != NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "%s() got multiple values for argument '%s'", func, key);
            return FALSE;
        }
        out[i] = rpc_value_dict_value_at(kwargs, k);
    }
    GPtrArray *missing = g_ptr_array_new();
    for (guint i = 0; i < n_required; i++)
        if (out[i] == NULL)
            g_ptr_array_add(missing, (gpointer)names[i]);
    if (missing->len > 0) {
        char *text = missing_text(func, missing);
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, text);
        g_free(text);
        g_ptr_array_unref(missing);
        return FALSE;
    }
    g_ptr_array_unref(missing);
    return TRUE;
}
