/* cli-common.h — what the `rpcsim` subcommands share.
 *
 * The command line is a layer above the scenario API (ARCHITECTURE.md:
 * cli → scenario → world): it parses arguments, runs scenarios and reports.
 * It never changes what a run does, so a (file, seed) pair printed by any
 * subcommand replays exactly with `rpcsim replay FILE --seed N`.
 *
 * Exit codes are part of the interface (scripts and CI read them); when
 * several apply to one invocation the largest wins.
 */
#ifndef SIM_CLI_COMMON_H
#define SIM_CLI_COMMON_H

#include <stdio.h>

#include <glib.h>

#include "sim/scenario.h"

G_BEGIN_DECLS

#define SIM_CLI_VERSION "0.1.0"

typedef enum {
    SIM_CLI_EXIT_OK = 0,             /* every run passed */
    SIM_CLI_EXIT_FAILED = 1,         /* a scenario failed */
    SIM_CLI_EXIT_BAD_INPUT = 2,      /* usage error, unreadable or malformed scenario */
    SIM_CLI_EXIT_INTERNAL = 3,       /* a run crashed (signal) or the CLI itself failed */
    SIM_CLI_EXIT_NONDETERMINISM = 4, /* check-determinism: two runs of one seed differ */
} SimCliExit;

/* An inclusive range of seeds, first <= last.  The count, last - first + 1,
 * overflows for the full 64-bit range: iterate up to `s == last`. */
typedef struct {
    guint64 first;
    guint64 last;
} SimCliSeeds;

/* A subcommand's entry point: argv[0] is the subcommand's name. */
typedef int (*SimCliMain)(int argc, char **argv);

int sim_cli_run_main(int argc, char **argv);
int sim_cli_replay_main(int argc, char **argv);
int sim_cli_check_main(int argc, char **argv);
int sim_cli_lint_main(int argc, char **argv);
int sim_cli_sweep_main(int argc, char **argv);
int sim_cli_list_main(int argc, char **argv);

/* Decimal (or 0x-prefixed hexadecimal) unsigned 64-bit seed; no sign, no
 * spaces.  Error: "invalid seed '…': …". */
gboolean sim_cli_parse_seed(const char *text, guint64 *out, GError **error);
/* "A..B" (A <= B) or a single seed "A". */
gboolean sim_cli_parse_seeds(const char *text, SimCliSeeds *out, GError **error);

/* Parses a subcommand's options (GOption; --help prints and exits 0).
 * On a usage error prints it with a hint to stderr and returns FALSE. */
gboolean sim_cli_parse_options(GOptionContext *ctx, const char *cmd, int *argc, char ***argv);
/* Prints "rpcsim CMD: message" and "Try 'rpcsim CMD --help'." to stderr;
 * returns SIM_CLI_EXIT_BAD_INPUT. */
int sim_cli_usage_error(const char *cmd, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* A GOptionContext for a subcommand: usage line, summary and examples. */
GOptionContext *sim_cli_option_context(const char *cmd, const char *params, const char *summary,
                                       const char *examples);

/* Parses path; on failure prints the parser's "file:line:col: message" to
 * stderr and returns NULL (transfer full). */
ScScenario *sim_cli_load(const char *path);
/* ScScenario.seed when the file sets one, else 0. */
guint64 sim_cli_default_seed(const ScScenario *sc);

/* The argument quoted for a POSIX shell when it needs quoting
 * (transfer full). */
char *sim_cli_shell_quote(const char *arg);
/* "rpcsim replay FILE --seed N", ready to paste (transfer full). */
char *sim_cli_replay_command(const char *path, guint64 seed);
/* The fired faults that are not zero, "fail=3 delay=2", or "" (transfer full). */
char *sim_cli_fired_text(const GPtrArray *fired);
/* The per-run summary: one line "FILE seed=N PASS|FAIL time=…s events=N
 * messages=N faults=N [kind=n …] fp=<16 hex>", then on failure each failure
 * (indented) and the replay command. */
void sim_cli_print_summary(FILE *f, const char *path, const SimRunReport *r);
/* Writes text line by line, each line prefixed by indent and the lines after
 * the first (a deadlock report) by two more spaces. */
void sim_cli_print_indented(FILE *f, const char *indent, const char *text);

G_END_DECLS

#endif /* SIM_CLI_COMMON_H */
