// Winograd forward convolution, stride 1, float32: F(4 x 4, 3 x 3) and F(2 x 2, 5 x 5) on 6
// points, F(6 x 6, 3 x 3) and F(4 x 4, 5 x 5) on 8.
//
//   y[b, o, Y, X] = bias[o] + sum_{c, i, j} w[o, c, i, j] * x_pad[b, c, Y + i, X + j]
//
// F(4, 3) and F(2, 5) use the 6-point Toom-Cook set 0, 1, -1, 2, -2, infinity (the set of
// the weight gradient in conv_weight_grad.cpp, whose error measured 1-2x oneDNN's); F(6, 3)
// and F(4, 5) the 8-point set that adds 1/2 and -1/2. Per output tile of M x M values an
// A x A input patch d (A = M + K - 1: 6 or 8) and the kernel g are transformed, multiplied
// point-wise and summed over input channels, and transformed back:
//
//   Y = AT [ sum_c (G g G^T) (.) (BT d BT^T) ] AT^T,
//
// A*A multiplies per tile and channel pair instead of M*M*K*K: 36 vs 144 (F(4, 3)), 36 vs 100
// (F(2, 5)), 64 vs 324 (F(6, 3)), 64 vs 400 (F(4, 5)). The larger tiles cost rounding: the
// 8-point set's error is about 1.6x the 6-point set's (3-4.5e-6 against 2-2.7e-6 at 64-128
// input channels), and F(6, 3) measured slower than F(4, 3) on this CPU (its transforms grow
// faster than its products shrink); F(4, 5) is 1.5-2.3x oneDNN where F(2, 5) is 1.0-1.45x
// (benchmarks/NOTES.md). The sum over channels at each of the A*A points is a matrix product
// (Cout x Cin) @ (Cin x tiles): one at::bmm (MKL) per chunk of tile rows. The chunk is kept
// small (a few hundred tiles) so the transformed input and products stay in cache between the
// transforms and the product: the whole transformed output of a 64 x 64 layer would be 2-9x
// the layer and writing it out cost as much as the products (benchmarks/NOTES.md).
//
// The data gradient of a stride-1 convolution is this same forward of the output gradient
// with the flipped, transposed kernel and padding K - 1 - pad (fastcells/ops/conv.py).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

#include "planes.h"
#include "winograd.h"

namespace fastcells {
namespace {


// F(M x M, K x K): output tile M x M, kernel K x K, transformed tile A x A, A = M + K - 1
// (6: the points 0, +-1, +-2, infinity; 8: also +-1/2). G (A x K) transforms the kernel, at()
// is AT (M x A) on one column. The primary template is the 8-point set, after at8 below.
template <int M, int K>
struct Tiles;

template <>
struct Tiles<4, 3> {
  static constexpr int K = 3;
  static constexpr int A = 6;
  static constexpr float G[A][K] = {{0.25f, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6},
                                    {1.f / 24, -1.f / 12, 1.f / 6},
                                    {0, 0, 1}};
  // o = AT m for one column m0..m5
  template <typename V>
  static inline void at(const V* m, V* o) {
    const V a = m[1] + m[2], s = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4];
    o[0] = m[0] + a + c;
    o[1] = s + 2.f * e;
    o[2] = a + 4.f * c;
    o[3] = s + 8.f * e + m[5];
  }
};

template <>
struct Tiles<2, 5> {
  static constexpr int K = 5;
  static constexpr int A = 6;
  static constexpr float G[A][K] = {{0.25f, 0, 0, 0, 0},
                                    {-1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6, 1.f / 6, -1.f / 6},
                                    {1.f / 24, 1.f / 12, 1.f / 6, 1.f / 3, 2.f / 3},
                                    {1.f / 24, -1.f / 12, 1.f / 6, -1.f / 3, 2.f / 3},
                                    {0, 0, 0, 0, 1}};
  template <typename V>
  static inline void at(const V* m, V* o) {
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];
    o[1] = m[1] - m[2] + 2.f * (m[3] - m[4]) + m[5];
  }
};

// o = AT m on the 8-point set for the first `M` outputs: row i is 1, (+-1), (+-2)^i,
// (+-1/2)^i, and the infinity point in the last row.
template <int M, typename V>
static inline void at8(const V* m, V* o) {
  const V a = m[1] + m[2], s = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4],
           f = m[5] + m[6], h = m[5] - m[6];
  o[0] = m[0] + a + c + f;
  o[1] = s + 2.f * e + 0.5f * h;
  o[2] = a + 4.f * c + 0.25f * f;
  o[3] = s + 8.f * e + 0.125f * h;
  if constexpr (M == 6) {
    o[4] = a + 16.f * c + 0.0625f * f;
    o[5] = s + 32.f * e + 0.03125f * h;
  }
  o[M - 1] += m[7];
}

// The 8-point set: F(6x6, 3x3) and F(4x4, 5x5).
template <int M, int K>
struct Tiles {
  static_assert(M + K - 1 == 8, "F(M, K) on 8 points: M + K - 1 = 8");
  static constexpr int A = 8;
  static constexpr winograd::Matrix8<K> G = winograd::g8<K>();
  template <typename V>
  static inline void at(const V* m, V* o) {
    at8<M>(m, o);
  }
};

// Ut[p, o, c] = (G g G^T)[p] for g = w[o, c] (K x K), eight (o, c) pairs per vector: they
// are adjacent in Ut, so each transformed value is one store. One pair at a time it cost
// 4-8 ms of a 16 x 16 frame's 3 x 3 forward at B=16, 128 -> 512 (6 points 19.3 -> 15.0 ms,
// 8 points 33.0 -> 25.3 ms; 5 x 5: 39.2 -> 37.8 ms), where every call transforms
// 128 x 512 kernels for only 16 x 16 x 16 output tiles.
template <int M, int K>
at::Tensor transform_weight(const at::Tensor& w) {
  using T = Tiles<M, K>;
  using V = winograd::Vec<8>;
  constexpr int A = T::A;
  const int64_t O = w.size(0), C = w.size(1), OC = O * C;
  auto ut = at::empty({A * A, O, C}, w.options());
  const float* g = w.data_ptr<float>();
  float* u = ut.data_ptr<float>();
  const int64_t groups = (OC + 7) / 8;
  at::parallel_for(0, groups, 16, [&](int64_t begin, int64_t end) {
    for (int64_t grp = begin; grp < end; ++grp) {
      const int64_t oc0 = grp * 8, lanes = std::min<int64_t>(8, OC - oc0);
      float kk[K * K][8] = {};  // the eight kernels, transposed: kk[i * K + j][lane]
      for (int64_t l = 0; l < lanes; ++l)
        for (int e = 0; e < K * K; ++e) kk[e][l] = g[(oc0 + l) * K * K + e];
      V t1[A][K];
      for (int p = 0; p < A; ++p)
        for (int j = 0; j < K; ++j) {
          V acc = T::G[p][0] * winograd::load<8>(kk[j]);
          for (int i = 1; i < K; ++i) acc += T::G[p][i] * winograd::load<8>(kk[i * K + j]);
          t1[p][j] = acc;
        }
      for (int p = 0; p < A; ++p)
        for (int q = 0; q < A; ++q) {
          V acc = T::G[q][0] * t1[p][0];
          for (int j = 1; j < K; ++j) acc += T::G[q][j] * t1[p][j];
          float* dst = u + (p * A + q) * OC + oc0;
          if (lanes == 8) {
            winograd::store<8>(dst, acc);
          } else {
            float tmp[8];
            winograd::store<8>(tmp, acc);
            std::memcpy(dst, tmp, lanes * sizeof(float));
          }
        }
    }
  });
  return ut;
}

// y[b, o, M ty + i, M tx + j] = bias[o] + (AT m AT^T)[i, j] for the products m[p, o, n],
// n = (r - r0) * TWp + tx.
template <int M, int K, int Ln>
void transform_output(const float* m, const float* bias, float* y, int64_t O, int64_t Ho,
                      int64_t Wo, int64_t TH, int64_t TW, int64_t r0, int64_t r1) {
  using T = Tiles<M, K>;
  constexpr int A = T::A;
  using V = winograd::Vec<Ln>;
  const int64_t TWp = winograd::padded_tiles(TW, Ln), R = r1 - r0, N = R * TWp;
  at::parallel_for(0, O * R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t orow = begin; orow < end; ++orow) {
      const int64_t o = orow / R, r = r0 + orow % R;
      const int64_t b = r / TH, ty = r % TH;
      const float b0 = bias ? bias[o] : 0.f;
      float* plane = y + (b * O + o) * Ho * Wo;
      const float* src = m + o * N + (r - r0) * TWp;
      for (int64_t t0 = 0; t0 < TW; t0 += Ln) {  // the padding tiles are not written
        V col[A][M];  // col[q][i] = (AT m)[i, q]
        for (int q = 0; q < A; ++q) {
          V mm[A];
          for (int p = 0; p < A; ++p) mm[p] = winograd::load<Ln>(src + (p * A + q) * O * N + t0);
          T::at(mm, col[q]);
        }
        const int64_t width = std::min<int64_t>(M * Ln, Wo - M * t0);
        for (int i = 0; i < M; ++i) {
          const int64_t yy = M * ty + i;
          if (yy >= Ho) break;
          V row[A], out[M];
          for (int q = 0; q < A; ++q) row[q] = col[q][i];
          T::at(row, out);
          float line[M * Ln];  // the tiles' row i, interleaved back to columns
          for (int l = 0; l < Ln; ++l)
            for (int j = 0; j < M; ++j) line[M * l + j] = out[j][l] + b0;
          std::copy(line, line + width, plane + yy * Wo + M * t0);
        }
      }
    }
  });
}

template <int M, int K, int Ln>
at::Tensor forward_lanes(const at::Tensor& x, const at::Tensor& w, const float* bias, int64_t pad,
                   int64_t chunk_tiles) {
  constexpr int A = Tiles<M, K>::A;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), O = w.size(0);
  const int64_t Ho = H + 2 * pad - K + 1, Wo = W + 2 * pad - K + 1;
  auto y = new_output({B, O, Ho, Wo}, x.options());
  if (y.numel() == 0) return y;
  const int64_t TH = (Ho + M - 1) / M, TW = (Wo + M - 1) / M, rows = B * TH;
  const int64_t TWp = winograd::padded_tiles(TW, Ln), per_row = A * A * (C + O) * TWp;
  const int64_t chunk = winograd::chunk_rows(
      rows, per_row, TWp, A * A * O * C,
      chunk_tiles > 0 ? std::max<int64_t>(1, chunk_tiles / TWp) : 0);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  auto ut = transform_weight<M, K>(w);
  // One chunk per task, each in its thread's workspace (the transforms and the product then
  // run single-threaded, nested); a single chunk runs on all threads.
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    float* ws = winograd::workspace(chunk * per_row).data_ptr<float>();
    for (int64_t ci = begin; ci < end; ++ci) {
      const int64_t r0 = ci * chunk, r1 = std::min(rows, r0 + chunk), N = (r1 - r0) * TWp;
      float* vp = ws;
      float* mp = ws + A * A * C * N;
      winograd::transform_input<M, A, Ln>(x.data_ptr<float>(), vp, C, H, W, pad, TH, TW, r0, r1);
      auto v = at::from_blob(vp, {A * A, C, N}, x.options());
      auto m = at::from_blob(mp, {A * A, O, N}, x.options());
      at::bmm_out(m, ut, v);
      transform_output<M, K, Ln>(mp, bias, y.data_ptr<float>(), O, Ho, Wo, TH, TW, r0, r1);
    }
  });
  return y;
}

template <int M, int K>
at::Tensor forward(const at::Tensor& x, const at::Tensor& w, const float* bias, int64_t pad,
                   int64_t chunk_tiles) {
  const int64_t tiles = (x.size(3) + 2 * pad - K + 1 + M - 1) / M;
  return winograd::lanes_for(tiles) == 4 ? forward_lanes<M, K, 4>(x, w, bias, pad, chunk_tiles)
                                         : forward_lanes<M, K, 8>(x, w, bias, pad, chunk_tiles);
}

}  // namespace

// x (B, C, H, W), w (O, C, K, K) float32, K = 3 or 5; bias (O) or undefined; equal padding
// on all sides. points: 6 (F(4x4, 3x3), F(2x2, 5x5)) or 8 (F(6x6, 3x3), F(4x4, 5x5): fewer
// multiplies, about 1.5-2x the rounding error). chunk_tiles: tiles per chunk (0: the rule
// of winograd::chunk_rows), a knob for tests and measuring.
at::Tensor conv2d_winograd(const at::Tensor& x, const at::Tensor& w,
                           const c10::optional<at::Tensor>& bias, int64_t pad,
                           int64_t chunk_tiles, int64_t points) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat,
              "conv2d_winograd: float32 only");
  TORCH_CHECK(x.dim() == 4 && w.dim() == 4 && x.size(1) == w.size(1),
              "conv2d_winograd: x (B, C, H, W) and w (O, C, K, K)");
  const int64_t K = w.size(2);
  TORCH_CHECK((K == 3 || K == 5) && w.size(3) == K, "conv2d_winograd: square kernel 3 or 5");
  TORCH_CHECK(points == 6 || points == 8, "conv2d_winograd: points 6 or 8, got ", points);
  TORCH_CHECK(pad >= 0 && x.size(2) + 2 * pad >= K && x.size(3) + 2 * pad >= K,
              "conv2d_winograd: padding ", pad, " leaves no output for a ", K, "x", K,
              " kernel");
  const float* b = nullptr;
  at::Tensor bc;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(bias->scalar_type() == at::kFloat && bias->numel() == w.size(0),
                "conv2d_winograd: bias (O) float32");
    bc = bias->contiguous();
    b = bc.data_ptr<float>();
  }
  auto xc = x.contiguous();
  auto wc = w.contiguous();
  if (points == 8)
    return K == 3 ? forward<6, 3>(xc, wc, b, pad, chunk_tiles)
                  : forward<4, 5>(xc, wc, b, pad, chunk_tiles);
  return K == 3 ? forward<4, 3>(xc, wc, b, pad, chunk_tiles)
                : forward<2, 5>(xc, wc, b, pad, chunk_tiles);
}

}  // namespace fastcells
