/* agent.c — rpc_sync / rpc_async, serving, timeouts, shutdown (agent.h).
 *
 * Invariants:
 *  - a request id is in `pending` exactly while its call is counted in
 *    client_active_calls; whoever removes it (response, timeout, broken
 *    connection, shutdown) completes the future first and decrements after;
 *  - the timeout heap may hold stale entries (calls already answered); an
 *    entry acts only if its id is still pending with that same expiry;
 *  - received bytes are untrusted: a message that does not decode is counted
 *    and dropped; a request whose payload is malformed is answered with an
 *    EXCEPTION.
 *
 * Requests and responses are both handled on the worker's thread pool, as in
 * TensorPipe: a UDF or a response callback may block, and a pool whose
 * threads are all blocked stops serving (a deadlock the simulator reports).
 */
#include "core/agent.h"

#include <string.h>

#include "core/codec.h"
#include "core/idset.h"
#include "core/intmap.h"
#include "core/message.h"
#include "core/pool.h"
#include "core/agent-internal.h"
#include "core/dist-autograd.h"

typedef enum { AGENT_NEW, AGENT_RUNNING, AGENT_SHUTDOWN } AgentState;

typedef struct {
    gint64 id;
    gint to;
    RpcMessageType type;
    RpcFuture *fut;
    RpcTime expiry; /* RPC_TIME_NEVER: no timeout */
    RpcTime timeout;
} Pending;

typedef struct {
    RpcTime expiry;
    gint64 id;
} TimeoutEntry;

typedef struct {
    TimeoutEntry *v; /* min-heap by (expiry, id) */
    guint len, cap;
} TimeoutHeap;

typedef struct {
    RpcValue *gathered; /* dict name → obj */
    RpcFuture *proceed;
} GatherState;

struct RpcAgent {
    char *name;
    gint id;
    guint world_size;
    AgentState state;
    RpcExecutor *ex;
    RpcTransport *tr;
    RpcStore *store;
    RpcRegistry *reg;
    RpcTime default_timeout;
    char **names; /* by id, after start */
    char *prefix; /* store key prefix */
    gint64 next_message_id;
    RpcIntMap pending; /* request id → Pending* (owned) */
    TimeoutHeap timeouts;
    guint64 timer_id; /* armed executor timer, 0 if none */
    RpcTime timer_at;
    RpcFuture *idle; /* completed when client_active_calls reaches 0 */
    RpcAgentCounters c;
    GHashTable *gather_seq;    /* names concat → next sequence number */
    GHashTable *gather_states; /* sequence id → GatherState* */
    guint64 join_round;
    GHashTable *slots;     /* name → RpcValue*, per-worker storage for UDFs */
    RpcRRefCtx *rrefs;     /* the RRef context (rref.c) */
    RpcDistAutograd *dist; /* distributed autograd (dist-autograd.c) */
    RpcIdSet *seen;        /* by sender: request ids served (duplicates dropped) */
    gboolean raise_rref_leaks;
    GPtrArray *spare_tensors; /* an empty side list for the next encode, or NULL */
    RpcCodecBuffer scratch;   /* the buffer messages are built in */
};

/* --- trace kinds -------------------------------------------------------- */

static const RpcTraceKind tk_send = {"rpc.send", {"to", "id", "bytes"}};
static const RpcTraceKind tk_send_failed = {"rpc.send_failed", {"to", "id", NULL}};
static const RpcTraceKind tk_serve = {"rpc.serve", {"from", "id", NULL}};
static const RpcTraceKind tk_respond = {"rpc.respond", {"to", "id", "bytes"}};
static const RpcTraceKind tk_response = {"rpc.response", {"from", "id", NULL}};
static const RpcTraceKind tk_timeout = {"rpc.timeout", {"to", "id", "ms"}};
static const RpcTraceKind tk_late = {"rpc.late_response", {"from", "id", NULL}};
static const RpcTraceKind tk_conn = {"rpc.connection_failed", {"peer", "id", NULL}};
static const RpcTraceKind tk_decode = {"rpc.decode_error", {"from", NULL, NULL}};
static const RpcTraceKind tk_state = {"rpc.state", {NULL, NULL, NULL}};
static const RpcTraceKind tk_drop = {"rpc.drop", {"from", "id", NULL}};

#define TRACE(a, kind, x, y, z, detail)                                                            \
    rpc_executor_trace((a)->ex, &(kind), (x), (y), (z), (detail))

/* --- names and ids ------------------------------------------------------ */

gboolean
rpc_agent_validate_name(const char *name, GError **error)
{
    gboolean ok = name != NULL && name[0] != '\0' && strlen(name) < RPC_MAX_NAME_LEN;
    for (const char *p = name; ok && *p; p++)
        ok = g_ascii_isalnum(*p) || *p == '-' || *p == '_' || *p == ':';
    if (!ok)
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Worker name must match ^[A-Za-z0-9-_:]*$, and must be non-empty and shorter "
                    "than 128 chars, but got %s",
                    name ? name : "");
    return ok;
}

gboolean
rpc_agent_validate_id(gint64 id, GError **error)
{
    if (id < G_MININT16 || id > G_MAXINT16) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "RPC worker id %" G_GINT64_FORMAT " out of bound of int16_t.", id);
        return FALSE;
    }
    return TRUE;
}

static void
gather_state_free(gpointer p)
{
    GatherState *s = p;
    rpc_value_unref(s->gathered);
    rpc_future_unref(s->proceed);
    g_free(s);
}

static void
pending_free(Pending *pd)
{
    rpc_future_unref(pd->fut);
    rpc_pool_delete(Pending, pd);
}

RpcAgent *
rpc_agent_new(const RpcAgentConfig *cfg, GError **error)
{
    g_return_val_if_fail(cfg != NULL && cfg->executor != NULL && cfg->transport != NULL, NULL);
    g_return_val_if_fail(cfg->store != NULL && cfg->registry != NULL, NULL);
    if (!rpc_agent_validate_name(cfg->name, error) || !rpc_agent_validate_id(cfg->id, error))
        goto fail;
    if (cfg->id < 0 || (guint)cfg->id >= cfg->world_size) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "rank %d is out of range for world size %u", cfg->id, cfg->world_size);
        goto fail;
    }
    RpcAgent *a = g_new0(RpcAgent, 1);
    a->name = g_strdup(cfg->name);
    a->id = cfg->id;
    a->world_size = cfg->world_size;
    a->ex = cfg->executor;
    a->tr = cfg->transport;
    a->store = cfg->store;
    a->reg = cfg->registry;
    a->default_timeout = cfg->rpc_timeout;
    a->next_message_id = cfg->first_message_id;
    a->prefix = g_strdup(cfg->store_prefix ? cfg->store_prefix : "");
    rpc_intmap_init(&a->pending);
    a->gather_seq = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    a->gather_states = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, gather_state_free);
    a->slots =
        g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)rpc_value_unref);
    a->raise_rref_leaks = cfg->raise_rref_leaks;
    /* A request is known by its sender and the sender's message id (ids
     * are never reused by one agent; see first_message_id). */
    a->seen = g_new0(RpcIdSet, cfg->world_size);
    a->rrefs = rpc_rref_ctx_new(a);
    a->dist = rpc_dist_autograd_new(a);
    return a;
fail:
    rpc_registry_free(cfg->registry);
    return NULL;
}

static void fail_all_pending(RpcAgent *a, const char *reason);

void
rpc_agent_free(RpcAgent *a)
{
    if (a == NULL)
        return;
    if (a->timer_id)
        rpc_executor_cancel(a->ex, a->timer_id);
    /* Slots may hold RRefs: drop them while the context can still see them. */
    g_hash_table_remove_all(a->slots);
    rpc_dist_autograd_free(a->dist);
    rpc_rref_ctx_free(a->rrefs);
    for (guint r = 0; r < a->world_size; r++)
        rpc_idset_clear(&a->seen[r]);
    g_free(a->seen);
    for (guint i = 0; i < rpc_intmap_capacity(&a->pending); i++)
        if (a->pending.slots[i].value != NULL)
            pending_free(a->pending.slots[i].value);
    rpc_intmap_clear(&a->pending);
    g_free(a->timeouts.v);
    rpc_future_unref(a->idle);
    if (a->spare_tensors != NULL)
        g_ptr_array_unref(a->spare_tensors);
    rpc_codec_buffer_clear(&a->scratch);
    g_hash_table_unref(a->gather_seq);
    g_hash_table_unref(a->gather_states);
    g_hash_table_unref(a->slots);
    rpc_registry_free(a->reg);
    if (a->names)
        g_strfreev(a->names);
    g_free(a->prefix);
    g_free(a->name);
    g_free(a);
}

void
rpc_agent_publish(RpcAgent *a)
{
    char key[160];
    g_snprintf(key, sizeof key, "%srpc/names/%d", a->prefix, a->id);
    a->store->vt->set(a->store, key, a->name);
}

gboolean
rpc_agent_start(RpcAgent *a, GError **error)
{
    g_return_val_if_fail(a->state == AGENT_NEW, FALSE);
    char **names = g_new0(char *, a->world_size + 1);
    for (guint r = 0; r < a->world_size; r++) {
        char key[160];
        g_snprintf(key, sizeof key, "%srpc/names/%u", a->prefix, r);
        RpcFuture *f = a->store->vt->wait(a->store, key, a->ex);
        char desc[96];
        g_snprintf(desc, sizeof desc, "init_rpc: rank %u to publish its name", r);
        rpc_future_set_description(f, desc);
        RpcValue *v = rpc_future_wait(f, error);
        rpc_future_unref(f);
        if (v == NULL) {
            g_strfreev(names);
            return FALSE;
        }
        rpc_value_unref(v);
        names[r] = a->store->vt->get(a->store, key);
    }
    /* The first repeated name, in rank order (a set: worlds of thousands). */
    GHashTable *seen_names = g_hash_table_new(g_str_hash, g_str_equal);
    for (guint r = 0; r < a->world_size; r++) {
        if (!g_hash_table_add(seen_names, names[r])) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "RPC worker name %s is not unique.",
                        names[r]);
            g_hash_table_unref(seen_names);
            g_strfreev(names);
            return FALSE;
        }
    }
    g_hash_table_unref(seen_names);
    a->names = names;
    a->state = AGENT_RUNNING;
    TRACE(a, tk_state, 0, 0, 0, "running");
    return TRUE;
}

gboolean
rpc_agent_is_running(const RpcAgent *a)
{
    return a != NULL && a->state == AGENT_RUNNING;
}

const char *
rpc_agent_name(const RpcAgent *a)
{
    return a->name;
}

gint
rpc_agent_id(const RpcAgent *a)
{
    return a->id;
}

guint
rpc_agent_world_size(const RpcAgent *a)
{
    return a->world_size;
}

RpcExecutor *
rpc_agent_executor(RpcAgent *a)
{
    return a->ex;
}

RpcRegistry *
rpc_agent_registry(RpcAgent *a)
{
    return a->reg;
}

void
rpc_agent_get_counters(const RpcAgent *a, RpcAgentCounters *out)
{
    *out = a->c;
}

RpcTime
rpc_agent_get_rpc_timeout(const RpcAgent *a)
{
    return a->default_timeout;
}

void
rpc_agent_set_rpc_timeout(RpcAgent *a, RpcTime timeout)
{
    g_return_if_fail(timeout >= 0);
    a->default_timeout = timeout;
}

void
rpc_agent_set_ignore_rref_leak(RpcAgent *a, gboolean ignore)
{
    a->raise_rref_leaks = !ignore;
}

RpcValue *
rpc_agent_slot_get(RpcAgent *a, const char *name)
{
    return g_hash_table_lookup(a->slots, name);
}

void
rpc_agent_slot_set(RpcAgent *a, const char *name, RpcValue *v)
{
    g_hash_table_replace(a->slots, g_strdup(name), v);
}

RpcRRefCtx *
rpc_agent_rref_ctx(RpcAgent *a)
{
    return a->rrefs;
}

RpcDistAutograd *
rpc_agent_dist_autograd(RpcAgent *a)
{
    return a->dist;
}

const char *
rpc_agent_worker_name(RpcAgent *a, gint id)
{
    if (a->names == NULL || id < 0 || (guint)id >= a->world_size)
        return NULL;
    return a->names[id];
}

static gboolean
require_running(const RpcAgent *a, GError **error)
{
    if (a != NULL && a->state == AGENT_RUNNING)
        return TRUE;
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
    return FALSE;
}

/* --- addressing (spec §6.3) --------------------------------------------- */

static gint
resolve(RpcAgent *a, const RpcValue *to, GError **error)
{
    if (to == NULL)
        return a->id;
    switch (rpc_value_type(to)) {
    case RPC_VALUE_STRING: {
        const char *n = rpc_value_get_string(to);
        for (guint r = 0; r < a->world_size; r++)
            if (strcmp(a->names[r], n) == 0)
                return (gint)r;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "name:%s,rank:%d could not find destination name %s", a->name, a->id, n);
        return -1;
    }
    case RPC_VALUE_INT: {
        gint64 r = rpc_value_get_int(to);
        if (r >= 0 && r < (gint64)a->world_size)
            return (gint)r;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "name:%s,rank:%d could not find destination id %" G_GINT64_FORMAT, a->name,
                    a->id, r);
        return -1;
    }
    case RPC_VALUE_WORKER_INFO: {
        gint r = rpc_value_worker_id(to);
        if (r >= 0 && (guint)r < a->world_size &&
            strcmp(a->names[r], rpc_value_worker_name(to)) == 0)
            return r;
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "name:%s,rank:%d could not find destination name %s", a->name, a->id,
                    rpc_value_worker_name(to));
        return -1;
    }
    default: {
        char *r = rpc_value_repr(to);
        g_set_error(error, RPC_ERROR, RPC_ERROR_VALUE, "Cannot get WorkerInfo from name %s", r);
        g_free(r);
        return -1;
    }
    }
}

gint
rpc_agent_resolve(RpcAgent *a, const RpcValue *to, GError **error)
{
    if (!require_running(a, error))
        return -1;
    return resolve(a, to, error);
}

RpcValue *
rpc_agent_get_worker_info(RpcAgent *a, const RpcValue *to, GError **error)
{
    if (!require_running(a, error))
        return NULL;
    gint id = resolve(a, to, error);
    if (id < 0)
        return NULL;
    return rpc_value_new_worker_info(a->names[id], id);
}

RpcValue *
rpc_agent_get_worker_infos(RpcAgent *a)
{
    RpcValue *list = rpc_value_new_list();
    for (guint r = 0; a->names && r < a->world_size; r++)
        rpc_value_list_append(list, rpc_value_new_worker_info(a->names[r], (gint)r));
    return list;
}

/* --- timeouts ------------------------------------------------------------- */

static gboolean
entry_before(const TimeoutEntry *x, const TimeoutEntry *y)
{
    return x->expiry < y->expiry || (x->expiry == y->expiry && x->id < y->id);
}

static void
heap_push(TimeoutHeap *h, TimeoutEntry e)
{
    if (h->len == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 16;
        h->v = g_renew(TimeoutEntry, h->v, h->cap);
    }
    h->v[h->len++] = e;
    guint i = h->len - 1;
    TimeoutEntry *d = h->v;
    while (i > 0) {
        guint p = (i - 1) / 2;
        if (!entry_before(&d[i], &d[p]))
            break;
        TimeoutEntry t = d[i];
        d[i] = d[p];
        d[p] = t;
        i = p;
    }
}

static TimeoutEntry
heap_pop(TimeoutHeap *h)
{
    TimeoutEntry *d = h->v;
    TimeoutEntry top = d[0];
    d[0] = d[--h->len];
    guint i = 0, n = h->len;
    for (;;) {
        guint l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && entry_before(&d[l], &d[m]))
            m = l;
        if (r < n && entry_before(&d[r], &d[m]))
            m = r;
        if (m == i)
            break;
        TimeoutEntry t = d[i];
        d[i] = d[m];
        d[m] = t;
        i = m;
    }
    return top;
}

static void on_timer(gpointer data);

static void
arm_timer(RpcAgent *a)
{
    if (a->timeouts.len == 0)
        return;
    RpcTime head = a->timeouts.v[0].expiry;
    if (a->timer_id != 0) {
        if (a->timer_at <= head)
            return;
        rpc_executor_cancel(a->ex, a->timer_id);
    }
    RpcTime now = rpc_executor_now(a->ex);
    a->timer_at = head;
    a->timer_id = rpc_executor_call_after(a->ex, head > now ? head - now : 0, on_timer, a, NULL);
}

/* Removes the call from pending (the caller completes its future), with its
 * reference to the future handed to the caller. */
static RpcFuture *
take_pending(RpcAgent *a, gint64 id, Pending *out)
{
    Pending *p = rpc_intmap_remove(&a->pending, id);
    if (p == NULL)
        return NULL;
    *out = *p;
    rpc_pool_delete(Pending, p); /* its future reference moves to the caller */
    return out->fut;
}

/* Drops answered calls from the head of the timeout heap and moves the
 * armed timer to the earliest live expiry (or cancels it), so that a run is
 * not kept alive until long-answered calls would have timed out. */
static void
retarget_timer(RpcAgent *a)
{
    while (a->timeouts.len > 0) {
        TimeoutEntry *e = &a->timeouts.v[0];
        Pending *p = rpc_intmap_lookup(&a->pending, e->id);
        if (p != NULL && p->expiry == e->expiry)
            break;
        heap_pop(&a->timeouts);
    }
    if (a->timeouts.len == 0) {
        if (a->timer_id != 0) {
            rpc_executor_cancel(a->ex, a->timer_id);
            a->timer_id = 0;
        }
        return;
    }
    RpcTime head = a->timeouts.v[0].expiry;
    if (a->timer_id != 0 && a->timer_at != head) {
        rpc_executor_cancel(a->ex, a->timer_id);
        a->timer_id = 0;
    }
    arm_timer(a);
}

static void
call_finished(RpcAgent *a)
{
    retarget_timer(a);
    g_assert(a->c.client_active_calls > 0);
    if (--a->c.client_active_calls == 0 && a->idle != NULL) {
        RpcFuture *idle = a->idle;
        a->idle = NULL;
        rpc_future_complete_if_needed(idle, rpc_value_none());
        rpc_future_unref(idle);
    }
}

static void
fail_call(RpcAgent *a, RpcFuture *fut, RpcValue *err)
{
    rpc_future_fail_if_needed(fut, err);
    rpc_future_unref(fut);
    call_finished(a);
}

static void
on_timer(gpointer data)
{
    RpcAgent *a = data;
    a->timer_id = 0;
    RpcTime now = rpc_executor_now(a->ex);
    while (a->timeouts.len > 0 && a->timeouts.v[0].expiry <= now) {
        TimeoutEntry e = heap_pop(&a->timeouts);
        Pending *p = rpc_intmap_lookup(&a->pending, e.id);
        if (p == NULL || p->expiry != e.expiry)
            continue; /* answered already */
        Pending taken = {0};
        RpcFuture *fut = take_pending(a, e.id, &taken);
        gint64 ms = taken.timeout / RPC_MS;
        char *msg = g_strdup_printf(RPC_MSG_TIMEOUT_FMT, ms);
        char *text = rpc_err_format(RPC_ERR_TIMEOUT, msg);
        a->c.timeouts++;
        TRACE(a, tk_timeout, taken.to, taken.id, ms, NULL);
        fail_call(a, fut, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
        g_free(text);
        g_free(msg);
    }
    arm_timer(a);
}

/* --- sending -------------------------------------------------------------- */

/* Encodes a message body; RRefs inside are forked (rref.c's pickle hook).
 * *tensors receives the side list, NULL when the body has no tensor.
 * A body that cannot be encoded takes back the forks it made before the
 * failure; otherwise *forks (nullable) receives them, so that a send that
 * fails at once can take them back too (rpc_rref_forks_undo). */
/* A side list to encode into.  Most bodies carry no tensor, so an empty
 * list goes back to the spare slot (tensors_release) for the next encode; a
 * nested encode (from a pickle hook) just allocates its own. */
static GPtrArray *
tensors_take(RpcAgent *a)
{
    GPtrArray *t = a->spare_tensors;
    a->spare_tensors = NULL;
    return t ? t : g_ptr_array_new_with_free_func((GDestroyNotify)rpc_tensor_unref);
}

static void
tensors_release(RpcAgent *a, GPtrArray *t)
{
    if (t->len == 0 && a->spare_tensors == NULL)
        a->spare_tensors = t;
    else
        g_ptr_array_unref(t);
}

/* Hands the forks made since rpc_rref_forks_begin to *forks (nullable), or
 * takes them back when the body failed to encode. */
static void
forks_finish(RpcAgent *a, gboolean encoded, GArray **forks)
{
    GArray *made = rpc_rref_forks_end(a->rrefs);
    if (!encoded) {
        rpc_rref_forks_undo(a->rrefs, made);
        made = NULL;
    }
    if (forks != NULL)
        *forks = made;
    else if (made != NULL)
        g_array_unref(made);
}

/* Encodes a `type` message `id` whose payload encode() writes from body,
 * straight into its wire form (rpc_message_build_with, in the agent's
 * scratch buffer); RRefs inside are forked (rref.c's pickle hook).  NULL +
 * error when body cannot be encoded (the forks it made are taken back);
 * else *forks (nullable) receives the forks, so that a send that fails at
 * once can take them back too (rpc_rref_forks_undo).  Encodes never nest:
 * the fork journal asserts it. */
static RpcMessage *
build_message_with(RpcAgent *a, RpcMessageType type, gint64 id, RpcMessageBodyFunc encode,
                   gconstpointer body, GArray **forks, RpcWire **wire, GError **error)
{
    GPtrArray *tensors = tensors_take(a);
    RpcCodecHooks hooks = {rpc_rref_pickle, NULL, a};
    rpc_rref_forks_begin(a->rrefs);
    RpcMessage *msg =
        rpc_message_build_with(type, id, encode, body, tensors, &hooks, &a->scratch, wire, error);
    forks_finish(a, msg != NULL, forks);
    tensors_release(a, tensors); /* the message holds its own reference */
    return msg;
}

static RpcMessage *
build_message(RpcAgent *a, RpcMessageType type, gint64 id, const RpcValue *body, GArray **forks,
              RpcWire **wire, GError **error)
{
    return build_message_with(a, type, id, rpc_message_value_body, body, forks, wire, error);
}

/* A user call's body [name, args, kwargs, async], encoded without building
 * the list (rpc_codec_encode_call_append). */
typedef struct {
    const char *name;
    const RpcValue *args;   /* nullable: [] */
    const RpcValue *kwargs; /* nullable: {} */
    gboolean is_async;
} CallBody;

static gboolean
encode_call_body(RpcCodecBuffer *out, gconstpointer body, GPtrArray *tensors,
                 const RpcCodecHooks *hooks, GError **error)
{
    const CallBody *c = body;
    return rpc_codec_encode_call_append(out, c->name, c->args, c->kwargs, c->is_async, tensors,
                                        hooks, error);
}

/* msg (taken) went through a dist autograd wrap hook, given a reference,
 * which returned `out` (transfer full): msg itself, or a wrapper.  Returns
 * the message to send, with *wire (taken, nullable) its wire form: kept
 * when the message is unchanged, else encoded anew. */
static RpcMessage *
after_wrap(RpcMessage *msg, RpcMessage *out, RpcWire **wire)
{
    if (out != msg || *wire == NULL) {
        rpc_wire_unref(*wire);
        *wire = rpc_message_encode_wire(out);
    }
    rpc_message_unref(msg);
    return out;
}

/* Sends request msg (taken) with its wire form (taken; NULL: encode it
 * here); the returned future (transfer full) completes with the response's
 * value or error. */
static RpcFuture *
send_message(RpcAgent *a, gint dst, RpcMessage *msg, RpcWire *wire, RpcTime timeout,
             const char *what)
{
    gint64 id = rpc_message_id(msg);
    RpcMessageType type = rpc_message_type(msg);
    /* Hook: a user call made in a dist autograd context goes out wrapped. */
    msg = after_wrap(msg, rpc_dist_autograd_wrap_request(a, dst, rpc_message_ref(msg)), &wire);
    RpcFuture *fut = rpc_future_new(a->ex);
    /* For deadlock reports, formatted only if one is made. */
    rpc_future_set_description_lazy(fut, "the reply to %s from %s", what, a->names[dst]);
    RpcTime effective = timeout == RPC_TIMEOUT_UNSET ? a->default_timeout : timeout;
    TRACE(a, tk_send, dst, id, (gint64)rpc_wire_size(wire), what);
    GError *send_err = NULL;
    if (!rpc_transport_send(a->tr, a->id, dst, msg, wire, &send_err)) {
        TRACE(a, tk_send_failed, dst, id, 0, send_err->message);
        rpc_future_fail_if_needed(fut, rpc_value_new_error_from_gerror(send_err));
        g_error_free(send_err);
    } else {
        Pending *p = rpc_pool_new(Pending);
        p->id = id;
        p->to = dst;
        p->type = type;
        p->fut = rpc_future_ref(fut);
        p->timeout = effective;
        p->expiry = RPC_TIME_NEVER;
        if (effective > 0) {
            RpcTime now = rpc_executor_now(a->ex);
            p->expiry = effective > RPC_TIME_NEVER - now ? RPC_TIME_NEVER : now + effective;
            heap_push(&a->timeouts, (TimeoutEntry){p->expiry, id});
        }
        rpc_intmap_insert(&a->pending, id, p);
        a->c.client_active_calls++;
        a->c.requests_sent++;
        if (effective > 0)
            arm_timer(a);
    }
    rpc_wire_unref(wire);
    rpc_message_unref(msg);
    return fut;
}

/* Sends an encoded request again under a new id (encoded: transfer none;
 * its payload and tensors are shared, so a retry sends the same bytes). */
static RpcFuture *
send_encoded(RpcAgent *a, gint dst, const RpcMessage *encoded, RpcTime timeout, const char *what)
{
    gint64 id = a->next_message_id++;
    RpcMessage *msg =
        rpc_message_new(rpc_message_type(encoded), id, g_bytes_ref(rpc_message_payload(encoded)),
                        g_ptr_array_ref(rpc_message_tensors(encoded)));
    return send_message(a, dst, msg, NULL, timeout, what);
}

/* Sends a request whose body encode() writes; NULL + error when the body
 * cannot be encoded. */
static RpcFuture *
send_request_with(RpcAgent *a, gint dst, RpcMessageType type, RpcMessageBodyFunc encode,
                  gconstpointer body, RpcTime timeout, const char *what, GError **error)
{
    GArray *forks;
    RpcWire *wire;
    gint64 id = a->next_message_id++;
    RpcMessage *msg = build_message_with(a, type, id, encode, body, &forks, &wire, error);
    if (msg == NULL) {
        if (a->next_message_id == id + 1)
            a->next_message_id = id; /* nothing was sent: the id is not used */
        return NULL;
    }
    RpcFuture *fut = send_message(a, dst, msg, wire, timeout, what);
    /* Done already: the transport refused the message, so no receiver
     * will ever account for the RRefs it carried. */
    if (rpc_future_done(fut))
        rpc_rref_forks_undo(a->rrefs, forks);
    else if (forks != NULL)
        g_array_unref(forks);
    return fut;
}

static RpcFuture *
send_request(RpcAgent *a, gint dst, RpcMessageType type, RpcValue *body, RpcTime timeout,
             const char *what, GError **error)
{
    return send_request_with(a, dst, type, rpc_message_value_body, body, timeout, what, error);
}

RpcFuture *
rpc_agent_send_request(RpcAgent *a, gint dst, RpcMessageType type, RpcValue *body, RpcTime timeout,
                       const char *what, GError **error)
{
    if (!require_running(a, error))
        return NULL;
    return send_request(a, dst, type, body, timeout, what, error);
}

/* --- sendWithRetries (spec §3.6) ------------------------------------------
 * The first attempt goes out at once; after a failed attempt the next one is
 * scheduled 1 s later for the first retry and 1 s * 1.5^c for the later
 * ones (c = retries already sent before it), so attempts fall at 0, 1, 2,
 * 3.5, 5.75, 9.125 s when every attempt fails at once.  Every attempt sends
 * byte-identical payload, which is how the faulty agent recognises it. */

typedef struct {
    RpcAgent *a;
    gint dst;
    RpcMessage *encoded; /* the body, encoded once; each attempt takes a new id */
    char *what;
    guint retries; /* retries sent so far */
    guint max_retries;
    RpcFuture *result;
} Retry;

static void
retry_free(Retry *r)
{
    rpc_message_unref(r->encoded);
    g_free(r->what);
    rpc_future_unref(r->result);
    g_free(r);
}

static void retry_attempt(Retry *r);

/* The retry state is handed from the attempt's future to the timer and
 * back through a token, so that whichever is dropped unfired at teardown
 * (a cancelled timer, a future nobody completes) frees it exactly once. */
typedef struct {
    Retry *r;
} RetryToken;

static gpointer
token_new(Retry *r)
{
    RetryToken *t = g_new(RetryToken, 1);
    t->r = r;
    return t;
}

static void
token_free(gpointer p)
{
    RetryToken *t = p;
    if (t->r != NULL)
        retry_free(t->r);
    g_free(t);
}

static Retry *
token_take(gpointer p)
{
    RetryToken *t = p;
    Retry *r = t->r;
    t->r = NULL;
    return r;
}

static void
retry_timer(gpointer data)
{
    retry_attempt(token_take(data));
}

static gboolean
retry_done(RpcFuture *f, gpointer data, GError **error)
{
    Retry *r = token_take(data);
    RpcValue *err = rpc_future_peek_error(f);
    if (err == NULL) {
        rpc_future_complete_if_needed(r->result, rpc_value_ref(rpc_future_peek_value(f)));
        retry_free(r);
        return TRUE;
    }
    if (r->a->state != AGENT_RUNNING) {
        rpc_future_fail_if_needed(r->result, rpc_value_ref(err));
        retry_free(r);
        return TRUE;
    }
    if (r->retries >= r->max_retries) {
        char *text = g_strdup_printf("The RPC has not succeeded after the specified number of "
                                     "max retries (%u).",
                                     r->max_retries);
        rpc_future_fail_if_needed(r->result, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
        g_free(text);
        retry_free(r);
        return TRUE;
    }
    RpcTime delay = RPC_S; /* 1 s, 1 s, 1.5 s, 2.25 s, 3.375 s, … */
    for (guint c = 1; c < r->retries; c++)
        delay = delay * 3 / 2;
    r->retries++;
    rpc_executor_call_after(r->a->ex, delay, retry_timer, token_new(r), token_free);
    return TRUE;
}

static void
retry_attempt(Retry *r)
{
    if (r->a->state != AGENT_RUNNING) {
        rpc_future_fail_if_needed(r->result,
                                  rpc_value_new_error(RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED));
        retry_free(r);
        return;
    }
    RpcFuture *f = send_encoded(r->a, r->dst, r->encoded, RPC_TIMEOUT_UNSET, r->what);
    rpc_future_add_done_callback(f, retry_done, token_new(r), token_free, NULL);
    rpc_future_unref(f);
}

RpcFuture *
rpc_agent_send_with_retries(RpcAgent *a, gint dst, RpcMessageType type, RpcValue *body,
                            guint max_retries, const char *what, GError **error)
{
    if (!require_running(a, error))
        return NULL;
    Retry *r = g_new0(Retry, 1);
    RpcWire *wire;
    r->encoded = build_message(a, type, 0, body, NULL, &wire, error);
    if (r->encoded == NULL) {
        g_free(r);
        return NULL;
    }
    rpc_wire_unref(wire); /* attempts are encoded under their own ids */
    r->a = a;
    r->dst = dst;
    r->what = g_strdup(what);
    r->max_retries = max_retries;
    r->result = rpc_future_new(a->ex);
    char *desc = g_strconcat("the acknowledgement of ", what, " from ", a->names[dst], NULL);
    rpc_future_set_description(r->result, desc);
    g_free(desc);
    RpcFuture *result = rpc_future_ref(r->result);
    retry_attempt(r);
    return result;
}

RpcFuture *
rpc_async(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args, RpcValue *kwargs,
          RpcTime timeout, GError **error)
{
    RpcFuture *fut = NULL;
    g_return_val_if_fail(func != NULL, NULL);
    g_return_val_if_fail(args == NULL || rpc_value_type(args) == RPC_VALUE_LIST, NULL);
    g_return_val_if_fail(kwargs == NULL || rpc_value_type(kwargs) == RPC_VALUE_DICT, NULL);
    if (!require_running(a, error))
        goto out;
    gint dst = resolve(a, to, error);
    if (dst < 0)
        goto out;
    const RpcFunctionDef *def = rpc_registry_lookup(a->reg, func);
    if (def == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "function should be callable. (no function named '%s' on %s)", func, a->name);
        goto out;
    }
    if (def->flags & RPC_FUNC_BUILTIN) {
        guint n = args ? rpc_value_list_len(args) : 0;
        guint nkw = kwargs ? rpc_value_dict_len(kwargs) : 0;
        if ((gint)n < def->min_args || (def->max_args >= 0 && (gint)n > def->max_args) || nkw > 0) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Overloaded torch operator invoked from Python failed to many any "
                        "schema:\n%s() expected %d to %d positional arguments but got %u",
                        rpc_function_wire_name(def), def->min_args, def->max_args, n);
            goto out;
        }
    }
    CallBody body = {rpc_function_wire_name(def), args, kwargs, (def->flags & RPC_FUNC_ASYNC) != 0};
    RpcMessageType type =
        (def->flags & RPC_FUNC_BUILTIN) ? RPC_MSG_SCRIPT_CALL : RPC_MSG_PYTHON_CALL;
    fut = send_request_with(a, dst, type, encode_call_body, &body, timeout, def->name, error);
out:
    rpc_value_unref(args);
    rpc_value_unref(kwargs);
    return fut;
}

RpcValue *
rpc_sync(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args, RpcValue *kwargs,
         RpcTime timeout, GError **error)
{
    RpcFuture *fut = rpc_async(a, to, func, args, kwargs, timeout, error);
    if (fut == NULL)
        return NULL;
    RpcValue *v = rpc_future_wait(fut, error);
    rpc_future_unref(fut);
    return v;
}

/* --- receiving responses ---------------------------------------------------- */

typedef struct {
    RpcAgent *a;
    gint from;
    RpcMessage *msg;
} Inbound;

static void
inbound_free(gpointer p)
{
    Inbound *in = p;
    rpc_message_unref(in->msg);
    rpc_pool_delete(Inbound, in);
}

/* A UDF's exception as the caller sees it: the original kind, or
 * RuntimeError when a user-defined kind cannot be rebuilt from a string. */
static RpcValue *
reraise(const RpcValue *err)
{
    if (rpc_value_error_kind(err) != RPC_ERROR_USER)
        return rpc_value_ref((RpcValue *)err);
    char *text = g_strdup_printf("Failed to create original exception type. Error msg was "
                                 "__init__() missing 1 required positional argument: 'msg' "
                                 "Original exception on remote side was %s",
                                 rpc_value_error_message(err));
    RpcValue *v = rpc_value_new_error(RPC_ERROR_RUNTIME, text);
    g_free(text);
    return v;
}

/* Decodes a message's payload; RRefs inside are rebuilt (rref.c's unpickle
 * hook), and when `pending` is not NULL the confirmations they wait for are
 * collected in *pending (created on the first one; NULL if none), so that a
 * request can be held until they arrive. */
static RpcValue *
decode_payload(RpcAgent *a, RpcMessage *msg, GPtrArray **pending, GError **error)
{
    gsize len;
    const guint8 *bytes = rpc_message_payload_data(msg, &len);
    RpcDecodeCtx dctx = {a, pending != NULL, NULL};
    RpcCodecHooks hooks = {NULL, rpc_rref_unpickle, &dctx};
    RpcValue *v = rpc_codec_decode(bytes, len, rpc_message_tensors(msg), &hooks, error);
    if (pending != NULL)
        *pending = dctx.pending;
    else if (dctx.pending != NULL)
        g_ptr_array_unref(dctx.pending);
    return v;
}

static void
handle_response(gpointer data)
{
    Inbound *in = data;
    RpcAgent *a = in->a;
    gint64 id = rpc_message_id(in->msg);
    Pending p = {0};
    RpcFuture *fut = take_pending(a, id, &p);
    if (fut == NULL) {
        a->c.late_responses++;
        TRACE(a, tk_late, in->from, id, 0, rpc_message_type_name(rpc_message_type(in->msg)));
        return;
    }
    a->c.responses_received++;
    GError *err = NULL;
    /* Hook: a FORWARD_AUTOGRAD_RESP is replaced by the response it wraps. */
    RpcValue *v = rpc_dist_autograd_unwrap_response(a, in->from, &in->msg, &err)
                      ? decode_payload(a, in->msg, NULL, &err)
                      : NULL;
    RpcMessageType type = rpc_message_type(in->msg);
    TRACE(a, tk_response, in->from, id, 0, rpc_message_type_name(type));
    if (v == NULL) {
        a->c.decode_errors++;
        fail_call(a, fut, rpc_value_new_error_from_gerror(err));
        g_error_free(err);
        return;
    }
    if (type == RPC_MSG_EXCEPTION) {
        const char *text = rpc_value_type(v) == RPC_VALUE_STRING ? rpc_value_get_string(v)
                                                                 : "malformed EXCEPTION response";
        fail_call(a, fut, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
    } else if (rpc_value_type(v) == RPC_VALUE_ERROR &&
               (p.type == RPC_MSG_PYTHON_CALL || type == RPC_MSG_PYTHON_RREF_FETCH_RET)) {
        fail_call(a, fut, reraise(v));
    } else {
        rpc_future_complete_if_needed(fut, rpc_value_ref(v));
        rpc_future_unref(fut);
        call_finished(a);
    }
    rpc_value_unref(v);
}

/* --- serving requests --------------------------------------------------------- */

static void
respond(RpcAgent *a, gint to, gint64 id, RpcMessageType type, RpcValue *body)
{
    a->c.server_active_calls--;
    a->c.requests_served++;
    if (a->state != AGENT_RUNNING) {
        TRACE(a, tk_drop, to, id, 0, "response after shutdown");
        rpc_value_unref(body);
        return;
    }
    GError *err = NULL;
    RpcWire *wire;
    RpcMessage *msg = build_message(a, type, id, body, NULL, &wire, &err);
    rpc_value_unref(body);
    if (msg == NULL) {
        /* e.g. a UDF returned a Future: the caller gets the pickling error. */
        type = RPC_MSG_EXCEPTION;
        RpcValue *text = rpc_value_new_string(err->message);
        msg = build_message(a, type, id, text, NULL, &wire, NULL);
        rpc_value_unref(text);
        g_error_free(err);
    }
    /* Hook: the response to a wrapped request may go out wrapped. */
    msg = after_wrap(msg, rpc_dist_autograd_wrap_response(a, to, rpc_message_ref(msg)), &wire);
    TRACE(a, tk_respond, to, id, (gint64)rpc_wire_size(wire), rpc_message_type_name(type));
    GError *send_err = NULL;
    if (!rpc_transport_send(a->tr, a->id, to, msg, wire, &send_err)) {
        TRACE(a, tk_send_failed, to, id, 0, send_err->message);
        g_error_free(send_err);
    }
    rpc_wire_unref(wire);
    rpc_message_unref(msg);
}

static void
respond_exception(RpcAgent *a, gint to, gint64 id, const char *what)
{
    char *text = g_strdup_printf("Error on Node %d: %s", a->id, what);
    respond(a, to, id, RPC_MSG_EXCEPTION, rpc_value_new_string_take(text));
}

/* A UDF exception as a value: "On WorkerInfo(id=1, name=worker1):\n
 * ValueError('Expected error')\n", the kind kept. */
static RpcValue *
remote_exception(RpcAgent *a, const GError *err)
{
    RpcErrorKind kind = err->domain == RPC_ERROR ? (RpcErrorKind)err->code : RPC_ERROR_RUNTIME;
    /* repr(e) as Python prints it: single quotes unless the message has a
     * single quote and no double one (PyTorch then unescapes the text, so
     * newlines stay real). */
    gboolean dq = strchr(err->message, '\'') != NULL && strchr(err->message, '"') == NULL;
    char *text =
        g_strdup_printf("On WorkerInfo(id=%d, name=%s):\n%s(%c%s%c)\n", a->id, a->name,
                        rpc_error_kind_name(kind), dq ? '"' : '\'', err->message, dq ? '"' : '\'');
    RpcValue *v = rpc_value_new_error(kind, text);
    g_free(text);
    return v;
}

static void
fail_text(RpcFuture *out, const char *text)
{
    rpc_future_fail_if_needed(out, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
}

static void
fail_on_node(RpcAgent *a, RpcFuture *out, const char *what)
{
    char *text = g_strdup_printf("Error on Node %d: %s", a->id, what);
    fail_text(out, text);
    g_free(text);
}

typedef struct {
    RpcAgent *a;
    RpcFuture *out;
} AsyncRun;

static gboolean
async_finished(RpcFuture *f, gpointer data, GError **error)
{
    AsyncRun *r = data;
    r->a->c.server_active_async_calls--;
    RpcValue *err = rpc_future_peek_error(f);
    if (err != NULL)
        fail_text(r->out, rpc_value_error_message(err));
    else
        rpc_future_complete_if_needed(r->out, rpc_value_ref(rpc_future_peek_value(f)));
    return TRUE;
}

static void
async_run_free(gpointer p)
{
    AsyncRun *r = p;
    rpc_future_unref(r->out);
    g_free(r);
}

RpcFuture *
rpc_agent_run_function(RpcAgent *a, const char *name, const RpcValue *args, const RpcValue *kwargs,
                       gboolean is_async, gboolean python)
{
    RpcFuture *out = rpc_future_new(a->ex);
    const RpcFunctionDef *def = rpc_registry_lookup(a->reg, name);
    if (def == NULL) {
        char *what = python ? g_strdup_printf("AttributeError: Can't get attribute '%s' on "
                                              "<module '__main__'>. Default RPC pickler does not "
                                              "serialize function code. Ensure that UDFs are "
                                              "defined on both caller and callee modules.",
                                              name)
                            : g_strdup_printf("Unknown builtin op: %s.", name);
        fail_on_node(a, out, what);
        g_free(what);
        return out;
    }
    GError *err = NULL;
    RpcValue *result = def->fn(a, args, kwargs, &err);
    if (!python) {
        if (result == NULL) {
            fail_on_node(a, out, err->message);
            g_error_free(err);
        } else {
            rpc_future_complete_if_needed(out, result);
        }
        return out;
    }
    if (result == NULL) {
        /* A raising function, async or not, behaves the same (spec §5): its
         * exception travels back as a value. */
        rpc_future_complete_if_needed(out, remote_exception(a, err));
        g_error_free(err);
        return out;
    }
    if (!is_async) {
        rpc_future_complete_if_needed(out, result);
        return out;
    }
    if (rpc_value_type(result) != RPC_VALUE_FUTURE) {
        RpcValueType t = rpc_value_type(result);
        char *text = g_strdup_printf(
            "Unable to cast Python instance of type <class '%s'> to C++ type "
            "'c10::intrusive_ptr<c10::ivalue::Future>'. Functions decorated with "
            "@rpc.async_function must return a torch.futures.Future object, but got %s",
            t == RPC_VALUE_TENSOR ? "torch.Tensor" : rpc_value_type_name(t),
            t == RPC_VALUE_TENSOR ? "torch.Tensor" : rpc_value_type_name(t));
        rpc_value_unref(result);
        fail_text(out, text);
        g_free(text);
        return out;
    }
    AsyncRun *r = g_new(AsyncRun, 1);
    r->a = a;
    r->out = rpc_future_ref(out);
    a->c.server_active_async_calls++;
    rpc_future_add_done_callback(rpc_value_get_future(result), async_finished, r, async_run_free,
                                 NULL);
    rpc_value_unref(result);
    return out;
}

typedef struct {
    RpcAgent *a;
    gint to;
    gint64 id;
    RpcMessageType ret_type;
} CallReply;

static gboolean
call_reply(RpcFuture *f, gpointer data, GError **error)
{
    CallReply *r = data;
    RpcValue *err = rpc_future_peek_error(f);
    if (err != NULL)
        respond(r->a, r->to, r->id, RPC_MSG_EXCEPTION,
                rpc_value_new_string(rpc_value_error_message(err)));
    else
        respond(r->a, r->to, r->id, r->ret_type, rpc_value_ref(rpc_future_peek_value(f)));
    return TRUE;
}

/* Replies to request (to, id) with out's outcome once it completes. */
void
rpc_agent_reply_when_done(RpcAgent *a, gint to, gint64 id, RpcMessageType ret_type, RpcFuture *out)
{
    CallReply reply = {a, to, id, ret_type};
    if (rpc_future_done(out)) { /* the usual case: a plain function returned */
        call_reply(out, &reply, NULL);
        return;
    }
    CallReply *r = g_memdup2(&reply, sizeof reply);
    rpc_future_add_done_callback(out, call_reply, r, g_free, NULL);
}

void
rpc_agent_respond(RpcAgent *a, gint to, gint64 id, RpcMessageType type, RpcValue *body)
{
    respond(a, to, id, type, body);
}

/* Checks a call body [name, args, kwargs, async, …extra] of `want` items. */
gboolean
rpc_agent_parse_call_body(const RpcValue *body, guint want, const char **name,
                          const RpcValue **args, const RpcValue **kwargs, gboolean *is_async)
{
    if (rpc_value_type(body) != RPC_VALUE_LIST || rpc_value_list_len(body) != want ||
        rpc_value_type(rpc_value_list_get(body, 0)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(body, 1)) != RPC_VALUE_LIST ||
        rpc_value_type(rpc_value_list_get(body, 2)) != RPC_VALUE_DICT ||
        rpc_value_type(rpc_value_list_get(body, 3)) != RPC_VALUE_BOOL)
        return FALSE;
    *name = rpc_value_get_string(rpc_value_list_get(body, 0));
    *args = rpc_value_list_get(body, 1);
    *kwargs = rpc_value_list_get(body, 2);
    *is_async = rpc_value_get_bool(rpc_value_list_get(body, 3));
    return TRUE;
}

static void
serve_call_parts(RpcAgent *a, gint from, gint64 id, RpcMessageType type, const char *name,
                 const RpcValue *args, const RpcValue *kwargs, gboolean is_async)
{
    gboolean python = type == RPC_MSG_PYTHON_CALL;
    RpcFuture *out = rpc_agent_run_function(a, name, args, kwargs, is_async, python);
    rpc_agent_reply_when_done(a, from, id, python ? RPC_MSG_PYTHON_RET : RPC_MSG_SCRIPT_RET, out);
    rpc_future_unref(out);
}

static void
serve_call(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    const char *name;
    const RpcValue *args, *kwargs;
    gboolean is_async;
    if (!rpc_agent_parse_call_body(body, 4, &name, &args, &kwargs, &is_async)) {
        respond_exception(a, from, id, "malformed call request");
        return;
    }
    serve_call_parts(a, from, id, type, name, args, kwargs, is_async);
}

static void
dispatch_request(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    const char *fname = "";
    if (rpc_value_type(body) == RPC_VALUE_LIST && rpc_value_list_len(body) > 0 &&
        rpc_value_type(rpc_value_list_get(body, 0)) == RPC_VALUE_STRING)
        fname = rpc_value_get_string(rpc_value_list_get(body, 0));
    TRACE(a, tk_serve, from, id, 0,
          type == RPC_MSG_PYTHON_CALL || type == RPC_MSG_SCRIPT_CALL ||
                  type == RPC_MSG_PYTHON_REMOTE_CALL || type == RPC_MSG_SCRIPT_REMOTE_CALL
              ? fname
              : rpc_message_type_name(type));
    switch (type) {
    case RPC_MSG_PYTHON_CALL:
    case RPC_MSG_SCRIPT_CALL:
        serve_call(a, from, id, type, body);
        break;
    case RPC_MSG_PYTHON_REMOTE_CALL:
    case RPC_MSG_SCRIPT_REMOTE_CALL:
    case RPC_MSG_PYTHON_RREF_FETCH_CALL:
    case RPC_MSG_SCRIPT_RREF_FETCH_CALL:
    case RPC_MSG_RREF_USER_DELETE:
    case RPC_MSG_RREF_FORK_REQUEST:
    case RPC_MSG_RREF_CHILD_ACCEPT:
        rpc_rref_serve(a, from, id, type, body);
        break;
    case RPC_MSG_BACKWARD_AUTOGRAD_REQ:
    case RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ:
    case RPC_MSG_RREF_BACKWARD_REQ:
        rpc_dist_autograd_serve(a, from, id, type, body);
        break;
    default: {
        char *what = g_strdup_printf("Request type %u not supported.", (guint)type);
        respond_exception(a, from, id, what);
        g_free(what);
    }
    }
}

/* A request held until the UserRRefs it carried are confirmed (spec §1.3
 * step 3).  As in PyTorch the wait is a future, not a blocked thread: the
 * thread that decoded the request goes back to the pool, and the request
 * continues as a new task once the confirmations arrive — otherwise the
 * acknowledgements, which also need a pool thread, could never be served. */
typedef struct {
    RpcAgent *a;
    gint from;
    gint64 id;
    RpcMessageType type;
    RpcValue *body;
} Held;

static void
held_free(gpointer p)
{
    Held *h = p;
    rpc_value_unref(h->body);
    g_free(h);
}

static void
held_run(gpointer data)
{
    Held *h = data;
    gint64 scope = rpc_dist_autograd_request_resume(h->a, h->from, h->id);
    dispatch_request(h->a, h->from, h->id, h->type, h->body);
    rpc_dist_autograd_request_end(h->a, scope);
}

static gboolean
held_confirmed(RpcFuture *f, gpointer data, GError **error)
{
    Held *h = data;
    Held *copy = g_memdup2(h, sizeof *h);
    h->body = NULL; /* moves to the task */
    rpc_executor_spawn(copy->a->ex, held_run, copy, held_free);
    return TRUE;
}

/* decode_payload for a call body (rpc_codec_decode_call). */
static RpcCodecCallResult
decode_call_payload(RpcAgent *a, RpcMessage *msg, GPtrArray **pending, RpcCodecCall *call,
                    GError **error)
{
    gsize len;
    const guint8 *bytes = rpc_message_payload_data(msg, &len);
    RpcDecodeCtx dctx = {a, TRUE, NULL};
    RpcCodecHooks hooks = {NULL, rpc_rref_unpickle, &dctx};
    RpcCodecCallResult r =
        rpc_codec_decode_call(bytes, len, rpc_message_tensors(msg), &hooks, call, error);
    *pending = dctx.pending;
    return r;
}

static gboolean
call_is_well_formed(const RpcCodecCall *c)
{
    return rpc_value_type(c->args) == RPC_VALUE_LIST &&
           rpc_value_type(c->kwargs) == RPC_VALUE_DICT && rpc_value_type(c->flag) == RPC_VALUE_BOOL;
}

/* The body value rpc_codec_decode would have given (takes c's values). */
static RpcValue *
call_body_value(RpcCodecCall *c)
{
    RpcValue *body = rpc_value_new_list_sized(4);
    rpc_value_list_append(body, rpc_value_new_string_len(c->name, c->name_len));
    rpc_value_list_append(body, c->args);
    rpc_value_list_append(body, c->kwargs);
    rpc_value_list_append(body, c->flag);
    return body;
}

/* dispatch_request + serve_call for a decoded call (takes c's values). */
static void
serve_decoded_call(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcCodecCall *c)
{
    char buf[128];
    char *heap = NULL;
    const char *name = buf;
    if (c->name_len < sizeof buf) {
        memcpy(buf, c->name, c->name_len);
        buf[c->name_len] = '\0';
    } else {
        name = heap = g_strndup(c->name, c->name_len);
    }
    TRACE(a, tk_serve, from, id, 0, name);
    serve_call_parts(a, from, id, type, name, c->args, c->kwargs, rpc_value_get_bool(c->flag));
    rpc_value_unref(c->args);
    rpc_value_unref(c->kwargs);
    rpc_value_unref(c->flag);
    g_free(heap);
}

static void
serve_request(Inbound *in)
{
    RpcAgent *a = in->a;
    RpcMessageType type = rpc_message_type(in->msg);
    gint64 id = rpc_message_id(in->msg);
    a->c.server_active_calls++;
    GError *err = NULL;
    GPtrArray *pending = NULL;
    RpcValue *body;
    if (type == RPC_MSG_PYTHON_CALL || type == RPC_MSG_SCRIPT_CALL) {
        RpcCodecCall call;
        switch (decode_call_payload(a, in->msg, &pending, &call, &err)) {
        case RPC_CODEC_CALL_OK:
            if (pending == NULL && call_is_well_formed(&call)) {
                serve_decoded_call(a, in->from, id, type, &call);
                return;
            }
            body = call_body_value(&call);
            break;
        case RPC_CODEC_CALL_NOT_A_CALL:
            body = decode_payload(a, in->msg, &pending, &err);
            break;
        default:
            body = NULL;
            break;
        }
    } else {
        body = decode_payload(a, in->msg, &pending, &err);
    }
    if (body == NULL) {
        a->c.decode_errors++;
        respond_exception(a, in->from, id, err->message);
        g_error_free(err);
        if (pending != NULL)
            g_ptr_array_unref(pending);
        return;
    }
    if (pending != NULL) {
        RpcFuture *all =
            rpc_future_collect_all(a->ex, (RpcFuture *const *)pending->pdata, pending->len, NULL);
        Held *h = g_new(Held, 1);
        *h = (Held){a, in->from, id, type, body};
        rpc_future_add_done_callback(all, held_confirmed, h, held_free, NULL);
        rpc_future_unref(all);
        g_ptr_array_unref(pending);
        return;
    }
    dispatch_request(a, in->from, id, type, body);
    rpc_value_unref(body);
}

/* Hook: a FORWARD_AUTOGRAD_REQ is served as the request it wraps, with the
 * caller's dist autograd context as this thread's current one. */
static void
handle_request(gpointer data)
{
    Inbound *in = data;
    gint64 scope;
    GError *err = NULL;
    if (!rpc_dist_autograd_request_begin(in->a, in->from, &in->msg, &scope, &err)) {
        in->a->c.server_active_calls++;
        in->a->c.decode_errors++;
        respond_exception(in->a, in->from, rpc_message_id(in->msg), err->message);
        g_error_free(err);
        return;
    }
    serve_request(in);
    rpc_dist_autograd_request_end(in->a, scope);
}

void
rpc_agent_deliver(RpcAgent *a, gint from, RpcWire *wire)
{
    g_return_if_fail(a != NULL && wire != NULL);
    GError *err = NULL;
    RpcMessage *msg = rpc_message_decode_wire(wire, &err);
    if (msg == NULL) {
        a->c.decode_errors++;
        TRACE(a, tk_decode, from, 0, 0, err->message);
        g_error_free(err);
        return;
    }
    if (a->state != AGENT_RUNNING) {
        TRACE(a, tk_drop, from, rpc_message_id(msg), 0, "agent not running");
        rpc_message_unref(msg);
        return;
    }
    if (rpc_message_type_is_request(rpc_message_type(msg))) {
        /* At most once: a request the network duplicated is served once
         * (a duplicated response finds no pending call and is dropped). */
        gint64 id = rpc_message_id(msg);
        if (from >= 0 && (guint)from < a->world_size && !rpc_idset_add(&a->seen[from], id)) {
            TRACE(a, tk_drop, from, id, 0, "duplicate request");
            rpc_message_unref(msg);
            return;
        }
    }
    Inbound *in = rpc_pool_new_raw(Inbound);
    in->a = a;
    in->from = from;
    in->msg = msg;
    if (rpc_message_type_is_request(rpc_message_type(msg)))
        rpc_executor_spawn(a->ex, handle_request, in, inbound_free);
    else
        rpc_executor_spawn(a->ex, handle_response, in, inbound_free);
}

static gint
compare_int64(gconstpointer x, gconstpointer y)
{
    gint64 a = *(const gint64 *)x, b = *(const gint64 *)y;
    return (a > b) - (a < b);
}

void
rpc_agent_connection_failed(RpcAgent *a, gint peer, gint64 message_id, const char *reason)
{
    g_return_if_fail(a != NULL);
    if (reason == NULL)
        reason = RPC_MSG_CONNECTION_CLOSED;
    /* Collect ids first, in id order: completing a future runs callbacks that
     * may send more requests. */
    GArray *ids = g_array_new(FALSE, FALSE, sizeof(gint64));
    if (message_id >= 0) {
        g_array_append_val(ids, message_id);
    } else {
        for (guint i = 0; i < rpc_intmap_capacity(&a->pending); i++) {
            const Pending *p = a->pending.slots[i].value;
            if (p != NULL && p->to == peer)
                g_array_append_val(ids, p->id);
        }
        g_array_sort(ids, compare_int64); /* slot order is not observable */
    }
    for (guint i = 0; i < ids->len; i++) {
        Pending p = {0};
        RpcFuture *fut = take_pending(a, g_array_index(ids, gint64, i), &p);
        if (fut == NULL)
            continue;
        TRACE(a, tk_conn, peer, p.id, 0, reason);
        fail_call(a, fut, rpc_value_new_error(RPC_ERROR_RUNTIME, reason));
    }
    g_array_unref(ids);
}

static void
fail_all_pending(RpcAgent *a, const char *reason)
{
    for (guint r = 0; r < a->world_size; r++)
        rpc_agent_connection_failed(a, (gint)r, -1, reason);
}

/* --- all_gather / barrier (spec §3.7, §6.4) ------------------------------ */

static GatherState *
gather_state(RpcAgent *a, const char *seq_id)
{
    GatherState *s = g_hash_table_lookup(a->gather_states, seq_id);
    if (s == NULL) {
        s = g_new0(GatherState, 1);
        s->gathered = rpc_value_new_dict();
        s->proceed = rpc_future_new(a->ex);
        char *desc = g_strdup_printf("_all_gather %s to proceed", seq_id);
        rpc_future_set_description(s->proceed, desc);
        g_free(desc);
        g_hash_table_insert(a->gather_states, g_strdup(seq_id), s);
    }
    return s;
}

/* The gathered dict is shared read-only once proceed completes, so it is
 * rebuilt (not appended to) on every contribution. */
static void
gather_put(GatherState *s, const char *name, RpcValue *obj)
{
    RpcValue *d = rpc_value_new_dict();
    for (guint i = 0; i < rpc_value_dict_len(s->gathered); i++)
        rpc_value_dict_set(d, rpc_value_dict_key_at(s->gathered, i),
                           rpc_value_ref(rpc_value_dict_value_at(s->gathered, i)));
    rpc_value_dict_set(d, name, obj);
    rpc_value_unref(s->gathered);
    s->gathered = d;
}

static gboolean
gather_complete(GatherState *s, const RpcValue *names)
{
    for (guint i = 0; i < rpc_value_list_len(names); i++)
        if (rpc_value_dict_get(s->gathered, rpc_value_get_string(rpc_value_list_get(names, i))) ==
            NULL)
            return FALSE;
    return TRUE;
}

/* _gather_to_leader(sequence_id, worker_name, obj, worker_names) */
RpcValue *
rpc_agent_internal_gather_to_leader(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs,
                                    GError **error)
{
    if (rpc_value_list_len(args) != 4 ||
        rpc_value_type(rpc_value_list_get(args, 0)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(args, 1)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(args, 3)) != RPC_VALUE_LIST) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE, "_gather_to_leader: bad arguments");
        return NULL;
    }
    GatherState *s = gather_state(a, rpc_value_get_string(rpc_value_list_get(args, 0)));
    const char *who = rpc_value_get_string(rpc_value_list_get(args, 1));
    if (rpc_value_dict_get(s->gathered, who) != NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_ASSERTION, "%s reported intent sequence id twice. ",
                    who);
        return NULL;
    }
    gather_put(s, who, rpc_value_ref(rpc_value_list_get(args, 2)));
    if (gather_complete(s, rpc_value_list_get(args, 3)))
        rpc_future_complete_if_needed(s->proceed, rpc_value_none());
    return rpc_value_none();
}

/* _broadcast_to_followers(sequence_id, objects_map) */
RpcValue *
rpc_agent_internal_broadcast_to_followers(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs,
                                          GError **error)
{
    if (rpc_value_list_len(args) != 2 ||
        rpc_value_type(rpc_value_list_get(args, 0)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(args, 1)) != RPC_VALUE_DICT) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "_broadcast_to_followers: bad arguments");
        return NULL;
    }
    GatherState *s = gather_state(a, rpc_value_get_string(rpc_value_list_get(args, 0)));
    if (rpc_future_done(s->proceed)) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_ASSERTION,
                            "Termination signal sent twice!");
        return NULL;
    }
    rpc_value_unref(s->gathered);
    s->gathered = rpc_value_ref(rpc_value_list_get(args, 1));
    rpc_future_complete_if_needed(s->proceed, rpc_value_none());
    return rpc_value_none();
}

static gint
cmp_str(gconstpointer x, gconstpointer y)
{
    return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static void
complete_none(gpointer data)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
}

static gboolean
forward_done(RpcFuture *f, gpointer data, GError **error)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
    return TRUE;
}

/* Waits for f, giving up after `timeout` (<= 0: forever), like
 * threading.Event.wait(timeout).  FALSE only when the wait itself fails
 * (teardown); running out of time just returns. */
static gboolean
wait_with_timeout(RpcAgent *a, RpcFuture *f, RpcTime timeout, GError **error)
{
    if (timeout <= 0)
        return rpc_executor_block_on(a->ex, f, error);
    RpcFuture *either = rpc_future_new(a->ex);
    rpc_future_set_description(either, rpc_future_description(f));
    guint64 t = rpc_executor_call_after(a->ex, timeout, complete_none, rpc_future_ref(either),
                                        (GDestroyNotify)rpc_future_unref);
    rpc_future_add_done_callback(f, forward_done, rpc_future_ref(either),
                                 (GDestroyNotify)rpc_future_unref, NULL);
    gboolean ok = rpc_executor_block_on(a->ex, either, error);
    rpc_executor_cancel(a->ex, t);
    rpc_future_unref(either);
    return ok;
}

RpcValue *
rpc_agent_all_gather(RpcAgent *a, RpcValue *obj, const char *const *names, RpcTime timeout,
                     GError **error)
{
    RpcValue *result = NULL;
    if (!require_running(a, error)) {
        rpc_value_unref(obj);
        return NULL;
    }
    GPtrArray *set = g_ptr_array_new();
    for (guint i = 0; names ? names[i] != NULL : i < a->world_size; i++) {
        const char *n = names ? names[i] : a->names[i];
        gboolean dup = FALSE;
        for (guint j = 0; j < set->len; j++)
            dup |= strcmp(g_ptr_array_index(set, j), n) == 0;
        if (!dup)
            g_ptr_array_add(set, (gpointer)n);
    }
    g_ptr_array_sort(set, cmp_str);
    const char *leader = g_ptr_array_index(set, 0);
    GString *concat = g_string_new(NULL);
    RpcValue *name_list = rpc_value_new_list();
    for (guint i = 0; i < set->len; i++) {
        g_string_append(concat, g_ptr_array_index(set, i));
        rpc_value_list_append(name_list, rpc_value_new_string(g_ptr_array_index(set, i)));
    }
    gint64 seq = GPOINTER_TO_SIZE(g_hash_table_lookup(a->gather_seq, concat->str));
    g_hash_table_replace(a->gather_seq, g_strdup(concat->str), GSIZE_TO_POINTER(seq + 1));
    char *seq_id = g_strdup_printf("%s%" G_GINT64_FORMAT, concat->str, seq);
    g_string_free(concat, TRUE);

    RpcTime rpc_timeout, signal_timeout;
    if (timeout == RPC_TIMEOUT_UNSET) {
        rpc_timeout = a->default_timeout;
        signal_timeout = 0;
    } else {
        rpc_timeout = timeout;
        signal_timeout = timeout;
    }
    gboolean is_leader = strcmp(leader, a->name) == 0;
    RpcValue *args = rpc_value_new_list();
    rpc_value_list_append(args, rpc_value_new_string(seq_id));
    rpc_value_list_append(args, rpc_value_new_string(a->name));
    rpc_value_list_append(args, obj);
    rpc_value_list_append(args, rpc_value_ref(name_list));
    if (is_leader) {
        RpcValue *r = rpc_agent_internal_gather_to_leader(a, args, NULL, error);
        rpc_value_unref(args);
        if (r == NULL)
            goto out;
        rpc_value_unref(r);
    } else {
        RpcValue *to = rpc_value_new_string(leader);
        RpcValue *r = rpc_sync(a, to, "_gather_to_leader", args, NULL, rpc_timeout, error);
        rpc_value_unref(to);
        if (r == NULL)
            goto out;
        rpc_value_unref(r);
    }
    GatherState *s = gather_state(a, seq_id);
    RpcFuture *proceed = rpc_future_ref(s->proceed);
    gboolean ok = wait_with_timeout(a, proceed, signal_timeout, error);
    rpc_future_unref(proceed);
    if (!ok)
        goto out;
    s = gather_state(a, seq_id);
    if (is_leader) {
        guint n = set->len - 1;
        RpcFuture **futs = g_new0(RpcFuture *, n + 1);
        GString *failed = g_string_new(NULL);
        char *first = NULL;
        for (guint i = 1; i < set->len; i++) {
            RpcValue *bargs = rpc_value_new_list();
            rpc_value_list_append(bargs, rpc_value_new_string(seq_id));
            rpc_value_list_append(bargs, rpc_value_ref(s->gathered));
            RpcValue *to = rpc_value_new_string(g_ptr_array_index(set, i));
            GError *e = NULL;
            futs[i - 1] = rpc_async(a, to, "_broadcast_to_followers", bargs, NULL, rpc_timeout, &e);
            rpc_value_unref(to);
            if (futs[i - 1] == NULL) {
                futs[i - 1] = rpc_future_new(a->ex);
                rpc_future_set_gerror(futs[i - 1], e, NULL);
                g_error_free(e);
            }
        }
        for (guint i = 0; i < n; i++) {
            GError *e = NULL;
            RpcValue *v = rpc_future_wait(futs[i], &e);
            if (v == NULL) {
                if (e->domain != RPC_ERROR) { /* the run is ending: stop here */
                    g_propagate_error(error, e);
                    for (guint j = 0; j < n; j++)
                        rpc_future_unref(futs[j]);
                    g_free(futs);
                    g_string_free(failed, TRUE);
                    g_free(first);
                    goto out;
                }
                g_string_append_printf(failed, "%s'%s'", failed->len ? ", " : "",
                                       (const char *)g_ptr_array_index(set, i + 1));
                if (first == NULL)
                    first = g_strdup(e->message);
                g_error_free(e);
            }
            rpc_value_unref(v);
        }
        for (guint i = 0; i < n; i++)
            rpc_future_unref(futs[i]);
        g_free(futs);
        if (first != NULL) {
            g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                        "Followers [%s] timed out in _all_gather after %.2f seconds. The first "
                        "exception is %s",
                        failed->str, (double)rpc_timeout / RPC_S, first);
            g_string_free(failed, TRUE);
            g_free(first);
            g_hash_table_remove(a->gather_states, seq_id);
            goto out;
        }
        g_string_free(failed, TRUE);
    }
    result = rpc_value_ref(s->gathered);
    g_hash_table_remove(a->gather_states, seq_id);
out:
    rpc_value_unref(name_list);
    g_ptr_array_unref(set);
    g_free(seq_id);
    return result;
}

gboolean
rpc_agent_barrier(RpcAgent *a, const char *const *names)
{
    GError *err = NULL;
    RpcValue *v = rpc_agent_all_gather(a, rpc_value_none(), names, RPC_TIMEOUT_UNSET, &err);
    if (v == NULL) {
        g_info("Failed to complete barrier, got error %s", err->message);
        g_error_free(err);
        return FALSE;
    }
    rpc_value_unref(v);
    return TRUE;
}

/* --- join and shutdown (spec §6.4) ---------------------------------------- */

static gboolean
wait_idle(RpcAgent *a, GError **error)
{
    if (a->c.client_active_calls == 0)
        return TRUE;
    if (a->idle == NULL) {
        a->idle = rpc_future_new(a->ex);
        rpc_future_set_description(a->idle, "join: this worker's active calls to finish");
    }
    RpcFuture *idle = rpc_future_ref(a->idle);
    gboolean ok = rpc_executor_block_on(a->ex, idle, error);
    rpc_future_unref(idle);
    return ok;
}

/* TensorPipe's syncCallCount: every worker adds its count under a round's
 * key; the last one to arrive sets the round's ready key. */
static gboolean
sync_call_count(RpcAgent *a, gint64 count, gint64 *total, GError **error)
{
    guint64 round = a->join_round++;
    char kcount[160], kprocs[160], kready[160];
    g_snprintf(kcount, sizeof kcount, "%srpc/join/%" G_GUINT64_FORMAT "/calls", a->prefix, round);
    g_snprintf(kprocs, sizeof kprocs, "%srpc/join/%" G_GUINT64_FORMAT "/procs", a->prefix, round);
    g_snprintf(kready, sizeof kready, "%srpc/join/%" G_GUINT64_FORMAT "/ready", a->prefix, round);
    a->store->vt->add(a->store, kcount, count);
    if (a->store->vt->add(a->store, kprocs, 1) == (gint64)a->world_size)
        a->store->vt->set(a->store, kready, "1");
    RpcFuture *f = a->store->vt->wait(a->store, kready, a->ex);
    rpc_future_set_description(f, "join: every worker to reach the shutdown barrier");
    gboolean ok = rpc_executor_block_on(a->ex, f, error);
    rpc_future_unref(f);
    if (!ok)
        return FALSE;
    if (total)
        *total = a->store->vt->add(a->store, kcount, 0);
    return TRUE;
}

static void
finalize(RpcAgent *a, const char *why)
{
    if (a->state == AGENT_SHUTDOWN)
        return;
    a->state = AGENT_SHUTDOWN;
    TRACE(a, tk_state, 0, 0, 0, why);
    if (a->timer_id) {
        rpc_executor_cancel(a->ex, a->timer_id);
        a->timer_id = 0;
    }
    fail_all_pending(a, "RPC agent is shutting down: " RPC_MSG_CONNECTION_CLOSED);
    if (a->tr->vt->closed)
        a->tr->vt->closed(a->tr, a->id);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, a->gather_states);
    GPtrArray *proceeds = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
    while (g_hash_table_iter_next(&it, NULL, &v))
        g_ptr_array_add(proceeds, rpc_future_ref(((GatherState *)v)->proceed));
    /* Order is irrelevant here: each waiter only learns the run is over. */
    for (guint i = 0; i < proceeds->len; i++)
        rpc_future_fail_if_needed(g_ptr_array_index(proceeds, i),
                                  rpc_value_new_error(RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED));
    g_ptr_array_unref(proceeds);
}

gboolean
rpc_agent_shutdown(RpcAgent *a, gboolean graceful, RpcTime timeout, GError **error)
{
    if (!require_running(a, error))
        return FALSE;
    if (!graceful) {
        gboolean ok = rpc_rref_ctx_destroy(a->rrefs, !a->raise_rref_leaks, error);
        finalize(a, "shutdown (non-graceful)");
        return ok;
    }
    GError *err = NULL;
    RpcValue *v = rpc_agent_all_gather(a, rpc_value_none(), NULL, timeout, &err);
    if (v == NULL) {
        g_info("Failed to respond to 'Shutdown Proceed' in time, got error %s", err->message);
        finalize(a, "shutdown (graceful, failed)");
        g_propagate_error(error, err);
        return FALSE;
    }
    rpc_value_unref(v);
    /* User RRefs are deleted between the barrier and the join, so the
     * owners' tables drain before the leak check (spec §4.6). */
    rpc_rref_ctx_delete_all_users(a->rrefs, 100 * RPC_S);
    for (;;) {
        /* TensorPipe's join: drain this worker's own calls, meet the others
         * at a barrier, and only then report the count as it is now —
         * every worker samples after all have arrived, so a chain still
         * running through some worker is counted there.  Non-zero anywhere:
         * another round.  Zero: one last barrier, then shut down. */
        gint64 total = 0;
        if (!wait_idle(a, &err) || !sync_call_count(a, 0, NULL, &err) ||
            !sync_call_count(a, a->c.client_active_calls, &total, &err) ||
            (total == 0 && !sync_call_count(a, 0, NULL, &err))) {
            finalize(a, "shutdown (graceful, interrupted)");
            g_propagate_error(error, err);
            return FALSE;
        }
        if (total == 0)
            break;
    }
    gboolean ok = rpc_rref_ctx_destroy(a->rrefs, !a->raise_rref_leaks, error);
    finalize(a, "shutdown (graceful)");
    return ok;
}

void
rpc_agent_kill(RpcAgent *a, const char *reason)
{
    g_return_if_fail(a != NULL);
    /* Stop first: a dead worker answers nothing, not even the fetches its
     * RRef context still parks (they are dropped, and counted, by respond). */
    finalize(a, reason ? reason : "killed");
    rpc_rref_ctx_destroy(a->rrefs, TRUE, NULL);
}

guint
rpc_agent_pending_calls_to(const RpcAgent *a, gint peer)
{
    guint n = 0;
    for (guint i = 0; i < rpc_intmap_capacity(&a->pending); i++) {
        const Pending *p = a->pending.slots[i].value;
        n += p != NULL && p->to == peer;
    }
    return n;
}
