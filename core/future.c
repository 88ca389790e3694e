/* future.c — RpcFuture (spec §2).
 *
 * Invariants:
 *  - completed implies exactly one of value/error is set, forever;
 *  - no callback is stored once completed: completion moves them out
 *    before running them, and later registrations run inline;
 *  - has_first is FALSE implies more is NULL (the first callback is the
 *    inline one, later ones follow in `more`);
 *  - a then() child is referenced only by its parent's callback entry (and
 *    by whoever the caller gave it to), so an abandoned chain is freed when
 *    the parent is.
 */
#include "core/future.h"

#include <string.h>

#include "core/pool.h"

typedef enum { CB_THEN, CB_DONE } CallbackKind;

typedef struct {
    CallbackKind kind;
    union {
        RpcThenFunc then;
        RpcDoneFunc done;
    } fn;
    gpointer data;
    GDestroyNotify destroy;
    RpcFuture *child; /* CB_THEN only, owned */
} Callback;

struct RpcFuture {
    gint refcount;
    gboolean completed;
    RpcExecutor *ex;
    RpcValue *value;
    RpcValue *error;
    /* Callbacks in registration order: the first inline (most futures have
     * exactly one: a waiter or a reply), the rest in `more`. */
    Callback first;
    gboolean has_first;
    GArray *more; /* of Callback; NULL when none */
    char *description;
    /* A description built on demand (rpc_future_set_description_lazy): fmt
     * is static; its two %s arguments are copied into `parts`. */
    const char *lazy_fmt;
    char *lazy_parts; /* part 1 NUL part 2 NUL, in `inline_parts` when it fits */
    char inline_parts[40];
};

static guint live_futures;

static const RpcTraceKind trace_callback_error = {"future.callback_error", {NULL, NULL, NULL}};

RpcFuture *
rpc_future_new(RpcExecutor *ex)
{
    RpcFuture *f = rpc_pool_new(RpcFuture);
    f->refcount = 1;
    f->ex = ex;
    live_futures++;
    return f;
}

RpcFuture *
rpc_future_ref(RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    g_assert(f->refcount > 0);
    f->refcount++;
    return f;
}

static void
callback_clear(Callback *cb)
{
    if (cb->destroy)
        cb->destroy(cb->data);
    cb->destroy = NULL;
    if (cb->child) {
        rpc_future_unref(cb->child);
        cb->child = NULL;
    }
}

void
rpc_future_unref(RpcFuture *f)
{
    if (f == NULL)
        return;
    g_assert(f->refcount > 0);
    if (--f->refcount > 0)
        return;
    if (f->has_first || f->more) {
        /* Never completed: pending callbacks will never run. */
        GArray *more = f->more;
        f->more = NULL;
        if (f->has_first) {
            f->has_first = FALSE;
            callback_clear(&f->first);
        }
        for (guint i = 0; more && i < more->len; i++)
            callback_clear(&g_array_index(more, Callback, i));
        if (more)
            g_array_unref(more);
    }
    rpc_value_unref(f->value);
    rpc_value_unref(f->error);
    g_free(f->description);
    if (f->lazy_parts != f->inline_parts)
        g_free(f->lazy_parts);
    live_futures--;
    rpc_pool_delete(RpcFuture, f);
}

guint
rpc_future_live_count(void)
{
    return live_futures;
}

RpcExecutor *
rpc_future_executor(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    return f->ex;
}

static void
lazy_clear(RpcFuture *f)
{
    if (f->lazy_parts != f->inline_parts)
        g_free(f->lazy_parts);
    f->lazy_parts = NULL;
    f->lazy_fmt = NULL;
}

void
rpc_future_set_description(RpcFuture *f, const char *desc)
{
    g_return_if_fail(f != NULL);
    lazy_clear(f);
    g_free(f->description);
    f->description = g_strdup(desc);
}

void
rpc_future_set_description_lazy(RpcFuture *f, const char *fmt, const char *a, const char *b)
{
    g_return_if_fail(f != NULL && fmt != NULL && a != NULL && b != NULL);
    lazy_clear(f);
    g_free(f->description);
    f->description = NULL;
    gsize la = strlen(a) + 1, lb = strlen(b) + 1;
    f->lazy_parts = la + lb <= sizeof f->inline_parts ? f->inline_parts : g_malloc(la + lb);
    memcpy(f->lazy_parts, a, la);
    memcpy(f->lazy_parts + la, b, lb);
    f->lazy_fmt = fmt;
}

const char *
rpc_future_description(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    if (f->lazy_fmt != NULL) {
        /* Formatting once is not a visible change: the cache is ours. */
        RpcFuture *mf = (RpcFuture *)f;
        const char *a = f->lazy_parts, *b = a + strlen(a) + 1;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        char *d = g_strdup_printf(f->lazy_fmt, a, b);
#pragma GCC diagnostic pop
        lazy_clear(mf);
        mf->description = d;
    }
    return f->description;
}

gboolean
rpc_future_done(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, FALSE);
    return f->completed;
}

gboolean
rpc_future_has_error(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, FALSE);
    return f->completed && f->error != NULL;
}

RpcValue *
rpc_future_peek_value(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    return f->value;
}

RpcValue *
rpc_future_peek_error(const RpcFuture *f)
{
    g_return_val_if_fail(f != NULL, NULL);
    return f->error;
}

/* "Got the following error when running the callback: <Kind>: <msg>" */
static char *
callback_error_text(const GError *err)
{
    RpcErrorKind kind = RPC_ERROR_RUNTIME;
    if (err->domain == RPC_ERROR)
        kind = (RpcErrorKind)err->code;
    return g_strdup_printf(RPC_FUTURE_MSG_CALLBACK_ERROR "%s: %s", rpc_error_kind_name(kind),
                           err->message);
}

static void
log_ignored_error(RpcFuture *f, const char *text)
{
    g_info("%s", text);
    rpc_executor_trace(f->ex, &trace_callback_error, 0, 0, 0, text);
}

/* Runs one callback against completed f, then releases it. */
static void
callback_run(RpcFuture *f, Callback *cb)
{
    GError *err = NULL;
    if (cb->kind == CB_THEN) {
        RpcValue *r = cb->fn.then(f, cb->data, &err);
        RpcFuture *child = cb->child;
        if (err != NULL) {
            rpc_value_unref(r);
            char *text = callback_error_text(err);
            rpc_future_fail_if_needed(child, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
            g_free(text);
            g_error_free(err);
        } else {
            rpc_future_complete_if_needed(child, r ? r : rpc_value_none());
        }
    } else if (!cb->fn.done(f, cb->data, &err) || err != NULL) {
        if (err != NULL) {
            char *text = callback_error_text(err);
            log_ignored_error(f, text);
            g_free(text);
            g_error_free(err);
        }
    }
    callback_clear(cb);
}

/* Completes f with exactly one of value/err (both transfer full). */
static void
complete(RpcFuture *f, RpcValue *value, RpcValue *err)
{
    g_assert(!f->completed);
    g_assert((value == NULL) != (err == NULL));
    f->completed = TRUE;
    f->value = value;
    f->error = err;
    if (!f->has_first)
        return;
    Callback first = f->first;
    GArray *more = f->more;
    f->has_first = FALSE;
    f->more = NULL;
    /* Callbacks may drop the last outside reference to f. */
    rpc_future_ref(f);
    callback_run(f, &first);
    for (guint i = 0; more && i < more->len; i++)
        callback_run(f, &g_array_index(more, Callback, i));
    if (more)
        g_array_unref(more);
    rpc_future_unref(f);
}

static gboolean
completed_twice(GError **error)
{
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_FUTURE_MSG_COMPLETED_TWICE);
    return FALSE;
}

gboolean
rpc_future_set_result(RpcFuture *f, RpcValue *v, GError **error)
{
    g_return_val_if_fail(f != NULL && v != NULL, FALSE);
    if (f->completed) {
        rpc_value_unref(v);
        return completed_twice(error);
    }
    complete(f, v, NULL);
    return TRUE;
}

gboolean
rpc_future_set_exception(RpcFuture *f, RpcValue *e, GError **error)
{
    g_return_val_if_fail(f != NULL && e != NULL, FALSE);
    if (rpc_value_type(e) != RPC_VALUE_ERROR) {
        char *r = rpc_value_repr(e);
        g_set_error(error, RPC_ERROR, RPC_ERROR_ASSERTION,
                    "%s is of type <class '%s'>, not an Exception.", r,
                    rpc_value_type_name(rpc_value_type(e)));
        g_free(r);
        rpc_value_unref(e);
        return FALSE;
    }
    if (f->completed) {
        rpc_value_unref(e);
        return completed_twice(error);
    }
    complete(f, NULL, e);
    return TRUE;
}

gboolean
rpc_future_set_gerror(RpcFuture *f, const GError *e, GError **error)
{
    g_return_val_if_fail(e != NULL, FALSE);
    return rpc_future_set_exception(f, rpc_value_new_error_from_gerror(e), error);
}

gboolean
rpc_future_complete_if_needed(RpcFuture *f, RpcValue *v)
{
    g_return_val_if_fail(f != NULL && v != NULL, FALSE);
    if (f->completed) {
        rpc_value_unref(v);
        return FALSE;
    }
    complete(f, v, NULL);
    return TRUE;
}

gboolean
rpc_future_fail_if_needed(RpcFuture *f, RpcValue *err)
{
    g_return_val_if_fail(f != NULL && err != NULL, FALSE);
    g_return_val_if_fail(rpc_value_type(err) == RPC_VALUE_ERROR, FALSE);
    if (f->completed) {
        rpc_value_unref(err);
        return FALSE;
    }
    complete(f, NULL, err);
    return TRUE;
}

static RpcValue *
result_of(RpcFuture *f, GError **error)
{
    if (f->error != NULL) {
        rpc_value_propagate_error(f->error, error);
        return NULL;
    }
    return rpc_value_ref(f->value);
}

RpcValue *
rpc_future_wait(RpcFuture *f, GError **error)
{
    g_return_val_if_fail(f != NULL, NULL);
    if (!f->completed) {
        if (f->ex == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                                "wait() on an incomplete Future that has no executor to block on");
            return NULL;
        }
        if (!rpc_executor_block_on(f->ex, f, error))
            return NULL;
        g_assert(f->completed);
    }
    return result_of(f, error);
}

RpcValue *
rpc_future_value(RpcFuture *f, GError **error)
{
    g_return_val_if_fail(f != NULL, NULL);
    if (!f->completed) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "value() called on a Future that is not completed yet");
        return NULL;
    }
    return result_of(f, error);
}

static void
add_callback(RpcFuture *f, Callback *cb)
{
    if (f->completed) {
        rpc_future_ref(f);
        callback_run(f, cb);
        rpc_future_unref(f);
        return;
    }
    if (!f->has_first) {
        f->first = *cb;
        f->has_first = TRUE;
        return;
    }
    if (f->more == NULL)
        f->more = g_array_new(FALSE, FALSE, sizeof(Callback));
    g_array_append_val(f->more, *cb);
}

RpcFuture *
rpc_future_then(RpcFuture *f, RpcThenFunc fn, gpointer data, GDestroyNotify destroy, GError **error)
{
    g_return_val_if_fail(f != NULL, NULL);
    if (fn == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, RPC_FUTURE_MSG_INCOMPATIBLE_ARGS);
        if (destroy)
            destroy(data);
        return NULL;
    }
    RpcFuture *child = rpc_future_new(f->ex);
    Callback cb = {CB_THEN, {.then = fn}, data, destroy, rpc_future_ref(child)};
    add_callback(f, &cb);
    return child;
}

gboolean
rpc_future_add_done_callback(RpcFuture *f, RpcDoneFunc fn, gpointer data, GDestroyNotify destroy,
                             GError **error)
{
    g_return_val_if_fail(f != NULL, FALSE);
    if (fn == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, RPC_FUTURE_MSG_INCOMPATIBLE_ARGS);
        if (destroy)
            destroy(data);
        return FALSE;
    }
    Callback cb = {CB_DONE, {.done = fn}, data, destroy, NULL};
    add_callback(f, &cb);
    return TRUE;
}

/* --- collect_all ---------------------------------------------------------
 * The shared state holds the result future and a slot per input.  A slot is
 * filled (with a reference) only when its input completes, so an input that
 * never completes and is dropped does not keep a cycle alive. */

typedef struct {
    gint refcount;
    RpcFuture *result;
    RpcFuture **slots;
    guint n;
    guint remaining;
} Collect;

typedef struct {
    Collect *c;
    guint index;
} CollectSlot;

static void
collect_unref(Collect *c)
{
    if (--c->refcount > 0)
        return;
    for (guint i = 0; i < c->n; i++)
        rpc_future_unref(c->slots[i]);
    g_free(c->slots);
    rpc_future_unref(c->result);
    g_free(c);
}

static void
collect_slot_free(gpointer p)
{
    CollectSlot *s = p;
    collect_unref(s->c);
    g_free(s);
}

static gboolean
collect_on_done(RpcFuture *f, gpointer data, GError **error)
{
    CollectSlot *s = data;
    Collect *c = s->c;
    c->slots[s->index] = rpc_future_ref(f);
    if (f->error != NULL) {
        if (!rpc_future_fail_if_needed(c->result, rpc_value_ref(f->error))) {
            char *text =
                g_strconcat(RPC_FUTURE_MSG_SKIP_ERROR, rpc_value_error_message(f->error), NULL);
            log_ignored_error(f, text);
            g_free(text);
        }
        return TRUE;
    }
    if (--c->remaining == 0 && !c->result->completed) {
        RpcValue *list = rpc_value_new_list();
        for (guint i = 0; i < c->n; i++)
            rpc_value_list_append(list, rpc_value_new_future(c->slots[i]));
        rpc_future_complete_if_needed(c->result, list);
    }
    return TRUE;
}

RpcFuture *
rpc_future_collect_all(RpcExecutor *ex, RpcFuture *const *futs, guint n, GError **error)
{
    g_return_val_if_fail(futs != NULL || n == 0, NULL);
    for (guint i = 0; i < n; i++) {
        if (futs[i] == NULL) {
            g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_FUTURE_MSG_NONE_IN_LIST);
            return NULL;
        }
    }
    if (ex == NULL && n > 0)
        ex = futs[0]->ex;
    RpcFuture *result = rpc_future_new(ex);
    if (n == 0) {
        rpc_future_complete_if_needed(result, rpc_value_new_list());
        return result;
    }
    Collect *c = g_new0(Collect, 1);
    c->refcount = 1;
    c->result = rpc_future_ref(result);
    c->slots = g_new0(RpcFuture *, n);
    c->n = n;
    c->remaining = n;
    for (guint i = 0; i < n; i++) {
        CollectSlot *s = g_new(CollectSlot, 1);
        s->c = c;
        s->index = i;
        c->refcount++;
        rpc_future_add_done_callback(futs[i], collect_on_done, s, collect_slot_free, NULL);
    }
    collect_unref(c);
    return result;
}

RpcValue *
rpc_future_wait_all(RpcExecutor *ex, RpcFuture *const *futs, guint n, GError **error)
{
    RpcFuture *all = rpc_future_collect_all(ex, futs, n, error);
    if (all == NULL)
        return NULL;
    RpcValue *list = rpc_future_wait(all, error);
    rpc_future_unref(all);
    if (list == NULL)
        return NULL;
    RpcValue *values = rpc_value_new_list();
    for (guint i = 0; i < rpc_value_list_len(list); i++) {
        RpcFuture *fi = rpc_value_get_future(rpc_value_list_get(list, i));
        RpcValue *v = rpc_future_wait(fi, error);
        if (v == NULL) {
            rpc_value_unref(values);
            values = NULL;
            break;
        }
        rpc_value_list_append(values, v);
    }
    rpc_value_unref(list);
    return values;
}
