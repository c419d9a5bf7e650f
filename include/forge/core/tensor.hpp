#pragma once
// Tensor vocabulary. Owning tensors are xtensor containers (row-major); views over memory
// forge does not own (mmap'd checkpoints, arenas, kernel buffers) are non-owning xtensor
// adaptors or, for kernels that must compile without xtensor (CUDA), plain strided spans.

#include <array>
#include <cstddef>
#include <span>

#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>

namespace forge {

/// An owning row-major tensor of fixed rank N.
template <class T, std::size_t N>
using tensor = xt::xtensor<T, N>;

/// An owning row-major tensor of dynamic rank.
template <class T>
using array = xt::xarray<T>;

/// A non-owning rank-N view over `data` with the given shape (row-major, contiguous).
template <class T, std::size_t N>
auto view(T* data, const std::array<std::size_t, N>& shape) {
  std::size_t n = 1;
  for (auto d : shape) n *= d;
  return xt::adapt(data, n, xt::no_ownership(), shape);
}

/// A row-major matrix view with a row stride, for kernels: plain pointers and extents.
template <class T>
struct matrix_span {
  T* data = nullptr;
  std::size_t rows = 0, cols = 0;
  std::size_t stride = 0;  ///< elements between the starts of consecutive rows (>= cols)

  constexpr matrix_span() = default;
  constexpr matrix_span(T* d, std::size_t r, std::size_t c, std::size_t s = 0)
      : data(d), rows(r), cols(c), stride(s ? s : c) {}
  /// Row i as a span of `cols` elements.
  constexpr std::span<T> row(std::size_t i) const { return {data + i * stride, cols}; }
  constexpr T& operator()(std::size_t i, std::size_t j) const { return data[i * stride + j]; }
  /// A view of the same memory as const.
  constexpr operator matrix_span<const T>() const { return {data, rows, cols, stride}; }
};

}  // namespace forge
