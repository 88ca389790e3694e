/* cli-sweep.c — `rpcsim sweep`: every (file, seed) pair, in worker processes.
 *
 * Numbering.  Pairs are numbered file-major, g = file × n_seeds +
 * (seed − first).  A shard I/N keeps the pairs with g % N == I − 1, and the
 * kept pairs are numbered q = 0, 1, … in g order, so shards 1/N … N/N of one
 * sweep partition it exactly, whatever machine runs them.  Worker process k
 * of j runs q = k, k + j, k + 2j, … in that order: its share is a pure
 * function of (k, j), so the parent always knows which pair a process owes
 * next.  When a process dies without reporting a pair (a signal, an abort in
 * the interpreter), that pair is reported as an internal error — with the
 * signal and the process's last lines of standard error — and a replacement
 * process resumes at the pair after it; nothing is silently skipped.
 *
 * Pipe protocol (child → parent), one line per run, tab-separated:
 *
 *     q  P|F  fingerprint(16 hex)  end_time_ns  events  messages  faults  fired  failure…
 *
 * fired is the run summary's "fail=3 delay=2" (possibly empty); each failure
 * is one field, with '\\', tab, newline and CR escaped as \\ \t \n \r.  A
 * child's standard output and error are redirected into a second pipe, which
 * the parent relays (after clearing its progress line) and keeps the tail of
 * for crash reports: children never write to the parent's streams.
 *
 * Determinism of the output.  Everything on standard output is a function of
 * the results alone, so -j 1 and -j 8 print the same bytes: TAP lines are
 * released in q order through a reorder buffer (bounded by how far the
 * processes drift apart), the table lists the smallest failing seeds, JUnit
 * testcases are sorted.  Wall-clock figures (runs/s, ETA, elapsed time) go
 * to standard error only, from cli-clock.c.
 */
#include "sim/cli-common.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sim/cli-clock.h"

#define FIRST_FAILS 5      /* failing seeds listed per file */
#define STDERR_TAIL 8      /* lines of a child's stderr kept for its crash report */
#define PROGRESS_US 100000 /* redraw the progress line at most 10 times a second */
#define MAX_JOBS    1024

typedef struct {
    guint64 q;
    guint file;
    guint64 seed;
    char status; /* 'P' passed, 'F' failed, 'E' internal error (the process died) */
    guint64 fingerprint;
    SimTime end_time;
    guint64 events, messages, faults;
    char *fired;
    GPtrArray *failures; /* char* */
} Result;

typedef struct {
    guint64 runs, passed, failed, errors;
    guint n_first;
    guint64 first_seed[FIRST_FAILS]; /* the smallest failing seeds, ascending */
    char *first_text[FIRST_FAILS];   /* their first failure */
} FileStats;

typedef struct {
    guint k;
    pid_t pid;  /* 0: not running */
    int out_fd; /* results; -1 once closed */
    int err_fd; /* the child's stdout + stderr; -1 once closed */
    GString *out_buf, *err_buf;
    GQueue *err_tail; /* char*: the last STDERR_TAIL lines */
    guint64 next_q;   /* the next pair it owes a result for; >= n_kept: none */
} Child;

typedef struct {
    /* the plan */
    char **paths;
    ScScenario **sc;
    guint n_files;
    SimCliSeeds seeds;
    guint64 n_seeds;
    guint64 shard_i, shard_n; /* 1-based I of N */
    guint64 n_kept;
    guint jobs; /* processes actually used: <= n_kept */
    gboolean tap, fail_fast, quiet, progress;
    const char *junit_path;
    /* the state */
    Child *children;
    FileStats *stats;
    guint64 done, n_failed, n_errors;
    gboolean stopping;       /* --fail-fast fired: children are being killed */
    gboolean internal_error; /* an error not attached to a pair */
    GHashTable *pending;     /* TAP reorder buffer: &q → Result* */
    guint64 next_tap;        /* the q TAP prints next */
    guint64 tap_n;           /* TAP lines printed */
    GPtrArray **junit;       /* per file: Result* kept for the XML; NULL without --junit */
    gint64 start_us, last_draw_us;
    gboolean progress_shown;
} Sweep;

static void
result_free(gpointer p)
{
    Result *r = p;
    if (r == NULL)
        return;
    g_free(r->fired);
    g_ptr_array_unref(r->failures);
    g_free(r);
}

static void
pair_of(const Sweep *s, guint64 q, guint *file, guint64 *seed)
{
    guint64 g = q * s->shard_n + (s->shard_i - 1);
    *file = (guint)(g / s->n_seeds);
    *seed = s->seeds.first + g % s->n_seeds;
}

/* q's successor in one process's share, or n_kept past the end. */
static guint64
next_in_share(const Sweep *s, guint64 q)
{
    return s->n_kept - q <= s->jobs ? s->n_kept : q + s->jobs;
}

/* --- the child ---------------------------------------------------------------------- */

static void
escape_field(GString *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            g_string_append(out, "\\\\");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        default:
            g_string_append_c(out, *s);
        }
    }
}

static char *
unescape_field(const char *s)
{
    GString *out = g_string_sized_new(strlen(s));
    for (; *s; s++) {
        if (*s != '\\' || s[1] == '\0') {
            g_string_append_c(out, *s);
            continue;
        }
        s++;
        g_string_append_c(out, *s == 't' ? '\t' : *s == 'n' ? '\n' : *s == 'r' ? '\r' : *s);
    }
    return g_string_free(out, FALSE);
}

static gboolean
write_all(int fd, const char *p, gsize n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return FALSE;
        p += w;
        n -= (gsize)w;
    }
    return TRUE;
}

/* Runs this process's share from q on and exits; never returns.
 *
 * Test hook: with RPCSIM_TEST_CRASH_SEED=N in the environment the process
 * aborts instead of running seed N, so tests/test-cli.sh can check that a
 * crash is reported as an internal error and the sweep carries on. */
static void G_GNUC_NORETURN
child_main(const Sweep *s, guint64 q, int fd)
{
    GString *line = g_string_new(NULL);
    const char *crash_text = g_getenv("RPCSIM_TEST_CRASH_SEED");
    guint64 crash_seed = 0;
    gboolean crash = crash_text && sim_cli_parse_seed(crash_text, &crash_seed, NULL);
    for (; q < s->n_kept; q = next_in_share(s, q)) {
        guint file;
        guint64 seed;
        pair_of(s, q, &file, &seed);
        if (crash && seed == crash_seed) {
            fprintf(stderr, "RPCSIM_TEST_CRASH_SEED=%" G_GUINT64_FORMAT ": aborting\n", seed);
            abort();
        }
        SimRunOptions opt;
        sim_run_options_init(&opt, seed);
        SimRunReport *r = sim_scenario_run(s->sc[file], &opt);
        if (r == NULL)
            _exit(SIM_CLI_EXIT_INTERNAL);
        char *fired = sim_cli_fired_text(r->fired);
        g_string_printf(line,
                        "%" G_GUINT64_FORMAT "\t%c\t%016" G_GINT64_MODIFIER "x\t%" G_GINT64_FORMAT
                        "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%" G_GUINT64_FORMAT "\t%s",
                        q, r->passed ? 'P' : 'F', r->fingerprint, r->end_time, r->events,
                        r->messages, r->faults_fired, fired);
        g_free(fired);
        for (guint i = 0; i < r->failures->len; i++) {
            g_string_append_c(line, '\t');
            escape_field(line, g_ptr_array_index(r->failures, i));
        }
        g_string_append_c(line, '\n');
        sim_run_report_free(r);
        if (!write_all(fd, line->str, line->len))
            _exit(SIM_CLI_EXIT_INTERNAL);
    }
    g_string_free(line, TRUE);
    /* _exit: the parent's stdio buffers (flushed before fork) and atexit
     * handlers belong to the parent. */
    _exit(0);
}

/* --- the parent: output ------------------------------------------------------------- */

static void
clear_progress(Sweep *s)
{
    if (!s->progress_shown)
        return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    s->progress_shown = FALSE;
}

static void
format_duration(char *buf, gsize len, double secs)
{
    if (secs < 60)
        g_snprintf(buf, len, "%.0fs", secs);
    else if (secs < 3600)
        g_snprintf(buf, len, "%dm%02ds", (int)secs / 60, (int)secs % 60);
    else
        g_snprintf(buf, len, "%dh%02dm", (int)(secs / 3600), ((int)secs % 3600) / 60);
}

/* Wall clock, on purpose: how fast this machine sweeps (see cli-clock.h). */
static void
draw_progress(Sweep *s, gboolean force)
{
    if (!s->progress)
        return;
    gint64 now = sim_cli_clock_now_us();
    if (!force && now - s->last_draw_us < PROGRESS_US)
        return;
    s->last_draw_us = now;
    double elapsed = (double)(now - s->start_us) / 1e6;
    double rate = elapsed > 0 ? (double)s->done / elapsed : 0;
    char eta[32] = "?";
    if (rate > 0)
        format_duration(eta, sizeof eta, (double)(s->n_kept - s->done) / rate);
    fprintf(stderr,
            "\r\033[Ksweep: %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT " runs, %" G_GUINT64_FORMAT
            " failed, %.0f runs/s, ETA %s",
            s->done, s->n_kept, s->n_failed + s->n_errors, rate, eta);
    fflush(stderr);
    s->progress_shown = TRUE;
}

/* TAP descriptions end at '#' (a directive) or a newline. */
static void
tap_description(GString *out, const char *path)
{
    for (const char *p = path; *p; p++) {
        if (*p == '#')
            g_string_append(out, "\\#");
        else if (*p == '\n' || *p == '\r')
            g_string_append_c(out, ' ');
        else
            g_string_append_c(out, *p);
    }
}

static void
tap_emit(Sweep *s, const Result *r)
{
    GString *line = g_string_new(NULL);
    g_string_printf(line, "%s %" G_GUINT64_FORMAT " - ", r->status == 'P' ? "ok" : "not ok",
                    ++s->tap_n);
    tap_description(line, s->paths[r->file]);
    g_string_append_printf(line, " seed=%" G_GUINT64_FORMAT, r->seed);
    if (r->status == 'E')
        g_string_append(line, " fp=none internal error");
    else
        g_string_append_printf(line, " fp=%016" G_GINT64_MODIFIER "x", r->fingerprint);
    g_string_append_c(line, '\n');
    if (r->status != 'P') {
        const char *first = r->failures->len ? g_ptr_array_index(r->failures, 0) : "failed";
        for (const char *p = first; p;) {
            const char *nl = strchr(p, '\n');
            gsize n = nl ? (gsize)(nl - p) : strlen(p);
            g_string_append(line, "# ");
            g_string_append_len(line, p, (gssize)n);
            g_string_append_c(line, '\n');
            p = nl ? nl + 1 : NULL;
        }
        char *cmd = sim_cli_replay_command(s->paths[r->file], r->seed);
        g_string_append_printf(line, "# reproduce: %s\n", cmd);
        g_free(cmd);
    }
    clear_progress(s);
    fputs(line->str, stdout);
    if (s->progress)
        fflush(stdout);
    g_string_free(line, TRUE);
}

/* Keeps r for the JUnit file, or frees it. */
static void
release(Sweep *s, Result *r)
{
    if (s->junit)
        g_ptr_array_add(s->junit[r->file], r);
    else
        result_free(r);
}

static void
tap_flush_in_order(Sweep *s)
{
    Result *r;
    while ((r = g_hash_table_lookup(s->pending, &s->next_tap)) != NULL) {
        g_hash_table_remove(s->pending, &s->next_tap);
        s->next_tap++;
        tap_emit(s, r);
        release(s, r);
    }
}

static gint
cmp_result_q(gconstpointer a, gconstpointer b)
{
    const Result *x = *(Result *const *)a, *y = *(Result *const *)b;
    return x->q < y->q ? -1 : x->q > y->q;
}

/* After --fail-fast: what arrived beyond a gap, in q order. */
static void
tap_flush_rest(Sweep *s)
{
    GPtrArray *rest = g_ptr_array_new();
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, s->pending);
    while (g_hash_table_iter_next(&it, NULL, &v))
        g_ptr_array_add(rest, v);
    g_hash_table_steal_all(s->pending);
    g_ptr_array_sort(rest, cmp_result_q);
    for (guint i = 0; i < rest->len; i++) {
        tap_emit(s, g_ptr_array_index(rest, i));
        release(s, g_ptr_array_index(rest, i));
    }
    g_ptr_array_unref(rest);
}

static void
note_failing_seed(FileStats *fs, const Result *r)
{
    guint i = fs->n_first;
    while (i > 0 && fs->first_seed[i - 1] > r->seed)
        i--;
    if (i >= FIRST_FAILS)
        return;
    if (fs->n_first == FIRST_FAILS) {
        g_free(fs->first_text[FIRST_FAILS - 1]);
        fs->n_first--;
    }
    memmove(&fs->first_seed[i + 1], &fs->first_seed[i], (fs->n_first - i) * sizeof(guint64));
    memmove(&fs->first_text[i + 1], &fs->first_text[i], (fs->n_first - i) * sizeof(char *));
    fs->first_seed[i] = r->seed;
    fs->first_text[i] = g_strdup(r->failures->len ? g_ptr_array_index(r->failures, 0) : "failed");
    fs->n_first++;
}

static void
stop_all(Sweep *s)
{
    s->stopping = TRUE;
    for (guint k = 0; k < s->jobs; k++)
        if (s->children[k].pid > 0)
            kill(s->children[k].pid, SIGTERM);
}

/* Takes r (transfer full); c is the process that owed it. */
static void
handle_result(Sweep *s, Child *c, Result *r)
{
    c->next_q = next_in_share(s, c->next_q);
    pair_of(s, r->q, &r->file, &r->seed);
    FileStats *fs = &s->stats[r->file];
    s->done++;
    fs->runs++;
    if (r->status == 'P') {
        fs->passed++;
    } else {
        if (r->status == 'F') {
            fs->failed++;
            s->n_failed++;
        } else {
            fs->errors++;
            s->n_errors++;
        }
        note_failing_seed(fs, r);
    }
    gboolean stop = r->status != 'P' && s->fail_fast && !s->stopping;
    if (s->tap) {
        g_hash_table_insert(s->pending, &r->q, r);
        tap_flush_in_order(s);
    } else {
        release(s, r);
    }
    if (stop)
        stop_all(s);
}

static Result *
parse_result(const char *line)
{
    char **f = g_strsplit(line, "\t", -1);
    Result *r = NULL;
    if (g_strv_length(f) < 8 || (f[1][0] != 'P' && f[1][0] != 'F'))
        goto out;
    r = g_new0(Result, 1);
    r->q = g_ascii_strtoull(f[0], NULL, 10);
    r->status = f[1][0];
    r->fingerprint = g_ascii_strtoull(f[2], NULL, 16);
    r->end_time = g_ascii_strtoll(f[3], NULL, 10);
    r->events = g_ascii_strtoull(f[4], NULL, 10);
    r->messages = g_ascii_strtoull(f[5], NULL, 10);
    r->faults = g_ascii_strtoull(f[6], NULL, 10);
    r->fired = g_strdup(f[7]);
    r->failures = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 8; f[i]; i++)
        g_ptr_array_add(r->failures, unescape_field(f[i]));
out:
    g_strfreev(f);
    return r;
}

static void
on_result_line(Sweep *s, Child *c, const char *line)
{
    Result *r = parse_result(line);
    if (r == NULL || r->q != c->next_q) {
        clear_progress(s);
        fprintf(stderr, "rpcsim sweep: internal error: process %u sent an unexpected record: %s\n",
                c->k, line);
        s->internal_error = TRUE;
        result_free(r);
        return;
    }
    handle_result(s, c, r);
}

static void
on_stderr_line(Sweep *s, Child *c, const char *line)
{
    clear_progress(s);
    fprintf(stderr, "rpcsim sweep: [process %u] %s\n", c->k, line);
    g_queue_push_tail(c->err_tail, g_strdup(line));
    if (g_queue_get_length(c->err_tail) > STDERR_TAIL)
        g_free(g_queue_pop_head(c->err_tail));
}

/* Reads what fd has; FALSE at end of file. */
static gboolean
read_some(int fd, GString *buf)
{
    char chunk[65536];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return FALSE;
        g_string_append_len(buf, chunk, n);
        return TRUE;
    }
}

static void
drain_lines(Sweep *s, Child *c, GString *buf, gboolean is_result)
{
    gsize start = 0;
    char *nl;
    while ((nl = memchr(buf->str + start, '\n', buf->len - start)) != NULL) {
        *nl = '\0';
        if (is_result)
            on_result_line(s, c, buf->str + start);
        else
            on_stderr_line(s, c, buf->str + start);
        start = (gsize)(nl - buf->str) + 1;
    }
    g_string_erase(buf, 0, (gssize)start);
}

/* --- the parent: processes -------------------------------------------------------------- */

static gboolean
child_spawn(Sweep *s, Child *c)
{
    int out[2], err[2];
    if (pipe(out) < 0)
        goto fail;
    if (pipe(err) < 0) {
        close(out[0]);
        close(out[1]);
        goto fail;
    }
    /* The child must not flush what the parent has buffered. */
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        close(err[0]);
        close(err[1]);
        goto fail;
    }
    if (pid == 0) {
        close(out[0]);
        close(err[0]);
        for (guint k = 0; k < s->jobs; k++) {
            if (s->children[k].out_fd >= 0)
                close(s->children[k].out_fd);
            if (s->children[k].err_fd >= 0)
                close(s->children[k].err_fd);
        }
        dup2(err[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        close(err[1]);
        child_main(s, c->next_q, out[1]);
    }
    close(out[1]);
    close(err[1]);
    c->pid = pid;
    c->out_fd = out[0];
    c->err_fd = err[0];
    g_string_truncate(c->out_buf, 0);
    g_string_truncate(c->err_buf, 0);
    g_queue_clear_full(c->err_tail, g_free);
    return TRUE;
fail:
    clear_progress(s);
    fprintf(stderr, "rpcsim sweep: cannot start a worker process: %s\n", g_strerror(errno));
    s->internal_error = TRUE;
    return FALSE;
}

static char *
describe_status(int status)
{
    if (WIFSIGNALED(status))
        return g_strdup_printf("was killed by signal %d (%s)", WTERMSIG(status),
                               g_strsignal(WTERMSIG(status)));
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
        return g_strdup_printf("exited with status %d", WEXITSTATUS(status));
    return g_strdup("exited before reporting it");
}

/* The process ended (both pipes closed): account for what it owed. */
static void
child_reap(Sweep *s, Child *c)
{
    int status = 0;
    while (waitpid(c->pid, &status, 0) < 0 && errno == EINTR)
        ;
    c->pid = 0;
    if (s->stopping)
        return; /* killed by stop_all */
    gboolean clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (clean && c->next_q >= s->n_kept)
        return;
    char *why = describe_status(status);
    if (c->next_q >= s->n_kept) {
        clear_progress(s);
        fprintf(stderr, "rpcsim sweep: internal error: worker process %u %s after its last run\n",
                c->k, why);
        s->internal_error = TRUE;
        g_free(why);
        return;
    }
    Result *r = g_new0(Result, 1);
    r->q = c->next_q;
    r->status = 'E';
    r->fired = g_strdup("");
    r->failures = g_ptr_array_new_with_free_func(g_free);
    guint file;
    guint64 seed;
    pair_of(s, r->q, &file, &seed);
    GString *msg = g_string_new(NULL);
    g_string_printf(msg, "%s: internal error: the process running seed %" G_GUINT64_FORMAT " %s",
                    s->paths[file], seed, why);
    if (!g_queue_is_empty(c->err_tail))
        g_string_append(msg, "; its last output:");
    for (GList *l = c->err_tail->head; l; l = l->next)
        g_string_append_printf(msg, "\n%s", (char *)l->data);
    g_ptr_array_add(r->failures, g_string_free(msg, FALSE));
    g_free(why);
    handle_result(s, c, r);
    if (!s->stopping && c->next_q < s->n_kept)
        child_spawn(s, c);
}

static void
sweep_loop(Sweep *s)
{
    guint live = 0;
    for (guint k = 0; k < s->jobs; k++)
        live += child_spawn(s, &s->children[k]);
    GArray *pfds = g_array_new(FALSE, FALSE, sizeof(struct pollfd));
    GArray *owner = g_array_new(FALSE, FALSE, sizeof(guint)); /* k × 2 + (1 for err) */
    while (live > 0) {
        g_array_set_size(pfds, 0);
        g_array_set_size(owner, 0);
        for (guint k = 0; k < s->jobs; k++) {
            Child *c = &s->children[k];
            int fds[2] = {c->out_fd, c->err_fd};
            for (guint w = 0; w < 2; w++) {
                if (fds[w] < 0)
                    continue;
                struct pollfd p = {.fd = fds[w], .events = POLLIN};
                guint o = k * 2 + w;
                g_array_append_val(pfds, p);
                g_array_append_val(owner, o);
            }
        }
        int n = poll((struct pollfd *)pfds->data, pfds->len, s->progress ? PROGRESS_US / 1000 : -1);
        if (n < 0 && errno != EINTR) {
            clear_progress(s);
            fprintf(stderr, "rpcsim sweep: poll: %s\n", g_strerror(errno));
            s->internal_error = TRUE;
            stop_all(s);
            break;
        }
        for (guint i = 0; n > 0 && i < pfds->len; i++) {
            struct pollfd *p = &g_array_index(pfds, struct pollfd, i);
            if (p->revents == 0)
                continue;
            guint o = g_array_index(owner, guint, i);
            Child *c = &s->children[o / 2];
            gboolean is_result = o % 2 == 0;
            GString *buf = is_result ? c->out_buf : c->err_buf;
            int *fd = is_result ? &c->out_fd : &c->err_fd;
            gboolean more = read_some(*fd, buf);
            drain_lines(s, c, buf, is_result);
            if (!more) {
                /* A partial last record (the process died mid-write) is
                 * dropped: that pair is reported by child_reap. */
                if (!is_result && buf->len > 0) {
                    on_stderr_line(s, c, buf->str);
                    g_string_truncate(buf, 0);
                }
                close(*fd);
                *fd = -1;
            }
        }
        for (guint k = 0; k < s->jobs; k++) {
            Child *c = &s->children[k];
            if (c->pid > 0 && c->out_fd < 0 && c->err_fd < 0) {
                child_reap(s, c);
                live -= c->pid == 0;
            }
        }
        draw_progress(s, FALSE);
    }
    /* After a poll failure: reap what was started (killed above). */
    for (guint k = 0; k < s->jobs; k++) {
        Child *c = &s->children[k];
        if (c->out_fd >= 0)
            close(c->out_fd);
        if (c->err_fd >= 0)
            close(c->err_fd);
        c->out_fd = c->err_fd = -1;
        if (c->pid > 0)
            while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        c->pid = 0;
    }
    g_array_unref(pfds);
    g_array_unref(owner);
}

/* --- reports -------------------------------------------------------------------------- */

static void
print_table(Sweep *s, FILE *f)
{
    int w = 4;
    for (guint i = 0; i < s->n_files; i++)
        w = MAX(w, (int)strlen(s->paths[i]));
    fprintf(f, "sweep: seeds %" G_GUINT64_FORMAT "..%" G_GUINT64_FORMAT, s->seeds.first,
            s->seeds.last);
    if (s->shard_n > 1)
        fprintf(f, ", shard %" G_GUINT64_FORMAT "/%" G_GUINT64_FORMAT, s->shard_i, s->shard_n);
    fprintf(f, ": %" G_GUINT64_FORMAT " run%s in %u file%s\n", s->n_kept, s->n_kept == 1 ? "" : "s",
            s->n_files, s->n_files == 1 ? "" : "s");
    fprintf(f, "%-*s %10s %10s %10s %10s\n", w, "FILE", "RUNS", "PASSED", "FAILED", "ERRORS");
    for (guint i = 0; i < s->n_files; i++) {
        FileStats *fs = &s->stats[i];
        if (s->quiet && fs->failed + fs->errors == 0)
            continue;
        fprintf(f,
                "%-*s %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT
                " %10" G_GUINT64_FORMAT "\n",
                w, s->paths[i], fs->runs, fs->passed, fs->failed, fs->errors);
    }
    fprintf(f,
            "%-*s %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT " %10" G_GUINT64_FORMAT
            " %10" G_GUINT64_FORMAT "\n",
            w, "total", s->done, s->done - s->n_failed - s->n_errors, s->n_failed, s->n_errors);
    for (guint i = 0; i < s->n_files; i++) {
        FileStats *fs = &s->stats[i];
        if (fs->n_first == 0)
            continue;
        guint64 bad = fs->failed + fs->errors;
        if (bad > fs->n_first)
            fprintf(f, "\n%s: %" G_GUINT64_FORMAT " failing seeds, the first %u:\n", s->paths[i],
                    bad, fs->n_first);
        else
            fprintf(f, "\n%s: %" G_GUINT64_FORMAT " failing seed%s:\n", s->paths[i], bad,
                    bad == 1 ? "" : "s");
        for (guint j = 0; j < fs->n_first; j++) {
            char *cmd = sim_cli_replay_command(s->paths[i], fs->first_seed[j]);
            fprintf(f, "  seed %" G_GUINT64_FORMAT ": %s\n", fs->first_seed[j], cmd);
            sim_cli_print_indented(f, "    ", fs->first_text[j]);
            g_free(cmd);
        }
    }
    if (s->stopping)
        fprintf(f,
                "\nstopped after the first failure (--fail-fast): %" G_GUINT64_FORMAT
                " of %" G_GUINT64_FORMAT " runs done\n",
                s->done, s->n_kept);
}

/* XML 1.0 text: markup characters as entities, newlines and tabs kept in
 * text but as character references in attributes (attribute values are
 * normalised), other control characters and invalid UTF-8 replaced. */
static void
xml_escape(GString *out, const char *s, gboolean attr)
{
    char *valid = g_utf8_make_valid(s, -1);
    for (const char *p = valid; *p; p = g_utf8_next_char(p)) {
        gunichar c = g_utf8_get_char(p);
        switch (c) {
        case '&':
            g_string_append(out, "&amp;");
            break;
        case '<':
            g_string_append(out, "&lt;");
            break;
        case '>':
            g_string_append(out, "&gt;");
            break;
        case '"':
            g_string_append(out, attr ? "&quot;" : "\"");
            break;
        case '\'':
            g_string_append(out, attr ? "&apos;" : "'");
            break;
        case '\n':
            g_string_append(out, attr ? "&#10;" : "\n");
            break;
        case '\t':
            g_string_append(out, attr ? "&#9;" : "\t");
            break;
        case '\r':
            g_string_append(out, "&#13;");
            break;
        default:
            if (c < 0x20 || c == 0xfffe || c == 0xffff)
                g_string_append_printf(out, "\\x%02x", c & 0xff);
            else
                g_string_append_unichar(out, c);
        }
    }
    g_free(valid);
}

static gboolean
write_junit(Sweep *s, GError **error)
{
    GString *x = g_string_new("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    g_string_append_printf(x,
                           "<testsuites name=\"rpcsim sweep\" tests=\"%" G_GUINT64_FORMAT
                           "\" failures=\"%" G_GUINT64_FORMAT "\" errors=\"%" G_GUINT64_FORMAT
                           "\">\n",
                           s->done, s->n_failed, s->n_errors);
    for (guint i = 0; i < s->n_files; i++) {
        FileStats *fs = &s->stats[i];
        GPtrArray *rs = s->junit[i];
        g_ptr_array_sort(rs, cmp_result_q);
        g_string_append(x, "  <testsuite name=\"");
        xml_escape(x, s->paths[i], TRUE);
        g_string_append_printf(x,
                               "\" tests=\"%" G_GUINT64_FORMAT "\" failures=\"%" G_GUINT64_FORMAT
                               "\" errors=\"%" G_GUINT64_FORMAT "\" skipped=\"0\">\n",
                               fs->runs, fs->failed, fs->errors);
        for (guint j = 0; j < rs->len; j++) {
            const Result *r = g_ptr_array_index(rs, j);
            g_string_append(x, "    <testcase classname=\"");
            xml_escape(x, s->paths[i], TRUE);
            g_string_append_printf(x, "\" name=\"seed=%" G_GUINT64_FORMAT "\">\n", r->seed);
            if (r->status != 'P') {
                const char *tag = r->status == 'F' ? "failure" : "error";
                g_string_append_printf(x, "      <%s message=\"", tag);
                xml_escape(x, r->failures->len ? g_ptr_array_index(r->failures, 0) : "failed",
                           TRUE);
                g_string_append_printf(x, "\" type=\"%s\">",
                                       r->status == 'F' ? "ScenarioFailure" : "InternalError");
                for (guint k = 0; k < r->failures->len; k++) {
                    xml_escape(x, g_ptr_array_index(r->failures, k), FALSE);
                    g_string_append_c(x, '\n');
                }
                char *cmd = sim_cli_replay_command(s->paths[i], r->seed);
                g_string_append(x, "reproduce: ");
                xml_escape(x, cmd, FALSE);
                g_free(cmd);
                g_string_append_printf(x, "</%s>\n", tag);
            }
            if (r->status != 'E') {
                char t[SIM_TIME_FORMAT_LEN];
                g_string_append_printf(x,
                                       "      <system-out>time=%ss events=%" G_GUINT64_FORMAT
                                       " messages=%" G_GUINT64_FORMAT " faults=%" G_GUINT64_FORMAT,
                                       sim_time_format(r->end_time, t, sizeof t), r->events,
                                       r->messages, r->faults);
                if (r->fired[0]) {
                    g_string_append(x, " [");
                    xml_escape(x, r->fired, FALSE);
                    g_string_append_c(x, ']');
                }
                g_string_append_printf(x, " fp=%016" G_GINT64_MODIFIER "x</system-out>\n",
                                       r->fingerprint);
            }
            g_string_append(x, "    </testcase>\n");
        }
        g_string_append(x, "  </testsuite>\n");
    }
    g_string_append(x, "</testsuites>\n");
    gboolean ok = g_file_set_contents(s->junit_path, x->str, (gssize)x->len, error);
    g_string_free(x, TRUE);
    return ok;
}

/* --- options -------------------------------------------------------------------------- */

static const char sweep_summary[] =
    "Runs every (FILE, seed) pair of --seeds A..B in -j worker processes and\n"
    "reports per file: runs, passed, failed, internal errors, and the first failing\n"
    "seeds with the command that replays each.  Pairs are numbered file by file,\n"
    "seed by seed; --shard I/N keeps the pairs whose number % N == I-1, so N CI\n"
    "jobs (or a cluster job array) split one sweep exactly.  A worker process that\n"
    "dies (a signal, an abort) is reported as an internal error for the seed it\n"
    "was running, and a new process carries on with the next ones.\n"
    "\n"
    "On a terminal a progress line (done/total, failures, runs/s, ETA) is drawn on\n"
    "standard error.  The table goes to standard output, or to standard error with\n"
    "--tap.  Output does not depend on -j: TAP lines come in pair order.";

static const char sweep_examples[] =
    "Examples:\n"
    "  rpcsim sweep scenarios/faults/*.rpcs --seeds 0..999\n"
    "  rpcsim sweep x.rpcs --seeds 0..9999 -j 8 --fail-fast\n"
    "  rpcsim sweep x.rpcs --seeds 0..99999 --shard 3/16 --junit shard3.xml\n"
    "  rpcsim sweep x.rpcs --seeds 0..99 --tap | tappy\n"
    "\n"
    "Exit status: 0 all passed, 1 a run failed, 2 bad input, 3 internal error\n"
    "(a worker process crashed).";

static gboolean
parse_count(const char *text, guint64 *out)
{
    for (const char *p = text; *p; p++)
        if (!g_ascii_isdigit(*p))
            return FALSE;
    return *text && g_ascii_string_to_unsigned(text, 10, 1, G_MAXUINT64, out, NULL);
}

static gboolean
parse_shard(const char *text, guint64 *i, guint64 *n)
{
    const char *slash = strchr(text, '/');
    if (slash == NULL)
        return FALSE;
    char *a = g_strndup(text, (gsize)(slash - text));
    gboolean ok = parse_count(a, i) && parse_count(slash + 1, n) && *i <= *n;
    g_free(a);
    return ok;
}

static void
sweep_clear(Sweep *s)
{
    for (guint i = 0; s->sc && i < s->n_files; i++)
        sim_scenario_free(s->sc[i]);
    g_free(s->sc);
    for (guint i = 0; s->stats && i < s->n_files; i++)
        for (guint j = 0; j < s->stats[i].n_first; j++)
            g_free(s->stats[i].first_text[j]);
    g_free(s->stats);
    for (guint i = 0; s->junit && i < s->n_files; i++)
        g_ptr_array_unref(s->junit[i]);
    g_free(s->junit);
    for (guint k = 0; s->children && k < s->jobs; k++) {
        g_string_free(s->children[k].out_buf, TRUE);
        g_string_free(s->children[k].err_buf, TRUE);
        g_queue_free_full(s->children[k].err_tail, g_free);
    }
    g_free(s->children);
    if (s->pending)
        g_hash_table_unref(s->pending);
}

int
sim_cli_sweep_main(int argc, char **argv)
{
    char *seeds_text = NULL, *shard_text = NULL, *junit_path = NULL;
    gint jobs = (gint)g_get_num_processors();
    gboolean tap = FALSE, junit = FALSE, fail_fast = FALSE, quiet = FALSE;
    char **files = NULL;
    GOptionEntry entries[] = {
        {"seeds", 's', 0, G_OPTION_ARG_STRING, &seeds_text,
         "The seeds, inclusive: A..B or one seed (required)", "A..B"},
        {"jobs", 'j', 0, G_OPTION_ARG_INT, &jobs,
         "Worker processes to run in parallel (default: the number of CPUs)", "N"},
        {"shard", 0, 0, G_OPTION_ARG_STRING, &shard_text,
         "Run only shard I of N (1-based): the pairs whose number % N == I-1", "I/N"},
        {"tap", 0, 0, G_OPTION_ARG_NONE, &tap,
         "Print TAP on standard output: \"ok 1 - FILE seed=N fp=...\", the first failure as a "
         "diagnostic",
         NULL},
        {"junit", 0, 0, G_OPTION_ARG_FILENAME, &junit_path,
         "Write JUnit XML to FILE: a testsuite per file, a testcase per seed", "FILE"},
        {"fail-fast", 0, 0, G_OPTION_ARG_NONE, &fail_fast,
         "Stop at the first failing run (which one depends on timing with -j > 1)", NULL},
        {"quiet", 'q', 0, G_OPTION_ARG_NONE, &quiet,
         "No progress line; list only the files that have failures", NULL},
        {G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_FILENAME_ARRAY, &files, NULL, NULL},
        {NULL, 0, 0, 0, NULL, NULL, NULL},
    };
    GOptionContext *ctx =
        sim_cli_option_context("sweep", "FILE... --seeds A..B", sweep_summary, sweep_examples);
    g_option_context_add_main_entries(ctx, entries, NULL);
    int rc = SIM_CLI_EXIT_OK;
    Sweep s = {0};
    GError *err = NULL;

    if (!sim_cli_parse_options(ctx, "sweep", &argc, &argv)) {
        rc = SIM_CLI_EXIT_BAD_INPUT;
        goto out_options;
    }
    junit = junit_path != NULL;
    if (files == NULL || files[0] == NULL) {
        rc = sim_cli_usage_error("sweep", "no scenario FILE given");
        goto out_options;
    }
    if (seeds_text == NULL) {
        rc = sim_cli_usage_error("sweep", "--seeds A..B is required");
        goto out_options;
    }
    if (!sim_cli_parse_seeds(seeds_text, &s.seeds, &err)) {
        rc = sim_cli_usage_error("sweep", "%s", err->message);
        g_error_free(err);
        goto out_options;
    }
    if (jobs < 1 || jobs > MAX_JOBS) {
        rc = sim_cli_usage_error("sweep", "-j must be between 1 and %d, not %d", MAX_JOBS, jobs);
        goto out_options;
    }
    s.shard_i = s.shard_n = 1;
    if (shard_text && !parse_shard(shard_text, &s.shard_i, &s.shard_n)) {
        rc = sim_cli_usage_error("sweep", "invalid --shard '%s': expected I/N with 1 <= I <= N",
                                 shard_text);
        goto out_options;
    }
    s.paths = files;
    s.n_files = g_strv_length(files);
    if (s.seeds.last - s.seeds.first == G_MAXUINT64 ||
        (s.n_seeds = s.seeds.last - s.seeds.first + 1) > G_MAXUINT64 / s.n_files) {
        rc = sim_cli_usage_error("sweep", "too many runs: %u files × seeds %s", s.n_files,
                                 seeds_text);
        goto out_options;
    }
    guint64 total = s.n_seeds * s.n_files;
    s.n_kept = total / s.shard_n + (total % s.shard_n > s.shard_i - 1);

    /* Every file parses before anything runs: a typo should not cost a sweep. */
    s.sc = g_new0(ScScenario *, s.n_files);
    for (guint i = 0; i < s.n_files; i++)
        if ((s.sc[i] = sim_cli_load(files[i])) == NULL)
            rc = SIM_CLI_EXIT_BAD_INPUT;
    if (rc != SIM_CLI_EXIT_OK)
        goto out_sweep;

    s.jobs = (guint)MIN((guint64)jobs, MAX(s.n_kept, 1));
    s.tap = tap;
    s.fail_fast = fail_fast;
    s.quiet = quiet;
    s.progress = !quiet && isatty(STDERR_FILENO);
    s.junit_path = junit_path;
    s.stats = g_new0(FileStats, s.n_files);
    s.children = g_new0(Child, s.jobs);
    for (guint k = 0; k < s.jobs; k++) {
        Child *c = &s.children[k];
        c->k = k;
        c->out_fd = c->err_fd = -1;
        c->out_buf = g_string_new(NULL);
        c->err_buf = g_string_new(NULL);
        c->err_tail = g_queue_new();
        c->next_q = k;
    }
    s.pending = g_hash_table_new(g_int64_hash, g_int64_equal);
    if (junit) {
        s.junit = g_new0(GPtrArray *, s.n_files);
        for (guint i = 0; i < s.n_files; i++)
            s.junit[i] = g_ptr_array_new_with_free_func(result_free);
    }
    /* Plan first, so a harness sees the count before the results; with
     * --fail-fast the count is only known at the end (TAP allows both). */
    if (tap && !fail_fast)
        fprintf(stdout, "1..%" G_GUINT64_FORMAT "\n", s.n_kept);

    s.start_us = sim_cli_clock_now_us();
    if (s.n_kept > 0)
        sweep_loop(&s);
    clear_progress(&s);
    if (tap) {
        tap_flush_rest(&s);
        if (fail_fast)
            fprintf(stdout, "1..%" G_GUINT64_FORMAT "\n", s.tap_n);
        fflush(stdout);
    }
    print_table(&s, tap ? stderr : stdout);
    if (!quiet) {
        double secs = (double)(sim_cli_clock_now_us() - s.start_us) / 1e6;
        fprintf(stderr,
                "sweep: %" G_GUINT64_FORMAT " run%s in %.2f s (%.0f runs/s, %u process%s)\n",
                s.done, s.done == 1 ? "" : "s", secs, secs > 0 ? (double)s.done / secs : 0.0,
                s.jobs, s.jobs == 1 ? "" : "es");
    }
    if (junit && !write_junit(&s, &err)) {
        fprintf(stderr, "rpcsim sweep: cannot write %s: %s\n", junit_path, err->message);
        g_clear_error(&err);
        rc = MAX(rc, SIM_CLI_EXIT_BAD_INPUT);
    }
    if (s.n_failed)
        rc = MAX(rc, SIM_CLI_EXIT_FAILED);
    if (s.n_errors || s.internal_error)
        rc = MAX(rc, SIM_CLI_EXIT_INTERNAL);
out_sweep:
    sweep_clear(&s);
out_options:
    g_option_context_free(ctx);
    g_free(seeds_text);
    g_free(shard_text);
    g_free(junit_path);
    g_strfreev(files);
    return rc;
}
