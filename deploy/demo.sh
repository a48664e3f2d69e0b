#!/usr/bin/env bash
# `make demo`: starts the embedded default cluster (configs/clusters/local.yaml: a coordinator, one
# trainer node and two rollout nodes on loopback), runs a job on it, prints the summary and stops
# the cluster. Until the GRPO main job lands it runs the built-in diagnostic job, which exercises
# scheduling, actor processes, progress, events and logs end to end.
set -euo pipefail
build_dir=${1:-build/release}
tandem="$build_dir/bin/tandem"
run_dir=.tandem

cleanup() { "$tandem" down --run-dir "$run_dir" >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== tandem $("$tandem" --version | cut -d' ' -f2): starting the embedded default cluster"
"$tandem" up -f configs/clusters/local.yaml
"$tandem" nodes
echo
echo "== submitting configs/jobs/diagnostic.yaml"
"$tandem" job submit -f configs/jobs/diagnostic.yaml --follow
echo
echo "== summary"
"$tandem" job status diagnostic
echo
"$tandem" down --run-dir "$run_dir"
trap - EXIT
