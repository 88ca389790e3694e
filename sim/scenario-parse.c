/* scenario-parse.c — the scenario language front end: lexer, parser and
 * checker (docs/scenario-language.md is the user's reference).
 *
 * Three stages over one pass of the text:
 *   lexer    hands out tokens on demand, each with its exact line:col.  A
 *            bad token (unterminated string, bad escape, unknown unit,
 *            fractional nanoseconds, NUL byte, stray byte, invalid UTF-8)
 *            becomes an error token that is reported only when the parser
 *            reaches it, so that errors come out in text order even though
 *            the parser looks two tokens ahead;
 *   parser   recursive descent.  It builds the AST (scenario-ast.h) and
 *            checks everything that needs no other part of the file:
 *            settings, units, ranges, built-in names and arities, message
 *            types, counter and fired names.  A name the program assigned
 *            earlier in its text resolves to a variable at once; every
 *            other name, every function slot and every worker slot goes on
 *            the `pending` list, in text order (workers may be declared in
 *            a `world` section below their first use);
 *   checker  once the world is known, resolves the pending list in order
 *            (a worker, else "undefined variable"; functions against the
 *            default registry) and checks that there is a program.
 * So the error reported is the first syntax or value problem in the file,
 * or, when there is none, the first name problem.
 *
 * Ownership: section items and statements are attached to their parent
 * before they are filled in, and expressions are built bottom-up and freed
 * on their error paths, so freeing a partial scenario frees everything.
 * Recursion (expressions, blocks, operator chains) is capped at MAX_NEST
 * levels: no input can exhaust the C stack, and no tree the interpreter
 * walks is deeper than that.
 */
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include <glib.h>

#include "core/registry.h"
#include "sim/error.h"
#include "sim/faults.h"
#include "sim/scenario.h"

#define MAX_NEST    64
#define MAX_WORKERS 1000000
#define MAX_THREADS 1000000
#define MAX_SHOWN   40 /* bytes of a token quoted in a message */

/* --- the language's closed sets ------------------------------------------- */

/* Keyword arguments a call accepts: none, any (the rpc calls: the
 * function's own and timeout=), or only retain= (the backward passes). */
enum { KW_NONE, KW_ANY, KW_RETAIN };

typedef struct {
    const char *name;
    gint min, max; /* positional arguments; max -1: any */
    gint kwargs;   /* KW_* */
} Arity;

static const Arity builtins[] = {
    {"rpc_sync", 2, -1, KW_ANY},
    {"rpc_async", 2, -1, KW_ANY},
    {"wait", 1, 1, KW_NONE},
    {"wait_all", 1, -1, KW_NONE},
    {"collect_all", 1, -1, KW_NONE},
    {"ones", 0, 8, KW_NONE},
    {"zeros", 0, 8, KW_NONE},
    {"full", 1, 9, KW_NONE},
    {"tensor", 1, 1, KW_NONE},
    {"len", 1, 1, KW_NONE},
    {"now", 0, 0, KW_NONE},
    {"worker_id", 0, 0, KW_NONE},
    {"worker_name", 0, 0, KW_NONE},
    {"worker_info", 0, 1, KW_NONE},
    {"counter", 1, 1, KW_NONE},
    {"future", 0, 0, KW_NONE},
    {"str", 1, 1, KW_NONE},
    {"remote", 2, -1, KW_ANY},
    {"rref", 1, 1, KW_NONE},
    /* local autograd (core/autograd.h), on the calling thread's context;
     * from here to the end the autograd built-ins, which the interpreter
     * dispatches apart (sim_scenario_autograd_builtin_names) */
    {"param", 1, 1, KW_NONE},
    {"detach", 1, 1, KW_NONE},
    {"requires_grad", 1, 1, KW_NONE},
    {"matmul", 2, 2, KW_NONE},
    {"sum", 1, 1, KW_NONE},
    {"mean", 1, 1, KW_NONE},
    {"relu", 1, 1, KW_NONE},
    {"sigmoid", 1, 1, KW_NONE},
    {"exp", 1, 1, KW_NONE},
    {"pow", 2, 2, KW_NONE},
    {"backward", 1, 1, KW_RETAIN},
    {"grad", 1, 1, KW_NONE},
    /* distributed autograd (core/dist-autograd.h) */
    {"dist_backward", 2, 2, KW_RETAIN},
    {"dist_grad", 2, 2, KW_NONE},
    {"dist_grads_count", 1, 1, KW_NONE},
    {"dist_sgd_step", 3, 3, KW_NONE},
    {"set_simulate_backward_error", 1, 1, KW_NONE},
};

/* Same order as builtins[]. */
static const char *const builtin_names[] = {
    "rpc_sync",
    "rpc_async",
    "wait",
    "wait_all",
    "collect_all",
    "ones",
    "zeros",
    "full",
    "tensor",
    "len",
    "now",
    "worker_id",
    "worker_name",
    "worker_info",
    "counter",
    "future",
    "str",
    "remote",
    "rref",
    "param",
    "detach",
    "requires_grad",
    "matmul",
    "sum",
    "mean",
    "relu",
    "sigmoid",
    "exp",
    "pow",
    "backward",
    "grad",
    "dist_backward",
    "dist_grad",
    "dist_grads_count",
    "dist_sgd_step",
    "set_simulate_backward_error",
    NULL,
};
G_STATIC_ASSERT(G_N_ELEMENTS(builtin_names) == G_N_ELEMENTS(builtins) + 1);

static const Arity methods[] = {
    /* futures */
    {"wait", 0, 0, KW_NONE},
    {"done", 0, 0, KW_NONE},
    {"value", 0, 0, KW_NONE},
    {"then", 1, -1, KW_NONE},
    {"set_result", 1, 1, KW_NONE},
    {"set_exception", 1, 2, KW_NONE},
    /* RRefs */
    {"to_here", 0, 1, KW_NONE},
    {"local_value", 0, 0, KW_NONE},
    {"owner", 0, 0, KW_NONE},
    {"owner_name", 0, 0, KW_NONE},
    {"is_owner", 0, 0, KW_NONE},
    {"confirmed_by_owner", 0, 0, KW_NONE},
    {"get_type", 0, 0, KW_NONE},
    /* RRef proxies: r.rpc_sync([timeout]).m(…) calls m on the owner's value */
    {"rpc_sync", 0, 1, KW_NONE},
    {"rpc_async", 0, 1, KW_NONE},
    {"remote", 0, 1, KW_NONE},
};

/* Any method name after a proxy (its owner's type decides at run time). */
static const Arity proxy_method = {"<proxy method>", 0, -1, KW_NONE};

static gboolean
is_proxy(const ScExpr *e)
{
    return e->kind == SC_EXPR_METHOD &&
           (strcmp(e->u.call.name, "rpc_sync") == 0 || strcmp(e->u.call.name, "rpc_async") == 0 ||
            strcmp(e->u.call.name, "remote") == 0);
}

static const char *const counter_names[] = {
    "client_active_calls",
    "server_active_calls",
    "server_active_async_calls",
    "requests_sent",
    "responses_received",
    "requests_served",
    "timeouts",
    "late_responses",
    "decode_errors",
    /* the RRef context's debug info (spec §4.2) */
    "num_owner_rrefs",
    "num_pending_futures",
    "num_pending_users",
    "num_forks",
    "num_pending_children",
    "num_confirmed_users",
    /* the dist autograd container's debug info (spec §7.1) */
    "num_autograd_contexts",
    "num_current_backward_passes",
    NULL,
};

static const char *const fired_names[] = {
    "fail", "delay",     "drop",      "crash",  "restart", "pause",
    "loss", "duplicate", "partition", "bounce", "reorder", NULL,
};

enum { SEC_DESCRIBE, SEC_WORLD, SEC_NETWORK, SEC_FAULTS, SEC_ON, SEC_EXPECT, N_SECTIONS };
static const char *const section_names[] = {"describe", "world",  "network", "faults",
                                            "on",       "expect", NULL};

enum { W_WORKERS, W_THREADS, W_RPC_TIMEOUT, W_SEED, W_SHUTDOWN, W_TIME_LIMIT, N_WORLD };
static const char *const world_keys[] = {"workers",  "threads",    "rpc_timeout", "seed",
                                         "shutdown", "time_limit", NULL};

/* The first six in SC_LINK_SET_* bit order. */
enum { N_LATENCY, N_BANDWIDTH, N_JITTER, N_LOSS, N_DUPLICATE, N_REORDER, N_LINK, N_NET };
static const char *const net_keys[] = {"latency",   "bandwidth", "jitter", "loss",
                                       "duplicate", "reorder",   "link",   NULL};

static const char *const fault_keys[] = {"fail", "delay", "at", "after", "drop", NULL};

enum {
    X_DEADLOCK,
    X_NO_DEADLOCK,
    X_FUTURES,
    X_COUNTER,
    X_FIRED,
    X_TIME,
    X_MESSAGES,
    X_TRACE,
};
static const char *const expect_keys[] = {"deadlock", "no_deadlock", "futures_resolved",
                                          "counter",  "fired",       "time",
                                          "messages", "trace",       NULL};

/* In ScActionKind order. */
static const char *const action_names[] = {"crash",     "restart", "pause", "resume",
                                           "partition", "heal",    NULL};

static const char *const stmt_keywords[] = {
    "sleep",     "expect",  "repeat",     "parallel",      "print", "set_rpc_timeout",
    "shutdown",  "barrier", "crash",      "restart",       "pause", "resume",
    "partition", "heal",    "unregister", "dist_autograd", NULL,
};

static const char *const expr_keywords[] = {"None", "True", "False", "and", "or", "not", NULL};

/* Distributions: argument kinds, 'D' duration, 'F' number; optional ones
 * after the first min. */
static const struct {
    const char *name;
    SimDistKind kind;
    const char *sig;
    guint min;
} dists[] = {
    {"constant", SIM_DIST_CONSTANT, "D", 1}, {"uniform", SIM_DIST_UNIFORM, "DD", 2},
    {"normal", SIM_DIST_NORMAL, "DD", 2},    {"lognormal", SIM_DIST_LOGNORMAL, "DF", 2},
    {"pareto", SIM_DIST_PARETO, "DFD", 2},
};

static gint
index_of(const char *const *list, const char *s)
{
    for (gint i = 0; list[i] != NULL; i++)
        if (strcmp(list[i], s) == 0)
            return i;
    return -1;
}

/* "a, b, c" (transfer full). */
static char *
join_names(const char *const *list)
{
    GString *s = g_string_new(NULL);
    for (guint i = 0; list[i] != NULL; i++)
        g_string_append_printf(s, "%s%s", i ? ", " : "", list[i]);
    return g_string_free(s, FALSE);
}

static gboolean
is_reserved(const char *name)
{
    return index_of(expr_keywords, name) >= 0 || index_of(stmt_keywords, name) >= 0;
}

/* --- tokens ---------------------------------------------------------------- */

typedef enum {
    T_EOF,
    T_ERROR, /* str: the message; loc: where the problem is */
    T_NEWLINE,
    T_SEMI,
    T_IDENT,    /* str */
    T_STRING,   /* str: escapes done */
    T_INT,      /* u */
    T_FLOAT,    /* d */
    T_DURATION, /* ns */
    T_SIZE,     /* d: bytes */
    T_RATE,     /* d: bytes per second */
    T_PERCENT,  /* d: as a fraction (50% → 0.5) */
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_LBRACE,
    T_RBRACE,
    T_COMMA,
    T_DOT,
    T_ASSIGN,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_PLUS,
    T_MINUS,
    T_STAR,
    T_SLASH,
    T_ARROW,   /* -> */
    T_BIARROW, /* <-> */
} TokKind;

typedef struct {
    TokKind kind;
    ScLoc loc;
    const char *start; /* the raw text, for messages */
    gsize len;
    char *str; /* owned */
    guint64 u;
    SimTime ns;
    double d;
} Token;

typedef struct {
    const char *name;
    TokKind kind;
    guint64 f; /* T_DURATION: ns = value × f × 10^k */
    gint k;
    double factor; /* others: value × factor */
} Unit;

static const Unit units[] = {
    {"ns", T_DURATION, 1, 0, 0},
    {"us", T_DURATION, 1, 3, 0},
    {"ms", T_DURATION, 1, 6, 0},
    {"s", T_DURATION, 1, 9, 0},
    {"m", T_DURATION, 60, 9, 0},
    {"h", T_DURATION, 3600, 9, 0},
    {"B", T_SIZE, 0, 0, 1},
    {"KB", T_SIZE, 0, 0, 1e3},
    {"MB", T_SIZE, 0, 0, 1e6},
    {"GB", T_SIZE, 0, 0, 1e9},
    {"KiB", T_SIZE, 0, 0, 1024.0},
    {"MiB", T_SIZE, 0, 0, 1048576.0},
    {"GiB", T_SIZE, 0, 0, 1073741824.0},
    {"B/s", T_RATE, 0, 0, 1},
    {"KB/s", T_RATE, 0, 0, 1e3},
    {"MB/s", T_RATE, 0, 0, 1e6},
    {"GB/s", T_RATE, 0, 0, 1e9},
    {"KiB/s", T_RATE, 0, 0, 1024.0},
    {"MiB/s", T_RATE, 0, 0, 1048576.0},
    {"GiB/s", T_RATE, 0, 0, 1073741824.0},
    {"bps", T_RATE, 0, 0, 0.125},
    {"Kbps", T_RATE, 0, 0, 125.0},
    {"Mbps", T_RATE, 0, 0, 125e3},
    {"Gbps", T_RATE, 0, 0, 125e6},
    {"%", T_PERCENT, 0, 0, 0.01},
};

static const Unit *
unit_lookup(const char *s, gsize n)
{
    for (gsize i = 0; i < G_N_ELEMENTS(units); i++)
        if (strlen(units[i].name) == n && memcmp(units[i].name, s, n) == 0)
            return &units[i];
    return NULL;
}

static void
token_clear(Token *t)
{
    g_free(t->str);
    memset(t, 0, sizeof *t);
}

/* --- the parser's state ---------------------------------------------------- */

typedef enum {
    PEND_WORKER,          /* *slot = id */
    PEND_WORKER_IN_ARRAY, /* arr[idx] = id */
    PEND_ALL_WORKERS,     /* arr = 0 … n-1 */
    PEND_NAME,            /* expr: a variable was ruled out, so a worker */
    PEND_FUNC,            /* expr: a registered function */
} PendKind;

typedef struct {
    PendKind kind;
    ScLoc loc;
    char *name; /* PEND_WORKER*: owned */
    gint *slot;
    GArray *arr;
    guint idx;
    ScExpr *expr;
} Pending;

/* Settings seen in one block (world, network or link), for duplicates. */
#define MAX_KEYS 8
typedef struct {
    gboolean set[MAX_KEYS];
    ScLoc at[MAX_KEYS];
} Seen;
G_STATIC_ASSERT((int)N_NET <= MAX_KEYS && (int)N_WORLD <= MAX_KEYS);

typedef struct {
    const char *path;
    const char *text;
    gsize len, pos;
    guint line;
    gsize line_start;
    gint brackets; /* open ( and [: newlines inside them are not tokens */
    gboolean lex_dead;
    Token la[2];
    guint n_la;
    guint nest;
    GError *error;

    ScScenario *sc;
    GArray *pending;  /* Pending, in text order */
    GHashTable *vars; /* names assigned so far in the current program */
    GPtrArray *names; /* workers [ … ]: the declared names, or NULL */
    gboolean sec_seen[N_SECTIONS];
    ScLoc sec_at[N_SECTIONS];
    ScLoc eof;
    const ScEndExpect *deadlock_x, *no_deadlock_x, *deadlock_contains_x;
} Parser;

#define FAILED(p) ((p)->error != NULL)

static void G_GNUC_PRINTF(3, 4) fail(Parser *p, ScLoc loc, const char *fmt, ...)
{
    if (p->error != NULL)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_set_error(&p->error, SIM_ERROR, SIM_ERROR_PARSE, "%s:%u:%u: %s", p->path, loc.line, loc.col,
                msg);
    g_free(msg);
}

/* --- lexer ------------------------------------------------------------------- */

static ScLoc
loc_at(const Parser *p, gsize pos)
{
    return (ScLoc){p->line, (guint)(pos - p->line_start + 1)};
}

static void G_GNUC_PRINTF(4, 5) lex_error(Parser *p, Token *t, gsize pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_free(t->str);
    t->str = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    t->kind = T_ERROR;
    t->loc = loc_at(p, pos);
    p->lex_dead = TRUE;
}

static gboolean
is_ident_char(char c)
{
    return g_ascii_isalnum(c) || c == '_';
}

/* Checks the UTF-8 sequence at pos; its length, or 0 after an error. */
static gsize
lex_utf8(Parser *p, Token *t, gsize pos, const char *where)
{
    const guchar b = (guchar)p->text[pos];
    gunichar ch = g_utf8_get_char_validated(p->text + pos, (gssize)(p->len - pos));
    if (ch == (gunichar)-1 || ch == (gunichar)-2) {
        lex_error(p, t, pos, "invalid UTF-8 in %s (byte 0x%02x)", where, b);
        return 0;
    }
    return (gsize)g_utf8_skip[b];
}

static gboolean
lex_comment(Parser *p, Token *t)
{
    gsize i = p->pos + 1;
    while (i < p->len && p->text[i] != '\n') {
        const guchar b = (guchar)p->text[i];
        if (b == 0) {
            lex_error(p, t, i, "unexpected NUL byte");
            return FALSE;
        }
        if (b < 0x80) {
            i++;
            continue;
        }
        gsize n = lex_utf8(p, t, i, "a comment");
        if (n == 0)
            return FALSE;
        i += n;
    }
    p->pos = i;
    return TRUE;
}

static void
lex_ident(Parser *p, Token *t)
{
    gsize i = p->pos;
    while (i < p->len && is_ident_char(p->text[i]))
        i++;
    t->kind = T_IDENT;
    t->str = g_strndup(p->text + p->pos, i - p->pos);
    p->pos = i;
}

static void
lex_string(Parser *p, Token *t)
{
    const char *s = p->text;
    gsize i = p->pos + 1;
    GString *b = g_string_new(NULL);
    for (;;) {
        if (i >= p->len || s[i] == '\n') {
            lex_error(p, t, p->pos, "unterminated string");
            goto fail;
        }
        const guchar c = (guchar)s[i];
        if (c == '"') {
            i++;
            break;
        }
        if (c == 0) {
            lex_error(p, t, i, "unexpected NUL byte");
            goto fail;
        }
        if (c == '\\') {
            if (i + 1 >= p->len || s[i + 1] == '\n') {
                lex_error(p, t, p->pos, "unterminated string");
                goto fail;
            }
            const guchar e = (guchar)s[i + 1];
            switch (e) {
            case 'n':
                g_string_append_c(b, '\n');
                break;
            case 't':
                g_string_append_c(b, '\t');
                break;
            case '"':
            case '\\':
                g_string_append_c(b, (char)e);
                break;
            default:
                if (e >= 0x20 && e < 0x7f)
                    lex_error(p, t, i,
                              "invalid escape '\\%c' in string (allowed: \\n \\t \\\" \\\\)", e);
                else
                    lex_error(p, t, i, "invalid escape in string (backslash, then byte 0x%02x)", e);
                goto fail;
            }
            i += 2;
            continue;
        }
        if (c < 0x20 && c != '\t') {
            lex_error(p, t, i, "control character 0x%02x in string (use an escape)", c);
            goto fail;
        }
        if (c < 0x80) {
            g_string_append_c(b, (char)c);
            i++;
            continue;
        }
        gsize n = lex_utf8(p, t, i, "a string");
        if (n == 0)
            goto fail;
        g_string_append_len(b, s + i, (gssize)n);
        i += n;
    }
    t->kind = T_STRING;
    t->str = g_string_free(b, FALSE);
    p->pos = i;
    return;
fail:
    g_string_free(b, TRUE);
}

/* 10^e for e <= 19 (the largest that fits). */
static guint64
pow10_u64(gint e)
{
    guint64 r = 1;
    while (e-- > 0)
        r *= 10;
    return r;
}

enum { SCALE_OK, SCALE_OVERFLOW, SCALE_FRACTION };

/* mant × 10^exp × f × 10^k, exactly, as a SimTime. */
static int
scale_exact(guint64 mant, gint exp, guint64 f, gint k, SimTime *out)
{
    *out = 0;
    if (mant == 0)
        return SCALE_OK;
    while (mant % 10 == 0) {
        mant /= 10;
        exp++;
    }
    if (mant > G_MAXUINT64 / f)
        return exp + k >= 0 ? SCALE_OVERFLOW : SCALE_FRACTION;
    guint64 r = mant * f;
    gint e = exp + k;
    if (e >= 0) {
        for (gint i = 0; i < e; i++) {
            if (r > (guint64)G_MAXINT64 / 10)
                return SCALE_OVERFLOW;
            r *= 10;
        }
    } else {
        if (-e > 19 || r % pow10_u64(-e) != 0)
            return SCALE_FRACTION; /* r < 2^64 < 10^20: not divisible when -e > 19 */
        r /= pow10_u64(-e);
    }
    if (r > (guint64)G_MAXINT64)
        return SCALE_OVERFLOW;
    *out = (SimTime)r;
    return SCALE_OK;
}

/* Adds one significant digit to mant × 10^exp; digits that do not fit are
 * dropped (exactness lost only if they are not zero). */
static void
num_digit(guint64 *mant, gint *exp, gboolean *exact, gboolean fraction, guint d)
{
    if (*mant <= (G_MAXUINT64 - d) / 10) {
        *mant = *mant * 10 + d;
        if (fraction)
            (*exp)--;
        return;
    }
    if (!fraction)
        (*exp)++;
    if (d != 0)
        *exact = FALSE;
}

static void
lex_number(Parser *p, Token *t)
{
    const char *s = p->text;
    const gsize start = p->pos, n = p->len;
    gsize i = start;
    guint64 mant = 0;
    gint exp = 0;
    gboolean exact = TRUE, is_float = FALSE, bad = FALSE;
    GString *clean = g_string_new(NULL);

    for (int part = 0; part < 2; part++) {
        while (i < n && (g_ascii_isdigit(s[i]) || s[i] == '_')) {
            if (s[i] == '_') {
                if (!g_ascii_isdigit(s[i - 1]) || i + 1 >= n || !g_ascii_isdigit(s[i + 1]))
                    bad = TRUE;
            } else {
                num_digit(&mant, &exp, &exact, part == 1, (guint)(s[i] - '0'));
                g_string_append_c(clean, s[i]);
            }
            i++;
        }
        if (part == 0) {
            if (i + 1 < n && s[i] == '.' && g_ascii_isdigit(s[i + 1])) {
                is_float = TRUE;
                g_string_append_c(clean, '.');
                i++;
            } else {
                break;
            }
        }
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        gsize j = i + 1;
        gint sign = 1;
        if (j < n && (s[j] == '+' || s[j] == '-')) {
            sign = s[j] == '-' ? -1 : 1;
            j++;
        }
        if (j < n && g_ascii_isdigit(s[j])) {
            gint e = 0;
            is_float = TRUE;
            g_string_append_printf(clean, "e%c", sign < 0 ? '-' : '+');
            while (j < n && g_ascii_isdigit(s[j])) {
                if (e < 100000)
                    e = e * 10 + (s[j] - '0');
                g_string_append_c(clean, s[j]);
                j++;
            }
            exp += sign * e;
            i = j;
        }
    }
    /* the unit: letters, or '%'; a size unit may take "/s" */
    const gsize ustart = i;
    while (i < n && g_ascii_isalpha(s[i]))
        i++;
    if (i == ustart && i < n && s[i] == '%')
        i++;
    else if (i > ustart && i + 1 < n && s[i] == '/' && s[i + 1] == 's' &&
             (i + 2 >= n || !is_ident_char(s[i + 2]))) {
        const Unit *u = unit_lookup(s + ustart, i - ustart);
        if (u != NULL && u->kind == T_SIZE)
            i += 2;
    }
    if (i < n && (is_ident_char(s[i]) || (s[i] == '.' && i + 1 < n && g_ascii_isdigit(s[i + 1])))) {
        bad = TRUE;
        while (i < n && (is_ident_char(s[i]) || s[i] == '.'))
            i++;
    }
    const int shown = (int)MIN(i - start, MAX_SHOWN);
    p->pos = i;
    if (bad) {
        lex_error(p, t, start, "invalid number '%.*s'", shown, s + start);
        goto out;
    }
    const Unit *u = NULL;
    if (i > ustart) {
        u = unit_lookup(s + ustart, i - ustart);
        if (u == NULL) {
            lex_error(p, t, ustart,
                      "unknown unit '%.*s' (expected ns, us, ms, s, m, h; B, KB, MB, GB, KiB, "
                      "MiB, GiB, optionally with /s; bps, Kbps, Mbps, Gbps; or %%)",
                      (int)MIN(i - ustart, MAX_SHOWN), s + ustart);
            goto out;
        }
    }
    if (u == NULL && !is_float) {
        if (exp != 0 || !exact) {
            lex_error(p, t, start, "integer '%.*s' is too large", shown, s + start);
            goto out;
        }
        t->kind = T_INT;
        t->u = mant;
        goto out;
    }
    if (u != NULL && u->kind == T_DURATION) {
        if (!exact) {
            lex_error(p, t, start, "too many digits in duration '%.*s'", shown, s + start);
            goto out;
        }
        switch (scale_exact(mant, exp, u->f, u->k, &t->ns)) {
        case SCALE_OVERFLOW:
            lex_error(p, t, start, "duration '%.*s' is too large", shown, s + start);
            goto out;
        case SCALE_FRACTION:
            lex_error(p, t, start,
                      "duration '%.*s' is not a whole number of nanoseconds (1ns is the "
                      "smallest unit)",
                      shown, s + start);
            goto out;
        default:
            t->kind = T_DURATION;
            goto out;
        }
    }
    double d = g_ascii_strtod(clean->str, NULL);
    if (u != NULL)
        d *= u->factor;
    if (!isfinite(d)) {
        lex_error(p, t, start, "number '%.*s' is out of range", shown, s + start);
        goto out;
    }
    t->kind = u != NULL ? u->kind : T_FLOAT;
    t->d = d;
out:
    g_string_free(clean, TRUE);
}

static void
lex_punct(Parser *p, Token *t)
{
    const char *s = p->text + p->pos;
    const gsize left = p->len - p->pos;
    const guchar c = (guchar)s[0];
    gsize n = 1;
    switch (c) {
    case '(':
        t->kind = T_LPAREN;
        p->brackets++;
        break;
    case ')':
        t->kind = T_RPAREN;
        if (p->brackets > 0)
            p->brackets--;
        break;
    case '[':
        t->kind = T_LBRACK;
        p->brackets++;
        break;
    case ']':
        t->kind = T_RBRACK;
        if (p->brackets > 0)
            p->brackets--;
        break;
    case '{':
        t->kind = T_LBRACE;
        break;
    case '}':
        t->kind = T_RBRACE;
        break;
    case ',':
        t->kind = T_COMMA;
        break;
    case ';':
        t->kind = T_SEMI;
        break;
    case '.':
        t->kind = T_DOT;
        break;
    case '+':
        t->kind = T_PLUS;
        break;
    case '*':
        t->kind = T_STAR;
        break;
    case '/':
        t->kind = T_SLASH;
        break;
    case '=':
        if (left > 1 && s[1] == '=') {
            t->kind = T_EQ;
            n = 2;
        } else {
            t->kind = T_ASSIGN;
        }
        break;
    case '!':
        if (left > 1 && s[1] == '=') {
            t->kind = T_NE;
            n = 2;
        } else {
            lex_error(p, t, p->pos, "unexpected character '!' (use 'not')");
        }
        break;
    case '<':
        if (left > 2 && s[1] == '-' && s[2] == '>') {
            t->kind = T_BIARROW;
            n = 3;
        } else if (left > 1 && s[1] == '=') {
            t->kind = T_LE;
            n = 2;
        } else {
            t->kind = T_LT;
        }
        break;
    case '>':
        if (left > 1 && s[1] == '=') {
            t->kind = T_GE;
            n = 2;
        } else {
            t->kind = T_GT;
        }
        break;
    case '-':
        if (left > 1 && s[1] == '>') {
            t->kind = T_ARROW;
            n = 2;
        } else {
            t->kind = T_MINUS;
        }
        break;
    case 0:
        lex_error(p, t, p->pos, "unexpected NUL byte");
        break;
    default:
        if (c == '\'')
            lex_error(p, t, p->pos, "unexpected character \"'\" (strings use double quotes)");
        else if (c >= 0x21 && c < 0x7f)
            lex_error(p, t, p->pos, "unexpected character '%c'", c);
        else
            lex_error(p, t, p->pos,
                      "unexpected byte 0x%02x (only ASCII is allowed outside strings and "
                      "comments)",
                      c);
        break;
    }
    p->pos += n;
}

/* The next token into t (cleared first). */
static void
lex(Parser *p, Token *t)
{
    memset(t, 0, sizeof *t);
    const char *s = p->text;
    for (;;) {
        while (p->pos < p->len && (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\r' ||
                                   s[p->pos] == '\f' || s[p->pos] == '\v'))
            p->pos++;
        if (p->lex_dead || p->pos >= p->len) {
            t->kind = T_EOF;
            t->loc = loc_at(p, MIN(p->pos, p->len));
            t->start = s + MIN(p->pos, p->len);
            return;
        }
        if (s[p->pos] == '#') {
            if (!lex_comment(p, t))
                return;
            continue;
        }
        if (s[p->pos] == '\n') {
            ScLoc at = loc_at(p, p->pos);
            p->pos++;
            p->line++;
            p->line_start = p->pos;
            if (p->brackets > 0)
                continue;
            t->kind = T_NEWLINE;
            t->loc = at;
            t->start = s + p->pos - 1;
            t->len = 1;
            return;
        }
        break;
    }
    const gsize start = p->pos;
    t->loc = loc_at(p, start);
    t->start = s + start;
    const char c = s[start];
    if (g_ascii_isdigit(c))
        lex_number(p, t);
    else if (g_ascii_isalpha(c) || c == '_')
        lex_ident(p, t);
    else if (c == '"')
        lex_string(p, t);
    else
        lex_punct(p, t);
    t->len = p->pos > start ? p->pos - start : 0;
}

/* --- token access -------------------------------------------------------------- */

static Token *
peek_n(Parser *p, guint n)
{
    g_assert(n >= 1 && n <= G_N_ELEMENTS(p->la));
    while (p->n_la < n)
        lex(p, &p->la[p->n_la++]);
    return &p->la[n - 1];
}

/* The current token; reaching a bad one reports it. */
static Token *
peek(Parser *p)
{
    Token *t = peek_n(p, 1);
    if (t->kind == T_ERROR)
        fail(p, t->loc, "%s", t->str);
    return t;
}

static void
advance(Parser *p)
{
    peek_n(p, 1);
    token_clear(&p->la[0]);
    p->la[0] = p->la[1];
    memset(&p->la[1], 0, sizeof p->la[1]);
    p->n_la--;
}

/* Moves the current token's string out and advances. */
static char *
take_str(Parser *p)
{
    char *s = peek_n(p, 1)->str;
    p->la[0].str = NULL;
    advance(p);
    return s;
}

static gboolean
at_word(Parser *p, const char *word)
{
    Token *t = peek(p);
    return t->kind == T_IDENT && strcmp(t->str, word) == 0;
}

/* "'text'", "end of line", "end of file" (transfer full). */
static char *
tok_desc(const Token *t)
{
    switch (t->kind) {
    case T_EOF:
        return g_strdup("end of file");
    case T_NEWLINE:
        return g_strdup("end of line");
    case T_ERROR:
        return g_strdup("an invalid token");
    default:
        break;
    }
    gsize n = t->len;
    gboolean cut = n > MAX_SHOWN;
    if (cut) {
        n = MAX_SHOWN;
        while (n > 0 && ((guchar)t->start[n] & 0xc0) == 0x80)
            n--; /* never split a UTF-8 sequence */
    }
    return g_strdup_printf("'%.*s%s'", (int)n, t->start, cut ? "…" : "");
}

static void G_GNUC_PRINTF(2, 3) fail_got(Parser *p, const char *fmt, ...)
{
    Token *t = peek(p);
    if (FAILED(p))
        return;
    va_list ap;
    va_start(ap, fmt);
    char *what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *got = tok_desc(t);
    fail(p, t->loc, "%s, got %s", what, got);
    g_free(got);
    g_free(what);
}

static gboolean
expect_tok(Parser *p, TokKind kind, const char *what)
{
    if (peek(p)->kind == kind && !FAILED(p)) {
        advance(p);
        return TRUE;
    }
    fail_got(p, "expected %s", what);
    return FALSE;
}

/* A statement or setting ends at a newline, ';', or before '}' or the end. */
static gboolean
end_stmt(Parser *p, const char *what)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    switch (t->kind) {
    case T_NEWLINE:
    case T_SEMI:
        advance(p);
        return TRUE;
    case T_RBRACE:
    case T_EOF:
        return TRUE;
    default: {
        char *got = tok_desc(t);
        if (t->kind == T_ASSIGN)
            fail(p, t->loc, "unexpected '=' after %s (use '==' to compare)", what);
        else
            fail(p, t->loc, "unexpected %s after %s (expected a newline or ';')", got, what);
        g_free(got);
        return FALSE;
    }
    }
}

static gboolean
nest_push(Parser *p, ScLoc loc)
{
    if (++p->nest > MAX_NEST) {
        fail(p, loc, "nesting too deep (more than %d levels)", MAX_NEST);
        return FALSE;
    }
    return TRUE;
}

/* --- AST allocation and freeing -------------------------------------------------- */

static void expr_free(ScExpr *e);

static void
expr_free_cb(gpointer e)
{
    expr_free(e);
}

static void
kwarg_free(gpointer data)
{
    ScKwarg *k = data;
    g_free(k->name);
    expr_free(k->value);
    g_free(k);
}

static void
expr_free(ScExpr *e)
{
    if (e == NULL)
        return;
    switch (e->kind) {
    case SC_EXPR_STRING:
        g_free(e->u.s);
        break;
    case SC_EXPR_NAME:
        g_free(e->u.name.name);
        break;
    case SC_EXPR_LIST:
        if (e->u.items != NULL)
            g_ptr_array_unref(e->u.items);
        break;
    case SC_EXPR_CALL:
    case SC_EXPR_METHOD:
        expr_free(e->u.call.target);
        g_free(e->u.call.name);
        if (e->u.call.args != NULL)
            g_ptr_array_unref(e->u.call.args);
        if (e->u.call.kwargs != NULL)
            g_ptr_array_unref(e->u.call.kwargs);
        break;
    case SC_EXPR_BINOP:
    case SC_EXPR_NEG:
    case SC_EXPR_NOT:
        expr_free(e->u.bin.lhs);
        expr_free(e->u.bin.rhs);
        break;
    default:
        break;
    }
    g_free(e);
}

static ScExpr *
expr_new(ScExprKind kind, ScLoc loc)
{
    ScExpr *e = g_new0(ScExpr, 1);
    e->kind = kind;
    e->loc = loc;
    return e;
}

static void stmt_free(gpointer data);

static GPtrArray *
stmt_array_new(void)
{
    return g_ptr_array_new_with_free_func(stmt_free);
}

static void
stmt_array_unref(gpointer data)
{
    g_ptr_array_unref(data);
}

static void
stmt_free(gpointer data)
{
    ScStmt *s = data;
    switch (s->kind) {
    case SC_STMT_EXPR:
    case SC_STMT_SLEEP:
    case SC_STMT_EXPECT:
    case SC_STMT_PRINT:
    case SC_STMT_SET_TIMEOUT:
    case SC_STMT_UNREGISTER:
        expr_free(s->u.expr);
        break;
    case SC_STMT_ASSIGN:
        g_free(s->u.assign.name);
        expr_free(s->u.assign.value);
        break;
    case SC_STMT_EXPECT_ERROR:
        expr_free(s->u.experr.expr);
        g_free(s->u.experr.kind);
        g_free(s->u.experr.contains);
        break;
    case SC_STMT_REPEAT:
        expr_free(s->u.repeat.count);
        g_free(s->u.repeat.var);
        if (s->u.repeat.body != NULL)
            g_ptr_array_unref(s->u.repeat.body);
        break;
    case SC_STMT_PARALLEL:
        if (s->u.blocks != NULL)
            g_ptr_array_unref(s->u.blocks);
        break;
    case SC_STMT_SHUTDOWN:
        expr_free(s->u.shutdown.timeout);
        break;
    case SC_STMT_BARRIER:
        if (s->u.workers != NULL)
            g_array_unref(s->u.workers);
        break;
    case SC_STMT_ACTION:
        break;
    case SC_STMT_DIST_CONTEXT:
        g_free(s->u.ctx.var);
        if (s->u.ctx.body != NULL)
            g_ptr_array_unref(s->u.ctx.body);
        break;
    }
    g_free(s);
}

static void
program_free(gpointer data)
{
    ScProgram *prog = data;
    if (prog->workers != NULL)
        g_array_unref(prog->workers);
    if (prog->body != NULL)
        g_ptr_array_unref(prog->body);
    g_free(prog);
}

static void
agent_fault_free(gpointer data)
{
    ScAgentFault *f = data;
    if (f->types != NULL)
        g_ptr_array_unref(f->types);
    g_free(f);
}

static void
timed_fault_free(gpointer data)
{
    ScTimedFault *f = data;
    g_free(f->trace_kind);
    g_free(f);
}

static void
end_expect_free(gpointer data)
{
    ScEndExpect *x = data;
    g_free(x->name);
    g_free(x);
}

static ScScenario *
scenario_new(const char *path)
{
    ScScenario *sc = g_new0(ScScenario, 1);
    sc->path = g_strdup(path);
    sc->n_workers = 4;
    sc->rpc_timeout = -1;
    sc->auto_shutdown = TRUE;
    sc->time_limit = 3600 * SIM_S;
    sim_link_config_init(&sc->net_default);
    sc->links = g_ptr_array_new_with_free_func(g_free);
    sc->agent_faults = g_ptr_array_new_with_free_func(agent_fault_free);
    sc->timed_faults = g_ptr_array_new_with_free_func(timed_fault_free);
    sc->programs = g_ptr_array_new_with_free_func(program_free);
    sc->expects = g_ptr_array_new_with_free_func(end_expect_free);
    return sc;
}

void
sim_scenario_free(ScScenario *sc)
{
    if (sc == NULL)
        return;
    g_free(sc->path);
    g_free(sc->description);
    g_strfreev(sc->worker_names);
    g_ptr_array_unref(sc->links);
    g_ptr_array_unref(sc->agent_faults);
    g_ptr_array_unref(sc->timed_faults);
    g_ptr_array_unref(sc->programs);
    g_ptr_array_unref(sc->expects);
    g_free(sc);
}

/* --- worker slots ------------------------------------------------------------------ */

static void
pending_clear(gpointer data)
{
    Pending *pd = data;
    g_free(pd->name);
}

static void
pend(Parser *p, Pending pd)
{
    g_array_append_val(p->pending, pd);
}

/* A worker name (an identifier or a string) or, with allow_any, '*'.
 * name: (transfer full), NULL for '*'. */
static gboolean
parse_worker_ref(Parser *p, gboolean allow_any, char **name, ScLoc *loc)
{
    Token *t = peek(p);
    *name = NULL;
    if (FAILED(p))
        return FALSE;
    *loc = t->loc;
    if (t->kind == T_IDENT || t->kind == T_STRING) {
        *name = take_str(p);
        return TRUE;
    }
    if (t->kind == T_STAR && allow_any) {
        advance(p);
        return TRUE;
    }
    fail_got(p, allow_any ? "expected a worker name or '*'" : "expected a worker name");
    return FALSE;
}

/* Parses a worker name into *slot (resolved by the checker). */
static gboolean
parse_worker_slot(Parser *p, gint *slot)
{
    char *name;
    ScLoc loc;
    *slot = -1;
    if (!parse_worker_ref(p, FALSE, &name, &loc))
        return FALSE;
    pend(p, (Pending){.kind = PEND_WORKER, .loc = loc, .name = name, .slot = slot});
    return TRUE;
}

/* Appends a worker name to arr; seen (names so far in this list) catches
 * repeats. */
static gboolean
parse_worker_into(Parser *p, GArray *arr, GHashTable *seen)
{
    char *name;
    ScLoc loc;
    if (!parse_worker_ref(p, FALSE, &name, &loc))
        return FALSE;
    if (g_hash_table_contains(seen, name)) {
        fail(p, loc, "worker '%s' is listed twice", name);
        g_free(name);
        return FALSE;
    }
    g_hash_table_add(seen, g_strdup(name));
    gint none = -1;
    g_array_append_val(arr, none);
    pend(p, (Pending){.kind = PEND_WORKER_IN_ARRAY,
                      .loc = loc,
                      .name = name,
                      .arr = arr,
                      .idx = arr->len - 1});
    return TRUE;
}

/* --- literal values (sections) ------------------------------------------------------ */

static gboolean
parse_duration_lit(Parser *p, const char *what, SimTime *out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind == T_DURATION) {
        *out = t->ns;
        advance(p);
        return TRUE;
    }
    if (t->kind == T_INT || t->kind == T_FLOAT)
        fail_got(p, "%s needs a duration with a unit (ns, us, ms, s, m, h)", what);
    else
        fail_got(p, "%s needs a duration (e.g. 10ms)", what);
    return FALSE;
}

static gboolean
parse_uint(Parser *p, const char *what, guint64 min, guint64 max, guint64 *out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind != T_INT) {
        fail_got(p, "%s needs a whole number", what);
        return FALSE;
    }
    if (t->u < min || t->u > max) {
        fail(p, t->loc,
             "%s must be between %" G_GUINT64_FORMAT " and %" G_GUINT64_FORMAT
             " (got %" G_GUINT64_FORMAT ")",
             what, min, max, t->u);
        return FALSE;
    }
    *out = t->u;
    advance(p);
    return TRUE;
}

static gboolean
parse_prob(Parser *p, const char *what, double *out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    double v;
    switch (t->kind) {
    case T_PERCENT:
    case T_FLOAT:
        v = t->d;
        break;
    case T_INT:
        v = (double)t->u;
        break;
    default:
        fail_got(p, "%s needs a probability (e.g. 0.1 or 10%%)", what);
        return FALSE;
    }
    if (!(v >= 0.0 && v <= 1.0)) {
        fail_got(p, "%s must be a probability between 0 and 1 (or 0%% and 100%%)", what);
        return FALSE;
    }
    *out = v;
    advance(p);
    return TRUE;
}

static gboolean
parse_rate(Parser *p, guint64 *out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind == T_INT && t->u == 0) {
        *out = 0;
        advance(p);
        return TRUE;
    }
    if (t->kind != T_RATE) {
        fail_got(p, "bandwidth needs a rate such as 1GB/s or 10Gbps (0: unlimited)");
        return FALSE;
    }
    if (t->d >= 18446744073709551615.0) {
        fail_got(p, "bandwidth is too large");
        return FALSE;
    }
    guint64 v = (guint64)(t->d + 0.5);
    if (v == 0 && t->d > 0) {
        fail_got(p, "bandwidth is below 1 byte per second");
        return FALSE;
    }
    *out = v;
    advance(p);
    return TRUE;
}

static gboolean
parse_dist(Parser *p, SimDist *out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind == T_DURATION) {
        *out = sim_dist_constant(t->ns);
        advance(p);
        return TRUE;
    }
    if (t->kind != T_IDENT) {
        fail_got(p, "latency needs a duration or a distribution (constant, uniform, normal, "
                    "lognormal, pareto)");
        return FALSE;
    }
    gint k = -1;
    for (gsize i = 0; i < G_N_ELEMENTS(dists); i++)
        if (strcmp(dists[i].name, t->str) == 0)
            k = (gint)i;
    if (k < 0) {
        fail(p, t->loc,
             "unknown distribution '%s' (expected constant, uniform, normal, lognormal or pareto)",
             t->str);
        return FALSE;
    }
    const char *name = dists[k].name, *sig = dists[k].sig;
    const ScLoc name_loc = t->loc;
    const guint max = (guint)strlen(sig);
    advance(p);
    if (!expect_tok(p, T_LPAREN, "'(' after the distribution name"))
        return FALSE;
    SimTime dur[3] = {0, 0, 0};
    double shape = 0;
    guint n = 0;
    for (;;) {
        t = peek(p);
        if (FAILED(p))
            return FALSE;
        if (t->kind == T_RPAREN)
            break;
        if (n >= max) {
            fail(p, t->loc, "%s() takes at most %u argument%s (%u given)", name, max,
                 max == 1 ? "" : "s", n + 1);
            return FALSE;
        }
        if (sig[n] == 'D') {
            if (!parse_duration_lit(p, "this argument", &dur[n]))
                return FALSE;
        } else if (t->kind == T_INT || t->kind == T_FLOAT) {
            shape = t->kind == T_INT ? (double)t->u : t->d;
            advance(p);
        } else {
            fail_got(p, "argument %u of %s() is the shape and needs a number", n + 1, name);
            return FALSE;
        }
        n++;
        t = peek(p);
        if (t->kind == T_COMMA)
            advance(p);
        else if (t->kind != T_RPAREN) {
            fail_got(p, "expected ',' or ')' in %s()", name);
            return FALSE;
        }
    }
    if (n < dists[k].min) {
        fail(p, t->loc, "%s() takes %s%u arguments (%u given)", name,
             dists[k].min < max ? "at least " : "", dists[k].min, n);
        return FALSE;
    }
    advance(p);
    *out = (SimDist){.kind = dists[k].kind, .a = dur[0], .shape = shape};
    switch (out->kind) {
    case SIM_DIST_UNIFORM:
    case SIM_DIST_NORMAL:
        out->b = dur[1];
        if (out->kind == SIM_DIST_UNIFORM && out->a > out->b) {
            fail(p, name_loc, "uniform(): the lower bound is above the upper bound");
            return FALSE;
        }
        break;
    case SIM_DIST_PARETO:
        out->b = n > 2 ? dur[2] : 0;
        if (!(shape > 0)) {
            fail(p, name_loc, "pareto(): the shape must be positive");
            return FALSE;
        }
        break;
    default:
        break;
    }
    return TRUE;
}

/* --- blocks -------------------------------------------------------------------------- */

typedef gboolean (*ItemFunc)(Parser *p, gpointer ctx);

/* '{' items '}'; what names the block in "expected '}' to close …". */
static gboolean
parse_braced(Parser *p, const char *what, ScLoc opened, ItemFunc item, gpointer ctx)
{
    while (peek(p)->kind == T_NEWLINE)
        advance(p);
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind != T_LBRACE) {
        fail_got(p, "expected '{' after '%s'", what);
        return FALSE;
    }
    if (!nest_push(p, t->loc))
        return FALSE;
    advance(p);
    for (;;) {
        t = peek(p);
        if (FAILED(p))
            return FALSE;
        if (t->kind == T_NEWLINE || t->kind == T_SEMI) {
            advance(p);
            continue;
        }
        if (t->kind == T_RBRACE) {
            advance(p);
            p->nest--;
            return TRUE;
        }
        if (t->kind == T_EOF) {
            fail(p, t->loc, "expected '}' to close '%s' block opened at %u:%u", what, opened.line,
                 opened.col);
            return FALSE;
        }
        if (!item(p, ctx))
            return FALSE;
    }
}

/* --- expressions ---------------------------------------------------------------------- */

static ScExpr *parse_expr(Parser *p);

static const Arity *
arity_lookup(const Arity *table, gsize n, const char *name)
{
    for (gsize i = 0; i < n; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

/* A literal that cannot be a duration (durations as values are seconds, so
 * this only catches the forgotten unit). */
static gboolean
is_plain_literal(const ScExpr *e)
{
    if (e->kind == SC_EXPR_NEG)
        e = e->u.bin.lhs;
    switch (e->kind) {
    case SC_EXPR_NONE:
    case SC_EXPR_BOOL:
    case SC_EXPR_INT:
    case SC_EXPR_FLOAT:
    case SC_EXPR_STRING:
    case SC_EXPR_LIST:
        return TRUE;
    default:
        return FALSE;
    }
}

static gboolean
check_duration_expr(Parser *p, const ScExpr *e, const char *what)
{
    if (!is_plain_literal(e))
        return TRUE;
    fail(p, e->loc, "%s needs a duration with a unit (e.g. 100ms)", what);
    return FALSE;
}

/* The index of the argument that names a registered function, or -1. */
static gint
function_slot(const ScExpr *e)
{
    if (e->kind == SC_EXPR_CALL &&
        (strcmp(e->u.call.name, "rpc_sync") == 0 || strcmp(e->u.call.name, "rpc_async") == 0 ||
         strcmp(e->u.call.name, "remote") == 0))
        return 1;
    if (e->kind == SC_EXPR_METHOD && strcmp(e->u.call.name, "then") == 0)
        return 0;
    return -1;
}

/* Arity, keyword arguments and the special slots of a call or method call
 * whose arguments are parsed. */
static gboolean
check_call(Parser *p, ScExpr *e, const Arity *a, ScLoc name_loc)
{
    const char *name = e->u.call.name;
    const guint n = e->u.call.args->len;
    if ((gint)n < a->min || (a->max >= 0 && (gint)n > a->max)) {
        gint lim = (gint)n < a->min ? a->min : a->max;
        const char *plural = lim == 1 ? "" : "s";
        if (a->max == 0)
            fail(p, name_loc, "%s() takes no arguments (%u given)", name, n);
        else if (a->min == a->max)
            fail(p, name_loc, "%s() takes exactly %d argument%s (%u given)", name, lim, plural, n);
        else if ((gint)n < a->min)
            fail(p, name_loc, "%s() takes at least %d argument%s (%u given)", name, lim, plural, n);
        else
            fail(p, name_loc, "%s() takes at most %d argument%s (%u given)", name, lim, plural, n);
        return FALSE;
    }
    if (a->kwargs == KW_NONE && e->u.call.kwargs->len > 0) {
        const ScKwarg *k = g_ptr_array_index(e->u.call.kwargs, 0);
        fail(p, k->value->loc, "%s() takes no keyword arguments (got '%s=')", name, k->name);
        return FALSE;
    }
    for (guint i = 0; i < e->u.call.kwargs->len; i++) {
        const ScKwarg *k = g_ptr_array_index(e->u.call.kwargs, i);
        if (a->kwargs == KW_RETAIN && strcmp(k->name, "retain") != 0) {
            fail(p, k->value->loc, "%s() got an unexpected keyword argument '%s' (only retain=)",
                 name, k->name);
            return FALSE;
        }
        if (a->kwargs == KW_ANY && strcmp(k->name, "timeout") == 0 &&
            !check_duration_expr(p, k->value, "timeout="))
            return FALSE;
    }
    gint slot = function_slot(e);
    if (slot >= 0) {
        ScExpr *f = g_ptr_array_index(e->u.call.args, slot);
        if (f->kind == SC_EXPR_STRING) { /* "aten::add": a name that is no identifier */
            char *s = f->u.s;
            f->kind = SC_EXPR_NAME;
            memset(&f->u, 0, sizeof f->u);
            f->u.name.name = s;
        }
        if (f->kind != SC_EXPR_NAME) {
            fail(p, f->loc, "argument %d of %s() must be a function name", slot + 1, name);
            return FALSE;
        }
    }
    if (e->kind == SC_EXPR_CALL && strcmp(name, "counter") == 0) {
        const ScExpr *c = g_ptr_array_index(e->u.call.args, 0);
        if (c->kind == SC_EXPR_STRING && index_of(counter_names, c->u.s) < 0) {
            char *known = join_names(counter_names);
            fail(p, c->loc, "unknown counter '%s' (expected one of %s)", c->u.s, known);
            g_free(known);
            return FALSE;
        }
    }
    return TRUE;
}

/* '(' args ')' into e->u.call. */
static gboolean
parse_args(Parser *p, ScExpr *e)
{
    ScLoc open_loc = peek(p)->loc;
    advance(p);
    e->u.call.args = g_ptr_array_new_with_free_func(expr_free_cb);
    e->u.call.kwargs = g_ptr_array_new_with_free_func(kwarg_free);
    GHashTable *kw_seen = NULL; /* keyword names; the strings belong to the kwargs */
    gboolean ok = FALSE;
    for (;;) {
        Token *t = peek(p);
        if (FAILED(p))
            goto out;
        if (t->kind == T_RPAREN) {
            advance(p);
            ok = TRUE;
            goto out;
        }
        if (t->kind == T_IDENT && peek_n(p, 2)->kind == T_ASSIGN) {
            if (kw_seen == NULL)
                kw_seen = g_hash_table_new(g_str_hash, g_str_equal);
            if (g_hash_table_contains(kw_seen, t->str)) {
                fail(p, t->loc, "duplicate keyword argument '%s'", t->str);
                goto out;
            }
            ScKwarg *k = g_new0(ScKwarg, 1);
            g_ptr_array_add(e->u.call.kwargs, k);
            k->name = take_str(p);
            g_hash_table_add(kw_seen, k->name);
            advance(p); /* '=' */
            k->value = parse_expr(p);
            if (k->value == NULL)
                goto out;
        } else {
            if (e->u.call.kwargs->len > 0) {
                fail(p, t->loc, "positional argument follows keyword argument");
                goto out;
            }
            ScExpr *a = parse_expr(p);
            if (a == NULL)
                goto out;
            g_ptr_array_add(e->u.call.args, a);
        }
        t = peek(p);
        if (t->kind == T_COMMA) {
            advance(p);
        } else if (t->kind != T_RPAREN) {
            fail_got(p, "expected ',' or ')' in the arguments of %s() opened at %u:%u",
                     e->u.call.name, open_loc.line, open_loc.col);
            goto out;
        }
    }
out:
    if (kw_seen != NULL)
        g_hash_table_unref(kw_seen);
    return ok;
}

static ScExpr *
parse_primary(Parser *p)
{
    Token *t = peek(p);
    if (FAILED(p))
        return NULL;
    ScLoc loc = t->loc;
    ScExpr *e;
    switch (t->kind) {
    case T_INT:
        if (t->u > (guint64)G_MAXINT64) {
            fail(p, loc, "integer is too large");
            return NULL;
        }
        e = expr_new(SC_EXPR_INT, loc);
        e->u.i = (gint64)t->u;
        advance(p);
        return e;
    case T_FLOAT:
        e = expr_new(SC_EXPR_FLOAT, loc);
        e->u.d = t->d;
        advance(p);
        return e;
    case T_DURATION:
        e = expr_new(SC_EXPR_DURATION, loc);
        e->u.i = t->ns;
        advance(p);
        return e;
    case T_STRING:
        e = expr_new(SC_EXPR_STRING, loc);
        e->u.s = take_str(p);
        return e;
    case T_SIZE:
    case T_RATE:
    case T_PERCENT:
        fail_got(p, "sizes, rates and percentages are only for network settings; expected an "
                    "expression");
        return NULL;
    case T_IDENT:
        if (strcmp(t->str, "None") == 0) {
            e = expr_new(SC_EXPR_NONE, loc);
        } else if (strcmp(t->str, "True") == 0 || strcmp(t->str, "False") == 0) {
            e = expr_new(SC_EXPR_BOOL, loc);
            e->u.b = t->str[0] == 'T';
        } else if (index_of(expr_keywords, t->str) >= 0) {
            fail_got(p, "expected an expression");
            return NULL;
        } else {
            e = expr_new(SC_EXPR_NAME, loc);
            e->u.name.name = take_str(p);
            e->u.name.ref_index = -1;
            return e;
        }
        advance(p);
        return e;
    case T_LBRACK:
        if (!nest_push(p, loc))
            return NULL;
        advance(p);
        e = expr_new(SC_EXPR_LIST, loc);
        e->u.items = g_ptr_array_new_with_free_func(expr_free_cb);
        for (;;) {
            t = peek(p);
            if (FAILED(p))
                goto fail;
            if (t->kind == T_RBRACK)
                break;
            ScExpr *item = parse_expr(p);
            if (item == NULL)
                goto fail;
            g_ptr_array_add(e->u.items, item);
            t = peek(p);
            if (t->kind == T_COMMA) {
                advance(p);
            } else if (t->kind != T_RBRACK) {
                fail_got(p, "expected ',' or ']' in the list opened at %u:%u", loc.line, loc.col);
                goto fail;
            }
        }
        advance(p);
        p->nest--;
        return e;
    case T_LPAREN:
        advance(p);
        e = parse_expr(p);
        if (e == NULL)
            return NULL;
        if (peek(p)->kind != T_RPAREN) {
            fail_got(p, "expected ')' to close the '(' at %u:%u", loc.line, loc.col);
            goto fail;
        }
        advance(p);
        return e;
    default:
        fail_got(p, "expected an expression");
        return NULL;
    }
fail:
    expr_free(e);
    return NULL;
}

static ScExpr *
parse_postfix(Parser *p)
{
    ScExpr *e = parse_primary(p);
    guint pushed = 0;
    while (e != NULL) {
        Token *t = peek(p);
        if (t->kind == T_DOT) {
            pushed++;
            if (!nest_push(p, t->loc))
                goto fail;
            advance(p);
            t = peek(p);
            if (t->kind != T_IDENT) {
                fail_got(p, "expected a method name after '.'");
                goto fail;
            }
            ScLoc mloc = t->loc;
            const Arity *a =
                is_proxy(e) ? &proxy_method : arity_lookup(methods, G_N_ELEMENTS(methods), t->str);
            if (a == NULL) {
                fail(p, mloc,
                     "unknown method '%s' (expected wait, done, value, then, set_result, "
                     "set_exception, to_here, local_value, owner, owner_name, is_owner, "
                     "confirmed_by_owner, get_type, rpc_sync, rpc_async or remote)",
                     t->str);
                goto fail;
            }
            ScExpr *m = expr_new(SC_EXPR_METHOD, e->loc);
            m->u.call.target = e;
            e = m;
            m->u.call.name = take_str(p);
            if (peek(p)->kind != T_LPAREN) {
                fail_got(p, "expected '(' after the method name '%s'", m->u.call.name);
                goto fail;
            }
            if (!parse_args(p, m) || !check_call(p, m, a, mloc))
                goto fail;
        } else if (t->kind == T_LPAREN) {
            if (e->kind != SC_EXPR_NAME) {
                fail(p, t->loc, "only built-in functions and methods can be called");
                goto fail;
            }
            const Arity *a = arity_lookup(builtins, G_N_ELEMENTS(builtins), e->u.name.name);
            if (a == NULL) {
                fail(p, e->loc, "unknown function '%s'", e->u.name.name);
                goto fail;
            }
            char *name = e->u.name.name;
            e->kind = SC_EXPR_CALL;
            memset(&e->u, 0, sizeof e->u);
            e->u.call.name = name;
            if (!parse_args(p, e) || !check_call(p, e, a, e->loc))
                goto fail;
        } else {
            break;
        }
    }
    p->nest -= pushed;
    return e;
fail:
    expr_free(e);
    return NULL;
}

static ScExpr *
parse_unary(Parser *p)
{
    Token *t = peek(p);
    if (t->kind != T_MINUS)
        return parse_postfix(p);
    ScLoc loc = t->loc;
    if (!nest_push(p, loc))
        return NULL;
    advance(p);
    ScExpr *operand = parse_unary(p);
    if (operand == NULL)
        return NULL;
    p->nest--;
    ScExpr *e = expr_new(SC_EXPR_NEG, loc);
    e->u.bin.lhs = operand;
    return e;
}

enum { LEVEL_OR, LEVEL_AND, LEVEL_ADD, LEVEL_MUL };

static gboolean
binop_at(Parser *p, int level, ScBinOp *op)
{
    Token *t = peek(p);
    switch (level) {
    case LEVEL_OR:
        *op = SC_OP_OR;
        return t->kind == T_IDENT && strcmp(t->str, "or") == 0;
    case LEVEL_AND:
        *op = SC_OP_AND;
        return t->kind == T_IDENT && strcmp(t->str, "and") == 0;
    case LEVEL_ADD:
        *op = t->kind == T_PLUS ? SC_OP_ADD : SC_OP_SUB;
        return t->kind == T_PLUS || t->kind == T_MINUS;
    default:
        *op = t->kind == T_STAR ? SC_OP_MUL : SC_OP_DIV;
        return t->kind == T_STAR || t->kind == T_SLASH;
    }
}

static gboolean
cmp_at(Parser *p, ScBinOp *op)
{
    switch (peek(p)->kind) {
    case T_EQ:
        *op = SC_OP_EQ;
        return TRUE;
    case T_NE:
        *op = SC_OP_NE;
        return TRUE;
    case T_LT:
        *op = SC_OP_LT;
        return TRUE;
    case T_LE:
        *op = SC_OP_LE;
        return TRUE;
    case T_GT:
        *op = SC_OP_GT;
        return TRUE;
    case T_GE:
        *op = SC_OP_GE;
        return TRUE;
    default:
        return FALSE;
    }
}

static ScExpr *
binop_new(ScBinOp op, ScExpr *lhs, ScExpr *rhs)
{
    ScExpr *e = expr_new(SC_EXPR_BINOP, lhs->loc);
    e->u.bin.op = op;
    e->u.bin.lhs = lhs;
    e->u.bin.rhs = rhs;
    return e;
}

typedef ScExpr *(*ParseFunc)(Parser *p);

/* A left-associative chain; each operator costs a nesting level, so the
 * tree stays within MAX_NEST however long the chain. */
static ScExpr *
parse_chain(Parser *p, int level, ParseFunc operand)
{
    ScExpr *lhs = operand(p);
    guint pushed = 0;
    ScBinOp op;
    while (lhs != NULL && binop_at(p, level, &op)) {
        pushed++;
        if (!nest_push(p, peek(p)->loc))
            goto fail;
        advance(p);
        ScExpr *rhs = operand(p);
        if (rhs == NULL)
            goto fail;
        lhs = binop_new(op, lhs, rhs);
    }
    p->nest -= pushed;
    return lhs;
fail:
    expr_free(lhs);
    return NULL;
}

static ScExpr *
parse_mul(Parser *p)
{
    return parse_chain(p, LEVEL_MUL, parse_unary);
}

static ScExpr *
parse_add(Parser *p)
{
    return parse_chain(p, LEVEL_ADD, parse_mul);
}

static ScExpr *
parse_cmp(Parser *p)
{
    ScExpr *lhs = parse_add(p);
    ScBinOp op;
    if (lhs == NULL || !cmp_at(p, &op))
        return lhs;
    advance(p);
    ScExpr *rhs = parse_add(p);
    if (rhs == NULL) {
        expr_free(lhs);
        return NULL;
    }
    ScExpr *e = binop_new(op, lhs, rhs);
    if (cmp_at(p, &op)) {
        fail(p, peek(p)->loc, "comparisons cannot be chained (use 'and')");
        expr_free(e);
        return NULL;
    }
    return e;
}

static ScExpr *
parse_not(Parser *p)
{
    if (!at_word(p, "not"))
        return parse_cmp(p);
    ScLoc loc = peek(p)->loc;
    if (!nest_push(p, loc))
        return NULL;
    advance(p);
    ScExpr *operand = parse_not(p);
    if (operand == NULL)
        return NULL;
    p->nest--;
    ScExpr *e = expr_new(SC_EXPR_NOT, loc);
    e->u.bin.lhs = operand;
    return e;
}

static ScExpr *
parse_and(Parser *p)
{
    return parse_chain(p, LEVEL_AND, parse_not);
}

static ScExpr *
parse_expr(Parser *p)
{
    Token *t = peek(p);
    if (FAILED(p) || !nest_push(p, t->loc))
        return NULL;
    ScExpr *e = parse_chain(p, LEVEL_OR, parse_and);
    if (e != NULL)
        p->nest--;
    return e;
}

/* Resolves what can be resolved now (variables assigned earlier in the
 * program), and queues the rest for the checker, in text order. */
static void
resolve(Parser *p, ScExpr *e)
{
    switch (e->kind) {
    case SC_EXPR_NAME:
        if (g_hash_table_contains(p->vars, e->u.name.name))
            e->u.name.ref = SC_REF_VAR;
        else
            pend(p, (Pending){.kind = PEND_NAME, .loc = e->loc, .expr = e});
        break;
    case SC_EXPR_LIST:
        for (guint i = 0; i < e->u.items->len; i++)
            resolve(p, g_ptr_array_index(e->u.items, i));
        break;
    case SC_EXPR_CALL:
    case SC_EXPR_METHOD: {
        if (e->u.call.target != NULL)
            resolve(p, e->u.call.target);
        gint slot = function_slot(e);
        for (guint i = 0; i < e->u.call.args->len; i++) {
            ScExpr *a = g_ptr_array_index(e->u.call.args, i);
            if ((gint)i == slot)
                pend(p, (Pending){.kind = PEND_FUNC, .loc = a->loc, .expr = a});
            else
                resolve(p, a);
        }
        for (guint i = 0; i < e->u.call.kwargs->len; i++)
            resolve(p, ((ScKwarg *)g_ptr_array_index(e->u.call.kwargs, i))->value);
        break;
    }
    case SC_EXPR_BINOP:
        resolve(p, e->u.bin.lhs);
        resolve(p, e->u.bin.rhs);
        break;
    case SC_EXPR_NEG:
    case SC_EXPR_NOT:
        resolve(p, e->u.bin.lhs);
        break;
    default:
        break;
    }
}

/* An expression of a statement, resolved. */
static ScExpr *
parse_stmt_expr(Parser *p)
{
    ScExpr *e = parse_expr(p);
    if (e != NULL)
        resolve(p, e);
    return e;
}

/* --- statements ------------------------------------------------------------------------- */

static gboolean parse_stmt(Parser *p, gpointer body);

/* crash W | restart W | pause W [for D] | resume W | partition A (<->|->) B
 * | heal (all | A (<->|->) B) */
static gboolean
parse_action(Parser *p, ScAction *a)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    gint k = t->kind == T_IDENT ? index_of(action_names, t->str) : -1;
    if (k < 0) {
        fail_got(p, "expected an action (crash, restart, pause, resume, partition or heal)");
        return FALSE;
    }
    a->kind = (ScActionKind)k;
    a->loc = t->loc;
    a->a = a->b = -1;
    advance(p);
    switch (a->kind) {
    case SC_ACT_HEAL:
        if (at_word(p, "all")) {
            advance(p);
            return TRUE;
        }
        /* fall through */
    case SC_ACT_PARTITION:
        if (!parse_worker_slot(p, &a->a))
            return FALSE;
        t = peek(p);
        if (t->kind != T_ARROW && t->kind != T_BIARROW) {
            fail_got(p, "expected '<->' or '->' after the first worker of '%s'", action_names[k]);
            return FALSE;
        }
        a->one_way = t->kind == T_ARROW;
        advance(p);
        return parse_worker_slot(p, &a->b);
    case SC_ACT_PAUSE:
        if (!parse_worker_slot(p, &a->a))
            return FALSE;
        if (at_word(p, "for")) {
            advance(p);
            t = peek(p);
            ScLoc loc = t->loc;
            if (!parse_duration_lit(p, "the pause", &a->duration))
                return FALSE;
            if (a->duration <= 0) {
                fail(p, loc, "a pause needs a positive duration");
                return FALSE;
            }
        }
        return TRUE;
    default:
        return parse_worker_slot(p, &a->a);
    }
}

static gboolean
parse_stmt_block(Parser *p, const char *what, ScLoc opened, GPtrArray *body)
{
    return parse_braced(p, what, opened, parse_stmt, body);
}

/* One branch of a parallel statement: a braced block or a single statement,
 * each run on its own thread. */
static gboolean
parse_parallel_branch(Parser *p, gpointer data)
{
    GPtrArray *blocks = data;
    GPtrArray *block = stmt_array_new();
    g_ptr_array_add(blocks, block);
    Token *t = peek(p);
    if (t->kind == T_LBRACE)
        return parse_stmt_block(p, "{", t->loc, block);
    return parse_stmt(p, block);
}

/* parallel { {…} {…} STMT … } */
static gboolean
parse_parallel(Parser *p, ScStmt *s)
{
    s->u.blocks = g_ptr_array_new_with_free_func(stmt_array_unref);
    return parse_braced(p, "parallel", s->loc, parse_parallel_branch, s->u.blocks);
}

static gboolean
add_var(Parser *p, ScLoc loc, const char *name)
{
    if (is_reserved(name)) {
        fail(p, loc, "'%s' is a reserved word and cannot be a variable", name);
        return FALSE;
    }
    g_hash_table_add(p->vars, g_strdup(name));
    return TRUE;
}

static gboolean
parse_stmt(Parser *p, gpointer data)
{
    GPtrArray *body = data;
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    ScStmt *s = g_new0(ScStmt, 1);
    s->loc = t->loc;
    g_ptr_array_add(body, s);
    gint k = t->kind == T_IDENT ? index_of(stmt_keywords, t->str) : -1;
    const char *what = k >= 0 ? stmt_keywords[k] : "expression";

    if (k >= 0 && index_of(action_names, t->str) >= 0) {
        s->kind = SC_STMT_ACTION;
        if (!parse_action(p, &s->u.action))
            return FALSE;
        return end_stmt(p, what);
    }
    if (k < 0) {
        if (t->kind == T_IDENT && peek_n(p, 2)->kind == T_ASSIGN) {
            s->kind = SC_STMT_ASSIGN;
            if (is_reserved(t->str)) {
                fail(p, t->loc, "cannot assign to '%s'", t->str);
                return FALSE;
            }
            s->u.assign.name = take_str(p);
            advance(p); /* '=' */
            s->u.assign.value = parse_stmt_expr(p);
            if (s->u.assign.value == NULL || !add_var(p, s->loc, s->u.assign.name))
                return FALSE;
            return end_stmt(p, "assignment");
        }
        s->kind = SC_STMT_EXPR;
        s->u.expr = parse_stmt_expr(p);
        return s->u.expr != NULL && end_stmt(p, what);
    }

    advance(p);
    if (strcmp(what, "sleep") == 0 || strcmp(what, "set_rpc_timeout") == 0 ||
        strcmp(what, "print") == 0) {
        s->kind =
            what[0] == 's' ? (what[1] == 'l' ? SC_STMT_SLEEP : SC_STMT_SET_TIMEOUT) : SC_STMT_PRINT;
        s->u.expr = parse_stmt_expr(p);
        if (s->u.expr == NULL)
            return FALSE;
        if (s->kind != SC_STMT_PRINT && !check_duration_expr(p, s->u.expr, what))
            return FALSE;
    } else if (strcmp(what, "unregister") == 0) {
        s->kind = SC_STMT_UNREGISTER;
        t = peek(p);
        if (t->kind != T_IDENT && t->kind != T_STRING) {
            fail_got(p, "expected a function name after 'unregister'");
            return FALSE;
        }
        ScLoc floc = t->loc;
        RpcRegistry *reg = rpc_registry_new_default();
        gboolean known = rpc_registry_lookup(reg, t->str) != NULL;
        rpc_registry_free(reg);
        if (!known) {
            fail(p, floc, "unknown function '%s'", t->str);
            return FALSE;
        }
        s->u.expr = expr_new(SC_EXPR_STRING, floc);
        s->u.expr->u.s = take_str(p);
    } else if (strcmp(what, "expect") == 0) {
        if (!at_word(p, "error")) {
            s->kind = SC_STMT_EXPECT;
            s->u.expr = parse_stmt_expr(p);
            if (s->u.expr == NULL)
                return FALSE;
            return end_stmt(p, what);
        }
        advance(p);
        s->kind = SC_STMT_EXPECT_ERROR;
        what = "expect error";
        s->u.experr.expr = parse_stmt_expr(p);
        if (s->u.experr.expr == NULL)
            return FALSE;
        for (;;) {
            if (at_word(p, "kind") && s->u.experr.kind == NULL) {
                advance(p);
                if (peek(p)->kind != T_IDENT) {
                    fail_got(p, "expected an exception type after 'kind' (e.g. ValueError)");
                    return FALSE;
                }
                s->u.experr.kind = take_str(p);
            } else if (at_word(p, "contains") && s->u.experr.contains == NULL) {
                advance(p);
                if (peek(p)->kind != T_STRING) {
                    fail_got(p, "expected a string after 'contains'");
                    return FALSE;
                }
                s->u.experr.contains = take_str(p);
            } else {
                break;
            }
        }
    } else if (strcmp(what, "repeat") == 0) {
        s->kind = SC_STMT_REPEAT;
        s->u.repeat.count = parse_stmt_expr(p);
        if (s->u.repeat.count == NULL)
            return FALSE;
        const ScExpr *c = s->u.repeat.count;
        if (is_plain_literal(c) && c->kind != SC_EXPR_INT) {
            fail(p, c->loc, "repeat needs a whole number of times");
            return FALSE;
        }
        if (at_word(p, "as")) {
            advance(p);
            t = peek(p);
            if (t->kind != T_IDENT) {
                fail_got(p, "expected a variable name after 'as'");
                return FALSE;
            }
            ScLoc vloc = t->loc;
            s->u.repeat.var = take_str(p);
            if (!add_var(p, vloc, s->u.repeat.var))
                return FALSE;
        }
        s->u.repeat.body = stmt_array_new();
        if (!parse_stmt_block(p, "repeat", s->loc, s->u.repeat.body))
            return FALSE;
    } else if (strcmp(what, "dist_autograd") == 0) {
        /* dist_autograd as NAME { … }: `with dist_autograd.context() as NAME:` */
        s->kind = SC_STMT_DIST_CONTEXT;
        if (!at_word(p, "as")) {
            fail_got(p, "expected 'as NAME' after 'dist_autograd' (dist_autograd as ctx { … })");
            return FALSE;
        }
        advance(p);
        t = peek(p);
        if (t->kind != T_IDENT) {
            fail_got(p, "expected a variable name after 'dist_autograd as'");
            return FALSE;
        }
        ScLoc vloc = t->loc;
        s->u.ctx.var = take_str(p);
        if (!add_var(p, vloc, s->u.ctx.var))
            return FALSE;
        s->u.ctx.body = stmt_array_new();
        if (!parse_stmt_block(p, "dist_autograd", s->loc, s->u.ctx.body))
            return FALSE;
    } else if (strcmp(what, "parallel") == 0) {
        s->kind = SC_STMT_PARALLEL;
        if (!parse_parallel(p, s))
            return FALSE;
    } else if (strcmp(what, "shutdown") == 0) {
        s->kind = SC_STMT_SHUTDOWN;
        s->u.shutdown.graceful = TRUE;
        if (at_word(p, "graceful")) {
            advance(p);
        } else if (at_word(p, "now")) {
            s->u.shutdown.graceful = FALSE;
            advance(p);
        }
        if (at_word(p, "timeout")) {
            advance(p);
            if (!expect_tok(p, T_ASSIGN, "'=' after 'timeout'"))
                return FALSE;
            s->u.shutdown.timeout = parse_stmt_expr(p);
            if (s->u.shutdown.timeout == NULL ||
                !check_duration_expr(p, s->u.shutdown.timeout, "timeout="))
                return FALSE;
        }
    } else { /* barrier */
        s->kind = SC_STMT_BARRIER;
        s->u.workers = g_array_new(FALSE, FALSE, sizeof(gint));
        t = peek(p);
        if (t->kind == T_LBRACK) {
            ScLoc open = t->loc;
            advance(p);
            GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
            gboolean ok = TRUE;
            while (ok && peek(p)->kind != T_RBRACK && !FAILED(p)) {
                ok = parse_worker_into(p, s->u.workers, seen);
                if (ok && peek(p)->kind == T_COMMA)
                    advance(p);
                else if (ok && peek(p)->kind != T_RBRACK) {
                    fail_got(p, "expected ',' or ']' in the barrier's worker list");
                    ok = FALSE;
                }
            }
            g_hash_table_unref(seen);
            if (!ok || FAILED(p))
                return FALSE;
            if (s->u.workers->len == 0) {
                fail(p, open, "an empty barrier list (leave the list out for all workers)");
                return FALSE;
            }
            advance(p);
        }
    }
    return end_stmt(p, what);
}

/* --- sections ------------------------------------------------------------------------------ */

static gboolean
valid_worker_name(const char *s)
{
    if (*s == '\0')
        return FALSE;
    for (; *s; s++)
        if (!g_ascii_isalnum(*s) && *s != '_' && *s != ':' && *s != '-')
            return FALSE;
    return TRUE;
}

static gboolean
parse_worker_names(Parser *p)
{
    ScLoc open = peek(p)->loc;
    advance(p);
    p->names = g_ptr_array_new_with_free_func(g_free);
    GHashTable *seen = g_hash_table_new(g_str_hash, g_str_equal);
    gboolean ok = FALSE;
    for (;;) {
        Token *t = peek(p);
        if (FAILED(p))
            goto out;
        if (t->kind == T_RBRACK)
            break;
        if (t->kind != T_IDENT && t->kind != T_STRING) {
            fail_got(p, "expected a worker name");
            goto out;
        }
        if (!valid_worker_name(t->str)) {
            char *shown = tok_desc(t);
            fail(p, t->loc, "invalid worker name %s (use letters, digits, '_', ':' and '-')",
                 shown);
            g_free(shown);
            goto out;
        }
        if (is_reserved(t->str) || strcmp(t->str, "all") == 0) {
            fail(p, t->loc, "'%s' is a reserved word and cannot name a worker", t->str);
            goto out;
        }
        if (g_hash_table_contains(seen, t->str)) {
            fail(p, t->loc, "duplicate worker name '%s'", t->str);
            goto out;
        }
        if (p->names->len >= MAX_WORKERS) {
            fail(p, t->loc, "too many workers (at most %d)", MAX_WORKERS);
            goto out;
        }
        char *name = take_str(p);
        g_ptr_array_add(p->names, name);
        g_hash_table_add(seen, name);
        t = peek(p);
        if (t->kind == T_COMMA) {
            advance(p);
        } else if (t->kind != T_RBRACK) {
            fail_got(p, "expected ',' or ']' in the worker list");
            goto out;
        }
    }
    if (p->names->len == 0) {
        fail(p, open, "at least one worker is required");
        goto out;
    }
    advance(p);
    p->sc->n_workers = p->names->len;
    ok = TRUE;
out:
    g_hash_table_unref(seen);
    return ok;
}

static gboolean
seen_once(Parser *p, Seen *seen, gint k, const char *key, const char *section, ScLoc loc)
{
    if (seen->set[k]) {
        fail(p, loc, "duplicate setting '%s' in %s (first set at %u:%u)", key, section,
             seen->at[k].line, seen->at[k].col);
        return FALSE;
    }
    seen->set[k] = TRUE;
    seen->at[k] = loc;
    return TRUE;
}

static gboolean
world_item(Parser *p, gpointer ctx)
{
    Seen *seen = ctx;
    ScScenario *sc = p->sc;
    Token *t = peek(p);
    if (t->kind != T_IDENT) {
        fail_got(p, "expected a setting of world");
        return FALSE;
    }
    gint k = index_of(world_keys, t->str);
    if (k < 0) {
        char *known = join_names(world_keys);
        fail(p, t->loc, "unknown setting '%s' in world (expected one of %s)", t->str, known);
        g_free(known);
        return FALSE;
    }
    const char *key = world_keys[k];
    if (!seen_once(p, seen, k, key, "world", t->loc))
        return FALSE;
    advance(p);
    guint64 v;
    switch (k) {
    case W_WORKERS:
        t = peek(p);
        if (t->kind == T_LBRACK) {
            if (!parse_worker_names(p))
                return FALSE;
        } else {
            if (t->kind == T_INT && t->u == 0) {
                fail(p, t->loc, "at least one worker is required");
                return FALSE;
            }
            if (!parse_uint(p, "workers", 1, MAX_WORKERS, &v))
                return FALSE;
            sc->n_workers = (guint)v;
        }
        break;
    case W_THREADS:
        if (!parse_uint(p, "threads", 1, MAX_THREADS, &v))
            return FALSE;
        sc->threads = (guint)v;
        break;
    case W_RPC_TIMEOUT:
        if (!parse_duration_lit(p, "rpc_timeout", &sc->rpc_timeout))
            return FALSE;
        break;
    case W_SEED:
        if (!parse_uint(p, "seed", 0, G_MAXUINT64, &sc->seed))
            return FALSE;
        sc->seed_set = TRUE;
        break;
    case W_SHUTDOWN:
        if (at_word(p, "graceful") || at_word(p, "none")) {
            sc->auto_shutdown = peek(p)->str[0] == 'g';
            advance(p);
        } else {
            fail_got(p, "shutdown needs 'graceful' or 'none'");
            return FALSE;
        }
        break;
    case W_TIME_LIMIT: {
        ScLoc loc = peek(p)->loc;
        if (!parse_duration_lit(p, "time_limit", &sc->time_limit))
            return FALSE;
        if (sc->time_limit <= 0) {
            fail(p, loc, "time_limit must be positive");
            return FALSE;
        }
        break;
    }
    }
    return end_stmt(p, key);
}

/* One of latency … reorder into cfg; sets its SC_LINK_SET_* bit. */
static gboolean
net_setting(Parser *p, gint k, SimLinkConfig *cfg, guint *mask)
{
    gboolean ok = FALSE;
    switch (k) {
    case N_LATENCY:
        ok = parse_dist(p, &cfg->latency);
        break;
    case N_BANDWIDTH:
        ok = parse_rate(p, &cfg->bandwidth);
        break;
    case N_JITTER:
        ok = parse_duration_lit(p, "jitter", &cfg->jitter);
        break;
    case N_LOSS:
        ok = parse_prob(p, "loss", &cfg->loss);
        break;
    case N_DUPLICATE:
        ok = parse_prob(p, "duplicate", &cfg->duplicate);
        break;
    case N_REORDER:
        ok = parse_prob(p, "reorder", &cfg->reorder);
        break;
    default:
        g_assert_not_reached();
    }
    *mask |= 1u << k;
    return ok;
}

typedef struct {
    Seen seen;
    ScLinkOverride *lo;
} LinkCtx;

static gboolean
link_item(Parser *p, gpointer ctx)
{
    LinkCtx *lc = ctx;
    Token *t = peek(p);
    gint k = t->kind == T_IDENT ? index_of(net_keys, t->str) : -1;
    if (t->kind != T_IDENT) {
        fail_got(p, "expected a setting of the link");
        return FALSE;
    }
    if (k < 0 || k == N_LINK) {
        fail(p, t->loc,
             "unknown setting '%s' in link (expected one of latency, bandwidth, jitter, loss, "
             "duplicate, reorder)",
             t->str);
        return FALSE;
    }
    if (!seen_once(p, &lc->seen, k, net_keys[k], "link", t->loc))
        return FALSE;
    advance(p);
    return net_setting(p, k, &lc->lo->cfg, &lc->lo->set_mask) && end_stmt(p, net_keys[k]);
}

static void
pend_link_end(Parser *p, char *name, ScLoc loc, gint *slot)
{
    *slot = -1;
    if (name != NULL)
        pend(p, (Pending){.kind = PEND_WORKER, .loc = loc, .name = name, .slot = slot});
}

/* link A (->|<->) B { … } */
static gboolean
parse_link(Parser *p, ScLoc loc)
{
    char *a = NULL, *b = NULL;
    ScLoc aloc, bloc;
    if (!parse_worker_ref(p, TRUE, &a, &aloc))
        return FALSE;
    Token *t = peek(p);
    if (t->kind != T_ARROW && t->kind != T_BIARROW) {
        g_free(a);
        fail_got(p, "expected '->' or '<->' after the first worker of a link");
        return FALSE;
    }
    gboolean both = t->kind == T_BIARROW;
    advance(p);
    if (!parse_worker_ref(p, TRUE, &b, &bloc)) {
        g_free(a);
        return FALSE;
    }
    LinkCtx lc = {0};
    lc.lo = g_new0(ScLinkOverride, 1);
    lc.lo->loc = loc;
    sim_link_config_init(&lc.lo->cfg);
    g_ptr_array_add(p->sc->links, lc.lo);
    ScLinkOverride *back = NULL;
    if (both) {
        back = g_new0(ScLinkOverride, 1);
        back->loc = loc;
        g_ptr_array_add(p->sc->links, back);
    }
    pend_link_end(p, g_strdup(a), aloc, &lc.lo->from);
    pend_link_end(p, g_strdup(b), bloc, &lc.lo->to);
    if (back != NULL) {
        pend_link_end(p, g_strdup(b), bloc, &back->from);
        pend_link_end(p, g_strdup(a), aloc, &back->to);
    }
    g_free(a);
    g_free(b);
    if (!parse_braced(p, "link", loc, link_item, &lc))
        return FALSE;
    if (back != NULL) {
        back->cfg = lc.lo->cfg;
        back->set_mask = lc.lo->set_mask;
    }
    return TRUE;
}

static gboolean
network_item(Parser *p, gpointer ctx)
{
    Seen *seen = ctx;
    Token *t = peek(p);
    if (t->kind != T_IDENT) {
        fail_got(p, "expected a setting of network");
        return FALSE;
    }
    gint k = index_of(net_keys, t->str);
    if (k < 0) {
        char *known = join_names(net_keys);
        fail(p, t->loc, "unknown setting '%s' in network (expected one of %s)", t->str, known);
        g_free(known);
        return FALSE;
    }
    ScLoc loc = t->loc;
    if (k == N_LINK) {
        advance(p);
        return parse_link(p, loc) && end_stmt(p, "link");
    }
    if (!seen_once(p, seen, k, net_keys[k], "network", loc))
        return FALSE;
    advance(p);
    guint mask = 0;
    return net_setting(p, k, &p->sc->net_default, &mask) && end_stmt(p, net_keys[k]);
}

/* Fills each override's unset fields from the network default, so cfg is
 * complete on its own (set_mask still tells what the block set). */
static void
complete_links(ScScenario *sc)
{
    for (guint i = 0; i < sc->links->len; i++) {
        ScLinkOverride *lo = g_ptr_array_index(sc->links, i);
        SimLinkConfig c = sc->net_default;
        if (lo->set_mask & SC_LINK_SET_LATENCY)
            c.latency = lo->cfg.latency;
        if (lo->set_mask & SC_LINK_SET_BANDWIDTH)
            c.bandwidth = lo->cfg.bandwidth;
        if (lo->set_mask & SC_LINK_SET_JITTER)
            c.jitter = lo->cfg.jitter;
        if (lo->set_mask & SC_LINK_SET_LOSS)
            c.loss = lo->cfg.loss;
        if (lo->set_mask & SC_LINK_SET_DUPLICATE)
            c.duplicate = lo->cfg.duplicate;
        if (lo->set_mask & SC_LINK_SET_REORDER)
            c.reorder = lo->cfg.reorder;
        lo->cfg = c;
    }
}

static gboolean
parse_message_types(Parser *p, GPtrArray *types)
{
    for (;;) {
        Token *t = peek(p);
        if (FAILED(p))
            return FALSE;
        if (t->kind != T_IDENT) {
            fail_got(p, "expected a message type (e.g. PYTHON_CALL)");
            return FALSE;
        }
        if (index_of(sim_faults_type_names(), t->str) < 0) {
            char *known = join_names(sim_faults_type_names());
            fail(p, t->loc, "unknown message type '%s' (expected one of %s)", t->str, known);
            g_free(known);
            return FALSE;
        }
        for (guint i = 0; i < types->len; i++)
            if (strcmp(g_ptr_array_index(types, i), t->str) == 0) {
                fail(p, t->loc, "message type '%s' is listed twice", t->str);
                return FALSE;
            }
        g_ptr_array_add(types, take_str(p));
        if (peek(p)->kind != T_COMMA)
            return TRUE;
        advance(p);
    }
}

/* fail TYPES [times N] [from W]  /  delay TYPES by D [from W]  /
 * drop TYPES with P [from W] */
static gboolean
parse_agent_fault(Parser *p, ScLoc loc, gboolean is_delay, gboolean is_drop)
{
    ScAgentFault *f = g_new0(ScAgentFault, 1);
    g_ptr_array_add(p->sc->agent_faults, f);
    f->loc = loc;
    f->is_delay = is_delay;
    f->is_drop = is_drop;
    f->types = g_ptr_array_new_with_free_func(g_free);
    f->times = 3;
    f->from_worker = -1;
    if (!parse_message_types(p, f->types))
        return FALSE;
    gboolean seen_times = FALSE, seen_by = FALSE, seen_from = FALSE, seen_with = FALSE;
    for (;;) {
        Token *t = peek(p);
        if (FAILED(p))
            return FALSE;
        if (t->kind != T_IDENT)
            break;
        ScLoc at = t->loc;
        if (strcmp(t->str, "with") == 0 && !seen_with) {
            if (!is_drop) {
                fail(p, at, "'with' applies to drop, not fail or delay");
                return FALSE;
            }
            advance(p);
            if (!parse_prob(p, "the drop probability", &f->probability))
                return FALSE;
            seen_with = TRUE;
        } else if (strcmp(t->str, "times") == 0 && !seen_times) {
            if (is_delay || is_drop) {
                fail(p, at, "'times' applies to fail, not delay");
                return FALSE;
            }
            advance(p);
            guint64 v;
            if (!parse_uint(p, "times", 1, G_MAXUINT, &v))
                return FALSE;
            f->times = (guint)v;
            seen_times = TRUE;
        } else if (strcmp(t->str, "by") == 0 && !seen_by) {
            if (!is_delay || is_drop) {
                fail(p, at, "'by' applies to delay, not fail");
                return FALSE;
            }
            advance(p);
            if (!parse_duration_lit(p, "the delay", &f->delay))
                return FALSE;
            seen_by = TRUE;
        } else if (strcmp(t->str, "from") == 0 && !seen_from) {
            advance(p);
            if (!parse_worker_slot(p, &f->from_worker))
                return FALSE;
            seen_from = TRUE;
        } else {
            break;
        }
    }
    if (is_delay && !seen_by) {
        fail_got(p, "delay needs 'by DURATION'");
        return FALSE;
    }
    if (is_drop && !seen_with) {
        fail_got(p, "drop needs 'with PROBABILITY' (e.g. with 5%%)");
        return FALSE;
    }
    return TRUE;
}

/* at D ACTION  /  after N KIND [on W] ACTION */
static gboolean
parse_timed_fault(Parser *p, ScLoc loc, gboolean after)
{
    ScTimedFault *f = g_new0(ScTimedFault, 1);
    g_ptr_array_add(p->sc->timed_faults, f);
    f->loc = loc;
    f->on_worker = -1;
    f->trigger = after ? SC_TRIGGER_AFTER : SC_TRIGGER_AT;
    if (!after)
        return parse_duration_lit(p, "at", &f->at) && parse_action(p, &f->action);
    guint64 n;
    if (!parse_uint(p, "after", 1, G_MAXUINT, &n))
        return FALSE;
    f->count = (guint)n;
    Token *t = peek(p);
    if (t->kind == T_STRING) {
        if (t->str[0] == '\0') {
            fail(p, t->loc, "empty trace record kind");
            return FALSE;
        }
        f->trace_kind = take_str(p);
    } else if (t->kind == T_IDENT) {
        GString *kind = g_string_new(NULL);
        for (;;) {
            g_string_append(kind, peek(p)->str);
            advance(p);
            if (peek(p)->kind != T_DOT)
                break;
            g_string_append_c(kind, '.');
            advance(p);
            if (peek(p)->kind != T_IDENT) {
                g_string_free(kind, TRUE);
                fail_got(p, "expected the rest of a trace record kind (e.g. rpc.serve)");
                return FALSE;
            }
        }
        f->trace_kind = g_string_free(kind, FALSE);
    } else {
        fail_got(p, "expected a trace record kind after the count (e.g. rpc.serve)");
        return FALSE;
    }
    if (at_word(p, "on")) {
        advance(p);
        if (!parse_worker_slot(p, &f->on_worker))
            return FALSE;
    }
    return parse_action(p, &f->action);
}

static gboolean
fault_item(Parser *p, gpointer ctx)
{
    Token *t = peek(p);
    if (t->kind != T_IDENT) {
        fail_got(p, "expected a fault (fail, delay, drop, at or after)");
        return FALSE;
    }
    gint k = index_of(fault_keys, t->str);
    if (k < 0) {
        fail(p, t->loc, "unknown fault '%s' in faults (expected fail, delay, drop, at or after)",
             t->str);
        return FALSE;
    }
    ScLoc loc = t->loc;
    advance(p);
    gboolean ok = k < 2 || k == 4 ? parse_agent_fault(p, loc, k == 1, k == 4)
                                  : parse_timed_fault(p, loc, k == 3);
    return ok && end_stmt(p, fault_keys[k]);
}

static gboolean
parse_cmp_op(Parser *p, ScCmp *out)
{
    ScBinOp op;
    if (!cmp_at(p, &op) || FAILED(p)) {
        fail_got(p, "expected a comparison (==, !=, <, <=, >, >=)");
        return FALSE;
    }
    *out = (ScCmp)(op - SC_OP_EQ);
    advance(p);
    return TRUE;
}

static gboolean
parse_count_value(Parser *p, const char *what, gint64 *out)
{
    guint64 v;
    if (!parse_uint(p, what, 0, G_MAXINT64, &v))
        return FALSE;
    *out = (gint64)v;
    return TRUE;
}

static gboolean
parse_name_in(Parser *p, const char *const *list, const char *what, char **out)
{
    Token *t = peek(p);
    if (FAILED(p))
        return FALSE;
    if (t->kind != T_IDENT) {
        fail_got(p, "expected a %s name", what);
        return FALSE;
    }
    if (index_of(list, t->str) < 0) {
        char *known = join_names(list);
        fail(p, t->loc, "unknown %s '%s' (expected one of %s)", what, t->str, known);
        g_free(known);
        return FALSE;
    }
    *out = take_str(p);
    return TRUE;
}

static gboolean
parse_text_arg(Parser *p, const char *after, char **out)
{
    if (peek(p)->kind != T_STRING || FAILED(p)) {
        fail_got(p, "expected a string after '%s'", after);
        return FALSE;
    }
    *out = take_str(p);
    return TRUE;
}

static gboolean
expect_item(Parser *p, gpointer ctx)
{
    Token *t = peek(p);
    if (t->kind != T_IDENT) {
        fail_got(p, "expected an expectation");
        return FALSE;
    }
    gint k = index_of(expect_keys, t->str);
    if (k < 0) {
        char *known = join_names(expect_keys);
        fail(p, t->loc, "unknown expectation '%s' (expected one of %s)", t->str, known);
        g_free(known);
        return FALSE;
    }
    ScEndExpect *x = g_new0(ScEndExpect, 1);
    g_ptr_array_add(p->sc->expects, x);
    x->loc = t->loc;
    x->worker = -1;
    const char *what = expect_keys[k];
    advance(p);
    switch (k) {
    case X_DEADLOCK:
        if (at_word(p, "contains")) {
            advance(p);
            x->kind = SC_END_DEADLOCK_CONTAINS;
            if (!parse_text_arg(p, "contains", &x->name))
                return FALSE;
            if (p->deadlock_contains_x == NULL)
                p->deadlock_contains_x = x;
            break;
        }
        x->kind = SC_END_DEADLOCK;
        if (p->no_deadlock_x != NULL) {
            fail(p, x->loc, "'deadlock' contradicts 'no_deadlock' at %u:%u",
                 p->no_deadlock_x->loc.line, p->no_deadlock_x->loc.col);
            return FALSE;
        }
        p->deadlock_x = x;
        break;
    case X_NO_DEADLOCK:
        x->kind = SC_END_NO_DEADLOCK;
        if (p->deadlock_x != NULL) {
            fail(p, x->loc, "'no_deadlock' contradicts 'deadlock' at %u:%u",
                 p->deadlock_x->loc.line, p->deadlock_x->loc.col);
            return FALSE;
        }
        p->no_deadlock_x = x;
        break;
    case X_FUTURES:
        x->kind = SC_END_FUTURES_RESOLVED;
        break;
    case X_COUNTER:
        x->kind = SC_END_COUNTER;
        if (!parse_worker_slot(p, &x->worker) ||
            !parse_name_in(p, counter_names, "counter", &x->name) || !parse_cmp_op(p, &x->cmp) ||
            !parse_count_value(p, "the counter's value", &x->value))
            return FALSE;
        break;
    case X_FIRED:
        x->kind = SC_END_FIRED;
        if (!parse_name_in(p, fired_names, "fired", &x->name) || !parse_cmp_op(p, &x->cmp) ||
            !parse_count_value(p, "the fired count", &x->value))
            return FALSE;
        break;
    case X_TIME:
        x->kind = SC_END_TIME;
        if (!parse_cmp_op(p, &x->cmp) || !parse_duration_lit(p, "time", &x->value))
            return FALSE;
        break;
    case X_MESSAGES:
        x->kind = SC_END_MESSAGES;
        if (!parse_cmp_op(p, &x->cmp) || !parse_count_value(p, "messages", &x->value))
            return FALSE;
        break;
    case X_TRACE:
        if (at_word(p, "contains") || at_word(p, "lacks")) {
            x->kind = peek(p)->str[0] == 'c' ? SC_END_TRACE_CONTAINS : SC_END_TRACE_LACKS;
            advance(p);
            if (!parse_text_arg(p, x->kind == SC_END_TRACE_CONTAINS ? "contains" : "lacks",
                                &x->name))
                return FALSE;
        } else {
            fail_got(p, "expected 'contains' or 'lacks' after 'trace'");
            return FALSE;
        }
        break;
    }
    return end_stmt(p, what);
}

/* on W[, W…] { … }  /  on all { … } */
static gboolean
parse_on(Parser *p, ScLoc loc)
{
    ScProgram *prog = g_new0(ScProgram, 1);
    g_ptr_array_add(p->sc->programs, prog);
    prog->loc = loc;
    prog->workers = g_array_new(FALSE, FALSE, sizeof(gint));
    prog->body = stmt_array_new();
    if (at_word(p, "all")) {
        advance(p);
        pend(p, (Pending){.kind = PEND_ALL_WORKERS, .loc = loc, .arr = prog->workers});
        if (peek(p)->kind == T_COMMA) {
            fail(p, peek(p)->loc, "'all' cannot be combined with worker names");
            return FALSE;
        }
    } else {
        GHashTable *seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        gboolean ok = parse_worker_into(p, prog->workers, seen);
        while (ok && peek(p)->kind == T_COMMA) {
            advance(p);
            ok = parse_worker_into(p, prog->workers, seen);
        }
        g_hash_table_unref(seen);
        if (!ok)
            return FALSE;
    }
    p->vars = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
    gboolean ok = parse_stmt_block(p, "on", loc, prog->body);
    g_hash_table_unref(p->vars);
    p->vars = NULL;
    return ok;
}

static gboolean
parse_sections(Parser *p)
{
    for (;;) {
        Token *t = peek(p);
        if (FAILED(p))
            return FALSE;
        if (t->kind == T_NEWLINE || t->kind == T_SEMI) {
            advance(p);
            continue;
        }
        if (t->kind == T_EOF) {
            p->eof = t->loc;
            return TRUE;
        }
        if (t->kind != T_IDENT) {
            fail_got(p, "expected a section (describe, world, network, faults, on or expect)");
            return FALSE;
        }
        gint k = index_of(section_names, t->str);
        if (k < 0) {
            fail(p, t->loc,
                 "unknown section '%s' (expected describe, world, network, faults, on or expect)",
                 t->str);
            return FALSE;
        }
        ScLoc loc = t->loc;
        if (k != SEC_ON && p->sec_seen[k]) {
            fail(p, loc, "duplicate section '%s' (first at %u:%u)", section_names[k],
                 p->sec_at[k].line, p->sec_at[k].col);
            return FALSE;
        }
        p->sec_seen[k] = TRUE;
        p->sec_at[k] = loc;
        advance(p);
        gboolean ok = FALSE;
        Seen seen;
        memset(&seen, 0, sizeof seen);
        switch (k) {
        case SEC_DESCRIBE:
            ok = parse_text_arg(p, "describe", &p->sc->description) && end_stmt(p, "describe");
            break;
        case SEC_WORLD:
            ok = parse_braced(p, "world", loc, world_item, &seen);
            break;
        case SEC_NETWORK:
            ok = parse_braced(p, "network", loc, network_item, &seen);
            if (ok)
                complete_links(p->sc);
            break;
        case SEC_FAULTS:
            ok = parse_braced(p, "faults", loc, fault_item, NULL);
            break;
        case SEC_ON:
            ok = parse_on(p, loc);
            break;
        case SEC_EXPECT:
            ok = parse_braced(p, "expect", loc, expect_item, NULL);
            /* the run fails on any deadlock it was not told to expect */
            if (ok && p->deadlock_contains_x != NULL && p->deadlock_x == NULL) {
                fail(p, p->deadlock_contains_x->loc,
                     "'deadlock contains' needs 'deadlock' in the same block");
                ok = FALSE;
            }
            break;
        }
        if (!ok)
            return FALSE;
    }
}

/* --- the checker ---------------------------------------------------------------------------- */

static void
fill_worker_names(Parser *p)
{
    ScScenario *sc = p->sc;
    sc->worker_names = g_new0(char *, sc->n_workers + 1);
    for (guint i = 0; i < sc->n_workers; i++)
        sc->worker_names[i] = p->names != NULL ? g_strdup(g_ptr_array_index(p->names, i))
                                               : g_strdup_printf("worker%u", i);
}

/* "(the world has 4 workers: worker0, …, worker3)" (transfer full). */
static char *
known_workers(const ScScenario *sc)
{
    GString *s = g_string_new(NULL);
    g_string_append_printf(s, "the world has %u worker%s: ", sc->n_workers,
                           sc->n_workers == 1 ? "" : "s");
    for (guint i = 0; i < sc->n_workers; i++) {
        if (i == 6 && sc->n_workers > 8) {
            g_string_append_printf(s, ", …, %s", sc->worker_names[sc->n_workers - 1]);
            break;
        }
        g_string_append_printf(s, "%s%s", i ? ", " : "", sc->worker_names[i]);
    }
    return g_string_free(s, FALSE);
}

static gboolean
check(Parser *p)
{
    ScScenario *sc = p->sc;
    GHashTable *ids = g_hash_table_new(g_str_hash, g_str_equal);
    RpcRegistry *reg = NULL;
    for (guint i = 0; i < sc->n_workers; i++)
        g_hash_table_insert(ids, sc->worker_names[i], GINT_TO_POINTER(i + 1));
    for (guint i = 0; i < p->pending->len && !FAILED(p); i++) {
        Pending *pd = &g_array_index(p->pending, Pending, i);
        const char *name = pd->expr != NULL ? pd->expr->u.name.name : pd->name;
        gint id = name != NULL ? GPOINTER_TO_INT(g_hash_table_lookup(ids, name)) - 1 : -1;
        switch (pd->kind) {
        case PEND_WORKER:
        case PEND_WORKER_IN_ARRAY:
            if (id < 0) {
                char *known = known_workers(sc);
                fail(p, pd->loc, "unknown worker '%s' (%s)", name, known);
                g_free(known);
            } else if (pd->kind == PEND_WORKER) {
                *pd->slot = id;
            } else {
                g_array_index(pd->arr, gint, pd->idx) = id;
            }
            break;
        case PEND_ALL_WORKERS:
            g_array_set_size(pd->arr, 0);
            for (gint w = 0; w < (gint)sc->n_workers; w++)
                g_array_append_val(pd->arr, w);
            break;
        case PEND_NAME:
            if (id < 0) {
                fail(p, pd->loc, "undefined variable '%s'", name);
            } else {
                pd->expr->u.name.ref = SC_REF_WORKER;
                pd->expr->u.name.ref_index = id;
            }
            break;
        case PEND_FUNC:
            if (reg == NULL)
                reg = rpc_registry_new_default();
            if (rpc_registry_lookup(reg, name) == NULL)
                fail(p, pd->loc, "unknown function '%s'", name);
            else
                pd->expr->u.name.ref = SC_REF_FUNC;
            break;
        }
    }
    if (!FAILED(p) && sc->programs->len == 0)
        fail(p, p->eof, "no programs (a scenario needs at least one 'on WORKER { … }' block)");
    rpc_registry_free(reg);
    g_hash_table_unref(ids);
    return !FAILED(p);
}

/* --- entry points ------------------------------------------------------------------------------
 */

static ScScenario *
parse_text(const char *path, const char *text, gsize len, GError **error)
{
    Parser p = {0};
    p.path = path;
    p.text = text;
    p.len = len;
    p.line = 1;
    p.sc = scenario_new(path);
    p.pending = g_array_new(FALSE, TRUE, sizeof(Pending));
    g_array_set_clear_func(p.pending, pending_clear);

    gboolean ok = parse_sections(&p);
    if (ok) {
        fill_worker_names(&p);
        ok = check(&p);
    }
    for (guint i = 0; i < G_N_ELEMENTS(p.la); i++)
        token_clear(&p.la[i]);
    g_array_unref(p.pending);
    if (p.names != NULL)
        g_ptr_array_unref(p.names);
    g_assert(p.vars == NULL);
    if (ok && p.error == NULL)
        return p.sc;
    if (p.error == NULL) /* never: every failing path reports */
        g_set_error(&p.error, SIM_ERROR, SIM_ERROR_PARSE, "%s:1:1: invalid scenario", path);
    g_propagate_error(error, p.error);
    sim_scenario_free(p.sc);
    return NULL;
}

ScScenario *
sim_scenario_parse_string(const char *name, const char *text, GError **error)
{
    g_return_val_if_fail(text != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    return parse_text(name != NULL ? name : "<string>", text, strlen(text), error);
}

ScScenario *
sim_scenario_parse_file(const char *path, GError **error)
{
    g_return_val_if_fail(path != NULL, NULL);
    g_return_val_if_fail(error == NULL || *error == NULL, NULL);
    char *text = NULL;
    gsize len = 0;
    GError *io = NULL;
    if (!g_file_get_contents(path, &text, &len, &io)) {
        g_set_error(error, SIM_ERROR, SIM_ERROR_IO, "%s: %s", path, io->message);
        g_error_free(io);
        return NULL;
    }
    ScScenario *sc = parse_text(path, text, len, error);
    g_free(text);
    return sc;
}

const char *const *
sim_scenario_builtin_names(void)
{
    return builtin_names;
}

const char *const *
sim_scenario_autograd_builtin_names(void)
{
    /* builtins[] lists the autograd ones last, from "param" on. */
    const char *const *p = builtin_names;
    while (strcmp(*p, "param") != 0)
        p++;
    return p;
}

const char *const *
sim_scenario_counter_names(void)
{
    return counter_names;
}

const char *const *
sim_scenario_fired_names(void)
{
    return fired_names;
}
