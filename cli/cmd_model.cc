// `tandem model info|tokenize|logits|generate|eval|create`: inspecting and running a Hugging Face
// model directory with the built-in engine (CPU, fp32 compute; BF16/F16 weights stay in their
// stored dtype for logits, generate and eval, widened a layer at a time). Bad input (a directory
// the engine refuses, tokens outside the vocabulary, malformed options) exits 2 with the error.
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cli/args.h"
#include "cli/commands.h"
#include "common/config/loader.h"
#include "common/model/generate.h"
#include "common/model/hf_model.h"
#include "common/model/inference.h"
#include "common/model/kv_cache.h"
#include "common/model/transformer.h"
#include "common/rl/text_task.h"
#include "common/tokenizer/tokenizer.h"

namespace tandem::cli {

namespace {

constexpr const char* kModelUsage =
    "usage: tandem model COMMAND --model DIR [OPTIONS]\n"
    "  info      [--output json]   architecture, sizes, RoPE, stored dtypes, resident bytes,\n"
    "                              tokenizer; reads headers only\n"
    "  tokenize  --text TEXT [--add-special] [--output json]\n"
    "                              token ids of TEXT (--add-special: the post-processor's "
    "BOS/EOS)\n"
    "  logits    --tokens 1,2,3 --out FILE.npy\n"
    "                              float32 [T, vocab] logits of every position\n"
    "  generate  (--prompt TEXT | --tokens 1,2,3) [--max-new-tokens N] [--temperature T]\n"
    "            [--top-p P] [--seed S] [--output json]\n"
    "                              one completion (temperature 0: greedy); stops at any EOS id\n"
    "                              of tokenizer.json, config.json or generation_config.json\n"
    "  create    --config CONFIG.json [--seed S] [--std X] [--side-files-from DIR]\n"
    "                              a new directory DIR (--model) with random weights as "
    "transformers\n"
    "                              initialises them (N(0, std) matrices, norms 1, biases 0) and "
    "the\n"
    "                              tokenizer files of --side-files-from\n"
    "  eval      -f JOB.yaml [--limit N] [--output json] [KEY.PATH=VALUE ...]\n"
    "                              mean reward of the job's text task (task.name text), greedy,\n"
    "                              on the first N examples of its order (default: all)\n"
    "DIR is a Hugging Face directory: config.json, model.safetensors or sharded with\n"
    "model.safetensors.index.json, tokenizer.json for text. Supported: LlamaForCausalLM,\n"
    "Qwen2ForCausalLM, Qwen3ForCausalLM (docs/model.md).\n"
    "Exit codes: 0 success, 1 failure, 2 bad usage or input.\n";

// An error with the exit code it maps to.
struct Failure {
    int code;
    std::string message;
};

int fail(const Failure& f) {
    std::cerr << "tandem model: " << f.message << "\n";
    return f.code;
}

// Input errors (what the user gave is wrong or missing) exit 2; the rest 1.
Failure from_status(const Status& s) {
    const bool input =
        s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound;
    return {input ? kExitUsage : kExitFailed, s.message()};
}

std::optional<std::vector<int32_t>> parse_ids(const std::string& text) {
    std::vector<int32_t> ids;
    size_t pos = 0;
    while (pos <= text.size()) {
        const size_t comma = std::min(text.find(',', pos), text.size());
        int32_t v = 0;
        const char* b = text.data() + pos;
        const char* e = text.data() + comma;
        while (b < e && *b == ' ') ++b;
        auto [p, ec] = std::from_chars(b, e, v);
        if (ec != std::errc() || p != e || b == e) return std::nullopt;
        ids.push_back(v);
        pos = comma + 1;
    }
    if (ids.empty()) return std::nullopt;
    return ids;
}

template <typename T>
std::optional<T> parse_number(const std::string& text) {
    T v{};
    auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc() || p != text.data() + text.size()) return std::nullopt;
    return v;
}

std::optional<tokenizer::Tokenizer> load_tokenizer(const std::string& dir, Failure& error) {
    if (!std::filesystem::exists(dir + "/tokenizer.json")) {
        error = {kExitUsage, fmt::format("{}/tokenizer.json: no tokenizer in the directory", dir)};
        return std::nullopt;
    }
    auto tok = tokenizer::Tokenizer::load(dir);
    if (!tok.ok()) {
        error = from_status(tok.status());
        return std::nullopt;
    }
    return std::move(tok).value();
}

Status check_tokens(const model::ModelConfig& c, const std::vector<int32_t>& ids) {
    for (size_t i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= c.vocab_size) {
            return invalid_argument(
                fmt::format("--tokens: id {} (position {}) is outside the "
                            "vocabulary [0, {})",
                            ids[i], i, c.vocab_size));
        }
    }
    if (static_cast<int64_t>(ids.size()) > c.max_seq_len) {
        return invalid_argument(
            fmt::format("--tokens: {} tokens, more than max_position_embeddings {}", ids.size(),
                        c.max_seq_len));
    }
    return Status();
}

// --- info ---------------------------------------------------------------------------------------

nlohmann::json describe(const model::HfDirectory& d) {
    const model::ModelConfig& c = d.config.model;
    nlohmann::json rope{{"type", std::string(model::rope_type_name(c.rope_scaling.type))},
                        {"theta", c.rope_theta}};
    if (c.rope_scaling.type != model::RopeScaling::Type::kDefault) {
        rope["factor"] = c.rope_scaling.factor;
    }
    if (c.rope_scaling.type == model::RopeScaling::Type::kLlama3) {
        rope["low_freq_factor"] = c.rope_scaling.low_freq_factor;
        rope["high_freq_factor"] = c.rope_scaling.high_freq_factor;
        rope["original_max_position_embeddings"] = c.rope_scaling.original_max_position_embeddings;
    }
    auto layout = model::make_param_layout(c);
    uint64_t stored = 0;
    for (const auto& [dtype, bytes] : d.stored_bytes_by_dtype) stored += bytes;
    nlohmann::json j{
        {"directory", d.dir},
        {"architecture", std::string(model::architecture_name(c.architecture))},
        {"model_type", std::string(model::model_type_name(c.architecture))},
        {"layers", c.num_layers},
        {"hidden_size", c.hidden_size},
        {"intermediate_size", c.intermediate_size},
        {"attention_heads", c.num_heads},
        {"kv_heads", c.num_kv_heads},
        {"head_dim", c.head_dim()},
        {"vocab_size", c.vocab_size},
        {"max_position_embeddings", c.max_seq_len},
        {"rms_norm_eps", c.rms_norm_eps},
        {"rope", rope},
        {"tied_embeddings", c.tie_embeddings},
        {"qkv_bias", c.qkv_bias},
        {"o_bias", c.o_bias},
        {"mlp_bias", c.mlp_bias},
        {"qk_norm", c.qk_norm},
        {"parameters", d.parameters},
        {"files", d.files},
        {"stored_bytes", stored},
        {"stored_dtypes", d.stored_bytes_by_dtype},
        {"compute_dtype", "F32"},
        // The weights as logits/generate/eval hold them: BF16/F16 stay as stored.
        {"resident_dtype", std::string(weights::dtype_name(model::resident_dtype(d)))},
        {"resident_bytes", model::resident_bytes(d)},
        // As a trainer holds them (fp32 master weights).
        {"f32_bytes", layout.ok() ? layout->total_bytes() : 0},
    };
    if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
    // config.json's and generation_config.json's eos ids.
    auto eos = model::model_eos_ids(d.dir);
    if (eos.ok() && !eos->empty()) j["eos_token_ids"] = *eos;
    return j;
}

int run_info(const Args& args, const std::string& dir) {
    auto d = model::inspect_hf_directory(dir);
    if (!d.ok()) return fail(from_status(d.status()));
    nlohmann::json j = describe(*d);
    if (std::filesystem::exists(dir + "/tokenizer.json")) {
        auto tok = tokenizer::Tokenizer::load(dir);
        j["tokenizer"] = tok.ok() ? tok->describe() : "unreadable: " + tok.status().message();
    } else {
        j["tokenizer"] = nullptr;
    }
    if (args.get("--output") == "json") {
        std::cout << j.dump(2) << "\n";
        return kExitOk;
    }
    auto yes_no = [](bool b) { return b ? "yes" : "no"; };
    std::string dtypes;
    for (const auto& [dtype, bytes] : d->stored_bytes_by_dtype) {
        dtypes += fmt::format("{}{} ({} bytes)", dtypes.empty() ? "" : ", ", dtype, bytes);
    }
    const model::ModelConfig& c = d->config.model;
    std::cout << fmt::format(
        "{}: {} ({})\n"
        "  layers {}, hidden {}, intermediate {}, heads {} (kv {}), head_dim {}, vocab {}\n"
        "  max positions {}, rope {} (theta {}), rms_norm_eps {}\n"
        "  tied embeddings {}, qkv bias {}, o bias {}, mlp bias {}, q/k norm {}\n"
        "  parameters {}, stored as {} in {} file(s)\n"
        "  resident {} bytes as {} (F32 compute; {} bytes as F32 for training)\n"
        "  tokenizer: {}\n",
        dir, j["architecture"].get<std::string>(), j["model_type"].get<std::string>(), c.num_layers,
        c.hidden_size, c.intermediate_size, c.num_heads, c.num_kv_heads, c.head_dim(), c.vocab_size,
        c.max_seq_len, j["rope"]["type"].get<std::string>(), c.rope_theta, c.rms_norm_eps,
        yes_no(c.tie_embeddings), yes_no(c.qkv_bias), yes_no(c.o_bias), yes_no(c.mlp_bias),
        yes_no(c.qk_norm), d->parameters, dtypes, d->files.size(),
        j["resident_bytes"].get<uint64_t>(), j["resident_dtype"].get<std::string>(),
        j["f32_bytes"].get<uint64_t>(),
        j["tokenizer"].is_null() ? std::string("none") : j["tokenizer"].get<std::string>());
    return kExitOk;
}

// --- tokenize -----------------------------------------------------------------------------------

int run_tokenize(const Args& args, const std::string& dir) {
    const auto text = args.get("--text");
    if (!text) return fail({kExitUsage, "tokenize needs --text TEXT"});
    Failure error{};
    auto tok = load_tokenizer(dir, error);
    if (!tok) return fail(error);
    auto ids = tok->encode(*text, args.has("--add-special"));
    if (!ids.ok()) return fail(from_status(ids.status()));
    if (args.get("--output") == "json") {
        std::cout << nlohmann::json{{"ids", *ids}}.dump() << "\n";
    } else {
        std::cout << fmt::format("{}\n", fmt::join(*ids, " "));
    }
    return kExitOk;
}

// --- logits -------------------------------------------------------------------------------------

Status write_npy_f32(const std::string& path, int64_t rows, int64_t cols,
                     const std::vector<float>& data) {
    std::string header =
        fmt::format("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}", rows, cols);
    // Magic, version 1.0, header length; the header is padded with spaces to a multiple of 64.
    const size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    const std::string tmp = path + ".tmp";
    {
        std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
        if (!f) return unavailable(fmt::format("{}: cannot open for writing", tmp));
        f.write("\x93NUMPY\x01\x00", 8);
        const uint16_t len = static_cast<uint16_t>(header.size());
        const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
        f.write(len_bytes, 2);
        f.write(header.data(), static_cast<std::streamsize>(header.size()));
        f.write(reinterpret_cast<const char*>(data.data()),
                static_cast<std::streamsize>(sizeof(float) * data.size()));
        if (!f.flush()) return unavailable(fmt::format("{}: write failed", tmp));
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) return unavailable(fmt::format("{}: rename failed: {}", path, ec.message()));
    return Status();
}

int run_logits(const Args& args, const std::string& dir) {
    const auto tokens_arg = args.get("--tokens");
    const auto out = args.get("--out");
    if (!tokens_arg || !out)
        return fail({kExitUsage, "logits needs --tokens 1,2,3 and --out FILE.npy"});
    const auto ids = parse_ids(*tokens_arg);
    if (!ids) {
        return fail(
            {kExitUsage,
             fmt::format("--tokens: expected comma-separated integers, got \"{}\"", *tokens_arg)});
    }
    auto d = model::inspect_hf_directory(dir);
    if (!d.ok()) return fail(from_status(d.status()));
    if (Status s = check_tokens(d->config.model, *ids); !s.ok()) return fail(from_status(s));
    const model::ModelConfig& c = d->config.model;
    const int64_t rows = static_cast<int64_t>(ids->size()), vocab = c.vocab_size;
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    if (model::resident_dtype(*d) == weights::DType::kF32) {
        // The training path's forward, so a checkpoint's logits are exactly the trainer's.
        auto loaded = model::load_hf_directory(*d);
        if (!loaded.ok()) return fail(from_status(loaded.status()));
        auto t = model::Transformer<float>::create(c);
        if (!t.ok()) return fail(from_status(t.status()));
        model::PackedBatch batch;
        batch.add_sequence(*ids, 1);
        Status s = t->logits(loaded->weights.data(), batch, logits.data());
        if (!s.ok()) return fail(from_status(s));
    } else {
        // BF16/F16 weights stay as stored; the inference engine widens a layer at a time.
        auto stored = model::load_hf_directory_stored(*d);
        if (!stored.ok()) return fail(from_status(stored.status()));
        auto engine = model::InferenceEngine::create(c);
        if (!engine.ok()) return fail(from_status(engine.status()));
        auto cache = model::PagedKvCache::create(c, model::KvCacheOptions{});
        if (!cache.ok()) return fail(from_status(cache.status()));
        const model::ForwardItem item{cache->create(), *ids};
        Status s = engine->forward(stored->view(), *cache, std::span(&item, 1), logits.data(),
                                   /*all_rows=*/true);
        if (!s.ok()) return fail(from_status(s));
    }
    if (Status s = write_npy_f32(*out, rows, vocab, logits); !s.ok()) {
        return fail({kExitFailed, s.message()});
    }
    std::cerr << fmt::format("{}: float32 logits [{}, {}]\n", *out, rows, vocab);
    return kExitOk;
}

// --- generate -----------------------------------------------------------------------------------

int run_generate(const Args& args, const std::string& dir) {
    const auto prompt = args.get("--prompt");
    const auto tokens_arg = args.get("--tokens");
    if (prompt.has_value() == tokens_arg.has_value()) {
        return fail({kExitUsage, "generate needs exactly one of --prompt TEXT and --tokens 1,2,3"});
    }
    model::SamplingOptions sampling;
    sampling.max_new_tokens = 32;
    sampling.temperature = 0.0;
    if (auto v = args.get("--max-new-tokens")) {
        auto n = parse_number<int>(*v);
        if (!n || *n < 1)
            return fail({kExitUsage, "--max-new-tokens: expected a positive integer"});
        sampling.max_new_tokens = *n;
    }
    if (auto v = args.get("--temperature")) {
        auto x = parse_number<double>(*v);
        if (!x || *x < 0) return fail({kExitUsage, "--temperature: expected a number >= 0"});
        sampling.temperature = *x;
    }
    if (auto v = args.get("--top-p")) {
        auto x = parse_number<double>(*v);
        if (!x || !(*x > 0 && *x <= 1)) return fail({kExitUsage, "--top-p: expected 0 < P <= 1"});
        sampling.top_p = *x;
    }
    if (auto v = args.get("--seed")) {
        auto x = parse_number<uint64_t>(*v);
        if (!x) return fail({kExitUsage, "--seed: expected a non-negative integer"});
        sampling.seed = *x;
    }
    auto d = model::inspect_hf_directory(dir);
    if (!d.ok()) return fail(from_status(d.status()));
    const model::ModelConfig& c = d->config.model;
    std::optional<tokenizer::Tokenizer> tok;
    Failure error{};
    if (std::filesystem::exists(dir + "/tokenizer.json") || prompt) {
        tok = load_tokenizer(dir, error);
        if (!tok) return fail(error);
    }
    std::vector<int32_t> ids;
    if (prompt) {
        auto enc = tok->encode(*prompt, /*add_special_tokens=*/true);
        if (!enc.ok()) return fail(from_status(enc.status()));
        ids = std::move(enc).value();
        if (ids.empty()) return fail({kExitUsage, "--prompt: encodes to no tokens"});
    } else {
        auto parsed = parse_ids(*tokens_arg);
        if (!parsed) return fail({kExitUsage, "--tokens: expected comma-separated integers"});
        ids = std::move(*parsed);
    }
    if (Status s = check_tokens(c, ids); !s.ok()) return fail(from_status(s));
    model::GeneratorOptions gen;
    // Stops at the tokenizer's EOS and every eos id of config.json and generation_config.json;
    // -1 never matches.
    auto model_eos = model::model_eos_ids(dir);
    if (!model_eos.ok()) return fail(from_status(model_eos.status()));
    gen.eos_token = tok && tok->eos_id() ? *tok->eos_id() : -1;
    gen.stop_tokens = *model_eos;
    gen.job = "tandem model generate";
    auto loaded = model::load_hf_directory_stored(*d);
    if (!loaded.ok()) return fail(from_status(loaded.status()));
    auto generator = model::GroupGenerator::create(c, gen);
    if (!generator.ok()) return fail(from_status(generator.status()));
    const std::vector<std::vector<int32_t>> prompts{ids};
    auto out = generator->generate(loaded->view(), prompts, 1, sampling);
    if (!out.ok()) return fail(from_status(out.status()));
    const model::Completion& comp = out->front();
    const std::string text = tok ? tok->decode(comp.tokens) : "";
    if (args.get("--output") == "json") {
        nlohmann::json j{{"prompt_ids", ids}, {"ids", comp.tokens}, {"finished", comp.finished}};
        if (tok) j["text"] = text;
        std::cout << j.dump() << "\n";
    } else if (tok) {
        std::cout << text << "\n";
    } else {
        std::cout << fmt::format("{}\n", fmt::join(comp.tokens, " "));
    }
    return kExitOk;
}

// --- create -------------------------------------------------------------------------------------

int run_create(const Args& args, const std::string& dir) {
    const auto config_path = args.get("--config");
    if (!config_path) return fail({kExitUsage, "create needs --config CONFIG.json"});
    if (std::filesystem::exists(dir + "/config.json")) {
        return fail(
            {kExitUsage, fmt::format("{}/config.json exists: create writes a new directory", dir)});
    }
    auto cfg = model::read_hf_config(*config_path);
    if (!cfg.ok()) return fail(from_status(cfg.status()));
    uint64_t seed = 0;
    if (auto v = args.get("--seed")) {
        auto x = parse_number<uint64_t>(*v);
        if (!x) return fail({kExitUsage, "--seed: expected a non-negative integer"});
        seed = *x;
    }
    double std_dev = 0.02;  // transformers' initializer_range default
    auto json = model::read_json_file(*config_path);
    if (json.ok() && json->contains("initializer_range") &&
        (*json)["initializer_range"].is_number()) {
        std_dev = (*json)["initializer_range"].get<double>();
    }
    if (auto v = args.get("--std")) {
        auto x = parse_number<double>(*v);
        if (!x || !(*x > 0)) return fail({kExitUsage, "--std: expected a positive number"});
        std_dev = *x;
    }
    auto w = model::ModelWeights::random(cfg->model, seed, std_dev);
    if (!w.ok()) return fail(from_status(w.status()));
    model::SaveOptions save;
    if (auto from = args.get("--side-files-from")) save.copy_side_files_from = *from;
    const model::Vocabulary* vocab = cfg->vocab ? &*cfg->vocab : nullptr;
    if (Status s = model::save_pretrained(dir, *w, vocab, save); !s.ok()) {
        return fail({kExitFailed, s.message()});
    }
    uint64_t parameters = 0;
    for (const auto& t : w->layout().tensors()) parameters += t.elements();
    std::cerr << fmt::format("{}: {} with {} parameters (seed {}, std {})\n", dir,
                             model::architecture_name(cfg->model.architecture), parameters, seed,
                             std_dev);
    return kExitOk;
}

// --- eval ---------------------------------------------------------------------------------------

int run_eval(const Args& args, const std::string& dir) {
    const auto file = args.get("--file");
    if (!file) return fail({kExitUsage, "eval needs -f JOB.yaml"});
    auto overrides = config::parse_overrides(args.positional);
    if (!overrides.ok()) return fail(from_status(overrides.status()));
    auto job = config::load_job_file(*file, *overrides);
    if (!job.ok()) return fail(from_status(job.status()));
    if (job->task.name != config::TaskName::kText) {
        return fail({kExitUsage,
                     fmt::format("{}: task.name {}: model eval runs text tasks (task.name text) "
                                 "with the model's tokenizer",
                                 *file, config::enum_name(job->task.name))});
    }
    job->model.init = dir;  // the tokenizer comes from task.tokenizer, else this directory
    uint64_t limit = 0;
    if (auto v = args.get("--limit")) {
        auto n = parse_number<uint64_t>(*v);
        if (!n || *n == 0) return fail({kExitUsage, "--limit: expected a positive integer"});
        limit = *n;
    }
    auto d = model::inspect_hf_directory(dir);
    if (!d.ok()) return fail(from_status(d.status()));
    const model::ModelConfig& c = d->config.model;
    auto tok = rl::load_task_tokenizer(*job);
    if (!tok.ok()) return fail(from_status(tok.status()));
    auto model_eos = model::model_eos_ids(dir);
    if (!model_eos.ok()) return fail(from_status(model_eos.status()));
    auto task = rl::TextTask::load(job->task, job->rollout.sampling, *tok, *model_eos);
    if (!task.ok()) return fail(from_status(task.status()));
    const uint64_t n = limit > 0 ? std::min(limit, (*task)->size()) : (*task)->size();
    std::vector<rl::TextExample> examples;
    std::vector<std::vector<int32_t>> prompts;
    for (uint64_t i = 0; i < n; ++i) {
        examples.push_back((*task)->example(i));
        auto ids = (*task)->prompt_tokens(examples.back());
        if (!ids.ok()) return fail(from_status(ids.status()));
        prompts.push_back(std::move(ids).value());
    }
    auto loaded = model::load_hf_directory_stored(*d);
    if (!loaded.ok()) return fail(from_status(loaded.status()));
    model::GeneratorOptions gen;
    // Generation stops at every stop id of the task (tokenizer, template end-of-turn, model eos
    // ids); the completion text is cut at stop strings after.
    gen.eos_token = -1;
    gen.stop_tokens = (*task)->stop().eos_ids;
    gen.job = *file;
    auto generator = model::GroupGenerator::create(c, gen);
    if (!generator.ok()) return fail(from_status(generator.status()));
    model::SamplingOptions greedy;
    greedy.temperature = 0.0;
    greedy.max_new_tokens = job->rollout.sampling.max_new_tokens;
    auto out = generator->generate(loaded->view(), prompts, 1, greedy);
    if (!out.ok()) return fail(from_status(out.status()));
    std::vector<std::string> completions;
    std::vector<rl::ScoredSample> samples;
    for (const auto& comp : *out) completions.push_back((*task)->completion_text(comp.tokens));
    for (size_t i = 0; i < completions.size(); ++i) {
        samples.push_back({&examples[i], completions[i]});
    }
    auto scorer = rl::TextScorer::create(**task);
    if (!scorer.ok()) return fail({kExitFailed, scorer.status().message()});
    auto rewards = (*scorer)->score(samples);
    if (!rewards.ok()) return fail({kExitFailed, rewards.status().message()});
    double sum = 0;
    for (double r : *rewards) sum += r;
    const double mean = rewards->empty() ? 0.0 : sum / static_cast<double>(rewards->size());
    if (args.get("--output") == "json") {
        std::cout << nlohmann::json{{"mean_reward", mean}, {"examples", rewards->size()}}.dump()
                  << "\n";
    } else {
        std::cout << fmt::format(
            "mean reward {:.4f} over {} examples (greedy, max_new_tokens {})\n", mean,
            rewards->size(), greedy.max_new_tokens);
    }
    return kExitOk;
}

}  // namespace

int cmd_model(const std::vector<std::string>& argv) {
    if (argv.empty() || argv[0] == "--help" || argv[0] == "-h") {
        (argv.empty() ? std::cerr : std::cout) << kModelUsage;
        return argv.empty() ? kExitUsage : kExitOk;
    }
    const std::string sub = argv[0];
    if (sub != "info" && sub != "tokenize" && sub != "logits" && sub != "generate" &&
        sub != "eval" && sub != "create") {
        std::cerr << "tandem model: unknown subcommand '" << sub << "'\n" << kModelUsage;
        return kExitUsage;
    }
    ArgSpec spec{.flags = {"--add-special", "--help"},
                 .options = {"--model", "--output", "--text", "--tokens", "--out", "--prompt",
                             "--max-new-tokens", "--temperature", "--top-p", "--seed", "--file",
                             "--limit", "--config", "--std", "--side-files-from"},
                 .aliases = {{"-h", "--help"}, {"-f", "--file"}}};
    auto args = parse_args({argv.begin() + 1, argv.end()}, spec);
    if (!args.ok()) {
        std::cerr << "tandem model " << sub << ": " << args.status().message() << "\n"
                  << kModelUsage;
        return kExitUsage;
    }
    if (args->has("--help")) {
        std::cout << kModelUsage;
        return kExitOk;
    }
    if (!args->positional.empty() && sub != "eval") {
        return fail({kExitUsage, fmt::format("unexpected argument '{}'", args->positional[0])});
    }
    const auto dir = args->get("--model");
    if (!dir) return fail({kExitUsage, sub + " needs --model DIR"});
    if (auto o = args->get("--output"); o && *o != "json" && *o != "text") {
        return fail({kExitUsage, fmt::format("--output: expected json or text, got \"{}\"", *o)});
    }
    if (sub == "info") return run_info(*args, *dir);
    if (sub == "tokenize") return run_tokenize(*args, *dir);
    if (sub == "logits") return run_logits(*args, *dir);
    if (sub == "eval") return run_eval(*args, *dir);
    if (sub == "create") return run_create(*args, *dir);
    return run_generate(*args, *dir);
}

}  // namespace tandem::cli
