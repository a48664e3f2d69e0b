#pragma once

// Internal to kernels: which vector instruction set the CPU kernels use, and entry points that
// force one (tests run every path the machine supports against the reference).

#include <string_view>

#include "kernels/attention.h"

namespace tandem::kernels::cpu {

enum class CpuIsa { kGeneric, kAvx2, kAvx512 };

std::string_view cpu_isa_name(CpuIsa isa);
// True when this CPU can run `isa` (and the compiler could build it).
bool cpu_isa_supported(CpuIsa isa);
// The widest supported ISA; what attention_forward_cpu and attention_backward_cpu use.
CpuIsa best_cpu_isa();

Status attention_forward_cpu_isa(CpuIsa isa, const AttentionParams& p, const float* q,
                                 const float* k, const float* v, float* o, float* lse);

Status attention_backward_cpu_isa(CpuIsa isa, const AttentionParams& p, const float* q,
                                  const float* k, const float* v, const float* o, const float* lse,
                                  const float* dout, float* dq, float* dk, float* dv,
                                  bool accumulate_grads);

}  // namespace tandem::kernels::cpu
