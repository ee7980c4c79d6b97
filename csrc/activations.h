// Activation functions shared by every fused CPU kernel.
//
// float: branch-free Cephes-style approximations that GCC auto-vectorizes (std::exp and
// std::tanh are opaque libm calls and would keep the gate loops scalar). Max error is a few
// ulp, far inside the 1e-5 relative tolerance of the contract (CELLS.md).
// double: the libm functions, for gradcheck-grade accuracy.
#pragma once

#include <cstdint>
#include <cmath>

namespace fastcells {

static inline float fast_exp(float x) {
  // Clamp so that 2^n stays a normal float; exp saturates there anyway for our uses.
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  // n = round(x / ln2) with the add-magic trick (vectorizes without SSE4.1 rounding).
  float t = x * 1.44269504088896341f + 12582912.0f;
  float n = t - 12582912.0f;
  float r = x - n * 0.693359375f - n * -2.12194440e-4f;
  float r2 = r * r;
  float p = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r +
              4.1665795894e-2f) * r + 1.6666665459e-1f) * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.0f;
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return p * __builtin_bit_cast(float, bits);
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

static inline float tanh_act(float x) {
  float ax = std::fabs(x);
  // |x| < 0.625: odd polynomial (no cancellation near 0); else 1 - 2 / (e^{2|x|} + 1).
  float z = ax * ax;
  float small = ((((-5.70498872745e-3f * z + 2.06390887954e-2f) * z - 5.37397155531e-2f) * z +
                  1.33314422036e-1f) * z - 3.33332819422e-1f) * z * ax + ax;
  float big = 1.0f - 2.0f / (fast_exp(2.0f * ax) + 1.0f);
  float r = ax < 0.625f ? small : big;
  return std::copysign(r, x);
}

static inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double tanh_act(double x) { return std::tanh(x); }

}  // namespace fastcells
