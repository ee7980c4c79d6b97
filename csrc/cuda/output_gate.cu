// Output-gate kernels of ST-LSTM and MK-LSTM (output_gate.cuh), for the four storage types.
#include "kernels.cuh"
#include "output_gate.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(OutputGateForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(OutputGateBackward)

}  // namespace cuda
}  // namespace fastcells
