/* test-trace.c — sim/trace: the text layout, the fingerprint, the outputs.
 *
 * The fingerprint is checked two ways: relative properties (every field
 * counts, order counts, addresses do not), and one record folded by hand
 * from the byte layout written in trace.h, so that the header and the code
 * cannot drift apart unnoticed.
 */
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "sim/trace.h"

static const SimTraceKind kind_send = {"send", {"dst", "msg", "bytes"}};
static const SimTraceKind kind_recv = {"recv", {"src", "msg", "bytes"}};
static const SimTraceKind kind_crash = {"crash", {NULL, NULL, NULL}};
static const SimTraceKind kind_sparse = {"timer", {NULL, "id", NULL}};

static char *
format(SimTime t, gint worker, guint thread, const SimTraceKind *kind, gint64 a, gint64 b, gint64 c,
       const char *detail)
{
    const SimTraceRecord rec = {t, worker, thread, kind, a, b, c, detail};
    return sim_trace_format(&rec);
}

#define assert_line(expected, ...)                                                                 \
    do {                                                                                           \
        char *got_ = format(__VA_ARGS__);                                                          \
        g_assert_cmpstr(got_, ==, (expected));                                                     \
        g_free(got_);                                                                              \
    } while (0)

static void
test_format_world(void)
{
    assert_line("[0.000000000] [world] crash", 0, -1, 0, &kind_crash, 1, 2, 3, NULL);
    assert_line("[12.000500000] [world] send dst=1 msg=2 bytes=3", 12 * SIM_S + 500 * SIM_US, -1, 0,
                &kind_send, 1, 2, 3, NULL);
}

static void
test_format_worker(void)
{
    assert_line("[0.001500000] [worker3] send dst=1 msg=42 bytes=128", 1500 * SIM_US, 3, 0,
                &kind_send, 1, 42, 128, NULL);
    assert_line("[1.000000000] [worker0] recv src=-1 msg=-9223372036854775808 "
                "bytes=9223372036854775807",
                SIM_S, 0, 0, &kind_recv, -1, G_MININT64, G_MAXINT64, NULL);
}

static void
test_format_worker_thread(void)
{
    assert_line("[0.000000007] [worker3/t2] send dst=0 msg=0 bytes=0", 7, 3, 2, &kind_send, 0, 0, 0,
                NULL);
    assert_line("[0.000000007] [worker12/t4294967295] crash", 7, 12, G_MAXUINT, &kind_crash, 0, 0,
                0, NULL);
    /* The world has no threads in practice, but a thread id is never lost. */
    assert_line("[0.000000007] [world/t1] crash", 7, -1, 1, &kind_crash, 0, 0, 0, NULL);
}

static void
test_format_labels_omitted(void)
{
    assert_line("[2.000000000] [worker1] crash", 2 * SIM_S, 1, 0, &kind_crash, 5, 6, 7, NULL);
    assert_line("[2.000000000] [worker1] timer id=6", 2 * SIM_S, 1, 0, &kind_sparse, 5, 6, 7, NULL);
}

static void
test_format_detail(void)
{
    assert_line("[0.000001000] [worker2/t1] send dst=0 msg=5 bytes=64 rpc_sync add(1, 2)", SIM_US,
                2, 1, &kind_send, 0, 5, 64, "rpc_sync add(1, 2)");
    assert_line("[0.000001000] [world] crash worker 2 killed", SIM_US, -1, 0, &kind_crash, 0, 0, 0,
                "worker 2 killed");
    assert_line("[0.000001000] [worker1] timer id=9 fired", SIM_US, 1, 0, &kind_sparse, 0, 9, 0,
                "fired");
    /* Empty detail: nothing appended, no trailing space. */
    assert_line("[0.000001000] [worker1] timer id=9", SIM_US, 1, 0, &kind_sparse, 0, 9, 0, "");
}

static void
test_format_escapes_control_bytes(void)
{
    assert_line("[0.000000000] [world] crash a\\nb\\tc\\rd\\x01e\\x7f caf\xc3\xa9", 0, -1, 0,
                &kind_crash, 0, 0, 0, "a\nb\tc\rd\001e\177 caf\xc3\xa9");
}

/* ------------------------------------------------------------------------ */

typedef struct {
    SimTime t;
    gint worker;
    guint thread;
    const SimTraceKind *kind;
    gint64 a, b, c;
    const char *detail;
} Rec;

static const Rec base_recs[] = {
    {0, -1, 0, &kind_crash, 0, 0, 0, NULL},
    {SIM_MS, 0, 1, &kind_send, 1, 7, 256, "add"},
    {SIM_MS + 3, 1, 2, &kind_recv, 0, 7, 256, ""},
    {2 * SIM_MS, 1, 0, &kind_sparse, -1, 99, G_MININT64, "x"},
};

static guint64
fingerprint_of(const Rec *recs, gsize n)
{
    SimTrace *t = sim_trace_new();
    for (gsize i = 0; i < n; i++)
        sim_trace_emit(t, recs[i].t, recs[i].worker, recs[i].thread, recs[i].kind, recs[i].a,
                       recs[i].b, recs[i].c, recs[i].detail);
    guint64 fp = sim_trace_fingerprint(t);
    sim_trace_free(t);
    return fp;
}

static void
test_fingerprint_identical_sequences(void)
{
    guint64 fp1 = fingerprint_of(base_recs, G_N_ELEMENTS(base_recs));
    guint64 fp2 = fingerprint_of(base_recs, G_N_ELEMENTS(base_recs));
    g_assert_cmphex(fp1, ==, fp2);
    /* And not just a constant. */
    g_assert_cmphex(fp1, !=, fingerprint_of(base_recs, 0));
    g_assert_cmphex(fp1, !=, fingerprint_of(base_recs, G_N_ELEMENTS(base_recs) - 1));
}

/* Changing any one field of the second record changes the fingerprint. */
static void
test_fingerprint_every_field_counts(void)
{
    static const SimTraceKind send_renamed = {"sendx", {"dst", "msg", "bytes"}};
    const guint64 base = fingerprint_of(base_recs, G_N_ELEMENTS(base_recs));
    enum { N_VARIANTS = 13 };
    guint64 seen[N_VARIANTS + 1];
    seen[0] = base;

    for (int v = 0; v < N_VARIANTS; v++) {
        Rec recs[G_N_ELEMENTS(base_recs)];
        memcpy(recs, base_recs, sizeof recs);
        Rec *r = &recs[1];
        switch (v) {
        case 0:
            r->t += 1;
            break;
        case 1:
            r->worker = 2;
            break;
        case 2:
            r->worker = -1;
            break;
        case 3:
            r->thread = 0;
            break;
        case 4:
            r->kind = &send_renamed;
            break;
        case 5:
            r->a += 1;
            break;
        case 6:
            r->b ^= G_GINT64_CONSTANT(1) << 40;
            break;
        case 7:
            r->c = -r->c;
            break;
        case 8:
            r->detail = "adD";
            break;
        case 9:
            r->detail = NULL;
            break;
        case 10:
            r->detail = "";
            break;
        case 11: /* "" -> NULL */
            recs[2].detail = NULL;
            break;
        case 12: /* NULL -> "" */
            recs[0].detail = "";
            break;
        }
        seen[v + 1] = fingerprint_of(recs, G_N_ELEMENTS(recs));
        g_assert_cmphex(seen[v + 1], !=, base);
    }
    /* All variants differ from each other too. */
    for (int i = 0; i <= N_VARIANTS; i++)
        for (int j = i + 1; j <= N_VARIANTS; j++)
            g_assert_cmphex(seen[i], !=, seen[j]);
}

/* Moving bytes between adjacent string fields must not collide. */
static void
test_fingerprint_field_boundaries(void)
{
    static const SimTraceKind ab = {"ab", {NULL, NULL, NULL}};
    static const SimTraceKind a_ = {"a", {NULL, NULL, NULL}};
    const Rec r1[] = {{0, 0, 0, &ab, 0, 0, 0, "c"}};
    const Rec r2[] = {{0, 0, 0, &a_, 0, 0, 0, "bc"}};
    g_assert_cmphex(fingerprint_of(r1, 1), !=, fingerprint_of(r2, 1));
}

static void
test_fingerprint_order_counts(void)
{
    Rec swapped[G_N_ELEMENTS(base_recs)];
    memcpy(swapped, base_recs, sizeof swapped);
    Rec tmp = swapped[1];
    swapped[1] = swapped[2];
    swapped[2] = tmp;
    g_assert_cmphex(fingerprint_of(base_recs, G_N_ELEMENTS(base_recs)), !=,
                    fingerprint_of(swapped, G_N_ELEMENTS(swapped)));
}

/* Only the kind's name goes in: a copy at another address (and labels,
 * which only name the fields) make no difference. */
static void
test_fingerprint_kind_address_independent(void)
{
    SimTraceKind *copy = g_new(SimTraceKind, 1);
    char *name = g_strdup("send");
    copy->name = name;
    copy->labels[0] = "dst";
    copy->labels[1] = "msg";
    copy->labels[2] = "bytes";
    g_assert_true(copy != &kind_send && copy->name != kind_send.name);

    Rec recs[G_N_ELEMENTS(base_recs)];
    memcpy(recs, base_recs, sizeof recs);
    recs[1].kind = copy;
    g_assert_cmphex(fingerprint_of(base_recs, G_N_ELEMENTS(base_recs)), ==,
                    fingerprint_of(recs, G_N_ELEMENTS(recs)));

    copy->labels[0] = "to";
    copy->labels[2] = NULL;
    g_assert_cmphex(fingerprint_of(base_recs, G_N_ELEMENTS(base_recs)), ==,
                    fingerprint_of(recs, G_N_ELEMENTS(recs)));
    g_free(name);
    g_free(copy);
}

/* An independent reference of trace.h's documented fold: words are
 * assembled byte by byte, not loaded, so it shares no code with trace.c. */
typedef struct {
    guint64 h;
} Fnv;

static void
fold_word_ref(Fnv *f, guint64 w)
{
    const guint64 m = (f->h ^ w) * G_GUINT64_CONSTANT(0xff51afd7ed558ccd);
    /* Rotate left by 29, spelled as a bit walk so that it shares nothing
     * with the shifts of trace-private.h. */
    guint64 r = 0;
    for (guint bit = 0; bit < 64; bit++) {
        if (m & (G_GUINT64_CONSTANT(1) << bit))
            r |= G_GUINT64_CONSTANT(1) << ((bit + 29) % 64);
    }
    f->h = r;
}

static void
fold_str_ref(Fnv *f, const char *s)
{
    gsize len = strlen(s);
    for (gsize i = 0; i < len; i += 8) {
        guint64 w = 0;
        for (gsize j = 0; j < 8 && i + j < len; j++)
            w |= (guint64)(guchar)s[i + j] << (8 * j);
        fold_word_ref(f, w);
    }
    fold_word_ref(f, len);
}

static guint64
mix64(guint64 z)
{
    z = (z ^ (z >> 30)) * G_GUINT64_CONSTANT(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * G_GUINT64_CONSTANT(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* A kind's word: its name folded alone from the seed, then finalised. */
static guint64
kind_word_ref(const char *name)
{
    Fnv k = {G_GUINT64_CONSTANT(0xcbf29ce484222325)};
    fold_str_ref(&k, name);
    return mix64(k.h);
}

static void
test_fingerprint_matches_documented_layout(void)
{
    Fnv f = {G_GUINT64_CONSTANT(0xcbf29ce484222325)};
    g_assert_cmphex(fingerprint_of(base_recs, 0), ==, mix64(f.h));

    for (gsize i = 0; i < G_N_ELEMENTS(base_recs); i++) {
        const Rec *r = &base_recs[i];
        fold_word_ref(&f, (guint64)r->t);
        fold_word_ref(&f, (guint64)(guint32)r->worker | ((guint64)r->thread << 32));
        fold_word_ref(&f, kind_word_ref(r->kind->name));
        fold_word_ref(&f, (guint64)r->a);
        fold_word_ref(&f, (guint64)r->b);
        fold_word_ref(&f, (guint64)r->c);
        if (r->detail != NULL)
            fold_str_ref(&f, r->detail);
        else
            fold_word_ref(&f, G_GUINT64_CONSTANT(0xffffffffffffffff));
    }
    g_assert_cmphex(fingerprint_of(base_recs, G_N_ELEMENTS(base_recs)), ==, mix64(f.h));
}

/* Every detail length from 0 to 40 (the tail word is assembled from
 * different loads below 4, below 8 and from 8 bytes on), each string ending
 * at the end of its own allocation, so a load past the NUL would show under
 * valgrind. */
static void
test_fingerprint_detail_lengths(void)
{
    static const SimTraceKind kind = {"k", {NULL, NULL, NULL}};
    const char *alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ";

    for (gsize len = 0; len <= 40; len++) {
        char *detail = g_malloc(len + 1);
        for (gsize i = 0; i < len; i++)
            detail[i] = alphabet[(i * 7 + len) % strlen(alphabet)] | (i == len - 1 ? 0x80 : 0);
        detail[len] = '\0';

        SimTrace *t = sim_trace_new();
        sim_trace_emit(t, 5, 1, 2, &kind, 3, 4, 6, detail);
        Fnv f = {G_GUINT64_CONSTANT(0xcbf29ce484222325)};
        fold_word_ref(&f, 5);
        fold_word_ref(&f, 1 | (guint64)2 << 32);
        fold_word_ref(&f, kind_word_ref(kind.name));
        fold_word_ref(&f, 3);
        fold_word_ref(&f, 4);
        fold_word_ref(&f, 6);
        fold_str_ref(&f, detail);
        g_assert_cmphex(sim_trace_fingerprint(t), ==, mix64(f.h));
        sim_trace_free(t);
        g_free(detail);
    }
}

static void
noop_sink(const SimTraceRecord *rec, gpointer data)
{
}

/* Reading does not mutate; text outputs and sinks do not change it. */
static void
test_fingerprint_read_only_and_output_independent(void)
{
    const guint64 expect = fingerprint_of(base_recs, G_N_ELEMENTS(base_recs));
    SimTrace *t = sim_trace_new();
    sim_trace_keep_lines(t, TRUE);
    sim_trace_add_sink(t, noop_sink, NULL, NULL);
    for (gsize i = 0; i < G_N_ELEMENTS(base_recs); i++) {
        const Rec *r = &base_recs[i];
        sim_trace_emit(t, r->t, r->worker, r->thread, r->kind, r->a, r->b, r->c, r->detail);
        guint64 once = sim_trace_fingerprint(t);
        g_assert_cmphex(sim_trace_fingerprint(t), ==, once);
    }
    g_assert_cmphex(sim_trace_fingerprint(t), ==, expect);
    g_assert_cmphex(sim_trace_fingerprint(t), ==, expect);
    sim_trace_free(t);
}

/* ------------------------------------------------------------------------ */

static void
test_count(void)
{
    SimTrace *t = sim_trace_new();
    g_assert_cmpuint(sim_trace_count(t), ==, 0);
    for (int i = 1; i <= 5; i++) {
        sim_trace_emit(t, i, 0, 0, &kind_crash, 0, 0, 0, NULL);
        g_assert_cmpuint(sim_trace_count(t), ==, (guint64)i);
    }
    sim_trace_free(t);
}

static void
test_keep_lines(void)
{
    SimTrace *t = sim_trace_new();
    g_assert_null(sim_trace_lines(t));
    sim_trace_emit(t, 0, -1, 0, &kind_crash, 0, 0, 0, "before");

    sim_trace_keep_lines(t, TRUE);
    sim_trace_emit(t, SIM_MS, 0, 1, &kind_send, 1, 2, 3, NULL);
    sim_trace_emit(t, 2 * SIM_MS, 1, 0, &kind_recv, 0, 2, 3, "ok");
    sim_trace_keep_lines(t, TRUE); /* already on: keeps what it has */
    GPtrArray *lines = sim_trace_lines(t);
    g_assert_nonnull(lines);
    g_assert_cmpuint(lines->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(lines, 0), ==,
                    "[0.001000000] [worker0/t1] send dst=1 msg=2 bytes=3");
    g_assert_cmpstr(g_ptr_array_index(lines, 1), ==,
                    "[0.002000000] [worker1] recv src=0 msg=2 bytes=3 ok");

    sim_trace_keep_lines(t, FALSE);
    g_assert_null(sim_trace_lines(t));
    g_assert_cmpuint(sim_trace_count(t), ==, 3);
    sim_trace_free(t);
}

static void
test_write_to_file(void)
{
    FILE *f = tmpfile();
    g_assert_nonnull(f);
    SimTrace *t = sim_trace_new();
    sim_trace_write_to(t, f);
    sim_trace_emit(t, 1500 * SIM_US, 3, 0, &kind_send, 1, 42, 128, NULL);
    sim_trace_emit(t, 2 * SIM_S, -1, 0, &kind_crash, 0, 0, 0, "worker 3");
    sim_trace_write_to(t, NULL);
    sim_trace_emit(t, 3 * SIM_S, -1, 0, &kind_crash, 0, 0, 0, "not written");
    sim_trace_free(t);

    char buf[256];
    rewind(f);
    gsize n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    g_assert_cmpstr(buf, ==,
                    "[0.001500000] [worker3] send dst=1 msg=42 bytes=128\n"
                    "[2.000000000] [world] crash worker 3\n");
}

typedef struct {
    GString *log;
    const char *name;
} SinkData;

static void
logging_sink(const SimTraceRecord *rec, gpointer data)
{
    SinkData *d = data;
    g_string_append_printf(d->log, "%s:%s:%" G_GINT64_FORMAT ":%s;", d->name, rec->kind->name,
                           rec->a, rec->detail ? rec->detail : "(null)");
}

static void
sink_data_destroy(gpointer data)
{
    SinkData *d = data;
    g_string_append_printf(d->log, "destroy %s;", d->name);
    g_free(d);
}

static SinkData *
sink_data_new(GString *log, const char *name)
{
    SinkData *d = g_new(SinkData, 1);
    d->log = log;
    d->name = name;
    return d;
}

static void
test_sinks_in_order(void)
{
    GString *log = g_string_new(NULL);
    SimTrace *t = sim_trace_new();
    sim_trace_add_sink(t, logging_sink, sink_data_new(log, "A"), sink_data_destroy);
    sim_trace_add_sink(t, logging_sink, sink_data_new(log, "B"), sink_data_destroy);
    sim_trace_add_sink(t, logging_sink, sink_data_new(log, "C"), sink_data_destroy);

    char *detail = g_strdup("d1");
    sim_trace_emit(t, 0, 0, 0, &kind_send, 1, 0, 0, detail);
    g_free(detail);
    sim_trace_emit(t, 1, 0, 0, &kind_recv, 2, 0, 0, NULL);
    g_assert_cmpstr(log->str, ==,
                    "A:send:1:d1;B:send:1:d1;C:send:1:d1;"
                    "A:recv:2:(null);B:recv:2:(null);C:recv:2:(null);");

    g_string_truncate(log, 0);
    sim_trace_free(t);
    g_assert_cmpstr(log->str, ==, "destroy A;destroy B;destroy C;");
    g_string_free(log, TRUE);
}

/* A sink sees the record's values, and the kept line is already there. */
typedef struct {
    SimTrace *trace;
    SimTraceRecord last;
    guint calls;
    guint lines_seen;
} Probe;

static void
probe_sink(const SimTraceRecord *rec, gpointer data)
{
    Probe *p = data;
    p->last = *rec;
    p->last.detail = NULL; /* only valid during the call */
    p->calls++;
    p->lines_seen = sim_trace_lines(p->trace)->len;
}

static void
test_sink_sees_record(void)
{
    SimTrace *t = sim_trace_new();
    Probe p = {.trace = t};
    sim_trace_keep_lines(t, TRUE);
    sim_trace_add_sink(t, probe_sink, &p, NULL);
    sim_trace_emit(t, 77, 4, 3, &kind_sparse, -1, -2, -3, "z");
    g_assert_cmpuint(p.calls, ==, 1);
    g_assert_cmpint(p.last.time, ==, 77);
    g_assert_cmpint(p.last.worker, ==, 4);
    g_assert_cmpuint(p.last.thread, ==, 3);
    g_assert_true(p.last.kind == &kind_sparse);
    g_assert_cmpint(p.last.a, ==, -1);
    g_assert_cmpint(p.last.b, ==, -2);
    g_assert_cmpint(p.last.c, ==, -3);
    g_assert_cmpuint(p.lines_seen, ==, 1);
    sim_trace_free(t);
}

static void
reentrant_sink(const SimTraceRecord *rec, gpointer data)
{
    sim_trace_emit(data, rec->time, rec->worker, rec->thread, rec->kind, 0, 0, 0, NULL);
}

/* A sink emitting into its own trace would interleave records; refused. */
static void
test_sink_reentrant_emit_is_caller_bug(void)
{
    if (g_test_subprocess()) {
        SimTrace *t = sim_trace_new();
        sim_trace_add_sink(t, reentrant_sink, t, NULL);
        sim_trace_emit(t, 0, 0, 0, &kind_crash, 0, 0, 0, NULL);
        sim_trace_free(t);
        return;
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*!t->emitting*");
}

static void
test_free_null(void)
{
    sim_trace_free(NULL);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/trace/format/world", test_format_world);
    g_test_add_func("/trace/format/worker", test_format_worker);
    g_test_add_func("/trace/format/worker-thread", test_format_worker_thread);
    g_test_add_func("/trace/format/labels-omitted", test_format_labels_omitted);
    g_test_add_func("/trace/format/detail", test_format_detail);
    g_test_add_func("/trace/format/escapes-control-bytes", test_format_escapes_control_bytes);
    g_test_add_func("/trace/fingerprint/identical-sequences", test_fingerprint_identical_sequences);
    g_test_add_func("/trace/fingerprint/every-field-counts", test_fingerprint_every_field_counts);
    g_test_add_func("/trace/fingerprint/field-boundaries", test_fingerprint_field_boundaries);
    g_test_add_func("/trace/fingerprint/order-counts", test_fingerprint_order_counts);
    g_test_add_func("/trace/fingerprint/kind-address-independent",
                    test_fingerprint_kind_address_independent);
    g_test_add_func("/trace/fingerprint/matches-documented-layout",
                    test_fingerprint_matches_documented_layout);
    g_test_add_func("/trace/fingerprint/detail-lengths", test_fingerprint_detail_lengths);
    g_test_add_func("/trace/fingerprint/read-only-and-output-independent",
                    test_fingerprint_read_only_and_output_independent);
    g_test_add_func("/trace/count", test_count);
    g_test_add_func("/trace/keep-lines", test_keep_lines);
    g_test_add_func("/trace/write-to-file", test_write_to_file);
    g_test_add_func("/trace/sinks/in-order", test_sinks_in_order);
    g_test_add_func("/trace/sinks/see-record", test_sink_sees_record);
    g_test_add_func("/trace/sinks/reentrant-emit-is-caller-bug",
                    test_sink_reentrant_emit_is_caller_bug);
    g_test_add_func("/trace/free-null", test_free_null);

    return g_test_run();
}
