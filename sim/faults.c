/* faults.c — the faulty agent's fail and delay rules (spec §10).
 *
 * Invariant: a send's fate depends only on its type, its payload bytes and
 * how many times that payload was failed before, never on timing or on the
 * order of a hash table.  The per-payload counters live in a GHashTable keyed
 * by the payload (g_bytes_hash / g_bytes_equal); it is only looked up, never
 * walked.
 *
 * Rules are kept per listable type, in a fixed table of the ten types
 * PyTorch's messageStringToType accepts, so counting and lookups are O(1)
 * and never depend on the order types were added.
 *
 * Defaults of a new SimFaults are FaultyTensorPipeRpcBackendOptions' own:
 * no types listed, num_fail_sends 0.  Configuration errors are RuntimeError
 * (RPC_ERROR_RUNTIME), as PyTorch's TORCH_CHECK raises them.
 *
 * Deviation from PyTorch: the failure message embeds the payload, which is
 * binary.  PyTorch prints its bytes raw; we keep printable ASCII (0x20..0x7e)
 * as is, write a backslash as "\\" and every other byte as "\xNN" (two
 * lower-case hex digits), so the message is valid UTF-8 (GError messages
 * must be) and the rendering is unambiguous.  A payload of printable ASCII
 * without backslashes reads exactly as in PyTorch.
 */
#include "sim/faults.h"

#include "sim/rng.h"

#include "core/error.h"

/* PyTorch's messageStringToType: the only types the options may name. */
static const RpcMessageType listable[] = {
    RPC_MSG_RREF_FORK_REQUEST,
    RPC_MSG_RREF_CHILD_ACCEPT,
    RPC_MSG_RREF_USER_DELETE,
    RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ,
    RPC_MSG_PYTHON_REMOTE_CALL,
    RPC_MSG_SCRIPT_REMOTE_CALL,
    RPC_MSG_PYTHON_CALL,
    RPC_MSG_SCRIPT_CALL,
    RPC_MSG_PYTHON_RREF_FETCH_CALL,
    RPC_MSG_SCRIPT_RREF_FETCH_CALL,
};
#define N_LISTABLE G_N_ELEMENTS(listable)

/* Their PyTorch names, in the same order (NULL-terminated). */
static const char *const listable_names[] = {
    "RREF_FORK_REQUEST",
    "RREF_CHILD_ACCEPT",
    "RREF_USER_DELETE",
    "CLEANUP_AUTOGRAD_CONTEXT_REQ",
    "PYTHON_REMOTE_CALL",
    "SCRIPT_REMOTE_CALL",
    "PYTHON_CALL",
    "SCRIPT_CALL",
    "PYTHON_RREF_FETCH_CALL",
    "SCRIPT_RREF_FETCH_CALL",
    NULL,
};
G_STATIC_ASSERT(G_N_ELEMENTS(listable_names) == N_LISTABLE + 1);

const char *const *
sim_faults_type_names(void)
{
    return listable_names;
}

/* The fixture's defaults (faulty_rpc_agent_test_fixture.py). */
#define DEFAULT_NUM_FAIL_SENDS 3
#define DEFAULT_DELAY          (3 * SIM_S / 2)

struct SimFaults {
    gboolean fail[N_LISTABLE];
    gboolean has_delay[N_LISTABLE]; /* a listed delay may be 0 */
    SimTime delay[N_LISTABLE];
    guint num_fail_sends;
    GHashTable *failed; /* GBytes* payload (owned) → GUINT_TO_POINTER(times failed) */
    guint64 fired_fails;
    guint64 fired_delays;
    double drop[N_LISTABLE]; /* loss probability per listed type */
    SimRng rng;              /* the sender's "faults" stream */
    guint64 fired_drops;
    gboolean active; /* some type is listed (fail, delay or drop > 0): see update_active */
};

/* Recomputed by every function that changes the rules, so that a send
 * through a SimFaults with no rules costs one test (sim_faults_active). */
static void
update_active(SimFaults *f)
{
    gboolean any = FALSE;
    for (gsize i = 0; i < N_LISTABLE; i++)
        any = any || f->fail[i] || f->has_delay[i] || f->drop[i] > 0.0;
    f->active = any;
}

gboolean
sim_faults_active(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, FALSE);
    return f->active;
}

/* Index of t in listable, or -1. */
static int
listable_index(RpcMessageType t)
{
    for (gsize i = 0; i < N_LISTABLE; i++)
        if (listable[i] == t)
            return (int)i;
    return -1;
}

/* Index of the type named name, or -1 with the "No mapping" error. */
static int
lookup_name(const char *name, GError **error)
{
    RpcMessageType t;
    int i = rpc_message_type_from_name(name, &t) ? listable_index(t) : -1;
    if (i < 0)
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "No mapping to rpc::MessageType exists for %s", name);
    return i;
}

void
sim_faults_seed(SimFaults *f, guint64 master_seed, guint worker)
{
    g_return_if_fail(f != NULL);
    sim_rng_init_stream(&f->rng, master_seed, "faults", worker);
}

gboolean
sim_faults_add_drop(SimFaults *f, const char *type_name, double p, GError **error)
{
    g_return_val_if_fail(f != NULL && type_name != NULL, FALSE);
    if (!(p >= 0.0 && p <= 1.0)) {
        g_set_error(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                    "Drop probabilities must be within [0, 1], got %g", p);
        return FALSE;
    }
    int i = lookup_name(type_name, error);
    if (i < 0)
        return FALSE;
    f->drop[i] = p;
    update_active(f);
    return TRUE;
}

gboolean
sim_faults_should_drop(SimFaults *f, RpcMessageType type)
{
    g_return_val_if_fail(f != NULL, FALSE);
    int i = listable_index(type);
    if (i < 0 || f->drop[i] <= 0.0)
        return FALSE;
    if (!sim_rng_chance(&f->rng, f->drop[i]))
        return FALSE;
    f->fired_drops++;
    return TRUE;
}

guint64
sim_faults_fired_drops(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    return f->fired_drops;
}

SimFaults *
sim_faults_new(void)
{
    SimFaults *f = g_new0(SimFaults, 1);
    f->failed =
        g_hash_table_new_full(g_bytes_hash, g_bytes_equal, (GDestroyNotify)g_bytes_unref, NULL);
    return f;
}

void
sim_faults_free(SimFaults *f)
{
    if (f == NULL)
        return;
    g_hash_table_destroy(f->failed);
    g_free(f);
}

gboolean
sim_faults_add_fail(SimFaults *f, const char *type_name, GError **error)
{
    g_return_val_if_fail(f != NULL && type_name != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    int i = lookup_name(type_name, error);
    if (i < 0)
        return FALSE;
    f->fail[i] = TRUE; /* listing a type twice is the same as once */
    update_active(f);
    return TRUE;
}

void
sim_faults_set_num_fail_sends(SimFaults *f, guint n)
{
    g_return_if_fail(f != NULL);
    f->num_fail_sends = n;
}

guint
sim_faults_num_fail_sends(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    return f->num_fail_sends;
}

gboolean
sim_faults_add_delay(SimFaults *f, const char *type_name, SimTime delay, GError **error)
{
    g_return_val_if_fail(f != NULL && type_name != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    /* PyTorch maps the names first, then checks the delays. */
    int i = lookup_name(type_name, error);
    if (i < 0)
        return FALSE;
    if (delay < 0) {
        g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME,
                            "Delays passed to FaultyTensorPipeAgent must be non-negative.");
        return FALSE;
    }
    f->has_delay[i] = TRUE; /* a second delay for a type replaces the first */
    f->delay[i] = delay;
    update_active(f);
    return TRUE;
}

void
sim_faults_clear_fail_types(SimFaults *f)
{
    g_return_if_fail(f != NULL);
    for (gsize i = 0; i < N_LISTABLE; i++)
        f->fail[i] = FALSE;
    update_active(f);
}

void
sim_faults_clear_delay_types(SimFaults *f)
{
    g_return_if_fail(f != NULL);
    for (gsize i = 0; i < N_LISTABLE; i++) {
        f->has_delay[i] = FALSE;
        f->delay[i] = 0;
    }
    update_active(f);
}

void
sim_faults_set_pytorch_defaults(SimFaults *f)
{
    static const char *const fail_names[] = {"RREF_FORK_REQUEST", "RREF_CHILD_ACCEPT",
                                             "RREF_USER_DELETE", "CLEANUP_AUTOGRAD_CONTEXT_REQ"};
    static const char *const delay_names[] = {"PYTHON_CALL", "SCRIPT_CALL"};

    g_return_if_fail(f != NULL);
    sim_faults_clear_fail_types(f);
    sim_faults_clear_delay_types(f);
    for (gsize i = 0; i < G_N_ELEMENTS(fail_names); i++)
        g_assert(sim_faults_add_fail(f, fail_names[i], NULL));
    for (gsize i = 0; i < G_N_ELEMENTS(delay_names); i++)
        g_assert(sim_faults_add_delay(f, delay_names[i], DEFAULT_DELAY, NULL));
    f->num_fail_sends = DEFAULT_NUM_FAIL_SENDS;
}

guint
sim_faults_n_fail_types(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    guint n = 0;
    for (gsize i = 0; i < N_LISTABLE; i++)
        n += f->fail[i] ? 1 : 0;
    return n;
}

guint
sim_faults_n_delay_types(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    guint n = 0;
    for (gsize i = 0; i < N_LISTABLE; i++)
        n += f->has_delay[i] ? 1 : 0;
    return n;
}

/* The payload as text: see the deviation note at the top. */
static void
append_payload(GString *out, GBytes *payload)
{
    gsize len = 0;
    const guint8 *p = payload != NULL ? g_bytes_get_data(payload, &len) : NULL;
    for (gsize i = 0; i < len; i++) {
        if (p[i] == '\\')
            g_string_append(out, "\\\\");
        else if (p[i] >= 0x20 && p[i] <= 0x7e)
            g_string_append_c(out, (char)p[i]);
        else
            g_string_append_printf(out, "\\x%02x", p[i]);
    }
}

gboolean
sim_faults_check_send(SimFaults *f, RpcMessageType type, GBytes *payload, GError **error)
{
    g_return_val_if_fail(f != NULL, FALSE);
    g_return_val_if_fail(error == NULL || *error == NULL, FALSE);
    int i = listable_index(type);
    if (i < 0 || !f->fail[i])
        return FALSE;

    /* A NULL payload is the empty one. */
    GBytes *key = payload != NULL ? g_bytes_ref(payload) : g_bytes_new_static("", 0);
    guint times = GPOINTER_TO_UINT(g_hash_table_lookup(f->failed, key));
    if (times >= f->num_fail_sends) {
        g_bytes_unref(key);
        return FALSE;
    }
    g_hash_table_insert(f->failed, key, GUINT_TO_POINTER(times + 1)); /* takes key */
    f->fired_fails++;

    GString *msg = g_string_new("Send attempt failed intentionally for ");
    append_payload(msg, payload);
    char *text = rpc_err_format(RPC_ERR_INTENTIONAL_FAILURE, msg->str);
    g_set_error_literal(error, RPC_ERROR, RPC_ERROR_RUNTIME, text);
    g_free(text);
    g_string_free(msg, TRUE);
    return TRUE;
}

SimTime
sim_faults_delay_for(SimFaults *f, RpcMessageType type)
{
    g_return_val_if_fail(f != NULL, 0);
    int i = listable_index(type);
    if (i < 0 || !f->has_delay[i] || f->delay[i] <= 0)
        return 0;
    f->fired_delays++;
    return f->delay[i];
}

guint64
sim_faults_fired_fails(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    return f->fired_fails;
}

guint64
sim_faults_fired_delays(const SimFaults *f)
{
    g_return_val_if_fail(f != NULL, 0);
    return f->fired_delays;
}
