#pragma once

// The decoder over a packed batch of whole sequences: forward with saved activations and
// backward to parameter gradients. This is the trainer-side path (and the recomputation that
// rollout log-probs are checked against). T = float runs OpenBLAS sgemm and the kernels'
// attention; T = double is the reference used by the gradient checks.

#include <cstdint>
#include <span>
#include <vector>

#include "common/model/config.h"
#include "common/model/decoder_layer.h"
#include "common/model/layers.h"
#include "common/model/params.h"
#include "common/status.h"

namespace tandem::model {

// Sequences packed back to back. Position i of a sequence is scored (gets a log-prob) when
// i >= score_from of that sequence; score_from >= 1 (the first token has no prediction).
//
// A sequence may continue an earlier one (its prefix): it then sits at positions
// length(prefix) + i, attends to the prefix's rows and its own, and all of its tokens are scored
// (its first token is predicted by the prefix's last row). This is how the G completions of one
// GRPO group share their prompt's rows in the training forward and backward: the prompt is
// computed once and its gradients are summed over the group. A prefix continues nothing itself.
// Plain value; not thread-safe.
struct PackedBatch {
    static constexpr int64_t kNoPrefix = -1;

    std::vector<int32_t> tokens;
    std::vector<int64_t> begin{0};    // num_sequences() + 1 offsets into tokens
    std::vector<int32_t> score_from;  // per sequence (0 for a continuation)
    std::vector<int64_t> prefix;      // per sequence: the sequence it continues, or kNoPrefix

    void clear();
    // prompt followed by completion; the completion's tokens are scored.
    void add(std::span<const int32_t> prompt, std::span<const int32_t> completion);
    void add_sequence(std::span<const int32_t> tokens, int32_t score_from);
    // A sequence with no scored token, for continuations to share; returns its index.
    int64_t add_prefix(std::span<const int32_t> prompt);
    // `completion` continuing sequence `prefix` (an index add_prefix returned); returns its index.
    int64_t add_continuation(int64_t prefix, std::span<const int32_t> completion);
    int64_t num_sequences() const { return static_cast<int64_t>(score_from.size()); }
    int64_t num_tokens() const { return static_cast<int64_t>(tokens.size()); }
    int64_t length(int64_t s) const { return begin[s + 1] - begin[s]; }
    // Position of the sequence's first row: the prefix's length for a continuation, else 0.
    int64_t first_position(int64_t s) const {
        return prefix[s] == kNoPrefix ? 0 : length(prefix[s]);
    }
};

// Owns the activations of its last forward() and the workspace of backward(); reusing one object
// across steps allocates nothing once the largest batch has been seen. Not thread-safe; use one
// object per thread (and a separate one for a reference model, whose forward would otherwise
// overwrite the policy's saved activations).
template <typename T>
class Transformer {
public:
    static Result<Transformer> create(const ModelConfig& config);

    const ModelConfig& config() const { return config_; }
    const ParamIndex& index() const { return index_; }
    const weights::Layout& layout() const { return layout_; }

    // logp[i] (i indexes batch.tokens) = log p(tokens[i] | earlier tokens of its sequence, and of
    // its prefix for a continuation) under
    // softmax(logits / temperature), for scored positions; 0 elsewhere. entropy[i] (when not
    // null) is the entropy of that distribution, likewise. `params` is the flat buffer.
    Status forward(const T* params, const PackedBatch& batch, double temperature, T* logp,
                   T* entropy);
    // grads += d/dparams of sum_i weight[i] * logp[i], for the last forward() with the same
    // params. weight is indexed like logp (unscored positions are ignored).
    Status backward(const T* params, const T* weight, T* grads);
    // Raw logits of every position, out [num_tokens, vocab]: row i predicts token i + 1.
    // Invalidates the saved activations.
    Status logits(const T* params, const PackedBatch& batch, T* out);

    // The head holds at most this many logits (rows x vocab) at once; a batch with more scored
    // rows is processed in chunks and backward() recomputes each chunk's logits (one more head
    // product) instead of keeping [rows, vocab] (a 151k vocabulary makes that GBs). Default 16M
    // elements (64 MB in float).
    void set_head_chunk_elements(int64_t elements) { head_chunk_elements_ = elements; }

private:
    struct LayerActs {
        std::vector<T> x_in, rstd1, a, q, k, v, o, lse, x_mid, rstd2, b, g, u, s;
        QkNormActs<T> qk;
    };
    Transformer() = default;
    Status run_layers(const T* params, const PackedBatch& batch);
    // xs_, rstd_f_, f_: the final norm of the rows in srow_.
    void head_inputs(const T* params);
    int64_t head_chunk_rows() const;
    // logits_ = f_[row0, row0 + rows) lm_head^T.
    const T* head_logits(const T* params, int64_t row0, int64_t rows);

    ModelConfig config_;
    weights::Layout layout_;
    ParamIndex index_;
    RopeTable<T> rope_;
    // The last forward's batch and activations.
    std::vector<int32_t> tokens_;
    std::vector<int64_t> begin_;
    std::vector<int64_t> prefix_;
    std::vector<int32_t> pos_;
    std::vector<int64_t> srow_;    // scored rows: the row whose output predicts the token
    std::vector<int64_t> trow_;    // the predicted token's row (srow_ + 1 but for continuations)
    std::vector<int32_t> target_;  // tokens[trow_]
    double inv_temp_ = 1.0;
    int64_t head_chunk_elements_ = int64_t{1} << 24;
    std::vector<LayerActs> acts_;
    std::vector<T> x_out_, xs_, rstd_f_, f_, logits_, lp_;
    // A continuation's keys and values gathered behind its prefix's (and their gradients).
    std::vector<T> kc_, vc_, dkc_, dvc_;
    // Backward workspace.
    std::vector<T> dx_, dmid_, db_, da_, do_, dq_, dk_, dv_, dg_, du_, ds_, dlogits_, df_, dxs_,
        w_scored_;
};

}  // namespace tandem::model
