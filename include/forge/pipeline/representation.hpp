#pragma once
// Model representations as compile-time tags. Every method declares the representations it
// accepts and the one it produces; the compiler checks that consecutive stages fit (rule 3 of
// DESIGN.md). The weights themselves are runtime values: a tag only says how they are stored.

#include <concepts>
#include <cstddef>
#include <string_view>
#include <type_traits>

namespace forge {

/// A representation tag: an empty type with a human-readable `name`, marked by
/// `is_representation = true` so that arbitrary types with a `name` do not qualify.
template <class R>
concept Representation = requires {
  { R::name } -> std::convertible_to<std::string_view>;
  requires R::is_representation;
};

namespace repr {

namespace pipeline_detail {
// A constexpr character buffer, so that templated tags can spell their parameters
// ("int4 g128") in a constexpr `name` without any runtime formatting.
template <std::size_t N>
struct fixed_text {
  char data[N + 1]{};
  std::size_t size = 0;
  constexpr void append(std::string_view s) {
    for (char c : s) data[size++] = c;
  }
  constexpr void append_number(std::size_t v) {
    char digits[24]{};
    std::size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) data[size++] = digits[--n];
  }
  constexpr std::string_view view() const { return {data, size}; }
};

template <std::size_t Group>
constexpr auto int4_group_name() {
  fixed_text<32> t;
  t.append("int4 g");
  t.append_number(Group);
  return t;
}

template <class Base>
constexpr auto with_lora_name() {
  fixed_text<Base::name.size() + 8> t;
  t.append(Base::name);
  t.append(" + lora");
  return t;
}
}  // namespace pipeline_detail

/// Dense float32 weights (the layout of a freshly loaded or fully fine-tuned model).
struct dense_f32 {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "dense f32";
};

/// Dense bfloat16 weights (the usual Hugging Face checkpoint dtype).
struct dense_bf16 {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "dense bf16";
};

/// Dense float16 weights.
struct dense_f16 {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "dense f16";
};

/// Symmetric int8 weights with one scale per output channel.
struct int8 {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "int8";
};

/// 4-bit integer weights with one scale (and zero point) per group of `Group` input
/// columns, as produced by RTN, GPTQ and AWQ.
template <std::size_t Group>
struct int4_group {
  static_assert(Group > 0, "forge::repr::int4_group: the group size must be positive");
  static constexpr bool is_representation = true;
  static constexpr std::size_t group = Group;

 private:
  static constexpr auto text_ = pipeline_detail::int4_group_name<Group>();

 public:
  static constexpr std::string_view name = text_.view();
};

/// int4 with groups of 128 columns, the common GPTQ/AWQ setting.
using int4_g128 = int4_group<128>;
/// int4 with groups of 32 columns.
using int4_g32 = int4_group<32>;

/// 4-bit NormalFloat weights in blocks of 64 (QLoRA, Dettmers et al. 2023, section 3).
struct nf4 {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "nf4";
};

/// A frozen base in representation `Base` with trainable LoRA adapters beside it
/// (e.g. `with_lora<nf4>` is the QLoRA layout).
template <Representation Base>
struct with_lora {
  static constexpr bool is_representation = true;
  /// The representation of the frozen base weights.
  using base = Base;

 private:
  static constexpr auto text_ = pipeline_detail::with_lora_name<Base>();

 public:
  static constexpr std::string_view name = text_.view();
};

/// The QLoRA layout: an NF4 base with LoRA adapters.
using nf4_lora = with_lora<nf4>;

/// A release directory (weights, tokenizer, model card, manifest) written by Deploy.
struct release {
  static constexpr bool is_representation = true;
  static constexpr std::string_view name = "release";
};

}  // namespace repr

/// A compile-time list of representations, used for a method's `accepts`.
template <Representation... Rs>
struct representations {
  /// True when `R` is one of the listed representations.
  template <class R>
  static constexpr bool contains = (std::is_same_v<R, Rs> || ...);
};

namespace pipeline_detail {
template <class T>
struct as_representation_list {
  using type = representations<T>;
};
template <class... Rs>
struct as_representation_list<representations<Rs...>> {
  using type = representations<Rs...>;
};
template <class T>
inline constexpr bool is_representation_list_v = false;
template <class... Rs>
inline constexpr bool is_representation_list_v<representations<Rs...>> = true;
}  // namespace pipeline_detail

/// `accepts` normalised to a list: a single tag `R` becomes `representations<R>`.
template <class T>
using representation_list_t = typename pipeline_detail::as_representation_list<T>::type;

/// A method's `accepts`: one representation tag or a `representations<...>` list.
template <class T>
concept RepresentationSet = Representation<T> || pipeline_detail::is_representation_list_v<T>;

/// True when a stage that produces `Produced` can feed one whose `accepts` is `Accepts`.
template <class Produced, RepresentationSet Accepts>
inline constexpr bool fits_v = representation_list_t<Accepts>::template contains<Produced>;

}  // namespace forge
