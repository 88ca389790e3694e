/* test-value.c — core/value (RpcValue) and core/error (kinds, "RPCErr:").
 *
 * Constructors and getters for every type, the None/True/False singletons,
 * lists and insertion-ordered dicts, Python-like equality and repr, errors
 * as values and as GErrors, futures inside values, opaque payloads with a
 * custom type.  Refcounts are checked through the opaque type's hooks and,
 * for futures, through rpc_future_live_count().
 */
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "core/future.h"
#include "core/tensor.h"
#include "core/value.h"

static void
assert_repr(RpcValue *v, const char *expected)
{
    char *r = rpc_value_repr(v);
    g_assert_cmpstr(r, ==, expected);
    g_free(r);
}

/* Takes v. */
static void
assert_repr_take(RpcValue *v, const char *expected)
{
    assert_repr(v, expected);
    rpc_value_unref(v);
}

/* ---- scalars -------------------------------------------------------------- */

static void
test_singletons(void)
{
    RpcValue *n = rpc_value_none();
    RpcValue *t = rpc_value_new_bool(TRUE);
    RpcValue *f = rpc_value_new_bool(FALSE);
    g_assert_true(n == rpc_value_none());
    g_assert_true(t == rpc_value_new_bool(TRUE));
    g_assert_true(t == rpc_value_new_bool(42)); /* any non-zero gboolean */
    g_assert_true(f == rpc_value_new_bool(FALSE));
    /* Refcounts are ignored: any number of unrefs leaves them usable. */
    for (int i = 0; i < 10; i++) {
        rpc_value_unref(n);
        rpc_value_unref(t);
        rpc_value_unref(f);
    }
    g_assert_true(rpc_value_ref(n) == n);
    g_assert_cmpint(rpc_value_type(n), ==, RPC_VALUE_NONE);
    g_assert_true(rpc_value_is_none(n));
    g_assert_false(rpc_value_is_none(t));
    g_assert_false(rpc_value_is_none(NULL));
    g_assert_cmpint(rpc_value_type(t), ==, RPC_VALUE_BOOL);
    g_assert_true(rpc_value_get_bool(t));
    g_assert_false(rpc_value_get_bool(f));
    rpc_value_unref(NULL); /* a no-op */
}

static void
test_scalars(void)
{
    RpcValue *i = rpc_value_new_int(-7);
    g_assert_cmpint(rpc_value_type(i), ==, RPC_VALUE_INT);
    g_assert_cmpint(rpc_value_get_int(i), ==, -7);
    g_assert_cmpfloat(rpc_value_get_double(i), ==, -7.0); /* ints widen */
    RpcValue *big = rpc_value_new_int(G_MAXINT64);
    g_assert_cmpint(rpc_value_get_int(big), ==, G_MAXINT64);
    RpcValue *d = rpc_value_new_double(1.5);
    g_assert_cmpint(rpc_value_type(d), ==, RPC_VALUE_DOUBLE);
    g_assert_cmpfloat(rpc_value_get_double(d), ==, 1.5);
    /* ref returns the same value; the extra reference keeps it alive. */
    g_assert_true(rpc_value_ref(i) == i);
    rpc_value_unref(i);
    g_assert_cmpint(rpc_value_get_int(i), ==, -7);
    rpc_value_unref(i);
    rpc_value_unref(big);
    rpc_value_unref(d);
}

static void
test_strings_bytes(void)
{
    RpcValue *s = rpc_value_new_string("héllo");
    g_assert_cmpint(rpc_value_type(s), ==, RPC_VALUE_STRING);
    g_assert_cmpstr(rpc_value_get_string(s), ==, "héllo");
    RpcValue *e = rpc_value_new_string("");
    g_assert_cmpstr(rpc_value_get_string(e), ==, "");
    RpcValue *t = rpc_value_new_string_take(g_strdup_printf("n=%d", 3));
    g_assert_cmpstr(rpc_value_get_string(t), ==, "n=3");

    static const guint8 raw[4] = {0, 1, 0xff, 'x'};
    RpcValue *b = rpc_value_new_bytes(raw, sizeof raw);
    gsize len = 0;
    const guint8 *got = rpc_value_get_bytes(b, &len);
    g_assert_cmpint(rpc_value_type(b), ==, RPC_VALUE_BYTES);
    g_assert_cmpmem(got, len, raw, sizeof raw);
    g_assert_true(got != raw); /* a copy */
    g_assert_nonnull(rpc_value_get_bytes(b, NULL));
    RpcValue *b0 = rpc_value_new_bytes(NULL, 0);
    g_assert_nonnull(rpc_value_get_bytes(b0, &len));
    g_assert_cmpuint(len, ==, 0);
    /* A string and bytes with the same content are different values. */
    RpcValue *sx = rpc_value_new_string("x");
    RpcValue *bx = rpc_value_new_bytes((const guint8 *)"x", 1);
    g_assert_false(rpc_value_equal(sx, bx));
    rpc_value_unref(sx);
    rpc_value_unref(bx);
    rpc_value_unref(s);
    rpc_value_unref(e);
    rpc_value_unref(t);
    rpc_value_unref(b);
    rpc_value_unref(b0);
}

static void
test_worker_info(void)
{
    RpcValue *w = rpc_value_new_worker_info("worker1", 1);
    g_assert_cmpint(rpc_value_type(w), ==, RPC_VALUE_WORKER_INFO);
    g_assert_cmpstr(rpc_value_worker_name(w), ==, "worker1");
    g_assert_cmpint(rpc_value_worker_id(w), ==, 1);
    RpcValue *same = rpc_value_new_worker_info("worker1", 1);
    RpcValue *other_id = rpc_value_new_worker_info("worker1", 2);
    RpcValue *other_name = rpc_value_new_worker_info("worker2", 1);
    g_assert_true(rpc_value_equal(w, same));
    g_assert_false(rpc_value_equal(w, other_id));
    g_assert_false(rpc_value_equal(w, other_name));
    rpc_value_unref(w);
    rpc_value_unref(same);
    rpc_value_unref(other_id);
    rpc_value_unref(other_name);
}

static void
test_type_names(void)
{
    static const struct {
        RpcValueType t;
        const char *name;
    } cases[] = {
        {RPC_VALUE_NONE, "NoneType"},   {RPC_VALUE_BOOL, "bool"},
        {RPC_VALUE_INT, "int"},         {RPC_VALUE_DOUBLE, "float"},
        {RPC_VALUE_STRING, "str"},      {RPC_VALUE_BYTES, "bytes"},
        {RPC_VALUE_LIST, "list"},       {RPC_VALUE_DICT, "dict"},
        {RPC_VALUE_TENSOR, "Tensor"},   {RPC_VALUE_WORKER_INFO, "WorkerInfo"},
        {RPC_VALUE_ERROR, "Exception"}, {RPC_VALUE_FUTURE, "Future"},
        {RPC_VALUE_OPAQUE, "object"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++)
        g_assert_cmpstr(rpc_value_type_name(cases[i].t), ==, cases[i].name);
    g_assert_cmpstr(rpc_value_type_name(RPC_VALUE_N_TYPES), ==, "unknown");
    g_assert_cmpstr(rpc_value_type_name((RpcValueType)-1), ==, "unknown");
}

/* A getter of the wrong type is a caller bug: a critical and a neutral
 * result, never a crash. */
static void
test_wrong_type_getter(void)
{
    RpcValue *s = rpc_value_new_string("x");
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_cmpint(rpc_value_get_int(s), ==, 0);
    g_test_assert_expected_messages();
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_null(rpc_value_worker_name(s));
    g_test_assert_expected_messages();
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_cmpuint(rpc_value_list_len(s), ==, 0);
    g_test_assert_expected_messages();
    rpc_value_unref(s);
}

/* ---- lists and dicts ------------------------------------------------------ */

static void
test_list(void)
{
    RpcValue *l = rpc_value_new_list();
    g_assert_cmpint(rpc_value_type(l), ==, RPC_VALUE_LIST);
    g_assert_cmpuint(rpc_value_list_len(l), ==, 0);
    rpc_value_list_append(l, rpc_value_new_int(1));
    rpc_value_list_append(l, rpc_value_new_string("a"));
    rpc_value_list_append(l, rpc_value_none());
    g_assert_cmpuint(rpc_value_list_len(l), ==, 3);
    g_assert_cmpint(rpc_value_get_int(rpc_value_list_get(l, 0)), ==, 1);
    g_assert_cmpstr(rpc_value_get_string(rpc_value_list_get(l, 1)), ==, "a");
    g_assert_true(rpc_value_is_none(rpc_value_list_get(l, 2)));
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_null(rpc_value_list_get(l, 3));
    g_test_assert_expected_messages();
    assert_repr(l, "[1, 'a', None]");
    rpc_value_unref(l);
}

static void
test_dict(void)
{
    RpcValue *d = rpc_value_new_dict();
    g_assert_cmpint(rpc_value_type(d), ==, RPC_VALUE_DICT);
    g_assert_cmpuint(rpc_value_dict_len(d), ==, 0);
    rpc_value_dict_set(d, "zeta", rpc_value_new_int(1));
    rpc_value_dict_set(d, "alpha", rpc_value_new_int(2));
    rpc_value_dict_set(d, "mid", rpc_value_new_int(3));
    /* Insertion order, not key order. */
    g_assert_cmpuint(rpc_value_dict_len(d), ==, 3);
    g_assert_cmpstr(rpc_value_dict_key_at(d, 0), ==, "zeta");
    g_assert_cmpstr(rpc_value_dict_key_at(d, 1), ==, "alpha");
    g_assert_cmpstr(rpc_value_dict_key_at(d, 2), ==, "mid");
    g_assert_cmpint(rpc_value_get_int(rpc_value_dict_value_at(d, 1)), ==, 2);
    /* Replacing keeps the key's position and the length. */
    rpc_value_dict_set(d, "zeta", rpc_value_new_string("z"));
    g_assert_cmpuint(rpc_value_dict_len(d), ==, 3);
    g_assert_cmpstr(rpc_value_dict_key_at(d, 0), ==, "zeta");
    g_assert_cmpstr(rpc_value_get_string(rpc_value_dict_get(d, "zeta")), ==, "z");
    g_assert_cmpint(rpc_value_get_int(rpc_value_dict_get(d, "mid")), ==, 3);
    g_assert_null(rpc_value_dict_get(d, "absent"));
    g_assert_null(rpc_value_dict_get(d, "Zeta")); /* case-sensitive */
    assert_repr(d, "{'zeta': 'z', 'alpha': 2, 'mid': 3}");
    rpc_value_unref(d);
}

/* Lists keep their first items in the value's own block and move to a heap
 * array past it; every size and every starting capacity behaves the same. */
static void
test_list_growth(void)
{
    for (int start = -1; start <= 5; start++) {
        RpcValue *l = start < 0 ? rpc_value_new_list() : rpc_value_new_list_sized((guint)start);
        RpcValue *ref = rpc_value_new_list();
        for (gint64 i = 0; i < 40; i++) {
            rpc_value_list_append(l, rpc_value_new_int(i));
            rpc_value_list_append(ref, rpc_value_new_int(i));
            g_assert_cmpuint(rpc_value_list_len(l), ==, (guint)i + 1);
            for (gint64 j = 0; j <= i; j++)
                g_assert_cmpint(rpc_value_get_int(rpc_value_list_get(l, (guint)j)), ==, j);
            g_assert_true(rpc_value_equal(l, ref));
        }
        char *r = rpc_value_repr(l);
        g_assert_true(g_str_has_prefix(r, "[0, 1, 2, 3, 4, 5,"));
        g_assert_true(g_str_has_suffix(r, "38, 39]"));
        g_free(r);
        rpc_value_unref(ref);
        rpc_value_unref(l);
    }
    /* sized lists start empty, and an unused reservation costs nothing */
    RpcValue *e = rpc_value_new_list_sized(1000);
    g_assert_cmpuint(rpc_value_list_len(e), ==, 0);
    assert_repr_take(e, "[]");
    RpcValue *z = rpc_value_new_list_sized(0);
    e = rpc_value_new_list();
    g_assert_true(rpc_value_equal(z, e));
    rpc_value_unref(e);
    assert_repr_take(z, "[]");
}

/* insert_take adds a new key and takes it; on a present key it takes
 * nothing.  Past DICT_INDEX_MIN keys the index must stay in step with
 * dict_set, insert_take and replacement alike. */
static void
test_dict_insert_take(void)
{
    for (int sized = 0; sized < 3; sized++) {
        RpcValue *d = sized == 0   ? rpc_value_new_dict()
                      : sized == 1 ? rpc_value_new_dict_sized(3)
                                   : rpc_value_new_dict_sized(100);
        g_assert_cmpuint(rpc_value_dict_len(d), ==, 0);
        for (int i = 0; i < 30; i++) {
            char *key = g_strdup_printf("key%d", i);
            if (i % 2) {
                g_assert_true(rpc_value_dict_insert_take(d, key, rpc_value_new_int(i)));
            } else {
                rpc_value_dict_set(d, key, rpc_value_new_int(i));
                g_free(key);
            }
            /* a present key: nothing taken, nothing changed */
            char *again = g_strdup_printf("key%d", i / 2);
            RpcValue *item = rpc_value_new_int(-1);
            g_assert_false(rpc_value_dict_insert_take(d, again, item));
            rpc_value_unref(item);
            g_free(again);
            g_assert_cmpuint(rpc_value_dict_len(d), ==, (guint)i + 1);
            for (int j = 0; j <= i; j++) {
                char k[16];
                g_snprintf(k, sizeof k, "key%d", j);
                g_assert_cmpstr(rpc_value_dict_key_at(d, (guint)j), ==, k);
                g_assert_cmpint(rpc_value_get_int(rpc_value_dict_get(d, k)), ==, j);
                g_assert_cmpint(rpc_value_get_int(rpc_value_dict_value_at(d, (guint)j)), ==, j);
            }
            g_assert_null(rpc_value_dict_get(d, "key-absent"));
        }
        /* replacing keeps the position, indexed or not */
        rpc_value_dict_set(d, "key3", rpc_value_new_string("three"));
        g_assert_cmpstr(rpc_value_dict_key_at(d, 3), ==, "key3");
        g_assert_cmpstr(rpc_value_get_string(rpc_value_dict_value_at(d, 3)), ==, "three");
        g_assert_cmpuint(rpc_value_dict_len(d), ==, 30);
        rpc_value_unref(d);
    }
    RpcValue *e = rpc_value_new_dict_sized(7);
    RpcValue *f = rpc_value_new_dict();
    g_assert_true(rpc_value_equal(e, f));
    assert_repr_take(e, "{}");
    assert_repr_take(f, "{}");
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_false(rpc_value_dict_insert_take(NULL, NULL, NULL));
    g_test_assert_expected_messages();
}

/* rpc_value_new_string_len copies exactly len bytes; big values (past the
 * pool's record sizes) behave like small ones. */
static void
test_string_len_and_big_values(void)
{
    const char buf[] = {'a', 'b', 'c', 'd', 'e', 'f'}; /* no terminator */
    RpcValue *s = rpc_value_new_string_len(buf, 3);
    gsize n = 99;
    g_assert_cmpstr(rpc_value_get_string_len(s, &n), ==, "abc");
    g_assert_cmpuint(n, ==, 3);
    g_assert_cmpstr(rpc_value_get_string_len(s, NULL), ==, "abc");
    RpcValue *t = rpc_value_new_string("abc");
    g_assert_true(rpc_value_equal(s, t));
    rpc_value_unref(t);
    assert_repr_take(s, "'abc'");
    s = rpc_value_new_string_len(NULL, 0);
    g_assert_cmpstr(rpc_value_get_string(s), ==, "");
    assert_repr_take(s, "''");
    /* taken strings keep working the same way */
    s = rpc_value_new_string_take(g_strdup("taken"));
    g_assert_cmpstr(rpc_value_get_string_len(s, &n), ==, "taken");
    g_assert_cmpuint(n, ==, 5);
    rpc_value_unref(s);

    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_null(rpc_value_new_string_len("a\0b", 3));
    g_test_assert_expected_messages();
    RpcValue *b = rpc_value_new_bytes((const guint8 *)"x", 1);
    g_test_expect_message(NULL, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    g_assert_null(rpc_value_get_string_len(b, &n));
    g_test_assert_expected_messages();
    rpc_value_unref(b);

    char *big = g_strnfill(5000, 'q');
    s = rpc_value_new_string(big);
    g_assert_cmpstr(rpc_value_get_string(s), ==, big);
    rpc_value_unref(s);
    b = rpc_value_new_bytes((const guint8 *)big, 5000);
    g_assert_cmpmem(rpc_value_get_bytes(b, &n), n, big, 5000);
    rpc_value_unref(b);
    RpcValue *w = rpc_value_new_worker_info(big, 3);
    g_assert_cmpstr(rpc_value_worker_name(w), ==, big);
    rpc_value_unref(w);
    RpcValue *err = rpc_value_new_error_user(big, big);
    g_assert_cmpstr(rpc_value_error_kind_name(err), ==, big);
    g_assert_cmpstr(rpc_value_error_message(err), ==, big);
    g_assert_cmpint(rpc_value_error_kind(err), ==, RPC_ERROR_USER);
    rpc_value_unref(err);
    err = rpc_value_new_error(RPC_ERROR_TYPE, big);
    g_assert_cmpstr(rpc_value_error_kind_name(err), ==, "TypeError");
    g_assert_cmpstr(rpc_value_error_message(err), ==, big);
    rpc_value_unref(err);
    RpcValue *l = rpc_value_new_list_sized(200);
    for (int i = 0; i < 300; i++)
        rpc_value_list_append(l, rpc_value_new_string(big + i * 10));
    g_assert_cmpuint(rpc_value_list_len(l), ==, 300);
    g_assert_cmpuint(strlen(rpc_value_get_string(rpc_value_list_get(l, 299))), ==, 5000 - 2990);
    rpc_value_unref(l);
    g_free(big);
}

/* Containers take their items: the last unref of the container releases
 * them (checked on a future, whose liveness is observable). */
static void
test_containers_own_items(void)
{
    guint live = rpc_future_live_count();
    RpcFuture *f = rpc_future_new(NULL);
    RpcValue *l = rpc_value_new_list();
    RpcValue *d = rpc_value_new_dict();
    rpc_value_list_append(l, rpc_value_new_future(f));
    rpc_value_dict_set(d, "f", rpc_value_new_future(f));
    rpc_value_dict_set(d, "f", rpc_value_new_future(f)); /* replaced one released */
    rpc_value_unref(rpc_value_new_future(f));
    rpc_future_unref(f);
    g_assert_cmpuint(rpc_future_live_count(), ==, live + 1);
    g_assert_true(rpc_value_get_future(rpc_value_list_get(l, 0)) == f);
    g_assert_true(rpc_value_get_future(rpc_value_dict_get(d, "f")) == f);
    rpc_value_unref(l);
    g_assert_cmpuint(rpc_future_live_count(), ==, live + 1);
    rpc_value_unref(d);
    g_assert_cmpuint(rpc_future_live_count(), ==, live);
}

/* ---- equality ------------------------------------------------------------- */

static void
test_equal_numbers(void)
{
    RpcValue *i1 = rpc_value_new_int(1), *i1b = rpc_value_new_int(1), *i2 = rpc_value_new_int(2);
    RpcValue *d1 = rpc_value_new_double(1.0), *d15 = rpc_value_new_double(1.5);
    RpcValue *nan1 = rpc_value_new_double(NAN), *nan2 = rpc_value_new_double(NAN);
    g_assert_true(rpc_value_equal(i1, i1b));
    g_assert_false(rpc_value_equal(i1, i2));
    g_assert_true(rpc_value_equal(i1, d1)); /* Python: 1 == 1.0 */
    g_assert_true(rpc_value_equal(d1, i1));
    g_assert_false(rpc_value_equal(i1, d15));
    g_assert_false(rpc_value_equal(nan1, nan2)); /* nan != nan */
    g_assert_true(rpc_value_equal(nan1, nan1));  /* the same object */
    g_assert_false(rpc_value_equal(i1, NULL));
    g_assert_false(rpc_value_equal(NULL, i1));
    g_assert_true(rpc_value_equal(NULL, NULL));
    g_assert_true(rpc_value_equal(rpc_value_none(), rpc_value_none()));
    g_assert_false(rpc_value_equal(rpc_value_none(), rpc_value_new_bool(FALSE)));
    g_assert_false(rpc_value_equal(rpc_value_new_bool(TRUE), rpc_value_new_bool(FALSE)));
    RpcValue *s1 = rpc_value_new_string("1");
    g_assert_false(rpc_value_equal(i1, s1));
    rpc_value_unref(s1);
    rpc_value_unref(i1);
    rpc_value_unref(i1b);
    rpc_value_unref(i2);
    rpc_value_unref(d1);
    rpc_value_unref(d15);
    rpc_value_unref(nan1);
    rpc_value_unref(nan2);
}

/* {'a': [1, 'x', {'b': 2.0}], 'c': None}, built with int or double 2. */
static RpcValue *
nested(gboolean two_as_int, const char *x)
{
    RpcValue *inner = rpc_value_new_dict();
    rpc_value_dict_set(inner, "b", two_as_int ? rpc_value_new_int(2) : rpc_value_new_double(2.0));
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rpc_value_new_int(1));
    rpc_value_list_append(l, rpc_value_new_string(x));
    rpc_value_list_append(l, inner);
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "a", l);
    rpc_value_dict_set(d, "c", rpc_value_none());
    return d;
}

static void
test_equal_nested(void)
{
    RpcValue *a = nested(TRUE, "x"), *b = nested(FALSE, "x"), *c = nested(TRUE, "y");
    g_assert_true(rpc_value_equal(a, b));
    g_assert_false(rpc_value_equal(a, c));
    assert_repr(a, "{'a': [1, 'x', {'b': 2}], 'c': None}");
    assert_repr(b, "{'a': [1, 'x', {'b': 2.0}], 'c': None}");
    /* Dicts compare as mappings (order does not matter), lists as
     * sequences (it does). */
    RpcValue *d1 = rpc_value_new_dict(), *d2 = rpc_value_new_dict(), *d3 = rpc_value_new_dict();
    rpc_value_dict_set(d1, "x", rpc_value_new_int(1));
    rpc_value_dict_set(d1, "y", rpc_value_new_int(2));
    rpc_value_dict_set(d2, "y", rpc_value_new_int(2));
    rpc_value_dict_set(d2, "x", rpc_value_new_int(1));
    rpc_value_dict_set(d3, "x", rpc_value_new_int(1));
    rpc_value_dict_set(d3, "z", rpc_value_new_int(2));
    g_assert_true(rpc_value_equal(d1, d2));
    g_assert_false(rpc_value_equal(d1, d3));
    RpcValue *l1 = rpc_value_new_list(), *l2 = rpc_value_new_list(), *l3 = rpc_value_new_list();
    rpc_value_list_append(l1, rpc_value_new_int(1));
    rpc_value_list_append(l1, rpc_value_new_int(2));
    rpc_value_list_append(l2, rpc_value_new_int(2));
    rpc_value_list_append(l2, rpc_value_new_int(1));
    rpc_value_list_append(l3, rpc_value_new_int(1));
    g_assert_false(rpc_value_equal(l1, l2));
    g_assert_false(rpc_value_equal(l1, l3));
    g_assert_false(rpc_value_equal(l1, d1));
    RpcValue *empty_l = rpc_value_new_list(), *empty_d = rpc_value_new_dict();
    g_assert_false(rpc_value_equal(empty_l, empty_d));
    rpc_value_unref(empty_l);
    rpc_value_unref(empty_d);
    rpc_value_unref(a);
    rpc_value_unref(b);
    rpc_value_unref(c);
    rpc_value_unref(d1);
    rpc_value_unref(d2);
    rpc_value_unref(d3);
    rpc_value_unref(l1);
    rpc_value_unref(l2);
    rpc_value_unref(l3);
}

static void
test_equal_tensors(void)
{
    RpcValue *a = rpc_value_new_tensor(rpc_tensor_ones2(2, 2));
    RpcValue *b = rpc_value_new_tensor(rpc_tensor_ones2(2, 2));
    RpcValue *c = rpc_value_new_tensor(rpc_tensor_ones2(2, 3));
    RpcValue *z =
        rpc_value_new_tensor(rpc_tensor_new_zeros(RPC_DTYPE_FLOAT32, 2, (const gint64[]){2, 2}));
    g_assert_cmpint(rpc_value_type(a), ==, RPC_VALUE_TENSOR);
    g_assert_cmpint(rpc_tensor_numel(rpc_value_get_tensor(a)), ==, 4);
    g_assert_true(rpc_value_equal(a, b));
    g_assert_false(rpc_value_equal(a, c)); /* shape */
    g_assert_false(rpc_value_equal(a, z)); /* elements */
    /* In a container too. */
    RpcValue *la = rpc_value_new_list(), *lb = rpc_value_new_list();
    rpc_value_list_append(la, rpc_value_ref(a));
    rpc_value_list_append(lb, rpc_value_ref(b));
    g_assert_true(rpc_value_equal(la, lb));
    /* The repr is the tensor's. */
    char *tr = rpc_tensor_repr(rpc_value_get_tensor(a));
    assert_repr(a, tr);
    char *lr = g_strdup_printf("[%s]", tr);
    assert_repr(la, lr);
    g_free(lr);
    g_free(tr);
    rpc_value_unref(la);
    rpc_value_unref(lb);
    rpc_value_unref(a);
    rpc_value_unref(b);
    rpc_value_unref(c);
    rpc_value_unref(z);
}

/* value.h: "tensors compare shape, dtype and elements exactly". */
static void
test_equal_tensor_dtype(void)
{
    const gint64 shape[2] = {2, 2};
    RpcValue *f32 = rpc_value_new_tensor(rpc_tensor_new_ones(RPC_DTYPE_FLOAT32, 2, shape));
    RpcValue *f64 = rpc_value_new_tensor(rpc_tensor_new_ones(RPC_DTYPE_FLOAT64, 2, shape));
    g_assert_false(rpc_value_equal(f32, f64));
    rpc_value_unref(f32);
    rpc_value_unref(f64);
}

/* ---- repr ----------------------------------------------------------------- */

static void
test_repr(void)
{
    assert_repr(rpc_value_none(), "None");
    assert_repr(rpc_value_new_bool(TRUE), "True");
    assert_repr(rpc_value_new_bool(FALSE), "False");
    assert_repr_take(rpc_value_new_int(3), "3");
    assert_repr_take(rpc_value_new_int(-42), "-42");
    assert_repr_take(rpc_value_new_int(G_MININT64), "-9223372036854775808");
    assert_repr_take(rpc_value_new_double(1.5), "1.5");
    assert_repr_take(rpc_value_new_double(2.0), "2.0");
    assert_repr_take(rpc_value_new_double(-0.0), "-0.0");
    assert_repr_take(rpc_value_new_double(-2.5), "-2.5");
    assert_repr_take(rpc_value_new_double(INFINITY), "inf");
    assert_repr_take(rpc_value_new_double(-INFINITY), "-inf");
    assert_repr_take(rpc_value_new_double(NAN), "nan");
    assert_repr_take(rpc_value_new_string("a'b\n"), "'a\\'b\\n'");
    assert_repr_take(rpc_value_new_string("t\tb\\s\x01\x7f"), "'t\\tb\\\\s\\x01\\x7f'");
    assert_repr_take(rpc_value_new_string(""), "''");
    assert_repr_take(rpc_value_new_bytes((const guint8 *)"x", 1), "b'x'");
    assert_repr_take(rpc_value_new_bytes((const guint8 *)"\0\n", 2), "b'\\x00\\n'");
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rpc_value_new_int(1));
    rpc_value_list_append(l, rpc_value_new_string("a"));
    assert_repr_take(l, "[1, 'a']");
    assert_repr_take(rpc_value_new_list(), "[]");
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "k", rpc_value_new_int(1));
    assert_repr_take(d, "{'k': 1}");
    assert_repr_take(rpc_value_new_dict(), "{}");
    assert_repr_take(rpc_value_new_worker_info("worker1", 1), "WorkerInfo(id=1, name=worker1)");
    assert_repr_take(rpc_value_new_error(RPC_ERROR_VALUE, "Expected error"),
                     "ValueError('Expected error')");
    assert_repr_take(rpc_value_new_error_user("MyError", "it's"), "MyError('it\\'s')");
    RpcFuture *f = rpc_future_new(NULL);
    assert_repr_take(rpc_value_new_future(f), "<torch.futures.Future>");
    rpc_future_unref(f);
}

/* Python's float repr is the shortest string that reads back the same
 * number, in fixed notation for 1e-4 <= |d| < 1e16 and with an exponent of
 * at least two digits otherwise: repr(0.1) == '0.1', repr(1e16) == '1e+16',
 * repr(1e-05) == '1e-05'. */
static void
test_repr_float_shortest(void)
{
    assert_repr_take(rpc_value_new_double(0.1), "0.1");
    assert_repr_take(rpc_value_new_double(0.3), "0.3");
    assert_repr_take(rpc_value_new_double(1.1), "1.1");
    assert_repr_take(rpc_value_new_double(1.5e-7), "1.5e-07");
    assert_repr_take(rpc_value_new_double(1e16), "1e+16");
    assert_repr_take(rpc_value_new_double(1e300), "1e+300");
    assert_repr_take(rpc_value_new_double(123456.789), "123456.789");
    assert_repr_take(rpc_value_new_double(0.0001), "0.0001");
    assert_repr_take(rpc_value_new_double(1e-05), "1e-05");
    assert_repr_take(rpc_value_new_double(1e15), "1000000000000000.0");
    assert_repr_take(rpc_value_new_double(1.2345678901234568e+17), "1.2345678901234568e+17");
}

/* ---- errors --------------------------------------------------------------- */

static void
test_error_values(void)
{
    RpcValue *e = rpc_value_new_error(RPC_ERROR_VALUE, "Expected error");
    g_assert_cmpint(rpc_value_type(e), ==, RPC_VALUE_ERROR);
    g_assert_cmpint(rpc_value_error_kind(e), ==, RPC_ERROR_VALUE);
    g_assert_cmpstr(rpc_value_error_kind_name(e), ==, "ValueError");
    g_assert_cmpstr(rpc_value_error_message(e), ==, "Expected error");

    /* A user kind keeps its name; a built-in name maps to its kind. */
    RpcValue *u = rpc_value_new_error_user("MyCustomError", "boom");
    g_assert_cmpint(rpc_value_error_kind(u), ==, RPC_ERROR_USER);
    g_assert_cmpstr(rpc_value_error_kind_name(u), ==, "MyCustomError");
    g_assert_cmpstr(rpc_value_error_message(u), ==, "boom");
    RpcValue *k = rpc_value_new_error_user("KeyError", "k");
    g_assert_cmpint(rpc_value_error_kind(k), ==, RPC_ERROR_KEY);
    g_assert_cmpstr(rpc_value_error_kind_name(k), ==, "KeyError");
    RpcValue *uu = rpc_value_new_error(RPC_ERROR_USER, "anon");
    g_assert_cmpstr(rpc_value_error_kind_name(uu), ==, "UserError");

    /* Equality: kind, kind name and message. */
    RpcValue *e2 = rpc_value_new_error(RPC_ERROR_VALUE, "Expected error");
    RpcValue *e3 = rpc_value_new_error(RPC_ERROR_TYPE, "Expected error");
    RpcValue *e4 = rpc_value_new_error(RPC_ERROR_VALUE, "other");
    RpcValue *u2 = rpc_value_new_error_user("OtherError", "boom");
    g_assert_true(rpc_value_equal(e, e2));
    g_assert_false(rpc_value_equal(e, e3));
    g_assert_false(rpc_value_equal(e, e4));
    g_assert_false(rpc_value_equal(u, u2));

    /* To a GError: RPC_ERROR, code = kind, same message. */
    GError *g = rpc_value_error_to_gerror(e);
    g_assert_error(g, RPC_ERROR, RPC_ERROR_VALUE);
    g_assert_cmpstr(g->message, ==, "Expected error");
    g_error_free(g);
    g = rpc_value_error_to_gerror(u);
    g_assert_error(g, RPC_ERROR, RPC_ERROR_USER);
    g_assert_cmpstr(g->message, ==, "boom");
    g_error_free(g);
    GError *p = NULL;
    rpc_value_propagate_error(e3, &p);
    g_assert_error(p, RPC_ERROR, RPC_ERROR_TYPE);
    g_clear_error(&p);
    rpc_value_propagate_error(e3, NULL); /* ignored, no leak */

    rpc_value_unref(e);
    rpc_value_unref(u);
    rpc_value_unref(k);
    rpc_value_unref(uu);
    rpc_value_unref(e2);
    rpc_value_unref(e3);
    rpc_value_unref(e4);
    rpc_value_unref(u2);
}

static void
test_error_from_gerror(void)
{
    GError *a = g_error_new_literal(RPC_ERROR, RPC_ERROR_ATTRIBUTE, "no attr");
    RpcValue *va = rpc_value_new_error_from_gerror(a);
    g_assert_cmpint(rpc_value_error_kind(va), ==, RPC_ERROR_ATTRIBUTE);
    g_assert_cmpstr(rpc_value_error_kind_name(va), ==, "AttributeError");
    g_assert_cmpstr(rpc_value_error_message(va), ==, "no attr");
    /* Another domain: RuntimeError with the message. */
    GError *b = g_error_new_literal(G_FILE_ERROR, G_FILE_ERROR_NOENT, "no such file");
    RpcValue *vb = rpc_value_new_error_from_gerror(b);
    g_assert_cmpint(rpc_value_error_kind(vb), ==, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(rpc_value_error_kind_name(vb), ==, "RuntimeError");
    g_assert_cmpstr(rpc_value_error_message(vb), ==, "no such file");
    /* An RPC_ERROR code out of range: RuntimeError too. */
    GError *c = g_error_new_literal(RPC_ERROR, 99, "odd");
    RpcValue *vc = rpc_value_new_error_from_gerror(c);
    g_assert_cmpint(rpc_value_error_kind(vc), ==, RPC_ERROR_RUNTIME);
    /* Round trip. */
    GError *back = rpc_value_error_to_gerror(va);
    g_assert_true(back->domain == a->domain && back->code == a->code);
    g_assert_cmpstr(back->message, ==, a->message);
    g_error_free(back);
    g_error_free(a);
    g_error_free(b);
    g_error_free(c);
    rpc_value_unref(va);
    rpc_value_unref(vb);
    rpc_value_unref(vc);
}

static void
test_error_kinds(void)
{
    static const char *const names[RPC_ERROR_N_KINDS] = {
        "RuntimeError", "ValueError", "TypeError",           "AttributeError", "AssertionError",
        "KeyError",     "IndexError", "NotImplementedError", "Exception",      "UserError",
    };
    for (int k = 0; k < RPC_ERROR_N_KINDS; k++) {
        g_assert_cmpstr(rpc_error_kind_name((RpcErrorKind)k), ==, names[k]);
        RpcErrorKind out = RPC_ERROR_N_KINDS;
        gboolean found = rpc_error_kind_from_name(names[k], &out);
        if (k == RPC_ERROR_USER) {
            g_assert_false(found); /* not a built-in kind */
        } else {
            g_assert_true(found);
            g_assert_cmpint(out, ==, k);
        }
    }
    g_assert_cmpstr(rpc_error_kind_name(RPC_ERROR_N_KINDS), ==, "Exception");
    g_assert_cmpstr(rpc_error_kind_name((RpcErrorKind)-1), ==, "Exception");
    g_assert_cmpstr(rpc_error_kind_name((RpcErrorKind)1000), ==, "Exception");
    RpcErrorKind out = RPC_ERROR_VALUE;
    g_assert_false(rpc_error_kind_from_name("MyError", &out));
    g_assert_false(rpc_error_kind_from_name("valueerror", &out));
    g_assert_false(rpc_error_kind_from_name("", &out));
    g_assert_cmpint(out, ==, RPC_ERROR_VALUE); /* untouched */
    g_assert_true(rpc_error_kind_from_name("TypeError", NULL));
    g_assert_true(RPC_ERROR == rpc_error_quark());
    g_assert_cmpstr(g_quark_to_string(RPC_ERROR), ==, "rpc-error-quark");
}

static void
test_rpc_err(void)
{
    char *s = rpc_err_format(RPC_ERR_TIMEOUT, "msg");
    g_assert_cmpstr(s, ==, "RPCErr:1:msg");
    g_assert_cmpint(rpc_err_type_of(s), ==, RPC_ERR_TIMEOUT);
    g_free(s);
    s = rpc_err_format(RPC_ERR_INTENTIONAL_FAILURE, "a:b");
    g_assert_cmpstr(s, ==, "RPCErr:2:a:b");
    g_assert_cmpint(rpc_err_type_of(s), ==, RPC_ERR_INTENTIONAL_FAILURE);
    g_free(s);
    s = rpc_err_format(RPC_ERR_UNKNOWN, "");
    g_assert_cmpstr(s, ==, "RPCErr:0:");
    g_assert_cmpint(rpc_err_type_of(s), ==, RPC_ERR_UNKNOWN);
    g_free(s);

    static const struct {
        const char *msg;
        RpcErrType type;
    } cases[] = {
        {"RPCErr:1:Timed out", RPC_ERR_TIMEOUT},
        {"RPCErr:2:", RPC_ERR_INTENTIONAL_FAILURE},
        {"RPCErr:3:future kind", RPC_ERR_UNKNOWN},
        {"RPCErr:99:x", RPC_ERR_UNKNOWN},
        {"RPCErr:-1:x", RPC_ERR_UNKNOWN},
        {"RPCErr:4294967297:x", RPC_ERR_UNKNOWN}, /* no truncation to 1 */
        {"RPCErr:99999999999999999999999:x", RPC_ERR_UNKNOWN},
        {"RPCErr:1", RPC_ERR_UNKNOWN},   /* no ':' after the number */
        {"RPCErr:1x:", RPC_ERR_UNKNOWN}, /* garbage after the number */
        {"RPCErr::1:", RPC_ERR_UNKNOWN},
        {"RPCErr:x:1", RPC_ERR_UNKNOWN},
        {"RPCErr:", RPC_ERR_UNKNOWN},
        {"RPCErr", RPC_ERR_UNKNOWN},
        {"rpcerr:1:x", RPC_ERR_UNKNOWN},
        {"Timed out", RPC_ERR_UNKNOWN},
        {"", RPC_ERR_UNKNOWN},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++) {
        if (rpc_err_type_of(cases[i].msg) != cases[i].type)
            g_test_fail_printf("rpc_err_type_of(\"%s\") = %d, expected %d", cases[i].msg,
                               rpc_err_type_of(cases[i].msg), cases[i].type);
    }
    g_assert_cmpint(rpc_err_type_of(NULL), ==, RPC_ERR_UNKNOWN);
}

/* ---- futures inside values ------------------------------------------------ */

static void
test_contains_future(void)
{
    guint live = rpc_future_live_count();
    RpcFuture *f = rpc_future_new(NULL);
    RpcValue *vf = rpc_value_new_future(f);
    g_assert_cmpint(rpc_value_type(vf), ==, RPC_VALUE_FUTURE);
    g_assert_true(rpc_value_get_future(vf) == f);
    g_assert_true(rpc_value_contains_future(vf));

    RpcValue *plain = nested(TRUE, "x");
    g_assert_false(rpc_value_contains_future(plain));
    g_assert_false(rpc_value_contains_future(rpc_value_none()));
    RpcValue *i = rpc_value_new_int(1);
    g_assert_false(rpc_value_contains_future(i));

    /* Deep inside: dict -> list -> dict -> future. */
    RpcValue *inner = rpc_value_new_dict();
    rpc_value_dict_set(inner, "x", rpc_value_new_int(0));
    rpc_value_dict_set(inner, "fut", rpc_value_ref(vf));
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rpc_value_new_string("s"));
    rpc_value_list_append(l, inner);
    RpcValue *outer = rpc_value_new_dict();
    rpc_value_dict_set(outer, "a", rpc_value_new_int(1));
    rpc_value_dict_set(outer, "l", l);
    g_assert_true(rpc_value_contains_future(outer));
    g_assert_true(rpc_value_contains_future(l));

    /* Futures compare by identity. */
    RpcFuture *g = rpc_future_new(NULL);
    RpcValue *vf2 = rpc_value_new_future(f), *vg = rpc_value_new_future(g);
    g_assert_true(rpc_value_equal(vf, vf2));
    g_assert_false(rpc_value_equal(vf, vg));

    rpc_future_unref(f);
    rpc_future_unref(g);
    rpc_value_unref(vf2);
    rpc_value_unref(vg);
    rpc_value_unref(plain);
    rpc_value_unref(i);
    rpc_value_unref(outer);
    g_assert_cmpuint(rpc_future_live_count(), ==, live + 1); /* vf holds f */
    rpc_value_unref(vf);
    g_assert_cmpuint(rpc_future_live_count(), ==, live);
}

/* ---- opaque values -------------------------------------------------------- */

typedef struct {
    int refs; /* our own count, starts at 1 */
    int id;
    int *freed;
} Obj;

static int opaque_ref_calls, opaque_unref_calls, opaque_repr_calls, opaque_equal_calls;

static gpointer
obj_ref(gpointer p)
{
    opaque_ref_calls++;
    ((Obj *)p)->refs++;
    return p;
}

static void
obj_unref(gpointer p)
{
    Obj *o = p;
    opaque_unref_calls++;
    if (--o->refs == 0)
        (*o->freed)++;
}

static char *
obj_repr(gconstpointer p)
{
    opaque_repr_calls++;
    return g_strdup_printf("MyClass(id=%d)", ((const Obj *)p)->id);
}

static gboolean
obj_equal(gconstpointer a, gconstpointer b)
{
    opaque_equal_calls++;
    return ((const Obj *)a)->id == ((const Obj *)b)->id;
}

static const RpcOpaqueType my_class = {
    .name = "MyClass",
    .ref = obj_ref,
    .unref = obj_unref,
    .repr = obj_repr,
    .equal = obj_equal,
};

static const RpcOpaqueType bare_class = {
    .name = "Bare",
    .ref = obj_ref,
    .unref = obj_unref,
};

static void
test_opaque(void)
{
    int freed = 0;
    Obj a = {1, 7, &freed}, b = {1, 7, &freed}, c = {1, 8, &freed}, d = {1, 7, &freed};
    opaque_ref_calls = opaque_unref_calls = opaque_repr_calls = opaque_equal_calls = 0;

    RpcValue *va = rpc_value_new_opaque(&my_class, &a); /* takes a's reference */
    RpcValue *vb = rpc_value_new_opaque(&my_class, &b);
    RpcValue *vc = rpc_value_new_opaque(&my_class, &c);
    RpcValue *vd = rpc_value_new_opaque(&bare_class, &d);
    g_assert_cmpint(rpc_value_type(va), ==, RPC_VALUE_OPAQUE);
    g_assert_true(rpc_value_opaque_type(va) == &my_class);
    g_assert_true(rpc_value_get_opaque(va, &my_class) == &a);
    g_assert_true(rpc_value_get_opaque(va, NULL) == &a); /* any type */
    g_assert_null(rpc_value_get_opaque(va, &bare_class));
    g_assert_null(rpc_value_get_opaque(rpc_value_none(), NULL));
    g_assert_cmpint(opaque_ref_calls, ==, 0);

    /* equal(): the type's hook for the same type; other types never equal. */
    g_assert_true(rpc_value_equal(va, vb));
    g_assert_false(rpc_value_equal(va, vc));
    g_assert_cmpint(opaque_equal_calls, ==, 2);
    g_assert_false(rpc_value_equal(va, vd)); /* same id, other type */
    g_assert_cmpint(opaque_equal_calls, ==, 2);
    /* A type without equal compares by identity. */
    RpcValue *vd2 = rpc_value_new_opaque(&bare_class, obj_ref(&d));
    RpcValue *ve = rpc_value_new_opaque(&bare_class, &(Obj){1, 7, &freed});
    g_assert_true(rpc_value_equal(vd, vd2));
    g_assert_false(rpc_value_equal(vd, ve));

    /* repr(): the hook, else "<Name object>". */
    assert_repr(va, "MyClass(id=7)");
    g_assert_cmpint(opaque_repr_calls, ==, 1);
    assert_repr(vd, "<Bare object>");
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rpc_value_ref(vc));
    assert_repr(l, "[MyClass(id=8)]");
    /* A value ref is not an object ref. */
    int ref_before = opaque_ref_calls;
    rpc_value_ref(va);
    rpc_value_unref(va);
    g_assert_cmpint(opaque_ref_calls, ==, ref_before);
    g_assert_cmpint(opaque_unref_calls, ==, 0);
    g_assert_cmpint(a.refs, ==, 1);

    /* The last value reference drops the object's reference, once. */
    rpc_value_unref(va);
    g_assert_cmpint(opaque_unref_calls, ==, 1);
    g_assert_cmpint(a.refs, ==, 0);
    g_assert_cmpint(freed, ==, 1);
    rpc_value_unref(l); /* vc still held by the test */
    g_assert_cmpint(c.refs, ==, 1);
    rpc_value_unref(vc);
    g_assert_cmpint(c.refs, ==, 0);
    rpc_value_unref(vb);
    rpc_value_unref(vd);
    g_assert_cmpint(d.refs, ==, 1);
    rpc_value_unref(vd2);
    g_assert_cmpint(d.refs, ==, 0);
    rpc_value_unref(ve);
    g_assert_cmpint(freed, ==, 5);
    g_assert_cmpint(opaque_unref_calls, ==, 6);
    g_assert_cmpint(opaque_ref_calls, ==, 1); /* only the test's own obj_ref(&d) */
    /* Opaque values are not futures. */
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    /* A failed check marks its test "not ok" and the run goes on, so that a
     * test kept to show a known bug does not hide the others' results. */
    g_test_set_nonfatal_assertions();
    g_test_add_func("/value/singletons", test_singletons);
    g_test_add_func("/value/scalars", test_scalars);
    g_test_add_func("/value/strings-bytes", test_strings_bytes);
    g_test_add_func("/value/worker-info", test_worker_info);
    g_test_add_func("/value/type-names", test_type_names);
    g_test_add_func("/value/wrong-type-getter", test_wrong_type_getter);
    g_test_add_func("/value/list", test_list);
    g_test_add_func("/value/dict", test_dict);
    g_test_add_func("/value/list-growth", test_list_growth);
    g_test_add_func("/value/dict-insert-take", test_dict_insert_take);
    g_test_add_func("/value/string-len-and-big-values", test_string_len_and_big_values);
    g_test_add_func("/value/containers-own-items", test_containers_own_items);
    g_test_add_func("/value/equal-numbers", test_equal_numbers);
    g_test_add_func("/value/equal-nested", test_equal_nested);
    g_test_add_func("/value/equal-tensors", test_equal_tensors);
    g_test_add_func("/value/equal-tensor-dtype", test_equal_tensor_dtype);
    g_test_add_func("/value/repr", test_repr);
    g_test_add_func("/value/repr-float-shortest", test_repr_float_shortest);
    g_test_add_func("/value/error-values", test_error_values);
    g_test_add_func("/value/error-from-gerror", test_error_from_gerror);
    g_test_add_func("/value/contains-future", test_contains_future);
    g_test_add_func("/value/opaque", test_opaque);
    g_test_add_func("/error/kinds", test_error_kinds);
    g_test_add_func("/error/rpc-err", test_rpc_err);
    return g_test_run();
}
