// Addressing, types and thread-to-element mapping shared by every fused CUDA gate kernel.
//
// Everything here is `__host__ __device__` and free of CUDA runtime calls, so the test suite
// compiles the same code with a plain C++ compiler (FC_HD defined away) and runs the kernel
// bodies over an emulated grid on CPU tensors (tests/cuda_emulation.cpp). Only the
// `<<<...>>>` launch lines in kernels.cuh are left to a GPU to verify.
//
// Layout. A (B, K, H, W) tensor is addressed as (b, channel, p = h * W + w) with three strides
// (sb, sc, sp); that requires H and W to collapse (stride_h == W * stride_w), which holds for
// contiguous NCHW, channels_last, and channel slices of either (the c and m halves of a
// [c; m] buffer), so all of these are read and written in place, without copies.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FC_HD __host__ __device__
#else
#define FC_HD
#endif

namespace fastcells {
namespace cuda {

// Threads per block of every kernel. A power of two: the block reduction halves it.
constexpr int kBlock = 256;
// Resident 256-thread blocks per SM on sm_80/sm_90 (2048 threads); grids are capped at
// kWaves full waves and the grid-stride loops cover the rest, so a huge tensor does not
// launch millions of blocks and a small one launches only the blocks it needs.
constexpr int64_t kBlocksPerSM = 8;
constexpr int64_t kWaves = 2;

// Math type: float for the 16-bit types and float (the storage type only rounds the values
// read and written), double for double (gradcheck-grade).
template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccType<T>::type;

// A strided (B, K, H*W) view; T is `const S` for inputs.
template <typename T>
struct Planes {
  T* data = nullptr;
  int64_t sb = 0, sc = 0, sp = 0;
  FC_HD T& at(int64_t b, int64_t c, int64_t p) const { return data[b * sb + c * sc + p * sp]; }
};

template <typename T>
FC_HD inline acc_t<T> load(const Planes<const T>& v, int64_t b, int64_t c, int64_t p) {
  return static_cast<acc_t<T>>(v.at(b, c, p));
}

template <typename T, typename A>
FC_HD inline void store(const Planes<T>& v, int64_t b, int64_t c, int64_t p, A x) {
  v.at(b, c, p) = static_cast<T>(x);
}

// q = n / d, r = n % d; in 32 bits when `small` (the common case: 64-bit division is a long
// software sequence on the GPU, and the kernels do two per element).
FC_HD inline void divmod(int64_t n, int64_t d, bool small, int64_t& q, int64_t& r) {
  if (small) {
    const uint32_t n32 = static_cast<uint32_t>(n), d32 = static_cast<uint32_t>(d);
    q = n32 / d32;
    r = n32 - static_cast<uint32_t>(q) * d32;
  } else {
    q = n / d;
    r = n - q * d;
  }
}

// The element space of one gate kernel: one element per (b, c, p) of the hidden state,
// B * C * P in all. Each element reads and writes every gate of its (b, c, p) exactly once.
struct ElementIndex {
  int64_t batch = 0, channels = 0, plane = 0, numel = 0;
  // Element order: channel fastest when the outputs are channels_last, position fastest
  // otherwise, so that neighbouring threads touch neighbouring addresses of the outputs.
  bool channels_last = false;
  bool small = true;  // numel fits in 31 bits: 32-bit index arithmetic

  FC_HD void decompose(int64_t n, int64_t& b, int64_t& c, int64_t& p) const {
    int64_t rest;
    if (channels_last) {
      divmod(n, channels, small, rest, c);
      divmod(rest, plane, small, b, p);
    } else {
      divmod(n, plane, small, rest, p);
      divmod(rest, channels, small, b, c);
    }
  }
};

inline ElementIndex element_index(int64_t batch, int64_t channels, int64_t plane,
                                  bool channels_last) {
  ElementIndex idx;
  idx.batch = batch;
  idx.channels = channels;
  idx.plane = plane;
  idx.numel = batch * channels * plane;
  idx.channels_last = channels_last;
  idx.small = idx.numel <= INT32_MAX;
  return idx;
}

// The loop of every elementwise kernel: thread `first` of `step` threads in the grid.
template <class Op>
FC_HD inline void grid_stride(const Op& op, int64_t first, int64_t step) {
  for (int64_t n = first; n < op.idx.numel; n += step) op(n);
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t elementwise_blocks(int64_t numel, int64_t sm_count) {
  const int64_t cap = sm_count * kBlocksPerSM * kWaves;
  const int64_t need = ceil_div(numel, kBlock);
  return need < 1 ? 1 : (need < cap ? need : cap);
}

// ----------------------------------------------------------------------------- reductions
// Per-channel sums over (b, p), for weight gradients of per-channel parameters (ConvLSTM's
// peepholes). Grid: blockIdx.y walks the channels, blockIdx.x splits the B * P positions of
// a channel; each thread sums its positions, the block combines its threads by a tree in
// shared memory, and block x of channel c writes partial[(k * C + c) * blocks_x + x].
// A library reduction over the last dim finishes: no atomics, so the result is the same on
// every run.
template <typename A, int K>
struct Sums {
  A v[K];
};

struct ReduceGrid {
  int64_t blocks_x = 1, blocks_y = 1;
};

inline ReduceGrid reduce_grid(int64_t positions, int64_t channels, int64_t sm_count,
                              int64_t max_blocks_y) {
  ReduceGrid g;
  const int64_t c = channels < 1 ? 1 : channels;
  // Enough blocks over all channels to fill the GPU once, but no more x-blocks than a
  // channel has 256-position chunks.
  const int64_t want = ceil_div(sm_count * kBlocksPerSM, c);
  const int64_t need = ceil_div(positions, kBlock);
  g.blocks_x = want < need ? want : need;
  if (g.blocks_x < 1) g.blocks_x = 1;
  g.blocks_y = c < max_blocks_y ? c : max_blocks_y;
  return g;
}

// One thread's sums over the positions first, first + step, ... of channel c.
template <class Op>
FC_HD inline Sums<typename Op::Acc, Op::kSums> channel_thread_sums(const Op& op, int64_t c,
                                                                   int64_t first, int64_t step) {
  Sums<typename Op::Acc, Op::kSums> s;
  for (int k = 0; k < Op::kSums; ++k) s.v[k] = 0;
  const int64_t positions = op.idx.batch * op.idx.plane;
  for (int64_t q = first; q < positions; q += step) {
    int64_t b, p;
    divmod(q, op.idx.plane, op.idx.small, b, p);
    const auto e = op.element(b, c, p);
    for (int k = 0; k < Op::kSums; ++k) s.v[k] += e.v[k];
  }
  return s;
}

// One level of the block's tree: thread t (< stride) adds the value of thread t + stride.
template <typename A, int K>
FC_HD inline void tree_reduce_step(A (*shared)[kBlock], int t, int stride) {
  for (int k = 0; k < K; ++k) shared[k][t] += shared[k][t + stride];
}

template <typename A, int K>
FC_HD inline void write_partials(A* partial, const A (*shared)[kBlock], int64_t c,
                                 int64_t channels, int64_t block_x, int64_t blocks_x) {
  for (int k = 0; k < K; ++k) partial[(k * channels + c) * blocks_x + block_x] = shared[k][0];
}

}  // namespace cuda
}  // namespace fastcells
