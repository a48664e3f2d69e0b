# Thin wrapper over deploy/install-deps.sh, CMake presets and CTest. Every target installs what is
# missing first, so `make demo` and `make test` work on a fresh Debian 12 machine.
PRESET    ?= release
BUILD_DIR := build/$(PRESET)
JOBS      ?= $(shell nproc)

.PHONY: all deps configure build test test-asan test-tsan demo bench format clean

all: build

deps:
	@deploy/install-deps.sh

configure: deps
	@cmake --preset $(PRESET) >/dev/null

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

# ASan + UBSan (preset asan: libraries -O1 -g1, test code -O0, build/asan) over unit and fuzz
# suites; .ci/run runs it after `make test` (docs/security.md, "Sanitizers"). ASAN_TESTS picks them:
#   net  the parts that face the network: common (config loader), the wire protocol, the
#        coordinator (HTTP, agents), CURVE (keys, the ZAP handler) and the three fuzz replays;
#   ci   (the default, what CI runs) net plus the weight plane (UCX), the kernels, the KV kernels,
#        the tokenizer, monitoring and the node agent: 13 of the 19 suites, for about 850
#        CPU-seconds of building, which keeps CI near 18 minutes on 2 cores;
#   all  every unit and fuzz suite (not the Python ones): also the CLI, the model, the KV model,
#        RL, the text task and the runtime, about 1380 CPU-seconds, which would take CI past 20.
ASAN_NET   := tandem_unit_common tandem_unit_wire tandem_unit_coordinator tandem_unit_curve
ASAN_CI    := $(ASAN_NET) tandem_unit_weights tandem_unit_kernels tandem_unit_kv_kernels \
              tandem_unit_tokenizer tandem_unit_monitoring tandem_unit_agent
ASAN_ALL   := $(ASAN_CI) tandem_unit_cli tandem_unit_model tandem_unit_model_kv tandem_unit_rl \
              tandem_unit_text_task tandem_unit_runtime
ASAN_FUZZ  := tandem_fuzz_config tandem_fuzz_wire tandem_fuzz_http
ASAN_TESTS ?= ci
ifeq ($(ASAN_TESTS),all)
ASAN_UNIT  := $(ASAN_ALL)
else ifeq ($(ASAN_TESTS),net)
ASAN_UNIT  := $(ASAN_NET)
else ifeq ($(ASAN_TESTS),ci)
ASAN_UNIT  := $(ASAN_CI)
else
$(error ASAN_TESTS=$(ASAN_TESTS): use net, ci or all)
endif
ASAN_BUILD := $(ASAN_UNIT) $(addsuffix _replay,$(ASAN_FUZZ))
ASAN_RUN   := -R '^($(subst $(eval) ,|,$(strip $(ASAN_UNIT) $(ASAN_FUZZ))))$$'
test-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build build/asan -j $(JOBS) --target $(ASAN_BUILD)
	@ctest --test-dir build/asan --output-on-failure --timeout 600 -j $(JOBS) -L 'unit|fuzz' $(ASAN_RUN)

# ThreadSanitizer over the integration label (preset tsan, build/tsan; not part of CI: a full
# build plus about 12 minutes of tests). Debian's UCX and libzmq are not instrumented: UCX's
# memory hooks crash under TSan, so they are turned off, and reports through those libraries are
# suppressed (tests/sanitizers/tsan.supp). Integration tests use fixed ports: nothing else may run
# a cluster meanwhile.
test-tsan: deps
	@cmake --preset tsan >/dev/null
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
