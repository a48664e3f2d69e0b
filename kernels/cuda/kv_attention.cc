// Host side of kv_paged_decode_cuda: checks the pages and builds the kernel's page table.
// The section offsets follow the layout described in kernels/kv_quant.h and are checked against
// kv_page_bytes() for every page.
#include "kernels/cuda/kv_attention.h"

#include <cmath>
#include <cstring>
#include <string>

#include "kernels/cuda/kv_attention_kernel.h"

namespace tandem::kernels::cuda {

namespace {

static_assert(static_cast<int>(KvDType::kF32) == detail::kKvF32 &&
              static_cast<int>(KvDType::kBF16) == detail::kKvBF16 &&
              static_cast<int>(KvDType::kInt8) == detail::kKvInt8 &&
              static_cast<int>(KvDType::kInt4) == detail::kKvInt4 &&
              static_cast<int>(KvDType::kInt2) == detail::kKvInt2);

// The page descriptor of `ref`, its sections from paged_kv_pages.
Status describe_page(const KvPageRef& ref, int hkv, int d, detail::KvPageDesc* out) {
    if (!ref.format || !ref.page) return invalid_argument("kv decode (cuda): null page");
    const KvPageFormat& f = *ref.format;
    TANDEM_ASSIGN_OR_RETURN(const PagedKvPages pages, paged_kv_pages(f));
    if (f.hkv != hkv || f.d != d) {
        return invalid_argument("kv decode (cuda): page " + describe(f) + " does not match " +
                                std::to_string(hkv) + " heads of " + std::to_string(d));
    }
    if (ref.row0 < 0 || ref.rows < 0 || ref.row0 + ref.rows > f.page_tokens) {
        return invalid_argument("kv decode (cuda): rows outside the page " + describe(f));
    }
    detail::KvPageDesc p{};
    p.page = ref.page;
    p.pos0 = ref.pos0;
    p.v_codes = pages.v_codes;
    p.k_scales = pages.k_scales;
    p.v_scales = pages.v_scales;
    p.row0 = ref.row0;
    p.rows = ref.rows;
    p.dtype = pages.dtype;
    p.kivi = pages.kivi;
    p.value_group = pages.value_group;
    *out = p;
    return Status();
}

}  // namespace

Result<PagedKvPages> paged_kv_pages(const KvPageFormat& f) {
    TANDEM_RETURN_IF_ERROR(validate(f));
    const int64_t T = f.page_tokens, E = f.row_elems();
    const int64_t codes = T * E * kv_dtype_bits(f.dtype) / 8;
    int64_t kscale = 0, vscale = 0;
    if (f.dtype == KvDType::kInt8) {
        kscale = vscale = T * f.hkv * 2;
    } else if (f.kivi()) {
        kscale = static_cast<int64_t>(f.hkv) * f.d * 4;
        vscale = T * f.hkv * (f.d / f.value_group) * 4;
    } else if (f.dtype == KvDType::kInt4) {
        kscale = vscale = T * f.hkv * 4;
    }
    PagedKvPages p;
    p.dtype = static_cast<int32_t>(f.dtype);
    p.kivi = f.kivi() ? 1 : 0;
    p.value_group = f.kivi() ? f.value_group : 0;
    p.v_codes = codes;
    p.k_scales = 2 * codes;
    p.v_scales = 2 * codes + kscale;
    p.page_bytes = p.v_scales + vscale;
    p.stride = (p.page_bytes + 15) / 16 * 16;
    if (p.page_bytes != kv_page_bytes(f)) {
        return internal_error("paged KV pages: the page layout of " + describe(f) +
                              " disagrees with kv_page_bytes (kernels/kv_quant.h changed?)");
    }
    return p;
}

Status kv_paged_decode_cuda(const Stream& stream, DeviceAllocator& alloc, int hq, int hkv, int d,
                            float scale, std::span<const KvDecodeSequence> seqs, const float* q,
                            float* o, float* lse) {
    if (hq <= 0 || hkv <= 0 || hq % hkv != 0) {
        return invalid_argument("kv decode (cuda): " + std::to_string(hq) +
                                " query heads are not a multiple of " + std::to_string(hkv) +
                                " kv heads");
    }
    if (d <= 0 || d > detail::kKvMaxD) {
        return invalid_argument("kv decode (cuda): head dimension " + std::to_string(d) +
                                " outside 1..256");
    }
    if (!std::isfinite(scale) || scale <= 0) {
        return invalid_argument("kv decode (cuda): scale must be finite and positive");
    }
    if (seqs.empty()) return Status();
    if (!q || !o || !lse) return invalid_argument("kv decode (cuda): null q, o or lse");
    const int64_t B = static_cast<int64_t>(seqs.size());
    if (B > 0x7fffffff) return invalid_argument("kv decode (cuda): too many sequences");
    std::vector<detail::KvPageDesc> descs;
    std::vector<int64_t> begin(static_cast<size_t>(B + 1)), qpos(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) {
        const KvDecodeSequence& s = seqs[static_cast<size_t>(b)];
        begin[static_cast<size_t>(b)] = static_cast<int64_t>(descs.size());
        qpos[static_cast<size_t>(b)] = s.q_pos;
        for (const KvPageRef& ref : s.pages) {
            detail::KvPageDesc p;
            if (Status st = describe_page(ref, hkv, d, &p); !st.ok()) {
                return Status(st.code(), "sequence " + std::to_string(b) + ": " + st.message());
            }
            if (p.rows > 0) descs.push_back(p);
        }
    }
    begin[static_cast<size_t>(B)] = static_cast<int64_t>(descs.size());
    // One staging buffer: page table, then seq_begin, then q_pos.
    const size_t desc_bytes = descs.size() * sizeof(detail::KvPageDesc);
    const size_t total = desc_bytes + (begin.size() + qpos.size()) * sizeof(int64_t);
    std::vector<uint8_t> host(total);
    if (desc_bytes) std::memcpy(host.data(), descs.data(), desc_bytes);
    std::memcpy(host.data() + desc_bytes, begin.data(), begin.size() * sizeof(int64_t));
    std::memcpy(host.data() + desc_bytes + begin.size() * sizeof(int64_t), qpos.data(),
                qpos.size() * sizeof(int64_t));
    TANDEM_ASSIGN_OR_RETURN(DeviceBuffer table, alloc.allocate(total, "kv decode page table"));
    TANDEM_RETURN_IF_ERROR(copy_to_device(stream, table.as(), host.data(), total));
    // The table goes back to the allocator when this returns; a later allocation reuses it only
    // for work enqueued after this launch on the same stream.
    return detail::launch_kv_decode(stream, table.as<const uint8_t>(),
                                    static_cast<int64_t>(desc_bytes), B, hq, hkv, d, scale, q, o,
                                    lse);
}

}  // namespace tandem::kernels::cuda
