#include "kernels/ring/in_process_runner.h"

#include <thread>
#include <vector>

#include "kernels/ring/in_process_transport.h"

namespace tandem::kernels {

Status ring_forward_in_process(const RingAttentionConfig& config, int ranks, RingDrive drive,
                               const float* q, const float* k, const float* v, float* o,
                               float* lse) {
    if (ranks <= 0) return invalid_argument("ring: ranks must be > 0");
    auto transports = make_in_process_ring(ranks);
    const int64_t qrow = static_cast<int64_t>(config.hq) * config.d;
    const int64_t kvrow = static_cast<int64_t>(config.hkv) * config.d;
    struct Rank {
        std::unique_ptr<RingAttention> ring;
        std::vector<float> q, k, v, o, lse;
    };
    std::vector<Rank> rs(static_cast<size_t>(ranks));
    for (int r = 0; r < ranks; ++r) {
        TANDEM_ASSIGN_OR_RETURN(rs[r].ring, RingAttention::create(config, *transports[r]));
        const RingShard& s = rs[r].ring->shard();
        rs[r].q.resize(static_cast<size_t>(s.rows * qrow));
        rs[r].o.resize(static_cast<size_t>(s.rows * qrow));
        rs[r].k.resize(static_cast<size_t>(s.rows * kvrow));
        rs[r].v.resize(static_cast<size_t>(s.rows * kvrow));
        rs[r].lse.resize(static_cast<size_t>(s.rows * config.hq));
        gather_rows(s, q, qrow, rs[r].q.data());
        gather_rows(s, k, kvrow, rs[r].k.data());
        gather_rows(s, v, kvrow, rs[r].v.data());
    }
    if (drive == RingDrive::kStepped) {
        std::vector<RingAttention*> ptrs;
        for (auto& r : rs) {
            TANDEM_RETURN_IF_ERROR(r.ring->prepare_forward(r.q.data(), r.k.data(), r.v.data(),
                                                           r.o.data(), r.lse.data()));
            ptrs.push_back(r.ring.get());
        }
        TANDEM_RETURN_IF_ERROR(run_ring_stepped(ptrs));
    } else {
        std::vector<Status> status(static_cast<size_t>(ranks));
        std::vector<std::thread> threads;
        for (int i = 0; i < ranks; ++i) {
            threads.emplace_back([&rs, &status, i] {
                Rank& r = rs[i];
                status[i] =
                    r.ring->forward(r.q.data(), r.k.data(), r.v.data(), r.o.data(), r.lse.data());
            });
        }
        for (auto& t : threads) t.join();
        for (const Status& s : status) TANDEM_RETURN_IF_ERROR(s);
    }
    for (auto& r : rs) {
        scatter_rows(r.ring->shard(), r.o.data(), qrow, o);
        scatter_lse(r.ring->shard(), r.lse.data(), config.hq, config.seq_len, lse);
    }
    return Status();
}

}  // namespace tandem::kernels
