#pragma once

// The job file: what to train, on what, and how. Defaults live here and nowhere else. Examples:
// configs/jobs/*.yaml. `tandem config check -f FILE` prints a file with every default filled in.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config/cluster_spec.h"
#include "common/config/kv_cache_spec.h"
#include "common/config/schema.h"
#include "common/log.h"

namespace tandem::config {

enum class JobKind { kGrpo, kDiagnostic };
enum class PlacementStrategy { kPack, kSpread };
enum class LrSchedule { kConstant, kLinear, kCosine };
enum class TaskName { kReverse, kSort, kAdd, kCopy, kJsonl, kText };
enum class Verifier { kDefault, kExact, kNumeric, kPositional };
enum class ResumeMode { kNever, kAuto };
// Where a built-in actor computes (trainer.device, rollout.device). auto: cuda when the scheduler
// assigned the actor a GPU, the build has CUDA and the device is visible; else cpu. The choice is
// resolved at the actor's start by gpu::resolve_device (common/gpu/device_choice.h).
enum class ComputeDevice { kAuto, kCpu, kCuda };

template <>
struct EnumNames<JobKind> {
    static constexpr std::array<std::pair<JobKind, const char*>, 2> kNames{{
        {JobKind::kGrpo, "grpo"},
        {JobKind::kDiagnostic, "diagnostic"},
    }};
};
template <>
struct EnumNames<PlacementStrategy> {
    static constexpr std::array<std::pair<PlacementStrategy, const char*>, 2> kNames{{
        {PlacementStrategy::kPack, "pack"},
        {PlacementStrategy::kSpread, "spread"},
    }};
};
template <>
struct EnumNames<LrSchedule> {
    static constexpr std::array<std::pair<LrSchedule, const char*>, 3> kNames{{
        {LrSchedule::kConstant, "constant"},
        {LrSchedule::kLinear, "linear"},
        {LrSchedule::kCosine, "cosine"},
    }};
};
template <>
struct EnumNames<TaskName> {
    static constexpr std::array<std::pair<TaskName, const char*>, 6> kNames{{
        {TaskName::kReverse, "reverse"},
        {TaskName::kSort, "sort"},
        {TaskName::kAdd, "add"},
        {TaskName::kCopy, "copy"},
        {TaskName::kJsonl, "jsonl"},
        {TaskName::kText, "text"},
    }};
};
template <>
struct EnumNames<Verifier> {
    static constexpr std::array<std::pair<Verifier, const char*>, 4> kNames{{
        {Verifier::kDefault, "default"},
        {Verifier::kExact, "exact"},
        {Verifier::kNumeric, "numeric"},
        {Verifier::kPositional, "positional"},
    }};
};
template <>
struct EnumNames<ResumeMode> {
    static constexpr std::array<std::pair<ResumeMode, const char*>, 2> kNames{{
        {ResumeMode::kNever, "never"},
        {ResumeMode::kAuto, "auto"},
    }};
};
template <>
struct EnumNames<ComputeDevice> {
    static constexpr std::array<std::pair<ComputeDevice, const char*>, 3> kNames{{
        {ComputeDevice::kAuto, "auto"},
        {ComputeDevice::kCpu, "cpu"},
        {ComputeDevice::kCuda, "cuda"},
    }};
};
template <>
struct EnumNames<LogLevel> {
    static constexpr std::array<std::pair<LogLevel, const char*>, 6> kNames{{
        {LogLevel::kTrace, "trace"},
        {LogLevel::kDebug, "debug"},
        {LogLevel::kInfo, "info"},
        {LogLevel::kWarn, "warn"},
        {LogLevel::kError, "error"},
        {LogLevel::kOff, "off"},
    }};
};

// What one actor needs from its node.
struct ActorResources {
    double cpus = 1.0;
    int64_t memory_mb = 512;
    int gpus = 0;
    // Actors of this role that may share each of their GPUs (1: a GPU of its own). With gpus: 1
    // and actors_per_gpu: 2, two such actors run on one device; never beside an actor that has
    // its GPU to itself.
    int actors_per_gpu = 1;

    // GPUs this actor takes from its node's count (gpus / actors_per_gpu).
    double gpu_share() const { return static_cast<double>(gpus) / actors_per_gpu; }

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("cpus", s.cpus, Range{0.0, 4096.0});
        v.field("memory_mb", s.memory_mb, Range<int64_t>{0, int64_t{1} << 40});
        v.field("gpus", s.gpus, Range{0, 1024});
        v.field("actors_per_gpu", s.actors_per_gpu, Range{1, 64});
    }
};

struct PlacementSpec {
    PlacementStrategy strategy = PlacementStrategy::kPack;
    bool colocate = false;  // place trainer and rollout actors on the same nodes

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("strategy", s.strategy);
        v.field("colocate", s.colocate);
    }
};

// A user actor (docs/python.md, "User actors"): the program a node agent runs instead of the
// built-in trainer or rollout actor, with the same scheduling, restarts, logs and exit reports.
// Flattened into `trainer:` and `rollout:`.
struct UserCommandSpec {
    std::vector<std::string> command;  // argv; empty: the built-in actor
    // Where it starts; empty: the job file's directory (load_job_file sets it), so relative paths
    // in `command` mean "beside the job file".
    std::string working_dir;
    std::map<std::string, std::string> env;  // added to (or replacing in) the agent's environment

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("command", s.command);
        v.field("working_dir", s.working_dir);
        v.field("env", s.env);
        bool empty_arg = false;
        for (const auto& a : s.command) empty_arg = empty_arg || a.empty();
        v.check(!empty_arg, "command", "an empty string is not a program or an argument");
        v.check(!s.command.empty() || s.env.empty(), "env",
                "only a user actor (command: [...]) takes env");
        std::string bad;
        for (const auto& [k, val] : s.env) {
            if (!bad.empty()) break;
            if (k.empty() || k.find('=') != std::string::npos || (k[0] >= '0' && k[0] <= '9'))
                bad = fmt::format("'{}' is not a variable name", k);
            else if (k.rfind("TANDEM_", 0) == 0)
                bad = fmt::format("'{}': TANDEM_* variables are set by the node agent", k);
        }
        v.check(bad.empty(), "env", bad);
    }
};

struct TrainerSpec {
    int replicas = 1;
    ActorResources resources;
    UserCommandSpec user;           // command, working_dir, env (flattened)
    int weight_slots = 3;           // K published versions kept in registered memory
    int64_t chunk_bytes = 4 << 20;  // checksum and transfer granularity
    int64_t lease_ttl_ms = 10'000;  // a reader's lease on a version
    int micro_batch = 64;           // sequences per backward pass
    // Compute a group's shared prompt once in the forward and backward (its gradients summed over
    // the group) instead of once per sample; same result up to float rounding.
    bool share_prompts = true;
    ComputeDevice device = ComputeDevice::kAuto;  // the built-in trainer's (docs/gpu.md)

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("replicas", s.replicas, Range{1, 1024});
        v.field("resources", s.resources);
        UserCommandSpec::visit(v, s.user);
        v.field("weight_slots", s.weight_slots, Range{2, 64});
        v.field("chunk_bytes", s.chunk_bytes, Range<int64_t>{4096, int64_t{1} << 30});
        v.field("lease_ttl_ms", s.lease_ttl_ms, Range<int64_t>{10, 3'600'000});
        v.field("micro_batch", s.micro_batch, Range{1, 1 << 20});
        v.field("share_prompts", s.share_prompts);
        v.field("device", s.device);
        v.check(s.device != ComputeDevice::kCuda || s.resources.gpus > 0, "device",
                "cuda needs a GPU from the scheduler: set trainer.resources.gpus (>= 1)");
    }
};

struct SamplingSpec {
    double temperature = 1.0;
    double top_p = 1.0;
    int top_k = 0;  // 0: off
    int max_new_tokens = 12;
    // Text tasks: generation also stops after any of these strings (the completion is cut
    // before it) and at the tokenizer's / template's end-of-turn ids (rl::StopConditions).
    std::vector<std::string> stop;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("temperature", s.temperature, Range{0.0, 100.0});
        v.field("top_p", s.top_p, Range{0.0, 1.0});
        v.field("top_k", s.top_k, Range{0, 1 << 20});
        v.field("max_new_tokens", s.max_new_tokens, Range{1, 1 << 20});
        v.field("stop", s.stop);
        v.check(s.top_p > 0.0, "top_p", "must be greater than 0");
    }
};

struct RolloutSpec {
    int replicas = 2;
    ActorResources resources;
    UserCommandSpec user;  // command, working_dir, env (flattened)
    SamplingSpec sampling;
    int context_parallel = 1;              // ranks a long context is sharded over
    int64_t max_tokens_per_device = 4096;  // longer contexts use ring attention
    int relay_fanout = 2;                  // weight relay tree fan-out
    // GRPO: how long the job may run with no live rollout actor (all pending, none placed)
    // before it fails; it fails at once when none can come back (restarts used up).
    int64_t none_alive_timeout_ms = 120000;
    KvCacheSpec kv_cache;                         // common/config/kv_cache_spec.h
    ComputeDevice device = ComputeDevice::kAuto;  // the built-in rollout's (docs/gpu.md)

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("replicas", s.replicas, Range{1, 4096});
        v.field("resources", s.resources);
        UserCommandSpec::visit(v, s.user);
        v.field("sampling", s.sampling);
        v.field("context_parallel", s.context_parallel, Range{1, 256});
        v.field("max_tokens_per_device", s.max_tokens_per_device,
                Range<int64_t>{1, int64_t{1} << 32});
        v.field("relay_fanout", s.relay_fanout, Range{1, 64});
        v.field("none_alive_timeout_ms", s.none_alive_timeout_ms,
                Range<int64_t>{0, int64_t{7} * 24 * 3600 * 1000});
        v.field("kv_cache", s.kv_cache);
        v.field("device", s.device);
        v.check(s.device != ComputeDevice::kCuda || s.resources.gpus > 0, "device",
                "cuda needs a GPU from the scheduler: set rollout.resources.gpus (>= 1)");
    }
};

struct OptimizerSpec {
    double lr = 3e-3;
    double beta1 = 0.9;
    double beta2 = 0.99;
    double eps = 1e-8;
    double weight_decay = 0.0;
    double grad_clip = 1.0;  // global norm; 0: off
    int warmup_steps = 0;
    LrSchedule schedule = LrSchedule::kConstant;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("lr", s.lr, Range{0.0, 10.0});
        v.field("beta1", s.beta1, Range{0.0, 1.0});
        v.field("beta2", s.beta2, Range{0.0, 1.0});
        v.field("eps", s.eps, Range{0.0, 1.0});
        v.field("weight_decay", s.weight_decay, Range{0.0, 10.0});
        v.field("grad_clip", s.grad_clip, Range{0.0, 1e6});
        v.field("warmup_steps", s.warmup_steps, Range{0, 1 << 30});
        v.field("schedule", s.schedule);
    }
};

struct AlgorithmSpec {
    int steps = 120;
    int prompts_per_step = 32;
    int group_size = 8;     // G completions per prompt (GRPO group)
    double clip_eps = 0.2;  // importance-ratio clip
    double kl_coef = 0.0;   // KL to the initial policy; 0: off
    // Truncated importance sampling (Yao et al. 2025): each token's policy loss is weighted by
    // min(exp(logp_trainer - logp_behaviour), tis_cap), the trainer's pre-update log-prob against
    // the sampler's, so a sampler that differs from the trainer (a quantized KV cache, stale
    // weights) does not bias the update; the PPO ratio is then taken against the trainer's
    // pre-update log-probs. 0: off (the ratio against the behaviour log-probs, as before).
    double tis_cap = 2.0;
    OptimizerSpec optimizer;
    // Supervised warm start before RL: this many steps of answer log-likelihood (prompts_per_step
    // x group_size examples each) at warm_start_lr; the result is version 0. 0: start from
    // model.init as it is.
    int warm_start_steps = 0;
    double warm_start_lr = 3e-3;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("steps", s.steps, Range{1, 1 << 30});
        v.field("prompts_per_step", s.prompts_per_step, Range{1, 1 << 20});
        v.field("group_size", s.group_size, Range{1, 4096});
        v.field("clip_eps", s.clip_eps, Range{0.0, 10.0});
        v.field("kl_coef", s.kl_coef, Range{0.0, 100.0});
        v.field("tis_cap", s.tis_cap, Range{0.0, 1e6});
        v.field("optimizer", s.optimizer);
        v.field("warm_start_steps", s.warm_start_steps, Range{0, 1 << 20});
        v.field("warm_start_lr", s.warm_start_lr, Range{0.0, 10.0});
    }
};

struct AsyncSpec {
    int max_staleness = 0;  // 0: synchronous on-policy; s: rollouts may run s versions ahead

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("max_staleness", s.max_staleness, Range{0, 1024});
    }
};

// A Llama-style decoder; parameter names follow Hugging Face's Llama.
struct ModelSpec {
    std::string init = "random";  // "random" or a directory with config.json + model.safetensors
    int hidden_size = 64;
    int num_layers = 2;
    int num_heads = 4;
    int num_kv_heads = 2;
    int intermediate_size = 176;
    int max_seq_len = 64;
    double rope_theta = 10000.0;
    double rms_norm_eps = 1e-5;
    bool tie_embeddings = true;
    uint64_t seed = 0;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("init", s.init, NonEmpty{});
        v.field("hidden_size", s.hidden_size, Range{1, 1 << 16});
        v.field("num_layers", s.num_layers, Range{1, 1024});
        v.field("num_heads", s.num_heads, Range{1, 1024});
        v.field("num_kv_heads", s.num_kv_heads, Range{1, 1024});
        v.field("intermediate_size", s.intermediate_size, Range{1, 1 << 20});
        v.field("max_seq_len", s.max_seq_len, Range{2, 1 << 24});
        v.field("rope_theta", s.rope_theta, Range{1.0, 1e9});
        v.field("rms_norm_eps", s.rms_norm_eps, Range{0.0, 1.0});
        v.field("tie_embeddings", s.tie_embeddings);
        v.field("seed", s.seed);
        // A zero divisor is already refused by its Range above: no second message, no SIGFPE.
        v.check(s.num_heads <= 0 || s.hidden_size % s.num_heads == 0, "num_heads",
                fmt::format("must divide hidden_size ({})", s.hidden_size));
        v.check(s.num_kv_heads <= 0 || s.num_heads % s.num_kv_heads == 0, "num_kv_heads",
                fmt::format("must divide num_heads ({})", s.num_heads));
    }
};

// A user's reward program for text tasks (rl::RewardCommand): started once per rollout actor
// with /bin/sh -c, it reads one JSON line per sample on stdin ({"prompt", "completion",
// "answer"}) and writes one number per line on stdout.
struct RewardSpec {
    std::string command;         // empty: the task's verifier scores
    std::string working_dir;     // empty: the job file's directory (load_job_file sets it)
    int64_t timeout_ms = 60000;  // for the answers of one batch

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("command", s.command);
        v.field("working_dir", s.working_dir);
        v.field("timeout_ms", s.timeout_ms, Range<int64_t>{1, int64_t{24} * 3600 * 1000});
    }
};

struct TaskSpec {
    TaskName name = TaskName::kReverse;
    int min_length = 8;
    int max_length = 8;
    // JSONL {"prompt","answer"} lines; required for name: jsonl and name: text (which also
    // reads an optional "system").
    std::string dataset;
    Verifier verifier = Verifier::kDefault;  // default: the task's own
    uint64_t seed = 1;
    // name: text. `template`: "chatml", "llama3", "plain" (the prompt alone) or a string with
    // {system} and {prompt} placeholders ({{ and }} for braces). `system`: for rows without one.
    // `tokenizer`: a directory with tokenizer.json; empty: model.init's.
    std::string prompt_template = "plain";
    std::string system;
    std::string tokenizer;
    RewardSpec reward;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("name", s.name);
        v.field("min_length", s.min_length, Range{1, 1 << 16});
        v.field("max_length", s.max_length, Range{1, 1 << 16});
        v.field("dataset", s.dataset);
        v.field("verifier", s.verifier);
        v.field("seed", s.seed);
        v.field("template", s.prompt_template, NonEmpty{});
        v.field("system", s.system);
        v.field("tokenizer", s.tokenizer);
        v.field("reward", s.reward);
        v.check(s.min_length <= s.max_length, "max_length",
                fmt::format("must be at least min_length ({})", s.min_length));
        v.check((s.name != TaskName::kJsonl && s.name != TaskName::kText) || !s.dataset.empty(),
                "dataset", "is required when name is jsonl or text");
        v.check(s.reward.command.empty() || s.name == TaskName::kText, "reward",
                "a reward command needs name: text");
        v.check(s.reward.command.empty() || s.verifier == Verifier::kDefault, "verifier",
                "set either verifier or reward.command, not both");
    }
};

struct CheckpointSpec {
    std::string dir;      // empty: <run_dir>/jobs/<job>/checkpoints
    int every_steps = 0;  // 0: off
    ResumeMode resume = ResumeMode::kNever;
    int keep_last = 2;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("dir", s.dir);
        v.field("every_steps", s.every_steps, Range{0, 1 << 30});
        v.field("resume", s.resume);
        v.field("keep_last", s.keep_last, Range{1, 1 << 20});
    }
};

struct LoggingSpec {
    LogLevel level = LogLevel::kInfo;
    int metrics_every_steps = 1;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("level", s.level);
        v.field("metrics_every_steps", s.metrics_every_steps, Range{1, 1 << 20});
    }
};

// The built-in `kind: diagnostic` job: actors report progress for duration_s and may fail on
// purpose, so scheduling and failure handling can be exercised without a model.
struct DiagnosticSpec {
    double duration_s = 5.0;
    std::optional<double> fail_after_s;
    double report_every_s = 0.5;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("duration_s", s.duration_s, Range{0.0, 1e7});
        v.field("fail_after_s", s.fail_after_s, Range{0.0, 1e7});
        v.field("report_every_s", s.report_every_s, Range{0.001, 3600.0});
    }
};

// The restarts a grpo job allows when it does not say: a lost node or a crashed actor is
// restarted (the trainer from its checkpoint with checkpoint.resume: auto) up to three times per
// job before the job fails. A diagnostic job keeps 0 (it exists to show failures).
inline constexpr int kGrpoMaxActorRestarts = 3;

struct JobSpec {
    std::string name;
    JobKind kind = JobKind::kGrpo;
    int priority = 0;  // higher is placed first
    // Per job; beyond it the job fails. A grpo job that does not set it gets
    // kGrpoMaxActorRestarts when its file or text is loaded (load_job_file, parse_job_text).
    int max_actor_restarts = 0;
    PlacementSpec placement;
    TrainerSpec trainer;
    RolloutSpec rollout;
    AlgorithmSpec algorithm;
    AsyncSpec async;
    ModelSpec model;
    TaskSpec task;
    CheckpointSpec checkpoint;
    LoggingSpec logging;
    DiagnosticSpec diagnostic;

    template <typename V, typename S>
    static void visit(V& v, S& s) {
        v.field("name", s.name, Required{}, NonEmpty{});
        v.field("kind", s.kind, Required{});
        v.field("priority", s.priority, Range{-1000, 1000});
        v.field("max_actor_restarts", s.max_actor_restarts, Range{0, 1000});
        v.field("placement", s.placement);
        v.field("trainer", s.trainer);
        v.field("rollout", s.rollout);
        v.field("algorithm", s.algorithm);
        v.field("async", s.async);
        v.field("model", s.model);
        v.field("task", s.task);
        v.field("checkpoint", s.checkpoint);
        v.field("logging", s.logging);
        v.field("diagnostic", s.diagnostic);
        const Status name_ok = validate_node_id(s.name);
        v.check(s.name.empty() || name_ok.ok(), "name",
                "only letters, digits, '.', '_' and '-' are allowed (at most 128)");
    }
};

}  // namespace tandem::config
