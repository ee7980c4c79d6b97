// Winograd weight gradient of a stride-1 convolution, F(K x K, 2 x 2), K = 3 or 5, float32.
//
//   dW[o, c, i, j] = sum_{b, y, x} dz[b, o, y, x] * x_pad[b, c, y + i, x + j]
//
// is, per 2 x 2 tile of dz, a correlation of an A x A patch of x (A = K + 1) with the tile:
// a Winograd F(K, 2) in each dimension. With V = BT d BT^T (the patch) and U = G g G^T (the
// tile), the sum over all tiles and the batch is A*A matrix products
//
//   M[p] (Cout x Cin) = sum_t U[p, :, t] V[p, :, t]^T,     dW = AT M AT^T (per (o, c)),
//
// A*A / 4 multiplies per (o, c, position) instead of K*K: 4 vs 9 (K = 3), 9 vs 25 (K = 5).
// The transforms run here (at::parallel_for over planes); the products are one at::bmm (MKL).
// Toom-Cook points 0, 1, -1 (K = 3) and 0, 1, -1, 2, -2 (K = 5), plus infinity.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <array>
#include <vector>

namespace fastcells {
namespace {

template <int K>
struct Winograd;

template <>
struct Winograd<3> {
  static constexpr int A = 4;
  static constexpr float BT[4][4] = {{-1, 0, 1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, -1, 0, 1}};
  static constexpr float G[4][2] = {{-1, 0}, {0.5f, 0.5f}, {0.5f, -0.5f}, {0, 1}};
  static constexpr float AT[3][4] = {{1, 1, 1, 0}, {0, 1, -1, 0}, {0, 1, 1, 1}};
};

template <>
struct Winograd<5> {
  static constexpr int A = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0},
                                     {0, 4, -4, -1, 1, 0}, {0, -2, -1, 2, 1, 0},
                                     {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float G[6][2] = {{0.25f, 0},
                                    {-1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6},
                                    {1.f / 24, 1.f / 12},
                                    {1.f / 24, -1.f / 12},
                                    {0, 1}};
  static constexpr float AT[5][6] = {{1, 1, 1, 1, 1, 0},
                                     {0, 1, -1, 2, -2, 0},
                                     {0, 1, 1, 4, 4, 0},
                                     {0, 1, -1, 8, -8, 0},
                                     {0, 1, 1, 16, 16, 1}};
};

constexpr int kChunk = 16;  // tiles of a row transformed together (vectorized over them)

// V[p, c, n] for the tile rows r = b * TH + ty in [r0, r1), n = (r - r0) * TW + tx: the
// input patches, transformed.
template <int K>
void transform_input(const float* x, float* v, int64_t C, int64_t H, int64_t W, int64_t pad,
                     int64_t TH, int64_t TW, int64_t r0, int64_t r1) {
  using Wg = Winograd<K>;
  constexpr int A = Wg::A;
  const int64_t R = r1 - r0, N = R * TW;
  at::parallel_for(0, C * R, 1, [&](int64_t begin, int64_t end) {
    // A rows of x, zero-padded: column u of the buffer is x column u - pad.
    const int64_t width = 2 * TW + A + kChunk * 2;
    std::vector<float> rows(A * width);
    for (int64_t cr = begin; cr < end; ++cr) {
      const int64_t c = cr / R, r = r0 + cr % R;
      const int64_t b = r / TH, ty = r % TH;
      const float* plane = x + (b * C + c) * H * W;
      for (int i = 0; i < A; ++i) {
        const int64_t y = 2 * ty + i - pad;
        float* row = rows.data() + i * width;
        for (int64_t u = 0; u < width; ++u) {
          const int64_t xx = u - pad;
          row[u] = (y >= 0 && y < H && xx >= 0 && xx < W) ? plane[y * W + xx] : 0.f;
        }
      }
      for (int64_t tx0 = 0; tx0 < TW; tx0 += kChunk) {
        const int n_t = static_cast<int>(std::min<int64_t>(kChunk, TW - tx0));
        float d[A][A][kChunk];
        float t1[A][A][kChunk];
        for (int i = 0; i < A; ++i)
          for (int j = 0; j < A; ++j)
            for (int l = 0; l < kChunk; ++l) d[i][j][l] = rows[i * width + 2 * (tx0 + l) + j];
        // t1 = BT d
        for (int p = 0; p < A; ++p)
          for (int j = 0; j < A; ++j) {
            float acc[kChunk] = {};
            for (int i = 0; i < A; ++i) {
              const float w = Wg::BT[p][i];
              if (w == 0.f) continue;
              for (int l = 0; l < kChunk; ++l) acc[l] += w * d[i][j][l];
            }
            for (int l = 0; l < kChunk; ++l) t1[p][j][l] = acc[l];
          }
        // V = t1 BT^T
        for (int p = 0; p < A; ++p)
          for (int q = 0; q < A; ++q) {
            float acc[kChunk] = {};
            for (int j = 0; j < A; ++j) {
              const float w = Wg::BT[q][j];
              if (w == 0.f) continue;
              for (int l = 0; l < kChunk; ++l) acc[l] += w * t1[p][j][l];
            }
            float* out = v + ((p * A + q) * C + c) * N + (r - r0) * TW + tx0;
            for (int l = 0; l < n_t; ++l) out[l] = acc[l];
          }
      }
    }
  });
}

// U[p, o, n] for the same tile rows: the 2 x 2 tiles of dz (zero beyond Ho x Wo), transformed.
template <int K>
void transform_grad(const float* dz, float* u, int64_t O, int64_t Ho, int64_t Wo, int64_t TH,
                    int64_t TW, int64_t r0, int64_t r1) {
  using Wg = Winograd<K>;
  constexpr int A = Wg::A;
  const int64_t R = r1 - r0, N = R * TW;
  at::parallel_for(0, O * R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t orow = begin; orow < end; ++orow) {
      const int64_t o = orow / R, r = r0 + orow % R;
      const int64_t b = r / TH, ty = r % TH;
      const float* plane = dz + (b * O + o) * Ho * Wo;
      for (int64_t tx0 = 0; tx0 < TW; tx0 += kChunk) {
        const int n_t = static_cast<int>(std::min<int64_t>(kChunk, TW - tx0));
        float g[2][2][kChunk] = {};
        for (int rr = 0; rr < 2; ++rr) {
          const int64_t y = 2 * ty + rr;
          if (y >= Ho) continue;
          for (int s = 0; s < 2; ++s)
            for (int l = 0; l < n_t; ++l) {
              const int64_t xx = 2 * (tx0 + l) + s;
              g[rr][s][l] = xx < Wo ? plane[y * Wo + xx] : 0.f;
            }
        }
        float t1[A][2][kChunk];
        for (int p = 0; p < A; ++p)
          for (int s = 0; s < 2; ++s)
            for (int l = 0; l < kChunk; ++l)
              t1[p][s][l] = Wg::G[p][0] * g[0][s][l] + Wg::G[p][1] * g[1][s][l];
        for (int p = 0; p < A; ++p)
          for (int q = 0; q < A; ++q) {
            float* out = u + ((p * A + q) * O + o) * N + (r - r0) * TW + tx0;
            for (int l = 0; l < n_t; ++l)
              out[l] = Wg::G[q][0] * t1[p][0][l] + Wg::G[q][1] * t1[p][1][l];
          }
      }
    }
  });
}

// dW[o, c, i, j] = sum_{p, q} AT[i][p] M[p * A + q, o, c] AT[j][q].
template <int K>
void transform_output(const float* m, float* dw, int64_t O, int64_t C) {
  using Wg = Winograd<K>;
  constexpr int A = Wg::A;
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
          for (int p = 0; p < A; ++p) acc += Wg::AT[i][p] * mm[p][q];
          t1[i][q] = acc;
        }
      for (int i = 0; i < K; ++i)
        for (int j = 0; j < K; ++j) {
          float acc = 0.f;
          for (int q = 0; q < A; ++q) acc += t1[i][q] * Wg::AT[j][q];
          dw[oc * K * K + i * K + j] = acc;
        }
    }
  });
}

// Transformed tiles are produced and consumed in chunks of tile rows holding at most this
// many floats of U and V together (32 MB), in one workspace kept across calls: the whole U
// and V are 4-9x the size of x and dz, and fresh pages for them every call cost more than
// the products (first version, all at once: 216 ms against 55 ms of bmm at B=4, 64 -> 128,
// K=5, 64x64, 1 thread). Chunks of 1M floats made the products too thin (N = 288 tiles);
// 4M-64M measured alike within the noise (benchmarks/NOTES.md).
constexpr int64_t kChunkFloats = 8 << 20;

at::Tensor& workspace(int64_t floats) {
  static thread_local at::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < floats) buffer = at::empty({floats}, at::kFloat);
  return buffer;
}

template <int K>
at::Tensor weight_grad(const at::Tensor& x, const at::Tensor& dz, int64_t pad,
                       int64_t chunk_floats) {
  constexpr int A = Winograd<K>::A;
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t O = dz.size(1), Ho = dz.size(2), Wo = dz.size(3);
  const int64_t TH = (Ho + 1) / 2, TW = (Wo + 1) / 2, rows = B * TH;
  const int64_t per_row = A * A * (C + O) * TW;
  const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, chunk_floats / per_row));
  float* ws = workspace(chunk * per_row).data_ptr<float>();
  auto m = at::zeros({A * A, O, C}, x.options());  // (A*A, O, C), accumulated over chunks
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t r1 = std::min(rows, r0 + chunk), N = (r1 - r0) * TW;
    auto v = at::from_blob(ws, {A * A, C, N}, x.options());
    auto u = at::from_blob(ws + A * A * C * N, {A * A, O, N}, x.options());
    transform_input<K>(x.data_ptr<float>(), ws, C, H, W, pad, TH, TW, r0, r1);
    transform_grad<K>(dz.data_ptr<float>(), ws + A * A * C * N, O, Ho, Wo, TH, TW, r0, r1);
    m.baddbmm_(u, v.transpose(1, 2));
  }
  auto dw = at::empty({O, C, K, K}, x.options());
  transform_output<K>(m.data_ptr<float>(), dw.data_ptr<float>(), O, C);
  return dw;
}

}  // namespace

// x (B, C, H, W) and dz (B, O, Ho, Wo) float32; Ho = H + 2 pad - K + 1 (same for W).
// chunk_floats: the workspace bound (0: kChunkFloats), a knob for measuring.
at::Tensor conv_weight_grad_winograd(const at::Tensor& x, const at::Tensor& dz, int64_t kernel,
                                     int64_t pad, int64_t chunk_floats) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && dz.scalar_type() == at::kFloat,
              "conv_weight_grad_winograd: float32 only");
  TORCH_CHECK(x.dim() == 4 && dz.dim() == 4 && x.size(0) == dz.size(0),
              "conv_weight_grad_winograd: x (B, C, H, W) and dz (B, O, Ho, Wo)");
  TORCH_CHECK(kernel == 3 || kernel == 5, "conv_weight_grad_winograd: kernel 3 or 5");
  TORCH_CHECK(pad >= 0 && dz.size(2) == x.size(2) + 2 * pad - kernel + 1 &&
                  dz.size(3) == x.size(3) + 2 * pad - kernel + 1,
              "conv_weight_grad_winograd: dz's size does not match x, kernel and pad");
  auto xc = x.contiguous();
  auto dzc = dz.contiguous();
  if (chunk_floats <= 0) chunk_floats = kChunkFloats;
  return kernel == 3 ? weight_grad<3>(xc, dzc, pad, chunk_floats)
                     : weight_grad<5>(xc, dzc, pad, chunk_floats);
}

}  // namespace fastcells
