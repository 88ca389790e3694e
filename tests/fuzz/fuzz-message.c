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
        g_error_free(error);
    } else {
        GBytes *again = rpc_message_encode(m);
        if (g_bytes_get_size(again) != size || memcmp(g_bytes_get_data(again, NULL), data, size))
            abort();
        g_bytes_unref(again);
        gsize n = 0;
        const guint8 *p = g_bytes_get_data(rpc_message_payload(m), &n);
        payload(p, n, rpc_message_tensors(m));
        rpc_message_unref(m);
    }
    payload(data, size, NULL);
    return 0;
}
