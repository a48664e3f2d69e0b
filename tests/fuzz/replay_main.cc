// Without libFuzzer (g++ builds, CI): runs a fuzz target over its seed corpus and over a bounded
// number of deterministic mutations of it. With clang, TANDEM_BUILD_FUZZ=ON links the same target
// against libFuzzer instead (see tests/fuzz/CMakeLists.txt).
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CORPUS_DIR [ITERATIONS]\n", argv[0]);
        return 2;
    }
    const long iterations = argc > 2 ? std::stol(argv[2]) : 20000;
    std::vector<std::string> seeds;
    for (const auto& e : std::filesystem::directory_iterator(argv[1])) {
        std::ifstream in(e.path(), std::ios::binary);
        std::ostringstream s;
        s << in.rdbuf();
        seeds.push_back(s.str());
    }
    if (seeds.empty()) {
        std::fprintf(stderr, "no seeds in %s\n", argv[1]);
        return 2;
    }
    for (const auto& s : seeds) {
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
    std::mt19937_64 rng(12345);
    const std::string alphabet = " \n\t:-[]{},'\"#&*!|>%@`0123456789.eE+abkz";
    for (long i = 0; i < iterations; ++i) {
        std::string s = seeds[rng() % seeds.size()];
        const int edits = 1 + static_cast<int>(rng() % 8);
        for (int e = 0; e < edits && !s.empty(); ++e) {
            const size_t pos = rng() % s.size();
            switch (rng() % 4) {
                case 0:
                    s[pos] = alphabet[rng() % alphabet.size()];
                    break;
                case 1:
                    s.insert(pos, 1, alphabet[rng() % alphabet.size()]);
                    break;
                case 2:
                    s.erase(pos, 1 + rng() % 8);
                    break;
                default: {
                    const auto& other = seeds[rng() % seeds.size()];
                    const size_t from = rng() % other.size();
                    s.insert(pos, other.substr(from, 1 + rng() % 40));
                }
            }
        }
        LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(s.data()), s.size());
    }
    std::printf("%ld mutated inputs and %zu seeds ran without a crash\n", iterations, seeds.size());
    return 0;
}
