/* bench-autograd.c — cost of recording and running backward graphs.
 *
 * Three shapes: a chain of N scalar-like ops (recording + backward per
 * node), a wide fan-in of N products summed (the ready queue holding many
 * nodes), and a small MLP step (matmul, add with broadcasting, sigmoid,
 * mean) repeated.  Wall-clock timing is allowed here (bench/ only); the
 * figures vary from run to run, the bench asserts nothing.
 */
#include <stdio.h>

#include "core/autograd.h"
#include "core/tensor.h"

static double
seconds_since(gint64 t0)
{
    return (double)(g_get_monotonic_time() - t0) / 1e6;
}

static RpcTensor *
leaf(guint ndim, const gint64 *shape, double fill)
{
    RpcTensor *t = rpc_tensor_new_full(RPC_DTYPE_FLOAT64, ndim, shape, fill);
    rpc_ag_set_requires_grad(t, TRUE, NULL);
    return t;
}

static void
chain(RpcAgThread *th, int n)
{
    const gint64 shape[1] = {4};
    RpcTensor *x = leaf(1, shape, 1.0);
    RpcTensor *w = leaf(1, shape, 1.0);
    gint64 t0 = g_get_monotonic_time();
    RpcTensor *y = rpc_tensor_ref(x);
    for (int i = 0; i < n; i++) {
        RpcTensor *next = (i % 2) ? rpc_ag_mul(th, y, w, NULL) : rpc_ag_add_scalar(th, y, 1, NULL);
        rpc_tensor_unref(y);
        y = next;
    }
    RpcTensor *s = rpc_ag_sum(th, y, NULL);
    double record = seconds_since(t0);
    t0 = g_get_monotonic_time();
    rpc_ag_backward(th, &s, NULL, 1, FALSE, FALSE, NULL);
    double backward = seconds_since(t0);
    t0 = g_get_monotonic_time();
    rpc_tensor_unref(s);
    rpc_tensor_unref(y);
    double release = seconds_since(t0);
    printf("chain   %7d nodes: record %6.0f ns/node, backward %6.0f ns/node, free %5.0f "
           "ns/node\n",
           n, record * 1e9 / n, backward * 1e9 / n, release * 1e9 / n);
    rpc_tensor_unref(x);
    rpc_tensor_unref(w);
}

static void
fan_in(RpcAgThread *th, int n)
{
    const gint64 shape[1] = {4};
    RpcTensor *x = leaf(1, shape, 1.0);
    gint64 t0 = g_get_monotonic_time();
    RpcTensor *acc = rpc_ag_mul_scalar(th, x, 0, NULL);
    for (int i = 0; i < n; i++) {
        RpcTensor *p = rpc_ag_mul_scalar(th, x, (double)i, NULL);
        RpcTensor *next = rpc_ag_add(th, acc, p, NULL);
        rpc_tensor_unref(p);
        rpc_tensor_unref(acc);
        acc = next;
    }
    RpcTensor *s = rpc_ag_sum(th, acc, NULL);
    double record = seconds_since(t0);
    t0 = g_get_monotonic_time();
    rpc_ag_backward(th, &s, NULL, 1, FALSE, FALSE, NULL);
    double backward = seconds_since(t0);
    printf("fan-in  %7d nodes: record %6.0f ns/node, backward %6.0f ns/node\n", 2 * n,
           record * 1e9 / (2 * n), backward * 1e9 / (2 * n));
    rpc_tensor_unref(s);
    rpc_tensor_unref(acc);
    rpc_tensor_unref(x);
}

static void
mlp(RpcAgThread *th, int steps)
{
    const gint64 xs[2] = {8, 16}, ws[2] = {16, 4}, bs[1] = {4};
    RpcTensor *x = rpc_tensor_new_full(RPC_DTYPE_FLOAT64, 2, xs, 0.1);
    RpcTensor *w = leaf(2, ws, 0.01);
    RpcTensor *b = leaf(1, bs, 0.0);
    gint64 t0 = g_get_monotonic_time();
    for (int i = 0; i < steps; i++) {
        RpcTensor *h = rpc_ag_matmul(th, x, w, NULL);
        RpcTensor *z = rpc_ag_add(th, h, b, NULL);
        RpcTensor *a = rpc_ag_sigmoid(th, z, NULL);
        RpcTensor *loss = rpc_ag_mean(th, a, NULL);
        rpc_ag_backward(th, &loss, NULL, 1, FALSE, FALSE, NULL);
        rpc_tensor_unref(loss);
        rpc_tensor_unref(a);
        rpc_tensor_unref(z);
        rpc_tensor_unref(h);
    }
    double total = seconds_since(t0);
    printf("mlp     %7d steps: %6.1f us/step (8x16 @ 16x4, sigmoid, mean)\n", steps,
           total * 1e6 / steps);
    rpc_tensor_unref(x);
    rpc_tensor_unref(w);
    rpc_tensor_unref(b);
}

int
main(void)
{
    RpcAgState *state = rpc_ag_state_new();
    RpcAgThread *th = rpc_ag_thread_new(state);
    chain(th, 1000);
    chain(th, 100000);
    fan_in(th, 1000);
    fan_in(th, 100000);
    mlp(th, 2000);
    printf("live nodes after: %" G_GINT64_FORMAT "\n", rpc_ag_state_live_nodes(state));
    rpc_ag_thread_free(th);
    rpc_ag_state_unref(state);
    return 0;
}
