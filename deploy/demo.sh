#!/usr/bin/env bash
# `make demo`: starts the embedded default cluster (configs/clusters/local.yaml: a coordinator, one
# trainer node and two rollout nodes on loopback), trains the default job on it
# (configs/jobs/grpo-reverse.yaml: GRPO on a small Llama-style policy, a new weight version every
# step, read by the rollout nodes by version), prints the summary and stops the cluster.
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
echo "== training configs/jobs/grpo-reverse.yaml (progress: step, reward, version, staleness)"
status=0
"$tandem" job submit -f configs/jobs/grpo-reverse.yaml --follow || status=$?
echo
echo "== summary"
"$tandem" job summary grpo-reverse || status=$?
echo
"$tandem" down --run-dir "$run_dir"
trap - EXIT
exit $status
