// First stage of the two cells with two memories beside one hidden state; the contract is
// the CPU kernels' (csrc/dual_memory_gates.cpp):
//
// ST-LSTM (PredRNN, CELLS.md section 2). zx: 7C (i, f, g, i', f', g', o), zh: 4C (i, f, g, o),
// zm: 3C (i', f', g'):
//   c = s(f_x + f_h + b) c_prev + s(i_x + i_h) tanh(g_x + g_h)
//   m = s(f'_x + f_m + b) m_prev + s(i'_x + i_m) tanh(g'_x + g_m)
//   o_partial = o_x + o_h      (forget bias b: 1 for thuml/OpenSTL, 0 for MS-RNN's cells)
// MK-LSTM (MS-LSTM, CELLS.md section 3). z1, z2: 4C each (i, f, g, o), no forget bias:
//   c1 = s(f1) c1_prev + s(i1) tanh(g1), c2 likewise, o_partial = o1 + o2
//
// Both write the two memories into one (B, 2C) buffer (the [c; m] input of the next
// convolutions) and save the six activations (i, f, g, i', f', g') for backward.
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

template <typename T>
struct STLSTMForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zx, zh, zm, c_prev, m_prev;
  Planes<T> cm, o_partial, acts;
  Planes<T> deltas;  // (i*g, i'*g') for PredRNN-v2; data == nullptr when not requested
  Acc forget_bias;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    auto sum_x = [&](const Planes<const T>& other, int64_t gx, int64_t go) {
      return load(zx, b, gx * C + ch, p) + load(other, b, go * C + ch, p);
    };
    const MemoryUpdate<Acc> u = memory_update(sum_x(zh, 0, 0), sum_x(zh, 1, 1) + forget_bias,
                                              sum_x(zh, 2, 2), load(c_prev, b, ch, p));
    const MemoryUpdate<Acc> v = memory_update(sum_x(zm, 3, 0), sum_x(zm, 4, 1) + forget_bias,
                                              sum_x(zm, 5, 2), load(m_prev, b, ch, p));
    store(cm, b, ch, p, u.c);
    store(cm, b, C + ch, p, v.c);
    store(o_partial, b, ch, p, sum_x(zh, 6, 3));
    store(acts, b, ch, p, u.i);
    store(acts, b, C + ch, p, u.f);
    store(acts, b, 2 * C + ch, p, u.g);
    store(acts, b, 3 * C + ch, p, v.i);
    store(acts, b, 4 * C + ch, p, v.f);
    store(acts, b, 5 * C + ch, p, v.g);
    if (deltas.data != nullptr) {
      store(deltas, b, ch, p, u.i * u.g);
      store(deltas, b, C + ch, p, v.i * v.g);
    }
  }
};

template <typename T>
struct STLSTMBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_cm, grad_o_partial, grad_deltas, acts, c_prev, m_prev;  // grad_deltas
                                                                               // may be null
  Planes<T> grad_zx, grad_zh, grad_zm, grad_c_prev, grad_m_prev;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const bool has_deltas = grad_deltas.data != nullptr;
    const MemoryGrads<Acc> d = memory_update_grads(
        load(grad_cm, b, ch, p), load(acts, b, ch, p), load(acts, b, C + ch, p),
        load(acts, b, 2 * C + ch, p), load(c_prev, b, ch, p),
        has_deltas ? load(grad_deltas, b, ch, p) : Acc(0));
    const MemoryGrads<Acc> e = memory_update_grads(
        load(grad_cm, b, C + ch, p), load(acts, b, 3 * C + ch, p), load(acts, b, 4 * C + ch, p),
        load(acts, b, 5 * C + ch, p), load(m_prev, b, ch, p),
        has_deltas ? load(grad_deltas, b, C + ch, p) : Acc(0));
    // Each gate pre-activation is a sum of two convolutions: both get its gradient.
    const Acc gates_c[3] = {d.zi, d.zf, d.zg}, gates_m[3] = {e.zi, e.zf, e.zg};
    for (int j = 0; j < 3; ++j) {
      store(grad_zx, b, j * C + ch, p, gates_c[j]);
      store(grad_zh, b, j * C + ch, p, gates_c[j]);
      store(grad_zx, b, (3 + j) * C + ch, p, gates_m[j]);
      store(grad_zm, b, j * C + ch, p, gates_m[j]);
    }
    const Acc d_o = load(grad_o_partial, b, ch, p);
    store(grad_zx, b, 6 * C + ch, p, d_o);
    store(grad_zh, b, 3 * C + ch, p, d_o);
    store(grad_c_prev, b, ch, p, d.c_prev);
    store(grad_m_prev, b, ch, p, e.c_prev);
  }
};

template <typename T>
struct MKLSTMForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> z1, z2, c1_prev, c2_prev;
  Planes<T> cc, o_partial, acts;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const MemoryUpdate<Acc> u = memory_update(load(z1, b, ch, p), load(z1, b, C + ch, p),
                                              load(z1, b, 2 * C + ch, p), load(c1_prev, b, ch, p));
    const MemoryUpdate<Acc> v = memory_update(load(z2, b, ch, p), load(z2, b, C + ch, p),
                                              load(z2, b, 2 * C + ch, p), load(c2_prev, b, ch, p));
    store(cc, b, ch, p, u.c);
    store(cc, b, C + ch, p, v.c);
    store(o_partial, b, ch, p, load(z1, b, 3 * C + ch, p) + load(z2, b, 3 * C + ch, p));
    store(acts, b, ch, p, u.i);
    store(acts, b, C + ch, p, u.f);
    store(acts, b, 2 * C + ch, p, u.g);
    store(acts, b, 3 * C + ch, p, v.i);
    store(acts, b, 4 * C + ch, p, v.f);
    store(acts, b, 5 * C + ch, p, v.g);
  }
};

template <typename T>
struct MKLSTMBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_cc, grad_o_partial, acts, c1_prev, c2_prev;
  Planes<T> grad_z1, grad_z2, grad_c1_prev, grad_c2_prev;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const MemoryGrads<Acc> d = memory_update_grads(
        load(grad_cc, b, ch, p), load(acts, b, ch, p), load(acts, b, C + ch, p),
        load(acts, b, 2 * C + ch, p), load(c1_prev, b, ch, p));
    const MemoryGrads<Acc> e = memory_update_grads(
        load(grad_cc, b, C + ch, p), load(acts, b, 3 * C + ch, p), load(acts, b, 4 * C + ch, p),
        load(acts, b, 5 * C + ch, p), load(c2_prev, b, ch, p));
    const Acc d_o = load(grad_o_partial, b, ch, p);
    store(grad_z1, b, ch, p, d.zi);
    store(grad_z1, b, C + ch, p, d.zf);
    store(grad_z1, b, 2 * C + ch, p, d.zg);
    store(grad_z1, b, 3 * C + ch, p, d_o);
    store(grad_z2, b, ch, p, e.zi);
    store(grad_z2, b, C + ch, p, e.zf);
    store(grad_z2, b, 2 * C + ch, p, e.zg);
    store(grad_z2, b, 3 * C + ch, p, d_o);
    store(grad_c1_prev, b, ch, p, d.c_prev);
    store(grad_c2_prev, b, ch, p, e.c_prev);
  }
};

}  // namespace cuda
}  // namespace fastcells
