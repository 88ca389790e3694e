/* scenario-run.c — the scenario interpreter.
 *
 * One run = one SimWorld built from the scenario's world/network/faults
 * sections, one driver thread per worker that runs that worker's programs
 * concurrently and then (unless `shutdown none`) shuts RPC down gracefully,
 * the kernel run until idle, deadlock or the time limit, then the end
 * expectations.  Everything observable goes through the world's trace, so
 * the fingerprint covers the programs too (print, expectations).
 *
 * Failures are collected as "file:line:col: workerN: message"; a program
 * stops at its first failure.  When the world is torn down at the end,
 * threads still blocked unwind with teardown errors that are not failures
 * (the deadlock, if unexpected, already is one).
 *
 * Autograd: the autograd built-ins and `+ - * /` on tensors that require
 * grad run on the calling virtual thread's autograd context of the worker
 * (rpc_dist_autograd_thread), so local ops, builtins served for peers and
 * dist autograd's send/recv functions build one graph.  A `dist_autograd`
 * block's context is released on every way out of the block, except when
 * the worker itself went down with it.
 */
#include "sim/scenario.h"

#include <math.h>
#include <string.h>

#include "core/agent.h"
#include "core/autograd.h"
#include "core/dist-autograd.h"
#include "core/rref.h"
#include "core/stdlib.h"
#include "core/tensor.h"
#include "sim/error.h"
#include "sim/world.h"

typedef struct Run Run;

typedef struct {
    gint refcount;
    Run *run;
    guint worker;
    GHashTable *env; /* name → RpcValue* */
    gboolean stopped;
    gboolean shut_down; /* the program ran `shutdown` itself */
} Env;

struct Run {
    const ScScenario *sc;
    SimWorld *w;
    SimKernel *k;
    GPtrArray *failures; /* char* */
    GPtrArray *futures;  /* RpcFuture* made by programs, for futures_resolved */
    GPtrArray *triggers; /* Trigger* */
    FILE *log_out;
    gboolean tearing_down;
    guint64 crashes, restarts, pauses, partitions;
};

typedef struct {
    Run *run;
    const ScTimedFault *f;
    guint seen;
} Trigger;

static const RpcTraceKind tk_print = {"scenario.print", {NULL, NULL, NULL}};
static const RpcTraceKind tk_fail = {"scenario.failure", {"line", "col", NULL}};
static const RpcTraceKind tk_action = {"scenario.action", {"line", NULL, NULL}};

void
sim_run_options_init(SimRunOptions *opt, guint64 seed)
{
    memset(opt, 0, sizeof *opt);
    opt->seed = seed;
    opt->trace_format = SIM_TRACE_FORMAT_TEXT;
}

void
sim_run_report_free(SimRunReport *r)
{
    if (r == NULL)
        return;
    g_ptr_array_unref(r->fired);
    g_ptr_array_unref(r->failures);
    if (r->lines)
        g_ptr_array_unref(r->lines);
    g_free(r->deadlock);
    g_free(r);
}

/* --- failures ------------------------------------------------------------- */

static void fail_at(Run *run, ScLoc loc, gint worker, const char *fmt, ...) G_GNUC_PRINTF(4, 5);

static void
fail_at(Run *run, ScLoc loc, gint worker, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *line = worker >= 0
                     ? g_strdup_printf("%s:%u:%u: %s: %s", run->sc->path, loc.line, loc.col,
                                       sim_world_worker_name(run->w, worker), msg)
                     : g_strdup_printf("%s:%u:%u: %s", run->sc->path, loc.line, loc.col, msg);
    sim_kernel_trace_emit(run->k, worker, &tk_fail, loc.line, loc.col, 0, msg);
    g_ptr_array_add(run->failures, line);
    g_free(msg);
}

/* Errors raised because the run is ending are not the program's fault. */
static gboolean
is_teardown(const GError *e)
{
    return e->domain == SIM_ERROR && e->code == SIM_ERROR_TEARDOWN;
}

static const char *
error_kind_name(const GError *e)
{
    if (e->domain == RPC_ERROR)
        return rpc_error_kind_name((RpcErrorKind)e->code);
    if (e->domain == SIM_ERROR)
        return e->code == SIM_ERROR_DEADLOCK ? "DeadlockError" : "SimulationError";
    return "RuntimeError";
}

static void
fail_error(Env *env, ScLoc loc, const GError *e)
{
    if (env->run->tearing_down || is_teardown(e) || !sim_world_is_alive(env->run->w, env->worker))
        return;
    fail_at(env->run, loc, (gint)env->worker, "%s: %s", error_kind_name(e), e->message);
}

/* --- environment ---------------------------------------------------------- */

static Env *
env_new(Run *run, guint worker)
{
    Env *e = g_new0(Env, 1);
    e->refcount = 1;
    e->run = run;
    e->worker = worker;
    e->env =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)rpc_value_unref);
    return e;
}

static Env *
env_ref(Env *e)
{
    e->refcount++;
    return e;
}

static void
env_unref(gpointer p)
{
    Env *e = p;
    if (--e->refcount > 0)
        return;
    g_hash_table_unref(e->env);
    g_free(e);
}

static RpcAgent *
agent_of(Env *env, GError **error)
{
    RpcAgent *a = sim_world_agent(env->run->w, env->worker);
    if (a == NULL || !rpc_agent_is_running(a)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        return NULL;
    }
    return a;
}

static RpcExecutor *
ex_of(Env *env)
{
    return sim_world_executor(env->run->w, env->worker);
}

/* --- evaluation -------------------------------------------------------------- */

static RpcValue *eval(Env *env, const ScExpr *e, GError **error);

static gboolean
truthy(const RpcValue *v, gboolean *out, GError **error)
{
    switch (rpc_value_type(v)) {
    case RPC_VALUE_NONE:
        *out = FALSE;
        return TRUE;
    case RPC_VALUE_BOOL:
        *out = rpc_value_get_bool(v);
        return TRUE;
    case RPC_VALUE_INT:
        *out = rpc_value_get_int(v) != 0;
        return TRUE;
    case RPC_VALUE_DOUBLE:
        *out = rpc_value_get_double(v) != 0.0;
        return TRUE;
    case RPC_VALUE_STRING:
        *out = rpc_value_get_string(v)[0] != '\0';
        return TRUE;
    case RPC_VALUE_LIST:
        *out = rpc_value_list_len(v) > 0;
        return TRUE;
    case RPC_VALUE_TENSOR: {
        double d;
        if (!rpc_tensor_item(rpc_value_get_tensor(v), &d, NULL)) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "Boolean value of Tensor with more than one value is ambiguous");
            return FALSE;
        }
        *out = d != 0.0;
        return TRUE;
    }
    default:
        *out = TRUE;
        return TRUE;
    }
}

static gboolean
as_number(const RpcValue *v, double *out, const char *what, GError **error)
{
    RpcValueType t = rpc_value_type(v);
    if (t == RPC_VALUE_INT || t == RPC_VALUE_DOUBLE) {
        *out = rpc_value_get_double(v);
        return TRUE;
    }
    if (t == RPC_VALUE_BOOL) {
        *out = rpc_value_get_bool(v);
        return TRUE;
    }
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s must be a number, not %s", what,
                rpc_value_type_name(t));
    return FALSE;
}

/* A duration operand: a duration literal in ns, or a number of seconds. */
static gboolean
eval_duration(Env *env, const ScExpr *e, SimTime *out, GError **error)
{
    if (e->kind == SC_EXPR_DURATION) {
        *out = e->u.i;
        return TRUE;
    }
    RpcValue *v = eval(env, e, error);
    if (v == NULL)
        return FALSE;
    double s;
    gboolean ok = as_number(v, &s, "a duration", error);
    rpc_value_unref(v);
    if (!ok)
        return FALSE;
    if (s < 0 || !isfinite(s) || s > 1e9) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "invalid duration %g s", s);
        return FALSE;
    }
    *out = (SimTime)llround(s * SIM_S);
    return TRUE;
}

static gboolean
as_future(const RpcValue *v, RpcFuture **out, const char *what, GError **error)
{
    if (rpc_value_type(v) != RPC_VALUE_FUTURE) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s expects a Future, not %s", what,
                    rpc_value_type_name(rpc_value_type(v)));
        return FALSE;
    }
    *out = rpc_value_get_future(v);
    return TRUE;
}

static RpcValue *
track_future(Env *env, RpcFuture *f)
{
    g_ptr_array_add(env->run->futures, rpc_future_ref(f));
    RpcValue *v = rpc_value_new_future(f);
    rpc_future_unref(f);
    return v;
}

/* Evaluates args[from..] into a list (transfer full). */
static RpcValue *
eval_list(Env *env, GPtrArray *exprs, guint from, GError **error)
{
    RpcValue *list = rpc_value_new_list();
    for (guint i = from; exprs && i < exprs->len; i++) {
        RpcValue *v = eval(env, g_ptr_array_index(exprs, i), error);
        if (v == NULL) {
            rpc_value_unref(list);
            return NULL;
        }
        rpc_value_list_append(list, v);
    }
    return list;
}

/* The futures of f(a, b) or f([a, b]) (transfer full array of refs). */
static GPtrArray *
eval_futures(Env *env, const ScExpr *e, GError **error)
{
    RpcValue *args = eval_list(env, e->u.call.args, 0, error);
    if (args == NULL)
        return NULL;
    const RpcValue *src = args;
    if (rpc_value_list_len(args) == 1 &&
        rpc_value_type(rpc_value_list_get(args, 0)) == RPC_VALUE_LIST)
        src = rpc_value_list_get(args, 0);
    GPtrArray *futs = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
    for (guint i = 0; i < rpc_value_list_len(src); i++) {
        RpcFuture *f;
        if (!as_future(rpc_value_list_get(src, i), &f, e->u.call.name, error)) {
            g_ptr_array_unref(futs);
            rpc_value_unref(args);
            return NULL;
        }
        g_ptr_array_add(futs, rpc_future_ref(f));
    }
    rpc_value_unref(args);
    return futs;
}

typedef enum { CALL_SYNC, CALL_ASYNC, CALL_REMOTE } CallMode;

static RpcValue *
eval_rpc(Env *env, const ScExpr *e, CallMode mode, GError **error)
{
    RpcAgent *a = agent_of(env, error);
    if (a == NULL)
        return NULL;
    GPtrArray *args = e->u.call.args;
    const ScExpr *fexpr = g_ptr_array_index(args, 1);
    const char *func = fexpr->kind == SC_EXPR_NAME ? fexpr->u.name.name : NULL;
    if (func == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, "function should be callable.");
        return NULL;
    }
    RpcValue *to = eval(env, g_ptr_array_index(args, 0), error);
    if (to == NULL)
        return NULL;
    RpcValue *pos = eval_list(env, args, 2, error);
    RpcValue *kw = rpc_value_new_dict();
    RpcTime timeout = RPC_TIMEOUT_UNSET;
    gboolean ok = pos != NULL;
    for (guint i = 0; ok && e->u.call.kwargs && i < e->u.call.kwargs->len; i++) {
        const ScKwarg *k = g_ptr_array_index(e->u.call.kwargs, i);
        if (strcmp(k->name, "timeout") == 0) {
            ok = eval_duration(env, k->value, &timeout, error);
        } else {
            RpcValue *v = eval(env, k->value, error);
            ok = v != NULL;
            if (ok)
                rpc_value_dict_set(kw, k->name, v);
        }
    }
    RpcValue *result = NULL;
    if (ok) {
        if (rpc_value_dict_len(kw) == 0) {
            rpc_value_unref(kw);
            kw = NULL;
        }
        if (mode == CALL_SYNC) {
            result = rpc_sync(a, to, func, pos, kw, timeout, error);
        } else if (mode == CALL_ASYNC) {
            RpcFuture *f = rpc_async(a, to, func, pos, kw, timeout, error);
            result = f ? track_future(env, f) : NULL;
        } else {
            result = rpc_remote(a, to, func, pos, kw, timeout, error);
        }
        pos = kw = NULL;
    }
    rpc_value_unref(pos);
    rpc_value_unref(kw);
    rpc_value_unref(to);
    return result;
}

static gboolean
eval_dims(Env *env, GPtrArray *args, guint from, gint64 *shape, guint *ndim, GError **error)
{
    *ndim = 0;
    for (guint i = from; args && i < args->len; i++) {
        RpcValue *v = eval(env, g_ptr_array_index(args, i), error);
        if (v == NULL)
            return FALSE;
        gboolean ok = rpc_value_type(v) == RPC_VALUE_INT && rpc_value_get_int(v) >= 0 &&
                      *ndim < RPC_TENSOR_MAX_DIMS;
        if (ok)
            shape[(*ndim)++] = rpc_value_get_int(v);
        rpc_value_unref(v);
        if (!ok) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                                "tensor dimensions must be non-negative ints");
            return FALSE;
        }
    }
    return TRUE;
}

/* Flattens nested lists of numbers into values/shape for tensor([...]). */
static gboolean
flatten(const RpcValue *v, guint depth, gint64 *shape, guint *ndim, GArray *out, GError **error)
{
    if (rpc_value_type(v) != RPC_VALUE_LIST) {
        double d;
        if (!as_number(v, &d, "a tensor element", error))
            return FALSE;
        if (depth != *ndim) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "ragged nested sequence");
            return FALSE;
        }
        g_array_append_val(out, d);
        return TRUE;
    }
    if (depth >= RPC_TENSOR_MAX_DIMS) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "too many dimensions");
        return FALSE;
    }
    guint n = rpc_value_list_len(v);
    if (depth == *ndim) {
        shape[(*ndim)++] = n;
    } else if (shape[depth] != n) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE,
                            "expected sequence of equal length at each dimension");
        return FALSE;
    }
    for (guint i = 0; i < n; i++)
        if (!flatten(rpc_value_list_get(v, i), depth + 1, shape, ndim, out, error))
            return FALSE;
    return TRUE;
}

static RpcValue *
eval_tensor_literal(Env *env, const ScExpr *e, GError **error)
{
    RpcValue *v = eval(env, g_ptr_array_index(e->u.call.args, 0), error);
    if (v == NULL)
        return NULL;
    gint64 shape[RPC_TENSOR_MAX_DIMS];
    guint ndim = 0;
    GArray *vals = g_array_new(FALSE, FALSE, sizeof(double));
    RpcValue *r = NULL;
    if (flatten(v, 0, shape, &ndim, vals, error))
        r = rpc_value_new_tensor(
            rpc_tensor_new_from_doubles(RPC_DTYPE_FLOAT32, ndim, shape, (double *)vals->data));
    g_array_unref(vals);
    rpc_value_unref(v);
    return r;
}

/* An agent counter or an RRef debug count by name; -1 if unknown. */
static gint64
counter_value(RpcAgent *a, const char *cn)
{
    RpcAgentCounters c;
    RpcRRefDebugInfo d;
    rpc_agent_get_counters(a, &c);
    rpc_rref_debug_info(a, &d);
#define C(s, field)                                                                                \
    if (strcmp(cn, #field) == 0)                                                                   \
        return (gint64)s.field;
    C(c, client_active_calls)
    C(c, server_active_calls)
    C(c, server_active_async_calls)
    C(c, requests_sent)
    C(c, responses_received)
    C(c, requests_served)
    C(c, timeouts)
    C(c, late_responses)
    C(c, decode_errors)
    C(d, num_owner_rrefs)
    C(d, num_pending_futures)
    C(d, num_pending_users)
    C(d, num_forks)
    C(d, num_pending_children)
    C(d, num_confirmed_users)
    RpcDistAutogradDebugInfo g;
    rpc_dist_autograd_debug_info(a, &g);
    C(g, num_autograd_contexts)
    C(g, num_current_backward_passes)
#undef C
    return -1;
}

/* --- autograd ------------------------------------------------------------------ */
/* Local ops run through core/autograd.h with the calling thread's context
 * (rpc_dist_autograd_thread: grad mode, sequence numbers of this worker), the
 * same one the worker's RPC threads use, so one graph may mix local ops,
 * ops served for peers and dist autograd's send/recv functions.  Only the
 * worker's agent is needed, not a running RPC agent: local autograd works
 * after `shutdown` as it does in PyTorch. */

static RpcAgThread *
ag_thread(Env *env, GError **error)
{
    RpcAgent *a = sim_world_agent(env->run->w, env->worker);
    if (a == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        return NULL;
    }
    return rpc_dist_autograd_thread(a);
}

static gboolean
is_grad_tensor(const RpcValue *v)
{
    return rpc_value_type(v) == RPC_VALUE_TENSOR && rpc_ag_requires_grad(rpc_value_get_tensor(v));
}

/* The tensor of argument i of a call (transfer none, valid while v lives). */
static RpcTensor *
tensor_arg(const RpcValue *v, const char *fname, guint i, GError **error)
{
    if (rpc_value_type(v) == RPC_VALUE_TENSOR)
        return rpc_value_get_tensor(v);
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s(): argument %u must be Tensor, not %s", fname,
                i, rpc_value_type_name(rpc_value_type(v)));
    return NULL;
}

static RpcValue *
tensor_result(RpcTensor *t)
{
    return t != NULL ? rpc_value_new_tensor(t) : NULL;
}

/* a OP b where a tensor operand requires grad: the autograd op, with the
 * stdlib's conversions (a Python number becomes a 0-d tensor of the other
 * operand's dtype), so a local computation gives bit for bit what the same
 * builtin computes when a peer serves it. */
static RpcValue *
ag_arith(Env *env, ScBinOp op, const RpcValue *a, const RpcValue *b, GError **error)
{
    gboolean ta = rpc_value_type(a) == RPC_VALUE_TENSOR;
    gboolean tb = rpc_value_type(b) == RPC_VALUE_TENSOR;
    RpcValueType na = rpc_value_type(a), nb = rpc_value_type(b);
    gboolean num_a = na == RPC_VALUE_INT || na == RPC_VALUE_DOUBLE || na == RPC_VALUE_BOOL;
    gboolean num_b = nb == RPC_VALUE_INT || nb == RPC_VALUE_DOUBLE || nb == RPC_VALUE_BOOL;
    if ((!ta && !num_a) || (!tb && !num_b)) /* the stdlib's TypeError text */
        return rpc_stdlib_arith((int)op - SC_OP_ADD, a, b, error);
    RpcAgThread *th = ag_thread(env, error);
    if (th == NULL)
        return NULL;
    RpcTensor *x, *y;
    if (ta) {
        x = rpc_tensor_ref(rpc_value_get_tensor(a));
    } else {
        double d;
        as_number(a, &d, "an operand", NULL);
        x = rpc_tensor_new_scalar(rpc_tensor_dtype(rpc_value_get_tensor(b)), d);
    }
    if (tb) {
        y = rpc_tensor_ref(rpc_value_get_tensor(b));
    } else {
        double d;
        as_number(b, &d, "an operand", NULL);
        y = rpc_tensor_new_scalar(rpc_tensor_dtype(x), d);
    }
    RpcTensor *r;
    switch (op) {
    case SC_OP_ADD:
        r = rpc_ag_add(th, x, y, error);
        break;
    case SC_OP_SUB:
        r = rpc_ag_sub(th, x, y, error);
        break;
    case SC_OP_MUL:
        r = rpc_ag_mul(th, x, y, error);
        break;
    default:
        r = rpc_ag_div(th, x, y, error);
        break;
    }
    rpc_tensor_unref(x);
    rpc_tensor_unref(y);
    return tensor_result(r);
}

/* A backward pass's roots: one tensor or a list of tensors (transfer
 * container; the tensors belong to v).  NULL without error for None (the
 * dist engine's TypeError). */
static GPtrArray *
roots_of(const RpcValue *v, const char *fname, GError **error)
{
    if (rpc_value_is_none(v))
        return NULL;
    GPtrArray *roots = g_ptr_array_new();
    if (rpc_value_type(v) == RPC_VALUE_TENSOR) {
        g_ptr_array_add(roots, rpc_value_get_tensor(v));
        return roots;
    }
    if (rpc_value_type(v) == RPC_VALUE_LIST) {
        for (guint i = 0; i < rpc_value_list_len(v); i++) {
            const RpcValue *x = rpc_value_list_get(v, i);
            if (rpc_value_type(x) != RPC_VALUE_TENSOR) {
                g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "%s(): element %u of the roots must be Tensor, not %s", fname, i,
                            rpc_value_type_name(rpc_value_type(x)));
                g_ptr_array_unref(roots);
                return NULL;
            }
            g_ptr_array_add(roots, rpc_value_get_tensor(x));
        }
        return roots;
    }
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                "%s(): the roots must be a Tensor or a list, not %s", fname,
                rpc_value_type_name(rpc_value_type(v)));
    g_ptr_array_unref(roots);
    return NULL;
}

/* retain=… of backward()/dist_backward(), default False. */
static gboolean
eval_retain(Env *env, const ScExpr *e, gboolean *retain, GError **error)
{
    *retain = FALSE;
    for (guint i = 0; e->u.call.kwargs && i < e->u.call.kwargs->len; i++) {
        const ScKwarg *k = g_ptr_array_index(e->u.call.kwargs, i);
        RpcValue *v = eval(env, k->value, error);
        if (v == NULL)
            return FALSE;
        gboolean ok = truthy(v, retain, error);
        rpc_value_unref(v);
        if (!ok)
            return FALSE;
    }
    return TRUE;
}

/* A context id argument: an int. */
static gboolean
ctx_id_of(const RpcValue *v, const char *fname, gint64 *out, GError **error)
{
    if (rpc_value_type(v) != RPC_VALUE_INT) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s(): the context id must be an int, not %s",
                    fname, rpc_value_type_name(rpc_value_type(v)));
        return FALSE;
    }
    *out = rpc_value_get_int(v);
    return TRUE;
}

/* Built-ins of the autograd family; *handled FALSE for any other name. */
static RpcValue *
eval_autograd_call(Env *env, const ScExpr *e, gboolean *handled, GError **error)
{
    const char *const *names = sim_scenario_autograd_builtin_names();
    const char *n = e->u.call.name;
    gboolean known = FALSE;
    for (guint i = 0; names[i] != NULL && !known; i++)
        known = strcmp(names[i], n) == 0;
    *handled = known;
    if (!known)
        return NULL;
    RpcValue *args = eval_list(env, e->u.call.args, 0, error);
    if (args == NULL)
        return NULL;
    const guint nargs = rpc_value_list_len(args);
    const RpcValue *a0 = rpc_value_list_get(args, 0);
    const RpcValue *a1 = nargs > 1 ? rpc_value_list_get(args, 1) : NULL;
    RpcValue *r = NULL;
    RpcAgent *agent = NULL;
    RpcAgThread *th = NULL;
    RpcTensor *t = NULL, *u = NULL;

    if (strcmp(n, "requires_grad") == 0) {
        if ((t = tensor_arg(a0, n, 0, error)) != NULL)
            r = rpc_value_new_bool(rpc_ag_requires_grad(t));
    } else if (strcmp(n, "param") == 0) {
        /* a fresh leaf (its own storage) that requires grad */
        if ((t = tensor_arg(a0, n, 0, error)) != NULL) {
            RpcTensor *leaf = rpc_tensor_cast(t, rpc_tensor_dtype(t));
            rpc_ag_set_requires_grad(leaf, TRUE, NULL);
            r = rpc_value_new_tensor(leaf);
        }
    } else if (strcmp(n, "detach") == 0) {
        if ((t = tensor_arg(a0, n, 0, error)) != NULL)
            r = rpc_value_new_tensor(rpc_ag_detach(t));
    } else if (strcmp(n, "grad") == 0) {
        /* a snapshot: .grad itself is summed into in place by later passes */
        if ((t = tensor_arg(a0, n, 0, error)) != NULL) {
            RpcTensor *g = rpc_ag_grad(t);
            r = g != NULL ? rpc_value_new_tensor(rpc_tensor_cast(g, rpc_tensor_dtype(g)))
                          : rpc_value_none();
        }
    } else if (strcmp(n, "backward") == 0) {
        gboolean retain;
        GPtrArray *roots = NULL;
        if (eval_retain(env, e, &retain, error) && (th = ag_thread(env, error)) != NULL) {
            roots = roots_of(a0, n, error);
            if (roots == NULL && rpc_value_is_none(a0))
                g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                                    "backward(): the roots must be a Tensor or a list, not None");
        }
        if (roots != NULL && rpc_ag_backward(th, (RpcTensor *const *)roots->pdata, NULL, roots->len,
                                             retain, FALSE, error))
            r = rpc_value_none();
        if (roots != NULL)
            g_ptr_array_unref(roots);
    } else if (strcmp(n, "set_simulate_backward_error") == 0) {
        gboolean on;
        if ((agent = sim_world_agent(env->run->w, env->worker)) == NULL)
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        else if (truthy(a0, &on, error)) {
            rpc_dist_autograd_set_simulate_error(agent, on);
            r = rpc_value_none();
        }
    } else if (strncmp(n, "dist_", 5) == 0) {
        gint64 id;
        gboolean retain = FALSE;
        if (!ctx_id_of(a0, n, &id, error))
            goto out;
        if (strcmp(n, "dist_sgd_step") == 0) {
            /* DistributedOptimizer(optim.SGD, params, lr=lr).step(id): plain
             * SGD keeps no state, so one optimizer per step is the same */
            double lr;
            const RpcValue *params = a1;
            if ((agent = agent_of(env, error)) == NULL ||
                !as_number(rpc_value_list_get(args, 2), &lr, "dist_sgd_step()'s lr", error))
                goto out;
            if (rpc_value_type(params) != RPC_VALUE_LIST) {
                g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "dist_sgd_step(): params must be a list of RRefs, not %s",
                            rpc_value_type_name(rpc_value_type(params)));
                goto out;
            }
            RpcDistOptimizer *opt = rpc_dist_optimizer_new_sgd(agent, params, lr, error);
            if (opt != NULL && rpc_dist_optimizer_step(opt, id, error))
                r = rpc_value_none();
            rpc_dist_optimizer_free(opt);
            goto out;
        }
        if (strcmp(n, "dist_backward") == 0) {
            /* the pass sends gradients: RPC must be up */
            if (!eval_retain(env, e, &retain, error) || (agent = agent_of(env, error)) == NULL)
                goto out;
            GError *err = NULL;
            GPtrArray *roots = roots_of(a1, n, &err);
            if (err != NULL) {
                g_propagate_error(error, err);
                goto out;
            }
            /* an empty list is no roots, not None (an empty array's pdata is NULL) */
            RpcTensor *no_roots[1] = {NULL};
            RpcTensor *const *rv = roots == NULL     ? NULL
                                   : roots->len == 0 ? no_roots
                                                     : (RpcTensor *const *)roots->pdata;
            if (rpc_dist_autograd_backward(agent, id, rv, roots ? roots->len : 0, retain, error))
                r = rpc_value_none();
            if (roots != NULL)
                g_ptr_array_unref(roots);
            goto out;
        }
        /* reading this worker's part of a context needs only its container */
        if ((agent = sim_world_agent(env->run->w, env->worker)) == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
            goto out;
        }
        if (strcmp(n, "dist_grad") == 0) {
            if ((t = tensor_arg(a1, n, 1, error)) == NULL)
                goto out;
            GError *err = NULL;
            RpcTensor *g = rpc_dist_autograd_get_gradient(agent, id, t, &err);
            if (err != NULL)
                g_propagate_error(error, err);
            else
                r = g != NULL ? rpc_value_new_tensor(g) : rpc_value_none();
        } else { /* dist_grads_count */
            GPtrArray *leaves, *grads;
            if (rpc_dist_autograd_get_gradients(agent, id, &leaves, &grads, error)) {
                r = rpc_value_new_int(leaves->len);
                g_ptr_array_unref(leaves);
                g_ptr_array_unref(grads);
            }
        }
    } else { /* the differentiable ops */
        if ((t = tensor_arg(a0, n, 0, error)) == NULL || (th = ag_thread(env, error)) == NULL)
            goto out;
        if (strcmp(n, "matmul") == 0) {
            if ((u = tensor_arg(a1, n, 1, error)) != NULL)
                r = tensor_result(rpc_ag_matmul(th, t, u, error));
        } else if (strcmp(n, "pow") == 0) {
            double k;
            if (as_number(a1, &k, "pow()'s exponent", error))
                r = tensor_result(rpc_ag_pow(th, t, k, error));
        } else if (strcmp(n, "sum") == 0) {
            r = tensor_result(rpc_ag_sum(th, t, error));
        } else if (strcmp(n, "mean") == 0) {
            r = tensor_result(rpc_ag_mean(th, t, error));
        } else if (strcmp(n, "relu") == 0) {
            r = tensor_result(rpc_ag_relu(th, t, error));
        } else if (strcmp(n, "sigmoid") == 0) {
            r = tensor_result(rpc_ag_sigmoid(th, t, error));
        } else {
            r = tensor_result(rpc_ag_exp(th, t, error));
        }
    }
out:
    rpc_value_unref(args);
    return r;
}

static RpcValue *
eval_call(Env *env, const ScExpr *e, GError **error)
{
    const char *n = e->u.call.name;
    GPtrArray *args = e->u.call.args;
    guint nargs = args ? args->len : 0;
    if (strcmp(n, "rpc_sync") == 0)
        return eval_rpc(env, e, CALL_SYNC, error);
    if (strcmp(n, "rpc_async") == 0)
        return eval_rpc(env, e, CALL_ASYNC, error);
    if (strcmp(n, "remote") == 0)
        return eval_rpc(env, e, CALL_REMOTE, error);
    if (strcmp(n, "rref") == 0) {
        RpcValue *v = eval(env, g_ptr_array_index(args, 0), error);
        return v ? rpc_rref_new_local(sim_world_agent(env->run->w, env->worker), v, error) : NULL;
    }
    if (strcmp(n, "ones") == 0 || strcmp(n, "zeros") == 0 || strcmp(n, "full") == 0) {
        gint64 shape[RPC_TENSOR_MAX_DIMS];
        guint ndim;
        double fill = n[0] == 'o' ? 1.0 : 0.0;
        guint from = 0;
        if (n[0] == 'f') {
            RpcValue *v = eval(env, g_ptr_array_index(args, 0), error);
            if (v == NULL)
                return NULL;
            gboolean ok = as_number(v, &fill, "full()'s fill value", error);
            rpc_value_unref(v);
            if (!ok)
                return NULL;
            from = 1;
        }
        if (!eval_dims(env, args, from, shape, &ndim, error))
            return NULL;
        GError *e2 = NULL;
        RpcTensor *t = rpc_tensor_new_checked(RPC_DTYPE_FLOAT32, ndim, shape, &e2);
        if (t == NULL) {
            g_propagate_error(error, e2);
            return NULL;
        }
        rpc_tensor_unref(t);
        return rpc_value_new_tensor(rpc_tensor_new_full(RPC_DTYPE_FLOAT32, ndim, shape, fill));
    }
    if (strcmp(n, "tensor") == 0)
        return eval_tensor_literal(env, e, error);
    gboolean handled;
    RpcValue *ag = eval_autograd_call(env, e, &handled, error);
    if (handled)
        return ag;
    if (strcmp(n, "wait") == 0 || strcmp(n, "wait_all") == 0 || strcmp(n, "collect_all") == 0) {
        GPtrArray *futs = eval_futures(env, e, error);
        if (futs == NULL)
            return NULL;
        RpcValue *r = NULL;
        if (n[4] == '\0') {
            if (futs->len != 1)
                g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, "wait() takes one Future");
            else
                r = rpc_future_wait(g_ptr_array_index(futs, 0), error);
        } else if (n[0] == 'w') {
            r = rpc_future_wait_all(ex_of(env), (RpcFuture **)futs->pdata, futs->len, error);
        } else {
            RpcFuture *all =
                rpc_future_collect_all(ex_of(env), (RpcFuture **)futs->pdata, futs->len, error);
            r = all ? track_future(env, all) : NULL;
        }
        g_ptr_array_unref(futs);
        return r;
    }
    if (strcmp(n, "now") == 0)
        return rpc_value_new_double((double)sim_kernel_now(env->run->k) / SIM_S);
    if (strcmp(n, "worker_id") == 0)
        return rpc_value_new_int(env->worker);
    if (strcmp(n, "worker_name") == 0)
        return rpc_value_new_string(sim_world_worker_name(env->run->w, env->worker));
    if (strcmp(n, "future") == 0) {
        RpcFuture *f = rpc_future_new(ex_of(env));
        return track_future(env, f);
    }
    if (strcmp(n, "worker_info") == 0) {
        RpcAgent *a = agent_of(env, error);
        if (a == NULL)
            return NULL;
        RpcValue *to = nargs ? eval(env, g_ptr_array_index(args, 0), error) : NULL;
        if (nargs && to == NULL)
            return NULL;
        RpcValue *r = rpc_agent_get_worker_info(a, to, error);
        rpc_value_unref(to);
        return r;
    }
    /* one-argument built-ins */
    RpcValue *v = nargs ? eval(env, g_ptr_array_index(args, 0), error) : NULL;
    if (nargs && v == NULL)
        return NULL;
    RpcValue *r = NULL;
    if (strcmp(n, "len") == 0) {
        switch (rpc_value_type(v)) {
        case RPC_VALUE_LIST:
            r = rpc_value_new_int(rpc_value_list_len(v));
            break;
        case RPC_VALUE_DICT:
            r = rpc_value_new_int(rpc_value_dict_len(v));
            break;
        case RPC_VALUE_STRING:
            r = rpc_value_new_int((gint64)strlen(rpc_value_get_string(v)));
            break;
        case RPC_VALUE_TENSOR: {
            RpcTensor *t = rpc_value_get_tensor(v);
            if (rpc_tensor_ndim(t) == 0)
                g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, "len() of a 0-d tensor");
            else
                r = rpc_value_new_int(rpc_tensor_shape(t)[0]);
            break;
        }
        default:
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "object of type '%s' has no len()",
                        rpc_value_type_name(rpc_value_type(v)));
        }
    } else if (strcmp(n, "str") == 0) {
        r = rpc_value_type(v) == RPC_VALUE_STRING ? rpc_value_ref(v)
                                                  : rpc_value_new_string_take(rpc_value_repr(v));
    } else if (strcmp(n, "counter") == 0) {
        RpcAgent *a = sim_world_agent(env->run->w, env->worker);
        if (rpc_value_type(v) != RPC_VALUE_STRING) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, "counter() takes a name");
        } else if (a == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        } else {
            gint64 x = counter_value(a, rpc_value_get_string(v));
            if (x < 0)
                g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "unknown counter '%s'",
                            rpc_value_get_string(v));
            else
                r = rpc_value_new_int(x);
        }
    } else {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown function '%s'", n);
    }
    rpc_value_unref(v);
    return r;
}

/* f.then(func, extra…): func(value, extra…) runs locally, on the thread that
 * completes f, through the worker's registry. */
typedef struct {
    Env *env;
    char *func;
    RpcValue *extra; /* list */
} ThenCall;

static void
then_call_free(gpointer p)
{
    ThenCall *t = p;
    env_unref(t->env);
    g_free(t->func);
    rpc_value_unref(t->extra);
    g_free(t);
}

static RpcValue *
then_run(RpcFuture *parent, gpointer data, GError **error)
{
    ThenCall *t = data;
    RpcAgent *a = sim_world_agent(t->env->run->w, t->env->worker);
    if (a == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
        return NULL;
    }
    const RpcFunctionDef *def = rpc_registry_lookup(rpc_agent_registry(a), t->func);
    if (def == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "unknown function '%s'", t->func);
        return NULL;
    }
    RpcValue *v = rpc_future_wait(parent, error);
    if (v == NULL)
        return NULL;
    RpcValue *args = rpc_value_new_list();
    rpc_value_list_append(args, v);
    for (guint i = 0; i < rpc_value_list_len(t->extra); i++)
        rpc_value_list_append(args, rpc_value_ref(rpc_value_list_get(t->extra, i)));
    RpcValue *kw = rpc_value_new_dict();
    RpcValue *r = def->fn(a, args, kw, error);
    rpc_value_unref(args);
    rpc_value_unref(kw);
    return r;
}

static RpcValue *
eval_rref_method(Env *env, const ScExpr *e, RpcRRef *rr, GError **error)
{
    const char *m = e->u.call.name;
    if (strcmp(m, "to_here") == 0) {
        RpcTime timeout = RPC_TIMEOUT_UNSET;
        if (e->u.call.args && e->u.call.args->len == 1 &&
            !eval_duration(env, g_ptr_array_index(e->u.call.args, 0), &timeout, error))
            return NULL;
        return rpc_rref_to_here(rr, timeout, error);
    }
    if (strcmp(m, "local_value") == 0)
        return rpc_rref_local_value(rr, error);
    if (strcmp(m, "owner") == 0)
        return rpc_rref_owner(rr);
    if (strcmp(m, "owner_name") == 0) {
        const char *n = rpc_rref_owner_name(rr);
        return rpc_value_new_string(n ? n : "");
    }
    if (strcmp(m, "is_owner") == 0)
        return rpc_value_new_bool(rpc_rref_is_owner(rr));
    if (strcmp(m, "confirmed_by_owner") == 0)
        return rpc_value_new_bool(rpc_rref_confirmed_by_owner(rr));
    if (strcmp(m, "get_type") == 0) {
        RpcFuture *f = rpc_rref_get_type(rr, RPC_TIMEOUT_UNSET, error);
        if (f == NULL)
            return NULL;
        RpcValue *v = rpc_future_wait(f, error);
        rpc_future_unref(f);
        return v;
    }
    if (strcmp(m, "rpc_sync") == 0 || strcmp(m, "rpc_async") == 0 || strcmp(m, "remote") == 0) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "%s() returns a proxy: call a method on it, e.g. r.%s().size()", m, m);
        return NULL;
    }
    g_set_error(error, RPC_ERROR, RPC_ERROR_ATTRIBUTE, "'RRef' object has no attribute '%s'", m);
    return NULL;
}

/* rref.rpc_sync([timeout]).m(args…) and its async/remote twins. */
static RpcValue *
eval_proxy_call(Env *env, const ScExpr *e, GError **error)
{
    const ScExpr *proxy = e->u.call.target;
    RpcValue *target = eval(env, proxy->u.call.target, error);
    if (target == NULL)
        return NULL;
    RpcRRef *rr = rpc_value_get_rref(target);
    RpcTime timeout = RPC_TIMEOUT_UNSET;
    RpcValue *r = NULL;
    if (rr == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_ATTRIBUTE, "'%s' object has no attribute '%s'",
                    rpc_value_type_name(rpc_value_type(target)), proxy->u.call.name);
        goto out;
    }
    if (proxy->u.call.args && proxy->u.call.args->len == 1 &&
        !eval_duration(env, g_ptr_array_index(proxy->u.call.args, 0), &timeout, error))
        goto out;
    RpcValue *args = eval_list(env, e->u.call.args, 0, error);
    if (args == NULL)
        goto out;
    const char *kind = proxy->u.call.name;
    if (strcmp(kind, "rpc_sync") == 0) {
        r = rpc_rref_proxy_sync(rr, e->u.call.name, args, NULL, timeout, error);
    } else if (strcmp(kind, "rpc_async") == 0) {
        RpcFuture *f = rpc_rref_proxy_async(rr, e->u.call.name, args, NULL, timeout, error);
        r = f ? track_future(env, f) : NULL;
    } else {
        r = rpc_rref_proxy_remote(rr, e->u.call.name, args, NULL, timeout, error);
    }
out:
    rpc_value_unref(target);
    return r;
}

static RpcValue *
eval_method(Env *env, const ScExpr *e, GError **error)
{
    const char *m = e->u.call.name;
    const ScExpr *inner = e->u.call.target;
    if (inner->kind == SC_EXPR_METHOD &&
        (strcmp(inner->u.call.name, "rpc_sync") == 0 ||
         strcmp(inner->u.call.name, "rpc_async") == 0 || strcmp(inner->u.call.name, "remote") == 0))
        return eval_proxy_call(env, e, error);
    RpcValue *target = eval(env, e->u.call.target, error);
    if (target == NULL)
        return NULL;
    RpcFuture *f;
    RpcValue *r = NULL;
    RpcRRef *rr = rpc_value_get_rref(target);
    if (rr != NULL) {
        r = eval_rref_method(env, e, rr, error);
        goto out;
    }
    if (!as_future(target, &f, m, error))
        goto out;
    if (strcmp(m, "wait") == 0) {
        r = rpc_future_wait(f, error);
    } else if (strcmp(m, "value") == 0) {
        r = rpc_future_value(f, error);
    } else if (strcmp(m, "done") == 0) {
        r = rpc_value_new_bool(rpc_future_done(f));
    } else if (strcmp(m, "then") == 0) {
        const ScExpr *fn = g_ptr_array_index(e->u.call.args, 0);
        RpcValue *extra = eval_list(env, e->u.call.args, 1, error);
        if (extra == NULL)
            goto out;
        ThenCall *t = g_new0(ThenCall, 1);
        t->env = env_ref(env);
        t->func = g_strdup(fn->kind == SC_EXPR_NAME ? fn->u.name.name : "");
        t->extra = extra;
        RpcFuture *child = rpc_future_then(f, then_run, t, then_call_free, error);
        r = child ? track_future(env, child) : NULL;
    } else if (strcmp(m, "set_result") == 0) {
        RpcValue *v = eval(env, g_ptr_array_index(e->u.call.args, 0), error);
        if (v != NULL && rpc_future_set_result(f, v, error))
            r = rpc_value_none();
    } else if (strcmp(m, "set_exception") == 0) {
        RpcValue *parts = eval_list(env, e->u.call.args, 0, error);
        if (parts == NULL)
            goto out;
        guint np = rpc_value_list_len(parts);
        const RpcValue *msg = rpc_value_list_get(parts, np - 1);
        const char *kind =
            np > 1 && rpc_value_type(rpc_value_list_get(parts, 0)) == RPC_VALUE_STRING
                ? rpc_value_get_string(rpc_value_list_get(parts, 0))
                : "RuntimeError";
        if (rpc_value_type(msg) != RPC_VALUE_STRING) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                                "set_exception() takes a message string");
        } else if (rpc_future_set_exception(
                       f, rpc_value_new_error_user(kind, rpc_value_get_string(msg)), error)) {
            r = rpc_value_none();
        }
        rpc_value_unref(parts);
    } else {
        g_set_error(error, RPC_ERROR, RPC_ERROR_ATTRIBUTE, "'Future' object has no attribute '%s'",
                    m);
    }
out:
    rpc_value_unref(target);
    return r;
}

/* An operand of < <= > >=: a number, or a one-element tensor (a loss), as
 * Python compares `loss < 0.5` through the tensor's single value. */
static gboolean
as_ordered(const RpcValue *v, double *out, GError **error)
{
    if (rpc_value_type(v) == RPC_VALUE_TENSOR) {
        if (rpc_tensor_item(rpc_value_get_tensor(v), out, NULL))
            return TRUE;
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Boolean value of Tensor with more than one value is ambiguous");
        return FALSE;
    }
    return as_number(v, out, "an ordered comparison operand", error);
}

static gboolean
compare_numbers(ScBinOp op, const RpcValue *a, const RpcValue *b, gboolean *out, GError **error)
{
    double x, y;
    if (!as_ordered(a, &x, error) || !as_ordered(b, &y, error))
        return FALSE;
    switch (op) {
    case SC_OP_LT:
        *out = x < y;
        break;
    case SC_OP_LE:
        *out = x <= y;
        break;
    case SC_OP_GT:
        *out = x > y;
        break;
    default:
        *out = x >= y;
        break;
    }
    return TRUE;
}

/* == and !=: structural equality (a tensor equals a tensor of the same
 * dtype, shape and values), except that a one-element tensor (a loss)
 * equals a number of the same value, as `loss == 7.5` is true in Python. */
static gboolean
values_equal(const RpcValue *a, const RpcValue *b)
{
    const RpcValue *t = rpc_value_type(a) == RPC_VALUE_TENSOR ? a : b;
    const RpcValue *n = t == a ? b : a;
    RpcValueType nt = rpc_value_type(n);
    double x, y;
    if (rpc_value_type(t) == RPC_VALUE_TENSOR &&
        (nt == RPC_VALUE_INT || nt == RPC_VALUE_DOUBLE || nt == RPC_VALUE_BOOL) &&
        rpc_tensor_item(rpc_value_get_tensor(t), &x, NULL) && as_number(n, &y, "", NULL))
        return x == y;
    return rpc_value_equal(a, b);
}

static RpcValue *
eval_binop(Env *env, const ScExpr *e, GError **error)
{
    ScBinOp op = e->u.bin.op;
    RpcValue *a = eval(env, e->u.bin.lhs, error);
    if (a == NULL)
        return NULL;
    if (op == SC_OP_AND || op == SC_OP_OR) {
        gboolean t;
        if (!truthy(a, &t, error)) {
            rpc_value_unref(a);
            return NULL;
        }
        if ((op == SC_OP_AND && !t) || (op == SC_OP_OR && t))
            return a;
        rpc_value_unref(a);
        return eval(env, e->u.bin.rhs, error);
    }
    RpcValue *b = eval(env, e->u.bin.rhs, error);
    if (b == NULL) {
        rpc_value_unref(a);
        return NULL;
    }
    RpcValue *r = NULL;
    gboolean t;
    switch (op) {
    case SC_OP_ADD:
    case SC_OP_SUB:
    case SC_OP_MUL:
    case SC_OP_DIV:
        /* history is recorded only where PyTorch records it */
        if (is_grad_tensor(a) || is_grad_tensor(b))
            r = ag_arith(env, op, a, b, error);
        else
            r = rpc_stdlib_arith((int)op - SC_OP_ADD, a, b, error);
        break;
    case SC_OP_EQ:
        r = rpc_value_new_bool(values_equal(a, b));
        break;
    case SC_OP_NE:
        r = rpc_value_new_bool(!values_equal(a, b));
        break;
    default:
        if (compare_numbers(op, a, b, &t, error))
            r = rpc_value_new_bool(t);
    }
    rpc_value_unref(a);
    rpc_value_unref(b);
    return r;
}

static RpcValue *
eval(Env *env, const ScExpr *e, GError **error)
{
    switch (e->kind) {
    case SC_EXPR_NONE:
        return rpc_value_none();
    case SC_EXPR_BOOL:
        return rpc_value_new_bool(e->u.b);
    case SC_EXPR_INT:
        return rpc_value_new_int(e->u.i);
    case SC_EXPR_FLOAT:
        return rpc_value_new_double(e->u.d);
    case SC_EXPR_STRING:
        return rpc_value_new_string(e->u.s);
    case SC_EXPR_DURATION:
        return rpc_value_new_double((double)e->u.i / SIM_S);
    case SC_EXPR_NAME:
        switch (e->u.name.ref) {
        case SC_REF_VAR: {
            RpcValue *v = g_hash_table_lookup(env->env, e->u.name.name);
            if (v == NULL) {
                g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "variable '%s' has no value yet",
                            e->u.name.name);
                return NULL;
            }
            return rpc_value_ref(v);
        }
        case SC_REF_WORKER:
            return rpc_value_new_string(sim_world_worker_name(env->run->w, e->u.name.ref_index));
        default:
            return rpc_value_new_string(e->u.name.name);
        }
    case SC_EXPR_LIST:
        return eval_list(env, e->u.items, 0, error);
    case SC_EXPR_CALL:
        return eval_call(env, e, error);
    case SC_EXPR_METHOD:
        return eval_method(env, e, error);
    case SC_EXPR_BINOP:
        return eval_binop(env, e, error);
    case SC_EXPR_NEG: {
        RpcValue *v = eval(env, e->u.bin.lhs, error);
        if (v == NULL)
            return NULL;
        if (is_grad_tensor(v)) {
            RpcAgThread *th = ag_thread(env, error);
            RpcValue *r = th ? tensor_result(rpc_ag_neg(th, rpc_value_get_tensor(v), error)) : NULL;
            rpc_value_unref(v);
            return r;
        }
        RpcValue *m1 = rpc_value_new_int(-1);
        RpcValue *r = rpc_stdlib_arith(2, v, m1, error);
        rpc_value_unref(m1);
        rpc_value_unref(v);
        return r;
    }
    case SC_EXPR_NOT: {
        RpcValue *v = eval(env, e->u.bin.lhs, error);
        gboolean t;
        if (v == NULL)
            return NULL;
        gboolean ok = truthy(v, &t, error);
        rpc_value_unref(v);
        return ok ? rpc_value_new_bool(!t) : NULL;
    }
    }
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "bad expression");
    return NULL;
}

/* --- statements --------------------------------------------------------------- */

static gboolean exec_block(Env *env, GPtrArray *body);

static void
do_action(Run *run, const ScAction *act)
{
    sim_kernel_trace_emit(run->k, -1, &tk_action, act->loc.line, 0, 0,
                          act->kind == SC_ACT_CRASH       ? "crash"
                          : act->kind == SC_ACT_RESTART   ? "restart"
                          : act->kind == SC_ACT_PAUSE     ? "pause"
                          : act->kind == SC_ACT_RESUME    ? "resume"
                          : act->kind == SC_ACT_PARTITION ? "partition"
                                                          : "heal");
    SimNet *net = sim_world_net(run->w);
    switch (act->kind) {
    case SC_ACT_CRASH:
        run->crashes += sim_world_is_alive(run->w, act->a);
        sim_world_crash(run->w, act->a);
        break;
    case SC_ACT_RESTART: {
        GError *err = NULL;
        if (sim_world_is_alive(run->w, act->a)) {
            fail_at(run, act->loc, -1, "cannot restart %s: it is not down",
                    sim_world_worker_name(run->w, act->a));
        } else if (!sim_world_restart(run->w, act->a, &err)) {
            fail_at(run, act->loc, -1, "restart failed: %s", err->message);
            g_error_free(err);
        } else {
            run->restarts++;
        }
        break;
    }
    case SC_ACT_PAUSE:
        run->pauses++;
        sim_world_pause(run->w, act->a, TRUE);
        break;
    case SC_ACT_RESUME:
        sim_world_pause(run->w, act->a, FALSE);
        break;
    case SC_ACT_PARTITION:
        run->partitions++;
        sim_net_partition(net, act->a, act->b, act->one_way);
        break;
    case SC_ACT_HEAL:
        if (act->a < 0)
            sim_net_heal_all(net);
        else
            sim_net_heal(net, act->a, act->b, act->one_way);
        break;
    }
}

typedef struct {
    Run *run;
    ScAction act;
} ActionEvent;

static void
action_event(gpointer data)
{
    ActionEvent *ae = data;
    do_action(ae->run, &ae->act);
}

static void
schedule_action(Run *run, SimTime delay, const ScAction *act)
{
    ActionEvent *ae = g_new(ActionEvent, 1);
    ae->run = run;
    ae->act = *act;
    sim_kernel_after(run->k, delay, action_event, ae, g_free);
}

static void
run_action(Run *run, const ScAction *act)
{
    /* Pause with a duration: resume later. */
    if (act->kind == SC_ACT_PAUSE && act->duration > 0) {
        ScAction resume = *act;
        resume.kind = SC_ACT_RESUME;
        schedule_action(run, act->duration, &resume);
    }
    /* Now: the world defers only a crash requested from a thread (a thread
     * cannot tear down a worker's threads, its own included) to an event at
     * the current time, i.e. until the calling thread next yields. */
    do_action(run, act);
}

typedef struct {
    Env *env;
    GPtrArray *body;
    RpcFuture *done;
} Branch;

static void
branch_free(gpointer p)
{
    Branch *b = p;
    /* Completes even when the branch was dropped or unwound, so joins end. */
    rpc_future_complete_if_needed(b->done, rpc_value_none());
    rpc_future_unref(b->done);
    env_unref(b->env);
    g_free(b);
}

static void
branch_run(gpointer data)
{
    Branch *b = data;
    exec_block(b->env, b->body);
}

/* Runs each body on its own program thread of env's worker; returns the
 * futures that complete as they end (transfer full). */
static GPtrArray *
spawn_branches(Env *env, GPtrArray *bodies)
{
    GPtrArray *dones = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
    for (guint i = 0; i < bodies->len; i++) {
        Branch *b = g_new(Branch, 1);
        b->env = env_ref(env);
        b->body = g_ptr_array_index(bodies, i);
        b->done = rpc_future_new(ex_of(env));
        rpc_future_set_description(b->done, "a parallel branch to finish");
        g_ptr_array_add(dones, rpc_future_ref(b->done));
        sim_world_spawn_program(env->run->w, env->worker, branch_run, b, branch_free);
    }
    return dones;
}

static gboolean
join_all(Env *env, GPtrArray *dones, GError **error)
{
    for (guint i = 0; i < dones->len; i++) {
        RpcValue *v = rpc_future_wait(g_ptr_array_index(dones, i), error);
        if (v == NULL)
            return FALSE;
        rpc_value_unref(v);
    }
    return TRUE;
}

static char *
expect_detail(Env *env, const ScExpr *e)
{
    if (e->kind != SC_EXPR_BINOP || e->u.bin.op < SC_OP_EQ || e->u.bin.op > SC_OP_GE)
        return g_strdup("the expression is false");
    RpcValue *a = eval(env, e->u.bin.lhs, NULL);
    RpcValue *b = eval(env, e->u.bin.rhs, NULL);
    char *ra = a ? rpc_value_repr(a) : g_strdup("<error>");
    char *rb = b ? rpc_value_repr(b) : g_strdup("<error>");
    static const char *const ops[] = {"==", "!=", "<", "<=", ">", ">="};
    char *s = g_strdup_printf("left side %s right side does not hold: left = %s, right = %s",
                              ops[e->u.bin.op - SC_OP_EQ], ra, rb);
    g_free(ra);
    g_free(rb);
    rpc_value_unref(a);
    rpc_value_unref(b);
    return s;
}

/* dist_autograd as ctx { … }: `with dist_autograd.context() as ctx:`.  The
 * context is current on this thread only (parallel branches started inside
 * do not inherit it, as Python threads do not).  The exit releases it
 * however the block ends — unless the worker went down meanwhile (a crash,
 * or the run's teardown), which took its container and its threads along:
 * the agent is compared with the one that entered, so that a restarted
 * worker's fresh container is never asked to release an id it never had. */
static gboolean
exec_dist_context(Env *env, const ScStmt *s)
{
    Run *run = env->run;
    GError *err = NULL;
    RpcAgent *a = agent_of(env, &err);
    gint64 id = a != NULL ? rpc_dist_autograd_context_new(a, &err) : RPC_DIST_NO_CONTEXT;
    if (id == RPC_DIST_NO_CONTEXT) {
        fail_error(env, s->loc, err);
        g_error_free(err);
        return FALSE;
    }
    g_hash_table_replace(env->env, g_strdup(s->u.ctx.var), rpc_value_new_int(id));
    gboolean ok = exec_block(env, s->u.ctx.body);
    if (run->tearing_down || !sim_world_is_alive(run->w, env->worker) ||
        sim_world_agent(run->w, env->worker) != a)
        return FALSE;
    if (!rpc_dist_autograd_context_release(a, id, &err)) {
        /* only the first failure of a program is reported */
        if (ok)
            fail_error(env, s->loc, err);
        g_error_free(err);
        return FALSE;
    }
    return ok;
}

static gboolean
exec_stmt(Env *env, const ScStmt *s)
{
    Run *run = env->run;
    GError *err = NULL;
    RpcValue *v = NULL;
    switch (s->kind) {
    case SC_STMT_EXPR:
        v = eval(env, s->u.expr, &err);
        break;
    case SC_STMT_ASSIGN:
        v = eval(env, s->u.assign.value, &err);
        if (v != NULL) {
            g_hash_table_replace(env->env, g_strdup(s->u.assign.name), v);
            return TRUE;
        }
        break;
    case SC_STMT_SLEEP: {
        SimTime d;
        if (eval_duration(env, s->u.expr, &d, &err) && rpc_executor_sleep(ex_of(env), d, &err))
            return TRUE;
        break;
    }
    case SC_STMT_EXPECT: {
        v = eval(env, s->u.expr, &err);
        gboolean t;
        if (v != NULL && truthy(v, &t, &err)) {
            rpc_value_unref(v);
            if (t)
                return TRUE;
            char *why = expect_detail(env, s->u.expr);
            fail_at(run, s->loc, (gint)env->worker, "expectation failed: %s", why);
            g_free(why);
            return FALSE;
        }
        break;
    }
    case SC_STMT_EXPECT_ERROR:
        v = eval(env, s->u.experr.expr, &err);
        if (v != NULL) {
            char *r = rpc_value_repr(v);
            fail_at(run, s->loc, (gint)env->worker, "expected an error, but got %s", r);
            g_free(r);
            rpc_value_unref(v);
            return FALSE;
        }
        if (is_teardown(err))
            break;
        if (s->u.experr.kind && strcmp(s->u.experr.kind, error_kind_name(err)) != 0) {
            fail_at(run, s->loc, (gint)env->worker, "expected a %s, but got %s: %s",
                    s->u.experr.kind, error_kind_name(err), err->message);
            g_error_free(err);
            return FALSE;
        }
        if (s->u.experr.contains && strstr(err->message, s->u.experr.contains) == NULL) {
            fail_at(run, s->loc, (gint)env->worker,
                    "expected an error containing \"%s\", but got %s: %s", s->u.experr.contains,
                    error_kind_name(err), err->message);
            g_error_free(err);
            return FALSE;
        }
        g_error_free(err);
        return TRUE;
    case SC_STMT_REPEAT: {
        v = eval(env, s->u.repeat.count, &err);
        if (v == NULL)
            break;
        if (rpc_value_type(v) != RPC_VALUE_INT || rpc_value_get_int(v) < 0) {
            fail_at(run, s->loc, (gint)env->worker, "repeat needs a non-negative int");
            rpc_value_unref(v);
            return FALSE;
        }
        gint64 n = rpc_value_get_int(v);
        rpc_value_unref(v);
        for (gint64 i = 0; i < n; i++) {
            if (s->u.repeat.var)
                g_hash_table_replace(env->env, g_strdup(s->u.repeat.var), rpc_value_new_int(i));
            if (!exec_block(env, s->u.repeat.body))
                return FALSE;
        }
        return TRUE;
    }
    case SC_STMT_PARALLEL: {
        GPtrArray *dones = spawn_branches(env, s->u.blocks);
        gboolean ok = join_all(env, dones, &err);
        g_ptr_array_unref(dones);
        if (ok)
            return !env->stopped;
        break;
    }
    case SC_STMT_PRINT: {
        v = eval(env, s->u.expr, &err);
        if (v == NULL)
            break;
        char *text = rpc_value_type(v) == RPC_VALUE_STRING ? g_strdup(rpc_value_get_string(v))
                                                           : rpc_value_repr(v);
        sim_kernel_trace_emit(run->k, (gint)env->worker, &tk_print, 0, 0, 0, text);
        if (run->log_out) {
            char t[32];
            fprintf(run->log_out, "[%s] [%s] %s\n",
                    sim_time_format(sim_kernel_now(run->k), t, sizeof t),
                    sim_world_worker_name(run->w, env->worker), text);
        }
        g_free(text);
        rpc_value_unref(v);
        return TRUE;
    }
    case SC_STMT_SET_TIMEOUT: {
        SimTime d;
        RpcAgent *a = agent_of(env, &err);
        if (a && eval_duration(env, s->u.expr, &d, &err)) {
            rpc_agent_set_rpc_timeout(a, d);
            return TRUE;
        }
        break;
    }
    case SC_STMT_SHUTDOWN: {
        SimTime d = 0;
        RpcAgent *a = agent_of(env, &err);
        if (a == NULL)
            break;
        if (s->u.shutdown.timeout && !eval_duration(env, s->u.shutdown.timeout, &d, &err))
            break;
        env->shut_down = TRUE;
        if (rpc_agent_shutdown(a, s->u.shutdown.graceful, d, &err))
            return TRUE;
        break;
    }
    case SC_STMT_BARRIER: {
        RpcAgent *a = agent_of(env, &err);
        if (a == NULL)
            break;
        GPtrArray *names = g_ptr_array_new();
        for (guint i = 0; i < s->u.workers->len; i++)
            g_ptr_array_add(names, (gpointer)sim_world_worker_name(
                                       run->w, g_array_index(s->u.workers, gint, i)));
        g_ptr_array_add(names, NULL);
        gboolean ok =
            rpc_agent_barrier(a, s->u.workers->len ? (const char *const *)names->pdata : NULL);
        g_ptr_array_unref(names);
        if (!ok) {
            fail_at(run, s->loc, (gint)env->worker, "barrier failed");
            return FALSE;
        }
        return TRUE;
    }
    case SC_STMT_ACTION:
        run_action(run, &s->u.action);
        return TRUE;
    case SC_STMT_UNREGISTER: {
        RpcAgent *a = agent_of(env, &err);
        if (a == NULL)
            break;
        rpc_registry_remove(rpc_agent_registry(a), s->u.expr->u.s);
        return TRUE;
    }
    case SC_STMT_DIST_CONTEXT:
        return exec_dist_context(env, s);
    }
    if (err != NULL) {
        fail_error(env, s->loc, err);
        g_error_free(err);
        return FALSE;
    }
    rpc_value_unref(v);
    return TRUE;
}

static gboolean
exec_block(Env *env, GPtrArray *body)
{
    for (guint i = 0; i < body->len; i++) {
        if (env->stopped)
            return FALSE;
        if (!exec_stmt(env, g_ptr_array_index(body, i))) {
            env->stopped = TRUE;
            return FALSE;
        }
    }
    return TRUE;
}

/* --- the per-worker driver ------------------------------------------------------- */

typedef struct {
    Run *run;
    guint worker;
} Driver;

static void
driver_run(gpointer data)
{
    Driver *d = data;
    Run *run = d->run;
    Env *env = env_new(run, d->worker);
    GPtrArray *bodies = g_ptr_array_new();
    for (guint i = 0; i < run->sc->programs->len; i++) {
        const ScProgram *p = g_ptr_array_index(run->sc->programs, i);
        for (guint j = 0; j < p->workers->len; j++)
            if (g_array_index(p->workers, gint, j) == (gint)d->worker)
                g_ptr_array_add(bodies, p->body);
    }
    GError *err = NULL;
    gboolean ok = TRUE;
    if (bodies->len == 1) {
        exec_block(env, g_ptr_array_index(bodies, 0));
    } else if (bodies->len > 1) {
        GPtrArray *dones = spawn_branches(env, bodies);
        ok = join_all(env, dones, &err);
        g_ptr_array_unref(dones);
    }
    RpcAgent *a = sim_world_agent(run->w, d->worker);
    if (ok && run->sc->auto_shutdown && !env->shut_down && a != NULL && rpc_agent_is_running(a))
        ok = rpc_agent_shutdown(a, TRUE, 0, &err);
    if (!ok) {
        ScLoc none = {0, 0};
        fail_error(env, none, err);
        g_error_free(err);
    }
    g_ptr_array_unref(bodies);
    env_unref(env);
}

/* --- triggers: after N records of a kind ------------------------------------------ */

static void
trigger_sink(const SimTraceRecord *rec, gpointer data)
{
    Trigger *t = data;
    if (t->seen >= t->f->count || strcmp(rec->kind->name, t->f->trace_kind) != 0)
        return;
    if (t->f->on_worker >= 0 && rec->worker != t->f->on_worker)
        return;
    if (++t->seen == t->f->count) {
        /* From an event at the current time: a sink may not emit records. */
        const ScAction *act = &t->f->action;
        if (act->kind == SC_ACT_PAUSE && act->duration > 0) {
            ScAction resume = *act;
            resume.kind = SC_ACT_RESUME;
            schedule_action(t->run, act->duration, &resume);
        }
        schedule_action(t->run, 0, act);
    }
}

/* --- setting up the world ---------------------------------------------------------- */

static void
apply_link(SimNet *net, const SimLinkConfig *base, const ScLinkOverride *o, guint n)
{
    for (guint from = 0; from < n; from++) {
        if (o->from >= 0 && (guint)o->from != from)
            continue;
        for (guint to = 0; to < n; to++) {
            if (o->to >= 0 && (guint)o->to != to)
                continue;
            SimLinkConfig c = *base;
            if (o->set_mask & SC_LINK_SET_LATENCY)
                c.latency = o->cfg.latency;
            if (o->set_mask & SC_LINK_SET_BANDWIDTH)
                c.bandwidth = o->cfg.bandwidth;
            if (o->set_mask & SC_LINK_SET_JITTER)
                c.jitter = o->cfg.jitter;
            if (o->set_mask & SC_LINK_SET_LOSS)
                c.loss = o->cfg.loss;
            if (o->set_mask & SC_LINK_SET_DUPLICATE)
                c.duplicate = o->cfg.duplicate;
            if (o->set_mask & SC_LINK_SET_REORDER)
                c.reorder = o->cfg.reorder;
            sim_net_set_link(net, (gint)from, (gint)to, &c);
        }
    }
}

static gboolean
setup_faults(Run *run, GError **error)
{
    const ScScenario *sc = run->sc;
    for (guint i = 0; i < sc->agent_faults->len; i++) {
        const ScAgentFault *f = g_ptr_array_index(sc->agent_faults, i);
        for (guint w = 0; w < sc->n_workers; w++) {
            if (f->from_worker >= 0 && (guint)f->from_worker != w)
                continue;
            SimFaults *sf = sim_world_faults(run->w, w);
            for (guint t = 0; t < f->types->len; t++) {
                const char *type = g_ptr_array_index(f->types, t);
                gboolean ok = f->is_drop    ? sim_faults_add_drop(sf, type, f->probability, error)
                              : f->is_delay ? sim_faults_add_delay(sf, type, f->delay, error)
                                            : sim_faults_add_fail(sf, type, error);
                if (!ok)
                    return FALSE;
            }
            if (!f->is_delay && !f->is_drop)
                sim_faults_set_num_fail_sends(sf, f->times);
        }
    }
    for (guint i = 0; i < sc->timed_faults->len; i++) {
        const ScTimedFault *f = g_ptr_array_index(sc->timed_faults, i);
        if (f->trigger == SC_TRIGGER_AT) {
            ScAction act = f->action;
            if (act.kind == SC_ACT_PAUSE && act.duration > 0) {
                ScAction resume = act;
                resume.kind = SC_ACT_RESUME;
                schedule_action(run, f->at + act.duration, &resume);
            }
            schedule_action(run, f->at, &act);
        } else {
            Trigger *t = g_new0(Trigger, 1);
            t->run = run;
            t->f = f;
            g_ptr_array_add(run->triggers, t);
            sim_trace_add_sink(sim_kernel_trace(run->k), trigger_sink, t, NULL);
        }
    }
    return TRUE;
}

/* --- end expectations ------------------------------------------------------------------ */

static gboolean
cmp_holds(ScCmp c, gint64 x, gint64 y)
{
    switch (c) {
    case SC_CMP_EQ:
        return x == y;
    case SC_CMP_NE:
        return x != y;
    case SC_CMP_LT:
        return x < y;
    case SC_CMP_LE:
        return x <= y;
    case SC_CMP_GT:
        return x > y;
    default:
        return x >= y;
    }
}

static const char *const cmp_text[] = {"==", "!=", "<", "<=", ">", ">="};

static gint64
fired_count(Run *run, const char *name, const SimWorldStats *ws, const SimNetStats *ns)
{
    if (strcmp(name, "fail") == 0)
        return (gint64)ws->faults_failed_sends;
    if (strcmp(name, "delay") == 0)
        return (gint64)ws->faults_delays;
    if (strcmp(name, "drop") == 0)
        return (gint64)ws->faults_drops;
    if (strcmp(name, "crash") == 0)
        return (gint64)ws->crashes;
    if (strcmp(name, "restart") == 0)
        return (gint64)ws->restarts;
    if (strcmp(name, "pause") == 0)
        return (gint64)ws->pauses;
    if (strcmp(name, "loss") == 0)
        return (gint64)ns->dropped_loss;
    if (strcmp(name, "duplicate") == 0)
        return (gint64)ns->duplicated;
    if (strcmp(name, "partition") == 0)
        return (gint64)ns->dropped_partition;
    if (strcmp(name, "bounce") == 0)
        return (gint64)ns->bounced;
    if (strcmp(name, "reorder") == 0)
        return (gint64)ns->reordered;
    return -1;
}

static const char *const fired_order[] = {"fail",      "delay",  "drop",   "crash",
                                          "restart",   "pause",  "loss",   "duplicate",
                                          "partition", "bounce", "reorder"};

static gboolean
trace_contains(Run *run, const char *text)
{
    GPtrArray *lines = sim_trace_lines(sim_kernel_trace(run->k));
    for (guint i = 0; lines && i < lines->len; i++)
        if (strstr(g_ptr_array_index(lines, i), text))
            return TRUE;
    return FALSE;
}

static void
check_end(Run *run, SimRunReport *rep, SimRunResult result)
{
    const ScScenario *sc = run->sc;
    SimWorldStats ws;
    SimNetStats ns;
    sim_world_get_stats(run->w, &ws);
    sim_net_get_stats(sim_world_net(run->w), &ns);
    gboolean want_deadlock = FALSE;
    for (guint i = 0; i < sc->expects->len; i++)
        want_deadlock |=
            ((ScEndExpect *)g_ptr_array_index(sc->expects, i))->kind == SC_END_DEADLOCK;
    ScLoc top = {1, 1};
    if (result == SIM_RUN_DEADLOCK && !want_deadlock)
        fail_at(run, top, -1, "the run deadlocked:\n%s", rep->deadlock ? rep->deadlock : "");
    if (result == SIM_RUN_TIME_LIMIT)
        fail_at(run, top, -1, "the run reached its time limit with events still queued");
    for (guint i = 0; i < sc->expects->len; i++) {
        const ScEndExpect *x = g_ptr_array_index(sc->expects, i);
        switch (x->kind) {
        case SC_END_DEADLOCK:
            if (result != SIM_RUN_DEADLOCK)
                fail_at(run, x->loc, -1, "expected the run to deadlock, but it did not");
            break;
        case SC_END_NO_DEADLOCK:
            break; /* reported above */
        case SC_END_DEADLOCK_CONTAINS:
            if (rep->deadlock == NULL || strstr(rep->deadlock, x->name) == NULL)
                fail_at(run, x->loc, -1, "expected a deadlock report containing \"%s\"", x->name);
            break;
        case SC_END_FUTURES_RESOLVED: {
            guint pending = 0;
            for (guint j = 0; j < run->futures->len; j++)
                pending += !rpc_future_done(g_ptr_array_index(run->futures, j));
            if (pending)
                fail_at(run, x->loc, -1, "%u future%s never resolved", pending,
                        pending == 1 ? "" : "s");
            break;
        }
        case SC_END_COUNTER: {
            RpcAgent *a = sim_world_agent(run->w, x->worker);
            gint64 v = a ? counter_value(a, x->name) : -1;
            if (v < 0)
                fail_at(run, x->loc, -1, "counter %s of %s is not available", x->name,
                        sim_world_worker_name(run->w, x->worker));
            else if (!cmp_holds(x->cmp, v, x->value))
                fail_at(run, x->loc, -1,
                        "expected counter %s of %s %s %" G_GINT64_FORMAT ", but it is "
                        "%" G_GINT64_FORMAT,
                        x->name, sim_world_worker_name(run->w, x->worker), cmp_text[x->cmp],
                        x->value, v);
            break;
        }
        case SC_END_FIRED: {
            gint64 v = fired_count(run, x->name, &ws, &ns);
            if (!cmp_holds(x->cmp, v, x->value))
                fail_at(run, x->loc, -1,
                        "expected fired %s %s %" G_GINT64_FORMAT ", but it fired %" G_GINT64_FORMAT
                        " time%s",
                        x->name, cmp_text[x->cmp], x->value, v, v == 1 ? "" : "s");
            break;
        }
        case SC_END_TIME:
            if (!cmp_holds(x->cmp, rep->end_time, x->value)) {
                char a[32], b[32];
                fail_at(run, x->loc, -1,
                        "expected the run to end at time %s %s s, but it ended at %s s",
                        cmp_text[x->cmp], sim_time_format(x->value, a, sizeof a),
                        sim_time_format(rep->end_time, b, sizeof b));
            }
            break;
        case SC_END_MESSAGES:
            if (!cmp_holds(x->cmp, (gint64)ws.messages_sent, x->value))
                fail_at(run, x->loc, -1,
                        "expected messages %s %" G_GINT64_FORMAT ", but %" G_GUINT64_FORMAT
                        " were sent",
                        cmp_text[x->cmp], x->value, ws.messages_sent);
            break;
        case SC_END_TRACE_CONTAINS:
            if (!trace_contains(run, x->name))
                fail_at(run, x->loc, -1, "expected the trace to contain \"%s\"", x->name);
            break;
        case SC_END_TRACE_LACKS:
            if (trace_contains(run, x->name))
                fail_at(run, x->loc, -1, "expected the trace not to contain \"%s\"", x->name);
            break;
        }
    }
    rep->fired = g_ptr_array_new_with_free_func(g_free);
    for (gsize i = 0; i < G_N_ELEMENTS(fired_order); i++) {
        gint64 v = fired_count(run, fired_order[i], &ws, &ns);
        rep->faults_fired += (guint64)v;
        g_ptr_array_add(rep->fired, g_strdup_printf("%s=%" G_GINT64_FORMAT, fired_order[i], v));
    }
    rep->messages = ws.messages_sent;
}

static gboolean
scenario_needs_lines(const ScScenario *sc)
{
    for (guint i = 0; i < sc->expects->len; i++) {
        ScEndKind k = ((ScEndExpect *)g_ptr_array_index(sc->expects, i))->kind;
        if (k == SC_END_TRACE_CONTAINS || k == SC_END_TRACE_LACKS)
            return TRUE;
    }
    return FALSE;
}

SimRunReport *
sim_scenario_run(const ScScenario *sc, const SimRunOptions *opt)
{
    g_return_val_if_fail(sc != NULL && opt != NULL, NULL);
    SimRunReport *rep = g_new0(SimRunReport, 1);
    rep->seed = opt->seed;
    rep->failures = g_ptr_array_new_with_free_func(g_free);

    SimWorldConfig cfg;
    sim_world_config_init(&cfg, opt->seed, sc->n_workers);
    cfg.threads_per_worker = sc->threads;
    cfg.rpc_timeout = sc->rpc_timeout < 0 ? RPC_TIMEOUT_UNSET : sc->rpc_timeout;
    cfg.names = (const char *const *)sc->worker_names;
    Run run = {0};
    run.sc = sc;
    run.w = sim_world_new_full(&cfg);
    run.k = sim_world_kernel(run.w);
    run.failures = rep->failures;
    run.futures = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
    run.triggers = g_ptr_array_new_with_free_func(g_free);
    run.log_out = opt->log_out;

    SimTrace *trace = sim_kernel_trace(run.k);
    gboolean keep = opt->keep_lines || scenario_needs_lines(sc);
    sim_trace_keep_lines(trace, keep);
    SimTraceExport *exporter =
        opt->trace_out ? sim_trace_export_new(trace, opt->trace_format, opt->trace_out) : NULL;

    SimNet *net = sim_world_net(run.w);
    sim_net_set_default(net, &sc->net_default);
    for (guint i = 0; i < sc->links->len; i++)
        apply_link(net, &sc->net_default, g_ptr_array_index(sc->links, i), sc->n_workers);

    GError *err = NULL;
    SimRunResult result = SIM_RUN_IDLE;
    ScLoc top = {1, 1};
    if (!sim_world_init_rpc(run.w, &err) || !setup_faults(&run, &err)) {
        fail_at(&run, top, -1, "%s", err->message);
        g_clear_error(&err);
    } else {
        for (guint i = 0; i < sc->n_workers; i++) {
            Driver *d = g_new(Driver, 1);
            d->run = &run;
            d->worker = i;
            sim_world_spawn_program(run.w, i, driver_run, d, g_free);
        }
        result = sim_kernel_run_until(run.k, sc->time_limit);
    }
    rep->end_time = sim_kernel_now(run.k);
    rep->deadlock = result == SIM_RUN_DEADLOCK ? sim_kernel_deadlock_report(run.k) : NULL;
    check_end(&run, rep, result);
    /* After check_end: its failure records belong to the trace too. */
    if (opt->keep_lines) {
        GPtrArray *lines = sim_trace_lines(trace);
        rep->lines = g_ptr_array_new_full(lines->len, g_free);
        for (guint i = 0; i < lines->len; i++)
            g_ptr_array_add(rep->lines, g_strdup(g_ptr_array_index(lines, i)));
    }
    rep->events = sim_kernel_events_run(run.k);
    rep->trace_records = sim_trace_count(trace);
    rep->fingerprint = sim_trace_fingerprint(trace);
    rep->passed = rep->failures->len == 0;
    if (exporter)
        sim_trace_export_finish(exporter);
    run.tearing_down = TRUE;
    g_ptr_array_unref(run.futures);
    sim_world_free(run.w);
    g_ptr_array_unref(run.triggers);
    return rep;
}
