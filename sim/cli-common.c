/* cli-common.c — argument parsing and report formatting for the subcommands.
 *
 * Everything printed here is a pure function of the run's report, so two
 * runs with one fingerprint print the same summary (wall-clock figures live
 * only in sweep's progress line, see cli-clock.c).
 */
#include "sim/cli-common.h"

#include <stdarg.h>
#include <string.h>

#include "sim/error.h"

static gboolean
all_digits(const char *s, guint base)
{
    if (*s == '\0')
        return FALSE;
    for (; *s; s++)
        if (!(base == 16 ? g_ascii_isxdigit(*s) : g_ascii_isdigit(*s)))
            return FALSE;
    return TRUE;
}

gboolean
sim_cli_parse_seed(const char *text, guint64 *out, GError **error)
{
    g_return_val_if_fail(text != NULL && out != NULL, FALSE);
    const char *digits = text;
    guint base = 10;
    if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X')) {
        digits = text + 2;
        base = 16;
    }
    /* g_ascii_string_to_unsigned alone would take a leading '+'; seeds are
     * printed in every failure message and must read back exactly. */
    if (!all_digits(digits, base) ||
        !g_ascii_string_to_unsigned(digits, base, 0, G_MAXUINT64, out, NULL)) {
        g_set_error(error, SIM_ERROR, SIM_ERROR_INVALID,
                    "invalid seed '%s': expected an unsigned 64-bit integer "
                    "(0..18446744073709551615, decimal or 0x-hex)",
                    text);
        return FALSE;
    }
    return TRUE;
}

gboolean
sim_cli_parse_seeds(const char *text, SimCliSeeds *out, GError **error)
{
    g_return_val_if_fail(text != NULL && out != NULL, FALSE);
    const char *dots = strstr(text, "..");
    GError *e = NULL;
    if (dots == NULL) {
        if (!sim_cli_parse_seed(text, &out->first, &e))
            goto bad;
        out->last = out->first;
        return TRUE;
    }
    char *a = g_strndup(text, (gsize)(dots - text));
    gboolean ok =
        sim_cli_parse_seed(a, &out->first, &e) && sim_cli_parse_seed(dots + 2, &out->last, &e);
    g_free(a);
    if (!ok)
        goto bad;
    if (out->first > out->last) {
        g_set_error(error, SIM_ERROR, SIM_ERROR_INVALID,
                    "invalid seed range '%s': the first seed is greater than the last", text);
        return FALSE;
    }
    return TRUE;
bad:
    g_set_error(error, SIM_ERROR, SIM_ERROR_INVALID,
                "invalid seed range '%s': expected A..B or a single seed (%s)", text, e->message);
    g_error_free(e);
    return FALSE;
}

int
sim_cli_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    fprintf(stderr, "rpcsim %s: %s\nTry 'rpcsim %s --help'.\n", cmd, msg, cmd);
    g_free(msg);
    return SIM_CLI_EXIT_BAD_INPUT;
}

GOptionContext *
sim_cli_option_context(const char *cmd, const char *params, const char *summary,
                       const char *examples)
{
    /* GOption prints "Usage: <prgname> [OPTION…] <params>". */
    char *prg = g_strdup_printf("rpcsim %s", cmd);
    g_set_prgname(prg);
    g_free(prg);
    GOptionContext *ctx = g_option_context_new(params);
    g_option_context_set_summary(ctx, summary);
    g_option_context_set_description(ctx, examples);
    return ctx;
}

gboolean
sim_cli_parse_options(GOptionContext *ctx, const char *cmd, int *argc, char ***argv)
{
    GError *err = NULL;
    if (g_option_context_parse(ctx, argc, argv, &err))
        return TRUE;
    sim_cli_usage_error(cmd, "%s", err->message);
    g_error_free(err);
    return FALSE;
}

ScScenario *
sim_cli_load(const char *path)
{
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_file(path, &err);
    if (sc == NULL) {
        /* The parser's message already starts with "file:line:col: ". */
        fprintf(stderr, "%s\n", err ? err->message : "unknown parse error");
        g_clear_error(&err);
    }
    return sc;
}

guint64
sim_cli_default_seed(const ScScenario *sc)
{
    return sc->seed_set ? sc->seed : 0;
}

char *
sim_cli_shell_quote(const char *arg)
{
    gboolean plain = arg[0] != '\0';
    for (const char *p = arg; *p; p++)
        if (!g_ascii_isalnum(*p) && strchr("_-./+,:=@%", *p) == NULL)
            plain = FALSE;
    return plain ? g_strdup(arg) : g_shell_quote(arg);
}

char *
sim_cli_replay_command(const char *path, guint64 seed)
{
    char *q = sim_cli_shell_quote(path);
    char *cmd = g_strdup_printf("rpcsim replay %s --seed %" G_GUINT64_FORMAT, q, seed);
    g_free(q);
    return cmd;
}

char *
sim_cli_fired_text(const GPtrArray *fired)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; fired && i < fired->len; i++) {
        const char *f = g_ptr_array_index(fired, i);
        const char *eq = strchr(f, '=');
        if (eq != NULL && strcmp(eq + 1, "0") == 0)
            continue;
        if (s->len)
            g_string_append_c(s, ' ');
        g_string_append(s, f);
    }
    return g_string_free(s, FALSE);
}

void
sim_cli_print_indented(FILE *f, const char *indent, const char *text)
{
    const char *p = text;
    gboolean first = TRUE;
    do {
        const char *nl = strchr(p, '\n');
        gsize n = nl ? (gsize)(nl - p) : strlen(p);
        fprintf(f, "%s%s%.*s\n", indent, first ? "" : "  ", (int)n, p);
        first = FALSE;
        p = nl ? nl + 1 : NULL;
    } while (p && *p);
}

void
sim_cli_print_summary(FILE *f, const char *path, const SimRunReport *r)
{
    char t[SIM_TIME_FORMAT_LEN];
    char *fired = sim_cli_fired_text(r->fired);
    fprintf(f,
            "%s seed=%" G_GUINT64_FORMAT " %s time=%ss events=%" G_GUINT64_FORMAT
            " messages=%" G_GUINT64_FORMAT " faults=%" G_GUINT64_FORMAT
            "%s%s%s fp=%016" G_GINT64_MODIFIER "x\n",
            path, r->seed, r->passed ? "PASS" : "FAIL", sim_time_format(r->end_time, t, sizeof t),
            r->events, r->messages, r->faults_fired, fired[0] ? " [" : "", fired,
            fired[0] ? "]" : "", r->fingerprint);
    g_free(fired);
    if (r->passed)
        return;
    for (guint i = 0; i < r->failures->len; i++)
        sim_cli_print_indented(f, "  ", g_ptr_array_index(r->failures, i));
    char *cmd = sim_cli_replay_command(path, r->seed);
    fprintf(f, "  reproduce: %s\n", cmd);
    g_free(cmd);
}
