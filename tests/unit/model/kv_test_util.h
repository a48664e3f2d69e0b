#pragma once

// The model the KV-cache tests run: GQA (4 query heads on 2 kv heads), head_dim 16.

#include "common/model/config.h"

namespace tandem::model::testing {

inline ModelConfig kv_test_config(int max_seq_len) {
    ModelConfig c;
    c.vocab_size = 15;
    c.hidden_size = 64;
    c.num_layers = 2;
    c.num_heads = 4;
    c.num_kv_heads = 2;
    c.intermediate_size = 64;
    c.max_seq_len = max_seq_len;
    return c;
}

}  // namespace tandem::model::testing
