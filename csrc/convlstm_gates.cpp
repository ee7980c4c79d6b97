// Fused ConvLSTM gate math (also the gate stage of Conv-TT-LSTM), CELLS.md sections 1 and 4.
//
//   z = [zi; zf; zo; zg] (B, 4C, H, W), gate order i, f, o, g
//   c = sigmoid(zf + forget_bias + wcf*c_prev) * c_prev + sigmoid(zi + wci*c_prev) * tanh(zg)
//   h = sigmoid(zo + wco*c) * tanh(c)
//
// Forward reads z and c_prev once and writes h, c and the four gate activations (i, f, o, g
// in z's layout). Autograd keeps those activations instead of z (the same 4C bytes; z is
// freed), plus c_prev and c, so the backward evaluates one tanh instead of five
// transcendentals per element.
#include "gates.h"
#include "lstm_math.h"
#include "planes.h"
#include "simd.h"

namespace fastcells {

namespace {

template <typename T>
struct Peephole {
  T ci = 0, cf = 0, co = 0;
};

template <typename T>
Peephole<T> peephole_at(const T* w, int64_t channels, int64_t c) {
  Peephole<T> p;
  if (w != nullptr) {
    p.ci = w[c];
    p.cf = w[channels + c];
    p.co = w[2 * channels + c];
  }
  return p;
}

template <typename T>
void forward_kernel(const at::Tensor& z, const at::Tensor& c_prev, const T* peephole,
                    T forget_bias, at::Tensor& h, at::Tensor& c, at::Tensor& acts) {
  const int64_t B = c_prev.size(0), C = c_prev.size(1), HW = c_prev.size(2) * c_prev.size(3);
  auto Z = planes<T>(z), CP = planes<T>(c_prev), Hs = planes<T>(h), Cs = planes<T>(c);
  auto A = planes<T>(acts);
  for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
    const T* __restrict zi = Z.at(b, ch);
    const T* __restrict zf = Z.at(b, C + ch);
    const T* __restrict zo = Z.at(b, 2 * C + ch);
    const T* __restrict zg = Z.at(b, 3 * C + ch);
    const T* __restrict cp = CP.at(b, ch);
    T* __restrict hp = Hs.at(b, ch);
    T* __restrict cn = Cs.at(b, ch);
    T* __restrict ai = A.at(b, ch);
    T* __restrict af = A.at(b, C + ch);
    T* __restrict ao = A.at(b, 2 * C + ch);
    T* __restrict ag = A.at(b, 3 * C + ch);
    const Peephole<T> w = peephole_at(peephole, C, ch);
    lane_loop<T>(HW, [&](auto lane, int64_t k) {
      using V = typename decltype(lane)::type;
      const V c0 = load<V>(cp + k);
      const auto u = memory_update<V>(load<V>(zi + k) + w.ci * c0,
                                      load<V>(zf + k) + forget_bias + w.cf * c0,
                                      load<V>(zg + k), c0);
      const V o = sigmoid(load<V>(zo + k) + w.co * u.c);
      store(cn + k, u.c);
      store(hp + k, o * tanh_act(u.c));
      store(ai + k, u.i);
      store(af + k, u.f);
      store(ao + k, o);
      store(ag + k, u.g);
    });
  });
}

template <typename T>
void backward_kernel(const at::Tensor& grad_h, const at::Tensor& grad_c, const at::Tensor& acts,
                     const at::Tensor& c_prev, const at::Tensor& c, const T* peephole,
                     at::Tensor& grad_z, at::Tensor& grad_c_prev, T* grad_peephole_partial) {
  const int64_t B = c_prev.size(0), C = c_prev.size(1), HW = c_prev.size(2) * c_prev.size(3);
  auto A = planes<T>(acts), CP = planes<T>(c_prev), CN = planes<T>(c);
  auto DH = planes<T>(grad_h), DC = planes<T>(grad_c);
  auto DZ = planes<T>(grad_z), DCP = planes<T>(grad_c_prev);
  for_each_plane(B, C, HW, [&](int64_t b, int64_t ch) {
    const T* __restrict ai = A.at(b, ch);
    const T* __restrict af = A.at(b, C + ch);
    const T* __restrict ao = A.at(b, 2 * C + ch);
    const T* __restrict ag = A.at(b, 3 * C + ch);
    const T* __restrict cp = CP.at(b, ch);
    const T* __restrict cn = CN.at(b, ch);
    const T* __restrict dh = DH.at(b, ch);
    const T* __restrict dc = DC.at(b, ch);
    T* __restrict dzi = DZ.at(b, ch);
    T* __restrict dzf = DZ.at(b, C + ch);
    T* __restrict dzo = DZ.at(b, 2 * C + ch);
    T* __restrict dzg = DZ.at(b, 3 * C + ch);
    T* __restrict dcp = DCP.at(b, ch);
    const Peephole<T> w = peephole_at(peephole, C, ch);
    LaneSum<T> sum_ci, sum_cf, sum_co;
    lane_loop<T>(HW, [&](auto lane, int64_t k) {
      using V = typename decltype(lane)::type;
      const V c0 = load<V>(cp + k), c1 = load<V>(cn + k), o = load<V>(ao + k);
      const V dhk = load<V>(dh + k);
      const V tc = tanh_act(c1);
      const V d_zo = dhk * tc * o * (1 - o);
      const V d_c = load<V>(dc + k) + dhk * o * (1 - tc * tc) + d_zo * w.co;
      const auto d = memory_update_backward<V>(d_c, load<V>(ai + k), load<V>(af + k),
                                               load<V>(ag + k), c0);
      store(dzi + k, d.zi);
      store(dzf + k, d.zf);
      store(dzo + k, d_zo);
      store(dzg + k, d.zg);
      store(dcp + k, d.c_prev + d.zi * w.ci + d.zf * w.cf);
      if (grad_peephole_partial != nullptr) {
        sum_ci.add(d.zi * c0);
        sum_cf.add(d.zf * c0);
        sum_co.add(d_zo * c1);
      }
    });
    if (grad_peephole_partial != nullptr) {
      // (B, 3, C) partial sums, reduced over the batch by the caller.
      T* out = grad_peephole_partial + b * 3 * C;
      out[ch] = sum_ci.total();
      out[C + ch] = sum_cf.total();
      out[2 * C + ch] = sum_co.total();
    }
  });
}

// `gates` is z (forward) or the saved activations (backward): both (B, 4C, H, W).
void check_common(const at::Tensor& gates, const char* name, const at::Tensor& c_prev,
                  const c10::optional<at::Tensor>& peephole) {
  check_planes(c_prev, "c_prev", c_prev.size(1), c_prev);
  check_planes(gates, name, 4 * c_prev.size(1), c_prev);
  if (peephole.has_value()) {
    TORCH_CHECK(peephole->dim() == 2 && peephole->size(0) == 3 &&
                    peephole->size(1) == c_prev.size(1) && peephole->is_contiguous(),
                "peephole: expected a contiguous (3, ", c_prev.size(1), ") tensor");
    TORCH_CHECK(peephole->scalar_type() == c_prev.scalar_type(), "peephole: dtype mismatch");
  }
}

}  // namespace

std::vector<at::Tensor> convlstm_gates_forward(const at::Tensor& z, const at::Tensor& c_prev,
                                               const c10::optional<at::Tensor>& peephole,
                                               double forget_bias) {
  check_common(z, "z", c_prev, peephole);
  auto h = new_output(c_prev.sizes(), c_prev.options());
  auto c = new_output(c_prev.sizes(), c_prev.options());
  auto acts = new_output(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "convlstm_gates_forward", [&] {
    forward_kernel<scalar_t>(z, c_prev,
                             peephole.has_value() ? peephole->data_ptr<scalar_t>() : nullptr,
                             static_cast<scalar_t>(forget_bias), h, c, acts);
  });
  return {h, c, acts};
}

std::vector<at::Tensor> convlstm_gates_backward(const at::Tensor& grad_h,
                                                const at::Tensor& grad_c, const at::Tensor& acts,
                                                const at::Tensor& c_prev, const at::Tensor& c,
                                                const c10::optional<at::Tensor>& peephole) {
  check_common(acts, "acts", c_prev, peephole);
  check_planes(c, "c", c_prev.size(1), c_prev);
  check_planes(grad_h, "grad_h", c_prev.size(1), c_prev);
  check_planes(grad_c, "grad_c", c_prev.size(1), c_prev);
  auto grad_z = new_output(acts.sizes(), acts.options());
  auto grad_c_prev = new_output(c_prev.sizes(), c_prev.options());
  at::Tensor partial, grad_peephole;
  if (peephole.has_value())
    partial = new_output({c_prev.size(0), 3, c_prev.size(1)}, c_prev.options());
  AT_DISPATCH_FLOATING_TYPES(acts.scalar_type(), "convlstm_gates_backward", [&] {
    backward_kernel<scalar_t>(grad_h, grad_c, acts, c_prev, c,
                              peephole.has_value() ? peephole->data_ptr<scalar_t>() : nullptr,
                              grad_z, grad_c_prev,
                              peephole.has_value() ? partial.data_ptr<scalar_t>() : nullptr);
  });
  if (peephole.has_value()) grad_peephole = partial.sum(0);
  return {grad_z, grad_c_prev, grad_peephole};
}

}  // namespace fastcells
