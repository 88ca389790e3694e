/* ddp-train.h — data-parallel training of a small MLP, as functions a
 * scenario calls by name (spec §9; scenarios/ddp/).
 *
 * The functions, registered by rpc_registry_new_default():
 *
 *   ddp_train(hook, steps, seed, bucket_cap_bytes, lr=0.1, pg_timeout=None,
 *             powersgd_rank=1, start_powersgd_iter=2) -> Tensor
 *       Called on every worker of the world (each from its own program, on
 *       its own RPC thread: rpc_sync(worker_name(), ddp_train, …)).  Creates
 *       a process group over all workers, builds the model from `seed`,
 *       trains `steps` SGD steps on this worker's shard under DDP with the
 *       named communication hook and returns the final weights, flattened
 *       (float64, RPC_DDP_TRAIN_NUMEL elements).  hook is one of "none"
 *       (no hook: the reducer's own mean), "allreduce", "fp16", "bf16",
 *       "fp16_wrapper", "bf16_wrapper" (the wrappers around allreduce),
 *       "powersgd" (PowerSGDState with the given rank and start iteration,
 *       PyTorch's other defaults) and "noop".  bucket_cap_bytes 0 is DDP's
 *       25 MiB.  pg_timeout: seconds; None is c10d's 30 minutes.  A
 *       collective's failure (a member crashed: "Timed out after …") comes
 *       back as that RuntimeError.
 *   single_train(steps, seed, bucket_cap_bytes=0, world_size=None, lr=0.1)
 *       The one-process reference: every shard's gradients with the same
 *       operations, divided by the world size and summed in the ring's order
 *       per bucket, as the allreduce hook does; equal bit for bit to
 *       ddp_train with "allreduce" or "none" and the same bucket cap.
 *       world_size None: this world's.
 *   ddp_loss(seed, weights=None, world_size=None) -> float
 *       The mean squared error over the whole data set (every shard) at the
 *       given weights (None: the initial ones).
 *   max_abs_diff(a, b) -> float
 *       max |a - b| over two tensors of one shape (NaN if either has NaN).
 *
 * Every worker must call ddp_train the same number of times with the same
 * arguments (as every rank of a DDP job runs the same script): the n-th call
 * uses process group RPC_DDP_TRAIN_GROUP_BASE + n on every member (counted
 * per agent: a restarted worker counts from 0 again), and the members
 * check their arguments against each other before training.  A
 * member that fails before that (bad arguments, on that worker only) leaves
 * the others waiting for it until the group's timeout ("Timed out after …
 * ms waiting for worker1 (rank 1) to join process group 1003"), as a rank
 * that never reaches init_process_group does.  Set pg_timeout below the
 * RPC timeout of the call that runs ddp_train to see the group's errors
 * rather than the RPC's timeout.
 *
 * Trace: each member records `ddp.step group=G step=S loss=<its shard's
 * loss before the step>` per step; the rendezvous is an internal function
 * (_ddp_train_join) and shows as ordinary RPCs.
 */
#ifndef RPC_DDP_TRAIN_H
#define RPC_DDP_TRAIN_H

#include <glib.h>

#include "core/registry.h"

G_BEGIN_DECLS

/* The model: x[8] -> relu(x·w1 + b1)[16] -> ·w2 + b2 -> y, 8 samples per
 * shard; weights flattened as w1 (8×16, row-major), b1, w2, b2. */
#define RPC_DDP_TRAIN_D_IN  8
#define RPC_DDP_TRAIN_HID   16
#define RPC_DDP_TRAIN_SHARD 8
#define RPC_DDP_TRAIN_NUMEL                                                                        \
    (RPC_DDP_TRAIN_D_IN * RPC_DDP_TRAIN_HID + 2 * RPC_DDP_TRAIN_HID + 1) /* 161 */

#define RPC_DDP_TRAIN_MAX_STEPS  100000
#define RPC_DDP_TRAIN_MAX_WORLD  4096
#define RPC_DDP_TRAIN_GROUP_BASE 1000 /* ddp_train's groups: 1000, 1001, … */
#define RPC_DDP_TRAIN_DEFAULT_LR 0.1
#define RPC_DDP_TRAIN_PSGD_START 2 /* start_powerSGD_iter (PyTorch: 1000) */

void rpc_ddp_train_register(RpcRegistry *reg);

G_END_DECLS

#endif /* RPC_DDP_TRAIN_H */
