/* test-intmap.c — core/intmap: the agent's gint64 → pointer table.
 *
 * A long random sequence of inserts, replaces and removes is checked step
 * by step against GHashTable; keys are drawn from a small range (so that
 * probe runs collide, wrap around the table and are split by removals) and
 * from the extremes of gint64.
 */
#include "core/intmap.h"

static void
check_same(const RpcIntMap *m, GHashTable *ref)
{
    g_assert_cmpuint(rpc_intmap_len(m), ==, g_hash_table_size(ref));
    GHashTableIter it;
    gpointer k, v;
    g_hash_table_iter_init(&it, ref);
    while (g_hash_table_iter_next(&it, &k, &v))
        g_assert_true(rpc_intmap_lookup(m, *(gint64 *)k) == v);
    guint seen = 0;
    for (guint i = 0; i < rpc_intmap_capacity(m); i++)
        if (m->slots[i].value != NULL) {
            seen++;
            g_assert_true(g_hash_table_lookup(ref, &m->slots[i].key) == m->slots[i].value);
        }
    g_assert_cmpuint(seen, ==, rpc_intmap_len(m));
}

static gint64
draw_key(GRand *r)
{
    static const gint64 extremes[] = {G_MININT64, G_MAXINT64, 0, -1, 1};
    if (g_rand_int_range(r, 0, 20) == 0)
        return extremes[g_rand_int_range(r, 0, G_N_ELEMENTS(extremes))];
    return g_rand_int_range(r, -40, 200);
}

static void
test_random_against_ghashtable(void)
{
    GRand *r = g_rand_new_with_seed(12345);
    GHashTable *ref = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    RpcIntMap m;
    rpc_intmap_init(&m);
    g_assert_null(rpc_intmap_lookup(&m, 7));
    g_assert_null(rpc_intmap_remove(&m, 7));
    for (guint step = 0; step < 20000; step++) {
        gint64 key = draw_key(r);
        gpointer value = GSIZE_TO_POINTER((gsize)g_rand_int_range(r, 1, 1000000));
        gpointer expect_old = g_hash_table_lookup(ref, &key);
        if (g_rand_int_range(r, 0, 3) == 0) {
            g_assert_true(rpc_intmap_remove(&m, key) == expect_old);
            g_hash_table_remove(ref, &key);
        } else {
            g_assert_true(rpc_intmap_insert(&m, key, value) == expect_old);
            gint64 *k = g_new(gint64, 1);
            *k = key;
            g_hash_table_replace(ref, k, value);
        }
        if (step % 97 == 0)
            check_same(&m, ref);
    }
    check_same(&m, ref);
    /* Empty it completely: every removal finds its key. */
    GList *keys = g_hash_table_get_keys(ref);
    for (GList *l = keys; l; l = l->next)
        g_assert_nonnull(rpc_intmap_remove(&m, *(gint64 *)l->data));
    g_list_free(keys);
    g_assert_cmpuint(rpc_intmap_len(&m), ==, 0);
    rpc_intmap_clear(&m);
    g_assert_cmpuint(rpc_intmap_capacity(&m), ==, 0);
    g_hash_table_unref(ref);
    g_rand_free(r);
}

static void
test_sequential_ids(void)
{
    /* The agent's pattern: ids in order, most removed soon after. */
    RpcIntMap m;
    rpc_intmap_init(&m);
    for (gint64 id = 1000; id < 101000; id++) {
        rpc_intmap_insert(&m, id, GINT_TO_POINTER(1));
        if (id % 10 != 0)
            g_assert_nonnull(rpc_intmap_remove(&m, id));
    }
    g_assert_cmpuint(rpc_intmap_len(&m), ==, 10000);
    for (gint64 id = 1000; id < 101000; id++)
        g_assert_true((rpc_intmap_lookup(&m, id) != NULL) == (id % 10 == 0));
    /* The table stays at most half full. */
    g_assert_cmpuint(rpc_intmap_capacity(&m), >=, 2 * rpc_intmap_len(&m));
    rpc_intmap_clear(&m);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/intmap/random-against-ghashtable", test_random_against_ghashtable);
    g_test_add_func("/intmap/sequential-ids", test_sequential_ids);
    return g_test_run();
}
