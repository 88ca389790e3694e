/* collective.h — a process group of RPC agents: ring allreduce, broadcast,
 * allgather, reduce_scatter and barrier over the agents' own messages.
 *
 * One RpcProcessGroup per worker, as one c10d ProcessGroup per process: every
 * member creates the group (same id, same member list) before any member
 * issues its first collective (c10d's init_process_group rendezvous; a test
 * creates its groups, then meets at a barrier).  Members must issue the same
 * collectives in the same order; the n-th collective of a group has sequence
 * number n (from 1) on every member, and each message carries it, so
 * concurrent or consecutive collectives never mix.  A chunk arriving before
 * its collective started is buffered, and so is one for a group not yet
 * created on its destination, provided that worker already has a group:
 * creating the first group registers the chunk function on the agent.
 *
 * Transport: each step sends one chunk as a request (an internal function,
 * RPC_PG_CHUNK_FUNC) through the member's agent; the chunk travels in the
 * message's tensor table (or, for the low-precision formats, as 2 bytes per
 * element), so virtual time follows message sizes, bandwidth and latency.
 * The next step leaves as soon as the chunk it depends on arrived; the
 * response to each request is a small acknowledgement the group ignores.
 *
 * Ring allreduce on n members, rank r, tensor of N elements split into n
 * chunks (rpc_pg_chunk_bounds: the first N % n chunks get one extra
 * element): 2(n-1) steps, n-1 of reduce-scatter then n-1 of all-gather.
 *   reduce-scatter step s: send chunk (r-s-1) mod n to rank r+1, receive
 *     chunk (r-s-2) mod n from rank r-1 and combine: mine = received ⊕ mine;
 *   after it rank r holds chunk r fully reduced (AVG divides it by n here);
 *   all-gather step s: send chunk (r-s) mod n, receive chunk (r-s-1) mod n.
 * Reduction order (the float64 contract): element i of chunk c is
 *     ((x[c+1] ⊕ x[c+2]) ⊕ …) ⊕ x[c]        (member indices mod n)
 * computed once, on rank c, and copied bit for bit to every other rank, so
 * every member gets the identical result.  Each ⊕ is computed in double and
 * rounded once to the tensor's dtype (exactly IEEE float32 arithmetic for
 * float32) or to the low-precision format.  MIN/MAX propagate NaN
 * (torch.minimum/maximum).  With a constant latency L and bandwidth B on
 * every link, and every member starting at t0, the collective completes on
 * every member at
 *     t0 + 2(n-1) · (ceil(S·1e9/B) ns + L)
 * where S is the encoded size of one step's request
 * (rpc_pg_step_message_bytes) when n divides N.  (The acknowledgements use
 * the reverse links; for n = 2 they follow the data on the same link, are
 * written after it and are transmitted within the latency window.)
 *
 * broadcast: the root sends its tensor to every member directly (one step)
 * and completes once the sends are written; the others complete on arrival.
 * allgather and barrier: ring all-gather, n-1 steps.  reduce_scatter: the
 * reduce-scatter half; the result is rank r's chunk as a 1-d tensor.
 *
 * Failure: a collective that has not completed `timeout` after it started
 * fails with RuntimeError "Timed out after 5000 ms waiting for allreduce #3
 * step 2 from worker2 (rank 2)" — the step and peer it was waiting for —
 * instead of hanging (a crashed or partitioned member never sends).  Failed
 * sends are not errors by themselves: the step they feed times out.  A
 * member that meets a different collective under the same sequence number
 * fails at once ("… every member must issue the same collectives in the
 * same order").  Collectives may be issued from virtual threads (block on
 * the future) and from callbacks; nothing here blocks.
 *
 * Ownership: the group borrows its agent and the agent's executor; free it
 * before them (a crashed worker's code does so when its wait fails).
 */
#ifndef RPC_COLLECTIVE_H
#define RPC_COLLECTIVE_H

#include <glib.h>

#include "core/agent.h"
#include "core/future.h"
#include "core/tensor.h"

G_BEGIN_DECLS

#define RPC_PG_DEFAULT_TIMEOUT (30 * 60 * RPC_S) /* c10d's default: 30 minutes */
#define RPC_PG_CHUNK_FUNC      "_rpc_pg_chunk"

typedef struct RpcProcessGroup RpcProcessGroup;

typedef enum {
    RPC_REDUCE_SUM = 0,
    RPC_REDUCE_AVG, /* sum, then divided by the group size (rounded once) */
    RPC_REDUCE_MIN,
    RPC_REDUCE_MAX,
} RpcReduceOp;

/* The number format a reduction runs in.  A low-precision tensor is stored
 * as float32 whose every element is a value of the format (all fp16 and
 * bf16 values are exact in float32); on the wire it takes 2 bytes per
 * element. */
typedef enum {
    RPC_PRECISION_NATIVE = 0, /* the tensor's own dtype */
    RPC_PRECISION_FP16,       /* IEEE 754 binary16 */
    RPC_PRECISION_BF16,       /* bfloat16 */
} RpcPrecision;

/* A group over `members` (worker ids in group-rank order, n of them; NULL:
 * every worker of the agent's world, by id).  The agent must be running and
 * a member.  Errors: ValueError "Invalid process group member 7 (world size
 * 4)", "Duplicate process group member 2", "worker3 is not a member of
 * process group 1"; RuntimeError "Process group 1 already exists on
 * worker0", "Process group 1 was already used on worker0" (ids are not
 * reused), or the agent's "RPC has not been initialized…". */
RpcProcessGroup *rpc_pg_new(RpcAgent *a, gint64 group_id, const gint *members, guint n,
                            GError **error);
/* Fails the group's pending collectives ("Process group 1 was destroyed
 * before allreduce #3 completed") and forgets the group. */
void rpc_pg_free(RpcProcessGroup *pg);

gint64 rpc_pg_id(const RpcProcessGroup *pg);
guint rpc_pg_rank(const RpcProcessGroup *pg);
guint rpc_pg_size(const RpcProcessGroup *pg);
RpcAgent *rpc_pg_agent(RpcProcessGroup *pg);       /* (transfer none) */
RpcExecutor *rpc_pg_executor(RpcProcessGroup *pg); /* (transfer none) */
/* The timeout a collective gets when called with RPC_TIMEOUT_UNSET. */
RpcTime rpc_pg_get_timeout(const RpcProcessGroup *pg);
void rpc_pg_set_timeout(RpcProcessGroup *pg, RpcTime timeout);
/* Collectives issued so far (the last one's sequence number). */
gint64 rpc_pg_seq(const RpcProcessGroup *pg);

/* Every collective returns a future (transfer full, never NULL for valid
 * arguments); tensors are read at the call (transfer none) and never
 * modified.  timeout: a duration, RPC_TIMEOUT_UNSET (the group's) or
 * RPC_TIMEOUT_NEVER. */

/* value: the reduced tensor (t's dtype and shape). */
RpcFuture *rpc_pg_allreduce(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op,
                            RpcTime timeout);
/* The same in a low-precision format: t is first converted as
 * rpc_lowp_tensor() does, every ⊕ is rounded to the format, chunks travel
 * as 2-byte values; value: a float32 tensor of t's shape holding format
 * values.  RPC_PRECISION_NATIVE is rpc_pg_allreduce. */
RpcFuture *rpc_pg_allreduce_lowp(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op,
                                 RpcPrecision precision, RpcTime timeout);
/* value: root's tensor.  Every member passes a tensor of the root's dtype
 * and shape (checked on arrival). */
RpcFuture *rpc_pg_broadcast(RpcProcessGroup *pg, const RpcTensor *t, guint root, RpcTime timeout);
/* value: a list of the members' tensors, by group rank. */
RpcFuture *rpc_pg_allgather(RpcProcessGroup *pg, const RpcTensor *t, RpcTime timeout);
/* value: this rank's chunk of the reduced tensor, 1-d (rpc_pg_chunk_bounds). */
RpcFuture *rpc_pg_reduce_scatter(RpcProcessGroup *pg, const RpcTensor *t, RpcReduceOp op,
                                 RpcTime timeout);
/* value: None, once every member has entered the barrier. */
RpcFuture *rpc_pg_barrier(RpcProcessGroup *pg, RpcTime timeout);

/* Chunk c of N elements over n members: offset and length. */
void rpc_pg_chunk_bounds(gint64 numel, guint n, guint chunk, gint64 *offset, gint64 *length);
/* Encoded size in bytes of one ring step's request carrying `numel`
 * elements of dtype (or of the low-precision format): what the network
 * model charges for it. */
gsize rpc_pg_step_message_bytes(RpcDType dtype, RpcPrecision precision, gint64 numel);

/* --- low-precision formats ---------------------------------------------------
 * Conversions round to nearest, ties to even; values beyond the format's
 * range become ±inf, tiny ones round into its subnormals or to ±0.  NaN
 * becomes the quiet NaN PyTorch produces: sign | 0x7e00 for fp16, 0x7fc0 for
 * bf16.  The conversions from double round once (correctly). */
guint16 rpc_fp16_from_double(double x);
guint16 rpc_fp16_from_float(float x);
double rpc_fp16_to_double(guint16 h);
guint16 rpc_bf16_from_double(double x);
guint16 rpc_bf16_from_float(float x);
double rpc_bf16_to_double(guint16 b);
/* x rounded to the format (NATIVE: to dtype). */
double rpc_precision_round(RpcPrecision p, RpcDType dtype, double x);
/* Tensor.to(torch.float16 / torch.bfloat16) as PyTorch does it: float32
 * elements are rounded once; float64 elements go through float32 first
 * (c10::Half and c10::BFloat16 convert from float).  Returns a float32
 * tensor of t's shape (transfer full); NATIVE returns a copy of t. */
RpcTensor *rpc_lowp_tensor(const RpcTensor *t, RpcPrecision p);

G_END_DECLS

#endif /* RPC_COLLECTIVE_H */
