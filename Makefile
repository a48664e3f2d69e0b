# Thin wrapper over deploy/install-deps.sh, CMake presets and CTest. Every target installs what is
# missing first, so `make demo` and `make test` work on a fresh Debian 12 machine.
PRESET    ?= release
BUILD_DIR := build/$(PRESET)
JOBS      ?= $(shell nproc)

.PHONY: all deps configure build test demo bench format clean

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

demo: build
	@deploy/demo.sh $(BUILD_DIR)

bench: build
	@deploy/bench.sh $(BUILD_DIR)

format:
	@git ls-files '*.cc' '*.h' '*.cu' '*.cuh' | xargs clang-format -i

clean:
	@rm -rf build
