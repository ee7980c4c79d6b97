// PredRNN++ causal LSTM gate stages (causal_lstm.cuh), for the four storage types.
#include "causal_lstm.cuh"
#include "kernels.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalCForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalCBackward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalMForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalMBackward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalOutputForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(CausalOutputBackward)

}  // namespace cuda
}  // namespace fastcells
