/* ddp-train.c — DistributedDataParallel training of a small MLP, and its
 * one-process reference, as registered functions (see ddp-train.h).
 *
 * The model and the data are functions of the seed only.  One generator
 * (ddp.h's RpcDdpRng, seeded with `seed`) draws, in this order: the
 * teacher a[D_IN]; the initial weights (w1 ~ N(0,1)/√D_IN, b1 ~ 0.1·N,
 * w2 ~ N/√HID, b2 ~ 0.1·N, in flat order); then the samples, one after the
 * other: x ~ N(0,1)^D_IN and y = a·x + 0.1·N.  Sample i is therefore the
 * same whatever the world size; worker k's shard is samples
 * [k·SHARD, (k+1)·SHARD).  The loss of a shard is
 *     mean((relu(X·w1 + b1)·w2 + b2 − y)²)
 * built from the local autograd's operations, so ddp_train and
 * single_train compute every shard's gradient with the same arithmetic.
 *
 * The float64 contract (why single_train equals ddp_train bit for bit).
 * Under the allreduce hook each member divides its bucket buffer by the
 * world size W (one rounding) and the ring sums element i of chunk c as
 * ((g[c+1] + g[c+2]) + …) + g[c] (collective.h), with chunks cut from the
 * *bucket's* buffer; SGD then computes p + g·(−lr).  single_train repeats
 * exactly that: the same bucket assignment (layout_compute mirrors
 * rpc_ddp_new: parameters in order, a bucket closed once it holds >= cap
 * bytes, the list reversed — all parameters are float64), the same chunk
 * bounds, the same order of additions.  Any other summation order would
 * differ in the last bits.
 *
 * Rendezvous.  A chunk for a group its destination has not created yet is
 * buffered only if that worker already has some group; so, as c10d's
 * init_process_group does through its store, every member creates the
 * group and then meets the others before the first collective: it sends
 * its arguments to every other member (an internal function,
 * _ddp_train_join, keyed by the group id) and waits, at most the group's
 * timeout, until it has heard from all — which also checks that they
 * agree.  Keying by group id (rather than using the agent's _all_gather,
 * whose sequence numbers are shared with shutdown) keeps a member that
 * failed before the rendezvous from being mistaken for one in it.
 *
 * Costs: a step sends 2(W−1) ring messages per bucket per all-reduce
 * (PowerSGD: one per compressed stage); single_train runs W backward
 * passes per step; neither blocks anything but the calling thread.
 */
#include "core/ddp-train.h"

#include <math.h>
#include <string.h>

#include "core/agent-internal.h"
#include "core/autograd.h"
#include "core/collective.h"
#include "core/ddp.h"
#include "core/error.h"

#define D_IN     RPC_DDP_TRAIN_D_IN
#define HID      RPC_DDP_TRAIN_HID
#define SHARD    RPC_DDP_TRAIN_SHARD
#define NUMEL    RPC_DDP_TRAIN_NUMEL
#define N_PARAMS 4
#define W1_NUMEL (D_IN * HID)

#define GROUP_SLOT "__rpc_ddp_train_groups" /* ddp_train calls so far on this agent */

/* The parameters in model order: w1 [D_IN, HID], b1 [HID], w2 [HID], b2 [1]. */
static const struct {
    guint ndim;
    gint64 shape[2];
    gint64 offset; /* into the flat weights */
    gint64 numel;
} param_info[N_PARAMS] = {
    {2, {D_IN, HID}, 0, W1_NUMEL},
    {1, {HID, 0}, W1_NUMEL, HID},
    {1, {HID, 0}, W1_NUMEL + HID, HID},
    {1, {1, 0}, W1_NUMEL + 2 * HID, 1},
};

static const RpcTraceKind tk_step = {"ddp.step", {"group", "step", NULL}};

/* --- arguments ------------------------------------------------------------ */

static gboolean
is_number(const RpcValue *v)
{
    return rpc_value_type(v) == RPC_VALUE_INT || rpc_value_type(v) == RPC_VALUE_DOUBLE;
}

static void
set_type_error(GError **error, const char *fn, const char *arg, const char *want, const RpcValue *v)
{
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s(): argument '%s' must be %s, not %s", fn, arg,
                want, rpc_value_type_name(rpc_value_type(v)));
}

/* An int argument in [lo, hi].  An optional one (`required` FALSE) that is
 * omitted (v NULL) or None gives dflt. */
static gboolean
arg_int(const char *fn, const char *arg, const RpcValue *v, gboolean required, gint64 dflt,
        gint64 lo, gint64 hi, gint64 *out, GError **error)
{
    if (v == NULL || (!required && rpc_value_is_none(v))) {
        *out = dflt;
        return TRUE;
    }
    if (rpc_value_type(v) != RPC_VALUE_INT) {
        set_type_error(error, fn, arg, "int", v);
        return FALSE;
    }
    gint64 i = rpc_value_get_int(v);
    if (i < lo || i > hi) {
        if (hi == G_MAXINT64)
            g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "%s(): %s must be at least %" G_GINT64_FORMAT ", got %" G_GINT64_FORMAT, fn,
                        arg, lo, i);
        else
            g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "%s(): %s must be between %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT
                        ", got %" G_GINT64_FORMAT,
                        fn, arg, lo, hi, i);
        return FALSE;
    }
    *out = i;
    return TRUE;
}

/* torch.optim.SGD's check: "Invalid learning rate: -0.1". */
static gboolean
arg_lr(const char *fn, const RpcValue *v, double *out, GError **error)
{
    if (v == NULL || rpc_value_is_none(v)) {
        *out = RPC_DDP_TRAIN_DEFAULT_LR;
        return TRUE;
    }
    if (!is_number(v)) {
        set_type_error(error, fn, "lr", "float", v);
        return FALSE;
    }
    double lr = rpc_value_get_double(v);
    if (!(lr >= 0.0) || isinf(lr)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "Invalid learning rate: %g", lr);
        return FALSE;
    }
    *out = lr;
    return TRUE;
}

/* The world size to use: the argument, or this agent's world. */
static gboolean
arg_world(RpcAgent *self, const char *fn, const RpcValue *v, guint *out, GError **error)
{
    gint64 w;
    if (!arg_int(fn, "world_size", v, FALSE, rpc_agent_world_size(self), 1, RPC_DDP_TRAIN_MAX_WORLD,
                 &w, error))
        return FALSE;
    *out = (guint)w;
    return TRUE;
}

typedef enum {
    HOOK_NONE = 0,
    HOOK_ALLREDUCE,
    HOOK_FP16,
    HOOK_BF16,
    HOOK_FP16_WRAPPER,
    HOOK_BF16_WRAPPER,
    HOOK_POWERSGD,
    HOOK_NOOP,
    N_HOOKS
} HookKind;

static const char *const hook_names[N_HOOKS] = {
    "none", "allreduce", "fp16", "bf16", "fp16_wrapper", "bf16_wrapper", "powersgd", "noop",
};

static gboolean
arg_hook(const RpcValue *v, HookKind *out, GError **error)
{
    if (rpc_value_type(v) != RPC_VALUE_STRING) {
        set_type_error(error, "ddp_train", "hook", "str", v);
        return FALSE;
    }
    const char *s = rpc_value_get_string(v);
    for (guint i = 0; i < N_HOOKS; i++)
        if (strcmp(s, hook_names[i]) == 0) {
            *out = (HookKind)i;
            return TRUE;
        }
    GString *all = g_string_new(NULL);
    for (guint i = 0; i < N_HOOKS; i++)
        g_string_append_printf(all, "%s%s", i ? ", " : "", hook_names[i]);
    g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                "ddp_train(): unknown hook '%s' (expected one of %s)", s, all->str);
    g_string_free(all, TRUE);
    return FALSE;
}

/* --- model and data ------------------------------------------------------- */

typedef struct {
    double init[NUMEL];
    double *x; /* [n_samples * D_IN] */
    double *y; /* [n_samples] */
    gint64 n_samples;
} Data;

static void
data_make(guint64 seed, guint world, Data *d)
{
    RpcDdpRng r;
    rpc_ddp_rng_seed(&r, seed);
    double a[D_IN];
    for (guint j = 0; j < D_IN; j++)
        a[j] = rpc_ddp_rng_normal(&r) / sqrt(D_IN);
    for (gint64 i = 0; i < NUMEL; i++) {
        double z = rpc_ddp_rng_normal(&r);
        if (i < param_info[1].offset)
            d->init[i] = z / sqrt(D_IN);
        else if (i >= param_info[2].offset && i < param_info[3].offset)
            d->init[i] = z / sqrt(HID);
        else
            d->init[i] = 0.1 * z;
    }
    d->n_samples = (gint64)world * SHARD;
    gsize nx = (gsize)d->n_samples * D_IN;
    d->x = g_new(double, nx);
    d->y = g_new(double, d->n_samples);
    for (gint64 s = 0; s < d->n_samples; s++) {
        double dot = 0;
        for (guint j = 0; j < D_IN; j++) {
            d->x[s * D_IN + j] = rpc_ddp_rng_normal(&r);
            dot += a[j] * d->x[s * D_IN + j];
        }
        d->y[s] = dot + 0.1 * rpc_ddp_rng_normal(&r);
    }
}

static void
data_clear(Data *d)
{
    g_free(d->x);
    g_free(d->y);
}

/* The parameters from flat weights (transfer full), as leaves that require
 * grad when `grad`. */
static void
params_new(const double *w, gboolean grad, RpcTensor **p)
{
    for (guint i = 0; i < N_PARAMS; i++) {
        p[i] = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, param_info[i].ndim,
                                           param_info[i].shape, w + param_info[i].offset);
        if (grad)
            rpc_ag_set_requires_grad(p[i], TRUE, NULL);
    }
}

static void
params_free(RpcTensor **p)
{
    for (guint i = 0; i < N_PARAMS; i++)
        rpc_tensor_unref(p[i]);
}

static RpcTensor *
params_flatten(RpcTensor *const *p)
{
    double w[NUMEL];
    for (guint i = 0; i < N_PARAMS; i++)
        for (gint64 e = 0; e < param_info[i].numel; e++)
            w[param_info[i].offset + e] = rpc_tensor_get(p[i], e);
    gint64 n = NUMEL;
    return rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &n, w);
}

/* An operation of the model on operands of the right shapes cannot fail. */
static RpcTensor *
must(RpcTensor *t)
{
    g_assert(t != NULL);
    return t;
}

/* The MSE of samples [first, first + n) (transfer full, a 0-d tensor). */
static RpcTensor *
model_loss(RpcAgThread *th, RpcTensor *const *p, const Data *d, gint64 first, gint64 n)
{
    gint64 sx[2] = {n, D_IN};
    RpcTensor *X = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 2, sx, d->x + first * D_IN);
    RpcTensor *Y = rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &n, d->y + first);
    RpcTensor *a = must(rpc_ag_matmul(th, X, p[0], NULL));
    RpcTensor *b = must(rpc_ag_add(th, a, p[1], NULL));
    RpcTensor *h = must(rpc_ag_relu(th, b, NULL));
    RpcTensor *o = must(rpc_ag_matmul(th, h, p[2], NULL));
    RpcTensor *o2 = must(rpc_ag_add(th, o, p[3], NULL));
    RpcTensor *diff = must(rpc_ag_sub(th, o2, Y, NULL));
    RpcTensor *sq = must(rpc_ag_pow(th, diff, 2.0, NULL));
    RpcTensor *loss = must(rpc_ag_mean(th, sq, NULL));
    RpcTensor *tmp[] = {X, Y, a, b, h, o, o2, diff, sq};
    for (guint i = 0; i < G_N_ELEMENTS(tmp); i++)
        rpc_tensor_unref(tmp[i]);
    return loss;
}

/* --- the reducer's bucket assignment and the ring's order ------------------ */

typedef struct {
    guint n_buckets;
    guint n[N_PARAMS];            /* parameters in bucket b */
    guint of[N_PARAMS][N_PARAMS]; /* their indices, in buffer order */
} Layout;

/* compute_bucket_assignment_by_size as rpc_ddp_new does it, for float64
 * parameters only (so one accumulator), then reversed. */
static void
layout_compute(gsize cap, Layout *l)
{
    Layout fwd = {0};
    gsize size = 0;
    if (cap == 0)
        cap = RPC_DDP_DEFAULT_BUCKET_CAP;
    for (guint i = 0; i < N_PARAMS; i++) {
        guint b = fwd.n_buckets;
        fwd.of[b][fwd.n[b]++] = i;
        size += (gsize)param_info[i].numel * sizeof(double);
        if (size >= cap) {
            fwd.n_buckets++;
            size = 0;
        }
    }
    if (fwd.n_buckets < N_PARAMS && fwd.n[fwd.n_buckets] > 0) /* the unfinished bucket */
        fwd.n_buckets++;
    *l = (Layout){.n_buckets = fwd.n_buckets};
    for (guint b = 0; b < fwd.n_buckets; b++) {
        guint src = fwd.n_buckets - 1 - b;
        l->n[b] = fwd.n[src];
        memcpy(l->of[b], fwd.of[src], sizeof l->of[b]);
    }
}

/* The ring chunk holding element i of a numel-element buffer over n members
 * (rpc_pg_chunk_bounds: the first numel % n chunks one element longer). */
static guint
chunk_of(gint64 numel, guint n, gint64 i)
{
    gint64 base = numel / n, rem = numel % n;
    guint c = i < rem * (base + 1) ? (guint)(i / (base + 1))
                                   : (guint)(rem + (i - rem * (base + 1)) / base);
    gint64 off, len;
    rpc_pg_chunk_bounds(numel, n, c, &off, &len);
    g_assert(i >= off && i < off + len);
    return c;
}

/* Σ_k g[k] for an element of chunk c, in the ring's order. */
static double
ring_sum(const double *g, guint n, guint c)
{
    double acc = g[(c + 1) % n];
    for (guint k = 2; k <= n; k++)
        acc = acc + g[(c + k) % n];
    return acc;
}

/* --- single_train ------------------------------------------------------------ */

static RpcTensor *
reference_train(guint64 seed, gint64 steps, guint world, gsize cap, double lr)
{
    Data d;
    data_make(seed, world, &d);
    Layout l;
    layout_compute(cap, &l);
    RpcAgState *st = rpc_ag_state_new();
    RpcAgThread *th = rpc_ag_thread_new(st);
    double w[NUMEL];
    memcpy(w, d.init, sizeof w);
    double *g = g_new(double, (gsize)NUMEL *world); /* g[k * NUMEL + e]: shard k's grad / W */
    double *col = g_new(double, world);
    for (gint64 step = 0; step < steps; step++) {
        RpcTensor *p[N_PARAMS];
        params_new(w, TRUE, p);
        for (guint k = 0; k < world; k++) {
            for (guint i = 0; i < N_PARAMS; i++)
                rpc_ag_set_grad(p[i], NULL, NULL);
            RpcTensor *loss = model_loss(th, p, &d, (gint64)k * SHARD, SHARD);
            gboolean ok = rpc_ag_backward(th, &loss, NULL, 1, FALSE, FALSE, NULL);
            g_assert(ok);
            rpc_tensor_unref(loss);
            for (guint i = 0; i < N_PARAMS; i++)
                for (gint64 e = 0; e < param_info[i].numel; e++)
                    g[(gsize)k * NUMEL + param_info[i].offset + e] =
                        rpc_tensor_get(rpc_ag_grad(p[i]), e) / (double)world;
        }
        params_free(p);
        for (guint b = 0; b < l.n_buckets; b++) {
            gint64 total = 0, at = 0;
            for (guint j = 0; j < l.n[b]; j++)
                total += param_info[l.of[b][j]].numel;
            for (guint j = 0; j < l.n[b]; j++) {
                guint i = l.of[b][j];
                for (gint64 e = 0; e < param_info[i].numel; e++, at++) {
                    gint64 flat = param_info[i].offset + e;
                    for (guint k = 0; k < world; k++)
                        col[k] = g[(gsize)k * NUMEL + flat];
                    double mean = ring_sum(col, world, chunk_of(total, world, at));
                    w[flat] = w[flat] + mean * -lr;
                }
            }
        }
    }
    g_free(col);
    g_free(g);
    rpc_ag_thread_free(th);
    rpc_ag_state_unref(st);
    data_clear(&d);
    gint64 n = NUMEL;
    return rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT64, 1, &n, w);
}

static RpcValue *
fn_single_train(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"steps",      "seed", "bucket_cap_bytes",
                                        "world_size", "lr",   NULL};
    RpcValue *p[G_N_ELEMENTS(names)] = {0};
    gint64 steps, seed, cap;
    guint world;
    double lr;
    if (!rpc_args_bind("single_train", args, kwargs, names, 2, p, error) ||
        !arg_int("single_train", "steps", p[0], TRUE, 0, 0, RPC_DDP_TRAIN_MAX_STEPS, &steps,
                 error) ||
        !arg_int("single_train", "seed", p[1], TRUE, 0, 0, G_MAXINT64, &seed, error) ||
        !arg_int("single_train", "bucket_cap_bytes", p[2], FALSE, 0, 0, G_MAXINT64, &cap, error) ||
        !arg_world(self, "single_train", p[3], &world, error) ||
        !arg_lr("single_train", p[4], &lr, error))
        return NULL;
    return rpc_value_new_tensor(reference_train((guint64)seed, steps, world, (gsize)cap, lr));
}

/* --- ddp_loss and max_abs_diff ------------------------------------------------ */

static RpcValue *
fn_ddp_loss(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"seed", "weights", "world_size", NULL};
    RpcValue *p[G_N_ELEMENTS(names)] = {0};
    gint64 seed;
    guint world;
    if (!rpc_args_bind("ddp_loss", args, kwargs, names, 1, p, error) ||
        !arg_int("ddp_loss", "seed", p[0], TRUE, 0, 0, G_MAXINT64, &seed, error) ||
        !arg_world(self, "ddp_loss", p[2], &world, error))
        return NULL;
    const RpcValue *wv = p[1];
    if (wv != NULL && !rpc_value_is_none(wv)) {
        if (rpc_value_type(wv) != RPC_VALUE_TENSOR) {
            set_type_error(error, "ddp_loss", "weights", "Tensor", wv);
            return NULL;
        }
        if (rpc_tensor_numel(rpc_value_get_tensor(wv)) != NUMEL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "ddp_loss(): weights must have %d elements, got %" G_GINT64_FORMAT, NUMEL,
                        rpc_tensor_numel(rpc_value_get_tensor(wv)));
            return NULL;
        }
    }
    Data d;
    data_make((guint64)seed, world, &d);
    double w[NUMEL];
    for (gint64 e = 0; e < NUMEL; e++)
        w[e] =
            wv && !rpc_value_is_none(wv) ? rpc_tensor_get(rpc_value_get_tensor(wv), e) : d.init[e];
    RpcAgState *st = rpc_ag_state_new();
    RpcAgThread *th = rpc_ag_thread_new(st);
    RpcTensor *pr[N_PARAMS];
    params_new(w, FALSE, pr);
    RpcTensor *loss = model_loss(th, pr, &d, 0, d.n_samples);
    double v = rpc_tensor_get(loss, 0);
    rpc_tensor_unref(loss);
    params_free(pr);
    rpc_ag_thread_free(th);
    rpc_ag_state_unref(st);
    data_clear(&d);
    return rpc_value_new_double(v);
}

static RpcValue *
fn_max_abs_diff(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"a", "b", NULL};
    RpcValue *p[G_N_ELEMENTS(names)] = {0};
    if (!rpc_args_bind("max_abs_diff", args, kwargs, names, 2, p, error))
        return NULL;
    for (guint i = 0; i < 2; i++)
        if (rpc_value_type(p[i]) != RPC_VALUE_TENSOR) {
            set_type_error(error, "max_abs_diff", names[i], "Tensor", p[i]);
            return NULL;
        }
    const RpcTensor *a = rpc_value_get_tensor(p[0]), *b = rpc_value_get_tensor(p[1]);
    if (!rpc_tensor_same_shape(a, b)) {
        char *sa = rpc_tensor_shape_string(a), *sb = rpc_tensor_shape_string(b);
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "max_abs_diff(): shapes %s and %s differ",
                    sa, sb);
        g_free(sa);
        g_free(sb);
        return NULL;
    }
    double m = 0.0;
    for (gint64 i = 0; i < rpc_tensor_numel(a); i++) {
        double d = fabs(rpc_tensor_get(a, i) - rpc_tensor_get(b, i));
        if (isnan(d))
            return rpc_value_new_double(NAN);
        m = d > m ? d : m;
    }
    return rpc_value_new_double(m);
}

/* --- ddp_train ------------------------------------------------------------------ */

typedef struct {
    HookKind hook;
    gint64 steps, seed, cap, psgd_rank, psgd_start;
    double lr;
    RpcTime pg_timeout;
} TrainArgs;

static gboolean
train_args_parse(const RpcValue *args, const RpcValue *kwargs, TrainArgs *t, RpcValue **agreed,
                 GError **error)
{
    static const char *const names[] = {
        "hook", "steps",      "seed",          "bucket_cap_bytes",
        "lr",   "pg_timeout", "powersgd_rank", "start_powersgd_iter",
        NULL};
    RpcValue *p[G_N_ELEMENTS(names)] = {0};
    if (!rpc_args_bind("ddp_train", args, kwargs, names, 4, p, error) ||
        !arg_hook(p[0], &t->hook, error) ||
        !arg_int("ddp_train", "steps", p[1], TRUE, 0, 0, RPC_DDP_TRAIN_MAX_STEPS, &t->steps,
                 error) ||
        !arg_int("ddp_train", "seed", p[2], TRUE, 0, 0, G_MAXINT64, &t->seed, error) ||
        !arg_int("ddp_train", "bucket_cap_bytes", p[3], TRUE, 0, 0, G_MAXINT64, &t->cap, error) ||
        !arg_lr("ddp_train", p[4], &t->lr, error) ||
        !arg_int("ddp_train", "powersgd_rank", p[6], FALSE, 1, 1, G_MAXINT32, &t->psgd_rank,
                 error) ||
        !arg_int("ddp_train", "start_powersgd_iter", p[7], FALSE, RPC_DDP_TRAIN_PSGD_START,
                 G_MININT64, G_MAXINT64, &t->psgd_start, error))
        return FALSE;
    t->pg_timeout = RPC_PG_DEFAULT_TIMEOUT;
    if (p[5] != NULL && !rpc_value_is_none(p[5])) {
        if (!is_number(p[5])) {
            set_type_error(error, "ddp_train", "pg_timeout", "float", p[5]);
            return FALSE;
        }
        double s = rpc_value_get_double(p[5]);
        if (!(s > 0.0) || s > (double)(G_MAXINT64 / RPC_S)) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "ddp_train(): pg_timeout must be a positive number of seconds, got %g", s);
            return FALSE;
        }
        t->pg_timeout = (RpcTime)llround(s * RPC_S);
    }
    /* What the members compare: every argument, by name. */
    RpcValue *a = rpc_value_new_dict();
    rpc_value_dict_set(a, "hook", rpc_value_new_string(hook_names[t->hook]));
    rpc_value_dict_set(a, "steps", rpc_value_new_int(t->steps));
    rpc_value_dict_set(a, "seed", rpc_value_new_int(t->seed));
    rpc_value_dict_set(a, "bucket_cap_bytes", rpc_value_new_int(t->cap));
    rpc_value_dict_set(a, "lr", rpc_value_new_double(t->lr));
    rpc_value_dict_set(a, "pg_timeout", rpc_value_new_double((double)t->pg_timeout / RPC_S));
    rpc_value_dict_set(a, "powersgd_rank", rpc_value_new_int(t->psgd_rank));
    rpc_value_dict_set(a, "start_powersgd_iter", rpc_value_new_int(t->psgd_start));
    *agreed = a;
    return TRUE;
}

/* The group id of this agent's next ddp_train call. */
static gint64
next_group_id(RpcAgent *self)
{
    RpcValue *v = rpc_agent_slot_get(self, GROUP_SLOT);
    gint64 n = v ? rpc_value_get_int(v) : 0;
    rpc_agent_slot_set(self, GROUP_SLOT, rpc_value_new_int(n + 1));
    return RPC_DDP_TRAIN_GROUP_BASE + n;
}

/* --- the rendezvous ------------------------------------------------------------ */

/* The per-agent table of rendezvous, in the agent's slot RDV_SLOT:
 * group id → Rdv.  An Rdv collects the members' arguments for one
 * ddp_train call; arrivals may come before this member's own call (the
 * entry is created by whichever comes first) and after it gave up (the
 * entry is then retired, and late arrivals are dropped).  Entries are never
 * removed — a retired one costs a few bytes per call — so a pointer to one
 * stays valid as long as a reference to the table is held (ddp_train holds
 * one, because a crash may free the agent while its thread unwinds). */
#define RDV_SLOT  "__rpc_ddp_train_rdv"
#define JOIN_FUNC "_ddp_train_join"

typedef struct {
    gint64 id;
    guint n;         /* members: the world size */
    RpcValue **args; /* by rank; NULL until that member arrived */
    guint arrived;
    RpcFuture *waiter; /* while this member waits: completed when all arrived */
    gboolean retired;
} Rdv;

typedef struct {
    gint ref;
    GHashTable *by_id; /* gint64 id → Rdv* */
} RdvTable;

static void
rdv_free(gpointer p)
{
    Rdv *r = p;
    for (guint k = 0; k < r->n; k++)
        if (r->args[k] != NULL)
            rpc_value_unref(r->args[k]);
    g_free(r->args);
    g_free(r);
}

static gpointer
rdv_table_ref(gpointer p)
{
    ((RdvTable *)p)->ref++;
    return p;
}

static void
rdv_table_unref(gpointer p)
{
    RdvTable *t = p;
    if (--t->ref > 0)
        return;
    g_hash_table_unref(t->by_id);
    g_free(t);
}

static const RpcOpaqueType rdv_table_type = {
    .name = "DdpTrainRendezvous",
    .ref = rdv_table_ref,
    .unref = rdv_table_unref,
};

/* The agent's table (transfer none), created on first use. */
static RdvTable *
rdv_table_of(RpcAgent *a)
{
    RpcValue *v = rpc_agent_slot_get(a, RDV_SLOT);
    if (v != NULL)
        return rpc_value_get_opaque(v, &rdv_table_type);
    RdvTable *t = g_new0(RdvTable, 1);
    t->ref = 1;
    t->by_id = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, rdv_free);
    rpc_agent_slot_set(a, RDV_SLOT, rpc_value_new_opaque(&rdv_table_type, t));
    return t;
}

static Rdv *
rdv_of(RdvTable *t, gint64 id, guint n)
{
    Rdv *r = g_hash_table_lookup(t->by_id, &id);
    if (r == NULL) {
        r = g_new0(Rdv, 1);
        r->id = id;
        r->n = n;
        r->args = g_new0(RpcValue *, n);
        g_hash_table_insert(t->by_id, &r->id, r);
    }
    return r;
}

/* Records member `rank`'s arguments (a reference is taken); a duplicate or
 * a late arrival is dropped. */
static void
rdv_arrive(Rdv *r, guint rank, RpcValue *args)
{
    if (r->retired || r->args[rank] != NULL)
        return;
    r->args[rank] = rpc_value_ref(args);
    if (++r->arrived == r->n && r->waiter != NULL)
        rpc_future_complete_if_needed(r->waiter, rpc_value_none());
}

/* Forgets the arguments; later arrivals are dropped. */
static void
rdv_retire(Rdv *r)
{
    for (guint k = 0; k < r->n; k++)
        g_clear_pointer(&r->args[k], rpc_value_unref);
    r->retired = TRUE;
}

/* _ddp_train_join(group, rank, args) -> None: a member's arrival. */
static RpcValue *
fn_join(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    guint n = rpc_agent_world_size(self);
    gboolean ok = rpc_value_type(args) == RPC_VALUE_LIST && rpc_value_list_len(args) == 3 &&
                  rpc_value_type(rpc_value_list_get(args, 0)) == RPC_VALUE_INT &&
                  rpc_value_type(rpc_value_list_get(args, 1)) == RPC_VALUE_INT &&
                  rpc_value_type(rpc_value_list_get(args, 2)) == RPC_VALUE_DICT;
    gint64 rank = ok ? rpc_value_get_int(rpc_value_list_get(args, 1)) : -1;
    if (!ok || rank < 0 || rank >= n) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "malformed ddp_train rendezvous");
        return NULL;
    }
    Rdv *r = rdv_of(rdv_table_of(self), rpc_value_get_int(rpc_value_list_get(args, 0)), n);
    rdv_arrive(r, (guint)rank, rpc_value_list_get(args, 2));
    return rpc_value_none();
}

static void
complete_none(gpointer data)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
}

/* The first argument (by name) on which two members differ: "seed=8"
 * against "seed=7".  FALSE if they agree. */
static gboolean
first_difference(const RpcValue *theirs, const RpcValue *mine, char **t, char **m)
{
    for (guint i = 0; i < rpc_value_dict_len(mine); i++) {
        const char *key = rpc_value_dict_key_at(mine, i);
        RpcValue *x = rpc_value_dict_get(theirs, key);
        RpcValue *y = rpc_value_dict_value_at(mine, i);
        if (x != NULL && rpc_value_equal(x, y))
            continue;
        char *rx = x ? rpc_value_repr(x) : g_strdup("nothing"), *ry = rpc_value_repr(y);
        *t = g_strdup_printf("%s=%s", key, rx);
        *m = g_strdup_printf("%s=%s", key, ry);
        g_free(rx);
        g_free(ry);
        return TRUE;
    }
    return FALSE;
}

/* c10d's init_process_group rendezvous: tells every other member that this
 * one created group `gid` (sending it `mine`, the arguments), then waits
 * until every member did so, at most `timeout`.  Fails if one did not
 * arrive in time ("Timed out after 50 ms waiting for worker1 (rank 1) to
 * join process group 1003 (3 of 4 members arrived)") or if any was called
 * with other arguments, naming the first such member by rank.  Costs
 * n(n−1) small messages: every member tells every other. */
static gboolean
rendezvous(RpcAgent *self, gint64 gid, guint rank, RpcValue *mine, RpcTime timeout, GError **error)
{
    guint n = rpc_agent_world_size(self);
    RdvTable *table = rdv_table_ref(rdv_table_of(self));
    Rdv *r = rdv_of(table, gid, n);
    gboolean ok = TRUE;
    rdv_arrive(r, rank, mine);
    for (guint k = 0; k < n; k++) {
        if (k == rank)
            continue;
        RpcValue *to = rpc_value_new_int(k);
        RpcValue *args = rpc_value_new_list();
        rpc_value_list_append(args, rpc_value_new_int(gid));
        rpc_value_list_append(args, rpc_value_new_int(rank));
        rpc_value_list_append(args, rpc_value_ref(mine));
        /* A failed send is not an error by itself: that member never hears
         * of this one, and its own wait times out. */
        RpcFuture *f = rpc_async(self, to, JOIN_FUNC, args, NULL, RPC_TIMEOUT_UNSET, NULL);
        if (f != NULL)
            rpc_future_unref(f);
        rpc_value_unref(to);
    }
    if (r->arrived < n) {
        RpcExecutor *ex = rpc_agent_executor(self);
        r->waiter = rpc_future_new(ex);
        rpc_future_set_description(r->waiter, "ddp_train: every member to join the group");
        guint64 timer =
            rpc_executor_call_after(ex, timeout, complete_none, rpc_future_ref(r->waiter),
                                    (GDestroyNotify)rpc_future_unref);
        ok = rpc_executor_block_on(ex, r->waiter, error);
        rpc_executor_cancel(ex, timer);
        g_clear_pointer(&r->waiter, rpc_future_unref);
    }
    for (guint k = 0; ok && k < n; k++) {
        if (r->args[k] == NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Timed out after %" G_GINT64_FORMAT
                        " ms waiting for %s (rank %u) to join process group %" G_GINT64_FORMAT
                        " (%u of %u members arrived)",
                        timeout / RPC_MS, rpc_agent_worker_name(self, (gint)k), k, gid, r->arrived,
                        n);
            ok = FALSE;
        }
    }
    for (guint k = 0; ok && k < n; k++) {
        char *t, *m;
        if (first_difference(r->args[k], mine, &t, &m)) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "ddp_train(): every member must be called with the same arguments, but "
                        "%s passed %s where %s passed %s",
                        rpc_agent_worker_name(self, (gint)k), t, rpc_agent_name(self), m);
            g_free(t);
            g_free(m);
            ok = FALSE;
        }
    }
    rdv_retire(r);
    rdv_table_unref(table);
    rpc_value_unref(mine);
    return ok;
}

static const RpcCommHookFn hook_fns[N_HOOKS] = {
    [HOOK_NONE] = NULL,
    [HOOK_ALLREDUCE] = rpc_ddp_allreduce_hook,
    [HOOK_FP16] = rpc_ddp_fp16_compress_hook,
    [HOOK_BF16] = rpc_ddp_bf16_compress_hook,
    [HOOK_FP16_WRAPPER] = rpc_ddp_fp16_compress_wrapper_hook,
    [HOOK_BF16_WRAPPER] = rpc_ddp_bf16_compress_wrapper_hook,
    [HOOK_POWERSGD] = rpc_ddp_powersgd_hook,
    [HOOK_NOOP] = rpc_ddp_noop_hook,
};

static RpcValue *
fn_ddp_train(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    TrainArgs t;
    RpcValue *agreed = NULL, *result = NULL;
    if (!train_args_parse(args, kwargs, &t, &agreed, error))
        return NULL;
    gint64 gid = next_group_id(self);
    RpcProcessGroup *pg = rpc_pg_new(self, gid, NULL, 0, error);
    if (pg == NULL) {
        rpc_value_unref(agreed);
        return NULL;
    }
    rpc_pg_set_timeout(pg, t.pg_timeout);
    if (!rendezvous(self, gid, rpc_pg_rank(pg), agreed, t.pg_timeout, error)) {
        rpc_pg_free(pg);
        return NULL;
    }

    guint rank = rpc_pg_rank(pg);
    Data d;
    data_make((guint64)t.seed, rpc_pg_size(pg), &d);
    RpcAgState *st = rpc_ag_state_new();
    RpcAgThread *th = rpc_ag_thread_new(st);
    RpcTensor *p[N_PARAMS];
    params_new(d.init, TRUE, p);
    RpcPowerSGDState *psgd = NULL;
    RpcCompressWrapper wrap = {rpc_ddp_allreduce_hook, pg};
    gpointer state = pg;
    if (t.hook == HOOK_FP16_WRAPPER || t.hook == HOOK_BF16_WRAPPER)
        state = &wrap;
    if (t.hook == HOOK_POWERSGD) {
        RpcPowerSGDConfig cfg;
        rpc_powersgd_config_init(&cfg);
        cfg.matrix_approximation_rank = (guint)t.psgd_rank;
        cfg.start_powerSGD_iter = t.psgd_start;
        psgd = rpc_powersgd_state_new(pg, &cfg, error);
        if (psgd == NULL)
            goto free_model;
        state = psgd;
    }
    /* The parameters all require grad, so the reducer cannot refuse them. */
    RpcDdp *ddp = rpc_ddp_new(pg, p, N_PARAMS, (gsize)t.cap, NULL);
    g_assert(ddp != NULL);
    if (hook_fns[t.hook] != NULL)
        rpc_ddp_register_comm_hook(ddp, state, hook_fns[t.hook], NULL);
    RpcExecutor *ex = rpc_agent_executor(self);
    for (gint64 step = 0; step < t.steps; step++) {
        rpc_ddp_zero_grad(ddp);
        RpcTensor *loss = model_loss(th, p, &d, (gint64)rank * SHARD, SHARD);
        char *detail = g_strdup_printf("loss=%.17g", rpc_tensor_get(loss, 0));
        rpc_executor_trace(ex, &tk_step, gid, step, 0, detail);
        g_free(detail);
        gboolean ok = rpc_ddp_backward(ddp, th, loss, error);
        rpc_tensor_unref(loss);
        if (!ok)
            goto free_ddp;
        rpc_ddp_sgd_step(ddp, t.lr);
    }
    result = rpc_value_new_tensor(params_flatten(p));
free_ddp:
    rpc_ddp_free(ddp);
free_model:
    /* The group goes before the PowerSGD state: freeing it fails what is
     * still pending, and those callbacks may read the state. */
    rpc_pg_free(pg);
    rpc_powersgd_state_free(psgd);
    params_free(p);
    rpc_ag_thread_free(th);
    rpc_ag_state_unref(st);
    data_clear(&d);
    return result;
}

/* --- registration ------------------------------------------------------------------ */

static const RpcFunctionDef ddp_train_defs[] = {
    {"ddp_train", NULL, fn_ddp_train, 0, 0, -1,
     "DDP training on every worker: ddp_train(hook, steps, seed, bucket_cap_bytes) -> weights"},
    {"single_train", NULL, fn_single_train, 0, 0, -1,
     "the one-process reference of ddp_train(\"allreduce\", …): single_train(steps, seed)"},
    {"ddp_loss", NULL, fn_ddp_loss, 0, 0, -1,
     "the model's loss over the whole data set: ddp_loss(seed, weights=None)"},
    {"max_abs_diff", NULL, fn_max_abs_diff, 0, 0, -1, "max |a - b| over two tensors of one shape"},
    {JOIN_FUNC, NULL, fn_join, RPC_FUNC_INTERNAL, 3, 3,
     "a member's arrival at ddp_train's rendezvous"},
};

void
rpc_ddp_train_register(RpcRegistry *reg)
{
    for (gsize i = 0; i < G_N_ELEMENTS(ddp_train_defs); i++)
        rpc_registry_add(reg, &ddp_train_defs[i]);
}
