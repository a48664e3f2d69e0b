#!/usr/bin/env bash
# `make demo`: runs the main job on the embedded default cluster (configs/clusters/local.yaml).
# Until the control plane, weight plane and main job land, it runs the most that exists: it
# validates the embedded cluster and the default job and prints them resolved.
set -euo pipefail
build_dir=${1:-build/release}
tandem="$build_dir/bin/tandem"

echo "== tandem $("$tandem" --version | cut -d' ' -f2): embedded default cluster"
"$tandem" config check -f configs/clusters/local.yaml
echo
echo "== default job"
"$tandem" config check -f configs/jobs/grpo-reverse.yaml
