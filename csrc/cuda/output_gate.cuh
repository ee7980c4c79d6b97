// Output gate of ST-LSTM and MK-LSTM (CELLS.md sections 2 and 3), contract of
// csrc/output_gate.cpp:  h = sigmoid(o_partial + zo) * tanh(zl).
// The forward saves (o, tanh(zl)) as a (B, 2C) buffer; the backward is multiply-adds. The
// gradients of o_partial and zo are equal, so the backward returns one tensor for both.
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

template <typename T>
struct OutputGateForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> o_partial, zo, zl;
  Planes<T> h, acts;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const OutputGate<Acc> r =
        output_gate(load(o_partial, b, ch, p) + load(zo, b, ch, p), load(zl, b, ch, p));
    store(h, b, ch, p, r.h);
    store(acts, b, ch, p, r.o);
    store(acts, b, idx.channels + ch, p, r.t);
  }
};

template <typename T>
struct OutputGateBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_h, acts;
  Planes<T> grad_o, grad_l;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const OutputGrads<Acc> d = output_gate_grads(
        load(grad_h, b, ch, p), load(acts, b, ch, p), load(acts, b, idx.channels + ch, p));
    store(grad_o, b, ch, p, d.zo);
    store(grad_l, b, ch, p, d.x);
  }
};

}  // namespace cuda
}  // namespace fastcells
