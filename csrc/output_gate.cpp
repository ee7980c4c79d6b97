// Fused output gate shared by ST-LSTM and MK-LSTM (CELLS.md sections 2 and 3):
//     o_pre = o_partial + zo,   h = sigmoid(o_pre) * tanh(zl)
// where o_partial is what the first stage summed (o_x + o_h, or o3 + o5), zo the memory
// convolution(s) and zl the 1x1 output convolution of [c; m]. Saves o_pre (written here)
// and zl for backward; grad of o_partial and zo are the same tensor.
#include "gates.h"
#include "planes.h"
#include "activations.h"

namespace fastcells {

std::vector<at::Tensor> output_gate_forward(const at::Tensor& o_partial, const at::Tensor& zo,
                                            const at::Tensor& zl) {
  const int64_t C = zl.size(1);
  check_planes(zl, "zl", C, zl);
  check_planes(zo, "zo", C, zl);
  check_planes(o_partial, "o_partial", C, zl);
  auto h = at::empty(zl.sizes(), zl.options());
  auto o_pre = at::empty(zl.sizes(), zl.options());
  const int64_t B = zl.size(0), HW = zl.size(2) * zl.size(3);
  AT_DISPATCH_FLOATING_TYPES(zl.scalar_type(), "output_gate_forward", [&] {
    using T = scalar_t;
    auto P = planes<T>(o_partial), O = planes<T>(zo), L = planes<T>(zl);
    auto Hh = planes<T>(h), OP = planes<T>(o_pre);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict p = P.at(b, ch);
      const T* __restrict o = O.at(b, ch);
      const T* __restrict l = L.at(b, ch);
      T* __restrict hp = Hh.at(b, ch);
      T* __restrict opp = OP.at(b, ch);
_Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        const T pre = p[k] + o[k];
        opp[k] = pre;
        hp[k] = sigmoid(pre) * tanh_act(l[k]);
      }
    });
  });
  return {h, o_pre};
}

std::vector<at::Tensor> output_gate_backward(const at::Tensor& grad_h, const at::Tensor& o_pre,
                                             const at::Tensor& zl) {
  const int64_t C = zl.size(1);
  check_planes(zl, "zl", C, zl);
  check_planes(o_pre, "o_pre", C, zl);
  check_planes(grad_h, "grad_h", C, zl);
  auto grad_o = at::empty(zl.sizes(), zl.options());
  auto grad_l = at::empty(zl.sizes(), zl.options());
  const int64_t B = zl.size(0), HW = zl.size(2) * zl.size(3);
  AT_DISPATCH_FLOATING_TYPES(zl.scalar_type(), "output_gate_backward", [&] {
    using T = scalar_t;
    auto DH = planes<T>(grad_h), OP = planes<T>(o_pre), L = planes<T>(zl);
    auto DO = planes<T>(grad_o), DL = planes<T>(grad_l);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict dh = DH.at(b, ch);
      const T* __restrict op = OP.at(b, ch);
      const T* __restrict l = L.at(b, ch);
      T* __restrict dop = DO.at(b, ch);
      T* __restrict dl = DL.at(b, ch);
_Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        const T o = sigmoid(op[k]);
        const T t = tanh_act(l[k]);
        dop[k] = dh[k] * t * o * (T(1) - o);
        dl[k] = dh[k] * o * (T(1) - t * t);
      }
    });
  });
  return {grad_o, grad_l};
}

}  // namespace fastcells
