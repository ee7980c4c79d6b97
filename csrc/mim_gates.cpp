// Fused gate math of MIM (memory in memory, CELLS.md section 7, OpenSTL `mim_modules.py`).
//
// Stationarity module (OpenSTL's `MIMN`, and the `MIMS` inside `MIMBlock`): a ConvLSTM with
// spatial (per-pixel) peepholes and forget bias 1; zh and zx (4C each, gate order i, g, f, o)
// are summed; ct = [ct_i; ct_f] (2C, H, W) and oc (C, H, W) are per-pixel weights:
//   i = s(zi + ct_i c_prev)   f = s(zf + ct_f c_prev + 1)   g = tanh(zg)
//   c = f c_prev + i g        h = s(zo + oc c) tanh(c)
// The forward saves the activations (i, g, f, o) in z's layout instead of z; the backward
// writes the pre-activation gradient (shared by zh and zx) and the gradient of c_prev. The
// peephole weight gradients (sums over the batch of dzi c_prev, dzf c_prev, dzo c) are
// formed by the Python wrapper from that gradient (fastcells/ops/mim_gates.py).
//
// Block gates (OpenSTL's `MIMBlock`): zx (4C: i, g, f, o), zt (3C: i, g, o), zs (4C: i, g, f,
// o), the memory m_prev and n_h, the stationarity module's hidden output:
//   m = s(f_x + f_s + 1) m_prev + s(i_x + i_s) tanh(g_x + g_s)
//   c = n_h + s(i_x + i_t) tanh(g_x + g_t)
//   o_partial = o_x + o_t       (o_s goes to the `output_gate` kernel as its zo)
// c and m are written into one (B, 2C) buffer, the [c; m] input of conv_last.
#include "gates.h"
#include "lstm_math.h"
#include "planes.h"
#include "simd.h"

namespace fastcells {

namespace {

// Contiguous (channels, H, W) per-pixel weights of this cell's spatial size.
void check_pixel_weight(const at::Tensor& w, const char* name, int64_t channels,
                        const at::Tensor& like) {
  TORCH_CHECK(w.dim() == 3 && w.size(0) == channels && w.size(1) == like.size(2) &&
                  w.size(2) == like.size(3) && w.is_contiguous(),
              name, ": expected a contiguous (", channels, ", ", like.size(2), ", ", like.size(3),
              ") tensor, got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == like.scalar_type(), name, ": dtype ", w.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(w.device().is_cpu(), name, ": the cpp backend runs on CPU tensors");
}

constexpr double kForgetBias = 1.0;  // OpenSTL's _forget_bias

}  // namespace

std::vector<at::Tensor> mims_gates_forward(const at::Tensor& zh,
                                           const c10::optional<at::Tensor>& zx,
                                           const at::Tensor& c_prev, const at::Tensor& ct_weight,
                                           const at::Tensor& oc_weight) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(zh, "zh", 4 * C, c_prev);
  if (zx.has_value()) check_planes(*zx, "zx", 4 * C, c_prev);
  check_pixel_weight(ct_weight, "ct_weight", 2 * C, c_prev);
  check_pixel_weight(oc_weight, "oc_weight", C, c_prev);
  const int64_t B = c_prev.size(0), HW = c_prev.size(2) * c_prev.size(3);
  auto h = new_output(c_prev.sizes(), c_prev.options());
  auto c = new_output(c_prev.sizes(), c_prev.options());
  auto acts = new_output(zh.sizes(), c_prev.options());
  const bool has_x = zx.has_value();
  AT_DISPATCH_FLOATING_TYPES(c_prev.scalar_type(), "mims_gates_forward", [&] {
    using T = scalar_t;
    auto Zh = planes<T>(zh), CP = planes<T>(c_prev), Hs = planes<T>(h), Cs = planes<T>(c);
    auto A = planes<T>(acts);
    Planes<T> Zx;
    if (has_x) Zx = planes<T>(*zx);
    const T* ct = ct_weight.data_ptr<T>();
    const T* oc = oc_weight.data_ptr<T>();
    const T forget = static_cast<T>(kForgetBias);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict wi = ct + ch * HW;
      const T* __restrict wf = ct + (C + ch) * HW;
      const T* __restrict wo = oc + ch * HW;
      const T* __restrict cp = CP.at(b, ch);
      T* __restrict hp = Hs.at(b, ch);
      T* __restrict cn = Cs.at(b, ch);
      T* __restrict ai = A.at(b, ch);
      T* __restrict ag = A.at(b, C + ch);
      T* __restrict af = A.at(b, 2 * C + ch);
      T* __restrict ao = A.at(b, 3 * C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        // pre-activation of gate j (order i, g, f, o): zh, plus zx when there is an input
        auto z = [&](int64_t j) {
          V v = load<V>(Zh.at(b, j * C + ch) + k);
          if (has_x) v = v + load<V>(Zx.at(b, j * C + ch) + k);
          return v;
        };
        const V c0 = load<V>(cp + k);
        const auto u = memory_update<V>(z(0) + load<V>(wi + k) * c0,
                                        z(2) + load<V>(wf + k) * c0 + forget, z(1), c0);
        const V o = sigmoid(z(3) + load<V>(wo + k) * u.c);
        store(cn + k, u.c);
        store(hp + k, o * tanh_act(u.c));
        store(ai + k, u.i);
        store(ag + k, u.g);
        store(af + k, u.f);
        store(ao + k, o);
      });
    });
  });
  return {h, c, acts};
}

std::vector<at::Tensor> mims_gates_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                            const at::Tensor& acts, const at::Tensor& c_prev,
                                            const at::Tensor& c, const at::Tensor& ct_weight,
                                            const at::Tensor& oc_weight) {
  const int64_t C = c_prev.size(1);
  check_planes(c_prev, "c_prev", C, c_prev);
  check_planes(acts, "acts", 4 * C, c_prev);
  check_planes(c, "c", C, c_prev);
  check_planes(grad_h, "grad_h", C, c_prev);
  check_planes(grad_c, "grad_c", C, c_prev);
  check_pixel_weight(ct_weight, "ct_weight", 2 * C, c_prev);
  check_pixel_weight(oc_weight, "oc_weight", C, c_prev);
  const int64_t B = c_prev.size(0), HW = c_prev.size(2) * c_prev.size(3);
  auto grad_z = new_output(acts.sizes(), acts.options());
  auto grad_c_prev = new_output(c_prev.sizes(), c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(c_prev.scalar_type(), "mims_gates_backward", [&] {
    using T = scalar_t;
    auto A = planes<T>(acts), CP = planes<T>(c_prev), CN = planes<T>(c);
    auto DH = planes<T>(grad_h), DC = planes<T>(grad_c);
    auto DZ = planes<T>(grad_z), DCP = planes<T>(grad_c_prev);
    const T* ct = ct_weight.data_ptr<T>();
    const T* oc = oc_weight.data_ptr<T>();
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict wi = ct + ch * HW;
      const T* __restrict wf = ct + (C + ch) * HW;
      const T* __restrict wo = oc + ch * HW;
      const T* __restrict ai = A.at(b, ch);
      const T* __restrict ag = A.at(b, C + ch);
      const T* __restrict af = A.at(b, 2 * C + ch);
      const T* __restrict ao = A.at(b, 3 * C + ch);
      const T* __restrict cp = CP.at(b, ch);
      const T* __restrict cn = CN.at(b, ch);
      const T* __restrict dh = DH.at(b, ch);
      const T* __restrict dc = DC.at(b, ch);
      T* __restrict dzi = DZ.at(b, ch);
      T* __restrict dzg = DZ.at(b, C + ch);
      T* __restrict dzf = DZ.at(b, 2 * C + ch);
      T* __restrict dzo = DZ.at(b, 3 * C + ch);
      T* __restrict dcp = DCP.at(b, ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V c1 = load<V>(cn + k), o = load<V>(ao + k), g_h = load<V>(dh + k);
        const V tc = tanh_act(c1);
        const V d_zo = g_h * tc * o * (1 - o);
        // c reaches the loss through grad_c, through tanh(c) in h and through oc * c in o
        const V d_c = load<V>(dc + k) + g_h * o * (1 - tc * tc) + d_zo * load<V>(wo + k);
        const auto d = memory_update_backward<V>(d_c, load<V>(ai + k), load<V>(af + k),
                                                 load<V>(ag + k), load<V>(cp + k));
        store(dzi + k, d.zi);
        store(dzg + k, d.zg);
        store(dzf + k, d.zf);
        store(dzo + k, d_zo);
        store(dcp + k, d.c_prev + d.zi * load<V>(wi + k) + d.zf * load<V>(wf + k));
      });
    });
  });
  return {grad_z, grad_c_prev};
}

std::vector<at::Tensor> mim_block_gates_forward(const at::Tensor& zx, const at::Tensor& zt,
                                                const at::Tensor& zs, const at::Tensor& m_prev,
                                                const at::Tensor& n_h) {
  const int64_t C = m_prev.size(1);
  check_planes(m_prev, "m_prev", C, m_prev);
  check_planes(n_h, "n_h", C, m_prev);
  check_planes(zx, "zx", 4 * C, m_prev);
  check_planes(zt, "zt", 3 * C, m_prev);
  check_planes(zs, "zs", 4 * C, m_prev);
  const int64_t B = m_prev.size(0), H = m_prev.size(2), W = m_prev.size(3), HW = H * W;
  auto cm = new_output({B, 2 * C, H, W}, m_prev.options());
  auto o_partial = new_output({B, C, H, W}, m_prev.options());
  auto acts = new_output({B, 5 * C, H, W}, m_prev.options());
  AT_DISPATCH_FLOATING_TYPES(m_prev.scalar_type(), "mim_block_gates_forward", [&] {
    using T = scalar_t;
    auto X = planes<T>(zx), Tt = planes<T>(zt), S = planes<T>(zs), MP = planes<T>(m_prev);
    auto N = planes<T>(n_h), CM = planes<T>(cm), OP = planes<T>(o_partial), A = planes<T>(acts);
    const T forget = static_cast<T>(kForgetBias);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict xi = X.at(b, ch);
      const T* __restrict xg = X.at(b, C + ch);
      const T* __restrict xf = X.at(b, 2 * C + ch);
      const T* __restrict xo = X.at(b, 3 * C + ch);
      const T* __restrict ti = Tt.at(b, ch);
      const T* __restrict tg = Tt.at(b, C + ch);
      const T* __restrict to = Tt.at(b, 2 * C + ch);
      const T* __restrict si = S.at(b, ch);
      const T* __restrict sg = S.at(b, C + ch);
      const T* __restrict sf = S.at(b, 2 * C + ch);
      const T* __restrict mp = MP.at(b, ch);
      const T* __restrict nh = N.at(b, ch);
      T* __restrict cn = CM.at(b, ch);
      T* __restrict mn = CM.at(b, C + ch);
      T* __restrict op = OP.at(b, ch);
      T* __restrict a_ic = A.at(b, ch);
      T* __restrict a_gc = A.at(b, C + ch);
      T* __restrict a_im = A.at(b, 2 * C + ch);
      T* __restrict a_fm = A.at(b, 3 * C + ch);
      T* __restrict a_gm = A.at(b, 4 * C + ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        const V x_i = load<V>(xi + k), x_g = load<V>(xg + k);
        const auto u = memory_update<V>(x_i + load<V>(si + k),
                                        load<V>(xf + k) + load<V>(sf + k) + forget,
                                        x_g + load<V>(sg + k), load<V>(mp + k));
        const V i = sigmoid(x_i + load<V>(ti + k)), g = tanh_act(x_g + load<V>(tg + k));
        store(cn + k, load<V>(nh + k) + i * g);
        store(mn + k, u.c);
        store(op + k, load<V>(xo + k) + load<V>(to + k));
        store(a_ic + k, i);
        store(a_gc + k, g);
        store(a_im + k, u.i);
        store(a_fm + k, u.f);
        store(a_gm + k, u.g);
      });
    });
  });
  return {cm, o_partial, acts};
}

std::vector<at::Tensor> mim_block_gates_backward(const at::Tensor& grad_cm,
                                                 const at::Tensor& grad_o_partial,
                                                 const at::Tensor& acts,
                                                 const at::Tensor& m_prev) {
  const int64_t C = m_prev.size(1);
  check_planes(m_prev, "m_prev", C, m_prev);
  check_planes(acts, "acts", 5 * C, m_prev);
  check_planes(grad_cm, "grad_cm", 2 * C, m_prev);
  check_planes(grad_o_partial, "grad_o_partial", C, m_prev);
  const int64_t B = m_prev.size(0), H = m_prev.size(2), W = m_prev.size(3), HW = H * W;
  auto grad_zx = new_output({B, 4 * C, H, W}, m_prev.options());
  auto grad_zt = new_output({B, 3 * C, H, W}, m_prev.options());
  auto grad_zs = new_output({B, 4 * C, H, W}, m_prev.options());
  auto grad_m_prev = new_output({B, C, H, W}, m_prev.options());
  AT_DISPATCH_FLOATING_TYPES(m_prev.scalar_type(), "mim_block_gates_backward", [&] {
    using T = scalar_t;
    auto A = planes<T>(acts), MP = planes<T>(m_prev), DCM = planes<T>(grad_cm);
    auto DOP = planes<T>(grad_o_partial), DX = planes<T>(grad_zx), DT = planes<T>(grad_zt);
    auto DS = planes<T>(grad_zs), DMP = planes<T>(grad_m_prev);
    for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
      const T* __restrict a_ic = A.at(b, ch);
      const T* __restrict a_gc = A.at(b, C + ch);
      const T* __restrict a_im = A.at(b, 2 * C + ch);
      const T* __restrict a_fm = A.at(b, 3 * C + ch);
      const T* __restrict a_gm = A.at(b, 4 * C + ch);
      const T* __restrict dc = DCM.at(b, ch);
      const T* __restrict dm = DCM.at(b, C + ch);
      const T* __restrict dop = DOP.at(b, ch);
      const T* __restrict mp = MP.at(b, ch);
      T* __restrict dxi = DX.at(b, ch);
      T* __restrict dxg = DX.at(b, C + ch);
      T* __restrict dxf = DX.at(b, 2 * C + ch);
      T* __restrict dxo = DX.at(b, 3 * C + ch);
      T* __restrict dti = DT.at(b, ch);
      T* __restrict dtg = DT.at(b, C + ch);
      T* __restrict dto = DT.at(b, 2 * C + ch);
      T* __restrict dsi = DS.at(b, ch);
      T* __restrict dsg = DS.at(b, C + ch);
      T* __restrict dsf = DS.at(b, 2 * C + ch);
      T* __restrict dso = DS.at(b, 3 * C + ch);
      T* __restrict dmp = DMP.at(b, ch);
      lane_loop<T>(HW, [&](auto lane, int64_t k) {
        using V = typename decltype(lane)::type;
        // c = n_h + i g: the memory update with f = 0 (n_h's gradient is dc itself)
        const auto d = memory_update_backward<V>(load<V>(dc + k), load<V>(a_ic + k), V{},
                                                 load<V>(a_gc + k), V{});
        const auto e = memory_update_backward<V>(load<V>(dm + k), load<V>(a_im + k),
                                                 load<V>(a_fm + k), load<V>(a_gm + k),
                                                 load<V>(mp + k));
        const V d_o = load<V>(dop + k);
        // i_x and g_x feed both memories; f_x only m; zt only c; zs only m
        store(dxi + k, d.zi + e.zi);
        store(dxg + k, d.zg + e.zg);
        store(dxf + k, e.zf);
        store(dxo + k, d_o);
        store(dti + k, d.zi);
        store(dtg + k, d.zg);
        store(dto + k, d_o);
        store(dsi + k, e.zi);
        store(dsg + k, e.zg);
        store(dsf + k, e.zf);
        store(dso + k, V{});  // o_s is read by the output gate, not here
        store(dmp + k, e.c_prev);
      });
    });
  });
  return {grad_zx, grad_zt, grad_zs, grad_m_prev};
}

}  // namespace fastcells
