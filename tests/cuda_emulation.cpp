// Host emulation of the CUDA gate kernels, for machines without a GPU (tests/test_cuda_backend.py
// builds it with torch.utils.cpp_extension.load).
//
// It compiles csrc/cuda/ops.h, the torch side of the CUDA extension, with a HostRunner in
// place of the CUDA launcher, and the kernels' __host__ __device__ element code with a plain
// C++ compiler. HostRunner replays exactly what the two __global__ kernels of
// csrc/cuda/kernels.cuh do, thread by thread, over the grid ops.h asks for: the same
// grid-stride loop, the same per-thread sums, the same shared-memory tree and partial
// writes. What stays unverified without a GPU is only the <<<...>>> launch lines themselves.
#include "ops.h"

namespace fastcells {
namespace cuda {
namespace {

struct HostRunner {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CPU;
  // Small limits, so that the tests reach the loops a GPU only takes on huge tensors: more
  // elements than grid threads (each thread's grid-stride loop runs several times), more
  // channels than grid rows (the reduction kernel's channel loop).
  static constexpr int64_t kMaxBlocksY = 2;
  static int64_t sm_count() { return 1; }  // grids of at most 16 blocks (elementwise_blocks)

  struct Guard {
    explicit Guard(const c10::Device&) {}
  };

  // elementwise_kernel: every thread of every block runs its grid-stride loop.
  template <class Op>
  static void elementwise(const Op& op, int64_t blocks) {
    for (int64_t block = 0; block < blocks; ++block)
      for (int t = 0; t < kBlock; ++t) grid_stride(op, block * kBlock + t, blocks * kBlock);
  }

  // channel_reduce_kernel, block by block; within a block, the phases between two
  // __syncthreads() run for all threads before the next phase starts, as on the device.
  template <class Op>
  static void channel_reduce(const Op& op, typename Op::Acc* partial, ReduceGrid grid) {
    using A = typename Op::Acc;
    constexpr int K = Op::kSums;
    A shared[K][kBlock];
    for (int64_t by = 0; by < grid.blocks_y; ++by) {
      for (int64_t bx = 0; bx < grid.blocks_x; ++bx) {
        for (int64_t c = by; c < op.idx.channels; c += grid.blocks_y) {
          for (int t = 0; t < kBlock; ++t) {
            const Sums<A, K> s =
                channel_thread_sums(op, c, bx * kBlock + t, grid.blocks_x * kBlock);
            for (int k = 0; k < K; ++k) shared[k][t] = s.v[k];
          }
          for (int stride = kBlock / 2; stride > 0; stride /= 2)
            for (int t = 0; t < stride; ++t) tree_reduce_step<A, K>(shared, t, stride);
          write_partials<A, K>(partial, shared, c, op.idx.channels, bx, grid.blocks_x);
        }
      }
    }
  }
};

}  // namespace
}  // namespace cuda
}  // namespace fastcells

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "host emulation of fastcells' CUDA gate kernels (tests only)";
  fastcells::cuda::define_ops<fastcells::cuda::HostRunner>(m);
}
