// Fused first stage of the two cells that keep two memories beside one hidden state.
//
// ST-LSTM (PredRNN, CELLS.md section 2): memories c (temporal) and m (spatiotemporal)
//   i = s(i_x + i_h)   f = s(f_x + f_h + b)   g = tanh(g_x + g_h)   c = f c_prev + i g
//   i'= s(i'_x + i_m)  f'= s(f'_x + f_m + b)  g'= tanh(g'_x + g_m)  m = f' m_in + i' g'
//   o_partial = o_x + o_h; the forget bias b is 1 in thuml's and OpenSTL's cells, 0 in MS-RNN's
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
#include "simd.h"

namespace fastcells {

namespace {

// The (i, f, g) planes of one memory at one (b, ch).
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
// output pre-activation (o1 alone where o2 is null: MK-LSTM's z2 without an o block).
template <bool two_sources, typename T>
void dual_forward_plane(Gate3<T> a1, Gate3<T> b1, Gate3<T> a2, Gate3<T> b2, const T* o1,
                        const T* o2, const T* c1_prev, const T* c2_prev, T forget_bias,
                        T* c1, T* c2, T* o_partial, Gate3<T> act1, Gate3<T> act2, int64_t hw) {
  auto pre = [&](auto lane, const T* a, const T* b, int64_t k) {
    using V = typename decltype(lane)::type;
    if constexpr (two_sources) {
      return load<V>(a + k) + load<V>(b + k);
    } else {
      return load<V>(a + k);
    }
  };
  lane_loop<T>(hw, [&](auto lane, int64_t k) {
    using V = typename decltype(lane)::type;
    const auto u = memory_update<V>(pre(lane, a1.i, b1.i, k), pre(lane, a1.f, b1.f, k) + forget_bias,
                                    pre(lane, a1.g, b1.g, k), load<V>(c1_prev + k));
    const auto v = memory_update<V>(pre(lane, a2.i, b2.i, k), pre(lane, a2.f, b2.f, k) + forget_bias,
                                    pre(lane, a2.g, b2.g, k), load<V>(c2_prev + k));
    store(c1 + k, u.c); store(act1.i + k, u.i); store(act1.f + k, u.f); store(act1.g + k, u.g);
    store(c2 + k, v.c); store(act2.i + k, v.i); store(act2.f + k, v.f); store(act2.g + k, v.g);
    store(o_partial + k, o2 ? load<V>(o1 + k) + load<V>(o2 + k) : load<V>(o1 + k));
  });
}

// Backward of both memories for one plane: writes the (i, f, g) pre-activation grads of
// each memory and the grads of the previous memories.
template <typename T>
void dual_backward_plane(const T* dc1, const T* dc2, Gate3<T> act1, Gate3<T> act2,
                         const T* c1_prev, const T* c2_prev, Gate3<T> d1, Gate3<T> d2,
                         T* dc1_prev, T* dc2_prev, int64_t hw) {
  lane_loop<T>(hw, [&](auto lane, int64_t k) {
    using V = typename decltype(lane)::type;
    const auto d = memory_update_backward<V>(load<V>(dc1 + k), load<V>(act1.i + k),
                                             load<V>(act1.f + k), load<V>(act1.g + k),
                                             load<V>(c1_prev + k));
    const auto e = memory_update_backward<V>(load<V>(dc2 + k), load<V>(act2.i + k),
                                             load<V>(act2.f + k), load<V>(act2.g + k),
                                             load<V>(c2_prev + k));
    store(d1.i + k, d.zi); store(d1.f + k, d.zf); store(d1.g + k, d.zg);
    store(dc1_prev + k, d.c_prev);
    store(d2.i + k, e.zi); store(d2.f + k, e.zf); store(d2.g + k, e.zg);
    store(dc2_prev + k, e.c_prev);
  });
}

template <typename T>
void add_delta_grads(const T* ddc, const T* ddm, Gate3<T> act1, Gate3<T> act2, Gate3<T> d1,
                     Gate3<T> d2, int64_t hw) {
  // delta_c = i*g, delta_m = i'*g' (PredRNN-v2): their grads are the memory terms with
  // c_prev = 0, added to the i and g pre-activation grads.
  lane_loop<T>(hw, [&](auto lane, int64_t k) {
    using V = typename decltype(lane)::type;
    const V one = V{} + 1, zero = V{};
    const auto d = memory_update_backward<V>(load<V>(ddc + k), load<V>(act1.i + k), one,
                                             load<V>(act1.g + k), zero);
    const auto e = memory_update_backward<V>(load<V>(ddm + k), load<V>(act2.i + k), one,
                                             load<V>(act2.g + k), zero);
    store(d1.i + k, load<V>(d1.i + k) + d.zi);
    store(d1.g + k, load<V>(d1.g + k) + d.zg);
    store(d2.i + k, load<V>(d2.i + k) + e.zi);
    store(d2.g + k, load<V>(d2.g + k) + e.zg);
  });
}

template <typename T>
void copy_plane(const T* src, T* dst, int64_t hw) {
  std::memcpy(dst, src, hw * sizeof(T));
}

}  // namespace

std::vector<at::Tensor> stlstm_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                             const at::Tensor& zm, const at::Tensor& c_prev,
                                             const at::Tensor& m_prev, bool return_deltas,
                                             double forget_bias) {
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
      dual_forward_plane<true, T>(gate3(X, b, ch, C), gate3(Hh, b, ch, C),
                            gate3(X, b, 3 * C + ch, C), gate3(M, b, ch, C),
                            X.at(b, 6 * C + ch), Hh.at(b, 3 * C + ch),
                            CP.at(b, ch), MP.at(b, ch), T(forget_bias), CM.at(b, ch),
                            CM.at(b, C + ch), OP.at(b, ch), act1, act2, HW);
      if (return_deltas) {
        T* dc = D.at(b, ch);
        T* dm = D.at(b, C + ch);
        lane_loop<T>(HW, [&](auto lane, int64_t k) {
          using V = typename decltype(lane)::type;
          store(dc + k, load<V>(act1.i + k) * load<V>(act1.g + k));
          store(dm + k, load<V>(act2.i + k) * load<V>(act2.g + k));
        });
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
  // z2 may lack its o block (3C rows): ST-LSTM's summed path, whose o sum is all in z1
  const bool z2_o = z2.dim() == 4 && z2.size(1) == 4 * C;
  check_planes(z2, "z2", z2_o ? 4 * C : 3 * C, c1_prev);
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
      dual_forward_plane<false, T>(s1, s1, s2, s2, Z1.at(b, 3 * C + ch),
                            z2_o ? Z2.at(b, 3 * C + ch) : nullptr,
                            C1.at(b, ch), C2.at(b, ch), T(0), CC.at(b, ch),
                            CC.at(b, C + ch), OP.at(b, ch), gate3(A, b, ch, C),
                            gate3(A, b, 3 * C + ch, C), HW);
    });
  });
  return {cc, o_partial, acts};
}

std::vector<at::Tensor> mklstm_gates_backward(const at::Tensor& grad_cc,
                                              const at::Tensor& grad_o_partial,
                                              const at::Tensor& acts, const at::Tensor& c1_prev,
                                              const at::Tensor& c2_prev, int64_t z2_rows) {
  const int64_t C = c1_prev.size(1);
  TORCH_CHECK(z2_rows == 4 * C || z2_rows == 3 * C, "mklstm_gates_backward: z2_rows must be ",
              "4C or 3C (", 4 * C, " or ", 3 * C, "), got ", z2_rows);
  check_planes(c1_prev, "c1_prev", C, c1_prev);
  check_planes(c2_prev, "c2_prev", C, c1_prev);
  check_planes(acts, "acts", 6 * C, c1_prev);
  check_planes(grad_cc, "grad_cc", 2 * C, c1_prev);
  check_planes(grad_o_partial, "grad_o_partial", C, c1_prev);
  const int64_t B = c1_prev.size(0), H = c1_prev.size(2), W = c1_prev.size(3), HW = H * W;
  auto grad_z1 = new_output({B, 4 * C, H, W}, c1_prev.options());
  auto grad_z2 = new_output({B, z2_rows, H, W}, c1_prev.options());
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
      if (z2_rows == 4 * C) copy_plane<T>(DOP.at(b, ch), DZ2.at(b, 3 * C + ch), HW);
    });
  });
  return {grad_z1, grad_z2, grad_c1, grad_c2};
}

}  // namespace fastcells
