#pragma once

// CUDA graphs without CUDA headers for callers: capture the work a function enqueues on a stream
// once, then replay it with one launch. What the function enqueues must not allocate, copy from
// pageable host memory or synchronise (the capture fails, with the op named in the error, and the
// caller runs the work eagerly instead). Pointers and kernel arguments are fixed at capture: data
// that changes between replays must live in device buffers the graph reads.

#include <functional>
#include <memory>

#include "common/status.h"
#include "kernels/cuda/runtime.h"

namespace tandem::kernels::cuda {

// An instantiated graph. Not copyable; destroying it frees the graph (its launches complete on
// their own). One owner thread.
class CapturedGraph {
public:
    // Captures what `body` enqueues on `s` (thread-local capture mode). A failure of `body` or of
    // the capture is returned; the stream is usable afterwards.
    static Result<std::unique_ptr<CapturedGraph>> capture(const Stream& s,
                                                          const std::function<Status()>& body);
    ~CapturedGraph();
    CapturedGraph(const CapturedGraph&) = delete;
    CapturedGraph& operator=(const CapturedGraph&) = delete;

    Status launch(const Stream& s) const;

private:
    CapturedGraph(void* graph, void* exec) : graph_(graph), exec_(exec) {}
    void* graph_;  // cudaGraph_t
    void* exec_;   // cudaGraphExec_t
};

}  // namespace tandem::kernels::cuda
