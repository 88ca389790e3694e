/* intmap.c — open-addressing gint64 → pointer map (see intmap.h).
 *
 * Invariants: the capacity is a power of two >= MIN_CAP; len <= capacity/2;
 * every entry sits in the run of occupied slots that starts at its home
 * slot (rpc_intmap_slot_of) and reaches it without crossing an empty slot
 * — which is what lookup relies on and what removal's back-shift restores.
 */
#include "core/intmap.h"

#define MIN_CAP 16

void
rpc_intmap_init(RpcIntMap *m)
{
    m->slots = NULL;
    m->mask = 0;
    m->len = 0;
}

void
rpc_intmap_clear(RpcIntMap *m)
{
    g_free(m->slots);
    rpc_intmap_init(m);
}

guint
rpc_intmap_len(const RpcIntMap *m)
{
    return m->len;
}

static void
place(RpcIntMap *m, gint64 key, gpointer value)
{
    guint i = rpc_intmap_slot_of(m, key);
    while (m->slots[i].value != NULL)
        i = (i + 1) & m->mask;
    m->slots[i].key = key;
    m->slots[i].value = value;
}

static void
grow(RpcIntMap *m)
{
    RpcIntMapSlot *old = m->slots;
    guint old_cap = rpc_intmap_capacity(m);
    guint cap = old_cap ? old_cap * 2 : MIN_CAP;
    m->slots = g_new0(RpcIntMapSlot, cap);
    m->mask = cap - 1;
    for (guint i = 0; i < old_cap; i++)
        if (old[i].value != NULL)
            place(m, old[i].key, old[i].value);
    g_free(old);
}

gpointer
rpc_intmap_insert(RpcIntMap *m, gint64 key, gpointer value)
{
    g_return_val_if_fail(value != NULL, NULL);
    if (m->slots == NULL || 2 * (m->len + 1) > m->mask + 1)
        grow(m);
    guint i = rpc_intmap_slot_of(m, key);
    for (;; i = (i + 1) & m->mask) {
        RpcIntMapSlot *s = &m->slots[i];
        if (s->value == NULL) {
            s->key = key;
            s->value = value;
            m->len++;
            return NULL;
        }
        if (s->key == key) {
            gpointer old = s->value;
            s->value = value;
            return old;
        }
    }
}

gpointer
rpc_intmap_remove(RpcIntMap *m, gint64 key)
{
    if (m->slots == NULL)
        return NULL;
    guint i = rpc_intmap_slot_of(m, key);
    while (m->slots[i].value != NULL && m->slots[i].key != key)
        i = (i + 1) & m->mask;
    gpointer old = m->slots[i].value;
    if (old == NULL)
        return NULL;
    /* Back-shift: move later entries of the run into the hole when the
     * hole lies between their home slot and where they sit (cyclically). */
    guint hole = i;
    for (guint j = (i + 1) & m->mask; m->slots[j].value != NULL; j = (j + 1) & m->mask) {
        guint home = rpc_intmap_slot_of(m, m->slots[j].key);
        gboolean movable = ((j - home) & m->mask) >= ((j - hole) & m->mask);
        if (movable) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].value = NULL;
    m->len--;
    return old;
}
