// The tandem-attn tool end to end: .npy inputs written here, the built binary run as a child
// process, its .npy outputs checked against the double reference.
#include <sys/wait.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "kernels/device.h"
#include "kernels/tools/npy.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels {
namespace {

using testkit::all_close;
using testkit::make_inputs;
using testkit::reference_forward;
using testkit::test_seed;

namespace fs = std::filesystem;

class TandemAttnTool : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() /
               ("tandem-attn-test-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }

    // Runs the tool with `args`; returns its exit status.
    int run(const std::string& args) {
        const std::string cmd = std::string(TANDEM_BINARY_DIR) + "/kernels/tandem-attn " + args +
                                " > " + (dir_ / "stdout").string() + " 2> " +
                                (dir_ / "stderr").string();
        const int status = std::system(cmd.c_str());
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }

    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    fs::path dir_;
};

// Writes q (as float64, to exercise the conversion), k and v.
void write_inputs(const testkit::AttentionInputs& in, const std::string& dir) {
    const AttentionParams& p = in.p;
    ASSERT_TRUE(write_npy(dir + "/k.npy", {p.tk, p.hkv, p.d}, in.k.data()).ok());
    ASSERT_TRUE(write_npy(dir + "/v.npy", {p.tk, p.hkv, p.d}, in.v.data()).ok());
    // float64 q: hand-written header (write_npy only emits float32).
    std::vector<double> qd(in.qd);
    std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" +
                         std::to_string(p.tq) + ", " + std::to_string(p.hq) + ", " +
                         std::to_string(p.d) + "), }";
    header.append((64 - (10 + header.size() + 1) % 64) % 64, ' ');
    header += '\n';
    FILE* f = std::fopen((dir + "/q.npy").c_str(), "wb");
    ASSERT_NE(f, nullptr);
    const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                  static_cast<unsigned char>(header.size() >> 8)};
    std::fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    std::fwrite(len, 1, 2, f);
    std::fwrite(header.data(), 1, header.size(), f);
    std::fwrite(qd.data(), sizeof(double), qd.size(), f);
    std::fclose(f);
}

TEST_F(TandemAttnTool, SingleDeviceCausalMatchesReference) {
    AttentionParams p;
    p.tq = 40;
    p.tk = 70;
    p.hq = 4;
    p.hkv = 2;
    p.d = 16;
    p.scale = 0.3f;
    p.causal = true;
    p.q_pos0 = 30;  // the tool's default: the queries are the last tq tokens
    const auto in = make_inputs(p, test_seed());
    write_inputs(in, dir_.string());
    ASSERT_EQ(run("--q " + path("q.npy") + " --k " + path("k.npy") + " --v " + path("v.npy") +
                  " --out " + path("out") + " --causal --scale 0.3"),
              0);
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    auto o = read_npy(path("out/o.npy"));
    auto lse = read_npy(path("out/lse.npy"));
    ASSERT_TRUE(o.ok() && lse.ok());
    EXPECT_EQ(o->shape, (std::vector<int64_t>{40, 4, 16}));
    EXPECT_EQ(lse->shape, (std::vector<int64_t>{4, 40}));
    EXPECT_TRUE(all_close(o->data, ref.o, 1e-5, 1e-5, "o"));
    EXPECT_TRUE(all_close(lse->data, ref.lse, 1e-5, 1e-5, "lse"));
}

TEST_F(TandemAttnTool, RingOfThreeZigzagMatchesReference) {
    AttentionParams p;
    p.tq = p.tk = 50;
    p.hq = 3;
    p.hkv = 1;
    p.d = 8;
    p.scale = default_softmax_scale(8);
    p.causal = true;
    const auto in = make_inputs(p, test_seed() + 1);
    write_inputs(in, dir_.string());
    ASSERT_EQ(run("--q " + path("q.npy") + " --k " + path("k.npy") + " --v " + path("v.npy") +
                  " --out " + path("out") + " --causal --ranks 3 --layout zigzag"),
              0);
    const auto ref = reference_forward(p, in.qd, in.kd, in.vd);
    auto o = read_npy(path("out/o.npy"));
    auto lse = read_npy(path("out/lse.npy"));
    ASSERT_TRUE(o.ok() && lse.ok());
    EXPECT_TRUE(all_close(o->data, ref.o, 1e-5, 1e-5, "o"));
    EXPECT_TRUE(all_close(lse->data, ref.lse, 1e-5, 1e-5, "lse"));
}

TEST_F(TandemAttnTool, BadUsageAndBadShapesFailWithoutWritingOutputs) {
    EXPECT_EQ(run("--q x.npy"), 2);
    EXPECT_EQ(run("--q a --k b --v c --out d --layout striped"), 2);
    AttentionParams p;
    p.tq = 4;
    p.tk = 4;
    p.hq = 3;
    p.hkv = 2;  // 3 % 2 != 0
    p.d = 4;
    p.scale = 1.0f;
    const auto in = make_inputs(p, 1);
    ASSERT_TRUE(write_npy(path("q.npy"), {4, 3, 4}, in.q.data()).ok());
    ASSERT_TRUE(write_npy(path("k.npy"), {4, 2, 4}, in.k.data()).ok());
    ASSERT_TRUE(write_npy(path("v.npy"), {4, 2, 4}, in.v.data()).ok());
    EXPECT_EQ(run("--q " + path("q.npy") + " --k " + path("k.npy") + " --v " + path("v.npy") +
                  " --out " + path("out")),
              2);  // bad input, as documented
    EXPECT_FALSE(fs::exists(path("out/o.npy")));
    // A missing input file is bad input too.
    EXPECT_EQ(run("--q " + path("nosuch.npy") + " --k " + path("k.npy") + " --v " + path("v.npy") +
                  " --out " + path("out")),
              2);
}

TEST_F(TandemAttnTool, CudaBackendWithoutADeviceSaysSoAndFails) {
    if (!tandem::kernels::cuda_devices().empty()) GTEST_SKIP() << "a CUDA device is present";
    AttentionParams p;
    p.tq = p.tk = 4;
    p.hq = p.hkv = 1;
    p.d = 4;
    const auto in = make_inputs(p, 1);
    ASSERT_TRUE(write_npy(path("q.npy"), {4, 1, 4}, in.q.data()).ok());
    ASSERT_TRUE(write_npy(path("k.npy"), {4, 1, 4}, in.k.data()).ok());
    ASSERT_TRUE(write_npy(path("v.npy"), {4, 1, 4}, in.v.data()).ok());
    EXPECT_EQ(run("--q " + path("q.npy") + " --k " + path("k.npy") + " --v " + path("v.npy") +
                  " --out " + path("out") + " --backend cuda"),
              1);
    std::ifstream err(path("stderr"));
    const std::string text((std::istreambuf_iterator<char>(err)), std::istreambuf_iterator<char>());
    EXPECT_NE(text.find("--backend cuda: "), std::string::npos) << text;
    EXPECT_NE(text.find("use --backend cpu"), std::string::npos) << text;
    EXPECT_FALSE(fs::exists(path("out/o.npy")));
}

TEST(Npy, Float32RoundTripsAndBadFilesAreRejected) {
    const std::string file =
        (fs::temp_directory_path() / ("tandem-npy-" + std::to_string(::getpid()) + ".npy"))
            .string();
    const std::vector<float> data = {1.5f, -2.0f, 3.25f, 0.0f, 7.0f, 8.0f};
    ASSERT_TRUE(write_npy(file, {2, 3}, data.data()).ok());
    auto back = read_npy(file);
    ASSERT_TRUE(back.ok()) << back.status().to_string();
    EXPECT_EQ(back->shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(back->data, data);
    std::FILE* f = std::fopen(file.c_str(), "wb");
    std::fputs("not numpy", f);
    std::fclose(f);
    EXPECT_EQ(read_npy(file).status().code(), StatusCode::kInvalidArgument);
    fs::remove(file);
    EXPECT_EQ(read_npy(file).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tandem::kernels
