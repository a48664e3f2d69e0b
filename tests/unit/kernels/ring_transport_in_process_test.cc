// The ring transport contract suite against the in-process backend.
#include "kernels/ring/bootstrap.h"
#include "kernels/ring/in_process_transport.h"
#include "tests/unit/kernels/support/ring_transport_contract.h"

namespace tandem::kernels::testkit {
namespace {

Result<std::unique_ptr<RingWorld>> make_in_process_world(int size) {
    return std::unique_ptr<RingWorld>(std::make_unique<HostRingWorld>(make_in_process_ring(size)));
}

INSTANTIATE_TEST_SUITE_P(InProcess, RingTransportContract,
                         ::testing::Values(RingContractParam{"in_process", make_in_process_world,
                                                             8}),
                         ring_contract_name);

TEST(InProcessRing, ShiftOfMismatchedSizesFailsOnBothSides) {
    auto ranks = make_in_process_ring(2);
    char a[8] = {}, b[8] = {}, c[4] = {}, d[4] = {};
    auto r0 = ranks[0]->post_shift(0, a, b, 8);
    auto r1 = ranks[1]->post_shift(0, c, d, 4);
    ASSERT_TRUE(r0.ok() && r1.ok());
    EXPECT_EQ(ranks[0]->wait(*r0, std::chrono::seconds(5)).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(ranks[1]->wait(*r1, std::chrono::seconds(5)).code(), StatusCode::kInvalidArgument);
}

TEST(InProcessRing, DestroyingARankCancelsItsPostedShifts) {
    auto ranks = make_in_process_ring(2);
    std::vector<char> send(64, 1), recv(64);
    auto req = ranks[0]->post_shift(0, send.data(), recv.data(), 64);
    ASSERT_TRUE(req.ok());
    ranks[0].reset();  // rank 1 never posted; nothing may copy into the freed buffers later
    std::vector<char> s1(64, 2), r1(64, 0);
    auto req1 = ranks[1]->post_shift(0, s1.data(), r1.data(), 64);
    ASSERT_TRUE(req1.ok());
    EXPECT_EQ(ranks[1]->wait(*req1, std::chrono::milliseconds(20)).code(),
              StatusCode::kDeadlineExceeded);
    EXPECT_EQ(r1[0], 0);
}

TEST(InProcessBootstrap, AllGatherReturnsEveryContributionInRankOrder) {
    auto group = make_in_process_bootstrap(3);
    std::vector<std::vector<std::string>> got(3);
    std::vector<std::thread> threads;
    for (int r = 0; r < 3; ++r) {
        threads.emplace_back([&, r] {
            for (int round = 0; round < 3; ++round) {
                auto all =
                    group[r]->allgather(std::to_string(r * 10 + round), std::chrono::seconds(10));
                ASSERT_TRUE(all.ok());
                got[r] = *all;
            }
        });
    }
    for (auto& t : threads) t.join();
    for (int r = 0; r < 3; ++r) EXPECT_EQ(got[r], (std::vector<std::string>{"2", "12", "22"}));
}

}  // namespace
}  // namespace tandem::kernels::testkit
