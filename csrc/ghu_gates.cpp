// Fused gates of PredRNN++'s gradient highway unit (CELLS.md section 6, OpenSTL `GHU`):
//     p, u = split(zx + zz)                  zx = x_concat(x), zz = z_concat(z_prev): 2C each
//     z = s(u) * tanh(p) + (1 - s(u)) * z_prev
// The activations (tanh(p), s(u)) are saved for backward (2C, the bytes of the sum they
// replace). zx and zz are summed before the nonlinearities, so their gradients are equal:
// the backward writes one (B, 2C) tensor that serves as both.
#include "activations.h"
#include "gates.h"
#include "planes.h"
#include "simd.h"

namespace fastcells {

std::vector<at::Tensor> ghu_gates_forward(const at::Tensor& zx, const at::Tensor& zz,
                                          const at::Tensor& z_prev) {
  const int64_t C = z_prev.size(1);
  check_planes(z_prev, "z_prev", C, z_prev);
  check_planes(zx, "zx", 2 * C, z_prev);
  check_planes(zz, "zz", 2 * C, z_prev);
  const int64_t B = z_prev.size(0), H = z_prev.size(2), W = z_prev.size(3), HW = H * W;
  auto z = new_output({B, C, H, W}, z_prev.options());
  auto acts = new_output({B, 2 * C, H, W}, z_prev.options());
  AT_DISPATCH_FLOATING_TYPES(zx.scalar_type(), "ghu_gates_forward", [&] {
    using T = scalar_t;
    auto X = planes<T>(zx), Zz = planes<T>(zz), ZP = planes<T>(z_prev);
    auto Zn = planes<T>(z), A = planes<T>(acts);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict xp = X.at(b, ch);
      const T* __restrict xu = X.at(b, C + ch);
      const T* __restrict zp = Zz.at(b, ch);
      const T* __restrict zu = Zz.at(b, C + ch);
      const T* __restrict prev = ZP.at(b, ch);
      T* __restrict out = Zn.at(b, ch);
      T* __restrict ap = A.at(b, ch);
      T* __restrict au = A.at(b, C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V p = tanh_act(load<V>(xp + k) + load<V>(zp + k));
        const V u = sigmoid(load<V>(xu + k) + load<V>(zu + k));
        store(ap + k, p);
        store(au + k, u);
        store(out + k, u * p + (1 - u) * load<V>(prev + k));
      });
    });
  });
  return {z, acts};
}

std::vector<at::Tensor> ghu_gates_backward(const at::Tensor& grad_z, const at::Tensor& acts,
                                           const at::Tensor& z_prev) {
  const int64_t C = z_prev.size(1);
  check_planes(z_prev, "z_prev", C, z_prev);
  check_planes(grad_z, "grad_z", C, z_prev);
  check_planes(acts, "acts", 2 * C, z_prev);
  const int64_t B = z_prev.size(0), H = z_prev.size(2), W = z_prev.size(3), HW = H * W;
  auto grad_pu = new_output({B, 2 * C, H, W}, z_prev.options());
  auto grad_z_prev = new_output({B, C, H, W}, z_prev.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "ghu_gates_backward", [&] {
    using T = scalar_t;
    auto DZ = planes<T>(grad_z), A = planes<T>(acts), ZP = planes<T>(z_prev);
    auto DPU = planes<T>(grad_pu), DZP = planes<T>(grad_z_prev);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict dz = DZ.at(b, ch);
      const T* __restrict ap = A.at(b, ch);
      const T* __restrict au = A.at(b, C + ch);
      const T* __restrict prev = ZP.at(b, ch);
      T* __restrict dp = DPU.at(b, ch);
      T* __restrict du = DPU.at(b, C + ch);
      T* __restrict dprev = DZP.at(b, ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V g = load<V>(dz + k), p = load<V>(ap + k), u = load<V>(au + k);
        store(dp + k, g * u * (1 - p * p));
        store(du + k, g * (p - load<V>(prev + k)) * u * (1 - u));
        store(dprev + k, g * (1 - u));
      });
    });
  });
  return {grad_pu, grad_z_prev};
}

}  // namespace fastcells
