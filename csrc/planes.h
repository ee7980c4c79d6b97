// Plane-wise views of (B, C, H, W) tensors for the fused CPU gate kernels.
//
// Every kernel walks (batch, channel) planes in parallel and runs a vectorizable loop over
// the H*W contiguous elements of a plane. Tensors only need contiguous planes: an arbitrary
// batch stride lets channel slices such as the c and m halves of ST-LSTM's [c; m] buffer be
// read in place, with no copy.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <limits>

namespace fastcells {

template <typename T>
struct Planes {
  T* data = nullptr;
  int64_t batch_stride = 0;
  int64_t hw = 0;
  inline T* at(int64_t b, int64_t c) const { return data + b * batch_stride + c * hw; }
};

// Contiguous H*W planes with channel stride H*W; the strides of size-1 dims never matter.
inline bool has_planes(const at::Tensor& t) {
  const int64_t w = t.size(3), hw = t.size(2) * w;
  return (w == 1 || t.stride(3) == 1) && (t.size(2) == 1 || t.stride(2) == w) &&
         (t.size(1) == 1 || t.stride(1) == hw);
}

// Checks the layout the kernels rely on (the Python wrappers guarantee it).
inline void check_planes(const at::Tensor& t, const char* name, int64_t channels,
                         const at::Tensor& like) {
  TORCH_CHECK(t.dim() == 4, name, ": expected a 4-D tensor, got ", t.dim(), "-D");
  TORCH_CHECK(t.size(0) == like.size(0) && t.size(1) == channels && t.size(2) == like.size(2) &&
                  t.size(3) == like.size(3),
              name, ": expected shape (", like.size(0), ", ", channels, ", ", like.size(2), ", ",
              like.size(3), "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": dtype ", t.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), name, ": the cpp backend runs on CPU tensors");
  TORCH_CHECK(has_planes(t), name, ": planes must be contiguous (NCHW layout)");
}

// Test hook: when set, kernel outputs start NaN-filled so that an element a kernel forgets
// to write shows up as NaN instead of passing with leftover memory.
inline bool& poison_outputs() {
  static bool flag = false;
  return flag;
}

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return poison_outputs() ? at::full(sizes, std::numeric_limits<double>::quiet_NaN(), options)
                          : at::empty(sizes, options);
}

template <typename T>
inline Planes<T> planes(const at::Tensor& t) {
  return Planes<T>{t.data_ptr<T>(), t.stride(0), t.size(2) * t.size(3)};
}

// Runs f(b, c) for every (batch, channel) plane, in parallel.
template <typename F>
inline void for_each_plane(int64_t batch, int64_t channels, int64_t hw, const F& f) {
  // Aim for ~32k elements per task so small problems do not pay for threads.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(hw, 1));
  at::parallel_for(0, batch * channels, grain, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) f(p / channels, p % channels);
  });
}

}  // namespace fastcells
