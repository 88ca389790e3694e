/* test-evq.c — the event queue (sim/evq.c) and time formatting (sim/time.c).
 *
 * Every test asserts concrete values: pop order as (time, id) pairs, live
 * counts, peeked times, and how many times each fn and destroy notifier ran.
 * Randomised tests use a local LCG with fixed seeds (printed with
 * g_test_message, so a failure names its seed) and compare the queue with a
 * naive reference model: a flat array scanned for the least (time, seq).
 */
#include <string.h>

#include "sim/evq.h"
#include "sim/time.h"

/* ---- helpers --------------------------------------------------------------- */

/* One scheduled thing: what it is, and what has happened to it. */
typedef struct Item {
    guint id;
    guint fn_runs;
    guint destroys;
    SimEvq *q;            /* for fns that act on the queue */
    SimEvent *self;       /* this item's handle, while pending or running */
    SimEvent *victim;     /* an event to cancel from fn or destroy, or NULL */
    GArray *log;          /* ids in the order fns ran, or NULL */
    guint len_seen;       /* sim_evq_len() observed inside fn */
    gboolean cancel_self; /* fn cancels its own (popped) event */
} Item;

static void
item_fn(gpointer data)
{
    Item *it = data;

    it->fn_runs++;
    if (it->log != NULL)
        g_array_append_val(it->log, it->id);
    if (it->victim != NULL)
        sim_evq_cancel(it->q, it->victim);
    if (it->cancel_self)
        sim_evq_cancel(it->q, it->self);
    if (it->q != NULL)
        it->len_seen = sim_evq_len(it->q);
}

static void
item_destroy(gpointer data)
{
    Item *it = data;

    it->destroys++;
}

static SimEvent *
push_item(SimEvq *q, SimTime t, Item *it)
{
    it->self = sim_evq_push(q, t, item_fn, it, item_destroy);
    g_assert_nonnull(it->self);
    return it->self;
}

/* Pops one event, runs it, releases it; returns its item, or NULL. */
static Item *
dispatch(SimEvq *q, SimTime *time_out)
{
    SimEvent *ev = sim_evq_pop(q);
    Item *it;

    if (ev == NULL)
        return NULL;
    it = ev->data;
    g_assert_true(ev->fn == item_fn);
    g_assert_false(ev->cancelled);
    if (time_out != NULL)
        *time_out = ev->time;
    ev->fn(ev->data);
    sim_evq_release(q, ev);
    return it;
}

/* A 64-bit LCG (Knuth's MMIX constants); the high bits are the good ones. */
static guint32
lcg_next(guint64 *state)
{
    *state =
        *state * G_GUINT64_CONSTANT(6364136223846793005) + G_GUINT64_CONSTANT(1442695040888963407);
    return (guint32)(*state >> 33);
}

static Item *
items_new(guint n)
{
    Item *items = g_new0(Item, n);

    for (guint i = 0; i < n; i++)
        items[i].id = i;
    return items;
}

/* ---- ordering -------------------------------------------------------------- */

static void
test_empty(void)
{
    SimEvq *q = sim_evq_new();

    g_assert_null(sim_evq_pop(q));
    g_assert_cmpint(sim_evq_peek_time(q), ==, SIM_TIME_NEVER);
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    g_assert_cmpuint(sim_evq_scheduled(q), ==, 0);
    /* Still empty, still consistent, after one event went through. */
    Item it = {.id = 7};
    push_item(q, 5, &it);
    g_assert_true(dispatch(q, NULL) == &it);
    g_assert_null(sim_evq_pop(q));
    g_assert_cmpint(sim_evq_peek_time(q), ==, SIM_TIME_NEVER);
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    g_assert_cmpuint(sim_evq_scheduled(q), ==, 1);
    sim_evq_free(q);
    g_assert_cmpuint(it.fn_runs, ==, 1);
    g_assert_cmpuint(it.destroys, ==, 1);
}

static void
test_ordering_small(void)
{
    static const SimTime times[] = {30, 10, 20, 10, 0, -5, 20};
    /* Expected (time, id): by time, equal times by push order. */
    static const SimTime want_time[] = {-5, 0, 10, 10, 20, 20, 30};
    static const guint want_id[] = {5, 4, 1, 3, 2, 6, 0};
    const guint n = G_N_ELEMENTS(times);
    SimEvq *q = sim_evq_new();
    Item *items = items_new(n);

    for (guint i = 0; i < n; i++) {
        SimEvent *ev = push_item(q, times[i], &items[i]);
        g_assert_cmpuint(ev->seq, ==, i);
        g_assert_cmpint(ev->time, ==, times[i]);
    }
    g_assert_cmpuint(sim_evq_len(q), ==, n);
    for (guint i = 0; i < n; i++) {
        SimTime t = 0;
        g_assert_cmpint(sim_evq_peek_time(q), ==, want_time[i]);
        Item *it = dispatch(q, &t);
        g_assert_nonnull(it);
        g_assert_cmpint(t, ==, want_time[i]);
        g_assert_cmpuint(it->id, ==, want_id[i]);
        g_assert_cmpuint(sim_evq_len(q), ==, n - i - 1);
    }
    g_assert_null(sim_evq_pop(q));
    sim_evq_free(q);
    for (guint i = 0; i < n; i++) {
        g_assert_cmpuint(items[i].fn_runs, ==, 1);
        g_assert_cmpuint(items[i].destroys, ==, 1);
    }
    g_free(items);
}

static void
test_ordering_random(void)
{
    const guint n = 5000;
    guint64 rng = 42;
    SimEvq *q = sim_evq_new();
    Item *items = items_new(n);
    SimTime *times = g_new(SimTime, n);
    SimTime prev_t = G_MININT64;
    guint prev_id = 0;

    g_test_message("seed 42");
    for (guint i = 0; i < n; i++) {
        times[i] = (SimTime)(lcg_next(&rng) % 100000) * SIM_US;
        push_item(q, times[i], &items[i]);
    }
    for (guint i = 0; i < n; i++) {
        SimTime t = 0;
        Item *it = dispatch(q, &t);
        g_assert_nonnull(it);
        g_assert_cmpint(t, ==, times[it->id]);
        g_assert_cmpint(t, >=, prev_t);
        if (t == prev_t)
            g_assert_cmpuint(it->id, >, prev_id); /* id == push order == seq */
        prev_t = t;
        prev_id = it->id;
    }
    g_assert_null(sim_evq_pop(q));
    sim_evq_free(q);
    for (guint i = 0; i < n; i++)
        g_assert_cmpuint(items[i].fn_runs, ==, 1);
    g_free(times);
    g_free(items);
}

static void
test_equal_time_fifo(void)
{
    const guint n = 1000;
    SimEvq *q = sim_evq_new();
    Item *items = items_new(n);
    GArray *log = g_array_new(FALSE, FALSE, sizeof(guint));
    guint64 first_seq = 0;

    /* An earlier event first, so seq does not start at the FIFO block. */
    Item early = {.id = n};
    push_item(q, 1, &early);
    for (guint i = 0; i < n; i++) {
        items[i].log = log;
        SimEvent *ev = push_item(q, 5 * SIM_MS, &items[i]);
        if (i == 0)
            first_seq = ev->seq;
        g_assert_cmpuint(ev->seq, ==, first_seq + i);
    }
    g_assert_true(dispatch(q, NULL) == &early);
    for (guint i = 0; i < n; i++) {
        SimTime t = 0;
        g_assert_nonnull(dispatch(q, &t));
        g_assert_cmpint(t, ==, 5 * SIM_MS);
    }
    g_assert_cmpuint(log->len, ==, n);
    for (guint i = 0; i < n; i++)
        g_assert_cmpuint(g_array_index(log, guint, i), ==, i);
    sim_evq_free(q);
    g_array_unref(log);
    g_free(items);
}

/* ---- reference model --------------------------------------------------------- */

typedef struct ModelEv {
    SimTime time;
    guint64 seq;
    guint id;
    SimEvent *handle;
} ModelEv;

/* Index of the least (time, seq) in model, or -1. */
static gint
model_min(GArray *model)
{
    gint best = -1;

    for (guint i = 0; i < model->len; i++) {
        const ModelEv *m = &g_array_index(model, ModelEv, i);
        const ModelEv *b = best < 0 ? NULL : &g_array_index(model, ModelEv, best);
        if (b == NULL || m->time < b->time || (m->time == b->time && m->seq < b->seq))
            best = (gint)i;
    }
    return best;
}

/* Interleaves push / pop / cancel / peek with the given weights (out of 100)
 * and checks every result against the model. */
/* now_bias: the percentage of pushes made at the time of the last pop, the
 * queue's now lane (see evq.c), so that the lane, the heap and the merge of
 * the two all see ties, cancels and drains. */
static void
run_model(guint64 seed, guint steps, guint w_push, guint w_pop, guint w_cancel, guint now_bias)
{
    SimTime last = 0;
    guint64 rng = seed;
    SimEvq *q = sim_evq_new();
    Item *items = items_new(steps);
    GArray *model = g_array_new(FALSE, FALSE, sizeof(ModelEv));
    guint pushed = 0;
    guint popped = 0;
    guint cancelled = 0;

    g_test_message("model seed %" G_GUINT64_FORMAT ", weights %u/%u/%u", seed, w_push, w_pop,
                   w_cancel);
    for (guint step = 0; step < steps; step++) {
        guint r = lcg_next(&rng) % 100;
        if (r < w_push) {
            /* A narrow time range, so ties are frequent. */
            SimTime t = (SimTime)(lcg_next(&rng) % 64);
            if (lcg_next(&rng) % 100 < now_bias)
                t = last;
            Item *it = &items[pushed];
            ModelEv m = {.time = t, .id = pushed, .handle = push_item(q, t, it)};
            m.seq = m.handle->seq;
            g_array_append_val(model, m);
            pushed++;
        } else if (r < w_push + w_pop) {
            gint mi = model_min(model);
            SimTime t = 0;
            Item *it = dispatch(q, &t);
            if (mi < 0) {
                g_assert_null(it);
            } else {
                const ModelEv *m = &g_array_index(model, ModelEv, mi);
                g_assert_nonnull(it);
                g_assert_cmpuint(it->id, ==, m->id);
                g_assert_cmpint(t, ==, m->time);
                g_array_remove_index_fast(model, (guint)mi);
                popped++;
                last = t;
            }
        } else if (r < w_push + w_pop + w_cancel) {
            if (model->len > 0) {
                guint k = lcg_next(&rng) % model->len;
                ModelEv *m = &g_array_index(model, ModelEv, k);
                sim_evq_cancel(q, m->handle);
                g_assert_true(m->handle->cancelled);
                g_array_remove_index_fast(model, k);
                cancelled++;
            }
        } else {
            gint mi = model_min(model);
            SimTime want = mi < 0 ? SIM_TIME_NEVER : g_array_index(model, ModelEv, mi).time;
            g_assert_cmpint(sim_evq_peek_time(q), ==, want);
        }
        g_assert_cmpuint(sim_evq_len(q), ==, model->len);
        g_assert_cmpuint(sim_evq_scheduled(q), ==, pushed);
    }
    /* Drain: the rest comes out in model order too. */
    while (model->len > 0) {
        gint mi = model_min(model);
        const ModelEv *m = &g_array_index(model, ModelEv, mi);
        SimTime t = 0;
        Item *it = dispatch(q, &t);
        g_assert_nonnull(it);
        g_assert_cmpuint(it->id, ==, m->id);
        g_assert_cmpint(t, ==, m->time);
        g_array_remove_index_fast(model, (guint)mi);
        popped++;
    }
    g_assert_null(sim_evq_pop(q));
    g_assert_cmpuint(popped + cancelled, ==, pushed);
    sim_evq_free(q);

    /* Popped ones ran once; cancelled ones never; all destroyed once. */
    guint ran = 0;
    for (guint i = 0; i < pushed; i++) {
        g_assert_cmpuint(items[i].destroys, ==, 1);
        g_assert_cmpuint(items[i].fn_runs, <=, 1);
        ran += items[i].fn_runs;
    }
    g_assert_cmpuint(ran, ==, popped);
    g_array_unref(model);
    g_free(items);
}

static void
test_model(void)
{
    static const guint64 seeds[] = {1, 2, 0xdeadbeef, 20240601};

    for (guint i = 0; i < G_N_ELEMENTS(seeds); i++)
        run_model(seeds[i], 20000, 50, 30, 15, 0);
}

/* Cancel-heavy: most events leave the heap by cancel, from every position. */
static void
test_model_cancel_heavy(void)
{
    static const guint64 seeds[] = {3, 77, 0x5eed};

    for (guint i = 0; i < G_N_ELEMENTS(seeds); i++)
        run_model(seeds[i], 20000, 55, 8, 35, 0);
}

/* Half the pushes at the last pop's time: the lane holds long runs (it
 * grows past its first ring), and cancels leave holes at its head, middle
 * and tail. */
static void
test_model_now_lane(void)
{
    static const guint64 seeds[] = {5, 0xfeed, 31337};

    for (guint i = 0; i < G_N_ELEMENTS(seeds); i++) {
        run_model(seeds[i], 20000, 50, 30, 15, 50);
        run_model(seeds[i], 20000, 55, 8, 35, 80);
    }

    /* A run of 100 at one time, well past the ring's first size, with one
     * in three cancelled (the first included: a hole at the head). */
    SimEvq *q = sim_evq_new();
    Item *items = items_new(100);
    for (guint i = 0; i < 100; i++)
        push_item(q, 0, &items[i]);
    for (guint i = 0; i < 100; i += 3)
        sim_evq_cancel(q, items[i].self);
    g_assert_cmpuint(sim_evq_len(q), ==, 66);
    for (guint i = 0; i < 100; i++) {
        if (i % 3 == 0)
            continue;
        SimTime t = -1;
        g_assert_true(dispatch(q, &t) == &items[i]);
        g_assert_cmpint(t, ==, 0);
    }
    g_assert_null(dispatch(q, NULL));
    sim_evq_free(q);
    for (guint i = 0; i < 100; i++) {
        g_assert_cmpuint(items[i].destroys, ==, 1);
        g_assert_cmpuint(items[i].fn_runs, ==, i % 3 == 0 ? 0 : 1);
    }
    g_free(items);
}

/* pop_until leaves what is later than the limit queued, lane or heap. */
static void
test_pop_until(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(4);

    push_item(q, 0, &items[0]); /* the lane: time of the last pop (0 so far) */
    push_item(q, 10, &items[1]);
    g_assert_null(sim_evq_pop_until(q, -1));
    SimEvent *ev = sim_evq_pop_until(q, 0);
    g_assert_true(ev != NULL && ev->data == &items[0]);
    sim_evq_release(q, ev);
    g_assert_null(sim_evq_pop_until(q, 9));
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    ev = sim_evq_pop_until(q, 10);
    g_assert_true(ev != NULL && ev->data == &items[1]);
    sim_evq_release(q, ev);
    push_item(q, 10, &items[2]); /* the lane again, at 10 */
    g_assert_null(sim_evq_pop_until(q, 9));
    g_assert_cmpint(sim_evq_peek_time(q), ==, 10);
    ev = sim_evq_pop_until(q, SIM_TIME_NEVER);
    g_assert_true(ev != NULL && ev->data == &items[2]);
    sim_evq_release(q, ev);
    g_assert_null(sim_evq_pop_until(q, SIM_TIME_NEVER));
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    sim_evq_free(q);
    g_free(items);
}

/* ---- cancel ------------------------------------------------------------------ */

static void
test_cancel_basic(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(3);
    SimTime t = 0;

    push_item(q, 10, &items[0]);
    SimEvent *b = push_item(q, 20, &items[1]);
    push_item(q, 30, &items[2]);
    g_assert_cmpuint(sim_evq_len(q), ==, 3);

    sim_evq_cancel(q, b);
    g_assert_true(b->cancelled);
    g_assert_cmpuint(sim_evq_len(q), ==, 2);
    g_assert_cmpuint(items[1].destroys, ==, 0); /* not inside cancel */
    sim_evq_cancel(q, b);                       /* again: a no-op */
    g_assert_cmpuint(sim_evq_len(q), ==, 2);

    /* The next pop reaps b (before it returns), although b is not due yet. */
    g_assert_true(dispatch(q, &t) == &items[0]);
    g_assert_cmpint(t, ==, 10);
    g_assert_cmpuint(items[1].destroys, ==, 1);
    g_assert_cmpint(sim_evq_peek_time(q), ==, 30);
    g_assert_cmpuint(items[1].destroys, ==, 1);
    g_assert_true(dispatch(q, &t) == &items[2]);
    g_assert_cmpint(t, ==, 30);
    g_assert_null(sim_evq_pop(q));
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    g_assert_cmpuint(sim_evq_scheduled(q), ==, 3);
    sim_evq_free(q);

    g_assert_cmpuint(items[0].fn_runs, ==, 1);
    g_assert_cmpuint(items[1].fn_runs, ==, 0);
    g_assert_cmpuint(items[2].fn_runs, ==, 1);
    for (guint i = 0; i < 3; i++)
        g_assert_cmpuint(items[i].destroys, ==, 1);
    g_free(items);
}

static void
test_cancel_peek_skips(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(4);

    SimEvent *a = push_item(q, 10, &items[0]);
    SimEvent *b = push_item(q, 10, &items[1]);
    SimEvent *c = push_item(q, 15, &items[2]);
    push_item(q, 40, &items[3]);
    sim_evq_cancel(q, a);
    sim_evq_cancel(q, c);
    g_assert_cmpuint(sim_evq_len(q), ==, 2);
    g_assert_cmpint(sim_evq_peek_time(q), ==, 10); /* b, not a */
    g_assert_cmpuint(items[0].destroys, ==, 1);
    g_assert_cmpuint(items[2].destroys, ==, 1); /* every cancelled event, due or not */
    g_assert_cmpuint(items[1].destroys, ==, 0);
    sim_evq_cancel(q, b);
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    g_assert_cmpuint(items[1].destroys, ==, 0); /* not inside cancel */
    g_assert_cmpint(sim_evq_peek_time(q), ==, 40);
    g_assert_cmpuint(items[1].destroys, ==, 1);
    g_assert_cmpuint(items[2].destroys, ==, 1);
    g_assert_cmpuint(items[3].destroys, ==, 0);

    /* Cancelling everything leaves an empty queue. */
    sim_evq_cancel(q, items[3].self);
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    g_assert_cmpint(sim_evq_peek_time(q), ==, SIM_TIME_NEVER);
    g_assert_null(sim_evq_pop(q));
    for (guint i = 0; i < 4; i++) {
        g_assert_cmpuint(items[i].fn_runs, ==, 0);
        g_assert_cmpuint(items[i].destroys, ==, 1);
    }
    sim_evq_free(q);
    g_free(items);
}

/* An event, while running, cancels another pending event at the same time. */
static void
test_cancel_during_dispatch(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(3);
    GArray *log = g_array_new(FALSE, FALSE, sizeof(guint));
    SimTime t = 0;

    for (guint i = 0; i < 3; i++) {
        items[i].q = q;
        items[i].log = log;
        push_item(q, 100, &items[i]);
    }
    items[0].victim = items[1].self;

    g_assert_true(dispatch(q, &t) == &items[0]);
    g_assert_cmpuint(items[0].len_seen, ==, 1); /* inside fn, after the cancel */
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    g_assert_true(dispatch(q, &t) == &items[2]);
    g_assert_cmpint(t, ==, 100);
    g_assert_null(dispatch(q, NULL));

    g_assert_cmpuint(log->len, ==, 2);
    g_assert_cmpuint(g_array_index(log, guint, 0), ==, 0);
    g_assert_cmpuint(g_array_index(log, guint, 1), ==, 2);
    g_assert_cmpuint(items[1].fn_runs, ==, 0);
    g_assert_cmpuint(items[1].destroys, ==, 1);
    sim_evq_free(q);
    for (guint i = 0; i < 3; i++)
        g_assert_cmpuint(items[i].destroys, ==, 1);
    g_array_unref(log);
    g_free(items);
}

/* Decision: cancelling an event after it was popped (here from its own fn)
 * is a safe no-op.  It does not mark the event, does not change the live
 * count, and release still runs its destroy notifier exactly once. */
static void
test_cancel_self_after_pop(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(2);
    SimTime t = 0;

    items[0].q = q;
    items[0].cancel_self = TRUE;
    push_item(q, 1, &items[0]);
    push_item(q, 2, &items[1]);

    SimEvent *ev = sim_evq_pop(q);
    g_assert_true(ev == items[0].self);
    ev->fn(ev->data);
    g_assert_false(ev->cancelled);
    g_assert_cmpuint(items[0].len_seen, ==, 1);
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    g_assert_cmpuint(items[0].destroys, ==, 0);
    sim_evq_cancel(q, ev); /* and once more from outside: still a no-op */
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    sim_evq_release(q, ev);
    g_assert_cmpuint(items[0].destroys, ==, 1);

    g_assert_true(dispatch(q, &t) == &items[1]);
    g_assert_cmpint(t, ==, 2);
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    sim_evq_free(q);
    g_assert_cmpuint(items[0].fn_runs, ==, 1);
    g_assert_cmpuint(items[0].destroys, ==, 1);
    g_assert_cmpuint(items[1].destroys, ==, 1);
    g_free(items);
}

/* A cancel takes the event out of the heap at once; the next pop/peek reaps
 * every cancelled event instead of waiting for their times. */
static void
test_cancel_removes(void)
{
    const guint n = 4000;
    SimEvq *q = sim_evq_new();
    Item *items = items_new(n);
    guint dead_destroyed = 0;

    for (guint i = 0; i < n; i++)
        push_item(q, 1000 + (SimTime)i, &items[i]);
    for (guint i = 0; i < n; i++) {
        if (i % 4 != 0)
            sim_evq_cancel(q, items[i].self);
    }
    g_assert_cmpuint(sim_evq_len(q), ==, n / 4);
    for (guint i = 0; i < n; i++)
        g_assert_cmpuint(items[i].destroys, ==, 0);

    g_assert_cmpint(sim_evq_peek_time(q), ==, 1000);
    for (guint i = 0; i < n; i++) {
        if (i % 4 != 0)
            dead_destroyed += items[i].destroys;
        else
            g_assert_cmpuint(items[i].destroys, ==, 0);
    }
    g_assert_cmpuint(dead_destroyed, ==, n - n / 4);

    /* The heap is still a heap after the removals, with new pushes mixed in. */
    Item late = {.id = n};
    push_item(q, 1002, &late);
    for (guint i = 0; i < n; i += 4) {
        SimTime t = 0;
        Item *it = dispatch(q, &t);
        g_assert_true(it == &items[i]);
        g_assert_cmpint(t, ==, 1000 + (SimTime)i);
        if (i == 0) {
            g_assert_true(dispatch(q, &t) == &late);
            g_assert_cmpint(t, ==, 1002);
        }
    }
    g_assert_null(sim_evq_pop(q));
    sim_evq_free(q);
    for (guint i = 0; i < n; i++) {
        g_assert_cmpuint(items[i].destroys, ==, 1);
        g_assert_cmpuint(items[i].fn_runs, ==, i % 4 == 0 ? 1 : 0);
    }
    g_free(items);
}

/* ---- destroy notifiers ---------------------------------------------------------- */

static void
test_destroy_once(void)
{
    enum { RELEASED, REAPED_BY_POP, REAPED_BY_PEEK, PENDING, CANCELLED_PENDING, N };
    SimEvq *q = sim_evq_new();
    Item *items = items_new(N);
    Item bare_item = {.id = 99};
    SimTime t = 0;

    push_item(q, 10, &items[REAPED_BY_POP]);
    push_item(q, 20, &items[RELEASED]);
    push_item(q, 30, &items[REAPED_BY_PEEK]);
    push_item(q, 40, &items[PENDING]);
    push_item(q, 50, &items[CANCELLED_PENDING]);
    /* No notifier at all: nothing to run, nothing to crash on. */
    SimEvent *bare = sim_evq_push(q, 35, item_fn, &bare_item, NULL);
    g_assert_nonnull(bare);
    sim_evq_cancel(q, bare);

    sim_evq_cancel(q, items[REAPED_BY_POP].self);

    g_assert_true(dispatch(q, &t) == &items[RELEASED]); /* reaps REAPED_BY_POP first */
    g_assert_cmpint(t, ==, 20);
    g_assert_cmpuint(items[REAPED_BY_POP].destroys, ==, 1);
    g_assert_cmpuint(items[RELEASED].destroys, ==, 1);

    sim_evq_cancel(q, items[REAPED_BY_PEEK].self);
    g_assert_cmpuint(items[REAPED_BY_PEEK].destroys, ==, 0);
    g_assert_cmpint(sim_evq_peek_time(q), ==, 40);
    g_assert_cmpuint(items[REAPED_BY_PEEK].destroys, ==, 1);
    g_assert_cmpuint(sim_evq_len(q), ==, 2);

    /* Cancelled, then the queue is freed before any pop or peek. */
    sim_evq_cancel(q, items[CANCELLED_PENDING].self);
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    g_assert_cmpuint(items[PENDING].destroys, ==, 0);
    g_assert_cmpuint(items[CANCELLED_PENDING].destroys, ==, 0);
    sim_evq_free(q);

    for (guint i = 0; i < N; i++)
        g_assert_cmpuint(items[i].destroys, ==, 1);
    g_assert_cmpuint(items[RELEASED].fn_runs, ==, 1);
    for (guint i = 0; i < N; i++) {
        if (i != RELEASED)
            g_assert_cmpuint(items[i].fn_runs, ==, 0); /* free does not run fn */
    }
    g_assert_cmpuint(bare_item.fn_runs, ==, 0);
    g_assert_cmpuint(bare_item.destroys, ==, 0);
    g_free(items);
}

/* Notifiers may use the queue: a reaped event's notifier schedules a new
 * event and cancels a pending one; at free, one pending event's notifier
 * cancels another pending event, whose notifier must still run once. */
typedef struct Reentrant {
    SimEvq *q;
    Item *spawn; /* pushed at spawn_time from the notifier */
    SimTime spawn_time;
    SimEvent *victim; /* cancelled from the notifier */
    guint destroys;
} Reentrant;

static void
reentrant_fn(gpointer data)
{
}

static void
reentrant_destroy(gpointer data)
{
    Reentrant *r = data;

    r->destroys++;
    if (r->spawn != NULL)
        push_item(r->q, r->spawn_time, r->spawn);
    if (r->victim != NULL)
        sim_evq_cancel(r->q, r->victim);
}

static void
test_destroy_reentrant(void)
{
    SimEvq *q = sim_evq_new();
    Item *items = items_new(4);
    Reentrant r = {.q = q, .spawn = &items[3], .spawn_time = 25};
    SimTime t = 0;

    SimEvent *a = sim_evq_push(q, 10, reentrant_fn, &r, reentrant_destroy);
    push_item(q, 20, &items[0]);
    push_item(q, 30, &items[1]);
    push_item(q, 40, &items[2]);
    r.victim = items[1].self;
    sim_evq_cancel(q, a);

    /* pop reaps a: its notifier pushes items[3]@25 and cancels items[1]@30 */
    g_assert_true(dispatch(q, &t) == &items[0]);
    g_assert_cmpuint(r.destroys, ==, 1);
    g_assert_cmpuint(sim_evq_len(q), ==, 2);
    g_assert_true(dispatch(q, &t) == &items[3]);
    g_assert_cmpint(t, ==, 25);
    g_assert_true(dispatch(q, &t) == &items[2]);
    g_assert_cmpint(t, ==, 40);
    g_assert_null(sim_evq_pop(q));
    sim_evq_free(q);
    g_assert_cmpuint(r.destroys, ==, 1);
    g_assert_cmpuint(items[1].fn_runs, ==, 0);
    for (guint i = 0; i < 4; i++)
        g_assert_cmpuint(items[i].destroys, ==, 1);

    /* At free. */
    q = sim_evq_new();
    Item victim = {.id = 9};
    Reentrant r2 = {.q = q};
    Reentrant r3 = {.q = q};
    sim_evq_push(q, 5, reentrant_fn, &r2, reentrant_destroy);
    r2.victim = push_item(q, 6, &victim);
    r3.victim = victim.self;
    sim_evq_push(q, 7, reentrant_fn, &r3, reentrant_destroy);
    sim_evq_free(q);
    g_assert_cmpuint(r2.destroys, ==, 1);
    g_assert_cmpuint(r3.destroys, ==, 1);
    g_assert_cmpuint(victim.destroys, ==, 1);
    g_assert_cmpuint(victim.fn_runs, ==, 0);
    g_free(items);

    /* While reaping many: a reaped event's notifier cancels the live event
     * at the top; pop must skip it too. */
    const guint n_dead = 600;
    q = sim_evq_new();
    Reentrant *dead = g_new0(Reentrant, n_dead);
    Item live[2] = {{.id = 0}, {.id = 1}};
    for (guint i = 0; i < n_dead; i++) {
        dead[i].q = q;
        sim_evq_cancel(
            q, sim_evq_push(q, 1000 + (SimTime)i, reentrant_fn, &dead[i], reentrant_destroy));
    }
    push_item(q, 2000, &live[0]);
    push_item(q, 2001, &live[1]);
    dead[n_dead / 2].victim = live[0].self;
    g_assert_cmpuint(sim_evq_len(q), ==, 2);
    g_assert_true(dispatch(q, &t) == &live[1]);
    g_assert_cmpint(t, ==, 2001);
    g_assert_cmpuint(live[0].destroys, ==, 1);
    g_assert_cmpuint(live[0].fn_runs, ==, 0);
    g_assert_cmpuint(sim_evq_len(q), ==, 0);
    g_assert_null(sim_evq_pop(q));
    sim_evq_free(q);
    for (guint i = 0; i < n_dead; i++)
        g_assert_cmpuint(dead[i].destroys, ==, 1);
    g_assert_cmpuint(live[1].destroys, ==, 1);
    g_free(dead);
}

/* ---- free list ------------------------------------------------------------------- */

static void
test_free_list_reuse(void)
{
    const guint batch = 100;
    const guint cycles = 1000;
    SimEvq *q = sim_evq_new();
    Item it = {.id = 1};
    GHashTable *seen = g_hash_table_new(g_direct_hash, g_direct_equal);
    guint64 rng = 9;

    g_test_message("seed 9");
    for (guint c = 0; c < cycles; c++) {
        for (guint i = 0; i < batch; i++) {
            SimEvent *ev =
                sim_evq_push(q, (SimTime)(lcg_next(&rng) % 1000), item_fn, &it, item_destroy);
            /* After the first cycle every record is a recycled one. */
            if (c == 0)
                g_hash_table_add(seen, ev);
            else
                g_assert_true(g_hash_table_contains(seen, ev));
            g_assert_false(ev->cancelled);
            g_assert_cmpuint(ev->seq, ==, (guint64)c * batch + i);
        }
        for (guint i = 0; i < batch; i++) {
            SimEvent *ev = sim_evq_pop(q);
            g_assert_nonnull(ev);
            sim_evq_release(q, ev);
        }
        g_assert_cmpuint(sim_evq_len(q), ==, 0);
    }
    g_assert_cmpuint(g_hash_table_size(seen), ==, batch);
    g_assert_cmpuint(sim_evq_scheduled(q), ==, (guint64)batch * cycles);
    g_assert_cmpuint(it.destroys, ==, batch * cycles);

    /* Cancelled-and-reaped records come back too. */
    for (guint i = 0; i < batch; i++) {
        SimEvent *ev = sim_evq_push(q, (SimTime)i, item_fn, &it, item_destroy);
        g_assert_true(g_hash_table_contains(seen, ev));
        sim_evq_cancel(q, ev);
    }
    g_assert_cmpint(sim_evq_peek_time(q), ==, SIM_TIME_NEVER);
    for (guint i = 0; i < batch; i++) {
        SimEvent *ev = sim_evq_push(q, (SimTime)i, item_fn, &it, item_destroy);
        g_assert_true(g_hash_table_contains(seen, ev));
    }
    g_assert_cmpuint(sim_evq_scheduled(q), ==, (guint64)batch * (cycles + 2));
    sim_evq_free(q);
    g_assert_cmpuint(it.destroys, ==, batch * (cycles + 2));
    g_assert_cmpuint(it.fn_runs, ==, 0);
    g_hash_table_unref(seen);
}

/* ---- caller bugs ------------------------------------------------------------------ */

static void
test_bad_args(void)
{
    SimEvq *q = sim_evq_new();
    Item it = {.id = 1};

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*q != NULL*failed*");
    g_assert_null(sim_evq_push(NULL, 1, item_fn, &it, item_destroy));
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*fn != NULL*failed*");
    g_assert_null(sim_evq_push(q, 1, NULL, &it, item_destroy));
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*SIM_TIME_NEVER*failed*");
    g_assert_null(sim_evq_push(q, SIM_TIME_NEVER, item_fn, &it, item_destroy));
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*ev != NULL*failed*");
    sim_evq_cancel(q, NULL);
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*q != NULL*failed*");
    g_assert_null(sim_evq_pop(NULL));
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*q != NULL*failed*");
    g_assert_cmpint(sim_evq_peek_time(NULL), ==, SIM_TIME_NEVER);
    g_test_assert_expected_messages();

    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*assertion*q != NULL*failed*");
    sim_evq_free(NULL);
    g_test_assert_expected_messages();

    /* Releasing an event that is still queued is refused; it stays queued. */
    SimEvent *ev = push_item(q, 3, &it);
    g_test_expect_message(G_LOG_DOMAIN, G_LOG_LEVEL_CRITICAL, "*next_free == NULL*failed*");
    sim_evq_release(q, ev);
    g_test_assert_expected_messages();
    g_assert_cmpuint(it.destroys, ==, 0);
    g_assert_cmpuint(sim_evq_len(q), ==, 1);
    g_assert_true(dispatch(q, NULL) == &it);
    g_assert_cmpuint(sim_evq_scheduled(q), ==, 1); /* refused pushes do not count */

    sim_evq_free(q);
    g_assert_cmpuint(it.fn_runs, ==, 1);
    g_assert_cmpuint(it.destroys, ==, 1);
}

/* ---- time formatting --------------------------------------------------------------- */

static void
check_format(SimTime t, const char *want)
{
    char buf[SIM_TIME_FORMAT_LEN];

    memset(buf, 'x', sizeof buf);
    g_assert_true(sim_time_format(t, buf, sizeof buf) == buf);
    g_assert_cmpstr(buf, ==, want);
}

static void
test_time_format(void)
{
    check_format(0, "0.000000000");
    check_format(1, "0.000000001");
    check_format(1500000, "0.001500000");
    check_format(1500 * SIM_US, "0.001500000");
    check_format(12 * SIM_S + 500 * SIM_US, "12.000500000");
    check_format(SIM_S, "1.000000000");
    check_format(SIM_S - 1, "0.999999999");
    check_format(3600 * SIM_S, "3600.000000000");
    check_format(-1, "-0.000000001");
    check_format(-(SIM_S + SIM_S / 2), "-1.500000000");
    check_format(-12 * SIM_S, "-12.000000000");
    check_format(SIM_TIME_NEVER, "never");
    check_format(SIM_TIME_NEVER - 1, "9223372036.854775806");
    check_format(G_MININT64, "-9223372036.854775808");
}

static void
test_time_format_short_buffer(void)
{
    char buf[6];

    /* Truncated, NUL-terminated, nothing written past len. */
    memset(buf, 'x', sizeof buf);
    sim_time_format(12 * SIM_S + 500 * SIM_US, buf, 5);
    g_assert_cmpstr(buf, ==, "12.0");
    g_assert_cmpint(buf[5], ==, 'x');
    sim_time_format(SIM_TIME_NEVER, buf, 3);
    g_assert_cmpstr(buf, ==, "ne");
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);

    g_test_add_func("/evq/empty", test_empty);
    g_test_add_func("/evq/ordering", test_ordering_small);
    g_test_add_func("/evq/ordering-random", test_ordering_random);
    g_test_add_func("/evq/equal-time-fifo", test_equal_time_fifo);
    g_test_add_func("/evq/reference-model", test_model);
    g_test_add_func("/evq/reference-model-cancel-heavy", test_model_cancel_heavy);
    g_test_add_func("/evq/reference-model-now-lane", test_model_now_lane);
    g_test_add_func("/evq/pop-until", test_pop_until);
    g_test_add_func("/evq/cancel", test_cancel_basic);
    g_test_add_func("/evq/cancel-peek-skips", test_cancel_peek_skips);
    g_test_add_func("/evq/cancel-during-dispatch", test_cancel_during_dispatch);
    g_test_add_func("/evq/cancel-self-after-pop", test_cancel_self_after_pop);
    g_test_add_func("/evq/cancel-removes", test_cancel_removes);
    g_test_add_func("/evq/destroy-once", test_destroy_once);
    g_test_add_func("/evq/destroy-reentrant", test_destroy_reentrant);
    g_test_add_func("/evq/free-list-reuse", test_free_list_reuse);
    g_test_add_func("/evq/bad-args", test_bad_args);
    g_test_add_func("/time/format", test_time_format);
    g_test_add_func("/time/format-short-buffer", test_time_format_short_buffer);

    return g_test_run();
}
