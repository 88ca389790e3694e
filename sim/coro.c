/* coro.c — stackful coroutines: the machine under virtual threads.
 *
 * Purpose: give each virtual thread its own C stack, and switch between
 * stacks in a few nanoseconds, so blocking calls inside the runtime
 * (rpc_sync, to_here, wait) can suspend mid-call under the simulator.
 *
 * Invariants:
 *  - Exactly one context runs per OS thread at a time.  A context is
 *    *suspended* (may be switched to) iff it is saved: on x86_64 iff its
 *    sp is non-NULL.  sim_coro_switch() clears the running context's mark
 *    when it is resumed, so switching to the running context, or to a main
 *    context that never switched away, is caught as a caller bug.
 *  - resumer is the context that most recently switched into a coroutine.
 *    While the coroutine runs, its resumer is suspended (only the running
 *    context switches, and the resumer's last act was to switch here), so a
 *    returning fn can always go back to it.
 *  - A finished coroutine is never resumed; sim_coro_reset() rebuilds its
 *    first frame on the same stack.
 *  - Stack memory is [guard page, PROT_NONE][stack_size bytes, RW]; the top
 *    is page-aligned, hence 16-byte aligned as the ABI wants.
 *
 * Costs (2-core x86_64 dev box, bench/bench-switch.c): a switch is
 * ~10-13 ns on x86_64 (callee-saved registers, rsp, MXCSR and x87 CW; no
 * syscall; saving and loading the two control words is ~3 ns of that); the
 * ucontext fallback pays glibc's rt_sigprocmask, 130-280 ns.  Each
 * coroutine costs two memory mappings (the kernel caps a process at ~65,000,
 * so ~32,000 live coroutines) and, idle, about one page of resident stack:
 * stack pages are touched only as deep as the code goes.  Creation is an
 * mmap + mprotect; free is a munmap.  Mapping failure aborts, like
 * g_malloc() does: there is no GError in this interface.
 */

/* The hand-written switch (coro-x86_64.S) unless on another architecture or
 * asked for the fallback with -DSIM_CORO_UCONTEXT (to test it on x86_64).
 * Decided before any include: the fallback needs a feature macro. */
#if defined(__x86_64__) && !defined(SIM_CORO_UCONTEXT)
#define CORO_ASM 1
#else
#define CORO_ASM    0
#define _GNU_SOURCE /* ucontext.h: makecontext, swapcontext */
#endif

#include "sim/coro.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#if !CORO_ASM
#include <ucontext.h>
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND 1
#endif
#endif
#ifndef HAVE_VALGRIND
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define VALGRIND_STACK_DEREGISTER(id)   ((void)(id))
#endif

/* Anything smaller is rounded up to this: the entry frame, fn's frame and a
 * g_return_if_fail() message must fit. */
#define MIN_STACK (16 * 1024)

struct SimCoro {
#if CORO_ASM
    void *sp; /* saved stack pointer while suspended, else NULL */
#else
    ucontext_t uc;
    gboolean suspended; /* uc holds a resumable context */
#endif
    SimCoro *resumer; /* (transfer none) who last switched into this one */
    SimCoroFunc fn;
    gpointer arg;
    guint8 *map;     /* guard page + stack; NULL for a main context */
    gsize map_size;  /* bytes, guard page included */
    gsize page_size; /* size of the guard page */
    unsigned vg_stack_id;
    gboolean started;  /* fn has been entered since create/reset */
    gboolean finished; /* fn has returned */
};

#if CORO_ASM

/* coro-x86_64.S */
void sim_coro__swap(void **save_sp, void *load_sp);
void sim_coro__trampoline(void);

/* Runs on the coroutine's stack, called by sim_coro__trampoline. */
static void
coro_entry(SimCoro *c)
{
    c->sp = NULL; /* running */
    c->started = TRUE;
    c->fn(c->arg);
    c->finished = TRUE;
    sim_coro_switch(c, c->resumer);
    g_assert_not_reached(); /* finished coroutines are never resumed */
}

/* Builds the frame sim_coro__swap() pops on the first switch (layout in
 * coro-x86_64.S): callee-saved registers zero except r12 = c and
 * r13 = coro_entry, "return" into the trampoline with rsp = top.  The
 * control words are inherited from the creator, so a process-wide setting
 * (e.g. -ffast-math's flush-to-zero) holds in coroutines too. */
static void
frame_init(SimCoro *c)
{
    guint64 *f = (guint64 *)(void *)(c->map + c->map_size) - 8;
    guint32 mxcsr = __builtin_ia32_stmxcsr();
    guint16 fpcw;

    __asm__ volatile("fnstcw %0" : "=m"(fpcw));
    f[0] = (guint64)mxcsr | (guint64)fpcw << 32;
    f[1] = 0;                             /* r15 */
    f[2] = 0;                             /* r14 */
    f[3] = (guint64)(guintptr)coro_entry; /* r13 */
    f[4] = (guint64)(guintptr)c;          /* r12 */
    f[5] = 0;                             /* rbx */
    f[6] = 0;                             /* rbp */
    f[7] = (guint64)(guintptr)sim_coro__trampoline;
    c->sp = f;
}

void
sim_coro_switch(SimCoro *from, SimCoro *to)
{
    g_return_if_fail(from != NULL && to != NULL);
    g_return_if_fail(to->sp != NULL); /* to is running, or a main that never left */
    g_return_if_fail(!to->finished);

    to->resumer = from;
    sim_coro__swap(&from->sp, to->sp);
    from->sp = NULL; /* resumed: running again */
}

#else /* ucontext fallback */

/* makecontext passes int arguments only: the pointer travels in halves. */
static void
coro_entry(unsigned hi, unsigned lo)
{
    SimCoro *c = (SimCoro *)(guintptr)(((guint64)hi << 32) | lo);

    c->suspended = FALSE;
    c->started = TRUE;
    c->fn(c->arg);
    c->finished = TRUE;
    sim_coro_switch(c, c->resumer);
    g_assert_not_reached();
}

static void
frame_init(SimCoro *c)
{
    guint64 p = (guint64)(guintptr)c;

    if (getcontext(&c->uc) != 0)
        g_error("sim_coro: getcontext failed: %s", g_strerror(errno));
    c->uc.uc_stack.ss_sp = c->map + c->page_size;
    c->uc.uc_stack.ss_size = c->map_size - c->page_size;
    c->uc.uc_link = NULL;
    makecontext(&c->uc, (void (*)(void))coro_entry, 2, (unsigned)(p >> 32),
                (unsigned)(p & 0xffffffffu));
    c->suspended = TRUE;
}

void
sim_coro_switch(SimCoro *from, SimCoro *to)
{
    g_return_if_fail(from != NULL && to != NULL);
    g_return_if_fail(to->suspended);
    g_return_if_fail(!to->finished);

    to->resumer = from;
    from->suspended = TRUE;
    to->suspended = FALSE;
    if (swapcontext(&from->uc, &to->uc) != 0)
        g_error("sim_coro: swapcontext failed: %s", g_strerror(errno));
    from->suspended = FALSE;
}

#endif /* CORO_ASM */

SimCoro *
sim_coro_new_main(void)
{
    /* Not suspended until it first switches away. */
    return g_new0(SimCoro, 1);
}

SimCoro *
sim_coro_new(gsize stack_size, SimCoroFunc fn, gpointer arg)
{
    gsize page = (gsize)sysconf(_SC_PAGESIZE);
    SimCoro *c;

    g_return_val_if_fail(fn != NULL, NULL);

    if (stack_size < MIN_STACK)
        stack_size = MIN_STACK;
    g_return_val_if_fail(stack_size <= G_MAXSIZE - 2 * page, NULL);
    stack_size = (stack_size + page - 1) / page * page;

    c = g_new0(SimCoro, 1);
    c->page_size = page;
    c->map_size = stack_size + page;
    /* NORESERVE: a stack costs only the pages it touches, not commit charge
     * for its whole size. */
    c->map = mmap(NULL, c->map_size, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (c->map == MAP_FAILED)
        g_error("sim_coro_new: mmap of %" G_GSIZE_FORMAT " bytes failed: %s", c->map_size,
                g_strerror(errno));
    if (mprotect(c->map, page, PROT_NONE) != 0)
        g_error("sim_coro_new: guard page: mprotect failed: %s", g_strerror(errno));
    /* Valgrind wants the lowest and the highest addressable byte. */
    c->vg_stack_id = VALGRIND_STACK_REGISTER(c->map + page, c->map + c->map_size - 1);

    c->fn = fn;
    c->arg = arg;
    frame_init(c);
    return c;
}

void
sim_coro_reset(SimCoro *c, SimCoroFunc fn, gpointer arg)
{
    g_return_if_fail(c != NULL && fn != NULL);
    g_return_if_fail(c->map != NULL);             /* not a main context */
    g_return_if_fail(c->finished || !c->started); /* not suspended mid-fn */

    c->fn = fn;
    c->arg = arg;
    c->resumer = NULL;
    c->started = FALSE;
    c->finished = FALSE;
    frame_init(c);
}

/* Freeing a coroutine suspended inside fn abandons its stack: whatever fn
 * owned at that point leaks.  Never free the running context. */
void
sim_coro_free(SimCoro *c)
{
    if (c == NULL)
        return;
    if (c->map != NULL) {
        VALGRIND_STACK_DEREGISTER(c->vg_stack_id);
        if (munmap(c->map, c->map_size) != 0)
            g_critical("sim_coro_free: munmap failed: %s", g_strerror(errno));
    }
    g_free(c);
}

gboolean
sim_coro_finished(const SimCoro *c)
{
    g_return_val_if_fail(c != NULL, FALSE);
    return c->finished;
}
