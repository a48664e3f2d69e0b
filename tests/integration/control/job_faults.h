#pragma once

// What the fault tests that run a job on a LocalCluster share (tests/integration/grpo,
// tests/integration/user_actors): the trainer's reported step, the story of a job that did not
// finish, and kill -9 of the coordinator followed by `tandem up` again.

#include <signal.h>

#include <chrono>
#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "tests/integration/control/cluster_harness.h"

namespace tandem::testing {

// The step the job's trainer last reported as progress (-1 before any).
inline int64_t trainer_progress_step(const LocalCluster& c, const std::string& job) {
    const auto j = c.job(job);
    if (!j.is_object()) return -1;
    for (const auto& a : j.value("actors", nlohmann::json::array())) {
        if (a.value("actor", "").find("/trainer-") == std::string::npos) continue;
        const auto p = a.value("progress", nlohmann::json::object());
        if (p.is_object() && p.contains("step")) return p["step"].get<int64_t>();
    }
    return -1;
}

// What to print when a job did not finish: its state, events and the end of its logs.
inline std::string job_story(LocalCluster& c, const std::string& job) {
    const std::string logs = c.cli("job logs " + job).out;
    return c.job(job).dump(2) + "\n" + c.cli("job events " + job).out + "\n" +
           logs.substr(logs.size() > 8000 ? logs.size() - 8000 : 0);
}

// kill -9 of the coordinator; once its HTTP API is gone, `tandem up` again, which must bring back
// the coordinator only (the node agents and actors live on). Fails the test otherwise; call it
// under ASSERT_NO_FATAL_FAILURE.
inline void kill_and_bring_back_the_coordinator(LocalCluster& c) {
    ASSERT_EQ(::kill(c.pid_of("coordinator"), SIGKILL), 0);
    ASSERT_TRUE(wait_until([&] { return c.get("/healthz").is_null(); }, std::chrono::seconds(5)));
    auto up = c.up();
    ASSERT_EQ(up.code, 0) << up.out;
    EXPECT_EQ(up.out.find("started tandem-"), std::string::npos) << up.out;
}

}  // namespace tandem::testing
