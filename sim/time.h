/* time.h — virtual time: integer nanoseconds, never floating point.
 *
 * SimTime is core's RpcTime (the simulator is one implementation of the
 * executor's clock).  sim_time_format() renders "12.000500000" (seconds with
 * nine decimals), the form every trace line starts with.
 */
#ifndef SIM_TIME_H
#define SIM_TIME_H

#include <glib.h>

#include "core/executor.h"

G_BEGIN_DECLS

typedef RpcTime SimTime;
#define SIM_NS         RPC_NS
#define SIM_US         RPC_US
#define SIM_MS         RPC_MS
#define SIM_S          RPC_S
#define SIM_TIME_NEVER RPC_TIME_NEVER

/* Enough for any SimTime: "-9223372036.854775808" is 21 bytes + NUL. */
#define SIM_TIME_FORMAT_LEN 32

/* Writes "<s>.<9 digits>" into buf (at least 32 bytes); returns buf.
 * Negative times get a leading '-' ("-1.500000000"); SIM_TIME_NEVER is
 * written as "never".  A shorter buf gets a truncated, NUL-terminated
 * prefix. */
char *sim_time_format(SimTime t, char *buf, gsize len);

G_END_DECLS

#endif /* SIM_TIME_H */
