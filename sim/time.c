/* time.c — rendering virtual time for traces and messages.
 *
 * Invariant: the rendering is exact (integer arithmetic only, no floating
 * point) and has a fixed shape, "[-]<seconds>.<nine digits>", so trace lines
 * sort and diff as text and a digest never depends on a printf rounding mode.
 */
#include "sim/time.h"

char *
sim_time_format(SimTime t, char *buf, gsize len)
{
    guint64 mag;

    g_return_val_if_fail(buf != NULL, NULL);
    g_return_val_if_fail(len > 0, buf);

    if (t == SIM_TIME_NEVER) {
        g_strlcpy(buf, "never", len);
        return buf;
    }
    /* -(t + 1) + 1 is |t| without overflowing at G_MININT64. */
    mag = t < 0 ? (guint64)(-(t + 1)) + 1 : (guint64)t;
    g_snprintf(buf, len, "%s%" G_GUINT64_FORMAT ".%09" G_GUINT64_FORMAT, t < 0 ? "-" : "",
               mag / (guint64)SIM_S, mag % (guint64)SIM_S);
    return buf;
}
