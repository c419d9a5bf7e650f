#pragma once
// The method-policy contract. A method (LoRA, GPTQ, DPO, a GGUF release, or one of your own)
// is a type that declares, at compile time, what it works on and where it runs:
//
//   struct my_method {
//     static constexpr std::string_view name = "my_method";
//     struct params { int rank = 16; };              // aggregate, designated-initialiser defaults
//     using data = my_dataset;                       // optional: what the stage carries besides
//     params using accepts = forge::repr::dense_f32;        // one tag or
//     forge::representations<...> using produces = forge::repr::nf4_lora;        // exactly one tag
//     using backends = forge::cpu_backends;          // forge::backend_set<...>
//     template <forge::Backend B, class Model>
//     static forge::stage_result<Model> apply(const forge::stage_context<B>&, const params&,
//                                             const data&, Model in);
//   };
//
// apply() and the conversion of `params` to nlohmann::json (define to_json, e.g. with
// NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE, so that every stage report records the parameters) are
// checked where the pipeline runs: only there are the model and backend types known, and
// composing a pipeline need not include a JSON library.

#include <concepts>
#include <string_view>
#include <type_traits>

#include "forge/backend/backend.hpp"
#include "forge/pipeline/representation.hpp"

namespace forge {

/// In a `backend_set`, stands for `backend::simd<Arch>` with every xsimd architecture.
struct every_simd_arch {};

/// The backends a method supports: backend tags, or `every_simd_arch`.
template <class... Bs>
struct backend_set {
  /// True when backend `B` is one of the listed ones.
  template <Backend B>
  static constexpr bool contains = (std::is_same_v<B, Bs> || ...) ||
                                   (backend::is_simd_v<B> &&
                                    (std::is_same_v<every_simd_arch, Bs> || ...));
};

/// The CPU backends: the scalar reference and SIMD on every architecture.
using cpu_backends = backend_set<backend::scalar, every_simd_arch>;
/// Every backend forge has: scalar, SIMD on every architecture, and CUDA.
using all_backends = backend_set<backend::scalar, every_simd_arch, backend::cuda>;

/// The `data` of a method that needs no data besides its parameters (e.g. RTN, a release).
struct no_data {};

namespace pipeline_detail {
template <class T>
inline constexpr bool is_backend_set_v = false;
template <class... Bs>
inline constexpr bool is_backend_set_v<backend_set<Bs...>> = true;

template <class M>
struct method_data {
  using type = no_data;
};
template <class M>
requires requires {
  typename M::data;
}
struct method_data<M> {
  using type = typename M::data;
};
}  // namespace pipeline_detail

/// The data type a stage of method `M` carries: `M::data`, or `no_data` if it declares none.
template <class M>
using method_data_t = typename pipeline_detail::method_data<M>::type;

/// A method policy: see the contract at the top of this header.
template <class M>
concept Method = requires {
  { M::name } -> std::convertible_to<std::string_view>;
  typename M::params;
  typename M::accepts;
  typename M::produces;
  typename M::backends;
}
&&RepresentationSet<typename M::accepts>&& Representation<typename M::produces>&&
    pipeline_detail::is_backend_set_v<typename M::backends>&&
        std::default_initializable<typename M::params>&&
            std::copy_constructible<typename M::params>&& std::copy_constructible<method_data_t<M>>;

/// True when method `M` declares support for backend `B`.
template <Method M, Backend B>
inline constexpr bool supports_backend_v = M::backends::template contains<B>;

}  // namespace forge
