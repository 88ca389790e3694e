/* stdlib.c — the catalogue's functions (spec §11.0), on every worker.
 *
 * Builtin operators (SCRIPT_CALL): add, sub, mul, div, matmul, stack, sum.
 * Python-style UDFs (PYTHON_CALL): my_function, identity, my_sleep_func,
 * raise_func, nested_rpc, the async_add family, … — each written the way
 * the catalogue describes its Python original.  `sleep` blocks only the
 * calling virtual thread, for virtual time.
 *
 * Numbers follow Python: int + int is int, anything with a float is float,
 * anything with a tensor is a tensor (broadcasting, PyTorch's error texts).
 */
#include "core/stdlib.h"

#include <math.h>
#include <string.h>

#include "core/agent-internal.h"
#include "core/autograd.h"
#include "core/dist-autograd.h"
#include "core/future.h"
#include "core/rref.h"
#include "core/tensor.h"

/* --- value arithmetic ----------------------------------------------------- */

typedef enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV } ArithOp;

static gboolean
is_number(const RpcValue *v)
{
    RpcValueType t = rpc_value_type(v);
    return t == RPC_VALUE_INT || t == RPC_VALUE_DOUBLE || t == RPC_VALUE_BOOL;
}

static double
number_of(const RpcValue *v)
{
    if (rpc_value_type(v) == RPC_VALUE_BOOL)
        return rpc_value_get_bool(v) ? 1.0 : 0.0;
    return rpc_value_get_double(v);
}

/* With a thread context (th != NULL) the op records autograd history, as
 * torch's operators do; the values are the same either way. */
static RpcTensor *
tensor_op(RpcAgThread *th, ArithOp op, RpcTensor *x, RpcTensor *y, GError **error)
{
    if (th != NULL) {
        switch (op) {
        case OP_ADD:
            return rpc_ag_add(th, x, y, error);
        case OP_SUB:
            return rpc_ag_sub(th, x, y, error);
        case OP_MUL:
            return rpc_ag_mul(th, x, y, error);
        default:
            return rpc_ag_div(th, x, y, error);
        }
    }
    switch (op) {
    case OP_ADD:
        return rpc_tensor_add(x, y, error);
    case OP_SUB:
        return rpc_tensor_sub(x, y, error);
    case OP_MUL:
        return rpc_tensor_mul(x, y, error);
    default:
        return rpc_tensor_div(x, y, error);
    }
}

static const char *const op_symbol[] = {"+", "-", "*", "/"};

static RpcValue *
arith(RpcAgThread *th, int op_, const RpcValue *a, const RpcValue *b, GError **error)
{
    ArithOp op = (ArithOp)op_;
    gboolean ta = rpc_value_type(a) == RPC_VALUE_TENSOR;
    gboolean tb = rpc_value_type(b) == RPC_VALUE_TENSOR;
    if (ta || tb) {
        if ((!ta && !is_number(a)) || (!tb && !is_number(b)))
            goto type_error;
        RpcTensor *x = ta ? rpc_tensor_ref(rpc_value_get_tensor(a))
                          : rpc_tensor_new_scalar(RPC_DTYPE_FLOAT32, number_of(a));
        RpcTensor *y = tb ? rpc_tensor_ref(rpc_value_get_tensor(b))
                          : rpc_tensor_new_scalar(RPC_DTYPE_FLOAT32, number_of(b));
        /* A Python scalar does not promote a float32 tensor. */
        if (!ta && rpc_tensor_dtype(y) == RPC_DTYPE_FLOAT64) {
            rpc_tensor_unref(x);
            x = rpc_tensor_new_scalar(RPC_DTYPE_FLOAT64, number_of(a));
        }
        if (!tb && rpc_tensor_dtype(x) == RPC_DTYPE_FLOAT64) {
            rpc_tensor_unref(y);
            y = rpc_tensor_new_scalar(RPC_DTYPE_FLOAT64, number_of(b));
        }
        RpcTensor *r = tensor_op(th, op, x, y, error);
        rpc_tensor_unref(x);
        rpc_tensor_unref(y);
        return r ? rpc_value_new_tensor(r) : NULL;
    }
    if (is_number(a) && is_number(b)) {
        gboolean ints = rpc_value_type(a) != RPC_VALUE_DOUBLE &&
                        rpc_value_type(b) != RPC_VALUE_DOUBLE && op != OP_DIV;
        if (ints) {
            gint64 x = (gint64)number_of(a), y = (gint64)number_of(b);
            return rpc_value_new_int(op == OP_ADD ? x + y : op == OP_SUB ? x - y : x * y);
        }
        double x = number_of(a), y = number_of(b);
        if (op == OP_DIV && y == 0) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "division by zero");
            return NULL;
        }
        return rpc_value_new_double(op == OP_ADD   ? x + y
                                    : op == OP_SUB ? x - y
                                    : op == OP_MUL ? x * y
                                                   : x / y);
    }
    if (op == OP_ADD && rpc_value_type(a) == RPC_VALUE_STRING &&
        rpc_value_type(b) == RPC_VALUE_STRING)
        return rpc_value_new_string_take(
            g_strconcat(rpc_value_get_string(a), rpc_value_get_string(b), NULL));
type_error:
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                "unsupported operand type(s) for %s: '%s' and '%s'", op_symbol[op],
                rpc_value_type_name(rpc_value_type(a)), rpc_value_type_name(rpc_value_type(b)));
    return NULL;
}

RpcValue *
rpc_stdlib_arith(int op, const RpcValue *a, const RpcValue *b, GError **error)
{
    return arith(NULL, op, a, b, error);
}

/* --- builtins ---------------------------------------------------------------- */
/* The operators run with the serving thread's autograd context, so that a
 * call in a dist autograd context records its graph (AddBackward0, …). */

#define ARG(i) rpc_value_list_get(args, (i))

static RpcValue *
op_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return arith(rpc_dist_autograd_thread(self), OP_ADD, ARG(0), ARG(1), error);
}

static RpcValue *
op_sub(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return arith(rpc_dist_autograd_thread(self), OP_SUB, ARG(0), ARG(1), error);
}

static RpcValue *
op_mul(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return arith(rpc_dist_autograd_thread(self), OP_MUL, ARG(0), ARG(1), error);
}

static RpcValue *
op_div(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return arith(rpc_dist_autograd_thread(self), OP_DIV, ARG(0), ARG(1), error);
}

static gboolean
need_tensor(const char *op, const RpcValue *v, guint i, GError **error)
{
    if (rpc_value_type(v) == RPC_VALUE_TENSOR)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s(): argument %u must be Tensor, not %s", op, i,
                rpc_value_type_name(rpc_value_type(v)));
    return FALSE;
}

static RpcValue *
op_matmul(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    if (!need_tensor("matmul", ARG(0), 0, error) || !need_tensor("matmul", ARG(1), 1, error))
        return NULL;
    RpcTensor *r = rpc_ag_matmul(rpc_dist_autograd_thread(self), rpc_value_get_tensor(ARG(0)),
                                 rpc_value_get_tensor(ARG(1)), error);
    return r ? rpc_value_new_tensor(r) : NULL;
}

static RpcValue *
op_sum(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    if (!need_tensor("sum", ARG(0), 0, error))
        return NULL;
    RpcTensor *r = rpc_ag_sum(rpc_dist_autograd_thread(self), rpc_value_get_tensor(ARG(0)), error);
    return r ? rpc_value_new_tensor(r) : NULL;
}

static RpcValue *
op_stack(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    const RpcValue *list = ARG(0);
    if (rpc_value_type(list) != RPC_VALUE_LIST) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "stack(): argument 'tensors' must be tuple of Tensors, not %s",
                    rpc_value_type_name(rpc_value_type(list)));
        return NULL;
    }
    guint n = rpc_value_list_len(list);
    RpcTensor **ts = g_new0(RpcTensor *, n + 1);
    for (guint i = 0; i < n; i++) {
        if (!need_tensor("stack", rpc_value_list_get(list, i), i, error)) {
            g_free(ts);
            return NULL;
        }
        ts[i] = rpc_value_get_tensor(rpc_value_list_get(list, i));
    }
    RpcTensor *r = rpc_ag_stack(rpc_dist_autograd_thread(self), ts, n, error);
    g_free(ts);
    return r ? rpc_value_new_tensor(r) : NULL;
}

/* --- UDFs ------------------------------------------------------------------- */

#define BIND(fname, names, nreq)                                                                   \
    RpcValue *p[G_N_ELEMENTS(names)] = {0};                                                        \
    if (!rpc_args_bind(fname, args, kwargs, names, nreq, p, error))                                \
    return NULL

static const char *const no_params[] = {NULL};

static RpcValue *
udf_my_function(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"a", "b", "c", NULL};
    BIND("my_function", names, 3);
    RpcValue *ab = rpc_stdlib_arith(OP_ADD, p[0], p[1], error);
    if (ab == NULL)
        return NULL;
    RpcValue *r = rpc_stdlib_arith(OP_ADD, ab, p[2], error);
    rpc_value_unref(ab);
    return r;
}

static RpcValue *
udf_identity(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"x", NULL};
    BIND("identity", names, 1);
    return rpc_value_ref(p[0]);
}

static RpcValue *
udf_no_result(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcValue *p[1] = {0};
    if (!rpc_args_bind("no_result", args, kwargs, no_params, 0, p, error))
        return NULL;
    return rpc_value_none();
}

static gboolean
sleep_seconds(RpcAgent *self, const RpcValue *secs, GError **error)
{
    if (!is_number(secs)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "an integer or float is required");
        return FALSE;
    }
    double s = number_of(secs);
    if (s < 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "sleep length must be non-negative");
        return FALSE;
    }
    return rpc_executor_sleep(rpc_agent_executor(self), (RpcTime)llround(s * RPC_S), error);
}

static RpcValue *
udf_my_sleep_func(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"seconds", NULL};
    BIND("my_sleep_func", names, 0);
    RpcValue *one = rpc_value_new_int(1);
    if (!sleep_seconds(self, p[0] ? p[0] : one, error)) {
        rpc_value_unref(one);
        return NULL;
    }
    return one;
}

static RpcValue *
udf_sleep(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"seconds", NULL};
    BIND("sleep", names, 1);
    return sleep_seconds(self, p[0], error) ? rpc_value_none() : NULL;
}

static RpcValue *
udf_raise_func(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "Expected error");
    return NULL;
}

static RpcValue *
udf_raise_func_escape(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE,
                        "\nFirst line of error \n next line of error \n last line of error");
    return NULL;
}

/* CustomException(bool, msg) cannot be rebuilt from a message alone; the
 * caller gets "Failed to create original exception type…". */
static RpcValue *
udf_custom_raise_func(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_USER, "custom exception");
    return NULL;
}

static RpcValue *
udf_raise_or_inc(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"value", NULL};
    BIND("raise_or_inc", names, 1);
    if (rpc_value_type(p[0]) == RPC_VALUE_TENSOR &&
        rpc_tensor_numel(rpc_value_get_tensor(p[0])) == 2) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "Expected error");
        return NULL;
    }
    RpcValue *one = rpc_value_new_int(1);
    RpcValue *r = rpc_stdlib_arith(OP_ADD, p[0], one, error);
    rpc_value_unref(one);
    return r;
}

static RpcValue *
udf_return_callee_id(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_new_int(rpc_agent_id(self));
}

static RpcValue *
udf_set_value(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"value", NULL};
    BIND("set_value", names, 1);
    rpc_agent_slot_set(self, "VALUE", rpc_value_ref(p[0]));
    return rpc_value_none();
}

static RpcValue *
udf_get_value(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcValue *v = rpc_agent_slot_get(self, "VALUE");
    return v ? rpc_value_ref(v) : rpc_value_none();
}

static RpcValue *
ones_value(gint64 n, gint64 m)
{
    return rpc_value_new_tensor(rpc_tensor_ones2(n, m));
}

static RpcValue *
args2(RpcValue *x, RpcValue *y)
{
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, x);
    rpc_value_list_append(l, y);
    return l;
}

/* nested_rpc(dst): rpc_sync(dst, add, (ones(2,2), 1)) */
static RpcValue *
udf_nested_rpc(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", NULL};
    BIND("nested_rpc", names, 1);
    return rpc_sync(self, p[0], "add", args2(ones_value(2, 2), rpc_value_new_int(1)), NULL,
                    RPC_TIMEOUT_UNSET, error);
}

/* multi_layer_nested_async_rpc(dst, world_size, ttl): fire and forget. */
static RpcValue *
udf_multi_layer_nested_async_rpc(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                                 GError **error)
{
    static const char *const names[] = {"dst", "world_size", "ttl", NULL};
    BIND("multi_layer_nested_async_rpc", names, 3);
    gint64 dst = rpc_value_get_int(p[0]), ws = rpc_value_get_int(p[1]);
    gint64 ttl = rpc_value_get_int(p[2]);
    if (ttl > 0) {
        RpcValue *to = rpc_value_new_int(dst);
        RpcValue *a = rpc_value_new_list();
        rpc_value_list_append(a, rpc_value_new_int((dst + 1) % ws));
        rpc_value_list_append(a, rpc_value_new_int(ws));
        rpc_value_list_append(a, rpc_value_new_int(ttl - 1));
        RpcFuture *f =
            rpc_async(self, to, "multi_layer_nested_async_rpc", a, NULL, RPC_TIMEOUT_UNSET, error);
        rpc_value_unref(to);
        if (f == NULL)
            return NULL;
        rpc_future_unref(f); /* not awaited */
    }
    return rpc_value_new_int(0);
}

static RpcValue *
udf_light_rpc(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_new_int(0);
}

/* heavy_rpc(x): a millisecond of virtual work, then 0. */
static RpcValue *
udf_heavy_rpc(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    if (!rpc_executor_sleep(rpc_agent_executor(self), RPC_MS, error))
        return NULL;
    return rpc_value_new_int(0);
}

/* block_until_unblocked(): waits until unblock() runs on the same worker. */
static RpcFuture *
unblock_future(RpcAgent *self)
{
    RpcValue *slot = rpc_agent_slot_get(self, "UNBLOCK");
    if (slot == NULL) {
        RpcFuture *f = rpc_future_new(rpc_agent_executor(self));
        rpc_future_set_description(f, "block_until_unblocked(): someone to call unblock()");
        slot = rpc_value_new_future(f);
        rpc_future_unref(f);
        rpc_agent_slot_set(self, "UNBLOCK", slot);
    }
    return rpc_value_get_future(slot);
}

static RpcValue *
udf_block_until_unblocked(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                          GError **error)
{
    RpcFuture *f = rpc_future_ref(unblock_future(self));
    RpcValue *v = rpc_future_wait(f, error);
    rpc_future_unref(f);
    if (v == NULL)
        return NULL;
    rpc_value_unref(v);
    return rpc_value_new_int(0);
}

static RpcValue *
udf_unblock(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    rpc_future_complete_if_needed(unblock_future(self), rpc_value_none());
    return rpc_value_none();
}

/* min(*args): Python's builtin over numbers. */
static RpcValue *
udf_min(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    guint n = rpc_value_list_len(args);
    if (n == 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "min expected at least 1 argument, got 0");
        return NULL;
    }
    const RpcValue *best = ARG(0);
    for (guint i = 0; i < n; i++) {
        if (!is_number(ARG(i))) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "'<' not supported between instances of '%s' and 'int'",
                        rpc_value_type_name(rpc_value_type(ARG(i))));
            return NULL;
        }
        if (number_of(ARG(i)) < number_of(best))
            best = ARG(i);
    }
    return rpc_value_ref((RpcValue *)best);
}

static RpcValue *
udf_return_future(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcFuture *f = rpc_future_new(rpc_agent_executor(self));
    RpcValue *v = rpc_value_new_future(f);
    rpc_future_unref(f);
    return v;
}

static RpcValue *
udf_fail_on_fut(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return rpc_value_none();
}

/* --- async_execution functions (spec §5) ----------------------------------- */

/* The future returned by an async function, from rpc_async's result. */
static RpcValue *
future_value(RpcFuture *f)
{
    RpcValue *v = rpc_value_new_future(f);
    rpc_future_unref(f);
    return v;
}

static RpcFuture *
async_add_call(RpcAgent *self, const RpcValue *to, const RpcValue *x, const RpcValue *y,
               GError **error)
{
    return rpc_async(self, to, "add",
                     args2(rpc_value_ref((RpcValue *)x), rpc_value_ref((RpcValue *)y)), NULL,
                     RPC_TIMEOUT_UNSET, error);
}

static RpcValue *
udf_async_add(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"to", "x", "y", NULL};
    BIND("async_add", names, 3);
    RpcFuture *f = async_add_call(self, p[0], p[1], p[2], error);
    return f ? future_value(f) : NULL;
}

/* then-callback: parent's value + data (a value); shared with object.c */
RpcValue *
rpc_stdlib_then_add(RpcFuture *parent, gpointer data, GError **error)
{
    RpcValue *v = rpc_future_wait(parent, error);
    if (v == NULL)
        return NULL;
    RpcValue *r = rpc_stdlib_arith(OP_ADD, v, data, error);
    rpc_value_unref(v);
    return r;
}

static RpcFuture *
chain_add(RpcFuture *f, const RpcValue *z)
{
    RpcFuture *c = rpc_future_then(f, rpc_stdlib_then_add, rpc_value_ref((RpcValue *)z),
                                   (GDestroyNotify)rpc_value_unref, NULL);
    rpc_future_unref(f);
    return c;
}

static RpcValue *
udf_async_add_chained(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"to", "x", "y", "z", NULL};
    BIND("async_add_chained", names, 4);
    RpcFuture *f = async_add_call(self, p[0], p[1], p[2], error);
    return f ? future_value(chain_add(f, p[3])) : NULL;
}

typedef struct {
    RpcFuture *ret;
    RpcValue *z;
} CtorState;

static void
ctor_state_free(gpointer p)
{
    CtorState *s = p;
    rpc_future_unref(s->ret);
    rpc_value_unref(s->z);
    g_free(s);
}

static RpcValue *
then_set_ret(RpcFuture *parent, gpointer data, GError **error)
{
    CtorState *s = data;
    RpcValue *sum = rpc_stdlib_then_add(parent, s->z, error);
    if (sum == NULL)
        return NULL;
    if (!rpc_future_set_result(s->ret, sum, error))
        return NULL;
    return rpc_value_none();
}

static RpcValue *
udf_async_add_with_future_ctor(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                               GError **error)
{
    static const char *const names[] = {"to", "x", "y", "z", NULL};
    BIND("async_add_with_future_ctor", names, 4);
    RpcFuture *f = async_add_call(self, p[0], p[1], p[2], error);
    if (f == NULL)
        return NULL;
    CtorState *s = g_new(CtorState, 1);
    s->ret = rpc_future_new(rpc_agent_executor(self));
    s->z = rpc_value_ref(p[3]);
    RpcFuture *ret = rpc_future_ref(s->ret);
    rpc_future_unref(rpc_future_then(f, then_set_ret, s, ctor_state_free, NULL));
    rpc_future_unref(f);
    return future_value(ret);
}

static RpcValue *
udf_async_add_nested(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"to", "x", "y", "z", NULL};
    BIND("async_add_nested", names, 4);
    RpcValue *a = rpc_value_new_list();
    for (int i = 0; i < 3; i++)
        rpc_value_list_append(a, rpc_value_ref(p[i]));
    RpcFuture *f = rpc_async(self, p[0], "async_add", a, NULL, RPC_TIMEOUT_UNSET, error);
    return f ? future_value(chain_add(f, p[3])) : NULL;
}

static RpcValue *
udf_async_add_chained_multi(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                            GError **error)
{
    static const char *const names[] = {"to", "x", "num", "step", NULL};
    BIND("async_add_chained_multi", names, 4);
    RpcValue *zero = rpc_value_new_int(0);
    RpcFuture *f = async_add_call(self, p[0], p[1], zero, error);
    rpc_value_unref(zero);
    if (f == NULL)
        return NULL;
    for (gint64 i = 0; i < rpc_value_get_int(p[2]); i++)
        f = chain_add(f, p[3]);
    return future_value(f);
}

typedef struct {
    gint refcount;
    RpcFuture *ret;
    RpcValue *acc;
    gint64 remaining;
} Fanout;

static void
fanout_unref(gpointer p)
{
    Fanout *s = p;
    if (--s->refcount > 0)
        return;
    rpc_future_unref(s->ret);
    rpc_value_unref(s->acc);
    g_free(s);
}

static RpcValue *
then_fanout(RpcFuture *parent, gpointer data, GError **error)
{
    Fanout *s = data;
    RpcValue *v = rpc_future_wait(parent, error);
    if (v == NULL) {
        rpc_future_fail_if_needed(s->ret, rpc_value_new_error_from_gerror(*error));
        return NULL;
    }
    RpcValue *sum = rpc_stdlib_arith(OP_ADD, s->acc, v, error);
    rpc_value_unref(v);
    if (sum == NULL)
        return NULL;
    rpc_value_unref(s->acc);
    s->acc = sum;
    if (--s->remaining == 0)
        rpc_future_complete_if_needed(s->ret, rpc_value_ref(s->acc));
    return rpc_value_none();
}

static RpcValue *
udf_async_add_multi_fanout(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                           GError **error)
{
    static const char *const names[] = {"to", "x", "num", "step", NULL};
    BIND("async_add_multi_fanout", names, 4);
    gint64 num = rpc_value_get_int(p[2]);
    Fanout *s = g_new0(Fanout, 1);
    s->refcount = 1;
    s->ret = rpc_future_new(rpc_agent_executor(self));
    s->acc = rpc_value_new_int(0);
    s->remaining = num;
    RpcValue *zero = rpc_value_new_int(0);
    for (gint64 i = 0; i < num; i++) {
        RpcFuture *f = async_add_call(self, p[0], i == 0 ? p[1] : zero, p[3], error);
        if (f == NULL) {
            rpc_value_unref(zero);
            fanout_unref(s);
            return NULL;
        }
        s->refcount++;
        rpc_future_unref(rpc_future_then(f, then_fanout, s, fanout_unref, NULL));
        rpc_future_unref(f);
    }
    rpc_value_unref(zero);
    RpcFuture *ret = rpc_future_ref(s->ret);
    if (num == 0)
        rpc_future_complete_if_needed(ret, rpc_value_ref(p[1]));
    fanout_unref(s);
    return future_value(ret);
}

static RpcValue *
udf_async_raise_func(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Expected error");
    return NULL;
}

static RpcValue *
udf_async_wrong_type(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    return ones_value(2, 2);
}

/* --- RRef helpers (spec §11.0) -------------------------------------------------- */

static gboolean
need_rref(const char *f, const RpcValue *v, RpcRRef **out, GError **error)
{
    *out = v ? rpc_value_get_rref(v) : NULL;
    if (*out != NULL)
        return TRUE;
    g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE, "%s() expects an RRef, not %s", f,
                v ? rpc_value_type_name(rpc_value_type(v)) : "nothing");
    return FALSE;
}

static RpcValue *
remote_add(RpcAgent *self, const RpcValue *dst, gint64 k, GError **error)
{
    return rpc_remote(self, dst, "add", args2(ones_value(2, 2), rpc_value_new_int(k)), NULL,
                      RPC_TIMEOUT_UNSET, error);
}

/* nested_remote(dst): remote(dst, add, (ones(2,2), 3)).to_here() */
static RpcValue *
udf_nested_remote(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", NULL};
    BIND("nested_remote", names, 1);
    RpcValue *r = remote_add(self, p[0], 3, error);
    if (r == NULL)
        return NULL;
    RpcValue *v = rpc_rref_to_here(rpc_value_get_rref(r), RPC_TIMEOUT_UNSET, error);
    rpc_value_unref(r);
    return v;
}

/* nested_rref(dst): (remote(dst, add, (ones,1)), remote(dst, add, (ones,2))) */
static RpcValue *
udf_nested_rref(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", NULL};
    BIND("nested_rref", names, 1);
    RpcValue *a = remote_add(self, p[0], 1, error);
    RpcValue *b = a ? remote_add(self, p[0], 2, error) : NULL;
    if (b == NULL) {
        rpc_value_unref(a);
        return NULL;
    }
    return args2(a, b);
}

/* rpc_return_rref(dst): remote(dst, add, (ones(2,2), 1)) */
static RpcValue *
udf_rpc_return_rref(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", NULL};
    BIND("rpc_return_rref", names, 1);
    return remote_add(self, p[0], 1, error);
}

/* rref_forward_chain(dst, world_size, rref, ttl) */
static RpcValue *
udf_rref_forward_chain(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"dst", "world_size", "rref", "ttl", NULL};
    BIND("rref_forward_chain", names, 4);
    RpcRRef *r;
    if (!need_rref("rref_forward_chain", p[2], &r, error))
        return NULL;
    gint64 dst = rpc_value_get_int(p[0]), ws = rpc_value_get_int(p[1]);
    gint64 ttl = rpc_value_get_int(p[3]);
    if (ttl <= 0)
        return rpc_rref_to_here(r, RPC_TIMEOUT_UNSET, error);
    RpcValue *a = rpc_value_new_list();
    rpc_value_list_append(a, rpc_value_new_int((dst + 1) % ws));
    rpc_value_list_append(a, rpc_value_new_int(ws));
    rpc_value_list_append(a, rpc_value_ref(p[2]));
    rpc_value_list_append(a, rpc_value_new_int(ttl - 1));
    RpcValue *to = rpc_value_new_int(dst);
    RpcValue *next = rpc_remote(self, to, "rref_forward_chain", a, NULL, RPC_TIMEOUT_UNSET, error);
    rpc_value_unref(to);
    if (next == NULL)
        return NULL;
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, next);
    return l;
}

/* add_rref_to_value(rref, v): rref.to_here() + v */
static RpcValue *
udf_add_rref_to_value(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"rref", "value", NULL};
    BIND("add_rref_to_value", names, 2);
    RpcRRef *r;
    if (!need_rref("add_rref_to_value", p[0], &r, error))
        return NULL;
    RpcValue *v = rpc_rref_to_here(r, RPC_TIMEOUT_UNSET, error);
    if (v == NULL)
        return NULL;
    RpcValue *sum = rpc_stdlib_arith(OP_ADD, v, p[1], error);
    rpc_value_unref(v);
    return sum;
}

/* my_rref_function(a, b): a.to_here() + b.to_here() */
static RpcValue *
udf_my_rref_function(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"rref_a", "rref_b", NULL};
    BIND("my_rref_function", names, 2);
    RpcRRef *a, *b;
    if (!need_rref("my_rref_function", p[0], &a, error) ||
        !need_rref("my_rref_function", p[1], &b, error))
        return NULL;
    RpcValue *x = rpc_rref_to_here(a, RPC_TIMEOUT_UNSET, error);
    RpcValue *y = x ? rpc_rref_to_here(b, RPC_TIMEOUT_UNSET, error) : NULL;
    RpcValue *sum = y ? rpc_stdlib_arith(OP_ADD, x, y, error) : NULL;
    rpc_value_unref(x);
    rpc_value_unref(y);
    return sum;
}

/* check_rref_confirmed(rref): rref.confirmed_by_owner() */
static RpcValue *
udf_check_rref_confirmed(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs,
                         GError **error)
{
    static const char *const names[] = {"rref", NULL};
    BIND("check_rref_confirmed", names, 1);
    RpcRRef *r;
    if (!need_rref("check_rref_confirmed", p[0], &r, error))
        return NULL;
    return rpc_value_new_bool(rpc_rref_confirmed_by_owner(r));
}

/* rref_to_here(rref) / rref_local_value(rref): the value on this worker. */
static RpcValue *
udf_rref_to_here(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"rref", NULL};
    BIND("rref_to_here", names, 1);
    RpcRRef *r;
    if (!need_rref("rref_to_here", p[0], &r, error))
        return NULL;
    return rpc_rref_to_here(r, RPC_TIMEOUT_UNSET, error);
}

/* make_rref(v): RRef(v), a local OwnerRRef on the callee. */
static RpcValue *
udf_make_rref(RpcAgent *self, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    static const char *const names[] = {"value", NULL};
    BIND("make_rref", names, 1);
    return rpc_rref_new_local(self, rpc_value_ref(p[0]), error);
}

/* --- the table ------------------------------------------------------------------ */

#define BUILTIN(n, q, f, lo, hi, d)                                                                \
    {                                                                                              \
        n, q, f, RPC_FUNC_BUILTIN, lo, hi, d                                                       \
    }
#define UDF(n, f, d)                                                                               \
    {                                                                                              \
        n, NULL, f, 0, 0, -1, d                                                                    \
    }
#define ASYNC(n, f, d)                                                                             \
    {                                                                                              \
        n, NULL, f, RPC_FUNC_ASYNC, 0, -1, d                                                       \
    }
#define INTERNAL(n, q, f)                                                                          \
    {                                                                                              \
        n, q, f, RPC_FUNC_INTERNAL, 0, -1, "used by the runtime"                                   \
    }

static const RpcFunctionDef stdlib_defs[] = {
    BUILTIN("add", "aten::add", op_add, 2, 2, "torch.add(a, b)"),
    BUILTIN("sub", "aten::sub", op_sub, 2, 2, "torch.sub(a, b)"),
    BUILTIN("mul", "aten::mul", op_mul, 2, 2, "torch.mul(a, b)"),
    BUILTIN("div", "aten::div", op_div, 2, 2, "torch.div(a, b)"),
    BUILTIN("matmul", "aten::matmul", op_matmul, 2, 2, "torch.matmul(a, b)"),
    BUILTIN("sum", "aten::sum", op_sum, 1, 1, "torch.sum(x)"),
    BUILTIN("stack", "aten::stack", op_stack, 1, 1, "torch.stack(list)"),
    UDF("my_function", udf_my_function, "a + b + c (kwargs a, b, c)"),
    UDF("identity", udf_identity, "returns its argument"),
    UDF("no_result", udf_no_result, "returns None; takes no arguments"),
    UDF("my_sleep_func", udf_my_sleep_func, "sleeps s seconds (default 1), returns 1"),
    UDF("sleep", udf_sleep, "sleeps s seconds of virtual time, returns None"),
    UDF("raise_func", udf_raise_func, "raises ValueError('Expected error')"),
    UDF("raise_func_escape", udf_raise_func_escape, "raises ValueError with newlines"),
    UDF("custom_raise_func", udf_custom_raise_func,
        "raises an exception type that cannot be rebuilt from its message"),
    UDF("raise_or_inc", udf_raise_or_inc, "raises if numel(v) == 2, else v + 1"),
    UDF("return_callee_id", udf_return_callee_id, "the callee's worker id"),
    UDF("set_value", udf_set_value, "stores v in the callee's VALUE slot"),
    UDF("get_value", udf_get_value, "the callee's VALUE slot"),
    UDF("nested_rpc", udf_nested_rpc, "rpc_sync(dst, add, (ones(2,2), 1))"),
    UDF("multi_layer_nested_async_rpc", udf_multi_layer_nested_async_rpc,
        "fire-and-forget chain of ttl calls"),
    UDF("light_rpc", udf_light_rpc, "returns 0"),
    UDF("heavy_rpc", udf_heavy_rpc, "1 ms of virtual work, returns 0"),
    UDF("block_until_unblocked", udf_block_until_unblocked,
        "blocks until unblock() runs on the same worker"),
    UDF("unblock", udf_unblock, "releases block_until_unblocked()"),
    UDF("min", udf_min, "Python's min(*args)"),
    UDF("return_future", udf_return_future, "returns a Future (cannot be pickled)"),
    UDF("fail_on_fut", udf_fail_on_fut, "takes a Future argument (cannot be pickled)"),
    UDF("nested_remote", udf_nested_remote, "remote(dst, add, (ones(2,2), 3)).to_here()"),
    UDF("nested_rref", udf_nested_rref, "two RRefs created on dst, returned as a list"),
    UDF("rpc_return_rref", udf_rpc_return_rref, "returns remote(dst, add, (ones(2,2), 1))"),
    UDF("rref_forward_chain", udf_rref_forward_chain,
        "forwards an RRef through ttl hops of remote(), then to_here()"),
    UDF("add_rref_to_value", udf_add_rref_to_value, "rref.to_here() + v"),
    UDF("my_rref_function", udf_my_rref_function, "a.to_here() + b.to_here()"),
    UDF("check_rref_confirmed", udf_check_rref_confirmed, "rref.confirmed_by_owner()"),
    UDF("rref_to_here", udf_rref_to_here, "rref.to_here() on the callee"),
    UDF("make_rref", udf_make_rref, "RRef(v): a local OwnerRRef on the callee"),
    ASYNC("async_add", udf_async_add, "@async_execution: rpc_async(to, add, (x, y))"),
    ASYNC("async_add_chained", udf_async_add_chained, "@async_execution: add(x, y).then(+z)"),
    ASYNC("async_add_with_future_ctor", udf_async_add_with_future_ctor,
          "@async_execution: a Future completed from a callback"),
    ASYNC("async_add_nested", udf_async_add_nested,
          "@async_execution: rpc_async(to, async_add, …).then(+z)"),
    ASYNC("async_add_chained_multi", udf_async_add_chained_multi,
          "@async_execution: num chained thens of +step"),
    ASYNC("async_add_multi_fanout", udf_async_add_multi_fanout,
          "@async_execution: num parallel adds joined by a counter future"),
    ASYNC("async_raise_func", udf_async_raise_func,
          "@async_execution: raises RuntimeError('Expected error')"),
    ASYNC("async_wrong_type", udf_async_wrong_type, "@async_execution: returns a tensor"),
    INTERNAL("_gather_to_leader", "torch.distributed.rpc.api._gather_to_leader",
             rpc_agent_internal_gather_to_leader),
    INTERNAL("_broadcast_to_followers", "torch.distributed.rpc.api._broadcast_to_followers",
             rpc_agent_internal_broadcast_to_followers),
    INTERNAL("_rref_typeof_on_owner", "torch.distributed.rpc.rref_proxy._rref_type_cont",
             rpc_rref_internal_typeof),
    INTERNAL("_rref_proxy_invoke", "torch.distributed.rpc.rref_proxy._local_invoke",
             rpc_rref_internal_invoke),
    {"_rref_proxy_invoke_async", "torch.distributed.rpc.rref_proxy._local_invoke_async_execution",
     rpc_rref_internal_invoke, RPC_FUNC_INTERNAL | RPC_FUNC_ASYNC, 0, -1, "used by the runtime"},
};

void
rpc_stdlib_register(RpcRegistry *reg)
{
    for (gsize i = 0; i < G_N_ELEMENTS(stdlib_defs); i++)
        rpc_registry_add(reg, &stdlib_defs[i]);
    rpc_dist_autograd_register(reg); /* the catalogue's dist autograd helpers */
}
