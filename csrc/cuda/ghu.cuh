// Gates of PredRNN++'s gradient highway unit (CELLS.md section 6), contract of
// csrc/ghu_gates.cpp:
//     p, u = split(zx + zz),   z = s(u) tanh(p) + (1 - s(u)) z_prev
// The forward saves (tanh(p), s(u)); the backward writes one (B, 2C) gradient that serves
// both zx and zz (they are summed before the nonlinearities).
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

template <typename T>
struct GHUForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zx, zz, z_prev;
  Planes<T> z, acts;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const Acc tp = tanh_act(load(zx, b, ch, p) + load(zz, b, ch, p));
    const Acc u = sigmoid(load(zx, b, C + ch, p) + load(zz, b, C + ch, p));
    store(z, b, ch, p, u * tp + (Acc(1) - u) * load(z_prev, b, ch, p));
    store(acts, b, ch, p, tp);
    store(acts, b, C + ch, p, u);
  }
};

template <typename T>
struct GHUBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_z, acts, z_prev;
  Planes<T> grad_pu, grad_z_prev;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const Acc g = load(grad_z, b, ch, p), tp = load(acts, b, ch, p);
    const Acc u = load(acts, b, C + ch, p);
    store(grad_pu, b, ch, p, g * u * (Acc(1) - tp * tp));
    store(grad_pu, b, C + ch, p, g * (tp - load(z_prev, b, ch, p)) * u * (Acc(1) - u));
    store(grad_z_prev, b, ch, p, g * (Acc(1) - u));
  }
};

}  // namespace cuda
}  // namespace fastcells
