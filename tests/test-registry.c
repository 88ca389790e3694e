/* test-registry.c — core/registry: lookup by name and by wire name, and the
 * one-entry lookup cache, which must never answer for a function that was
 * removed or replaced. */
#include "core/registry.h"

static RpcValue *
fn_a(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_new_int(1);
}

static RpcValue *
fn_b(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_new_int(2);
}

static const RpcFunctionDef def_add = {"add", "aten::add", fn_a, RPC_FUNC_BUILTIN, 2, 2, "x + y"};
static const RpcFunctionDef def_add2 = {"add", "aten::add", fn_b, RPC_FUNC_BUILTIN, 2, 2, "x + y"};
static const RpcFunctionDef def_f = {"f", NULL, fn_a, 0, 0, -1, "f()"};

static void
test_lookup_by_name_and_wire_name(void)
{
    RpcRegistry *reg = rpc_registry_new();
    rpc_registry_add(reg, &def_add);
    rpc_registry_add(reg, &def_f);
    g_assert_true(rpc_registry_lookup(reg, "add") == &def_add);
    g_assert_true(rpc_registry_lookup(reg, "aten::add") == &def_add);
    g_assert_true(rpc_registry_lookup(reg, "add") == &def_add); /* cached again */
    g_assert_true(rpc_registry_lookup(reg, "f") == &def_f);
    g_assert_null(rpc_registry_lookup(reg, "g"));
    g_assert_true(rpc_registry_lookup(reg, "f") == &def_f); /* a miss keeps the cache */
    g_assert_cmpstr(rpc_function_wire_name(&def_add), ==, "aten::add");
    g_assert_cmpstr(rpc_function_wire_name(&def_f), ==, "f");
    rpc_registry_free(reg);
}

static void
test_cache_follows_remove_and_replace(void)
{
    RpcRegistry *reg = rpc_registry_new();
    rpc_registry_add(reg, &def_add);
    g_assert_true(rpc_registry_lookup(reg, "aten::add") == &def_add);
    rpc_registry_add(reg, &def_add2); /* replaces by name */
    g_assert_true(rpc_registry_lookup(reg, "aten::add") == &def_add2);
    g_assert_true(rpc_registry_lookup(reg, "add") == &def_add2);
    g_assert_true(rpc_registry_remove(reg, "add"));
    g_assert_null(rpc_registry_lookup(reg, "add"));
    g_assert_null(rpc_registry_lookup(reg, "aten::add"));
    g_assert_false(rpc_registry_remove(reg, "add"));
    /* A name looked up through a caller's temporary buffer: the cache
     * compares contents, not addresses. */
    rpc_registry_add(reg, &def_f);
    char buf[8] = "f";
    g_assert_true(rpc_registry_lookup(reg, buf) == &def_f);
    buf[0] = 'g';
    g_assert_null(rpc_registry_lookup(reg, buf));
    rpc_registry_free(reg);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/registry/lookup", test_lookup_by_name_and_wire_name);
    g_test_add_func("/registry/cache-follows-remove-and-replace",
                    test_cache_follows_remove_and_replace);
    return g_test_run();
}
