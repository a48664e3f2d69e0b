// `tandem._tandem.Runtime`: the actor runtime (common/runtime/agent_runtime.h) for a Python actor,
// connected to its node agent from the actor context file the agent wrote: identity and spec,
// version numbers, endpoints, the job view, progress, metrics, events, log lines and failure.
// Structured values cross as JSON text (tandem/runtime.py turns them into dicts). Blocking calls
// release the GIL.

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/agent/actor_context.h"
#include "common/config/loader.h"
#include "common/runtime/agent_runtime.h"
#include "python/src/bindings.h"

namespace py = pybind11;

namespace tandem::python {
namespace {

using Json = nlohmann::json;

// Python values cross as JSON text (tandem/runtime.py does json.dumps), parsed here.
Json parse_json(const std::string& text) {
    Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) throw py::value_error("not JSON: " + text.substr(0, 80));
    return j;
}

Clock::TimePoint deadline_in(const runtime::JobRuntime& r, double timeout_s) {
    return r.clock().now() +
           std::chrono::duration_cast<Clock::Duration>(std::chrono::duration<double>(timeout_s));
}

template <typename T>
T take(PyObject* error, Result<T> r) {
    if (!r.ok()) {
        PyErr_SetString(
            error, (std::string(status_code_name(r.status().code())) + ": " + r.status().message())
                       .c_str());
        throw py::error_already_set();
    }
    return std::move(*r);
}

}  // namespace

Json view_json(const runtime::JobView& v) {
    Json peers = Json::array();
    for (const auto& p : v.peers) {
        peers.push_back({{"actor", p.actor.str()},
                         {"attempt", p.attempt},
                         {"phase", p.phase},
                         {"alive", p.alive()},
                         {"endpoints", p.endpoints}});
    }
    return {{"generation", v.generation},
            {"connected", v.connected},
            {"cancelled", v.cancelled},
            {"fence", v.fence.to_json()},
            {"newest", v.newest ? v.newest->info.to_json() : Json(nullptr)},
            {"peers", peers},
            {"metrics_step", v.metrics_step}};
}

void bind_runtime(py::module_& m, PyObject* error) {
    using runtime::AgentRuntime;
    py::class_<AgentRuntime, std::shared_ptr<AgentRuntime>>(m, "Runtime")
        .def_static(
            "connect",
            [error](const std::string& context_path) {
                auto ctx = agent::ActorContext::load(context_path);
                if (!ctx.ok()) {
                    PyErr_SetString(
                        error,
                        ("actor context " + context_path + ": " + ctx.status().message()).c_str());
                    throw py::error_already_set();
                }
                auto rt = AgentRuntime::connect(std::move(*ctx), SystemClock::instance());
                if (!rt.ok()) {
                    PyErr_SetString(
                        error, ("connecting to the node agent: " + rt.status().message()).c_str());
                    throw py::error_already_set();
                }
                return std::shared_ptr<AgentRuntime>(std::move(*rt));
            },
            py::arg("context_path"))
        .def_property_readonly("actor", [](const AgentRuntime& r) { return r.actor().str(); })
        .def_property_readonly("attempt", &AgentRuntime::attempt)
        .def_property_readonly("node", &AgentRuntime::node)
        .def_property_readonly("run_dir", &AgentRuntime::run_dir)
        .def_property_readonly("placement_json",
                               [](const AgentRuntime& r) { return r.placement().dump(); })
        .def_property_readonly("connected",
                               [](const AgentRuntime& r) { return r.view().connected; })
        .def_property_readonly("cancelled", [](const AgentRuntime& r) { return r.cancelled(); })
        .def("progress_json",
             [](AgentRuntime& r, const std::string& j) { r.progress(parse_json(j)); })
        .def("metrics_json", [](AgentRuntime& r, int64_t step,
                                const std::string& j) { r.metrics(step, parse_json(j)); })
        .def("event", [](AgentRuntime& r, const std::string& kind,
                         const std::string& message) { r.event(kind, message); })
        .def("log",
             [](AgentRuntime& r, const std::string& level, const std::string& message) {
                 auto l = parse_log_level(level);
                 if (!l.ok()) throw py::value_error(l.status().message());
                 r.log(*l, message);
             })
        .def("fail", [](AgentRuntime& r, const std::string& reason) { r.fail(reason); })
        .def_property_readonly("spec_yaml",
                               [](const AgentRuntime& r) { return config::to_yaml(r.spec()); })
        .def_property_readonly("bind_host", &AgentRuntime::bind_host)
        .def(
            "assign_version_json",
            [error](AgentRuntime& r, int64_t step, uint64_t data_cursor, double timeout_s,
                    Version at_least) {
                Result<runtime::VersionInfo> info = unavailable("not asked");
                {
                    py::gil_scoped_release release;
                    info = r.assign_version(step, data_cursor, deadline_in(r, timeout_s), at_least);
                }
                return take(error, std::move(info)).to_json().dump();
            },
            py::arg("step"), py::arg("data_cursor"), py::arg("timeout_s"), py::arg("at_least") = 0)
        .def(
            "announce_endpoint",
            [error](AgentRuntime& r, const std::string& name, const std::string& address) {
                Status s = r.announce_endpoint(name, address);
                (void)take(error, s.ok() ? Result<bool>(true) : Result<bool>(s));
            },
            py::arg("name"), py::arg("address"))
        .def(
            "wait_endpoint",
            [error](AgentRuntime& r, const std::string& peer, const std::string& name,
                    double timeout_s) {
                auto id = ActorId::parse(peer);
                if (!id.ok()) throw py::value_error(id.status().message());
                Result<std::string> address = unavailable("not asked");
                {
                    py::gil_scoped_release release;
                    address = r.wait_endpoint(*id, name, deadline_in(r, timeout_s));
                }
                return take(error, std::move(address));
            },
            py::arg("peer"), py::arg("name"), py::arg("timeout_s"))
        .def("view_json", [](const AgentRuntime& r) { return view_json(r.view()).dump(); })
        .def(
            "wait_change_json",
            [](AgentRuntime& r, uint64_t seen, double timeout_s) {
                runtime::JobView v;
                {
                    py::gil_scoped_release release;
                    v = r.wait_change(seen, deadline_in(r, timeout_s));
                }
                return view_json(v).dump();
            },
            py::arg("seen"), py::arg("timeout_s"));
}

}  // namespace tandem::python
