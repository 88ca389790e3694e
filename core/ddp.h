/* ddp.h — DistributedDataParallel's gradient buckets, communication hooks
 * (default, compression and PowerSGD) and the reducer (spec §9).
 *
 * A GradBucket is one flat buffer holding several parameters' gradients,
 * contiguous in bucket order.  A communication hook is the C counterpart of
 * a Python hook: fn(state, bucket) returns an RpcValue that must be an
 * RPC_VALUE_FUTURE whose value is the bucket's reduced gradients.  The
 * reducer (RpcDdp) groups parameters into buckets, runs the hook on each
 * bucket as soon as every gradient in it is ready during backward, waits
 * for the futures at the end of backward and writes the results into .grad.
 *
 * Low precision: the buffer of a bucket may be put in fp16 or bf16
 * (rpc_grad_bucket_set_buffer_lowp); it is then a float32 tensor holding
 * values of that format (collective.h), the hooks round their arithmetic to
 * it and all-reduce it in it, 2 bytes per element on the wire.
 *
 * Blocking: rpc_ddp_backward / rpc_ddp_finalize_backward wait on futures
 * and run on a virtual thread; hooks never block.
 */
#ifndef RPC_DDP_H
#define RPC_DDP_H

#include <glib.h>

#include "core/autograd.h"
#include "core/collective.h"
#include "core/future.h"
#include "core/tensor.h"
#include "core/value.h"

G_BEGIN_DECLS

#define RPC_DDP_MSG_HOOK_TWICE                                                                     \
    "register_comm_hook or register_builtin_comm_hook can only be called once."
#define RPC_DDP_MSG_BUILTIN_HOOK_TWICE                                                             \
    "register_builtin_comm_hook or register_comm_hook can only be called once."
#define RPC_DDP_MSG_NOT_CALLABLE "Communication hook must be callable."
#define RPC_DDP_MSG_MUST_RETURN_FUTURE                                                             \
    "DDP communication hook's callback must return a torch.futures.Future object, but got "
#define RPC_DDP_MSG_POWERSGD_START_ITER                                                            \
    "Expect `start_powerSGD_iter` > 1 if `use_error_feedback` or `warm_start` is enabled, "        \
    "because PowerSGD can only be applied after the first two iterations in DDP."
#define RPC_DDP_DEFAULT_BUCKET_CAP ((gsize)25 * 1024 * 1024) /* bucket_cap_mb = 25 */

/* --- GradBucket -------------------------------------------------------------- */

typedef struct RpcGradBucket RpcGradBucket;

/* A bucket of n_params parameters (references taken) whose gradients lie
 * contiguously, in that order, in buffer (1-d, numel = the sum of the
 * parameters' numel; taken). */
RpcGradBucket *rpc_grad_bucket_new(gsize index, gsize bucket_count, RpcTensor *buffer,
                                   RpcTensor *const *params, guint n_params);
RpcGradBucket *rpc_grad_bucket_ref(RpcGradBucket *b);
void rpc_grad_bucket_unref(RpcGradBucket *b);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(RpcGradBucket, rpc_grad_bucket_unref)

gsize rpc_grad_bucket_index(const RpcGradBucket *b);
gsize rpc_grad_bucket_count(const RpcGradBucket *b);
/* index == bucket_count - 1 */
gboolean rpc_grad_bucket_is_last(const RpcGradBucket *b);
/* The flat buffer (transfer none) and the format it is in. */
RpcTensor *rpc_grad_bucket_buffer(const RpcGradBucket *b);
RpcPrecision rpc_grad_bucket_precision(const RpcGradBucket *b);
/* set_buffer(t): replaces the buffer (takes t; same numel). */
void rpc_grad_bucket_set_buffer(RpcGradBucket *b, RpcTensor *buffer);
/* set_buffer(t.to(fp16|bf16)): stores rpc_lowp_tensor(buffer, p). */
void rpc_grad_bucket_set_buffer_lowp(RpcGradBucket *b, const RpcTensor *buffer, RpcPrecision p);
/* gradients(): one tensor per parameter, shaped like it, copied from the
 * buffer (transfer full; a GPtrArray that unrefs them). */
GPtrArray *rpc_grad_bucket_gradients(const RpcGradBucket *b);
guint rpc_grad_bucket_n_params(const RpcGradBucket *b);
RpcTensor *rpc_grad_bucket_parameter(const RpcGradBucket *b, guint i); /* (transfer none) */
gint64 rpc_grad_bucket_offset(const RpcGradBucket *b, guint i);
gint64 rpc_grad_bucket_length(const RpcGradBucket *b, guint i);
/* sizes: the shape of parameter i (transfer none; its ndim in *ndim). */
const gint64 *rpc_grad_bucket_shape(const RpcGradBucket *b, guint i, guint *ndim);

/* --- communication hooks ----------------------------------------------------------- */

/* Returns a future value (transfer full) — anything else is the hook's
 * error — or NULL and an error (the hook raised). */
typedef RpcValue *(*RpcCommHookFn)(gpointer state, RpcGradBucket *bucket, GError **error);

typedef struct RpcCommHook {
    RpcCommHookFn fn;
    gpointer state;
    gboolean builtin; /* a C++ hook (register_builtin_comm_hook): its result may
                         also be a list of tensors, element 0 is used */
} RpcCommHook;

/* runHook: the hook's future (transfer full), or NULL and its error, or
 * RuntimeError "Unable to cast Python instance of type <class 'int'> to C++
 * type 'std::shared_ptr<torch::jit::PythonFutureWrapper>'. DDP
 * communication hook's callback must return a torch.futures.Future object,
 * but got builtins.int" when it returned something else. */
RpcFuture *rpc_comm_hook_run(const RpcCommHook *hook, RpcGradBucket *bucket, GError **error);
/* parseHookResult: the result tensor (transfer full).  A user hook's value
 * must be a tensor (RuntimeError "Unable to cast 5 to Tensor"); a builtin's a
 * tensor or a non-empty list of tensors (RuntimeError "expected the hook
 * result is either a Tensor or a TensorList"). */
RpcTensor *rpc_comm_hook_parse_result(const RpcCommHook *hook, const RpcValue *result,
                                      GError **error);

/* Built-in hooks; `process_group` is an RpcProcessGroup*. */
/* allreduce_hook: buffer / world_size (rounded to the buffer's format),
 * then a SUM all-reduce: the mean.  The future's value is the tensor. */
RpcValue *rpc_ddp_allreduce_hook(gpointer process_group, RpcGradBucket *bucket, GError **error);
/* fp16_compress_hook / bf16_compress_hook: buffer.to(fp16|bf16) / world_size,
 * all-reduced in that format, cast back to the buffer's dtype. */
RpcValue *rpc_ddp_fp16_compress_hook(gpointer process_group, RpcGradBucket *bucket, GError **error);
RpcValue *rpc_ddp_bf16_compress_hook(gpointer process_group, RpcGradBucket *bucket, GError **error);
/* noop_hook: a completed future of the unchanged buffer (state unused). */
RpcValue *rpc_ddp_noop_hook(gpointer state, RpcGradBucket *bucket, GError **error);

/* fp16_compress_wrapper(hook) / bf16_compress_wrapper(hook): the state is
 * an RpcCompressWrapper; the bucket's buffer is set to the low-precision
 * copy, the wrapped hook runs with the wrapped state, and its result is
 * copied into that buffer (rounded to the format) and returned. */
typedef struct RpcCompressWrapper {
    RpcCommHookFn hook;
    gpointer state;
} RpcCompressWrapper;
RpcValue *rpc_ddp_fp16_compress_wrapper_hook(gpointer wrapper, RpcGradBucket *bucket,
                                             GError **error);
RpcValue *rpc_ddp_bf16_compress_wrapper_hook(gpointer wrapper, RpcGradBucket *bucket,
                                             GError **error);

/* --- PowerSGD -------------------------------------------------------------------------- */

/* The deterministic generator PowerSGD draws from: xoshiro256** seeded
 * through splitmix64; normals by Box–Muller (u1 in (0, 1], u2 in [0, 1),
 * one normal per two draws, cos branch).  Documented so that a reference
 * can reproduce the draws. */
typedef struct RpcDdpRng {
    guint64 s[4];
} RpcDdpRng;
void rpc_ddp_rng_seed(RpcDdpRng *r, guint64 seed);
guint64 rpc_ddp_rng_next(RpcDdpRng *r);
double rpc_ddp_rng_normal(RpcDdpRng *r);

typedef struct RpcPowerSGDConfig {
    guint matrix_approximation_rank;  /* 1 */
    gint64 start_powerSGD_iter;       /* 1000 */
    double min_compression_rate;      /* 2 */
    gboolean use_error_feedback;      /* TRUE */
    gboolean warm_start;              /* TRUE */
    double orthogonalization_epsilon; /* 0 */
    guint64 random_seed;              /* 0 */
} RpcPowerSGDConfig;

typedef struct RpcPowerSGDState RpcPowerSGDState;

/* PowerSGDState's defaults. */
void rpc_powersgd_config_init(RpcPowerSGDConfig *cfg);
/* ValueError RPC_DDP_MSG_POWERSGD_START_ITER when start_powerSGD_iter <= 1
 * with error feedback or warm start.  pg is borrowed. */
RpcPowerSGDState *rpc_powersgd_state_new(RpcProcessGroup *pg, const RpcPowerSGDConfig *cfg,
                                         GError **error);
/* Only once the futures of its hooks have completed. */
void rpc_powersgd_state_free(RpcPowerSGDState *s);
/* state.iter: advanced once per iteration, by the last bucket. */
gint64 rpc_powersgd_state_iter(const RpcPowerSGDState *s);
/* total_numel_before_compression / total_numel_after_compression */
void rpc_powersgd_state_numel(const RpcPowerSGDState *s, gint64 *before, gint64 *after);

/* powerSGD_hook(state, bucket) (state: RpcPowerSGDState*).  Before
 * start_powerSGD_iter: allreduce_hook.  Then, per bucket: gradients of rank
 * <= 1, and those whose (n + m)·r·min_compression_rate >= n·m (n×m the
 * gradient seen as shape[0] × rest, r = min(n, m, rank)), are all-reduced
 * uncompressed (sum, then / world_size); the others, plus the bucket's
 * error-feedback residual, as M ≈ P·Qᵀ:
 *   Q: warm-started (the previous Q) or, at the first use of the bucket and
 *      always without warm start, drawn: seed = next() % 1000000000 of the
 *      state's generator (seeded with random_seed), then a generator seeded
 *      with it fills each Q in bucket order, row-major (m × r);
 *   each Q orthogonalized (Gram–Schmidt over its columns, epsilon added to
 *   the norm when non-zero); P = M·Q; all-reduce(P) (sum); orthogonalize
 *   each P; Q = Mᵀ·P; all-reduce(Q) / world_size; M = P·Qᵀ;
 *   residual = (M + old residual) − approximation, for the whole bucket.
 * The future's value is the bucket's new buffer. */
RpcValue *rpc_ddp_powersgd_hook(gpointer state, RpcGradBucket *bucket, GError **error);
/* batched_powerSGD_hook: the whole bucket, zero-padded to side² elements
 * (side = ceil(sqrt(numel))), compressed as one side × side matrix; Q is
 * orthogonalized at every step. */
RpcValue *rpc_ddp_batched_powersgd_hook(gpointer state, RpcGradBucket *bucket, GError **error);

/* --- the reducer ------------------------------------------------------------------------- */

typedef struct RpcDdp RpcDdp;

typedef enum {
    RPC_BUILTIN_COMM_HOOK_ALLREDUCE = 0, /* c10d::BuiltinCommHookType::ALLREDUCE */
    RPC_BUILTIN_COMM_HOOK_FP16_COMPRESS, /* ::FP16_COMPRESS */
} RpcBuiltinCommHookType;

/* DistributedDataParallel over params (leaves; those that do not require
 * grad are left out).  Buckets: the parameters in order, grouped per dtype,
 * a bucket closed once it holds >= bucket_cap_bytes (0: 25 MiB), then the
 * bucket list reversed so that bucket 0 holds the last parameters (their
 * gradients come first in backward), as PyTorch's
 * compute_bucket_assignment_by_size + Reducer.  The parameters' initial
 * values are not broadcast: every member must start from the same ones.
 * RuntimeError "DistributedDataParallel is not needed when a module doesn't
 * have any parameter that requires a gradient." if none does. */
RpcDdp *rpc_ddp_new(RpcProcessGroup *pg, RpcTensor *const *params, guint n_params,
                    gsize bucket_cap_bytes, GError **error);
void rpc_ddp_free(RpcDdp *d);
guint rpc_ddp_n_buckets(const RpcDdp *d);
/* Indices (into the params given to rpc_ddp_new) of bucket i's parameters,
 * in buffer order (transfer none). */
const guint *rpc_ddp_bucket_params(const RpcDdp *d, guint bucket, guint *n);

/* register_comm_hook(state, hook): hook NULL is TypeError
 * RPC_DDP_MSG_NOT_CALLABLE; a second registration of either kind is
 * RuntimeError RPC_DDP_MSG_HOOK_TWICE.  Without a hook the reducer
 * all-reduces the mean (as the allreduce builtin). */
gboolean rpc_ddp_register_comm_hook(RpcDdp *d, gpointer state, RpcCommHookFn hook, GError **error);
/* register_builtin_comm_hook(type): RuntimeError
 * RPC_DDP_MSG_BUILTIN_HOOK_TWICE after any registration. */
gboolean rpc_ddp_register_builtin_comm_hook(RpcDdp *d, RpcBuiltinCommHookType type, GError **error);

/* loss.backward() under DDP: local autograd backward (each bucket's hook
 * runs as soon as its gradients are ready, buckets in index order), then
 * finalize_backward.  Fails with the first hook error, a collective's
 * error, or RuntimeError "Expected to mark a variable ready only once. …"
 * / "Expected to have finished reduction in the prior iteration before
 * starting a new one. …" (a parameter got no gradient).  Blocking. */
gboolean rpc_ddp_backward(RpcDdp *d, RpcAgThread *th, RpcTensor *loss, GError **error);
/* Waits for every bucket's future, parses each result (its numel must be
 * the bucket's) and sets each parameter's .grad to its part, cast to the
 * parameter's dtype. */
gboolean rpc_ddp_finalize_backward(RpcDdp *d, GError **error);
/* optimizer.zero_grad(set_to_none=True) over the parameters. */
void rpc_ddp_zero_grad(RpcDdp *d);
/* SGD without momentum: p -= lr * p.grad (in place, outside autograd). */
void rpc_ddp_sgd_step(RpcDdp *d, double lr);

G_END_DECLS

#endif /* RPC_DDP_H */
