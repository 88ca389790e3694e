/* main.c — the `rpcsim` command: dispatches to a subcommand.
 *
 * `rpcsim SUBCOMMAND [OPTION…] ARG…`; each subcommand parses its own options
 * with GOption and has its own --help (cli-run.c, cli-sweep.c, cli-list.c).
 * The exit codes below are an interface: scripts and CI depend on them.
 */
#include <locale.h>
#include <string.h>

#include "sim/cli-common.h"

typedef struct {
    const char *name;
    SimCliMain main;
    const char *summary;
} Subcommand;

static const Subcommand subcommands[] = {
    {"run", sim_cli_run_main, "run scenarios once each and print a summary per run"},
    {"sweep", sim_cli_sweep_main, "run scenarios over a range of seeds, in parallel processes"},
    {"replay", sim_cli_replay_main, "run one scenario at one seed and print its full trace"},
    {"check-determinism", sim_cli_check_main,
     "run each seed twice and compare fingerprints and traces"},
    {"lint", sim_cli_lint_main, "parse and check scenario files without running them"},
    {"list", sim_cli_list_main, "list functions, messages, faults, counters or built-ins"},
    {"version", NULL, "print the version"},
};

static void
print_help(FILE *f)
{
    fputs("Usage:\n"
          "  rpcsim SUBCOMMAND [OPTION...] [ARG...]\n"
          "\n"
          "A deterministic simulator of torch.distributed.rpc: scenario files describe\n"
          "workers, a network, faults, a program per worker and the expected outcome;\n"
          "a scenario plus a seed plus this build is a complete reproduction.\n"
          "\n"
          "Subcommands:\n",
          f);
    for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++)
        fprintf(f, "  %-19s %s\n", subcommands[i].name, subcommands[i].summary);
    fputs(
        "\n"
        "Run 'rpcsim SUBCOMMAND --help' for a subcommand's options and examples.\n"
        "\n"
        "Examples:\n"
        "  rpcsim run scenarios/basic/rpc-sync.rpcs\n"
        "  rpcsim sweep scenarios/faults/*.rpcs --seeds 0..9999 -j 8\n"
        "  rpcsim replay scenarios/faults/retry.rpcs --seed 1234 --trace-format chrome -o t.json\n"
        "  rpcsim check-determinism scenarios/basic/*.rpcs --seeds 0..99\n"
        "\n"
        "Exit status (when several apply, the largest wins):\n"
        "  0  every run passed\n"
        "  1  a scenario failed: an expectation, an uncaught program error, an\n"
        "     unexpected deadlock or time limit\n"
        "  2  bad input: a usage error, an unreadable or malformed scenario (the\n"
        "     parser's file:line:col: message goes to standard error)\n"
        "  3  internal error: a sweep worker process crashed, or rpcsim itself failed\n"
        "  4  check-determinism found two runs of one seed that differ\n",
        f);
}

int
main(int argc, char **argv)
{
    /* The character set only (GOption converts its help to it): numbers
     * must print the same in every locale, so LC_NUMERIC stays "C". */
    setlocale(LC_CTYPE, "");
    g_set_prgname("rpcsim");
    if (argc < 2) {
        fputs("rpcsim: missing SUBCOMMAND\n\n", stderr);
        print_help(stderr);
        return SIM_CLI_EXIT_BAD_INPUT;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0 ||
        strcmp(cmd, "-?") == 0) {
        /* `rpcsim help SUBCOMMAND` is `rpcsim SUBCOMMAND --help`. */
        if (strcmp(cmd, "help") == 0 && argc > 2) {
            for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++)
                if (subcommands[i].main && strcmp(argv[2], subcommands[i].name) == 0) {
                    char *sub_argv[] = {argv[2], (char *)"--help", NULL};
                    return subcommands[i].main(2, sub_argv);
                }
        }
        print_help(stdout);
        return SIM_CLI_EXIT_OK;
    }
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        fprintf(stdout, "rpcsim %s (GLib %u.%u.%u)\n", SIM_CLI_VERSION, glib_major_version,
                glib_minor_version, glib_micro_version);
        return SIM_CLI_EXIT_OK;
    }
    for (gsize i = 0; i < G_N_ELEMENTS(subcommands); i++)
        if (subcommands[i].main && strcmp(cmd, subcommands[i].name) == 0)
            return subcommands[i].main(argc - 1, argv + 1);
    fprintf(stderr, "rpcsim: unknown subcommand '%s'\n\n", cmd);
    print_help(stderr);
    return SIM_CLI_EXIT_BAD_INPUT;
}
