#pragma once

// The parts of the `tandem._tandem` module, bound by python/src/module.cc.

#include <pybind11/pybind11.h>

namespace tandem::python {

// tandem._tandem.Runtime (python/src/runtime_bindings.cc); `error` is tandem.TandemError.
void bind_runtime(pybind11::module_& m, PyObject* error);

}  // namespace tandem::python
