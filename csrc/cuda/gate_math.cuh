// The gate equations of CELLS.md, once, for every CUDA kernel (and their host emulation).
// A is the math type: float (also for half and bfloat16 storage) or double.
//
// Accuracy: expf/tanhf are CUDA's full-precision functions (a few ulp), not the fast-math
// intrinsics. The kernels are bound by memory bandwidth, so the exact versions cost nothing
// measurable, and they keep float32 well inside the contract's 1e-5 relative error.
#pragma once

#include "common.cuh"

namespace fastcells {
namespace cuda {

FC_HD inline float sigmoid(float x) { return 1.0f / (1.0f + ::expf(-x)); }
FC_HD inline double sigmoid(double x) { return 1.0 / (1.0 + ::exp(-x)); }
FC_HD inline float tanh_act(float x) { return ::tanhf(x); }
FC_HD inline double tanh_act(double x) { return ::tanh(x); }

// The LSTM memory update of every cell: c = sigmoid(zi) * tanh(zg) + sigmoid(zf) * c_prev.
template <typename A>
struct MemoryUpdate {
  A i, f, g, c;  // activations and the new memory
};

template <typename A>
FC_HD inline MemoryUpdate<A> memory_update(A zi, A zf, A zg, A c_prev) {
  MemoryUpdate<A> u;
  u.i = sigmoid(zi);
  u.f = sigmoid(zf);
  u.g = tanh_act(zg);
  u.c = u.f * c_prev + u.i * u.g;
  return u;
}

template <typename A>
struct MemoryGrads {
  A zi, zf, zg, c_prev;  // pre-activation grads and the grad of the previous memory
};

// Backward from the saved activations. dc reaches the new memory; d_ig reaches the product
// i * g alone (PredRNN-v2's memory delta, which the ST-LSTM cell can return), zero otherwise.
template <typename A>
FC_HD inline MemoryGrads<A> memory_update_grads(A dc, A i, A f, A g, A c_prev, A d_ig = A(0)) {
  MemoryGrads<A> d;
  const A dig = dc + d_ig;
  d.zi = dig * g * i * (A(1) - i);
  d.zf = dc * c_prev * f * (A(1) - f);
  d.zg = dig * i * (A(1) - g * g);
  d.c_prev = dc * f;
  return d;
}

// The output gate of every cell: h = sigmoid(zo) * tanh(x), where x is the new memory
// (ConvLSTM) or the 1x1 output convolution (ST-LSTM, MK-LSTM).
template <typename A>
struct OutputGate {
  A o, t, h;  // sigmoid(zo), tanh(x), h
};

template <typename A>
FC_HD inline OutputGate<A> output_gate(A zo, A x) {
  OutputGate<A> r;
  r.o = sigmoid(zo);
  r.t = tanh_act(x);
  r.h = r.o * r.t;
  return r;
}

template <typename A>
struct OutputGrads {
  A zo, x;
};

// Backward from the activations o = sigmoid(zo) and t = tanh(x).
template <typename A>
FC_HD inline OutputGrads<A> output_gate_grads(A dh, A o, A t) {
  OutputGrads<A> d;
  d.zo = dh * t * o * (A(1) - o);
  d.x = dh * o * (A(1) - t * t);
  return d;
}

}  // namespace cuda
}  // namespace fastcells
