/* test-codec.c — unit tests for core/codec.c and core/message.c.
 *
 * Round trips of every value type, golden bytes, the exact error texts, and
 * the decoder's robustness: every proper prefix of a valid input must fail
 * with a truncation error, every single-byte corruption and 20,000 random or
 * mutated inputs must give a clean error or a value (never a crash, an abort
 * or a leak — run under valgrind by `make check-valgrind`).  Inputs are
 * copied to the end of a mapping whose next page is PROT_NONE, so an
 * over-read faults at once (picohttpparser's test.c).
 *
 * The fuzz loops use their own LCG with constant seeds (printed on failure);
 * RPCSIM_UNDER_VALGRIND=1 shortens the random loops, never the split-point
 * or corruption loops.
 */
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/codec.h"
#include "core/error.h"
#include "core/future.h"
#include "core/message.h"
#include "core/tensor.h"
#include "core/value.h"

#define F32        RPC_DTYPE_FLOAT32
#define F64        RPC_DTYPE_FLOAT64
#define SHAPE(...) ((const gint64[]){__VA_ARGS__})
#define VALS(...)  ((const double[]){__VA_ARGS__})

static gboolean
under_valgrind(void)
{
    const char *s = g_getenv("RPCSIM_UNDER_VALGRIND");
    return s != NULL && *s != '\0' && strcmp(s, "0") != 0;
}

/* ---- small tools ---------------------------------------------------------- */

/* A 64-bit LCG (Knuth's MMIX constants); the high bits are the good ones. */
typedef struct {
    guint64 s;
} Lcg;

static guint32
lcg_next(Lcg *r)
{
    r->s = r->s * 6364136223846793005ull + 1442695040888963407ull;
    return (guint32)(r->s >> 32);
}

static guint32
lcg_below(Lcg *r, guint32 n)
{
    return (guint32)(((guint64)lcg_next(r) * n) >> 32);
}

/* "07 02 00 00 00" → bytes (transfer full). */
static GBytes *
hex(const char *s)
{
    GByteArray *a = g_byte_array_new();
    while (*s) {
        if (*s == ' ') {
            s++;
            continue;
        }
        g_assert_true(g_ascii_isxdigit(s[0]) && g_ascii_isxdigit(s[1]));
        guint8 b = (guint8)(g_ascii_xdigit_value(s[0]) << 4 | g_ascii_xdigit_value(s[1]));
        g_byte_array_append(a, &b, 1);
        s += 2;
    }
    return g_byte_array_free_to_bytes(a);
}

static char *
to_hex(const guint8 *p, gsize n)
{
    GString *s = g_string_new(NULL);
    for (gsize i = 0; i < n; i++)
        g_string_append_printf(s, "%s%02x", i ? " " : "", p[i]);
    return g_string_free(s, FALSE);
}

static void
assert_bytes_hex(GBytes *got, const char *want_hex)
{
    g_autoptr(GBytes) want = hex(want_hex);
    gsize n = 0;
    const guint8 *p = g_bytes_get_data(got, &n);
    g_autofree char *got_hex = to_hex(p, n);
    g_autofree char *want_norm = to_hex(g_bytes_get_data(want, NULL), g_bytes_get_size(want));
    g_assert_cmpstr(got_hex, ==, want_norm);
}

/* A writer for hand-made wire bytes. */
static void
w8(GByteArray *a, guint8 v)
{
    g_byte_array_append(a, &v, 1);
}

static void
w16(GByteArray *a, guint16 v)
{
    w8(a, (guint8)v);
    w8(a, (guint8)(v >> 8));
}

static void
w32(GByteArray *a, guint32 v)
{
    for (int i = 0; i < 4; i++)
        w8(a, (guint8)(v >> (8 * i)));
}

static void
w64(GByteArray *a, guint64 v)
{
    for (int i = 0; i < 8; i++)
        w8(a, (guint8)(v >> (8 * i)));
}

static void
wbytes(GByteArray *a, const void *p, gsize n)
{
    g_byte_array_append(a, p, (guint)n);
}

/* Header up to and including the payload. */
static GByteArray *
wire_start(guint16 type, gint64 id, const char *payload_hex)
{
    GByteArray *a = g_byte_array_new();
    g_autoptr(GBytes) payload = hex(payload_hex);
    wbytes(a, "RPCS", 4);
    w8(a, RPC_WIRE_VERSION);
    w8(a, 0);
    w16(a, type);
    w64(a, (guint64)id);
    w32(a, (guint32)g_bytes_get_size(payload));
    wbytes(a, g_bytes_get_data(payload, NULL), g_bytes_get_size(payload));
    return a;
}

/* ---- guard page ------------------------------------------------------------ */

typedef struct {
    guint8 *base;
    gsize size; /* usable bytes, followed by one PROT_NONE page */
    gsize page;
} Guard;

static void
guard_init(Guard *g, gsize max_len)
{
    g->page = (gsize)sysconf(_SC_PAGESIZE);
    g->size = MAX((max_len + g->page - 1) / g->page, 1) * g->page;
    g->base =
        mmap(NULL, g->size + g->page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    g_assert_true(g->base != MAP_FAILED);
    g_assert_cmpint(mprotect(g->base + g->size, g->page, PROT_NONE), ==, 0);
}

/* Copies data so that its last byte is the last readable one. */
static const guint8 *
guard_put(Guard *g, const guint8 *data, gsize len)
{
    g_assert_cmpuint(len, <=, g->size);
    guint8 *p = g->base + g->size - len;
    if (len > 0)
        memcpy(p, data, len);
    return p;
}

static void
guard_clear(Guard *g)
{
    munmap(g->base, g->size + g->page);
}

/* ---- an extension type for the hooks ------------------------------------- */

typedef struct {
    gint ref;
    gint64 n;
} TestObj;

static gpointer
test_obj_ref(gpointer p)
{
    ((TestObj *)p)->ref++;
    return p;
}

static void
test_obj_unref(gpointer p)
{
    TestObj *o = p;
    if (--o->ref == 0)
        g_free(o);
}

static gboolean
test_obj_equal(gconstpointer a, gconstpointer b)
{
    return ((const TestObj *)a)->n == ((const TestObj *)b)->n;
}

static const RpcOpaqueType test_obj_type = {
    .name = "TestObj",
    .ref = test_obj_ref,
    .unref = test_obj_unref,
    .equal = test_obj_equal,
};

/* A type the hooks refuse. */
static const RpcOpaqueType lock_type = {
    .name = "Lock",
    .ref = test_obj_ref,
    .unref = test_obj_unref,
};

static RpcValue *
test_obj_new(gint64 n)
{
    TestObj *o = g_new0(TestObj, 1);
    o->ref = 1;
    o->n = n;
    return rpc_value_new_opaque(&test_obj_type, o);
}

static RpcValue *
lock_new(void)
{
    TestObj *o = g_new0(TestObj, 1);
    o->ref = 1;
    return rpc_value_new_opaque(&lock_type, o);
}

static gboolean
test_pickle(gpointer data, const RpcValue *opaque, const char **ext_name, RpcValue **wire_value,
            GError **error)
{
    TestObj *o = rpc_value_get_opaque(opaque, &test_obj_type);
    if (o == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "cannot pickle '%s' object",
                    rpc_value_opaque_type(opaque)->name);
        return FALSE;
    }
    *ext_name = "TestObj";
    *wire_value = rpc_value_new_int(o->n);
    return TRUE;
}

static RpcValue *
test_unpickle(gpointer data, const char *ext_name, RpcValue *wire_value, GError **error)
{
    if (strcmp(ext_name, "TestObj") != 0 || rpc_value_type(wire_value) != RPC_VALUE_INT) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown extension '%s'", ext_name);
        return NULL;
    }
    return test_obj_new(rpc_value_get_int(wire_value));
}

static const RpcCodecHooks test_hooks = {test_pickle, test_unpickle, NULL};

/* ---- values used throughout ---------------------------------------------- */

static RpcTensor *
tensor(RpcDType dtype, guint ndim, const gint64 *shape, const double *values)
{
    RpcTensor *t = rpc_tensor_new_from_doubles(dtype, ndim, shape, values);
    g_assert_nonnull(t);
    return t;
}

static RpcValue *
list_of(guint n, ...)
{
    RpcValue *l = rpc_value_new_list();
    va_list ap;
    va_start(ap, n);
    for (guint i = 0; i < n; i++)
        rpc_value_list_append(l, va_arg(ap, RpcValue *));
    va_end(ap);
    return l;
}

/* A list of dicts of tensors, errors, worker infos, … with 2 tensors. */
static RpcValue *
nested_value(void)
{
    RpcValue *kwargs = rpc_value_new_dict();
    rpc_value_dict_set(kwargs, "alpha", rpc_value_new_double(1.5));
    rpc_value_dict_set(
        kwargs, "beta",
        list_of(3, rpc_value_none(), rpc_value_new_bool(TRUE), rpc_value_new_string("x")));
    rpc_value_dict_set(kwargs, "err", rpc_value_new_error(RPC_ERROR_VALUE, "bad value"));
    rpc_value_dict_set(kwargs, "who", rpc_value_new_worker_info("worker1", 1));
    RpcValue *inner = rpc_value_new_dict();
    rpc_value_dict_set(inner, "t",
                       rpc_value_new_tensor(tensor(F64, 1, SHAPE(3), VALS(0.5, -1, 2))));
    rpc_value_dict_set(inner, "b", rpc_value_new_bytes((const guint8 *)"\0\1\2", 3));
    return list_of(
        4, rpc_value_new_string("my_module.my_add"),
        list_of(2, rpc_value_new_tensor(tensor(F32, 2, SHAPE(2, 2), VALS(1, 2, 3, 4))), kwargs),
        list_of(1, inner), rpc_value_new_int(G_MININT64));
}

/* The body of rpc_sync(to, "my_module.my_add", [3, 4.5]) as the agent
 * builds it: [name, args, kwargs, async]. */
static RpcValue *
call_body(void)
{
    return list_of(4, rpc_value_new_string("my_module.my_add"),
                   list_of(2, rpc_value_new_int(3), rpc_value_new_double(4.5)),
                   rpc_value_new_dict(), rpc_value_new_bool(FALSE));
}

/* Containers past the small sizes: a list of 6 items, a dict of 10 keys
 * (indexed), strings of 12+ bytes mixing ASCII and UTF-8, 300 bytes. */
static RpcValue *
wide_value(void)
{
    RpcValue *d = rpc_value_new_dict();
    for (int i = 0; i < 10; i++) {
        char key[8];
        g_snprintf(key, sizeof key, "k%d", i);
        rpc_value_dict_set(d, key, rpc_value_new_int(i));
    }
    guint8 raw[300];
    for (gsize i = 0; i < sizeof raw; i++)
        raw[i] = (guint8)(i * 7);
    return list_of(6, d, rpc_value_new_string("h\xc3\xa9llo w\xc3\xb6rld!"),
                   rpc_value_new_string("plain ascii, longer than sixteen"),
                   rpc_value_new_bytes(raw, sizeof raw),
                   rpc_value_new_error_user("MyVeryOwnError", "went wrong"),
                   rpc_value_new_worker_info("a-rather-long-worker-name", 7));
}

/* Encodes v with the test hooks (transfer full); tensors go to *tensors. */
static GBytes *
encode_ok(const RpcValue *v, GPtrArray *tensors)
{
    GError *err = NULL;
    GBytes *b = rpc_codec_encode(v, tensors, &test_hooks, &err);
    g_assert_no_error(err);
    g_assert_nonnull(b);
    return b;
}

static GPtrArray *
tensor_array(void)
{
    return g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
}

/* encode → message → wire → message → decode; checks the payload re-encodes
 * to the very same bytes (so doubles are bit-exact), and, when `equal`,
 * rpc_value_equal.  Returns the decoded value (transfer full). */
static RpcValue *
roundtrip_full(const RpcValue *v, gboolean equal)
{
    GError *err = NULL;
    GPtrArray *ts = tensor_array();
    GBytes *payload = encode_ok(v, ts);
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_CALL, 42, g_bytes_ref(payload), ts);
    GBytes *wire = rpc_message_encode(m);
    g_assert_cmpuint(g_bytes_get_size(wire), ==, rpc_message_wire_size(m));
    RpcMessage *m2 = rpc_message_decode(g_bytes_get_data(wire, NULL), g_bytes_get_size(wire), &err);
    g_assert_no_error(err);
    g_assert_true(g_bytes_equal(rpc_message_payload(m2), payload));
    gsize n = 0;
    const guint8 *p = g_bytes_get_data(rpc_message_payload(m2), &n);
    RpcValue *out = rpc_codec_decode(p, n, rpc_message_tensors(m2), &test_hooks, &err);
    g_assert_no_error(err);
    g_assert_nonnull(out);
    if (equal)
        g_assert_true(rpc_value_equal(v, out));
    GPtrArray *ts2 = tensor_array();
    GBytes *again = encode_ok(out, ts2);
    g_assert_true(g_bytes_equal(again, payload));
    g_assert_cmpuint(ts2->len, ==, rpc_message_tensors(m2)->len);
    g_bytes_unref(again);
    g_ptr_array_unref(ts2);
    g_bytes_unref(wire);
    rpc_message_unref(m2);
    rpc_message_unref(m);
    g_bytes_unref(payload);
    return out;
}

/* Round trip that must compare equal; takes v. */
static void
roundtrip(RpcValue *v)
{
    RpcValue *out = roundtrip_full(v, TRUE);
    rpc_value_unref(out);
    rpc_value_unref(v);
}

/* Decodes hex with `ntensors` 1-element tensors available; expects the
 * exact RuntimeError text. */
static void
check_decode_error(const char *payload_hex, guint ntensors, const RpcCodecHooks *hooks,
                   const char *message)
{
    g_autoptr(GBytes) b = hex(payload_hex);
    GPtrArray *ts = tensor_array();
    for (guint i = 0; i < ntensors; i++)
        g_ptr_array_add(ts, rpc_tensor_new_scalar(F32, i));
    GError *err = NULL;
    Guard g;
    guard_init(&g, g_bytes_get_size(b));
    const guint8 *p = guard_put(&g, g_bytes_get_data(b, NULL), g_bytes_get_size(b));
    RpcValue *v = rpc_codec_decode(p, g_bytes_get_size(b), ts, hooks, &err);
    g_assert_null(v);
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, message);
    g_clear_error(&err);
    guard_clear(&g);
    g_ptr_array_unref(ts);
}

static RpcValue *
decode_hex_ok(const char *payload_hex, GPtrArray *ts)
{
    g_autoptr(GBytes) b = hex(payload_hex);
    GError *err = NULL;
    RpcValue *v =
        rpc_codec_decode(g_bytes_get_data(b, NULL), g_bytes_get_size(b), ts, &test_hooks, &err);
    g_assert_no_error(err);
    g_assert_nonnull(v);
    return v;
}

/* ---- /codec: golden bytes and round trips ------------------------------- */

static void
check_golden(RpcValue *v, const char *want_hex)
{
    GPtrArray *ts = tensor_array();
    GBytes *b = encode_ok(v, ts);
    assert_bytes_hex(b, want_hex);
    /* and back */
    GError *err = NULL;
    RpcValue *out =
        rpc_codec_decode(g_bytes_get_data(b, NULL), g_bytes_get_size(b), ts, &test_hooks, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_value_equal(v, out));
    rpc_value_unref(out);
    g_bytes_unref(b);
    g_ptr_array_unref(ts);
    rpc_value_unref(v);
}

static void
test_golden(void)
{
    check_golden(rpc_value_none(), "00");
    check_golden(rpc_value_new_bool(FALSE), "01");
    check_golden(rpc_value_new_bool(TRUE), "02");
    check_golden(rpc_value_new_int(5), "03 05 00 00 00 00 00 00 00");
    check_golden(rpc_value_new_int(-2), "03 fe ff ff ff ff ff ff ff");
    check_golden(rpc_value_new_double(1.5), "04 00 00 00 00 00 00 f8 3f");
    check_golden(rpc_value_new_string(""), "05 00 00 00 00");
    check_golden(rpc_value_new_string("\xc3\xa9"), "05 02 00 00 00 c3 a9");
    check_golden(rpc_value_new_bytes((const guint8 *)"\0z", 2), "06 02 00 00 00 00 7a");
    check_golden(list_of(2, rpc_value_new_bool(TRUE), rpc_value_new_string("a")),
                 "07 02 00 00 00 02 05 01 00 00 00 61");
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "k", rpc_value_none());
    check_golden(d, "08 01 00 00 00 01 00 00 00 6b 00");
    check_golden(rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 1)), "09 00 00 00 00");
    check_golden(rpc_value_new_worker_info("w1", 3), "0a 03 00 00 00 02 00 00 00 77 31");
    check_golden(rpc_value_new_worker_info("w", -1), "0a ff ff ff ff 01 00 00 00 77");
    check_golden(rpc_value_new_error(RPC_ERROR_VALUE, "x"),
                 "0b 01 0a 00 00 00 56 61 6c 75 65 45 72 72 6f 72 01 00 00 00 78");
    check_golden(rpc_value_new_error_user("MyErr", ""),
                 "0b 09 05 00 00 00 4d 79 45 72 72 00 00 00 00");
    check_golden(test_obj_new(7), "0c 07 00 00 00 54 65 73 74 4f 62 6a 03 07 00 00 00 00 00 00 00");
}

static void
test_roundtrip_scalars(void)
{
    roundtrip(rpc_value_none());
    roundtrip(rpc_value_new_bool(TRUE));
    roundtrip(rpc_value_new_bool(FALSE));
    const gint64 ints[] = {0,
                           1,
                           -1,
                           255,
                           256,
                           G_MAXINT32,
                           G_MININT32,
                           (gint64)G_MAXUINT32,
                           G_MAXINT64,
                           G_MININT64,
                           G_MININT64 + 1};
    for (gsize i = 0; i < G_N_ELEMENTS(ints); i++) {
        g_autoptr(RpcValue) v = rpc_value_new_int(ints[i]);
        RpcValue *out = roundtrip_full(v, FALSE);
        g_assert_cmpint(rpc_value_type(out), ==, RPC_VALUE_INT);
        g_assert_cmpint(rpc_value_get_int(out), ==, ints[i]);
        rpc_value_unref(out);
    }
    /* an int stays an int, not a float that compares equal */
    roundtrip(rpc_value_new_double(3.0));
    roundtrip(rpc_value_new_bytes(NULL, 0));
    roundtrip(rpc_value_new_bytes((const guint8 *)"\xff\x00\x80", 3));
    roundtrip(rpc_value_new_worker_info("worker0", 0));
    roundtrip(rpc_value_new_worker_info("", G_MININT32));
    roundtrip(rpc_value_new_worker_info("w\xc3\xa9", G_MAXINT32));
}

static void
test_roundtrip_doubles_bits(void)
{
    const guint64 bits[] = {
        0x0000000000000000ull, /* 0.0 */
        0x8000000000000000ull, /* -0.0 */
        0x7ff0000000000000ull, /* inf */
        0xfff0000000000000ull, /* -inf */
        0x7ff8000000000000ull, /* quiet nan */
        0xfff8000000000001ull, /* negative nan with payload */
        0x7ff0000000000001ull, /* signalling nan */
        0x0000000000000001ull, /* smallest subnormal */
        0x7fefffffffffffffull, /* DBL_MAX */
        0x3fb999999999999aull, /* 0.1 */
    };
    for (gsize i = 0; i < G_N_ELEMENTS(bits); i++) {
        double d;
        memcpy(&d, &bits[i], sizeof d);
        RpcValue *v = rpc_value_new_double(d);
        RpcValue *out = roundtrip_full(v, FALSE); /* nan != nan; check bits */
        g_assert_cmpint(rpc_value_type(out), ==, RPC_VALUE_DOUBLE);
        double got = rpc_value_get_double(out);
        guint64 got_bits;
        memcpy(&got_bits, &got, sizeof got_bits);
        g_assert_cmphex(got_bits, ==, bits[i]);
        rpc_value_unref(out);
        rpc_value_unref(v);
    }
}

static void
test_roundtrip_strings(void)
{
    roundtrip(rpc_value_new_string(""));
    roundtrip(rpc_value_new_string("plain ascii"));
    /* 2-, 3- and 4-byte UTF-8: é, ☃, 𝄞, and the largest code point */
    roundtrip(rpc_value_new_string("h\xc3\xa9llo \xe2\x98\x83 \xf0\x9d\x84\x9e \xf4\x8f\xbf\xbf"));
    GString *big = g_string_new(NULL);
    for (int i = 0; i < 20000; i++)
        g_string_append(big, "ab\xe2\x82\xac"); /* "ab€" */
    roundtrip(rpc_value_new_string_take(g_string_free(big, FALSE)));
}

static void
test_roundtrip_empty_containers(void)
{
    roundtrip(rpc_value_new_list());
    roundtrip(rpc_value_new_dict());
    roundtrip(list_of(2, rpc_value_new_list(), rpc_value_new_dict()));
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "", rpc_value_new_list());
    roundtrip(d);
}

static void
test_roundtrip_nested(void)
{
    roundtrip(nested_value());
    /* a list of dicts of tensors */
    RpcValue *l = rpc_value_new_list();
    for (int i = 0; i < 5; i++) {
        RpcValue *d = rpc_value_new_dict();
        rpc_value_dict_set(d, "w", rpc_value_new_tensor(rpc_tensor_ones2(i, 2)));
        rpc_value_dict_set(d, "b", rpc_value_new_tensor(rpc_tensor_new_scalar(F64, -i)));
        rpc_value_dict_set(d, "i", rpc_value_new_int(i));
        rpc_value_list_append(l, d);
    }
    roundtrip(l);
    /* a large dict takes the hash-set duplicate check */
    RpcValue *big = rpc_value_new_dict();
    for (int i = 0; i < 100; i++) {
        g_autofree char *k = g_strdup_printf("key%d", i);
        rpc_value_dict_set(big, k, rpc_value_new_int(i));
    }
    roundtrip(big);
}

static void
test_roundtrip_errors(void)
{
    for (int k = 0; k < RPC_ERROR_N_KINDS; k++)
        roundtrip(rpc_value_new_error((RpcErrorKind)k, "boom \xe2\x98\x83"));
    roundtrip(rpc_value_new_error_user("MyCustomError", "custom"));
    roundtrip(rpc_value_new_error_user("UserError", ""));
    g_autoptr(RpcValue) v = rpc_value_new_error_user("ValueError", "v");
    RpcValue *out = roundtrip_full(v, TRUE);
    g_assert_cmpint(rpc_value_error_kind(out), ==, RPC_ERROR_VALUE);
    rpc_value_unref(out);
}

static void
test_roundtrip_tensors(void)
{
    /* indices are absolute in the caller's array; each occurrence is sent */
    GPtrArray *ts = tensor_array();
    g_ptr_array_add(ts, rpc_tensor_new_scalar(F32, 9));
    RpcTensor *t = tensor(F32, 1, SHAPE(2), VALS(1, 2));
    RpcValue *v = list_of(2, rpc_value_new_tensor(rpc_tensor_ref(t)), rpc_value_new_tensor(t));
    GBytes *b = encode_ok(v, ts);
    assert_bytes_hex(b, "07 02 00 00 00 09 01 00 00 00 09 02 00 00 00");
    g_assert_cmpuint(ts->len, ==, 3);
    g_assert_true(g_ptr_array_index(ts, 1) == t && g_ptr_array_index(ts, 2) == t);
    GError *err = NULL;
    RpcValue *out =
        rpc_codec_decode(g_bytes_get_data(b, NULL), g_bytes_get_size(b), ts, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_value_equal(v, out));
    g_assert_true(rpc_value_get_tensor(rpc_value_list_get(out, 0)) == t);
    rpc_value_unref(out);
    g_bytes_unref(b);
    rpc_value_unref(v);
    g_ptr_array_unref(ts);

    /* no tensor list: fine without tensors, an error with one */
    g_autoptr(RpcValue) plain = rpc_value_new_int(1);
    g_autoptr(GBytes) pb = rpc_codec_encode(plain, NULL, NULL, &err);
    g_assert_no_error(err);
    g_autoptr(RpcValue) tv = rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 1));
    g_assert_null(rpc_codec_encode(tv, NULL, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, "Can not pickle a Tensor without a tensor list");
    g_clear_error(&err);

    /* special tensors through a message */
    roundtrip(rpc_value_new_tensor(rpc_tensor_new_scalar(F64, -0.0)));
    roundtrip(rpc_value_new_tensor(rpc_tensor_new_zeros(F32, 2, SHAPE(0, 3))));
    roundtrip(rpc_value_new_tensor(rpc_tensor_new_ones(F64, 8, SHAPE(1, 2, 1, 2, 1, 2, 1, 2))));
}

/* ---- /codec: encode errors ---------------------------------------------- */

/* Encoding v must fail with `message`, leaving the tensor list untouched. */
static void
check_encode_error(RpcValue *v, const RpcCodecHooks *hooks, gint code, const char *message)
{
    GPtrArray *ts = tensor_array();
    RpcTensor *pre = rpc_tensor_new_scalar(F32, 1);
    g_ptr_array_add(ts, pre);
    GError *err = NULL;
    g_assert_null(rpc_codec_encode(v, ts, hooks, &err));
    g_assert_error(err, RPC_ERROR, code);
    g_assert_cmpstr(err->message, ==, message);
    g_clear_error(&err);
    g_assert_cmpuint(ts->len, ==, 1);
    g_assert_true(g_ptr_array_index(ts, 0) == pre);
    g_ptr_array_unref(ts);
    rpc_value_unref(v);
}

static RpcValue *
nest_lists(guint depth, RpcValue *leaf)
{
    RpcValue *v = leaf;
    for (guint i = 0; i < depth; i++)
        v = list_of(1, v);
    return v;
}

static void
test_encode_future(void)
{
    RpcFuture *f = rpc_future_new(NULL);
    const char *msg = RPC_CODEC_MSG_PICKLE_FUTURE;
    g_assert_cmpstr(msg, ==, "Can not pickle torch.futures.Future");
    check_encode_error(rpc_value_new_future(f), NULL, RPC_ERROR_RUNTIME, msg);
    /* after a tensor was already appended: the list is restored */
    check_encode_error(
        list_of(2, rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 2)), rpc_value_new_future(f)),
        &test_hooks, RPC_ERROR_RUNTIME, msg);
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "t", rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 2)));
    rpc_value_dict_set(d, "f", list_of(1, rpc_value_new_future(f)));
    check_encode_error(nest_lists(10, d), &test_hooks, RPC_ERROR_RUNTIME, msg);
    rpc_future_unref(f);
}

static void
test_encode_opaque(void)
{
    check_encode_error(test_obj_new(1), NULL, RPC_ERROR_RUNTIME, "Can not pickle TestObj object");
    check_encode_error(list_of(2, rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 2)), lock_new()),
                       NULL, RPC_ERROR_RUNTIME, "Can not pickle Lock object");
    /* the hook's own error is propagated as is */
    check_encode_error(list_of(1, lock_new()), &test_hooks, RPC_ERROR_TYPE,
                       "cannot pickle 'Lock' object");
    RpcCodecHooks unpickle_only = {NULL, test_unpickle, NULL};
    check_encode_error(test_obj_new(1), &unpickle_only, RPC_ERROR_RUNTIME,
                       "Can not pickle TestObj object");
}

static void
test_encode_depth(void)
{
    roundtrip(nest_lists(RPC_CODEC_MAX_DEPTH, rpc_value_new_int(1)));
    check_encode_error(nest_lists(RPC_CODEC_MAX_DEPTH + 1, rpc_value_none()), NULL,
                       RPC_ERROR_RUNTIME, "Can not pickle a value nested deeper than 64 levels");
    /* an extension is a level too */
    check_encode_error(nest_lists(RPC_CODEC_MAX_DEPTH, test_obj_new(1)), &test_hooks,
                       RPC_ERROR_RUNTIME, "Can not pickle a value nested deeper than 64 levels");
}

static void
test_encode_invalid_utf8(void)
{
    check_encode_error(rpc_value_new_string("a\xff"), NULL, RPC_ERROR_RUNTIME,
                       "Can not pickle string: invalid UTF-8");
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "\xc0\x80", rpc_value_none());
    check_encode_error(d, NULL, RPC_ERROR_RUNTIME, "Can not pickle dict key: invalid UTF-8");
    check_encode_error(rpc_value_new_worker_info("\xed\xa0\x80", 1), NULL, RPC_ERROR_RUNTIME,
                       "Can not pickle worker name: invalid UTF-8");
    check_encode_error(rpc_value_new_error(RPC_ERROR_RUNTIME, "\x80"), NULL, RPC_ERROR_RUNTIME,
                       "Can not pickle exception message: invalid UTF-8");
}

/* ---- /codec: extensions -------------------------------------------------- */

static void
test_extension_roundtrip(void)
{
    RpcValue *d = rpc_value_new_dict();
    rpc_value_dict_set(d, "obj", test_obj_new(-5));
    rpc_value_dict_set(d, "t", rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 3)));
    RpcValue *v = list_of(3, test_obj_new(42), d, nest_lists(3, test_obj_new(G_MAXINT64)));
    RpcValue *out = roundtrip_full(v, TRUE);
    TestObj *o = rpc_value_get_opaque(rpc_value_list_get(out, 0), &test_obj_type);
    g_assert_nonnull(o);
    g_assert_cmpint(o->n, ==, 42);
    rpc_value_unref(out);
    rpc_value_unref(v);
}

static void
test_extension_decode_errors(void)
{
    const char *obj = "0c 07 00 00 00 54 65 73 74 4f 62 6a 03 07 00 00 00 00 00 00 00";
    check_decode_error(obj, 0, NULL,
                       "Can not unpickle extension 'TestObj' without codec hooks "
                       "(offset 0)");
    RpcCodecHooks pickle_only = {test_pickle, NULL, NULL};
    check_decode_error(obj, 0, &pickle_only,
                       "Can not unpickle extension 'TestObj' without codec hooks (offset 0)");
    /* the hook's error; the wire value (a list holding a tensor) is freed */
    check_decode_error("0c 04 00 00 00 52 52 65 66 07 01 00 00 00 09 00 00 00 00", 1, &test_hooks,
                       "unknown extension 'RRef'");
    /* a bad wire value inside an extension */
    check_decode_error("0c 01 00 00 00 78 03 01", 0, &test_hooks,
                       "truncated payload: need 8 bytes for an int at offset 7, have 1");
    GPtrArray *none = NULL;
    g_autoptr(RpcValue) v = decode_hex_ok(obj, none);
    g_assert_cmpint(((TestObj *)rpc_value_get_opaque(v, &test_obj_type))->n, ==, 7);
}

/* Hooks that break their contract still give a clean error and no leak. */
static gboolean
pickle_fail_silently(gpointer data, const RpcValue *opaque, const char **ext_name,
                     RpcValue **wire_value, GError **error)
{
    *wire_value = rpc_value_new_int(1); /* dropped by the codec */
    return FALSE;
}

static gboolean
pickle_no_value(gpointer data, const RpcValue *opaque, const char **ext_name, RpcValue **wire_value,
                GError **error)
{
    *ext_name = "TestObj";
    return TRUE;
}

static gboolean
pickle_no_name(gpointer data, const RpcValue *opaque, const char **ext_name, RpcValue **wire_value,
               GError **error)
{
    *wire_value = rpc_value_new_int(1);
    return TRUE;
}

static RpcValue *
unpickle_fail_silently(gpointer data, const char *ext_name, RpcValue *wire_value, GError **error)
{
    return NULL;
}

static void
test_extension_misbehaving_hooks(void)
{
    RpcCodecHooks h = {pickle_fail_silently, unpickle_fail_silently, NULL};
    check_encode_error(test_obj_new(1), &h, RPC_ERROR_RUNTIME, "Can not pickle TestObj object");
    h.pickle = pickle_no_value;
    check_encode_error(test_obj_new(1), &h, RPC_ERROR_RUNTIME,
                       "Can not pickle TestObj object: the pickle hook returned no value");
    h.pickle = pickle_no_name;
    check_encode_error(test_obj_new(1), &h, RPC_ERROR_RUNTIME,
                       "Can not pickle TestObj object: the pickle hook returned no extension name");
    check_decode_error("07 01 00 00 00 0c 01 00 00 00 78 00", 0, &h,
                       "Can not unpickle extension 'x' (offset 5)");
}

/* ---- /codec: hostile input ----------------------------------------------- */

static void
test_decode_hostile(void)
{
    /* counts and lengths larger than the input: rejected before allocating */
    check_decode_error("07 00 00 00 80 00 00 00 00 00 00 00 00 00 00", 0, NULL,
                       "truncated payload: list of 2147483648 items at offset 0 needs at least "
                       "2147483648 bytes, have 10");
    check_decode_error("08 ff ff ff ff 00 00 00 00 00", 0, NULL,
                       "truncated payload: dict of 4294967295 items at offset 0 needs at least "
                       "21474836475 bytes, have 5");
    check_decode_error("05 ff ff ff ff 61", 0, NULL,
                       "truncated payload: need 4294967295 bytes for a string at offset 5, have 1");
    check_decode_error("06 ff ff ff 7f", 0, NULL,
                       "truncated payload: need 2147483647 bytes for bytes at offset 5, have 0");
    check_decode_error("", 0, NULL,
                       "truncated payload: need 1 byte for a value tag at offset 0, have 0");
    check_decode_error("03 01 02 03", 0, NULL,
                       "truncated payload: need 8 bytes for an int at offset 1, have 3");
    /* tensor indices */
    check_decode_error("09 05 00 00 00", 2, NULL,
                       "tensor index 5 out of range (2 tensors) at offset 0");
    check_decode_error("07 01 00 00 00 09 00 00 00 00", 0, NULL,
                       "tensor index 0 out of range (0 tensors) at offset 5");
    /* tags, trailing bytes */
    check_decode_error("0d", 0, NULL, "unknown value tag 0x0d at offset 0");
    check_decode_error("07 02 00 00 00 00 ff", 0, NULL, "unknown value tag 0xff at offset 6");
    check_decode_error("00 00", 0, NULL, "trailing bytes after value: 1 byte at offset 1");
    check_decode_error("02 00 00 00", 0, NULL, "trailing bytes after value: 3 bytes at offset 1");
    /* strings: UTF-8 and NUL */
    check_decode_error("05 02 00 00 00 c3 28", 0, NULL, "invalid UTF-8 in a string at offset 5");
    check_decode_error("05 02 00 00 00 c0 80", 0, NULL, "invalid UTF-8 in a string at offset 5");
    check_decode_error("05 04 00 00 00 61 ed a0 80", 0, NULL,
                       "invalid UTF-8 in a string at offset 6");
    check_decode_error("05 04 00 00 00 f4 90 80 80", 0, NULL,
                       "invalid UTF-8 in a string at offset 5");
    check_decode_error("05 01 00 00 00 80", 0, NULL, "invalid UTF-8 in a string at offset 5");
    check_decode_error("05 02 00 00 00 e2 98", 0, NULL, "invalid UTF-8 in a string at offset 5");
    check_decode_error("05 03 00 00 00 61 00 62", 0, NULL, "NUL byte in a string at offset 6");
    check_decode_error("08 01 00 00 00 01 00 00 00 00 00", 0, NULL,
                       "NUL byte in a dict key at offset 9");
    check_decode_error("0a 01 00 00 00 01 00 00 00 ff", 0, NULL,
                       "invalid UTF-8 in a worker name at offset 9");
    /* bytes may hold anything */
    g_autoptr(RpcValue) b = decode_hex_ok("06 02 00 00 00 00 ff", NULL);
    gsize n = 0;
    g_assert_cmpmem(rpc_value_get_bytes(b, &n), 2, "\0\xff", 2);
    /* duplicate keys, small and hashed */
    check_decode_error("08 02 00 00 00 01 00 00 00 61 00 01 00 00 00 61 00", 0, NULL,
                       "duplicate dict key 'a' at offset 11");
    GString *s = g_string_new("08 12 00 00 00");
    for (int i = 0; i < 18; i++)
        g_string_append_printf(s, " 01 00 00 00 %02x 00", i == 17 ? 0x41 + 3 : 0x41 + i);
    check_decode_error(s->str, 0, NULL, "duplicate dict key 'D' at offset 107");
    g_string_free(s, TRUE);
    /* errors: kind out of range, kind and name disagreeing */
    check_decode_error("0b 0a 00 00 00 00 00 00 00 00", 0, NULL,
                       "unknown exception kind 10 at offset 1");
    check_decode_error("0b ff 00 00 00 00 00 00 00 00", 0, NULL,
                       "unknown exception kind 255 at offset 1");
    check_decode_error("0b 01 09 00 00 00 54 79 70 65 45 72 72 6f 72 00 00 00 00", 0, NULL,
                       "exception kind 1 does not match its type name 'TypeError' at offset 2");
    check_decode_error("0b 09 0a 00 00 00 56 61 6c 75 65 45 72 72 6f 72 00 00 00 00", 0, NULL,
                       "exception kind 9 does not match its type name 'ValueError' at offset 2");
    check_decode_error("0b 00 0c 00 00 00 52 75 6e 74 69 6d 65 45 72 72 6f 72", 0, NULL,
                       "truncated payload: need 4 bytes for an exception message at offset 18, "
                       "have 0");
}

static void
test_decode_depth(void)
{
    /* exactly the cap decodes; one more fails */
    for (guint depth = RPC_CODEC_MAX_DEPTH; depth <= RPC_CODEC_MAX_DEPTH + 1; depth++) {
        GString *s = g_string_new(NULL);
        for (guint i = 0; i < depth; i++)
            g_string_append(s, "07 01 00 00 00 ");
        g_string_append(s, "00");
        if (depth <= RPC_CODEC_MAX_DEPTH) {
            RpcValue *v = decode_hex_ok(s->str, NULL);
            rpc_value_unref(v);
        } else {
            check_decode_error(s->str, 0, NULL, "value nested deeper than 64 levels at offset 320");
        }
        g_string_free(s, TRUE);
    }
    /* 1000 levels (and dicts, and extensions) fail at the cap, not the stack */
    GString *s = g_string_new(NULL);
    for (guint i = 0; i < 1000; i++)
        g_string_append(s, "07 01 00 00 00 ");
    g_string_append(s, "00");
    check_decode_error(s->str, 0, NULL, "value nested deeper than 64 levels at offset 320");
    g_string_truncate(s, 0);
    for (guint i = 0; i < 1000; i++)
        g_string_append(s, "08 01 00 00 00 00 00 00 00 ");
    g_string_append(s, "00");
    check_decode_error(s->str, 0, NULL, "value nested deeper than 64 levels at offset 576");
    g_string_truncate(s, 0);
    for (guint i = 0; i < 1000; i++)
        g_string_append(s, "0c 01 00 00 00 78 ");
    g_string_append(s, "00");
    check_decode_error(s->str, 0, &test_hooks, "value nested deeper than 64 levels at offset 384");
    g_string_free(s, TRUE);
}

/* ---- /codec: split points, corruption, fuzz ------------------------------ */

/* The exact bytes of a call body (the message every rpc_sync sends). */
static void
test_golden_call_body(void)
{
    check_golden(call_body(), "07 04 00 00 00"
                              " 05 10 00 00 00 6d 79 5f 6d 6f 64 75 6c 65 2e 6d 79 5f 61 64 64"
                              " 07 02 00 00 00 03 03 00 00 00 00 00 00 00"
                              " 04 00 00 00 00 00 00 12 40"
                              " 08 00 00 00 00"
                              " 01");
}

static void
wstr(GByteArray *a, const char *s)
{
    w32(a, (guint32)strlen(s));
    wbytes(a, s, strlen(s));
}

/* wide_value()'s exact bytes, written out independently of the encoder. */
static void
test_golden_wide(void)
{
    GByteArray *a = g_byte_array_new();
    w8(a, 0x07);
    w32(a, 6);
    w8(a, 0x08);
    w32(a, 10);
    for (int i = 0; i < 10; i++) {
        char key[8];
        g_snprintf(key, sizeof key, "k%d", i);
        wstr(a, key);
        w8(a, 0x03);
        w64(a, (guint64)i);
    }
    w8(a, 0x05);
    wstr(a, "h\xc3\xa9llo w\xc3\xb6rld!");
    w8(a, 0x05);
    wstr(a, "plain ascii, longer than sixteen");
    w8(a, 0x06);
    w32(a, 300);
    for (guint i = 0; i < 300; i++)
        w8(a, (guint8)(i * 7));
    w8(a, 0x0b);
    w8(a, RPC_ERROR_USER);
    wstr(a, "MyVeryOwnError");
    wstr(a, "went wrong");
    w8(a, 0x0a);
    w32(a, 7);
    wstr(a, "a-rather-long-worker-name");
    g_autoptr(GBytes) want = g_byte_array_free_to_bytes(a);

    RpcValue *v = wide_value();
    GBytes *got = encode_ok(v, NULL);
    g_assert_true(g_bytes_equal(got, want));
    GError *err = NULL;
    RpcValue *back =
        rpc_codec_decode(g_bytes_get_data(got, NULL), g_bytes_get_size(got), NULL, NULL, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_value_equal(v, back));
    g_autofree char *r1 = rpc_value_repr(v);
    g_autofree char *r2 = rpc_value_repr(back);
    g_assert_cmpstr(r1, ==, r2);
    /* the dict keeps its order through the wire */
    RpcValue *d = rpc_value_list_get(back, 0);
    for (guint i = 0; i < 10; i++) {
        char key[8];
        g_snprintf(key, sizeof key, "k%u", i);
        g_assert_cmpstr(rpc_value_dict_key_at(d, i), ==, key);
        g_assert_cmpint(rpc_value_get_int(rpc_value_dict_get(d, key)), ==, i);
    }
    rpc_value_unref(back);
    g_bytes_unref(got);
    rpc_value_unref(v);
}

/* rpc_codec_encode_append appends exactly rpc_codec_encode's bytes after
 * what the buffer holds (a buffer that must grow on the way, too), and on
 * failure leaves the buffer and the tensor list as they were. */
static void
test_encode_append(void)
{
    RpcValue *vs[] = {nested_value(), call_body(), wide_value(), rpc_value_none()};
    for (gsize i = 0; i < G_N_ELEMENTS(vs); i++) {
        for (guint prefix = 0; prefix < 200; prefix += 67) {
            GPtrArray *ts1 = tensor_array();
            GPtrArray *ts2 = tensor_array();
            g_ptr_array_add(ts2, rpc_tensor_new_scalar(F32, 1)); /* indices stay absolute */
            g_ptr_array_add(ts1, rpc_tensor_new_scalar(F32, 1));
            GBytes *want = encode_ok(vs[i], ts1);
            RpcCodecBuffer out = {NULL, 0, 0};
            guint8 *pre = rpc_codec_buffer_reserve(&out, prefix);
            for (guint k = 0; k < prefix; k++)
                pre[k] = (guint8)k;
            GError *err = NULL;
            g_assert_true(rpc_codec_encode_append(&out, vs[i], ts2, &test_hooks, &err));
            g_assert_no_error(err);
            g_assert_cmpuint(out.len, ==, prefix + g_bytes_get_size(want));
            for (guint k = 0; k < prefix; k++)
                g_assert_cmpuint(out.data[k], ==, (guint8)k);
            g_assert_cmpmem(out.data + prefix, out.len - prefix, g_bytes_get_data(want, NULL),
                            g_bytes_get_size(want));
            g_assert_cmpuint(ts1->len, ==, ts2->len);
            g_bytes_unref(want);
            rpc_codec_buffer_clear(&out);
            g_ptr_array_unref(ts1);
            g_ptr_array_unref(ts2);
        }
        rpc_value_unref(vs[i]);
    }

    /* a tensor, a long string, then a future: nothing is left behind */
    RpcFuture *f = rpc_future_new(NULL);
    char big[1000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    RpcValue *bad = list_of(3, rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 2)),
                            rpc_value_new_string(big), rpc_value_new_future(f));
    rpc_future_unref(f);
    RpcCodecBuffer out = {NULL, 0, 0};
    guint8 *pre = rpc_codec_buffer_reserve(&out, 2);
    pre[0] = 0xaa;
    pre[1] = 0xbb;
    GPtrArray *ts = tensor_array();
    GError *err = NULL;
    g_assert_false(rpc_codec_encode_append(&out, bad, ts, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, RPC_CODEC_MSG_PICKLE_FUTURE);
    g_clear_error(&err);
    g_assert_cmpuint(out.len, ==, 2);
    g_assert_cmpuint(out.data[0], ==, 0xaa);
    g_assert_cmpuint(out.data[1], ==, 0xbb);
    g_assert_cmpuint(ts->len, ==, 0);
    g_ptr_array_unref(ts);
    rpc_codec_buffer_clear(&out);
    rpc_value_unref(bad);
}

/* The decoder's 8-bytes-at-a-time ASCII check hands every string with a
 * NUL or a byte >= 0x80 to the exact checks, at every position and length
 * around the word size; the errors name the same offsets as before. */
static void
test_decode_string_checks(void)
{
    for (guint n = 1; n <= 20; n++) {
        for (guint at = 0; at < n; at++) {
            for (int kind = 0; kind < 4; kind++) {
                char s[32];
                memset(s, 'a', n);
                s[n] = '\0';
                guint len = n;
                if (kind == 0)
                    s[at] = '\0';
                else if (kind == 1)
                    s[at] = (char)0xff;
                else if (kind == 2)
                    s[at] = (char)0x7f; /* DEL: plain ASCII */
                else if (at + 1 < n)
                    s[at] = (char)0xc3, s[at + 1] = (char)0xa9; /* é */
                else
                    s[at] = (char)0xc3; /* é cut short */
                for (int in_dict = 0; in_dict < 2; in_dict++) {
                    GByteArray *a = g_byte_array_new();
                    if (in_dict) {
                        w8(a, 0x08);
                        w32(a, 1);
                    } else {
                        w8(a, 0x05);
                    }
                    w32(a, len);
                    wbytes(a, s, len);
                    if (in_dict)
                        w8(a, 0x00);
                    GError *err = NULL;
                    RpcValue *v = rpc_codec_decode(a->data, a->len, NULL, NULL, &err);
                    const char *what = in_dict ? "a dict key" : "a string";
                    gsize off = (in_dict ? 9 : 5) + at;
                    if (kind == 0) {
                        g_autofree char *want =
                            g_strdup_printf("NUL byte in %s at offset %" G_GSIZE_FORMAT, what, off);
                        g_assert_null(v);
                        g_assert_cmpstr(err->message, ==, want);
                    } else if (kind == 1 || (kind == 3 && at + 1 == n)) {
                        g_autofree char *want = g_strdup_printf(
                            "invalid UTF-8 in %s at offset %" G_GSIZE_FORMAT, what, off);
                        g_assert_null(v);
                        g_assert_cmpstr(err->message, ==, want);
                    } else {
                        g_assert_no_error(err);
                        const char *got =
                            in_dict ? rpc_value_dict_key_at(v, 0) : rpc_value_get_string(v);
                        g_assert_cmpmem(got, strlen(got), s, len);
                    }
                    g_clear_error(&err);
                    rpc_value_unref(v);
                    g_byte_array_unref(a);
                }
            }
        }
    }
}

/* The encoder's ASCII fast path: invalid UTF-8 anywhere in a string of any
 * length is still refused, valid multi-byte text still accepted. */
static void
test_encode_string_checks(void)
{
    for (guint n = 1; n <= 20; n++) {
        for (guint at = 0; at < n; at++) {
            char s[32];
            memset(s, 'b', n);
            s[n] = '\0';
            s[at] = (char)0xfe;
            RpcValue *v = rpc_value_new_string(s);
            GError *err = NULL;
            g_assert_null(rpc_codec_encode(v, NULL, NULL, &err));
            g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
            g_assert_cmpstr(err->message, ==, "Can not pickle string: invalid UTF-8");
            g_clear_error(&err);
            rpc_value_unref(v);
            RpcValue *d = rpc_value_new_dict();
            rpc_value_dict_set(d, s, rpc_value_none());
            g_assert_null(rpc_codec_encode(d, NULL, NULL, &err));
            g_assert_cmpstr(err->message, ==, "Can not pickle dict key: invalid UTF-8");
            g_clear_error(&err);
            rpc_value_unref(d);
            if (at + 1 < n) {
                s[at] = (char)0xc3;
                s[at + 1] = (char)0xa9;
                roundtrip(rpc_value_new_string(s));
            }
        }
    }
}

/* Representative payloads (transfer full) and their tensors. */
static GPtrArray *
sample_payloads(GPtrArray *tensors)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    RpcValue *vs[] = {
        nested_value(),
        list_of(3, test_obj_new(3), rpc_value_new_error_user("MyErr", "m"),
                rpc_value_new_string("\xe2\x98\x83")),
        rpc_value_new_int(5),
        rpc_value_new_dict(),
        call_body(),
        wide_value(),
    };
    for (gsize i = 0; i < G_N_ELEMENTS(vs); i++) {
        g_ptr_array_add(out, encode_ok(vs[i], tensors));
        rpc_value_unref(vs[i]);
    }
    return out;
}

static void
test_codec_split_points(void)
{
    GPtrArray *ts = tensor_array();
    GPtrArray *payloads = sample_payloads(ts);
    g_assert_cmpuint(ts->len, ==, 2);
    Guard g;
    guard_init(&g, 4096);
    guint checked = 0;
    for (guint i = 0; i < payloads->len; i++) {
        gsize len = 0;
        const guint8 *data = g_bytes_get_data(g_ptr_array_index(payloads, i), &len);
        for (gsize k = 0; k <= len; k++) {
            GError *err = NULL;
            const guint8 *p = guard_put(&g, data, k);
            RpcValue *v = rpc_codec_decode(p, k, ts, &test_hooks, &err);
            if (k < len) {
                if (v != NULL || !g_error_matches(err, RPC_ERROR, RPC_ERROR_RUNTIME) ||
                    !g_str_has_prefix(err->message, "truncated payload"))
                    g_error("payload %u prefix %" G_GSIZE_FORMAT "/%" G_GSIZE_FORMAT
                            ": expected a truncation error, got %s",
                            i, k, len, err ? err->message : "a value");
                g_clear_error(&err);
            } else {
                g_assert_no_error(err);
                g_assert_nonnull(v);
                rpc_value_unref(v);
            }
            checked++;
        }
    }
    g_test_message("%u payload prefixes checked", checked);
    guard_clear(&g);
    g_ptr_array_unref(payloads);
    g_ptr_array_unref(ts);
}

/* Decodes a payload that may be garbage: a clean error or a value that
 * re-encodes (and, with no tensors, to the very same bytes). */
static gboolean
decode_payload_any(const guint8 *p, gsize len, GPtrArray *ts, const char *what, guint64 seed,
                   guint iter)
{
    GError *err = NULL;
    RpcValue *v = rpc_codec_decode(p, len, ts, &test_hooks, &err);
    if (v == NULL) {
        if (!g_error_matches(err, RPC_ERROR, RPC_ERROR_RUNTIME) || err->message[0] == '\0')
            g_error("%s (seed 0x%" G_GINT64_MODIFIER "x, iteration %u): bad error %s", what, seed,
                    iter, err ? err->message : "(none)");
        g_clear_error(&err);
        return FALSE;
    }
    GPtrArray *ts2 = tensor_array();
    GBytes *again = rpc_codec_encode(v, ts2, &test_hooks, &err);
    if (again == NULL)
        g_error("%s (seed 0x%" G_GINT64_MODIFIER "x, iteration %u): decoded value does not "
                "re-encode: %s",
                what, seed, iter, err->message);
    if (ts == NULL || ts->len == 0) {
        gsize n = 0;
        const guint8 *q = g_bytes_get_data(again, &n);
        if (n != len || memcmp(p, q, n) != 0)
            g_error("%s (seed 0x%" G_GINT64_MODIFIER "x, iteration %u): not canonical", what, seed,
                    iter);
    }
    g_bytes_unref(again);
    g_ptr_array_unref(ts2);
    rpc_value_unref(v);
    return TRUE;
}

static const guint8 corrupt_values[] = {0x00, 0xff, 0x7f, 0x80};

static void
test_codec_corruption(void)
{
    GPtrArray *ts = tensor_array();
    GPtrArray *payloads = sample_payloads(ts);
    Guard g;
    guard_init(&g, 4096);
    guint n = 0;
    for (guint i = 0; i < payloads->len; i++) {
        gsize len = 0;
        const guint8 *orig = g_bytes_get_data(g_ptr_array_index(payloads, i), &len);
        guint8 *buf = g_memdup2(orig, len);
        for (gsize pos = 0; pos < len; pos++) {
            for (guint m = 0; m < 8 + G_N_ELEMENTS(corrupt_values); m++) {
                buf[pos] = m < 8 ? orig[pos] ^ (guint8)(1u << m) : corrupt_values[m - 8];
                decode_payload_any(guard_put(&g, buf, len), len, ts, "payload corruption", i,
                                   (guint)pos);
                n++;
            }
            buf[pos] = orig[pos];
        }
        g_free(buf);
    }
    g_test_message("%u corrupted payloads decoded", n);
    guard_clear(&g);
    g_ptr_array_unref(payloads);
    g_ptr_array_unref(ts);
}

/* A random byte biased towards the codec's tags and small counts. */
static guint8
biased_byte(Lcg *r)
{
    guint32 x = lcg_next(r);
    switch (x & 3) {
    case 0:
        return (guint8)((x >> 8) % 0x0d);
    case 1:
        return 0;
    case 2:
        return (guint8)((x >> 8) & 3);
    default:
        return (guint8)(x >> 8);
    }
}

static guint
fuzz_iterations(void)
{
    return under_valgrind() ? 2000 : 20000;
}

static void
test_codec_fuzz(void)
{
    const guint64 seed = 0xc0dec5eedull;
    Lcg r = {seed};
    GPtrArray *ts = tensor_array();
    GPtrArray *payloads = sample_payloads(ts);
    Guard g;
    guard_init(&g, 4096);
    guint8 buf[2048];
    guint iters = fuzz_iterations();
    guint decoded = 0;
    for (guint it = 0; it < iters; it++) {
        gsize len;
        GPtrArray *use_ts = (it & 1) ? ts : NULL;
        if (it % 3 == 0) {
            len = lcg_below(&r, 64);
            for (gsize i = 0; i < len; i++)
                buf[i] = biased_byte(&r);
        } else {
            GBytes *b = g_ptr_array_index(payloads, lcg_below(&r, payloads->len));
            len = g_bytes_get_size(b);
            g_assert_cmpuint(len, <, sizeof buf);
            memcpy(buf, g_bytes_get_data(b, NULL), len);
            guint muts = 1 + lcg_below(&r, 4);
            for (guint m = 0; m < muts && len > 0; m++) {
                gsize pos = lcg_below(&r, (guint32)len);
                switch (lcg_below(&r, 4)) {
                case 0:
                    buf[pos] ^= (guint8)(1u << lcg_below(&r, 8));
                    break;
                case 1:
                    buf[pos] = biased_byte(&r);
                    break;
                case 2: /* delete a byte */
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                    break;
                default: /* insert a byte */
                    if (len < sizeof buf) {
                        memmove(buf + pos + 1, buf + pos, len - pos);
                        buf[pos] = biased_byte(&r);
                        len++;
                    }
                }
            }
            use_ts = ts;
        }
        decoded +=
            decode_payload_any(guard_put(&g, buf, len), len, use_ts, "payload fuzz", seed, it);
    }
    g_test_message("%u fuzzed payloads, %u decoded (seed 0x%" G_GINT64_MODIFIER "x)", iters,
                   decoded, seed);
    guard_clear(&g);
    g_ptr_array_unref(payloads);
    g_ptr_array_unref(ts);
}

/* ---- /message ------------------------------------------------------------- */

static void
test_message_type_names(void)
{
    static const struct {
        RpcMessageType t;
        const char *name;
        gboolean req, resp;
    } cases[] = {
        {RPC_MSG_SCRIPT_CALL, "SCRIPT_CALL", TRUE, FALSE},
        {RPC_MSG_SCRIPT_RET, "SCRIPT_RET", FALSE, TRUE},
        {RPC_MSG_PYTHON_CALL, "PYTHON_CALL", TRUE, FALSE},
        {RPC_MSG_PYTHON_RET, "PYTHON_RET", FALSE, TRUE},
        {RPC_MSG_SCRIPT_REMOTE_CALL, "SCRIPT_REMOTE_CALL", TRUE, FALSE},
        {RPC_MSG_PYTHON_REMOTE_CALL, "PYTHON_REMOTE_CALL", TRUE, FALSE},
        {RPC_MSG_REMOTE_RET, "REMOTE_RET", FALSE, TRUE},
        {RPC_MSG_SCRIPT_RREF_FETCH_CALL, "SCRIPT_RREF_FETCH_CALL", TRUE, FALSE},
        {RPC_MSG_PYTHON_RREF_FETCH_CALL, "PYTHON_RREF_FETCH_CALL", TRUE, FALSE},
        {RPC_MSG_SCRIPT_RREF_FETCH_RET, "SCRIPT_RREF_FETCH_RET", FALSE, TRUE},
        {RPC_MSG_PYTHON_RREF_FETCH_RET, "PYTHON_RREF_FETCH_RET", FALSE, TRUE},
        {RPC_MSG_RREF_USER_DELETE, "RREF_USER_DELETE", TRUE, FALSE},
        {RPC_MSG_RREF_FORK_REQUEST, "RREF_FORK_REQUEST", TRUE, FALSE},
        {RPC_MSG_RREF_CHILD_ACCEPT, "RREF_CHILD_ACCEPT", TRUE, FALSE},
        {RPC_MSG_RREF_ACK, "RREF_ACK", FALSE, TRUE},
        {RPC_MSG_FORWARD_AUTOGRAD_REQ, "FORWARD_AUTOGRAD_REQ", TRUE, FALSE},
        {RPC_MSG_FORWARD_AUTOGRAD_RESP, "FORWARD_AUTOGRAD_RESP", FALSE, TRUE},
        {RPC_MSG_BACKWARD_AUTOGRAD_REQ, "BACKWARD_AUTOGRAD_REQ", TRUE, FALSE},
        {RPC_MSG_BACKWARD_AUTOGRAD_RESP, "BACKWARD_AUTOGRAD_RESP", FALSE, TRUE},
        {RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ, "CLEANUP_AUTOGRAD_CONTEXT_REQ", TRUE, FALSE},
        {RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_RESP, "CLEANUP_AUTOGRAD_CONTEXT_RESP", FALSE, TRUE},
        {RPC_MSG_RUN_WITH_PROFILING_REQ, "RUN_WITH_PROFILING_REQ", TRUE, FALSE},
        {RPC_MSG_RUN_WITH_PROFILING_RESP, "RUN_WITH_PROFILING_RESP", FALSE, TRUE},
        {RPC_MSG_RREF_BACKWARD_REQ, "RREF_BACKWARD_REQ", TRUE, FALSE},
        {RPC_MSG_RREF_BACKWARD_RESP, "RREF_BACKWARD_RESP", FALSE, TRUE},
        {RPC_MSG_EXCEPTION, "EXCEPTION", FALSE, TRUE},
        {RPC_MSG_UNKNOWN, "UNKNOWN", FALSE, FALSE},
    };
    guint known = 0;
    for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_assert_cmpstr(rpc_message_type_name(cases[i].t), ==, cases[i].name);
        RpcMessageType back = (RpcMessageType)0xffff;
        g_assert_true(rpc_message_type_from_name(cases[i].name, &back));
        g_assert_cmpint(back, ==, cases[i].t);
        g_assert_cmpint(rpc_message_type_is_request(cases[i].t), ==, cases[i].req);
        g_assert_cmpint(rpc_message_type_is_response(cases[i].t), ==, cases[i].resp);
        g_assert_true(rpc_message_type_is_known(cases[i].t));
    }
    g_assert_cmpint(RPC_MSG_PYTHON_CALL, ==, 0x102);
    g_assert_cmpint(RPC_MSG_EXCEPTION, ==, 0x237);
    for (guint t = 0; t < 0x10000; t++)
        known += rpc_message_type_is_known(t);
    g_assert_cmpuint(known, ==, G_N_ELEMENTS(cases));
    g_assert_cmpstr(rpc_message_type_name((RpcMessageType)0x999), ==, "UNKNOWN");
    g_assert_cmpstr(rpc_message_type_name((RpcMessageType)0x02), ==, "UNKNOWN");
    g_assert_false(rpc_message_type_is_known(0x02));
    g_assert_false(rpc_message_type_is_known(0x10102));
    g_assert_false(rpc_message_type_from_name("python_call", NULL));
    g_assert_false(rpc_message_type_from_name("", NULL));
    g_assert_false(rpc_message_type_from_name("PYTHON_CALL ", NULL));
    g_assert_true(rpc_message_type_from_name("RREF_ACK", NULL));
}

static void
test_message_basics(void)
{
    g_autoptr(RpcMessage) m = rpc_message_new(RPC_MSG_RREF_ACK, -1, NULL, NULL);
    g_assert_cmpint(rpc_message_type(m), ==, RPC_MSG_RREF_ACK);
    g_assert_cmpint(rpc_message_id(m), ==, -1);
    g_assert_cmpuint(g_bytes_get_size(rpc_message_payload(m)), ==, 0);
    g_assert_nonnull(rpc_message_tensors(m));
    g_assert_cmpuint(rpc_message_tensors(m)->len, ==, 0);
    rpc_message_set_id(m, 17);
    g_assert_cmpint(rpc_message_id(m), ==, 17);
    RpcMessage *r = rpc_message_ref(m);
    g_assert_true(r == m);
    rpc_message_unref(r);
    g_assert_cmpuint(rpc_message_wire_size(m), ==, 24);
}

static void
test_message_golden(void)
{
    g_autoptr(RpcMessage) m = rpc_message_new(RPC_MSG_PYTHON_CALL, 7, g_bytes_new("\x00", 1), NULL);
    g_autoptr(GBytes) wire = rpc_message_encode(m);
    assert_bytes_hex(wire, "52 50 43 53  01  00  02 01  07 00 00 00 00 00 00 00  01 00 00 00  00"
                           "  00 00 00 00");

    GPtrArray *ts = tensor_array();
    g_ptr_array_add(ts, tensor(F32, 1, SHAPE(2), VALS(1, 2)));
    g_ptr_array_add(ts, rpc_tensor_new_scalar(F64, -2));
    g_autoptr(RpcMessage) m2 = rpc_message_new(RPC_MSG_EXCEPTION, -1, g_bytes_new("\x02", 1), ts);
    g_autoptr(GBytes) wire2 = rpc_message_encode(m2);
    assert_bytes_hex(wire2, "52 50 43 53 01 00 37 02  ff ff ff ff ff ff ff ff  01 00 00 00  02"
                            "  02 00 00 00"
                            "  00 01  02 00 00 00 00 00 00 00  00 00 80 3f  00 00 00 40"
                            "  01 00  00 00 00 00 00 00 00 c0");
}

/* Representative messages (transfer full): nested payloads with 2 tensors. */
static GPtrArray *
sample_messages(void)
{
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
    GError *err = NULL;

    GPtrArray *ts = tensor_array();
    RpcValue *v = list_of(2, nested_value(), test_obj_new(9));
    GBytes *payload = encode_ok(v, ts);
    rpc_value_unref(v);
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_CALL, 7, payload, ts);
    g_ptr_array_add(out, rpc_message_encode(m));
    rpc_message_unref(m);

    ts = tensor_array();
    v = list_of(3, rpc_value_new_error(RPC_ERROR_VALUE, "bad"),
                rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 0.25)),
                rpc_value_new_tensor(rpc_tensor_new_zeros(F64, 2, SHAPE(0, 3))));
    payload = encode_ok(v, ts);
    rpc_value_unref(v);
    m = rpc_message_new(RPC_MSG_PYTHON_RET, 7, payload, ts);
    g_ptr_array_add(out, rpc_message_encode(m));
    rpc_message_unref(m);

    v = rpc_value_new_string("RPCErr:1:RPC ran for more than set timeout (5000 ms) and will now "
                             "be marked with an error");
    payload = rpc_codec_encode(v, NULL, NULL, &err);
    g_assert_no_error(err);
    rpc_value_unref(v);
    m = rpc_message_new(RPC_MSG_EXCEPTION, G_MININT64, payload, NULL);
    g_ptr_array_add(out, rpc_message_encode(m));
    rpc_message_unref(m);

    m = rpc_message_new(RPC_MSG_RREF_ACK, G_MAXINT64, NULL, NULL);
    g_ptr_array_add(out, rpc_message_encode(m));
    rpc_message_unref(m);
    return out;
}

static void
test_message_roundtrip(void)
{
    GPtrArray *wires = sample_messages();
    for (guint i = 0; i < wires->len; i++) {
        GBytes *w = g_ptr_array_index(wires, i);
        GError *err = NULL;
        RpcMessage *m = rpc_message_decode(g_bytes_get_data(w, NULL), g_bytes_get_size(w), &err);
        g_assert_no_error(err);
        GBytes *again = rpc_message_encode(m);
        g_assert_true(g_bytes_equal(again, w));
        g_assert_cmpuint(rpc_message_wire_size(m), ==, g_bytes_get_size(w));
        g_bytes_unref(again);
        rpc_message_unref(m);
    }
    g_ptr_array_unref(wires);

    /* every type and tensor shape survives */
    GPtrArray *ts = tensor_array();
    g_ptr_array_add(ts, rpc_tensor_new_scalar(F32, 1));
    g_ptr_array_add(ts, rpc_tensor_new_zeros(F32, 1, SHAPE(0)));
    g_ptr_array_add(ts, tensor(F64, 2, SHAPE(2, 3), VALS(1, -2, 3.5, 1e300, -0.0, INFINITY)));
    g_ptr_array_add(ts, rpc_tensor_new_full(F32, 8, SHAPE(1, 2, 1, 2, 1, 1, 1, 3), 0.1));
    for (guint t = 0; t < 0x400; t++) {
        if (!rpc_message_type_is_known(t))
            continue;
        RpcMessage *m =
            rpc_message_new((RpcMessageType)t, (gint64)t * 1000003 - 5,
                            g_bytes_new("\x07\x00\x00\x00\x00", 5), g_ptr_array_ref(ts));
        GBytes *w = rpc_message_encode(m);
        GError *err = NULL;
        RpcMessage *m2 = rpc_message_decode(g_bytes_get_data(w, NULL), g_bytes_get_size(w), &err);
        g_assert_no_error(err);
        g_assert_cmpint(rpc_message_type(m2), ==, t);
        g_assert_cmpint(rpc_message_id(m2), ==, rpc_message_id(m));
        g_assert_true(g_bytes_equal(rpc_message_payload(m2), rpc_message_payload(m)));
        GPtrArray *ts2 = rpc_message_tensors(m2);
        g_assert_cmpuint(ts2->len, ==, ts->len);
        for (guint k = 0; k < ts->len; k++) {
            RpcTensor *a = g_ptr_array_index(ts, k), *b = g_ptr_array_index(ts2, k);
            g_assert_cmpint(rpc_tensor_dtype(a), ==, rpc_tensor_dtype(b));
            g_assert_true(rpc_tensor_equal(a, b));
            g_assert_cmpmem(rpc_tensor_data(a), rpc_tensor_nbytes(a), rpc_tensor_data(b),
                            rpc_tensor_nbytes(b));
        }
        rpc_message_unref(m2);
        g_bytes_unref(w);
        rpc_message_unref(m);
    }
    g_ptr_array_unref(ts);
}

/* Tensor data is read from unaligned addresses. */
static void
test_message_unaligned(void)
{
    GPtrArray *wires = sample_messages();
    GBytes *w = g_ptr_array_index(wires, 0);
    gsize len = g_bytes_get_size(w);
    guint8 *buf = g_malloc(len + 8);
    for (gsize off = 0; off < 8; off++) {
        memcpy(buf + off, g_bytes_get_data(w, NULL), len);
        GError *err = NULL;
        RpcMessage *m = rpc_message_decode(buf + off, len, &err);
        g_assert_no_error(err);
        GBytes *again = rpc_message_encode(m);
        g_assert_true(g_bytes_equal(again, w));
        g_bytes_unref(again);
        rpc_message_unref(m);
    }
    g_free(buf);
    g_ptr_array_unref(wires);
}

static void
check_message_error(GByteArray *a, const char *message)
{
    Guard g;
    guard_init(&g, a->len);
    GError *err = NULL;
    const guint8 *p = guard_put(&g, a->data, a->len);
    RpcMessage *m = rpc_message_decode(p, a->len, &err);
    g_assert_null(m);
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, message);
    g_clear_error(&err);
    guard_clear(&g);
    g_byte_array_unref(a);
}

static GByteArray *
bytes_of(const char *hexstr)
{
    GBytes *b = hex(hexstr);
    return g_bytes_unref_to_array(b);
}

/* A PYTHON_CALL header with payload "00", then a tensor count. */
static GByteArray *
wire_tensors(guint32 count)
{
    GByteArray *a = wire_start(RPC_MSG_PYTHON_CALL, 1, "00");
    w32(a, count);
    return a;
}

static void
test_message_decode_errors(void)
{
    GByteArray *a;
    check_message_error(bytes_of(""),
                        "truncated message: need 4 bytes for the magic at offset 0, have 0");
    check_message_error(bytes_of("52 50"),
                        "truncated message: need 4 bytes for the magic at offset 0, have 2");
    check_message_error(bytes_of("58"), "bad magic");
    check_message_error(bytes_of("52 50 43 58 01 00 02 01"), "bad magic");
    check_message_error(bytes_of("52 50 43 53 07 00 02 01"), "unsupported wire version 7");
    check_message_error(bytes_of("52 50 43 53 00"), "unsupported wire version 0");
    check_message_error(bytes_of("52 50 43 53 01 01 02 01"), "unsupported flags 0x01 at offset 5");
    check_message_error(bytes_of("52 50 43 53 01 00 99 09"), "unknown message type 0x999");
    check_message_error(bytes_of("52 50 43 53 01 00 02 00"), "unknown message type 0x2");
    check_message_error(bytes_of("52 50 43 53 01 00 02"),
                        "truncated message: need 2 bytes for the type at offset 6, have 1");
    check_message_error(bytes_of("52 50 43 53 01 00 02 01 01 02 03"),
                        "truncated message: need 8 bytes for the id at offset 8, have 3");
    check_message_error(
        bytes_of("52 50 43 53 01 00 02 01 00 00 00 00 00 00 00 00 64 00 00 00 00 00 00 00 00"),
        "truncated message: need 100 bytes for the payload at offset 20, have 5");
    a = wire_start(RPC_MSG_PYTHON_CALL, 1, "00");
    w16(a, 0);
    check_message_error(a, "truncated message: need 4 bytes for the tensor count at offset 21, "
                           "have 2");
    check_message_error(wire_tensors(0x10000000),
                        "truncated message: 268435456 tensors need at least 1610612736 bytes at "
                        "offset 25, have 0");
    a = wire_tensors(0);
    w8(a, 0);
    w16(a, 0);
    check_message_error(a, "trailing bytes after message: 3 bytes at offset 25");

    /* tensors */
    a = wire_tensors(1);
    w8(a, 0);
    w8(a, 9);
    w32(a, 0);
    check_message_error(a, "tensor 0 has 9 dimensions (max 8)");
    a = wire_tensors(1);
    w8(a, 2);
    w8(a, 0);
    w32(a, 0);
    check_message_error(a, "tensor 0 has unknown dtype 2 at offset 25");
    a = wire_tensors(1);
    w8(a, 0);
    w8(a, 1);
    w64(a, (guint64)-1);
    check_message_error(a, "tensor 0: Trying to create tensor with negative dimension -1: [-1]");
    a = wire_tensors(1);
    w8(a, 0);
    w8(a, 2);
    w64(a, (guint64)1 << 62);
    w64(a, 4);
    check_message_error(a, "tensor 0 of shape [4611686018427387904, 4] is too large for a "
                           "message (at most 268435456 bytes)");
    a = wire_tensors(1);
    w8(a, 1);
    w8(a, 3);
    w64(a, (guint64)1 << 32);
    w64(a, (guint64)1 << 32);
    w64(a, (guint64)1 << 32);
    check_message_error(a, "tensor 0 of shape [4294967296, 4294967296, 4294967296] is too large "
                           "for a message (at most 268435456 bytes)");
    a = wire_tensors(1);
    w8(a, 0);
    w8(a, 2);
    w64(a, (guint64)1 << 27);
    w64(a, 2);
    check_message_error(a, "tensor 0 of shape [134217728, 2] is too large for a message (at most "
                           "268435456 bytes)");
    /* an allowed size whose data is not there: no allocation before the check */
    a = wire_tensors(1);
    w8(a, 1);
    w8(a, 1);
    w64(a, (guint64)1 << 25);
    check_message_error(a, "truncated message: need 268435456 bytes for the data of tensor 0 at "
                           "offset 35, have 0");
    a = wire_tensors(1);
    w8(a, 1);
    w8(a, 1);
    w64(a, 3);
    w64(a, 0);
    check_message_error(a, "truncated message: need 24 bytes for the data of tensor 0 at offset "
                           "35, have 8");
    a = wire_tensors(2);
    w8(a, 0);
    w8(a, 0);
    w32(a, 0);
    w8(a, 0);
    w8(a, 1);
    w32(a, 0);
    check_message_error(a, "truncated message: need 8 bytes for the shape of tensor 1 at offset "
                           "33, have 4");
    a = wire_tensors(2);
    w8(a, 1);
    w8(a, 1);
    w64(a, 1);
    w64(a, 0);
    w8(a, 0);
    check_message_error(a, "truncated message: need 2 bytes for the dtype and ndim of tensor 1 at "
                           "offset 43, have 1");
    /* zero-size tensors need no data, whatever the other dims */
    a = wire_tensors(1);
    w8(a, 0);
    w8(a, 2);
    w64(a, 0);
    w64(a, (guint64)1 << 62);
    GError *err = NULL;
    RpcMessage *m = rpc_message_decode(a->data, a->len, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rpc_tensor_numel(g_ptr_array_index(rpc_message_tensors(m), 0)), ==, 0);
    rpc_message_unref(m);
    g_byte_array_unref(a);

    /* the size cap is checked before anything is read */
    static const guint8 tiny[1] = {0};
    g_assert_null(rpc_message_decode(tiny, RPC_WIRE_MAX_BYTES + 1, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, "message too large: 268435457 bytes (max 268435456)");
    g_clear_error(&err);
}

static void
test_message_split_points(void)
{
    GPtrArray *wires = sample_messages();
    Guard g;
    guard_init(&g, 4096);
    guint checked = 0;
    for (guint i = 0; i < wires->len; i++) {
        gsize len = 0;
        const guint8 *data = g_bytes_get_data(g_ptr_array_index(wires, i), &len);
        for (gsize k = 0; k <= len; k++) {
            GError *err = NULL;
            RpcMessage *m = rpc_message_decode(guard_put(&g, data, k), k, &err);
            if (k < len) {
                if (m != NULL || !g_error_matches(err, RPC_ERROR, RPC_ERROR_RUNTIME) ||
                    !g_str_has_prefix(err->message, "truncated message"))
                    g_error("message %u prefix %" G_GSIZE_FORMAT "/%" G_GSIZE_FORMAT
                            ": expected a truncation error, got %s",
                            i, k, len, err ? err->message : "a message");
                g_clear_error(&err);
            } else {
                g_assert_no_error(err);
                gsize plen = 0;
                const guint8 *p = g_bytes_get_data(rpc_message_payload(m), &plen);
                RpcValue *v = rpc_codec_decode(p, plen, rpc_message_tensors(m), &test_hooks, &err);
                if (plen > 0) {
                    g_assert_no_error(err);
                    rpc_value_unref(v);
                } else {
                    g_clear_error(&err);
                }
                rpc_message_unref(m);
            }
            checked++;
        }
    }
    g_test_message("%u message prefixes checked", checked);
    guard_clear(&g);
    g_ptr_array_unref(wires);
}

/* Decodes a message that may be garbage, then its payload: clean errors, or
 * a message that re-encodes to the very same bytes. */
static void
decode_message_any(const guint8 *p, gsize len, const char *what, guint64 seed, guint iter)
{
    GError *err = NULL;
    RpcMessage *m = rpc_message_decode(p, len, &err);
    if (m == NULL) {
        if (!g_error_matches(err, RPC_ERROR, RPC_ERROR_RUNTIME) || err->message[0] == '\0')
            g_error("%s (seed 0x%" G_GINT64_MODIFIER "x, iteration %u): bad error %s", what, seed,
                    iter, err ? err->message : "(none)");
        g_clear_error(&err);
        return;
    }
    GBytes *again = rpc_message_encode(m);
    gsize n = 0;
    const guint8 *q = g_bytes_get_data(again, &n);
    if (n != len || memcmp(p, q, n) != 0)
        g_error("%s (seed 0x%" G_GINT64_MODIFIER "x, iteration %u): message not canonical", what,
                seed, iter);
    g_bytes_unref(again);
    gsize plen = 0;
    const guint8 *pp = g_bytes_get_data(rpc_message_payload(m), &plen);
    decode_payload_any(pp, plen, rpc_message_tensors(m), what, seed, iter);
    rpc_message_unref(m);
}

static void
test_message_corruption(void)
{
    GPtrArray *wires = sample_messages();
    Guard g;
    guard_init(&g, 4096);
    guint n = 0;
    for (guint i = 0; i < wires->len; i++) {
        gsize len = 0;
        const guint8 *orig = g_bytes_get_data(g_ptr_array_index(wires, i), &len);
        guint8 *buf = g_memdup2(orig, len);
        for (gsize pos = 0; pos < len; pos++) {
            for (guint m = 0; m < 8 + G_N_ELEMENTS(corrupt_values); m++) {
                buf[pos] = m < 8 ? orig[pos] ^ (guint8)(1u << m) : corrupt_values[m - 8];
                decode_message_any(guard_put(&g, buf, len), len, "message corruption", i,
                                   (guint)pos);
                n++;
            }
            buf[pos] = orig[pos];
        }
        g_free(buf);
    }
    g_test_message("%u corrupted messages decoded", n);
    guard_clear(&g);
    g_ptr_array_unref(wires);
}

static void
test_message_fuzz(void)
{
    const guint64 seed = 0x5eed0fa11ull;
    Lcg r = {seed};
    GPtrArray *wires = sample_messages();
    Guard g;
    guard_init(&g, 4096);
    guint8 buf[1024];
    guint iters = fuzz_iterations();
    guint decoded = 0;
    for (guint it = 0; it < iters; it++) {
        gsize len;
        switch (it % 4) {
        case 0: /* random bytes */
            len = lcg_below(&r, 80);
            for (gsize i = 0; i < len; i++)
                buf[i] = (guint8)lcg_next(&r);
            break;
        case 1: { /* a valid header, then random tensors */
            GByteArray *a = wire_tensors(lcg_below(&r, 4));
            len = a->len;
            memcpy(buf, a->data, len);
            g_byte_array_unref(a);
            gsize extra = lcg_below(&r, 120);
            for (gsize i = 0; i < extra; i++)
                buf[len++] = biased_byte(&r);
            break;
        }
        default: { /* a mutated valid message */
            GBytes *b = g_ptr_array_index(wires, lcg_below(&r, wires->len));
            len = g_bytes_get_size(b);
            g_assert_cmpuint(len, <, sizeof buf);
            memcpy(buf, g_bytes_get_data(b, NULL), len);
            guint muts = 1 + lcg_below(&r, 3);
            for (guint m = 0; m < muts && len > 0; m++) {
                gsize pos = lcg_below(&r, (guint32)len);
                switch (lcg_below(&r, 5)) {
                case 0:
                    buf[pos] ^= (guint8)(1u << lcg_below(&r, 8));
                    break;
                case 1:
                    buf[pos] = biased_byte(&r);
                    break;
                case 2:
                    buf[pos] = (guint8)lcg_next(&r);
                    break;
                case 3: /* truncate */
                    len = pos;
                    break;
                default: /* delete a byte */
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
            }
        }
        }
        GError *err = NULL;
        const guint8 *p = guard_put(&g, buf, len);
        RpcMessage *probe = rpc_message_decode(p, len, &err);
        decoded += probe != NULL;
        if (probe)
            rpc_message_unref(probe);
        g_clear_error(&err);
        decode_message_any(p, len, "message fuzz", seed, it);
        /* the same bytes as a bare payload */
        decode_payload_any(p, len, NULL, "message fuzz as payload", seed, it);
    }
    g_test_message("%u fuzzed messages, %u decoded (seed 0x%" G_GINT64_MODIFIER "x)", iters,
                   decoded, seed);
    guard_clear(&g);
    g_ptr_array_unref(wires);
}

/* The guard page really is armed: reading one byte past the end faults. */
static void
test_guard_page(void)
{
    if (g_test_subprocess()) {
        Guard g;
        guard_init(&g, 16);
        const guint8 *p = guard_put(&g, (const guint8 *)"RPCS", 4);
        volatile guint8 c = p[4]; /* faults */
        (void)c;
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
}

/* rpc_codec_encode_append (an RpcCodecBuffer) gives encode's bytes after a
 * prefix; rpc_codec_encode_call_append gives, byte for byte, the encoding
 * of the [name, args, kwargs, async] list it does not build; both leave the
 * buffer and tensor list as they were on failure. */
static void
test_encode_append_and_call(void)
{
    RpcValue *args_cases[] = {
        NULL, list_of(0),
        list_of(2, rpc_value_new_int(3), rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 4)))};
    RpcValue *kw = rpc_value_new_dict();
    rpc_value_dict_set(kw, "alpha", rpc_value_new_double(0.5));
    RpcValue *kwargs_cases[] = {NULL, rpc_value_new_dict(), kw};
    for (gsize i = 0; i < G_N_ELEMENTS(args_cases); i++) {
        for (gsize j = 0; j < G_N_ELEMENTS(kwargs_cases); j++) {
            for (int is_async = 0; is_async < 2; is_async++) {
                RpcValue *body =
                    list_of(4, rpc_value_new_string("my_module.func"),
                            args_cases[i] ? rpc_value_ref(args_cases[i]) : rpc_value_new_list(),
                            kwargs_cases[j] ? rpc_value_ref(kwargs_cases[j]) : rpc_value_new_dict(),
                            rpc_value_new_bool(is_async));
                GPtrArray *ts1 = tensor_array(), *ts2 = tensor_array(), *ts3 = tensor_array();
                GBytes *want = encode_ok(body, ts1);
                RpcCodecBuffer b = {NULL, 0, 0};
                memcpy(rpc_codec_buffer_reserve(&b, 3), "pre", 3);
                GError *err = NULL;
                g_assert_true(rpc_codec_encode_call_append(&b, "my_module.func", args_cases[i],
                                                           kwargs_cases[j], is_async, ts2, NULL,
                                                           &err));
                g_assert_no_error(err);
                g_assert_cmpmem(b.data, 3, "pre", 3);
                g_assert_cmpmem(b.data + 3, b.len - 3, g_bytes_get_data(want, NULL),
                                g_bytes_get_size(want));
                g_assert_cmpuint(ts2->len, ==, ts1->len);
                b.len = 0;
                g_assert_true(rpc_codec_encode_append(&b, body, ts3, NULL, &err));
                g_assert_cmpmem(b.data, b.len, g_bytes_get_data(want, NULL),
                                g_bytes_get_size(want));
                rpc_codec_buffer_clear(&b);
                g_assert_null(b.data);
                g_bytes_unref(want);
                g_ptr_array_unref(ts1);
                g_ptr_array_unref(ts2);
                g_ptr_array_unref(ts3);
                rpc_value_unref(body);
            }
        }
    }
    /* Failures: a future in args; a name that is not UTF-8. */
    RpcFuture *f = rpc_future_new(NULL);
    RpcValue *bad =
        list_of(2, rpc_value_new_tensor(rpc_tensor_new_scalar(F32, 2)), rpc_value_new_future(f));
    rpc_future_unref(f);
    RpcCodecBuffer b = {NULL, 0, 0};
    memcpy(rpc_codec_buffer_reserve(&b, 2), "ab", 2);
    GPtrArray *ts = tensor_array();
    GError *err = NULL;
    g_assert_false(rpc_codec_encode_call_append(&b, "f", bad, NULL, FALSE, ts, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    g_assert_cmpuint(b.len, ==, 2);
    g_assert_cmpuint(ts->len, ==, 0);
    g_assert_false(rpc_codec_encode_call_append(&b, "\xff", NULL, NULL, FALSE, ts, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    g_assert_false(rpc_codec_encode_append(&b, bad, ts, NULL, &err));
    g_clear_error(&err);
    g_assert_cmpuint(b.len, ==, 2);
    g_assert_cmpmem(b.data, 2, "ab", 2);
    rpc_codec_buffer_clear(&b);
    g_ptr_array_unref(ts);
    rpc_value_unref(bad);
    for (gsize i = 0; i < G_N_ELEMENTS(args_cases); i++)
        rpc_value_unref(args_cases[i]);
    for (gsize j = 0; j < G_N_ELEMENTS(kwargs_cases); j++)
        rpc_value_unref(kwargs_cases[j]);
}

/* Checks rpc_codec_decode_call against rpc_codec_decode on one payload:
 * OK gives the items rpc_codec_decode gives, ERROR its very error text. */
static void
check_decode_call(const guint8 *p, gsize n, GPtrArray *ts, guint *ok, guint *not_call, guint *errs)
{
    GError *e1 = NULL, *e2 = NULL;
    RpcValue *whole = rpc_codec_decode(p, n, ts, NULL, &e1);
    RpcCodecCall c;
    switch (rpc_codec_decode_call(p, n, ts, NULL, &c, &e2)) {
    case RPC_CODEC_CALL_OK: {
        g_assert_no_error(e2);
        g_assert_no_error(e1);
        RpcValue *name = rpc_value_new_string_len(c.name, c.name_len);
        RpcValue *built = list_of(4, name, c.args, c.kwargs, c.flag);
        g_assert_true(rpc_value_equal(built, whole));
        rpc_value_unref(built);
        (*ok)++;
        break;
    }
    case RPC_CODEC_CALL_NOT_A_CALL:
        g_assert_no_error(e2);
        (*not_call)++;
        break;
    case RPC_CODEC_CALL_ERROR:
        g_assert_nonnull(e2);
        g_assert_nonnull(e1);
        g_assert_cmpstr(e2->message, ==, e1->message);
        (*errs)++;
        break;
    }
    g_clear_error(&e1);
    g_clear_error(&e2);
    rpc_value_unref(whole);
}

/* rpc_codec_decode_call agrees with rpc_codec_decode on call bodies, on
 * every truncation and every single-byte corruption of them, and on values
 * that are not call bodies. */
static void
test_decode_call(void)
{
    RpcValue *kw = rpc_value_new_dict();
    rpc_value_dict_set(kw, "alpha", rpc_value_new_string("b\xc3\xa9ta"));
    RpcValue *bodies[] = {
        call_body(),
        list_of(4, rpc_value_new_string("f"), rpc_value_new_list(), kw, rpc_value_new_bool(TRUE)),
        list_of(4, rpc_value_new_string(""), rpc_value_new_int(1), rpc_value_none(),
                rpc_value_new_int(2)),
        list_of(3, rpc_value_new_string("f"), rpc_value_new_list(), rpc_value_new_dict()),
        rpc_value_new_string("not a call"),
        wide_value(),
    };
    guint ok = 0, not_call = 0, errs = 0;
    for (gsize i = 0; i < G_N_ELEMENTS(bodies); i++) {
        GPtrArray *ts = tensor_array();
        GBytes *b = encode_ok(bodies[i], ts);
        gsize n;
        const guint8 *p = g_bytes_get_data(b, &n);
        guint8 *copy = g_memdup2(p, n);
        for (gsize cut = 0; cut <= n; cut++)
            check_decode_call(copy, cut, ts, &ok, &not_call, &errs);
        for (gsize k = 0; k < n; k++) {
            for (guint flip = 1; flip < 256; flip <<= 1) {
                copy[k] ^= (guint8)flip;
                check_decode_call(copy, n, ts, &ok, &not_call, &errs);
                copy[k] ^= (guint8)flip;
            }
        }
        g_free(copy);
        g_bytes_unref(b);
        g_ptr_array_unref(ts);
        rpc_value_unref(bodies[i]);
    }
    /* All three outcomes were exercised. */
    g_assert_cmpuint(ok, >, 0);
    g_assert_cmpuint(not_call, >, 0);
    g_assert_cmpuint(errs, >, 0);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/codec/golden", test_golden);
    g_test_add_func("/codec/golden/call-body", test_golden_call_body);
    g_test_add_func("/codec/golden/wide", test_golden_wide);
    g_test_add_func("/codec/encode/append", test_encode_append);
    g_test_add_func("/codec/encode/append-and-call", test_encode_append_and_call);
    g_test_add_func("/codec/decode/call", test_decode_call);
    g_test_add_func("/codec/encode/string-checks", test_encode_string_checks);
    g_test_add_func("/codec/decode/string-checks", test_decode_string_checks);
    g_test_add_func("/codec/roundtrip/scalars", test_roundtrip_scalars);
    g_test_add_func("/codec/roundtrip/doubles-bit-exact", test_roundtrip_doubles_bits);
    g_test_add_func("/codec/roundtrip/strings", test_roundtrip_strings);
    g_test_add_func("/codec/roundtrip/empty-containers", test_roundtrip_empty_containers);
    g_test_add_func("/codec/roundtrip/nested", test_roundtrip_nested);
    g_test_add_func("/codec/roundtrip/errors", test_roundtrip_errors);
    g_test_add_func("/codec/roundtrip/tensors", test_roundtrip_tensors);
    g_test_add_func("/codec/encode/future-rejected", test_encode_future);
    g_test_add_func("/codec/encode/opaque-rejected", test_encode_opaque);
    g_test_add_func("/codec/encode/depth-cap", test_encode_depth);
    g_test_add_func("/codec/encode/invalid-utf8", test_encode_invalid_utf8);
    g_test_add_func("/codec/extension/roundtrip", test_extension_roundtrip);
    g_test_add_func("/codec/extension/decode-errors", test_extension_decode_errors);
    g_test_add_func("/codec/extension/misbehaving-hooks", test_extension_misbehaving_hooks);
    g_test_add_func("/codec/decode/hostile", test_decode_hostile);
    g_test_add_func("/codec/decode/depth-cap", test_decode_depth);
    g_test_add_func("/codec/decode/every-split-point", test_codec_split_points);
    g_test_add_func("/codec/decode/corruption", test_codec_corruption);
    g_test_add_func("/codec/decode/fuzz", test_codec_fuzz);
    g_test_add_func("/message/type-names", test_message_type_names);
    g_test_add_func("/message/basics", test_message_basics);
    g_test_add_func("/message/golden", test_message_golden);
    g_test_add_func("/message/roundtrip", test_message_roundtrip);
    g_test_add_func("/message/unaligned", test_message_unaligned);
    g_test_add_func("/message/decode-errors", test_message_decode_errors);
    g_test_add_func("/message/every-split-point", test_message_split_points);
    g_test_add_func("/message/corruption", test_message_corruption);
    g_test_add_func("/message/fuzz", test_message_fuzz);
    g_test_add_func("/message/guard-page", test_guard_page);
    return g_test_run();
}
