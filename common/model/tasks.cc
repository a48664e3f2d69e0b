#include "common/model/tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/model/rng.h"

namespace tandem::model {

namespace {

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
}

bool parse_number(std::string_view s, double& out) {
    const std::string text(trim(s));
    if (text.empty()) return false;
    char* end = nullptr;
    out = std::strtod(text.c_str(), &end);
    return end == text.c_str() + text.size() && std::isfinite(out);
}

}  // namespace

double verify(config::Verifier verifier, std::string_view answer, std::string_view response) {
    switch (verifier) {
        case config::Verifier::kExact:
        case config::Verifier::kDefault:
            return trim(answer) == trim(response) ? 1.0 : 0.0;
        case config::Verifier::kNumeric: {
            double a = 0, r = 0;
            if (!parse_number(answer, a) || !parse_number(response, r)) return 0.0;
            return std::abs(a - r) <= 1e-6 * std::max(1.0, std::abs(a)) ? 1.0 : 0.0;
        }
        case config::Verifier::kPositional: {
            const size_t n = std::max(answer.size(), response.size());
            if (n == 0) return 1.0;
            size_t right = 0;
            for (size_t i = 0; i < std::min(answer.size(), response.size()); ++i) {
                right += answer[i] == response[i];
            }
            return static_cast<double>(right) / static_cast<double>(n);
        }
    }
    return 0.0;
}

Result<std::vector<int32_t>> Task::prompt_tokens(const Example& ex) const {
    std::vector<int32_t> out;
    out.reserve(ex.prompt.size() + 1);
    out.push_back(Vocabulary::kBos);
    TANDEM_RETURN_IF_ERROR(vocab_.encode_into(ex.prompt, out));
    return out;
}

namespace {

config::Verifier resolve(config::Verifier v, config::Verifier fallback) {
    return v == config::Verifier::kDefault ? fallback : v;
}

std::string random_digits(Rng& rng, int len, bool leading_nonzero) {
    std::string s(static_cast<size_t>(len), '0');
    for (int i = 0; i < len; ++i) {
        const uint64_t lo = (leading_nonzero && i == 0 && len > 1) ? 1 : 0;
        s[i] = static_cast<char>('0' + lo + rng.below(10 - lo));
    }
    return s;
}

// reverse, sort, copy: a digit string of length in [min_length, max_length].
class DigitTask final : public Task {
public:
    DigitTask(const config::TaskSpec& spec)
        : Task(Vocabulary::builtin(), resolve(spec.verifier, config::Verifier::kPositional)),
          spec_(spec) {}
    std::string_view name() const override { return config::enum_name(spec_.name); }
    Example example(uint64_t index) const override {
        Rng rng(mix_seed(spec_.seed, index, 0x7461736b));
        const int span = spec_.max_length - spec_.min_length + 1;
        const int len = spec_.min_length + static_cast<int>(rng.below(static_cast<uint64_t>(span)));
        Example ex;
        const std::string digits = random_digits(rng, len, false);
        ex.prompt = digits + "=";
        ex.answer = digits;
        if (spec_.name == config::TaskName::kReverse) {
            std::reverse(ex.answer.begin(), ex.answer.end());
        } else if (spec_.name == config::TaskName::kSort) {
            std::sort(ex.answer.begin(), ex.answer.end());
        }
        return ex;
    }
    int max_prompt_tokens() const override { return spec_.max_length + 2; }
    int max_answer_tokens() const override { return spec_.max_length + 1; }

private:
    config::TaskSpec spec_;
};

// add: two numbers of [min_length, max_length] digits each.
class AddTask final : public Task {
public:
    AddTask(const config::TaskSpec& spec)
        : Task(Vocabulary::builtin(), resolve(spec.verifier, config::Verifier::kPositional)),
          spec_(spec) {}
    std::string_view name() const override { return "add"; }
    Example example(uint64_t index) const override {
        Rng rng(mix_seed(spec_.seed, index, 0x616464));
        const int span = spec_.max_length - spec_.min_length + 1;
        const int la = spec_.min_length + static_cast<int>(rng.below(static_cast<uint64_t>(span)));
        const int lb = spec_.min_length + static_cast<int>(rng.below(static_cast<uint64_t>(span)));
        const std::string a = random_digits(rng, la, true);
        const std::string b = random_digits(rng, lb, true);
        // Schoolbook addition on strings: lengths are not bounded by 64-bit integers.
        std::string sum;
        int carry = 0;
        for (size_t i = 0; i < std::max(a.size(), b.size()) || carry; ++i) {
            int d = carry;
            if (i < a.size()) d += a[a.size() - 1 - i] - '0';
            if (i < b.size()) d += b[b.size() - 1 - i] - '0';
            sum.push_back(static_cast<char>('0' + d % 10));
            carry = d / 10;
        }
        std::reverse(sum.begin(), sum.end());
        return {a + "+" + b + "=", sum};
    }
    int max_prompt_tokens() const override { return 2 * spec_.max_length + 3; }
    int max_answer_tokens() const override { return spec_.max_length + 2; }

private:
    config::TaskSpec spec_;
};

}  // namespace

uint64_t permute(uint64_t x, uint64_t n, uint64_t key) {
    if (n <= 1) return 0;
    int bits = 2;
    while ((uint64_t{1} << bits) < n) ++bits;
    if (bits % 2) ++bits;
    const int half = bits / 2;
    const uint64_t mask = (uint64_t{1} << half) - 1;
    do {
        uint64_t l = x >> half, r = x & mask;
        for (uint64_t round = 0; round < 4; ++round) {
            const uint64_t f = mix_seed(key, round, r) & mask;
            const uint64_t nl = r;
            r = l ^ f;
            l = nl;
        }
        x = (l << half) | r;
    } while (x >= n);
    return x;
}

namespace {

// jsonl: the dataset's lines in a fresh seeded order every epoch.
class JsonlTask final : public Task {
public:
    JsonlTask(Vocabulary vocab, config::Verifier verifier, std::vector<Example> rows, uint64_t seed)
        : Task(std::move(vocab), verifier), rows_(std::move(rows)), seed_(seed) {
        for (const auto& r : rows_) {
            max_prompt_ = std::max(max_prompt_, static_cast<int>(r.prompt.size()) + 1);
            max_answer_ = std::max(max_answer_, static_cast<int>(r.answer.size()) + 1);
        }
    }
    std::string_view name() const override { return "jsonl"; }
    Example example(uint64_t index) const override {
        const uint64_t n = rows_.size();
        const uint64_t epoch = index / n;
        return rows_[permute(index % n, n, mix_seed(seed_, epoch, 0x6a736f6e))];
    }
    int max_prompt_tokens() const override { return max_prompt_; }
    int max_answer_tokens() const override { return max_answer_; }

private:
    std::vector<Example> rows_;
    uint64_t seed_;
    int max_prompt_ = 0, max_answer_ = 0;
};

Result<std::unique_ptr<Task>> load_jsonl(const config::TaskSpec& spec) {
    std::ifstream f(spec.dataset);
    if (!f) return not_found(fmt::format("{}: cannot open dataset", spec.dataset));
    std::vector<Example> rows;
    bool seen[256] = {};
    std::string line;
    for (int lineno = 1; std::getline(f, line); ++lineno) {
        if (trim(line).empty()) continue;
        auto where = [&] { return fmt::format("{}:{}", spec.dataset, lineno); };
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        if (j.is_discarded() || !j.is_object()) {
            return invalid_argument(fmt::format("{}: expected a JSON object", where()));
        }
        Example ex;
        for (const char* key : {"prompt", "answer"}) {
            auto it = j.find(key);
            if (it == j.end()) {
                return invalid_argument(fmt::format("{}: missing field \"{}\"", where(), key));
            }
            std::string value;
            if (it->is_string()) {
                value = it->get<std::string>();
            } else if (it->is_number()) {
                value = it->dump();
            } else {
                return invalid_argument(
                    fmt::format("{}: field \"{}\" must be a string or a number", where(), key));
            }
            (std::string_view(key) == "prompt" ? ex.prompt : ex.answer) = std::move(value);
        }
        for (const char c : ex.prompt + ex.answer) seen[static_cast<unsigned char>(c)] = true;
        rows.push_back(std::move(ex));
    }
    if (rows.empty()) return invalid_argument(fmt::format("{}: no examples", spec.dataset));
    std::string charset;
    for (int b = 0; b < 256; ++b) {
        if (seen[b]) charset.push_back(static_cast<char>(b));
    }
    TANDEM_ASSIGN_OR_RETURN(auto vocab, Vocabulary::create(std::move(charset)));
    return std::unique_ptr<Task>(new JsonlTask(std::move(vocab),
                                               resolve(spec.verifier, config::Verifier::kExact),
                                               std::move(rows), spec.seed));
}

}  // namespace

Result<std::unique_ptr<Task>> make_task(const config::TaskSpec& spec) {
    if (spec.min_length < 1 || spec.min_length > spec.max_length) {
        return invalid_argument(fmt::format("task: need 1 <= min_length ({}) <= max_length ({})",
                                            spec.min_length, spec.max_length));
    }
    switch (spec.name) {
        case config::TaskName::kReverse:
        case config::TaskName::kSort:
        case config::TaskName::kCopy:
            return std::unique_ptr<Task>(new DigitTask(spec));
        case config::TaskName::kAdd:
            return std::unique_ptr<Task>(new AddTask(spec));
        case config::TaskName::kJsonl:
            return load_jsonl(spec);
        case config::TaskName::kText:
            return invalid_argument(
                "task: name text is tokenized with a real tokenizer: load it with "
                "rl::TextTask::load (common/rl/text_task.h), not make_task");
    }
    return invalid_argument("task: unknown name");
}

}  // namespace tandem::model
