// `tandem._tandem.Runtime`: the actor runtime (common/runtime/agent_runtime.h) for a Python actor,
// connected to its node agent from the actor context file the agent wrote. Identity, progress,
// metrics, events, log lines, failure and the job view so far; versions and endpoints are not
// bound yet (docs/python.md).

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "common/agent/actor_context.h"
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

}  // namespace

void bind_runtime(py::module_& m, PyObject* error) {
    using runtime::AgentRuntime;
    py::class_<AgentRuntime>(m, "Runtime")
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
                return std::move(*rt);
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
        .def("fail", [](AgentRuntime& r, const std::string& reason) { r.fail(reason); });
}

}  // namespace tandem::python
