// The two __global__ kernels, generic over the op, and their launchers. Included only by the
// .cu files. The kernels are thin: the per-element work is Op::operator() / Op::element
// (convlstm.cuh, dual_memory.cuh, output_gate.cuh) and the loops and reduction steps are the
// __host__ __device__ helpers of common.cuh, which the host emulation runs as well.
#pragma once

#include "launch.h"

namespace fastcells {
namespace cuda {

template <class Op>
__global__ void __launch_bounds__(kBlock) elementwise_kernel(const Op op) {
  grid_stride(op, static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x,
              static_cast<int64_t>(gridDim.x) * kBlock);
}

template <class Op>
__global__ void __launch_bounds__(kBlock)
    channel_reduce_kernel(const Op op, typename Op::Acc* __restrict__ partial) {
  using A = typename Op::Acc;
  constexpr int K = Op::kSums;
  __shared__ A shared[K][kBlock];
  const int t = threadIdx.x;
  for (int64_t c = blockIdx.y; c < op.idx.channels; c += gridDim.y) {
    const Sums<A, K> s = channel_thread_sums(op, c, static_cast<int64_t>(blockIdx.x) * kBlock + t,
                                             static_cast<int64_t>(gridDim.x) * kBlock);
    for (int k = 0; k < K; ++k) shared[k][t] = s.v[k];
    __syncthreads();
    for (int stride = kBlock / 2; stride > 0; stride /= 2) {
      if (t < stride) tree_reduce_step<A, K>(shared, t, stride);
      __syncthreads();
    }
    if (t == 0) write_partials<A, K>(partial, shared, c, op.idx.channels, blockIdx.x, gridDim.x);
    __syncthreads();  // thread 0 has read shared[.][0] before the next channel overwrites it
  }
}

template <class Op>
cudaError_t launch_elementwise(const Op& op, int64_t blocks, cudaStream_t stream) {
  elementwise_kernel<Op><<<static_cast<unsigned int>(blocks), kBlock, 0, stream>>>(op);
  return cudaGetLastError();
}

template <class Op>
cudaError_t launch_channel_reduce(const Op& op, typename Op::Acc* partial, ReduceGrid grid,
                                  cudaStream_t stream) {
  const dim3 blocks(static_cast<unsigned int>(grid.blocks_x),
                    static_cast<unsigned int>(grid.blocks_y));
  channel_reduce_kernel<Op><<<blocks, kBlock, 0, stream>>>(op, partial);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastcells

// Explicit instantiations, one per op and storage type (the types of AT_DISPATCH in ops.h).
#define FASTCELLS_FOR_EACH_TYPE(MACRO, OP) \
  MACRO(OP<float>)                         \
  MACRO(OP<double>)                        \
  MACRO(OP<c10::Half>)                     \
  MACRO(OP<c10::BFloat16>)

#define FASTCELLS_ELEMENTWISE_ONE(OPT) \
  template cudaError_t launch_elementwise<OPT>(const OPT&, int64_t, cudaStream_t);
#define FASTCELLS_CHANNEL_REDUCE_ONE(OPT)                                                  \
  template cudaError_t launch_channel_reduce<OPT>(const OPT&, typename OPT::Acc*, ReduceGrid, \
                                                  cudaStream_t);

#define FASTCELLS_INSTANTIATE_ELEMENTWISE(OP) \
  FASTCELLS_FOR_EACH_TYPE(FASTCELLS_ELEMENTWISE_ONE, OP)
#define FASTCELLS_INSTANTIATE_CHANNEL_REDUCE(OP) \
  FASTCELLS_FOR_EACH_TYPE(FASTCELLS_CHANNEL_REDUCE_ONE, OP)
