#include "common/net/curve.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include <fmt/format.h>

#include "common/config/security.h"
#include "common/run_dir.h"

namespace tandem::net {

namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
    return s;
}

std::string z85_of(const uint8_t* bytes) {
    char text[41] = {};
    zmq_z85_encode(text, bytes, 32);
    return std::string(text, 40);
}

}  // namespace

bool curve_available() { return zmq_has("curve") != 0; }

Result<CurveKeys> generate_curve_keys() {
    char pub[41] = {}, sec[41] = {};
    if (zmq_curve_keypair(pub, sec) != 0)
        return unavailable(
            fmt::format("cannot make a CURVE key pair: {} (is libzmq built with "
                        "libsodium?)",
                        zmq_strerror(zmq_errno())));
    return CurveKeys{std::string(pub, 40), std::string(sec, 40)};
}

Result<CurveKeys> curve_keys_from_secret(const std::string& secret_z85) {
    TANDEM_RETURN_IF_ERROR(config::validate_z85_key(secret_z85));
    char pub[41] = {};
    if (zmq_curve_public(pub, secret_z85.c_str()) != 0)
        return invalid_argument(
            fmt::format("cannot compute the CURVE public key: {}", zmq_strerror(zmq_errno())));
    return CurveKeys{std::string(pub, 40), secret_z85};
}

Result<CurveKeys> derive_curve_keys(const std::string& root_secret_z85, const std::string& label) {
    TANDEM_RETURN_IF_ERROR(config::validate_z85_key(root_secret_z85));
    uint8_t root[32];
    if (!zmq_z85_decode(root, root_secret_z85.c_str()))
        return invalid_argument("the root CURVE key is not Z85 text");
    uint8_t derived[32];
    // BLAKE2b keyed with the root secret; the label separates jobs, actors and purposes.
    crypto_generichash(derived, sizeof derived, reinterpret_cast<const uint8_t*>(label.data()),
                       label.size(), root, sizeof root);
    sodium_memzero(root, sizeof root);
    std::string secret = z85_of(derived);
    sodium_memzero(derived, sizeof derived);
    return curve_keys_from_secret(secret);
}

std::string curve_key_path(const std::string& run_dir, const std::string& name) {
    return fmt::format("{}/keys/{}.key", run_dir, name);
}

std::string curve_public_path(const std::string& run_dir, const std::string& name) {
    return fmt::format("{}/keys/{}.pub", run_dir, name);
}

Status write_curve_keys(const std::string& run_dir, const std::string& name, const CurveKeys& k) {
    const std::string dir = run_dir + "/keys";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) return unavailable(fmt::format("cannot create {}: {}", dir, ec.message()));
    ::chmod(dir.c_str(), 0700);
    TANDEM_RETURN_IF_ERROR(
        write_file_atomic(curve_key_path(run_dir, name), k.secret_z85 + "\n", 0600));
    return write_file_atomic(curve_public_path(run_dir, name), k.public_z85 + "\n", 0644);
}

Result<CurveKeys> read_curve_keys(const std::string& key_path) {
    struct stat st {};
    if (::stat(key_path.c_str(), &st) != 0)
        return not_found(fmt::format("{}: no CURVE key file ({})", key_path, std::strerror(errno)));
    if (st.st_mode & 077)
        return invalid_argument(fmt::format(
            "{}: a secret key file must be readable by its owner only (mode {:o}; chmod 600 it)",
            key_path, st.st_mode & 0777));
    TANDEM_ASSIGN_OR_RETURN(std::string text, read_file(key_path));
    const std::string secret = trim(text);
    if (Status s = config::validate_z85_key(secret); !s.ok())
        return invalid_argument(fmt::format("{}: {}", key_path, s.message()));
    auto keys = curve_keys_from_secret(secret);
    if (!keys.ok())
        return invalid_argument(fmt::format("{}: {}", key_path, keys.status().message()));
    return keys;
}

Result<std::string> read_curve_public(const std::string& pub_path) {
    auto text = read_file(pub_path);
    if (!text.ok())
        return not_found(
            fmt::format("{}: no CURVE public key file: {}", pub_path, text.status().message()));
    const std::string key = trim(*text);
    if (Status s = config::validate_z85_key(key); !s.ok())
        return invalid_argument(fmt::format("{}: {}", pub_path, s.message()));
    return key;
}

void set_curve_server(zmq::socket_t& socket, const CurveKeys& keys, const std::string& zap_domain) {
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_z85);
    socket.set(zmq::sockopt::zap_domain, zap_domain);
}

void set_curve_client(zmq::socket_t& socket, const CurveKeys& keys,
                      const std::string& server_public_z85) {
    socket.set(zmq::sockopt::curve_serverkey, server_public_z85);
    socket.set(zmq::sockopt::curve_publickey, keys.public_z85);
    socket.set(zmq::sockopt::curve_secretkey, keys.secret_z85);
}

Result<std::unique_ptr<ZapHandler>> ZapHandler::create(zmq::context_t& zmq,
                                                       const std::string& log_component) {
    if (!curve_available())
        return unavailable(
            "this libzmq has no CURVE (zmq_has(\"curve\") is false): install a "
            "libzmq built with libsodium (Debian's libzmq5 is)");
    try {
        return std::unique_ptr<ZapHandler>(new ZapHandler(zmq, log_component));
    } catch (const zmq::error_t& e) {
        return unavailable(fmt::format("cannot bind {}: {}", kZapEndpoint, e.what()));
    }
}

ZapHandler::ZapHandler(zmq::context_t& zmq, const std::string& log_component)
    : zmq_(zmq), rep_(zmq, zmq::socket_type::rep), log_(log_component) {
    rep_.set(zmq::sockopt::linger, 0);
    rep_.bind(kZapEndpoint);
}

ZapHandler::~ZapHandler() {
    stop_.store(true, std::memory_order_relaxed);  // relaxed: a flag; join() publishes the rest
    if (thread_.joinable()) thread_.join();
}

void ZapHandler::allow(const std::string& domain, const std::string& public_z85,
                       const std::string& name) {
    std::lock_guard lock(mu_);
    allowed_[domain][public_z85] = name;
}

Status ZapHandler::watch(zmq::socket_t& server, const std::string& label) {
    const std::string endpoint = fmt::format("inproc://tandem-zap-monitor-{}-{}",
                                             static_cast<void*>(this), monitors_.size());
    constexpr int kEvents = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                            ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
    if (zmq_socket_monitor(server.handle(), endpoint.c_str(), kEvents) != 0)
        return unavailable(
            fmt::format("cannot monitor the {} socket: {}", label, zmq_strerror(zmq_errno())));
    auto pair = std::make_unique<zmq::socket_t>(zmq_, zmq::socket_type::pair);
    pair->set(zmq::sockopt::linger, 0);
    pair->connect(endpoint);
    monitors_.push_back(std::move(pair));
    monitor_labels_.push_back(label);
    return Status();
}

void ZapHandler::start() {
    thread_ = std::thread([this] { run(); });
}

std::vector<std::string> ZapHandler::answer(const std::vector<std::string>& request) {
    // version, request id, domain, address, identity, mechanism, credentials...
    const std::string version = request.empty() ? "" : request[0];
    const std::string id = request.size() > 1 ? request[1] : "";
    auto reply = [&](const char* code, const std::string& text, const std::string& user = "") {
        return std::vector<std::string>{"1.0", id, code, text, user, ""};
    };
    if (version != "1.0" || request.size() < 6) return reply("500", "malformed ZAP request");
    const std::string& domain = request[2];
    const std::string& address = request[3];
    const std::string& mechanism = request[5];
    std::string key;
    if (mechanism == "CURVE" && request.size() >= 7 && request[6].size() == 32)
        key = z85_of(reinterpret_cast<const uint8_t*>(request[6].data()));
    std::lock_guard lock(mu_);
    if (!key.empty()) {
        if (auto d = allowed_.find(domain); d != allowed_.end()) {
            if (auto k = d->second.find(key); k != d->second.end())
                return reply("200", "OK", k->second);
        }
    }
    refused_keys_.fetch_add(1, std::memory_order_relaxed);
    const std::string what = key.empty() ? mechanism : key;
    if (logged_.size() < 1024 && logged_.insert(what + "@" + address).second) {
        log_.warn(
            "refused a {} connection from {}: {} (domain {}); further refusals of this peer "
            "are counted, not logged",
            mechanism, address,
            key.empty() ? std::string("not a CURVE client")
                        : fmt::format("public key {} is not one of its peers", key),
            domain);
    }
    return reply("400", "unknown key");
}

void ZapHandler::on_monitor_event(size_t index) {
    zmq::message_t event, address;
    if (!monitors_[index]->recv(event, zmq::recv_flags::dontwait)) return;
    if (event.more()) (void)monitors_[index]->recv(address, zmq::recv_flags::none);
    uint16_t code = 0;
    if (event.size() >= 2) std::memcpy(&code, event.data(), 2);
    const uint64_t n = failed_handshakes_.fetch_add(1, std::memory_order_relaxed) + 1;
    if (n == 1) {
        log_.warn(
            "a peer failed the CURVE handshake on the {} socket ({}; event {:#x}); further "
            "failures are counted",
            monitor_labels_[index], address.to_string(), code);
    }
}

void ZapHandler::run() {
    std::vector<zmq::pollitem_t> items;
    items.push_back({rep_.handle(), 0, ZMQ_POLLIN, 0});
    for (auto& m : monitors_) items.push_back({m->handle(), 0, ZMQ_POLLIN, 0});
    while (!stop_.load(std::memory_order_relaxed)) {
        try {
            zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
            if (items[0].revents & ZMQ_POLLIN) {
                std::vector<std::string> request;
                zmq::message_t part;
                do {
                    if (!rep_.recv(part, zmq::recv_flags::none)) break;
                    request.push_back(part.to_string());
                } while (part.more());
                const auto reply = answer(request);
                for (size_t i = 0; i < reply.size(); ++i) {
                    rep_.send(zmq::buffer(reply[i]), i + 1 < reply.size() ? zmq::send_flags::sndmore
                                                                          : zmq::send_flags::none);
                }
            }
            for (size_t i = 1; i < items.size(); ++i) {
                if (items[i].revents & ZMQ_POLLIN) on_monitor_event(i - 1);
            }
        } catch (const zmq::error_t& e) {
            if (e.num() == ETERM) return;
            log_.warn("ZAP handler: {}", e.what());
        }
    }
}

}  // namespace tandem::net
