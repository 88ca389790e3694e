/* executor.c — helpers built on the RpcExecutor vtable. */
#include "core/executor.h"

#include "core/future.h"

static void
sleep_wake(gpointer data)
{
    rpc_future_complete_if_needed(data, rpc_value_none());
}

gboolean
rpc_executor_sleep(RpcExecutor *ex, RpcTime duration, GError **error)
{
    g_return_val_if_fail(ex != NULL, FALSE);
    g_return_val_if_fail(duration >= 0, FALSE);
    RpcFuture *f = rpc_future_new(ex);
    char *desc = g_strdup_printf("sleep(%" G_GINT64_FORMAT " ns)", duration);
    rpc_future_set_description(f, desc);
    g_free(desc);
    rpc_executor_call_after(ex, duration, sleep_wake, rpc_future_ref(f),
                            (GDestroyNotify)rpc_future_unref);
    gboolean ok = rpc_executor_block_on(ex, f, error);
    rpc_future_unref(f);
    return ok;
}
