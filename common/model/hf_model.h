#pragma once

// Hugging Face model directories as transformers writes them: config.json plus model.safetensors,
// or shards model-0000i-of-0000n.safetensors listed by model.safetensors.index.json, with
// tensors stored as F32, BF16 or F16. The engine computes in fp32: load_hf_directory widens every
// tensor (a trainer's master weights); load_hf_directory_stored keeps BF16/F16 tensors as they
// are stored, half the resident bytes, for inference (stored_weights.h).
//
// Loading is two-phase so that nothing is read or allocated for a directory the engine cannot
// run: inspect_hf_directory() parses config.json and every safetensors header and checks each
// tensor against the config's parameter layout (a missing or unknown tensor, a shape or dtype
// the config disagrees with are errors naming the file and the tensor); load_hf_directory() then
// reads the data. load_pretrained() (model_weights.h) is the two in sequence.

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/model/config.h"
#include "common/model/model_weights.h"
#include "common/model/stored_weights.h"
#include "common/status.h"
#include "common/weights/dtype.h"

namespace tandem::model {

// One tensor's entry in a safetensors header. Plain value.
struct SafetensorsEntry {
    std::string name;
    weights::DType dtype = weights::DType::kF32;
    std::vector<int64_t> shape;
    uint64_t file_offset = 0;  // of its first byte, from the start of the file
    uint64_t bytes = 0;
};

// The header of one safetensors file (not its data): entries in header order. Errors name `path`
// and the tensor (unknown dtype, byte counts that disagree with the shape, data past the end).
Result<std::vector<SafetensorsEntry>> read_safetensors_header(const std::string& path);

// A directory checked and ready to load. Plain value.
struct HfDirectory {
    std::string dir;
    HfConfig config;
    std::vector<std::string> files;  // safetensors files, relative to dir, in load order
    // Every tensor of the parameter layout, with the file (index into `files`) that holds it.
    struct Source {
        size_t file = 0;
        SafetensorsEntry entry;
    };
    std::vector<Source> tensors;
    std::map<std::string, uint64_t> stored_bytes_by_dtype;  // "BF16" -> bytes on disk
    uint64_t parameters = 0;                                // elements of the layout's tensors
};

// Parses and checks; reads no tensor data.
Result<HfDirectory> inspect_hf_directory(const std::string& dir);
// Reads the tensors of a checked directory into fp32 weights.
Result<Pretrained> load_hf_directory(const HfDirectory& dir);

// The dtype load_hf_directory_stored keeps: BF16 or F16 when every tensor is stored so, else F32.
weights::DType resident_dtype(const HfDirectory& dir);
// The bytes load_hf_directory_stored holds for the parameters.
uint64_t resident_bytes(const HfDirectory& dir);
// Reads the tensors of a checked directory in resident_dtype(dir), for inference.
Result<StoredWeights> load_hf_directory_stored(const HfDirectory& dir);

// The ids generation stops at by the model's own files, sorted and unique: config.json's
// eos_token_id (an id or a list) and, for a directory, generation_config.json's when that file
// exists (Llama 3 Instruct lists [128001, 128008, 128009] there). `path` is a model directory or
// a config.json file. Errors name the file and the field.
Result<std::vector<int32_t>> model_eos_ids(const std::string& path);

// Files beside the weights that describe the tokenizer and generation defaults; a checkpoint
// copies those present in the model's source directory.
const std::vector<std::string>& hf_side_files();

struct SaveOptions {
    // Above this many bytes of tensors the weights are written as shards of at most this size
    // (a tensor larger than it gets a shard of its own) with model.safetensors.index.json.
    uint64_t max_shard_bytes = uint64_t{2} << 30;
    // When not empty, hf_side_files() present there are copied into the new directory.
    std::string copy_side_files_from;
};

}  // namespace tandem::model
