#!/usr/bin/env bash
# `make bench`: runs every benchmark binary that was built; each prints one JSON object per line.
set -euo pipefail
build_dir=${1:-build/release}
found=0
for b in "$build_dir"/bench/*/tandem-bench-*; do
    [[ -x "$b" ]] || continue
    found=1
    echo "# $(basename "$b")" >&2
    "$b"
done
if [[ $found -eq 0 ]]; then
    echo "make bench: no benchmark binaries under $build_dir/bench yet" >&2
fi
