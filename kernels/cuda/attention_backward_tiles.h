#pragma once

// Internal to kernels/cuda: the position logic of the tiled attention backward
// (attention_backward_tiled.cu), which tiles and which elements of a tile need the causal mask.
// Plain integer code, compiled for the device by the kernel and for the host by
// tests/unit/kernels/attention_backward_tiles_test.cc, which checks it against brute force.
// Positions follow kernels/attention.h: one or two runs, never decreasing along the rows.

#include <cstdint>

#ifdef __CUDACC__
#define TANDEM_TILES_FN __host__ __device__ __forceinline__
#else
#define TANDEM_TILES_FN inline
#endif

namespace tandem::kernels::cuda::tiles {

struct Positions {
    int64_t tq = 0, tk = 0;
    bool causal = false;
    int64_t q_pos0 = 0, k_pos0 = 0, q_split = 0, q_pos1 = 0, k_split = 0, k_pos1 = 0;
};

TANDEM_TILES_FN int64_t qpos(const Positions& a, int64_t i) {
    return i < a.q_split ? a.q_pos0 + i : a.q_pos1 + (i - a.q_split);
}
TANDEM_TILES_FN int64_t kpos(const Positions& a, int64_t j) {
    return j < a.k_split ? a.k_pos0 + j : a.k_pos1 + (j - a.k_split);
}
// Key j visible to query i.
TANDEM_TILES_FN bool visible(const Positions& a, int64_t i, int64_t j) {
    return !a.causal || kpos(a, j) <= qpos(a, i);
}
// Keys at positions <= pos (a prefix of the key rows).
TANDEM_TILES_FN int64_t keys_upto(const Positions& a, int64_t pos) {
    int64_t lo = 0, hi = a.tk;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (kpos(a, mid) <= pos) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}
// First query row at a position >= pos (rows before it see no key at pos or later).
TANDEM_TILES_FN int64_t first_query_from(const Positions& a, int64_t pos) {
    int64_t lo = 0, hi = a.tq;
    while (lo < hi) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (qpos(a, mid) < pos) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The query rows a key tile [j0, j0 + rows) (j0 < tk) meets: query tiles of `bq` rows start at
// `first_tile` (earlier rows see none of its keys); rows from `full_from` on see every key of it
// (tiles starting there need no mask).
struct KeyTileQueries {
    int64_t first_tile = 0;
    int64_t full_from = 0;
};
TANDEM_TILES_FN KeyTileQueries key_tile_queries(const Positions& a, int64_t j0, int rows, int bq) {
    KeyTileQueries r;
    if (!a.causal) return r;
    const int64_t j_last = (j0 + rows < a.tk ? j0 + rows : a.tk) - 1;
    r.first_tile = first_query_from(a, kpos(a, j0)) / bq * bq;
    r.full_from = first_query_from(a, kpos(a, j_last));
    return r;
}

// The keys a query tile [i0, i0 + rows) (i0 < tq) meets: keys from `end` on are seen by none of
// its rows; keys before `full` by all of them (key tiles ending there need no mask; tiles past tk
// do).
struct QueryTileKeys {
    int64_t end = 0;
    int64_t full = 0;
};
TANDEM_TILES_FN QueryTileKeys query_tile_keys(const Positions& a, int64_t i0, int rows) {
    QueryTileKeys r{a.tk, a.tk};
    if (!a.causal) return r;
    const int64_t i_last = (i0 + rows < a.tq ? i0 + rows : a.tq) - 1;
    r.end = keys_upto(a, qpos(a, i_last));
    r.full = keys_upto(a, qpos(a, i0));
    return r;
}

}  // namespace tandem::kernels::cuda::tiles

#undef TANDEM_TILES_FN
