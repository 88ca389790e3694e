/* bench-codec.c — cost of encoding and decoding a typical small request.
 *
 * The message is a PYTHON_CALL whose payload is ("my_module.my_add",
 * [3, 4.5], {}) — a function name and two small arguments — with no
 * tensors, and a variant whose two arguments are 2x2 float32 tensors.
 *   encode = rpc_codec_encode + rpc_message_new + rpc_message_encode
 *   decode = rpc_message_decode + rpc_codec_decode
 * Then the payload codec alone on the call bodies the agent sends
 * ([name, args, kwargs, async]) and on a 0 result:
 *   build  = building the body and freeing it (the values alone)
 *   encode = rpc_codec_encode (+ freeing the GBytes)
 *   append = rpc_codec_encode_append into a reused RpcCodecBuffer
 *   decode = rpc_codec_decode (+ freeing the value)
 * Wall-clock timing is allowed here (bench/ only); figures vary from run to
 * run and the bench asserts nothing beyond the round trip being correct.
 */
#include <stdio.h>
#include <string.h>

#include "core/codec.h"
#include "core/message.h"
#include "core/tensor.h"

static RpcValue *
call_value(gboolean tensors)
{
    RpcValue *args = rpc_value_new_list();
    if (tensors) {
        rpc_value_list_append(args, rpc_value_new_tensor(rpc_tensor_ones2(2, 2)));
        rpc_value_list_append(args, rpc_value_new_tensor(rpc_tensor_ones2(2, 2)));
    } else {
        rpc_value_list_append(args, rpc_value_new_int(3));
        rpc_value_list_append(args, rpc_value_new_double(4.5));
    }
    RpcValue *v = rpc_value_new_list();
    rpc_value_list_append(v, rpc_value_new_string("my_module.my_add"));
    rpc_value_list_append(v, args);
    rpc_value_list_append(v, rpc_value_new_dict());
    return v;
}

static GBytes *
encode(const RpcValue *v)
{
    GPtrArray *ts = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    GBytes *payload = rpc_codec_encode(v, ts, NULL, NULL);
    g_assert(payload != NULL);
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_CALL, 1, payload, ts);
    GBytes *wire = rpc_message_encode(m);
    rpc_message_unref(m);
    return wire;
}

static RpcValue *
decode(GBytes *wire)
{
    gsize n = 0;
    const guint8 *p = g_bytes_get_data(wire, &n);
    RpcMessage *m = rpc_message_decode(p, n, NULL);
    g_assert(m != NULL);
    GBytes *payload = rpc_message_payload(m);
    p = g_bytes_get_data(payload, &n);
    RpcValue *v = rpc_codec_decode(p, n, rpc_message_tensors(m), NULL, NULL);
    g_assert(v != NULL);
    rpc_message_unref(m);
    return v;
}

static void
run(const char *label, gboolean tensors, guint iters)
{
    RpcValue *v = call_value(tensors);
    GBytes *wire = encode(v);
    RpcValue *back = decode(wire);
    g_assert(rpc_value_equal(v, back));
    rpc_value_unref(back);

    gint64 t0 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++)
        g_bytes_unref(encode(v));
    gint64 t1 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++)
        rpc_value_unref(decode(wire));
    gint64 t2 = g_get_monotonic_time();

    double enc_ns = (double)(t1 - t0) * 1000.0 / iters;
    double dec_ns = (double)(t2 - t1) * 1000.0 / iters;
    printf("%-28s %4zu B  encode %6.0f ns  decode %6.0f ns  round trip %.2f M/s\n", label,
           g_bytes_get_size(wire), enc_ns, dec_ns, 1e3 / (enc_ns + dec_ns));
    g_bytes_unref(wire);
    rpc_value_unref(v);
}

/* [name, args, kwargs, async], as the agent's make_call_body builds it. */
static RpcValue *
call_body(int kind)
{
    RpcValue *args = rpc_value_new_list();
    if (kind == 1) {
        rpc_value_list_append(args, rpc_value_new_int(3));
        rpc_value_list_append(args, rpc_value_new_double(4.5));
    }
    RpcValue *v = rpc_value_new_list();
    rpc_value_list_append(v, rpc_value_new_string(kind == 0 ? "light_rpc" : "my_module.my_add"));
    rpc_value_list_append(v, args);
    rpc_value_list_append(v, rpc_value_new_dict());
    rpc_value_list_append(v, rpc_value_new_bool(FALSE));
    return v;
}

static RpcValue *
make_value(int kind)
{
    return kind == 2 ? rpc_value_new_int(0) : call_body(kind);
}

static void
run_codec(const char *label, int kind, guint iters)
{
    RpcValue *v = make_value(kind);
    GBytes *payload = rpc_codec_encode(v, NULL, NULL, NULL);
    g_assert(payload != NULL);
    gsize n = 0;
    const guint8 *p = g_bytes_get_data(payload, &n);
    RpcCodecBuffer out = {NULL, 0, 0};

    gint64 t0 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++)
        rpc_value_unref(make_value(kind));
    gint64 t1 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++)
        g_bytes_unref(rpc_codec_encode(v, NULL, NULL, NULL));
    gint64 t2 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++) {
        out.len = 0;
        rpc_codec_encode_append(&out, v, NULL, NULL, NULL);
    }
    gint64 t3 = g_get_monotonic_time();
    for (guint i = 0; i < iters; i++)
        rpc_value_unref(rpc_codec_decode(p, n, NULL, NULL, NULL));
    gint64 t4 = g_get_monotonic_time();
    g_assert(out.len == n && memcmp(out.data, p, n) == 0);

    double k = 1000.0 / iters;
    printf("%-28s %4zu B  build %4.0f ns  encode %4.0f ns  append %4.0f ns  decode %4.0f ns\n",
           label, n, (double)(t1 - t0) * k, (double)(t2 - t1) * k, (double)(t3 - t2) * k,
           (double)(t4 - t3) * k);
    rpc_codec_buffer_clear(&out);
    g_bytes_unref(payload);
    rpc_value_unref(v);
}

int
main(void)
{
    guint iters = 500000;
    const char *s = g_getenv("RPCSIM_BENCH_ITERS");
    if (s != NULL && *s != '\0')
        iters = (guint)g_ascii_strtoull(s, NULL, 10);
    if (iters == 0)
        iters = 1;
    run("PYTHON_CALL f(3, 4.5)", FALSE, iters);
    run("PYTHON_CALL f(ones(2,2) x2)", TRUE, iters);
    run_codec("body light_rpc()", 0, iters);
    run_codec("body my_add(3, 4.5)", 1, iters);
    run_codec("result 0", 2, iters);
    return 0;
}
