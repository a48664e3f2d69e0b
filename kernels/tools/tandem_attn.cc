// tandem-attn: runs Tandem's attention kernels on NumPy inputs so any outside reference can
// check them.
//
//   tandem-attn --q q.npy --k k.npy --v v.npy --out DIR [--causal] [--scale S] [--ranks P]
//               [--layout contiguous|zigzag] [--backend cpu|cuda] [--dtype f32|f16|bf16]
//               [--q-pos0 N]
//
// Writes DIR/o.npy [Tq, Hq, D] and DIR/lse.npy [Hq, Tq] (float32, natural log) and prints one
// JSON line describing the run. Exit status 0 on success, 1 on failure (no CUDA device for
// --backend cuda, a kernel error), 2 on bad usage or bad input (a missing or malformed .npy file,
// shapes that do not agree).
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "kernels/attention.h"
#include "kernels/attention_cuda_host.h"
#include "kernels/device.h"
#include "kernels/ring/in_process_runner.h"
#include "kernels/tools/npy.h"

namespace tandem::kernels {
namespace {

constexpr const char* kUsage =
    "usage: tandem-attn --q Q.npy --k K.npy --v V.npy --out DIR [options]\n"
    "  q [Tq, Hq, D], k and v [Tk, Hkv, D]: float32 or float64 .npy, Hq a multiple of Hkv\n"
    "  --causal                  causal mask by global position\n"
    "  --q-pos0 N                position of query row 0 (default Tk - Tq: the queries are the\n"
    "                            last Tq tokens; keys sit at 0..Tk-1)\n"
    "  --scale S                 softmax scale (default 1/sqrt(D))\n"
    "  --ranks P                 ring attention over P in-process ranks (needs Tq == Tk)\n"
    "  --layout contiguous|zigzag  how the ranks split the sequence (default zigzag)\n"
    "  --backend cpu|cuda        (default cpu)\n"
    "  --dtype f32|f16|bf16      input precision on the cuda backend (default f32)\n"
    "writes DIR/o.npy [Tq, Hq, D] and DIR/lse.npy [Hq, Tq], float32\n";

struct Options {
    std::string q, k, v, out;
    bool causal = false;
    bool has_scale = false;
    float scale = 0.0f;
    bool has_q_pos0 = false;
    int64_t q_pos0 = 0;
    int ranks = 1;
    RingLayout layout = RingLayout::kZigzag;
    std::string backend = "cpu";
    DType dtype = DType::kF32;
};

Result<int64_t> parse_int(std::string_view flag, const std::string& text) {
    char* end = nullptr;
    const long long v = std::strtoll(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0') {
        return invalid_argument(std::string(flag) + ": expected an integer, got \"" + text + "\"");
    }
    return static_cast<int64_t>(v);
}

// --backend cuda needs a visible device. Without one the CUDA runtime reports "CUDA driver
// version is insufficient" when no NVIDIA driver is loaded at all; say what is missing instead.
Status check_cuda_device() {
    if (!built_with_cuda()) {
        return unavailable(
            "--backend cuda: this build has no CUDA kernels (built with TANDEM_CUDA=OFF or without "
            "nvcc); use --backend cpu");
    }
    std::string why;
    if (!cuda_devices(&why).empty()) return Status();
    if (!std::filesystem::exists("/proc/driver/nvidia/version")) {
        return unavailable(
            "--backend cuda: no NVIDIA GPU on this machine (no NVIDIA driver is loaded); use "
            "--backend cpu (the CUDA runtime said: " +
            why + ")");
    }
    return unavailable("--backend cuda: no usable CUDA device: " + why + "; use --backend cpu");
}

Result<Options> parse(int argc, char** argv) {
    Options o;
    const std::map<std::string, std::string*> paths = {
        {"--q", &o.q}, {"--k", &o.k}, {"--v", &o.v}, {"--out", &o.out}};
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> Result<std::string> {
            if (i + 1 >= argc) return invalid_argument(arg + ": missing value");
            return std::string(argv[++i]);
        };
        if (auto it = paths.find(arg); it != paths.end()) {
            TANDEM_ASSIGN_OR_RETURN(*it->second, value());
        } else if (arg == "--causal") {
            o.causal = true;
        } else if (arg == "--scale") {
            TANDEM_ASSIGN_OR_RETURN(std::string s, value());
            char* end = nullptr;
            o.scale = std::strtof(s.c_str(), &end);
            if (s.empty() || *end != '\0') {
                return invalid_argument("--scale: expected a number, got \"" + s + "\"");
            }
            o.has_scale = true;
        } else if (arg == "--q-pos0") {
            TANDEM_ASSIGN_OR_RETURN(std::string s, value());
            TANDEM_ASSIGN_OR_RETURN(o.q_pos0, parse_int(arg, s));
            o.has_q_pos0 = true;
        } else if (arg == "--ranks") {
            TANDEM_ASSIGN_OR_RETURN(std::string s, value());
            TANDEM_ASSIGN_OR_RETURN(int64_t r, parse_int(arg, s));
            if (r < 1 || r > 1024) return invalid_argument("--ranks: expected 1..1024");
            o.ranks = static_cast<int>(r);
        } else if (arg == "--layout") {
            TANDEM_ASSIGN_OR_RETURN(std::string s, value());
            TANDEM_ASSIGN_OR_RETURN(o.layout, parse_ring_layout(s));
        } else if (arg == "--backend") {
            TANDEM_ASSIGN_OR_RETURN(o.backend, value());
            if (o.backend != "cpu" && o.backend != "cuda") {
                return invalid_argument("--backend: expected cpu or cuda, got \"" + o.backend +
                                        "\"");
            }
        } else if (arg == "--dtype") {
            TANDEM_ASSIGN_OR_RETURN(std::string s, value());
            if (s == "f32") {
                o.dtype = DType::kF32;
            } else if (s == "f16") {
                o.dtype = DType::kF16;
            } else if (s == "bf16") {
                o.dtype = DType::kBF16;
            } else {
                return invalid_argument("--dtype: expected f32, f16 or bf16, got \"" + s + "\"");
            }
        } else {
            return invalid_argument("unknown argument \"" + arg + "\"");
        }
    }
    for (const auto& [flag, path] : paths) {
        if (path->empty()) return invalid_argument(flag + " is required");
    }
    if (o.backend == "cuda" && o.ranks != 1) {
        return invalid_argument(
            "--backend cuda runs one device (--ranks 1); multi-GPU rings run "
            "over NCCL inside a rollout actor group");
    }
    if (o.backend == "cpu" && o.dtype != DType::kF32) {
        return invalid_argument("--dtype f16/bf16 needs --backend cuda (the CPU kernel is fp32)");
    }
    return o;
}

std::string shape_text(const std::vector<int64_t>& shape) {
    std::string s = "[";
    for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
    return s + "]";
}

Status run(const Options& opt) {
    TANDEM_ASSIGN_OR_RETURN(NpyArray q, read_npy(opt.q));
    TANDEM_ASSIGN_OR_RETURN(NpyArray k, read_npy(opt.k));
    TANDEM_ASSIGN_OR_RETURN(NpyArray v, read_npy(opt.v));
    if (q.shape.size() != 3 || k.shape.size() != 3 || v.shape.size() != 3) {
        return invalid_argument("q, k and v must be 3-D ([T, H, D]); got q " + shape_text(q.shape) +
                                ", k " + shape_text(k.shape) + ", v " + shape_text(v.shape));
    }
    if (k.shape != v.shape) {
        return invalid_argument("k " + shape_text(k.shape) + " and v " + shape_text(v.shape) +
                                " must have the same shape");
    }
    if (q.shape[2] != k.shape[2]) {
        return invalid_argument("head dims differ: q " + shape_text(q.shape) + ", k " +
                                shape_text(k.shape));
    }
    AttentionParams p;
    p.tq = q.shape[0];
    p.hq = static_cast<int>(q.shape[1]);
    p.d = static_cast<int>(q.shape[2]);
    p.tk = k.shape[0];
    p.hkv = static_cast<int>(k.shape[1]);
    p.scale = opt.has_scale ? opt.scale : default_softmax_scale(p.d);
    p.causal = opt.causal;
    p.q_pos0 = opt.has_q_pos0 ? opt.q_pos0 : p.tk - p.tq;
    TANDEM_RETURN_IF_ERROR(validate(p));

    std::vector<float> o(q.data.size()), lse(static_cast<size_t>(p.hq * p.tq));
    const auto start = std::chrono::steady_clock::now();
    if (opt.ranks > 1) {
        if (p.tq != p.tk || p.q_pos0 != 0) {
            return invalid_argument(
                "--ranks > 1 is ring prefill: q and k need the same length "
                "and --q-pos0 0");
        }
        RingAttentionConfig cfg;
        cfg.seq_len = p.tq;
        cfg.hq = p.hq;
        cfg.hkv = p.hkv;
        cfg.d = p.d;
        cfg.scale = p.scale;
        cfg.causal = p.causal;
        cfg.layout = opt.layout;
        TANDEM_RETURN_IF_ERROR(ring_forward_in_process(cfg, opt.ranks, RingDrive::kThreads,
                                                       q.data.data(), k.data.data(), v.data.data(),
                                                       o.data(), lse.data()));
    } else if (opt.backend == "cuda") {
        TANDEM_RETURN_IF_ERROR(check_cuda_device());
        TANDEM_RETURN_IF_ERROR(attention_forward_cuda_from_host(
            p, opt.dtype, q.data.data(), k.data.data(), v.data.data(), o.data(), lse.data()));
    } else {
        TANDEM_RETURN_IF_ERROR(attention_forward_cpu(p, q.data.data(), k.data.data(), v.data.data(),
                                                     o.data(), lse.data()));
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

    std::error_code ec;
    std::filesystem::create_directories(opt.out, ec);
    if (ec) return unavailable(opt.out + ": cannot create directory: " + ec.message());
    const std::string o_path = (std::filesystem::path(opt.out) / "o.npy").string();
    const std::string lse_path = (std::filesystem::path(opt.out) / "lse.npy").string();
    TANDEM_RETURN_IF_ERROR(write_npy(o_path, q.shape, o.data()));
    TANDEM_RETURN_IF_ERROR(write_npy(lse_path, {p.hq, p.tq}, lse.data()));
    std::printf(
        "{\"o\": \"%s\", \"lse\": \"%s\", \"backend\": \"%s\", \"dtype\": \"%s\", \"ranks\": %d, "
        "\"layout\": \"%s\", \"causal\": %s, \"scale\": %.9g, \"tq\": %lld, \"tk\": %lld, "
        "\"hq\": %d, \"hkv\": %d, \"d\": %d, \"seconds\": %.6f}\n",
        o_path.c_str(), lse_path.c_str(), opt.backend.c_str(), dtype_name(opt.dtype), opt.ranks,
        ring_layout_name(opt.layout), p.causal ? "true" : "false", p.scale,
        static_cast<long long>(p.tq), static_cast<long long>(p.tk), p.hq, p.hkv, p.d, seconds);
    return Status();
}

}  // namespace
}  // namespace tandem::kernels

int main(int argc, char** argv) {
    using namespace tandem::kernels;
    if (argc == 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h")) {
        std::fputs(kUsage, stdout);
        return 0;
    }
    auto options = parse(argc, argv);
    if (!options.ok()) {
        std::fprintf(stderr, "tandem-attn: %s\n%s", options.status().message().c_str(), kUsage);
        return 2;
    }
    const tandem::Status s = run(*options);
    if (!s.ok()) {
        std::fprintf(stderr, "tandem-attn: %s\n", s.message().c_str());
        // Bad input (an input file missing, shapes that do not agree) is bad usage: 2, as
        // documented; anything else (no device, a kernel error) is a failure: 1.
        const bool bad_input = s.code() == tandem::StatusCode::kInvalidArgument ||
                               s.code() == tandem::StatusCode::kNotFound;
        return bad_input ? 2 : 1;
    }
    return 0;
}
