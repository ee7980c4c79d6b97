// ST-LSTM and MK-LSTM first-stage kernels (dual_memory.cuh), for the four storage types.
#include "dual_memory.cuh"
#include "kernels.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(STLSTMForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(STLSTMBackward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(MKLSTMForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(MKLSTMBackward)

}  // namespace cuda
}  // namespace fastcells
