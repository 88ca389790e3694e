/* codec.h — RpcValue <-> bytes: the payload encoding ("our pickle").
 *
 * Encoding (little-endian; one tag byte, then the body):
 *
 *   tag  type         body
 *   0x00 None         —
 *   0x01 False        —
 *   0x02 True         —
 *   0x03 int          i64
 *   0x04 float        f64 (IEEE 754 bits)
 *   0x05 str          u32 length, bytes (no NUL inside; valid UTF-8)
 *   0x06 bytes        u32 length, bytes
 *   0x07 list         u32 count, count values
 *   0x08 dict         u32 count, count × (str body without tag, value)
 *   0x09 tensor       u32 index into the message's tensor list
 *   0x0a WorkerInfo   i32 id, str body
 *   0x0b error        u8 kind, str body (kind name), str body (message)
 *   0x0c extension    str body (extension name), value
 *
 * Extensions carry objects the codec itself does not know (RRefs, user
 * objects): the encoder asks hooks->pickle to turn an RPC_VALUE_OPAQUE into
 * (name, value); the decoder asks hooks->unpickle to turn (name, value) back.
 * Without hooks an opaque value cannot be encoded and an extension cannot be
 * decoded.  Futures are never encoded: "Can not pickle torch.futures.Future".
 *
 * Decoding checks every length against the remaining bytes, caps nesting at
 * RPC_CODEC_MAX_DEPTH, rejects unknown tags, out-of-range tensor indices,
 * invalid UTF-8 and trailing bytes, and never allocates more than the input
 * can justify (a count larger than the remaining bytes is an error).
 */
#ifndef RPC_CODEC_H
#define RPC_CODEC_H

#include <glib.h>

#include "core/value.h"

G_BEGIN_DECLS

#define RPC_CODEC_MAX_DEPTH         64
#define RPC_CODEC_MSG_PICKLE_FUTURE "Can not pickle torch.futures.Future"

typedef struct RpcCodecHooks {
    /* Opaque value → extension name (static string) and its wire value
     * (transfer full); FALSE + error if it cannot be sent. */
    gboolean (*pickle)(gpointer data, const RpcValue *opaque, const char **ext_name,
                       RpcValue **wire_value, GError **error);
    /* Extension → value (transfer full), or NULL + error.  wire_value is
     * (transfer none): the codec drops it after the call; ref it to keep it. */
    RpcValue *(*unpickle)(gpointer data, const char *ext_name, RpcValue *wire_value,
                          GError **error);
    gpointer data;
} RpcCodecHooks;

/* Encodes v, appending tensors to `tensors` (RpcTensor*, refs taken; one
 * entry per occurrence, indices absolute in the array).  tensors may be NULL
 * if v holds no tensor; hooks may be NULL.  Returns the payload (transfer
 * full) or NULL + RuntimeError; on error `tensors` is left as it was.
 * Depth: at most RPC_CODEC_MAX_DEPTH containers (list, dict, extension)
 * nested in one another; the encoder enforces the same rules as the decoder
 * (UTF-8 strings, the depth cap), so what it produces always decodes. */
GBytes *rpc_codec_encode(const RpcValue *v, GPtrArray *tensors, const RpcCodecHooks *hooks,
                         GError **error);
/* A growable byte buffer owned by the caller: data[0 .. len) is content,
 * cap bytes are allocated (g_realloc'd as needed; {NULL, 0, 0} is empty).
 * Reused across encodes it stops allocating once it is big enough. */
typedef struct {
    guint8 *data;
    gsize len;
    gsize cap;
} RpcCodecBuffer;
/* The same encoding, appended to `out` (the bytes rpc_codec_encode would
 * return, after out's existing content; no intermediate copy).  Returns
 * TRUE, or FALSE + RuntimeError with `out` and `tensors` as they were on
 * entry.  Lets a caller build a whole message (header, payload, tensors)
 * in one buffer (rpc_message_build). */
gboolean rpc_codec_encode_append(RpcCodecBuffer *out, const RpcValue *v, GPtrArray *tensors,
                                 const RpcCodecHooks *hooks, GError **error);
/* The encoding of the call body [name, args, kwargs, is_async] (args NULL:
 * [], kwargs NULL: {}) appended to out, byte for byte what encoding that
 * list value gives, without building it (the RPC hot path). */
gboolean rpc_codec_encode_call_append(RpcCodecBuffer *out, const char *name, const RpcValue *args,
                                      const RpcValue *kwargs, gboolean is_async, GPtrArray *tensors,
                                      const RpcCodecHooks *hooks, GError **error);
/* Room for n more bytes at the end: returns where they start (len += n). */
guint8 *rpc_codec_buffer_reserve(RpcCodecBuffer *b, gsize n);
/* Frees the bytes; b is empty afterwards. */
void rpc_codec_buffer_clear(RpcCodecBuffer *b);
/* Decodes a payload whose tensor indices refer to `tensors` (nullable: none;
 * transfer none, the value takes its own refs).  Returns a value (transfer
 * full) or NULL + RuntimeError; every error on a proper prefix of a valid
 * payload starts with "truncated payload".  Non-canonical forms are errors:
 * duplicate dict keys, an error kind that does not match its type name. */
/* A call body [name, args, kwargs, flag] decoded without its list and name
 * values (the receiving side of the RPC hot path):
 *   RPC_CODEC_CALL_OK          out is set: name[0 .. name_len) points into
 *                              data (valid UTF-8, no NUL, not terminated);
 *                              args, kwargs, flag (transfer full) are the
 *                              items as rpc_codec_decode gives them, of any
 *                              type;
 *   RPC_CODEC_CALL_NOT_A_CALL  data does not start like a 4-item list with a
 *                              string first: nothing was decoded and no
 *                              hook ran — use rpc_codec_decode;
 *   RPC_CODEC_CALL_ERROR       an item failed: the error rpc_codec_decode
 *                              gives for the same bytes. */
typedef enum {
    RPC_CODEC_CALL_OK,
    RPC_CODEC_CALL_NOT_A_CALL,
    RPC_CODEC_CALL_ERROR,
} RpcCodecCallResult;
typedef struct {
    const char *name;
    gsize name_len;
    RpcValue *args, *kwargs, *flag;
} RpcCodecCall;
RpcCodecCallResult rpc_codec_decode_call(const guint8 *data, gsize len, GPtrArray *tensors,
                                         const RpcCodecHooks *hooks, RpcCodecCall *out,
                                         GError **error);
RpcValue *rpc_codec_decode(const guint8 *data, gsize len, GPtrArray *tensors,
                           const RpcCodecHooks *hooks, GError **error);

G_END_DECLS

#endif /* RPC_CODEC_H */
