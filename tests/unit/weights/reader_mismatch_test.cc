// Naming the first differing tensor of a layout mismatch (reader_mismatch.h): what differs, in
// layout order, and the publishers' layout files a reader finds it from (the format the Python
// SDK's Publisher writes).

#include "common/weights/reader_mismatch.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace tandem::weights {
namespace {

using Kind = TensorDifference::Kind;

Layout layout(std::vector<TensorSpec> specs) {
    auto l = Layout::create(std::move(specs));
    EXPECT_TRUE(l.ok()) << l.status().to_string();
    return *l;
}

const std::vector<TensorSpec> kBase = {{"embed.weight", DType::kBF16, {16, 8}},
                                       {"layers.0.weight", DType::kF32, {8, 8}},
                                       {"norm.weight", DType::kF32, {8}}};

// A directory of its own under the test temp dir, empty.
std::string fresh_dir(const std::string& name) {
    const auto dir = std::filesystem::path(::testing::TempDir()) /
                     ("tandem-mismatch-" + name + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(dir);
    return dir.string();
}

TEST(FirstDifference, NamesTheFirstTensorWhoseDtypeDiffers) {
    auto other = kBase;
    other[1].dtype = DType::kBF16;
    other[2].shape = {9};  // a later difference is not the first
    const TensorDifference d = first_difference(layout(kBase), layout(other));
    EXPECT_EQ(d.kind, Kind::kDtype);
    EXPECT_EQ(d.index, 1u);
    EXPECT_EQ(d.name, "layers.0.weight");
    EXPECT_EQ(d.text(), "tensor 1 layers.0.weight: dtype F32 expected, BF16 published");
}

TEST(FirstDifference, NamesAShapeANameAMissingAndAnUnexpectedTensor) {
    auto shape = kBase;
    shape[0].shape = {32, 8};
    TensorDifference d = first_difference(layout(kBase), layout(shape));
    EXPECT_EQ(d.kind, Kind::kShape);
    EXPECT_EQ(d.text(), "tensor 0 embed.weight: shape [16, 8] expected, [32, 8] published");

    auto renamed = kBase;
    renamed[2].name = "final_norm.weight";
    d = first_difference(layout(kBase), layout(renamed));
    EXPECT_EQ(d.kind, Kind::kName);
    EXPECT_EQ(d.index, 2u);
    EXPECT_NE(d.text().find("final_norm.weight F32[8] published"), std::string::npos) << d.text();

    auto shorter = kBase;
    shorter.pop_back();
    d = first_difference(layout(kBase), layout(shorter));
    EXPECT_EQ(d.kind, Kind::kMissing);
    EXPECT_EQ(d.name, "norm.weight");
    EXPECT_EQ(d.text(),
              "tensor 2 norm.weight F32[8]: missing from the published layout (2 tensors)");

    d = first_difference(layout(shorter), layout(kBase));
    EXPECT_EQ(d.kind, Kind::kUnexpected);
    EXPECT_EQ(d.name, "norm.weight");
    EXPECT_NE(d.text().find("published but not expected"), std::string::npos) << d.text();
}

TEST(FirstDifference, EqualLayoutsHaveNone) {
    EXPECT_EQ(first_difference(layout(kBase), layout(kBase)).kind, Kind::kNone);
}

TEST(LayoutFile, ReadsWhatThePythonPublisherWrites) {
    const std::string dir = fresh_dir("python");
    const Layout expected = layout(kBase);
    std::filesystem::create_directories(dir);
    // tandem/weights.py _write_layout_file: json.dump of [name, dtype, shape] per tensor, named
    // by the fingerprint text with ':' made '-'.
    std::string name = expected.fingerprint_text();
    name[2] = '-';
    std::ofstream(std::filesystem::path(dir) / (name + ".json"))
        << R"([["embed.weight", "BF16", [16, 8]], ["layers.0.weight", "F32", [8, 8]], )"
        << R"(["norm.weight", "F32", [8]]])";
    auto read = read_layout_file(dir, expected.fingerprint());
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    EXPECT_EQ(read->fingerprint(), expected.fingerprint());
    EXPECT_EQ(job_layouts_dir("/run", JobId(7)), "/run/jobs/job-000007/layouts");
    std::filesystem::remove_all(dir);
}

TEST(LayoutFile, WrittenLayoutReadsBackAndABadFileIsNamed) {
    const std::string dir = fresh_dir("roundtrip");
    const Layout l = layout(kBase);
    ASSERT_TRUE(write_layout_file(dir, l).ok());
    auto read = read_layout_file(dir, l.fingerprint());
    ASSERT_TRUE(read.ok()) << read.status().to_string();
    EXPECT_EQ(read->fingerprint(), l.fingerprint());

    EXPECT_EQ(read_layout_file(dir, l.fingerprint() + 1).status().code(), StatusCode::kNotFound);

    // A file under the wrong fingerprint, and one that is not a list of tensors.
    std::filesystem::copy_file(layout_file_path(dir, l.fingerprint()), layout_file_path(dir, 42));
    Status wrong = read_layout_file(dir, 42).status();
    EXPECT_EQ(wrong.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(wrong.message().find(layout_file_path(dir, 42)), std::string::npos)
        << wrong.message();
    EXPECT_NE(wrong.message().find(l.fingerprint_text()), std::string::npos) << wrong.message();
    std::ofstream(layout_file_path(dir, 43)) << R"({"tensors": 1})";
    Status bad = read_layout_file(dir, 43).status();
    EXPECT_EQ(bad.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(bad.message().find(layout_file_path(dir, 43)), std::string::npos) << bad.message();
    std::filesystem::remove_all(dir);
}

TEST(MismatchDetail, NamesTheFirstDifferenceWhenThePublishersLayoutIsKnown) {
    const std::string dir = fresh_dir("detail");
    auto other = kBase;
    other[2].shape = {16};
    const Layout published = layout(other);
    const Layout expected = layout(kBase);
    EXPECT_EQ(mismatch_detail(expected, "", published.fingerprint()), "");
    const std::string unknown = mismatch_detail(expected, dir, published.fingerprint());
    EXPECT_NE(unknown.find("not known here"), std::string::npos) << unknown;
    ASSERT_TRUE(write_layout_file(dir, published).ok());
    EXPECT_EQ(mismatch_detail(expected, dir, published.fingerprint()),
              "; first difference at tensor 2 norm.weight: shape [8] expected, [16] published");
    std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace tandem::weights
