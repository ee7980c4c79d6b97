// Winograd transforms on the 6-point Toom-Cook set 0, 1, -1, 2, -2, infinity, shared by the
// forward convolution (conv_winograd.cpp: F(4x4, 3x3), F(2x2, 5x5)) and the weight
// gradient (conv_weight_grad.cpp: F(5x5, 2x2)). The transforms run on eight tiles of a tile
// row at once (one F8 per transformed value), written as closed forms: the generic matrix
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

constexpr int A = 6;      // transformed tile: A x A
constexpr int kLanes = 8;  // tiles per vector

typedef float F8 __attribute__((vector_size(32)));

static inline F8 load8(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

static inline void store8(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }

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

// Tiles per row padded to whole vectors: transformed tensors hold TWp = round_up(TW, 8)
// tiles per tile row; the padding tiles transform zeros (and are never written back).
inline int64_t padded_tiles(int64_t tiles) { return (tiles + kLanes - 1) / kLanes * kLanes; }

// Chunks of tile rows: the transformed tensors of one chunk (A*A * (C + O) floats per tile)
// take at most kChunkFloats (2 MB, the L2 of a core on the EPYC this was measured on)
// unless that leaves fewer than kMinChunkTiles tiles, below which the products get thin
// (16 x 16 frames: 8 tiles per row; 8-tile chunks measured 0.23x oneDNN). Against one chunk
// of 384 tiles at a time on all threads (the first version), interleaved medians on the
// 2-core EPYC: 64 -> 256 k5 at 64 x 64 1.12 vs 0.91x oneDNN, 32 -> 128 k3 1.16 vs 1.04x,
// 128 -> 512 k5 at 16 x 16 1.22 vs 1.23x (benchmarks/NOTES.md).
constexpr int64_t kChunkFloats = 512 << 10;
constexpr int64_t kMinChunkTiles = 256;

// Tile rows per chunk, of `rows`, each `per_row` floats transformed and `tiles` (padded)
// tiles wide; `forced` > 0 (a test or measuring knob) overrides the rule above.
inline int64_t chunk_rows(int64_t rows, int64_t per_row, int64_t tiles, int64_t forced) {
  const int64_t chunk = forced > 0 ? forced
                                   : std::max((kMinChunkTiles + tiles - 1) / tiles,
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

// Input patches of a stride-S tiling (S = 4: F(4, 3); S = 2: F(2, 5) and the weight
// gradient F(5, 2)), transformed: V[p, c, n] for the tile rows r = b * TH + ty in [r0, r1),
// n = (r - r0) * TWp + tx, patch rows S ty - pad + [0, 6), columns S tx - pad + [0, 6),
// zero outside the H x W plane.
template <int S>
void transform_input(const float* x, float* v, int64_t C, int64_t H, int64_t W, int64_t pad,
                     int64_t TH, int64_t TW, int64_t r0, int64_t r1) {
  const int64_t TWp = padded_tiles(TW), R = r1 - r0, N = R * TWp;
  // The patch rows deinterleaved by phase: phase[i][k][t] = x[row i][S t + k - pad], so
  // column S tx + j of the patch is phase[i][j % S][tx + j / S] and eight tiles are one load.
  constexpr int kExtra = (A - 1) / S + 1;
  const int64_t L = TWp + kExtra;
  at::parallel_for(0, C * R, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> phase(A * S * L);
    for (int64_t cr = begin; cr < end; ++cr) {
      const int64_t c = cr / R, r = r0 + cr % R;
      const int64_t b = r / TH, ty = r % TH;
      const float* plane = x + (b * C + c) * H * W;
      for (int i = 0; i < A; ++i) {
        const int64_t y = S * ty + i - pad;
        float* dst = phase.data() + i * S * L;
        if (y < 0 || y >= H) {
          std::fill(dst, dst + S * L, 0.f);
          continue;
        }
        const float* src = plane + y * W;
        for (int k = 0; k < S; ++k) {
          float* ph = dst + k * L;
          for (int64_t t = 0; t < L; ++t) {
            const int64_t col = S * t + k - pad;
            ph[t] = (col >= 0 && col < W) ? src[col] : 0.f;
          }
        }
      }
      float* out = v + c * N + (r - r0) * TWp;
      for (int64_t t0 = 0; t0 < TWp; t0 += kLanes) {
        F8 col[A][A];  // col[j][p] = (BT d)[p, j]: the vertical pass, column by column
        for (int j = 0; j < A; ++j) {
          F8 d[A];
          for (int i = 0; i < A; ++i)
            d[i] = load8(phase.data() + (i * S + j % S) * L + t0 + j / S);
          bt6(d, col[j]);
        }
        for (int p = 0; p < A; ++p) {  // the horizontal pass: (BT d BT^T)[p, q]
          F8 row[A], res[A];
          for (int j = 0; j < A; ++j) row[j] = col[j][p];
          bt6(row, res);
          for (int q = 0; q < A; ++q) store8(out + (p * A + q) * C * N + t0, res[q]);
        }
      }
    }
  });
}

}  // namespace winograd
}  // namespace fastcells
