// ConvLSTM gates (CELLS.md sections 1 and 4), one element = one (b, c, p) of the hidden state:
//
//   z = [zi; zf; zo; zg] (B, 4C, H, W), gate order i, f, o, g
//   c = sigmoid(zf + forget_bias + wcf*c_prev) * c_prev + sigmoid(zi + wci*c_prev) * tanh(zg)
//   h = sigmoid(zo + wco*c) * tanh(c)
//
// Same contract as the CPU kernels (csrc/convlstm_gates.cpp): the forward writes h, c and the
// activations (i, f, o, g) that autograd keeps instead of z; the backward reads them with
// c_prev and c, and writes grad_z and grad_c_prev (and the peephole products it reduces).
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

template <typename A>
struct Peephole {
  A ci = 0, cf = 0, co = 0;
};

// Per-channel weights (w_ci, w_cf, w_co) of a contiguous (3, C) tensor; zeros when absent.
template <typename A, typename T>
FC_HD inline Peephole<A> peephole_at(const T* w, int64_t channels, int64_t c) {
  Peephole<A> p;
  if (w != nullptr) {
    p.ci = static_cast<A>(w[c]);
    p.cf = static_cast<A>(w[channels + c]);
    p.co = static_cast<A>(w[2 * channels + c]);
  }
  return p;
}

template <typename T>
struct ConvLSTMForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> z, c_prev;
  Planes<T> h, c, acts;
  const T* peephole;  // (3, C) or nullptr
  Acc forget_bias;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const Peephole<Acc> w = peephole_at<Acc>(peephole, C, ch);
    const Acc c0 = load(c_prev, b, ch, p);
    const MemoryUpdate<Acc> u =
        memory_update(load(z, b, ch, p) + w.ci * c0,
                      load(z, b, C + ch, p) + forget_bias + w.cf * c0, load(z, b, 3 * C + ch, p), c0);
    const OutputGate<Acc> o = output_gate(load(z, b, 2 * C + ch, p) + w.co * u.c, u.c);
    store(c, b, ch, p, u.c);
    store(h, b, ch, p, o.h);
    store(acts, b, ch, p, u.i);
    store(acts, b, C + ch, p, u.f);
    store(acts, b, 2 * C + ch, p, o.o);
    store(acts, b, 3 * C + ch, p, u.g);
  }
};

template <typename T>
struct ConvLSTMBackward {
  using Acc = acc_t<T>;
  static constexpr int kSums = 3;  // peephole grads: d w_ci, d w_cf, d w_co
  ElementIndex idx;
  Planes<const T> grad_h, grad_c, acts, c_prev, c;
  Planes<T> grad_z, grad_c_prev;
  const T* peephole;  // (3, C) or nullptr

  // Writes the element's gradients; returns its terms of the peephole weight gradients
  // (dzi * c_prev, dzf * c_prev, dzo * c), which the reduction kernel sums per channel.
  FC_HD Sums<Acc, kSums> element(int64_t b, int64_t ch, int64_t p) const {
    const int64_t C = idx.channels;
    const Peephole<Acc> w = peephole_at<Acc>(peephole, C, ch);
    const Acc c0 = load(c_prev, b, ch, p), c1 = load(c, b, ch, p);
    const OutputGrads<Acc> dout =
        output_gate_grads(load(grad_h, b, ch, p), load(acts, b, 2 * C + ch, p), tanh_act(c1));
    // c reaches the loss through grad_c, through tanh(c) in h, and through the o peephole.
    const Acc dc = load(grad_c, b, ch, p) + dout.x + dout.zo * w.co;
    const MemoryGrads<Acc> d = memory_update_grads(dc, load(acts, b, ch, p),
                                                      load(acts, b, C + ch, p),
                                                      load(acts, b, 3 * C + ch, p), c0);
    store(grad_z, b, ch, p, d.zi);
    store(grad_z, b, C + ch, p, d.zf);
    store(grad_z, b, 2 * C + ch, p, dout.zo);
    store(grad_z, b, 3 * C + ch, p, d.zg);
    store(grad_c_prev, b, ch, p, d.c_prev + d.zi * w.ci + d.zf * w.cf);
    return Sums<Acc, kSums>{{d.zi * c0, d.zf * c0, dout.zo * c1}};
  }

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    element(b, ch, p);
  }
};

}  // namespace cuda
}  // namespace fastcells
