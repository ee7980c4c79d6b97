// Fused first stage of the two cells that keep two memories beside one hidden state.
//
// ST-LSTM (PredRNN, CELLS.md section 2): memories c (temporal) and m (spatiotemporal)
//   i = s(i_x + i_h)   f = s(f_x + f_h + 1)   g = tanh(g_x + g_h)   c = f c_prev + i g
//   i'= s(i'_x + i_m)  f'= s(f'_x + f_m + 1)  g'= tanh(g'_x + g_m)  m = f' m_in + i' g'
//   o_partial = o_x + o_h
// MK-LSTM (MS-LSTM, CELLS.md section 3): memories c3 and c5, pre-activations z3, z5 in gate
// order i, f, g, o; o_partial = o3 + o5.
//
// Both write the two new memories into one (B, 2C) buffer, which is exactly the [c; m]
// (or [c3; c5]) input of the following convolutions, so no concatenation is ever made.
// The six gate activations are saved for backward (6C) instead of the 11-14C of raw
// convolution outputs; the output gate is the separate `output_gate` kernel.
#include "gates.h"
#include "lstm_math.h"
#include "planes.h"

namespace fastcells {

namespace {

// Pointers to one (b, ch) plane of every tensor a two-memory kernel touches. Named
// pointers (not arrays of pointers) keep __restrict meaningful, so GCC vectorizes.
template <typename T>
struct Gate3 {  // i, f, g planes of one memory
  T* i;
  T* f;
  T* g;
};

template <typename T>
inline Gate3<T> gate3(const Planes<T>& p, int64_t b, int64_t first, int64_t C) {
  return {p.at(b, first), p.at(b, first + C), p.at(b, first + 2 * C)};
}

// Forward of both memories for one plane. With two_sources, each memory's (i, f, g)
// pre-activations are a + b (ST-LSTM: conv_x + conv_h, conv_x + conv_m); otherwise a alone
// (MK-LSTM, whose branches were summed by the convolution). `o1 + o2` is the partial
// output pre-activation.
template <typename T>
void dual_forward_plane(Gate3<T> a1, Gate3<T> b1, Gate3<T> a2, Gate3<T> b2, const T* o1,
                        const T* o2, const T* c1_prev, const T* c2_prev, T forget_bias,
                        bool two_sources, T* __restrict c1, T* __restrict c2,
                        T* __restrict o_partial, Gate3<T> act1, Gate3<T> act2, int64_t hw) {
  const T* __restrict ai1 = a1.i; const T* __restrict af1 = a1.f; const T* __restrict ag1 = a1.g;
  const T* __restrict ai2 = a2.i; const T* __restrict af2 = a2.f; const T* __restrict ag2 = a2.g;
  const T* __restrict bi1 = b1.i; const T* __restrict bf1 = b1.f; const T* __restrict bg1 = b1.g;
  const T* __restrict bi2 = b2.i; const T* __restrict bf2 = b2.f; const T* __restrict bg2 = b2.g;
  const T* __restrict po1 = o1; const T* __restrict po2 = o2;
  const T* __restrict cp1 = c1_prev; const T* __restrict cp2 = c2_prev;
  T* __restrict si1 = act1.i; T* __restrict sf1 = act1.f; T* __restrict sg1 = act1.g;
  T* __restrict si2 = act2.i; T* __restrict sf2 = act2.f; T* __restrict sg2 = act2.g;
  if (two_sources) {
    _Pragma("omp simd")
    for (int64_t k = 0; k < hw; ++k) {
      const auto u = memory_update(ai1[k] + bi1[k], af1[k] + bf1[k] + forget_bias,
                                   ag1[k] + bg1[k], cp1[k]);
      const auto v = memory_update(ai2[k] + bi2[k], af2[k] + bf2[k] + forget_bias,
                                   ag2[k] + bg2[k], cp2[k]);
      c1[k] = u.c; si1[k] = u.i; sf1[k] = u.f; sg1[k] = u.g;
      c2[k] = v.c; si2[k] = v.i; sf2[k] = v.f; sg2[k] = v.g;
      o_partial[k] = po1[k] + po2[k];
    }
  } else {
    _Pragma("omp simd")
    for (int64_t k = 0; k < hw; ++k) {
      const auto u = memory_update(ai1[k], af1[k] + forget_bias, ag1[k], cp1[k]);
      const auto v = memory_update(ai2[k], af2[k] + forget_bias, ag2[k], cp2[k]);
      c1[k] = u.c; si1[k] = u.i; sf1[k] = u.f; sg1[k] = u.g;
      c2[k] = v.c; si2[k] = v.i; sf2[k] = v.f; sg2[k] = v.g;
      o_partial[k] = po1[k] + po2[k];
    }
  }
}

// Backward of both memories for one plane: writes the (i, f, g) pre-activation grads of
// each memory and the grads of the previous memories.
template <typename T>
void dual_backward_plane(const T* dc1_in, const T* dc2_in, Gate3<T> act1, Gate3<T> act2,
                         const T* c1_prev, const T* c2_prev, Gate3<T> d1, Gate3<T> d2,
                         T* __restrict dc1_prev, T* __restrict dc2_prev, int64_t hw) {
  const T* __restrict dn1 = dc1_in; const T* __restrict dn2 = dc2_in;
  const T* __restrict i1 = act1.i; const T* __restrict f1 = act1.f; const T* __restrict g1 = act1.g;
  const T* __restrict i2 = act2.i; const T* __restrict f2 = act2.f; const T* __restrict g2 = act2.g;
  const T* __restrict cp1 = c1_prev; const T* __restrict cp2 = c2_prev;
  T* __restrict di1 = d1.i; T* __restrict df1 = d1.f; T* __restrict dg1 = d1.g;
  T* __restrict di2 = d2.i; T* __restrict df2 = d2.f; T* __restrict dg2 = d2.g;
  _Pragma("omp simd")
  for (int64_t k = 0; k < hw; ++k) {
    const auto d = memory_update_backward(dn1[k], i1[k], f1[k], g1[k], cp1[k]);
    const auto e = memory_update_backward(dn2[k], i2[k], f2[k], g2[k], cp2[k]);
    di1[k] = d.zi; df1[k] = d.zf; dg1[k] = d.zg; dc1_prev[k] = d.c_prev;
    di2[k] = e.zi; df2[k] = e.zf; dg2[k] = e.zg; dc2_prev[k] = e.c_prev;
  }
}

template <typename T>
void add_delta_grads(const T* ddc, const T* ddm, Gate3<T> act1, Gate3<T> act2, Gate3<T> d1,
                     Gate3<T> d2, int64_t hw) {
  // delta_c = i*g, delta_m = i'*g' (PredRNN-v2): their grads are the memory terms with
  // c_prev = 0, added to the i and g pre-activation grads.
  const T* __restrict a = ddc; const T* __restrict b = ddm;
  const T* __restrict i1 = act1.i; const T* __restrict g1 = act1.g;
  const T* __restrict i2 = act2.i; const T* __restrict g2 = act2.g;
  T* __restrict di1 = d1.i; T* __restrict dg1 = d1.g; T* __restrict di2 = d2.i;
  T* __restrict dg2 = d2.g;
  _Pragma("omp simd")
  for (int64_t k = 0; k < hw; ++k) {
    const auto d = memory_update_backward(a[k], i1[k], T(1), g1[k], T(0));
    const auto e = memory_update_backward(b[k], i2[k], T(1), g2[k], T(0));
    di1[k] += d.zi; dg1[k] += d.zg; di2[k] += e.zi; dg2[k] += e.zg;
  }
}

template <typename T>
void copy_plane(const T* src, T* __restrict dst, int64_t hw) {
  const T* __restrict s = src;
  _Pragma("omp simd")
  for (int64_t k = 0; k < hw; ++k) dst[k] = s[k];
}

}  // namespace

std::vector<at::Tensor> stlstm_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                             const at::Tensor& zm, const at::Tensor& c_prev,
                                             const at::Tensor& m_prev, bool return_deltas) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(m_prev, "m_prev", C, c_prev);
  check_planes(zx, "zx", 7 * C, c_prev);
  check_planes(zh, "zh", 4 * C, c_prev);
  check_planes(zm, "zm", 3 * C, c_prev);
  const int64_t B = c_prev.size(0), H = c_prev.size(2), W = c_prev.size(3), HW = H * W;
  auto cm = new_output({B, 2 * C, H, W}, c_prev.options());
  auto o_partial = new_output({B, C, H, W}, c_prev.options());
  auto acts = new_output({B, 6 * C, H, W}, c_prev.options());
  at::Tensor deltas;
  if (return_deltas) deltas = new_output({B, 2 * C, H, W}, c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(zx.scalar_type(), "stlstm_gates_forward", [&] {
    using T = scalar_t;
    auto X = planes<T>(zx), Hh = planes<T>(zh), M = planes<T>(zm);
    auto CP = planes<T>(c_prev), MP = planes<T>(m_prev);
    auto CM = planes<T>(cm), OP = planes<T>(o_partial), A = planes<T>(acts);
    Planes<T> D;
    if (return_deltas) D = planes<T>(deltas);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const auto act1 = gate3(A, b, ch, C), act2 = gate3(A, b, 3 * C + ch, C);
      // memory c: (i_x, f_x, g_x) + (i_h, f_h, g_h); memory m: (i'_x, f'_x, g'_x) + (i_m, ...)
      dual_forward_plane<T>(gate3(X, b, ch, C), gate3(Hh, b, ch, C), gate3(X, b, 3 * C + ch, C),
                            gate3(M, b, ch, C), X.at(b, 6 * C + ch), Hh.at(b, 3 * C + ch),
                            CP.at(b, ch), MP.at(b, ch), T(1), true, CM.at(b, ch),
                            CM.at(b, C + ch), OP.at(b, ch), act1, act2, HW);
      if (return_deltas) {
        T* __restrict dc = D.at(b, ch);
        T* __restrict dm = D.at(b, C + ch);
        const T* __restrict i1 = act1.i; const T* __restrict g1 = act1.g;
        const T* __restrict i2 = act2.i; const T* __restrict g2 = act2.g;
        _Pragma("omp simd")
        for (int64_t k = 0; k < HW; ++k) {
          dc[k] = i1[k] * g1[k];
          dm[k] = i2[k] * g2[k];
        }
      }
    });
  });
  return {cm, o_partial, acts, deltas};
}

std::vector<at::Tensor> stlstm_gates_backward(const at::Tensor& grad_cm,
                                              const at::Tensor& grad_o_partial,
                                              const c10::optional<at::Tensor>& grad_deltas,
                                              const at::Tensor& acts, const at::Tensor& c_prev,
                                              const at::Tensor& m_prev) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(m_prev, "m_prev", C, c_prev);
  check_planes(acts, "acts", 6 * C, c_prev);
  check_planes(grad_cm, "grad_cm", 2 * C, c_prev);
  check_planes(grad_o_partial, "grad_o_partial", C, c_prev);
  if (grad_deltas.has_value()) check_planes(*grad_deltas, "grad_deltas", 2 * C, c_prev);
  const int64_t B = c_prev.size(0), H = c_prev.size(2), W = c_prev.size(3), HW = H * W;
  auto grad_zx = new_output({B, 7 * C, H, W}, c_prev.options());
  auto grad_zh = new_output({B, 4 * C, H, W}, c_prev.options());
  auto grad_zm = new_output({B, 3 * C, H, W}, c_prev.options());
  auto grad_c_prev = new_output({B, C, H, W}, c_prev.options());
  auto grad_m_prev = new_output({B, C, H, W}, c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "stlstm_gates_backward", [&] {
    using T = scalar_t;
    auto A = planes<T>(acts), CP = planes<T>(c_prev), MP = planes<T>(m_prev);
    auto DCM = planes<T>(grad_cm), DOP = planes<T>(grad_o_partial);
    auto DX = planes<T>(grad_zx), DH = planes<T>(grad_zh), DM = planes<T>(grad_zm);
    auto DCP = planes<T>(grad_c_prev), DMP = planes<T>(grad_m_prev);
    const bool has_dd = grad_deltas.has_value();
    Planes<T> DD;
    if (has_dd) DD = planes<T>(*grad_deltas);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const auto act1 = gate3(A, b, ch, C), act2 = gate3(A, b, 3 * C + ch, C);
      const auto dx1 = gate3(DX, b, ch, C), dx2 = gate3(DX, b, 3 * C + ch, C);
      dual_backward_plane<T>(DCM.at(b, ch), DCM.at(b, C + ch), act1, act2, CP.at(b, ch),
                             MP.at(b, ch), dx1, dx2, DCP.at(b, ch), DMP.at(b, ch), HW);
      if (has_dd) add_delta_grads<T>(DD.at(b, ch), DD.at(b, C + ch), act1, act2, dx1, dx2, HW);
      // the summed sources share their gradient: zh and zm get copies of zx's
      for (int j = 0; j < 3; ++j) {
        copy_plane<T>(DX.at(b, j * C + ch), DH.at(b, j * C + ch), HW);
        copy_plane<T>(DX.at(b, (3 + j) * C + ch), DM.at(b, j * C + ch), HW);
      }
      copy_plane<T>(DOP.at(b, ch), DX.at(b, 6 * C + ch), HW);
      copy_plane<T>(DOP.at(b, ch), DH.at(b, 3 * C + ch), HW);
    });
  });
  return {grad_zx, grad_zh, grad_zm, grad_c_prev, grad_m_prev};
}

std::vector<at::Tensor> mklstm_gates_forward(const at::Tensor& z1, const at::Tensor& z2,
                                             const at::Tensor& c1_prev,
                                             const at::Tensor& c2_prev) {
  const int64_t C = c1_prev.size(1);
  check_planes(c1_prev, "c1_prev", C, c1_prev);
  check_planes(c2_prev, "c2_prev", C, c1_prev);
  check_planes(z1, "z1", 4 * C, c1_prev);
  check_planes(z2, "z2", 4 * C, c1_prev);
  const int64_t B = c1_prev.size(0), H = c1_prev.size(2), W = c1_prev.size(3), HW = H * W;
  auto cc = new_output({B, 2 * C, H, W}, c1_prev.options());
  auto o_partial = new_output({B, C, H, W}, c1_prev.options());
  auto acts = new_output({B, 6 * C, H, W}, c1_prev.options());
  AT_DISPATCH_FLOATING_TYPES(z1.scalar_type(), "mklstm_gates_forward", [&] {
    using T = scalar_t;
    auto Z1 = planes<T>(z1), Z2 = planes<T>(z2), C1 = planes<T>(c1_prev), C2 = planes<T>(c2_prev);
    auto CC = planes<T>(cc), OP = planes<T>(o_partial), A = planes<T>(acts);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      // gate order i, f, g, o in each branch; one (already summed) source per memory
      const auto s1 = gate3(Z1, b, ch, C), s2 = gate3(Z2, b, ch, C);
      dual_forward_plane<T>(s1, s1, s2, s2, Z1.at(b, 3 * C + ch), Z2.at(b, 3 * C + ch),
                            C1.at(b, ch), C2.at(b, ch), T(0), false, CC.at(b, ch),
                            CC.at(b, C + ch), OP.at(b, ch), gate3(A, b, ch, C),
                            gate3(A, b, 3 * C + ch, C), HW);
    });
  });
  return {cc, o_partial, acts};
}

std::vector<at::Tensor> mklstm_gates_backward(const at::Tensor& grad_cc,
                                              const at::Tensor& grad_o_partial,
                                              const at::Tensor& acts, const at::Tensor& c1_prev,
                                              const at::Tensor& c2_prev) {
  const int64_t C = c1_prev.size(1);
  check_planes(c1_prev, "c1_prev", C, c1_prev);
  check_planes(c2_prev, "c2_prev", C, c1_prev);
  check_planes(acts, "acts", 6 * C, c1_prev);
  check_planes(grad_cc, "grad_cc", 2 * C, c1_prev);
  check_planes(grad_o_partial, "grad_o_partial", C, c1_prev);
  const int64_t B = c1_prev.size(0), H = c1_prev.size(2), W = c1_prev.size(3), HW = H * W;
  auto grad_z1 = new_output({B, 4 * C, H, W}, c1_prev.options());
  auto grad_z2 = new_output({B, 4 * C, H, W}, c1_prev.options());
  auto grad_c1 = new_output({B, C, H, W}, c1_prev.options());
  auto grad_c2 = new_output({B, C, H, W}, c1_prev.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "mklstm_gates_backward", [&] {
    using T = scalar_t;
    auto A = planes<T>(acts), C1 = planes<T>(c1_prev), C2 = planes<T>(c2_prev);
    auto DCC = planes<T>(grad_cc), DOP = planes<T>(grad_o_partial);
    auto DZ1 = planes<T>(grad_z1), DZ2 = planes<T>(grad_z2);
    auto DC1 = planes<T>(grad_c1), DC2 = planes<T>(grad_c2);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const auto d1 = gate3(DZ1, b, ch, C), d2 = gate3(DZ2, b, ch, C);
      dual_backward_plane<T>(DCC.at(b, ch), DCC.at(b, C + ch), gate3(A, b, ch, C),
                             gate3(A, b, 3 * C + ch, C), C1.at(b, ch), C2.at(b, ch), d1, d2,
                             DC1.at(b, ch), DC2.at(b, ch), HW);
      copy_plane<T>(DOP.at(b, ch), DZ1.at(b, 3 * C + ch), HW);
      copy_plane<T>(DOP.at(b, ch), DZ2.at(b, 3 * C + ch), HW);
    });
  });
  return {grad_z1, grad_z2, grad_c1, grad_c2};
}

}  // namespace fastcells
