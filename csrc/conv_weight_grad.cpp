// Winograd weight gradient of a stride-1 convolution, float32: F(3 x 3, 4 x 4) for K = 3 and
// F(5 x 5, 2 x 2) for K = 5 on the 6-point set, F(3 x 3, 6 x 6) and F(5 x 5, 4 x 4) on the
// 8-point set (winograd.h).
//
//   dW[o, c, i, j] = sum_{b, y, x} dz[b, o, y, x] * x_pad[b, c, y + i, x + j]
//
// is, per S x S tile of dz, a correlation of an A x A patch of x (A = K + S - 1) with the
// tile: a Winograd F(K, S) in each dimension. With V = BT d BT^T (the patch) and
// U = G g G^T (the tile), the sum over all tiles and the batch is A*A matrix products
//
//   M[p] (Cout x Cin) = sum_t U[p, :, t] V[p, :, t]^T,     dW = AT M AT^T (per (o, c)),
//
// A*A multiplies per (o, c) and tile instead of K*K*S*S: 36 vs 144 (F(3, 4)), 36 vs 100
// (F(5, 2)), 64 vs 324 (F(3, 6)), 64 vs 400 (F(5, 4)). The transforms run here on eight (or
// four) tiles at once; the products are at::baddbmm (MKL) per chunk of tile rows.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <vector>

#include "planes.h"
#include "winograd.h"

namespace fastcells {
namespace {


// Kernel K x K from S x S tiles of dz, on A = K + S - 1 points: the 6-point set here, the
// primary template (the 8-point set) below.
template <int K, int S>
struct Taps;

template <>
struct Taps<3, 4> {
  static constexpr int K = 3, S = 4;
  static constexpr int A = 6;
  static constexpr float G[A][S] = {{0.25f, 0, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6, 1.f / 3},
                                    {1.f / 24, -1.f / 12, 1.f / 6, -1.f / 3},
                                    {0, 0, 0, 1}};
  static constexpr float AT[3][A] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 1}};
};

template <>
struct Taps<5, 2> {
  static constexpr int K = 5, S = 2;
  static constexpr int A = 6;
  static constexpr float G[A][S] = {{0.25f, 0},       {-1.f / 6, -1.f / 6}, {-1.f / 6, 1.f / 6},
                                    {1.f / 24, 1.f / 12}, {1.f / 24, -1.f / 12}, {0, 1}};
  static constexpr float AT[5][A] = {{1, 1, 1, 1, 1, 0},
                                     {0, 1, -1, 2, -2, 0},
                                     {0, 1, 1, 4, 4, 0},
                                     {0, 1, -1, 8, -8, 0},
                                     {0, 1, 1, 16, 16, 1}};
};

// The 8-point set (winograd.h): F(3x3, 6x6) and F(5x5, 4x4).
template <int K, int S>
struct Taps {
  static_assert(K + S - 1 == 8, "F(K, S) on 8 points: K + S - 1 = 8");
  static constexpr int A = 8;
  static constexpr winograd::Matrix8<S> G = winograd::g8<S>();
  static constexpr winograd::Matrix8<8> AT = winograd::at8_table<K>();
};

// U[p, o, n] for the tile rows r in [r0, r1), n = (r - r0) * TWp + tx: the S x S tiles of
// dz (zero beyond Ho x Wo, and for the padding tiles), transformed.
template <int K, int S, int Ln>
void transform_grad(const float* dz, float* u, int64_t O, int64_t Ho, int64_t Wo, int64_t TH,
                    int64_t TW, int64_t r0, int64_t r1) {
  using T = Taps<K, S>;
  constexpr int A = T::A;
  using V = winograd::Vec<Ln>;
  const int64_t TWp = winograd::padded_tiles(TW, Ln), R = r1 - r0, N = R * TWp;
  at::parallel_for(0, O * R, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> phase(S * S * TWp);  // phase[rr][s][t] = dz[S ty + rr, S t + s]
    for (int64_t orow = begin; orow < end; ++orow) {
      const int64_t o = orow / R, r = r0 + orow % R;
      const int64_t b = r / TH, ty = r % TH;
      const float* plane = dz + (b * O + o) * Ho * Wo;
      for (int rr = 0; rr < S; ++rr) {
        const int64_t y = S * ty + rr;
        float* ph = phase.data() + rr * S * TWp;
        if (y < Ho)
          winograd::deinterleave_row<S>(plane + y * Wo, ph, Wo, 0, TWp);
        else
          std::fill(ph, ph + S * TWp, 0.f);
      }
      float* out = u + o * N + (r - r0) * TWp;
      for (int64_t t0 = 0; t0 < TWp; t0 += Ln) {
        V g[S][S];
        for (int rr = 0; rr < S; ++rr)
          for (int s = 0; s < S; ++s) g[rr][s] = winograd::load<Ln>(phase.data() + (rr * S + s) * TWp + t0);
        V col[S][A];  // col[s][p] = (G g)[p, s]
        for (int s = 0; s < S; ++s)
          for (int p = 0; p < A; ++p) {
            V acc = T::G[p][0] * g[0][s];
            for (int rr = 1; rr < S; ++rr) acc += T::G[p][rr] * g[rr][s];
            col[s][p] = acc;
          }
        for (int p = 0; p < A; ++p)
          for (int q = 0; q < A; ++q) {
            V acc = T::G[q][0] * col[0][p];
            for (int s = 1; s < S; ++s) acc += T::G[q][s] * col[s][p];
            winograd::store<Ln>(out + (p * A + q) * O * N + t0, acc);
          }
      }
    }
  });
}

// dW[o, c, i, j] = sum_{p, q} AT[i][p] M[p * A + q, o, c] AT[j][q].
template <int K, int S>
void transform_output(const float* m, float* dw, int64_t O, int64_t C) {
  using T = Taps<K, S>;
  constexpr int A = T::A;
  const int64_t OC = O * C;
  at::parallel_for(0, OC, 256, [&](int64_t begin, int64_t end) {
    for (int64_t oc = begin; oc < end; ++oc) {
      float mm[A][A];
      for (int p = 0; p < A; ++p)
        for (int q = 0; q < A; ++q) mm[p][q] = m[(p * A + q) * OC + oc];
      float t1[K][A];
      for (int i = 0; i < K; ++i)
        for (int q = 0; q < A; ++q) {
          float acc = 0.f;
          for (int p = 0; p < A; ++p) acc += T::AT[i][p] * mm[p][q];
          t1[i][q] = acc;
        }
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          float acc = 0.f;
          for (int q = 0; q < A; ++q) acc += t1[i][q] * T::AT[j][q];
          dw[oc * K * K + i * K + j] = acc;
        }
    }
  });
}

// The summed gradient of every (x, dz) pair (one shape for all): each pair's rows in
// chunks, and the chunks of all pairs one parallel loop, so a sequence's steps pay for one
// set of per-thread sums and one output transform.
template <int K, int S, int Ln>
at::Tensor weight_grad_lanes(const std::vector<at::Tensor>& xs,
                             const std::vector<at::Tensor>& dzs, int64_t pad,
                             int64_t chunk_floats) {
  constexpr int A = Taps<K, S>::A;
  const at::Tensor& x = xs[0];
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = dzs[0].size(1), Ho = dzs[0].size(2), Wo = dzs[0].size(3);
  const int64_t TH = (Ho + S - 1) / S, TW = (Wo + S - 1) / S, rows = B * TH;
  const int64_t TWp = winograd::padded_tiles(TW, Ln);
  const int64_t per_row = A * A * (C + O) * TWp;
  const int64_t chunk = winograd::chunk_rows(
      rows, per_row, TWp, A * A * O * C,
      chunk_floats > 0 ? std::max<int64_t>(1, chunk_floats / per_row) : 0);
  const int64_t pair_chunks = (rows + chunk - 1) / chunk;
  const int64_t chunks = pair_chunks * static_cast<int64_t>(xs.size());
  // One chunk per task, in its thread's workspace, summed into that thread's M; the
  // threads' M are added at the end (a fixed order: deterministic for a thread count).
  const int threads = chunks > 1 ? at::get_num_threads() : 1;
  auto partial = at::zeros({threads, A * A, O, C}, x.options());
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    float* ws = winograd::workspace(chunk * per_row).data_ptr<float>();
    auto m = partial[chunks > 1 ? at::get_thread_num() : 0];
    for (int64_t task = begin; task < end; ++task) {
      const int64_t pair = task / pair_chunks, ci = task % pair_chunks;
      const int64_t r0 = ci * chunk, r1 = std::min(rows, r0 + chunk), N = (r1 - r0) * TWp;
      auto v = at::from_blob(ws, {A * A, C, N}, x.options());
      auto u = at::from_blob(ws + A * A * C * N, {A * A, O, N}, x.options());
      winograd::transform_input<S, A, Ln>(xs[pair].data_ptr<float>(), ws, C, H, W, pad, TH,
                                          TW, r0, r1);
      transform_grad<K, S, Ln>(dzs[pair].data_ptr<float>(), ws + A * A * C * N, O, Ho, Wo, TH,
                               TW, r0, r1);
      m.baddbmm_(u, v.transpose(1, 2));
    }
  });
  auto m = threads > 1 ? partial.sum(0) : partial[0];
  auto dw = new_output({O, C, K, K}, x.options());
  transform_output<K, S>(m.data_ptr<float>(), dw.data_ptr<float>(), O, C);
  return dw;
}

template <int K, int S>
at::Tensor weight_grad(const std::vector<at::Tensor>& xs, const std::vector<at::Tensor>& dzs,
                       int64_t pad, int64_t chunk_floats) {
  return winograd::lanes_for((dzs[0].size(3) + S - 1) / S) == 4
             ? weight_grad_lanes<K, S, 4>(xs, dzs, pad, chunk_floats)
             : weight_grad_lanes<K, S, 8>(xs, dzs, pad, chunk_floats);
}

}  // namespace

// sum_i dW(xs[i], dzs[i]): every xs[i] (B, C, H, W) and dzs[i] (B, O, Ho, Wo) float32, one
// shape for all; Ho = H + 2 pad - K + 1 (same for W). chunk_floats: floats of U and V per
// chunk (0: the rule of winograd::chunk_rows), a knob for tests. points: 6 (F(3x3, 4x4),
// F(5x5, 2x2)) or 8 (F(3x3, 6x6), F(5x5, 4x4)).
at::Tensor conv_weight_grad_winograd_sum(const std::vector<at::Tensor>& xs,
                                         const std::vector<at::Tensor>& dzs, int64_t kernel,
                                         int64_t pad, int64_t chunk_floats, int64_t points) {
  TORCH_CHECK(!xs.empty() && xs.size() == dzs.size(),
              "conv_weight_grad_winograd: one dz per x (at least one), got ", xs.size(),
              " and ", dzs.size());
  TORCH_CHECK(kernel == 3 || kernel == 5, "conv_weight_grad_winograd: kernel 3 or 5");
  TORCH_CHECK(points == 6 || points == 8, "conv_weight_grad_winograd: points 6 or 8, got ",
              points);
  std::vector<at::Tensor> xc, dzc;
  for (size_t i = 0; i < xs.size(); ++i) {
    const at::Tensor &x = xs[i], &dz = dzs[i];
    TORCH_CHECK(x.scalar_type() == at::kFloat && dz.scalar_type() == at::kFloat,
                "conv_weight_grad_winograd: float32 only");
    TORCH_CHECK(x.dim() == 4 && dz.dim() == 4 && x.size(0) == dz.size(0),
                "conv_weight_grad_winograd: x (B, C, H, W) and dz (B, O, Ho, Wo)");
    TORCH_CHECK(x.sizes() == xs[0].sizes() && dz.sizes() == dzs[0].sizes(),
                "conv_weight_grad_winograd: pair ", i, " has other shapes than pair 0");
    TORCH_CHECK(pad >= 0 && dz.size(2) == x.size(2) + 2 * pad - kernel + 1 &&
                    dz.size(3) == x.size(3) + 2 * pad - kernel + 1,
                "conv_weight_grad_winograd: dz's size does not match x, kernel and pad");
    xc.push_back(x.contiguous());
    dzc.push_back(dz.contiguous());
  }
  if (points == 8)
    return kernel == 3 ? weight_grad<3, 6>(xc, dzc, pad, chunk_floats)
                       : weight_grad<5, 4>(xc, dzc, pad, chunk_floats);
  return kernel == 3 ? weight_grad<3, 4>(xc, dzc, pad, chunk_floats)
                     : weight_grad<5, 2>(xc, dzc, pad, chunk_floats);
}

at::Tensor conv_weight_grad_winograd(const at::Tensor& x, const at::Tensor& dz, int64_t kernel,
                                     int64_t pad, int64_t chunk_floats, int64_t points) {
  return conv_weight_grad_winograd_sum({x}, {dz}, kernel, pad, chunk_floats, points);
}

}  // namespace fastcells
