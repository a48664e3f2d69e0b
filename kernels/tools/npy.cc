#include "kernels/tools/npy.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tandem::kernels {
namespace {

Status bad(const std::string& path, const std::string& what) {
    return invalid_argument(path + ": " + what);
}

// Value of `key` in the header dict: the text after "'key':" up to the next top-level comma.
Result<std::string> field(const std::string& header, const std::string& key,
                          const std::string& path) {
    const std::string needle = "'" + key + "'";
    size_t at = header.find(needle);
    if (at == std::string::npos) return bad(path, "npy header has no " + needle);
    at = header.find(':', at + needle.size());
    if (at == std::string::npos) return bad(path, "malformed npy header");
    ++at;
    while (at < header.size() && header[at] == ' ') ++at;
    size_t end = at;
    int depth = 0;
    for (; end < header.size(); ++end) {
        const char c = header[end];
        if (c == '(') ++depth;
        if (c == ')') --depth;
        if ((c == ',' || c == '}') && depth == 0) break;
    }
    return header.substr(at, end - at);
}

}  // namespace

Result<NpyArray> read_npy(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return not_found(path + ": cannot open");
    char magic[8];
    if (!in.read(magic, 8) || std::memcmp(magic, "\x93NUMPY", 6) != 0) {
        return bad(path, "not a .npy file (bad magic)");
    }
    const int major = static_cast<unsigned char>(magic[6]);
    uint32_t header_len = 0;
    if (major == 1) {
        unsigned char b[2];
        if (!in.read(reinterpret_cast<char*>(b), 2)) return bad(path, "truncated header");
        header_len = b[0] | (b[1] << 8);
    } else if (major == 2 || major == 3) {
        unsigned char b[4];
        if (!in.read(reinterpret_cast<char*>(b), 4)) return bad(path, "truncated header");
        header_len = b[0] | (b[1] << 8) | (b[2] << 16) | (static_cast<uint32_t>(b[3]) << 24);
    } else {
        return bad(path, "unsupported npy format version " + std::to_string(major));
    }
    if (header_len > (1u << 20)) return bad(path, "npy header too large");
    std::string header(header_len, '\0');
    if (!in.read(header.data(), header_len)) return bad(path, "truncated header");

    TANDEM_ASSIGN_OR_RETURN(std::string descr, field(header, "descr", path));
    TANDEM_ASSIGN_OR_RETURN(std::string fortran, field(header, "fortran_order", path));
    TANDEM_ASSIGN_OR_RETURN(std::string shape_text, field(header, "shape", path));
    size_t elem = 0;
    if (descr == "'<f4'") {
        elem = 4;
    } else if (descr == "'<f8'") {
        elem = 8;
    } else {
        return bad(path, "dtype " + descr + " is not supported (expected float32 or float64)");
    }
    if (fortran != "False") return bad(path, "Fortran-order arrays are not supported");
    NpyArray out;
    {
        std::string dims = shape_text;
        for (char& c : dims) {
            if (c == '(' || c == ')' || c == ',') c = ' ';
        }
        std::istringstream ss(dims);
        int64_t d;
        while (ss >> d) {
            if (d < 0) return bad(path, "negative dimension");
            out.shape.push_back(d);
        }
        if (!ss.eof()) return bad(path, "malformed shape " + shape_text);
    }
    int64_t count = 1;
    for (int64_t d : out.shape) count *= d;
    std::vector<char> raw(static_cast<size_t>(count) * elem);
    if (!in.read(raw.data(), static_cast<std::streamsize>(raw.size()))) {
        return bad(path, "file shorter than its shape " + shape_text + " says");
    }
    out.data.resize(static_cast<size_t>(count));
    for (int64_t i = 0; i < count; ++i) {
        if (elem == 4) {
            std::memcpy(&out.data[i], &raw[i * 4], 4);
        } else {
            double x;
            std::memcpy(&x, &raw[i * 8], 8);
            out.data[i] = static_cast<float>(x);
        }
    }
    return out;
}

Status write_npy(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
    std::string dims = "(";
    int64_t count = 1;
    for (size_t i = 0; i < shape.size(); ++i) {
        dims += std::to_string(shape[i]);
        dims += (shape.size() == 1 || i + 1 < shape.size()) ? "," : "";
        if (i + 1 < shape.size()) dims += " ";
        count *= shape[i];
    }
    dims += ")";
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': " + dims + ", }";
    // Pad with spaces so magic (6) + version (2) + length (2) + header ends on 64 bytes.
    const size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) return unavailable(tmp + ": cannot create");
        const unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff),
                                      static_cast<unsigned char>(header.size() >> 8)};
        out.write("\x93NUMPY\x01\x00", 8);
        out.write(reinterpret_cast<const char*>(len), 2);
        out.write(header.data(), static_cast<std::streamsize>(header.size()));
        out.write(reinterpret_cast<const char*>(data),
                  static_cast<std::streamsize>(count * sizeof(float)));
        if (!out.flush()) return unavailable(tmp + ": write failed");
    }
    if (std::rename(tmp.c_str(), path.c_str()) != 0) {
        std::remove(tmp.c_str());
        return unavailable(path + ": cannot rename the temporary file into place");
    }
    return Status();
}

}  // namespace tandem::kernels
