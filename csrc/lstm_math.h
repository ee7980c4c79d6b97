// The LSTM memory update, forward and backward, shared by all four cells' CPU kernels:
//     c = sigmoid(f) * c_prev + sigmoid(i) * tanh(g)
// The backward works from the saved activations (i, f, g after their nonlinearity).
#pragma once

#include "activations.h"

namespace fastcells {

template <typename T>
struct MemoryUpdate {
  T i, f, g, c;
};

template <typename T>
static inline MemoryUpdate<T> memory_update(T zi, T zf, T zg, T c_prev) {
  MemoryUpdate<T> u;
  u.i = sigmoid(zi);
  u.f = sigmoid(zf);
  u.g = tanh_act(zg);
  u.c = u.f * c_prev + u.i * u.g;
  return u;
}

template <typename T>
struct MemoryGrads {
  T zi, zf, zg, c_prev;
};

// dc: gradient reaching the new memory; i, f, g: activations; returns pre-activation grads.
template <typename T>
static inline MemoryGrads<T> memory_update_backward(T dc, T i, T f, T g, T c_prev) {
  MemoryGrads<T> d;
  d.zi = dc * g * i * (T(1) - i);
  d.zf = dc * c_prev * f * (T(1) - f);
  d.zg = dc * i * (T(1) - g * g);
  d.c_prev = dc * f;
  return d;
}

}  // namespace fastcells
