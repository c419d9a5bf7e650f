#pragma once
// Rotary position embeddings (Su et al. 2021, RoFormer §3.4) in the "rotate half" layout
// of transformers' apply_rotary_pos_emb: a head vector x of length D is split into halves
// x1 = x[0:D/2], x2 = x[D/2:D], and with c_i = cos(p·f_i), s_i = sin(p·f_i):
//   y1 = x1·c − x2·s,   y2 = x2·c + x1·s
// backward is the inverse rotation applied to the gradient:
//   dx1 = dy1·c + dy2·s,   dx2 = dy2·c − dy1·s
// Shapes: x [rows, heads, D] in place; cos, sin [rows, D/2] (one row per token position).

#include <cstdint>

#include "forge/backend/backend.hpp"

namespace forge::backend {

namespace detail {
template <class T>
void rope_rotate(std::int64_t rows, std::int64_t heads, std::int64_t D, T* x, const T* cos,
                 const T* sin, T sign) {
  const std::int64_t h2 = D / 2;
#pragma omp parallel for schedule(static) if (rows * heads * D > 65536)
  for (std::int64_t t = 0; t < rows; ++t) {
    const T* c = cos + t * h2;
    const T* s = sin + t * h2;
    for (std::int64_t h = 0; h < heads; ++h) {
      T* v = x + (t * heads + h) * D;
      for (std::int64_t i = 0; i < h2; ++i) {  // auto-vectorised: contiguous in i
        const T a = v[i], b = v[i + h2];
        v[i] = a * c[i] - sign * b * s[i];
        v[i + h2] = b * c[i] + sign * a * s[i];
      }
    }
  }
}
}  // namespace detail

/// Applies the rotation in place, scalar reference.
template <class T>
void rope_forward(scalar, std::int64_t rows, std::int64_t heads, std::int64_t D, T* x, const T* cos,
                  const T* sin) {
  const std::int64_t h2 = D / 2;
  for (std::int64_t t = 0; t < rows; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < h2; ++i) {
        T* v = x + (t * heads + h) * D;
        const T a = v[i], b = v[i + h2], c = cos[t * h2 + i], s = sin[t * h2 + i];
        v[i] = a * c - b * s;
        v[i + h2] = b * c + a * s;
      }
}

/// Maps the gradient through the rotation in place (the inverse rotation), scalar reference.
template <class T>
void rope_backward(scalar, std::int64_t rows, std::int64_t heads, std::int64_t D, T* dx,
                   const T* cos, const T* sin) {
  const std::int64_t h2 = D / 2;
  for (std::int64_t t = 0; t < rows; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < h2; ++i) {
        T* v = dx + (t * heads + h) * D;
        const T a = v[i], b = v[i + h2], c = cos[t * h2 + i], s = sin[t * h2 + i];
        v[i] = a * c + b * s;
        v[i + h2] = b * c - a * s;
      }
}

/// Rotation in place, OpenMP across rows, inner loop left to the compiler's vectoriser.
template <class T, class Arch>
void rope_forward(simd<Arch>, std::int64_t rows, std::int64_t heads, std::int64_t D, T* x,
                  const T* cos, const T* sin) {
  detail::rope_rotate(rows, heads, D, x, cos, sin, T(1));
}

/// Inverse rotation in place, OpenMP across rows.
template <class T, class Arch>
void rope_backward(simd<Arch>, std::int64_t rows, std::int64_t heads, std::int64_t D, T* dx,
                   const T* cos, const T* sin) {
  detail::rope_rotate(rows, heads, D, dx, cos, sin, T(-1));
}

}  // namespace forge::backend
