/* test-pool.c — core/pool: per-thread free lists for small records.
 *
 * Recycling is observable only when the pool is on; under valgrind it is
 * off by design (every block goes to g_malloc/g_free), and the tests then
 * check that nothing is recycled, so each case asserts in both modes.
 */
#include <string.h>

#include "core/pool.h"

typedef struct {
    guint64 a, b, c;
} Rec24;

static void
test_recycles_same_class(void)
{
    Rec24 *x = rpc_pool_new(Rec24);
    g_assert_nonnull(x);
    g_assert_cmpuint(x->a | x->b | x->c, ==, 0);
    x->a = 7;
    rpc_pool_delete(Rec24, x);
    /* 17..32 bytes share a class: a 30-byte block reuses the 24-byte one. */
    gpointer y = rpc_pool_alloc(30);
    if (rpc_pool_enabled())
        g_assert_true(y == (gpointer)x);
    memset(y, 0xab, 30); /* the whole class size is usable */
    rpc_pool_free(y, 30);
    rpc_pool_trim();
}

static void
test_alloc0_zeroes_recycled(void)
{
    guint8 *p = rpc_pool_alloc(48);
    memset(p, 0xff, 48);
    rpc_pool_free(p, 48);
    guint8 *q = rpc_pool_alloc0(48);
    for (guint i = 0; i < 48; i++)
        g_assert_cmpuint(q[i], ==, 0);
    rpc_pool_free(q, 48);
    rpc_pool_trim();
}

static void
test_classes_are_separate(void)
{
    gpointer small = rpc_pool_alloc(16);
    rpc_pool_free(small, 16);
    gpointer big = rpc_pool_alloc(64); /* another class: not the 16-byte block */
    g_assert_true(big != small);
    gpointer again = rpc_pool_alloc(8);
    if (rpc_pool_enabled())
        g_assert_true(again == small);
    rpc_pool_free(big, 64);
    rpc_pool_free(again, 8);
    rpc_pool_trim();
}

static void
test_large_sizes_bypass(void)
{
    gsize n = RPC_POOL_MAX_SIZE + 1;
    guint8 *p = rpc_pool_alloc0(n);
    for (gsize i = 0; i < n; i++)
        g_assert_cmpuint(p[i], ==, 0);
    rpc_pool_free(p, n);
    rpc_pool_free(NULL, 16); /* NULL is a no-op, like g_free */
}

static void
test_lifo_and_cap(void)
{
    /* More frees than the cap: the surplus goes back to g_free (valgrind
     * would report it lost otherwise), and allocs come back LIFO. */
    guint n = RPC_POOL_MAX_CACHED + 10;
    gpointer *blocks = g_new(gpointer, n);
    for (guint i = 0; i < n; i++)
        blocks[i] = rpc_pool_alloc(100);
    for (guint i = 0; i < n; i++)
        rpc_pool_free(blocks[i], 100);
    gpointer top = rpc_pool_alloc(100);
    if (rpc_pool_enabled())
        g_assert_true(top == blocks[RPC_POOL_MAX_CACHED - 1]);
    rpc_pool_free(top, 100);
    g_free(blocks);
    rpc_pool_trim();
}

static gpointer
free_on_thread(gpointer p)
{
    rpc_pool_free(p, 32);
    gpointer q = rpc_pool_alloc(32); /* this thread's list now holds p */
    gboolean same = q == p;
    rpc_pool_free(q, 32);
    rpc_pool_trim();
    return GINT_TO_POINTER(same);
}

static void
test_cross_thread_free(void)
{
    gpointer p = rpc_pool_alloc(32);
    GThread *t = g_thread_new("pool", free_on_thread, p);
    gboolean same = GPOINTER_TO_INT(g_thread_join(t));
    if (rpc_pool_enabled())
        g_assert_true(same); /* without the pool, malloc may or may not reuse it */
}

static gpointer
enabled_on_new_thread(gpointer unused)
{
    return GINT_TO_POINTER(rpc_pool_enabled()); /* decided per thread, at first use */
}

static gboolean
enabled_with_env(const char *var)
{
    if (var != NULL)
        g_setenv(var, "1", TRUE);
    GThread *t = g_thread_new("pool-env", enabled_on_new_thread, NULL);
    gboolean on = GPOINTER_TO_INT(g_thread_join(t));
    if (var != NULL)
        g_unsetenv(var);
    return on;
}

/* RPCSIM_NO_POOL turns the pool off; RPCSIM_POOL keeps it on even under
 * valgrind (callgrind measurements); without either, valgrind turns it off. */
static void
test_environment(void)
{
    if (g_getenv("RPCSIM_NO_POOL") != NULL || g_getenv("RPCSIM_POOL") != NULL) {
        g_test_skip("RPCSIM_NO_POOL or RPCSIM_POOL already set");
        return;
    }
    g_assert_false(enabled_with_env("RPCSIM_NO_POOL"));
    g_assert_true(enabled_with_env("RPCSIM_POOL"));
    g_assert_true(enabled_with_env(NULL) == rpc_pool_enabled());
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/pool/recycles-same-class", test_recycles_same_class);
    g_test_add_func("/pool/alloc0-zeroes-recycled", test_alloc0_zeroes_recycled);
    g_test_add_func("/pool/classes-are-separate", test_classes_are_separate);
    g_test_add_func("/pool/large-sizes-bypass", test_large_sizes_bypass);
    g_test_add_func("/pool/lifo-and-cap", test_lifo_and_cap);
    g_test_add_func("/pool/cross-thread-free", test_cross_thread_free);
    g_test_add_func("/pool/environment", test_environment);
    int rc = g_test_run();
    rpc_pool_trim();
    return rc;
}
