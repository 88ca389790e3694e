/* scenario-ast.h — the parsed form of a scenario file.
 *
 * Produced by scenario-parse.c (lexer, parser and checker), consumed by
 * scenario-run.c (the interpreter) and the CLI.  Every node carries the
 * location of its first token for error messages ("file:line:col: …").
 * All strings are owned by the node; sim_scenario_free() frees the tree.
 *
 * After the checker ran, every SC_EXPR_NAME has been resolved to a
 * variable, a worker or a function (its `ref` field), so the interpreter
 * never guesses what an identifier means.
 */
#ifndef SIM_SCENARIO_AST_H
#define SIM_SCENARIO_AST_H

#include <glib.h>

#include "sim/net.h"
#include "sim/time.h"

G_BEGIN_DECLS

typedef struct {
    guint line; /* 1-based */
    guint col;  /* 1-based, in bytes */
} ScLoc;

/* --- expressions ------------------------------------------------------- */

typedef enum {
    SC_EXPR_NONE,     /* None */
    SC_EXPR_BOOL,     /* True / False                        u.b */
    SC_EXPR_INT,      /* 42                                  u.i */
    SC_EXPR_FLOAT,    /* 1.5                                 u.d */
    SC_EXPR_STRING,   /* "text" (escapes \n \t \" \\ done)   u.s */
    SC_EXPR_DURATION, /* 1.5s, 200us: nanoseconds             u.i; as a value: float seconds */
    SC_EXPR_NAME,     /* an identifier                       u.name, resolved by the checker */
    SC_EXPR_LIST,     /* [a, b]                              u.items */
    SC_EXPR_CALL,     /* f(args, k=v)                        u.call */
    SC_EXPR_METHOD,   /* target.m(args, k=v)                 u.call (target set) */
    SC_EXPR_BINOP,    /* a + b, a == b, …                    u.bin */
    SC_EXPR_NEG,      /* -a                                  u.bin.lhs */
    SC_EXPR_NOT,      /* not a                               u.bin.lhs */
} ScExprKind;

typedef enum {
    SC_OP_ADD,
    SC_OP_SUB,
    SC_OP_MUL,
    SC_OP_DIV,
    SC_OP_EQ,
    SC_OP_NE,
    SC_OP_LT,
    SC_OP_LE,
    SC_OP_GT,
    SC_OP_GE,
    SC_OP_AND,
    SC_OP_OR,
} ScBinOp;

/* What an SC_EXPR_NAME refers to, decided by the checker. */
typedef enum {
    SC_REF_UNRESOLVED = 0,
    SC_REF_VAR,    /* a program variable */
    SC_REF_WORKER, /* a worker name: evaluates to the name as a string; ref_index = worker id */
    SC_REF_FUNC,   /* a registered function name (in an rpc_* call's function slot) */
} ScRefKind;
/* The function slot is argument 1 of rpc_sync/rpc_async and argument 0 of
 * .then(…); it is always an SC_EXPR_NAME after parsing (a quoted name such
 * as "aten::add" is turned into one).  ref_index is -1 unless SC_REF_WORKER. */

typedef struct ScExpr ScExpr;

typedef struct {
    char *name; /* the keyword */
    ScExpr *value;
} ScKwarg;

struct ScExpr {
    ScExprKind kind;
    ScLoc loc;
    union {
        gboolean b;
        gint64 i;
        double d;
        char *s;
        struct {
            char *name;
            ScRefKind ref;
            gint ref_index; /* SC_REF_WORKER: worker id */
        } name;
        GPtrArray *items; /* ScExpr* */
        struct {
            ScExpr *target;    /* SC_EXPR_METHOD only */
            char *name;        /* function or method name */
            GPtrArray *args;   /* ScExpr* */
            GPtrArray *kwargs; /* ScKwarg* */
        } call;
        struct {
            ScBinOp op;
            ScExpr *lhs, *rhs;
        } bin;
    } u;
};

/* --- statements (worker programs) -------------------------------------- */

typedef enum {
    SC_STMT_EXPR,         /* expr                          u.expr */
    SC_STMT_ASSIGN,       /* name = expr                   u.assign */
    SC_STMT_SLEEP,        /* sleep DURATION-expr           u.expr */
    SC_STMT_EXPECT,       /* expect expr (must be true)    u.expr */
    SC_STMT_EXPECT_ERROR, /* expect error expr [kind K] [contains "s"]   u.experr */
    SC_STMT_REPEAT,       /* repeat N [as i] { … }         u.repeat */
    SC_STMT_PARALLEL, /* parallel { {…} {…} … }: each block on its own thread, all joined   u.blocks
                       */
    SC_STMT_PRINT,       /* print expr                    u.expr */
    SC_STMT_SET_TIMEOUT, /* set_rpc_timeout DURATION      u.expr */
    SC_STMT_SHUTDOWN,    /* shutdown [graceful|now] [timeout=D]   u.shutdown */
    SC_STMT_BARRIER,     /* barrier [w1, w2, …]           u.workers (empty: all) */
    SC_STMT_ACTION, /* crash w / restart w / pause w / resume w / partition … / heal …   u.action */
    SC_STMT_UNREGISTER,   /* unregister FUNC: this worker no longer has FUNC (case 22)   u.expr, a
                             string */
    SC_STMT_DIST_CONTEXT, /* dist_autograd as NAME { … }: a dist autograd context current on this
                             thread for the block, released at its end (also on errors)   u.ctx */
} ScStmtKind;

typedef enum {
    SC_ACT_CRASH,
    SC_ACT_RESTART,
    SC_ACT_PAUSE, /* duration > 0: resume after it */
    SC_ACT_RESUME,
    SC_ACT_PARTITION, /* a, b; one_way */
    SC_ACT_HEAL,      /* a, b; one_way; a < 0: heal everything */
} ScActionKind;

typedef struct {
    ScActionKind kind;
    ScLoc loc;
    gint a, b;        /* worker ids (b only for partition/heal) */
    gboolean one_way; /* "a -> b" rather than "a <-> b" */
    SimTime duration; /* pause … for D */
} ScAction;

typedef struct ScStmt ScStmt;

struct ScStmt {
    ScStmtKind kind;
    ScLoc loc;
    union {
        ScExpr *expr;
        struct {
            char *name;
            ScExpr *value;
        } assign;
        struct {
            ScExpr *expr;
            char *kind;     /* nullable: "ValueError", "RuntimeError", … */
            char *contains; /* nullable: message substring */
        } experr;
        struct {
            ScExpr *count;
            char *var;       /* nullable: loop variable, 0-based */
            GPtrArray *body; /* ScStmt* */
        } repeat;
        GPtrArray *blocks; /* GPtrArray* of ScStmt* (one per concurrent block) */
        struct {
            gboolean graceful;
            ScExpr *timeout; /* nullable */
        } shutdown;
        GArray *workers; /* gint worker ids */
        ScAction action;
        struct {
            char *var;       /* the variable holding the context id (an int) */
            GPtrArray *body; /* ScStmt* */
        } ctx;
    } u;
};

/* --- top-level sections -------------------------------------------------- */

typedef struct {
    ScLoc loc;
    GArray *workers; /* gint ids this program runs on */
    GPtrArray *body; /* ScStmt* */
} ScProgram;

typedef enum {
    SC_TRIGGER_AT,    /* at TIME */
    SC_TRIGGER_AFTER, /* after N KIND [on WORKER]: the N-th trace record of that kind */
} ScTriggerKind;

typedef struct {
    ScLoc loc;
    ScTriggerKind trigger;
    SimTime at;       /* SC_TRIGGER_AT */
    guint count;      /* SC_TRIGGER_AFTER */
    char *trace_kind; /* SC_TRIGGER_AFTER: e.g. "rpc.serve" */
    gint on_worker;   /* SC_TRIGGER_AFTER: -1 = any */
    ScAction action;
} ScTimedFault;

/* fail TYPE[, TYPE…] [times N] [from W]   /   delay TYPE by D [from W]
 * /   drop TYPE[, TYPE…] with P [from W] */
typedef struct {
    ScLoc loc;
    gboolean is_delay;
    GPtrArray *types; /* char* message type names (PyTorch's) */
    guint times;      /* fail: num_fail_sends (default 3) */
    SimTime delay;    /* delay */
    gint from_worker; /* -1: every worker */
    gboolean is_drop; /* drop TYPES with P [from W]: lost with probability */
    double probability;
} ScAgentFault;

/* One link override: link A -> B { … } (A/B may be -1 for "any").  A <-> B
 * gives two entries, A -> B then B -> A.  cfg is complete: the network
 * default with the block's settings applied; set_mask says which fields the
 * block itself set. */
typedef struct {
    ScLoc loc;
    gint from, to;
    SimLinkConfig cfg;
    guint set_mask; /* which fields the block set (SC_LINK_SET_*) */
} ScLinkOverride;

enum {
    SC_LINK_SET_LATENCY = 1 << 0,
    SC_LINK_SET_BANDWIDTH = 1 << 1,
    SC_LINK_SET_JITTER = 1 << 2,
    SC_LINK_SET_LOSS = 1 << 3,
    SC_LINK_SET_DUPLICATE = 1 << 4,
    SC_LINK_SET_REORDER = 1 << 5,
};

typedef enum { SC_CMP_EQ, SC_CMP_NE, SC_CMP_LT, SC_CMP_LE, SC_CMP_GT, SC_CMP_GE } ScCmp;

typedef enum {
    SC_END_DEADLOCK,          /* expect { deadlock }: the run must end in a deadlock */
    SC_END_NO_DEADLOCK,       /* the default */
    SC_END_FUTURES_RESOLVED,  /* every future created by programs completed */
    SC_END_COUNTER,           /* counter WORKER NAME CMP INT */
    SC_END_FIRED,             /* fired NAME CMP INT (sim_scenario_fired_names()) */
    SC_END_TIME,              /* time CMP DURATION (virtual time at the end) */
    SC_END_MESSAGES,          /* messages CMP INT (sent by agents) */
    SC_END_TRACE_CONTAINS,    /* trace contains "text" */
    SC_END_TRACE_LACKS,       /* trace lacks "text" */
    SC_END_DEADLOCK_CONTAINS, /* deadlock contains "text" (in the report) */
} ScEndKind;

typedef struct {
    ScLoc loc;
    ScEndKind kind;
    gint worker; /* SC_END_COUNTER */
    char *name;  /* counter name / fired kind / text */
    ScCmp cmp;
    gint64 value; /* int, or ns for SC_END_TIME */
} ScEndExpect;

typedef struct ScScenario {
    char *path;        /* as given, for messages */
    char *description; /* nullable: describe "…" */
    /* world { … } */
    guint n_workers;
    char **worker_names; /* n_workers, NULL-terminated */
    guint threads;       /* 0: default */
    SimTime rpc_timeout; /* -1: default */
    guint64 seed;        /* default seed */
    gboolean seed_set;
    gboolean auto_shutdown; /* graceful shutdown after each program (default TRUE) */
    SimTime time_limit;     /* run at most this much virtual time (default 1 hour) */
    /* network { … } */
    SimLinkConfig net_default;
    GPtrArray *links; /* ScLinkOverride* */
    /* faults { … } */
    GPtrArray *agent_faults; /* ScAgentFault* */
    GPtrArray *timed_faults; /* ScTimedFault* */
    /* on … { … } */
    GPtrArray *programs; /* ScProgram* */
    /* expect { … } */
    GPtrArray *expects; /* ScEndExpect* */
} ScScenario;

G_END_DECLS

#endif /* SIM_SCENARIO_AST_H */
