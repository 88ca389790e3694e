/* trace-private.h — SimTrace's body and its fold, shared by trace.c and the
 * kernel's emit glue (kernel-private.h), so that emitting a record from the
 * kernel, the executor or the network inlines the fold instead of going
 * through two or three calls (~9 arguments each).  The fold is the one
 * documented in trace.h; this header changes where it is compiled, not what
 * it computes. */
#ifndef SIM_TRACE_PRIVATE_H
#define SIM_TRACE_PRIVATE_H

#include <string.h>

#include "sim/trace.h"

#define SIM_TRACE_FOLD_SEED G_GUINT64_CONSTANT(0xcbf29ce484222325)
#define SIM_TRACE_FOLD_MUL  G_GUINT64_CONSTANT(0xff51afd7ed558ccd)

/* Folded in place of the detail when it is NULL, so that NULL and "" (whose
 * fold is just its length word 0) differ. */
#define SIM_TRACE_DETAIL_NULL_WORD G_GUINT64_CONSTANT(0xffffffffffffffff)

/* Kind-word cache: the word depends only on the name's bytes; the kind and
 * name pointers only pick and check the entry, so a miss costs time, never
 * a different fingerprint. */
#define SIM_TRACE_KIND_CACHE_BITS 8

typedef struct {
    const SimTraceKind *kind;
    const char *name;
    guint64 hash;
} SimTraceKindEntry;

struct SimTrace {
    guint64 fold;  /* running fold state, before the finaliser */
    guint64 count; /* records emitted */
    /* Nonzero when a record needs more than the fold: a text output or a
     * sink is attached, or a sink is running (emitting).  One test on the
     * hot path instead of four. */
    guint slow;
    gboolean emitting; /* guards against a sink emitting into its own trace */
    GArray *sinks;     /* of Sink (trace.c), in the order added */
    GPtrArray *lines;  /* owned strings; NULL when lines are not kept */
    FILE *out;         /* not owned; NULL when not writing */
    GString *scratch;  /* reused line buffer; created on first text output */
    SimTraceKindEntry kinds[1 << SIM_TRACE_KIND_CACHE_BITS];
};

/* trace.c: the emit path when t->slow is set (the sink guard, the fold, the
 * text outputs and the sinks). */
void sim_trace__emit_slow(SimTrace *t, SimTime time, gint worker, guint thread,
                          const SimTraceKind *kind, gint64 a, gint64 b, gint64 c,
                          const char *detail);
/* trace.c: a kind's word, computed from its name (the cache's miss path). */
guint64 sim_trace__kind_word(const char *name);

/* xor, multiply, rotate: three instructions per word.  The rotation brings
 * the product's well-mixed high bits down, where the next multiply spreads
 * them up again. */
static inline guint64
sim_trace__fold_word(guint64 h, guint64 w)
{
    h = (h ^ w) * SIM_TRACE_FOLD_MUL;
    return h << 29 | h >> 35;
}

static inline guint64
sim_trace__load64(const char *p)
{
    guint64 w;
    memcpy(&w, p, 8);
    return GUINT64_FROM_LE(w);
}

static inline guint64
sim_trace__load32(const char *p)
{
    guint32 w;
    memcpy(&w, p, 4);
    return GUINT32_FROM_LE(w);
}

/* The string's bytes as little-endian 8-byte words (the last one padded
 * with zero bytes), then its length (trace.h).  The last, partial word is
 * assembled from loads that stay inside the string (an overlapping 8-byte
 * load shifted down, two overlapping 4-byte loads, or three single bytes)
 * instead of a memcpy call: same word, no call. */
static inline guint64
sim_trace__fold_str(guint64 h, const char *s)
{
    const gsize len = strlen(s);
    gsize i = 0;
    for (; i + 8 <= len; i += 8)
        h = sim_trace__fold_word(h, sim_trace__load64(s + i));
    const gsize r = len - i; /* 0 .. 7 bytes left */
    if (r != 0) {
        guint64 w;
        if (len >= 8) {
            w = sim_trace__load64(s + len - 8) >> (8 * (8 - r));
        } else if (r >= 4) {
            w = sim_trace__load32(s) | sim_trace__load32(s + r - 4) << (8 * (r - 4));
        } else {
            w = (guint64)(guchar)s[0] | (guint64)(guchar)s[r >> 1] << (8 * (r >> 1)) |
                (guint64)(guchar)s[r - 1] << (8 * (r - 1));
        }
        h = sim_trace__fold_word(h, w);
    }
    return sim_trace__fold_word(h, (guint64)len);
}

static inline guint64
sim_trace__kind_hash(SimTrace *t, const SimTraceKind *kind)
{
    /* Kinds are static structs of four pointers, so the address bits from
     * 5 up tell neighbours apart. */
    guint i = (guint)(((guintptr)kind >> 5) & ((1u << SIM_TRACE_KIND_CACHE_BITS) - 1));
    SimTraceKindEntry *e = &t->kinds[i];
    if (G_UNLIKELY(e->kind != kind || e->name != kind->name)) {
        e->kind = kind;
        e->name = kind->name;
        e->hash = sim_trace__kind_word(kind->name);
    }
    return e->hash;
}

/* Folds one record (trace.h's layout) into h. */
static inline guint64
sim_trace__fold_record(SimTrace *t, guint64 h, SimTime time, gint worker, guint thread,
                       const SimTraceKind *kind, gint64 a, gint64 b, gint64 c, const char *detail)
{
    h = sim_trace__fold_word(h, (guint64)time);
    h = sim_trace__fold_word(h, (guint64)(guint32)worker | ((guint64)(guint32)thread << 32));
    h = sim_trace__fold_word(h, sim_trace__kind_hash(t, kind));
    h = sim_trace__fold_word(h, (guint64)a);
    h = sim_trace__fold_word(h, (guint64)b);
    h = sim_trace__fold_word(h, (guint64)c);
    return detail != NULL ? sim_trace__fold_str(h, detail)
                          : sim_trace__fold_word(h, SIM_TRACE_DETAIL_NULL_WORD);
}

/* sim_trace_emit() without the argument checks (t and kind are the
 * caller's, never NULL): the fold inline, everything else out of line. */
static inline void
sim_trace_emit_inline(SimTrace *t, SimTime time, gint worker, guint thread,
                      const SimTraceKind *kind, gint64 a, gint64 b, gint64 c, const char *detail)
{
    if (G_UNLIKELY(t->slow)) {
        sim_trace__emit_slow(t, time, worker, thread, kind, a, b, c, detail);
        return;
    }
    t->fold = sim_trace__fold_record(t, t->fold, time, worker, thread, kind, a, b, c, detail);
    t->count++;
}

#endif /* SIM_TRACE_PRIVATE_H */
