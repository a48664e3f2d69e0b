#pragma once

// A host GenerationBackend (common/gpu/generate_loop.h) for testing gpu::run_generation without a
// device. It keeps a page store like the device's (one entry per slot: which position of which
// token sequence it holds) and, at every decode step, checks what the device would read: each
// live row's position and context length, that every position of its block table holds that
// row's own token at that position (prompt rows through shared blocks, the copied partial block,
// its own appends), and that padding rows touch block 0 only. Prompts continuing a cached prefix
// (PrefillBatch::tables) read their context through their tables the same way, and what they
// read is the prompt their samples continue (prompt_of). Every entry records the weights epoch it
// was written under (set_weights): reading one of another epoch is a stale-cache error. A pool
// grown by reserve() starts empty, as on the device. Tokens are a pure function of (stream,
// step), so a test can predict them. Violations are collected in errors().

#include <cstdint>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/gpu/generate_loop.h"
#include "common/model/rng.h"

namespace tandem::gpu::testing {

class FakeGenerationBackend final : public GenerationBackend {
public:
    FakeGenerationBackend(int block_tokens, int vocab) : bt_(block_tokens), vocab_(vocab) {}

    // The token of (stream, step) and its log-prob.
    int32_t token(uint64_t stream, int32_t step) const {
        uint64_t s = stream ^ (static_cast<uint64_t>(step) * 0x9E3779B97F4A7C15ull);
        return static_cast<int32_t>(model::splitmix64(s) % static_cast<uint64_t>(vocab_));
    }
    static float logprob(int32_t token, int32_t step) { return -0.01f * (token + step); }

    const std::vector<std::string>& errors() const { return errors_; }
    const std::vector<int64_t>& prefill_rows() const { return prefill_rows_; }
    int64_t reserved_blocks() const { return blocks_; }
    // The weights the next steps compute with: KV written before under other weights is stale.
    void set_weights(int epoch) { epoch_ = epoch; }
    // The prompt sample `stream` was prefilled from, as its pages held it (empty: unknown).
    std::vector<int32_t> prompt_of(uint64_t stream) const {
        auto it = samples_.find(stream);
        if (it == samples_.end()) return {};
        return {it->second.seq.begin(), it->second.seq.begin() + it->second.prompt_len};
    }

    Result<StepLayout> reserve(int64_t blocks, int64_t max_rows, int width) override {
        if (blocks > blocks_) {  // a new pool: nothing in it
            blocks_ = blocks;
            pages_.assign(static_cast<size_t>(blocks * bt_), Entry{});
        }
        layout_ = StepLayout{std::max(max_rows, layout_.max_rows), width};
        return layout_;
    }

    Status prefill(const PrefillBatch& batch, std::vector<int32_t>& tokens,
                   std::vector<float>& logprobs) override {
        prefill_rows_.push_back(static_cast<int64_t>(batch.tokens.size()));
        size_t row = 0;
        std::vector<std::vector<int32_t>> prompts;
        const bool paged = !batch.tables.empty();
        if (paged && batch.tables.size() != batch.lens.size() * static_cast<size_t>(batch.width)) {
            error("prefill: {} table entries for {} prompts of width {}", batch.tables.size(),
                  batch.lens.size(), batch.width);
            return Status();
        }
        for (size_t p = 0; p < batch.lens.size(); ++p) {
            const int64_t len = batch.lens[p];
            if (!paged) {
                prompts.emplace_back(batch.tokens.begin() + static_cast<long>(row),
                                     batch.tokens.begin() + static_cast<long>(row + len));
                for (int64_t i = 0; i < len; ++i, ++row) {
                    if (batch.positions[row] != i) error("prefill row {} at position {}", row, i);
                    write(batch.slots[row], i, batch.tokens[row]);
                }
                continue;
            }
            // The rows' keys and values first, then each reads positions 0 .. its own.
            const int32_t* table = batch.tables.data() + p * static_cast<size_t>(batch.width);
            const size_t first = row;
            for (int64_t i = 0; i < len; ++i, ++row) {
                const int32_t pos = batch.positions[row];
                if (pos / bt_ >= batch.width ||
                    batch.slots[row] != table[pos / bt_] * bt_ + pos % bt_) {
                    error("prefill row {} at position {} writes slot {} off its table", row, pos,
                          batch.slots[row]);
                }
                write(batch.slots[row], pos, batch.tokens[row]);
            }
            const int32_t last = len > 0 ? batch.positions[row - 1] : -1;
            if (len > 0 && batch.positions[first] + len - 1 != last) {
                error("prefill prompt {}: positions not consecutive", p);
            }
            prompts.emplace_back();
            for (int32_t i = 0; i <= last; ++i) {
                const int32_t b = table[i / bt_];
                if (b <= 0 || b >= blocks_) {
                    error("prefill prompt {} position {} in block {}", p, i, b);
                    break;
                }
                const Entry& e = pages_[static_cast<size_t>(b * bt_ + i % bt_)];
                if (e.position != i || e.epoch != epoch_) {
                    error(
                        "prefill prompt {} reads position {} (weights {}) where it wants {} "
                        "(weights {})",
                        p, e.position, e.epoch, i, epoch_);
                    break;
                }
                prompts.back().push_back(e.token);
            }
        }
        tokens.clear();
        logprobs.clear();
        for (size_t b = 0; b < batch.streams.size(); ++b) {
            const uint64_t st = batch.streams[b];
            Sample& s = samples_[st];
            s.seq = prompts[b / static_cast<size_t>(batch.group)];
            s.prompt_len = static_cast<int64_t>(s.seq.size());
            tokens.push_back(token(st, 0));
            logprobs.push_back(logprob(tokens.back(), 0));
            s.seq.push_back(tokens.back());
        }
        return Status();
    }

    Status copy_blocks(std::span<const int32_t> pairs) override {
        for (size_t i = 0; i + 1 < pairs.size(); i += 2) {
            for (int o = 0; o < bt_; ++o) {
                pages_[static_cast<size_t>(pairs[i + 1] * bt_ + o)] =
                    pages_[static_cast<size_t>(pairs[i] * bt_ + o)];
            }
        }
        return Status();
    }

    Status decode(int64_t rows, std::span<const int32_t> step, int64_t live,
                  std::vector<int32_t>& tokens, std::vector<float>& logprobs) override {
        const StepLayout& L = layout_;
        if (rows > L.max_rows || live > rows) error("{} live rows in a bucket of {}", live, rows);
        ++steps_;
        tokens.clear();
        logprobs.clear();
        for (int64_t r = 0; r < rows; ++r) {
            const int32_t tok = step[L.tokens() + r], pos = step[L.positions() + r];
            const int32_t slot = step[L.slots() + r], ctx = step[L.context_lens() + r];
            const int32_t* table = step.data() + L.table() + r * L.width;
            if (r >= live) {  // padding
                if (slot >= bt_ || ctx != 1 || table[0] != 0) {
                    error("step {}: padding row {} touches slot {} (context {})", steps_, r, slot,
                          ctx);
                }
                continue;
            }
            uint64_t stream;
            std::memcpy(&stream, step.data() + L.streams() + 2 * r, sizeof stream);
            auto it = samples_.find(stream);
            if (it == samples_.end()) {
                error("step {}: row {} has an unknown stream", steps_, r);
                continue;
            }
            Sample& s = it->second;
            const int32_t want_step = static_cast<int32_t>(s.seq.size() - s.prompt_len);
            if (step[L.steps() + r] != want_step || pos != static_cast<int32_t>(s.seq.size()) - 1 ||
                ctx != pos + 1 || tok != s.seq.back()) {
                error(
                    "step {}: row {} has step {} position {} context {} token {}, expected {} {} "
                    "{} {}",
                    steps_, r, step[L.steps() + r], pos, ctx, tok, want_step, s.seq.size() - 1,
                    s.seq.size(), s.seq.back());
            }
            if (slot != table[pos / bt_] * bt_ + pos % bt_) {
                error("step {}: row {} writes slot {}, its table says {}", steps_, r, slot,
                      table[pos / bt_] * bt_ + pos % bt_);
            }
            write(slot, pos, tok);
            // What the attention reads: every position through the table.
            for (int32_t i = 0; i < ctx; ++i) {
                const int32_t b = table[i / bt_];
                if (b <= 0 || b >= blocks_) {
                    error("step {}: row {} position {} in block {}", steps_, r, i, b);
                    break;
                }
                const Entry& e = pages_[static_cast<size_t>(b * bt_ + i % bt_)];
                if (e.position != i || e.token != s.seq[static_cast<size_t>(i)] ||
                    e.epoch != epoch_) {
                    error(
                        "step {}: row {} reads position {} token {} (weights {}) where it put "
                        "position {} token {} (weights {})",
                        steps_, r, e.position, e.token, e.epoch, i, s.seq[static_cast<size_t>(i)],
                        epoch_);
                    break;
                }
            }
            tokens.push_back(token(stream, want_step));
            logprobs.push_back(logprob(tokens.back(), want_step));
            s.seq.push_back(tokens.back());
        }
        return Status();
    }

private:
    struct Entry {
        int32_t position = -1, token = -1, epoch = -1;
    };
    struct Sample {
        std::vector<int32_t> seq;  // prompt, then every token sampled so far
        int64_t prompt_len = 0;
    };
    template <typename... A>
    void error(fmt::format_string<A...> f, A&&... a) {
        if (errors_.size() < 20) errors_.push_back(fmt::format(f, std::forward<A>(a)...));
    }
    void write(int32_t slot, int32_t position, int32_t token) {
        if (slot < 0 || slot >= static_cast<int32_t>(pages_.size())) {
            error("slot {} outside the pool of {} blocks", slot, blocks_);
            return;
        }
        pages_[static_cast<size_t>(slot)] = Entry{position, token, epoch_};
    }

    int bt_, vocab_;
    int epoch_ = 0;
    int64_t blocks_ = 0, steps_ = 0;
    StepLayout layout_;
    std::vector<Entry> pages_;
    std::map<uint64_t, Sample> samples_;
    std::vector<int64_t> prefill_rows_;
    std::vector<std::string> errors_;
};

}  // namespace tandem::gpu::testing
