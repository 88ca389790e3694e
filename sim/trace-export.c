/* trace-export.c — text, JSON-lines and Chrome trace-event output.
 *
 * Chrome mapping (https://docs.google.com/document/d/1CvAClvFfyA5R-PhYUmn5OOQtYMH4h6I0nSsKchNAySU):
 *   pid = worker id + 1 (pid 0 is the world), tid = virtual thread id
 *   (0 = the scheduler: network deliveries, timers);
 *   rpc.send … rpc.response/timeout/connection_failed/send_failed
 *       → an async span "rpc <id>" (ph b/e, cat "rpc") on the caller;
 *   rpc.serve … rpc.respond → an async span "serve <id>" on the callee;
 *   net.send → net.deliver → a flow arrow (ph s/f) between 1 µs slices;
 *   fault.*, world.*, net.drop/dup/bounce/hold → instant events (cat "fault");
 *   everything else → thread-scoped instant events.
 * Timestamps are microseconds of virtual time, printed with 3 decimals so
 * nanoseconds survive.  Flow ids are the order of net.send records, matched
 * to deliveries FIFO per (from, to, message id, bytes).
 */
#include "sim/trace-export.h"

#include <string.h>

struct SimTraceExport {
    SimTrace *trace;
    SimTraceFormat format;
    FILE *f;
    gboolean finished;
    gboolean first;       /* chrome: no comma before the first event */
    GHashTable *seen_pid; /* chrome: pids whose metadata was written */
    GHashTable *seen_tid; /* chrome: (pid, tid) keys whose metadata was written */
    GHashTable *flows;    /* chrome: "from/to/id/bytes" → GQueue of flow ids */
    guint64 next_flow;
};

gboolean
sim_trace_format_from_name(const char *name, SimTraceFormat *out)
{
    static const struct {
        const char *name;
        SimTraceFormat f;
    } map[] = {{"text", SIM_TRACE_FORMAT_TEXT},
               {"json", SIM_TRACE_FORMAT_JSON},
               {"chrome", SIM_TRACE_FORMAT_CHROME}};
    for (gsize i = 0; i < G_N_ELEMENTS(map); i++)
        if (name && strcmp(name, map[i].name) == 0) {
            *out = map[i].f;
            return TRUE;
        }
    return FALSE;
}

/* A JSON string.  Valid UTF-8 passes through; a string that is not valid
 * UTF-8 has its bytes >= 0x80 escaped as \u00XX (read as Latin-1), so the
 * document always parses. */
static void
json_string(FILE *f, const char *s)
{
    gboolean utf8 = s == NULL || g_utf8_validate(s, -1, NULL);
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p >= 0x80 && !utf8) {
            fprintf(f, "\\u%04x", *p);
            continue;
        }
        switch (*p) {
        case '"':
            fputs("\\\"", f);
            break;
        case '\\':
            fputs("\\\\", f);
            break;
        case '\n':
            fputs("\\n", f);
            break;
        case '\t':
            fputs("\\t", f);
            break;
        case '\r':
            fputs("\\r", f);
            break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static void
write_json_line(SimTraceExport *e, const SimTraceRecord *r)
{
    FILE *f = e->f;
    fprintf(f, "{\"t_ns\":%" G_GINT64_FORMAT ",\"worker\":%d,\"thread\":%u,\"kind\":", r->time,
            r->worker, r->thread);
    json_string(f, r->kind->name);
    gint64 vals[3] = {r->a, r->b, r->c};
    for (int i = 0; i < 3; i++) {
        if (r->kind->labels[i] == NULL)
            continue;
        fputc(',', f);
        json_string(f, r->kind->labels[i]);
        fprintf(f, ":%" G_GINT64_FORMAT, vals[i]);
    }
    if (r->detail) {
        fputs(",\"detail\":", f);
        json_string(f, r->detail);
    }
    fputs("}\n", f);
}

/* --- chrome ----------------------------------------------------------------- */

static void
chrome_begin_event(SimTraceExport *e)
{
    if (!e->first)
        fputs(",\n", e->f);
    e->first = FALSE;
}

static void
chrome_ts(FILE *f, SimTime t)
{
    /* microseconds with three decimals: exact for integer nanoseconds */
    fprintf(f, "%" G_GINT64_FORMAT ".%03d", t / 1000, (int)(t % 1000));
}

static void
chrome_metadata(SimTraceExport *e, gint pid, guint tid)
{
    if (!g_hash_table_contains(e->seen_pid, GINT_TO_POINTER(pid + 1))) {
        g_hash_table_add(e->seen_pid, GINT_TO_POINTER(pid + 1));
        chrome_begin_event(e);
        char name[32];
        if (pid == 0)
            g_strlcpy(name, "world", sizeof name);
        else
            g_snprintf(name, sizeof name, "worker%d", pid - 1);
        fprintf(e->f,
                "{\"ph\":\"M\",\"name\":\"process_name\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":"
                "\"%s\"}}",
                pid, name);
        chrome_begin_event(e);
        fprintf(e->f,
                "{\"ph\":\"M\",\"name\":\"process_sort_index\",\"pid\":%d,\"tid\":0,\"args\":{"
                "\"sort_index\":%d}}",
                pid, pid);
    }
    gint64 key = ((gint64)pid << 32) | tid;
    gint64 *k = g_new(gint64, 1);
    *k = key;
    if (g_hash_table_contains(e->seen_tid, k)) {
        g_free(k);
        return;
    }
    g_hash_table_add(e->seen_tid, k);
    chrome_begin_event(e);
    char tname[48];
    if (tid == 0)
        g_strlcpy(tname, "scheduler", sizeof tname);
    else if (tid > 100)
        g_snprintf(tname, sizeof tname, "program t%u", tid);
    else
        g_snprintf(tname, sizeof tname, "rpc thread t%u", tid);
    fprintf(
        e->f,
        "{\"ph\":\"M\",\"name\":\"thread_name\",\"pid\":%d,\"tid\":%u,\"args\":{\"name\":\"%s\"}"
        "}",
        pid, tid, tname);
}

/* The common prefix of one event: name, category, phase, time, pid, tid. */
static void
chrome_head(SimTraceExport *e, const SimTraceRecord *r, const char *name, const char *cat,
            const char *ph)
{
    gint pid = r->worker + 1;
    chrome_metadata(e, pid, r->thread);
    chrome_begin_event(e);
    fputs("{\"name\":", e->f);
    json_string(e->f, name);
    fprintf(e->f, ",\"cat\":\"%s\",\"ph\":\"%s\",\"ts\":", cat, ph);
    chrome_ts(e->f, r->time);
    fprintf(e->f, ",\"pid\":%d,\"tid\":%u", pid, r->thread);
}

static void
chrome_args(SimTraceExport *e, const SimTraceRecord *r)
{
    fputs(",\"args\":{", e->f);
    gboolean any = FALSE;
    gint64 vals[3] = {r->a, r->b, r->c};
    for (int i = 0; i < 3; i++) {
        if (r->kind->labels[i] == NULL)
            continue;
        if (any)
            fputc(',', e->f);
        json_string(e->f, r->kind->labels[i]);
        fprintf(e->f, ":%" G_GINT64_FORMAT, vals[i]);
        any = TRUE;
    }
    if (r->detail) {
        if (any)
            fputc(',', e->f);
        fputs("\"detail\":", e->f);
        json_string(e->f, r->detail);
    }
    fputs("}}", e->f);
}

static gboolean
has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static void
chrome_async(SimTraceExport *e, const SimTraceRecord *r, const char *ph, const char *what,
             gint64 id)
{
    char name[64];
    g_snprintf(name, sizeof name, "%s %" G_GINT64_FORMAT, what, id);
    chrome_head(e, r, name, "rpc", ph);
    fprintf(e->f, ",\"id2\":{\"local\":\"%s:%d:%" G_GINT64_FORMAT "\"}", what, r->worker, id);
    chrome_args(e, r);
}

static char *
flow_key(gint64 from, gint64 to, gint64 id, gint64 bytes)
{
    return g_strdup_printf("%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT
                           "/%" G_GINT64_FORMAT,
                           from, to, id, bytes);
}

static void
chrome_flow_end(SimTraceExport *e, const SimTraceRecord *r, gint64 from)
{
    /* net.deliver: a = from, b = bytes, c = id */
    char *key = flow_key(from, r->worker, r->c, r->b);
    GQueue *q = g_hash_table_lookup(e->flows, key);
    g_free(key);
    chrome_head(e, r, r->kind->name, "net", "X");
    fputs(",\"dur\":1", e->f);
    chrome_args(e, r);
    if (q == NULL || g_queue_is_empty(q))
        return;
    guint64 flow = GPOINTER_TO_SIZE(g_queue_pop_head(q));
    chrome_head(e, r, "message", "net", "f");
    fprintf(e->f, ",\"bp\":\"e\",\"id\":%" G_GUINT64_FORMAT "}", flow);
}

static void
write_chrome(SimTraceExport *e, const SimTraceRecord *r)
{
    const char *k = r->kind->name;
    if (strcmp(k, "rpc.send") == 0) {
        chrome_async(e, r, "b", "rpc", r->b);
    } else if (strcmp(k, "rpc.response") == 0 || strcmp(k, "rpc.timeout") == 0 ||
               strcmp(k, "rpc.connection_failed") == 0 || strcmp(k, "rpc.send_failed") == 0) {
        chrome_async(e, r, "e", "rpc", r->b);
        if (strcmp(k, "rpc.response") != 0) {
            chrome_head(e, r, k, "fault", "i");
            fputs(",\"s\":\"t\"", e->f);
            chrome_args(e, r);
        }
    } else if (strcmp(k, "rpc.serve") == 0) {
        chrome_async(e, r, "b", "serve", r->b);
    } else if (strcmp(k, "rpc.respond") == 0) {
        chrome_async(e, r, "e", "serve", r->b);
    } else if (strcmp(k, "net.send") == 0) {
        /* a = to, b = bytes, c = id */
        guint64 flow = ++e->next_flow;
        char *key = flow_key(r->worker, r->a, r->c, r->b);
        GQueue *q = g_hash_table_lookup(e->flows, key);
        if (q == NULL) {
            q = g_queue_new();
            g_hash_table_insert(e->flows, key, q);
        } else {
            g_free(key);
        }
        g_queue_push_tail(q, GSIZE_TO_POINTER(flow));
        chrome_head(e, r, k, "net", "X");
        fputs(",\"dur\":1", e->f);
        chrome_args(e, r);
        chrome_head(e, r, "message", "net", "s");
        fprintf(e->f, ",\"id\":%" G_GUINT64_FORMAT "}", flow);
    } else if (strcmp(k, "net.deliver") == 0) {
        chrome_flow_end(e, r, r->a);
    } else if (has_prefix(k, "fault.") || has_prefix(k, "world.") || has_prefix(k, "net.")) {
        chrome_head(e, r, k, "fault", "i");
        fputs(",\"s\":\"p\"", e->f);
        chrome_args(e, r);
    } else {
        chrome_head(e, r, k, "event", "i");
        fputs(",\"s\":\"t\"", e->f);
        chrome_args(e, r);
    }
}

static void
export_sink(const SimTraceRecord *r, gpointer data)
{
    SimTraceExport *e = data;
    if (e == NULL || e->finished)
        return;
    switch (e->format) {
    case SIM_TRACE_FORMAT_TEXT: {
        char *line = sim_trace_format(r);
        fputs(line, e->f);
        fputc('\n', e->f);
        g_free(line);
        break;
    }
    case SIM_TRACE_FORMAT_JSON:
        write_json_line(e, r);
        break;
    case SIM_TRACE_FORMAT_CHROME:
        write_chrome(e, r);
        break;
    }
}

SimTraceExport *
sim_trace_export_new(SimTrace *t, SimTraceFormat format, FILE *f)
{
    g_return_val_if_fail(t != NULL && f != NULL, NULL);
    SimTraceExport *e = g_new0(SimTraceExport, 1);
    e->trace = t;
    e->format = format;
    e->f = f;
    e->first = TRUE;
    e->seen_pid = g_hash_table_new(g_direct_hash, g_direct_equal);
    e->seen_tid = g_hash_table_new_full(g_int64_hash, g_int64_equal, g_free, NULL);
    e->flows = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_queue_free);
    if (format == SIM_TRACE_FORMAT_CHROME)
        fputs("{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n", f);
    sim_trace_add_sink(t, export_sink, e, g_free); /* the trace frees e */
    return e;
}

void
sim_trace_export_finish(SimTraceExport *e)
{
    if (e == NULL)
        return;
    if (e->format == SIM_TRACE_FORMAT_CHROME)
        fputs("\n]}\n", e->f);
    fflush(e->f);
    e->finished = TRUE;
    g_hash_table_unref(e->seen_pid);
    g_hash_table_unref(e->seen_tid);
    g_hash_table_unref(e->flows);
    e->seen_pid = e->seen_tid = e->flows = NULL;
}
