// Host side of kernels/cuda/graph.h.
#include "kernels/cuda/graph.h"

#include <cuda_runtime_api.h>

#include <cstdio>

namespace tandem::kernels::cuda {

Result<std::unique_ptr<CapturedGraph>> CapturedGraph::capture(const Stream& s,
                                                              const std::function<Status()>& body) {
    auto stream = static_cast<cudaStream_t>(s.handle());
    cudaError_t err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) return cuda_status(err, "cuda graph: cudaStreamBeginCapture");
    const Status st = body();
    cudaGraph_t graph = nullptr;
    err = cudaStreamEndCapture(stream, &graph);
    if (!st.ok()) {
        if (graph) cudaGraphDestroy(graph);
        (void)cudaGetLastError();  // the capture's error, if any, is reported through st
        return Status(st.code(), "cuda graph capture: " + st.message());
    }
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        return cuda_status(err, "cuda graph: cudaStreamEndCapture");
    }
    cudaGraphExec_t exec = nullptr;
    err = cudaGraphInstantiate(&exec, graph, 0);
    if (err != cudaSuccess) {
        cudaGraphDestroy(graph);
        return cuda_status(err, "cuda graph: cudaGraphInstantiate");
    }
    return std::unique_ptr<CapturedGraph>(new CapturedGraph(graph, exec));
}

CapturedGraph::~CapturedGraph() {
    if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
    if (graph_) cudaGraphDestroy(static_cast<cudaGraph_t>(graph_));
}

Status CapturedGraph::launch(const Stream& s) const {
    const cudaError_t err =
        cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(s.handle()));
    if (err != cudaSuccess) return cuda_status(err, "cuda graph: cudaGraphLaunch");
    return Status();
}

}  // namespace tandem::kernels::cuda
