/* test-future.c — RpcFuture: spec §2 and conformance cases 34–50 that apply
 * without RPC.  Futures are completed by tasks on simulated workers, so waits
 * really block virtual threads and times are exact. */
#include <string.h>

#include "core/future.h"
#include "sim/error.h"
#include "sim/trace.h"
#include "sim/world.h"

typedef struct {
    SimWorld *w;
    RpcExecutor *ex0, *ex1;
    guint live_before;
} Fx;

static void
fx_setup(Fx *fx, gconstpointer unused)
{
    fx->live_before = rpc_future_live_count();
    fx->w = sim_world_new(42, 2, 16);
    fx->ex0 = sim_world_executor(fx->w, 0);
    fx->ex1 = sim_world_executor(fx->w, 1);
    sim_trace_keep_lines(sim_kernel_trace(sim_world_kernel(fx->w)), TRUE);
}

static void
fx_teardown(Fx *fx, gconstpointer unused)
{
    sim_world_free(fx->w);
    /* Values and errors are refcounted and never leak: every future made by
     * the test is gone. */
    g_assert_cmpuint(rpc_future_live_count(), ==, fx->live_before);
}

static SimTime
now(Fx *fx)
{
    return sim_kernel_now(sim_world_kernel(fx->w));
}

static gint64
wait_int(RpcFuture *f)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rpc_value_type(v), ==, RPC_VALUE_INT);
    gint64 i = rpc_value_get_int(v);
    rpc_value_unref(v);
    return i;
}

static void
assert_wait_error(RpcFuture *f, RpcErrorKind kind, const char *substring)
{
    GError *err = NULL;
    RpcValue *v = rpc_future_wait(f, &err);
    g_assert_null(v);
    g_assert_error(err, RPC_ERROR, (gint)kind);
    if (strstr(err->message, substring) == NULL)
        g_error("'%s' does not contain '%s'", err->message, substring);
    g_error_free(err);
}

static RpcValue *
value_error(RpcErrorKind kind, const char *msg)
{
    return rpc_value_new_error(kind, msg);
}

/* A task that sleeps, then completes a future with an int or an error. */
typedef struct {
    RpcExecutor *ex;
    RpcFuture *f;
    SimTime delay;
    gint64 value;
    gboolean fail;
    guint thread_seen; /* thread that completed it */
} Setter;

static void
setter_run(gpointer data)
{
    Setter *s = data;
    g_assert_true(rpc_executor_sleep(s->ex, s->delay, NULL));
    s->thread_seen = rpc_executor_current_thread(s->ex);
    if (s->fail)
        g_assert_true(
            rpc_future_set_exception(s->f, value_error(RPC_ERROR_VALUE, "Expected error"), NULL));
    else
        g_assert_true(rpc_future_set_result(s->f, rpc_value_new_int(s->value), NULL));
}

static void
set_later(RpcExecutor *ex, Setter *s, RpcFuture *f, SimTime delay, gint64 value, gboolean fail)
{
    s->ex = ex;
    s->f = f;
    s->delay = delay;
    s->value = value;
    s->fail = fail;
    rpc_executor_spawn(ex, setter_run, s, NULL);
}

/* --- state and completion ------------------------------------------------ */

static void
test_new_not_done(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_false(rpc_future_done(f));
    GError *err = NULL;
    g_assert_null(rpc_future_value(f, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    rpc_future_unref(f);
}

static void
test_set_result(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(5), NULL));
    g_assert_true(rpc_future_done(f));
    g_assert_false(rpc_future_has_error(f));
    g_assert_cmpint(wait_int(f), ==, 5);
    GError *err = NULL;
    RpcValue *v = rpc_future_value(f, &err);
    g_assert_no_error(err);
    g_assert_cmpint(rpc_value_get_int(v), ==, 5);
    rpc_value_unref(v);
    rpc_future_unref(f);
}

static void
test_complete_twice(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(1), NULL));
    GError *err = NULL;
    g_assert_false(rpc_future_set_result(f, rpc_value_new_int(2), &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==,
                    "Attempting to mark a completed Future as complete again. Note that a Future "
                    "can only be marked completed once.");
    g_clear_error(&err);
    g_assert_false(rpc_future_set_exception(f, value_error(RPC_ERROR_VALUE, "x"), &err));
    g_assert_nonnull(strstr(err->message, "Future can only be marked completed once"));
    g_clear_error(&err);
    /* The first value stands. */
    g_assert_cmpint(wait_int(f), ==, 1);
    /* The tolerant internal variants report who won. */
    g_assert_false(rpc_future_complete_if_needed(f, rpc_value_new_int(3)));
    g_assert_false(rpc_future_fail_if_needed(f, value_error(RPC_ERROR_RUNTIME, "late")));
    g_assert_cmpint(wait_int(f), ==, 1);
    rpc_future_unref(f);
}

/* Case 34 (sticky), 35 (done after error), 47 (set_exception). */
static void
test_set_exception_sticky(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_true(
        rpc_future_set_exception(f, value_error(RPC_ERROR_VALUE, "Intentional Value Error"), NULL));
    g_assert_true(rpc_future_done(f));
    g_assert_true(rpc_future_has_error(f));
    for (int i = 0; i < 3; i++)
        assert_wait_error(f, RPC_ERROR_VALUE, "Intentional Value Error");
    GError *err = NULL;
    g_assert_null(rpc_future_value(f, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
    g_assert_cmpstr(err->message, ==, "Intentional Value Error");
    g_clear_error(&err);
    rpc_future_unref(f);
}

static void
test_set_exception_not_exception(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    GError *err = NULL;
    g_assert_false(rpc_future_set_exception(f, rpc_value_new_int(5), &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_ASSERTION);
    g_assert_cmpstr(err->message, ==, "5 is of type <class 'int'>, not an Exception.");
    g_clear_error(&err);
    g_assert_false(rpc_future_done(f));
    /* set_gerror carries the GError's kind. */
    GError *e = g_error_new_literal(RPC_ERROR, RPC_ERROR_TYPE, "bad type");
    g_assert_true(rpc_future_set_gerror(f, e, NULL));
    g_error_free(e);
    assert_wait_error(f, RPC_ERROR_TYPE, "bad type");
    rpc_future_unref(f);
}

/* Case 34 with 20 futures failed by another worker; then every wait fails
 * again with the same error. */
static void
test_wait_twice_many(Fx *fx, gconstpointer u)
{
    RpcFuture *fs[20];
    Setter setters[20];
    for (int i = 0; i < 20; i++) {
        fs[i] = rpc_future_new(fx->ex0);
        set_later(fx->ex1, &setters[i], fs[i], (SimTime)(i + 1) * SIM_MS, 0, TRUE);
    }
    GError *err = NULL;
    g_assert_null(rpc_future_wait_all(fx->ex0, fs, 20, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
    g_assert_cmpstr(err->message, ==, "Expected error");
    g_clear_error(&err);
    /* wait_all returned at the first failure, at 1 ms. */
    g_assert_cmpint(now(fx), ==, 1 * SIM_MS);
    for (int i = 0; i < 20; i++) {
        assert_wait_error(fs[i], RPC_ERROR_VALUE, "Expected error");
        g_assert_true(rpc_future_done(fs[i]));
        rpc_future_unref(fs[i]);
    }
    /* worker1 has 16 threads: setters 17..20 queue until setters 1..4 end
     * (at 1..4 ms), so the last one (20 ms of sleep) ends at 4 + 20 ms. */
    g_assert_cmpint(now(fx), ==, 24 * SIM_MS);
}

/* --- then ------------------------------------------------------------------ */

static RpcValue *
add_delta(RpcFuture *parent, gpointer data, GError **error)
{
    RpcValue *v = rpc_future_wait(parent, error);
    if (v == NULL)
        return NULL;
    RpcValue *r = rpc_value_new_int(rpc_value_get_int(v) + GPOINTER_TO_INT(data));
    rpc_value_unref(v);
    return r;
}

/* Case 37. */
static void
test_then_simple(Fx *fx, gconstpointer u)
{
    Setter s;
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, add_delta, GINT_TO_POINTER(1), NULL, NULL);
    set_later(fx->ex1, &s, f, SIM_S, 2, FALSE);
    g_assert_false(rpc_future_done(c));
    g_assert_cmpint(wait_int(f), ==, 2);
    g_assert_true(rpc_future_done(c));
    g_assert_cmpint(wait_int(c), ==, 3);
    g_assert_cmpint(wait_int(f), ==, 2);
    g_assert_cmpint(now(fx), ==, SIM_S);
    rpc_future_unref(c);
    rpc_future_unref(f);
}

static RpcValue *
wrong_arity(RpcFuture *parent, gpointer data, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                        "my_function() missing 2 required positional arguments: 'b' and 'c'");
    return NULL;
}

/* Case 38: the callback's failure surfaces only through the child. */
static void
test_then_callback_error(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, wrong_arity, NULL, NULL, NULL);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(2), NULL));
    g_assert_cmpint(wait_int(f), ==, 2);
    GError *err = NULL;
    g_assert_null(rpc_future_wait(c, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==,
                    "Got the following error when running the callback: TypeError: my_function() "
                    "missing 2 required positional arguments: 'b' and 'c'");
    g_clear_error(&err);
    rpc_future_unref(c);
    rpc_future_unref(f);
}

/* Case 40. */
static void
test_then_multi(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *cs[10];
    for (int i = 0; i < 10; i++)
        cs[i] = rpc_future_then(f, add_delta, GINT_TO_POINTER(i), NULL, NULL);
    Setter s;
    set_later(fx->ex1, &s, f, SIM_MS, 100, FALSE);
    for (int i = 0; i < 10; i++) {
        g_assert_cmpint(wait_int(cs[i]), ==, 100 + i);
        rpc_future_unref(cs[i]);
    }
    g_assert_cmpint(wait_int(f), ==, 100);
    rpc_future_unref(f);
}

/* Case 41: 20 chained thens, each +1. */
static void
test_then_chain(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *last = rpc_future_ref(f);
    for (int i = 0; i < 20; i++) {
        RpcFuture *next = rpc_future_then(last, add_delta, GINT_TO_POINTER(1), NULL, NULL);
        rpc_future_unref(last);
        last = next;
    }
    Setter s;
    set_later(fx->ex1, &s, f, SIM_MS, 1, FALSE);
    g_assert_cmpint(wait_int(last), ==, 21);
    rpc_future_unref(last);
    rpc_future_unref(f);
}

static RpcValue *
catch_and_raise(RpcFuture *parent, gpointer data, GError **error)
{
    gboolean *ran = data;
    *ran = TRUE;
    GError *inner = NULL;
    RpcValue *v = rpc_future_wait(parent, &inner);
    g_assert_null(v);
    g_assert_error(inner, RPC_ERROR, RPC_ERROR_VALUE);
    g_assert_cmpstr(inner->message, ==, "Expected error");
    g_error_free(inner);
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Another expected error");
    return NULL;
}

/* Case 43: callbacks run on error too. */
static void
test_then_on_error(Fx *fx, gconstpointer u)
{
    gboolean ran = FALSE;
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, catch_and_raise, &ran, NULL, NULL);
    Setter s;
    set_later(fx->ex1, &s, f, SIM_MS, 0, TRUE);
    assert_wait_error(c, RPC_ERROR_RUNTIME, "Another expected error");
    g_assert_true(ran);
    assert_wait_error(f, RPC_ERROR_VALUE, "Expected error");
    rpc_future_unref(c);
    rpc_future_unref(f);
}

/* Case 44. */
static void
test_then_none(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    GError *err = NULL;
    g_assert_null(rpc_future_then(f, NULL, NULL, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_TYPE);
    g_assert_cmpstr(err->message, ==, "incompatible function arguments.");
    g_clear_error(&err);
    g_assert_false(rpc_future_add_done_callback(f, NULL, NULL, NULL, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_TYPE);
    g_clear_error(&err);
    rpc_future_unref(f);
}

static RpcValue *
value_of_parent(RpcFuture *parent, gpointer data, GError **error)
{
    return rpc_future_value(parent, error);
}

/* Case 47 (second half): then-callback calling value() on a failed parent. */
static void
test_then_value_on_error(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_true(
        rpc_future_set_exception(f, value_error(RPC_ERROR_VALUE, "Intentional Value Error"), NULL));
    /* The parent is complete: the callback runs inline, inside then(). */
    RpcFuture *c = rpc_future_then(f, value_of_parent, NULL, NULL, NULL);
    g_assert_true(rpc_future_done(c));
    GError *err = NULL;
    g_assert_null(rpc_future_wait(c, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==,
                    "Got the following error when running the callback: ValueError: Intentional "
                    "Value Error");
    g_clear_error(&err);
    rpc_future_unref(c);
    rpc_future_unref(f);
}

static RpcValue *
return_null(RpcFuture *parent, gpointer data, GError **error)
{
    return NULL;
}

static void
test_then_null_is_none(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, return_null, NULL, NULL, NULL);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(1), NULL));
    RpcValue *v = rpc_future_wait(c, NULL);
    g_assert_true(rpc_value_is_none(v));
    rpc_value_unref(v);
    rpc_future_unref(c);
    rpc_future_unref(f);
}

/* --- add_done_callback and ordering ------------------------------------- */

static gboolean
set_x(RpcFuture *f, gpointer data, GError **error)
{
    gint *slot = data;
    slot[0] = slot[1];
    return TRUE;
}

static RpcValue *
value_plus_x(RpcFuture *parent, gpointer data, GError **error)
{
    gint *x = data;
    RpcValue *v = rpc_future_value(parent, error);
    RpcValue *r = rpc_value_new_int(rpc_value_get_int(v) + *x);
    rpc_value_unref(v);
    return r;
}

/* Case 48: registration order, then() and add_done_callback interleaved. */
static void
test_callback_order(Fx *fx, gconstpointer u)
{
    gint x = 0;
    gint set1[2] = {0, 1}, set2[2] = {0, 2};
    RpcFuture *f = rpc_future_new(fx->ex0);
    /* set1 and set2 write through their slot 0 into x via a pointer trick:
     * use x directly as the target. */
    gint *t1 = g_new(gint, 2), *t2 = g_new(gint, 2);
    t1[1] = set1[1];
    t2[1] = set2[1];
    rpc_future_add_done_callback(f, set_x, t1, NULL, NULL);
    RpcFuture *c = rpc_future_then(f, value_plus_x, &t1[0], NULL, NULL);
    rpc_future_add_done_callback(f, set_x, t2, NULL, NULL);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(10), NULL));
    /* set1 ran before the then-callback (it saw 1), set2 after it. */
    g_assert_cmpint(wait_int(c), ==, 11);
    g_assert_cmpint(t1[0], ==, 1);
    g_assert_cmpint(t2[0], ==, 2);
    (void)x;
    g_free(t1);
    g_free(t2);
    rpc_future_unref(c);
    rpc_future_unref(f);
}

typedef struct {
    GString *log;
    RpcFuture *f;
} OrderCtx;

static gboolean
log_a(RpcFuture *f, gpointer data, GError **error)
{
    g_string_append(((OrderCtx *)data)->log, "a");
    return TRUE;
}

static gboolean
log_c(RpcFuture *f, gpointer data, GError **error)
{
    g_string_append(((OrderCtx *)data)->log, "c");
    return TRUE;
}

static gboolean
log_b_and_register(RpcFuture *f, gpointer data, GError **error)
{
    OrderCtx *o = data;
    g_string_append(o->log, "b");
    /* Registering on a completed future runs inline, before b returns. */
    rpc_future_add_done_callback(f, log_c, o, NULL, NULL);
    g_string_append(o->log, "B");
    return TRUE;
}

static void
test_callback_fifo_and_inline(Fx *fx, gconstpointer u)
{
    OrderCtx o = {g_string_new(NULL), NULL};
    RpcFuture *f = rpc_future_new(fx->ex0);
    for (int i = 0; i < 3; i++)
        rpc_future_add_done_callback(f, log_a, &o, NULL, NULL);
    rpc_future_add_done_callback(f, log_b_and_register, &o, NULL, NULL);
    rpc_future_add_done_callback(f, log_a, &o, NULL, NULL);
    g_assert_cmpstr(o.log->str, ==, "");
    rpc_future_set_result(f, rpc_value_none(), NULL);
    g_assert_cmpstr(o.log->str, ==, "aaabcBa");
    rpc_future_add_done_callback(f, log_c, &o, NULL, NULL);
    g_assert_cmpstr(o.log->str, ==, "aaabcBac");
    g_string_free(o.log, TRUE);
    rpc_future_unref(f);
}

static gboolean
raise_in_done(RpcFuture *f, gpointer data, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "Expected error");
    return FALSE;
}

static RpcValue *
raise_in_then(RpcFuture *f, gpointer data, GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_VALUE, "Expected error");
    return NULL;
}

static gboolean
trace_has(Fx *fx, const char *needle)
{
    GPtrArray *lines = sim_trace_lines(sim_kernel_trace(sim_world_kernel(fx->w)));
    for (guint i = 0; i < lines->len; i++)
        if (strstr(g_ptr_array_index(lines, i), needle))
            return TRUE;
    return FALSE;
}

/* Case 49: a raising done-callback is logged and ignored; a raising then
 * callback fails only its child. */
static void
test_done_callback_error_ignored(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    rpc_future_add_done_callback(f, raise_in_done, NULL, NULL, NULL);
    RpcFuture *c = rpc_future_then(f, raise_in_then, NULL, NULL, NULL);
    g_assert_true(rpc_future_set_result(f, rpc_value_new_int(5), NULL));
    g_assert_cmpint(wait_int(f), ==, 5);
    assert_wait_error(c, RPC_ERROR_RUNTIME,
                      "Got the following error when running the callback: ValueError: Expected "
                      "error");
    g_assert_true(trace_has(fx, "future.callback_error Got the following error when running the "
                                "callback: ValueError: Expected error"));
    rpc_future_unref(c);
    rpc_future_unref(f);
}

static gboolean
record_thread(RpcFuture *f, gpointer data, GError **error)
{
    guint *seen = data;
    *seen = rpc_executor_current_thread(rpc_future_executor(f));
    return TRUE;
}

/* Callbacks run synchronously on the thread that completes the future. */
static void
test_callback_on_completing_thread(Fx *fx, gconstpointer u)
{
    guint seen = 999;
    RpcFuture *f = rpc_future_new(fx->ex1);
    rpc_future_add_done_callback(f, record_thread, &seen, NULL, NULL);
    Setter s;
    set_later(fx->ex1, &s, f, SIM_MS, 7, FALSE);
    g_assert_cmpint(wait_int(f), ==, 7);
    g_assert_cmpuint(s.thread_seen, >, 0);
    g_assert_cmpuint(seen, ==, s.thread_seen);
    rpc_future_unref(f);
}

/* --- collect_all / wait_all ---------------------------------------------- */

/* Case 50: f1 set later by another actor. */
static void
test_collect_all(Fx *fx, gconstpointer u)
{
    RpcFuture *fs[2] = {rpc_future_new(fx->ex0), rpc_future_new(fx->ex0)};
    rpc_future_set_result(fs[1], rpc_value_new_int(2), NULL);
    Setter s;
    set_later(fx->ex1, &s, fs[0], 3 * SIM_S, 1, FALSE);
    RpcFuture *all = rpc_future_collect_all(NULL, fs, 2, NULL);
    g_assert_false(rpc_future_done(all));
    GError *err = NULL;
    RpcValue *list = rpc_future_wait(all, &err);
    g_assert_no_error(err);
    g_assert_cmpint(now(fx), ==, 3 * SIM_S);
    g_assert_cmpuint(rpc_value_list_len(list), ==, 2);
    for (guint i = 0; i < 2; i++) {
        RpcFuture *fi = rpc_value_get_future(rpc_value_list_get(list, i));
        g_assert_true(fi == fs[i]);
        g_assert_cmpint(wait_int(fi), ==, (gint64)i + 1);
    }
    rpc_value_unref(list);
    rpc_future_unref(all);
    rpc_future_unref(fs[0]);
    rpc_future_unref(fs[1]);
}

static void
test_wait_all_values(Fx *fx, gconstpointer u)
{
    RpcFuture *fs[2] = {rpc_future_new(fx->ex0), rpc_future_new(fx->ex0)};
    Setter s1, s2;
    set_later(fx->ex1, &s1, fs[0], 2 * SIM_MS, 1, FALSE);
    set_later(fx->ex1, &s2, fs[1], 1 * SIM_MS, 2, FALSE);
    GError *err = NULL;
    RpcValue *vals = rpc_future_wait_all(fx->ex0, fs, 2, &err);
    g_assert_no_error(err);
    char *r = rpc_value_repr(vals);
    g_assert_cmpstr(r, ==, "[1, 2]");
    g_free(r);
    rpc_value_unref(vals);
    rpc_future_unref(fs[0]);
    rpc_future_unref(fs[1]);
}

static void
test_collect_all_none_and_empty(Fx *fx, gconstpointer u)
{
    RpcFuture *fs[2] = {rpc_future_new(fx->ex0), NULL};
    GError *err = NULL;
    g_assert_null(rpc_future_collect_all(NULL, fs, 2, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(err->message, ==, "Future can't be None");
    g_clear_error(&err);
    g_assert_null(rpc_future_wait_all(fx->ex0, fs, 2, &err));
    g_assert_cmpstr(err->message, ==, "Future can't be None");
    g_clear_error(&err);
    RpcFuture *empty = rpc_future_collect_all(fx->ex0, NULL, 0, &err);
    g_assert_no_error(err);
    g_assert_true(rpc_future_done(empty));
    RpcValue *v = rpc_future_wait(empty, NULL);
    g_assert_cmpuint(rpc_value_list_len(v), ==, 0);
    rpc_value_unref(v);
    rpc_future_unref(empty);
    rpc_future_unref(fs[0]);
}

/* Case 46: all failing, or 10 good and one failing. */
static void
test_wait_all_with_exception(Fx *fx, gconstpointer u)
{
    for (int partial = 0; partial < 2; partial++) {
        RpcFuture *fs[11];
        Setter s[11];
        guint n = partial ? 11 : 10;
        for (guint i = 0; i < n; i++) {
            fs[i] = rpc_future_new(fx->ex0);
            gboolean fail = partial ? (i == 10) : TRUE;
            set_later(fx->ex1, &s[i], fs[i], SIM_MS, (gint64)i, fail);
        }
        GError *err = NULL;
        g_assert_null(rpc_future_wait_all(fx->ex0, fs, n, &err));
        g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
        g_assert_cmpstr(err->message, ==, "Expected error");
        g_clear_error(&err);
        sim_kernel_run(sim_world_kernel(fx->w));
        for (guint i = 0; i < n; i++)
            rpc_future_unref(fs[i]);
    }
    /* The later errors were logged as skipped. */
    g_assert_true(trace_has(fx, "Skipping setting following error on the Future since it is "
                                "already marked completed"));
}

/* Case 23 without RPC: fut1 never completes on its own; fut2 fails at 5 ms.
 * wait_all fails at 5 ms, without waiting for fut1. */
static void
test_wait_all_exit_early(Fx *fx, gconstpointer u)
{
    RpcFuture *fs[3] = {rpc_future_new(fx->ex0), rpc_future_new(fx->ex0), rpc_future_new(fx->ex0)};
    Setter s2, s3;
    set_later(fx->ex1, &s2, fs[1], 5 * SIM_MS, 0, TRUE);
    set_later(fx->ex1, &s3, fs[2], 6 * SIM_MS, 0, TRUE);
    GError *err = NULL;
    g_assert_null(rpc_future_wait_all(fx->ex0, fs, 3, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_VALUE);
    g_clear_error(&err);
    g_assert_cmpint(now(fx), ==, 5 * SIM_MS);
    g_assert_false(rpc_future_done(fs[0]));
    /* Unblock fut1, let the last setter finish. */
    rpc_future_set_result(fs[0], rpc_value_none(), NULL);
    g_assert_cmpint(sim_kernel_run(sim_world_kernel(fx->w)), ==, SIM_RUN_IDLE);
    g_assert_cmpint(now(fx), ==, 6 * SIM_MS);
    for (int i = 0; i < 3; i++)
        rpc_future_unref(fs[i]);
}

/* --- blocking ---------------------------------------------------------------- */

typedef struct {
    RpcExecutor *ex;
    RpcFuture *f;
    SimTime woke_at;
    gint64 got;
    GString *log;
} Waiter;

static void
waiter_run(gpointer data)
{
    Waiter *w = data;
    g_string_append(w->log, "wait;");
    w->got = wait_int(w->f);
    w->woke_at = rpc_executor_now(w->ex);
    g_string_append(w->log, "woke;");
}

static void
other_run(gpointer data)
{
    Waiter *w = data;
    g_string_append(w->log, "other;");
    rpc_executor_sleep(w->ex, 2 * SIM_S, NULL);
    g_string_append(w->log, "set;");
    rpc_future_set_result(w->f, rpc_value_new_int(9), NULL);
}

/* wait() suspends only its virtual thread: another thread of the same worker
 * runs meanwhile and completes the future. */
static void
test_wait_blocks_only_thread(Fx *fx, gconstpointer u)
{
    Waiter w = {fx->ex0, rpc_future_new(fx->ex0), 0, 0, g_string_new(NULL)};
    rpc_executor_spawn(fx->ex0, waiter_run, &w, NULL);
    rpc_executor_spawn(fx->ex0, other_run, &w, NULL);
    g_assert_cmpint(sim_kernel_run(sim_world_kernel(fx->w)), ==, SIM_RUN_IDLE);
    g_assert_cmpstr(w.log->str, ==, "wait;other;set;woke;");
    g_assert_cmpint(w.woke_at, ==, 2 * SIM_S);
    g_assert_cmpint(w.got, ==, 9);
    g_string_free(w.log, TRUE);
    rpc_future_unref(w.f);
}

/* Waiting from outside any thread on a future nobody completes: a deadlock
 * error naming the future, never a hang. */
static void
test_wait_deadlock(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    rpc_future_set_description(f, "the answer from worker1");
    GError *err = NULL;
    g_assert_null(rpc_future_wait(f, &err));
    g_assert_error(err, SIM_ERROR, SIM_ERROR_DEADLOCK);
    g_assert_nonnull(strstr(err->message, "the answer from worker1"));
    g_clear_error(&err);
    rpc_future_unref(f);
}

/* A future with no executor can be waited on only once complete. */
static void
test_no_executor(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(NULL);
    GError *err = NULL;
    g_assert_null(rpc_future_wait(f, &err));
    g_assert_error(err, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_clear_error(&err);
    rpc_future_set_result(f, rpc_value_new_int(4), NULL);
    g_assert_cmpint(wait_int(f), ==, 4);
    rpc_future_unref(f);
}

static int destroyed;

static void
count_destroy(gpointer p)
{
    destroyed++;
}

/* An abandoned chain (parent never completes) is freed with its parent,
 * callbacks' data included. */
static void
test_abandoned_chain_freed(Fx *fx, gconstpointer u)
{
    destroyed = 0;
    guint live = rpc_future_live_count();
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, add_delta, GINT_TO_POINTER(1), count_destroy, NULL);
    RpcFuture *gc = rpc_future_then(c, add_delta, GINT_TO_POINTER(1), count_destroy, NULL);
    rpc_future_add_done_callback(f, set_x, NULL, count_destroy, NULL);
    RpcFuture *others[1] = {c};
    RpcFuture *all = rpc_future_collect_all(NULL, others, 1, NULL);
    g_assert_cmpuint(rpc_future_live_count(), ==, live + 4);
    rpc_future_unref(gc);
    rpc_future_unref(all);
    rpc_future_unref(c);
    rpc_future_unref(f);
    g_assert_cmpuint(rpc_future_live_count(), ==, live);
    g_assert_cmpint(destroyed, ==, 3);
}

/* A then() callback runs once and its data is destroyed once, completed or
 * not. */
static void
test_destroy_notify_once(Fx *fx, gconstpointer u)
{
    destroyed = 0;
    RpcFuture *f = rpc_future_new(fx->ex0);
    RpcFuture *c = rpc_future_then(f, add_delta, GINT_TO_POINTER(1), count_destroy, NULL);
    g_assert_cmpint(destroyed, ==, 0);
    rpc_future_set_result(f, rpc_value_new_int(1), NULL);
    g_assert_cmpint(destroyed, ==, 1);
    rpc_future_unref(f);
    rpc_future_unref(c);
    g_assert_cmpint(destroyed, ==, 1);
    /* then(NULL) destroys the data it was given. */
    f = rpc_future_new(fx->ex0);
    g_assert_null(rpc_future_then(f, NULL, NULL, count_destroy, NULL));
    g_assert_cmpint(destroyed, ==, 2);
    rpc_future_unref(f);
}

/* A lazy description is formatted only when read, from copies of its
 * parts; set_description and set_description_lazy replace each other. */
static void
test_lazy_description(Fx *fx, gconstpointer u)
{
    RpcFuture *f = rpc_future_new(fx->ex0);
    g_assert_null(rpc_future_description(f));
    char what[16] = "my_func";
    char peer[16] = "worker1";
    rpc_future_set_description_lazy(f, "the reply to %s from %s", what, peer);
    what[0] = 'X'; /* copied: later changes to the caller's buffers do not show */
    peer[0] = 'X';
    g_assert_cmpstr(rpc_future_description(f), ==, "the reply to my_func from worker1");
    g_assert_cmpstr(rpc_future_description(f), ==, "the reply to my_func from worker1");
    rpc_future_set_description(f, "plain");
    g_assert_cmpstr(rpc_future_description(f), ==, "plain");
    /* Parts too long for the inline buffer go to the heap. */
    char *long_a = g_strnfill(100, 'a');
    rpc_future_set_description_lazy(f, "%s/%s", long_a, "b");
    char *expect = g_strconcat(long_a, "/b", NULL);
    g_assert_cmpstr(rpc_future_description(f), ==, expect);
    /* Replaced before it was ever read: nothing leaks (valgrind checks). */
    rpc_future_set_description_lazy(f, "%s %s", long_a, long_a);
    rpc_future_set_description_lazy(f, "%s-%s", "x", "y");
    g_assert_cmpstr(rpc_future_description(f), ==, "x-y");
    rpc_future_set_description_lazy(f, "%s %s", long_a, long_a);
    rpc_future_unref(f);
    g_free(expect);
    g_free(long_a);
}

/* The first callback is stored inline and the rest in a list: all run in
 * registration order, and all are dropped if the future never completes. */
static gboolean
log_done(RpcFuture *f, gpointer data, GError **error)
{
    g_string_append_printf(data, "%d;", (int)rpc_value_get_int(rpc_future_peek_value(f)));
    return TRUE;
}

static void
test_many_callbacks_order(Fx *fx, gconstpointer u)
{
    GString *log = g_string_new("");
    RpcFuture *f = rpc_future_new(fx->ex0);
    for (guint i = 0; i < 5; i++)
        rpc_future_add_done_callback(f, log_done, log, NULL, NULL);
    rpc_future_set_result(f, rpc_value_new_int(3), NULL);
    g_assert_cmpstr(log->str, ==, "3;3;3;3;3;");
    rpc_future_add_done_callback(f, log_done, log, NULL, NULL); /* inline now */
    g_assert_cmpstr(log->str, ==, "3;3;3;3;3;3;");
    rpc_future_unref(f);
    destroyed = 0;
    f = rpc_future_new(fx->ex0);
    for (guint i = 0; i < 3; i++)
        rpc_future_add_done_callback(f, log_done, log, count_destroy, NULL);
    rpc_future_unref(f);
    g_assert_cmpint(destroyed, ==, 3);
    g_string_free(log, TRUE);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add("/future/" path, Fx, NULL, fx_setup, fn, fx_teardown)
    ADD("new-not-done", test_new_not_done);
    ADD("lazy-description", test_lazy_description);
    ADD("many-callbacks-order", test_many_callbacks_order);
    ADD("set-result", test_set_result);
    ADD("complete-twice", test_complete_twice);
    ADD("set-exception-sticky", test_set_exception_sticky);
    ADD("set-exception-not-exception", test_set_exception_not_exception);
    ADD("wait-twice-many", test_wait_twice_many);
    ADD("then-simple", test_then_simple);
    ADD("then-callback-error", test_then_callback_error);
    ADD("then-multi", test_then_multi);
    ADD("then-chain", test_then_chain);
    ADD("then-on-error", test_then_on_error);
    ADD("then-none", test_then_none);
    ADD("then-value-on-error", test_then_value_on_error);
    ADD("then-null-is-none", test_then_null_is_none);
    ADD("callback-order", test_callback_order);
    ADD("callback-fifo-and-inline", test_callback_fifo_and_inline);
    ADD("done-callback-error-ignored", test_done_callback_error_ignored);
    ADD("callback-on-completing-thread", test_callback_on_completing_thread);
    ADD("collect-all", test_collect_all);
    ADD("wait-all-values", test_wait_all_values);
    ADD("collect-all-none-and-empty", test_collect_all_none_and_empty);
    ADD("wait-all-with-exception", test_wait_all_with_exception);
    ADD("wait-all-exit-early", test_wait_all_exit_early);
    ADD("wait-blocks-only-thread", test_wait_blocks_only_thread);
    ADD("wait-deadlock", test_wait_deadlock);
    ADD("no-executor", test_no_executor);
    ADD("abandoned-chain-freed", test_abandoned_chain_freed);
    ADD("destroy-notify-once", test_destroy_notify_once);
#undef ADD
    return g_test_run();
}
