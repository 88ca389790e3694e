/* test-message.c — core/message envelope details the wire tests in
 * test-codec.c do not cover: the type table, decoding from a GBytes that
 * the payload shares, and the shared empty payload / tensor list. */
#include <string.h>

#include "core/codec.h"
#include "core/error.h"
#include "core/future.h"
#include "core/message.h"
#include "core/tensor.h"

static void
test_type_table(void)
{
    /* Every name maps back to its type; values that only share a low byte
     * with a known type, or lack its request/response bit, are unknown. */
    guint known = 0;
    for (guint t = 0; t < 0x1000; t++) {
        if (!rpc_message_type_is_known(t)) {
            g_assert_cmpstr(rpc_message_type_name((RpcMessageType)t), ==, "UNKNOWN");
            continue;
        }
        known++;
        RpcMessageType back;
        g_assert_true(rpc_message_type_from_name(rpc_message_type_name((RpcMessageType)t), &back));
        g_assert_cmpuint(back, ==, t);
    }
    g_assert_cmpuint(known, ==, 27);
    g_assert_true(rpc_message_type_is_known(RPC_MSG_EXCEPTION));
    g_assert_false(rpc_message_type_is_known(RPC_MSG_EXCEPTION & 0xff));
    g_assert_false(rpc_message_type_is_known(RPC_MSG_SCRIPT_CALL | RPC_MSG_RESPONSE));
    g_assert_false(rpc_message_type_is_known(RPC_MSG_UNKNOWN | RPC_MSG_REQUEST));
    g_assert_false(rpc_message_type_from_name("NOT_A_TYPE", NULL));
    g_assert_cmpstr(rpc_message_type_name(RPC_MSG_PYTHON_CALL), ==, "PYTHON_CALL");
}

static void
test_decode_wire_shares_payload(void)
{
    GPtrArray *ts = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    g_ptr_array_add(ts, rpc_tensor_new_scalar(RPC_DTYPE_FLOAT64, 2.5));
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_RET, 77, g_bytes_new("payload!", 8), ts);
    RpcWire *wire = rpc_message_encode_wire(m);
    GError *err = NULL;
    RpcMessage *shared = rpc_message_decode_wire(wire, &err);
    g_assert_no_error(err);
    gsize wlen = rpc_wire_size(wire), plen;
    const guint8 *w = rpc_wire_data(wire);
    const guint8 *p = g_bytes_get_data(rpc_message_payload(shared), &plen);
    g_assert_cmpuint(plen, ==, 8);
    g_assert_true(p > w && p + plen <= w + wlen); /* inside the wire: not copied */
    g_assert_cmpmem(p, plen, "payload!", 8);
    g_assert_cmpint(rpc_message_id(shared), ==, 77);
    g_assert_cmpuint(rpc_message_tensors(shared)->len, ==, 1);
    /* The copy-decoder gives the same message. */
    RpcMessage *copied = rpc_message_decode(w, wlen, &err);
    g_assert_no_error(err);
    g_assert_true(g_bytes_equal(rpc_message_payload(copied), rpc_message_payload(shared)));
    GBytes *again = rpc_message_encode(shared);
    g_assert_cmpmem(g_bytes_get_data(again, NULL), g_bytes_get_size(again), w, wlen);
    g_bytes_unref(again);
    /* The payload outlives the wire it came from. */
    GBytes *payload = g_bytes_ref(rpc_message_payload(shared));
    rpc_wire_unref(wire);
    rpc_message_unref(shared);
    g_assert_cmpmem(g_bytes_get_data(payload, NULL), 8, "payload!", 8);
    g_bytes_unref(payload);
    rpc_message_unref(copied);
    rpc_message_unref(m);
    /* Truncated input through the RpcWire entry point: a clean error. */
    RpcWire *cut = rpc_wire_new((const guint8 *)"RPCS\x01", 5);
    g_assert_null(rpc_message_decode_wire(cut, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_true(g_str_has_prefix(err->message, "truncated message"));
    g_clear_error(&err);
    rpc_wire_unref(cut);
}

static void
test_empty_parts_are_shared(void)
{
    RpcMessage *a = rpc_message_new(RPC_MSG_RREF_ACK, 1, NULL, NULL);
    RpcMessage *b =
        rpc_message_new(RPC_MSG_RREF_ACK, 2, NULL,
                        g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref));
    g_assert_cmpuint(g_bytes_get_size(rpc_message_payload(a)), ==, 0);
    g_assert_true(rpc_message_payload(a) == rpc_message_payload(b));
    g_assert_true(rpc_message_tensors(a) == rpc_message_tensors(b));
    g_assert_cmpuint(rpc_message_tensors(b)->len, ==, 0);
    RpcWire *wire = rpc_message_encode_wire(b);
    RpcMessage *c = rpc_message_decode_wire(wire, NULL);
    g_assert_nonnull(c);
    g_assert_true(rpc_message_tensors(c) == rpc_message_tensors(a));
    g_assert_cmpuint(g_bytes_get_size(rpc_message_payload(c)), ==, 0);
    rpc_message_unref(c);
    rpc_wire_unref(wire);
    rpc_message_unref(a);
    rpc_message_unref(b);
}

/* rpc_message_build gives the bytes rpc_codec_encode + rpc_message_new +
 * rpc_message_encode give, with or without a scratch buffer (reused, and
 * holding stale bytes), tensors or not; a body that cannot be encoded
 * leaves the side list as it was. */
static void
test_build_matches_encode(void)
{
    RpcCodecBuffer scratch_buf = {NULL, 0, 0};
    RpcCodecBuffer *scratch = &scratch_buf;
    memcpy(rpc_codec_buffer_reserve(scratch, 11), "stale bytes", 11);
    for (guint round = 0; round < 4; round++) {
        gboolean use_scratch = round % 2 == 1, with_tensor = round >= 2;
        RpcValue *body = rpc_value_new_list();
        rpc_value_list_append(body, rpc_value_new_string("my_function"));
        rpc_value_list_append(body, rpc_value_new_int(-3));
        if (with_tensor)
            rpc_value_list_append(
                body, rpc_value_new_tensor(rpc_tensor_new_scalar(RPC_DTYPE_FLOAT32, 1.5)));
        GPtrArray *t1 = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
        GBytes *payload = rpc_codec_encode(body, t1, NULL, NULL);
        RpcMessage *ref = rpc_message_new(RPC_MSG_PYTHON_CALL, 41, payload, t1);
        GBytes *expect = rpc_message_encode(ref);

        GPtrArray *t2 = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
        RpcWire *wire = NULL;
        GError *err = NULL;
        RpcMessage *m = rpc_message_build(RPC_MSG_PYTHON_CALL, 41, body, t2, NULL,
                                          use_scratch ? scratch : NULL, &wire, &err);
        g_assert_no_error(err);
        g_assert_cmpmem(rpc_wire_data(wire), rpc_wire_size(wire), g_bytes_get_data(expect, NULL),
                        g_bytes_get_size(expect));
        g_assert_true(g_bytes_equal(rpc_message_payload(m), rpc_message_payload(ref)));
        g_assert_cmpuint(rpc_message_tensors(m)->len, ==, with_tensor ? 1 : 0);
        GBytes *again = rpc_message_encode(m);
        g_assert_true(g_bytes_equal(again, expect));
        gsize len;
        const guint8 *data = rpc_message_payload_data(m, &len);
        g_assert_cmpmem(data, len, g_bytes_get_data(payload, NULL), g_bytes_get_size(payload));
        g_bytes_unref(again);
        rpc_wire_unref(wire);
        rpc_message_unref(m);
        g_ptr_array_unref(t2);
        g_bytes_unref(expect);
        rpc_message_unref(ref);
        rpc_value_unref(body);
    }
    /* A body that cannot be encoded: NULL, the error, no tensor kept. */
    RpcValue *bad = rpc_value_new_list();
    rpc_value_list_append(bad, rpc_value_new_tensor(rpc_tensor_new_scalar(RPC_DTYPE_FLOAT32, 2)));
    RpcFuture *f = rpc_future_new(NULL);
    rpc_value_list_append(bad, rpc_value_new_future(f));
    rpc_future_unref(f);
    GPtrArray *t = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    RpcWire *wire = NULL;
    GError *err = NULL;
    g_assert_null(rpc_message_build(RPC_MSG_PYTHON_RET, 1, bad, t, NULL, scratch, &wire, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, RPC_CODEC_MSG_PICKLE_FUTURE);
    g_assert_null(wire);
    g_assert_cmpuint(t->len, ==, 0);
    g_clear_error(&err);
    g_ptr_array_unref(t);
    rpc_value_unref(bad);
    rpc_codec_buffer_clear(scratch);
    g_assert_null(scratch->data);
}

/* RpcWire: copies, refcounts, GBytes views that keep it alive, and the
 * message encoded / decoded through it. */
static void
test_wire(void)
{
    RpcWire *empty = rpc_wire_new(NULL, 0);
    g_assert_cmpuint(rpc_wire_size(empty), ==, 0);
    rpc_wire_unref(empty);
    rpc_wire_unref(NULL);

    guint8 big[1000];
    for (guint i = 0; i < sizeof big; i++)
        big[i] = (guint8)(i * 7);
    for (gsize n = 1; n <= sizeof big; n = n * 3 + 1) { /* pooled and not */
        RpcWire *w = rpc_wire_new(big, n);
        big[0] ^= 0xff; /* a copy: later changes to the source do not show */
        g_assert_cmpuint(rpc_wire_size(w), ==, n);
        g_assert_cmpuint(rpc_wire_data(w)[0], ==, (guint8)(big[0] ^ 0xff));
        big[0] ^= 0xff;
        GBytes *view = rpc_wire_bytes(w, n / 2, n - n / 2);
        g_assert_true(rpc_wire_ref(w) == w);
        rpc_wire_unref(w);
        rpc_wire_unref(w); /* the view still holds it */
        g_assert_cmpmem(g_bytes_get_data(view, NULL), g_bytes_get_size(view), big + n / 2,
                        n - n / 2);
        g_bytes_unref(view);
    }

    RpcMessage *m = rpc_message_new(RPC_MSG_SCRIPT_RET, 9, g_bytes_new("abc", 3), NULL);
    RpcWire *w = rpc_message_encode_wire(m);
    GBytes *b = rpc_message_encode(m);
    g_assert_cmpmem(rpc_wire_data(w), rpc_wire_size(w), g_bytes_get_data(b, NULL),
                    g_bytes_get_size(b));
    GError *err = NULL;
    RpcMessage *d = rpc_message_decode_wire(w, &err);
    g_assert_no_error(err);
    rpc_wire_unref(w); /* the message keeps the bytes it points into */
    gsize len;
    const guint8 *p = rpc_message_payload_data(d, &len);
    g_assert_cmpmem(p, len, "abc", 3);
    GBytes *payload = rpc_message_payload(d); /* a view made on request */
    g_assert_cmpmem(g_bytes_get_data(payload, NULL), g_bytes_get_size(payload), "abc", 3);
    g_assert_true(rpc_message_payload(d) == payload);
    rpc_message_unref(d);
    g_bytes_unref(b);
    rpc_message_unref(m);

    RpcWire *cut = rpc_wire_new((const guint8 *)"RPCS", 4);
    g_assert_null(rpc_message_decode_wire(cut, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    rpc_wire_unref(cut);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/message/type-table", test_type_table);
    g_test_add_func("/message/decode-wire-shares-payload", test_decode_wire_shares_payload);
    g_test_add_func("/message/empty-parts-are-shared", test_empty_parts_are_shared);
    g_test_add_func("/message/build-matches-encode", test_build_matches_encode);
    g_test_add_func("/message/wire", test_wire);
    return g_test_run();
}
