/* cli-clock.h — wall-clock time for the command line's progress display.
 *
 * The only wall clock in sim/: it measures how long a sweep takes on this
 * machine (runs/s, ETA), which is outside every simulated run and never
 * reaches a trace, a report or a fingerprint.  .ci/lint.sh exempts
 * cli-clock.c alone from the no-wall-clock rule.
 */
#ifndef SIM_CLI_CLOCK_H
#define SIM_CLI_CLOCK_H

#include <glib.h>

G_BEGIN_DECLS

/* Microseconds of a monotonic wall clock (arbitrary origin). */
gint64 sim_cli_clock_now_us(void);

G_END_DECLS

#endif /* SIM_CLI_CLOCK_H */
