#include "rollout_node/grpo_rollout_actor.h"

#include <atomic>
#include <chrono>
#include <future>

#include <fmt/format.h>
#include <zmq.hpp>

#include "common/model/generate.h"
#include "common/model/job_setup.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"
#include "common/model/params.h"
#include "common/model/rng.h"
#include "common/model/tasks.h"
#include "common/net/trajectory_curve.h"
#include "common/rl/grpo_protocol.h"
#include "common/rl/task_factory.h"
#include "common/rl/weight_telemetry.h"
#include "common/weights/reader.h"
#include "common/weights/reader_mismatch.h"
#include "rollout_node/completion_sampler.h"
#include "rollout_node/context_parallel_plan.h"
#include "rollout_node/context_parallel_sampler.h"
#include "rollout_node/device_weights.h"
#include "rollout_node/rollout_loop.h"

namespace tandem::rollout {

namespace {

// The weight plane's reader: fetches in the background (through the job's relay tree when there
// are more rollouts than rollout.relay_fanout), swaps at step boundaries.
class ReaderWeights final : public Weights {
public:
    ReaderWeights(runtime::JobRuntime& rt, std::unique_ptr<weights::Reader> reader, bool relay)
        : rt_(rt), reader_(std::move(reader)), relay_(relay) {}

    void start_fetch(const runtime::PublishedVersion& v) override {
        fetch_start_ns_ = rt_.clock().wall_ns();
        source_ = "publisher";
        if (relay_) {
            fetching_ = std::async(std::launch::async,
                                   [this, d = v.descriptor] { return fetch_in_relay_tree(d); });
        } else {
            fetching_ = reader_->fetch_async(v.descriptor);
        }
    }
    bool fetching() const override { return fetching_.valid(); }
    std::optional<Status> wait_fetch(Clock::TimePoint deadline) override {
        if (!fetching_.valid()) return std::nullopt;
        const auto wait = std::max(Clock::Duration(0), deadline - rt_.clock().now());
        if (fetching_.wait_for(wait) != std::future_status::ready) return std::nullopt;
        Status s = fetching_.get();
        last_fetch_s_ = reader_->last_fetch().seconds;  // the transfer, as the reader timed it
        if (s.ok()) report_fetch();
        return s;
    }
    Status swap() override {
        reader_->swap();
        return Status();
    }
    std::optional<Version> current() const override {
        auto cur = reader_->current();
        if (!cur) return std::nullopt;
        return cur->version();
    }
    double last_fetch_s() const override { return last_fetch_s_; }
    weights::Reader& reader() { return *reader_; }

private:
    // The finished fetch joins the weight-plane counters the coordinator exports
    // (rl::WeightTelemetry, reported as this actor's progress).
    void report_fetch() {
        const weights::FetchStats f = reader_->last_fetch();
        telemetry_.on_fetch({.version = static_cast<int64_t>(f.version),
                             .start_ns = fetch_start_ns_,
                             .seconds = f.seconds,
                             .bytes = f.bytes,
                             .transport = std::string(weights::read_path_name(f.path)),
                             .source = f.via_relay ? source_ : "publisher",
                             .rereads = f.rereads});
        telemetry_.set_relay_served_bytes(reader_->relay_bytes_served());
        rt_.progress({{"weights", telemetry_.to_json()}});
    }

    // Joins the version's relay tree with this reader's relay source, reads where the table puts
    // it, and falls back to the publishers when that reader fails (fetch_via_relay_tree, as a
    // device rollout does).
    Status fetch_in_relay_tree(const weights::VersionDescriptor& version) {
        auto assigned = rt_.relay_source(version.version, reader_->relay_source(),
                                         rt_.clock().now() + kRelaySourceWait);
        const weights::RelayTreeFetch tree = weights::fetch_via_relay_tree(
            assigned,
            [&](const weights::RelaySource* relay) { return reader_->fetch(version, relay); });
        source_ = tree.source;  // read by wait_fetch after the future's result
        if (tree.relay) {
            rt_.log(LogLevel::kWarn, fmt::format("version {}: {}; read the publishers",
                                                 version.version, tree.relay->message()));
        } else if (tree.status.ok() && tree.source != "publisher" && relayed_.fetch_add(1) == 0) {
            rt_.log(LogLevel::kInfo,
                    fmt::format("read version {} from relay {} (fan-out {})", version.version,
                                tree.source, rt_.spec().rollout.relay_fanout));
        }
        return tree.status;
    }

    runtime::JobRuntime& rt_;
    std::unique_ptr<weights::Reader> reader_;
    bool relay_;
    std::future<Status> fetching_;
    double last_fetch_s_ = 0;
    int64_t fetch_start_ns_ = 0;
    std::string source_;  // written by the fetch thread before its future is ready
    rl::WeightTelemetry telemetry_;
    std::atomic<int64_t> relayed_{0};  // versions read from another rollout
};

// Samples group_size completions for this rollout's share of a step's prompts (indices me,
// me + R, ... of prompts_per_step) and scores them with the task's verifier. On the CPU the
// weights are the reader's current host buffer (`host`); on the device, the version `weights`
// switched into the sampler.
class ModelGenerator final : public Generator {
public:
    ModelGenerator(const runtime::JobRuntime& rt, const Weights& weights, weights::Reader* host,
                   std::unique_ptr<rl::JobTask> task, std::unique_ptr<rl::TaskScorer> scorer,
                   CompletionSampler& gen)
        : job_(rt.spec()),
          weights_(weights),
          host_(host),
          task_(std::move(task)),
          scorer_(std::move(scorer)),
          gen_(gen) {
        const int R = job_.rollout.replicas, P = job_.algorithm.prompts_per_step;
        me_ = static_cast<int>(rt.actor().index);
        for (int p = me_; p < P; p += R) mine_.push_back(p);
    }

    Result<rl::TrajectoryBatch> generate(int64_t batch, uint64_t first) override {
        // Held for the whole batch: the buffer is not reused under it.
        std::shared_ptr<const weights::WeightsView> view;
        const float* params = nullptr;
        int64_t version = 0;
        if (host_) {
            view = host_->current();
            if (!view) return internal_error("no weights to generate with");
            params = reinterpret_cast<const float*>(view->bytes().data());
            version = static_cast<int64_t>(view->version());
        } else {
            const auto current = weights_.current();
            if (!current) return internal_error("no weights on the device to generate with");
            version = static_cast<int64_t>(*current);
        }
        std::vector<rl::TextExample> examples(mine_.size());
        std::vector<std::vector<int32_t>> prompts(mine_.size());
        for (size_t i = 0; i < mine_.size(); ++i) {
            examples[i] = task_->example(first + static_cast<uint64_t>(mine_[i]));
            TANDEM_ASSIGN_OR_RETURN(prompts[i], task_->prompt_tokens(examples[i]));
        }
        auto so = model::SamplingOptions::from_spec(
            job_.rollout.sampling,
            model::mix_seed(job_.task.seed, 0x726f6c6c, static_cast<uint64_t>(batch),
                            static_cast<uint64_t>(me_)));
        model::GenerateStats gs;
        TANDEM_ASSIGN_OR_RETURN(
            auto completions,
            gen_.generate(params, version, prompts, job_.algorithm.group_size, so, &gs));
        TANDEM_ASSIGN_OR_RETURN(auto rewards, scorer_->score(examples, completions));
        rl::TrajectoryBatch out;
        out.rollout = me_;
        out.generated_tokens = gs.generated_tokens;
        out.kv = {.bytes_in_use = gs.kv_peak_bytes,
                  .budget_bytes = job_.rollout.kv_cache.budget_bytes,
                  .prefix_bytes = gs.kv_prefix_bytes,
                  .prefix_hits = gs.kv_prefix_hits,
                  .admission_waits = gs.kv_admission_waits,
                  .evictions = gs.kv_evictions,
                  .compressed_blocks = gs.kv_compressed,
                  .bytes_per_token = gs.kv_bytes_per_token,
                  .compression = gs.kv_compression};
        for (size_t i = 0; i < completions.size(); ++i) {
            model::Completion& c = completions[i];
            model::Trajectory t;
            t.prompt = prompts[c.prompt];
            t.reward = rewards[i];
            t.completion = std::move(c.tokens);
            t.behaviour_logprobs = std::move(c.logprobs);
            t.group = first + static_cast<uint64_t>(mine_[c.prompt]);
            t.version = version;
            out.trajectories.push_back(std::move(t));
        }
        return out;
    }

private:
    const config::JobSpec& job_;
    const Weights& weights_;
    weights::Reader* host_;  // null on the device
    std::unique_ptr<rl::JobTask> task_;
    std::unique_ptr<rl::TaskScorer> scorer_;
    CompletionSampler& gen_;
    int me_ = 0;
    std::vector<int> mine_;
};

// PUSH to the trainer run's PULL socket; a CURVE client with the placement's trajectory keys.
class ZmqOutbox final : public TrajectoryOutbox {
public:
    ZmqOutbox(zmq::context_t& zmq, const nlohmann::json& placement)
        : zmq_(zmq), placement_(placement) {}
    Status connect(const std::string& endpoint) override {
        if (push_ && endpoint == endpoint_) return Status();
        // Batches still queued for a gone trainer are dropped with the old socket.
        push_ = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::push);
        push_->set(zmq::sockopt::linger, 2000);
        push_->set(zmq::sockopt::sndhwm, 64);
        TANDEM_RETURN_IF_ERROR(net::secure_trajectory_client(*push_, placement_));
        push_->connect(endpoint);
        endpoint_ = endpoint;
        return Status();
    }
    Status send(const rl::TrajectoryBatch& batch) override {
        if (!push_) return internal_error("no trainer to push trajectories to");
        const std::string bytes = batch.encode();
        try {
            push_->send(zmq::buffer(bytes), zmq::send_flags::none);
        } catch (const zmq::error_t& e) {
            return unavailable(fmt::format("pushing trajectories: {}", e.what()));
        }
        return Status();
    }

private:
    zmq::context_t& zmq_;
    const nlohmann::json placement_;
    std::unique_ptr<zmq::socket_t> push_;
    std::string endpoint_;
};

// The host name the placement gives this actor (its node's), else the node's id.
std::string actor_host(const runtime::JobRuntime& rt) {
    const nlohmann::json& p = rt.placement();
    if (p.is_object()) {
        const auto actors = p.find("actors");
        if (actors != p.end() && actors->is_object()) {
            const auto me = actors->find(rt.actor().str());
            if (me != actors->end() && me->is_object()) {
                const auto host = me->find("host");
                if (host != me->end() && host->is_string() && !host->get<std::string>().empty())
                    return host->get<std::string>();
            }
        }
    }
    return rt.node();
}

}  // namespace

Status run_grpo_rollout(runtime::JobRuntime& rt) {
    model::set_blas_threads(1);  // several actors share a node's cores
    const config::JobSpec& job = rt.spec();
    TANDEM_ASSIGN_OR_RETURN(auto task, rl::make_job_task(job));
    TANDEM_ASSIGN_OR_RETURN(model::HfConfig policy, rl::policy_config(job, *task));
    const model::ModelConfig& cfg = policy.model;
    TANDEM_RETURN_IF_ERROR(model::check_context_length(job, task->max_prompt_tokens()));
    model::GeneratorOptions go = model::GeneratorOptions::from_job(job);
    go.eos_token = task->eos_token();
    go.stop_tokens = task->stop_tokens();
    // rollout.device against the GPU the scheduler gave this actor (CUDA_VISIBLE_DEVICES is set).
    const gpu::DeviceFacts facts =
        gpu::probe_devices(gpu::assigned_gpus(rt.placement(), rt.actor().str()));
    TANDEM_ASSIGN_OR_RETURN(gpu::DeviceChoice device,
                            rollout_device(job, facts, rt.actor().job.str()));
    rt.log(LogLevel::kInfo, fmt::format("device: {}", device.reason));
    std::unique_ptr<CompletionSampler> gen;
    if (device.cuda() && job.rollout.context_parallel > 1) {
        // One rank per assigned GPU, threads of this actor (context_parallel_plan.h).
        kernels::RingSelectOptions select;
        select.nccl_available = context_parallel_nccl_built();
        TANDEM_ASSIGN_OR_RETURN(
            ContextParallelPlan plan,
            plan_context_parallel(job, facts, actor_host(rt), rt.actor().job.str(), select));
        rt.log(LogLevel::kInfo, fmt::format("context parallel: {}", plan.describe()));
        TANDEM_ASSIGN_OR_RETURN(gen, make_cuda_context_parallel_sampler(cfg, go, job, plan));
    } else if (device.cuda()) {
        TANDEM_ASSIGN_OR_RETURN(gen, make_cuda_sampler(cfg, go, job));
    } else {
        TANDEM_ASSIGN_OR_RETURN(auto cpu, model::GroupGenerator::create(cfg, go));
        gen = make_cpu_sampler(std::move(cpu));
    }
    TANDEM_ASSIGN_OR_RETURN(auto scorer, task->make_scorer());
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, model::make_param_layout(cfg));
    weights::ReaderOptions ro;
    ro.job = rt.actor().job;
    ro.reader_id = rt.actor().str();
    ro.ucx.transports = rl::weight_transports(rt.placement());
    // Handing each piece to the checksum thread costs a wakeup, which on a busy machine is
    // slower than hashing a small model inline (376 KB under load: 5.3 ms -> 1.6 ms a fetch).
    ro.verify_on_helper_thread = layout.total_bytes() > (uint64_t{8} << 20);
    // With no more rollouts than the fan-out every one would read the publishers anyway. A
    // device rollout relays from its pinned host copy (Reader::fetch_to_device).
    const bool relay = job.rollout.replicas > job.rollout.relay_fanout;
    ro.relay = relay;
    // A trainer of another layout (a Python publisher leaves its tensors there) is refused
    // naming the first differing tensor.
    ro.layouts_dir = weights::job_layouts_dir(rt.run_dir(), rt.actor().job);
    TANDEM_ASSIGN_OR_RETURN(auto reader, weights::Reader::create(ro, std::move(layout)));

    ReaderWeights host_weights(rt, std::move(reader), relay);
    // On the device each version comes by CUDA IPC from the trainer's device slot on this node,
    // else fetched into device memory (through the relay tree like a host reader), and is
    // converted into the generator's bf16 weights at a step boundary (device_weights.h).
    std::unique_ptr<weights::DeviceStaging> staging;
    std::unique_ptr<DeviceWeightSource> device_source;
    std::unique_ptr<DeviceRolloutWeights> device_weights;
    if (device.cuda()) {
        auto created = weights::DeviceStaging::create(0);
        if (!created.ok()) {
            return created.status().with_context("the rollout on cuda: device weights staging");
        }
        staging = std::move(*created);
        if (gen->device_weights() == nullptr) {
            return internal_error("the rollout on cuda: its sampler takes no device weights");
        }
        device_source = make_reader_device_source(host_weights.reader(), *staging, relay);
        device_weights =
            std::make_unique<DeviceRolloutWeights>(rt, *device_source, *gen->device_weights());
    }
    Weights& weights = device_weights ? static_cast<Weights&>(*device_weights)
                                      : static_cast<Weights&>(host_weights);
    ModelGenerator generator(rt, weights, device_weights ? nullptr : &host_weights.reader(),
                             std::move(task), std::move(scorer), *gen);
    zmq::context_t zmq(1);
    ZmqOutbox outbox(zmq, rt.placement());
    RolloutLoopOptions opt;
    opt.max_staleness = job.async.max_staleness;
    opt.prompts_per_step = job.algorithm.prompts_per_step;
    RolloutLoop loop(rt, weights, generator, outbox, opt);
    return loop.run();
}

}  // namespace tandem::rollout
