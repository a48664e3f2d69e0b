#include "common/model/params.h"

#include <fmt/format.h>

namespace tandem::model {

namespace {

std::string layer_name(int i, const char* suffix) {
    return fmt::format("model.layers.{}.{}", i, suffix);
}

}  // namespace

Result<weights::Layout> make_param_layout(const ModelConfig& c) {
    TANDEM_RETURN_IF_ERROR(c.validate());
    using weights::DType;
    using weights::TensorSpec;
    const int64_t h = c.hidden_size, q = c.q_dim(), kv = c.kv_dim(), inter = c.intermediate_size;
    std::vector<TensorSpec> specs;
    specs.push_back({"model.embed_tokens.weight", DType::kF32, {c.vocab_size, h}});
    const int64_t d = c.head_dim();
    for (int i = 0; i < c.num_layers; ++i) {
        auto add = [&](const char* suffix, std::vector<int64_t> shape, bool present = true) {
            if (present) specs.push_back({layer_name(i, suffix), DType::kF32, std::move(shape)});
        };
        add("input_layernorm.weight", {h});
        add("self_attn.q_proj.weight", {q, h});
        add("self_attn.q_proj.bias", {q}, c.qkv_bias);
        add("self_attn.k_proj.weight", {kv, h});
        add("self_attn.k_proj.bias", {kv}, c.qkv_bias);
        add("self_attn.v_proj.weight", {kv, h});
        add("self_attn.v_proj.bias", {kv}, c.qkv_bias);
        add("self_attn.o_proj.weight", {h, q});
        add("self_attn.o_proj.bias", {h}, c.o_bias);
        add("self_attn.q_norm.weight", {d}, c.qk_norm);
        add("self_attn.k_norm.weight", {d}, c.qk_norm);
        add("post_attention_layernorm.weight", {h});
        add("mlp.gate_proj.weight", {inter, h});
        add("mlp.gate_proj.bias", {inter}, c.mlp_bias);
        add("mlp.up_proj.weight", {inter, h});
        add("mlp.up_proj.bias", {inter}, c.mlp_bias);
        add("mlp.down_proj.weight", {h, inter});
        add("mlp.down_proj.bias", {h}, c.mlp_bias);
    }
    specs.push_back({"model.norm.weight", DType::kF32, {h}});
    if (!c.tie_embeddings) specs.push_back({"lm_head.weight", DType::kF32, {c.vocab_size, h}});
    return weights::Layout::create(std::move(specs));
}

Result<ParamIndex> ParamIndex::create(const ModelConfig& c, const weights::Layout& layout) {
    ParamIndex index;
    auto find = [&](const std::string& name) -> Result<uint64_t> {
        const weights::TensorInfo* t = layout.find(name);
        if (!t) return not_found(fmt::format("parameter layout: no tensor \"{}\"", name));
        if (t->dtype != weights::DType::kF32) {
            return invalid_argument(fmt::format("parameter layout: \"{}\" is {}, expected F32",
                                                name, weights::dtype_name(t->dtype)));
        }
        if (t->shape.size() == 2)
            index.matrices.emplace_back(t->offset / 4, (t->offset + t->bytes) / 4);
        return t->offset / 4;
    };
    TANDEM_ASSIGN_OR_RETURN(index.embed, find("model.embed_tokens.weight"));
    for (int i = 0; i < c.num_layers; ++i) {
        Layer l{};
        TANDEM_ASSIGN_OR_RETURN(l.input_norm, find(layer_name(i, "input_layernorm.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wq, find(layer_name(i, "self_attn.q_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wk, find(layer_name(i, "self_attn.k_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wv, find(layer_name(i, "self_attn.v_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wo, find(layer_name(i, "self_attn.o_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.post_norm,
                                find(layer_name(i, "post_attention_layernorm.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wg, find(layer_name(i, "mlp.gate_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wu, find(layer_name(i, "mlp.up_proj.weight")));
        TANDEM_ASSIGN_OR_RETURN(l.wd, find(layer_name(i, "mlp.down_proj.weight")));
        auto optional = [&](bool present, const char* suffix, uint64_t& out) -> Status {
            if (!present) return Status();
            TANDEM_ASSIGN_OR_RETURN(out, find(layer_name(i, suffix)));
            return Status();
        };
        TANDEM_RETURN_IF_ERROR(optional(c.qkv_bias, "self_attn.q_proj.bias", l.bq));
        TANDEM_RETURN_IF_ERROR(optional(c.qkv_bias, "self_attn.k_proj.bias", l.bk));
        TANDEM_RETURN_IF_ERROR(optional(c.qkv_bias, "self_attn.v_proj.bias", l.bv));
        TANDEM_RETURN_IF_ERROR(optional(c.o_bias, "self_attn.o_proj.bias", l.bo));
        TANDEM_RETURN_IF_ERROR(optional(c.mlp_bias, "mlp.gate_proj.bias", l.bg));
        TANDEM_RETURN_IF_ERROR(optional(c.mlp_bias, "mlp.up_proj.bias", l.bu));
        TANDEM_RETURN_IF_ERROR(optional(c.mlp_bias, "mlp.down_proj.bias", l.bd));
        TANDEM_RETURN_IF_ERROR(optional(c.qk_norm, "self_attn.q_norm.weight", l.q_norm));
        TANDEM_RETURN_IF_ERROR(optional(c.qk_norm, "self_attn.k_norm.weight", l.k_norm));
        index.layers.push_back(l);
    }
    TANDEM_ASSIGN_OR_RETURN(index.final_norm, find("model.norm.weight"));
    if (c.tie_embeddings) {
        index.lm_head = index.embed;
    } else {
        TANDEM_ASSIGN_OR_RETURN(index.lm_head, find("lm_head.weight"));
    }
    index.elements = layout.total_bytes() / 4;
    return index;
}

}  // namespace tandem::model
