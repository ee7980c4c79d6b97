// Activation functions and the SIMD lane types shared by every fused CPU kernel.
//
// Kernels are written once, as generic loop bodies over a "lane" type V (see simd.h):
//   float    scalar float32 (loop tails, machines without AVX2)
//   Vec8     eight float32 in an AVX2 register (GCC vector extension)
//   double   scalar float64 (libm functions: gradcheck-grade accuracy)
//
// float32 math is branch-free: a Cephes-style exp for the sigmoid (relative error ~1e-7)
// and a rational tanh (absolute error < 3e-7), far inside the 1e-5 relative tolerance of the
// contract (CELLS.md). Divisions use the hardware reciprocal plus one Newton step on Vec8:
// the divider, not memory, bounds these kernels otherwise. NaN inputs propagate.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define FASTCELLS_AVX2 1
#else
#define FASTCELLS_AVX2 0
#endif

namespace fastcells {

#if FASTCELLS_AVX2
typedef float Vec8 __attribute__((vector_size(32)));
typedef int32_t Int8 __attribute__((vector_size(32)));

static inline Vec8 reciprocal(Vec8 x) {
  const Vec8 r = (Vec8)_mm256_rcp_ps((__m256)x);  // 12 bits
  return r * (2.0f - x * r);                       // one Newton step: ~23 bits
}
static inline Int8 to_int(Vec8 x) { return __builtin_convertvector(x, Int8); }
static inline Vec8 from_bits(Int8 b) { return (Vec8)b; }
static inline Vec8 select_lt(Vec8 a, float b, Vec8 if_true, Vec8 if_false) {
  return a < b ? if_true : if_false;
}
#endif

static inline float reciprocal(float x) { return 1.0f / x; }
static inline int32_t to_int(float x) { return static_cast<int32_t>(x); }
static inline float from_bits(int32_t b) { return __builtin_bit_cast(float, b); }

// exp for float lanes: clamped so that 2^n stays a normal float (exp saturates there
// anyway for sigmoid), n = round(x / ln2) by the add-magic trick, degree-5 polynomial.
template <typename V>
static inline V fast_exp(V x) {
  x = x < -87.0f ? V{} - 87.0f : x;
  x = x > 88.0f ? V{} + 88.0f : x;
  const V t = x * 1.44269504088896341f + 12582912.0f;
  const V n = t - 12582912.0f;
  const V r = x - n * 0.693359375f - n * -2.12194440e-4f;
  V p = 1.9875691500e-4f * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  // NaN passed the clamps on purpose (it must propagate, through p); converting NaN to int
  // would be undefined, so n becomes 0 there. The shift works on the biased exponent,
  // which the clamps keep in [1, 254]: never negative.
  const V n_safe = n == n ? n : V{};
  return p * from_bits((to_int(n_safe) + 127) << 23);
}

template <typename V>
static inline V sigmoid(V x) {
  return reciprocal(fast_exp(V{} - x) + 1.0f);
}

// Odd/even rational minimax approximation (degree 13/6); beyond +-7.905 tanh rounds to +-1.
template <typename V>
static inline V tanh_act(V x) {
  const float limit = 7.90531110763549805f;
  x = x > limit ? V{} + limit : x;
  x = x < -limit ? V{} - limit : x;
  const V x2 = x * x;
  V p = -2.76076847742355e-16f * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  V q = 1.19825839466702e-06f * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return x * p * reciprocal(q);
}

static inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
static inline double tanh_act(double x) { return std::tanh(x); }

}  // namespace fastcells
