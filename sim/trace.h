/* trace.h — the run's trace and fingerprint.
 *
 * Every observable step of a run is one record: virtual time, worker (-1 for
 * the world itself), virtual thread (0 for none), a static kind, three
 * integers and an optional detail string.  Records are folded into a running
 * 64-bit fingerprint as they arrive; the text form is only produced when a
 * sink wants it, so fingerprinting a run costs no formatting.
 *
 * Text layout, one line per record (SimGrid's .tesh flavour):
 *
 *     [<s>.<ns9>] [worker<w>] <kind> <label0>=<a> <label1>=<b> <label2>=<c> <detail>
 *
 * with "[world]" for worker -1, "/t<n>" appended to the worker when a thread
 * is known ("[worker1/t3]"), unused labels omitted and the detail last.
 * Labels are separated by one space; a NULL or empty detail adds nothing (no
 * trailing space).  Control bytes in the kind name and the detail are
 * escaped (\n, \r, \t, \xNN) so that a record is always one line.
 *
 * Fingerprint: a 64-bit fold over each record's fields, one 64-bit word at
 * a time, then a final avalanche (splitmix64 finaliser) when read.  Only
 * values, never addresses, go in.
 *
 * Exactly: h starts at 0xcbf29ce484222325 for the whole run; folding a word
 * w is h = (h ^ w) * 0xff51afd7ed558ccd; h = h rotated left by 29 bits
 * (h << 29 | h >> 35).  A record folds, in
 * order: time; worker | thread << 32 (each as its 32-bit two's-complement
 * pattern, -1 is 0xffffffff); the kind word; a; b; c; the detail.  A string
 * folds as its bytes in little-endian 8-byte words (the last one padded with
 * zero bytes) followed by its length; a NULL detail folds the single word
 * 0xffffffffffffffff instead, so NULL and "" differ.  The kind word is the
 * kind's name folded as a string on its own, from the same start value
 * 0xcbf29ce484222325, then finalised: one word per record whatever the
 * name's length, so the trace caches it per kind instead of re-reading the
 * name.  The kind's labels are not folded (they only name fields).  The
 * finaliser is splitmix64's mix without the increment: z ^= z >> 30;
 * z *= 0xbf58476d1ce4e5b9; z ^= z >> 27; z *= 0x94d049bb133111eb;
 * z ^= z >> 31.  Attaching sinks or text outputs never changes the
 * fingerprint, and neither does a kind's address (a copy of a kind at
 * another address folds the same word).
 */
#ifndef SIM_TRACE_H
#define SIM_TRACE_H

#include <stdio.h>

#include <glib.h>

#include "core/executor.h"
#include "sim/time.h"

G_BEGIN_DECLS

typedef RpcTraceKind SimTraceKind;

typedef struct SimTraceRecord {
    SimTime time;
    gint worker;  /* -1: the world */
    guint thread; /* 0: none */
    const SimTraceKind *kind;
    gint64 a, b, c;
    const char *detail; /* may be NULL; only valid during the sink call */
} SimTraceRecord;

/* A sink receives every record as it is emitted. */
typedef void (*SimTraceSink)(const SimTraceRecord *rec, gpointer data);

typedef struct SimTrace SimTrace;

/* (transfer full) An empty trace: count 0, no sinks, no text outputs. */
SimTrace *sim_trace_new(void);
/* Runs each sink's destroy notifier (in the order added); t may be NULL. */
void sim_trace_free(SimTrace *t);

/* Folds one record into the fingerprint and hands it to the text outputs
 * and sinks.  kind (transfer none) must outlive the call, and a kind's name
 * must not change (in place, or by reusing the kind's and its name's
 * addresses for another kind) while the trace lives: the kind word is
 * cached per (kind, name) pointer pair.  Kinds are static const structs in
 * practice.  detail (transfer none, nullable) is only read during the call.
 * No allocation when nothing is attached.  A sink must not emit into the
 * trace that called it. */
void sim_trace_emit(SimTrace *t, SimTime time, gint worker, guint thread, const SimTraceKind *kind,
                    gint64 a, gint64 b, gint64 c, const char *detail);

/* The finalised fold of every record so far; reading does not change it. */
guint64 sim_trace_fingerprint(const SimTrace *t);
/* Records emitted so far. */
guint64 sim_trace_count(const SimTrace *t);

/* Adds a sink (several allowed, called in the order added, after the text
 * outputs).  destroy (nullable) runs on data when the trace is freed. */
void sim_trace_add_sink(SimTrace *t, SimTraceSink sink, gpointer data, GDestroyNotify destroy);
/* Keeps every line emitted from now on as text in memory (for tests and
 * diffing).  FALSE discards the lines kept so far. */
void sim_trace_keep_lines(SimTrace *t, gboolean keep);
/* The kept lines (transfer none); NULL if not kept. */
GPtrArray *sim_trace_lines(const SimTrace *t);
/* Writes lines to f as they are emitted (f stays owned by the caller, who
 * flushes it; NULL stops writing).  Each line ends with '\n'. */
void sim_trace_write_to(SimTrace *t, FILE *f);

/* Renders one record as a text line without the newline (transfer full). */
char *sim_trace_format(const SimTraceRecord *rec);

G_END_DECLS

#endif /* SIM_TRACE_H */
