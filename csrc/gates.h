// Entry points of the fused CPU gate kernels (one translation unit per cell family).
// Every function takes and returns (B, C, H, W) tensors with contiguous planes.
#pragma once

#include <ATen/ATen.h>
#include <vector>

namespace fastcells {

std::vector<at::Tensor> convlstm_gates_forward(const at::Tensor& z, const at::Tensor& c_prev,
                                               const c10::optional<at::Tensor>& peephole,
                                               double forget_bias);
std::vector<at::Tensor> convlstm_gates_backward(const at::Tensor& grad_h,
                                                const at::Tensor& grad_c, const at::Tensor& acts,
                                                const at::Tensor& c_prev, const at::Tensor& c,
                                                const c10::optional<at::Tensor>& peephole);

std::vector<at::Tensor> stlstm_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                             const at::Tensor& zm, const at::Tensor& c_prev,
                                             const at::Tensor& m_prev, bool return_deltas,
                                             double forget_bias);
std::vector<at::Tensor> stlstm_gates_backward(const at::Tensor& grad_cm,
                                              const at::Tensor& grad_o_partial,
                                              const c10::optional<at::Tensor>& grad_deltas,
                                              const at::Tensor& acts, const at::Tensor& c_prev,
                                              const at::Tensor& m_prev);

std::vector<at::Tensor> mklstm_gates_forward(const at::Tensor& z1, const at::Tensor& z2,
                                             const at::Tensor& c1_prev, const at::Tensor& c2_prev);
std::vector<at::Tensor> mklstm_gates_backward(const at::Tensor& grad_cc,
                                              const at::Tensor& grad_o_partial,
                                              const at::Tensor& acts, const at::Tensor& c1_prev,
                                              const at::Tensor& c2_prev, int64_t z2_rows);

std::vector<at::Tensor> output_gate_forward(const at::Tensor& o_partial, const at::Tensor& zo,
                                            const at::Tensor& zl);
std::vector<at::Tensor> output_gate_backward(const at::Tensor& grad_h, const at::Tensor& acts);

std::vector<at::Tensor> mims_gates_forward(const at::Tensor& zh,
                                           const c10::optional<at::Tensor>& zx,
                                           const at::Tensor& c_prev, const at::Tensor& ct_weight,
                                           const at::Tensor& oc_weight);
std::vector<at::Tensor> mims_gates_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                            const at::Tensor& acts, const at::Tensor& c_prev,
                                            const at::Tensor& c, const at::Tensor& ct_weight,
                                            const at::Tensor& oc_weight);
std::vector<at::Tensor> mim_block_gates_forward(const at::Tensor& zx, const at::Tensor& zt,
                                                const at::Tensor& zs, const at::Tensor& m_prev,
                                                const at::Tensor& n_h);
std::vector<at::Tensor> mim_block_gates_backward(const at::Tensor& grad_cm,
                                                 const at::Tensor& grad_o_partial,
                                                 const at::Tensor& acts,
                                                 const at::Tensor& m_prev);
// PredRNN++ (causal_lstm_gates.cpp, ghu_gates.cpp)
std::vector<at::Tensor> causal_c_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                               const at::Tensor& zc, const at::Tensor& zm,
                                               const at::Tensor& c_prev, double forget_bias);
std::vector<at::Tensor> causal_c_gates_backward(const at::Tensor& grad_c,
                                                const at::Tensor& grad_o_partial,
                                                const at::Tensor& grad_zp, const at::Tensor& acts,
                                                const at::Tensor& c_prev);
std::vector<at::Tensor> causal_m_gates_forward(const at::Tensor& zp, const at::Tensor& zc2m,
                                               const at::Tensor& c, const at::Tensor& o_partial,
                                               double forget_bias);
std::vector<at::Tensor> causal_m_gates_backward(const at::Tensor& grad_m,
                                                const at::Tensor& grad_o_sum,
                                                const at::Tensor& acts);
std::vector<at::Tensor> causal_output_gate_forward(const at::Tensor& o_sum, const at::Tensor& zo,
                                                   const at::Tensor& zl);
std::vector<at::Tensor> causal_output_gate_backward(const at::Tensor& grad_h,
                                                    const at::Tensor& acts);
std::vector<at::Tensor> ghu_gates_forward(const at::Tensor& zx, const at::Tensor& zz,
                                          const at::Tensor& z_prev);
std::vector<at::Tensor> ghu_gates_backward(const at::Tensor& grad_z, const at::Tensor& acts,
                                           const at::Tensor& z_prev);

}  // namespace fastcells
