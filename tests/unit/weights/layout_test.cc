#include "common/weights/layout.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace tandem::weights {
namespace {

std::vector<TensorSpec> mixed_specs() {
    return {{"model.embed_tokens.weight", DType::kBF16, {33, 7}},
            {"model.layers.0.self_attn.q_proj.weight", DType::kF32, {5, 3}},
            {"model.layers.0.mlp.scale", DType::kF8E4M3, {17}},
            {"model.norm.bias", DType::kF16, {}},
            {"step", DType::kI64, {1}},
            {"mask", DType::kI8, {3, 0}},
            {"ids", DType::kI32, {9}}};
}

TEST(DType, NamesRoundTripAndSizes) {
    for (DType d : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kI8, DType::kI32,
                    DType::kI64}) {
        auto parsed = parse_dtype(dtype_name(d));
        ASSERT_TRUE(parsed.ok());
        EXPECT_EQ(*parsed, d);
    }
    EXPECT_EQ(dtype_size(DType::kBF16), 2u);
    EXPECT_EQ(dtype_size(DType::kF8E4M3), 1u);
    EXPECT_EQ(dtype_size(DType::kI64), 8u);
    auto bad = parse_dtype("F64");
    ASSERT_FALSE(bad.ok());
    EXPECT_NE(bad.status().message().find("F64"), std::string::npos);
}

TEST(Layout, OffsetsAreAlignedAndOrdered) {
    auto layout = Layout::create(mixed_specs());
    ASSERT_TRUE(layout.ok()) << layout.status().to_string();
    uint64_t prev_end = 0;
    for (const auto& t : layout->tensors()) {
        EXPECT_EQ(t.offset % kTensorAlignment, 0u) << t.name;
        EXPECT_GE(t.offset, prev_end) << t.name;
        EXPECT_LT(t.offset - prev_end, kTensorAlignment) << t.name;
        prev_end = t.offset + t.bytes;
    }
    EXPECT_EQ(layout->total_bytes() % kTensorAlignment, 0u);
    EXPECT_GE(layout->total_bytes(), prev_end);
    const TensorInfo* embed = layout->find("model.embed_tokens.weight");
    ASSERT_NE(embed, nullptr);
    EXPECT_EQ(embed->bytes, 33u * 7u * 2u);
    EXPECT_EQ(embed->row_bytes(), 14u);
    EXPECT_EQ(layout->find("model.norm.bias")->bytes, 2u);  // a scalar has one element
    EXPECT_EQ(layout->find("mask")->bytes, 0u);
    EXPECT_EQ(layout->find("missing"), nullptr);
}

TEST(Layout, FingerprintIdentifiesCompatibleLayouts) {
    auto a = Layout::create(mixed_specs());
    auto b = Layout::create(mixed_specs());
    ASSERT_TRUE(a.ok() && b.ok());
    EXPECT_EQ(a->fingerprint(), b->fingerprint());
    EXPECT_EQ(a->fingerprint_text().size(), 19u);
    EXPECT_EQ(a->fingerprint_text().rfind("fp:", 0), 0u);

    auto changed_shape = mixed_specs();
    changed_shape[1].shape = {3, 5};
    auto changed_dtype = mixed_specs();
    changed_dtype[0].dtype = DType::kF16;
    auto renamed = mixed_specs();
    renamed[2].name = "model.layers.0.mlp.scale2";
    auto reordered = mixed_specs();
    std::swap(reordered[0], reordered[1]);
    for (auto specs : {changed_shape, changed_dtype, renamed, reordered}) {
        auto other = Layout::create(specs);
        ASSERT_TRUE(other.ok());
        EXPECT_NE(other->fingerprint(), a->fingerprint());
    }
}

TEST(Layout, RejectsBadSpecs) {
    EXPECT_FALSE(Layout::create({{"", DType::kF32, {1}}}).ok());
    auto dup = Layout::create({{"a", DType::kF32, {1}}, {"a", DType::kI8, {2}}});
    ASSERT_FALSE(dup.ok());
    EXPECT_NE(dup.status().message().find("\"a\" appears twice"), std::string::npos);
    EXPECT_FALSE(Layout::create({{"neg", DType::kF32, {2, -1}}}).ok());
    EXPECT_FALSE(
        Layout::create({{"huge", DType::kF32, {int64_t{1} << 40, int64_t{1} << 40}}}).ok());
}

TEST(Layout, JsonRoundTrip) {
    auto layout = Layout::create(mixed_specs());
    ASSERT_TRUE(layout.ok());
    auto back = Layout::from_json(layout->to_json());
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->fingerprint(), layout->fingerprint());
    auto json = layout->to_json();
    json["fingerprint"] = "fp:0000000000000000";
    EXPECT_FALSE(Layout::from_json(json).ok());
}

TEST(Layout, ShardRangesCoverTheBufferAtTensorBoundaries) {
    std::vector<TensorSpec> specs;
    for (int i = 0; i < 10; ++i) specs.push_back({"t" + std::to_string(i), DType::kF32, {100 + i}});
    auto layout = Layout::create(specs);
    ASSERT_TRUE(layout.ok());
    for (uint32_t count : {1u, 2u, 3u, 4u, 12u}) {
        auto ranges = layout->shard_ranges(count);
        ASSERT_EQ(ranges.size(), count);
        EXPECT_EQ(ranges.front().begin, 0u);
        EXPECT_EQ(ranges.back().end, layout->total_bytes());
        for (size_t i = 1; i < ranges.size(); ++i) {
            EXPECT_EQ(ranges[i].begin, ranges[i - 1].end);
        }
        for (const auto& r : ranges) {
            bool at_boundary = r.begin == 0;
            for (const auto& t : layout->tensors()) at_boundary |= (t.offset == r.begin);
            at_boundary |= r.begin == layout->total_bytes();
            EXPECT_TRUE(at_boundary) << "shard begins inside a tensor at " << r.begin;
        }
    }
    auto two = layout->shard_ranges(2);
    EXPECT_GT(two[0].size(), layout->total_bytes() / 4);
    EXPECT_GT(two[1].size(), layout->total_bytes() / 4);
}

TEST(Layout, PartialPlanCutsRowsOfTwoDimensionalTensors) {
    auto layout = Layout::create(
        {{"a", DType::kF32, {4, 3}}, {"b", DType::kBF16, {10, 8}}, {"c", DType::kI8, {5}}});
    ASSERT_TRUE(layout.ok());
    auto plan = layout->plan_partial({{"b", RowRange{2, 5}}, {"a", std::nullopt}});
    ASSERT_TRUE(plan.ok()) << plan.status().to_string();
    ASSERT_EQ(plan->layout.tensors().size(), 2u);
    const TensorInfo* b = plan->layout.find("b");
    ASSERT_NE(b, nullptr);
    EXPECT_EQ(b->shape, (std::vector<int64_t>{3, 8}));
    ASSERT_EQ(plan->copies.size(), 2u);
    // Sorted by source offset: "a" first.
    EXPECT_EQ(plan->copies[0].src_offset, layout->find("a")->offset);
    EXPECT_EQ(plan->copies[0].bytes, 48u);
    EXPECT_EQ(plan->copies[1].src_offset, layout->find("b")->offset + 2 * 16);
    EXPECT_EQ(plan->copies[1].bytes, 3u * 16u);
    EXPECT_EQ(plan->copies[1].dst_offset, b->offset);

    EXPECT_EQ(layout->plan_partial({{"zzz", std::nullopt}}).status().code(), StatusCode::kNotFound);
    EXPECT_FALSE(layout->plan_partial({{"b", RowRange{5, 11}}}).ok());
    EXPECT_FALSE(layout->plan_partial({{"b", RowRange{3, 2}}}).ok());
}

}  // namespace
}  // namespace tandem::weights
