// The torch side of MIM's CUDA gate ops (kernels in mim.cuh), over a Runner like the other
// ops of ops.h, which includes this file after its helpers and calls define_mim_ops.
// Signatures and results are those of the CPU ops (csrc/gates.h) plus `channels_last`.
#pragma once

#include "mim.cuh"

namespace fastcells {
namespace cuda {

// A contiguous (channels, H, W) per-pixel weight of like's spatial size, dtype and device.
template <class Runner>
void check_pixel_weight(const at::Tensor& w, const char* name, int64_t channels,
                        const at::Tensor& like) {
  TORCH_CHECK(w.dim() == 3 && w.size(0) == channels && w.size(1) == like.size(2) &&
                  w.size(2) == like.size(3) && w.is_contiguous(),
              name, ": expected a contiguous (", channels, ", ", like.size(2), ", ", like.size(3),
              ") tensor, got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == like.scalar_type(), name, ": dtype ", w.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(w.device() == like.device(), name, ": on ", w.device(), ", expected ",
              like.device());
}

template <class Runner>
std::vector<at::Tensor> mims_gates_forward(const at::Tensor& zh,
                                           const c10::optional<at::Tensor>& zx,
                                           const at::Tensor& c_prev, const at::Tensor& ct_weight,
                                           const at::Tensor& oc_weight, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(zh, "zh", 4 * C, c_prev);
  if (zx.has_value()) check_planes<Runner>(*zx, "zx", 4 * C, c_prev);
  check_pixel_weight<Runner>(ct_weight, "ct_weight", 2 * C, c_prev);
  check_pixel_weight<Runner>(oc_weight, "oc_weight", C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor h = new_output(c_prev, C, channels_last), c = new_output(c_prev, C, channels_last);
  at::Tensor acts = new_output(c_prev, 4 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "mims_gates_forward", [&] {
    using T = scalar_t;
    MIMSForward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.zh = planes<const T>(zh);
    op.zx = planes<const T>(zx);
    op.c_prev = planes<const T>(c_prev);
    op.h = planes<T>(h);
    op.c = planes<T>(c);
    op.acts = planes<T>(acts);
    op.ct = ct_weight.data_ptr<T>();
    op.oc = oc_weight.data_ptr<T>();
    run_elementwise<Runner>(op);
  });
  return {h, c, acts};
}

template <class Runner>
std::vector<at::Tensor> mims_gates_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                            const at::Tensor& acts, const at::Tensor& c_prev,
                                            const at::Tensor& c, const at::Tensor& ct_weight,
                                            const at::Tensor& oc_weight, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(acts, "acts", 4 * C, c_prev);
  check_planes<Runner>(c, "c", C, c_prev);
  check_planes<Runner>(grad_h, "grad_h", C, c_prev);
  check_planes<Runner>(grad_c, "grad_c", C, c_prev);
  check_pixel_weight<Runner>(ct_weight, "ct_weight", 2 * C, c_prev);
  check_pixel_weight<Runner>(oc_weight, "oc_weight", C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor grad_z = new_output(c_prev, 4 * C, channels_last);
  at::Tensor grad_c_prev = new_output(c_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "mims_gates_backward", [&] {
    using T = scalar_t;
    MIMSBackward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.grad_h = planes<const T>(grad_h);
    op.grad_c = planes<const T>(grad_c);
    op.acts = planes<const T>(acts);
    op.c_prev = planes<const T>(c_prev);
    op.c = planes<const T>(c);
    op.grad_z = planes<T>(grad_z);
    op.grad_c_prev = planes<T>(grad_c_prev);
    op.ct = ct_weight.data_ptr<T>();
    op.oc = oc_weight.data_ptr<T>();
    run_elementwise<Runner>(op);
  });
  return {grad_z, grad_c_prev};
}

template <class Runner>
std::vector<at::Tensor> mim_block_gates_forward(const at::Tensor& zx, const at::Tensor& zt,
                                                const at::Tensor& zs, const at::Tensor& m_prev,
                                                const at::Tensor& n_h, bool channels_last) {
  check_dims<Runner>(m_prev, "m_prev");
  const int64_t C = m_prev.size(1);
  check_planes<Runner>(m_prev, "m_prev", C, m_prev);
  check_planes<Runner>(n_h, "n_h", C, m_prev);
  check_planes<Runner>(zx, "zx", 4 * C, m_prev);
  check_planes<Runner>(zt, "zt", 3 * C, m_prev);
  check_planes<Runner>(zs, "zs", 4 * C, m_prev);
  typename Runner::Guard guard(m_prev.device());
  at::Tensor cm = new_output(m_prev, 2 * C, channels_last);
  at::Tensor o_partial = new_output(m_prev, C, channels_last);
  at::Tensor acts = new_output(m_prev, 5 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m_prev.scalar_type(),
                                  "mim_block_gates_forward", [&] {
    using T = scalar_t;
    MIMBlockForward<T> op;
    op.idx = index_of(m_prev, channels_last);
    op.zx = planes<const T>(zx);
    op.zt = planes<const T>(zt);
    op.zs = planes<const T>(zs);
    op.m_prev = planes<const T>(m_prev);
    op.n_h = planes<const T>(n_h);
    op.cm = planes<T>(cm);
    op.o_partial = planes<T>(o_partial);
    op.acts = planes<T>(acts);
    run_elementwise<Runner>(op);
  });
  return {cm, o_partial, acts};
}

template <class Runner>
std::vector<at::Tensor> mim_block_gates_backward(const at::Tensor& grad_cm,
                                                 const at::Tensor& grad_o_partial,
                                                 const at::Tensor& acts, const at::Tensor& m_prev,
                                                 bool channels_last) {
  check_dims<Runner>(m_prev, "m_prev");
  const int64_t C = m_prev.size(1);
  check_planes<Runner>(m_prev, "m_prev", C, m_prev);
  check_planes<Runner>(acts, "acts", 5 * C, m_prev);
  check_planes<Runner>(grad_cm, "grad_cm", 2 * C, m_prev);
  check_planes<Runner>(grad_o_partial, "grad_o_partial", C, m_prev);
  typename Runner::Guard guard(m_prev.device());
  at::Tensor grad_zx = new_output(m_prev, 4 * C, channels_last);
  at::Tensor grad_zt = new_output(m_prev, 3 * C, channels_last);
  at::Tensor grad_zs = new_output(m_prev, 4 * C, channels_last);
  at::Tensor grad_m_prev = new_output(m_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, m_prev.scalar_type(),
                                  "mim_block_gates_backward", [&] {
    using T = scalar_t;
    MIMBlockBackward<T> op;
    op.idx = index_of(m_prev, channels_last);
    op.grad_cm = planes<const T>(grad_cm);
    op.grad_o_partial = planes<const T>(grad_o_partial);
    op.acts = planes<const T>(acts);
    op.m_prev = planes<const T>(m_prev);
    op.grad_zx = planes<T>(grad_zx);
    op.grad_zt = planes<T>(grad_zt);
    op.grad_zs = planes<T>(grad_zs);
    op.grad_m_prev = planes<T>(grad_m_prev);
    run_elementwise<Runner>(op);
  });
  return {grad_zx, grad_zt, grad_zs, grad_m_prev};
}

template <class Runner>
void define_mim_ops(pybind11::module& m) {
  m.def("mims_gates_forward", &mims_gates_forward<Runner>);
  m.def("mims_gates_backward", &mims_gates_backward<Runner>);
  m.def("mim_block_gates_forward", &mim_block_gates_forward<Runner>);
  m.def("mim_block_gates_backward", &mim_block_gates_backward<Runner>);
}

}  // namespace cuda
}  // namespace fastcells
