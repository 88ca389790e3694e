/* error.h — the RPC_ERROR domain and Python-style error kinds.
 *
 * Every runtime failure in core/ is a GError in RPC_ERROR whose code is the
 * Python exception kind a PyTorch user would see (RuntimeError, ValueError,
 * …).  Infrastructure errors (timeouts, closed connections, shutdown) are
 * RuntimeError, as in PyTorch; their exact message texts come from
 * shared/spec and are part of the contract.  A user-defined kind that cannot
 * be rebuilt keeps RPC_ERROR_USER and its name in RpcValue (value.h).
 */
#ifndef RPC_ERROR_H
#define RPC_ERROR_H

#include <glib.h>

G_BEGIN_DECLS

#define RPC_ERROR (rpc_error_quark())
GQuark rpc_error_quark(void);

typedef enum {
    RPC_ERROR_RUNTIME = 0,     /* RuntimeError: infrastructure, timeouts, … */
    RPC_ERROR_VALUE,           /* ValueError */
    RPC_ERROR_TYPE,            /* TypeError */
    RPC_ERROR_ATTRIBUTE,       /* AttributeError */
    RPC_ERROR_ASSERTION,       /* AssertionError */
    RPC_ERROR_KEY,             /* KeyError */
    RPC_ERROR_INDEX,           /* IndexError */
    RPC_ERROR_NOT_IMPLEMENTED, /* NotImplementedError */
    RPC_ERROR_EXCEPTION,       /* plain Exception */
    RPC_ERROR_USER,            /* a user-defined kind; its name travels in RpcValue */
    RPC_ERROR_N_KINDS
} RpcErrorKind;

/* "RuntimeError", "ValueError", …; "Exception" for unknown codes. */
const char *rpc_error_kind_name(RpcErrorKind kind);

/* Parses a kind name back; returns FALSE for names that are not built in. */
gboolean rpc_error_kind_from_name(const char *name, RpcErrorKind *out);

/* PyTorch's RPCErrorType, parsed from the "RPCErr:<n>:" message prefix. */
typedef enum {
    RPC_ERR_UNKNOWN = 0,
    RPC_ERR_TIMEOUT = 1,
    RPC_ERR_INTENTIONAL_FAILURE = 2,
} RpcErrType;

/* Formats makeRPCError: "RPCErr:<type>:<msg>" (transfer full). */
char *rpc_err_format(RpcErrType type, const char *msg);

/* getRPCErrorType: the integer after "RPCErr:", else RPC_ERR_UNKNOWN. */
RpcErrType rpc_err_type_of(const char *message);

G_END_DECLS

#endif /* RPC_ERROR_H */
