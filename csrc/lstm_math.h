// The LSTM memory update, forward and backward, shared by all four cells' CPU kernels:
//     c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)
// The backward works from the saved activations (i, f, g after their nonlinearity).
// V is a lane type of simd.h.
#pragma once

#include "activations.h"

namespace fastcells {

template <typename V>
struct MemoryUpdate {
  V i, f, g, c;
};

template <typename V>
static inline MemoryUpdate<V> memory_update(V zi, V zf, V zg, V c_prev) {
  MemoryUpdate<V> u;
  u.i = sigmoid(zi);
  u.f = sigmoid(zf);
  u.g = tanh_act(zg);
  u.c = u.f * c_prev + u.i * u.g;
  return u;
}

template <typename V>
struct MemoryGrads {
  V zi, zf, zg, c_prev;
};

// dc: gradient reaching the new memory; i, f, g: activations; returns pre-activation grads.
template <typename V>
static inline MemoryGrads<V> memory_update_backward(V dc, V i, V f, V g, V c_prev) {
  MemoryGrads<V> d;
  d.zi = dc * g * i * (1 - i);
  d.zf = dc * c_prev * f * (1 - f);
  d.zg = dc * i * (1 - g * g);
  d.c_prev = dc * f;
  return d;
}

}  // namespace fastcells
