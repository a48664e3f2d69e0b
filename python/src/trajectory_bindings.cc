// `tandem._tandem.TrajectoryInbox` / `TrajectoryOutbox`: the trajectory plane for Python actors.
// A trainer binds an inbox (ZeroMQ PULL) and announces it as its "trajectories" endpoint; rollouts
// PUSH msgpack batches to it (rl::TrajectoryBatch, common/rl/grpo_protocol.h: the built-in
// rollouts' format). Batches cross into Python as JSON text; tandem/trajectories.py makes dicts.
// With "trajectory_curve" in the actor's placement (a cluster with CURVE on, docs/security.md) the
// sockets are set up by the built-in actors' helpers (common/net/trajectory_curve.h): the inbox is
// a CURVE server that accepts only the job's rollouts, the outbox a CURVE client.
// Each object is used by one Python thread at a time; waits release the GIL.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "common/net/trajectory_curve.h"
#include "python/src/bindings.h"

namespace py = pybind11;

namespace tandem::python {
namespace {

using Json = nlohmann::json;

[[noreturn]] void raise(PyObject* error, const std::string& message) {
    PyErr_SetString(error, message.c_str());
    throw py::error_already_set();
}

// The actor's placement (JSON text; empty: none, plain sockets).
Json placement_of(PyObject* error, const std::string& placement_json) {
    if (placement_json.empty()) return Json::object();
    Json j = Json::parse(placement_json, nullptr, false);
    if (j.is_discarded() || !j.is_object())
        raise(error, "invalid_argument: the placement is not a JSON object");
    return j;
}

class Inbox {
public:
    Inbox(PyObject* error, const std::string& host, const std::string& placement_json)
        : error_(error) {
        const Json placement = placement_of(error_, placement_json);
        try {
            pull_.set(zmq::sockopt::linger, 0);
            pull_.set(zmq::sockopt::rcvhwm, 1000);
            auto zap = net::secure_trajectory_server(zmq_, pull_, placement);
            if (!zap.ok()) raise(error_, zap.status().to_string());
            zap_ = std::move(*zap);
            pull_.bind(fmt::format("tcp://{}:*", host));
        } catch (const zmq::error_t& e) {
            raise(error_, fmt::format("unavailable: trajectory inbox on {}: {}", host, e.what()));
        }
    }
    std::string endpoint() const { return pull_.get(zmq::sockopt::last_endpoint); }
    bool curve() const { return zap_ != nullptr; }
    // Connections refused by CURVE (a key not of this job's rollouts, a peer without CURVE).
    uint64_t refused() const { return zap_ ? zap_->failed_handshakes() : 0; }

    // The next batch as JSON text, or None when none came within timeout_s.
    std::optional<std::string> next(double timeout_s) {
        std::optional<std::string> text;
        std::string bad;
        {
            py::gil_scoped_release release;
            zmq::pollitem_t item{pull_.handle(), 0, ZMQ_POLLIN, 0};
            int ready = 0;
            try {
                ready = zmq::poll(&item, 1,
                                  std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3)));
            } catch (const zmq::error_t&) {
                ready = 0;  // interrupted by a signal: the caller looks again
            }
            zmq::message_t msg;
            if (ready > 0 && pull_.recv(msg, zmq::recv_flags::dontwait)) {
                const auto* p = static_cast<const uint8_t*>(msg.data());
                Json j = Json::from_msgpack(p, p + msg.size(), true, false);
                if (j.is_discarded() || !j.is_object()) {
                    bad = fmt::format("a trajectory batch of {} bytes is not a msgpack map",
                                      msg.size());
                } else {
                    text = j.dump();
                }
            }
        }
        if (!bad.empty()) raise(error_, "invalid_argument: " + bad);
        return text;
    }

private:
    PyObject* error_;
    zmq::context_t zmq_{1};
    zmq::socket_t pull_{zmq_, zmq::socket_type::pull};
    std::unique_ptr<net::ZapHandler> zap_;  // null without CURVE; closed before the context
};

class Outbox {
public:
    Outbox(PyObject* error, const std::string& address, const std::string& placement_json)
        : error_(error), address_(address) {
        const Json placement = placement_of(error_, placement_json);
        try {
            push_.set(zmq::sockopt::linger, 2000);
            push_.set(zmq::sockopt::sndhwm, 1000);
            const Status s = net::secure_trajectory_client(push_, placement);
            if (!s.ok()) raise(error_, s.to_string());
            curve_ = placement.contains("trajectory_curve");
            push_.connect(address);
        } catch (const zmq::error_t& e) {
            raise(error_,
                  fmt::format("unavailable: trajectory outbox to {}: {}", address, e.what()));
        }
    }
    bool curve() const { return curve_; }
    // Sends one batch (JSON text of a map) as msgpack; waits up to timeout_s for room.
    void send(const std::string& json_text, double timeout_s) {
        Json j = Json::parse(json_text, nullptr, false);
        if (j.is_discarded() || !j.is_object()) throw py::value_error("a batch must be a dict");
        const std::vector<uint8_t> bytes = Json::to_msgpack(j);
        bool sent = false;
        {
            py::gil_scoped_release release;
            zmq::pollitem_t item{push_.handle(), 0, ZMQ_POLLOUT, 0};
            int ready = 0;
            try {
                ready = zmq::poll(&item, 1,
                                  std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1e3)));
            } catch (const zmq::error_t&) {
                ready = 0;
            }
            if (ready > 0) {
                sent =
                    push_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::dontwait)
                        .has_value();
            }
        }
        if (!sent) {
            raise(error_, fmt::format("deadline_exceeded: no room to send a trajectory batch to {} "
                                      "within {} s",
                                      address_, timeout_s));
        }
    }

private:
    PyObject* error_;
    std::string address_;
    bool curve_ = false;
    zmq::context_t zmq_{1};
    zmq::socket_t push_{zmq_, zmq::socket_type::push};
};

}  // namespace

void bind_trajectories(py::module_& m, PyObject* error) {
    py::class_<Inbox>(m, "TrajectoryInbox")
        .def(py::init([error](const std::string& host, const std::string& placement_json) {
                 return new Inbox(error, host, placement_json);
             }),
             py::arg("host"), py::arg("placement_json") = "")
        .def_property_readonly("endpoint", &Inbox::endpoint)
        .def_property_readonly("curve", &Inbox::curve)
        .def_property_readonly("refused", &Inbox::refused)
        .def("next_json", &Inbox::next, py::arg("timeout_s"));
    py::class_<Outbox>(m, "TrajectoryOutbox")
        .def(py::init([error](const std::string& address, const std::string& placement_json) {
                 return new Outbox(error, address, placement_json);
             }),
             py::arg("address"), py::arg("placement_json") = "")
        .def_property_readonly("curve", &Outbox::curve)
        .def("send_json", &Outbox::send, py::arg("json_text"), py::arg("timeout_s"));
}

}  // namespace tandem::python
