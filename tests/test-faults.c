/* test-faults.c — sim/faults: the faulty agent's fail and delay rules.
 *
 * Texts are PyTorch's (spec §10) and are compared exactly.
 */
#include <string.h>

#include <glib.h>

#include "core/error.h"
#include "core/message.h"
#include "sim/faults.h"

#define FAIL_PREFIX "RPCErr:2:Send attempt failed intentionally for "

static const char *const listable[] = {
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
};

static void
test_new_is_empty(void)
{
    SimFaults *f = sim_faults_new();
    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 0);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 0);
    g_assert_cmpuint(sim_faults_num_fail_sends(f), ==, 0);
    g_assert_cmpuint(sim_faults_fired_fails(f), ==, 0);
    g_assert_cmpuint(sim_faults_fired_delays(f), ==, 0);
    sim_faults_free(f);
    sim_faults_free(NULL);
}

static void
test_all_listable_names(void)
{
    SimFaults *f = sim_faults_new();
    for (gsize i = 0; i < G_N_ELEMENTS(listable); i++) {
        GError *error = NULL;
        g_assert_true(sim_faults_add_fail(f, listable[i], &error));
        g_assert_no_error(error);
        g_assert_true(sim_faults_add_delay(f, listable[i], (SimTime)i * SIM_MS, &error));
        g_assert_no_error(error);
    }
    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 10);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 10);
    /* Listing again changes nothing; a second delay replaces the first. */
    g_assert_true(sim_faults_add_fail(f, "PYTHON_CALL", NULL));
    g_assert_true(sim_faults_add_delay(f, "SCRIPT_CALL", 9 * SIM_MS, NULL));
    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 10);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 10);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_SCRIPT_CALL), ==, 9 * SIM_MS);
    sim_faults_free(f);
}

static void
assert_no_mapping(const char *name)
{
    SimFaults *f = sim_faults_new();
    GError *error = NULL;
    char *want = g_strdup_printf("No mapping to rpc::MessageType exists for %s", name);

    g_assert_false(sim_faults_add_fail(f, name, &error));
    g_assert_error(error, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);

    g_assert_false(sim_faults_add_delay(f, name, SIM_S, &error));
    g_assert_error(error, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(error->message, ==, want);
    g_clear_error(&error);

    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 0);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 0);
    g_free(want);
    sim_faults_free(f);
}

static void
test_unknown_names(void)
{
    assert_no_mapping("FOO");
    assert_no_mapping("");
    assert_no_mapping("python_call"); /* names are case-sensitive */
    /* Real message types outside PyTorch's map are refused too. */
    assert_no_mapping("PYTHON_RET");
    assert_no_mapping("RREF_ACK");
    assert_no_mapping("BACKWARD_AUTOGRAD_REQ");
    /* A NULL error is allowed. */
    SimFaults *f = sim_faults_new();
    g_assert_false(sim_faults_add_fail(f, "FOO", NULL));
    sim_faults_free(f);
}

static void
test_negative_delay(void)
{
    SimFaults *f = sim_faults_new();
    GError *error = NULL;
    g_assert_false(sim_faults_add_delay(f, "PYTHON_CALL", -1, &error));
    g_assert_error(error, RPC_ERROR, RPC_ERROR_RUNTIME);
    g_assert_cmpstr(error->message, ==,
                    "Delays passed to FaultyTensorPipeAgent must be non-negative.");
    g_clear_error(&error);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 0);
    /* The name is checked first. */
    g_assert_false(sim_faults_add_delay(f, "FOO", -1, &error));
    g_assert_cmpstr(error->message, ==, "No mapping to rpc::MessageType exists for FOO");
    g_clear_error(&error);
    /* Zero is a valid delay: listed, but nothing to wait. */
    g_assert_true(sim_faults_add_delay(f, "PYTHON_CALL", 0, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 1);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_CALL), ==, 0);
    g_assert_cmpuint(sim_faults_fired_delays(f), ==, 0);
    sim_faults_free(f);
}

/* Conformance case 106: the fixture's backend options. */
static void
test_pytorch_defaults(void)
{
    SimFaults *f = sim_faults_new();
    sim_faults_set_pytorch_defaults(f);
    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 4);
    g_assert_cmpuint(sim_faults_num_fail_sends(f), ==, 3);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 2);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_CALL), ==, 1500 * SIM_MS);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_SCRIPT_CALL), ==, 1500 * SIM_MS);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_REMOTE_CALL), ==, 0);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_RREF_FORK_REQUEST), ==, 0);
    g_assert_cmpuint(sim_faults_fired_delays(f), ==, 2);

    /* The four retryable types fail, the others never. */
    static const RpcMessageType failing[] = {RPC_MSG_RREF_FORK_REQUEST, RPC_MSG_RREF_CHILD_ACCEPT,
                                             RPC_MSG_RREF_USER_DELETE,
                                             RPC_MSG_CLEANUP_AUTOGRAD_CONTEXT_REQ};
    GBytes *p = g_bytes_new_static("p", 1);
    for (gsize i = 0; i < G_N_ELEMENTS(failing); i++) {
        SimFaults *g = sim_faults_new();
        sim_faults_set_pytorch_defaults(g);
        g_assert_true(sim_faults_check_send(g, failing[i], p, NULL));
        sim_faults_free(g);
    }
    g_assert_false(sim_faults_check_send(f, RPC_MSG_PYTHON_CALL, p, NULL));
    g_assert_false(sim_faults_check_send(f, RPC_MSG_SCRIPT_REMOTE_CALL, p, NULL));

    /* Defaults replace what was listed before. */
    SimFaults *h = sim_faults_new();
    g_assert_true(sim_faults_add_fail(h, "PYTHON_CALL", NULL));
    g_assert_true(sim_faults_add_delay(h, "RREF_USER_DELETE", SIM_S, NULL));
    sim_faults_set_pytorch_defaults(h);
    g_assert_cmpuint(sim_faults_n_fail_types(h), ==, 4);
    g_assert_false(sim_faults_check_send(h, RPC_MSG_PYTHON_CALL, p, NULL));
    g_assert_cmpint(sim_faults_delay_for(h, RPC_MSG_RREF_USER_DELETE), ==, 0);
    sim_faults_free(h);

    g_bytes_unref(p);
    sim_faults_free(f);
}

static void
test_clear_lists(void)
{
    SimFaults *f = sim_faults_new();
    sim_faults_set_pytorch_defaults(f);
    sim_faults_clear_fail_types(f);
    g_assert_cmpuint(sim_faults_n_fail_types(f), ==, 0);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 2);
    sim_faults_clear_delay_types(f);
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 0);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_CALL), ==, 0);
    g_assert_cmpuint(sim_faults_num_fail_sends(f), ==, 3);
    GBytes *p = g_bytes_new_static("x", 1);
    g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_FORK_REQUEST, p, NULL));
    g_bytes_unref(p);
    sim_faults_free(f);
}

static void
test_fail_counts_per_payload(void)
{
    SimFaults *f = sim_faults_new();
    sim_faults_set_pytorch_defaults(f);
    GBytes *p = g_bytes_new_static("fork:1:2", 8);
    /* A different buffer with the same bytes is the same message (a retry
     * re-encodes it). */
    GBytes *p_again = g_bytes_new("fork:1:2", 8);
    GBytes *q = g_bytes_new_static("fork:1:3", 8);

    for (int attempt = 1; attempt <= 3; attempt++) {
        GError *error = NULL;
        g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_FORK_REQUEST,
                                            attempt == 2 ? p_again : p, &error));
        g_assert_error(error, RPC_ERROR, RPC_ERROR_RUNTIME);
        g_assert_cmpstr(error->message, ==, FAIL_PREFIX "fork:1:2");
        g_assert_cmpint(rpc_err_type_of(error->message), ==, RPC_ERR_INTENTIONAL_FAILURE);
        g_clear_error(&error);
        g_assert_cmpuint(sim_faults_fired_fails(f), ==, (guint64)attempt);
    }
    GError *error = NULL;
    g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_FORK_REQUEST, p, &error));
    g_assert_no_error(error);
    g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_FORK_REQUEST, p, &error));
    g_assert_no_error(error);
    g_assert_cmpuint(sim_faults_fired_fails(f), ==, 3);

    /* Another payload has its own counter. */
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_FORK_REQUEST, q, &error));
    g_assert_cmpstr(error->message, ==, FAIL_PREFIX "fork:1:3");
    g_clear_error(&error);
    g_assert_cmpuint(sim_faults_fired_fails(f), ==, 4);

    /* The key is the payload alone: the same bytes under another listed
     * type share the counter (PyTorch's map is keyed by payload only). */
    g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, p, NULL));
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, q, NULL));

    g_bytes_unref(p);
    g_bytes_unref(p_again);
    g_bytes_unref(q);
    sim_faults_free(f);
}

static void
test_num_fail_sends(void)
{
    GBytes *p = g_bytes_new_static("abc", 3);
    for (guint n = 0; n <= 5; n++) {
        SimFaults *f = sim_faults_new();
        g_assert_true(sim_faults_add_fail(f, "PYTHON_CALL", NULL));
        sim_faults_set_num_fail_sends(f, n);
        g_assert_cmpuint(sim_faults_num_fail_sends(f), ==, n);
        guint failed = 0;
        /* SQLite-style: retry until it goes through. */
        while (sim_faults_check_send(f, RPC_MSG_PYTHON_CALL, p, NULL))
            failed++;
        g_assert_cmpuint(failed, ==, n);
        g_assert_cmpuint(sim_faults_fired_fails(f), ==, n);
        sim_faults_free(f);
    }
    g_bytes_unref(p);
}

static void
test_unlisted_never_fail(void)
{
    SimFaults *f = sim_faults_new();
    g_assert_true(sim_faults_add_fail(f, "RREF_CHILD_ACCEPT", NULL));
    sim_faults_set_num_fail_sends(f, 100);
    GBytes *p = g_bytes_new_static("same", 4);
    for (int i = 0; i < 10; i++) {
        GError *error = NULL;
        g_assert_false(sim_faults_check_send(f, RPC_MSG_PYTHON_CALL, p, &error));
        g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_ACK, p, &error));
        g_assert_false(sim_faults_check_send(f, RPC_MSG_PYTHON_RET, p, &error));
        g_assert_false(sim_faults_check_send(f, RPC_MSG_EXCEPTION, p, &error));
        g_assert_no_error(error);
    }
    g_assert_cmpuint(sim_faults_fired_fails(f), ==, 0);
    /* And unlisted sends do not use up the listed type's failures. */
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_CHILD_ACCEPT, p, NULL));
    g_bytes_unref(p);
    sim_faults_free(f);
}

static void
test_binary_payload_escaped(void)
{
    SimFaults *f = sim_faults_new();
    sim_faults_set_pytorch_defaults(f);
    static const guint8 raw[] = {'a', 0x00, 0xff, '\\', 'b', '\n', 0x7f, 0xc3, 0xa9, ' ', '~'};
    GBytes *p = g_bytes_new_static(raw, sizeof raw);
    GError *error = NULL;
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, p, &error));
    g_assert_cmpstr(error->message, ==, FAIL_PREFIX "a\\x00\\xff\\\\b\\x0a\\x7f\\xc3\\xa9 ~");
    g_assert_true(g_utf8_validate(error->message, -1, NULL));
    g_clear_error(&error);

    /* The empty payload (and NULL, its synonym) is one key. */
    GBytes *empty = g_bytes_new_static("", 0);
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, empty, &error));
    g_assert_cmpstr(error->message, ==, FAIL_PREFIX);
    g_clear_error(&error);
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, NULL, NULL));
    g_assert_true(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, empty, NULL));
    g_assert_false(sim_faults_check_send(f, RPC_MSG_RREF_USER_DELETE, NULL, NULL));
    g_bytes_unref(empty);
    g_bytes_unref(p);
    sim_faults_free(f);
}

static void
test_delay_for(void)
{
    SimFaults *f = sim_faults_new();
    g_assert_true(sim_faults_add_delay(f, "PYTHON_REMOTE_CALL", 250 * SIM_MS, NULL));
    g_assert_true(sim_faults_add_delay(f, "SCRIPT_RREF_FETCH_CALL", 2 * SIM_S, NULL));
    g_assert_cmpuint(sim_faults_n_delay_types(f), ==, 2);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_REMOTE_CALL), ==, 250 * SIM_MS);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_REMOTE_CALL), ==, 250 * SIM_MS);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_SCRIPT_RREF_FETCH_CALL), ==, 2 * SIM_S);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_PYTHON_CALL), ==, 0);
    g_assert_cmpint(sim_faults_delay_for(f, RPC_MSG_REMOTE_RET), ==, 0);
    g_assert_cmpuint(sim_faults_fired_delays(f), ==, 3);
    /* Delays and failures are independent rules. */
    GBytes *p = g_bytes_new_static("x", 1);
    g_assert_false(sim_faults_check_send(f, RPC_MSG_PYTHON_REMOTE_CALL, p, NULL));
    g_assert_cmpuint(sim_faults_fired_fails(f), ==, 0);
    g_bytes_unref(p);
    sim_faults_free(f);
}

/* drop rules: validated, seeded per worker, only listed types draw. */
static void
test_drop(void)
{
    SimFaults *f = sim_faults_new();
    GError *err = NULL;
    g_assert_false(sim_faults_add_drop(f, "RREF_FORK_REQUEST", 1.5, &err));
    g_assert_cmpstr(err->message, ==, "Drop probabilities must be within [0, 1], got 1.5");
    g_clear_error(&err);
    g_assert_false(sim_faults_add_drop(f, "PYTHON_RET", 0.5, &err));
    g_assert_cmpstr(err->message, ==, "No mapping to rpc::MessageType exists for PYTHON_RET");
    g_clear_error(&err);
    g_assert_true(sim_faults_add_drop(f, "RREF_FORK_REQUEST", 0.25, &err));
    sim_faults_seed(f, 7, 2);
    SimFaults *g = sim_faults_new();
    g_assert_true(sim_faults_add_drop(g, "RREF_FORK_REQUEST", 0.25, NULL));
    sim_faults_seed(g, 7, 2);
    guint dropped = 0;
    for (int i = 0; i < 4000; i++) {
        gboolean a = sim_faults_should_drop(f, RPC_MSG_RREF_FORK_REQUEST);
        /* an unlisted type never drops and never draws */
        g_assert_false(sim_faults_should_drop(f, RPC_MSG_PYTHON_CALL));
        g_assert_true(a == sim_faults_should_drop(g, RPC_MSG_RREF_FORK_REQUEST));
        dropped += a;
    }
    g_assert_cmpuint(sim_faults_fired_drops(f), ==, dropped);
    g_assert_cmpuint(dropped, >, 800);
    g_assert_cmpuint(dropped, <, 1200);
    sim_faults_free(f);
    sim_faults_free(g);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/faults/new-is-empty", test_new_is_empty);
    g_test_add_func("/faults/names/all-listable-accepted", test_all_listable_names);
    g_test_add_func("/faults/names/unknown-no-mapping", test_unknown_names);
    g_test_add_func("/faults/delay/negative-refused", test_negative_delay);
    g_test_add_func("/faults/defaults/pytorch-fixture", test_pytorch_defaults);
    g_test_add_func("/faults/defaults/clear-lists", test_clear_lists);
    g_test_add_func("/faults/fail/counts-per-payload", test_fail_counts_per_payload);
    g_test_add_func("/faults/fail/num-fail-sends-loop", test_num_fail_sends);
    g_test_add_func("/faults/fail/unlisted-never-fail", test_unlisted_never_fail);
    g_test_add_func("/faults/fail/binary-payload-escaped", test_binary_payload_escaped);
    g_test_add_func("/faults/delay/delay-for", test_delay_for);
    g_test_add_func("/faults/drop", test_drop);
    return g_test_run();
}
