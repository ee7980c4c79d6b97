// Fused gate stages of PredRNN++'s causal LSTM (CELLS.md section 6, OpenSTL
// `CausalLSTMCell`). A step has two convolutions inside it (conv_c2m reads c_t, conv_om reads
// m_t), so its gate math is three kernels with those convolutions between them:
//
//   stage 1 (causal_c)  zx: 7C (i, f, g, i', f', g', o), zh: 4C (i, f, g, o),
//                       zc: 3C (i, f, g), zm: 3C (i', f', m_m)
//     c  = s(f_x + f_h + f_c + fb) c_prev + s(i_x + i_h + i_c) tanh(g_x + g_h + g_c)
//     o_partial = o_x + o_h
//     zp = [i'_x + i_m; f'_x + f_m; g'_x; m_m]     (4C, the part of stage 2's sums known now)
//   stage 2 (causal_m)  zc2m = conv_c2m(c): 4C in OpenSTL's order (i'_c, g'_c, f'_c, o_c)
//     m  = s(zp_f + f'_c + fb) tanh(m_m) + s(zp_i + i'_c) tanh(zp_g + g'_c)
//     cm = [c; m]                                   (the input of conv_last, no concat)
//     o_sum = o_partial + o_c
//   stage 3 (causal_output)  h = tanh(o_sum + zo) * tanh(zl),  zo = conv_om(m), zl = conv_last(cm)
//
// zx and zm feed both memory updates. Stage 1 hands their stage-2 terms on as partial sums
// (zp), so each tensor is the input of exactly one op and every gradient is written once by
// one backward kernel (no zero-filled halves that autograd would have to add up).
// Sums are formed in OpenSTL's order ((a + b) + c) + fb, so float64 results agree to rounding.
#include "gates.h"
#include "lstm_math.h"
#include "planes.h"
#include "simd.h"

namespace fastcells {

namespace {

template <typename T>
void copy_plane(const T* src, T* dst, int64_t hw) {
  std::memcpy(dst, src, hw * sizeof(T));
}

}  // namespace

std::vector<at::Tensor> causal_c_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                               const at::Tensor& zc, const at::Tensor& zm,
                                               const at::Tensor& c_prev, double forget_bias) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(zx, "zx", 7 * C, c_prev);
  check_planes(zh, "zh", 4 * C, c_prev);
  check_planes(zc, "zc", 3 * C, c_prev);
  check_planes(zm, "zm", 3 * C, c_prev);
  const int64_t B = c_prev.size(0), H = c_prev.size(2), W = c_prev.size(3), HW = H * W;
  auto c = new_output({B, C, H, W}, c_prev.options());
  auto o_partial = new_output({B, C, H, W}, c_prev.options());
  auto zp = new_output({B, 4 * C, H, W}, c_prev.options());
  auto acts = new_output({B, 3 * C, H, W}, c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(zx.scalar_type(), "causal_c_gates_forward", [&] {
    using T = scalar_t;
    const T fb = static_cast<T>(forget_bias);
    auto X = planes<T>(zx), Hh = planes<T>(zh), Zc = planes<T>(zc), M = planes<T>(zm);
    auto CP = planes<T>(c_prev), Cn = planes<T>(c), OP = planes<T>(o_partial);
    auto P = planes<T>(zp), A = planes<T>(acts);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict xi = X.at(b, ch);
      const T* __restrict xf = X.at(b, C + ch);
      const T* __restrict xg = X.at(b, 2 * C + ch);
      const T* __restrict xi2 = X.at(b, 3 * C + ch);
      const T* __restrict xf2 = X.at(b, 4 * C + ch);
      const T* __restrict xo = X.at(b, 6 * C + ch);
      const T* __restrict hi = Hh.at(b, ch);
      const T* __restrict hf = Hh.at(b, C + ch);
      const T* __restrict hg = Hh.at(b, 2 * C + ch);
      const T* __restrict ho = Hh.at(b, 3 * C + ch);
      const T* __restrict ci = Zc.at(b, ch);
      const T* __restrict cf = Zc.at(b, C + ch);
      const T* __restrict cg = Zc.at(b, 2 * C + ch);
      const T* __restrict mi = M.at(b, ch);
      const T* __restrict mf = M.at(b, C + ch);
      const T* __restrict cp = CP.at(b, ch);
      T* __restrict cn = Cn.at(b, ch);
      T* __restrict op = OP.at(b, ch);
      T* __restrict pi = P.at(b, ch);
      T* __restrict pf = P.at(b, C + ch);
      T* __restrict ai = A.at(b, ch);
      T* __restrict af = A.at(b, C + ch);
      T* __restrict ag = A.at(b, 2 * C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const auto u = memory_update<V>(load<V>(xi + k) + load<V>(hi + k) + load<V>(ci + k),
                                        load<V>(xf + k) + load<V>(hf + k) + load<V>(cf + k) + fb,
                                        load<V>(xg + k) + load<V>(hg + k) + load<V>(cg + k),
                                        load<V>(cp + k));
        store(cn + k, u.c);
        store(ai + k, u.i);
        store(af + k, u.f);
        store(ag + k, u.g);
        store(op + k, load<V>(xo + k) + load<V>(ho + k));
        store(pi + k, load<V>(xi2 + k) + load<V>(mi + k));
        store(pf + k, load<V>(xf2 + k) + load<V>(mf + k));
      });
      // g'_x and m_m have no stage-1 partner: stage 2 adds g'_c to the first and takes the
      // tanh of the second.
      copy_plane<T>(X.at(b, 5 * C + ch), P.at(b, 2 * C + ch), HW);
      copy_plane<T>(M.at(b, 2 * C + ch), P.at(b, 3 * C + ch), HW);
    });
  });
  return {c, o_partial, zp, acts};
}

std::vector<at::Tensor> causal_c_gates_backward(const at::Tensor& grad_c,
                                                const at::Tensor& grad_o_partial,
                                                const at::Tensor& grad_zp, const at::Tensor& acts,
                                                const at::Tensor& c_prev) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(acts, "acts", 3 * C, c_prev);
  check_planes(grad_c, "grad_c", C, c_prev);
  check_planes(grad_o_partial, "grad_o_partial", C, c_prev);
  check_planes(grad_zp, "grad_zp", 4 * C, c_prev);
  const int64_t B = c_prev.size(0), H = c_prev.size(2), W = c_prev.size(3), HW = H * W;
  auto grad_zx = new_output({B, 7 * C, H, W}, c_prev.options());
  auto grad_zh = new_output({B, 4 * C, H, W}, c_prev.options());
  auto grad_zc = new_output({B, 3 * C, H, W}, c_prev.options());
  auto grad_zm = new_output({B, 3 * C, H, W}, c_prev.options());
  auto grad_c_prev = new_output({B, C, H, W}, c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "causal_c_gates_backward", [&] {
    using T = scalar_t;
    auto A = planes<T>(acts), CP = planes<T>(c_prev), DC = planes<T>(grad_c);
    auto DOP = planes<T>(grad_o_partial), DP = planes<T>(grad_zp);
    auto DX = planes<T>(grad_zx), DH = planes<T>(grad_zh), DZc = planes<T>(grad_zc);
    auto DM = planes<T>(grad_zm), DCP = planes<T>(grad_c_prev);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict dc = DC.at(b, ch);
      const T* __restrict ai = A.at(b, ch);
      const T* __restrict af = A.at(b, C + ch);
      const T* __restrict ag = A.at(b, 2 * C + ch);
      const T* __restrict cp = CP.at(b, ch);
      T* __restrict dxi = DX.at(b, ch);
      T* __restrict dxf = DX.at(b, C + ch);
      T* __restrict dxg = DX.at(b, 2 * C + ch);
      T* __restrict dcp = DCP.at(b, ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const auto d = memory_update_backward<V>(load<V>(dc + k), load<V>(ai + k),
                                                 load<V>(af + k), load<V>(ag + k),
                                                 load<V>(cp + k));
        store(dxi + k, d.zi);
        store(dxf + k, d.zf);
        store(dxg + k, d.zg);
        store(dcp + k, d.c_prev);
      });
      // Each gate pre-activation is a sum of convolutions: every summand gets its gradient.
      for (int j = 0; j < 3; ++j) {
        copy_plane<T>(DX.at(b, j * C + ch), DH.at(b, j * C + ch), HW);
        copy_plane<T>(DX.at(b, j * C + ch), DZc.at(b, j * C + ch), HW);
      }
      copy_plane<T>(DOP.at(b, ch), DX.at(b, 6 * C + ch), HW);
      copy_plane<T>(DOP.at(b, ch), DH.at(b, 3 * C + ch), HW);
      // zp = [i'_x + i_m; f'_x + f_m; g'_x; m_m]
      for (int j = 0; j < 3; ++j) copy_plane<T>(DP.at(b, j * C + ch), DX.at(b, (3 + j) * C + ch), HW);
      copy_plane<T>(DP.at(b, ch), DM.at(b, ch), HW);
      copy_plane<T>(DP.at(b, C + ch), DM.at(b, C + ch), HW);
      copy_plane<T>(DP.at(b, 3 * C + ch), DM.at(b, 2 * C + ch), HW);
    });
  });
  return {grad_zx, grad_zh, grad_zc, grad_zm, grad_c_prev};
}

std::vector<at::Tensor> causal_m_gates_forward(const at::Tensor& zp, const at::Tensor& zc2m,
                                               const at::Tensor& c, const at::Tensor& o_partial,
                                               double forget_bias) {
  const int64_t C = c.size(1);
  check_planes(c, "c", C, c);
  check_planes(zp, "zp", 4 * C, c);
  check_planes(zc2m, "zc2m", 4 * C, c);
  check_planes(o_partial, "o_partial", C, c);
  const int64_t B = c.size(0), H = c.size(2), W = c.size(3), HW = H * W;
  auto cm = new_output({B, 2 * C, H, W}, c.options());
  auto o_sum = new_output({B, C, H, W}, c.options());
  auto acts = new_output({B, 4 * C, H, W}, c.options());
  AT_DISPATCH_FLOATING_TYPES(zp.scalar_type(), "causal_m_gates_forward", [&] {
    using T = scalar_t;
    const T fb = static_cast<T>(forget_bias);
    auto P = planes<T>(zp), Z = planes<T>(zc2m), Cc = planes<T>(c), OP = planes<T>(o_partial);
    auto CM = planes<T>(cm), OS = planes<T>(o_sum), A = planes<T>(acts);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict pi = P.at(b, ch);
      const T* __restrict pf = P.at(b, C + ch);
      const T* __restrict pg = P.at(b, 2 * C + ch);
      const T* __restrict pm = P.at(b, 3 * C + ch);
      const T* __restrict zi = Z.at(b, ch);  // conv_c2m's order: i', g', f', o
      const T* __restrict zg = Z.at(b, C + ch);
      const T* __restrict zf = Z.at(b, 2 * C + ch);
      const T* __restrict zo = Z.at(b, 3 * C + ch);
      const T* __restrict op = OP.at(b, ch);
      T* __restrict m = CM.at(b, C + ch);
      T* __restrict os = OS.at(b, ch);
      T* __restrict ai = A.at(b, ch);
      T* __restrict af = A.at(b, C + ch);
      T* __restrict ag = A.at(b, 2 * C + ch);
      T* __restrict at = A.at(b, 3 * C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V tm = tanh_act(load<V>(pm + k));
        // m = f' * tanh(m_m) + i' * g': the LSTM update with tanh(m_m) as the old memory
        const auto u = memory_update<V>(load<V>(pi + k) + load<V>(zi + k),
                                        load<V>(pf + k) + load<V>(zf + k) + fb,
                                        load<V>(pg + k) + load<V>(zg + k), tm);
        store(m + k, u.c);
        store(ai + k, u.i);
        store(af + k, u.f);
        store(ag + k, u.g);
        store(at + k, tm);
        store(os + k, load<V>(op + k) + load<V>(zo + k));
      });
      copy_plane<T>(Cc.at(b, ch), CM.at(b, ch), HW);
    });
  });
  return {cm, o_sum, acts};
}

std::vector<at::Tensor> causal_m_gates_backward(const at::Tensor& grad_m,
                                                const at::Tensor& grad_o_sum,
                                                const at::Tensor& acts) {
  const int64_t C = grad_m.size(1);
  check_planes(grad_m, "grad_m", C, grad_m);
  check_planes(grad_o_sum, "grad_o_sum", C, grad_m);
  check_planes(acts, "acts", 4 * C, grad_m);
  const int64_t B = grad_m.size(0), H = grad_m.size(2), W = grad_m.size(3), HW = H * W;
  auto grad_zp = new_output({B, 4 * C, H, W}, grad_m.options());
  auto grad_zc2m = new_output({B, 4 * C, H, W}, grad_m.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "causal_m_gates_backward", [&] {
    using T = scalar_t;
    auto DMm = planes<T>(grad_m), DOS = planes<T>(grad_o_sum), A = planes<T>(acts);
    auto DP = planes<T>(grad_zp), DZ = planes<T>(grad_zc2m);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict dm = DMm.at(b, ch);
      const T* __restrict ai = A.at(b, ch);
      const T* __restrict af = A.at(b, C + ch);
      const T* __restrict ag = A.at(b, 2 * C + ch);
      const T* __restrict at = A.at(b, 3 * C + ch);
      T* __restrict dpi = DP.at(b, ch);
      T* __restrict dpf = DP.at(b, C + ch);
      T* __restrict dpg = DP.at(b, 2 * C + ch);
      T* __restrict dpm = DP.at(b, 3 * C + ch);
      T* __restrict dzi = DZ.at(b, ch);
      T* __restrict dzg = DZ.at(b, C + ch);
      T* __restrict dzf = DZ.at(b, 2 * C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V tm = load<V>(at + k);
        const auto d = memory_update_backward<V>(load<V>(dm + k), load<V>(ai + k),
                                                 load<V>(af + k), load<V>(ag + k), tm);
        store(dpi + k, d.zi);
        store(dpf + k, d.zf);
        store(dpg + k, d.zg);
        store(dpm + k, d.c_prev * (1 - tm * tm));  // through tanh(m_m)
        store(dzi + k, d.zi);
        store(dzg + k, d.zg);
        store(dzf + k, d.zf);
      });
      copy_plane<T>(DOS.at(b, ch), DZ.at(b, 3 * C + ch), HW);
    });
  });
  return {grad_zp, grad_zc2m};
}

// The tanh output gate (stage 3) is output_gate.cpp's, instantiated with kTanhGate.

}  // namespace fastcells
