/* test-message.c — core/message envelope details the wire tests in
 * test-codec.c do not cover: the type table, decoding from a GBytes that
 * the payload shares, and the shared empty payload / tensor list. */
#include <string.h>

#include "core/error.h"
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
test_decode_bytes_shares_payload(void)
{
    GPtrArray *ts = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    g_ptr_array_add(ts, rpc_tensor_new_scalar(RPC_DTYPE_FLOAT64, 2.5));
    RpcMessage *m = rpc_message_new(RPC_MSG_PYTHON_RET, 77, g_bytes_new("payload!", 8), ts);
    GBytes *wire = rpc_message_encode(m);
    GError *err = NULL;
    RpcMessage *shared = rpc_message_decode_bytes(wire, &err);
    g_assert_no_error(err);
    gsize wlen, plen;
    const guint8 *w = g_bytes_get_data(wire, &wlen);
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
    g_assert_true(g_bytes_equal(again, wire));
    g_bytes_unref(again);
    /* The payload outlives the wire it came from. */
    GBytes *payload = g_bytes_ref(rpc_message_payload(shared));
    g_bytes_unref(wire);
    rpc_message_unref(shared);
    g_assert_cmpmem(g_bytes_get_data(payload, NULL), 8, "payload!", 8);
    g_bytes_unref(payload);
    rpc_message_unref(copied);
    rpc_message_unref(m);
    /* Truncated input through the GBytes entry point: a clean error. */
    GBytes *cut = g_bytes_new("RPCS\x01", 5);
    g_assert_null(rpc_message_decode_bytes(cut, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_true(g_str_has_prefix(err->message, "truncated message"));
    g_clear_error(&err);
    g_bytes_unref(cut);
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
    GBytes *wire = rpc_message_encode(b);
    RpcMessage *c = rpc_message_decode_bytes(wire, NULL);
    g_assert_nonnull(c);
    g_assert_true(rpc_message_tensors(c) == rpc_message_tensors(a));
    g_assert_cmpuint(g_bytes_get_size(rpc_message_payload(c)), ==, 0);
    rpc_message_unref(c);
    g_bytes_unref(wire);
    rpc_message_unref(a);
    rpc_message_unref(b);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/message/type-table", test_type_table);
    g_test_add_func("/message/decode-bytes-shares-payload", test_decode_bytes_shares_payload);
    g_test_add_func("/message/empty-parts-are-shared", test_empty_parts_are_shared);
    return g_test_run();
}
