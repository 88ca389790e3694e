/* coro.h — stackful coroutines: the machine under virtual threads.
 *
 * A SimCoro runs fn(arg) on its own stack.  sim_coro_switch() saves only the
 * callee-saved registers and the stack pointer (plus the x87/SSE control
 * words) and jumps — no signal-mask syscall, unlike glibc swapcontext
 * (~130 ns); about 10 ns here.  On architectures without the hand-written
 * switch, ucontext is the fallback.
 *
 * Stacks are mmap'ed with a PROT_NONE guard page below them, so an overflow
 * faults instead of corrupting a neighbour, and are registered with valgrind
 * (VALGRIND_STACK_REGISTER) so memcheck follows the switches.
 *
 * A coroutine that returns from fn switches to the context that last
 * switched into it and is then "finished": it must not be resumed again, but
 * may be restarted with sim_coro_reset() (threads are recycled that way).
 */
#ifndef SIM_CORO_H
#define SIM_CORO_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct SimCoro SimCoro;
typedef void (*SimCoroFunc)(gpointer arg);

#define SIM_CORO_DEFAULT_STACK (256 * 1024)

/* The context of the calling OS thread, to switch back to (one per
 * scheduler; not runnable by itself, has no stack of its own). */
SimCoro *sim_coro_new_main(void);
/* A coroutine that will run fn(arg) when first switched to.  stack_size is
 * rounded up to whole pages, at least 16 KiB (0 gives that minimum); the
 * guard page comes on top.  Aborts if the stack cannot be mapped, as
 * g_malloc() does. */
SimCoro *sim_coro_new(gsize stack_size, SimCoroFunc fn, gpointer arg);
/* Restarts a finished (or never started) coroutine with a new entry, on the
 * same stack. */
void sim_coro_reset(SimCoro *c, SimCoroFunc fn, gpointer arg);
/* NULL is a no-op.  Freeing a coroutine suspended inside fn abandons its
 * stack (what fn owned leaks); never free the running context. */
void sim_coro_free(SimCoro *c);

/* Saves the current context into from and resumes to.  Returns when some
 * coroutine switches back to from.  from must be the running context; to
 * must be suspended (not running, not finished, and for a main context,
 * switched away from at least once).  Records from as to's resumer: when
 * fn returns, its coroutine switches there — so a coroutine whose resumer
 * has itself finished must switch away explicitly instead of returning. */
void sim_coro_switch(SimCoro *from, SimCoro *to);

gboolean sim_coro_finished(const SimCoro *c);

G_END_DECLS

#endif /* SIM_CORO_H */
