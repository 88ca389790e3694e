/* test-idset.c — core/idset: the at-most-once filter's id set.
 *
 * Random adds (mostly increasing, as a sender's ids arrive, with reordered
 * and duplicated ones mixed in, and the extremes of gint64) are checked
 * against GHashTable, and the range list against its invariant (sorted,
 * no two ranges touching) after every step.
 */
#include "core/idset.h"

static void
check_invariant(const RpcIdSet *s)
{
    for (guint i = 0; i < s->len; i++) {
        g_assert_cmpint(s->ranges[i].lo, <=, s->ranges[i].hi);
        if (i + 1 < s->len)
            g_assert_cmpint(s->ranges[i].hi, <, s->ranges[i + 1].lo - 1);
    }
}

static void
test_against_ghashtable(void)
{
    GRand *r = g_rand_new_with_seed(99);
    for (guint round = 0; round < 20; round++) {
        RpcIdSet s;
        rpc_idset_init(&s);
        GHashTable *ref = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        gint64 next = g_rand_int_range(r, -1000, 1000);
        for (guint step = 0; step < 3000; step++) {
            gint64 id;
            switch (g_rand_int_range(r, 0, 6)) {
            case 0: /* reordered or duplicated: somewhere in the past */
                id = next - g_rand_int_range(r, 0, 200);
                break;
            case 1: /* a gap: ids sent to other peers */
                next += g_rand_int_range(r, 2, 50);
                id = next;
                break;
            default:
                id = next++;
                break;
            }
            gboolean fresh = !g_hash_table_contains(ref, &id);
            g_assert_cmpint(rpc_idset_add(&s, id), ==, fresh);
            if (fresh) {
                gint64 *k = g_new(gint64, 1);
                *k = id;
                g_hash_table_add(ref, k);
            }
            if (step % 50 == 0)
                check_invariant(&s);
        }
        check_invariant(&s);
        for (gint64 id = next - 5000; id <= next + 5; id++)
            g_assert_cmpint(rpc_idset_contains(&s, id), ==, g_hash_table_contains(ref, &id));
        rpc_idset_clear(&s);
        g_hash_table_unref(ref);
    }
    g_rand_free(r);
}

static void
test_consecutive_is_one_range(void)
{
    RpcIdSet s;
    rpc_idset_init(&s);
    for (gint64 id = 1; id <= 100000; id++)
        g_assert_true(rpc_idset_add(&s, id));
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 1);
    g_assert_false(rpc_idset_add(&s, 500));
    g_assert_false(rpc_idset_contains(&s, 0));
    g_assert_true(rpc_idset_contains(&s, 100000));
    /* Out of order: fill a gap from both ends, then its middle. */
    g_assert_true(rpc_idset_add(&s, 100005));
    g_assert_true(rpc_idset_add(&s, 100003));
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 3);
    g_assert_true(rpc_idset_add(&s, 100001));
    g_assert_true(rpc_idset_add(&s, 100004));
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 2);
    g_assert_true(rpc_idset_add(&s, 100002));
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 1);
    g_assert_true(rpc_idset_add(&s, -7)); /* before everything */
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 2);
    rpc_idset_clear(&s);
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 0);
}

static void
test_extremes(void)
{
    RpcIdSet s;
    rpc_idset_init(&s);
    g_assert_true(rpc_idset_add(&s, G_MAXINT64));
    g_assert_true(rpc_idset_add(&s, G_MININT64));
    g_assert_true(rpc_idset_add(&s, G_MAXINT64 - 1));
    g_assert_true(rpc_idset_add(&s, G_MININT64 + 1));
    g_assert_false(rpc_idset_add(&s, G_MAXINT64));
    g_assert_false(rpc_idset_add(&s, G_MININT64));
    g_assert_cmpuint(rpc_idset_n_ranges(&s), ==, 2);
    g_assert_true(rpc_idset_contains(&s, G_MAXINT64));
    g_assert_false(rpc_idset_contains(&s, 0));
    check_invariant(&s);
    rpc_idset_clear(&s);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/idset/against-ghashtable", test_against_ghashtable);
    g_test_add_func("/idset/consecutive-is-one-range", test_consecutive_is_one_range);
    g_test_add_func("/idset/extremes", test_extremes);
    return g_test_run();
}
