// MIM stationarity-module and block gate kernels (mim.cuh), for the four storage types.
#include "kernels.cuh"
#include "mim.cuh"

namespace fastcells {
namespace cuda {

FASTCELLS_INSTANTIATE_ELEMENTWISE(MIMSForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(MIMSBackward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(MIMBlockForward)
FASTCELLS_INSTANTIATE_ELEMENTWISE(MIMBlockBackward)

}  // namespace cuda
}  // namespace fastcells
