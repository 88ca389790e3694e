/* faults.h — PyTorch's faulty agent, as a fault-injection backend (spec §10).
 *
 * Two kinds of rules, as FaultyTensorPipeAgent has:
 *   fail   the first num_fail_sends sends of each distinct message (keyed by
 *          its payload bytes) of a listed type fail at once with
 *          "RPCErr:2:Send attempt failed intentionally for <payload>"; later
 *          sends of the same payload (the retries) go through;
 *   delay  messages of a listed type are delayed by a fixed time before they
 *          are written (the delay counts toward the caller's timeout).
 * Only these types may be listed: RREF_FORK_REQUEST, RREF_CHILD_ACCEPT,
 * RREF_USER_DELETE, CLEANUP_AUTOGRAD_CONTEXT_REQ, PYTHON_REMOTE_CALL,
 * SCRIPT_REMOTE_CALL, PYTHON_CALL, SCRIPT_CALL, PYTHON_RREF_FETCH_CALL,
 * SCRIPT_RREF_FETCH_CALL; anything else: "No mapping to rpc::MessageType
 * exists for <name>".  A negative delay: "Delays passed to
 * FaultyTensorPipeAgent must be non-negative.".
 *
 * One SimFaults per worker (the agent that sends), like the faulty agent.
 * Counts of how often each rule fired are kept for the run's report.
 */
#ifndef SIM_FAULTS_H
#define SIM_FAULTS_H

#include <glib.h>

#include "core/message.h"
#include "sim/time.h"

G_BEGIN_DECLS

typedef struct SimFaults SimFaults;

/* The ten type names the rules accept, NULL-terminated (for the scenario
 * checker and `rpcsim list faults`). */
const char *const *sim_faults_type_names(void);

SimFaults *sim_faults_new(void);
void sim_faults_free(SimFaults *f);

/* drop: messages of a listed type are lost with probability p (silently: the
 * send succeeds, nothing arrives; a retried control message recovers after
 * its timeout).  Draws come from the sender's own stream ("faults", worker)
 * and are taken only for listed types.  Not a PyTorch option: it extends
 * the faulty agent with random loss targeted at chosen types. */
void sim_faults_seed(SimFaults *f, guint64 master_seed, guint worker);
gboolean sim_faults_add_drop(SimFaults *f, const char *type_name, double p, GError **error);
/* At send: TRUE if this message is to be lost; counts it. */
gboolean sim_faults_should_drop(SimFaults *f, RpcMessageType type);
guint64 sim_faults_fired_drops(const SimFaults *f);

/* Adds a type (by PyTorch name) to the fail list. */
gboolean sim_faults_add_fail(SimFaults *f, const char *type_name, GError **error);
void sim_faults_set_num_fail_sends(SimFaults *f, guint n);
guint sim_faults_num_fail_sends(const SimFaults *f);
gboolean sim_faults_add_delay(SimFaults *f, const char *type_name, SimTime delay, GError **error);
/* Empty the fail list / the delay list (dist_init(faulty_messages=[]) and
 * messages_to_delay={} override the fixture's defaults).  Counters and
 * num_fail_sends are kept. */
void sim_faults_clear_fail_types(SimFaults *f);
void sim_faults_clear_delay_types(SimFaults *f);
/* The fixture defaults of spec §10: fail the four retryable types 3 times,
 * delay PYTHON_CALL and SCRIPT_CALL by 1.5 s.  Replaces both lists and
 * num_fail_sends; per-payload counters are kept.  A new SimFaults starts as
 * FaultyTensorPipeRpcBackendOptions does: nothing listed, num_fail_sends 0. */
void sim_faults_set_pytorch_defaults(SimFaults *f);
guint sim_faults_n_fail_types(const SimFaults *f);
guint sim_faults_n_delay_types(const SimFaults *f);

/* At send: TRUE (and *error set to the RuntimeError above) if this send must
 * fail; counts it.  payload (transfer none; NULL = empty) is rendered in the
 * message with bytes outside printable ASCII as "\xNN" and a backslash as
 * "\\" (PyTorch prints them raw; a GError message must be UTF-8). */
gboolean sim_faults_check_send(SimFaults *f, RpcMessageType type, GBytes *payload, GError **error);
/* The delay for this type (0 if none); counts a fired delay when > 0. */
SimTime sim_faults_delay_for(SimFaults *f, RpcMessageType type);

/* FALSE when no rule is configured (no type listed for fail or delay, no
 * drop probability above 0): check_send, should_drop and delay_for would
 * then return FALSE, FALSE and 0 without counting or drawing, so a sender
 * may skip them (and building their arguments). */
gboolean sim_faults_active(const SimFaults *f);

guint64 sim_faults_fired_fails(const SimFaults *f);
guint64 sim_faults_fired_delays(const SimFaults *f);

G_END_DECLS

#endif /* SIM_FAULTS_H */
