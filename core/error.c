/* error.c — error kinds and PyTorch's "RPCErr:<type>:" classification. */
#include "core/error.h"

#include <stdlib.h>
#include <string.h>

/* clang-format off */
G_DEFINE_QUARK(rpc-error-quark, rpc_error)
/* clang-format on */

static const char *const kind_names[RPC_ERROR_N_KINDS] = {
    [RPC_ERROR_RUNTIME] = "RuntimeError",     [RPC_ERROR_VALUE] = "ValueError",
    [RPC_ERROR_TYPE] = "TypeError",           [RPC_ERROR_ATTRIBUTE] = "AttributeError",
    [RPC_ERROR_ASSERTION] = "AssertionError", [RPC_ERROR_KEY] = "KeyError",
    [RPC_ERROR_INDEX] = "IndexError",         [RPC_ERROR_NOT_IMPLEMENTED] = "NotImplementedError",
    [RPC_ERROR_EXCEPTION] = "Exception",      [RPC_ERROR_USER] = "UserError",
};

const char *
rpc_error_kind_name(RpcErrorKind kind)
{
    if ((int)kind < 0 || kind >= RPC_ERROR_N_KINDS)
        return "Exception";
    return kind_names[kind];
}

gboolean
rpc_error_kind_from_name(const char *name, RpcErrorKind *out)
{
    g_return_val_if_fail(name != NULL, FALSE);
    for (int k = 0; k < RPC_ERROR_USER; k++) {
        if (strcmp(kind_names[k], name) == 0) {
            if (out)
                *out = (RpcErrorKind)k;
            return TRUE;
        }
    }
    return FALSE;
}

char *
rpc_err_format(RpcErrType type, const char *msg)
{
    return g_strdup_printf("RPCErr:%d:%s", (int)type, msg);
}

RpcErrType
rpc_err_type_of(const char *message)
{
    static const char prefix[] = "RPCErr:";
    if (message == NULL || strncmp(message, prefix, sizeof prefix - 1) != 0)
        return RPC_ERR_UNKNOWN;
    const char *p = message + sizeof prefix - 1;
    char *end = NULL;
    long v = strtol(p, &end, 10);
    if (end == p || *end != ':')
        return RPC_ERR_UNKNOWN;
    if (v == RPC_ERR_TIMEOUT || v == RPC_ERR_INTENTIONAL_FAILURE)
        return (RpcErrType)v;
    return RPC_ERR_UNKNOWN;
}
