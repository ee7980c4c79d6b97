// Host entry points of the CUDA kernels: the only functions the torch-side code (ops.h, via
// bindings.cpp) calls in the .cu files. They are templates defined in kernels.cuh and
// explicitly instantiated, per op and dtype, in the .cu files (one per cell family's gate
// ops); keeping torch's heavy headers out of the .cu files keeps nvcc fast.
#pragma once

#include <cuda_runtime_api.h>

#include "common.cuh"

namespace fastcells {
namespace cuda {

// Each returns the launch status (cudaGetLastError()).
// One thread per element of op.idx in a grid-stride loop over `blocks` blocks of kBlock.
template <class Op>
cudaError_t launch_elementwise(const Op& op, int64_t blocks, cudaStream_t stream);

// Op::element over every element, plus per-channel partial sums (see common.cuh) written to
// partial, an (Op::kSums, C, grid.blocks_x) array of Op::Acc.
template <class Op>
cudaError_t launch_channel_reduce(const Op& op, typename Op::Acc* partial, ReduceGrid grid,
                                  cudaStream_t stream);

}  // namespace cuda
}  // namespace fastcells
