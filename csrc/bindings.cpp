// Python bindings of the fused CPU kernels. The ops are registered with torch.library on the
// Python side (fastcells/ops/*), which adds autograd, fake tensors and torch.compile support.
#include <torch/extension.h>

#include "gates.h"
#include "planes.h"

namespace fastcells {
// conv_weight_grad.cpp: Winograd weight gradient, K = 3 or 5, float32; of one (x, dz) pair,
// and summed over several pairs of one shape in one call.
at::Tensor conv_weight_grad_winograd(const at::Tensor& x, const at::Tensor& dz, int64_t kernel,
                                     int64_t pad, int64_t chunk_floats, int64_t points);
at::Tensor conv_weight_grad_winograd_sum(const std::vector<at::Tensor>& xs,
                                         const std::vector<at::Tensor>& dzs, int64_t kernel,
                                         int64_t pad, int64_t chunk_floats, int64_t points);
// conv_winograd.cpp: Winograd forward, F(4x4, 3x3) and F(2x2, 5x5), float32.
at::Tensor conv2d_winograd(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& bias, int64_t pad,
                           int64_t chunk_tiles, int64_t points);
}  // namespace fastcells

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastcells fused CPU gate kernels";
  m.def("convlstm_gates_forward", &fastcells::convlstm_gates_forward);
  m.def("convlstm_gates_backward", &fastcells::convlstm_gates_backward);
  m.def("stlstm_gates_forward", &fastcells::stlstm_gates_forward);
  m.def("stlstm_gates_backward", &fastcells::stlstm_gates_backward);
  m.def("mklstm_gates_forward", &fastcells::mklstm_gates_forward);
  m.def("mklstm_gates_backward", &fastcells::mklstm_gates_backward);
  m.def("output_gate_forward", &fastcells::output_gate_forward);
  m.def("output_gate_backward", &fastcells::output_gate_backward);
  m.def("mims_gates_forward", &fastcells::mims_gates_forward);
  m.def("mims_gates_backward", &fastcells::mims_gates_backward);
  m.def("mim_block_gates_forward", &fastcells::mim_block_gates_forward);
  m.def("mim_block_gates_backward", &fastcells::mim_block_gates_backward);
  m.def("causal_c_gates_forward", &fastcells::causal_c_gates_forward);
  m.def("causal_c_gates_backward", &fastcells::causal_c_gates_backward);
  m.def("causal_m_gates_forward", &fastcells::causal_m_gates_forward);
  m.def("causal_m_gates_backward", &fastcells::causal_m_gates_backward);
  m.def("causal_output_gate_forward", &fastcells::causal_output_gate_forward);
  m.def("causal_output_gate_backward", &fastcells::causal_output_gate_backward);
  m.def("ghu_gates_forward", &fastcells::ghu_gates_forward);
  m.def("ghu_gates_backward", &fastcells::ghu_gates_backward);
  m.def("conv_weight_grad_winograd", &fastcells::conv_weight_grad_winograd);
  m.def("conv_weight_grad_winograd_sum", &fastcells::conv_weight_grad_winograd_sum);
  m.def("conv2d_winograd", &fastcells::conv2d_winograd);
  m.def(
      "set_poison_outputs", [](bool on) { fastcells::poison_outputs() = on; },
      "Test hook: NaN-fill kernel outputs before the kernels write them.");
}
