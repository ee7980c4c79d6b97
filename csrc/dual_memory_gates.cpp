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

// Forward of one element pair: writes the new memories and the six activations.
template <typename T>
static inline void dual_forward(T zi, T zf, T zg, T zi2, T zf2, T zg2, T forget_bias, T c0,
                                T m0, T& c, T& m, T* acts6) {
  const auto u = memory_update(zi, zf + forget_bias, zg, c0);
  const auto v = memory_update(zi2, zf2 + forget_bias, zg2, m0);
  c = u.c;
  m = v.c;
  acts6[0] = u.i; acts6[1] = u.f; acts6[2] = u.g;
  acts6[3] = v.i; acts6[4] = v.f; acts6[5] = v.g;
}

template <typename T>
struct DualPlanes {
  // activations i, f, g, i', f', g' and the memories
  const T* a[6];
  const T* c_prev;
  const T* m_prev;
};

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
      const T* __restrict x[7];
      for (int j = 0; j < 7; ++j) x[j] = X.at(b, j * C + ch);
      const T* __restrict hh[4];
      for (int j = 0; j < 4; ++j) hh[j] = Hh.at(b, j * C + ch);
      const T* __restrict mm[3];
      for (int j = 0; j < 3; ++j) mm[j] = M.at(b, j * C + ch);
      const T* __restrict cp = CP.at(b, ch);
      const T* __restrict mp = MP.at(b, ch);
      T* __restrict cn = CM.at(b, ch);
      T* __restrict mn = CM.at(b, C + ch);
      T* __restrict op = OP.at(b, ch);
      T* __restrict a[6];
      for (int j = 0; j < 6; ++j) a[j] = A.at(b, j * C + ch);
      _Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        T act[6];
        dual_forward<T>(x[0][k] + hh[0][k], x[1][k] + hh[1][k], x[2][k] + hh[2][k],
                        x[3][k] + mm[0][k], x[4][k] + mm[1][k], x[5][k] + mm[2][k], T(1), cp[k],
                        mp[k], cn[k], mn[k], act);
        for (int j = 0; j < 6; ++j) a[j][k] = act[j];
        op[k] = x[6][k] + hh[3][k];
      }
      if (return_deltas) {
        T* __restrict dc = D.at(b, ch);
        T* __restrict dm = D.at(b, C + ch);
        _Pragma("omp simd")
        for (int64_t k = 0; k < HW; ++k) {
          dc[k] = a[0][k] * a[2][k];
          dm[k] = a[3][k] * a[5][k];
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
  // Gradients through delta_c = i*g and delta_m = i'*g' fold into the memory gradients'
  // i/g terms; when absent they are zero and the same loop serves.
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
      const T* __restrict a[6];
      for (int j = 0; j < 6; ++j) a[j] = A.at(b, j * C + ch);
      const T* __restrict cp = CP.at(b, ch);
      const T* __restrict mp = MP.at(b, ch);
      const T* __restrict dcn = DCM.at(b, ch);
      const T* __restrict dmn = DCM.at(b, C + ch);
      const T* __restrict dop = DOP.at(b, ch);
      T* __restrict dx[7];
      for (int j = 0; j < 7; ++j) dx[j] = DX.at(b, j * C + ch);
      T* __restrict dh[4];
      for (int j = 0; j < 4; ++j) dh[j] = DH.at(b, j * C + ch);
      T* __restrict dm[3];
      for (int j = 0; j < 3; ++j) dm[j] = DM.at(b, j * C + ch);
      T* __restrict dcp = DCP.at(b, ch);
      T* __restrict dmp = DMP.at(b, ch);
      const T* __restrict ddc = has_dd ? DD.at(b, ch) : nullptr;
      const T* __restrict ddm = has_dd ? DD.at(b, C + ch) : nullptr;
      _Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        const auto d = memory_update_backward(dcn[k], a[0][k], a[1][k], a[2][k], cp[k]);
        const auto e = memory_update_backward(dmn[k], a[3][k], a[4][k], a[5][k], mp[k]);
        dx[0][k] = dh[0][k] = d.zi;
        dx[1][k] = dh[1][k] = d.zf;
        dx[2][k] = dh[2][k] = d.zg;
        dx[3][k] = dm[0][k] = e.zi;
        dx[4][k] = dm[1][k] = e.zf;
        dx[5][k] = dm[2][k] = e.zg;
        dx[6][k] = dh[3][k] = dop[k];
        dcp[k] = d.c_prev;
        dmp[k] = e.c_prev;
      }
      if (has_dd) {
        // d(i*g)/dzi = g * i(1-i), d(i*g)/dzg = i * (1-g^2): the memory terms with dc = 1.
        _Pragma("omp simd")
        for (int64_t k = 0; k < HW; ++k) {
          const auto d = memory_update_backward(ddc[k], a[0][k], a[1][k], a[2][k], T(0));
          const auto e = memory_update_backward(ddm[k], a[3][k], a[4][k], a[5][k], T(0));
          dx[0][k] += d.zi; dh[0][k] = dx[0][k];
          dx[2][k] += d.zg; dh[2][k] = dx[2][k];
          dx[3][k] += e.zi; dm[0][k] = dx[3][k];
          dx[5][k] += e.zg; dm[2][k] = dx[5][k];
        }
      }
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
      const T* __restrict p[4];
      const T* __restrict q[4];
      for (int j = 0; j < 4; ++j) {
        p[j] = Z1.at(b, j * C + ch);
        q[j] = Z2.at(b, j * C + ch);
      }
      const T* __restrict c1 = C1.at(b, ch);
      const T* __restrict c2 = C2.at(b, ch);
      T* __restrict n1 = CC.at(b, ch);
      T* __restrict n2 = CC.at(b, C + ch);
      T* __restrict op = OP.at(b, ch);
      T* __restrict a[6];
      for (int j = 0; j < 6; ++j) a[j] = A.at(b, j * C + ch);
      _Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        T act[6];
        dual_forward<T>(p[0][k], p[1][k], p[2][k], q[0][k], q[1][k], q[2][k], T(0), c1[k], c2[k],
                        n1[k], n2[k], act);
        for (int j = 0; j < 6; ++j) a[j][k] = act[j];
        op[k] = p[3][k] + q[3][k];
      }
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
      const T* __restrict a[6];
      for (int j = 0; j < 6; ++j) a[j] = A.at(b, j * C + ch);
      const T* __restrict c1 = C1.at(b, ch);
      const T* __restrict c2 = C2.at(b, ch);
      const T* __restrict dn1 = DCC.at(b, ch);
      const T* __restrict dn2 = DCC.at(b, C + ch);
      const T* __restrict dop = DOP.at(b, ch);
      T* __restrict p[4];
      T* __restrict q[4];
      for (int j = 0; j < 4; ++j) {
        p[j] = DZ1.at(b, j * C + ch);
        q[j] = DZ2.at(b, j * C + ch);
      }
      T* __restrict d1 = DC1.at(b, ch);
      T* __restrict d2 = DC2.at(b, ch);
      _Pragma("omp simd")
      for (int64_t k = 0; k < HW; ++k) {
        const auto d = memory_update_backward(dn1[k], a[0][k], a[1][k], a[2][k], c1[k]);
        const auto e = memory_update_backward(dn2[k], a[3][k], a[4][k], a[5][k], c2[k]);
        p[0][k] = d.zi; p[1][k] = d.zf; p[2][k] = d.zg; p[3][k] = dop[k];
        q[0][k] = e.zi; q[1][k] = e.zf; q[2][k] = e.zg; q[3][k] = dop[k];
        d1[k] = d.c_prev;
        d2[k] = e.c_prev;
      }
    });
  });
  return {grad_z1, grad_z2, grad_c1, grad_c2};
}

}  // namespace fastcells
