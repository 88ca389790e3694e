/* scenario.h — scenario files: parse, check, run.
 *
 * A scenario file describes a world, its network, its faults, a program per
 * worker and the expected outcome (docs/scenario-language.md).  Parsing
 * reports the first problem as "file:line:col: message" (SIM_ERROR_PARSE);
 * a scenario that parses has also been checked: every name resolves, every
 * worker and function exists, every built-in is called with a valid arity.
 *
 * Running is deterministic: the same scenario, seed and build give the same
 * trace, event for event, and so the same fingerprint.
 */
#ifndef SIM_SCENARIO_H
#define SIM_SCENARIO_H

#include <stdio.h>

#include <glib.h>

#include "sim/scenario-ast.h"
#include "sim/trace-export.h"
#include "sim/trace.h"

G_BEGIN_DECLS

/* --- parsing (scenario-parse.c) ---------------------------------------- */

ScScenario *sim_scenario_parse_file(const char *path, GError **error);
/* name is used as the file name in messages. */
ScScenario *sim_scenario_parse_string(const char *name, const char *text, GError **error);
void sim_scenario_free(ScScenario *sc);

/* Names the language accepts, for `rpcsim list` and the checker. */
const char *const *sim_scenario_builtin_names(void); /* expression built-ins */
/* The autograd built-ins among them (a NULL-terminated tail of that list). */
const char *const *sim_scenario_autograd_builtin_names(void);
const char *const *sim_scenario_counter_names(void); /* counter … names */
const char *const *sim_scenario_fired_names(void);   /* fired … names */

/* --- running (scenario-run.c) ------------------------------------------ */

typedef struct SimRunOptions {
    guint64 seed;
    gboolean keep_lines; /* keep the text trace in the report (replay, diffing) */
    FILE *trace_out;     /* nullable: write the trace here as it runs */
    SimTraceFormat trace_format;
    FILE *log_out; /* nullable: the programs' print output */
} SimRunOptions;

typedef struct SimRunReport {
    guint64 seed;
    gboolean passed;
    SimTime end_time;
    guint64 events;
    guint64 trace_records;
    guint64 fingerprint;
    guint64 messages;
    guint64 faults_fired; /* all kinds summed */
    GPtrArray *fired;     /* char* "fail=3", "delay=2", … in a fixed order */
    GPtrArray *failures;  /* char* "file:line:col: message", empty when passed */
    GPtrArray *lines;     /* char* trace lines, when keep_lines */
    char *deadlock;       /* nullable: the deadlock report */
} SimRunReport;

void sim_run_options_init(SimRunOptions *opt, guint64 seed);
SimRunReport *sim_scenario_run(const ScScenario *sc, const SimRunOptions *opt);
void sim_run_report_free(SimRunReport *r);

G_END_DECLS

#endif /* SIM_SCENARIO_H */
