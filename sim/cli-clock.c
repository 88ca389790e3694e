/* cli-clock.c — the wall clock of sweep's progress line (see cli-clock.h).
 *
 * Wall-clock time is allowed here because the CLI is outside the simulated
 * run: the value only feeds the progress line (runs/s, ETA) and the elapsed
 * time printed after a sweep, never a run's input or its trace.
 */
#include "sim/cli-clock.h"

gint64
sim_cli_clock_now_us(void)
{
    return g_get_monotonic_time();
}
