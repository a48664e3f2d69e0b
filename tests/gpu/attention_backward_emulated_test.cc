// The tiled attention backward's kernel bodies (kernels/cuda/attention_backward_tiled_kernels.h)
// run on the host: every block of the grid as 128 threads, each warp's ldmatrix (plain and
// .trans), mma.sync m16n8k16 and shuffles emulated lane by lane after the PTX ISA's fragment
// layouts, shared memory a host buffer. This exercises the kernels' fragment, tile and mask
// arithmetic without a GPU (the emulated primitives are the assumption; the device run checks
// them). Against attention_backward<double> on the same bf16 inputs and the double forward's o
// and lse, with the device test's tolerance: |err| <= 6e-2 rms(ref) + 2e-2 |ref| per tensor
// (observed: max |err| <= 3.2e-2 rms(ref) on these shapes).
// Needs no device: runs everywhere tandem_gpu_train is built (seconds: small shapes).
#include <cuda_bf16.h>
#include <gtest/gtest.h>

#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "common/model/layers.h"
#include "kernels/half.h"
#include "tests/unit/kernels/support/attention_reference.h"

namespace tandem::kernels::cuda::detail::host_emulation {

constexpr int kBlockThreads = 128;

struct Warp {
    std::barrier<> bar{32};
    const void* ptr[32] = {};
    uint32_t a[32][4] = {};
    uint32_t b[32][2] = {};
    float val[32] = {};
};

struct Block {
    std::barrier<> bar{kBlockThreads};
    Warp warps[kBlockThreads / 32];
    unsigned bx = 0, by = 0;
};

thread_local int t_thread = 0;
thread_local Block* t_block = nullptr;

inline int tb_thread() { return t_thread; }
inline unsigned tb_block_x() { return t_block->bx; }
inline unsigned tb_block_y() { return t_block->by; }
inline void tb_sync() { t_block->bar.arrive_and_wait(); }
inline Warp& this_warp() { return t_block->warps[t_thread >> 5]; }
inline int lane() { return t_thread & 31; }

inline float tb_warp_sum(float v) {
    Warp& w = this_warp();
    w.val[lane()] = v;
    w.bar.arrive_and_wait();
    float s = 0.0f;
    for (int l = 0; l < 32; ++l) s += w.val[l];
    w.bar.arrive_and_wait();
    return s;
}

inline uint32_t bits_at(const void* row, int col) {
    uint16_t b;
    std::memcpy(&b, static_cast<const char*>(row) + 2 * col, 2);
    return b;
}

// ldmatrix .x4: thread 8m + r gives the address of row r of matrix m (8 x 8 b16); thread T gets,
// of every matrix, row T / 4, columns 2 (T % 4) and + 1 (lower column in the low half).
inline void ldsm_x4(uint32_t (&r)[4], const __nv_bfloat16* p) {
    Warp& w = this_warp();
    const int t = lane();
    w.ptr[t] = p;
    w.bar.arrive_and_wait();
    for (int m = 0; m < 4; ++m) {
        const void* row = w.ptr[8 * m + t / 4];
        r[m] = bits_at(row, 2 * (t % 4)) | (bits_at(row, 2 * (t % 4) + 1) << 16);
    }
    w.bar.arrive_and_wait();
}
// .trans: thread T gets rows 2 (T % 4) and + 1 of column T / 4.
inline void ldsm_x4_trans(uint32_t (&r)[4], const __nv_bfloat16* p) {
    Warp& w = this_warp();
    const int t = lane();
    w.ptr[t] = p;
    w.bar.arrive_and_wait();
    for (int m = 0; m < 4; ++m) {
        r[m] = bits_at(w.ptr[8 * m + 2 * (t % 4)], t / 4) |
               (bits_at(w.ptr[8 * m + 2 * (t % 4) + 1], t / 4) << 16);
    }
    w.bar.arrive_and_wait();
}

inline float lo(uint32_t x) { return bf16_bits_to_float(static_cast<uint16_t>(x & 0xffffu)); }
inline float hi(uint32_t x) { return bf16_bits_to_float(static_cast<uint16_t>(x >> 16)); }

// mma.sync.m16n8k16.row.col f32.bf16.bf16.f32, with g = lane / 4, t = lane % 4:
// A: a0 = A[g][2t, 2t+1], a1 = A[g+8][2t, 2t+1], a2 = A[g][2t+8, 2t+9], a3 = A[g+8][2t+8, 2t+9];
// B: b0 = B[2t, 2t+1][g], b1 = B[2t+8, 2t+9][g]; C/D: c0, c1 = [g][2t, 2t+1], c2, c3 = [g+8][..].
inline void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    Warp& w = this_warp();
    const int t = lane();
    std::memcpy(w.a[t], a, sizeof(w.a[t]));
    w.b[t][0] = b0;
    w.b[t][1] = b1;
    w.bar.arrive_and_wait();
    float A[16][16], B[16][8];
    for (int l = 0; l < 32; ++l) {
        const int g = l / 4, q = 2 * (l % 4);
        A[g][q] = lo(w.a[l][0]);
        A[g][q + 1] = hi(w.a[l][0]);
        A[g + 8][q] = lo(w.a[l][1]);
        A[g + 8][q + 1] = hi(w.a[l][1]);
        A[g][q + 8] = lo(w.a[l][2]);
        A[g][q + 9] = hi(w.a[l][2]);
        A[g + 8][q + 8] = lo(w.a[l][3]);
        A[g + 8][q + 9] = hi(w.a[l][3]);
        B[q][g] = lo(w.b[l][0]);
        B[q + 1][g] = hi(w.b[l][0]);
        B[q + 8][g] = lo(w.b[l][1]);
        B[q + 9][g] = hi(w.b[l][1]);
    }
    w.bar.arrive_and_wait();
    const int g = t / 4, q = 2 * (t % 4);
    for (int e = 0; e < 4; ++e) {
        const int row = g + (e >> 1) * 8, col = q + (e & 1);
        float s = c[e];
        for (int k = 0; k < 16; ++k) s += A[row][k] * B[k][col];
        c[e] = s;
    }
}

}  // namespace tandem::kernels::cuda::detail::host_emulation

#define TANDEM_TILED_NS host_emulation
#define TB_FN inline
#define TB_UNROLL
#include "kernels/cuda/attention_backward_tiled_kernels.h"

namespace tandem::kernels::cuda::detail::host_emulation {
namespace {

// Runs body(smem) for every block of a gx x gy grid, 128 threads per block.
template <typename Body>
void run_grid(unsigned gx, unsigned gy, size_t smem_bytes, Body body) {
    for (unsigned by = 0; by < gy; ++by) {
        for (unsigned bx = 0; bx < gx; ++bx) {
            Block block;
            block.bx = bx;
            block.by = by;
            std::vector<uint4> smem((smem_bytes + sizeof(uint4) - 1) / sizeof(uint4));
            std::vector<std::thread> threads;
            for (int t = 0; t < kBlockThreads; ++t) {
                threads.emplace_back([&, t] {
                    t_thread = t;
                    t_block = &block;
                    body(reinterpret_cast<unsigned char*>(smem.data()));
                });
            }
            for (auto& th : threads) th.join();
        }
    }
}

double rms(const std::vector<double>& x) {
    double s = 0.0;
    for (double v : x) s += v * v;
    return x.empty() ? 0.0 : std::sqrt(s / static_cast<double>(x.size()));
}

AttentionParams causal(int64_t tq, int64_t first, int hq, int hkv, int d) {
    AttentionParams p;
    p.tq = tq;
    p.tk = first + tq;
    p.q_pos0 = first;
    p.hq = hq;
    p.hkv = hkv;
    p.d = d;
    p.scale = default_softmax_scale(d);
    p.causal = true;
    return p;
}

template <int D, int BQ, int BK>
void check(const AttentionParams& p, bool accumulate, uint64_t seed) {
    SCOPED_TRACE(testkit::describe(p) + (accumulate ? " accumulate" : ""));
    ASSERT_EQ(p.d, D);
    const size_t nq = static_cast<size_t>(p.tq * p.hq * D),
                 nk = static_cast<size_t>(p.tk * p.hkv * D);
    std::vector<float> q = testkit::random_floats(nq, seed, -2.0f, 2.0f);
    std::vector<float> k = testkit::random_floats(nk, seed + 1, -2.0f, 2.0f);
    std::vector<float> v = testkit::random_floats(nk, seed + 2);
    const std::vector<float> dout = testkit::random_floats(nq, seed + 3);
    const std::vector<uint16_t> qb = round_to_16bit(q, true), kb = round_to_16bit(k, true),
                                vb = round_to_16bit(v, true);
    const std::vector<double> qd = testkit::to_double(q), kd = testkit::to_double(k),
                              vd = testkit::to_double(v), dod = testkit::to_double(dout);
    const testkit::ReferenceForward f = testkit::reference_forward(p, qd, kd, vd);
    testkit::ReferenceGrads g = testkit::reference_backward(p, qd, kd, vd, dod);
    const double rq = rms(g.dq), rk = rms(g.dk), rv = rms(g.dv);
    const std::vector<float> o(f.o.begin(), f.o.end()), lse(f.lse.begin(), f.lse.end());
    std::vector<float> dq(nq, 1e3f), dk(nk, 1e3f), dv(nk, 1e3f);
    if (accumulate) {
        dq = testkit::random_floats(nq, seed + 4);
        dk = testkit::random_floats(nk, seed + 5);
        dv = testkit::random_floats(nk, seed + 6);
        for (size_t i = 0; i < nq; ++i) g.dq[i] += dq[i];
        for (size_t i = 0; i < nk; ++i) {
            g.dk[i] += dk[i];
            g.dv[i] += dv[i];
        }
    }
    const Args a = make_args(p, qb.data(), kb.data(), vb.data(), o.data(), lse.data(), dout.data(),
                             dq.data(), dk.data(), dv.data(), accumulate);
    run_grid(static_cast<unsigned>((p.tk + kRows - 1) / kRows), static_cast<unsigned>(p.hkv),
             dkdv_smem_bytes<D, BQ>(), [&](unsigned char* smem) { dkdv_body<D, BQ>(a, smem); });
    run_grid(static_cast<unsigned>((p.tq + kRows - 1) / kRows), static_cast<unsigned>(p.hq),
             dq_smem_bytes<D, BK>(), [&](unsigned char* smem) { dq_body<D, BK>(a, smem); });
    std::printf("emulated tiled %s: max|err|/rms(ref) dq %.3g dk %.3g dv %.3g\n",
                testkit::describe(p).c_str(), testkit::max_abs_error(dq, g.dq) / rq,
                testkit::max_abs_error(dk, g.dk) / rk, testkit::max_abs_error(dv, g.dv) / rv);
    EXPECT_TRUE(testkit::all_close(dq, g.dq, 6e-2 * rq + 1e-6, 2e-2, "dq"));
    EXPECT_TRUE(testkit::all_close(dk, g.dk, 6e-2 * rk + 1e-6, 2e-2, "dk"));
    EXPECT_TRUE(testkit::all_close(dv, g.dv, 6e-2 * rv + 1e-6, 2e-2, "dv"));
}

TEST(TiledAttentionBackwardEmulated, MatchesDoubleReferenceD64) {
    check<64, 64, 64>(causal(70, 0, 4, 2, 64), false, 11);  // two tiles, GQA
    check<64, 64, 64>(causal(21, 50, 2, 1, 64), true, 12);  // continuation, MQA, accumulate
    AttentionParams z = causal(80, 0, 2, 1, 64);            // zigzag two runs
    z.tk = 80;
    z.q_split = z.k_split = 40;
    z.q_pos1 = z.k_pos1 = 150;
    check<64, 64, 64>(z, false, 13);
    AttentionParams nc = causal(30, 0, 2, 2, 64);  // not causal, tk != tq
    nc.causal = false;
    nc.tk = 75;
    check<64, 64, 64>(nc, false, 14);
}

TEST(TiledAttentionBackwardEmulated, MatchesDoubleReferenceD128) {
    check<128, 32, 64>(causal(45, 0, 2, 1, 128), false, 21);
    AttentionParams late = causal(40, 0, 2, 2, 128);  // rows 0..9 see no key
    late.k_pos0 = 10;
    late.tk = 30;
    check<128, 32, 64>(late, false, 22);
}

}  // namespace
}  // namespace tandem::kernels::cuda::detail::host_emulation
