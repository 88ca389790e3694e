/* trace-export.h — writing a run's trace for people and tools.
 *
 *   text    the trace lines of trace.h, one per record
 *   json    one JSON object per record and line:
 *           {"t_ns":…, "worker":…, "thread":…, "kind":"…", "a":…, "b":…, "c":…,
 *            "labels":["…",…], "detail":"…"}
 *   chrome  Chrome trace-event JSON (Perfetto, chrome://tracing): one process
 *           per worker and one thread track per virtual thread, RPCs as
 *           duration spans from send to response, messages as flow arrows
 *           from send to delivery, faults and other records as instant
 *           events; timestamps in microseconds of virtual time.
 *
 * An exporter is a trace sink; finish() completes the document (the chrome
 * format is one JSON array) and must be called once the run is over.
 */
#ifndef SIM_TRACE_EXPORT_H
#define SIM_TRACE_EXPORT_H

#include <stdio.h>

#include "sim/trace.h"

G_BEGIN_DECLS

typedef enum {
    SIM_TRACE_FORMAT_TEXT,
    SIM_TRACE_FORMAT_JSON,
    SIM_TRACE_FORMAT_CHROME,
} SimTraceFormat;

typedef struct SimTraceExport SimTraceExport;

/* "text", "json", "chrome"; FALSE for anything else. */
gboolean sim_trace_format_from_name(const char *name, SimTraceFormat *out);

/* Attaches to t, which owns the exporter from then on (freed with t); f
 * stays owned by the caller and must stay open until finish. */
SimTraceExport *sim_trace_export_new(SimTrace *t, SimTraceFormat format, FILE *f);
/* Writes the document's end; later records are not written.  Call before
 * the trace is freed. */
void sim_trace_export_finish(SimTraceExport *e);

G_END_DECLS

#endif /* SIM_TRACE_EXPORT_H */
