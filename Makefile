# rpcsim — one plain, non-recursive Makefile.
#
#   make            build build/rpcsim, the libraries, tests and benches
#   make demo       install what is missing, run the default scenario
#   make check      install what is missing, run the whole suite (unit tests,
#                   scenarios, valgrind, lint); ends with "N passed, N failed"
#   make test       unit tests, scenarios, CLI (no valgrind)   make check-valgrind   memcheck only
#   make coverage   gcovr HTML in reports/coverage/
#   make bench      benchmarks (print figures, assert nothing)
#   make lint       determinism/layering checks and clang-format
#
# Objects go in build/ (build/cov/ for the coverage build).  Flags from
# pkg-config are deferred ('=' not ':='), so `make deps` can install GLib in
# the same invocation before anything is compiled.

CC      ?= cc
O       ?= build
OPT     ?= -O2
PKGS     = glib-2.0
GLIB_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
GLIB_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
WARN     = -Wall -Wextra -Wstrict-prototypes -Wshadow -Wno-unused-parameter -Werror
# Link-time optimisation: the hot path crosses many small modules (message,
# codec, value, future, agent; kernel, evq, net); inlining across them is
# worth ~20% of a simulated round trip (docs/performance.md).  `make LTO=`
# builds without it; the coverage build sets its own CFLAGS (no LTO).
LTO     ?= -flto=auto
CFLAGS  ?= $(OPT) -g $(LTO)
ALL_CFLAGS = -std=c11 -D_DEFAULT_SOURCE $(WARN) $(CFLAGS) -I. $(GLIB_CFLAGS) -MMD -MP
LDLIBS   = $(GLIB_LIBS) -lm

CORE_SRC := $(wildcard core/*.c)
SIM_SRC  := $(filter-out sim/main.c,$(wildcard sim/*.c)) $(wildcard sim/*.S)
TEST_SRC := $(wildcard tests/test-*.c)
BENCH_SRC:= $(wildcard bench/bench-*.c)
TESTLIB_SRC := $(wildcard tests/lib/*.c)

obj = $(patsubst %.S,$(O)/%.o,$(patsubst %.c,$(O)/%.o,$(1)))

CORE_OBJ := $(call obj,$(CORE_SRC))
SIM_OBJ  := $(call obj,$(SIM_SRC))
TESTLIB_OBJ := $(call obj,$(TESTLIB_SRC))
TESTS    := $(patsubst tests/%.c,$(O)/tests/%,$(TEST_SRC))
BENCHES  := $(patsubst bench/%.c,$(O)/bench/%,$(BENCH_SRC))
LIBS     := $(O)/libsim.a $(O)/libcore.a

.PHONY: all demo check test check-valgrind check-scenarios coverage bench lint \
        format clean deps
.DEFAULT_GOAL := all

all: $(O)/rpcsim $(TESTS) $(BENCHES)

$(O)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/%.o: %.S
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(O)/libcore.a: $(CORE_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(O)/libsim.a: $(SIM_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(O)/rpcsim: $(O)/sim/main.o $(LIBS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(O)/tests/%: $(O)/tests/%.o $(TESTLIB_OBJ) $(LIBS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(O)/bench/%: $(O)/bench/%.o $(LIBS)
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

# --- setup -----------------------------------------------------------------
# Installs what a fresh Debian machine lacks; a no-op when all is present.
deps:
	@sh .ci/deps.sh

# --- the two README commands ------------------------------------------------
NPROC := $(shell nproc 2>/dev/null || echo 1)

demo: deps
	@$(MAKE) --no-print-directory -j$(NPROC) $(O)/rpcsim
	$(O)/rpcsim run scenarios/default.rpcs

check: deps
	@$(MAKE) --no-print-directory -j$(NPROC) all
	@sh tests/run-suite.sh $(O) all

# --- parts of the suite -------------------------------------------------------
test: all
	@sh tests/run-suite.sh $(O) fast

check-valgrind: all
	@sh tests/run-suite.sh $(O) valgrind

check-scenarios: all
	@sh tests/run-suite.sh $(O) scenarios

bench: $(BENCHES) $(O)/rpcsim
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done
	@sh bench/sweep-bench.sh $(O)
	@sh bench/rpc-callgrind.sh $(O)

coverage:
	@$(MAKE) --no-print-directory O=build/cov OPT=-O0 \
	  CFLAGS="-O0 -g --coverage" all
	@find build/cov -name '*.gcda' -delete
	@sh tests/run-suite.sh build/cov fast >/dev/null || true
	@mkdir -p reports/coverage
	gcovr --root . --object-directory build/cov --filter 'core/' --filter 'sim/' \
	  --html-details reports/coverage/index.html --print-summary \
	  --txt reports/coverage/summary.txt
	@cat reports/coverage/summary.txt | tail -n 5

lint:
	@sh .ci/lint.sh

format:
	clang-format -i core/*.[ch] sim/*.[ch] tests/*.c tests/lib/*.[ch] bench/*.c

clean:
	rm -rf build

-include $(shell find $(O) -name '*.d' 2>/dev/null)
