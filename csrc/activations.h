// Activation functions shared by every fused CPU kernel.
//
// float: branch-free approximations that GCC auto-vectorizes (std::exp and std::tanh are
// opaque libm calls and would keep the gate loops scalar): a Cephes-style exp for sigmoid
// (relative error ~1e-7) and a rational tanh (abs error < 3e-7), far inside the 1e-5
// relative tolerance of the contract (CELLS.md).
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
  // Odd/even rational minimax approximation (degree 13/6), no exp and one division; max
  // abs error 3e-7, relative error ~1e-7 near zero. Beyond +-7.905 tanh rounds to +-1.
  const float limit = 7.90531110763549805f;
  x = x > limit ? limit : x;
  x = x < -limit ? -limit : x;
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p / q;
}

static inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double tanh_act(double x) { return std::tanh(x); }

}  // namespace fastcells
