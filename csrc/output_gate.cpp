// Fused output gate shared by ST-LSTM and MK-LSTM (CELLS.md sections 2 and 3):
//     h = sigmoid(o_partial + zo) * tanh(zl)
// and, with tanh in place of the sigmoid, by PredRNN++'s causal LSTM (section 6):
//     h = tanh(o_x + o_h + o_c + zo) * tanh(zl)
// where o_partial is what the first stage summed (o_x + o_h, or o3 + o5), zo the memory
// convolution(s) and zl the 1x1 output convolution of [c; m]. The two activations
// (o, tanh(zl)) are written to a (B, 2C) buffer kept for backward in place of the inputs,
// so the backward is pure multiply-adds. The gradients of o_partial and zo are equal.
#include "activations.h"
#include "gates.h"
#include "planes.h"
#include "simd.h"

namespace fastcells {
namespace {

// kTanhGate: the causal LSTM's tanh output gate instead of the sigmoid.
template <bool kTanhGate>
std::vector<at::Tensor> forward_impl(const at::Tensor& o_partial, const at::Tensor& zo,
                                     const at::Tensor& zl) {
  const int64_t C = zl.size(1);
  check_planes(zl, "zl", C, zl);
  check_planes(zo, "zo", C, zl);
  check_planes(o_partial, "o_partial", C, zl);
  const int64_t B = zl.size(0), H = zl.size(2), W = zl.size(3), HW = H * W;
  auto h = new_output({B, C, H, W}, zl.options());
  auto acts = new_output({B, 2 * C, H, W}, zl.options());
  AT_DISPATCH_FLOATING_TYPES(zl.scalar_type(),
                             kTanhGate ? "causal_output_gate_forward" : "output_gate_forward", [&] {
    using T = scalar_t;
    auto P = planes<T>(o_partial), O = planes<T>(zo), L = planes<T>(zl);
    auto Hh = planes<T>(h), A = planes<T>(acts);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict p = P.at(b, ch);
      const T* __restrict o = O.at(b, ch);
      const T* __restrict l = L.at(b, ch);
      T* __restrict hp = Hh.at(b, ch);
      T* __restrict ao = A.at(b, ch);
      T* __restrict at = A.at(b, C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V z = load<V>(p + k) + load<V>(o + k);
        const V og = [&] {
          if constexpr (kTanhGate) return tanh_act(z); else return sigmoid(z);
        }();
        const V t = tanh_act(load<V>(l + k));
        store(ao + k, og);
        store(at + k, t);
        store(hp + k, og * t);
      });
    });
  });
  return {h, acts};
}

template <bool kTanhGate>
std::vector<at::Tensor> backward_impl(const at::Tensor& grad_h, const at::Tensor& acts) {
  const int64_t C = grad_h.size(1);
  check_planes(grad_h, "grad_h", C, grad_h);
  check_planes(acts, "acts", 2 * C, grad_h);
  auto grad_o = new_output(grad_h.sizes(), grad_h.options());
  auto grad_l = new_output(grad_h.sizes(), grad_h.options());
  const int64_t B = grad_h.size(0), HW = grad_h.size(2) * grad_h.size(3);
  AT_DISPATCH_FLOATING_TYPES(grad_h.scalar_type(),
                             kTanhGate ? "causal_output_gate_backward" : "output_gate_backward",
                             [&] {
    using T = scalar_t;
    auto DH = planes<T>(grad_h), A = planes<T>(acts);
    auto DO = planes<T>(grad_o), DL = planes<T>(grad_l);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict dh = DH.at(b, ch);
      const T* __restrict ao = A.at(b, ch);
      const T* __restrict at = A.at(b, C + ch);
      T* __restrict dop = DO.at(b, ch);
      T* __restrict dl = DL.at(b, ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V o = load<V>(ao + k), t = load<V>(at + k), g = load<V>(dh + k);
        // d tanh = 1 - o^2, d sigmoid = o (1 - o)
        store(dop + k, g * t * (kTanhGate ? 1 - o * o : o * (1 - o)));
        store(dl + k, g * o * (1 - t * t));
      });
    });
  });
  return {grad_o, grad_l};
}

}  // namespace

std::vector<at::Tensor> output_gate_forward(const at::Tensor& o_partial, const at::Tensor& zo,
                                            const at::Tensor& zl) {
  return forward_impl<false>(o_partial, zo, zl);
}

std::vector<at::Tensor> output_gate_backward(const at::Tensor& grad_h, const at::Tensor& acts) {
  return backward_impl<false>(grad_h, acts);
}

std::vector<at::Tensor> causal_output_gate_forward(const at::Tensor& o_sum, const at::Tensor& zo,
                                                   const at::Tensor& zl) {
  return forward_impl<true>(o_sum, zo, zl);
}

std::vector<at::Tensor> causal_output_gate_backward(const at::Tensor& grad_h,
                                                    const at::Tensor& acts) {
  return backward_impl<true>(grad_h, acts);
}

}  // namespace fastcells
