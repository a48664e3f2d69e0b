#include "common/agent/runtime_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <filesystem>

#include <fmt/format.h>

#include "common/ids.h"
#include "common/wire/messages.h"
#include "common/wire/runtime_messages.h"
#include "common/wire/zmq_io.h"

namespace tandem::agent {

namespace {
// sun_path holds 108 bytes; ZeroMQ needs the terminating NUL.
constexpr size_t kMaxIpcPath = 100;
}  // namespace

Result<std::unique_ptr<RuntimeServer>> RuntimeServer::bind(zmq::context_t& zmq,
                                                           const std::string& run_dir,
                                                           const std::string& node,
                                                           const std::string& instance) {
    std::string path = fmt::format("{}/agents/{}.runtime", run_dir, node);
    std::string endpoint;
    if (path.size() <= kMaxIpcPath) {
        std::error_code ec;
        std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
        std::filesystem::remove(path, ec);  // a socket left by a killed agent of this node
        endpoint = "ipc://" + path;
    } else {
        path.clear();
        endpoint = fmt::format("ipc://@tandem-runtime-{}-{}", node, instance);
    }
    auto socket = std::make_unique<zmq::socket_t>(zmq, zmq::socket_type::router);
    socket->set(zmq::sockopt::linger, 0);
    socket->set(zmq::sockopt::sndhwm, 10000);
    socket->set(zmq::sockopt::rcvhwm, 10000);
    try {
        socket->bind(endpoint);
    } catch (const zmq::error_t& e) {
        return unavailable(fmt::format("actor runtime socket {}: {}", endpoint, e.what()));
    }
    // Only this user's processes (the agent's actors) may speak for an actor.
    if (!path.empty() && ::chmod(path.c_str(), 0600) != 0) {
        return unavailable(
            fmt::format("actor runtime socket {}: chmod: {}", path, std::strerror(errno)));
    }
    return std::unique_ptr<RuntimeServer>(
        new RuntimeServer(std::move(socket), std::move(endpoint), std::move(path)));
}

RuntimeServer::~RuntimeServer() {
    socket_.reset();
    if (!path_.empty()) ::unlink(path_.c_str());
}

void RuntimeServer::send_to(const std::string& routing_id, const wire::Envelope& e) {
    wire::Envelope out = e;
    out.seq = ++seq_;
    if (!wire::send_envelope(*socket_, out, routing_id).ok()) ++dropped_;
}

void RuntimeServer::send_view(const std::string& routing_id, const std::string& job) {
    auto it = views_.find(job);
    if (it == views_.end()) return;
    it->second.body["connected"] = connected_;
    send_to(routing_id, it->second);
}

std::vector<RuntimeServer::Incoming> RuntimeServer::receive() {
    std::vector<Incoming> out;
    while (auto frames = wire::try_recv_frames(*socket_)) {
        if (frames->size() < 2) {
            ++dropped_;
            continue;
        }
        const std::string routing_id = frames->front();
        frames->erase(frames->begin());
        auto env = wire::decode(*frames);
        if (!env.ok()) {
            ++dropped_;
            continue;
        }
        if (env->type == wire::RuntimeHello::kType) {
            auto hello = wire::RuntimeHello::from_json(env->body);
            auto aid = ActorId::parse(hello.ok() ? hello->actor : "");
            if (!aid.ok()) {
                ++dropped_;
                continue;
            }
            clients_[routing_id] = {hello->actor, aid->job.str()};
            send_view(routing_id, aid->job.str());
            continue;
        }
        auto it = clients_.find(routing_id);
        if (it == clients_.end()) {
            ++dropped_;
            continue;
        }
        out.push_back({it->second.actor, it->second.job, std::move(*env)});
    }
    return out;
}

bool RuntimeServer::deliver(const wire::Envelope& e) {
    if (e.type == wire::JobView::kType) {
        const std::string job = e.body.value("job", "");
        views_[job] = e;
        for (const auto& [rid, c] : clients_) {
            if (c.job == job) send_view(rid, job);
        }
        return true;
    }
    if (e.type == wire::VersionAssigned::kType || e.type == wire::RelayAssigned::kType) {
        const std::string actor = e.body.value("actor", "");
        for (const auto& [rid, c] : clients_) {
            if (c.actor == actor) send_to(rid, e);
        }
        return true;
    }
    return false;
}

void RuntimeServer::set_connected(bool connected) {
    if (connected == connected_) return;
    connected_ = connected;
    for (const auto& [rid, c] : clients_) send_view(rid, c.job);
}

void RuntimeServer::forget_actor(const std::string& actor) {
    for (auto it = clients_.begin(); it != clients_.end();) {
        it = it->second.actor == actor ? clients_.erase(it) : std::next(it);
    }
    // Views of jobs with no actor here any more are dropped.
    for (auto it = views_.begin(); it != views_.end();) {
        bool used = false;
        for (const auto& [rid, c] : clients_) used = used || c.job == it->first;
        it = used ? std::next(it) : views_.erase(it);
    }
}

}  // namespace tandem::agent
