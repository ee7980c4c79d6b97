// PredRNN++ gradient highway unit kernels (ghu.cuh), for the four storage types.
#include "ghu.cuh"
#include "kernels.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(GHUForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(GHUBackward)

}  // namespace cuda
}  // namespace fastcells
