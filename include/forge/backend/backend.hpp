#pragma once
// Backends are policies: tag types that select kernel implementations by overload or
// specialisation (DESIGN.md principle 3). A pipeline runs on exactly one backend, and the
// compiler checks that every method in it supports that backend.
//
//   backend::scalar      plain loops, the obviously-right reference every kernel is tested against
//   backend::simd<Arch>  xsimd vectorised kernels (Arch = xsimd::avx2, xsimd::avx512bw, ...)
//   backend::cuda        NVIDIA GPUs (kernels in .cuh headers compiled by nvcc)

#include <concepts>
#include <string_view>
#include <type_traits>

#include <xsimd/xsimd.hpp>

namespace forge::backend {

/// The scalar reference backend: one thread of plain C++ loops.
struct scalar {
  static constexpr std::string_view name = "scalar";
};

/// The CPU SIMD backend over an xsimd architecture; OpenMP threads across rows.
template <class Arch = xsimd::default_arch>
struct simd {
  using arch = Arch;
  static constexpr std::string_view name = "simd";
};

/// The CUDA backend (one NVIDIA GPU).
struct cuda {
  static constexpr std::string_view name = "cuda";
};

template <class T>
inline constexpr bool is_simd_v = false;
template <class A>
inline constexpr bool is_simd_v<simd<A>> = true;

}  // namespace forge::backend

namespace forge {

/// A backend policy: a tag type with a static name, one of the three families above.
template <class B>
concept Backend = requires {
  { B::name } -> std::convertible_to<std::string_view>;
}
&&(std::same_as<B, backend::scalar> || std::same_as<B, backend::cuda> || backend::is_simd_v<B>);

/// True when B runs on the host CPU (scalar or simd).
template <class B>
inline constexpr bool is_cpu_backend_v = std::same_as<B, backend::scalar> || backend::is_simd_v<B>;

}  // namespace forge
