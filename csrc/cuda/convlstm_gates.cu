// ConvLSTM / Conv-TT-LSTM gate kernels (convlstm.cuh), for the four storage types.
#include "convlstm.cuh"
#include "kernels.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(ConvLSTMForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(ConvLSTMBackward)       // without peepholes
FASTCELLS_INSTANTIATE_CHANNEL_REDUCE(ConvLSTMBackward)    // with peepholes: their grads

}  // namespace cuda
}  // namespace fastcells
