/* test-coro.c — sim/coro: switching, finishing, recycling, stack and
 * register discipline, guard page.
 *
 * The register and alignment tests check the ABI contract of the hand-written
 * switch: what the compiler keeps in callee-saved registers or 16-byte
 * aligned stack slots across sim_coro_switch() must come back intact.
 */
#include "sim/coro.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- runs fn with arg ----------------------------------------------------- */

typedef struct {
    SimCoro *main;
    SimCoro *co;
    int calls;
    gpointer seen_arg;
} Simple;

static void
simple_fn(gpointer arg)
{
    Simple *s = arg;

    s->calls++;
    s->seen_arg = arg;
}

static void
test_runs_fn(void)
{
    Simple s = {0};

    s.main = sim_coro_new_main();
    s.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, simple_fn, &s);
    g_assert_false(sim_coro_finished(s.co));
    g_assert_cmpint(s.calls, ==, 0); /* nothing runs before the first switch */

    sim_coro_switch(s.main, s.co);
    g_assert_cmpint(s.calls, ==, 1);
    g_assert_true(s.seen_arg == &s);
    g_assert_true(sim_coro_finished(s.co));
    g_assert_false(sim_coro_finished(s.main));

    sim_coro_free(s.co);
    sim_coro_free(s.main);
}

/* ---- ping-pong through a shared struct ------------------------------------ */

#define PING_ROUNDS 1000

typedef struct {
    SimCoro *main;
    SimCoro *co;
    int value;
    GArray *log; /* every value as it was seen, by either side */
} PingPong;

static void
pong_fn(gpointer arg)
{
    PingPong *p = arg;

    for (int i = 0; i < PING_ROUNDS; i++) {
        g_assert_cmpint(p->value, ==, 2 * i); /* main's ping */
        g_array_append_val(p->log, p->value);
        p->value = 2 * i + 1;
        sim_coro_switch(p->co, p->main);
    }
}

static void
test_ping_pong(void)
{
    PingPong p = {0};

    p.log = g_array_new(FALSE, FALSE, sizeof(int));
    p.main = sim_coro_new_main();
    p.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, pong_fn, &p);

    for (int i = 0; i < PING_ROUNDS; i++) {
        p.value = 2 * i;
        sim_coro_switch(p.main, p.co);
        g_assert_cmpint(p.value, ==, 2 * i + 1); /* the coroutine's pong */
        g_array_append_val(p.log, p.value);
        g_assert_false(sim_coro_finished(p.co));
    }
    sim_coro_switch(p.main, p.co); /* lets the loop end and fn return */
    g_assert_true(sim_coro_finished(p.co));

    g_assert_cmpuint(p.log->len, ==, 2 * PING_ROUNDS);
    for (guint i = 0; i < p.log->len; i++)
        g_assert_cmpint(g_array_index(p.log, int, i), ==, (int)i);

    sim_coro_free(p.co);
    sim_coro_free(p.main);
    g_array_unref(p.log);
}

/* ---- two coroutines switching to each other directly --------------------- */

#define AB_ROUNDS 3

typedef struct {
    SimCoro *main;
    SimCoro *a;
    SimCoro *b;
    GString *log;
} AB;

static void
a_fn(gpointer arg)
{
    AB *ab = arg;

    for (int i = 0; i < AB_ROUNDS; i++) {
        g_string_append_c(ab->log, 'A');
        sim_coro_switch(ab->a, ab->b);
    }
    /* Returning goes to b, the last to switch in here — not to main. */
}

static void
b_fn(gpointer arg)
{
    AB *ab = arg;

    for (int i = 0; i < AB_ROUNDS; i++) {
        g_string_append_c(ab->log, 'B');
        sim_coro_switch(ab->b, ab->a);
    }
    g_assert_true(sim_coro_finished(ab->a));
    g_string_append_c(ab->log, 'b');
    /* b's resumer is now the finished a: leave explicitly. */
    sim_coro_switch(ab->b, ab->main);
    g_assert_not_reached();
}

static void
test_direct_a_b(void)
{
    AB ab = {0};

    ab.log = g_string_new(NULL);
    ab.main = sim_coro_new_main();
    ab.a = sim_coro_new(SIM_CORO_DEFAULT_STACK, a_fn, &ab);
    ab.b = sim_coro_new(SIM_CORO_DEFAULT_STACK, b_fn, &ab);

    sim_coro_switch(ab.main, ab.a);
    g_assert_cmpstr(ab.log->str, ==, "ABABABb");
    g_assert_true(sim_coro_finished(ab.a));
    g_assert_false(sim_coro_finished(ab.b)); /* suspended; freeing it is allowed */

    sim_coro_free(ab.a);
    sim_coro_free(ab.b);
    sim_coro_free(ab.main);
    g_string_free(ab.log, TRUE);
}

/* ---- finished, and back to the resumer ------------------------------------ */

typedef struct {
    SimCoro *main;
    SimCoro *outer; /* resumes inner, so inner returns to outer */
    SimCoro *inner;
    GString *log;
} Nest;

static void
inner_fn(gpointer arg)
{
    Nest *n = arg;

    g_string_append(n->log, "i1 ");
    sim_coro_switch(n->inner, n->outer);
    g_string_append(n->log, "i2 ");
}

static void
outer_fn(gpointer arg)
{
    Nest *n = arg;

    g_string_append(n->log, "o1 ");
    sim_coro_switch(n->outer, n->inner);
    g_assert_false(sim_coro_finished(n->inner));
    g_string_append(n->log, "o2 ");
    sim_coro_switch(n->outer, n->main);
    g_string_append(n->log, "o3 ");
    sim_coro_switch(n->outer, n->inner);
    /* inner returned: control came back here, to its resumer */
    g_assert_true(sim_coro_finished(n->inner));
    g_string_append(n->log, "o4 ");
    /* outer's resumer is now the finished inner: go to main explicitly, and
     * return only once main has switched in again. */
    sim_coro_switch(n->outer, n->main);
}

static void
test_finished_returns_to_resumer(void)
{
    Nest n = {0};

    n.log = g_string_new(NULL);
    n.main = sim_coro_new_main();
    n.outer = sim_coro_new(SIM_CORO_DEFAULT_STACK, outer_fn, &n);
    n.inner = sim_coro_new(SIM_CORO_DEFAULT_STACK, inner_fn, &n);

    sim_coro_switch(n.main, n.outer);
    g_assert_cmpstr(n.log->str, ==, "o1 i1 o2 ");
    g_assert_false(sim_coro_finished(n.outer));
    g_assert_false(sim_coro_finished(n.inner));

    sim_coro_switch(n.main, n.outer);
    g_assert_cmpstr(n.log->str, ==, "o1 i1 o2 o3 i2 o4 ");
    g_assert_true(sim_coro_finished(n.inner));
    g_assert_false(sim_coro_finished(n.outer));

    sim_coro_switch(n.main, n.outer);
    g_assert_true(sim_coro_finished(n.outer)); /* and back here, its resumer */

    sim_coro_free(n.inner);
    sim_coro_free(n.outer);
    sim_coro_free(n.main);
    g_string_free(n.log, TRUE);
}

/* ---- reset and rerun on the same stack ------------------------------------ */

typedef struct {
    SimCoro *main;
    SimCoro *co;
    int runs;
    int total;
    guintptr local_addr; /* where fn's first local lives: the same stack each run */
} Recycle;

static void
recycle_fn(gpointer arg)
{
    Recycle *r = arg;
    volatile int here = r->runs;

    r->local_addr = (guintptr)&here;
    sim_coro_switch(r->co, r->main); /* suspend once mid-fn */
    r->total += here + 1;
    r->runs++;
}

static void
recycle_other_fn(gpointer arg)
{
    int *x = arg;

    *x = 42;
}

static void
test_reset_recycles(void)
{
    Recycle r = {0};
    guintptr first_addr = 0;
    int x = 0;

    r.main = sim_coro_new_main();
    r.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, recycle_other_fn, &x);
    /* Reset before ever starting: the first entry is replaced. */
    sim_coro_reset(r.co, recycle_fn, &r);

    for (int i = 0; i < 100; i++) {
        if (i > 0) {
            g_assert_true(sim_coro_finished(r.co));
            sim_coro_reset(r.co, recycle_fn, &r);
            g_assert_false(sim_coro_finished(r.co));
        }
        sim_coro_switch(r.main, r.co);
        g_assert_false(sim_coro_finished(r.co));
        if (i == 0)
            first_addr = r.local_addr;
        g_assert_true(r.local_addr == first_addr); /* same stack, same frame */
        sim_coro_switch(r.main, r.co);
        g_assert_true(sim_coro_finished(r.co));
        g_assert_cmpint(r.runs, ==, i + 1);
    }
    g_assert_cmpint(r.total, ==, 100 * 101 / 2);
    g_assert_cmpint(x, ==, 0); /* the replaced entry never ran */

    /* And a different fn on the recycled stack. */
    sim_coro_reset(r.co, recycle_other_fn, &x);
    sim_coro_switch(r.main, r.co);
    g_assert_cmpint(x, ==, 42);
    g_assert_true(sim_coro_finished(r.co));

    sim_coro_free(r.co);
    sim_coro_free(r.main);
}

/* ---- deep stack use within the default size ------------------------------- */

#define DEEP_FRAME 1024
#define DEEP_DEPTH 100 /* ~100 KiB of frames in a 256 KiB stack */

static guint64
deep_recurse(int depth)
{
    volatile guint8 buf[DEEP_FRAME];
    guint64 sum = 0;

    for (int i = 0; i < DEEP_FRAME; i++)
        buf[i] = (guint8)(depth + i);
    if (depth > 0)
        sum = deep_recurse(depth - 1); /* not a tail call: buf is read below */
    for (int i = 0; i < DEEP_FRAME; i += 64)
        sum += buf[i];
    return sum;
}

typedef struct {
    guint64 got;
} Deep;

static guint64
deep_expected(void)
{
    guint64 sum = 0;

    for (int d = 0; d <= DEEP_DEPTH; d++)
        for (int i = 0; i < DEEP_FRAME; i += 64)
            sum += (guint8)(d + i);
    return sum;
}

static void
deep_fn(gpointer arg)
{
    Deep *d = arg;

    d->got = deep_recurse(DEEP_DEPTH);
}

static void
test_deep_stack(void)
{
    SimCoro *main_ctx = sim_coro_new_main();
    Deep d = {0};
    SimCoro *co = sim_coro_new(SIM_CORO_DEFAULT_STACK, deep_fn, &d);

    sim_coro_switch(main_ctx, co);
    g_assert_true(sim_coro_finished(co));
    g_assert_cmpuint(d.got, ==, deep_expected());

    sim_coro_free(co);
    sim_coro_free(main_ctx);
}

/* ---- printf with doubles: the stack is ABI-aligned ------------------------ */

typedef struct {
    char *formatted;
    char snbuf[128];
    guintptr aligned_addr;
} Fmt;

static void
fmt_fn(gpointer arg)
{
    Fmt *f = arg;
    _Alignas(16) volatile guint8 slot[16];
    volatile double a = 3.14159265358979, b = 2.5e-3, c = 1e300;

    slot[0] = 1;
    /* The compiler assumes rsp+8 is 16-aligned at entry; a wrong initial
     * frame would show up as a misaligned slot (and a crash in glibc's SSE
     * code below). */
    f->aligned_addr = (guintptr)slot;
    f->formatted = g_strdup_printf("%.6f %g %e %.3Lf", a, b, c, (long double)a);
    snprintf(f->snbuf, sizeof f->snbuf, "%10.4f|%-8.2e|", a * 2, b / 3);
}

static void
test_printf_doubles(void)
{
    SimCoro *main_ctx = sim_coro_new_main();
    Fmt f = {0};
    SimCoro *co = sim_coro_new(SIM_CORO_DEFAULT_STACK, fmt_fn, &f);
    volatile double a = 3.14159265358979, b = 2.5e-3, c = 1e300;
    char *want = g_strdup_printf("%.6f %g %e %.3Lf", a, b, c, (long double)a);
    char snwant[128];

    snprintf(snwant, sizeof snwant, "%10.4f|%-8.2e|", a * 2, b / 3);
    sim_coro_switch(main_ctx, co);
    g_assert_true(sim_coro_finished(co));
    g_assert_cmpuint(f.aligned_addr % 16, ==, 0);
    g_assert_cmpstr(f.formatted, ==, want);
    g_assert_cmpstr(f.snbuf, ==, snwant);

    g_free(want);
    g_free(f.formatted);
    sim_coro_free(co);
    sim_coro_free(main_ctx);
}

/* ---- callee-saved registers and floating point survive a switch ---------- */

static volatile guint64 reg_seed = 0x9e3779b97f4a7c15u;

static guint64
mix(guint64 x)
{
    x ^= x >> 31;
    x *= 0xbf58476d1ce4e5b9u;
    x ^= x >> 27;
    return x;
}

/* Keeps many integers (in callee-saved registers when optimised) and doubles
 * (spilled across the call) live across one switch, then checks them.
 * Called from both sides, so each side clobbers the registers the other
 * holds. */
static gboolean
hold_across_switch(SimCoro *from, SimCoro *to, guint64 salt)
{
    guint64 s = reg_seed ^ salt;
    guint64 v0 = mix(s + 0), v1 = mix(s + 1), v2 = mix(s + 2), v3 = mix(s + 3);
    guint64 v4 = mix(s + 4), v5 = mix(s + 5), v6 = mix(s + 6), v7 = mix(s + 7);
    double d0 = (double)(v0 >> 11) / 3.0, d1 = (double)(v1 >> 11) * 1.5e-7;
    double d2 = (double)(v2 >> 11) + 0.25;
    volatile double vd = d0 * d1 - d2;
    guint64 w;

    sim_coro_switch(from, to);

    s = reg_seed ^ salt;
    w = mix(s + 0) ^ v0;
    w |= mix(s + 1) ^ v1;
    w |= mix(s + 2) ^ v2;
    w |= mix(s + 3) ^ v3;
    w |= mix(s + 4) ^ v4;
    w |= mix(s + 5) ^ v5;
    w |= mix(s + 6) ^ v6;
    w |= mix(s + 7) ^ v7;
    return w == 0 && d0 == (double)(mix(s + 0) >> 11) / 3.0 &&
           d1 == (double)(mix(s + 1) >> 11) * 1.5e-7 && d2 == (double)(mix(s + 2) >> 11) + 0.25 &&
           vd == d0 * d1 - d2;
}

typedef struct {
    SimCoro *main;
    SimCoro *co;
    int ok;
} Regs;

static void
regs_fn(gpointer arg)
{
    Regs *r = arg;

    for (guint64 i = 0; i < 50; i++)
        r->ok += hold_across_switch(r->co, r->main, 1000 + i);
}

static void
test_registers_preserved(void)
{
    Regs r = {0};
    int ok = 0;

    r.main = sim_coro_new_main();
    r.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, regs_fn, &r);
    for (guint64 i = 0; i < 50; i++)
        ok += hold_across_switch(r.main, r.co, i);
    g_assert_false(sim_coro_finished(r.co));
    sim_coro_switch(r.main, r.co);
    g_assert_true(sim_coro_finished(r.co));
    g_assert_cmpint(ok, ==, 50);
    g_assert_cmpint(r.ok, ==, 50);

    sim_coro_free(r.co);
    sim_coro_free(r.main);
}

/* ---- MXCSR is per context (x86_64 switch only) ---------------------------- */

#if defined(__x86_64__)
#define MXCSR_RC_MASK 0x6000u /* rounding control */
#define MXCSR_RC_ZERO 0x6000u

typedef struct {
    SimCoro *main;
    SimCoro *co;
    guint32 at_entry;
    guint32 after_switch;
} Mx;

static void
mx_fn(gpointer arg)
{
    Mx *m = arg;

    m->at_entry = __builtin_ia32_stmxcsr();
    /* Round to nearest here, whatever main does meanwhile. */
    __builtin_ia32_ldmxcsr(m->at_entry & ~MXCSR_RC_MASK);
    sim_coro_switch(m->co, m->main);
    m->after_switch = __builtin_ia32_stmxcsr();
}
#endif

static void
test_fp_control_per_context(void)
{
#if defined(__x86_64__)
    guint32 saved = __builtin_ia32_stmxcsr();
    Mx m = {0};

    m.main = sim_coro_new_main();
    /* A new coroutine inherits its creator's control words. */
    __builtin_ia32_ldmxcsr((saved & ~MXCSR_RC_MASK) | MXCSR_RC_ZERO);
    m.co = sim_coro_new(SIM_CORO_DEFAULT_STACK, mx_fn, &m);
    sim_coro_switch(m.main, m.co);
    g_assert_cmphex(m.at_entry & MXCSR_RC_MASK, ==, MXCSR_RC_ZERO);
    /* The coroutine chose round-to-nearest; main keeps round-toward-zero. */
    g_assert_cmphex(__builtin_ia32_stmxcsr() & MXCSR_RC_MASK, ==, MXCSR_RC_ZERO);
    __builtin_ia32_ldmxcsr(saved);
    sim_coro_switch(m.main, m.co);
    g_assert_cmphex(m.after_switch & MXCSR_RC_MASK, ==, 0);
    g_assert_cmphex(__builtin_ia32_stmxcsr(), ==, saved);

    sim_coro_free(m.co);
    sim_coro_free(m.main);
#else
    g_test_skip("MXCSR is x86_64 only");
#endif
}

/* ---- many coroutines alive at once ---------------------------------------- */

#define MANY 2000

typedef struct {
    SimCoro *main;
    SimCoro **cos;
    int started;
    int done;
} Many;

typedef struct {
    Many *many;
    int id;
} ManyArg;

static void
many_fn(gpointer arg)
{
    ManyArg *a = arg;
    Many *m = a->many;

    m->started++;
    sim_coro_switch(m->cos[a->id], m->main);
    m->done++;
}

static void
test_many_alive(void)
{
    Many m = {0};
    ManyArg *args = g_new0(ManyArg, MANY);

    m.main = sim_coro_new_main();
    m.cos = g_new0(SimCoro *, MANY);
    for (int i = 0; i < MANY; i++) {
        args[i] = (ManyArg){.many = &m, .id = i};
        m.cos[i] = sim_coro_new(SIM_CORO_DEFAULT_STACK, many_fn, &args[i]);
    }
    for (int i = 0; i < MANY; i++)
        sim_coro_switch(m.main, m.cos[i]);
    g_assert_cmpint(m.started, ==, MANY);
    g_assert_cmpint(m.done, ==, 0);
    for (int i = MANY - 1; i >= 0; i--) {
        sim_coro_switch(m.main, m.cos[i]);
        g_assert_true(sim_coro_finished(m.cos[i]));
    }
    g_assert_cmpint(m.done, ==, MANY);

    for (int i = 0; i < MANY; i++)
        sim_coro_free(m.cos[i]);
    sim_coro_free(m.main);
    g_free(m.cos);
    g_free(args);
}

/* ---- caller bugs are refused, not obeyed ---------------------------------- */

static void
test_bad_switch_refused(void)
{
    SimCoro *main_ctx = sim_coro_new_main();
    int x = 0;
    SimCoro *co = sim_coro_new(0, recycle_other_fn, &x); /* 0: smallest stack */

    /* To the running context (main never switched away). */
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    sim_coro_switch(main_ctx, main_ctx);
    g_test_assert_expected_messages();

    sim_coro_switch(main_ctx, co);
    g_assert_true(sim_coro_finished(co));
    g_assert_cmpint(x, ==, 42);

    /* To a finished coroutine. */
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*finished*failed*");
    sim_coro_switch(main_ctx, co);
    g_test_assert_expected_messages();

    /* Reset of a main context. */
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*failed*");
    sim_coro_reset(main_ctx, recycle_other_fn, &x);
    g_test_assert_expected_messages();

    sim_coro_free(co);
    sim_coro_free(main_ctx);
    sim_coro_free(NULL);
}

/* ---- overflow hits the guard page ----------------------------------------- */

#define GUARD_STACK (64 * 1024)

static volatile guintptr guard_top; /* an address near the coroutine's stack top */
static volatile gsize guard_page;

/* Small frames, so the overflow steps onto the guard page rather than over
 * it. */
static guint64
recurse_forever(volatile guint8 *prev, guint depth)
{
    volatile guint8 buf[128];

    buf[0] = (guint8)depth;
    buf[1] = prev != NULL ? prev[0] : 0;
    if (depth == G_MAXUINT) /* never: the stack runs out first */
        return buf[0];
    return recurse_forever(buf, depth + 1) + buf[1];
}

static void
overflow_fn(gpointer arg)
{
    volatile guint8 here = 0;

    guard_top = (guintptr)&here;
    recurse_forever(NULL, 0);
}

/* Runs on the alternate stack: says whether the fault is in the guard page,
 * then returns; SA_RESETHAND has restored the default action, so the
 * faulting access kills the process with SIGSEGV. */
static void
on_segv(int sig, siginfo_t *info, void *uctx)
{
    static const char in_guard[] = "SIGSEGV in the guard page\n";
    static const char elsewhere[] = "SIGSEGV elsewhere\n";
    guintptr addr = (guintptr)info->si_addr;
    guintptr stack_lo = guard_top - GUARD_STACK; /* roughly: top minus size */
    gboolean hit = addr < stack_lo + 512 && addr + guard_page + 512 >= stack_lo;

    if (write(STDERR_FILENO, hit ? in_guard : elsewhere,
              hit ? sizeof in_guard - 1 : sizeof elsewhere - 1) < 0)
        _exit(3);
}

static void
test_guard_page_overflow(void)
{
    if (g_getenv("RPCSIM_UNDER_VALGRIND") != NULL) {
        g_test_skip("stack overflow under valgrind");
        return;
    }
    if (g_test_subprocess()) {
        struct rlimit no_core = {0, 0};
        static guint8 altstack[64 * 1024];
        stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack};
        struct sigaction sa;
        SimCoro *main_ctx = sim_coro_new_main();
        SimCoro *co = sim_coro_new(GUARD_STACK, overflow_fn, NULL);

        setrlimit(RLIMIT_CORE, &no_core);
        guard_page = (gsize)sysconf(_SC_PAGESIZE);
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
        sigemptyset(&sa.sa_mask);
        g_assert_cmpint(sigaltstack(&ss, NULL), ==, 0);
        g_assert_cmpint(sigaction(SIGSEGV, &sa, NULL), ==, 0);

        sim_coro_switch(main_ctx, co);
        g_assert_not_reached();
    }
    g_test_trap_subprocess(NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
    g_test_trap_assert_failed();
    g_test_trap_assert_stderr("*SIGSEGV in the guard page*");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/coro/runs-fn-with-arg", test_runs_fn);
    g_test_add_func("/coro/ping-pong", test_ping_pong);
    g_test_add_func("/coro/direct-a-b", test_direct_a_b);
    g_test_add_func("/coro/finished-returns-to-resumer", test_finished_returns_to_resumer);
    g_test_add_func("/coro/reset-recycles-stack", test_reset_recycles);
    g_test_add_func("/coro/deep-stack", test_deep_stack);
    g_test_add_func("/coro/printf-doubles-aligned", test_printf_doubles);
    g_test_add_func("/coro/registers-preserved", test_registers_preserved);
    g_test_add_func("/coro/fp-control-per-context", test_fp_control_per_context);
    g_test_add_func("/coro/many-alive", test_many_alive);
    g_test_add_func("/coro/bad-switch-refused", test_bad_switch_refused);
    g_test_add_func("/coro/guard-page-overflow", test_guard_page_overflow);

    return g_test_run();
}
