#include "common/weights/safetensors.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <gtest/gtest.h>

namespace tandem::weights {
namespace {

std::vector<std::byte> image_of(const std::string& header, size_t data_bytes, uint8_t fill = 7) {
    std::vector<std::byte> image(8 + header.size() + data_bytes, std::byte{fill});
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) image[static_cast<size_t>(i)] = std::byte((n >> (8 * i)) & 0xff);
    std::memcpy(image.data() + 8, header.data(), header.size());
    return image;
}

Status parse_status(const std::string& header, size_t data_bytes) {
    auto image = image_of(header, data_bytes);
    return parse_safetensors(image, "x.safetensors").status();
}

void expect_invalid(const Status& s, const std::string& needle) {
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    EXPECT_NE(s.message().find("x.safetensors"), std::string::npos) << s.message();
}

struct Random {
    Layout layout;
    HostBuffer data;
};

Random random_weights(uint32_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<TensorSpec> specs;
    const DType dtypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3,
                            DType::kI8,  DType::kI32,  DType::kI64};
    for (int i = 0; i < 12; ++i) {
        std::vector<int64_t> shape;
        const int ndim = static_cast<int>(rng() % 3);
        for (int d = 0; d < ndim; ++d) shape.push_back(static_cast<int64_t>(1 + rng() % 40));
        specs.push_back({"layer." + std::to_string(i), dtypes[rng() % 7], shape});
    }
    Random r{*Layout::create(specs), {}};
    r.data = *HostBuffer::allocate(r.layout.total_bytes());
    for (const auto& t : r.layout.tensors()) {
        for (uint64_t b = 0; b < t.bytes; ++b) r.data.data()[t.offset + b] = std::byte(rng());
    }
    return r;
}

TEST(Safetensors, ParsesTheReferenceExample) {
    auto image = image_of(
        R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]},"__metadata__":{"foo":"bar"}})",
        16);
    auto loaded = parse_safetensors(image, "x.safetensors");
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    ASSERT_EQ(loaded->layout.tensors().size(), 1u);
    EXPECT_EQ(loaded->layout.tensors()[0].dtype, DType::kI32);
    EXPECT_EQ(loaded->layout.tensors()[0].bytes, 16u);
    EXPECT_EQ(loaded->metadata.at("foo"), "bar");
}

TEST(Safetensors, RoundTripKeepsBytesLayoutAndMetadata) {
    Random w = random_weights(1);
    auto image = encode_safetensors(w.layout, w.data.span(), {{"format", "pt"}});
    ASSERT_TRUE(image.ok());
    auto back = parse_safetensors(*image, "mem");
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->layout.fingerprint(), w.layout.fingerprint());
    EXPECT_EQ(back->metadata.at("format"), "pt");
    for (const auto& t : w.layout.tensors()) {
        EXPECT_EQ(std::memcmp(back->data.data() + t.offset, w.data.data() + t.offset, t.bytes), 0)
            << t.name;
    }

    const std::string path =
        ::testing::TempDir() + "/roundtrip-" + std::to_string(getpid()) + ".safetensors";
    ASSERT_TRUE(write_safetensors(path, w.layout, w.data.span()).ok());
    auto from_file = read_safetensors(path);
    ASSERT_TRUE(from_file.ok()) << from_file.status().to_string();
    EXPECT_EQ(from_file->layout.fingerprint(), w.layout.fingerprint());
    EXPECT_EQ(std::memcmp(from_file->data.data(), w.data.data(), w.layout.total_bytes()), 0);
    std::filesystem::remove(path);
}

TEST(Safetensors, TensorsAreOrderedByDataOffset) {
    auto image = image_of(R"({"b":{"dtype":"I8","shape":[2],"data_offsets":[4,6]},)"
                          R"("a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                          6);
    auto loaded = parse_safetensors(image, "x");
    ASSERT_TRUE(loaded.ok()) << loaded.status().to_string();
    EXPECT_EQ(loaded->layout.tensors()[0].name, "a");
    EXPECT_EQ(loaded->layout.tensors()[1].name, "b");
}

TEST(Safetensors, TruncatedFilesAreRefused) {
    Random w = random_weights(2);
    auto image = *encode_safetensors(w.layout, w.data.span());
    for (size_t keep : {size_t{0}, size_t{5}, size_t{8}, size_t{20}, image.size() - 1}) {
        std::vector<std::byte> cut(image.begin(), image.begin() + static_cast<long>(keep));
        auto r = parse_safetensors(cut, "x.safetensors");
        ASSERT_FALSE(r.ok()) << "kept " << keep;
        expect_invalid(r.status(), "truncated");
    }
    const std::string path = ::testing::TempDir() + "/empty-" + std::to_string(getpid());
    { std::ofstream(path).flush(); }
    auto empty = read_safetensors(path);
    ASSERT_FALSE(empty.ok());
    EXPECT_NE(empty.status().message().find("truncated"), std::string::npos);
    std::filesystem::remove(path);
    EXPECT_FALSE(read_safetensors("/nonexistent/x.safetensors").ok());
}

TEST(Safetensors, MalformedHeadersAreRefusedWithTheReason) {
    expect_invalid(parse_status("[1,2]", 0), "JSON object");
    expect_invalid(parse_status("{\"a\":", 0), "not valid JSON");
    expect_invalid(parse_status(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
                   "F64");
    expect_invalid(parse_status(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
                   "needs 8 bytes");
    expect_invalid(parse_status(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
                   "non-negative");
    expect_invalid(parse_status(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
                   "end before");
    expect_invalid(parse_status(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "data_offsets");
    expect_invalid(
        parse_status(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})", 4),
        "unknown field \"x\"");
    expect_invalid(parse_status(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"I8","shape":[2],"data_offsets":[2,4]}})",
                                4),
                   "overlap");
    expect_invalid(parse_status(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},)"
                                R"("b":{"dtype":"I8","shape":[2],"data_offsets":[6,8]}})",
                                8),
                   "hole");
    expect_invalid(parse_status(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},)"
                                R"("a":{"dtype":"I8","shape":[4],"data_offsets":[4,8]}})",
                                8),
                   "appears twice");
    expect_invalid(parse_status(R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})", 9),
                   "trailing");
    expect_invalid(parse_status(R"({"__metadata__":{"k":1}})", 0), "__metadata__");

    // A header length larger than the file.
    auto image = image_of("{}", 0);
    image[0] = std::byte{0xff};
    image[1] = std::byte{0xff};
    expect_invalid(parse_safetensors(image, "x.safetensors").status(), "truncated");
    image[7] = std::byte{0x7f};
    expect_invalid(parse_safetensors(image, "x.safetensors").status(), "exceeds the limit");
}

TEST(Safetensors, WriteFailureLeavesNoFile) {
    Random w = random_weights(3);
    const std::string path = "/nonexistent-dir/out.safetensors";
    EXPECT_FALSE(write_safetensors(path, w.layout, w.data.span()).ok());
    EXPECT_FALSE(std::filesystem::exists(path));
    // Too little data for the layout.
    EXPECT_FALSE(encode_safetensors(w.layout, w.data.span().first(1)).ok());
}

}  // namespace
}  // namespace tandem::weights
