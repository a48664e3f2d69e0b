#include "common/run_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

namespace tandem {

RunDir RunDir::of(const config::ClusterSpec& spec, const std::string& override_dir) {
    return RunDir(override_dir.empty() ? spec.run_dir : override_dir);
}

std::string RunDir::state_dir(const config::ClusterSpec& spec) const {
    return spec.coordinator.state_dir.empty() ? root_ + "/state" : spec.coordinator.state_dir;
}

Status RunDir::create() const {
    for (const auto& d : {root_, root_ + "/pids", root_ + "/logs"}) {
        std::error_code ec;
        std::filesystem::create_directories(d, ec);
        if (ec) return unavailable(fmt::format("cannot create {}: {}", d, ec.message()));
    }
    return Status();
}

Status write_file_atomic(const std::string& path, const std::string& content, unsigned mode) {
    const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    ::fchmod(fd, mode);  // the umask must not widen or narrow it
    size_t off = 0;
    while (off < content.size()) {
        const ssize_t n = ::write(fd, content.data() + off, content.size() - off);
        if (n < 0) {
            if (errno == EINTR) continue;
            const int err = errno;
            ::close(fd);
            ::unlink(tmp.c_str());
            return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(err)));
        }
        off += static_cast<size_t>(n);
    }
    if (::fsync(fd) != 0 || ::close(fd) != 0) {
        ::unlink(tmp.c_str());
        return unavailable(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    }
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(tmp.c_str());
        return unavailable(
            fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(err)));
    }
    return Status();
}

Result<std::string> read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return not_found(fmt::format("{}: cannot open", path));
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

Result<std::string> random_hex(size_t bytes) {
    std::ifstream in("/dev/urandom", std::ios::binary);
    std::string raw(bytes, '\0');
    if (!in.read(raw.data(), static_cast<std::streamsize>(bytes))) {
        return unavailable("cannot read /dev/urandom");
    }
    std::string out;
    for (unsigned char c : raw) out += fmt::format("{:02x}", c);
    return out;
}

Result<std::string> read_cluster_secret(const config::ClusterSpec& spec, const RunDir& run) {
    const std::string path = spec.secret_file.empty() ? run.secret_path() : spec.secret_file;
    auto s = read_file(path);
    if (!s.ok()) {
        return not_found(
            fmt::format("no cluster secret at {} (`tandem up` creates it, or set "
                        "secret_file in the cluster file)",
                        path));
    }
    std::string secret = *s;
    while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
    if (secret.empty())
        return invalid_argument(fmt::format("{}: the cluster secret is empty", path));
    return secret;
}

}  // namespace tandem
