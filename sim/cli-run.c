/* cli-run.c — the single-process subcommands: run, replay, check-determinism
 * and lint.
 *
 * Each runs scenarios in this process, one after the other; sweep
 * (cli-sweep.c) is the one that forks.  A scenario that fails to parse is
 * reported with the parser's "file:line:col: message" and the other files
 * still run; the exit code is the largest that applies (cli-common.h).
 */
#include "sim/cli-common.h"

#include <errno.h>
#include <string.h>

/* --- run ----------------------------------------------------------------------- */

static const char run_summary[] =
    "Runs each scenario FILE once, at its default seed (the file's `seed`, else 0)\n"
    "or at --seed N, and prints one summary line per run:\n"
    "  FILE seed=N PASS|FAIL time=<virtual s> events=N messages=N faults=N [kind=n ...] fp=<hex>\n"
    "A failing run also prints its failures (file:line:col: worker: message) and the\n"
    "command that replays it.";

static const char run_examples[] =
    "Examples:\n"
    "  rpcsim run scenarios/basic/rpc-sync.rpcs\n"
    "  rpcsim run --seed 42 scenarios/faults/*.rpcs\n"
    "  rpcsim run x.rpcs --trace x.json --trace-format chrome   (open in Perfetto)\n"
    "  rpcsim run x.rpcs --log --quiet\n"
    "\n"
    "Exit status: 0 all passed, 1 a scenario failed, 2 bad input, 3 internal error.";

int
sim_cli_run_main(int argc, char **argv)
{
    char *seed_text = NULL, *trace_path = NULL, *format_name = NULL;
    gboolean quiet = FALSE, log = FALSE;
    char **files = NULL;
    GOptionEntry entries[] = {
        {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_text,
         "Run at seed N (unsigned 64-bit) instead of each file's default", "N"},
        {"trace", 't', 0, G_OPTION_ARG_FILENAME, &trace_path,
         "Write the run's trace to FILE ('-': standard output, the summary then goes to "
         "standard error); one scenario only",
         "FILE"},
        {"trace-format", 'f', 0, G_OPTION_ARG_STRING, &format_name,
         "Trace format: text (default), json (one object per line) or chrome (Perfetto, "
         "chrome://tracing)",
         "FORMAT"},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet, "Print only the runs that fail", NULL},
        {"log", 'l', 0, G_OPTION_ARG_NONE, &log,
         "Print the programs' `print` output as the run goes", NULL},
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = sim_cli_option_context("run", "FILE...", run_summary, run_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    FILE *trace = NULL;
    guint64 seed = 0;
    SimTraceFormat format = SIM_TRACE_FORMAT_TEXT;

    if (!sim_cli_parse_options(ctx, "run", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out_options;
    }
    guint n_files = files ? g_strv_length(files) : 0;
    GError *err = NULL;
    if (n_files == 0) {
        rc = sim_cli_usage_error("run", "no scenario FILE given");
        goto out_options;
    }
    if (seed_text && !sim_cli_parse_seed(seed_text, &seed, &err)) {
        rc = sim_cli_usage_error("run", "%s", err->message);
        g_error_free(err);
        goto out_options;
    }
    if (format_name && !sim_trace_format_from_name(format_name, &format)) {
        rc = sim_cli_usage_error("run", "unknown trace format '%s' (text, json or chrome)",
                                 format_name);
        goto out_options;
    }
    if (format_name && trace_path == NULL) {
        rc = sim_cli_usage_error("run", "--trace-format needs --trace FILE");
        goto out_options;
    }
    if (trace_path && n_files != 1) {
        rc = sim_cli_usage_error("run", "--trace writes one run: give exactly one FILE");
        goto out_options;
    }
    gboolean trace_stdout = trace_path && strcmp(trace_path, "-") == 0;
    if (trace_path) {
        trace = trace_stdout ? stdout : fopen(trace_path, "w");
        if (trace == NULL) {
            fprintf(stderr, "rpcsim run: cannot write %s: %s\n", trace_path, g_strerror(errno));
            rc = SIM_CLI_EXIT_BAD_INPUT;
            goto out_options;
        }
    }
    /* Standard output carries the trace when asked to: keep it parseable. */
    FILE *out = trace_stdout ? stderr : stdout;

    for (guint i = 0; i < n_files; i++) {
        ScScenario *sc = sim_cli_load(files[i]);
        if (sc == NULL) {
            rc = MAX(rc, SIM_CLI_EXIT_BAD_INPUT);
            continue;
        }
        SimRunOptions opt;
        sim_run_options_init(&opt, seed_text ? seed : sim_cli_default_seed(sc));
        opt.trace_out = trace;
        opt.trace_format = format;
        opt.log_out = log ? out : NULL;
        SimRunReport *r = sim_scenario_run(sc, &opt);
        if (r == NULL) {
            fprintf(stderr, "rpcsim run: %s: the interpreter returned no report\n", files[i]);
            rc = MAX(rc, SIM_CLI_EXIT_INTERNAL);
        } else {
            if (!quiet || !r->passed)
                sim_cli_print_summary(out, files[i], r);
            if (!r->passed)
                rc = MAX(rc, SIM_CLI_EXIT_FAILED);
        }
        fflush(out);
        sim_run_report_free(r);
        sim_scenario_free(sc);
    }
    if (trace && !trace_stdout && fclose(trace) != 0) {
        fprintf(stderr, "rpcsim run: error writing %s: %s\n", trace_path, g_strerror(errno));
        rc = MAX(rc, SIM_CLI_EXIT_BAD_INPUT);
    }
out_options:
    g_option_context_free(ctx);
    g_free(seed_text);
    g_free(trace_path);
    g_free(format_name);
    g_strfreev(files);
    return rc;
}

/* --- replay -------------------------------------------------------------------- */

static const char replay_summary[] =
    "Runs one scenario at one seed and prints its full trace (standard output, or\n"
    "FILE with -o), then the run's summary.  The trace is written as the run goes,\n"
    "so it is complete up to the last step even if the run crashes.  When a json or\n"
    "chrome trace goes to standard output the summary goes to standard error, so\n"
    "standard output stays one valid document.";

static const char replay_examples[] =
    "Examples:\n"
    "  rpcsim replay scenarios/faults/retry.rpcs --seed 7\n"
    "  rpcsim replay x.rpcs --seed 7 --trace-format chrome -o x.json\n"
    "  rpcsim replay x.rpcs --seed 7 | grep rpc.timeout\n"
    "\n"
    "Exit status: 0 the run passed, 1 it failed, 2 bad input, 3 internal error.";

int
sim_cli_replay_main(int argc, char **argv)
{
    char *seed_text = NULL, *out_path = NULL, *format_name = NULL;
    char **files = NULL;
    GOptionEntry entries[] = {
        {"seed", 's', 0, G_OPTION_ARG_STRING, &seed_text,
         "The seed to replay (default: the file's seed, else 0)", "N"},
        {"trace-format", 'f', 0, G_OPTION_ARG_STRING, &format_name,
         "Trace format: text (default), json or chrome", "FORMAT"},
        {"output", 'o', 0, G_OPTION_ARG_FILENAME, &out_path,
         "Write the trace to FILE instead of standard output", "FILE"},
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx =
        sim_cli_option_context("replay", "FILE --seed N", replay_summary, replay_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    ScScenario *sc = NULL;
    FILE *trace = NULL;
    GError *err = NULL;
    guint64 seed = 0;
    SimTraceFormat format = SIM_TRACE_FORMAT_TEXT;

    if (!sim_cli_parse_options(ctx, "replay", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out_options;
    }
    if (files == NULL || g_strv_length(files) != 1) {
        rc = sim_cli_usage_error("replay", "give exactly one scenario FILE");
        goto out_options;
    }
    if (seed_text && !sim_cli_parse_seed(seed_text, &seed, &err)) {
        rc = sim_cli_usage_error("replay", "%s", err->message);
        g_error_free(err);
        goto out_options;
    }
    if (format_name && !sim_trace_format_from_name(format_name, &format)) {
        rc = sim_cli_usage_error("replay", "unknown trace format '%s' (text, json or chrome)",
                                 format_name);
        goto out_options;
    }
    sc = sim_cli_load(files[0]);
    if (sc == NULL) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out_options;
    }
    gboolean to_file = out_path && strcmp(out_path, "-") != 0;
    trace = to_file ? fopen(out_path, "w") : stdout;
    if (trace == NULL) {
        fprintf(stderr, "rpcsim replay: cannot write %s: %s\n", out_path, g_strerror(errno));
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out_scenario;
    }
    SimRunOptions opt;
    sim_run_options_init(&opt, seed_text ? seed : sim_cli_default_seed(sc));
    opt.trace_out = trace;
    opt.trace_format = format;
    SimRunReport *r = sim_scenario_run(sc, &opt);
    fflush(trace);
    FILE *out = to_file || format == SIM_TRACE_FORMAT_TEXT ? stdout : stderr;
    if (r == NULL) {
        fprintf(stderr, "rpcsim replay: %s: the interpreter returned no report\n", files[0]);
        rc = SIM_CLI_EXIT_INTERNAL;
    } else {
        sim_cli_print_summary(out, files[0], r);
        rc = r->passed ? SIM_CLI_EXIT_OK : SIM_CLI_EXIT_FAILED;
    }
    sim_run_report_free(r);
    if (to_file && fclose(trace) != 0) {
        fprintf(stderr, "rpcsim replay: error writing %s: %s\n", out_path, g_strerror(errno));
        rc = MAX(rc, SIM_CLI_EXIT_BAD_INPUT);
    }
out_scenario:
    sim_scenario_free(sc);
out_options:
    g_option_context_free(ctx);
    g_free(seed_text);
    g_free(out_path);
    g_free(format_name);
    g_strfreev(files);
    return rc;
}

/* --- check-determinism ------------------------------------------------------------ */

static const char check_summary[] =
    "Runs every seed of each FILE twice in this process, keeping the text traces,\n"
    "and compares the fingerprints and the traces line by line.  On a mismatch it\n"
    "prints the seed, both fingerprints and the first trace line that differs.\n"
    "Only reproducibility is checked: a run that fails the same way twice is\n"
    "deterministic (use run or sweep for verdicts).";

static const char check_examples[] =
    "Examples:\n"
    "  rpcsim check-determinism scenarios/basic/*.rpcs\n"
    "  rpcsim check-determinism x.rpcs --seeds 0..99\n"
    "\n"
    "Exit status: 0 deterministic, 2 bad input, 4 a mismatch was found.";

/* The first index where a and b differ, or -1; a missing line counts as a
 * difference. */
static gint64
first_difference(const GPtrArray *a, const GPtrArray *b)
{
    guint na = a ? a->len : 0, nb = b ? b->len : 0;
    for (guint i = 0; i < MAX(na, nb); i++) {
        if (i >= na || i >= nb)
            return i;
        if (strcmp(g_ptr_array_index(a, i), g_ptr_array_index(b, i)) != 0)
            return i;
    }
    return -1;
}

/* Test hook: with RPCSIM_TEST_PERTURB_SECOND_RUN in the environment the
 * second run of each seed uses seed + 1, so tests/test-cli.sh can check the
 * mismatch report and exit status 4 without a nondeterministic build. */
static gboolean
check_seed(const char *path, const ScScenario *sc, guint64 seed, gboolean *failed)
{
    SimRunOptions opt;
    sim_run_options_init(&opt, seed);
    opt.keep_lines = TRUE;
    SimRunReport *r1 = sim_scenario_run(sc, &opt);
    if (g_getenv("RPCSIM_TEST_PERTURB_SECOND_RUN") != NULL)
        opt.seed = seed + 1;
    SimRunReport *r2 = sim_scenario_run(sc, &opt);
    gint64 diff = first_difference(r1->lines, r2->lines);
    gboolean same = diff < 0 && r1->fingerprint == r2->fingerprint && r1->passed == r2->passed &&
                    r1->end_time == r2->end_time && r1->events == r2->events;
    *failed = !r1->passed;
    if (!same) {
        fprintf(stdout,
                "%s seed=%" G_GUINT64_FORMAT ": MISMATCH\n"
                "  fingerprints: run 1 %016" G_GINT64_MODIFIER "x, run 2 %016" G_GINT64_MODIFIER
                "x\n",
                path, seed, r1->fingerprint, r2->fingerprint);
        if (r1->passed != r2->passed)
            fprintf(stdout, "  verdicts: run 1 %s, run 2 %s\n", r1->passed ? "PASS" : "FAIL",
                    r2->passed ? "PASS" : "FAIL");
        if (diff >= 0) {
            guint n1 = r1->lines ? r1->lines->len : 0, n2 = r2->lines ? r2->lines->len : 0;
            fprintf(stdout, "  first difference at trace line %" G_GINT64_FORMAT ":\n", diff + 1);
            fprintf(stdout, "    run 1: %s\n",
                    diff < n1 ? (char *)g_ptr_array_index(r1->lines, diff) : "<end of trace>");
            fprintf(stdout, "    run 2: %s\n",
                    diff < n2 ? (char *)g_ptr_array_index(r2->lines, diff) : "<end of trace>");
        } else {
            fprintf(stdout, "  the trace lines are identical; the difference is in records "
                            "after the kept lines or in the run's totals\n");
        }
        char *q = sim_cli_shell_quote(path);
        fprintf(stdout, "  reproduce: rpcsim check-determinism %s --seeds %" G_GUINT64_FORMAT "\n",
                q, seed);
        g_free(q);
    }
    sim_run_report_free(r1);
    sim_run_report_free(r2);
    return same;
}

int
sim_cli_check_main(int argc, char **argv)
{
    char *seeds_text = NULL;
    char **files = NULL;
    GOptionEntry entries[] = {
        {"seeds", 's', 0, G_OPTION_ARG_STRING, &seeds_text,
         "The seeds to check, inclusive: A..B or one seed (default 0..9)", "A..B"},
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx =
        sim_cli_option_context("check-determinism", "FILE...", check_summary, check_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    SimCliSeeds seeds = {0, 9};
    GError *err = NULL;

    if (!sim_cli_parse_options(ctx, "check-determinism", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out;
    }
    if (files == NULL || files[0] == NULL) {
        rc = sim_cli_usage_error("check-determinism", "no scenario FILE given");
        goto out;
    }
    if (seeds_text && !sim_cli_parse_seeds(seeds_text, &seeds, &err)) {
        rc = sim_cli_usage_error("check-determinism", "%s", err->message);
        g_error_free(err);
        goto out;
    }
    for (guint i = 0; files[i]; i++) {
        ScScenario *sc = sim_cli_load(files[i]);
        if (sc == NULL) {
            rc = MAX(rc, SIM_CLI_EXIT_BAD_INPUT);
            continue;
        }
        guint64 mismatches = 0, failing = 0, n = 0;
        for (guint64 s = seeds.first;; s++) {
            gboolean failed;
            mismatches += !check_seed(files[i], sc, s, &failed);
            failing += failed;
            n++;
            fflush(stdout);
            if (s == seeds.last)
                break;
        }
        fprintf(stdout,
                "%s: %s over seeds %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT
                " seeds run twice, %" G_GUINT64_FORMAT " mismatched; %" G_GUINT64_FORMAT
                " failing run%s)\n",
                files[i], mismatches ? "NOT deterministic" : "deterministic", seeds.first,
                seeds.last, n, mismatches, failing, failing == 1 ? "" : "s");
        if (mismatches)
            rc = MAX(rc, SIM_CLI_EXIT_NONDETERMINISM);
        sim_scenario_free(sc);
    }
out:
    g_option_context_free(ctx);
    g_free(seeds_text);
    g_strfreev(files);
    return rc;
}

/* --- lint ---------------------------------------------------------------------- */

static const char lint_summary[] =
    "Parses and checks each scenario FILE without running it: syntax, names,\n"
    "workers, functions, built-in arities, fault rules.  Prints \"FILE: ok\" on\n"
    "standard output, or the first problem as \"file:line:col: message\" on\n"
    "standard error.";

static const char lint_examples[] = "Examples:\n"
                                    "  rpcsim lint scenarios/*/*.rpcs\n"
                                    "\n"
                                    "Exit status: 0 every file is valid, 2 a file is not.";

int
sim_cli_lint_main(int argc, char **argv)
{
    char **files = NULL;
    GOptionEntry entries[] = {
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx = sim_cli_option_context("lint", "FILE...", lint_summary, lint_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    if (!sim_cli_parse_options(ctx, "lint", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out;
    }
    if (files == NULL || files[0] == NULL) {
        rc = sim_cli_usage_error("lint", "no scenario FILE given");
        goto out;
    }
    for (guint i = 0; files[i]; i++) {
        ScScenario *sc = sim_cli_load(files[i]);
        if (sc == NULL) {
            rc = SIM_CLI_EXIT_BAD_INPUT;
            continue;
        }
        fprintf(stdout, "%s: ok\n", files[i]);
        sim_scenario_free(sc);
    }
out:
    g_option_context_free(ctx);
    g_strfreev(files);
    return rc;
}
