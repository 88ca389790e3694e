/* message.h — the RPC message envelope (spec §1.1) and its wire form.
 *
 * A message is a type (PyTorch's enum values), an id (the request id, echoed
 * by the response; -1 when unset), a payload and a side list of tensors.
 * The payload is one encoded RpcValue (codec.h) whose tensors are replaced
 * by indices into the side list, as PyTorch's pickler does: the payload bytes
 * are therefore what the faulty agent keys on (spec §10), and a retried
 * message is byte-identical.
 *
 * Wire layout (all integers little-endian):
 *
 *   offset size  field
 *   0      4     magic "RPCS"
 *   4      1     version (RPC_WIRE_VERSION)
 *   5      1     flags (0; reserved)
 *   6      2     type (u16)
 *   8      8     id (i64)
 *   16     4     payload length P (u32)
 *   20     P     payload (codec.h value encoding)
 *   20+P   4     tensor count T (u32)
 *   …            T tensors, each: dtype u8 (bits 0-6: 0 f32, 1 f64; bit 7,
 *                RPC_WIRE_REQUIRES_GRAD: the tensor requires grad, as
 *                PyTorch's pickler keeps it), ndim u8 (≤ 8), ndim × i64
 *                shape (each ≥ 0), then numel × element size bytes of
 *                row-major data
 *
 * The decoder is a pure function over untrusted bytes: every length is
 * checked against what remains, totals are capped (RPC_WIRE_MAX_BYTES), and
 * trailing bytes are an error.
 */
#ifndef RPC_MESSAGE_H
#define RPC_MESSAGE_H

#include <glib.h>

#include "core/codec.h"
#include "core/tensor.h"
#include "core/value.h"
#include "core/wire.h"

G_BEGIN_DECLS

#define RPC_WIRE_VERSION     1
#define RPC_WIRE_HEADER_SIZE 20
#define RPC_WIRE_MAX_BYTES   ((gsize)256 * 1024 * 1024)
/* The dtype byte's high bit: the sender's tensor requires grad; the decoded
 * tensor is a leaf that requires grad (messages without it decode as
 * before).  Distributed autograd gives such tensors their RecvRpcBackward. */
#define RPC_WIRE_REQUIRES_GRAD 0x80

#define RPC_MSG_REQUEST  0x100
#define RPC_MSG_RESPONSE 0x200

typedef enum {
    RPC_MSG_SCRIPT_CALL = 0x00 | RPC_MSG_REQUEST,
    RPC_MSG_SCRIPT_RET = 0x01 | RPC_MSG_RESPONSE,
    RPC_MSG_PYTHON_CALL = 0x02 | RPC_MSG_REQUEST,
    RPC_MSG_PYTHON_RET = 0x03 | RPC_MSG_RESPONSE,
    RPC_MSG_SCRIPT_REMOTE_CALL = 0x04 | RPC_MSG_REQUEST,
    RPC_MSG_PYTHON_REMOTE_CALL = 0x05 | RPC_MSG_REQUEST,
    RPC_MSG_REMOTE_RET = 0x06 | RPC_MSG_RESPONSE,
    RPC_MSG_SCRIPT_RREF_FETCH_CALL = 0x07 | RPC_MSG_REQUEST,
    RPC_MSG_PYTHON_RREF_FETCH_CALL = 0x08 | RPC_MSG_REQUEST,
    RPC_MSG_SCRIPT_RREF_FETCH_RET = 0x09 | RPC_MSG_RESPONSE,
    RPC_MSG_PYTHON_RREF_FETCH_RET = 0x0a | RPC_MSG_RESPONSE,
    RPC_MSG_RREF_USER_DELETE = 0x0b | RPC_MSG_REQUEST,
    RPC_MSG_RREF_FORK_REQUEST = 0x0c | RPC_MSG_REQUEST,
    RPC_MSG_RREF_CHILD_ACCEPT = 0x0d | RPC_MSG_REQUEST,
    RPC_MSG_RREF_ACK = 0x0e | RPC_MSG_RESPONSE,
    RPC_MSG_FORWARD_AUTOGRAD_REQ = 0x0f | RPC_MSG_REQUEST,
    RPC_MSG_FORWARD_AUTOGRAD_RESP = 0x10 | RPC_MSG_RESPONSE,
    RPC_MSG_BACKWARD_AUTOGRAD_REQ = 0x11 | RPC_MSG_REQUEST,
    RPC_MSG_BACKWARD_AUTOGRAD_RESP = 0x12 | RPC_MSG_RESPONSE,
    RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ = 0x13 | RPC_MSG_REQUEST,
    RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_RESP = 0x14 | RPC_MSG_RESPONSE,
    RPC_MSG_RUN_WITH_PROFILING_REQ = 0x15 | RPC_MSG_REQUEST,
    RPC_MSG_RUN_WITH_PROFILING_RESP = 0x16 | RPC_MSG_RESPONSE,
    RPC_MSG_RREF_BACKWARD_REQ = 0x17 | RPC_MSG_REQUEST,
    RPC_MSG_RREF_BACKWARD_RESP = 0x18 | RPC_MSG_RESPONSE,
    RPC_MSG_EXCEPTION = 0x37 | RPC_MSG_RESPONSE,
    RPC_MSG_UNKNOWN = 0x3c,
} RpcMessageType;

/* Refcounted, not thread-safe: a message is used by one thread at a time
 * (hand its wire form, a GBytes, to another thread instead). */
typedef struct RpcMessage RpcMessage;

/* payload (transfer full, nullable: empty); tensors (transfer full, nullable:
 * none): RpcTensor* with rpc_tensor_unref as free func.  type must be a known
 * type (rpc_message_type_is_known) and the payload at most 4 GiB - 1. */
RpcMessage *rpc_message_new(RpcMessageType type, gint64 id, GBytes *payload, GPtrArray *tensors);
RpcMessage *rpc_message_ref(RpcMessage *m);
void rpc_message_unref(RpcMessage *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcMessage, rpc_message_unref)

RpcMessageType rpc_message_type(const RpcMessage *m);
gint64 rpc_message_id(const RpcMessage *m);
void rpc_message_set_id(RpcMessage *m, gint64 id);
GBytes *rpc_message_payload(const RpcMessage *m); /* transfer none */
/* The payload's bytes without making a GBytes (a decoded message's payload
 * is a slice of its wire, and rpc_message_payload makes the slice GBytes on
 * first use: messages are not shared between threads). */
const guint8 *rpc_message_payload_data(const RpcMessage *m, gsize *len);
GPtrArray *rpc_message_tensors(const RpcMessage *m); /* transfer none, never NULL */

gboolean rpc_message_type_is_request(RpcMessageType t);
gboolean rpc_message_type_is_response(RpcMessageType t);
gboolean rpc_message_type_is_known(guint t);
/* "PYTHON_CALL", …; "UNKNOWN" for values not in the enum. */
const char *rpc_message_type_name(RpcMessageType t);
/* Parses a name; FALSE if unknown. */
gboolean rpc_message_type_from_name(const char *name, RpcMessageType *out);

/* The wire form above (transfer full).  Does not enforce RPC_WIRE_MAX_BYTES
 * (it cannot fail); a sender that may exceed it checks rpc_message_wire_size. */
GBytes *rpc_message_encode(const RpcMessage *m);
/* The same bytes as an RpcWire. */
RpcWire *rpc_message_encode_wire(const RpcMessage *m);
/* The exact length rpc_message_encode() would return, without encoding
 * (for bandwidth models and size checks). */
gsize rpc_message_wire_size(const RpcMessage *m);
/* Decodes untrusted bytes; NULL + RuntimeError on anything malformed.  The
 * payload is copied but not decoded (rpc_codec_decode does that lazily);
 * tensors are validated and copied out (data need not be aligned).  Errors
 * name what was being read and where, e.g. "truncated message: need 8 bytes
 * for the id at offset 8, have 3"; every error on a proper prefix of a valid
 * message starts with "truncated message". */
RpcMessage *rpc_message_decode(const guint8 *data, gsize len, GError **error);

/* Builds a message whose payload is `body` as core/codec.h encodes it, and
 * its wire form, in one buffer (no payload copy): returns the message
 * (transfer full; its payload is a slice of *wire) and sets *wire (transfer
 * full; see core/wire.h).  The codec appends body's tensors to `tensors` (transfer none); the
 * message references that array when it is not empty.  scratch (nullable):
 * a buffer to build in, reused across calls (its content is overwritten;
 * the wire is one exact-size copy of it).  NULL + error when body cannot be
 * encoded, `tensors` then as it was. */
RpcMessage *rpc_message_build(RpcMessageType type, gint64 id, const RpcValue *body,
                              GPtrArray *tensors, const RpcCodecHooks *hooks,
                              RpcCodecBuffer *scratch, RpcWire **wire, GError **error);
/* The same with the payload written by encode(out, body, tensors, hooks,
 * error), which appends to out and, on failure, leaves out and tensors as
 * they were (as rpc_codec_encode_append and _encode_call_append do). */
typedef gboolean (*RpcMessageBodyFunc)(RpcCodecBuffer *out, gconstpointer body, GPtrArray *tensors,
                                       const RpcCodecHooks *hooks, GError **error);
/* The RpcMessageBodyFunc of rpc_message_build: body is a const RpcValue*. */
gboolean rpc_message_value_body(RpcCodecBuffer *out, gconstpointer body, GPtrArray *tensors,
                                const RpcCodecHooks *hooks, GError **error);
RpcMessage *rpc_message_build_with(RpcMessageType type, gint64 id, RpcMessageBodyFunc encode,
                                   gconstpointer body, GPtrArray *tensors,
                                   const RpcCodecHooks *hooks, RpcCodecBuffer *scratch,
                                   RpcWire **wire, GError **error);
/* The same over an RpcWire (the transports' form): the payload shares the
 * wire's bytes (no copy). */
RpcMessage *rpc_message_decode_wire(RpcWire *wire, GError **error);

G_END_DECLS

#endif /* RPC_MESSAGE_H */
