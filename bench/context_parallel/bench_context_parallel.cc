// tandem-bench-context-parallel: generation of long contexts on one device against the same
// generation with the KV cache sharded over P ranks (ring prefill + sharded decode, ranks are
// threads of this process on the in-process ring). Prints one JSON object per case:
//   {"case":"context_parallel","context":4160,"ranks":2,"prefill_s":..,"decode_ms_per_step":..,
//    "single_prefill_s":..,"single_decode_ms_per_step":..,"prefill_ratio":..,"decode_ratio":..,
//    "one_rank_prefill_s":..,"one_rank_decode_ms_per_step":..,"prefill_ratio_vs_one_rank":..,
//    "decode_ratio_vs_one_rank":..,"peak_tokens_per_rank":..,"tokens_match":true}
// "single" is the paged single-device engine (GroupGenerator, 16-token blocks); "one rank" is the
// sharded engine with P = 1 (contiguous KV, no ring partner), which isolates the ring's cost.
// ratio = sharded / single (best of --repeat runs each, after a warm-up; decode per step is
// (best full run - best prefill run) / (steps - 1)). BLAS runs on one thread (one per rank).
//
// --case device: the device ring against one device instead
// (bench/context_parallel/device_case.cc).
//
// Usage: tandem-bench-context-parallel [--quick] [--repeat N] [--case cpu|device]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/model/context_parallel.h"
#include "common/model/generate.h"
#include "common/model/layers.h"
#include "common/model/model_weights.h"

namespace {

using namespace tandem;
using namespace tandem::model;

struct Timing {
    double prefill_s = 1e30;  // generate() with one new token: prefill plus one head
    double total_s = 1e30;    // generate() with max_new_tokens
    GenerateStats stats;
    std::vector<Completion> out;
};

double seconds(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Result<Timing> measure(GroupGenerator& gen, const ModelWeights& w,
                       const std::vector<std::vector<int32_t>>& prompts, int group, int new_tokens,
                       int repeat) {
    Timing t;
    SamplingOptions so;
    so.seed = 11;
    so.max_new_tokens = 2;  // warm-up: workspaces, pools, rank threads
    TANDEM_ASSIGN_OR_RETURN(auto warm, gen.generate(w.data(), prompts, group, so));
    (void)warm;
    for (int i = 0; i < repeat; ++i) {
        so.max_new_tokens = 1;
        auto t0 = std::chrono::steady_clock::now();
        TANDEM_ASSIGN_OR_RETURN(auto a, gen.generate(w.data(), prompts, group, so));
        t.prefill_s = std::min(t.prefill_s, seconds(t0));
        so.max_new_tokens = new_tokens;
        t0 = std::chrono::steady_clock::now();
        GenerateStats st;
        TANDEM_ASSIGN_OR_RETURN(t.out, gen.generate(w.data(), prompts, group, so, &st));
        t.total_s = std::min(t.total_s, seconds(t0));
        t.stats = st;
    }
    return t;
}

// The sharded engine on one rank (contiguous KV, no ring partner): the baseline that isolates
// what the ring itself costs.
Result<Timing> measure_one_rank(const ModelConfig& cfg, const ModelWeights& w,
                                const std::vector<std::vector<int32_t>>& prompts, int group,
                                int new_tokens, int repeat) {
    ContextParallelOptions cp;
    cp.ranks = 1;
    TANDEM_ASSIGN_OR_RETURN(auto gen, ContextParallelGenerator::create(cfg, cp));
    std::vector<ContextParallelGroup> groups;
    for (size_t p = 0; p < prompts.size(); ++p) {
        groups.push_back({static_cast<int32_t>(p), {}});
        for (int g = 0; g < group; ++g) {
            groups.back().members.push_back(static_cast<int32_t>(p * group + g));
        }
    }
    Timing t;
    auto once = [&](int steps) -> Result<double> {
        SamplingOptions so;
        so.seed = 11;
        so.max_new_tokens = steps;
        std::vector<Completion> out(prompts.size() * group);
        std::vector<Rng> rngs(out.size());
        for (size_t b = 0; b < out.size(); ++b) {
            rngs[b].reseed(mix_seed(so.seed, b / group, b % group));
        }
        const auto t0 = std::chrono::steady_clock::now();
        TANDEM_RETURN_IF_ERROR(
            gen->generate(w.data(), prompts, groups, so, /*stop_ids=*/{}, rngs, out, nullptr));
        const double s = seconds(t0);
        t.out = std::move(out);
        return s;
    };
    TANDEM_ASSIGN_OR_RETURN(double warm, once(2));
    (void)warm;
    for (int i = 0; i < repeat; ++i) {
        TANDEM_ASSIGN_OR_RETURN(double p, once(1));
        t.prefill_s = std::min(t.prefill_s, p);
        TANDEM_ASSIGN_OR_RETURN(double f, once(new_tokens));
        t.total_s = std::min(t.total_s, f);
    }
    return t;
}

}  // namespace

namespace tandem::bench {
int run_device_case(bool quick, int repeat);
}  // namespace tandem::bench

namespace {

int run(int argc, char** argv) {
    bool quick = false;
    bool device = false;
    int repeat = 3;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        if (a == "--quick") {
            quick = true;
        } else if (a == "--repeat" && i + 1 < argc) {
            repeat = std::max(1, std::stoi(argv[++i]));
        } else if (a == "--case" && i + 1 < argc &&
                   (std::string(argv[i + 1]) == "cpu" || std::string(argv[i + 1]) == "device")) {
            device = std::string(argv[++i]) == "device";
        } else {
            std::fprintf(stderr,
                         "usage: tandem-bench-context-parallel [--quick] [--repeat N] "
                         "[--case cpu|device]\n");
            return 2;
        }
    }
    if (device) return tandem::bench::run_device_case(quick, repeat);
    set_blas_threads(1);
    ModelConfig cfg;
    cfg.vocab_size = 15;
    cfg.hidden_size = 256;
    cfg.num_layers = 4;
    cfg.num_heads = 8;
    cfg.num_kv_heads = 2;
    cfg.intermediate_size = 704;
    cfg.max_seq_len = 8192;
    auto w = ModelWeights::random(cfg, 5, 0.3);
    if (!w.ok()) {
        std::fprintf(stderr, "%s\n", w.status().to_string().c_str());
        return 1;
    }
    const int new_tokens = quick ? 16 : 64;
    const int group = 4;
    const std::vector<int> prompt_lens =
        quick ? std::vector<int>{1024} : std::vector<int>{2048, 4096};
    for (const int plen : prompt_lens) {
        std::vector<std::vector<int32_t>> prompts(1);
        prompts[0].push_back(1);
        for (int i = 1; i < plen; ++i) prompts[0].push_back(3 + (i * 7) % 12);
        const int64_t ctx = plen + new_tokens;
        GeneratorOptions single_opts;
        single_opts.eos_token = -1;  // run every step
        auto single = GroupGenerator::create(cfg, single_opts);
        if (!single.ok()) return 1;
        auto base = measure(*single, *w, prompts, group, new_tokens, repeat);
        if (!base.ok()) {
            std::fprintf(stderr, "%s\n", base.status().to_string().c_str());
            return 1;
        }
        const double base_decode = (base->total_s - base->prefill_s) / (new_tokens - 1);
        auto one = measure_one_rank(cfg, *w, prompts, group, new_tokens, repeat);
        if (!one.ok()) {
            std::fprintf(stderr, "%s\n", one.status().to_string().c_str());
            return 1;
        }
        const double one_decode = (one->total_s - one->prefill_s) / (new_tokens - 1);
        for (const int ranks : {2, 4}) {
            GeneratorOptions o = single_opts;
            o.context_parallel = ranks;
            o.max_tokens_per_device = (ctx + ranks - 1) / ranks;
            auto gen = GroupGenerator::create(cfg, o);
            if (!gen.ok()) return 1;
            auto t = measure(*gen, *w, prompts, group, new_tokens, repeat);
            if (!t.ok()) {
                std::fprintf(stderr, "%s\n", t.status().to_string().c_str());
                return 1;
            }
            bool match = t->out.size() == base->out.size() && one->out.size() == base->out.size();
            for (size_t i = 0; match && i < t->out.size(); ++i) {
                match = t->out[i].tokens == base->out[i].tokens &&
                        one->out[i].tokens == base->out[i].tokens;
            }
            const double decode = (t->total_s - t->prefill_s) / (new_tokens - 1);
            nlohmann::json j;
            j["case"] = "context_parallel";
            j["context"] = ctx;
            j["group"] = group;
            j["ranks"] = ranks;
            j["max_tokens_per_device"] = o.max_tokens_per_device;
            j["prefill_s"] = t->prefill_s;
            j["decode_ms_per_step"] = decode * 1e3;
            j["single_prefill_s"] = base->prefill_s;
            j["single_decode_ms_per_step"] = base_decode * 1e3;
            j["one_rank_prefill_s"] = one->prefill_s;
            j["one_rank_decode_ms_per_step"] = one_decode * 1e3;
            j["prefill_ratio"] = t->prefill_s / base->prefill_s;
            j["decode_ratio"] = decode / base_decode;
            j["prefill_ratio_vs_one_rank"] = t->prefill_s / one->prefill_s;
            j["decode_ratio_vs_one_rank"] = decode / one_decode;
            j["peak_tokens_per_rank"] = t->stats.peak_tokens_per_rank;
            j["tokens_match"] = match;
            std::printf("%s\n", j.dump().c_str());
            std::fflush(stdout);
        }
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) { return run(argc, argv); }
