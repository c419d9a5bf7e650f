#pragma once
// The four kinds of stage a post-training pipeline is made of (DESIGN.md, "The four
// stages"). The enumerators are declared in the paper's order, so comparing two kinds
// with < tells whether they run in that order.

#include <algorithm>
#include <array>
#include <cstdint>
#include <string_view>

namespace forge {

/// A stage kind, in the order Adapt -> Compress -> Align -> Deploy.
enum class stage_kind : std::uint8_t { adapt = 0, compress = 1, align = 2, deploy = 3 };

/// The lowercase name of a stage kind ("adapt", "compress", "align", "deploy").
constexpr std::string_view name_of(stage_kind k) {
  constexpr std::array<std::string_view, 4> names{"adapt", "compress", "align", "deploy"};
  return names[static_cast<std::size_t>(k)];
}

/// A compile-time set of stage kinds, e.g. the kinds that measure a metric.
template <stage_kind... Kinds>
struct stage_kinds {
  /// The kinds, in the order they were listed.
  static constexpr std::array<stage_kind, sizeof...(Kinds)> values{Kinds...};
  /// True when `k` is one of the kinds.
  static constexpr bool contains(stage_kind k) { return ((k == Kinds) || ...); }
};

}  // namespace forge
