#pragma once
// How the runner identifies a model in its reports. The pipeline is generic over the model
// type; it only needs a content digest of each stage's input and output model. A model type
// provides one either as a member `std::string digest() const` or as a free function
// `std::string model_digest(const Model&)` found by argument-dependent lookup, returning the
// SHA-256 of the model's content as 64 lowercase hex characters (forge::govern::sha256).

#include <concepts>
#include <string>

namespace forge {

namespace pipeline_detail {
// Poison pill: only argument-dependent lookup may find model_digest.
void model_digest() = delete;

template <class M>
concept has_member_digest = requires(const M& m) {
  { m.digest() } -> std::convertible_to<std::string>;
};
template <class M>
concept has_adl_digest = requires(const M& m) {
  { model_digest(m) } -> std::convertible_to<std::string>;
};

struct digest_fn {
  template <class M>
  requires has_member_digest<M> || has_adl_digest<M> std::string operator()(const M& m) const {
    if constexpr (has_member_digest<M>)
      return m.digest();
    else
      return model_digest(m);
  }
};
}  // namespace pipeline_detail

/// A model the pipeline can trace: it has a member digest() or an ADL model_digest().
template <class M>
concept Traceable = pipeline_detail::has_member_digest<M> || pipeline_detail::has_adl_digest<M>;

/// The content digest of a model (hex SHA-256), as recorded in stage reports.
inline constexpr pipeline_detail::digest_fn digest_of{};

}  // namespace forge
