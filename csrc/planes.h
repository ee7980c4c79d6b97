// Plane-wise views of (B, C, H, W) tensors for the fused CPU gate kernels.
//
// Every kernel walks (batch, channel) planes in parallel and runs a vectorizable loop over
// the H*W contiguous elements of a plane. Tensors only need contiguous planes: an arbitrary
// batch stride lets channel slices such as the c and m halves of ST-LSTM's [c; m] buffer be
// read in place, with no copy.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

namespace fastcells {

template <typename T>
struct Planes {
  T* data = nullptr;
  int64_t batch_stride = 0;
  int64_t hw = 0;
  inline T* at(int64_t b, int64_t c) const { return data + b * batch_stride + c * hw; }
};

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
  TORCH_CHECK(t.stride(3) == 1 && t.stride(2) == t.size(3) && t.stride(1) == t.size(2) * t.size(3),
              name, ": planes must be contiguous (NCHW layout)");
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
