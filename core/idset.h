/* idset.h — a set of gint64 ids kept as sorted, disjoint, non-adjacent
 * ranges [lo, hi].
 *
 * For the agent's at-most-once filter: the request ids served per sender.
 * A sender numbers its requests in increasing order, so ids mostly arrive
 * increasing and often consecutive: adding one past the last range extends
 * it in O(1), a ping-pong's whole history is one range, and a sender that
 * talks to many peers costs one range per gap.  An id that arrives out of
 * order (network reordering) is found by binary search and merged; the
 * ranges stay normalised (no two touch), so the set is exact and its size
 * is the number of gaps, not of ids.
 *
 *   RpcIdSet s;
 *   rpc_idset_init(&s);
 *   if (!rpc_idset_add(&s, id))   … id was already there (a duplicate)
 *   rpc_idset_clear(&s);
 */
#ifndef RPC_IDSET_H
#define RPC_IDSET_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct {
    gint64 lo, hi; /* inclusive */
} RpcIdRange;

typedef struct {
    RpcIdRange *ranges; /* sorted by lo; ranges[i].hi + 1 < ranges[i + 1].lo */
    guint len, cap;
} RpcIdSet;

void rpc_idset_init(RpcIdSet *s);
void rpc_idset_clear(RpcIdSet *s);
/* Adds id; FALSE if it was already in the set. */
gboolean rpc_idset_add(RpcIdSet *s, gint64 id);
gboolean rpc_idset_contains(const RpcIdSet *s, gint64 id);
/* Number of ranges (the memory used is proportional to it). */
guint rpc_idset_n_ranges(const RpcIdSet *s);

G_END_DECLS

#endif /* RPC_IDSET_H */
