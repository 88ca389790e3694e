/* fuzz-message.c — libFuzzer target: decode a message, then its payload.
 *
 * Not built by default (the Makefile builds tests/test-*.c only).  Build and
 * run with clang from the repository root:
 *
 *   clang -std=c11 -D_DEFAULT_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined -I. \
 *     $(pkg-config --cflags glib-2.0) tests/fuzz/fuzz-message.c $(find core -name '*.c') \
 *     $(pkg-config --libs glib-2.0) -lm -o build/fuzz-message
 *   mkdir -p build/fuzz-corpus
 *   G_SLICE=always-malloc build/fuzz-message -max_len=4096 -max_total_time=60 build/fuzz-corpus
 *
 * Each input is decoded twice: as a whole message (then its payload against
 * the message's tensors, with hooks that accept one extension), and as a
 * bare payload with no tensors.  Whatever decodes must re-encode to the same
 * bytes — the wire form is canonical — so a mismatch aborts (a finding).
 * Payloads also go through the call-body decoder, which must agree with the
 * generic one (same items, or the very same error), and messages through
 * the RpcWire decoder.  core/pool turns itself off under AddressSanitizer,
 * so every record's lifetime is checked.
 * Any crash, sanitizer report or leak (LeakSanitizer) is a bug.
 */
#include <stdlib.h>
#include <string.h>

#include "core/codec.h"
#include "core/message.h"
#include "core/tensor.h"

int LLVMFuzzerTestOneInput(const guint8 *data, size_t size);

static void
box_unref(gpointer p)
{
    g_free(p);
}

static gpointer
box_ref(gpointer p)
{
    return p; /* only ever one reference in this harness */
}

static const RpcOpaqueType box_type = {.name = "Box", .ref = box_ref, .unref = box_unref};

static gboolean
pickle(gpointer data, const RpcValue *opaque, const char **ext_name, RpcValue **wire,
       GError **error)
{
    const gint64 *n = rpc_value_get_opaque(opaque, &box_type);
    if (n == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "not a Box");
        return FALSE;
    }
    *ext_name = "Box";
    *wire = rpc_value_new_int(*n);
    return TRUE;
}

static RpcValue *
unpickle(gpointer data, const char *ext_name, RpcValue *wire, GError **error)
{
    if (strcmp(ext_name, "Box") != 0 || rpc_value_type(wire) != RPC_VALUE_INT) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown extension '%s'", ext_name);
        return NULL;
    }
    return rpc_value_new_opaque(&box_type,
                                g_memdup2(&(gint64){rpc_value_get_int(wire)}, sizeof(gint64)));
}

static const RpcCodecHooks hooks = {pickle, unpickle, NULL};

/* Decodes a payload; what decodes must re-encode (to the same bytes when
 * no tensor indices could have been renumbered). */
static void
payload(const guint8 *data, size_t size, GPtrArray *tensors)
{
    GError *error = NULL;
    RpcValue *v = rpc_codec_decode(data, size, tensors, &hooks, &error);
    RpcCodecCall call;
    GError *call_error = NULL;
    switch (rpc_codec_decode_call(data, size, tensors, &hooks, &call, &call_error)) {
    case RPC_CODEC_CALL_OK: {
        if (v == NULL)
            abort();
        /* Same items: the list rebuilt from them encodes to the bytes v
         * encodes to (equality would not do: NaN != NaN, Boxes compare by
         * identity). */
        RpcValue *list = rpc_value_new_list();
        rpc_value_list_append(list, rpc_value_new_string_len(call.name, call.name_len));
        rpc_value_list_append(list, call.args);
        rpc_value_list_append(list, call.kwargs);
        rpc_value_list_append(list, call.flag);
        GPtrArray *t1 = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
        GPtrArray *t2 = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
        GBytes *b1 = rpc_codec_encode(list, t1, &hooks, NULL);
        GBytes *b2 = rpc_codec_encode(v, t2, &hooks, NULL);
        if (b1 == NULL || b2 == NULL || !g_bytes_equal(b1, b2))
            abort();
        g_bytes_unref(b1);
        g_bytes_unref(b2);
        g_ptr_array_unref(t1);
        g_ptr_array_unref(t2);
        rpc_value_unref(list);
        break;
    }
    case RPC_CODEC_CALL_ERROR:
        if (v != NULL || call_error == NULL || strcmp(call_error->message, error->message) != 0)
            abort();
        g_error_free(call_error);
        break;
    case RPC_CODEC_CALL_NOT_A_CALL:
        if (call_error != NULL)
            abort();
        break;
    }
    if (v == NULL) {
        if (error == NULL || error->domain != RPC_ERROR)
            abort();
        g_error_free(error);
        return;
    }
    GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
    GBytes *again = rpc_codec_encode(v, out, &hooks, &error);
    if (again == NULL)
        abort();
    if ((tensors == NULL || tensors->len == 0) &&
        (g_bytes_get_size(again) != size || memcmp(g_bytes_get_data(again, NULL), data, size)))
        abort();
    g_bytes_unref(again);
    g_ptr_array_unref(out);
    rpc_value_unref(v);
}

int
LLVMFuzzerTestOneInput(const guint8 *data, size_t size)
{
    GError *error = NULL;
    RpcMessage *m = rpc_message_decode(data, size, &error);
    if (m == NULL) {
        if (error == NULL || error->domain != RPC_ERROR)
            abort();
        g_clear_error(&error);
    } else {
        GBytes *again = rpc_message_encode(m);
        if (g_bytes_get_size(again) != size || memcmp(g_bytes_get_data(again, NULL), data, size))
            abort();
        g_bytes_unref(again);
        gsize n = 0;
        const guint8 *p = g_bytes_get_data(rpc_message_payload(m), &n);
        payload(p, n, rpc_message_tensors(m));
    }
    RpcWire *w = rpc_wire_new(data, size);
    RpcMessage *mw = rpc_message_decode_wire(w, &error);
    rpc_wire_unref(w); /* the message keeps what it points into */
    if ((mw == NULL) != (m == NULL))
        abort();
    if (mw == NULL) {
        g_clear_error(&error);
    } else {
        gsize n = 0;
        const guint8 *p = rpc_message_payload_data(mw, &n);
        payload(p, n, rpc_message_tensors(mw));
        rpc_message_unref(mw);
    }
    rpc_message_unref(m);
    payload(data, size, NULL);
    return 0;
}
