# Thin wrapper over deploy/install-deps.sh, CMake presets and CTest. Every target installs what is
# missing first, so `make demo` and `make test` work on a fresh Debian 12 machine.
PRESET    ?= release
BUILD_DIR := build/$(PRESET)
JOBS      ?= $(shell nproc)

.PHONY: all deps configure build test asan-build test-asan test-tsan demo bench format clean

all: build

deps:
	@deploy/install-deps.sh

# Configures once (and again when CMakePresets.json changes); afterwards ninja re-runs CMake itself
# when a CMakeLists.txt changes. Not every time: CMake's second configure of a fresh build orders
# libzmq's pkg-config flags (-isystem /usr/include/mit-krb5) differently from its first, so a
# second `cmake --preset` recompiled about 100 files for nothing.
CONFIGURE = if [ ! -f build/$(1)/build.ninja ] || [ ! -f build/$(1)/.preset-stamp ] || \
               [ CMakePresets.json -nt build/$(1)/.preset-stamp ]; \
            then cmake --preset $(1) >/dev/null && touch build/$(1)/.preset-stamp; fi

configure: deps
	@$(call CONFIGURE,$(PRESET))

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# All tests but the `gpu` label when this machine has no NVIDIA GPU.
test: build
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    exclude=""; \
	else \
	    echo "make test: no GPU on this machine, running every label but gpu"; exclude="-LE gpu"; \
	fi; \
	ctest --test-dir $(BUILD_DIR) --output-on-failure --timeout 600 -j $(JOBS) $$exclude

# ASan + UBSan (preset asan: a unity build at -O0 -g1, the test-hot libraries at -O1, build/asan)
# over the unit and fuzz suites (not the Python ones); .ci/run builds it beside `make test` and runs
# it after (docs/security.md, "Sanitizers"). ASAN_TESTS picks them:
#   all  (the default, what CI runs) every unit suite and fuzz replay: the target
#        tandem_unit_and_fuzz_suites (tests/CMakeLists.txt) collects every suite labelled unit, so
#        a new suite is in it without a list to update;
#   net  the network-facing ones only (the config loader, the wire protocol, the coordinator: HTTP
#        and agents, CURVE), for a quicker check.
ASAN_NET   := tandem_unit_common tandem_unit_wire tandem_unit_coordinator tandem_unit_curve
ASAN_FUZZ  := tandem_fuzz_config tandem_fuzz_wire tandem_fuzz_http
ASAN_TESTS ?= all
ifeq ($(ASAN_TESTS),all)
ASAN_BUILD := tandem_unit_and_fuzz_suites
ASAN_RUN   := -E '^tandem_python_'
else ifeq ($(ASAN_TESTS),net)
ASAN_BUILD := $(ASAN_NET) $(addsuffix _replay,$(ASAN_FUZZ))
ASAN_RUN   := -R '^($(subst $(eval) ,|,$(strip $(ASAN_NET) $(ASAN_FUZZ))))$$'
else
$(error ASAN_TESTS=$(ASAN_TESTS): use all or net)
endif

# Builds what test-asan runs, without running it (.ci/run starts it early, see there).
asan-build: deps
	@$(call CONFIGURE,asan)
	@cmake --build build/asan -j $(JOBS) --target $(ASAN_BUILD)

test-asan: asan-build
	@ctest --test-dir build/asan --output-on-failure --timeout 600 -j $(JOBS) -L 'unit|fuzz' $(ASAN_RUN)

# ThreadSanitizer over the integration label (preset tsan, build/tsan; not part of CI: a full
# build plus about 12 minutes of tests). Debian's UCX and libzmq are not instrumented: UCX's
# memory hooks crash under TSan, so they are turned off, and reports through those libraries are
# suppressed (tests/sanitizers/tsan.supp). Integration tests use fixed ports: nothing else may run
# a cluster meanwhile.
test-tsan: deps
	@$(call CONFIGURE,tsan)
	@cmake --build build/tsan -j $(JOBS)
	@UCX_MEM_MMAP_HOOK_MODE=none UCX_MEM_MALLOC_HOOKS=no UCX_MEM_EVENTS=no \
	    TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/sanitizers/tsan.supp" \
	    ctest --test-dir build/tsan --output-on-failure --timeout 900 -L integration

demo: build
	@deploy/demo.sh $(BUILD_DIR)

bench: build
	@deploy/bench.sh $(BUILD_DIR)

format:
	@git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	@rm -rf build
