/* error.h — the SIM_ERROR domain: failures of the simulation itself. */
#ifndef SIM_ERROR_H
#define SIM_ERROR_H

#include <glib.h>

G_BEGIN_DECLS

#define SIM_ERROR (sim_error_quark())
GQuark sim_error_quark(void);

typedef enum {
    SIM_ERROR_DEADLOCK, /* the event queue drained while a wait was outstanding */
    SIM_ERROR_TEARDOWN, /* the world was torn down while a thread was blocked */
    SIM_ERROR_PARSE,    /* a malformed scenario file */
    SIM_ERROR_INVALID,  /* an invalid configuration value */
    SIM_ERROR_IO,       /* a file could not be read or written */
    SIM_ERROR_FAILED,   /* an expectation of a scenario did not hold */
} SimErrorCode;

G_END_DECLS

#endif /* SIM_ERROR_H */
