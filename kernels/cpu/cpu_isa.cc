// Runtime choice of the CPU kernels' instruction set.
#include "kernels/cpu/cpu_isa.h"

namespace tandem::kernels::cpu {

std::string_view cpu_isa_name(CpuIsa isa) {
    switch (isa) {
        case CpuIsa::kGeneric:
            return "generic";
        case CpuIsa::kAvx2:
            return "avx2";
        case CpuIsa::kAvx512:
            return "avx512";
    }
    return "unknown";
}

bool cpu_isa_supported(CpuIsa isa) {
#if defined(__x86_64__)
    switch (isa) {
        case CpuIsa::kGeneric:
            return true;
        case CpuIsa::kAvx2:
            return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
        case CpuIsa::kAvx512:
            return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
                   __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return false;
#else
    return isa == CpuIsa::kGeneric;
#endif
}

CpuIsa best_cpu_isa() {
    // Computed once; the answer cannot change while the process runs.
    static const CpuIsa best = cpu_isa_supported(CpuIsa::kAvx512) ? CpuIsa::kAvx512
                               : cpu_isa_supported(CpuIsa::kAvx2) ? CpuIsa::kAvx2
                                                                  : CpuIsa::kGeneric;
    return best;
}

}  // namespace tandem::kernels::cpu
