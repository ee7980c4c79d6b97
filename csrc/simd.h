// The lane loop every kernel uses: a body written once as a generic lambda runs on Vec8
// (eight float32) over the bulk of a plane and on scalars over the tail, or on scalars
// only for float64 and for machines without AVX2.
#pragma once

#include <type_traits>

#include "activations.h"

namespace fastcells {

template <typename V>
struct Lane {
  using type = V;
};

template <typename V, typename T>
static inline V load(const T* p) {
#if FASTCELLS_AVX2
  if constexpr (std::is_same_v<V, Vec8>) {
    Vec8 v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  } else
#endif
  {
    return *p;
  }
}

template <typename T, typename V>
static inline void store(T* p, V v) {
#if FASTCELLS_AVX2
  if constexpr (std::is_same_v<V, Vec8>) {
    std::memcpy(p, &v, sizeof(v));
  } else
#endif
  {
    *p = v;
  }
}

// body(Lane<V>{}, k) handles elements [k, k + width of V).
template <typename T, typename Body>
static inline void lane_loop(int64_t n, Body&& body) {
  int64_t k = 0;
#if FASTCELLS_AVX2
  if constexpr (std::is_same_v<T, float>) {
    for (; k + 8 <= n; k += 8) body(Lane<Vec8>{}, k);
  }
#endif
  for (; k < n; ++k) body(Lane<T>{}, k);
}

// Sum of lanes for reductions (peephole weight gradients).
template <typename T>
struct LaneSum {
  T scalar = 0;
#if FASTCELLS_AVX2
  Vec8 vec = {};
  void add(Vec8 v) { vec += v; }
#endif
  void add(T v) { scalar += v; }
  T total() const {
    T s = scalar;
#if FASTCELLS_AVX2
    for (int i = 0; i < 8; ++i) s += vec[i];
#endif
    return s;
  }
};

}  // namespace fastcells
