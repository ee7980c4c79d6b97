// Winograd input transforms on the 6-point Toom-Cook set 0, 1, -1, 2, -2, infinity, shared
// by the forward convolution (conv_winograd.cpp: F(4x4, 3x3), F(2x2, 5x5)) and the weight
// gradient (conv_weight_grad.cpp: F(3x3, 4x4), F(5x5, 2x2)), and on the 8-point set that adds
// 1/2 and -1/2 (the forward's F(6x6, 3x3) and F(4x4, 5x5)). The transforms run on eight tiles of a tile
// row at once (one vector per transformed value), written as closed forms: the generic matrix
// loops they replace spent ~300 cycles per tile and channel in scalar gathers, as long as
// the matrix products themselves (benchmarks/NOTES.md).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace fastcells {
namespace winograd {

constexpr int A = 6;      // transformed tile of the 6-point set: A x A
// Tiles per vector: 8 (one AVX register), or 4 where rows of 4 tiles (16 x 16 frames with
// 4 x 4 output tiles) would leave half of every 8-wide vector, and of the products, padding.
template <int L>
struct Lanes;
template <>
struct Lanes<8> {
  typedef float V __attribute__((vector_size(32)));
  typedef float Unaligned __attribute__((vector_size(32), aligned(4)));
};
template <>
struct Lanes<4> {
  typedef float V __attribute__((vector_size(16)));
  typedef float Unaligned __attribute__((vector_size(16), aligned(4)));
};
template <int L>
using Vec = typename Lanes<L>::V;

// Unaligned vector loads and stores typed as float: a memcpy may alias anything, so after
// each one the compiler reloaded the parallel_for lambdas' captured sizes and pointers.
// (perf put many of transform_input's samples on those reloads, but removing them and the
// bounds checks of deinterleave_row gained only 0-25%: the transforms wait on memory, and
// their samples moved to the stores; benchmarks/NOTES.md.)
template <int L>
static inline Vec<L> load(const float* p) {
  return *reinterpret_cast<const typename Lanes<L>::Unaligned*>(p);
}

template <int L>
static inline void store(float* p, Vec<L> v) {
  *reinterpret_cast<typename Lanes<L>::Unaligned*>(p) = v;
}

// r = BT d for one column (d0..d5) of a 6 x 6 patch.
template <typename V>
static inline void bt6(const V* d, V* r) {
  r[0] = 4.f * d[0] - 5.f * d[2] + d[4];
  r[1] = -4.f * (d[1] + d[2]) + d[3] + d[4];
  r[2] = 4.f * (d[1] - d[2]) - d[3] + d[4];
  r[3] = 2.f * (d[3] - d[1]) - d[2] + d[4];
  r[4] = 2.f * (d[1] - d[3]) - d[2] + d[4];
  r[5] = 4.f * d[1] - 5.f * d[3] + d[5];
}

// r = BT d for the 8-point set (0, 1, -1, 2, -2, 1/2, -1/2, infinity; Lavin & Gray's F(6, 3)
// input transform), d0..d7.
template <typename V>
static inline void bt8(const V* d, V* r) {
  r[0] = d[0] - d[6] + 5.25f * (d[4] - d[2]);
  r[7] = d[7] - d[1] + 5.25f * (d[3] - d[5]);
  V a = d[2] + d[6] - 4.25f * d[4], b = d[1] + d[5] - 4.25f * d[3];
  r[1] = a + b;
  r[2] = a - b;
  a = 0.25f * d[2] - 1.25f * d[4] + d[6];
  b = 0.5f * d[1] - 2.5f * d[3] + 2.f * d[5];
  r[3] = a + b;
  r[4] = a - b;
  a = 4.f * d[2] - 5.f * d[4] + d[6];
  b = 2.f * d[1] - 2.5f * d[3] + 0.5f * d[5];
  r[5] = a + b;
  r[6] = a - b;
}

// The 8-point set's kernel transform G (8 x r; row p, at point p: scale_p * point_p^k; the
// last row the infinity point) and output transform AT (m x 8; row i: point_p^i, and 1 at
// infinity in the last row), from the Toom-Cook construction; G's first row is scaled by -1
// against it, as bt8's first row. (The forward's AT is written out in conv_winograd.cpp.)
constexpr float kPoints8[7] = {0.f, 1.f, -1.f, 2.f, -2.f, 0.5f, -0.5f};
constexpr float kScales8[7] = {1.f, -2.f / 9, -2.f / 9, 1.f / 90, 1.f / 90, 32.f / 45, 32.f / 45};

constexpr float power(float a, int k) { return k == 0 ? 1.f : a * power(a, k - 1); }

template <int R>
struct Matrix8 {  // an 8 x R table
  float v[8][R];
  constexpr const float* operator[](int p) const { return v[p]; }
};

template <int R>
constexpr Matrix8<R> g8() {
  Matrix8<R> g{};
  for (int p = 0; p < 8; ++p)
    for (int k = 0; k < R; ++k)
      g.v[p][k] = p == 7 ? (k == R - 1 ? 1.f : 0.f) : kScales8[p] * power(kPoints8[p], k);
  return g;
}

template <int M>
constexpr Matrix8<8> at8_table() {  // rows 0..M-1 used
  Matrix8<8> a{};
  for (int i = 0; i < M; ++i)
    for (int p = 0; p < 8; ++p)
      a.v[i][p] = p == 7 ? (i == M - 1 ? 1.f : 0.f) : power(kPoints8[p], i);
  return a;
}

template <int N, typename V>
static inline void bt(const V* d, V* r) {
  static_assert(N == 6 || N == 8, "6- or 8-point Winograd sets only");
  if constexpr (N == 6)
    bt6(d, r);
  else
    bt8(d, r);
}

// Tiles per row padded to whole vectors: transformed tensors hold TWp = round_up(TW, L)
// tiles per tile row; the padding tiles transform zeros (and are never written back).
inline int64_t padded_tiles(int64_t tiles, int lanes) {
  return (tiles + lanes - 1) / lanes * lanes;
}

// 8 lanes unless 4 pad less (rows of 4, 12, 20 tiles).
inline int lanes_for(int64_t tiles) {
  return padded_tiles(tiles, 4) < padded_tiles(tiles, 8) ? 4 : 8;
}

// Chunks of tile rows: the transformed tensors of one chunk (A*A * (C + O) floats per tile)
// take at most kChunkFloats (2 MB, the L2 of a core on the EPYC this was measured on)
// unless that leaves fewer than the minimum tiles, below which the products get thin
// (16 x 16 frames: 8 tiles per row; 8-tile chunks measured 0.23x oneDNN). Against one chunk
// of 384 tiles at a time on all threads (the first version), interleaved medians on the
// 2-core EPYC: 64 -> 256 k5 at 64 x 64 1.12 vs 0.91x oneDNN, 32 -> 128 k3 1.16 vs 1.04x,
// 128 -> 512 k5 at 16 x 16 1.22 vs 1.23x (benchmarks/NOTES.md).
// The minimum depends on the transformed kernel (A*A * O * C floats), which every chunk's
// products read whole: up to kSmallKernelFloats (4 MB; 64 -> 128 at k5) 64 tiles, where the
// chunk's transformed tensors stay nearer the core and the kernel is cheap to read again
// (64 x 64 frames, 32 -> 32 up to 64 -> 128, forward and weight gradient: 1.11-1.29x faster
// than 256 tiles); above it 256 tiles, which was still the fastest at 128 -> 256 and wider
// (benchmarks/NOTES.md, "Winograd chunks").
constexpr int64_t kChunkFloats = 512 << 10;
constexpr int64_t kMinChunkTiles = 256;
constexpr int64_t kMinChunkTilesSmallKernel = 64;
constexpr int64_t kSmallKernelFloats = 1 << 20;

// Tile rows per chunk, of `rows`, each `per_row` floats transformed and `tiles` (padded)
// tiles wide, for a transformed kernel of `kernel_floats`; `forced` > 0 (a test or
// measuring knob) overrides the rule above.
inline int64_t chunk_rows(int64_t rows, int64_t per_row, int64_t tiles, int64_t kernel_floats,
                          int64_t forced) {
  const int64_t min_tiles =
      kernel_floats <= kSmallKernelFloats ? kMinChunkTilesSmallKernel : kMinChunkTiles;
  const int64_t chunk = forced > 0 ? forced
                                   : std::max((min_tiles + tiles - 1) / tiles,
                                              kChunkFloats / per_row);
  return std::min(rows, chunk);
}

// The calling thread's buffer for one chunk's transformed tensors, kept across calls:
// fresh pages every call cost as much as the products (the weight gradient's first
// version: 216 ms against 55 ms of bmm at B=4, 64 -> 128, K=5, 64x64, 1 thread).
inline at::Tensor& workspace(int64_t floats) {
  static thread_local at::Tensor buffer;
  if (!buffer.defined() || buffer.numel() < floats) buffer = at::empty({floats}, at::kFloat);
  return buffer;
}

// dst[k * L + t] = src[S t + k - pad] for k < S, t < L, and zero where that column is outside
// [0, W): a row split into its S phases. The columns where every phase reads inside the row
// are one straight loop, which the compiler vectorizes; only the edges check bounds (perf
// had put most of transform_input's samples on one bounds-checked loop per phase; see
// load() above for what removing it gained).
template <int S>
inline void deinterleave_row(const float* __restrict src, float* __restrict dst, int64_t W,
                             int64_t pad, int64_t L) {
  const int64_t lo = std::min(L, pad > 0 ? (pad + S - 1) / S : int64_t(0));
  const int64_t hi = std::max(lo, std::min(L, W + pad - S >= 0 ? (W + pad - S) / S + 1
                                                               : int64_t(0)));
  auto checked = [&](int64_t t) {
    for (int k = 0; k < S; ++k) {
      const int64_t col = S * t + k - pad;
      dst[k * L + t] = (col >= 0 && col < W) ? src[col] : 0.f;
    }
  };
  for (int64_t t = 0; t < lo; ++t) checked(t);
  const float* __restrict s = src + S * lo - pad;
  for (int64_t t = lo; t < hi; ++t, s += S)
    for (int k = 0; k < S; ++k) dst[k * L + t] = s[k];
  for (int64_t t = hi; t < L; ++t) checked(t);
}

// Input patches of N x N (6 or 8 points) at a stride-S tiling (S = M, the output tile of
// F(M, K), or the weight gradient's dz tile), transformed: V[p, c, n] for the tile rows
// r = b * TH + ty in [r0, r1), n = (r - r0) * TWp + tx, patch rows S ty - pad + [0, N),
// columns S tx - pad + [0, N), zero outside the H x W plane.
template <int S, int N, int Ln>
void transform_input(const float* x, float* v, int64_t C, int64_t H, int64_t W, int64_t pad,
                     int64_t TH, int64_t TW, int64_t r0, int64_t r1) {
  using V = Vec<Ln>;
  const int64_t TWp = padded_tiles(TW, Ln), R = r1 - r0, NT = R * TWp;
  // The patch rows deinterleaved by phase: phase[i][k][t] = x[row i][S t + k - pad], so
  // column S tx + j of the patch is phase[i][j % S][tx + j / S] and eight tiles are one load.
  constexpr int kExtra = (N - 1) / S + 1;
  const int64_t L = TWp + kExtra;
  at::parallel_for(0, C * R, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> phase(N * S * L);
    for (int64_t cr = begin; cr < end; ++cr) {
      const int64_t c = cr / R, r = r0 + cr % R;
      const int64_t b = r / TH, ty = r % TH;
      const float* plane = x + (b * C + c) * H * W;
      for (int i = 0; i < N; ++i) {
        const int64_t y = S * ty + i - pad;
        float* dst = phase.data() + i * S * L;
        if (y < 0 || y >= H) {
          std::fill(dst, dst + S * L, 0.f);
          continue;
        }
        deinterleave_row<S>(plane + y * W, dst, W, pad, L);
      }
      float* out = v + c * NT + (r - r0) * TWp;
      for (int64_t t0 = 0; t0 < TWp; t0 += Ln) {
        V col[N][N];  // col[j][p] = (BT d)[p, j]: the vertical pass, column by column
        for (int j = 0; j < N; ++j) {
          V d[N];
          for (int i = 0; i < N; ++i)
            d[i] = load<Ln>(phase.data() + (i * S + j % S) * L + t0 + j / S);
          bt<N>(d, col[j]);
        }
        for (int p = 0; p < N; ++p) {  // the horizontal pass: (BT d BT^T)[p, q]
          V row[N], res[N];
          for (int j = 0; j < N; ++j) row[j] = col[j][p];
          bt<N>(row, res);
          for (int q = 0; q < N; ++q) store<Ln>(out + (p * N + q) * C * NT + t0, res[q]);
        }
      }
    }
  });
}

}  // namespace winograd
}  // namespace fastcells
