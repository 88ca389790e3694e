/* test-scenario-parse.c — the scenario language front end: every construct
 * lands in the AST as documented, every malformed file in tests/malformed/
 * fails with its expected "file:line:col: message", and no input — any
 * truncation of a valid file, random mutations, deep nesting, binary junk —
 * crashes or leaks (run under valgrind by `make check-valgrind`).
 *
 * Tests run from the repository root (tests/malformed, docs/).
 */
#include <stdlib.h>
#include <string.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "sim/error.h"
#include "sim/scenario.h"

/* --- helpers ---------------------------------------------------------------- */

static ScScenario *
parse_ok(const char *text)
{
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_string("t.rpcs", text, &err);
    if (sc == NULL)
        g_error("unexpected parse error: %s\n--- input:\n%s", err->message, text);
    return sc;
}

/* Asserts the parse fails with a message containing want. */
static void
parse_err(const char *text, const char *want)
{
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_string("t.rpcs", text, &err);
    if (sc != NULL)
        g_error("expected an error containing \"%s\", but parsed:\n%s", want, text);
    g_assert_error(err, SIM_ERROR, SIM_ERROR_PARSE);
    g_assert_true(g_str_has_prefix(err->message, "t.rpcs:"));
    if (strstr(err->message, want) == NULL)
        g_error("error \"%s\" lacks \"%s\"\n--- input:\n%s", err->message, want, text);
    g_error_free(err);
}

/* Parses text and discards the outcome: must neither crash nor leak. */
static void
parse_any(const char *text, gsize len)
{
    char *copy = g_strndup(text, len); /* stops at a NUL, as a C string does */
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_string("fuzz.rpcs", copy, &err);
    if (sc == NULL) {
        g_assert_error(err, SIM_ERROR, SIM_ERROR_PARSE);
        g_assert_true(g_str_has_prefix(err->message, "fuzz.rpcs:"));
        g_assert_true(g_utf8_validate(err->message, -1, NULL));
        g_error_free(err);
    } else {
        g_assert_no_error(err);
        sim_scenario_free(sc);
    }
    g_free(copy);
}

static ScStmt *
stmt_at(GPtrArray *body, guint i)
{
    g_assert_cmpuint(i, <, body->len);
    return g_ptr_array_index(body, i);
}

static ScExpr *
arg_at(const ScExpr *call, guint i)
{
    g_assert_cmpuint(i, <, call->u.call.args->len);
    return g_ptr_array_index(call->u.call.args, i);
}

static void
assert_loc(ScLoc loc, guint line, guint col)
{
    g_assert_cmpuint(loc.line, ==, line);
    g_assert_cmpuint(loc.col, ==, col);
}

static void
assert_name(const ScExpr *e, const char *name, ScRefKind ref, gint index)
{
    g_assert_cmpint(e->kind, ==, SC_EXPR_NAME);
    g_assert_cmpstr(e->u.name.name, ==, name);
    g_assert_cmpint(e->u.name.ref, ==, ref);
    if (ref == SC_REF_WORKER)
        g_assert_cmpint(e->u.name.ref_index, ==, index);
}

static gint
worker_at(GArray *a, guint i)
{
    g_assert_cmpuint(i, <, a->len);
    return g_array_index(a, gint, i);
}

/* --- the full file ------------------------------------------------------------ */

/* Line numbers matter: the test checks locations. */
static const char full_text[] =
    "# every construct of the language\n"                                    /* 1 */
    "describe \"every construct\"\n"                                         /* 2 */
    "\n"                                                                     /* 3 */
    "world {\n"                                                              /* 4 */
    "  workers [ps, trainer1, \"trainer-2\"]\n"                              /* 5 */
    "  threads 16\n"                                                         /* 6 */
    "  rpc_timeout 60s\n"                                                    /* 7 */
    "  seed 42\n"                                                            /* 8 */
    "  shutdown none\n"                                                      /* 9 */
    "  time_limit 2m\n"                                                      /* 10 */
    "}\n"                                                                    /* 11 */
    "network {\n"                                                            /* 12 */
    "  latency lognormal(200us, 0.5)\n"                                      /* 13 */
    "  bandwidth 1GB/s\n"                                                    /* 14 */
    "  jitter 50us\n"                                                        /* 15 */
    "  loss 0.1%\n"                                                          /* 16 */
    "  duplicate 0.01\n"                                                     /* 17 */
    "  reorder 5%\n"                                                         /* 18 */
    "  link ps -> trainer1 { latency 5ms; loss 10% }\n"                      /* 19 */
    "  link * <-> \"trainer-2\" {\n"                                         /* 20 */
    "    bandwidth 10Gbps\n"                                                 /* 21 */
    "    latency pareto(1ms, 1.5, 50ms)\n"                                   /* 22 */
    "  }\n"                                                                  /* 23 */
    "}\n"                                                                    /* 24 */
    "faults {\n"                                                             /* 25 */
    "  fail RREF_FORK_REQUEST, RREF_CHILD_ACCEPT times 5 from trainer1\n"    /* 26 */
    "  fail RREF_USER_DELETE\n"                                              /* 27 */
    "  delay PYTHON_CALL by 1.5s from ps\n"                                  /* 28 */
    "  at 20ms crash \"trainer-2\"\n"                                        /* 29 */
    "  at 30ms restart \"trainer-2\"\n"                                      /* 30 */
    "  at 10ms pause trainer1 for 50ms\n"                                    /* 31 */
    "  at 60ms resume trainer1\n"                                            /* 32 */
    "  at 5ms partition ps <-> trainer1\n"                                   /* 33 */
    "  at 6ms partition ps -> \"trainer-2\"\n"                               /* 34 */
    "  at 15ms heal ps <-> trainer1\n"                                       /* 35 */
    "  at 16ms heal all\n"                                                   /* 36 */
    "  after 3 rpc.serve on trainer1 crash trainer1\n"                       /* 37 */
    "  after 1 \"net.drop\" pause ps\n"                                      /* 38 */
    "}\n"                                                                    /* 39 */
    "on ps {\n"                                                              /* 40 */
    "  x = rpc_sync(trainer1, add, 1, 2)\n"                                  /* 41 */
    "  expect x == 3\n"                                                      /* 42 */
    "  fut = rpc_async(trainer1, my_sleep_func, seconds=1, timeout=500ms)\n" /* 43 */
    "  rpc_async(\"trainer-2\", \"aten::add\", ones(2, 2), 1)\n"             /* 44 */
    "  expect error fut.wait() kind RuntimeError contains \"timed out\"\n"   /* 45 */
    "  repeat 3 as i {\n"                                                    /* 46 */
    "    y = i * 2 + -1\n"                                                   /* 47 */
    "    print str(y)\n"                                                     /* 48 */
    "  }\n"                                                                  /* 49 */
    "  parallel {\n"                                                         /* 50 */
    "    { sleep 1ms; print \"a\\tb\\n\" }\n"                                /* 51 */
    "    { sleep 2ms }\n"                                                    /* 52 */
    "    print \"c\"\n"                                                      /* 53 */
    "  }\n"                                                                  /* 54 */
    "  sleep 10ms\n"                                                         /* 55 */
    "  set_rpc_timeout 2s\n"                                                 /* 56 */
    "  expect not (now() < 0) and worker_id() >= 0 or False\n"               /* 57 */
    "  expect [1, 2.5, None, True] != [\n"                                   /* 58 */
    "  ]\n"                                                                  /* 59 */
    "  z = wait_all([rpc_async(ps, identity, 1)])\n"                         /* 60 */
    "  f = future(); f.set_result(worker_name())\n"                          /* 61 */
    "  g = f.then(identity, 2)\n"                                            /* 62 */
    "  expect counter(\"timeouts\") >= 0\n"                                  /* 63 */
    "  barrier [ps, trainer1]\n"                                             /* 64 */
    "  barrier\n"                                                            /* 65 */
    "  crash trainer1\n"                                                     /* 66 */
    "  restart trainer1\n"                                                   /* 67 */
    "  pause \"trainer-2\" for 5ms\n"                                        /* 68 */
    "  resume \"trainer-2\"\n"                                               /* 69 */
    "  partition ps -> trainer1\n"                                           /* 70 */
    "  heal ps -> trainer1\n"                                                /* 71 */
    "  heal all\n"                                                           /* 72 */
    "  shutdown graceful timeout=5s\n"                                       /* 73 */
    "}\n"                                                                    /* 74 */
    "on trainer1, \"trainer-2\" {\n"                                         /* 75 */
    "  print worker_info(ps)\n"                                              /* 76 */
    "  shutdown now\n"                                                       /* 77 */
    "}\n"                                                                    /* 78 */
    "on all { expect len(full(0.5, 2, 3)) == 2 }\n"                          /* 79 */
    "expect {\n"                                                             /* 80 */
    "  no_deadlock\n"                                                        /* 81 */
    "  futures_resolved\n"                                                   /* 82 */
    "  counter trainer1 client_active_calls == 0\n"                          /* 83 */
    "  fired fail >= 1\n"                                                    /* 84 */
    "  time <= 10s\n"                                                        /* 85 */
    "  messages > 5\n"                                                       /* 86 */
    "  trace contains \"rpc.timeout\"\n"                                     /* 87 */
    "  trace lacks \"late_response\"\n"                                      /* 88 */
    "  counter ps timeouts != 1; fired bounce < 2\n"                         /* 89 */
    "}\n";                                                                   /* 90 */

static void
check_world(const ScScenario *sc)
{
    g_assert_cmpstr(sc->path, ==, "t.rpcs");
    g_assert_cmpstr(sc->description, ==, "every construct");
    g_assert_cmpuint(sc->n_workers, ==, 3);
    g_assert_cmpstr(sc->worker_names[0], ==, "ps");
    g_assert_cmpstr(sc->worker_names[1], ==, "trainer1");
    g_assert_cmpstr(sc->worker_names[2], ==, "trainer-2");
    g_assert_null(sc->worker_names[3]);
    g_assert_cmpuint(sc->threads, ==, 16);
    g_assert_cmpint(sc->rpc_timeout, ==, 60 * SIM_S);
    g_assert_cmpuint(sc->seed, ==, 42);
    g_assert_true(sc->seed_set);
    g_assert_false(sc->auto_shutdown);
    g_assert_cmpint(sc->time_limit, ==, 120 * SIM_S);
}

static void
check_network(const ScScenario *sc)
{
    const SimLinkConfig *d = &sc->net_default;
    g_assert_cmpint(d->latency.kind, ==, SIM_DIST_LOGNORMAL);
    g_assert_cmpint(d->latency.a, ==, 200 * SIM_US);
    g_assert_cmpfloat(d->latency.shape, ==, 0.5);
    g_assert_cmpuint(d->bandwidth, ==, 1000000000);
    g_assert_cmpint(d->jitter, ==, 50 * SIM_US);
    g_assert_cmpfloat_with_epsilon(d->loss, 0.001, 1e-12);
    g_assert_cmpfloat(d->duplicate, ==, 0.01);
    g_assert_cmpfloat_with_epsilon(d->reorder, 0.05, 1e-12);

    g_assert_cmpuint(sc->links->len, ==, 3);
    const ScLinkOverride *l0 = g_ptr_array_index(sc->links, 0);
    assert_loc(l0->loc, 19, 3);
    g_assert_cmpint(l0->from, ==, 0);
    g_assert_cmpint(l0->to, ==, 1);
    g_assert_cmpuint(l0->set_mask, ==, SC_LINK_SET_LATENCY | SC_LINK_SET_LOSS);
    g_assert_cmpint(l0->cfg.latency.kind, ==, SIM_DIST_CONSTANT);
    g_assert_cmpint(l0->cfg.latency.a, ==, 5 * SIM_MS);
    g_assert_cmpfloat_with_epsilon(l0->cfg.loss, 0.1, 1e-12);
    /* unset fields come from the network default */
    g_assert_cmpuint(l0->cfg.bandwidth, ==, 1000000000);
    g_assert_cmpint(l0->cfg.jitter, ==, 50 * SIM_US);

    /* * <-> "trainer-2": both directions, same settings */
    const ScLinkOverride *l1 = g_ptr_array_index(sc->links, 1);
    const ScLinkOverride *l2 = g_ptr_array_index(sc->links, 2);
    g_assert_cmpint(l1->from, ==, -1);
    g_assert_cmpint(l1->to, ==, 2);
    g_assert_cmpint(l2->from, ==, 2);
    g_assert_cmpint(l2->to, ==, -1);
    for (const ScLinkOverride *l = l1; l != NULL; l = l == l1 ? l2 : NULL) {
        assert_loc(l->loc, 20, 3);
        g_assert_cmpuint(l->set_mask, ==, SC_LINK_SET_BANDWIDTH | SC_LINK_SET_LATENCY);
        g_assert_cmpuint(l->cfg.bandwidth, ==, 1250000000);
        g_assert_cmpint(l->cfg.latency.kind, ==, SIM_DIST_PARETO);
        g_assert_cmpint(l->cfg.latency.a, ==, SIM_MS);
        g_assert_cmpfloat(l->cfg.latency.shape, ==, 1.5);
        g_assert_cmpint(l->cfg.latency.b, ==, 50 * SIM_MS);
        g_assert_cmpfloat_with_epsilon(l->cfg.loss, 0.001, 1e-12);
    }
}

static void
check_faults(const ScScenario *sc)
{
    g_assert_cmpuint(sc->agent_faults->len, ==, 3);
    const ScAgentFault *f0 = g_ptr_array_index(sc->agent_faults, 0);
    assert_loc(f0->loc, 26, 3);
    g_assert_false(f0->is_delay);
    g_assert_cmpuint(f0->types->len, ==, 2);
    g_assert_cmpstr(g_ptr_array_index(f0->types, 0), ==, "RREF_FORK_REQUEST");
    g_assert_cmpstr(g_ptr_array_index(f0->types, 1), ==, "RREF_CHILD_ACCEPT");
    g_assert_cmpuint(f0->times, ==, 5);
    g_assert_cmpint(f0->from_worker, ==, 1);
    const ScAgentFault *f1 = g_ptr_array_index(sc->agent_faults, 1);
    g_assert_cmpuint(f1->times, ==, 3);
    g_assert_cmpint(f1->from_worker, ==, -1);
    const ScAgentFault *f2 = g_ptr_array_index(sc->agent_faults, 2);
    g_assert_true(f2->is_delay);
    g_assert_cmpstr(g_ptr_array_index(f2->types, 0), ==, "PYTHON_CALL");
    g_assert_cmpint(f2->delay, ==, 1500 * SIM_MS);
    g_assert_cmpint(f2->from_worker, ==, 0);

    g_assert_cmpuint(sc->timed_faults->len, ==, 10);
    static const struct {
        ScActionKind kind;
        SimTime at;
        gint a, b;
        gboolean one_way;
        SimTime duration;
    } want[] = {
        {SC_ACT_CRASH, 20 * SIM_MS, 2, -1, FALSE, 0},
        {SC_ACT_RESTART, 30 * SIM_MS, 2, -1, FALSE, 0},
        {SC_ACT_PAUSE, 10 * SIM_MS, 1, -1, FALSE, 50 * SIM_MS},
        {SC_ACT_RESUME, 60 * SIM_MS, 1, -1, FALSE, 0},
        {SC_ACT_PARTITION, 5 * SIM_MS, 0, 1, FALSE, 0},
        {SC_ACT_PARTITION, 6 * SIM_MS, 0, 2, TRUE, 0},
        {SC_ACT_HEAL, 15 * SIM_MS, 0, 1, FALSE, 0},
        {SC_ACT_HEAL, 16 * SIM_MS, -1, -1, FALSE, 0},
    };
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        const ScTimedFault *t = g_ptr_array_index(sc->timed_faults, i);
        assert_loc(t->loc, 29 + i, 3);
        g_assert_cmpint(t->trigger, ==, SC_TRIGGER_AT);
        g_assert_cmpint(t->at, ==, want[i].at);
        g_assert_cmpint(t->action.kind, ==, want[i].kind);
        assert_loc(t->action.loc, 29 + i, i == 4 || i == 5 ? 10 : 11);
        g_assert_cmpint(t->action.a, ==, want[i].a);
        g_assert_cmpint(t->action.b, ==, want[i].b);
        g_assert_cmpint(t->action.one_way, ==, want[i].one_way);
        g_assert_cmpint(t->action.duration, ==, want[i].duration);
    }
    const ScTimedFault *t8 = g_ptr_array_index(sc->timed_faults, 8);
    g_assert_cmpint(t8->trigger, ==, SC_TRIGGER_AFTER);
    g_assert_cmpuint(t8->count, ==, 3);
    g_assert_cmpstr(t8->trace_kind, ==, "rpc.serve");
    g_assert_cmpint(t8->on_worker, ==, 1);
    g_assert_cmpint(t8->action.kind, ==, SC_ACT_CRASH);
    g_assert_cmpint(t8->action.a, ==, 1);
    const ScTimedFault *t9 = g_ptr_array_index(sc->timed_faults, 9);
    g_assert_cmpstr(t9->trace_kind, ==, "net.drop");
    g_assert_cmpint(t9->on_worker, ==, -1);
    g_assert_cmpint(t9->action.kind, ==, SC_ACT_PAUSE);
    g_assert_cmpint(t9->action.duration, ==, 0);
}

static void
check_program0(const ScProgram *prog)
{
    assert_loc(prog->loc, 40, 1);
    g_assert_cmpuint(prog->workers->len, ==, 1);
    g_assert_cmpint(worker_at(prog->workers, 0), ==, 0);
    GPtrArray *b = prog->body;
    g_assert_cmpuint(b->len, ==, 26);

    /* x = rpc_sync(trainer1, add, 1, 2) */
    ScStmt *s = stmt_at(b, 0);
    g_assert_cmpint(s->kind, ==, SC_STMT_ASSIGN);
    assert_loc(s->loc, 41, 3);
    g_assert_cmpstr(s->u.assign.name, ==, "x");
    ScExpr *call = s->u.assign.value;
    g_assert_cmpint(call->kind, ==, SC_EXPR_CALL);
    assert_loc(call->loc, 41, 7);
    g_assert_cmpstr(call->u.call.name, ==, "rpc_sync");
    g_assert_cmpuint(call->u.call.args->len, ==, 4);
    assert_name(arg_at(call, 0), "trainer1", SC_REF_WORKER, 1);
    assert_loc(arg_at(call, 0)->loc, 41, 16);
    assert_name(arg_at(call, 1), "add", SC_REF_FUNC, 0);
    g_assert_cmpint(arg_at(call, 2)->kind, ==, SC_EXPR_INT);
    g_assert_cmpint(arg_at(call, 3)->u.i, ==, 2);

    /* expect x == 3 */
    s = stmt_at(b, 1);
    g_assert_cmpint(s->kind, ==, SC_STMT_EXPECT);
    g_assert_cmpint(s->u.expr->kind, ==, SC_EXPR_BINOP);
    g_assert_cmpint(s->u.expr->u.bin.op, ==, SC_OP_EQ);
    assert_name(s->u.expr->u.bin.lhs, "x", SC_REF_VAR, 0);

    /* fut = rpc_async(trainer1, my_sleep_func, seconds=1, timeout=500ms) */
    call = stmt_at(b, 2)->u.assign.value;
    g_assert_cmpstr(call->u.call.name, ==, "rpc_async");
    g_assert_cmpuint(call->u.call.args->len, ==, 2);
    g_assert_cmpuint(call->u.call.kwargs->len, ==, 2);
    const ScKwarg *kw = g_ptr_array_index(call->u.call.kwargs, 1);
    g_assert_cmpstr(kw->name, ==, "timeout");
    g_assert_cmpint(kw->value->kind, ==, SC_EXPR_DURATION);
    g_assert_cmpint(kw->value->u.i, ==, 500 * SIM_MS);

    /* rpc_async("trainer-2", "aten::add", …): a quoted function name */
    s = stmt_at(b, 3);
    g_assert_cmpint(s->kind, ==, SC_STMT_EXPR);
    g_assert_cmpint(arg_at(s->u.expr, 0)->kind, ==, SC_EXPR_STRING);
    g_assert_cmpstr(arg_at(s->u.expr, 0)->u.s, ==, "trainer-2");
    assert_name(arg_at(s->u.expr, 1), "aten::add", SC_REF_FUNC, 0);
    g_assert_cmpstr(arg_at(s->u.expr, 2)->u.call.name, ==, "ones");

    /* expect error fut.wait() kind RuntimeError contains "timed out" */
    s = stmt_at(b, 4);
    g_assert_cmpint(s->kind, ==, SC_STMT_EXPECT_ERROR);
    g_assert_cmpint(s->u.experr.expr->kind, ==, SC_EXPR_METHOD);
    g_assert_cmpstr(s->u.experr.expr->u.call.name, ==, "wait");
    assert_name(s->u.experr.expr->u.call.target, "fut", SC_REF_VAR, 0);
    g_assert_cmpstr(s->u.experr.kind, ==, "RuntimeError");
    g_assert_cmpstr(s->u.experr.contains, ==, "timed out");

    /* repeat 3 as i { y = i * 2 + -1; print str(y) } */
    s = stmt_at(b, 5);
    g_assert_cmpint(s->kind, ==, SC_STMT_REPEAT);
    g_assert_cmpint(s->u.repeat.count->u.i, ==, 3);
    g_assert_cmpstr(s->u.repeat.var, ==, "i");
    g_assert_cmpuint(s->u.repeat.body->len, ==, 2);
    ScExpr *e = stmt_at(s->u.repeat.body, 0)->u.assign.value;
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_ADD);
    g_assert_cmpint(e->u.bin.lhs->u.bin.op, ==, SC_OP_MUL);
    assert_name(e->u.bin.lhs->u.bin.lhs, "i", SC_REF_VAR, 0);
    g_assert_cmpint(e->u.bin.rhs->kind, ==, SC_EXPR_NEG);
    assert_loc(e->u.bin.rhs->loc, 47, 17);
    g_assert_cmpint(stmt_at(s->u.repeat.body, 1)->kind, ==, SC_STMT_PRINT);

    /* parallel { {…} {…} print "c" } */
    s = stmt_at(b, 6);
    g_assert_cmpint(s->kind, ==, SC_STMT_PARALLEL);
    g_assert_cmpuint(s->u.blocks->len, ==, 3);
    GPtrArray *blk = g_ptr_array_index(s->u.blocks, 0);
    g_assert_cmpuint(blk->len, ==, 2);
    g_assert_cmpint(stmt_at(blk, 0)->kind, ==, SC_STMT_SLEEP);
    g_assert_cmpint(stmt_at(blk, 0)->u.expr->u.i, ==, SIM_MS);
    g_assert_cmpstr(stmt_at(blk, 1)->u.expr->u.s, ==, "a\tb\n");
    g_assert_cmpuint(((GPtrArray *)g_ptr_array_index(s->u.blocks, 1))->len, ==, 1);
    blk = g_ptr_array_index(s->u.blocks, 2);
    g_assert_cmpuint(blk->len, ==, 1);
    g_assert_cmpint(stmt_at(blk, 0)->kind, ==, SC_STMT_PRINT);

    g_assert_cmpint(stmt_at(b, 7)->kind, ==, SC_STMT_SLEEP);
    g_assert_cmpint(stmt_at(b, 8)->kind, ==, SC_STMT_SET_TIMEOUT);
    g_assert_cmpint(stmt_at(b, 8)->u.expr->u.i, ==, 2 * SIM_S);

    /* not (now() < 0) and worker_id() >= 0 or False */
    e = stmt_at(b, 9)->u.expr;
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_OR);
    g_assert_cmpint(e->u.bin.rhs->kind, ==, SC_EXPR_BOOL);
    g_assert_false(e->u.bin.rhs->u.b);
    g_assert_cmpint(e->u.bin.lhs->u.bin.op, ==, SC_OP_AND);
    g_assert_cmpint(e->u.bin.lhs->u.bin.lhs->kind, ==, SC_EXPR_NOT);
    g_assert_cmpint(e->u.bin.lhs->u.bin.lhs->u.bin.lhs->u.bin.op, ==, SC_OP_LT);
    g_assert_cmpint(e->u.bin.lhs->u.bin.rhs->u.bin.op, ==, SC_OP_GE);

    /* [1, 2.5, None, True] != [] spanning two lines */
    e = stmt_at(b, 10)->u.expr;
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_NE);
    GPtrArray *items = e->u.bin.lhs->u.items;
    g_assert_cmpuint(items->len, ==, 4);
    g_assert_cmpfloat(((ScExpr *)g_ptr_array_index(items, 1))->u.d, ==, 2.5);
    g_assert_cmpint(((ScExpr *)g_ptr_array_index(items, 2))->kind, ==, SC_EXPR_NONE);
    g_assert_true(((ScExpr *)g_ptr_array_index(items, 3))->u.b);
    g_assert_cmpuint(e->u.bin.rhs->u.items->len, ==, 0);

    /* z = wait_all([rpc_async(ps, identity, 1)]) */
    e = stmt_at(b, 11)->u.assign.value;
    g_assert_cmpstr(e->u.call.name, ==, "wait_all");
    ScExpr *inner = g_ptr_array_index(arg_at(e, 0)->u.items, 0);
    assert_name(arg_at(inner, 0), "ps", SC_REF_WORKER, 0);
    assert_name(arg_at(inner, 1), "identity", SC_REF_FUNC, 0);

    /* f = future(); f.set_result(worker_name()) on one line */
    g_assert_cmpint(stmt_at(b, 12)->kind, ==, SC_STMT_ASSIGN);
    assert_loc(stmt_at(b, 13)->loc, 61, 17);
    g_assert_cmpstr(stmt_at(b, 13)->u.expr->u.call.name, ==, "set_result");

    /* g = f.then(identity, 2) */
    e = stmt_at(b, 14)->u.assign.value;
    g_assert_cmpint(e->kind, ==, SC_EXPR_METHOD);
    assert_name(e->u.call.target, "f", SC_REF_VAR, 0);
    assert_name(arg_at(e, 0), "identity", SC_REF_FUNC, 0);

    e = stmt_at(b, 15)->u.expr;
    g_assert_cmpstr(e->u.bin.lhs->u.call.name, ==, "counter");

    s = stmt_at(b, 16);
    g_assert_cmpint(s->kind, ==, SC_STMT_BARRIER);
    g_assert_cmpuint(s->u.workers->len, ==, 2);
    g_assert_cmpint(worker_at(s->u.workers, 1), ==, 1);
    s = stmt_at(b, 17);
    g_assert_cmpint(s->kind, ==, SC_STMT_BARRIER);
    g_assert_cmpuint(s->u.workers->len, ==, 0);

    static const struct {
        ScActionKind kind;
        gint a, b;
        gboolean one_way;
        SimTime duration;
    } acts[] = {
        {SC_ACT_CRASH, 1, -1, FALSE, 0},          {SC_ACT_RESTART, 1, -1, FALSE, 0},
        {SC_ACT_PAUSE, 2, -1, FALSE, 5 * SIM_MS}, {SC_ACT_RESUME, 2, -1, FALSE, 0},
        {SC_ACT_PARTITION, 0, 1, TRUE, 0},        {SC_ACT_HEAL, 0, 1, TRUE, 0},
        {SC_ACT_HEAL, -1, -1, FALSE, 0},
    };
    for (guint i = 0; i < G_N_ELEMENTS(acts); i++) {
        s = stmt_at(b, 18 + i);
        g_assert_cmpint(s->kind, ==, SC_STMT_ACTION);
        assert_loc(s->loc, 66 + i, 3);
        assert_loc(s->u.action.loc, 66 + i, 3);
        g_assert_cmpint(s->u.action.kind, ==, acts[i].kind);
        g_assert_cmpint(s->u.action.a, ==, acts[i].a);
        g_assert_cmpint(s->u.action.b, ==, acts[i].b);
        g_assert_cmpint(s->u.action.one_way, ==, acts[i].one_way);
        g_assert_cmpint(s->u.action.duration, ==, acts[i].duration);
    }
    s = stmt_at(b, 25);
    g_assert_cmpint(s->kind, ==, SC_STMT_SHUTDOWN);
    g_assert_true(s->u.shutdown.graceful);
    g_assert_cmpint(s->u.shutdown.timeout->u.i, ==, 5 * SIM_S);
}

static void
check_programs(const ScScenario *sc)
{
    g_assert_cmpuint(sc->programs->len, ==, 3);
    check_program0(g_ptr_array_index(sc->programs, 0));

    const ScProgram *p1 = g_ptr_array_index(sc->programs, 1);
    g_assert_cmpuint(p1->workers->len, ==, 2);
    g_assert_cmpint(worker_at(p1->workers, 0), ==, 1);
    g_assert_cmpint(worker_at(p1->workers, 1), ==, 2);
    ScStmt *s = stmt_at(p1->body, 0);
    assert_name(arg_at(s->u.expr, 0), "ps", SC_REF_WORKER, 0);
    s = stmt_at(p1->body, 1);
    g_assert_cmpint(s->kind, ==, SC_STMT_SHUTDOWN);
    g_assert_false(s->u.shutdown.graceful);
    g_assert_null(s->u.shutdown.timeout);

    const ScProgram *p2 = g_ptr_array_index(sc->programs, 2);
    g_assert_cmpuint(p2->workers->len, ==, 3);
    for (guint i = 0; i < 3; i++)
        g_assert_cmpint(worker_at(p2->workers, i), ==, (gint)i);
    ScExpr *full = arg_at(stmt_at(p2->body, 0)->u.expr->u.bin.lhs, 0);
    g_assert_cmpstr(full->u.call.name, ==, "full");
    g_assert_cmpuint(full->u.call.args->len, ==, 3);
}

static void
check_expects(const ScScenario *sc)
{
    static const struct {
        ScEndKind kind;
        gint worker;
        const char *name;
        ScCmp cmp;
        gint64 value;
    } want[] = {
        {SC_END_NO_DEADLOCK, -1, NULL, 0, 0},
        {SC_END_FUTURES_RESOLVED, -1, NULL, 0, 0},
        {SC_END_COUNTER, 1, "client_active_calls", SC_CMP_EQ, 0},
        {SC_END_FIRED, -1, "fail", SC_CMP_GE, 1},
        {SC_END_TIME, -1, NULL, SC_CMP_LE, 10 * SIM_S},
        {SC_END_MESSAGES, -1, NULL, SC_CMP_GT, 5},
        {SC_END_TRACE_CONTAINS, -1, "rpc.timeout", 0, 0},
        {SC_END_TRACE_LACKS, -1, "late_response", 0, 0},
        {SC_END_COUNTER, 0, "timeouts", SC_CMP_NE, 1},
        {SC_END_FIRED, -1, "bounce", SC_CMP_LT, 2},
    };
    g_assert_cmpuint(sc->expects->len, ==, G_N_ELEMENTS(want));
    for (guint i = 0; i < G_N_ELEMENTS(want); i++) {
        const ScEndExpect *x = g_ptr_array_index(sc->expects, i);
        g_assert_cmpint(x->kind, ==, want[i].kind);
        g_assert_cmpstr(x->name, ==, want[i].name);
        if (want[i].kind == SC_END_COUNTER)
            g_assert_cmpint(x->worker, ==, want[i].worker);
        if (want[i].kind >= SC_END_COUNTER && want[i].kind <= SC_END_MESSAGES) {
            g_assert_cmpint(x->cmp, ==, want[i].cmp);
            g_assert_cmpint(x->value, ==, want[i].value);
        }
        assert_loc(x->loc, i < 9 ? 81 + i : 89, i < 9 ? 3 : 29);
    }
}

static void
test_deadlock_expectations(void)
{
    ScScenario *sc = parse_ok("on worker0 { print 1 }\n"
                              "expect { deadlock; deadlock contains \"thread pool exhausted\" }\n");
    g_assert_cmpuint(sc->expects->len, ==, 2);
    const ScEndExpect *x0 = g_ptr_array_index(sc->expects, 0);
    const ScEndExpect *x1 = g_ptr_array_index(sc->expects, 1);
    g_assert_cmpint(x0->kind, ==, SC_END_DEADLOCK);
    g_assert_null(x0->name);
    g_assert_cmpint(x1->kind, ==, SC_END_DEADLOCK_CONTAINS);
    g_assert_cmpstr(x1->name, ==, "thread pool exhausted");
    assert_loc(x1->loc, 2, 20);
    sim_scenario_free(sc);
    parse_err("on worker0 {}\nexpect { no_deadlock; deadlock }",
              "t.rpcs:2:23: 'deadlock' contradicts 'no_deadlock' at 2:10");
    parse_err("on worker0 {}\nexpect { trace has \"x\" }",
              "expected 'contains' or 'lacks' after 'trace', got 'has'");
    parse_err("on worker0 {}\nexpect { time <= 5 }", "time needs a duration with a unit");
    parse_err("on worker0 {}\nexpect { messages > -1 }", "messages needs a whole number, got '-'");
}

static void
test_full(void)
{
    ScScenario *sc = parse_ok(full_text);
    check_world(sc);
    check_network(sc);
    check_faults(sc);
    check_programs(sc);
    check_expects(sc);
    sim_scenario_free(sc);
}

static void
test_defaults(void)
{
    ScScenario *sc = parse_ok("on worker3 { print 1 }");
    g_assert_cmpuint(sc->n_workers, ==, 4);
    for (guint i = 0; i < 4; i++) {
        char *want = g_strdup_printf("worker%u", i);
        g_assert_cmpstr(sc->worker_names[i], ==, want);
        g_free(want);
    }
    g_assert_null(sc->worker_names[4]);
    g_assert_null(sc->description);
    g_assert_cmpuint(sc->threads, ==, 0);
    g_assert_cmpint(sc->rpc_timeout, ==, -1);
    g_assert_cmpuint(sc->seed, ==, 0);
    g_assert_false(sc->seed_set);
    g_assert_true(sc->auto_shutdown);
    g_assert_cmpint(sc->time_limit, ==, 3600 * SIM_S);
    SimLinkConfig d;
    sim_link_config_init(&d);
    g_assert_cmpint(memcmp(&d, &sc->net_default, sizeof d), ==, 0);
    g_assert_cmpuint(sc->links->len, ==, 0);
    g_assert_cmpuint(sc->agent_faults->len, ==, 0);
    g_assert_cmpuint(sc->timed_faults->len, ==, 0);
    g_assert_cmpuint(sc->expects->len, ==, 0);
    const ScProgram *prog = g_ptr_array_index(sc->programs, 0);
    g_assert_cmpint(worker_at(prog->workers, 0), ==, 3);
    sim_scenario_free(sc);

    sc = parse_ok("world { workers 2; shutdown graceful }\non worker1 { }\n");
    g_assert_cmpuint(sc->n_workers, ==, 2);
    g_assert_cmpstr(sc->worker_names[1], ==, "worker1");
    g_assert_true(sc->auto_shutdown);
    sim_scenario_free(sc);

    /* sections in any order, braces on the next line, CRLF line ends */
    sc = parse_ok("on a\r\n{\r\n  sleep 1s\r\n}\r\nworld\n{\n workers [a]\n}\n");
    g_assert_cmpuint(sc->n_workers, ==, 1);
    g_assert_cmpint(worker_at(((ScProgram *)g_ptr_array_index(sc->programs, 0))->workers, 0), ==,
                    0);
    sim_scenario_free(sc);
}

/* A `sleep` with the duration literal d; its nanoseconds. */
static SimTime
sleep_ns(const char *d)
{
    char *text = g_strdup_printf("on worker0 { sleep %s }", d);
    ScScenario *sc = parse_ok(text);
    const ScProgram *prog = g_ptr_array_index(sc->programs, 0);
    const ScExpr *e = stmt_at(prog->body, 0)->u.expr;
    g_assert_cmpint(e->kind, ==, SC_EXPR_DURATION);
    SimTime ns = e->u.i;
    sim_scenario_free(sc);
    g_free(text);
    return ns;
}

static void
test_durations(void)
{
    static const struct {
        const char *text;
        SimTime ns;
    } ok[] = {
        {"0s", 0},
        {"17ns", 17},
        {"200us", 200 * SIM_US},
        {"1.5s", 1500 * SIM_MS},
        {"1.5ms", 1500 * SIM_US},
        {"0.001ns", -1}, /* placeholder, see below */
        {"2m", 120 * SIM_S},
        {"1.5h", 5400 * SIM_S},
        {"1e-3s", SIM_MS},
        {"1E3ms", SIM_S},
        {"1_000ms", SIM_S},
        {"0.000000001s", 1},
        {"1.000ns", 1},
        {"0.05m", 3 * SIM_S},
        {"9223372036854775807ns", G_MAXINT64},
        {"00012us", 12 * SIM_US},
    };
    for (guint i = 0; i < G_N_ELEMENTS(ok); i++) {
        if (ok[i].ns < 0)
            continue;
        g_assert_cmpint(sleep_ns(ok[i].text), ==, ok[i].ns);
    }
    parse_err("on worker0 { sleep 0.001ns }", "t.rpcs:1:20: duration '0.001ns' is not a whole "
                                              "number of nanoseconds");
    parse_err("on worker0 { sleep 1.5ns }", "not a whole number of nanoseconds");
    parse_err("on worker0 { sleep 9223372036854775808ns }", "duration '9223372036854775808ns' is "
                                                            "too large");
    parse_err("on worker0 { sleep 3000000000h }", "is too large");
    parse_err("on worker0 { sleep 1e999s }", "is too large");
    parse_err("on worker0 { sleep 5 }", "t.rpcs:1:20: sleep needs a duration with a unit");
    parse_err("on worker0 { sleep 5xs }", "t.rpcs:1:21: unknown unit 'xs'");
    parse_err("on worker0 { sleep 5ms5 }", "invalid number '5ms5'");
    parse_err("on worker0 { sleep 1__0ms }", "invalid number '1__0ms'");
    parse_err("on worker0 { sleep 10_ms }", "invalid number '10_ms'");
    parse_err("on worker0 { sleep 1.2.3s }", "invalid number");
    parse_err("on worker0 { sleep 1.2345678901234567890123s }", "too many digits in duration");
    parse_err("world { rpc_timeout 60 }\non worker0 {}", "t.rpcs:1:21: rpc_timeout needs a "
                                                         "duration with a unit");
}

static void
test_network_values(void)
{
    static const struct {
        const char *text;
        guint64 bytes;
    } rates[] = {
        {"0", 0},
        {"1B/s", 1},
        {"1KB/s", 1000},
        {"1.5MB/s", 1500000},
        {"2GB/s", 2000000000},
        {"1KiB/s", 1024},
        {"1MiB/s", 1048576},
        {"1GiB/s", 1073741824},
        {"8bps", 1},
        {"1Kbps", 125},
        {"100Mbps", 12500000},
        {"10Gbps", 1250000000},
    };
    for (guint i = 0; i < G_N_ELEMENTS(rates); i++) {
        char *text = g_strdup_printf("network { bandwidth %s }\non worker0 {}", rates[i].text);
        ScScenario *sc = parse_ok(text);
        g_assert_cmpuint(sc->net_default.bandwidth, ==, rates[i].bytes);
        sim_scenario_free(sc);
        g_free(text);
    }
    static const struct {
        const char *text;
        double p;
    } probs[] = {
        {"0", 0},    {"1", 1},        {"0.25", 0.25}, {"50%", 0.5},
        {"100%", 1}, {"0.5%", 0.005}, {"1e-2", 0.01},
    };
    for (guint i = 0; i < G_N_ELEMENTS(probs); i++) {
        char *text = g_strdup_printf("network { loss %s; duplicate %s; reorder %s }\non worker0 {}",
                                     probs[i].text, probs[i].text, probs[i].text);
        ScScenario *sc = parse_ok(text);
        g_assert_cmpfloat_with_epsilon(sc->net_default.loss, probs[i].p, 1e-12);
        g_assert_cmpfloat_with_epsilon(sc->net_default.duplicate, probs[i].p, 1e-12);
        g_assert_cmpfloat_with_epsilon(sc->net_default.reorder, probs[i].p, 1e-12);
        sim_scenario_free(sc);
        g_free(text);
    }
    static const struct {
        const char *text;
        SimDistKind kind;
        SimTime a, b;
        double shape;
    } dists[] = {
        {"3ms", SIM_DIST_CONSTANT, 3 * SIM_MS, 0, 0},
        {"constant(3ms)", SIM_DIST_CONSTANT, 3 * SIM_MS, 0, 0},
        {"uniform(1ms, 2ms)", SIM_DIST_UNIFORM, SIM_MS, 2 * SIM_MS, 0},
        {"normal(1ms, 200us)", SIM_DIST_NORMAL, SIM_MS, 200 * SIM_US, 0},
        {"lognormal(200us, 1)", SIM_DIST_LOGNORMAL, 200 * SIM_US, 0, 1},
        {"pareto(1ms, 1.5)", SIM_DIST_PARETO, SIM_MS, 0, 1.5},
        {"pareto(1ms, 2, 50ms)", SIM_DIST_PARETO, SIM_MS, 50 * SIM_MS, 2},
    };
    for (guint i = 0; i < G_N_ELEMENTS(dists); i++) {
        char *text = g_strdup_printf("network { latency %s }\non worker0 {}", dists[i].text);
        ScScenario *sc = parse_ok(text);
        const SimDist *d = &sc->net_default.latency;
        g_assert_cmpint(d->kind, ==, dists[i].kind);
        g_assert_cmpint(d->a, ==, dists[i].a);
        g_assert_cmpint(d->b, ==, dists[i].b);
        g_assert_cmpfloat(d->shape, ==, dists[i].shape);
        sim_scenario_free(sc);
        g_free(text);
    }
    parse_err("network { bandwidth 1GB }\non worker0 {}", "t.rpcs:1:21: bandwidth needs a rate");
    parse_err("network { bandwidth 1bps }\non worker0 {}", "below 1 byte per second");
    parse_err("network { loss 1.5 }\non worker0 {}", "t.rpcs:1:16: loss must be a probability");
    parse_err("network { reorder 101% }\non worker0 {}", "reorder must be a probability");
    parse_err("network { latency uniform(2ms, 1ms) }\non worker0 {}",
              "the lower bound is above the upper bound");
    parse_err("network { latency pareto(1ms, 0) }\non worker0 {}", "the shape must be positive");
    parse_err("network { latency lognormal(1ms) }\non worker0 {}",
              "lognormal() takes 2 arguments (1 given)");
    parse_err("network { latency lognormal(1ms, 2ms) }\non worker0 {}",
              "argument 2 of lognormal() is the shape and needs a number");
    parse_err("network { latency constant(1ms, 2ms) }\non worker0 {}",
              "constant() takes at most 1 argument (2 given)");
    parse_err("network { latency gamma(1ms) }\non worker0 {}", "unknown distribution 'gamma'");
    parse_err("network { link worker0 -> worker1 { link a -> b {} } }\non worker0 {}",
              "unknown setting 'link' in link");
    parse_err("network { link worker0 -> worker1 { loss 1%; loss 2% } }\non worker0 {}",
              "duplicate setting 'loss' in link (first set at 1:37)");
    parse_err("network { jitter 1ms\n jitter 2ms }\non worker0 {}",
              "t.rpcs:2:2: duplicate setting 'jitter' in network (first set at 1:11)");
}

static void
test_strings(void)
{
    ScScenario *sc = parse_ok("describe \"q\\\"b\\\\s\\tt\\nn é ✓\"\non worker0 {}");
    g_assert_cmpstr(sc->description, ==, "q\"b\\s\tt\nn é ✓");
    sim_scenario_free(sc);
    parse_err("describe \"abc\non worker0 {}", "t.rpcs:1:10: unterminated string");
    parse_err("describe \"ab\\q\"", "t.rpcs:1:13: invalid escape '\\q' in string");
    parse_err("describe \"a\\", "t.rpcs:1:10: unterminated string");
    parse_err("describe \"\xff\"", "t.rpcs:1:11: invalid UTF-8 in a string (byte 0xff)");
    parse_err("# caf\xc3\n", "t.rpcs:1:6: invalid UTF-8 in a comment");
    parse_err("describe \"a\x01\"", "control character 0x01 in string");
    parse_err("describe 5", "t.rpcs:1:10: expected a string after 'describe', got '5'");
    parse_err("\xef\xbb\xbf on worker0 {}", "t.rpcs:1:1: unexpected byte 0xef");
}

/* The expression of the first statement of the only program. */
static void
with_expr(const char *expr, void (*check)(const ScExpr *e))
{
    char *text = g_strdup_printf("on worker0 {\n  x = 1\n  %s\n}\n", expr);
    ScScenario *sc = parse_ok(text);
    const ScProgram *prog = g_ptr_array_index(sc->programs, 0);
    check(stmt_at(prog->body, 1)->u.expr);
    sim_scenario_free(sc);
    g_free(text);
}

static void
check_precedence(const ScExpr *e)
{
    /* 1 + 2 * -x - 3 / 4 == 5 → ((1 + (2 * (-x))) - (3 / 4)) == 5 */
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_EQ);
    assert_loc(e->loc, 3, 3);
    const ScExpr *sub = e->u.bin.lhs;
    g_assert_cmpint(sub->u.bin.op, ==, SC_OP_SUB);
    g_assert_cmpint(sub->u.bin.rhs->u.bin.op, ==, SC_OP_DIV);
    const ScExpr *add = sub->u.bin.lhs;
    g_assert_cmpint(add->u.bin.op, ==, SC_OP_ADD);
    const ScExpr *mul = add->u.bin.rhs;
    g_assert_cmpint(mul->u.bin.op, ==, SC_OP_MUL);
    assert_loc(mul->loc, 3, 7);
    g_assert_cmpint(mul->u.bin.rhs->kind, ==, SC_EXPR_NEG);
    assert_name(mul->u.bin.rhs->u.bin.lhs, "x", SC_REF_VAR, 0);
}

static void
check_logic(const ScExpr *e)
{
    /* not x or x and not x == 1 → (not x) or (x and (not (x == 1))) */
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_OR);
    g_assert_cmpint(e->u.bin.lhs->kind, ==, SC_EXPR_NOT);
    const ScExpr *and = e->u.bin.rhs;
    g_assert_cmpint(and->u.bin.op, ==, SC_OP_AND);
    g_assert_cmpint(and->u.bin.rhs->kind, ==, SC_EXPR_NOT);
    g_assert_cmpint(and->u.bin.rhs->u.bin.lhs->u.bin.op, ==, SC_OP_EQ);
}

static void
check_parens(const ScExpr *e)
{
    /* (1 + 2) * 3 */
    g_assert_cmpint(e->u.bin.op, ==, SC_OP_MUL);
    g_assert_cmpint(e->u.bin.lhs->u.bin.op, ==, SC_OP_ADD);
    assert_loc(e->u.bin.lhs->loc, 3, 4);
}

static void
check_method_chain(const ScExpr *e)
{
    /* rpc_async(worker1, add, 1, 2).then(identity).wait() */
    g_assert_cmpint(e->kind, ==, SC_EXPR_METHOD);
    g_assert_cmpstr(e->u.call.name, ==, "wait");
    const ScExpr *then = e->u.call.target;
    g_assert_cmpstr(then->u.call.name, ==, "then");
    assert_name(arg_at(then, 0), "identity", SC_REF_FUNC, 0);
    g_assert_cmpstr(then->u.call.target->u.call.name, ==, "rpc_async");
    assert_loc(e->loc, 3, 3);
}

static void
check_kwargs_multiline(const ScExpr *e)
{
    g_assert_cmpstr(e->u.call.name, ==, "rpc_sync");
    g_assert_cmpuint(e->u.call.args->len, ==, 3);
    g_assert_cmpuint(e->u.call.kwargs->len, ==, 2);
    const ScKwarg *k = g_ptr_array_index(e->u.call.kwargs, 0);
    g_assert_cmpstr(k->name, ==, "a");
    assert_loc(k->value->loc, 4, 7);
}

static void
test_expressions(void)
{
    with_expr("1 + 2 * -x - 3 / 4 == 5", check_precedence);
    with_expr("not x or x and not x == 1", check_logic);
    with_expr("(1 + 2) * 3", check_parens);
    with_expr("rpc_async(worker1, add, 1, 2).then(identity).wait()", check_method_chain);
    with_expr("rpc_sync(worker1, my_function, 1,\n    a=1, b=2,)", check_kwargs_multiline);

    parse_err("on worker0 { expect 1 < 2 < 3 }", "t.rpcs:1:27: comparisons cannot be chained");
    parse_err("on worker0 { expect 1 = 1 }", "t.rpcs:1:23: unexpected '=' after expect (use '=='");
    parse_err("on worker0 { x = (1 + 2 }", "t.rpcs:1:25: expected ')' to close the '(' at 1:18");
    parse_err("on worker0 { x = [1 2] }",
              "expected ',' or ']' in the list opened at 1:18, got '2'");
    parse_err("on worker0 { x = now()() }", "only built-in functions and methods can be called");
    parse_err("on worker0 { x = future().foo() }", "t.rpcs:1:27: unknown method 'foo'");
    parse_err("on worker0 { x = future().done }", "expected '(' after the method name 'done'");
    parse_err("on worker0 { x = ones(requires_grad=True) }",
              "ones() takes no keyword arguments (got 'requires_grad=')");
    parse_err("on worker0 { rpc_sync(worker1, add, a=1, 2) }",
              "positional argument follows keyword argument");
    parse_err("on worker0 { rpc_sync(worker1, add, a=1, a=2) }", "duplicate keyword argument 'a'");
    parse_err("on worker0 { rpc_sync(worker1, 1 + 2) }",
              "argument 2 of rpc_sync() must be a function name");
    parse_err("on worker0 { rpc_sync(worker1, add, timeout=5) }", "timeout= needs a duration");
    parse_err("on worker0 { x = 5MB }", "sizes, rates and percentages are only for network");
    parse_err("on worker0 { x = 9223372036854775808 }", "integer is too large");
    parse_err("on worker0 { x = 99999999999999999999 }",
              "integer '99999999999999999999' is too large");
    parse_err("on worker0 { None = 1 }", "t.rpcs:1:14: cannot assign to 'None'");
    parse_err("on worker0 { repeat 2 as sleep { } }", "'sleep' is a reserved word");
    parse_err("on worker0 { repeat 1.5 { } }", "repeat needs a whole number of times");
    parse_err("on worker0 { x = 1 ! 2 }", "unexpected character '!' (use 'not')");
    parse_err("on worker0 { x = counter(\"nope\") }", "unknown counter 'nope'");
    parse_err("on worker0 { x = and }", "expected an expression, got 'and'");
}

static void
test_resolution(void)
{
    /* a variable shadows a worker; before its assignment the name is the worker */
    ScScenario *sc = parse_ok("on worker0 {\n"
                              "  print worker1\n"
                              "  worker1 = 5\n"
                              "  print worker1\n"
                              "  repeat worker1 as k { print k }\n"
                              "  print k\n"
                              "  rpc_sync(worker1, add, k, 1)\n"
                              "}\n");
    const ScProgram *prog = g_ptr_array_index(sc->programs, 0);
    assert_name(stmt_at(prog->body, 0)->u.expr, "worker1", SC_REF_WORKER, 1);
    assert_name(stmt_at(prog->body, 2)->u.expr, "worker1", SC_REF_VAR, 0);
    const ScStmt *rep = stmt_at(prog->body, 3);
    assert_name(rep->u.repeat.count, "worker1", SC_REF_VAR, 0);
    assert_name(stmt_at(rep->u.repeat.body, 0)->u.expr, "k", SC_REF_VAR, 0);
    assert_name(stmt_at(prog->body, 4)->u.expr, "k", SC_REF_VAR, 0);
    const ScExpr *call = stmt_at(prog->body, 5)->u.expr;
    assert_name(arg_at(call, 1), "add", SC_REF_FUNC, 0);
    assert_name(arg_at(call, 2), "k", SC_REF_VAR, 0); /* not a function slot */
    sim_scenario_free(sc);
    /* the second program does not see the first one's variables, so k is
     * neither a variable nor a worker there */
    parse_err("on worker0 { k = 1 }\non worker1 { print k }",
              "t.rpcs:2:20: undefined variable 'k'");
    /* used before assigned */
    parse_err("on worker0 {\n  print y\n  y = 1\n}", "t.rpcs:2:9: undefined variable 'y'");
    /* x = x + 1 reads x before assigning it */
    parse_err("on worker0 { x = x + 1 }", "t.rpcs:1:18: undefined variable 'x'");
    /* a variable is no function */
    parse_err("on worker0 { f = 1; rpc_sync(worker1, f) }", "t.rpcs:1:39: unknown function 'f'");
    parse_err("on worker0 { future().then(nope) }", "t.rpcs:1:28: unknown function 'nope'");
    /* the world may come after its first use */
    sc = parse_ok("on b { rpc_sync(a, add, 1, 2) }\nworld { workers [a, b] }\n");
    call = stmt_at(((ScProgram *)g_ptr_array_index(sc->programs, 0))->body, 0)->u.expr;
    assert_name(arg_at(call, 0), "a", SC_REF_WORKER, 0);
    sim_scenario_free(sc);
    /* name errors come in text order, after syntax errors */
    parse_err("on worker0 { print u1 }\non worker9 { print 1 }",
              "t.rpcs:1:20: undefined variable 'u1'");
    parse_err("on worker9 { print u1 }", "t.rpcs:1:4: unknown worker 'worker9' (the world has 4 "
                                         "workers: worker0, worker1, worker2, worker3)");
    parse_err("on worker0 { print u1 }\non worker0 { x = }", "t.rpcs:2:18: expected an expression");
}

static void
test_error_format(void)
{
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_string("dir/x.rpcs", "world {\n  cores 4\n}\n", &err);
    g_assert_null(sc);
    g_assert_error(err, SIM_ERROR, SIM_ERROR_PARSE);
    g_assert_cmpstr(err->message, ==,
                    "dir/x.rpcs:2:3: unknown setting 'cores' in world (expected one of workers, "
                    "threads, rpc_timeout, seed, shutdown, time_limit)");
    g_clear_error(&err);

    sc = sim_scenario_parse_string(NULL, "on worker0 {\n  print 1\n", &err);
    g_assert_null(sc);
    g_assert_cmpstr(err->message, ==,
                    "<string>:3:1: expected '}' to close 'on' block opened at 1:1");
    g_clear_error(&err);

    sc = sim_scenario_parse_string("e.rpcs", "", &err);
    g_assert_null(sc);
    g_assert_cmpstr(err->message, ==,
                    "e.rpcs:1:1: no programs (a scenario needs at least one 'on WORKER { … }' "
                    "block)");
    g_clear_error(&err);

    /* NULL error pointer: no crash, no leak */
    g_assert_null(sim_scenario_parse_string("e.rpcs", "junk", NULL));
    sim_scenario_free(NULL);
}

static void
test_io_error(void)
{
    GError *err = NULL;
    ScScenario *sc = sim_scenario_parse_file("tests/malformed/does-not-exist.rpcs", &err);
    g_assert_null(sc);
    g_assert_error(err, SIM_ERROR, SIM_ERROR_IO);
    g_assert_true(g_str_has_prefix(err->message, "tests/malformed/does-not-exist.rpcs: "));
    g_error_free(err);
}

static void
test_names(void)
{
    const char *const *b = sim_scenario_builtin_names();
    guint n = g_strv_length((char **)b);
    g_assert_cmpuint(n, ==, 36); /* 19 RPC and value built-ins + 17 autograd ones */
    g_assert_true(g_strv_contains(b, "rpc_sync"));
    g_assert_true(g_strv_contains(b, "dist_backward"));
    g_assert_true(g_strv_contains(b, "param"));
    g_assert_true(g_strv_contains(b, "remote"));
    g_assert_true(g_strv_contains(b, "rref"));
    g_assert_true(g_strv_contains(b, "collect_all"));
    /* The autograd ones are the list's last 17, from param to the end. */
    const char *const *ag = sim_scenario_autograd_builtin_names();
    g_assert_cmpuint(g_strv_length((char **)ag), ==, 17);
    g_assert_true(ag == b + n - 17);
    g_assert_cmpstr(ag[0], ==, "param");
    g_assert_true(g_strv_contains(ag, "dist_backward"));
    g_assert_false(g_strv_contains(ag, "rpc_sync"));
    /* each name is a known built-in: the error is about arity, if anything */
    for (guint i = 0; i < n; i++) {
        char *text = g_strdup_printf("on worker0 { %s(1, 2, 3, 4, 5, 6, 7, 8, 9, 10) }", b[i]);
        GError *err = NULL;
        ScScenario *sc = sim_scenario_parse_string("t.rpcs", text, &err);
        if (sc == NULL) {
            g_assert_null(strstr(err->message, "unknown function"));
            g_error_free(err);
        }
        sim_scenario_free(sc);
        g_free(text);
    }
    const char *const *c = sim_scenario_counter_names();
    /* 9 agent counters + 6 RRef counts + 2 dist autograd counts */
    g_assert_cmpuint(g_strv_length((char **)c), ==, 17);
    g_assert_true(g_strv_contains(c, "num_autograd_contexts"));
    g_assert_true(g_strv_contains(c, "num_current_backward_passes"));
    for (guint i = 0; c[i] != NULL; i++) {
        char *text = g_strdup_printf("on worker0 {}\nexpect { counter worker0 %s >= 0 }", c[i]);
        sim_scenario_free(parse_ok(text));
        g_free(text);
    }
    const char *const *f = sim_scenario_fired_names();
    g_assert_cmpuint(g_strv_length((char **)f), ==, 11); /* incl. drop */
    for (guint i = 0; f[i] != NULL; i++) {
        char *text = g_strdup_printf("on worker0 {}\nexpect { fired %s == 0 }", f[i]);
        sim_scenario_free(parse_ok(text));
        g_free(text);
    }
    static const char *const types[] = {
        "RREF_FORK_REQUEST",
        "RREF_CHILD_ACCEPT",
        "RREF_USER_DELETE",
        "CLEANUP_AUTOGRAD_CONTEXT_REQ",
        "PYTHON_REMOTE_CALL",
        "SCRIPT_REMOTE_CALL",
        "PYTHON_CALL",
        "SCRIPT_CALL",
        "PYTHON_RREF_FETCH_CALL",
        "SCRIPT_RREF_FETCH_CALL",
    };
    for (guint i = 0; i < G_N_ELEMENTS(types); i++) {
        char *text = g_strdup_printf("faults { fail %s; delay %s by 0s }\non worker0 {}", types[i],
                                     types[i]);
        sim_scenario_free(parse_ok(text));
        g_free(text);
    }
}

static void
test_arity(void)
{
    parse_err("on worker0 { ones(1, 2, 3, 4, 5, 6, 7, 8, 9) }",
              "t.rpcs:1:14: ones() takes at most 8 arguments (9 given)");
    parse_err("on worker0 { rpc_sync(worker1) }",
              "rpc_sync() takes at least 2 arguments (1 given)");
    parse_err("on worker0 { len() }", "len() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { now(1) }", "now() takes no arguments (1 given)");
    parse_err("on worker0 { worker_info(1, 2) }",
              "worker_info() takes at most 1 argument (2 given)");
    parse_err("on worker0 { future().then() }", "then() takes at least 1 argument (0 given)");
    parse_err("on worker0 { future().set_exception(1, 2, 3) }",
              "set_exception() takes at most 2 arguments (3 given)");
    parse_err("on worker0 { future().wait(1) }", "wait() takes no arguments (1 given)");
    ScScenario *sc = parse_ok("on worker0 {\n"
                              "  ones(); zeros(1, 2, 3, 4, 5, 6, 7, 8); full(1, 2, 3, 4, 5, 6, 7, "
                              "8, 9)\n"
                              "  f = future(); f.set_exception(\"ValueError\", \"x\")\n"
                              "  f.set_exception(\"x\"); wait(f); collect_all(f, f, f)\n"
                              "}\n");
    sim_scenario_free(sc);
}

/* Error paths the corpus does not reach. */
static void
test_more_errors(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"on worker0 { barrier [worker1, worker1] }", "1:32: worker 'worker1' is listed twice"},
        {"on worker0 { barrier [] }", "1:22: an empty barrier list"},
        {"faults { fail SCRIPT_CALL, SCRIPT_CALL }\non worker0 {}",
         "1:28: message type 'SCRIPT_CALL' is listed twice"},
        {"faults { delay SCRIPT_CALL by 1s times 2 }\non worker0 {}",
         "1:34: 'times' applies to fail, not delay"},
        {"faults { fail SCRIPT_CALL by 1s }\non worker0 {}",
         "1:27: 'by' applies to delay, not fail"},
        {"faults { after 1 \"\" crash worker0 }\non worker0 {}", "1:18: empty trace record kind"},
        {"faults { after 1 rpc. crash worker0 }\non worker0 {}", "got 'worker0'"},
        {"faults { after 1 5 crash worker0 }\non worker0 {}", "expected a trace record kind"},
        {"on all, worker1 { }", "1:7: 'all' cannot be combined with worker names"},
        {"on worker0 { x = 1e999 }", "1:18: number '1e999' is out of range"},
        {"describe \"a\\\x01\"", "1:12: invalid escape in string (backslash, then byte 0x01)"},
        {"on worker0 { x = 'a' }", "unexpected character \"'\" (strings use double quotes)"},
        {"network { bandwidth 100000000000GB/s }\non worker0 {}", "bandwidth is too large"},
        {"on worker0 { sleep 0.00000000000012345678901234567h }", "not a whole number"},
        {"on worker0 { sleep 1e400ns }", "is too large"},
        {"world { workers [a, b, c, d, e, f, g, h, i, j] }\non k {}",
         "unknown worker 'k' (the world has 10 workers: a, b, c, d, e, f, …, j)"},
        {"world { workers 1000001 }\non worker0 {}", "workers must be between 1 and 1000000"},
        {"world { threads 0 }\non worker0 {}", "threads must be between 1 and 1000000 (got 0)"},
        {"world { seed 1.5 }\non worker0 {}", "seed needs a whole number, got '1.5'"},
        {"world { workers [a, 5] }\non a {}", "expected a worker name, got '5'"},
        {"world { workers [a b] }\non a {}", "expected ',' or ']' in the worker list, got 'b'"},
        {"world { workers [\"\"] }\non a {}", "invalid worker name '\"\"'"},
        {"world { workers [None] }\non a {}", "'None' is a reserved word and cannot name a worker"},
        {"world { 5 }\non worker0 {}", "expected a setting of world, got '5'"},
        {"network { 5 }\non worker0 {}", "expected a setting of network, got '5'"},
        {"network { link -> b {} }\non worker0 {}", "expected a worker name or '*', got '->'"},
        {"network { link a - b {} }\non worker0 {}",
         "expected '->' or '<->' after the first worker"},
        {"network { link * -> * { 5 } }\non worker0 {}", "expected a setting of the link, got '5'"},
        {"network { link * -> * { foo 1 } }\non worker0 {}", "unknown setting 'foo' in link"},
        {"network { latency 5 }\non worker0 {}", "latency needs a duration or a distribution"},
        {"network { latency uniform 1ms }\non worker0 {}",
         "expected '(' after the distribution name"},
        {"network { latency uniform(1ms 2ms) }\non worker0 {}", "expected ',' or ')' in uniform()"},
        {"network { latency uniform(1ms, 5) }\non worker0 {}",
         "this argument needs a duration with a unit"},
        {"faults { 5 }\non worker0 {}",
         "expected a fault (fail, delay, drop, at or after), got '5'"},
        {"faults { fail 5 }\non worker0 {}", "expected a message type (e.g. PYTHON_CALL), got '5'"},
        {"faults { at 1s heal all now }\non worker0 {}", "unexpected 'now' after at"},
        {"expect { 5 }\non worker0 {}", "expected an expectation, got '5'"},
        {"expect { counter worker0 }\non worker0 {}", "expected a counter name, got '}'"},
        {"expect { deadlock contains 5 }\non worker0 {}", "expected a string after 'contains'"},
        {"expect { messages == 9223372036854775808 }\non worker0 {}",
         "messages must be between 0 and 9223372036854775807"},
        {"5\non worker0 {}", "1:1: expected a section (describe, world, network, faults, on or "
                             "expect), got '5'"},
        {"on worker0 { expect error f.wait() kind 5 }", "expected an exception type after 'kind'"},
        {"on worker0 { expect error f.wait() contains x }", "expected a string after 'contains'"},
        {"on worker0 { repeat 2 as 5 {} }", "expected a variable name after 'as', got '5'"},
        {"on worker0 { parallel print 1 }", "expected '{' after 'parallel', got 'print'"},
        {"on worker0 { parallel { print 1 ",
         "expected '}' to close 'parallel' block opened at 1:14"},
        {"on worker0 { barrier [worker0 worker1] }",
         "expected ',' or ']' in the barrier's worker list"},
        {"on worker0 { x = f.(1) }", "expected a method name after '.', got '('"},
        {"on worker0 { x = ones(1 2) }",
         "expected ',' or ')' in the arguments of ones() opened at 1:22"},
        {"on worker0 { x = 5B }", "sizes, rates and percentages are only for network settings"},
        {"on worker0 { partition worker0 worker1 }",
         "expected '<->' or '->' after the first worker of "
         "'partition', got 'worker1'"},
        {"on worker0 {\n  x = 5 \"a very long string literal that will be cut short in the "
         "message\"\n}",
         "2:9: unexpected '\"a very long string literal that will be…' after assignment"},
        {"on worker0 { x = 1 } \xe2\x9c\x93", "1:22: unexpected byte 0xe2"},
        /* 40 bytes would split an é: the cut backs up to 39 */
        {"on worker0 { print 1 \"ééééééééééééééééééééé\" }",
         "unexpected '\"ééééééééééééééééééé…' after print"},
    };
    for (guint i = 0; i < G_N_ELEMENTS(cases); i++)
        parse_err(cases[i].text, cases[i].want);
    /* control bytes and UTF-8 are fine in comments */
    sim_scenario_free(parse_ok("on worker0 { x = 1 } # a\x01 ok\n# b\x7f café ✓\n"));
    /* a negative number is still a number without a unit */
    parse_err("on worker0 { sleep -5 }", "1:20: sleep needs a duration with a unit");
    sim_scenario_free(parse_ok("on worker0 { sleep -5ms; parallel\n{ print 1 } }"));
    /* 0.0000000005 minutes is exactly 30 ns */
    g_assert_cmpint(sleep_ns("0.0000000005m"), ==, 30);
}

/* --- the malformed corpus ------------------------------------------------------- */

static gint
cmp_names(gconstpointer a, gconstpointer b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
test_malformed_corpus(void)
{
    const char *dir_path = "tests/malformed";
    GError *err = NULL;
    GDir *dir = g_dir_open(dir_path, 0, &err);
    g_assert_no_error(err);
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    const char *n;
    while ((n = g_dir_read_name(dir)) != NULL)
        if (g_str_has_suffix(n, ".rpcs"))
            g_ptr_array_add(names, g_strdup(n));
    g_dir_close(dir);
    g_ptr_array_sort(names, cmp_names);
    g_assert_cmpuint(names->len, >=, 40);
    for (guint i = 0; i < names->len; i++) {
        char *path = g_build_filename(dir_path, (char *)g_ptr_array_index(names, i), NULL);
        char *text = NULL;
        gsize len = 0;
        g_assert_true(g_file_get_contents(path, &text, &len, NULL));
        const char *marker = "# error: ";
        g_assert_true(g_str_has_prefix(text, marker));
        const char *eol = strchr(text, '\n');
        g_assert_nonnull(eol);
        char *want = g_strndup(text + strlen(marker), (gsize)(eol - text) - strlen(marker));
        g_strchomp(want);

        ScScenario *sc = sim_scenario_parse_file(path, &err);
        if (sc != NULL)
            g_error("%s parsed, but should fail with \"%s\"", path, want);
        g_assert_error(err, SIM_ERROR, SIM_ERROR_PARSE);
        char *prefix = g_strconcat(path, ":", NULL);
        if (!g_str_has_prefix(err->message, prefix) || strstr(err->message, want) == NULL)
            g_error("%s: error \"%s\" does not contain \"%s\"", path, err->message, want);
        g_test_message("%s: %s", path, err->message);
        g_clear_error(&err);
        g_free(prefix);
        g_free(want);
        g_free(text);
        g_free(path);
    }
    g_ptr_array_unref(names);
}

/* --- autograd ---------------------------------------------------------------- */

/* Line numbers matter: the test checks locations. */
static const char autograd_text[] =
    "on worker0 {\n"                                                        /* 1 */
    "  w = param(full(2.0, 2, 2)); x = detach(w)\n"                         /* 2 */
    "  y = sigmoid(relu(matmul(x, w))) + exp(w) * pow(w, 2) / 3\n"          /* 3 */
    "  backward(sum(y), retain=True); backward(mean(y))\n"                  /* 4 */
    "  expect grad(w) != None and requires_grad(w)\n"                       /* 5 */
    "  dist_autograd as ctx {\n"                                            /* 6 */
    "    r = rpc_sync(worker1, matmul, w, w)\n"                             /* 7 */
    "    dist_backward(ctx, sum(r), retain=False)\n"                        /* 8 */
    "    dist_backward(ctx, [sum(r)])\n"                                    /* 9 */
    "    expect dist_grad(ctx, w) != None and dist_grads_count(ctx) == 1\n" /* 10 */
    "    dist_sgd_step(ctx, [rref(w)], 0.1)\n"                              /* 11 */
    "  }\n"                                                                 /* 12 */
    "  dist_autograd as ctx\n"                                              /* 13 */
    "  {\n"                                                                 /* 14 */
    "    set_simulate_backward_error(False)\n"                              /* 15 */
    "    expect counter(\"num_autograd_contexts\") == 1\n"                  /* 16 */
    "  }; dist_autograd as c2 {}\n"                                         /* 17 */
    "}\n"                                                                   /* 18 */
    "expect { counter worker1 num_autograd_contexts == 0\n"                 /* 19 */
    "  counter worker0 num_current_backward_passes <= 0 }\n";               /* 20 */

static void
test_autograd(void)
{
    ScScenario *sc = parse_ok(autograd_text);
    const ScProgram *prog = g_ptr_array_index(sc->programs, 0);
    g_assert_cmpuint(prog->body->len, ==, 9);

    /* backward(sum(y), retain=True): one kwarg */
    const ScStmt *s = stmt_at(prog->body, 3);
    g_assert_cmpint(s->kind, ==, SC_STMT_EXPR);
    g_assert_cmpstr(s->u.expr->u.call.name, ==, "backward");
    g_assert_cmpuint(s->u.expr->u.call.kwargs->len, ==, 1);
    const ScKwarg *k = g_ptr_array_index(s->u.expr->u.call.kwargs, 0);
    g_assert_cmpstr(k->name, ==, "retain");
    g_assert_cmpint(k->value->kind, ==, SC_EXPR_BOOL);
    assert_loc(k->value->loc, 4, 27);

    /* the context block: a variable, resolved inside, and its body */
    s = stmt_at(prog->body, 6);
    g_assert_cmpint(s->kind, ==, SC_STMT_DIST_CONTEXT);
    assert_loc(s->loc, 6, 3);
    g_assert_cmpstr(s->u.ctx.var, ==, "ctx");
    g_assert_cmpuint(s->u.ctx.body->len, ==, 5);
    const ScStmt *in = stmt_at(s->u.ctx.body, 0);
    g_assert_cmpint(in->kind, ==, SC_STMT_ASSIGN);
    const ScExpr *call = in->u.assign.value;
    assert_name(arg_at(call, 0), "worker1", SC_REF_WORKER, 1);
    assert_name(arg_at(call, 1), "matmul", SC_REF_FUNC, -1);
    in = stmt_at(s->u.ctx.body, 1);
    g_assert_cmpstr(in->u.expr->u.call.name, ==, "dist_backward");
    assert_name(arg_at(in->u.expr, 0), "ctx", SC_REF_VAR, -1);
    in = stmt_at(s->u.ctx.body, 4);
    g_assert_cmpstr(in->u.expr->u.call.name, ==, "dist_sgd_step");
    g_assert_cmpuint(in->u.expr->u.call.args->len, ==, 3);

    /* '{' on the next line; an empty block after ';' */
    s = stmt_at(prog->body, 7);
    g_assert_cmpint(s->kind, ==, SC_STMT_DIST_CONTEXT);
    g_assert_cmpuint(s->u.ctx.body->len, ==, 2);
    s = stmt_at(prog->body, 8);
    g_assert_cmpint(s->kind, ==, SC_STMT_DIST_CONTEXT);
    g_assert_cmpstr(s->u.ctx.var, ==, "c2");
    g_assert_cmpuint(s->u.ctx.body->len, ==, 0);

    const ScEndExpect *x = g_ptr_array_index(sc->expects, 0);
    g_assert_cmpint(x->kind, ==, SC_END_COUNTER);
    g_assert_cmpint(x->worker, ==, 1);
    g_assert_cmpstr(x->name, ==, "num_autograd_contexts");
    x = g_ptr_array_index(sc->expects, 1);
    g_assert_cmpstr(x->name, ==, "num_current_backward_passes");
    g_assert_cmpint(x->cmp, ==, SC_CMP_LE);
    sim_scenario_free(sc);

    /* the context variable is an ordinary variable from its block on */
    sc = parse_ok("on worker0 { dist_autograd as c { }\n print c }");
    s = stmt_at(((ScProgram *)g_ptr_array_index(sc->programs, 0))->body, 1);
    assert_name(s->u.expr, "c", SC_REF_VAR, -1);
    sim_scenario_free(sc);
    /* built-in names are not reserved: they may name variables */
    sim_scenario_free(parse_ok("on worker0 { grad = 1; sum = grad + 1; param = sum }"));

    /* arity and keyword arguments, checked before the run */
    parse_err("on worker0 { param() }", "t.rpcs:1:14: param() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { param(1, 2) }", "param() takes exactly 1 argument (2 given)");
    parse_err("on worker0 { detach() }", "detach() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { matmul(1) }", "matmul() takes exactly 2 arguments (1 given)");
    parse_err("on worker0 { pow(1) }", "pow() takes exactly 2 arguments (1 given)");
    parse_err("on worker0 { sum(1, 2) }", "sum() takes exactly 1 argument (2 given)");
    parse_err("on worker0 { mean() }", "mean() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { relu(1, 2) }", "relu() takes exactly 1 argument (2 given)");
    parse_err("on worker0 { sigmoid() }", "sigmoid() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { exp() }", "exp() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { grad() }", "grad() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { requires_grad(1, 2) }",
              "requires_grad() takes exactly 1 argument (2 given)");
    parse_err("on worker0 { backward() }", "backward() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { dist_backward(1) }",
              "dist_backward() takes exactly 2 arguments (1 given)");
    parse_err("on worker0 { dist_grad(1, 2, 3) }",
              "dist_grad() takes exactly 2 arguments (3 given)");
    parse_err("on worker0 { dist_grads_count() }",
              "dist_grads_count() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { dist_sgd_step(1, 2) }",
              "dist_sgd_step() takes exactly 3 arguments (2 given)");
    parse_err("on worker0 { set_simulate_backward_error() }",
              "set_simulate_backward_error() takes exactly 1 argument (0 given)");
    parse_err("on worker0 { backward(1, retain_graph=True) }",
              "t.rpcs:1:39: backward() got an unexpected keyword argument 'retain_graph' "
              "(only retain=)");
    parse_err("on worker0 { dist_backward(1, 2, timeout=1s) }",
              "dist_backward() got an unexpected keyword argument 'timeout' (only retain=)");
    parse_err("on worker0 { backward(1, retain=True, retain=False) }",
              "duplicate keyword argument 'retain'");
    parse_err("on worker0 { param(ones(1), requires_grad=True) }",
              "param() takes no keyword arguments (got 'requires_grad=')");
    parse_err("on worker0 { grad(1).backward() }", "unknown method 'backward'");
    parse_err("on worker0 { dist_grad(ctx, 1) }", "undefined variable 'ctx'");

    /* the block's form */
    parse_err("on worker0 { dist_autograd { } }",
              "t.rpcs:1:28: expected 'as NAME' after 'dist_autograd' (dist_autograd as ctx { … }), "
              "got '{'");
    parse_err("on worker0 { dist_autograd ctx { } }", "expected 'as NAME' after 'dist_autograd'");
    parse_err("on worker0 { dist_autograd as { } }",
              "expected a variable name after 'dist_autograd as', got '{'");
    parse_err("on worker0 { dist_autograd as 1 { } }",
              "expected a variable name after 'dist_autograd as'");
    parse_err("on worker0 { dist_autograd as sleep { } }",
              "'sleep' is a reserved word and cannot be a variable");
    parse_err("on worker0 { dist_autograd as c print 1 }",
              "expected '{' after 'dist_autograd', got 'print'");
    parse_err("on worker0 {\n dist_autograd as c {\n print 1\n}",
              "t.rpcs:4:2: expected '}' to close 'on' block opened at 1:1");
    parse_err("on worker0 { dist_autograd as c { print 1 }",
              "expected '}' to close 'on' block opened at 1:1");
    parse_err("on worker0 { dist_autograd as c { } print 1 }",
              "t.rpcs:1:37: unexpected 'print' after dist_autograd (expected a newline or ';')");
    parse_err("on worker0 { dist_autograd = 1 }",
              "expected 'as NAME' after 'dist_autograd' (dist_autograd as ctx { … }), got '='");
    parse_err("on worker0 { x = dist_autograd }", "undefined variable 'dist_autograd'");
    parse_err("world { workers [dist_autograd] }\non dist_autograd { }",
              "'dist_autograd' is a reserved word");
    parse_err("on worker0 { print counter(\"num_autograd_context\") }",
              "unknown counter 'num_autograd_context'");
    parse_err("on worker0 {}\nexpect { counter worker0 num_backward_passes == 0 }",
              "unknown counter 'num_backward_passes'");
    /* every truncation of the autograd text fails cleanly or parses */
    for (gsize cut = 0; cut <= strlen(autograd_text); cut++)
        parse_any(autograd_text, cut);
}

/* --- robustness ------------------------------------------------------------------ */

static void
test_deep_nesting(void)
{
    const guint deep = 10000;
    static const struct {
        const char *open, *middle, *close;
    } shapes[] = {
        {"(", "1", ")"},
        {"[", "1", "]"},
        {"-", "1", ""},
        {"not ", "True", ""},
        {"len(", "1", ")"},
        {"repeat 1 { ", "print 1", " }"},
        {"parallel { { ", "print 1", " } }"},
        {"dist_autograd as c { ", "print 1", " }"},
        {"1 + ", "1", ""},
        {"f.then(add, ", "1", ")"},
        {"", "future()", ".wait()"},
    };
    for (guint s = 0; s < G_N_ELEMENTS(shapes); s++) {
        GString *t = g_string_new("on worker0 {\n f = future()\n x = ");
        if (strncmp(shapes[s].open, "repeat", 6) == 0 ||
            strncmp(shapes[s].open, "parallel", 8) == 0 ||
            strncmp(shapes[s].open, "dist_autograd", 13) == 0)
            g_string_truncate(t, strlen("on worker0 {\n f = future()\n "));
        for (guint i = 0; i < deep; i++)
            g_string_append(t, shapes[s].open);
        g_string_append(t, shapes[s].middle);
        for (guint i = 0; i < deep; i++)
            g_string_append(t, shapes[s].close);
        g_string_append(t, "\n}\n");
        parse_err(t->str, "nesting too deep (more than 64 levels)");
        g_string_free(t, TRUE);
    }
    /* 60 levels are fine */
    GString *t = g_string_new("on worker0 { x = ");
    for (guint i = 0; i < 60; i++)
        g_string_append(t, "(");
    g_string_append(t, "1");
    for (guint i = 0; i < 60; i++)
        g_string_append(t, ")");
    g_string_append(t, " }");
    sim_scenario_free(parse_ok(t->str));
    g_string_free(t, TRUE);
}

static void
test_binary_junk(void)
{
    /* NUL bytes reach the lexer only through files */
    char *path = NULL;
    int fd = g_file_open_tmp("scenario-XXXXXX.rpcs", &path, NULL);
    g_assert_cmpint(fd, >=, 0);
    g_close(fd, NULL);
    static const char junk[] = "on worker0 {\n  print \"a\0b\"\n}\n";
    g_assert_true(g_file_set_contents(path, junk, sizeof junk - 1, NULL));
    GError *err = NULL;
    g_assert_null(sim_scenario_parse_file(path, &err));
    char *want = g_strdup_printf("%s:2:11: unexpected NUL byte", path);
    g_assert_cmpstr(err->message, ==, want);
    g_clear_error(&err);
    g_free(want);
    static const char in_comment[] = "on worker0 { print 1 } # a\0b\n";
    g_assert_true(g_file_set_contents(path, in_comment, sizeof in_comment - 1, NULL));
    g_assert_null(sim_scenario_parse_file(path, &err));
    want = g_strdup_printf("%s:1:27: unexpected NUL byte", path);
    g_assert_cmpstr(err->message, ==, want);
    g_clear_error(&err);
    g_free(want);

    guint8 bytes[4096];
    guint32 x = 12345;
    for (gsize i = 0; i < sizeof bytes; i++) {
        x = x * 1664525u + 1013904223u;
        bytes[i] = (guint8)(x >> 24);
    }
    g_assert_true(g_file_set_contents(path, (const char *)bytes, sizeof bytes, NULL));
    g_assert_null(sim_scenario_parse_file(path, &err));
    g_assert_error(err, SIM_ERROR, SIM_ERROR_PARSE);
    g_clear_error(&err);
    g_unlink(path);
    g_free(path);
}

static void
test_truncations(void)
{
    const gsize n = strlen(full_text);
    for (gsize cut = 0; cut <= n; cut++)
        parse_any(full_text, cut);
}

/* Numerical Recipes' LCG: deterministic, no ambient randomness. */
static guint32
lcg(guint32 *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

/* Random edits of base: none may crash or leak. */
static void
mutate(const char *base, guint rounds, guint32 st)
{
    /* bytes that make interesting tokens when dropped in */
    static const char alphabet[] = "{}()[]\"\\#\n;,.=<>-+*/%_0123456789eEsmunhB:aZ \t\xc3\xff";
    const gsize n = strlen(base);
    GString *buf = g_string_new(NULL);
    for (guint r = 0; r < rounds; r++) {
        g_string_assign(buf, base);
        guint edits = 1 + lcg(&st) % 4;
        for (guint e = 0; e < edits && buf->len > 0; e++) {
            gsize at = lcg(&st) % buf->len;
            char c = alphabet[lcg(&st) % (sizeof alphabet - 1)];
            switch (lcg(&st) % 4) {
            case 0: /* replace a byte */
                buf->str[at] = c;
                break;
            case 1: /* insert one */
                g_string_insert_c(buf, (gssize)at, c);
                break;
            case 2: { /* delete a run */
                gsize len = 1 + lcg(&st) % 8;
                g_string_erase(buf, (gssize)at, (gssize)MIN(buf->len - at, len));
                break;
            }
            default: { /* copy a slice elsewhere */
                gsize from = lcg(&st) % n, len = lcg(&st) % 24;
                len = MIN(n - from, len);
                g_string_insert_len(buf, (gssize)at, base + from, (gssize)len);
                break;
            }
            }
        }
        parse_any(buf->str, buf->len);
    }
    g_string_free(buf, TRUE);
}

static void
test_mutations(void)
{
    const gboolean vg = g_getenv("RPCSIM_UNDER_VALGRIND") != NULL;
    mutate(full_text, vg ? 400 : 4000, 20240611);
    mutate(autograd_text, vg ? 200 : 2000, 7);
}

/* Every ```rpcs block of the reference is a complete, valid scenario. */
static void
test_docs_examples(void)
{
    char *doc = NULL;
    if (!g_file_get_contents("docs/scenario-language.md", &doc, NULL, NULL)) {
        g_test_skip("docs/scenario-language.md not found (run from the repository root)");
        return;
    }
    guint blocks = 0;
    const char *p = doc;
    while ((p = strstr(p, "```rpcs\n")) != NULL) {
        p += strlen("```rpcs\n");
        const char *end = strstr(p, "```");
        g_assert_nonnull(end);
        char *text = g_strndup(p, (gsize)(end - p));
        char *name = g_strdup_printf("docs/scenario-language.md#block%u", ++blocks);
        GError *err = NULL;
        ScScenario *sc = sim_scenario_parse_string(name, text, &err);
        if (sc == NULL)
            g_error("%s: %s\n%s", name, err->message, text);
        sim_scenario_free(sc);
        g_free(name);
        g_free(text);
        p = end + 3;
    }
    g_assert_cmpuint(blocks, >=, 5);
    g_free(doc);
}

int
main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/scenario-parse/full-file", test_full);
    g_test_add_func("/scenario-parse/defaults", test_defaults);
    g_test_add_func("/scenario-parse/deadlock-expectations", test_deadlock_expectations);
    g_test_add_func("/scenario-parse/durations", test_durations);
    g_test_add_func("/scenario-parse/network-values", test_network_values);
    g_test_add_func("/scenario-parse/strings", test_strings);
    g_test_add_func("/scenario-parse/expressions", test_expressions);
    g_test_add_func("/scenario-parse/resolution", test_resolution);
    g_test_add_func("/scenario-parse/arity", test_arity);
    g_test_add_func("/scenario-parse/error-format", test_error_format);
    g_test_add_func("/scenario-parse/io-error", test_io_error);
    g_test_add_func("/scenario-parse/names", test_names);
    g_test_add_func("/scenario-parse/more-errors", test_more_errors);
    g_test_add_func("/scenario-parse/autograd", test_autograd);
    g_test_add_func("/scenario-parse/malformed-corpus", test_malformed_corpus);
    g_test_add_func("/scenario-parse/deep-nesting", test_deep_nesting);
    g_test_add_func("/scenario-parse/binary-junk", test_binary_junk);
    g_test_add_func("/scenario-parse/every-truncation", test_truncations);
    g_test_add_func("/scenario-parse/random-mutations", test_mutations);
    g_test_add_func("/scenario-parse/docs-examples", test_docs_examples);
    return g_test_run();
}
