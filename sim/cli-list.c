/* cli-list.c — `rpcsim list`: the names a scenario file may use.
 *
 * Every list is read from the module that owns the names (the registry,
 * the message table, the faulty agent, the parser), never copied here, so
 * the listing cannot drift from what the parser and the runtime accept.
 */
#include "sim/cli-common.h"

#include <string.h>

#include "core/message.h"
#include "core/registry.h"
#include "sim/faults.h"

static const char list_summary[] =
    "Lists the names a scenario can use:\n"
    "  functions  the functions every worker has: name, kind (builtin/udf/async), doc\n"
    "  messages   PyTorch's RPC message types with their enum values\n"
    "  faults     network faults, faulty-agent rules (with the message types they\n"
    "             accept), world actions and the `fired` counters of expect blocks\n"
    "  counters   the agent counters of `counter(...)` and expect's `counter`\n"
    "  builtins   the expression built-ins of worker programs";

static const char list_examples[] = "Examples:\n"
                                    "  rpcsim list functions\n"
                                    "  rpcsim list faults\n"
                                    "\n"
                                    "Exit status: 0, or 2 for an unknown list.";

static void
list_functions(void)
{
    RpcRegistry *reg = rpc_registry_new_default();
    GPtrArray *defs = rpc_registry_list(reg);
    fprintf(stdout, "%-30s %-8s %s\n", "NAME", "KIND", "DESCRIPTION");
    for (guint i = 0; i < defs->len; i++) {
        const RpcFunctionDef *d = g_ptr_array_index(defs, i);
        if (d->flags & RPC_FUNC_INTERNAL)
            continue;
        const char *kind = (d->flags & RPC_FUNC_ASYNC)     ? "async"
                           : (d->flags & RPC_FUNC_BUILTIN) ? "builtin"
                                                           : "udf";
        fprintf(stdout, "%-30s %-8s %s", d->name, kind, d->doc ? d->doc : "");
        if (d->qualname && strcmp(d->qualname, d->name) != 0)
            fprintf(stdout, " [wire name %s]", d->qualname);
        fputc('\n', stdout);
    }
    g_ptr_array_unref(defs);
    rpc_registry_free(reg);
}

static void
list_messages(void)
{
    fprintf(stdout, "%-32s %-6s %s\n", "TYPE", "VALUE", "DIRECTION");
    /* In PyTorch's declaration order: the low byte, with the request or
     * response flag bit (0x100 / 0x200) on top. */
    for (guint low = 0; low < 0x100; low++) {
        for (guint flag = 0; flag <= 0x200; flag += 0x100) {
            guint t = low | flag;
            if (!rpc_message_type_is_known(t))
                continue;
            RpcMessageType mt = (RpcMessageType)t;
            const char *dir = rpc_message_type_is_request(mt)    ? "request"
                              : rpc_message_type_is_response(mt) ? "response"
                                                                 : "-";
            fprintf(stdout, "%-32s 0x%03x  %s\n", rpc_message_type_name(mt), t, dir);
        }
    }
}

static void
print_names(const char *const *names, const char *indent)
{
    for (guint i = 0; names && names[i]; i++)
        fprintf(stdout, "%s%s\n", indent, names[i]);
}

static void
list_faults(void)
{
    fputs("Network faults (network { ... } defaults, link A -> B { ... } overrides):\n"
          "  latency D | constant(D) | uniform(A, B) | normal(MEAN, SD) |\n"
          "          lognormal(MEDIAN, SIGMA) | pareto(SCALE, ALPHA[, CAP])\n"
          "                       the per-message latency distribution\n"
          "  bandwidth N          bytes per second; links serialise their messages\n"
          "  jitter D             extra latency, uniform in [0, D]\n"
          "  loss P               drop a message with probability P\n"
          "  duplicate P          deliver a second copy with probability P\n"
          "  reorder P            let a message overtake earlier ones on its link\n"
          "  (messages to a crashed worker bounce: \"Connection closed by peer\")\n"
          "\n"
          "Faulty-agent rules (faults { ... }), as PyTorch's FaultyTensorPipeAgent:\n"
          "  fail TYPE[, TYPE...] [times N] [from WORKER]\n"
          "      the first N sends of each distinct message of TYPE fail (default N 3)\n"
          "  delay TYPE[, TYPE...] by D [from WORKER]\n"
          "      messages of TYPE wait D before they are written\n"
          "  drop TYPE[, TYPE...] with P [from WORKER]\n"
          "      messages of TYPE are lost with probability P (not a PyTorch option;\n"
          "      retried control messages recover after their RPC timeout)\n"
          "  accepted types:\n",
          stdout);
    print_names(sim_faults_type_names(), "    ");
    fputs("\n"
          "World actions, in a program or timed in faults { ... }:\n"
          "  at TIME ACTION                      at a virtual time\n"
          "  after N KIND [on WORKER] ACTION     at the N-th trace record of KIND (rpc.serve)\n"
          "  crash W              the worker stops at once; peers' calls fail\n"
          "  restart W            a fresh agent with the same name and id\n"
          "  pause W [for D]      runs and receives nothing until resumed\n"
          "  resume W\n"
          "  partition A <-> B    block both directions (A -> B: one way)\n"
          "  heal A <-> B         lift a partition (heal A -> B: one way)\n"
          "  heal all             lift every partition\n"
          "\n"
          "Fired counters (expect { fired KIND CMP N }, the faults= of run summaries):\n",
          stdout);
    print_names(sim_scenario_fired_names(), "  ");
}

int
sim_cli_list_main(int argc, char **argv)
{
    GOptionEntry entries[] = {{NULL, 0, 0, 0, NULL, NULL, NULL}};
    GOptionContext *ctx = sim_cli_option_context(
        "list", "functions|messages|faults|counters|builtins", list_summary, list_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    if (!sim_cli_parse_options(ctx, "list", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out;
    }
    if (argc != 2) {
        rc = sim_cli_usage_error("list", "say what to list: functions, messages, faults, "
                                         "counters or builtins");
        goto out;
    }
    const char *what = argv[1];
    if (strcmp(what, "functions") == 0)
        list_functions();
    else if (strcmp(what, "messages") == 0)
        list_messages();
    else if (strcmp(what, "faults") == 0)
        list_faults();
    else if (strcmp(what, "counters") == 0)
        print_names(sim_scenario_counter_names(), "");
    else if (strcmp(what, "builtins") == 0)
        print_names(sim_scenario_builtin_names(), "");
    else
        rc = sim_cli_usage_error("list",
                                 "unknown list '%s' (functions, messages, faults, counters, "
                                 "builtins)",
                                 what);
out:
    g_option_context_free(ctx);
    return rc;
}
