#pragma once

// The parts of the `tandem._tandem` module, bound by python/src/module.cc.

#include <pybind11/pybind11.h>

#include <nlohmann/json.hpp>

#include "common/runtime/job_runtime.h"

namespace tandem::python {

// tandem._tandem.Runtime (python/src/runtime_bindings.cc); `error` is tandem.TandemError.
void bind_runtime(pybind11::module_& m, PyObject* error);

// tandem._tandem.TrajectoryInbox / TrajectoryOutbox (python/src/trajectory_bindings.cc).
void bind_trajectories(pybind11::module_& m, PyObject* error);

// A job view as JSON: {generation, connected, cancelled, fence, newest (VersionInfo JSON or
// null), peers: [{actor, attempt, phase, alive, endpoints}], metrics_step}.
nlohmann::json view_json(const runtime::JobView& view);

}  // namespace tandem::python
