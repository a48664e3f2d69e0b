#include "common/rl/text_task.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/model/tasks.h"
#include "common/rl/text_verifier.h"

namespace tandem::rl {
namespace {

bool blank(std::string_view s) {
    return std::all_of(s.begin(), s.end(),
                       [](char c) { return std::isspace(static_cast<unsigned char>(c)); });
}

Result<std::vector<TextExample>> read_rows(const config::TaskSpec& spec) {
    std::ifstream f(spec.dataset);
    if (!f) return not_found(fmt::format("{}: cannot open dataset", spec.dataset));
    std::vector<TextExample> rows;
    std::string line;
    for (int lineno = 1; std::getline(f, line); ++lineno) {
        if (blank(line)) continue;
        const auto where = [&] { return fmt::format("{}:{}", spec.dataset, lineno); };
        const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
            return invalid_argument(fmt::format("{}: expected a JSON object", where()));
        }
        TextExample ex;
        ex.system = spec.system;
        for (const char* key : {"prompt", "answer", "system"}) {
            const auto it = j.find(key);
            const std::string_view k(key);
            if (it == j.end()) {
                if (k == "system") continue;
                return invalid_argument(fmt::format("{}: missing field \"{}\"", where(), key));
            }
            std::string value;
            if (it->is_string()) {
                value = it->get<std::string>();
            } else if (it->is_number() && k == "answer") {
                value = it->dump();
            } else {
                return invalid_argument(fmt::format("{}: field \"{}\" must be a string{}", where(),
                                                    key, k == "answer" ? " or a number" : ""));
            }
            (k == "prompt" ? ex.prompt : k == "answer" ? ex.answer : ex.system) = std::move(value);
        }
        rows.push_back(std::move(ex));
    }
    if (rows.empty()) return invalid_argument(fmt::format("{}: no examples", spec.dataset));
    return rows;
}

}  // namespace

Result<std::shared_ptr<const tokenizer::Tokenizer>> load_task_tokenizer(
    const config::JobSpec& job) {
    std::string dir = job.task.tokenizer;
    if (dir.empty() && job.model.init != "random") dir = job.model.init;
    if (dir.empty()) {
        return invalid_argument(
            "task.tokenizer: a text task needs a tokenizer: set task.tokenizer or model.init to a "
            "directory with tokenizer.json");
    }
    auto tok = tokenizer::Tokenizer::load(dir);
    if (!tok.ok()) return tok.status();
    return std::make_shared<const tokenizer::Tokenizer>(std::move(*tok));
}

Result<std::unique_ptr<TextTask>> TextTask::load(const config::TaskSpec& spec,
                                                 const config::SamplingSpec& sampling,
                                                 std::shared_ptr<const tokenizer::Tokenizer> tok,
                                                 std::span<const int32_t> extra_eos_ids) {
    if (!tok) return invalid_argument("text task: no tokenizer");
    std::unique_ptr<TextTask> t(new TextTask());
    t->spec_ = spec;
    t->tok_ = std::move(tok);
    auto tmpl = PromptTemplate::parse(spec.prompt_template);
    if (!tmpl.ok()) return tmpl.status().with_context("task.template");
    t->template_ = std::move(*tmpl);
    TANDEM_ASSIGN_OR_RETURN(t->rows_, read_rows(spec));

    // Stop ids: the tokenizer's eos, the template's end-of-turn tokens (when the tokenizer has
    // them), the caller's (the model's generation config).
    std::vector<int32_t>& eos = t->stop_.eos_ids;
    if (const auto id = t->tok_->eos_id()) eos.push_back(*id);
    for (const std::string& token : t->template_.end_of_turn()) {
        if (const auto id = t->tok_->token_to_id(token)) eos.push_back(*id);
    }
    eos.insert(eos.end(), extra_eos_ids.begin(), extra_eos_ids.end());
    std::sort(eos.begin(), eos.end());
    eos.erase(std::unique(eos.begin(), eos.end()), eos.end());
    t->stop_.stop_strings = sampling.stop;
    t->stop_.max_new_tokens = sampling.max_new_tokens;

    for (size_t i = 0; i < t->rows_.size(); ++i) {
        auto ids = t->prompt_tokens(t->rows_[i]);
        if (!ids.ok()) {
            return ids.status().with_context(fmt::format("{}: row {}", spec.dataset, i + 1));
        }
        t->max_prompt_tokens_ = std::max(t->max_prompt_tokens_, static_cast<int>(ids->size()));
    }
    return t;
}

TextExample TextTask::example(uint64_t index) const {
    const uint64_t n = rows_.size();
    const uint64_t epoch = index / n;
    return rows_[model::permute(index % n, n, spec_.seed * 0x9E3779B97F4A7C15ull + epoch)];
}

std::string TextTask::render(const TextExample& ex) const {
    return template_.render(ex.system, ex.prompt);
}

Result<std::vector<int32_t>> TextTask::prompt_tokens(const TextExample& ex) const {
    std::vector<int32_t> ids;
    if (!template_.has_bos()) ids = tok_->prefix_ids();
    TANDEM_RETURN_IF_ERROR(tok_->encode_into(render(ex), ids));
    return ids;
}

double TextTask::verify(const TextExample& ex, std::string_view completion) const {
    return verify_text(spec_.verifier, ex.answer, completion);
}

Result<std::unique_ptr<TextScorer>> TextScorer::create(const TextTask& task) {
    std::unique_ptr<TextScorer> s(new TextScorer(task));
    if (task.uses_reward_command()) {
        const config::RewardSpec& r = task.reward();
        auto command = RewardCommand::start({r.command, r.working_dir, r.timeout_ms});
        if (!command.ok()) return command.status();
        s->command_ = std::move(*command);
    }
    return s;
}

Result<std::vector<double>> TextScorer::score(std::span<const ScoredSample> samples) {
    if (!command_) {
        std::vector<double> rewards;
        rewards.reserve(samples.size());
        for (const ScoredSample& s : samples)
            rewards.push_back(task_.verify(*s.example, s.completion));
        return rewards;
    }
    std::vector<RewardSample> batch;
    batch.reserve(samples.size());
    for (const ScoredSample& s : samples) {
        batch.push_back({s.example->prompt, s.completion, s.example->answer});
    }
    return command_->score(batch);
}

}  // namespace tandem::rl
