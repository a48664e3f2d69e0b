// Fuzz target: arbitrary bytes through the YAML config loader (cluster and job files), with an
// override derived from the input. Must never crash, hang or accept-and-lose an error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/config/loader.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace tandem::config;
    const std::string text(reinterpret_cast<const char*>(data), size);
    auto root = parse_yaml(text, "fuzz.yaml");
    if (!root.ok()) return 0;
    // Use the first line as an override too, when it looks like one.
    std::vector<Override> overrides;
    if (auto o = parse_override(text.substr(0, text.find('\n'))); o.ok()) overrides.push_back(*o);
    if (!apply_overrides(*root, overrides).ok()) return 0;
    auto job = decode_document<JobSpec>(*root, "fuzz.yaml", overrides);
    if (job.ok()) {
        // What we accept must print and re-load to the same thing.
        const std::string y = to_yaml(*job);
        auto again = parse_job_text(y, "resolved");
        if (!again.ok() || to_yaml(*again) != y) __builtin_trap();
    }
    auto cluster = decode_document<ClusterSpec>(*root, "fuzz.yaml", overrides);
    (void)cluster;
    return 0;
}
