/* idset.c — gint64 ids as sorted disjoint ranges (see idset.h).
 *
 * Invariant: for every i, ranges[i].lo <= ranges[i].hi, and
 * ranges[i].hi < ranges[i + 1].lo - 1 (no overlap, no adjacency), so each
 * set has exactly one representation.  Arithmetic on hi + 1 / lo - 1 is
 * guarded against G_MAXINT64 / G_MININT64.
 */
#include "core/idset.h"

#include <string.h>

void
rpc_idset_init(RpcIdSet *s)
{
    s->ranges = NULL;
    s->len = s->cap = 0;
}

void
rpc_idset_clear(RpcIdSet *s)
{
    g_free(s->ranges);
    rpc_idset_init(s);
}

guint
rpc_idset_n_ranges(const RpcIdSet *s)
{
    return s->len;
}

/* Index of the first range whose hi >= id (len if none). */
static guint
lower_bound(const RpcIdSet *s, gint64 id)
{
    guint lo = 0, hi = s->len;
    while (lo < hi) {
        guint mid = lo + (hi - lo) / 2;
        if (s->ranges[mid].hi < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

gboolean
rpc_idset_contains(const RpcIdSet *s, gint64 id)
{
    guint i = lower_bound(s, id);
    return i < s->len && s->ranges[i].lo <= id;
}

static void
insert_at(RpcIdSet *s, guint i, gint64 id)
{
    if (s->len == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4;
        s->ranges = g_renew(RpcIdRange, s->ranges, s->cap);
    }
    memmove(&s->ranges[i + 1], &s->ranges[i], (s->len - i) * sizeof(RpcIdRange));
    s->ranges[i] = (RpcIdRange){id, id};
    s->len++;
}

gboolean
rpc_idset_add(RpcIdSet *s, gint64 id)
{
    /* The common case: past the last range. */
    if (s->len > 0) {
        RpcIdRange *last = &s->ranges[s->len - 1];
        if (id > last->hi) {
            if (id == last->hi + 1)
                last->hi = id;
            else
                insert_at(s, s->len, id);
            return TRUE;
        }
    } else {
        insert_at(s, 0, id);
        return TRUE;
    }
    guint i = lower_bound(s, id); /* i < len: id <= the last hi */
    RpcIdRange *r = &s->ranges[i];
    if (r->lo <= id)
        return FALSE;
    /* id < r->lo, and id > the previous range's hi (if any). */
    gboolean joins_next = id == r->lo - 1;
    gboolean joins_prev = i > 0 && s->ranges[i - 1].hi == id - 1;
    if (joins_prev && joins_next) {
        s->ranges[i - 1].hi = r->hi;
        memmove(&s->ranges[i], &s->ranges[i + 1], (s->len - i - 1) * sizeof(RpcIdRange));
        s->len--;
    } else if (joins_prev) {
        s->ranges[i - 1].hi = id;
    } else if (joins_next) {
        r->lo = id;
    } else {
        insert_at(s, i, id);
    }
    return TRUE;
}
