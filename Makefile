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

# ASan + UBSan (preset asan: -O1 -g1, build/asan) over the unit and fuzz tests of the parts that
# face the network: the coordinator (HTTP, agents), the wire protocol, common (config loader),
# CURVE (keys, the ZAP handler) and the fuzz replays; .ci/run runs it after `make test`. The other unit suites (model, kernels,
# weights, RL, tokenizer, runtime, agent) pass under the same preset too but would add about 550 s
# of building on 2 cores, past the 20-minute CI budget: ASAN_TESTS=all builds and runs every unit
# and fuzz suite (docs/security.md, "Sanitizers").
ASAN_NET   := tandem_unit_common tandem_unit_wire tandem_unit_coordinator tandem_unit_curve \
              tandem_fuzz_config tandem_fuzz_wire tandem_fuzz_http
ASAN_TESTS ?= net
ifeq ($(ASAN_TESTS),all)
ASAN_BUILD := tandem_unit_common tandem_unit_cli tandem_unit_curve tandem_unit_kernels tandem_unit_kv_kernels \
              tandem_unit_weights tandem_unit_wire tandem_unit_coordinator tandem_unit_monitoring \
              tandem_unit_model tandem_unit_model_kv tandem_unit_rl tandem_unit_text_task \
              tandem_unit_runtime tandem_unit_tokenizer tandem_unit_agent \
              tandem_fuzz_config_replay tandem_fuzz_wire_replay tandem_fuzz_http_replay
ASAN_RUN   := -E '^tandem_python_'
else
ASAN_BUILD := tandem_unit_common tandem_unit_wire tandem_unit_coordinator tandem_unit_curve \
              tandem_fuzz_config_replay tandem_fuzz_wire_replay tandem_fuzz_http_replay
ASAN_RUN   := -R '^($(subst $(eval) ,|,$(strip $(ASAN_NET))))$$'
endif
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
