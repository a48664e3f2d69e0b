#include "common/model/hf_model.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "common/weights/layout.h"
#include "common/weights/safetensors.h"

namespace tandem::model {

namespace fs = std::filesystem;

namespace {

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";

// A shard name from an index must stay inside the directory.
bool plain_file_name(const std::string& name) {
    return !name.empty() && name.find('/') == std::string::npos && name != "." && name != "..";
}

}  // namespace

Result<std::vector<SafetensorsEntry>> read_safetensors_header(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) return not_found(fmt::format("{}: cannot open", path));
    std::error_code ec;
    const uint64_t file_size = fs::file_size(path, ec);
    if (ec) return unavailable(fmt::format("{}: cannot stat: {}", path, ec.message()));
    unsigned char len_bytes[8];
    if (file_size < 8 || !f.read(reinterpret_cast<char*>(len_bytes), 8)) {
        return invalid_argument(fmt::format("{}: truncated safetensors header", path));
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | len_bytes[i];
    if (header_len > file_size - 8 || header_len > (uint64_t{100} << 20)) {
        return invalid_argument(fmt::format("{}: header length {} does not fit the file ({} bytes)",
                                            path, header_len, file_size));
    }
    std::string text(header_len, '\0');
    if (!f.read(text.data(), static_cast<std::streamsize>(header_len))) {
        return invalid_argument(fmt::format("{}: truncated safetensors header", path));
    }
    nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
        return invalid_argument(fmt::format("{}: safetensors header is not a JSON object", path));
    }
    const uint64_t data_start = 8 + header_len;
    std::vector<SafetensorsEntry> out;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (it.key() == "__metadata__") continue;
        const auto& v = it.value();
        SafetensorsEntry e;
        e.name = it.key();
        try {
            auto dtype = weights::parse_dtype(v.at("dtype").get<std::string>());
            if (!dtype.ok())
                return dtype.status().with_context(fmt::format("{}: tensor \"{}\"", path, e.name));
            e.dtype = *dtype;
            e.shape = v.at("shape").get<std::vector<int64_t>>();
            const auto offs = v.at("data_offsets").get<std::vector<uint64_t>>();
            if (offs.size() != 2 || offs[1] < offs[0]) throw std::runtime_error("bad data_offsets");
            e.file_offset = data_start + offs[0];
            e.bytes = offs[1] - offs[0];
        } catch (const std::exception& ex) {
            return invalid_argument(fmt::format("{}: tensor \"{}\": malformed header entry: {}",
                                                path, e.name, ex.what()));
        }
        uint64_t elements = 1;
        for (int64_t d : e.shape) {
            if (d < 0)
                return invalid_argument(
                    fmt::format("{}: tensor \"{}\": negative dimension", path, e.name));
            elements *= static_cast<uint64_t>(d);
        }
        if (elements * weights::dtype_size(e.dtype) != e.bytes) {
            return invalid_argument(fmt::format("{}: tensor \"{}\": {} bytes for shape [{}] of {}",
                                                path, e.name, e.bytes, fmt::join(e.shape, ", "),
                                                weights::dtype_name(e.dtype)));
        }
        if (e.file_offset + e.bytes > file_size) {
            return invalid_argument(
                fmt::format("{}: tensor \"{}\" runs past the end of the file", path, e.name));
        }
        out.push_back(std::move(e));
    }
    std::sort(out.begin(), out.end(), [](const SafetensorsEntry& a, const SafetensorsEntry& b) {
        return a.file_offset < b.file_offset;
    });
    return out;
}

Result<HfDirectory> inspect_hf_directory(const std::string& dir) {
    HfDirectory out;
    out.dir = dir;
    TANDEM_ASSIGN_OR_RETURN(out.config, read_hf_config(dir + "/config.json"));
    const ModelConfig& c = out.config.model;
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, make_param_layout(c));

    // Which file each tensor is in, from the index when there is one.
    std::map<std::string, std::string> expected_file;  // tensor -> file (sharded only)
    std::string index_path = dir + "/" + kIndexFile;
    const bool sharded = fs::exists(index_path);
    if (sharded) {
        TANDEM_ASSIGN_OR_RETURN(nlohmann::json index, read_json_file(index_path));
        auto wm = index.find("weight_map");
        if (wm == index.end() || !wm->is_object()) {
            return invalid_argument(fmt::format("{}: no \"weight_map\" object", index_path));
        }
        std::set<std::string> seen;
        for (auto it = wm->begin(); it != wm->end(); ++it) {
            if (!it->is_string() || !plain_file_name(it->get<std::string>())) {
                return invalid_argument(fmt::format("{}: weight_map[\"{}\"]: {} is not a file name",
                                                    index_path, it.key(), it->dump()));
            }
            const std::string file = it->get<std::string>();
            expected_file[it.key()] = file;
            if (seen.insert(file).second) out.files.push_back(file);
        }
        std::sort(out.files.begin(), out.files.end());
    } else if (fs::exists(dir + "/" + kSingleFile)) {
        out.files.push_back(kSingleFile);
    } else {
        return not_found(fmt::format("{}: neither {} nor {} exists", dir, kSingleFile, kIndexFile));
    }

    std::map<std::string, HfDirectory::Source> found;
    for (size_t fi = 0; fi < out.files.size(); ++fi) {
        const std::string path = dir + "/" + out.files[fi];
        TANDEM_ASSIGN_OR_RETURN(auto entries, read_safetensors_header(path));
        for (auto& e : entries) {
            if (e.name.ends_with(".rotary_emb.inv_freq")) continue;  // old checkpoints: recomputed
            if (c.tie_embeddings && e.name == "lm_head.weight") continue;  // the embedding rules
            const weights::TensorInfo* t = layout.find(e.name);
            if (!t) {
                return invalid_argument(
                    fmt::format("{}: tensor \"{}\" is not part of a {} with this config.json", path,
                                e.name, architecture_name(c.architecture)));
            }
            if (e.shape != t->shape) {
                return invalid_argument(
                    fmt::format("{}: tensor \"{}\" has shape [{}], config.json gives [{}]", path,
                                e.name, fmt::join(e.shape, ", "), fmt::join(t->shape, ", ")));
            }
            if (e.dtype != weights::DType::kF32 && e.dtype != weights::DType::kBF16 &&
                e.dtype != weights::DType::kF16) {
                return invalid_argument(
                    fmt::format("{}: tensor \"{}\" is {}; F32, BF16 or F16 is supported", path,
                                e.name, weights::dtype_name(e.dtype)));
            }
            if (sharded) {
                auto ex = expected_file.find(e.name);
                if (ex == expected_file.end() || ex->second != out.files[fi]) {
                    return invalid_argument(fmt::format(
                        "{}: tensor \"{}\" is in {} but {} places it in {}", dir, e.name,
                        out.files[fi], kIndexFile,
                        ex == expected_file.end() ? std::string("no file") : ex->second));
                }
            }
            if (found.count(e.name)) {
                return invalid_argument(
                    fmt::format("{}: tensor \"{}\" appears twice", path, e.name));
            }
            std::string name = e.name;
            found[name] = HfDirectory::Source{fi, std::move(e)};
        }
    }
    for (const auto& t : layout.tensors()) {
        auto it = found.find(t.name);
        if (it == found.end()) {
            if (sharded && expected_file.count(t.name)) {
                return invalid_argument(
                    fmt::format("{}/{}: missing tensor \"{}\" ({} lists it there)", dir,
                                expected_file[t.name], t.name, kIndexFile));
            }
            return invalid_argument(fmt::format("{}/{}: missing tensor \"{}\"", dir,
                                                sharded ? kIndexFile : kSingleFile, t.name));
        }
        out.stored_bytes_by_dtype[std::string(weights::dtype_name(it->second.entry.dtype))] +=
            it->second.entry.bytes;
        out.parameters += t.elements();
        out.tensors.push_back(std::move(it->second));
    }
    return out;
}

namespace {

// Reads every tensor of a checked directory and hands it to `put` (its entry and raw bytes).
template <typename Put>
Status read_tensors(const HfDirectory& d, Put&& put) {
    std::vector<std::byte> scratch;
    for (size_t fi = 0; fi < d.files.size(); ++fi) {
        const std::string path = d.dir + "/" + d.files[fi];
        std::ifstream f(path, std::ios::binary);
        if (!f) return not_found(fmt::format("{}: cannot open", path));
        for (const auto& src : d.tensors) {
            if (src.file != fi) continue;
            const SafetensorsEntry& e = src.entry;
            scratch.resize(e.bytes);
            f.seekg(static_cast<std::streamoff>(e.file_offset));
            if (!f.read(reinterpret_cast<char*>(scratch.data()),
                        static_cast<std::streamsize>(e.bytes))) {
                return data_loss(fmt::format("{}: tensor \"{}\": read failed", path, e.name));
            }
            Status s = put(e, std::span<const std::byte>(scratch));
            if (!s.ok()) return s.with_context(path);
        }
    }
    return Status();
}

}  // namespace

Result<Pretrained> load_hf_directory(const HfDirectory& d) {
    TANDEM_ASSIGN_OR_RETURN(ModelWeights w, ModelWeights::zeros(d.config.model));
    TANDEM_RETURN_IF_ERROR(read_tensors(d, [&](const SafetensorsEntry& e, auto bytes) {
        return w.set_tensor(e.name, e.shape, e.dtype, bytes);
    }));
    return Pretrained{std::move(w), d.config.vocab};
}

weights::DType resident_dtype(const HfDirectory& d) {
    if (d.stored_bytes_by_dtype.size() != 1) return weights::DType::kF32;
    const std::string& only = d.stored_bytes_by_dtype.begin()->first;
    if (only == weights::dtype_name(weights::DType::kBF16)) return weights::DType::kBF16;
    if (only == weights::dtype_name(weights::DType::kF16)) return weights::DType::kF16;
    return weights::DType::kF32;
}

uint64_t resident_bytes(const HfDirectory& d) {
    auto layout = make_param_layout(d.config.model);
    if (!layout.ok()) return 0;
    return layout->total_bytes() / 4 * weights::dtype_size(resident_dtype(d));
}

Result<StoredWeights> load_hf_directory_stored(const HfDirectory& d) {
    TANDEM_ASSIGN_OR_RETURN(StoredWeights w,
                            StoredWeights::zeros(d.config.model, resident_dtype(d)));
    TANDEM_RETURN_IF_ERROR(read_tensors(d, [&](const SafetensorsEntry& e, auto bytes) {
        return w.set_tensor(e.name, e.shape, e.dtype, bytes);
    }));
    return w;
}

Result<std::vector<int32_t>> model_eos_ids(const std::string& path) {
    const bool is_dir = fs::is_directory(path);
    std::vector<int32_t> ids;
    auto add = [&](const std::string& file) -> Status {
        TANDEM_ASSIGN_OR_RETURN(nlohmann::json j, read_json_file(file));
        auto it = j.find("eos_token_id");
        if (it == j.end() || it->is_null()) return Status();
        const auto one = [&](const nlohmann::json& v) -> Status {
            if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > INT32_MAX) {
                return invalid_argument(fmt::format(
                    "{}: field \"eos_token_id\": {} is not a token id", file, v.dump()));
            }
            ids.push_back(v.get<int32_t>());
            return Status();
        };
        if (it->is_array()) {
            for (const auto& v : *it) TANDEM_RETURN_IF_ERROR(one(v));
            return Status();
        }
        return one(*it);
    };
    TANDEM_RETURN_IF_ERROR(add(is_dir ? path + "/config.json" : path));
    if (is_dir && fs::exists(path + "/generation_config.json")) {
        TANDEM_RETURN_IF_ERROR(add(path + "/generation_config.json"));
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    return ids;
}

Result<Pretrained> load_pretrained(const std::string& dir) {
    TANDEM_ASSIGN_OR_RETURN(HfDirectory d, inspect_hf_directory(dir));
    return load_hf_directory(d);
}

const std::vector<std::string>& hf_side_files() {
    static const std::vector<std::string> files = {"tokenizer.json",
                                                   "tokenizer_config.json",
                                                   "special_tokens_map.json",
                                                   "generation_config.json",
                                                   "vocab.json",
                                                   "merges.txt",
                                                   "tokenizer.model",
                                                   "added_tokens.json",
                                                   "chat_template.jinja"};
    return files;
}

namespace {

// Writes `names` (tensors of w.layout(), in order) densely as one safetensors file.
Status write_shard(const std::string& path, const ModelWeights& w,
                   const std::vector<const weights::TensorInfo*>& tensors) {
    std::vector<weights::TensorSpec> specs;
    for (const auto* t : tensors) specs.push_back({t->name, t->dtype, t->shape});
    TANDEM_ASSIGN_OR_RETURN(weights::Layout layout, weights::Layout::create(std::move(specs)));
    std::vector<std::byte> data(layout.total_bytes());
    const std::span<const std::byte> all = w.bytes();
    for (const auto* t : tensors) {
        std::memcpy(data.data() + layout.find(t->name)->offset, all.data() + t->offset, t->bytes);
    }
    return weights::write_safetensors(path, layout, data, {{"format", "pt"}});
}

}  // namespace

Status save_pretrained(const std::string& dir, const ModelWeights& w, const Vocabulary* vocab) {
    return save_pretrained(dir, w, vocab, SaveOptions{});
}

Status save_pretrained(const std::string& dir, const ModelWeights& w, const Vocabulary* vocab,
                       const SaveOptions& options) {
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) return unavailable(fmt::format("{}: cannot create directory: {}", dir, ec.message()));
    uint64_t total = 0;
    for (const auto& t : w.layout().tensors()) total += t.bytes;
    if (total <= options.max_shard_bytes) {
        // The layout without lm_head when tied is exactly the parameter layout, so the bytes are
        // written as they are.
        TANDEM_RETURN_IF_ERROR(weights::write_safetensors(dir + "/" + kSingleFile, w.layout(),
                                                          w.bytes(), {{"format", "pt"}}));
        fs::remove(dir + "/" + kIndexFile, ec);
    } else {
        std::vector<std::vector<const weights::TensorInfo*>> shards(1);
        uint64_t in_shard = 0;
        for (const auto& t : w.layout().tensors()) {
            if (!shards.back().empty() && in_shard + t.bytes > options.max_shard_bytes) {
                shards.emplace_back();
                in_shard = 0;
            }
            shards.back().push_back(&t);
            in_shard += t.bytes;
        }
        nlohmann::json weight_map = nlohmann::json::object();
        for (size_t i = 0; i < shards.size(); ++i) {
            const std::string name =
                fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
            TANDEM_RETURN_IF_ERROR(write_shard(dir + "/" + name, w, shards[i]));
            for (const auto* t : shards[i]) weight_map[t->name] = name;
        }
        nlohmann::json index{{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
        const std::string tmp = dir + "/" + kIndexFile + ".tmp";
        {
            std::ofstream f(tmp, std::ios::trunc);
            if (!f) return unavailable(fmt::format("{}: cannot open for writing", tmp));
            f << index.dump(2) << "\n";
            if (!f.flush()) return unavailable(fmt::format("{}: write failed", tmp));
        }
        fs::rename(tmp, dir + "/" + kIndexFile, ec);
        if (ec)
            return unavailable(
                fmt::format("{}/{}: rename failed: {}", dir, kIndexFile, ec.message()));
        fs::remove(dir + "/" + kSingleFile, ec);
    }
    if (!options.copy_side_files_from.empty()) {
        for (const auto& name : hf_side_files()) {
            const fs::path src = fs::path(options.copy_side_files_from) / name;
            if (!fs::exists(src)) continue;
            fs::copy_file(src, fs::path(dir) / name, fs::copy_options::overwrite_existing, ec);
            if (ec) {
                return unavailable(
                    fmt::format("{}: cannot copy to {}: {}", src.string(), dir, ec.message()));
            }
        }
    }
    return write_hf_config(dir + "/config.json", w.config(), vocab);
}

}  // namespace tandem::model
