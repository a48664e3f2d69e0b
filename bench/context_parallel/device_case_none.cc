// tandem-bench-context-parallel --case device in a build without CUDA: says so in JSON.
#include <cstdio>

namespace tandem::bench {

int run_device_case(bool, int) {
    std::printf(
        "{\"case\":\"context_parallel_device\",\"skipped\":true,"
        "\"reason\":\"this build has no CUDA\"}\n");
    return 0;
}

}  // namespace tandem::bench
