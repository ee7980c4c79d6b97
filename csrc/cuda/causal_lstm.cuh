// Gate stages of PredRNN++'s causal LSTM (CELLS.md section 6); the contract is the CPU
// kernels' (csrc/causal_lstm_gates.cpp):
//
//   stage 1  zx: 7C (i, f, g, i', f', g', o), zh: 4C (i, f, g, o), zc: 3C (i, f, g),
//            zm: 3C (i', f', m_m)
//     c = s(f_x + f_h + f_c + fb) c_prev + s(i_x + i_h + i_c) tanh(g_x + g_h + g_c)
//     o_partial = o_x + o_h,  zp = [i'_x + i_m; f'_x + f_m; g'_x; m_m]
//   stage 2  zc2m: 4C in OpenSTL's order (i', g', f', o)
//     m = s(zp_f + f'_c + fb) tanh(m_m) + s(zp_i + i'_c) tanh(zp_g + g'_c)
//     cm = [c; m],  o_sum = o_partial + o_c
//   stage 3  h = tanh(o_sum + zo) * tanh(zl)
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

template <typename T>
struct CausalCForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zx, zh, zc, zm, c_prev;
  Planes<T> c, o_partial, zp, acts;
  Acc forget_bias = 0;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    // sums in OpenSTL's order: ((x + h) + c) + forget bias
    auto sum3 = [&](int64_t g) {
      return load(zx, b, g * C + ch, p) + load(zh, b, g * C + ch, p) + load(zc, b, g * C + ch, p);
    };
    // The pass-through sums first: values held across the (float64) exp/tanh calls spill.
    store(o_partial, b, ch, p, load(zx, b, 6 * C + ch, p) + load(zh, b, 3 * C + ch, p));
    store(zp, b, ch, p, load(zx, b, 3 * C + ch, p) + load(zm, b, ch, p));
    store(zp, b, C + ch, p, load(zx, b, 4 * C + ch, p) + load(zm, b, C + ch, p));
    store(zp, b, 2 * C + ch, p, load(zx, b, 5 * C + ch, p));
    store(zp, b, 3 * C + ch, p, load(zm, b, 2 * C + ch, p));
    // memory_update's arithmetic, one gate at a time (fewer values held across the calls)
    const Acc i = sigmoid(sum3(0));
    const Acc f = sigmoid(sum3(1) + forget_bias);
    const Acc g = tanh_act(sum3(2));
    store(c, b, ch, p, f * load(c_prev, b, ch, p) + i * g);
    store(acts, b, ch, p, i);
    store(acts, b, C + ch, p, f);
    store(acts, b, 2 * C + ch, p, g);
  }
};

template <typename T>
struct CausalCBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_c, grad_o_partial, grad_zp, acts, c_prev;
  Planes<T> grad_zx, grad_zh, grad_zc, grad_zm, grad_c_prev;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const MemoryGrads<Acc> d = memory_update_grads(
        load(grad_c, b, ch, p), load(acts, b, ch, p), load(acts, b, C + ch, p),
        load(acts, b, 2 * C + ch, p), load(c_prev, b, ch, p));
    // Every summand of a pre-activation gets its gradient.
    const Acc gates[3] = {d.zi, d.zf, d.zg};
    for (int j = 0; j < 3; ++j) {
      store(grad_zx, b, j * C + ch, p, gates[j]);
      store(grad_zh, b, j * C + ch, p, gates[j]);
      store(grad_zc, b, j * C + ch, p, gates[j]);
    }
    const Acc d_o = load(grad_o_partial, b, ch, p);
    store(grad_zx, b, 6 * C + ch, p, d_o);
    store(grad_zh, b, 3 * C + ch, p, d_o);
    const Acc dpi = load(grad_zp, b, ch, p), dpf = load(grad_zp, b, C + ch, p);
    store(grad_zx, b, 3 * C + ch, p, dpi);
    store(grad_zx, b, 4 * C + ch, p, dpf);
    store(grad_zx, b, 5 * C + ch, p, load(grad_zp, b, 2 * C + ch, p));
    store(grad_zm, b, ch, p, dpi);
    store(grad_zm, b, C + ch, p, dpf);
    store(grad_zm, b, 2 * C + ch, p, load(grad_zp, b, 3 * C + ch, p));
    store(grad_c_prev, b, ch, p, d.c_prev);
  }
};

template <typename T>
struct CausalMForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zp, zc2m, c, o_partial;
  Planes<T> cm, o_sum, acts;
  Acc forget_bias = 0;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    // The copies first: values held across the (float64) exp/tanh calls spill.
    store(cm, b, ch, p, load(c, b, ch, p));
    store(o_sum, b, ch, p, load(o_partial, b, ch, p) + load(zc2m, b, 3 * C + ch, p));
    const Acc tm = tanh_act(load(zp, b, 3 * C + ch, p));
    // m = f' tanh(m_m) + i' g': the LSTM update with tanh(m_m) as the old memory;
    // conv_c2m's channels are i', g', f', o
    const MemoryUpdate<Acc> u = memory_update(
        load(zp, b, ch, p) + load(zc2m, b, ch, p),
        load(zp, b, C + ch, p) + load(zc2m, b, 2 * C + ch, p) + forget_bias,
        load(zp, b, 2 * C + ch, p) + load(zc2m, b, C + ch, p), tm);
    store(cm, b, C + ch, p, u.c);
    store(acts, b, ch, p, u.i);
    store(acts, b, C + ch, p, u.f);
    store(acts, b, 2 * C + ch, p, u.g);
    store(acts, b, 3 * C + ch, p, tm);
  }
};

template <typename T>
struct CausalMBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_m, grad_o_sum, acts;
  Planes<T> grad_zp, grad_zc2m;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const Acc tm = load(acts, b, 3 * C + ch, p);
    const MemoryGrads<Acc> d =
        memory_update_grads(load(grad_m, b, ch, p), load(acts, b, ch, p),
                            load(acts, b, C + ch, p), load(acts, b, 2 * C + ch, p), tm);
    store(grad_zp, b, ch, p, d.zi);
    store(grad_zp, b, C + ch, p, d.zf);
    store(grad_zp, b, 2 * C + ch, p, d.zg);
    store(grad_zp, b, 3 * C + ch, p, d.c_prev * (Acc(1) - tm * tm));  // through tanh(m_m)
    store(grad_zc2m, b, ch, p, d.zi);
    store(grad_zc2m, b, C + ch, p, d.zg);
    store(grad_zc2m, b, 2 * C + ch, p, d.zf);
    store(grad_zc2m, b, 3 * C + ch, p, load(grad_o_sum, b, ch, p));
  }
};

template <typename T>
struct CausalOutputForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> o_sum, zo, zl;
  Planes<T> h, acts;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const Acc o = tanh_act(load(o_sum, b, ch, p) + load(zo, b, ch, p));  // tanh, not sigmoid
    const Acc t = tanh_act(load(zl, b, ch, p));
    store(h, b, ch, p, o * t);
    store(acts, b, ch, p, o);
    store(acts, b, idx.channels + ch, p, t);
  }
};

template <typename T>
struct CausalOutputBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_h, acts;
  Planes<T> grad_o, grad_l;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const Acc g = load(grad_h, b, ch, p), o = load(acts, b, ch, p);
    const Acc t = load(acts, b, idx.channels + ch, p);
    store(grad_o, b, ch, p, g * t * (Acc(1) - o * o));
    store(grad_l, b, ch, p, g * o * (Acc(1) - t * t));
  }
};

}  // namespace cuda
}  // namespace fastcells
