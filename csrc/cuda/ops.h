// The torch side of the CUDA gate ops: argument checks, output allocation, strided views,
// dtype dispatch. Everything but the launch is written once, over a Runner:
//
//   CudaRunner  (bindings.cpp)             launches the kernels of the .cu files on the
//                                          current CUDA stream: the extension fastcells._C_cuda
//   HostRunner  (tests/cuda_emulation.cpp) runs the same kernel bodies over an emulated grid
//                                          on CPU tensors, so the tests check all of this,
//                                          and the kernels' element code, without a GPU
//
// A Runner provides: kDevice (the device type of the tensors), kMaxBlocksY (grid y limit),
// Guard (constructed from a Device), sm_count(), elementwise(op, blocks) and
// channel_reduce(op, partial, grid).
//
// Every op has the signature and results of its CPU counterpart in csrc/gates.h, plus a
// last argument `channels_last`: the memory format of the outputs, decided by the Python
// wrapper (fastcells/ops/_cuda.py), whose fake kernels allocate the same.
#pragma once

// Narrow includes instead of <torch/extension.h> (the whole C++ frontend): they halve the
// compile time of the bindings, and of their emulation in the test suite.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/csrc/utils/pybind.h>

#include <limits>
#include <type_traits>
#include <vector>

#include "causal_lstm.cuh"
#include "convlstm.cuh"
#include "dual_memory.cuh"
#include "ghu.cuh"
#include "output_gate.cuh"

namespace fastcells {
namespace cuda {

// Test hook: when set, outputs start NaN-filled so that an element a kernel forgets to
// write shows up as NaN instead of passing with leftover memory.
inline bool& poison_outputs() {
  static bool flag = false;
  return flag;
}

inline at::Tensor new_tensor(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  if (poison_outputs()) t.fill_(std::numeric_limits<double>::quiet_NaN());
  return t;
}

// A (B, channels, H, W) output in the format the wrapper chose, on like's device.
inline at::Tensor new_output(const at::Tensor& like, int64_t channels, bool channels_last) {
  return new_tensor({like.size(0), channels, like.size(2), like.size(3)},
                    like.options().memory_format(channels_last ? at::MemoryFormat::ChannelsLast
                                                               : at::MemoryFormat::Contiguous));
}

// The stride of p = h * W + w, when H and W collapse into one dimension (false otherwise).
// Kept in sync with fastcells/ops/_cuda.py:strided.
inline bool plane_stride(const at::Tensor& t, int64_t& sp) {
  const int64_t H = t.size(2), W = t.size(3);
  if (W == 1) {
    sp = H == 1 ? 1 : t.stride(2);
    return true;
  }
  sp = t.stride(3);
  return H == 1 || t.stride(2) == W * t.stride(3);
}

template <typename T>
Planes<T> planes(const at::Tensor& t) {
  using S = std::remove_const_t<T>;
  Planes<T> v;
  v.data = static_cast<T*>(t.data_ptr<S>());
  v.sb = t.stride(0);
  v.sc = t.stride(1);
  plane_stride(t, v.sp);
  return v;
}

template <typename T>
Planes<T> planes(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? planes<T>(*t) : Planes<T>{};
}

template <class Runner>
void check_dims(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, name, ": expected a 4-D (B, C, H, W) tensor, got ", t.dim(), "-D");
  TORCH_CHECK(t.device().type() == Runner::kDevice, name, ": expected a ",
              c10::DeviceTypeName(Runner::kDevice, /*lower_case=*/true), " tensor, got one on ",
              t.device());
  const at::ScalarType dtype = t.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kHalf ||
                  dtype == at::kBFloat16,
              name, ": the cuda backend supports float16, bfloat16, float32 and float64, got ",
              dtype);
}

// t is (B, channels, H, W) like `like`, with its dtype and device, and a strided layout.
template <class Runner>
void check_planes(const at::Tensor& t, const char* name, int64_t channels, const at::Tensor& like) {
  check_dims<Runner>(t, name);
  TORCH_CHECK(t.size(0) == like.size(0) && t.size(1) == channels && t.size(2) == like.size(2) &&
                  t.size(3) == like.size(3),
              name, ": expected shape (", like.size(0), ", ", channels, ", ", like.size(2), ", ",
              like.size(3), "), got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, ": dtype ", t.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(t.device() == like.device(), name, ": on ", t.device(), ", expected ",
              like.device());
  int64_t sp;
  TORCH_CHECK(plane_stride(t, sp), name,
              ": H and W must collapse into one dimension (stride(2) == W * stride(3)); "
              "the Python wrappers copy other layouts");
}

inline ElementIndex index_of(const at::Tensor& like, bool channels_last) {
  return element_index(like.size(0), like.size(1), like.size(2) * like.size(3), channels_last);
}

template <class Runner, class Op>
void run_elementwise(const Op& op) {
  if (op.idx.numel > 0)
    Runner::elementwise(op, elementwise_blocks(op.idx.numel, Runner::sm_count()));
}

// ----------------------------------------------------------------------------- ConvLSTM
template <class Runner>
void check_peephole(const c10::optional<at::Tensor>& peephole, const at::Tensor& like) {
  if (!peephole.has_value()) return;
  const at::Tensor& w = *peephole;
  TORCH_CHECK(w.dim() == 2 && w.size(0) == 3 && w.size(1) == like.size(1) && w.is_contiguous(),
              "peephole: expected a contiguous (3, ", like.size(1), ") tensor, got ", w.sizes());
  TORCH_CHECK(w.scalar_type() == like.scalar_type(), "peephole: dtype ", w.scalar_type(),
              " differs from ", like.scalar_type());
  TORCH_CHECK(w.device() == like.device(), "peephole: on ", w.device(), ", expected ",
              like.device());
}

template <class Runner>
std::vector<at::Tensor> convlstm_gates_forward(const at::Tensor& z, const at::Tensor& c_prev,
                                               const c10::optional<at::Tensor>& peephole,
                                               double forget_bias, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(z, "z", 4 * C, c_prev);
  check_peephole<Runner>(peephole, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor h = new_output(c_prev, C, channels_last), c = new_output(c_prev, C, channels_last);
  at::Tensor acts = new_output(c_prev, 4 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "convlstm_gates_forward", [&] {
    using T = scalar_t;
    ConvLSTMForward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.z = planes<const T>(z);
    op.c_prev = planes<const T>(c_prev);
    op.h = planes<T>(h);
    op.c = planes<T>(c);
    op.acts = planes<T>(acts);
    op.peephole = peephole.has_value() ? peephole->data_ptr<T>() : nullptr;
    op.forget_bias = static_cast<acc_t<T>>(forget_bias);
    run_elementwise<Runner>(op);
  });
  return {h, c, acts};
}

template <class Runner>
std::vector<at::Tensor> convlstm_gates_backward(const at::Tensor& grad_h, const at::Tensor& grad_c,
                                                const at::Tensor& acts, const at::Tensor& c_prev,
                                                const at::Tensor& c,
                                                const c10::optional<at::Tensor>& peephole,
                                                bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(acts, "acts", 4 * C, c_prev);
  check_planes<Runner>(c, "c", C, c_prev);
  check_planes<Runner>(grad_h, "grad_h", C, c_prev);
  check_planes<Runner>(grad_c, "grad_c", C, c_prev);
  check_peephole<Runner>(peephole, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor grad_z = new_output(c_prev, 4 * C, channels_last);
  at::Tensor grad_c_prev = new_output(c_prev, C, channels_last);
  at::Tensor grad_peephole;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "convlstm_gates_backward", [&] {
    using T = scalar_t;
    using A = acc_t<T>;
    ConvLSTMBackward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.grad_h = planes<const T>(grad_h);
    op.grad_c = planes<const T>(grad_c);
    op.acts = planes<const T>(acts);
    op.c_prev = planes<const T>(c_prev);
    op.c = planes<const T>(c);
    op.grad_z = planes<T>(grad_z);
    op.grad_c_prev = planes<T>(grad_c_prev);
    op.peephole = peephole.has_value() ? peephole->data_ptr<T>() : nullptr;
    if (!peephole.has_value()) {
      run_elementwise<Runner>(op);
      return;
    }
    // The peephole grads sum over (b, p): per-block partials in the math type, then one
    // (deterministic) library reduction, rounded to the storage type once at the end.
    const ReduceGrid grid = reduce_grid(op.idx.batch * op.idx.plane, C, Runner::sm_count(),
                                        Runner::kMaxBlocksY);
    at::Tensor partial = new_tensor({ConvLSTMBackward<T>::kSums, C, grid.blocks_x},
                                    c_prev.options().dtype(c10::CppTypeToScalarType<A>::value));
    Runner::channel_reduce(op, partial.data_ptr<A>(), grid);
    grad_peephole = partial.sum(-1).to(c_prev.scalar_type());
  });
  return {grad_z, grad_c_prev, grad_peephole};
}

// ----------------------------------------------------------------------------- ST-LSTM
template <class Runner>
std::vector<at::Tensor> stlstm_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                             const at::Tensor& zm, const at::Tensor& c_prev,
                                             const at::Tensor& m_prev, bool return_deltas,
                                             double forget_bias, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(m_prev, "m_prev", C, c_prev);
  check_planes<Runner>(zx, "zx", 7 * C, c_prev);
  check_planes<Runner>(zh, "zh", 4 * C, c_prev);
  check_planes<Runner>(zm, "zm", 3 * C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor cm = new_output(c_prev, 2 * C, channels_last);
  at::Tensor o_partial = new_output(c_prev, C, channels_last);
  at::Tensor acts = new_output(c_prev, 6 * C, channels_last);
  at::Tensor deltas;
  if (return_deltas) deltas = new_output(c_prev, 2 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "stlstm_gates_forward", [&] {
    using T = scalar_t;
    STLSTMForward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.zx = planes<const T>(zx);
    op.zh = planes<const T>(zh);
    op.zm = planes<const T>(zm);
    op.c_prev = planes<const T>(c_prev);
    op.m_prev = planes<const T>(m_prev);
    op.cm = planes<T>(cm);
    op.o_partial = planes<T>(o_partial);
    op.acts = planes<T>(acts);
    if (return_deltas) op.deltas = planes<T>(deltas);
    op.forget_bias = static_cast<acc_t<T>>(forget_bias);
    run_elementwise<Runner>(op);
  });
  return {cm, o_partial, acts, deltas};
}

template <class Runner>
std::vector<at::Tensor> stlstm_gates_backward(const at::Tensor& grad_cm,
                                              const at::Tensor& grad_o_partial,
                                              const c10::optional<at::Tensor>& grad_deltas,
                                              const at::Tensor& acts, const at::Tensor& c_prev,
                                              const at::Tensor& m_prev, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(m_prev, "m_prev", C, c_prev);
  check_planes<Runner>(acts, "acts", 6 * C, c_prev);
  check_planes<Runner>(grad_cm, "grad_cm", 2 * C, c_prev);
  check_planes<Runner>(grad_o_partial, "grad_o_partial", C, c_prev);
  if (grad_deltas.has_value()) check_planes<Runner>(*grad_deltas, "grad_deltas", 2 * C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor grad_zx = new_output(c_prev, 7 * C, channels_last);
  at::Tensor grad_zh = new_output(c_prev, 4 * C, channels_last);
  at::Tensor grad_zm = new_output(c_prev, 3 * C, channels_last);
  at::Tensor grad_c_prev = new_output(c_prev, C, channels_last);
  at::Tensor grad_m_prev = new_output(c_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "stlstm_gates_backward", [&] {
    using T = scalar_t;
    STLSTMBackward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.grad_cm = planes<const T>(grad_cm);
    op.grad_o_partial = planes<const T>(grad_o_partial);
    op.grad_deltas = planes<const T>(grad_deltas);
    op.acts = planes<const T>(acts);
    op.c_prev = planes<const T>(c_prev);
    op.m_prev = planes<const T>(m_prev);
    op.grad_zx = planes<T>(grad_zx);
    op.grad_zh = planes<T>(grad_zh);
    op.grad_zm = planes<T>(grad_zm);
    op.grad_c_prev = planes<T>(grad_c_prev);
    op.grad_m_prev = planes<T>(grad_m_prev);
    run_elementwise<Runner>(op);
  });
  return {grad_zx, grad_zh, grad_zm, grad_c_prev, grad_m_prev};
}

// ----------------------------------------------------------------------------- MK-LSTM
template <class Runner>
std::vector<at::Tensor> mklstm_gates_forward(const at::Tensor& z1, const at::Tensor& z2,
                                             const at::Tensor& c1_prev, const at::Tensor& c2_prev,
                                             bool channels_last) {
  check_dims<Runner>(c1_prev, "c1_prev");
  const int64_t C = c1_prev.size(1);
  check_planes<Runner>(c1_prev, "c1_prev", C, c1_prev);
  check_planes<Runner>(c2_prev, "c2_prev", C, c1_prev);
  check_planes<Runner>(z1, "z1", 4 * C, c1_prev);
  check_planes<Runner>(z2, "z2", 4 * C, c1_prev);
  typename Runner::Guard guard(c1_prev.device());
  at::Tensor cc = new_output(c1_prev, 2 * C, channels_last);
  at::Tensor o_partial = new_output(c1_prev, C, channels_last);
  at::Tensor acts = new_output(c1_prev, 6 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c1_prev.scalar_type(),
                                  "mklstm_gates_forward", [&] {
    using T = scalar_t;
    MKLSTMForward<T> op;
    op.idx = index_of(c1_prev, channels_last);
    op.z1 = planes<const T>(z1);
    op.z2 = planes<const T>(z2);
    op.c1_prev = planes<const T>(c1_prev);
    op.c2_prev = planes<const T>(c2_prev);
    op.cc = planes<T>(cc);
    op.o_partial = planes<T>(o_partial);
    op.acts = planes<T>(acts);
    run_elementwise<Runner>(op);
  });
  return {cc, o_partial, acts};
}

template <class Runner>
std::vector<at::Tensor> mklstm_gates_backward(const at::Tensor& grad_cc,
                                              const at::Tensor& grad_o_partial,
                                              const at::Tensor& acts, const at::Tensor& c1_prev,
                                              const at::Tensor& c2_prev, bool channels_last) {
  check_dims<Runner>(c1_prev, "c1_prev");
  const int64_t C = c1_prev.size(1);
  check_planes<Runner>(c1_prev, "c1_prev", C, c1_prev);
  check_planes<Runner>(c2_prev, "c2_prev", C, c1_prev);
  check_planes<Runner>(acts, "acts", 6 * C, c1_prev);
  check_planes<Runner>(grad_cc, "grad_cc", 2 * C, c1_prev);
  check_planes<Runner>(grad_o_partial, "grad_o_partial", C, c1_prev);
  typename Runner::Guard guard(c1_prev.device());
  at::Tensor grad_z1 = new_output(c1_prev, 4 * C, channels_last);
  at::Tensor grad_z2 = new_output(c1_prev, 4 * C, channels_last);
  at::Tensor grad_c1 = new_output(c1_prev, C, channels_last);
  at::Tensor grad_c2 = new_output(c1_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c1_prev.scalar_type(),
                                  "mklstm_gates_backward", [&] {
    using T = scalar_t;
    MKLSTMBackward<T> op;
    op.idx = index_of(c1_prev, channels_last);
    op.grad_cc = planes<const T>(grad_cc);
    op.grad_o_partial = planes<const T>(grad_o_partial);
    op.acts = planes<const T>(acts);
    op.c1_prev = planes<const T>(c1_prev);
    op.c2_prev = planes<const T>(c2_prev);
    op.grad_z1 = planes<T>(grad_z1);
    op.grad_z2 = planes<T>(grad_z2);
    op.grad_c1_prev = planes<T>(grad_c1);
    op.grad_c2_prev = planes<T>(grad_c2);
    run_elementwise<Runner>(op);
  });
  return {grad_z1, grad_z2, grad_c1, grad_c2};
}

// ----------------------------------------------------------------------------- output gate
template <class Runner>
std::vector<at::Tensor> output_gate_forward(const at::Tensor& o_partial, const at::Tensor& zo,
                                            const at::Tensor& zl, bool channels_last) {
  check_dims<Runner>(zl, "zl");
  const int64_t C = zl.size(1);
  check_planes<Runner>(zl, "zl", C, zl);
  check_planes<Runner>(zo, "zo", C, zl);
  check_planes<Runner>(o_partial, "o_partial", C, zl);
  typename Runner::Guard guard(zl.device());
  at::Tensor h = new_output(zl, C, channels_last), acts = new_output(zl, 2 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zl.scalar_type(),
                                  "output_gate_forward", [&] {
    using T = scalar_t;
    OutputGateForward<T> op;
    op.idx = index_of(zl, channels_last);
    op.o_partial = planes<const T>(o_partial);
    op.zo = planes<const T>(zo);
    op.zl = planes<const T>(zl);
    op.h = planes<T>(h);
    op.acts = planes<T>(acts);
    run_elementwise<Runner>(op);
  });
  return {h, acts};
}

template <class Runner>
std::vector<at::Tensor> output_gate_backward(const at::Tensor& grad_h, const at::Tensor& acts,
                                             bool channels_last) {
  check_dims<Runner>(grad_h, "grad_h");
  const int64_t C = grad_h.size(1);
  check_planes<Runner>(grad_h, "grad_h", C, grad_h);
  check_planes<Runner>(acts, "acts", 2 * C, grad_h);
  typename Runner::Guard guard(grad_h.device());
  at::Tensor grad_o = new_output(grad_h, C, channels_last);
  at::Tensor grad_l = new_output(grad_h, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(),
                                  "output_gate_backward", [&] {
    using T = scalar_t;
    OutputGateBackward<T> op;
    op.idx = index_of(grad_h, channels_last);
    op.grad_h = planes<const T>(grad_h);
    op.acts = planes<const T>(acts);
    op.grad_o = planes<T>(grad_o);
    op.grad_l = planes<T>(grad_l);
    run_elementwise<Runner>(op);
  });
  return {grad_o, grad_l};
}

// ----------------------------------------------------------------------------- PredRNN++
template <class Runner>
std::vector<at::Tensor> causal_c_gates_forward(const at::Tensor& zx, const at::Tensor& zh,
                                               const at::Tensor& zc, const at::Tensor& zm,
                                               const at::Tensor& c_prev, double forget_bias,
                                               bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(zx, "zx", 7 * C, c_prev);
  check_planes<Runner>(zh, "zh", 4 * C, c_prev);
  check_planes<Runner>(zc, "zc", 3 * C, c_prev);
  check_planes<Runner>(zm, "zm", 3 * C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor c = new_output(c_prev, C, channels_last);
  at::Tensor o_partial = new_output(c_prev, C, channels_last);
  at::Tensor zp = new_output(c_prev, 4 * C, channels_last);
  at::Tensor acts = new_output(c_prev, 3 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "causal_c_gates_forward", [&] {
    using T = scalar_t;
    CausalCForward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.zx = planes<const T>(zx);
    op.zh = planes<const T>(zh);
    op.zc = planes<const T>(zc);
    op.zm = planes<const T>(zm);
    op.c_prev = planes<const T>(c_prev);
    op.c = planes<T>(c);
    op.o_partial = planes<T>(o_partial);
    op.zp = planes<T>(zp);
    op.acts = planes<T>(acts);
    op.forget_bias = static_cast<acc_t<T>>(forget_bias);
    run_elementwise<Runner>(op);
  });
  return {c, o_partial, zp, acts};
}

template <class Runner>
std::vector<at::Tensor> causal_c_gates_backward(const at::Tensor& grad_c,
                                                const at::Tensor& grad_o_partial,
                                                const at::Tensor& grad_zp, const at::Tensor& acts,
                                                const at::Tensor& c_prev, bool channels_last) {
  check_dims<Runner>(c_prev, "c_prev");
  const int64_t C = c_prev.size(1);
  check_planes<Runner>(c_prev, "c_prev", C, c_prev);
  check_planes<Runner>(acts, "acts", 3 * C, c_prev);
  check_planes<Runner>(grad_c, "grad_c", C, c_prev);
  check_planes<Runner>(grad_o_partial, "grad_o_partial", C, c_prev);
  check_planes<Runner>(grad_zp, "grad_zp", 4 * C, c_prev);
  typename Runner::Guard guard(c_prev.device());
  at::Tensor grad_zx = new_output(c_prev, 7 * C, channels_last);
  at::Tensor grad_zh = new_output(c_prev, 4 * C, channels_last);
  at::Tensor grad_zc = new_output(c_prev, 3 * C, channels_last);
  at::Tensor grad_zm = new_output(c_prev, 3 * C, channels_last);
  at::Tensor grad_c_prev = new_output(c_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c_prev.scalar_type(),
                                  "causal_c_gates_backward", [&] {
    using T = scalar_t;
    CausalCBackward<T> op;
    op.idx = index_of(c_prev, channels_last);
    op.grad_c = planes<const T>(grad_c);
    op.grad_o_partial = planes<const T>(grad_o_partial);
    op.grad_zp = planes<const T>(grad_zp);
    op.acts = planes<const T>(acts);
    op.c_prev = planes<const T>(c_prev);
    op.grad_zx = planes<T>(grad_zx);
    op.grad_zh = planes<T>(grad_zh);
    op.grad_zc = planes<T>(grad_zc);
    op.grad_zm = planes<T>(grad_zm);
    op.grad_c_prev = planes<T>(grad_c_prev);
    run_elementwise<Runner>(op);
  });
  return {grad_zx, grad_zh, grad_zc, grad_zm, grad_c_prev};
}

template <class Runner>
std::vector<at::Tensor> causal_m_gates_forward(const at::Tensor& zp, const at::Tensor& zc2m,
                                               const at::Tensor& c, const at::Tensor& o_partial,
                                               double forget_bias, bool channels_last) {
  check_dims<Runner>(c, "c");
  const int64_t C = c.size(1);
  check_planes<Runner>(c, "c", C, c);
  check_planes<Runner>(zp, "zp", 4 * C, c);
  check_planes<Runner>(zc2m, "zc2m", 4 * C, c);
  check_planes<Runner>(o_partial, "o_partial", C, c);
  typename Runner::Guard guard(c.device());
  at::Tensor cm = new_output(c, 2 * C, channels_last);
  at::Tensor o_sum = new_output(c, C, channels_last);
  at::Tensor acts = new_output(c, 4 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, c.scalar_type(),
                                  "causal_m_gates_forward", [&] {
    using T = scalar_t;
    CausalMForward<T> op;
    op.idx = index_of(c, channels_last);
    op.zp = planes<const T>(zp);
    op.zc2m = planes<const T>(zc2m);
    op.c = planes<const T>(c);
    op.o_partial = planes<const T>(o_partial);
    op.cm = planes<T>(cm);
    op.o_sum = planes<T>(o_sum);
    op.acts = planes<T>(acts);
    op.forget_bias = static_cast<acc_t<T>>(forget_bias);
    run_elementwise<Runner>(op);
  });
  return {cm, o_sum, acts};
}

template <class Runner>
std::vector<at::Tensor> causal_m_gates_backward(const at::Tensor& grad_m,
                                                const at::Tensor& grad_o_sum,
                                                const at::Tensor& acts, bool channels_last) {
  check_dims<Runner>(grad_m, "grad_m");
  const int64_t C = grad_m.size(1);
  check_planes<Runner>(grad_m, "grad_m", C, grad_m);
  check_planes<Runner>(grad_o_sum, "grad_o_sum", C, grad_m);
  check_planes<Runner>(acts, "acts", 4 * C, grad_m);
  typename Runner::Guard guard(grad_m.device());
  at::Tensor grad_zp = new_output(grad_m, 4 * C, channels_last);
  at::Tensor grad_zc2m = new_output(grad_m, 4 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_m.scalar_type(),
                                  "causal_m_gates_backward", [&] {
    using T = scalar_t;
    CausalMBackward<T> op;
    op.idx = index_of(grad_m, channels_last);
    op.grad_m = planes<const T>(grad_m);
    op.grad_o_sum = planes<const T>(grad_o_sum);
    op.acts = planes<const T>(acts);
    op.grad_zp = planes<T>(grad_zp);
    op.grad_zc2m = planes<T>(grad_zc2m);
    run_elementwise<Runner>(op);
  });
  return {grad_zp, grad_zc2m};
}

template <class Runner>
std::vector<at::Tensor> causal_output_gate_forward(const at::Tensor& o_sum, const at::Tensor& zo,
                                                   const at::Tensor& zl, bool channels_last) {
  check_dims<Runner>(zl, "zl");
  const int64_t C = zl.size(1);
  check_planes<Runner>(zl, "zl", C, zl);
  check_planes<Runner>(zo, "zo", C, zl);
  check_planes<Runner>(o_sum, "o_sum", C, zl);
  typename Runner::Guard guard(zl.device());
  at::Tensor h = new_output(zl, C, channels_last), acts = new_output(zl, 2 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, zl.scalar_type(),
                                  "causal_output_gate_forward", [&] {
    using T = scalar_t;
    CausalOutputForward<T> op;
    op.idx = index_of(zl, channels_last);
    op.o_sum = planes<const T>(o_sum);
    op.zo = planes<const T>(zo);
    op.zl = planes<const T>(zl);
    op.h = planes<T>(h);
    op.acts = planes<T>(acts);
    run_elementwise<Runner>(op);
  });
  return {h, acts};
}

template <class Runner>
std::vector<at::Tensor> causal_output_gate_backward(const at::Tensor& grad_h,
                                                    const at::Tensor& acts, bool channels_last) {
  check_dims<Runner>(grad_h, "grad_h");
  const int64_t C = grad_h.size(1);
  check_planes<Runner>(grad_h, "grad_h", C, grad_h);
  check_planes<Runner>(acts, "acts", 2 * C, grad_h);
  typename Runner::Guard guard(grad_h.device());
  at::Tensor grad_o = new_output(grad_h, C, channels_last);
  at::Tensor grad_l = new_output(grad_h, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_h.scalar_type(),
                                  "causal_output_gate_backward", [&] {
    using T = scalar_t;
    CausalOutputBackward<T> op;
    op.idx = index_of(grad_h, channels_last);
    op.grad_h = planes<const T>(grad_h);
    op.acts = planes<const T>(acts);
    op.grad_o = planes<T>(grad_o);
    op.grad_l = planes<T>(grad_l);
    run_elementwise<Runner>(op);
  });
  return {grad_o, grad_l};
}

template <class Runner>
std::vector<at::Tensor> ghu_gates_forward(const at::Tensor& zx, const at::Tensor& zz,
                                          const at::Tensor& z_prev, bool channels_last) {
  check_dims<Runner>(z_prev, "z_prev");
  const int64_t C = z_prev.size(1);
  check_planes<Runner>(z_prev, "z_prev", C, z_prev);
  check_planes<Runner>(zx, "zx", 2 * C, z_prev);
  check_planes<Runner>(zz, "zz", 2 * C, z_prev);
  typename Runner::Guard guard(z_prev.device());
  at::Tensor z = new_output(z_prev, C, channels_last);
  at::Tensor acts = new_output(z_prev, 2 * C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z_prev.scalar_type(),
                                  "ghu_gates_forward", [&] {
    using T = scalar_t;
    GHUForward<T> op;
    op.idx = index_of(z_prev, channels_last);
    op.zx = planes<const T>(zx);
    op.zz = planes<const T>(zz);
    op.z_prev = planes<const T>(z_prev);
    op.z = planes<T>(z);
    op.acts = planes<T>(acts);
    run_elementwise<Runner>(op);
  });
  return {z, acts};
}

template <class Runner>
std::vector<at::Tensor> ghu_gates_backward(const at::Tensor& grad_z, const at::Tensor& acts,
                                           const at::Tensor& z_prev, bool channels_last) {
  check_dims<Runner>(z_prev, "z_prev");
  const int64_t C = z_prev.size(1);
  check_planes<Runner>(z_prev, "z_prev", C, z_prev);
  check_planes<Runner>(grad_z, "grad_z", C, z_prev);
  check_planes<Runner>(acts, "acts", 2 * C, z_prev);
  typename Runner::Guard guard(z_prev.device());
  at::Tensor grad_pu = new_output(z_prev, 2 * C, channels_last);
  at::Tensor grad_z_prev = new_output(z_prev, C, channels_last);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, z_prev.scalar_type(),
                                  "ghu_gates_backward", [&] {
    using T = scalar_t;
    GHUBackward<T> op;
    op.idx = index_of(z_prev, channels_last);
    op.grad_z = planes<const T>(grad_z);
    op.acts = planes<const T>(acts);
    op.z_prev = planes<const T>(z_prev);
    op.grad_pu = planes<T>(grad_pu);
    op.grad_z_prev = planes<T>(grad_z_prev);
    run_elementwise<Runner>(op);
  });
  return {grad_pu, grad_z_prev};
}
}  // namespace cuda
}  // namespace fastcells

#include "mim_ops.h"  // MIM's ops, written with the helpers above

namespace fastcells {
namespace cuda {

// ----------------------------------------------------------------------------- module
template <class Runner>
void define_ops(pybind11::module& m) {
  m.def("convlstm_gates_forward", &convlstm_gates_forward<Runner>);
  m.def("convlstm_gates_backward", &convlstm_gates_backward<Runner>);
  m.def("stlstm_gates_forward", &stlstm_gates_forward<Runner>);
  m.def("stlstm_gates_backward", &stlstm_gates_backward<Runner>);
  m.def("mklstm_gates_forward", &mklstm_gates_forward<Runner>);
  m.def("mklstm_gates_backward", &mklstm_gates_backward<Runner>);
  m.def("output_gate_forward", &output_gate_forward<Runner>);
  m.def("output_gate_backward", &output_gate_backward<Runner>);
  define_mim_ops<Runner>(m);
  m.def("causal_c_gates_forward", &causal_c_gates_forward<Runner>);
  m.def("causal_c_gates_backward", &causal_c_gates_backward<Runner>);
  m.def("causal_m_gates_forward", &causal_m_gates_forward<Runner>);
  m.def("causal_m_gates_backward", &causal_m_gates_backward<Runner>);
  m.def("causal_output_gate_forward", &causal_output_gate_forward<Runner>);
  m.def("causal_output_gate_backward", &causal_output_gate_backward<Runner>);
  m.def("ghu_gates_forward", &ghu_gates_forward<Runner>);
  m.def("ghu_gates_backward", &ghu_gates_backward<Runner>);
  m.def(
      "set_poison_outputs", [](bool on) { poison_outputs() = on; },
      "Test hook: NaN-fill kernel outputs before the kernels write them.");
}

}  // namespace cuda
}  // namespace fastcells
