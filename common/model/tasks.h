#pragma once

// Tasks with verifiers. Built-in generators (reverse, sort, copy, add) over digit strings and a
// JSONL dataset of {"prompt", "answer"} lines. Example i of a task is a pure function of
// (task seed, i), so a data cursor (the next index) is all a checkpoint needs to resume.
//
// Text formats (built-in tasks share Vocabulary::builtin()):
//   reverse "31415926=" -> "62951413"     sort "31415926=" -> "11234569"
//   copy    "31415926=" -> "31415926"     add  "123+4567=" -> "4690"
// The model sees [bos] + prompt and must produce answer + [eos].

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/config/job_spec.h"
#include "common/model/vocab.h"
#include "common/status.h"

namespace tandem::model {

struct Example {
    std::string prompt;
    std::string answer;
};

// Reward in [0, 1] of `response` (decoded completion, eos stripped) against `answer`.
//   exact:      1 if equal after trimming surrounding whitespace, else 0.
//   numeric:    1 if both parse as numbers that agree within 1e-6 relative, else 0.
//   positional: (positions i with response[i] == answer[i]) / max(|answer|, |response|);
//               1 when both are empty.
double verify(config::Verifier verifier, std::string_view answer, std::string_view response);

// Immutable after creation; safe to share between threads.
class Task {
public:
    virtual ~Task() = default;
    virtual std::string_view name() const = 0;
    virtual Example example(uint64_t index) const = 0;
    const Vocabulary& vocab() const { return vocab_; }
    config::Verifier verifier() const { return verifier_; }
    double score(const Example& ex, std::string_view response) const {
        return verify(verifier_, ex.answer, response);
    }
    // [bos] + prompt tokens.
    Result<std::vector<int32_t>> prompt_tokens(const Example& ex) const;
    // The longest prompt (in tokens, with bos) and answer (with eos) this task can produce.
    virtual int max_prompt_tokens() const = 0;
    virtual int max_answer_tokens() const = 0;

protected:
    Task(Vocabulary vocab, config::Verifier verifier)
        : vocab_(std::move(vocab)), verifier_(verifier) {}

private:
    Vocabulary vocab_;
    config::Verifier verifier_;
};

// A bijection on [0, n) keyed by `key` (a balanced Feistel network on the next even number of
// bits, cycle-walking into [0, n)): the seeded order in which dataset tasks visit their rows.
uint64_t permute(uint64_t x, uint64_t n, uint64_t key);

// The task of a job's `task:` section. jsonl reads `dataset` now (errors name the file and line).
Result<std::unique_ptr<Task>> make_task(const config::TaskSpec& spec);

// A deterministic stream over a task: next() returns example(cursor++).
// Owned by one actor; not thread-safe.
class TaskStream {
public:
    explicit TaskStream(const Task* task, uint64_t cursor = 0) : task_(task), cursor_(cursor) {}
    Example next() { return task_->example(cursor_++); }
    uint64_t cursor() const { return cursor_; }
    void set_cursor(uint64_t cursor) { cursor_ = cursor; }

private:
    const Task* task_;
    uint64_t cursor_;
};

}  // namespace tandem::model
