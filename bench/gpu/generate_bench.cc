// tandem-bench-gpu-generate: rollout generation on the device (gpu::DeviceGenerator) at the shapes
// of Qwen2.5-0.5B and Llama-3.2-1B with random weights: `prompts` random prompts of `prompt-len`
// tokens, `group` samples each, `new` tokens per sample (no stop token, so every sample runs to the
// end), temperature 1. One JSON object per line and per model and CUDA-graph setting: generated
// tokens per second over the whole call (prefill included), decode steps, graph launches, the
// allocator's peak and the KV pool. bench/gpu/torch_generate_baseline.py measures
// transformers.generate on the same shapes in the same run (deploy/gpu/run.sh pairs them).
// Without a device it prints one line {"bench": "gpu_generate", "skipped": true, ...}.
// --prefix-tokens N: the prompts' first N tokens are one system prompt, which the generator caches
// (rollout.kv_cache.prefix_tokens): every prompt but the first forks it; the timed call prefills
// it again when its KV pool is larger than the warm-up's (a grown pool starts empty), which
// "prefix_prefills" says. --budget-mib M: rollout.kv_cache.budget_bytes (admission waves).
// --kv-dtype f32|bf16|int8|int4|int2: rollout.kv_cache.dtype (f32: bf16 rows; the others
// quantized pages in blocks of --kv-group tokens; int2: bf16 window pages sealed into int2 KIVI;
// "kv_dtype" is the written format, "kv_second_dtype" the sealed or compressed one),
// --compress-after N: compress_after_tokens (to int2 KIVI), --splits S: decode attention key splits
// (0: automatic; 1: no split-K). Against the default run of the same shapes these give the cost of
// quantized pages and what split-K buys on long contexts (few rows, --prompt-len in the thousands).
//
//   tandem-bench-gpu-generate [--model qwen2.5-0.5b|llama-3.2-1b|all] [--prompts 64] [--group 8]
//                             [--new 512] [--prompt-len 128] [--graphs on|off|both]
//                             [--prefix-tokens 0] [--budget-mib 0] [--kv-dtype f32]
//                             [--kv-group 32] [--compress-after 0] [--splits 0]
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/model_shapes.h"
#include "common/config/kv_cache_spec.h"
#include "common/gpu/device_generate.h"
#include "common/model/params.h"
#include "kernels/device.h"

namespace {

using namespace tandem;
using SteadyClock = std::chrono::steady_clock;

using Shape = bench::ModelShape;

// The shapes tandem-bench-gpu-model times, with max_seq_len cut to what generation needs (the
// RoPE table is max_seq_len rows).
std::vector<Shape> shapes(int64_t max_seq) {
    std::vector<Shape> out = bench::reference_model_shapes();
    for (Shape& sh : out) sh.config.max_seq_len = static_cast<int>(max_seq);
    return out;
}

// Deterministic uniform values of std ~0.02 (xorshift); norms at 1.
void fill(std::vector<float>& p, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (auto& v : p) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v = (static_cast<float>(x >> 40) / static_cast<float>(1 << 24) - 0.5f) * 0.07f;
    }
}

// A string as a JSON string body (quotes and backslashes become ', control characters spaces).
std::string json_text(std::string s) {
    for (char& c : s) {
        if (c == '"' || c == '\\') c = '\'';
        if (static_cast<unsigned char>(c) < 0x20) c = ' ';
    }
    return s;
}

void skip(const std::string& why) {
    std::printf("{\"bench\": \"gpu_generate\", \"skipped\": true, \"reason\": \"%s\"}\n",
                json_text(why).c_str());
}

}  // namespace

int main(int argc, char** argv) {
    std::string which = "all", graphs = "both";
    int prompts = 64, group = 8, new_tokens = 512, prompt_len = 128, prefix_tokens = 0;
    int64_t budget_mib = 0;
    std::string kv_dtype = "f32";
    config::KvCacheSpec kv;
    int splits = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i];
        if (a == "--model")
            which = argv[i + 1];
        else if (a == "--prompts")
            prompts = std::atoi(argv[i + 1]);
        else if (a == "--group")
            group = std::atoi(argv[i + 1]);
        else if (a == "--new")
            new_tokens = std::atoi(argv[i + 1]);
        else if (a == "--prompt-len")
            prompt_len = std::atoi(argv[i + 1]);
        else if (a == "--graphs")
            graphs = argv[i + 1];
        else if (a == "--prefix-tokens")
            prefix_tokens = std::atoi(argv[i + 1]);
        else if (a == "--budget-mib")
            budget_mib = std::atoll(argv[i + 1]);
        else if (a == "--kv-dtype")
            kv_dtype = argv[i + 1];
        else if (a == "--kv-group")
            kv.group = std::atoi(argv[i + 1]);
        else if (a == "--compress-after")
            kv.compress_after_tokens = std::atoi(argv[i + 1]);
        else if (a == "--splits")
            splits = std::atoi(argv[i + 1]);
        else {
            std::fprintf(stderr, "tandem-bench-gpu-generate: unknown option %s\n", a.c_str());
            return 2;
        }
    }
    if (prefix_tokens < 0 || prefix_tokens >= prompt_len || budget_mib < 0) {
        std::fprintf(stderr,
                     "tandem-bench-gpu-generate: --prefix-tokens must be in [0, --prompt-len) and "
                     "--budget-mib >= 0\n");
        return 2;
    }
    bool dtype_known = false;
    for (const auto& [value, name] : config::EnumNames<config::KvCacheDType>::kNames) {
        if (kv_dtype == name) {
            kv.dtype = value;
            dtype_known = true;
        }
    }
    if (!dtype_known || kv.group < 1 || kv.compress_after_tokens < 0 || splits < 0) {
        std::fprintf(stderr,
                     "tandem-bench-gpu-generate: --kv-dtype is one of %s; --kv-group >= 1, "
                     "--compress-after >= 0, --splits >= 0\n",
                     config::enum_choices<config::KvCacheDType>().c_str());
        return 2;
    }
    std::string why;
    const auto devices = kernels::cuda_devices(&why);
    if (devices.empty()) {
        skip(why);
        return 0;
    }
    for (const Shape& sh : shapes(prompt_len + new_tokens)) {
        if (which != "all" && which != sh.name) continue;
        auto index =
            model::ParamIndex::create(sh.config, model::make_param_layout(sh.config).value());
        if (!index.ok()) {
            skip(index.status().to_string());
            return 1;
        }
        std::vector<float> params(index->elements);
        fill(params, 1);
        std::vector<std::vector<int32_t>> batch(static_cast<size_t>(prompts));
        uint64_t x = 99;
        for (auto& p : batch) {
            if (&p != &batch[0]) p.assign(batch[0].begin(), batch[0].begin() + prefix_tokens);
            for (int i = static_cast<int>(p.size()); i < prompt_len; ++i) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                p.push_back(static_cast<int32_t>((x >> 33) % sh.config.vocab_size));
            }
        }
        for (const bool use_graphs : {true, false}) {
            if ((graphs == "on" && !use_graphs) || (graphs == "off" && use_graphs)) continue;
            gpu::DeviceGenerateOptions opt;
            opt.cuda_graphs = use_graphs;
            opt.eos_token = -1;  // every sample generates `new` tokens
            opt.prefix_tokens = prefix_tokens;
            opt.kv_budget_bytes = budget_mib << 20;
            opt.kv_cache = model::KvCacheOptions::from_spec(kv, opt.block_tokens);
            opt.decode_splits = splits;
            auto gen = gpu::DeviceGenerator::create(sh.config, opt);
            if (!gen.ok()) {
                skip(gen.status().to_string());
                return 1;
            }
            if (Status st = (*gen)->load(params.data()); !st.ok()) {
                skip(st.to_string());
                return 1;
            }
            (*gen)->set_weights_version(1);  // the cached prefix outlives the warm-up call
            model::SamplingOptions so;
            so.temperature = 1.0;
            so.seed = 7;
            so.max_new_tokens = 2;  // warm-up: cuBLASLt plans, allocator blocks
            if (auto w = (*gen)->generate(batch, group, so); !w.ok()) {
                skip(w.status().to_string());
                return 1;
            }
            so.max_new_tokens = new_tokens;
            const int64_t prefills0 = (*gen)->prefix_stats().prefills;
            gpu::DeviceGenerateStats st;
            const auto t0 = SteadyClock::now();
            auto out = (*gen)->generate(batch, group, so, &st);
            const double s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
            if (!out.ok()) {
                skip(out.status().to_string());
                return 1;
            }
            std::printf(
                "{\"bench\": \"gpu_generate\", \"model\": \"%s\", \"device\": \"%s\", "
                "\"cuda_graphs\": %s, \"prompts\": %d, \"group\": %d, \"prompt_len\": %d, "
                "\"new_tokens\": %d, \"generated_tokens\": %ld, \"seconds\": %.4f, "
                "\"tokens_per_s\": %.1f, \"decode_steps\": %ld, \"graph_launches\": %ld, "
                "\"graph_note\": \"%s\", \"peak_blocks\": %ld, \"kv_pool_mib\": %.1f, "
                "\"device_peak_mib\": %.1f, \"gemm\": \"%s\", \"prefix_tokens\": %d, "
                "\"prefix_hits\": %ld, \"prefix_prefills\": %ld, \"prompt_rows\": %ld, "
                "\"budget_mib\": %ld, \"waves\": %ld, \"kv_dtype\": \"%s\", \"kv_second_dtype\": "
                "\"%s\", "
                "\"kv_block_bytes\": %ld, \"kv_block_tokens\": %d, \"compress_after\": %d, "
                "\"kv_compressions\": %ld, \"splits\": %d, \"last_splits\": %d}\n",
                sh.name, devices[0].name.c_str(), use_graphs ? "true" : "false", prompts, group,
                prompt_len, new_tokens, static_cast<long>(st.generated_tokens), s,
                static_cast<double>(st.generated_tokens) / s, static_cast<long>(st.decode_steps),
                static_cast<long>(st.graph_launches), json_text(st.graph_note).c_str(),
                static_cast<long>(st.peak_blocks), st.kv_pool_bytes / 1048576.0,
                st.device_peak_bytes / 1048576.0, json_text((*gen)->gemm().description()).c_str(),
                prefix_tokens, static_cast<long>(st.prefix_hits),
                static_cast<long>((*gen)->prefix_stats().prefills - prefills0),
                static_cast<long>(st.prompt_tokens), static_cast<long>(budget_mib),
                static_cast<long>(st.waves), st.kv.dtype, st.kv.compressed_dtype,
                static_cast<long>(st.kv.block_bytes), st.kv.block_tokens, kv.compress_after_tokens,
                static_cast<long>(st.kv.compressions), splits, st.kv.last_splits);
            std::fflush(stdout);
        }
    }
    return 0;
}
