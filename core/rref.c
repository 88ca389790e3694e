/* rref.c — the RRef protocol (spec §4), per agent.
 *
 * State per worker (the RRef context), as PyTorch's RRefContext:
 *   owners           rrefId → OwnerRRef (strong), once the RRef is shared
 *   pending_owners   rrefId → future completed when the OwnerRRef appears
 *                    (a fetch that overtook the remote call waits on it)
 *   forks            rrefId → set of forkIds: the owner's view of live users
 *   tombstones       forkIds deleted on this owner: a late duplicate
 *                    FORK_REQUEST for one is ignored, never resurrected
 *   pending_users    forkId → UserRRef (strong) until its owner confirms it
 *   confirmed_users  forkId → UserRRef (weak)
 *   pending_children forkId → the parent RRef (strong) until the child's
 *                    CHILD_ACCEPT arrives (guarantee G2)
 *
 * Invariants: an id key appears in at most one of pending_users and
 * confirmed_users; a UserRRef is deleted on its owner at most once (its
 * `deleted` flag is set when USER_DELETE is first sent); every table is
 * walked in key order when the walk is observable.
 *
 * Lifetime: RRefs are refcounted values.  The context keeps a weak set of
 * every live RRef so that freeing the context detaches them (a detached
 * RRef sends nothing).  Callbacks that outlive a message reach the context
 * through a refcounted handle that is cleared when the context goes.
 *
 * Beyond PyTorch, so that loss and reordering leave no table entry and no
 * thread waiting forever (each is exercised by tests/test-rref.c):
 *  - forks of a message that cannot be encoded or sent are taken back
 *    (the fork journal, rpc_rref_forks_*);
 *  - an OwnerRRef made because a fork of it arrived before its remote()
 *    call is "unassigned"; if the call never comes (the creator gives up,
 *    or the context goes), its waiters get an error;
 *  - a fetch dropped unanswered still answers (with an error);
 *  - graceful shutdown waits for forks to drain as well as owners.
 */
#include "core/rref.h"

#include <string.h>

#include "core/agent-internal.h"
#include "core/message.h"
#include "core/object.h"

#define RETRIES 5 /* sendWithRetries' default maxRetries */
#define MSG_CREATION_TIMED_OUT                                                                     \
    "RRef creation via rpc.remote() timed out, and it is possible that the RRef on the owner "     \
    "node does not exist."

typedef struct {
    gint refcount;
    RpcRRefCtx *ctx; /* NULL once the context is gone */
} CtxHandle;

typedef struct {
    RpcRRef *rref; /* strong */
    RpcFuture *confirmed;
} PendingUser;

struct RpcRRefCtx {
    RpcAgent *a;
    gint self;
    gint64 next_local_id;
    GHashTable *owners;           /* gint64* → RpcRRef* (strong) */
    GHashTable *pending_owners;   /* gint64* → RpcFuture* */
    GHashTable *forks;            /* gint64* → GHashTable (set of gint64*) */
    GHashTable *tombstones;       /* set of gint64* forkIds */
    GHashTable *pending_users;    /* gint64* → PendingUser* */
    GHashTable *confirmed_users;  /* gint64* → RpcRRef* (weak) */
    GHashTable *pending_children; /* gint64* → RpcRRef* (strong) */
    GHashTable *live;             /* set of RpcRRef* (weak; never walked observably) */
    guint num_pending_futures;
    GArray *journal;     /* ForkEntry: forks of the message being encoded, or NULL */
    gboolean journaling; /* between rpc_rref_forks_begin and _end */
    gboolean destroyed;
    RpcFuture *flushed;      /* waiters: pending users and children empty */
    RpcFuture *owners_empty; /* waiters: owners and forks empty */
    CtxHandle *handle;
};

struct RpcRRef {
    gint refcount;
    RpcRRefCtx *ctx;
    gboolean owner_side;
    gint owner;
    RpcGlobalId rref_id;
    RpcGlobalId fork_id; /* owners: rref_id */
    char *type_name;     /* nullable until known */
    gboolean py_obj;     /* PYTHON_* fetches; else SCRIPT_* */
    RpcFuture *value;    /* OwnerRRef: the value (or error) */
    gboolean confirmed;
    gboolean deleted;
    gboolean timed_out;
    gboolean assigned;      /* OwnerRRef: a value is coming (remote() arrived, or local) */
    RpcFuture *creation;    /* remote(): the REMOTE_CALL's future */
    RpcFuture *type_future; /* _get_type cache */
};

static const RpcTraceKind tk_create = {"rref.create", {"owner", "rref", "fork"}};
static const RpcTraceKind tk_fork = {"rref.fork", {"owner", "rref", "fork"}};
static const RpcTraceKind tk_confirm = {"rref.confirm", {"owner", "rref", "fork"}};
static const RpcTraceKind tk_delete = {"rref.user_delete", {"owner", "rref", "fork"}};
static const RpcTraceKind tk_owner_fork = {"rref.owner_fork", {"rref", "fork", "forks"}};
static const RpcTraceKind tk_owner_unfork = {"rref.owner_unfork", {"rref", "fork", "forks"}};
static const RpcTraceKind tk_owner_del = {"rref.owner_delete", {"rref", NULL, NULL}};
static const RpcTraceKind tk_child = {"rref.child_accept", {"fork", NULL, NULL}};
static const RpcTraceKind tk_timed_out = {"rref.timed_out", {"owner", "rref", "fork"}};
static const RpcTraceKind tk_leak = {"rref.leak", {"rref", "fork", NULL}};
static const RpcTraceKind tk_log = {"rref.log", {NULL, NULL, NULL}};
static const RpcTraceKind tk_fork_undone = {"rref.fork_undone", {"owner", "rref", "fork"}};

#define TRACE(c, kind, x, y, z, d)                                                                 \
    rpc_executor_trace(rpc_agent_executor((c)->a), &(kind), (x), (y), (z), (d))

/* --- ids ------------------------------------------------------------------- */

/* created_on in the top 16 bits, local_id below (local ids stay < 2^48). */
static gint64
gid_key(RpcGlobalId id)
{
    return (gint64)(((guint64)(guint16)id.created_on << 48) |
                    ((guint64)id.local_id & G_GUINT64_CONSTANT(0xffffffffffff)));
}

static gint64 *
key_new(gint64 k)
{
    gint64 *p = g_new(gint64, 1);
    *p = k;
    return p;
}

static RpcGlobalId
new_id(RpcRRefCtx *c)
{
    RpcGlobalId id = {(gint16)c->self, c->next_local_id++};
    return id;
}

static char *
gid_str(RpcGlobalId id)
{
    return g_strdup_printf("GloballyUniqueId(created_on=%d, local_id=%" G_GINT64_FORMAT ")",
                           id.created_on, id.local_id);
}

/* The C++ stream form used inside error messages. */
static char *
stream_str(const RpcRRef *r)
{
    char *rid = gid_str(r->rref_id);
    char *s;
    if (r->owner_side) {
        s = g_strdup_printf("OwnerRRef(rref_id=%s)", rid);
    } else {
        char *fid = gid_str(r->fork_id);
        s = g_strdup_printf("UserRRef(rref_id=%s, fork_id=%s)", rid, fid);
        g_free(fid);
    }
    g_free(rid);
    return s;
}

char *
rpc_rref_repr(const RpcRRef *r)
{
    char *rid = gid_str(r->rref_id);
    char *s;
    if (r->owner_side) {
        s = g_strdup_printf("OwnerRRef(%s)", rid);
    } else {
        char *fid = gid_str(r->fork_id);
        s = g_strdup_printf("UserRRef(RRefId = %s, ForkId = %s)", rid, fid);
        g_free(fid);
    }
    g_free(rid);
    return s;
}

static RpcValue *
gid_value(RpcGlobalId id)
{
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rpc_value_new_int(id.created_on));
    rpc_value_list_append(l, rpc_value_new_int(id.local_id));
    return l;
}

static gboolean
gid_parse(const RpcValue *v, RpcGlobalId *out)
{
    if (v == NULL || rpc_value_type(v) != RPC_VALUE_LIST || rpc_value_list_len(v) != 2)
        return FALSE;
    const RpcValue *a = rpc_value_list_get(v, 0), *b = rpc_value_list_get(v, 1);
    if (rpc_value_type(a) != RPC_VALUE_INT || rpc_value_type(b) != RPC_VALUE_INT)
        return FALSE;
    gint64 w = rpc_value_get_int(a), l = rpc_value_get_int(b);
    if (w < G_MININT16 || w > G_MAXINT16 || l < 0 || l > G_GINT64_CONSTANT(0xffffffffffff))
        return FALSE;
    out->created_on = (gint16)w;
    out->local_id = l;
    return TRUE;
}

/* --- the context -------------------------------------------------------------- */

static CtxHandle *
handle_ref(CtxHandle *h)
{
    h->refcount++;
    return h;
}

static void
handle_unref(gpointer p)
{
    CtxHandle *h = p;
    if (--h->refcount == 0)
        g_free(h);
}

static void pending_user_free(gpointer p);
static void rref_unref(gpointer p);

RpcRRefCtx *
rpc_rref_ctx_new(RpcAgent *a)
{
    RpcRRefCtx *c = g_new0(RpcRRefCtx, 1);
    c->a = a;
    c->self = rpc_agent_id(a);
    c->owners = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, rref_unref);
    c->pending_owners = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                              (GDestroyNotify)rpc_future_unref);
    c->forks = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free,
                                     (GDestroyNotify)g_hash_table_unref);
    c->tombstones = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    c->pending_users =
        g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, pending_user_free);
    c->confirmed_users = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    c->pending_children = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, rref_unref);
    c->live = g_hash_table_new(g_direct_hash, g_direct_equal);
    c->handle = g_new0(CtxHandle, 1);
    c->handle->refcount = 1;
    c->handle->ctx = c;
    return c;
}

void
rpc_rref_ctx_free(RpcRRefCtx *c)
{
    if (c == NULL)
        return;
    c->destroyed = TRUE;
    c->handle->ctx = NULL;
    handle_unref(c->handle);
    /* Detach every live RRef first: dropping the tables' references below
     * must not make them send anything or touch the tables. */
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, c->live);
    while (g_hash_table_iter_next(&it, &k, NULL))
        ((RpcRRef *)k)->ctx = NULL;
    g_hash_table_unref(c->live);
    g_hash_table_unref(c->owners);
    g_hash_table_unref(c->pending_owners);
    g_hash_table_unref(c->forks);
    g_hash_table_unref(c->tombstones);
    g_hash_table_unref(c->pending_users);
    g_hash_table_unref(c->confirmed_users);
    g_hash_table_unref(c->pending_children);
    if (c->journal != NULL)
        g_array_unref(c->journal);
    rpc_future_unref(c->flushed);
    rpc_future_unref(c->owners_empty);
    g_free(c);
}

static gint
cmp_key(gconstpointer x, gconstpointer y)
{
    gint64 a = **(gint64 *const *)x, b = **(gint64 *const *)y;
    return (a > b) - (a < b);
}

/* The keys of h, sorted (transfer container; keys owned by h). */
static GPtrArray *
sorted_keys(GHashTable *h)
{
    GPtrArray *keys = g_ptr_array_new();
    GHashTableIter it;
    gpointer k;
    g_hash_table_iter_init(&it, h);
    while (g_hash_table_iter_next(&it, &k, NULL))
        g_ptr_array_add(keys, k);
    g_ptr_array_sort(keys, cmp_key);
    return keys;
}

static void
complete_and_clear(RpcFuture **slot)
{
    RpcFuture *f = *slot;
    if (f == NULL)
        return;
    *slot = NULL;
    rpc_future_complete_if_needed(f, rpc_value_none());
    rpc_future_unref(f);
}

static void
check_flushed(RpcRRefCtx *c)
{
    if (g_hash_table_size(c->pending_users) == 0 && g_hash_table_size(c->pending_children) == 0)
        complete_and_clear(&c->flushed);
}

static void
check_owners_empty(RpcRRefCtx *c)
{
    if (g_hash_table_size(c->owners) == 0 && g_hash_table_size(c->forks) == 0)
        complete_and_clear(&c->owners_empty);
}

/* --- RRef objects --------------------------------------------------------------- */

static RpcRRef *
rref_alloc(RpcRRefCtx *c, gboolean owner_side, gint owner, RpcGlobalId rref_id, RpcGlobalId fork_id,
           const char *type_name, gboolean py_obj)
{
    RpcRRef *r = g_new0(RpcRRef, 1);
    r->refcount = 1;
    r->ctx = c;
    r->owner_side = owner_side;
    r->owner = owner;
    r->rref_id = rref_id;
    r->fork_id = fork_id;
    r->type_name = type_name && *type_name ? g_strdup(type_name) : NULL;
    r->py_obj = py_obj;
    if (owner_side) {
        r->value = rpc_future_new(rpc_agent_executor(c->a));
        char *s = rpc_rref_repr(r);
        char *d = g_strconcat("the value of ", s, NULL);
        rpc_future_set_description(r->value, d);
        g_free(d);
        g_free(s);
    }
    g_hash_table_add(c->live, r);
    TRACE(c, tk_create, owner, gid_key(rref_id), gid_key(fork_id), owner_side ? "owner" : "user");
    return r;
}

static RpcRRef *
rref_ref(RpcRRef *r)
{
    r->refcount++;
    return r;
}

static void send_user_delete(RpcRRef *r);

static void
rref_unref(gpointer p)
{
    RpcRRef *r = p;
    if (r == NULL || --r->refcount > 0)
        return;
    RpcRRefCtx *c = r->ctx;
    if (c != NULL) {
        if (!r->owner_side) {
            gint64 k = gid_key(r->fork_id);
            g_hash_table_remove(c->confirmed_users, &k);
            send_user_delete(r); /* tryDel: the owner learns (G1) */
        }
        g_hash_table_remove(c->live, r);
    }
    rpc_future_unref(r->value);
    rpc_future_unref(r->creation);
    rpc_future_unref(r->type_future);
    g_free(r->type_name);
    g_free(r);
}

static gpointer
opaque_ref(gpointer obj)
{
    return rref_ref(obj);
}

static char *
opaque_repr(gconstpointer obj)
{
    return rpc_rref_repr(obj);
}

static gboolean
opaque_equal(gconstpointer a, gconstpointer b)
{
    const RpcRRef *x = a, *y = b;
    return gid_key(x->rref_id) == gid_key(y->rref_id) && gid_key(x->fork_id) == gid_key(y->fork_id);
}

const RpcOpaqueType rpc_rref_type = {
    .name = "RRef",
    .ref = opaque_ref,
    .unref = rref_unref,
    .repr = opaque_repr,
    .equal = opaque_equal,
};

RpcRRef *
rpc_value_get_rref(const RpcValue *v)
{
    return rpc_value_get_opaque(v, &rpc_rref_type);
}

static RpcValue *
rref_value(RpcRRef *r) /* takes r */
{
    return rpc_value_new_opaque(&rpc_rref_type, r);
}

static const char *
value_type_name(const RpcValue *v)
{
    if (rpc_value_type(v) == RPC_VALUE_OPAQUE)
        return rpc_value_opaque_type(v)->name;
    return rpc_value_type_name(rpc_value_type(v));
}

/* Completes an OwnerRRef's value (first wins), learning its type. */
static void
owner_set_value(RpcRRef *r, RpcValue *v)
{
    if (r->type_name == NULL && rpc_value_type(v) != RPC_VALUE_ERROR)
        r->type_name = g_strdup(value_type_name(v));
    rpc_future_complete_if_needed(r->value, v);
}

/* --- control messages ------------------------------------------------------------- */

typedef void (*AckFunc)(RpcRRefCtx *c, gint64 key, gint64 aux, RpcValue *err);

typedef struct {
    CtxHandle *h;
    AckFunc fn;
    gint64 key;
    gint64 aux;
} Ack;

static void
ack_free(gpointer p)
{
    Ack *a = p;
    handle_unref(a->h);
    g_free(a);
}

static gboolean
ack_done(RpcFuture *f, gpointer data, GError **error)
{
    Ack *a = data;
    RpcRRefCtx *c = a->h->ctx;
    if (c == NULL)
        return TRUE;
    c->num_pending_futures--;
    if (a->fn)
        a->fn(c, a->key, a->aux, rpc_future_peek_error(f));
    else if (rpc_future_peek_error(f))
        TRACE(c, tk_log, 0, 0, 0, rpc_value_error_message(rpc_future_peek_error(f)));
    return TRUE;
}

/* Sends a control message with retries; fn runs on its outcome. */
static void
send_control(RpcRRefCtx *c, gint dst, RpcMessageType type, RpcValue *body, AckFunc fn, gint64 key,
             gint64 aux)
{
    GError *err = NULL;
    RpcFuture *f = rpc_agent_send_with_retries(c->a, dst, type, body, RETRIES,
                                               rpc_message_type_name(type), &err);
    rpc_value_unref(body);
    if (f == NULL) {
        TRACE(c, tk_log, dst, 0, 0, err->message);
        g_error_free(err);
        return;
    }
    c->num_pending_futures++;
    Ack *a = g_new(Ack, 1);
    a->h = handle_ref(c->handle);
    a->fn = fn;
    a->key = key;
    a->aux = aux;
    rpc_future_add_done_callback(f, ack_done, a, ack_free, NULL);
    rpc_future_unref(f);
}

static RpcValue *
ids_body(RpcGlobalId rref_id, RpcGlobalId fork_id)
{
    RpcValue *b = rpc_value_new_list();
    rpc_value_list_append(b, gid_value(rref_id));
    rpc_value_list_append(b, gid_value(fork_id));
    return b;
}

static void
send_user_delete(RpcRRef *r)
{
    RpcRRefCtx *c = r->ctx;
    if (r->deleted || c == NULL || c->destroyed || !rpc_agent_is_running(c->a))
        return;
    r->deleted = TRUE;
    TRACE(c, tk_delete, r->owner, gid_key(r->rref_id), gid_key(r->fork_id), NULL);
    send_control(c, r->owner, RPC_MSG_RREF_USER_DELETE, ids_body(r->rref_id, r->fork_id), NULL, 0,
                 0);
}

static void
send_child_accept(RpcRRefCtx *c, gint parent, RpcGlobalId fork_id)
{
    RpcValue *b = rpc_value_new_list();
    rpc_value_list_append(b, gid_value(fork_id));
    send_control(c, parent, RPC_MSG_RREF_CHILD_ACCEPT, b, NULL, 0, 0);
}

/* --- owner side ------------------------------------------------------------------- */

static RpcRRef *
get_or_create_owner(RpcRRefCtx *c, RpcGlobalId rref_id, const char *type, gboolean py_obj)
{
    gint64 k = gid_key(rref_id);
    RpcRRef *r = g_hash_table_lookup(c->owners, &k);
    if (r != NULL)
        return rref_ref(r);
    r = rref_alloc(c, TRUE, c->self, rref_id, rref_id, type, py_obj);
    g_hash_table_insert(c->owners, key_new(k), rref_ref(r));
    RpcFuture *waiting = g_hash_table_lookup(c->pending_owners, &k);
    if (waiting != NULL) {
        rpc_future_ref(waiting);
        g_hash_table_remove(c->pending_owners, &k);
        rpc_future_complete_if_needed(waiting, rref_value(rref_ref(r)));
        rpc_future_unref(waiting);
    }
    return r;
}

static void
fail_never_created(RpcRRef *r)
{
    char *s = stream_str(r);
    char *text = g_strdup_printf("%s was deleted on its owner before rpc.remote() created it", s);
    rpc_future_fail_if_needed(r->value, rpc_value_new_error(RPC_ERROR_RUNTIME, text));
    g_free(text);
    g_free(s);
}

/* Removes an OwnerRRef from owners_.  One that no remote() ever assigned
 * (it was made when a fork of it arrived first, and the call itself was
 * lost) will never get a value: its waiters get an error instead of
 * waiting forever. */
static void
owner_drop(RpcRRefCtx *c, gint64 rk, const char *why)
{
    RpcRRef *r = g_hash_table_lookup(c->owners, &rk);
    if (r == NULL)
        return;
    r = rref_ref(r);
    g_hash_table_remove(c->owners, &rk);
    TRACE(c, tk_owner_del, rk, 0, 0, why);
    if (!r->assigned)
        fail_never_created(r);
    rref_unref(r);
    check_owners_empty(c);
}

/* addForkOfOwner(IfNotPresent): FALSE if already there (or tombstoned). */
static gboolean
add_fork_of_owner(RpcRRefCtx *c, gint64 rk, gint64 fk)
{
    if (g_hash_table_contains(c->tombstones, &fk))
        return FALSE;
    GHashTable *set = g_hash_table_lookup(c->forks, &rk);
    if (set == NULL) {
        set = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
        g_hash_table_insert(c->forks, key_new(rk), set);
    }
    if (g_hash_table_contains(set, &fk))
        return FALSE;
    g_hash_table_add(set, key_new(fk));
    TRACE(c, tk_owner_fork, rk, fk, g_hash_table_size(set), NULL);
    return TRUE;
}

/* delForkOfOwner: ignores unknown rrefs and forks (retries, duplicates). */
static void
del_fork_of_owner(RpcRRefCtx *c, gint64 rk, gint64 fk)
{
    g_hash_table_add(c->tombstones, key_new(fk));
    GHashTable *set = g_hash_table_lookup(c->forks, &rk);
    if (set == NULL) {
        /* No fork known: if the OwnerRRef exists only because a fork of it
         * arrived before its remote() call, this is the creator giving up
         * on that call (its creation failed): nothing will assign it. */
        RpcRRef *r = g_hash_table_lookup(c->owners, &rk);
        if (r != NULL && !r->assigned)
            owner_drop(c, rk, "never created");
        return;
    }
    if (!g_hash_table_remove(set, &fk))
        return;
    guint left = g_hash_table_size(set);
    TRACE(c, tk_owner_unfork, rk, fk, left, NULL);
    if (left > 0)
        return;
    g_hash_table_remove(c->forks, &rk);
    owner_drop(c, rk, NULL);
    check_owners_empty(c);
}

/* --- user side ---------------------------------------------------------------------- */

static void
pending_user_free(gpointer p)
{
    PendingUser *pu = p;
    rpc_future_complete_if_needed(pu->confirmed, rpc_value_none());
    rpc_future_unref(pu->confirmed);
    rref_unref(pu->rref);
    g_free(pu);
}

static PendingUser *
add_pending_user(RpcRRefCtx *c, RpcRRef *r)
{
    PendingUser *pu = g_new(PendingUser, 1);
    pu->rref = rref_ref(r);
    pu->confirmed = rpc_future_new(rpc_agent_executor(c->a));
    char *s = rpc_rref_repr(r);
    char *d = g_strconcat("the owner to confirm ", s, NULL);
    rpc_future_set_description(pu->confirmed, d);
    g_free(d);
    g_free(s);
    g_hash_table_insert(c->pending_users, key_new(gid_key(r->fork_id)), pu);
    return pu;
}

/* delPendingUser: the owner confirmed the user (confirm), or its creation
 * failed.  Either way it moves to confirmed_users, as in PyTorch, so that
 * graceful shutdown still deletes it: a remote() that only timed out may
 * have created the OwnerRRef and its fork all the same. */
static void
del_pending_user(RpcRRefCtx *c, gint64 fk, gboolean confirm)
{
    PendingUser *pu = g_hash_table_lookup(c->pending_users, &fk);
    if (pu == NULL)
        return;
    RpcRRef *r = rref_ref(pu->rref);
    if (confirm) {
        r->confirmed = TRUE;
        TRACE(c, tk_confirm, r->owner, gid_key(r->rref_id), fk, NULL);
    }
    g_hash_table_insert(c->confirmed_users, key_new(fk), r);
    g_hash_table_remove(c->pending_users, &fk); /* completes the confirmation */
    rref_unref(r);
    check_flushed(c);
}

static void
on_fork_request_acked(RpcRRefCtx *c, gint64 fk, gint64 parent, RpcValue *err)
{
    if (err != NULL) {
        TRACE(c, tk_log, 0, fk, 0, rpc_value_error_message(err));
        return;
    }
    del_pending_user(c, fk, TRUE);
    RpcGlobalId fid = {(gint16)((guint64)fk >> 48), fk & G_GINT64_CONSTANT(0xffffffffffff)};
    send_child_accept(c, (gint)parent, fid);
}

/* --- pickling (spec §4.4) ---------------------------------------------------------- */

typedef struct {
    gint owner;
    gint64 rk, fk;
    gboolean owner_side;
} ForkEntry;

void
rpc_rref_forks_begin(RpcRRefCtx *c)
{
    g_assert(!c->journaling); /* one message is encoded at a time */
    c->journaling = TRUE;     /* the journal array is made by the first fork */
}

GArray *
rpc_rref_forks_end(RpcRRefCtx *c)
{
    GArray *j = c->journal;
    c->journal = NULL;
    c->journaling = FALSE;
    if (j != NULL && j->len == 0) {
        g_array_unref(j);
        j = NULL;
    }
    return j;
}

void
rpc_rref_forks_undo(RpcRRefCtx *c, GArray *forks)
{
    if (forks == NULL)
        return;
    for (guint i = 0; i < forks->len; i++) {
        ForkEntry *e = &g_array_index(forks, ForkEntry, i);
        TRACE(c, tk_fork_undone, e->owner, e->rk, e->fk, NULL);
        if (e->owner_side) {
            del_fork_of_owner(c, e->rk, e->fk);
        } else if (g_hash_table_remove(c->pending_children, &e->fk)) {
            check_flushed(c);
        }
    }
    g_array_unref(forks);
}

gboolean
rpc_rref_pickle(gpointer data, const RpcValue *opaque, const char **ext_name, RpcValue **wire_value,
                GError **error)
{
    RpcAgent *a = data;
    RpcRRef *r = rpc_value_get_rref(opaque);
    if (r == NULL) {
        /* Not an RRef: a class instance, or something that cannot travel. */
        *ext_name = RPC_OBJECT_EXT_NAME;
        return rpc_object_pickle(opaque, wire_value, error);
    }
    RpcRRefCtx *c = rpc_agent_rref_ctx(a);
    if (r->ctx != c) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Can not pickle an RRef of another RPC agent");
        return FALSE;
    }
    if (r->timed_out) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, MSG_CREATION_TIMED_OUT);
        return FALSE;
    }
    if (!r->owner_side && r->deleted) {
        char *s = stream_str(r);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "%s has been deleted. Cannot call fork an UserRRef after deletion.", s);
        g_free(s);
        return FALSE;
    }
    RpcGlobalId fork = new_id(c);
    gint64 rk = gid_key(r->rref_id), fk = gid_key(fork);
    if (r->owner_side) {
        /* owner → user: early fork registration, and keep the value alive */
        add_fork_of_owner(c, rk, fk);
        if (!g_hash_table_contains(c->owners, &rk))
            g_hash_table_insert(c->owners, key_new(rk), rref_ref(r));
    } else {
        g_hash_table_insert(c->pending_children, key_new(fk), rref_ref(r));
    }
    TRACE(c, tk_fork, r->owner, rk, fk, NULL);
    if (c->journaling) {
        ForkEntry e = {r->owner, rk, fk, r->owner_side};
        if (c->journal == NULL)
            c->journal = g_array_new(FALSE, FALSE, sizeof(ForkEntry));
        g_array_append_val(c->journal, e);
    }
    RpcValue *w = rpc_value_new_list();
    rpc_value_list_append(w, rpc_value_new_int(r->owner));
    rpc_value_list_append(w, gid_value(r->rref_id));
    rpc_value_list_append(w, gid_value(fork));
    rpc_value_list_append(w, rpc_value_new_int(c->self));
    rpc_value_list_append(w, rpc_value_new_string(r->type_name ? r->type_name : ""));
    rpc_value_list_append(w, rpc_value_new_bool(r->py_obj));
    *ext_name = "RRef";
    *wire_value = w;
    return TRUE;
}

RpcValue *
rpc_rref_unpickle(gpointer data, const char *ext_name, RpcValue *wire, GError **error)
{
    RpcDecodeCtx *d = data;
    if (strcmp(ext_name, RPC_OBJECT_EXT_NAME) == 0)
        return rpc_object_unpickle(rpc_agent_registry(d->a), wire, error);
    if (strcmp(ext_name, "RRef") != 0) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME, "Can not unpickle '%s' objects", ext_name);
        return NULL;
    }
    RpcRRefCtx *c = rpc_agent_rref_ctx(d->a);
    RpcGlobalId rref_id, fork_id;
    guint world = rpc_agent_world_size(d->a);
    if (rpc_value_type(wire) != RPC_VALUE_LIST || rpc_value_list_len(wire) != 6 ||
        rpc_value_type(rpc_value_list_get(wire, 0)) != RPC_VALUE_INT ||
        !gid_parse(rpc_value_list_get(wire, 1), &rref_id) ||
        !gid_parse(rpc_value_list_get(wire, 2), &fork_id) ||
        rpc_value_type(rpc_value_list_get(wire, 3)) != RPC_VALUE_INT ||
        rpc_value_type(rpc_value_list_get(wire, 4)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(wire, 5)) != RPC_VALUE_BOOL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, "malformed RRef fork data");
        return NULL;
    }
    gint64 owner = rpc_value_get_int(rpc_value_list_get(wire, 0));
    gint64 parent = rpc_value_get_int(rpc_value_list_get(wire, 3));
    if (owner < 0 || owner >= (gint64)world || parent < 0 || parent >= (gint64)world) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "malformed RRef fork data: no such worker");
        return NULL;
    }
    const char *type = rpc_value_get_string(rpc_value_list_get(wire, 4));
    gboolean py_obj = rpc_value_get_bool(rpc_value_list_get(wire, 5));
    gint64 rk = gid_key(rref_id), fk = gid_key(fork_id);
    RpcRRef *r;
    if (owner == c->self) {
        r = get_or_create_owner(c, rref_id, type, py_obj);
        if (parent == c->self)
            del_fork_of_owner(c, rk, fk); /* the owner sent it to itself */
        else
            send_child_accept(c, (gint)parent, fork_id); /* user → owner: a phantom fork */
        return rref_value(r);
    }
    r = rref_alloc(c, FALSE, (gint)owner, rref_id, fork_id, type, py_obj);
    if (parent == owner) {
        /* owner → user: the owner registered the fork when it sent it.  As in
         * PyTorch 1.13 (spec §14), confirmed_by_owner() stays False. */
        g_hash_table_insert(c->confirmed_users, key_new(fk), r);
    } else {
        /* user → user: ask the owner, then release the parent */
        PendingUser *pu = add_pending_user(c, r);
        if (d->collect) {
            if (d->pending == NULL)
                d->pending = g_ptr_array_new_with_free_func((GDestroyNotify)rpc_future_unref);
            g_ptr_array_add(d->pending, rpc_future_ref(pu->confirmed));
        }
        send_control(c, (gint)owner, RPC_MSG_RREF_FORK_REQUEST, ids_body(rref_id, fork_id),
                     on_fork_request_acked, fk, parent);
    }
    return rref_value(r);
}

/* --- serving the protocol's requests ------------------------------------------------- */

typedef struct {
    CtxHandle *h;
    RpcAgent *a;
    RpcRRef *r; /* the OwnerRRef (strong), NULL if given up already */
    RpcGlobalId rref_id, fork_id;
    gint to;
    gint64 id;
} RemoteDone;

static void
remote_done_free(gpointer p)
{
    RemoteDone *rd = p;
    handle_unref(rd->h);
    rref_unref(rd->r);
    g_free(rd);
}

static gboolean
remote_computed(RpcFuture *f, gpointer data, GError **error)
{
    RemoteDone *rd = data;
    if (rd->h->ctx == NULL)
        return TRUE;
    /* Set on the object itself, in owners_ or not: a UDF of this worker
     * may wait for it although every user is gone already. */
    if (rd->r != NULL) {
        RpcValue *err = rpc_future_peek_error(f);
        if (err != NULL)
            rpc_future_fail_if_needed(rd->r->value, rpc_value_ref(err));
        else
            owner_set_value(rd->r, rpc_value_ref(rpc_future_peek_value(f)));
    }
    /* REMOTE_RET echoes the ids, even when the function failed (§1.5). */
    rpc_agent_respond(rd->a, rd->to, rd->id, RPC_MSG_REMOTE_RET,
                      ids_body(rd->rref_id, rd->fork_id));
    return TRUE;
}

static void
serve_remote_call(RpcRRefCtx *c, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    const char *name;
    const RpcValue *args, *kwargs;
    gboolean is_async;
    RpcGlobalId rref_id, fork_id;
    if (!rpc_agent_parse_call_body(body, 6, &name, &args, &kwargs, &is_async) ||
        !gid_parse(rpc_value_list_get(body, 4), &rref_id) ||
        !gid_parse(rpc_value_list_get(body, 5), &fork_id)) {
        rpc_agent_respond(c->a, from, id, RPC_MSG_EXCEPTION,
                          rpc_value_new_string("malformed remote call request"));
        return;
    }
    gboolean python = type == RPC_MSG_PYTHON_REMOTE_CALL;
    gint64 rk = gid_key(rref_id), fk = gid_key(fork_id);
    /* Registered before the value is computed (assignOwnerRRef). */
    RpcRRef *r;
    if (rk == fk) {
        /* remote to self: the OwnerRRef exists, unless its creation was
         * given up (timed out) and every handle dropped meanwhile */
        r = g_hash_table_lookup(c->owners, &rk);
        r = r ? rref_ref(r) : NULL;
    } else {
        r = get_or_create_owner(c, rref_id, NULL, python);
        if (!add_fork_of_owner(c, rk, fk) && !g_hash_table_contains(c->forks, &rk)) {
            /* The creator's USER_DELETE overtook this call (its creation
             * timed out first): no user can reach the value, do not keep it. */
            r->assigned = TRUE;
            owner_drop(c, rk, "deleted before created");
        }
    }
    if (r != NULL)
        r->assigned = TRUE;
    RpcFuture *out = rpc_agent_run_function(c->a, name, args, kwargs, is_async, python);
    RemoteDone *rd = g_new(RemoteDone, 1);
    rd->h = handle_ref(c->handle);
    rd->a = c->a;
    rd->r = r;
    rd->rref_id = rref_id;
    rd->fork_id = fork_id;
    rd->to = from;
    rd->id = id;
    rpc_future_add_done_callback(out, remote_computed, rd, remote_done_free, NULL);
    rpc_future_unref(out);
}

/* A fetch answers once the OwnerRRef exists and has its value. */
typedef struct {
    CtxHandle *h;
    RpcAgent *a;
    gint to;
    gint64 id;
    RpcMessageType ret;
    gboolean answered; /* or handed on to another Fetch */
} Fetch;

/* A fetch dropped unanswered (the OwnerRRef it waited for was freed, or the
 * context destroyed) still answers, so that the caller is not left to time
 * out and the callee's count of active calls returns to 0. */
static void
fetch_free(gpointer p)
{
    Fetch *f = p;
    if (!f->answered && f->h->ctx != NULL)
        rpc_agent_respond(f->a, f->to, f->id, RPC_MSG_EXCEPTION,
                          rpc_value_new_string("The RRef was deleted on its owner before its "
                                               "value could be fetched."));
    handle_unref(f->h);
    g_free(f);
}

static gboolean
fetch_value_ready(RpcFuture *f, gpointer data, GError **error)
{
    Fetch *fe = data;
    fe->answered = TRUE;
    RpcValue *err = rpc_future_peek_error(f);
    if (err != NULL)
        rpc_agent_respond(fe->a, fe->to, fe->id, RPC_MSG_EXCEPTION,
                          rpc_value_new_string(rpc_value_error_message(err)));
    else
        rpc_agent_respond(fe->a, fe->to, fe->id, fe->ret, rpc_value_ref(rpc_future_peek_value(f)));
    return TRUE;
}

static void
fetch_when_valued(Fetch *fe, RpcRRef *r)
{
    Fetch *copy = g_memdup2(fe, sizeof *fe);
    fe->answered = TRUE; /* the copy answers */
    handle_ref(copy->h);
    rpc_future_add_done_callback(r->value, fetch_value_ready, copy, fetch_free, NULL);
}

static gboolean
fetch_owner_ready(RpcFuture *f, gpointer data, GError **error)
{
    Fetch *fe = data;
    RpcValue *v = rpc_future_peek_value(f);
    RpcRRef *r = v ? rpc_value_get_rref(v) : NULL;
    if (r == NULL)
        return TRUE; /* fetch_free answers */
    fetch_when_valued(fe, r);
    return TRUE;
}

static void
serve_fetch(RpcRRefCtx *c, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    RpcGlobalId rref_id;
    if (rpc_value_type(body) != RPC_VALUE_LIST || rpc_value_list_len(body) != 2 ||
        !gid_parse(rpc_value_list_get(body, 0), &rref_id)) {
        rpc_agent_respond(c->a, from, id, RPC_MSG_EXCEPTION,
                          rpc_value_new_string("malformed fetch request"));
        return;
    }
    Fetch fe = {c->handle,
                c->a,
                from,
                id,
                type == RPC_MSG_PYTHON_RREF_FETCH_CALL ? RPC_MSG_PYTHON_RREF_FETCH_RET
                                                       : RPC_MSG_SCRIPT_RREF_FETCH_RET,
                FALSE};
    gint64 rk = gid_key(rref_id);
    RpcRRef *r = g_hash_table_lookup(c->owners, &rk);
    if (r != NULL) {
        fetch_when_valued(&fe, r);
        return;
    }
    /* The fetch overtook the remote call: park it (pendingOwners_). */
    RpcFuture *waiting = g_hash_table_lookup(c->pending_owners, &rk);
    if (waiting == NULL) {
        waiting = rpc_future_new(rpc_agent_executor(c->a));
        rpc_future_set_description(waiting, "the OwnerRRef to be created");
        g_hash_table_insert(c->pending_owners, key_new(rk), waiting);
    }
    Fetch *copy = g_memdup2(&fe, sizeof fe);
    handle_ref(copy->h);
    rpc_future_add_done_callback(waiting, fetch_owner_ready, copy, fetch_free, NULL);
}

void
rpc_rref_serve(RpcAgent *a, gint from, gint64 id, RpcMessageType type, RpcValue *body)
{
    RpcRRefCtx *c = rpc_agent_rref_ctx(a);
    RpcGlobalId rref_id, fork_id;
    switch (type) {
    case RPC_MSG_PYTHON_REMOTE_CALL:
    case RPC_MSG_SCRIPT_REMOTE_CALL:
        serve_remote_call(c, from, id, type, body);
        return;
    case RPC_MSG_PYTHON_RREF_FETCH_CALL:
    case RPC_MSG_SCRIPT_RREF_FETCH_CALL:
        serve_fetch(c, from, id, type, body);
        return;
    case RPC_MSG_RREF_USER_DELETE:
    case RPC_MSG_RREF_FORK_REQUEST:
        if (rpc_value_type(body) != RPC_VALUE_LIST || rpc_value_list_len(body) != 2 ||
            !gid_parse(rpc_value_list_get(body, 0), &rref_id) ||
            !gid_parse(rpc_value_list_get(body, 1), &fork_id))
            break;
        if (type == RPC_MSG_RREF_USER_DELETE)
            del_fork_of_owner(c, gid_key(rref_id), gid_key(fork_id));
        else
            add_fork_of_owner(c, gid_key(rref_id), gid_key(fork_id)); /* idempotent */
        rpc_agent_respond(a, from, id, RPC_MSG_RREF_ACK, rpc_value_none());
        return;
    case RPC_MSG_RREF_CHILD_ACCEPT: {
        if (rpc_value_type(body) != RPC_VALUE_LIST || rpc_value_list_len(body) != 1 ||
            !gid_parse(rpc_value_list_get(body, 0), &fork_id))
            break;
        gint64 fk = gid_key(fork_id);
        if (g_hash_table_remove(c->pending_children, &fk)) { /* unknown: a retry */
            TRACE(c, tk_child, fk, 0, 0, NULL);
            check_flushed(c);
        }
        rpc_agent_respond(a, from, id, RPC_MSG_RREF_ACK, rpc_value_none());
        return;
    }
    default:
        break;
    }
    rpc_agent_respond(a, from, id, RPC_MSG_EXCEPTION,
                      rpc_value_new_string("malformed RRef protocol message"));
}

/* --- the user API ------------------------------------------------------------------------ */

RpcValue *
rpc_rref_new_local(RpcAgent *a, RpcValue *value, GError **error)
{
    if (a == NULL || !rpc_agent_is_running(a)) {
        rpc_value_unref(value);
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Current RPC agent is not set! Did you initialize the RPC framework "
                            "(e.g. calling `rpc.init_rpc`)?");
        return NULL;
    }
    RpcRRefCtx *c = rpc_agent_rref_ctx(a);
    RpcGlobalId id = new_id(c);
    RpcRRef *r = rref_alloc(c, TRUE, c->self, id, id, NULL, TRUE);
    r->assigned = TRUE;
    owner_set_value(r, value);
    /* Not in owners_ until forked (num_owner_rrefs stays 0). */
    return rref_value(r);
}

typedef struct {
    CtxHandle *h;
    gint64 rk, fk;
    gboolean to_self;
} Creation;

static void
creation_free(gpointer p)
{
    Creation *cr = p;
    handle_unref(cr->h);
    g_free(cr);
}

/* confirmPendingUser / finishCreatingOwnerRRef (spec §3.4, §4.4). */
static gboolean
creation_done(RpcFuture *f, gpointer data, GError **error)
{
    Creation *cr = data;
    RpcRRefCtx *c = cr->h->ctx;
    if (c == NULL)
        return TRUE;
    RpcValue *err = rpc_future_peek_error(f);
    RpcRRef *r = NULL;
    if (cr->to_self) {
        r = g_hash_table_lookup(c->owners, &cr->rk);
    } else {
        PendingUser *pu = g_hash_table_lookup(c->pending_users, &cr->fk);
        r = pu ? pu->rref : NULL;
    }
    if (r != NULL && err != NULL) {
        RpcErrType kind = rpc_err_type_of(rpc_value_error_message(err));
        if (kind == RPC_ERR_TIMEOUT || kind == RPC_ERR_INTENTIONAL_FAILURE) {
            r->timed_out = TRUE;
            TRACE(c, tk_timed_out, r->owner, cr->rk, cr->fk, rpc_value_error_message(err));
            /* Remote to self: whoever already waits for the value (a
             * local_value, a fetch, _get_type) would otherwise wait forever
             * if the call never arrives; they get the error later callers
             * get from the flag.  A call that was only slow finds the value
             * taken (setValue keeps the first outcome). */
            if (cr->to_self)
                rpc_future_fail_if_needed(
                    r->value, rpc_value_new_error(RPC_ERROR_RUNTIME, MSG_CREATION_TIMED_OUT));
        } else {
            TRACE(c, tk_log, r->owner, cr->rk, 0, rpc_value_error_message(err));
        }
    }
    if (cr->to_self)
        del_fork_of_owner(c, cr->rk, cr->fk);
    else
        del_pending_user(c, cr->fk, err == NULL);
    return TRUE;
}

RpcValue *
rpc_remote(RpcAgent *a, const RpcValue *to, const char *func, RpcValue *args, RpcValue *kwargs,
           RpcTime timeout, GError **error)
{
    RpcValue *result = NULL;
    gint dst = rpc_agent_resolve(a, to, error);
    if (dst < 0)
        goto out;
    const RpcFunctionDef *def = rpc_registry_lookup(rpc_agent_registry(a), func);
    if (def == NULL) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_TYPE,
                    "function should be callable. (no function named '%s' on %s)", func,
                    rpc_agent_name(a));
        goto out;
    }
    RpcRRefCtx *c = rpc_agent_rref_ctx(a);
    gboolean builtin = (def->flags & RPC_FUNC_BUILTIN) != 0;
    RpcRRef *r;
    RpcGlobalId rref_id = new_id(c), fork_id;
    if (dst == c->self) {
        /* remote to self: one id, an OwnerRRef with itself as a fork */
        fork_id = rref_id;
        r = rref_alloc(c, TRUE, c->self, rref_id, rref_id, NULL, !builtin);
        r->assigned = TRUE;
        gint64 rk = gid_key(rref_id);
        g_hash_table_insert(c->owners, key_new(rk), rref_ref(r));
        add_fork_of_owner(c, rk, rk);
    } else {
        fork_id = new_id(c);
        r = rref_alloc(c, FALSE, dst, rref_id, fork_id, NULL, !builtin);
        add_pending_user(c, r);
    }
    RpcValue *body = rpc_value_new_list();
    rpc_value_list_append(body, rpc_value_new_string(rpc_function_wire_name(def)));
    rpc_value_list_append(body, args ? args : rpc_value_new_list());
    rpc_value_list_append(body, kwargs ? kwargs : rpc_value_new_dict());
    rpc_value_list_append(body, rpc_value_new_bool((def->flags & RPC_FUNC_ASYNC) != 0));
    rpc_value_list_append(body, gid_value(rref_id));
    rpc_value_list_append(body, gid_value(fork_id));
    args = kwargs = NULL;
    GError *send_err = NULL;
    RpcFuture *f = rpc_agent_send_request(
        a, dst, builtin ? RPC_MSG_SCRIPT_REMOTE_CALL : RPC_MSG_PYTHON_REMOTE_CALL, body, timeout,
        def->name, &send_err);
    rpc_value_unref(body);
    Creation *cr = g_new(Creation, 1);
    cr->h = handle_ref(c->handle);
    cr->rk = gid_key(rref_id);
    cr->fk = gid_key(fork_id);
    cr->to_self = dst == c->self;
    if (f == NULL) {
        /* Could not even be encoded: undo, as if the creation failed. */
        RpcFuture *failed = rpc_future_new(rpc_agent_executor(a));
        rpc_future_set_gerror(failed, send_err, NULL);
        creation_done(failed, cr, NULL);
        creation_free(cr);
        rpc_future_unref(failed);
        r->deleted = TRUE; /* the owner never heard of it: nothing to delete */
        rref_unref(r);
        g_propagate_error(error, send_err);
        goto out;
    }
    r->creation = rpc_future_ref(f);
    rpc_future_add_done_callback(f, creation_done, cr, creation_free, NULL);
    rpc_future_unref(f);
    result = rref_value(r);
out:
    rpc_value_unref(args);
    rpc_value_unref(kwargs);
    return result;
}

gboolean
rpc_rref_is_owner(const RpcRRef *r)
{
    return r->owner_side;
}

gint
rpc_rref_owner_id(const RpcRRef *r)
{
    return r->owner;
}

const char *
rpc_rref_owner_name(const RpcRRef *r)
{
    return r->ctx ? rpc_agent_worker_name(r->ctx->a, r->owner) : NULL;
}

RpcValue *
rpc_rref_owner(const RpcRRef *r)
{
    const char *n = rpc_rref_owner_name(r);
    return rpc_value_new_worker_info(n ? n : "", r->owner);
}

gboolean
rpc_rref_confirmed_by_owner(const RpcRRef *r)
{
    return r->owner_side || r->confirmed;
}

RpcGlobalId
rpc_rref_id(const RpcRRef *r)
{
    return r->rref_id;
}

RpcGlobalId
rpc_rref_fork_id(const RpcRRef *r)
{
    return r->fork_id;
}

RpcFuture *
rpc_rref_creation_future(RpcRRef *r)
{
    if (r->creation == NULL) {
        r->creation = rpc_future_new(r->ctx ? rpc_agent_executor(r->ctx->a) : NULL);
        rpc_future_complete_if_needed(r->creation, rpc_value_none());
    }
    return r->creation;
}

static gboolean
require_ctx(const RpcRRef *r, GError **error)
{
    if (r->ctx != NULL && rpc_agent_is_running(r->ctx->a))
        return TRUE;
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
    return FALSE;
}

/* A value stored in an OwnerRRef, raised if it is a UDF's exception. */
static RpcValue *
raise_if_error(RpcValue *v, GError **error)
{
    if (v != NULL && rpc_value_type(v) == RPC_VALUE_ERROR) {
        rpc_value_propagate_error(v, error);
        rpc_value_unref(v);
        return NULL;
    }
    return v;
}

RpcValue *
rpc_rref_local_value(RpcRRef *r, GError **error)
{
    if (!r->owner_side) {
        char *s = stream_str(r);
        RpcRRefCtx *c = r->ctx;
        const char *self = c ? rpc_agent_name(c->a) : "";
        const char *owner = rpc_rref_owner_name(r);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "For %s, can't call localValue() on user WorkerInfo(id=%d, name=%s). Call it "
                    "on owner WorkerInfo(id=%d, name=%s)",
                    s, c ? c->self : -1, self, r->owner, owner ? owner : "");
        g_free(s);
        return NULL;
    }
    if (r->timed_out) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, MSG_CREATION_TIMED_OUT);
        return NULL;
    }
    return raise_if_error(rpc_future_wait(r->value, error), error);
}

RpcValue *
rpc_rref_to_here(RpcRRef *r, RpcTime timeout, GError **error)
{
    if (r->owner_side)
        return rpc_rref_local_value(r, error);
    if (r->timed_out) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, MSG_CREATION_TIMED_OUT);
        return NULL;
    }
    if (r->deleted) {
        char *s = stream_str(r);
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "%s has been deleted. Cannot call to_here() on it after deletion.", s);
        g_free(s);
        return NULL;
    }
    if (!require_ctx(r, error))
        return NULL;
    RpcValue *body = rpc_value_new_list();
    rpc_value_list_append(body, gid_value(r->rref_id));
    rpc_value_list_append(body, rpc_value_new_int(r->ctx->self));
    RpcFuture *f = rpc_agent_send_request(r->ctx->a, r->owner,
                                          r->py_obj ? RPC_MSG_PYTHON_RREF_FETCH_CALL
                                                    : RPC_MSG_SCRIPT_RREF_FETCH_CALL,
                                          body, timeout, "to_here", error);
    rpc_value_unref(body);
    if (f == NULL)
        return NULL;
    RpcValue *v = rpc_future_wait(f, error);
    rpc_future_unref(f);
    return v;
}

/* _rref_typeof_on_owner(rref): runs on the owner; waits for the value. */
RpcValue *
rpc_rref_internal_typeof(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcRRef *r =
        rpc_value_list_len(args) == 1 ? rpc_value_get_rref(rpc_value_list_get(args, 0)) : NULL;
    if (r == NULL) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "_rref_typeof_on_owner() takes one RRef");
        return NULL;
    }
    RpcValue *v = rpc_rref_local_value(r, error);
    if (v == NULL)
        return NULL;
    RpcValue *t = rpc_value_new_string(value_type_name(v));
    rpc_value_unref(v);
    return t;
}

/* The owner's _get_type: the value's type once it is set; a stored error
 * (the UDF raised) fails it with that error's kind and message. */
static gboolean
owner_type_ready(RpcFuture *f, gpointer data, GError **error)
{
    RpcFuture *out = data;
    RpcValue *err = rpc_future_peek_error(f);
    RpcValue *v = rpc_future_peek_value(f);
    if (err == NULL && rpc_value_type(v) == RPC_VALUE_ERROR)
        err = v;
    if (err != NULL)
        rpc_future_fail_if_needed(out, rpc_value_ref(err));
    else
        rpc_future_complete_if_needed(out, rpc_value_new_string(value_type_name(v)));
    return TRUE;
}

RpcFuture *
rpc_rref_get_type(RpcRRef *r, RpcTime timeout, GError **error)
{
    /* Cached after the first success (spec §3.5); while a fetch is in
     * flight every caller gets that same future.  A failed fetch is
     * forgotten, so a later call asks again. */
    if (r->type_future != NULL && !rpc_future_has_error(r->type_future))
        return rpc_future_ref(r->type_future);
    g_clear_pointer(&r->type_future, rpc_future_unref);
    if (!require_ctx(r, error))
        return NULL;
    if (r->owner_side) {
        r->type_future = rpc_future_new(rpc_agent_executor(r->ctx->a));
        rpc_future_set_description(r->type_future, "_get_type: the OwnerRRef's value");
        if (r->timed_out)
            rpc_future_fail_if_needed(
                r->type_future, rpc_value_new_error(RPC_ERROR_RUNTIME, MSG_CREATION_TIMED_OUT));
        else
            rpc_future_add_done_callback(r->value, owner_type_ready, rpc_future_ref(r->type_future),
                                         (GDestroyNotify)rpc_future_unref, NULL);
    } else {
        RpcValue *args = rpc_value_new_list();
        rpc_value_list_append(args, rref_value(rref_ref(r)));
        RpcValue *to = rpc_value_new_int(r->owner);
        r->type_future =
            rpc_async(r->ctx->a, to, "_rref_typeof_on_owner", args, NULL, timeout, error);
        rpc_value_unref(to);
    }
    return r->type_future ? rpc_future_ref(r->type_future) : NULL;
}

/* --- proxies (spec §3.5, §4.7) -----------------------------------------------------------
 * rref.<api>(timeout).m(*args) resolves the type first (the cached
 * _get_type), checks on the caller that the type has attribute m, then runs
 * _rref_proxy_invoke(rref, m, args, kwargs) on the owner with the same
 * timeout — or _rref_proxy_invoke_async when m is @async_execution. */

#define PROXY_INVOKE       "_rref_proxy_invoke"
#define PROXY_INVOKE_ASYNC "_rref_proxy_invoke_async"

/* _rref_proxy_invoke(rref, m, args, kwargs) on the owner:
 * getattr(rref.local_value(), m)(*args, **kwargs). */
RpcValue *
rpc_rref_internal_invoke(RpcAgent *a, const RpcValue *args, const RpcValue *kwargs, GError **error)
{
    RpcRRef *r = NULL;
    if (rpc_value_list_len(args) == 4)
        r = rpc_value_get_rref(rpc_value_list_get(args, 0));
    if (r == NULL || rpc_value_type(rpc_value_list_get(args, 1)) != RPC_VALUE_STRING ||
        rpc_value_type(rpc_value_list_get(args, 2)) != RPC_VALUE_LIST ||
        rpc_value_type(rpc_value_list_get(args, 3)) != RPC_VALUE_DICT) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_TYPE,
                            "_rref_proxy_invoke() takes (rref, func_name, args, kwargs)");
        return NULL;
    }
    RpcValue *target = rpc_rref_local_value(r, error);
    if (target == NULL)
        return NULL;
    RpcValue *v =
        rpc_object_call_method(a, target, rpc_value_get_string(rpc_value_list_get(args, 1)),
                               rpc_value_list_get(args, 2), rpc_value_list_get(args, 3), error);
    rpc_value_unref(target);
    return v;
}

/* The owner-side function for method m of the fetched type (type_f done),
 * or NULL + the type fetch's error or AttributeError. */
static const char *
proxy_function(RpcRRef *r, RpcFuture *type_f, const char *method, GError **error)
{
    RpcValue *t = rpc_future_wait(type_f, error);
    if (t == NULL)
        return NULL;
    guint flags = 0;
    gboolean ok = rpc_type_lookup_method(rpc_agent_registry(r->ctx->a), rpc_value_get_string(t),
                                         method, &flags, error);
    rpc_value_unref(t);
    if (!ok)
        return NULL;
    return (flags & RPC_FUNC_ASYNC) ? PROXY_INVOKE_ASYNC : PROXY_INVOKE;
}

/* (rref, m, args, kwargs), taking args and kwargs (nullable). */
static RpcValue *
proxy_args(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs)
{
    RpcValue *l = rpc_value_new_list();
    rpc_value_list_append(l, rref_value(rref_ref(r)));
    rpc_value_list_append(l, rpc_value_new_string(method));
    rpc_value_list_append(l, args ? args : rpc_value_new_list());
    rpc_value_list_append(l, kwargs ? kwargs : rpc_value_new_dict());
    return l;
}

/* The function a blocking proxy (rpc_sync, remote) calls: waits for the
 * type, so that its errors are raised from the proxy call itself. */
static const char *
proxy_resolve(RpcRRef *r, const char *method, RpcTime timeout, GError **error)
{
    if (!require_ctx(r, error))
        return NULL;
    RpcFuture *tf = rpc_rref_get_type(r, timeout, error);
    if (tf == NULL)
        return NULL;
    RpcExecutor *ex = rpc_agent_executor(r->ctx->a);
    const char *fn = NULL;
    if (rpc_executor_block_on(ex, tf, error))
        fn = proxy_function(r, tf, method, error);
    rpc_future_unref(tf);
    return fn;
}

RpcValue *
rpc_rref_proxy_sync(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                    RpcTime timeout, GError **error)
{
    g_return_val_if_fail(r != NULL && method != NULL, NULL);
    const char *fn = proxy_resolve(r, method, timeout, error);
    if (fn == NULL || r->ctx == NULL) {
        rpc_value_unref(args);
        rpc_value_unref(kwargs);
        return NULL;
    }
    RpcValue *to = rpc_value_new_int(r->owner);
    RpcValue *v =
        rpc_sync(r->ctx->a, to, fn, proxy_args(r, method, args, kwargs), NULL, timeout, error);
    rpc_value_unref(to);
    return v;
}

RpcValue *
rpc_rref_proxy_remote(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                      RpcTime timeout, GError **error)
{
    g_return_val_if_fail(r != NULL && method != NULL, NULL);
    const char *fn = proxy_resolve(r, method, timeout, error);
    if (fn == NULL || r->ctx == NULL) {
        rpc_value_unref(args);
        rpc_value_unref(kwargs);
        return NULL;
    }
    RpcValue *to = rpc_value_new_int(r->owner);
    RpcValue *v =
        rpc_remote(r->ctx->a, to, fn, proxy_args(r, method, args, kwargs), NULL, timeout, error);
    rpc_value_unref(to);
    return v;
}

typedef struct {
    RpcRRef *r;
    char *method;
    RpcValue *args, *kwargs; /* nullable */
    RpcTime timeout;
    RpcFuture *result;
} ProxyCall;

static void
proxy_call_free(gpointer p)
{
    ProxyCall *pc = p;
    rref_unref(pc->r);
    g_free(pc->method);
    rpc_value_unref(pc->args);
    rpc_value_unref(pc->kwargs);
    rpc_future_unref(pc->result);
    g_free(pc);
}

static gboolean
proxy_forward(RpcFuture *f, gpointer data, GError **error)
{
    RpcValue *err = rpc_future_peek_error(f);
    if (err != NULL)
        rpc_future_fail_if_needed(data, rpc_value_ref(err));
    else
        rpc_future_complete_if_needed(data, rpc_value_ref(rpc_future_peek_value(f)));
    return TRUE;
}

/* The type arrived (or failed): make the call, or fail the result. */
static gboolean
proxy_type_ready(RpcFuture *f, gpointer data, GError **error)
{
    ProxyCall *pc = data;
    GError *err = NULL;
    RpcFuture *call = NULL;
    const char *fn = pc->r->ctx ? proxy_function(pc->r, f, pc->method, &err) : NULL;
    if (fn != NULL) {
        RpcValue *to = rpc_value_new_int(pc->r->owner);
        RpcValue *args = proxy_args(pc->r, pc->method, pc->args, pc->kwargs);
        pc->args = pc->kwargs = NULL;
        call = rpc_async(pc->r->ctx->a, to, fn, args, NULL, pc->timeout, &err);
        rpc_value_unref(to);
    } else if (err == NULL) {
        g_set_error_literal(&err, RPC_ERROR, RPC_ERROR_RUNTIME, RPC_MSG_NOT_INITIALIZED);
    }
    if (call == NULL) {
        rpc_future_fail_if_needed(pc->result, rpc_value_new_error_from_gerror(err));
        g_error_free(err);
        return TRUE;
    }
    rpc_future_add_done_callback(call, proxy_forward, rpc_future_ref(pc->result),
                                 (GDestroyNotify)rpc_future_unref, NULL);
    rpc_future_unref(call);
    return TRUE;
}

RpcFuture *
rpc_rref_proxy_async(RpcRRef *r, const char *method, RpcValue *args, RpcValue *kwargs,
                     RpcTime timeout, GError **error)
{
    g_return_val_if_fail(r != NULL && method != NULL, NULL);
    RpcFuture *tf = require_ctx(r, error) ? rpc_rref_get_type(r, timeout, error) : NULL;
    if (tf == NULL) {
        rpc_value_unref(args);
        rpc_value_unref(kwargs);
        return NULL;
    }
    ProxyCall *pc = g_new0(ProxyCall, 1);
    pc->r = rref_ref(r);
    pc->method = g_strdup(method);
    pc->args = args;
    pc->kwargs = kwargs;
    pc->timeout = timeout;
    pc->result = rpc_future_new(rpc_agent_executor(r->ctx->a));
    char *d = g_strconcat("rref.rpc_async().", method, "()", NULL);
    rpc_future_set_description(pc->result, d);
    g_free(d);
    RpcFuture *result = rpc_future_ref(pc->result);
    rpc_future_add_done_callback(tf, proxy_type_ready, pc, proxy_call_free, NULL);
    rpc_future_unref(tf);
    return result;
}

/* --- debug info and shutdown ------------------------------------------------------------ */

void
rpc_rref_debug_info(RpcAgent *a, RpcRRefDebugInfo *out)
{
    memset(out, 0, sizeof *out);
    RpcRRefCtx *c = rpc_agent_rref_ctx(a);
    out->num_owner_rrefs = g_hash_table_size(c->owners);
    out->num_pending_futures = c->num_pending_futures;
    out->num_pending_users = g_hash_table_size(c->pending_users);
    out->num_pending_children = g_hash_table_size(c->pending_children);
    out->num_confirmed_users = g_hash_table_size(c->confirmed_users);
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, c->forks);
    while (g_hash_table_iter_next(&it, NULL, &v))
        out->num_forks += g_hash_table_size(v);
}

static void
complete_none(gpointer data)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
}

static gboolean
forward(RpcFuture *f, gpointer data, GError **error)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
    return TRUE;
}

/* Waits for *slot (created on demand) or timeout; FALSE when time ran out. */
static gboolean
bounded_wait(RpcRRefCtx *c, RpcFuture **slot, const char *what, RpcTime timeout)
{
    RpcExecutor *ex = rpc_agent_executor(c->a);
    if (*slot == NULL) {
        *slot = rpc_future_new(ex);
        rpc_future_set_description(*slot, what);
    }
    RpcFuture *either = rpc_future_new(ex);
    rpc_future_set_description(either, what);
    guint64 t = rpc_executor_call_after(ex, timeout, complete_none, rpc_future_ref(either),
                                        (GDestroyNotify)rpc_future_unref);
    RpcFuture *target = rpc_future_ref(*slot);
    rpc_future_add_done_callback(target, forward, rpc_future_ref(either),
                                 (GDestroyNotify)rpc_future_unref, NULL);
    gboolean ok = rpc_executor_block_on(ex, either, NULL);
    gboolean done = ok && rpc_future_done(target);
    rpc_executor_cancel(ex, t);
    rpc_future_unref(target);
    rpc_future_unref(either);
    return done;
}

void
rpc_rref_ctx_delete_all_users(RpcRRefCtx *c, RpcTime timeout)
{
    /* 1. every pending user confirmed, every child accepted.  Re-checked
     * after every wake: the confirmation that wakes us can also release a
     * gated request that forks again (a new pending child), and deleting a
     * parent with a child in flight would break G2.  Steps 2-3 do not yield,
     * so what holds when the loop exits still holds when users are deleted. */
    RpcExecutor *ex = rpc_agent_executor(c->a);
    RpcTime deadline = rpc_executor_now(ex) + timeout;
    while (g_hash_table_size(c->pending_users) || g_hash_table_size(c->pending_children)) {
        RpcTime left = deadline - rpc_executor_now(ex);
        if (left <= 0 ||
            !bounded_wait(c, &c->flushed, "pending UserRRefs to be confirmed by owner and parent",
                          left)) {
            TRACE(c, tk_log, 0, 0, 0,
                  "Timed out waiting for pending UserRRefs to be confirmed by owner and parent.");
            break;
        }
    }
    /* 2. delete every confirmed user, in fork-id order */
    GPtrArray *keys = sorted_keys(c->confirmed_users);
    GPtrArray *users = g_ptr_array_new_with_free_func(rref_unref);
    for (guint i = 0; i < keys->len; i++)
        g_ptr_array_add(
            users, rref_ref(g_hash_table_lookup(c->confirmed_users, g_ptr_array_index(keys, i))));
    g_ptr_array_unref(keys);
    g_hash_table_remove_all(c->confirmed_users);
    for (guint i = 0; i < users->len; i++)
        send_user_delete(g_ptr_array_index(users, i));
    g_ptr_array_unref(users);
    /* 3. owners nobody forked (e.g. a remote to self still in flight) */
    keys = sorted_keys(c->owners);
    for (guint i = 0; i < keys->len; i++) {
        gint64 rk = *(gint64 *)g_ptr_array_index(keys, i);
        if (!g_hash_table_contains(c->forks, &rk))
            owner_drop(c, rk, "unforked");
    }
    g_ptr_array_unref(keys);
    /* 4. every incoming USER_DELETE processed.  Forks count too: a fork
     * known without its OwnerRRef (the remote() call was lost) is still a
     * user whose delete is on its way, perhaps being retried. */
    check_owners_empty(c);
    if ((g_hash_table_size(c->owners) || g_hash_table_size(c->forks)) &&
        !bounded_wait(c, &c->owners_empty, "pending OwnerRRefs to be deleted", timeout))
        TRACE(c, tk_log, 0, 0, 0, "Timed out waiting for pending OwnerRRefs to be deleted.");
}

gboolean
rpc_rref_ctx_destroy(RpcRRefCtx *c, gboolean ignore_leak, GError **error)
{
    if (c->destroyed)
        return TRUE;
    c->destroyed = TRUE;
    /* Requests gated on a confirmation that can no longer come (the agent is
     * stopping) are released, in fork-id order, instead of hanging. */
    GPtrArray *pkeys = sorted_keys(c->pending_users);
    for (guint i = 0; i < pkeys->len; i++) {
        PendingUser *pu = g_hash_table_lookup(c->pending_users, g_ptr_array_index(pkeys, i));
        rpc_future_complete_if_needed(pu->confirmed, rpc_value_none());
    }
    g_ptr_array_unref(pkeys);
    GString *leaks = g_string_new(NULL);
    GPtrArray *rkeys = sorted_keys(c->forks);
    for (guint i = 0; i < rkeys->len; i++) {
        gint64 rk = *(gint64 *)g_ptr_array_index(rkeys, i);
        GPtrArray *fkeys = sorted_keys(g_hash_table_lookup(c->forks, &rk));
        for (guint j = 0; j < fkeys->len; j++) {
            gint64 fk = *(gint64 *)g_ptr_array_index(fkeys, j);
            RpcGlobalId rid = {(gint16)((guint64)rk >> 48), rk & G_GINT64_CONSTANT(0xffffffffffff)};
            RpcGlobalId fid = {(gint16)((guint64)fk >> 48), fk & G_GINT64_CONSTANT(0xffffffffffff)};
            char *rs = gid_str(rid), *fs = gid_str(fid);
            g_string_append_printf(leaks, "Leaking RRef %s with fork Id %s\n", rs, fs);
            TRACE(c, tk_leak, rk, fk, 0, NULL);
            g_free(rs);
            g_free(fs);
        }
        g_ptr_array_unref(fkeys);
    }
    g_ptr_array_unref(rkeys);
    gboolean ok = TRUE;
    if (leaks->len > 0 && !ignore_leak) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, leaks->str);
        ok = FALSE;
    }
    g_string_free(leaks, TRUE);
    /* Values that will never come (see owner_drop), in key order: failing
     * one runs its waiters' callbacks. */
    GPtrArray *okeys = sorted_keys(c->owners);
    GPtrArray *unassigned = g_ptr_array_new_with_free_func(rref_unref);
    for (guint i = 0; i < okeys->len; i++) {
        RpcRRef *r = g_hash_table_lookup(c->owners, g_ptr_array_index(okeys, i));
        if (!r->assigned)
            g_ptr_array_add(unassigned, rref_ref(r));
    }
    g_ptr_array_unref(okeys);
    g_hash_table_remove_all(c->owners);
    g_hash_table_remove_all(c->pending_owners);
    for (guint i = 0; i < unassigned->len; i++)
        fail_never_created(g_ptr_array_index(unassigned, i));
    g_ptr_array_unref(unassigned);
    return ok;
}
