// Python bindings of the fused CUDA gate kernels (extension fastcells._C_cuda). The ops are
// registered with torch.library on the Python side (fastcells/ops/*, `*_cuda`), which adds
// autograd, fake tensors and torch.compile support.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "launch.h"
#include "ops.h"

namespace fastcells {
namespace cuda {
namespace {

struct CudaRunner {
  static constexpr c10::DeviceType kDevice = c10::DeviceType::CUDA;
  static constexpr int64_t kMaxBlocksY = 65535;  // CUDA's limit on gridDim.y
  using Guard = c10::cuda::CUDAGuard;            // the ops' device is current while they run

  static int64_t sm_count() {
    int count = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount,
                                          c10::cuda::current_device()));
    return count;
  }

  // Kernels run on the current stream (at::cuda::getCurrentCUDAStream() is this function),
  // where the caching allocator made the outputs and where the caller's work is ordered.
  template <class Op>
  static void elementwise(const Op& op, int64_t blocks) {
    C10_CUDA_CHECK(launch_elementwise(op, blocks, c10::cuda::getCurrentCUDAStream().stream()));
  }

  template <class Op>
  static void channel_reduce(const Op& op, typename Op::Acc* partial, ReduceGrid grid) {
    C10_CUDA_CHECK(
        launch_channel_reduce(op, partial, grid, c10::cuda::getCurrentCUDAStream().stream()));
  }
};

}  // namespace
}  // namespace cuda
}  // namespace fastcells

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastcells fused CUDA gate kernels";
  fastcells::cuda::define_ops<fastcells::cuda::CudaRunner>(m);
}
