/* trace.c — the run's trace: fingerprint fold, text lines, sinks.
 *
 * Invariant: the fingerprint depends only on the sequence of record values
 * (see the byte layout in trace.h), never on addresses, on which sinks are
 * attached or on whether text is produced.
 *
 * Cost: sim_trace_emit() always folds the record (one multiply per 8-byte
 * word: 6 words plus the detail's) and counts it.  The fold itself lives in
 * trace-private.h, inlined into the kernel's emit glue: ~70 instructions
 * per record in bench-rpc's ping-pong (8 records per round trip, half of
 * them with a short detail), plus ~13 in strlen per detail.  The kind's word
 * comes from a small direct-mapped cache keyed by the kind's address; a
 * miss re-hashes the name, so the cache affects speed only, never the
 * value.  Nothing is formatted or allocated unless a text output
 * (keep_lines / write_to) or a sink is attached (t->slow); the text is then
 * built once per record in a reused buffer and shared by both text outputs.
 *
 * Order of delivery for one record: the kept lines, then the FILE, then the
 * sinks in the order they were added — so a sink that reads
 * sim_trace_lines() already sees the current record's line.
 */
#include "sim/trace-private.h"

typedef struct {
    SimTraceSink fn;
    gpointer data;
    GDestroyNotify destroy; /* nullable; called on data by sim_trace_free */
} Sink;

/* splitmix64's output finaliser (no increment): a bijection, so distinct
 * fold states stay distinct, and one flipped input bit flips ~half the
 * output bits — FNV-1a alone mixes its last bytes poorly into high bits. */
static guint64
finalise(guint64 z)
{
    z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A kind's word in the fold: its name folded alone, from the seed, and
 * finalised (see trace.h). */
guint64
sim_trace__kind_word(const char *name)
{
    return finalise(sim_trace__fold_str(SIM_TRACE_FOLD_SEED, name));
}

/* Recomputes t->slow after an output or a sink is attached or detached. */
static void
update_slow(SimTrace *t)
{
    t->slow = t->emitting || t->lines != NULL || t->out != NULL || t->sinks->len > 0;
}

SimTrace *
sim_trace_new(void)
{
    SimTrace *t = g_new0(SimTrace, 1);
    t->fold = SIM_TRACE_FOLD_SEED;
    t->sinks = g_array_new(FALSE, FALSE, sizeof(Sink));
    return t;
}

void
sim_trace_free(SimTrace *t)
{
    if (t == NULL)
        return;
    for (guint i = 0; i < t->sinks->len; i++) {
        Sink *s = &g_array_index(t->sinks, Sink, i);
        if (s->destroy != NULL)
            s->destroy(s->data);
    }
    g_array_free(t->sinks, TRUE);
    if (t->lines != NULL)
        g_ptr_array_unref(t->lines);
    if (t->scratch != NULL)
        g_string_free(t->scratch, TRUE);
    g_free(t);
}

/* Appends s with control bytes escaped (\n, \r, \t, \xNN), so that a
 * record is always exactly one line.  Other bytes, including non-ASCII
 * UTF-8, pass through unchanged. */
static void
append_escaped(GString *out, const char *s)
{
    for (const guchar *p = (const guchar *)s; *p != '\0'; p++) {
        guchar c = *p;
        if (c >= 0x20 && c != 0x7f) {
            g_string_append_c(out, (gchar)c);
            continue;
        }
        switch (c) {
        case '\n':
            g_string_append(out, "\\n");
            break;
        case '\r':
            g_string_append(out, "\\r");
            break;
        case '\t':
            g_string_append(out, "\\t");
            break;
        default:
            g_string_append_printf(out, "\\x%02x", c);
            break;
        }
    }
}

static void
format_into(GString *out, const SimTraceRecord *rec)
{
    char tbuf[32];
    const gint64 vals[3] = {rec->a, rec->b, rec->c};

    g_string_append_c(out, '[');
    g_string_append(out, sim_time_format(rec->time, tbuf, sizeof tbuf));
    g_string_append(out, "] [");
    if (rec->worker == -1)
        g_string_append(out, "world");
    else
        g_string_append_printf(out, "worker%d", rec->worker);
    if (rec->thread > 0)
        g_string_append_printf(out, "/t%u", rec->thread);
    g_string_append(out, "] ");
    append_escaped(out, rec->kind->name);
    for (int i = 0; i < 3; i++) {
        if (rec->kind->labels[i] == NULL)
            continue;
        g_string_append_printf(out, " %s=%" G_GINT64_FORMAT, rec->kind->labels[i], vals[i]);
    }
    /* An empty detail adds nothing, not a trailing space (it still differs
     * from NULL in the fingerprint). */
    if (rec->detail != NULL && rec->detail[0] != '\0') {
        g_string_append_c(out, ' ');
        append_escaped(out, rec->detail);
    }
}

char *
sim_trace_format(const SimTraceRecord *rec)
{
    g_return_val_if_fail(rec != NULL, NULL);
    g_return_val_if_fail(rec->kind != NULL && rec->kind->name != NULL, NULL);
    GString *s = g_string_sized_new(96);
    format_into(s, rec);
    return g_string_free(s, FALSE);
}

/* The text outputs and sinks: kept out of the inline fast path, whose fold
 * is the hot path, so that it stays small. */
static void
deliver(SimTrace *t, const SimTraceRecord *rec)
{
    t->emitting = TRUE;
    t->slow = TRUE;
    if (t->lines != NULL || t->out != NULL) {
        if (t->scratch == NULL)
            t->scratch = g_string_sized_new(128);
        g_string_truncate(t->scratch, 0);
        format_into(t->scratch, rec);
        if (t->lines != NULL)
            g_ptr_array_add(t->lines, g_strndup(t->scratch->str, t->scratch->len));
        if (t->out != NULL) {
            /* Write errors are the FILE's (ferror); the trace cannot report
             * them from here and the fingerprint does not depend on them. */
            g_string_append_c(t->scratch, '\n');
            fwrite(t->scratch->str, 1, t->scratch->len, t->out);
        }
    }
    /* Snapshot the length: a sink added from inside a sink starts with the
     * next record. */
    const guint n = t->sinks->len;
    for (guint i = 0; i < n; i++) {
        const Sink *s = &g_array_index(t->sinks, Sink, i);
        s->fn(rec, s->data);
    }
    t->emitting = FALSE;
    update_slow(t);
}

void
sim_trace__emit_slow(SimTrace *t, SimTime time, gint worker, guint thread, const SimTraceKind *kind,
                     gint64 a, gint64 b, gint64 c, const char *detail)
{
    g_return_if_fail(!t->emitting);

    t->fold = sim_trace__fold_record(t, t->fold, time, worker, thread, kind, a, b, c, detail);
    t->count++;
    const SimTraceRecord rec = {
        .time = time,
        .worker = worker,
        .thread = thread,
        .kind = kind,
        .a = a,
        .b = b,
        .c = c,
        .detail = detail,
    };
    deliver(t, &rec);
}

void
sim_trace_emit(SimTrace *t, SimTime time, gint worker, guint thread, const SimTraceKind *kind,
               gint64 a, gint64 b, gint64 c, const char *detail)
{
    g_return_if_fail(t != NULL);
    g_return_if_fail(kind != NULL && kind->name != NULL);

    sim_trace_emit_inline(t, time, worker, thread, kind, a, b, c, detail);
}

guint64
sim_trace_fingerprint(const SimTrace *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return finalise(t->fold);
}

guint64
sim_trace_count(const SimTrace *t)
{
    g_return_val_if_fail(t != NULL, 0);
    return t->count;
}

void
sim_trace_add_sink(SimTrace *t, SimTraceSink sink, gpointer data, GDestroyNotify destroy)
{
    g_return_if_fail(t != NULL);
    g_return_if_fail(sink != NULL);
    const Sink s = {.fn = sink, .data = data, .destroy = destroy};
    g_array_append_val(t->sinks, s);
    update_slow(t);
}

void
sim_trace_keep_lines(SimTrace *t, gboolean keep)
{
    g_return_if_fail(t != NULL);
    if (keep && t->lines == NULL) {
        t->lines = g_ptr_array_new_with_free_func(g_free);
    } else if (!keep && t->lines != NULL) {
        g_ptr_array_unref(t->lines);
        t->lines = NULL;
    }
    update_slow(t);
}

GPtrArray *
sim_trace_lines(const SimTrace *t)
{
    g_return_val_if_fail(t != NULL, NULL);
    return t->lines;
}

void
sim_trace_write_to(SimTrace *t, FILE *f)
{
    g_return_if_fail(t != NULL);
    t->out = f;
    update_slow(t);
}
