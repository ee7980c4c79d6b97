// MIM's gates (CELLS.md section 7, OpenSTL `mim_modules.py`); the contract is the CPU
// kernels' (csrc/mim_gates.cpp):
//
// Stationarity module (`MIMN`, and `MIMS` inside `MIMBlock`). zh, zx: 4C each (i, g, f, o),
// zx optional; per-pixel peepholes ct = [ct_i; ct_f] (2C, H, W) and oc (C, H, W), contiguous:
//   i = s(zi + ct_i c_prev)   f = s(zf + ct_f c_prev + 1)   g = tanh(zg)
//   c = f c_prev + i g        h = s(zo + oc c) tanh(c)
// Block gates (`MIMBlock`). zx: 4C (i, g, f, o), zt: 3C (i, g, o), zs: 4C (i, g, f, o):
//   m = s(f_x + f_s + 1) m_prev + s(i_x + i_s) tanh(g_x + g_s)
//   c = n_h + s(i_x + i_t) tanh(g_x + g_t),   o_partial = o_x + o_t
#pragma once

#include "gate_math.cuh"

namespace fastcells {
namespace cuda {

constexpr float kMIMForgetBias = 1.0f;  // OpenSTL's _forget_bias

// Element (c, p) of a contiguous (channels, H*W) per-pixel weight.
template <typename A, typename T>
FC_HD inline A pixel(const T* w, int64_t plane, int64_t c, int64_t p) {
  return static_cast<A>(w[c * plane + p]);
}

template <typename T>
struct MIMSForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zh, zx, c_prev;  // zx.data == nullptr: no input terms
  Planes<T> h, c, acts;
  const T* ct;  // (2C, H, W)
  const T* oc;  // (C, H, W)

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels, P = idx.plane;
    auto z = [&](int64_t j) {
      Acc v = load(zh, b, j * C + ch, p);
      if (zx.data != nullptr) v += load(zx, b, j * C + ch, p);
      return v;
    };
    const Acc c0 = load(c_prev, b, ch, p);
    const MemoryUpdate<Acc> u =
        memory_update(z(0) + pixel<Acc>(ct, P, ch, p) * c0,
                      z(2) + pixel<Acc>(ct, P, C + ch, p) * c0 + Acc(kMIMForgetBias), z(1), c0);
    const OutputGate<Acc> o = output_gate(z(3) + pixel<Acc>(oc, P, ch, p) * u.c, u.c);
    store(c, b, ch, p, u.c);
    store(h, b, ch, p, o.h);
    store(acts, b, ch, p, u.i);
    store(acts, b, C + ch, p, u.g);
    store(acts, b, 2 * C + ch, p, u.f);
    store(acts, b, 3 * C + ch, p, o.o);
  }
};

template <typename T>
struct MIMSBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_h, grad_c, acts, c_prev, c;
  Planes<T> grad_z, grad_c_prev;
  const T* ct;
  const T* oc;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels, P = idx.plane;
    const Acc c0 = load(c_prev, b, ch, p), c1 = load(c, b, ch, p);
    const OutputGrads<Acc> dout =
        output_gate_grads(load(grad_h, b, ch, p), load(acts, b, 3 * C + ch, p), tanh_act(c1));
    // c reaches the loss through grad_c, through tanh(c) in h and through oc * c in o
    const Acc dc = load(grad_c, b, ch, p) + dout.x + dout.zo * pixel<Acc>(oc, P, ch, p);
    const MemoryGrads<Acc> d =
        memory_update_grads(dc, load(acts, b, ch, p), load(acts, b, 2 * C + ch, p),
                            load(acts, b, C + ch, p), c0);
    store(grad_z, b, ch, p, d.zi);
    store(grad_z, b, C + ch, p, d.zg);
    store(grad_z, b, 2 * C + ch, p, d.zf);
    store(grad_z, b, 3 * C + ch, p, dout.zo);
    store(grad_c_prev, b, ch, p,
          d.c_prev + d.zi * pixel<Acc>(ct, P, ch, p) + d.zf * pixel<Acc>(ct, P, C + ch, p));
  }
};

template <typename T>
struct MIMBlockForward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> zx, zt, zs, m_prev, n_h;
  Planes<T> cm, o_partial, acts;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    const Acc x_i = load(zx, b, ch, p), x_g = load(zx, b, C + ch, p);
    const MemoryUpdate<Acc> u = memory_update(
        x_i + load(zs, b, ch, p),
        load(zx, b, 2 * C + ch, p) + load(zs, b, 2 * C + ch, p) + Acc(kMIMForgetBias),
        x_g + load(zs, b, C + ch, p), load(m_prev, b, ch, p));
    const Acc i = sigmoid(x_i + load(zt, b, ch, p));
    const Acc g = tanh_act(x_g + load(zt, b, C + ch, p));
    store(cm, b, ch, p, load(n_h, b, ch, p) + i * g);
    store(cm, b, C + ch, p, u.c);
    store(o_partial, b, ch, p, load(zx, b, 3 * C + ch, p) + load(zt, b, 2 * C + ch, p));
    store(acts, b, ch, p, i);
    store(acts, b, C + ch, p, g);
    store(acts, b, 2 * C + ch, p, u.i);
    store(acts, b, 3 * C + ch, p, u.f);
    store(acts, b, 4 * C + ch, p, u.g);
  }
};

template <typename T>
struct MIMBlockBackward {
  using Acc = acc_t<T>;
  ElementIndex idx;
  Planes<const T> grad_cm, grad_o_partial, acts, m_prev;
  Planes<T> grad_zx, grad_zt, grad_zs, grad_m_prev;

  FC_HD void operator()(int64_t n) const {
    int64_t b, ch, p;
    idx.decompose(n, b, ch, p);
    const int64_t C = idx.channels;
    // c = n_h + i g: the memory update with f = 0 and no previous memory
    const MemoryGrads<Acc> d = memory_update_grads(load(grad_cm, b, ch, p), load(acts, b, ch, p),
                                                   Acc(0), load(acts, b, C + ch, p), Acc(0));
    const MemoryGrads<Acc> e = memory_update_grads(
        load(grad_cm, b, C + ch, p), load(acts, b, 2 * C + ch, p), load(acts, b, 3 * C + ch, p),
        load(acts, b, 4 * C + ch, p), load(m_prev, b, ch, p));
    const Acc d_o = load(grad_o_partial, b, ch, p);
    // i_x and g_x feed both memories; f_x only m; zt only c; zs only m (o_s: the output gate)
    store(grad_zx, b, ch, p, d.zi + e.zi);
    store(grad_zx, b, C + ch, p, d.zg + e.zg);
    store(grad_zx, b, 2 * C + ch, p, e.zf);
    store(grad_zx, b, 3 * C + ch, p, d_o);
    store(grad_zt, b, ch, p, d.zi);
    store(grad_zt, b, C + ch, p, d.zg);
    store(grad_zt, b, 2 * C + ch, p, d_o);
    store(grad_zs, b, ch, p, e.zi);
    store(grad_zs, b, C + ch, p, e.zg);
    store(grad_zs, b, 2 * C + ch, p, e.zf);
    store(grad_zs, b, 3 * C + ch, p, Acc(0));
    store(grad_m_prev, b, ch, p, e.c_prev);
  }
};

}  // namespace cuda
}  // namespace fastcells
