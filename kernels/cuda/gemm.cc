// Host side of kernels/cuda/gemm.h: cuBLASLt loaded at run time, with per-shape plans.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>
#include <dlfcn.h>

#include <string>
#include <vector>

namespace tandem::kernels::cuda {

namespace {

constexpr size_t kWorkspaceBytes = size_t{32} << 20;

// Largest power of two (<= 256) dividing the address: cuBLASLt picks algorithms for the alignment
// the preference declares and assumes 256 bytes when it is not set.
uint32_t alignment_of(const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    uint32_t align = 256;
    while (align > 1 && (a % align) != 0) align >>= 1;
    return align;
}

std::string lt_error(const char* op, cublasStatus_t st) {
    return std::string("gemm: ") + op + " failed with cuBLAS status " +
           std::to_string(static_cast<int>(st));
}

}  // namespace

struct Gemm::Lt {
    void* lib = nullptr;
    cublasLtHandle_t handle = nullptr;
    decltype(&cublasLtCreate) create = nullptr;
    decltype(&cublasLtDestroy) destroy = nullptr;
    decltype(&cublasLtGetVersion) version = nullptr;
    decltype(&cublasLtMatmulDescCreate) desc_create = nullptr;
    decltype(&cublasLtMatmulDescDestroy) desc_destroy = nullptr;
    decltype(&cublasLtMatmulDescSetAttribute) desc_set = nullptr;
    decltype(&cublasLtMatrixLayoutCreate) layout_create = nullptr;
    decltype(&cublasLtMatrixLayoutDestroy) layout_destroy = nullptr;
    decltype(&cublasLtMatmulPreferenceCreate) pref_create = nullptr;
    decltype(&cublasLtMatmulPreferenceDestroy) pref_destroy = nullptr;
    decltype(&cublasLtMatmulPreferenceSetAttribute) pref_set = nullptr;
    decltype(&cublasLtMatmulAlgoGetHeuristic) heuristic = nullptr;
    decltype(&cublasLtMatmul) matmul = nullptr;

    struct Plan {
        bool usable = false;
        cublasLtMatmulDesc_t desc = nullptr;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
        cublasLtMatmulAlgo_t algo{};
    };
    using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool,
                           uint32_t, uint32_t, uint32_t>;
    std::map<Key, Plan> plans;

    ~Lt() {
        for (auto& [key, plan] : plans) {
            if (plan.desc) desc_destroy(plan.desc);
            if (plan.a) layout_destroy(plan.a);
            if (plan.b) layout_destroy(plan.b);
            if (plan.c) layout_destroy(plan.c);
        }
        if (handle) destroy(handle);
        // The library stays loaded: CUDA libraries do not support being unloaded and reloaded.
    }

    // Loads the library and its entry points; `why` explains a failure.
    bool load(std::string* why) {
        for (const char* name : {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"}) {
            lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
            if (lib) break;
        }
        if (!lib) {
            *why = std::string("cuBLASLt not loadable: ") + dlerror();
            return false;
        }
        bool ok = true;
        auto sym = [&](auto& fn, const char* name) {
            fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
            if (!fn) {
                ok = false;
                *why = std::string("cuBLASLt lacks ") + name;
            }
        };
        sym(create, "cublasLtCreate");
        sym(destroy, "cublasLtDestroy");
        sym(version, "cublasLtGetVersion");
        sym(desc_create, "cublasLtMatmulDescCreate");
        sym(desc_destroy, "cublasLtMatmulDescDestroy");
        sym(desc_set, "cublasLtMatmulDescSetAttribute");
        sym(layout_create, "cublasLtMatrixLayoutCreate");
        sym(layout_destroy, "cublasLtMatrixLayoutDestroy");
        sym(pref_create, "cublasLtMatmulPreferenceCreate");
        sym(pref_destroy, "cublasLtMatmulPreferenceDestroy");
        sym(pref_set, "cublasLtMatmulPreferenceSetAttribute");
        sym(heuristic, "cublasLtMatmulAlgoGetHeuristic");
        sym(matmul, "cublasLtMatmul");
        if (!ok) return false;
        const cublasStatus_t st = create(&handle);
        if (st != CUBLAS_STATUS_SUCCESS) {
            handle = nullptr;
            *why = lt_error("cublasLtCreate", st);
            return false;
        }
        return true;
    }

    // The plan for one call shape (built once): row-major C = op(A) op(B) is computed as the
    // column-major C^T = op(B)^T op(A)^T, so cuBLASLt's first operand is our B.
    Plan& plan_for(const GemmShape& g, bool c_bf16, uint32_t al_a, uint32_t al_b, uint32_t al_c) {
        const Key key{g.trans_a, g.trans_b, g.m,    g.n,  g.k,  g.lda,
                      g.ldb,     g.ldc,     c_bf16, al_a, al_b, al_c};
        auto it = plans.find(key);
        if (it != plans.end()) return it->second;
        Plan& p = plans[key];
        const cublasOperation_t op_first = g.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cublasOperation_t op_second = g.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
        const cudaDataType_t c_type = c_bf16 ? CUDA_R_16BF : CUDA_R_32F;
        if (desc_create(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F) != CUBLAS_STATUS_SUCCESS) {
            p.desc = nullptr;
            return p;
        }
        desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_first, sizeof op_first);
        desc_set(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_second, sizeof op_second);
        const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
        if (layout_create(&p.a, CUDA_R_16BF, u(g.trans_b ? g.k : g.n), u(g.trans_b ? g.n : g.k),
                          g.ldb) != CUBLAS_STATUS_SUCCESS ||
            layout_create(&p.b, CUDA_R_16BF, u(g.trans_a ? g.m : g.k), u(g.trans_a ? g.k : g.m),
                          g.lda) != CUBLAS_STATUS_SUCCESS ||
            layout_create(&p.c, c_type, u(g.n), u(g.m), g.ldc) != CUBLAS_STATUS_SUCCESS) {
            return p;
        }
        cublasLtMatmulPreference_t pref = nullptr;
        if (pref_create(&pref) != CUBLAS_STATUS_SUCCESS) return p;
        const uint64_t ws = kWorkspaceBytes;
        pref_set(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
        // cuBLASLt's A is our B and vice versa.
        pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_b, sizeof al_b);
        pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof al_a);
        pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_c, sizeof al_c);
        pref_set(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_c, sizeof al_c);
        cublasLtMatmulHeuristicResult_t result{};
        int found = 0;
        const cublasStatus_t st =
            heuristic(handle, p.desc, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
        pref_destroy(pref);
        if (st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS) {
            p.algo = result.algo;
            p.usable = true;
        }
        return p;
    }
};

Result<std::unique_ptr<Gemm>> Gemm::create(DeviceAllocator& alloc, bool force_fallback) {
    std::unique_ptr<Gemm> g;
    if (force_fallback) {
        g.reset(new Gemm(DeviceBuffer()));
        g->description_ = "fallback kernel (forced)";
        return g;
    }
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer ws, alloc.allocate(kWorkspaceBytes, "cuBLASLt workspace"));
    g.reset(new Gemm(std::move(ws)));
    auto lt = std::make_unique<Lt>();
    std::string why;
    if (lt->load(&why)) {
        Dl_info info{};
        const char* file = "libcublasLt";
        if (dladdr(reinterpret_cast<void*>(lt->matmul), &info) && info.dli_fname) {
            file = info.dli_fname;
        }
        g->description_ =
            "cuBLASLt " + std::to_string(lt->version()) + " (" + std::string(file) + ")";
        g->lt_ = std::move(lt);
    } else {
        g->description_ = "fallback kernel (" + why + ")";
        g->workspace_ = DeviceBuffer();
    }
    return g;
}

Gemm::Gemm(DeviceBuffer workspace) : workspace_(std::move(workspace)) {}

Gemm::~Gemm() = default;

Status Gemm::run(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                 float beta, void* c, bool c_bf16) {
    if (g.m < 0 || g.n < 0 || g.k < 0) return invalid_argument("gemm: negative size");
    if (g.m == 0 || g.n == 0) return Status();
    if (!c || (g.k > 0 && (!a || !b))) return invalid_argument("gemm: null device pointer");
    if (g.lda < (g.trans_a ? g.m : g.k) || g.ldb < (g.trans_b ? g.k : g.n) || g.ldc < g.n) {
        return invalid_argument("gemm: leading dimension smaller than the row");
    }
    if (lt_ && g.k > 0) {
        Lt::Plan& p = lt_->plan_for(g, c_bf16, alignment_of(a), alignment_of(b), alignment_of(c));
        if (p.usable) {
            const cublasStatus_t st = lt_->matmul(
                lt_->handle, p.desc, &alpha, b, p.a, a, p.b, &beta, c, p.c, c, p.c, &p.algo,
                workspace_.as(), workspace_.bytes(), static_cast<cudaStream_t>(s.handle()));
            if (st != CUBLAS_STATUS_SUCCESS) return internal_error(lt_error("cublasLtMatmul", st));
            return Status();
        }
        ++fallback_calls_;
    }
    return gemm_fallback(s, g, alpha, a, b, beta, c, c_bf16);
}

Status Gemm::matmul(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                    float beta, float* c) {
    return run(s, g, alpha, a, b, beta, c, false);
}

Status Gemm::matmul(const Stream& s, const GemmShape& g, float alpha, const Bf16* a, const Bf16* b,
                    float beta, Bf16* c) {
    return run(s, g, alpha, a, b, beta, c, true);
}

Status Gemm::linear(const Stream& s, int64_t n, int64_t in, int64_t out, const Bf16* x,
                    const Bf16* w, float* y, bool accumulate) {
    GemmShape g;
    g.trans_b = true;
    g.m = n;
    g.n = out;
    g.k = in;
    g.lda = in;
    g.ldb = in;
    g.ldc = out;
    return run(s, g, 1.0f, x, w, accumulate ? 1.0f : 0.0f, y, false);
}

}  // namespace tandem::kernels::cuda
