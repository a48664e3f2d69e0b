# Thin wrapper over deploy/install-deps.sh, CMake presets and CTest. Every target installs what is
# missing first, so `make demo` and `make test` work on a fresh Debian 12 machine.
PRESET    ?= release
BUILD_DIR := build/$(PRESET)
JOBS      ?= $(shell nproc)

.PHONY: all deps configure build test test-asan demo bench format clean

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

# ASan + UBSan (preset asan, build/asan) over the unit and fuzz tests of the parts that face the
# network: the coordinator (HTTP, agents), the wire protocol, common (config loader) and the fuzz
# replays. The model/kernel/weights unit tests are left out to keep CI under 20 minutes (figures in
# docs/security.md).
ASAN_TESTS := tandem_unit_common tandem_unit_wire tandem_unit_coordinator \
              tandem_fuzz_config tandem_fuzz_wire tandem_fuzz_http
test-asan: deps
	@cmake --preset asan >/dev/null
	@cmake --build build/asan -j $(JOBS) --target tandem_unit_common tandem_unit_wire \
	    tandem_unit_coordinator tandem_fuzz_config_replay tandem_fuzz_wire_replay \
	    tandem_fuzz_http_replay
	@ctest --test-dir build/asan --output-on-failure --timeout 600 -j $(JOBS) -L 'unit|fuzz' \
	    -R '^($(subst $(eval) ,|,$(strip $(ASAN_TESTS))))$$'

demo: build
	@deploy/demo.sh $(BUILD_DIR)

bench: build
	@deploy/bench.sh $(BUILD_DIR)

format:
	@git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	@rm -rf build
