#pragma once

// Internal to the reader: the partial read's own steps (which bytes of a shard it wants, which of
// the shard's chunks hold them, and where a verified chunk's wanted bytes go), shared with pulls
// only through the shard state machine (reader_shard.h, driven by reader_fetch.cc). Pure functions,
// any thread.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common/weights/layout.h"
#include "common/weights/manifest.h"

namespace tandem::weights {

// The parts of `plan`'s copies that lie in `shard` (a byte range of the full layout), with
// src_offset made shard-local; dst_offset stays in the partial result.
std::vector<CopyRange> partial_copies_in_shard(const PartialPlan& plan, ByteRange shard);
// The chunks of a shard (cut as `manifest` says) that hold any byte of `copies`, in order.
std::vector<size_t> partial_chunks_needed(const Manifest& manifest,
                                          const std::vector<CopyRange>& copies);
// Copies what `copies` want of verified chunk `chunk` (its bytes at `chunk_bytes`) into `out`,
// the partial result.
void partial_copy_chunk(const Manifest& manifest, size_t chunk, const std::byte* chunk_bytes,
                        const std::vector<CopyRange>& copies, std::byte* out);

}  // namespace tandem::weights
