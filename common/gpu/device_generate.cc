#include "common/gpu/device_generate.h"

#include <algorithm>
#include <cstring>

#include <fmt/format.h>

#include "common/model/self_attention.h"
#include "common/model/transformer.h"
#include "kernels/attention.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/sampling.h"

namespace tandem::gpu {

using kernels::cuda::Bf16;
using kernels::cuda::DeviceBuffer;
namespace ops = kernels::cuda;

// Activations of `rows` rows (the decode step's are allocated once; a captured graph reads them).
struct DeviceGenerator::Work {
    int64_t rows = 0;
    DeviceBuffer x, a, proj, proj2, sw, qb, kb, vb, o, lse, f, logits, token, logp;
};

DeviceGenerator::DeviceGenerator(DeviceGenerateOptions options) : options_(std::move(options)) {}

DeviceGenerator::~DeviceGenerator() {
    // Graphs and buffers go before the allocator and stream they came from.
    graphs_.clear();
    decode_.reset();
    step_ = DeviceBuffer();
    kv_.reset();
    cos_ = DeviceBuffer();
    sin_ = DeviceBuffer();
    model_.reset();
    gemm_.reset();
}

Result<std::unique_ptr<DeviceGenerator>> DeviceGenerator::create(const model::ModelConfig& config,
                                                                 DeviceGenerateOptions options,
                                                                 int device) {
    // rollout.kv_cache: quantized pages take the spec's group as their block size.
    model::KvCacheOptions kv_options = options.kv_cache;
    if (kv_options.dtype == kernels::KvDType::kF32) kv_options.block_tokens = options.block_tokens;
    TANDEM_ASSIGN_OR_RETURN(DeviceKvPlan kv_plan, device_kv_plan(config, kv_options, options.job));
    options.block_tokens = kv_plan.block_tokens;
    if (options.block_tokens < 1 || options.block_tokens > 1024) {
        return invalid_argument(
            fmt::format("job {}: device generation: block_tokens (rollout.kv_cache.group when the "
                        "cache is quantized) must be in [1, 1024], got {}",
                        options.job, options.block_tokens));
    }
    if (options.max_prefill_tokens < 1) {
        return invalid_argument(
            fmt::format("job {}: device generation: max_prefill_tokens must be >= 1", options.job));
    }
    if (config.head_dim() % 2 != 0 || config.head_dim() > 256) {
        return invalid_argument(
            fmt::format("job {}: device generation needs an even head_dim <= 256, the model has {}",
                        options.job, config.head_dim()));
    }
    std::unique_ptr<DeviceGenerator> g(new DeviceGenerator(std::move(options)));
    TANDEM_ASSIGN_OR_RETURN(g->stream_, ops::Stream::create(device));
    TANDEM_ASSIGN_OR_RETURN(g->alloc_, ops::DeviceAllocator::create(device));
    TANDEM_ASSIGN_OR_RETURN(g->gemm_, ops::Gemm::create(*g->alloc_));
    TANDEM_ASSIGN_OR_RETURN(g->model_,
                            DeviceModel::create(config, *g->alloc_, *g->gemm_, *g->stream_));
    const model::RopeTable<float> rope = model::make_rope_table<float>(config);
    const size_t table = static_cast<size_t>(config.max_seq_len) * (config.head_dim() / 2);
    TANDEM_ASSIGN_OR_RETURN(g->cos_, g->alloc_->allocate(table * 4, "generation RoPE cos"));
    TANDEM_ASSIGN_OR_RETURN(g->sin_, g->alloc_->allocate(table * 4, "generation RoPE sin"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(*g->stream_, g->cos_.as(), rope.cos(0), table * 4));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(*g->stream_, g->sin_.as(), rope.sin(0), table * 4));
    TANDEM_ASSIGN_OR_RETURN(g->kv_, DeviceKvPool::create(config, std::move(kv_plan), *g->alloc_,
                                                         g->options_.decode_splits));
    if (g->options_.prefix_tokens < 0 || g->options_.kv_budget_bytes < 0) {
        return invalid_argument(fmt::format(
            "job {}: device generation: rollout.kv_cache.prefix_tokens and budget_bytes must be "
            ">= 0, got {} and {}",
            g->options_.job, g->options_.prefix_tokens, g->options_.kv_budget_bytes));
    }
    GenerationLoopOptions lo;
    lo.block_tokens = g->options_.block_tokens;
    lo.max_prefill_tokens = g->options_.max_prefill_tokens;
    lo.job = g->options_.job;
    lo.prefix_tokens = g->options_.prefix_tokens;
    lo.budget_bytes = g->options_.kv_budget_bytes;
    lo.block_bytes = g->block_bytes();
    std::vector<int32_t>& stop = lo.stop_ids;
    stop = g->options_.stop_tokens;
    stop.push_back(g->options_.eos_token);
    std::erase_if(stop, [](int32_t id) { return id < 0; });
    std::sort(stop.begin(), stop.end());
    stop.erase(std::unique(stop.begin(), stop.end()), stop.end());
    g->loop_ = std::make_unique<GenerationLoop>(std::move(lo));
    if (!g->options_.cuda_graphs) g->graph_note_ = "off (rollout option)";
    TANDEM_RETURN_IF_ERROR(g->stream_->synchronize("device generation setup"));
    return g;
}

int64_t DeviceGenerator::block_bytes() const { return kv_->block_bytes(); }

Status DeviceGenerator::load(model::WeightView params) {
    loop_->weights_changed();  // a cached system prompt is stale from here on
    std::vector<float> scratch;
    const float* f32 = params.widen(0, static_cast<int64_t>(model_->index().elements), scratch);
    TANDEM_RETURN_IF_ERROR(model_->load(*stream_, f32));
    return stream_->synchronize("device generation weights upload");
}

Status DeviceGenerator::load_device(std::span<const DeviceF32Piece> pieces) {
    const auto elements = static_cast<int64_t>(model_->index().elements);
    int64_t at = 0;
    for (const DeviceF32Piece& p : pieces) {
        if (p.first != at || p.count < 0 || p.first + p.count > elements || !p.data) {
            return invalid_argument(fmt::format(
                "device generation: weights piece [{}, {}) does not continue at {} of {} values",
                p.first, p.first + p.count, at, elements));
        }
        at += p.count;
    }
    if (at != elements) {
        return invalid_argument(
            fmt::format("device generation: weights pieces cover {} of {} values", at, elements));
    }
    loop_->weights_changed();  // a cached system prompt is stale from here on
    kernels::cuda::Bf16* out = model_->weights_bf16();
    for (const DeviceF32Piece& p : pieces) {
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(*stream_, p.count, p.data, out + p.first));
    }
    TANDEM_RETURN_IF_ERROR(stream_->synchronize("device generation weights conversion"));
    model_->set_loaded();
    return Status();
}

Result<StepLayout> DeviceGenerator::reserve(int64_t blocks, int64_t max_rows, int width) {
    const model::ModelConfig& c = config();
    const bool grow_pool = blocks > kv_->blocks();
    const bool new_work = !decode_ || max_rows > layout_.max_rows || width != layout_.width;
    if (grow_pool || new_work) {
        graphs_.clear();  // they read the buffers about to be replaced
        bucket_uses_.clear();
    }
    TANDEM_ASSIGN_OR_RETURN(const bool kv_replaced,
                            kv_->reserve(blocks, std::max(max_rows, layout_.max_rows)));
    if (kv_replaced) {
        graphs_.clear();  // they read the pool and its split workspace
        bucket_uses_.clear();
    }
    if (new_work) {
        const StepLayout layout{std::max(max_rows, layout_.max_rows), width};
        decode_.reset();
        step_ = DeviceBuffer();
        layout_ = StepLayout{};  // until the new buffers are there
        auto w = std::make_unique<Work>();
        TANDEM_RETURN_IF_ERROR(
            allocate_work(*alloc_, c, layout.max_rows, layout.max_rows, false, w.get()));
        TANDEM_ASSIGN_OR_RETURN(
            step_, alloc_->allocate(static_cast<size_t>(layout.size()) * 4, "decode step inputs"));
        decode_ = std::move(w);
        layout_ = layout;
    }
    return layout_;
}

Status DeviceGenerator::allocate_work(kernels::cuda::DeviceAllocator& alloc,
                                      const model::ModelConfig& c, int64_t rows, int64_t logit_rows,
                                      bool lse, Work* w) {
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    auto get = [&](DeviceBuffer& b, int64_t elems, size_t bytes, const char* what) -> Status {
        TANDEM_ASSIGN_OR_RETURN(b, alloc.allocate(static_cast<size_t>(elems) * bytes, what));
        return Status();
    };
    w->rows = rows;
    TANDEM_RETURN_IF_ERROR(get(w->x, rows * h, 4, "generation residual stream"));
    TANDEM_RETURN_IF_ERROR(get(w->a, rows * std::max(h, qd), 2, "generation normed rows"));
    TANDEM_RETURN_IF_ERROR(get(w->proj, rows * std::max(qd, inter), 4, "generation projection"));
    TANDEM_RETURN_IF_ERROR(get(w->proj2, rows * inter, 4, "generation up projection"));
    TANDEM_RETURN_IF_ERROR(get(w->sw, rows * inter, 2, "generation swiglu"));
    TANDEM_RETURN_IF_ERROR(get(w->qb, rows * qd, 2, "generation q"));
    TANDEM_RETURN_IF_ERROR(get(w->kb, rows * kvd, 2, "generation k"));
    TANDEM_RETURN_IF_ERROR(get(w->vb, rows * kvd, 2, "generation v"));
    TANDEM_RETURN_IF_ERROR(get(w->o, rows * qd, 4, "generation attention output"));
    if (lse) TANDEM_RETURN_IF_ERROR(get(w->lse, rows * c.num_heads, 4, "prefill attention lse"));
    TANDEM_RETURN_IF_ERROR(get(w->f, rows * h, 2, "generation final norm"));
    TANDEM_RETURN_IF_ERROR(get(w->logits, logit_rows * c.vocab_size, 4, "generation logits"));
    TANDEM_RETURN_IF_ERROR(get(w->token, logit_rows, 4, "sampled tokens"));
    TANDEM_RETURN_IF_ERROR(get(w->logp, logit_rows, 4, "sampled log-probs"));
    return Status();
}

Status DeviceGenerator::layers(Work& w, int64_t n, const int32_t* tokens, const int32_t* positions,
                               const int32_t* slots, const PagedRows* paged,
                               std::span<const int64_t> lens) {
    const model::ModelConfig& c = config();
    const ops::Stream& s = *stream_;
    const int64_t h = c.hidden_size, qd = c.q_dim(), kvd = c.kv_dim(), inter = c.intermediate_size;
    const float eps = static_cast<float>(c.rms_norm_eps);
    const model::ParamPtrs<const Bf16> wt(model_->index(), model_->weights_bf16());
    ops::Gemm& gemm = *gemm_;
    float* x = w.x.as<float>();
    Bf16* a = w.a.as<Bf16>();
    float* proj = w.proj.as<float>();
    TANDEM_RETURN_IF_ERROR(ops::embedding_forward(s, n, h, c.vocab_size, tokens, wt.embed, x));
    for (int l = 0; l < c.num_layers; ++l) {
        const auto& L = wt.layers[static_cast<size_t>(l)];
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(s, n, h, x, L.input_norm, eps, a, nullptr));
        const float* cos_table = cos_.as<const float>();
        const float* sin_table = sin_.as<const float>();
        TANDEM_RETURN_IF_ERROR(project_heads(s, gemm, c, n, a, {L.wq, L.bq, L.q_norm, c.num_heads},
                                             cos_table, sin_table, positions, proj,
                                             w.qb.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(project_heads(s, gemm, c, n, a,
                                             {L.wk, L.bk, L.k_norm, c.num_kv_heads}, cos_table,
                                             sin_table, positions, proj, w.kb.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(project_heads(s, gemm, c, n, a,
                                             {L.wv, L.bv, nullptr, c.num_kv_heads}, nullptr,
                                             nullptr, nullptr, proj, w.vb.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(kv_->write(s, l, n, slots, w.kb.as<Bf16>(), w.vb.as<Bf16>()));
        if (paged) {
            TANDEM_RETURN_IF_ERROR(kv_->attend(s, l, n, paged->tables, paged->width,
                                               paged->context_lens, w.qb.as<Bf16>(),
                                               w.o.as<float>()));
        } else {
            int64_t b0 = 0;
            for (const int64_t len : lens) {
                TANDEM_RETURN_IF_ERROR(kernels::attention_forward_cuda(
                    model::self_attention(c, len, 0), kernels::DType::kBF16,
                    w.qb.as<Bf16>() + b0 * qd, w.kb.as<Bf16>() + b0 * kvd,
                    w.vb.as<Bf16>() + b0 * kvd, w.o.as<float>() + b0 * qd,
                    w.lse.as<float>() + b0 * c.num_heads, s.handle()));
                b0 += len;
            }
        }
        TANDEM_RETURN_IF_ERROR(ops::to_bf16(s, n * qd, w.o.as<float>(), a));
        TANDEM_RETURN_IF_ERROR(gemm.linear(s, n, qd, h, a, L.wo, x, true));
        if (L.bo) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, h, L.bo, x));
        TANDEM_RETURN_IF_ERROR(ops::rmsnorm_forward(s, n, h, x, L.post_norm, eps, a, nullptr));
        float* g = proj;
        float* u = w.proj2.as<float>();
        TANDEM_RETURN_IF_ERROR(gemm.linear(s, n, h, inter, a, L.wg, g, false));
        TANDEM_RETURN_IF_ERROR(gemm.linear(s, n, h, inter, a, L.wu, u, false));
        if (L.bg) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, inter, L.bg, g));
        if (L.bu) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, inter, L.bu, u));
        TANDEM_RETURN_IF_ERROR(ops::swiglu_forward(s, n * inter, g, u, w.sw.as<Bf16>()));
        TANDEM_RETURN_IF_ERROR(gemm.linear(s, n, inter, h, w.sw.as<Bf16>(), L.wd, x, true));
        if (L.bd) TANDEM_RETURN_IF_ERROR(ops::bias_add(s, n, h, L.bd, x));
    }
    return ops::rmsnorm_forward(s, n, h, x, wt.final_norm, eps, w.f.as<Bf16>(), nullptr);
}

Status DeviceGenerator::decode_step(int64_t rows) {
    const model::ModelConfig& c = config();
    Work& w = *decode_;
    const int32_t* step = step_.as<const int32_t>();
    const model::ParamPtrs<const Bf16> wt(model_->index(), model_->weights_bf16());
    const PagedRows paged{step + layout_.table(), layout_.width, step + layout_.context_lens()};
    TANDEM_RETURN_IF_ERROR(layers(w, rows, step + layout_.tokens(), step + layout_.positions(),
                                  step + layout_.slots(), &paged, {}));
    TANDEM_RETURN_IF_ERROR(gemm_->linear(*stream_, rows, c.hidden_size, c.vocab_size,
                                         w.f.as<Bf16>(), wt.lm_head, w.logits.as<float>(), false));
    ops::SampleRows sr;
    sr.n = rows;
    sr.vocab = c.vocab_size;
    sr.logits = w.logits.as<float>();
    sr.stream = reinterpret_cast<const uint64_t*>(step + layout_.streams());
    sr.step = step + layout_.steps();
    sr.token = w.token.as<int32_t>();
    sr.logp = w.logp.as<float>();
    return ops::sample_tokens(*stream_, sampling_, sr);
}

Status DeviceGenerator::prefill(const PrefillBatch& batch, std::vector<int32_t>& tokens,
                                std::vector<float>& logprobs) {
    const model::ModelConfig& c = config();
    const ops::Stream& s = *stream_;
    const int64_t n = std::ssize(batch.tokens), count = std::ssize(batch.lens);
    const int64_t B = std::ssize(batch.streams);
    // Host inputs in one upload: tokens, positions, slots [n]; last rows [count]; logit rows,
    // steps [B] (step 0: zeros); streams (uint64, 8-byte aligned) [B]; for prompts continuing
    // the cached prefix, each row's context length [n] and block table [n, width].
    const int64_t rows_at = 3 * n + count, steps_at = rows_at + B;
    const int64_t streams_at = (steps_at + B + 1) & ~int64_t{1};
    const bool paged = !batch.tables.empty();
    const int64_t ctx_at = streams_at + 2 * B, tables_at = ctx_at + n;
    const int64_t size = paged ? tables_at + n * batch.width : ctx_at;
    std::vector<int32_t> host(static_cast<size_t>(size), 0);
    std::copy(batch.tokens.begin(), batch.tokens.end(), host.begin());
    std::copy(batch.positions.begin(), batch.positions.end(), host.begin() + n);
    std::copy(batch.slots.begin(), batch.slots.end(), host.begin() + 2 * n);
    int64_t end = 0;
    for (int64_t i = 0; i < count; ++i) {
        end += batch.lens[static_cast<size_t>(i)];
        host[static_cast<size_t>(3 * n + i)] = static_cast<int32_t>(end - 1);
    }
    for (int64_t b = 0; b < B; ++b) {
        host[static_cast<size_t>(rows_at + b)] = static_cast<int32_t>(b / batch.group);
    }
    std::memcpy(host.data() + streams_at, batch.streams.data(), static_cast<size_t>(B) * 8);
    if (paged) {
        for (int64_t i = 0, row = 0; i < count; ++i) {
            const int32_t* table = batch.tables.data() + i * batch.width;
            for (int64_t r = 0; r < batch.lens[static_cast<size_t>(i)]; ++r, ++row) {
                host[static_cast<size_t>(ctx_at + row)] = batch.positions[row] + 1;
                std::copy(table, table + batch.width, host.begin() + tables_at + row * batch.width);
            }
        }
    }
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer in, alloc_->allocate(host.size() * 4, "prefill inputs"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, in.as(), host.data(), host.size() * 4));
    kv_->written(batch.slots);  // blocks handed out anew hold uncompressed rows
    TANDEM_RETURN_IF_ERROR(kv_->flush(s));
    const int32_t* d = in.as<const int32_t>();
    Work w;
    TANDEM_RETURN_IF_ERROR(
        allocate_work(*alloc_, c, n, std::max<int64_t>({count, B, 1}), true, &w));
    const PagedRows rows{d + tables_at, batch.width, d + ctx_at};
    TANDEM_RETURN_IF_ERROR(layers(w, n, d, d + n, d + 2 * n, paged ? &rows : nullptr, batch.lens));
    // The system prompt's own prefill samples nothing.
    if (B == 0) return s.synchronize("device prefill of the system prompt");
    const model::ParamPtrs<const Bf16> wt(model_->index(), model_->weights_bf16());
    // The last row of each prompt (into the front of w.a, free after the layers) to its logits.
    TANDEM_RETURN_IF_ERROR(
        ops::gather_rows(s, count, c.hidden_size, d + 3 * n, w.f.as<Bf16>(), w.a.as<Bf16>()));
    TANDEM_RETURN_IF_ERROR(gemm_->linear(s, count, c.hidden_size, c.vocab_size, w.a.as<Bf16>(),
                                         wt.lm_head, w.logits.as<float>(), false));
    ops::SampleRows sr;
    sr.n = B;
    sr.vocab = c.vocab_size;
    sr.logits = w.logits.as<float>();
    sr.logit_row = d + rows_at;
    sr.stream = reinterpret_cast<const uint64_t*>(d + streams_at);
    sr.step = d + steps_at;
    sr.token = w.token.as<int32_t>();
    sr.logp = w.logp.as<float>();
    TANDEM_RETURN_IF_ERROR(ops::sample_tokens(s, sampling_, sr));
    tokens.resize(static_cast<size_t>(B));
    logprobs.resize(static_cast<size_t>(B));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, tokens.data(), w.token.as(), B * 4));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, logprobs.data(), w.logp.as(), B * 4));
    return s.synchronize("device prefill");
}

Status DeviceGenerator::copy_blocks(std::span<const int32_t> pairs) {
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer d, alloc_->allocate(pairs.size() * 4, "forked blocks"));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(*stream_, d.as(), pairs.data(), pairs.size() * 4));
    kv_->copied(pairs);
    return kv_->copy_blocks(*stream_, std::ssize(pairs) / 2, d.as<const int32_t>());
}

Status DeviceGenerator::decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                               std::vector<int32_t>& tokens, std::vector<float>& logprobs) {
    const ops::Stream& s = *stream_;
    // The step's inputs up to the last row's block table (a captured step reads them there).
    const size_t used = static_cast<size_t>(layout_.table() + rows * layout_.width);
    TANDEM_RETURN_IF_ERROR(ops::copy_to_device(s, step_.as(), step.data(), used * 4));
    // Background compression of the blocks due, before the step reads them (not captured).
    TANDEM_RETURN_IF_ERROR(kv_->before_decode(s, layout_, live, step));
    const bool use_graph = options_.cuda_graphs && !graphs_failed_;
    auto it = graphs_.find(rows);
    if (use_graph && it == graphs_.end() && ++bucket_uses_[rows] >= 2) {
        // The second step of a bucket: its GEMM plans exist (the first ran eagerly).
        auto g = ops::CapturedGraph::capture(s, [&] { return decode_step(rows); });
        if (g.ok()) {
            it = graphs_.emplace(rows, std::move(g).value()).first;
            ++graph_captures_;
        } else {
            graphs_failed_ = true;  // eager from now on; say why
            graph_note_ = "capture failed, steps run eagerly: " + g.status().message();
        }
    }
    if (use_graph && it != graphs_.end()) {
        TANDEM_RETURN_IF_ERROR(it->second->launch(s));
        ++graph_launches_;
    } else {
        TANDEM_RETURN_IF_ERROR(decode_step(rows));
    }
    tokens.resize(static_cast<size_t>(live));
    logprobs.resize(static_cast<size_t>(live));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, tokens.data(), decode_->token.as(), live * 4));
    TANDEM_RETURN_IF_ERROR(ops::copy_to_host(s, logprobs.data(), decode_->logp.as(), live * 4));
    return s.synchronize("device decode step");
}

Result<std::vector<model::Completion>> DeviceGenerator::generate(
    std::span<const std::vector<int32_t>> prompts, int group_size, const model::SamplingOptions& o,
    DeviceGenerateStats* stats) {
    ops::DeviceSampling ds;
    ds.temperature = static_cast<float>(o.temperature);
    ds.top_p = static_cast<float>(o.top_p);
    ds.top_k = o.top_k;
    ds.seed = o.seed;
    if (ds.temperature != sampling_.temperature || ds.top_p != sampling_.top_p ||
        ds.top_k != sampling_.top_k || ds.seed != sampling_.seed) {
        graphs_.clear();  // the sampling options are kernel arguments of the captured step
        bucket_uses_.clear();
    }
    sampling_ = ds;
    graph_launches_ = graph_captures_ = 0;
    alloc_->reset_peak();
    GenerationCounts counts;
    TANDEM_ASSIGN_OR_RETURN(auto out, loop_->run(*this, config(), prompts, group_size, o, &counts));
    if (stats) {
        DeviceGenerateStats st;
        st.prompt_tokens = counts.prompt_tokens;
        st.generated_tokens = counts.generated_tokens;
        st.decode_steps = counts.decode_steps;
        st.graph_launches = graph_launches_;
        st.graph_captures = graph_captures_;
        st.graph_note = graph_note_;
        st.peak_blocks = counts.peak_blocks;
        st.kv = kv_->stats();
        st.kv_pool_bytes = st.kv.pool_bytes;
        st.device_peak_bytes = static_cast<int64_t>(alloc_->peak_bytes());
        st.waves = std::ssize(counts.wave_prompts);
        st.admission_waits = counts.admission_waits;
        st.prefix_hits = counts.prefix_hits;
        st.prefix_bytes = counts.prefix_bytes;
        st.evictions = counts.evictions;
        *stats = st;
    }
    return out;
}

}  // namespace tandem::gpu
