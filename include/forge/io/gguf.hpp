#pragma once
// GGUF v3 reader and writer (ggml-org/ggml docs/gguf.md; llama.cpp gguf-py):
//
//   u32 magic "GGUF" | u32 version (3) | u64 tensor_count | u64 kv_count
//   kv_count × { string key | u32 value_type | value }          string = u64 length + bytes
//        array value = u32 element_type | u64 count | count × element
//   tensor_count × { string name | u32 n_dims | n_dims × u64 ne (innermost first)
//                    | u32 ggml_type | u64 offset (relative to the data section) }
//   zero padding to `general.alignment` (default 32) | data section
//
// All integers are little-endian. Tensor dimensions are stored in ggml order: ne[0] is the
// innermost (contiguous) dimension, so a PyTorch weight of shape [out, in] is stored as
// ne = [in, out]. forge's API speaks row-major shapes (outermost first, as safetensors and
// PyTorch do) and reverses them at the file boundary; gguf_tensor_info::ne keeps the file's
// order for anyone who needs it.
//
// The reader validates everything before it touches memory, with llama.cpp's own rules
// (ggml/src/gguf.cpp): counts bounded by the bytes left, string and array lengths inside
// the file, no nested arrays, unique keys and tensor names, names shorter than 64 bytes, at
// most 4 dimensions, no overflow of the element count or byte size, the innermost
// dimension a multiple of the type's block, offsets aligned and contiguous in file order
// (each tensor padded to the alignment), and every tensor's bytes inside the file. Errors
// name the file, the byte offset and what was expected.
//
// The second half of this header maps a Llama-family model onto llama.cpp's conventions:
// metadata keys, tokenizer keys, tensor names, the rotary row permutation of q/k weights,
// and LoRA adapter files (`general.type = "adapter"`).

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "forge/core/dtype.hpp"
#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/mapped_file.hpp"
#include "forge/quant/k_quants.hpp"

namespace forge::io {

// ---------------------------------------------------------------------------------------------
// ggml tensor types
// ---------------------------------------------------------------------------------------------

/// ggml tensor types as numbered in ggml.h / gguf-py `GGMLQuantizationType` (ids are file
/// format: never renumber). Only types whose block layout is listed in ggml_type_traits are
/// accepted by the reader and the writer.
enum class ggml_type : std::uint32_t {
  f32 = 0,
  f16 = 1,
  q4_0 = 2,
  q4_1 = 3,
  q5_0 = 6,
  q5_1 = 7,
  q8_0 = 8,
  q8_1 = 9,
  q2_k = 10,
  q3_k = 11,
  q4_k = 12,
  q5_k = 13,
  q6_k = 14,
  q8_k = 15,
  i8 = 24,
  i16 = 25,
  i32 = 26,
  i64 = 27,
  f64 = 28,
  bf16 = 30,
};

/// Block geometry of a ggml type: `block_size` values are stored in `type_size` bytes.
/// Q8_0: 32 values in 34 bytes (f16 scale, 32 × int8); Q4_0: 32 values in 18 bytes (f16
/// scale, 16 bytes of nibbles: value j in the low nibble of byte j, value j+16 in the high).
struct ggml_type_traits {
  ggml_type type = ggml_type::f32;
  std::string_view name{};
  std::uint32_t block_size = 1;  ///< values per block
  std::uint32_t type_size = 4;   ///< bytes per block
};

namespace detail {
// Sizes from ggml.c's type_traits table (QK_K = 256 for the k-quants).
inline constexpr ggml_type_traits ggml_traits_table[] = {
    {ggml_type::f32, "F32", 1, 4},       {ggml_type::f16, "F16", 1, 2},
    {ggml_type::q4_0, "Q4_0", 32, 18},   {ggml_type::q4_1, "Q4_1", 32, 20},
    {ggml_type::q5_0, "Q5_0", 32, 22},   {ggml_type::q5_1, "Q5_1", 32, 24},
    {ggml_type::q8_0, "Q8_0", 32, 34},   {ggml_type::q8_1, "Q8_1", 32, 36},
    {ggml_type::q2_k, "Q2_K", 256, 84},  {ggml_type::q3_k, "Q3_K", 256, 110},
    {ggml_type::q4_k, "Q4_K", 256, 144}, {ggml_type::q5_k, "Q5_K", 256, 176},
    {ggml_type::q6_k, "Q6_K", 256, 210}, {ggml_type::q8_k, "Q8_K", 256, 292},
    {ggml_type::i8, "I8", 1, 1},         {ggml_type::i16, "I16", 1, 2},
    {ggml_type::i32, "I32", 1, 4},       {ggml_type::i64, "I64", 1, 8},
    {ggml_type::f64, "F64", 1, 8},       {ggml_type::bf16, "BF16", 1, 2},
};
}  // namespace detail

/// The traits of a ggml type id, or nullptr if forge does not know it.
inline const ggml_type_traits* find_ggml_type(std::uint32_t id) {
  for (const auto& t : detail::ggml_traits_table)
    if (static_cast<std::uint32_t>(t.type) == id) return &t;
  return nullptr;
}

/// The traits of a ggml type.
inline const ggml_type_traits& traits(ggml_type t) {
  return *find_ggml_type(static_cast<std::uint32_t>(t));
}

/// "Q8_0", "F32" ... for messages and metadata.
inline std::string_view name(ggml_type t) {
  return traits(t).name;
}

/// Bytes of a tensor of `numel` values whose innermost dimension is a multiple of the
/// block size (checked by callers).
inline std::uint64_t ggml_nbytes(ggml_type t, std::uint64_t numel) {
  const auto& tr = traits(t);
  return numel / tr.block_size * tr.type_size;
}

/// llama.cpp's `general.file_type` values (llama_ftype in llama.h) for the types forge writes.
enum class llama_file_type : std::uint32_t {
  all_f32 = 0,
  mostly_f16 = 1,
  mostly_q4_0 = 2,
  mostly_q8_0 = 7,
  mostly_q4_k_s = 14,
  mostly_bf16 = 32,
};

// ---------------------------------------------------------------------------------------------
// metadata values
// ---------------------------------------------------------------------------------------------

/// GGUF metadata value types (gguf.md `gguf_metadata_value_type`).
enum class gguf_type : std::uint32_t {
  u8 = 0,
  i8 = 1,
  u16 = 2,
  i16 = 3,
  u32 = 4,
  i32 = 5,
  f32 = 6,
  boolean = 7,
  string = 8,
  array = 9,
  u64 = 10,
  i64 = 11,
  f64 = 12,
};

/// "UINT32", "STRING" ... as gguf-py names them.
inline std::string_view name(gguf_type t) {
  static constexpr std::string_view names[] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                               "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                               "UINT64", "INT64",   "FLOAT64"};
  const auto i = static_cast<std::uint32_t>(t);
  return i < 13 ? names[i] : std::string_view("unknown");
}

/// Bytes of one element of a fixed-size type (0 for string and array).
inline constexpr std::size_t gguf_type_size(gguf_type t) {
  constexpr std::size_t sizes[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  return sizes[static_cast<std::uint32_t>(t)];
}

/// A GGUF array: the element type and its elements. Numeric and bool elements are kept as
/// their little-endian bytes (`raw`), strings in `strings`. Arrays of arrays are not
/// supported (llama.cpp does not read them either).
struct gguf_array {
  gguf_type elem = gguf_type::u8;
  std::vector<std::byte> raw{};        ///< count × gguf_type_size(elem) bytes
  std::vector<std::string> strings{};  ///< the elements when elem == string

  /// Number of elements.
  std::size_t size() const {
    return elem == gguf_type::string ? strings.size() : raw.size() / gguf_type_size(elem);
  }
  /// An array of strings.
  static gguf_array of(std::vector<std::string> v) {
    return {.elem = gguf_type::string, .raw = {}, .strings = std::move(v)};
  }
  /// An array of numbers; T selects the element type (std::int32_t → INT32, float → FLOAT32 …).
  template <class T>
  static gguf_array of(std::span<const T> v);
  /// An array of numbers from a vector.
  template <class T>
  static gguf_array of(const std::vector<T>& v) {
    return of(std::span<const T>(v));
  }
  /// The elements as T, which must match `elem` exactly.
  template <class T>
  std::vector<T> as() const;
  friend bool operator==(const gguf_array&, const gguf_array&) = default;
};

/// A metadata value. The variant index equals the gguf_type id, so `value.index()` is the
/// type written to the file.
using gguf_value = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t,
                                std::uint32_t, std::int32_t, float, bool, std::string, gguf_array,
                                std::uint64_t, std::int64_t, double>;

/// The gguf_type of a value.
inline gguf_type type_of(const gguf_value& v) {
  return static_cast<gguf_type>(v.index());
}

namespace detail {
template <class T>
constexpr gguf_type gguf_type_for() {
  if constexpr (std::is_same_v<T, bool>)
    return gguf_type::boolean;
  else if constexpr (std::is_same_v<T, std::uint8_t>)
    return gguf_type::u8;
  else if constexpr (std::is_same_v<T, std::int8_t>)
    return gguf_type::i8;
  else if constexpr (std::is_same_v<T, std::uint16_t>)
    return gguf_type::u16;
  else if constexpr (std::is_same_v<T, std::int16_t>)
    return gguf_type::i16;
  else if constexpr (std::is_same_v<T, std::uint32_t>)
    return gguf_type::u32;
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return gguf_type::i32;
  else if constexpr (std::is_same_v<T, float>)
    return gguf_type::f32;
  else if constexpr (std::is_same_v<T, std::uint64_t>)
    return gguf_type::u64;
  else if constexpr (std::is_same_v<T, std::int64_t>)
    return gguf_type::i64;
  else if constexpr (std::is_same_v<T, double>)
    return gguf_type::f64;
  else {
    static_assert(sizeof(T) == 0, "gguf arrays hold bool, (u)int8..64, float or double");
    return gguf_type::u8;
  }
}
}  // namespace detail

template <class T>
gguf_array gguf_array::of(std::span<const T> v) {
  gguf_array a;
  a.elem = detail::gguf_type_for<T>();
  a.raw.resize(v.size() * sizeof(T));
  if constexpr (std::is_same_v<T, bool>) {
    for (std::size_t i = 0; i < v.size(); ++i) a.raw[i] = std::byte(v[i] ? 1 : 0);
  } else if (!v.empty()) {
    std::memcpy(a.raw.data(), v.data(), a.raw.size());
  }
  return a;
}

template <class T>
std::vector<T> gguf_array::as() const {
  if (elem != detail::gguf_type_for<T>())
    throw error({.what = "GGUF array element type mismatch",
                 .expected = std::string(name(detail::gguf_type_for<T>())),
                 .found = std::string(name(elem))});
  std::vector<T> out(raw.size() / sizeof(T));
  if constexpr (std::is_same_v<T, bool>) {
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = raw[i] != std::byte(0);
  } else if (!out.empty()) {
    std::memcpy(out.data(), raw.data(), raw.size());
  }
  return out;
}

/// Ordered GGUF metadata (the file keeps insertion order); keys are unique.
class gguf_metadata {
 public:
  /// Sets `key` (replacing an existing value in place, keeping its position).
  void set(std::string key, gguf_value v) {
    for (auto& [k, old] : items_)
      if (k == key) {
        old = std::move(v);
        return;
      }
    items_.emplace_back(std::move(key), std::move(v));
  }
  /// The value of `key`, or nullptr.
  const gguf_value* find(std::string_view key) const {
    for (const auto& [k, v] : items_)
      if (k == key) return &v;
    return nullptr;
  }
  /// The value of `key` as T (exact type); forge::error naming the key otherwise.
  template <class T>
  const T& get(std::string_view key) const {
    const auto* v = find(key);
    if (!v) throw error({.what = "GGUF metadata key missing", .place = "key " + std::string(key)});
    if (const T* p = std::get_if<T>(v)) return *p;
    throw error({.what = "GGUF metadata value has another type",
                 .place = "key " + std::string(key),
                 .found = std::string(name(type_of(*v)))});
  }
  /// All entries in order.
  const std::vector<std::pair<std::string, gguf_value>>& items() const { return items_; }
  std::size_t size() const { return items_.size(); }
  friend bool operator==(const gguf_metadata&, const gguf_metadata&) = default;

 private:
  std::vector<std::pair<std::string, gguf_value>> items_;
};

// ---------------------------------------------------------------------------------------------
// tensors
// ---------------------------------------------------------------------------------------------

/// A tensor to write: its bytes are already in the ggml type's layout (quantized blocks
/// for Q8_0/Q4_0, little-endian values otherwise), rows along the last `shape` entry.
struct gguf_tensor_view {
  std::string name{};
  ggml_type type = ggml_type::f32;
  std::vector<std::int64_t> shape{};  ///< row-major, outermost first (PyTorch order)
  std::span<const std::byte> bytes{};
};

/// A tensor read from a file.
struct gguf_tensor_info {
  std::string name{};
  ggml_type type = ggml_type::f32;
  std::vector<std::uint64_t> ne{};    ///< dimensions as stored: innermost first (ggml order)
  std::vector<std::int64_t> shape{};  ///< the same dimensions row-major, outermost first
  std::uint64_t offset = 0;           ///< byte offset within the data section
  std::uint64_t nbytes = 0;           ///< bytes of data
  /// Number of values.
  std::uint64_t numel() const {
    std::uint64_t n = 1;
    for (auto d : ne) n *= d;
    return n;
  }
};

/// The alignment GGUF uses when `general.alignment` is absent.
inline constexpr std::uint32_t gguf_default_alignment = 32;
/// The longest tensor name llama.cpp accepts (GGML_MAX_NAME is 64 including the NUL).
inline constexpr std::size_t gguf_max_tensor_name = 63;
/// ggml tensors have at most 4 dimensions.
inline constexpr std::size_t gguf_max_dims = 4;

namespace detail {
inline std::uint64_t pad_to(std::uint64_t x, std::uint64_t a) {
  return (x + a - 1) / a * a;
}

/// Validated alignment from metadata: a u32 power of two (gguf.cpp's rule).
inline std::uint32_t gguf_alignment_of(const gguf_metadata& m, const std::string& source) {
  const auto* v = m.find("general.alignment");
  if (!v) return gguf_default_alignment;
  const auto* a = std::get_if<std::uint32_t>(v);
  if (!a)
    throw error({.what = "general.alignment has the wrong type",
                 .file = source,
                 .place = "key general.alignment",
                 .expected = "UINT32",
                 .found = std::string(name(type_of(*v)))});
  if (*a == 0 || (*a & (*a - 1)) != 0)
    throw error({.what = "general.alignment is not a power of two",
                 .file = source,
                 .place = "key general.alignment",
                 .expected = "a power of two",
                 .found = std::to_string(*a)});
  return *a;
}

/// Dequantizes one Q8_0 block: x[i] = d * q[i] (ggml-quants.c dequantize_row_q8_0).
inline void dequantize_q8_0_block(const std::byte* b, float* out) {
  f16 d;
  std::memcpy(&d.bits, b, 2);
  const float s = to_f32(d);
  for (int i = 0; i < 32; ++i) out[i] = s * static_cast<float>(static_cast<std::int8_t>(b[2 + i]));
}

/// Dequantizes one Q4_0 block: x[j] = d * (lo(q[j]) - 8), x[j+16] = d * (hi(q[j]) - 8).
inline void dequantize_q4_0_block(const std::byte* b, float* out) {
  f16 d;
  std::memcpy(&d.bits, b, 2);
  const float s = to_f32(d);
  for (int j = 0; j < 16; ++j) {
    const auto q = std::to_integer<unsigned>(b[2 + j]);
    out[j] = s * static_cast<float>(static_cast<int>(q & 15u) - 8);
    out[j + 16] = s * static_cast<float>(static_cast<int>(q >> 4) - 8);
  }
}

/// Byte cursor with bounds checks that name the offset.
class gguf_cursor {
 public:
  gguf_cursor(std::span<const std::byte> b, const std::string& source) : b_(b), src_(source) {}
  std::uint64_t pos() const { return pos_; }
  std::uint64_t left() const { return b_.size() - pos_; }

  [[noreturn]] void fail(std::string what, std::uint64_t at, std::string expected,
                         std::string found = {}) const {
    throw error({.what = std::move(what),
                 .file = src_,
                 .place = at_byte(at),
                 .expected = std::move(expected),
                 .found = std::move(found)});
  }
  void need(std::uint64_t n, const char* what) const {
    if (n > left())
      fail(std::string("file ends inside ") + what, pos_, std::to_string(n) + " more bytes",
           std::to_string(left()) + " bytes left");
  }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::span<const std::byte> read_bytes(std::uint64_t n, const char* what) {
    need(n, what);
    auto out = b_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  std::string read_string(const char* what) {
    const std::uint64_t at = pos_;
    const auto n = read<std::uint64_t>(what);
    if (n > left())
      fail(std::string(what) + " length runs past the end of the file", at,
           "at most " + std::to_string(left()) + " bytes", std::to_string(n));
    std::string s(reinterpret_cast<const char*>(b_.data()) + pos_, n);
    pos_ += n;
    return s;
  }

 private:
  std::span<const std::byte> b_;
  const std::string& src_;
  std::uint64_t pos_ = 0;
};
}  // namespace detail

/// A validated GGUF file, memory-mapped (or held in memory when parsed from bytes).
class gguf_file {
 public:
  /// Maps and validates `path`.
  static gguf_file open(const std::filesystem::path& path) {
    gguf_file f;
    f.map_ = mapped_file(path);
    f.source_ = path.string();
    f.bytes_ = f.map_.bytes();
    f.validate();
    return f;
  }

  /// Validates an in-memory file; the bytes are copied. `source` names it in errors.
  static gguf_file parse(std::span<const std::byte> bytes, std::string source) {
    gguf_file f;
    f.owned_ = std::make_shared<std::vector<std::byte>>(bytes.begin(), bytes.end());
    f.bytes_ = std::span<const std::byte>(*f.owned_);
    f.source_ = std::move(source);
    f.validate();
    return f;
  }

  /// Format version (2 or 3; both share this layout).
  std::uint32_t version() const { return version_; }
  /// Metadata in file order.
  const gguf_metadata& metadata() const { return metadata_; }
  /// Tensors in file order.
  const std::vector<gguf_tensor_info>& tensors() const { return tensors_; }
  /// The alignment in force (general.alignment or 32).
  std::uint32_t alignment() const { return alignment_; }
  /// Byte offset of the data section in the file.
  std::uint64_t data_offset() const { return data_start_; }
  /// The file path (or the source name given to parse()).
  const std::string& source() const { return source_; }

  /// The tensor called `name`, or nullptr.
  const gguf_tensor_info* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }
  /// The tensor called `name`; forge::error naming the file and tensor if absent.
  const gguf_tensor_info& at(std::string_view name) const {
    if (auto* t = find(name)) return *t;
    throw error({.what = "tensor not found",
                 .file = source_,
                 .place = "tensor " + std::string(name),
                 .expected = "a tensor of that name"});
  }
  /// The raw bytes of a tensor, in its ggml type's layout.
  std::span<const std::byte> bytes(const gguf_tensor_info& t) const {
    return bytes_.subspan(data_start_ + t.offset, t.nbytes);
  }

  /// A tensor's values as f32: F32, F16, BF16 and F64 converted, Q8_0, Q4_0 and Q4_K
  /// dequantized; forge::error naming the tensor for other types.
  std::vector<float> to_f32(std::string_view name) const {
    const auto& t = at(name);
    const auto b = bytes(t);
    std::vector<float> out(t.numel());
    if (out.empty()) return out;
    switch (t.type) {
      case ggml_type::f32:
        convert_to_f32(b.data(), dtype::f32, out.size(), out.data());
        break;
      case ggml_type::f16:
        convert_to_f32(b.data(), dtype::f16, out.size(), out.data());
        break;
      case ggml_type::bf16:
        convert_to_f32(b.data(), dtype::bf16, out.size(), out.data());
        break;
      case ggml_type::f64:
        convert_to_f32(b.data(), dtype::f64, out.size(), out.data());
        break;
      case ggml_type::q8_0:
        for (std::size_t k = 0; k < out.size() / 32; ++k)
          detail::dequantize_q8_0_block(b.data() + 34 * k, out.data() + 32 * k);
        break;
      case ggml_type::q4_0:
        for (std::size_t k = 0; k < out.size() / 32; ++k)
          detail::dequantize_q4_0_block(b.data() + 18 * k, out.data() + 32 * k);
        break;
      case ggml_type::q4_k:
        for (std::size_t k = 0; k < out.size() / 256; ++k)
          quant::q4_k::dequantize_block(reinterpret_cast<const std::uint8_t*>(b.data()) + 144 * k,
                                        out.data() + 256 * k);
        break;
      default:
        throw error({.what = "cannot convert this tensor type to f32",
                     .file = source_,
                     .place = "tensor " + t.name,
                     .expected = "F32, F16, BF16, F64, Q8_0, Q4_0 or Q4_K",
                     .found = std::string(io::name(t.type))});
    }
    return out;
  }

 private:
  void validate() {
    detail::gguf_cursor c(bytes_, source_);
    const auto magic = c.read<std::uint32_t>("the magic");
    if (magic != 0x46554747u)  // "GGUF" read as a little-endian u32
      c.fail("not a GGUF file", 0, "magic \"GGUF\"");
    version_ = c.read<std::uint32_t>("the version");
    if (version_ != 2 && version_ != 3)
      c.fail("unsupported GGUF version", 4, "2 or 3", std::to_string(version_));
    const auto n_tensors = c.read<std::uint64_t>("the tensor count");
    const auto n_kv = c.read<std::uint64_t>("the metadata count");
    // The smallest KV is 13 bytes (empty key, type, one-byte value); the smallest tensor
    // info 24 bytes (empty name, n_dims, type, offset). Counts beyond that cannot be real.
    if (n_kv > c.left() / 13)
      c.fail("metadata count exceeds what the file can hold", 16,
             "at most " + std::to_string(c.left() / 13), std::to_string(n_kv));
    if (n_tensors > c.left() / 24)
      c.fail("tensor count exceeds what the file can hold", 8,
             "at most " + std::to_string(c.left() / 24), std::to_string(n_tensors));

    std::set<std::string> keys;
    for (std::uint64_t i = 0; i < n_kv; ++i) {
      const std::uint64_t at = c.pos();
      auto key = c.read_string("a metadata key");
      if (key.empty() || key.size() > 65535)
        c.fail("bad metadata key length", at, "1 to 65535 bytes", std::to_string(key.size()));
      if (!keys.insert(key).second) c.fail("duplicate metadata key", at, "unique keys", key);
      metadata_.set(key, read_value(c, key));
    }
    alignment_ = detail::gguf_alignment_of(metadata_, source_);

    std::uint64_t expected_offset = 0;
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
      const std::uint64_t at = c.pos();
      gguf_tensor_info t;
      t.name = c.read_string("a tensor name");
      if (t.name.size() > gguf_max_tensor_name)
        c.fail("tensor name too long", at,
               "at most " + std::to_string(gguf_max_tensor_name) + " bytes",
               std::to_string(t.name.size()));
      if (index_.count(t.name)) c.fail("duplicate tensor name", at, "unique names", t.name);
      const std::uint64_t dims_at = c.pos();
      const auto n_dims = c.read<std::uint32_t>("a tensor's dimension count");
      if (n_dims > gguf_max_dims)
        c.fail("too many dimensions for tensor " + t.name, dims_at, "at most 4",
               std::to_string(n_dims));
      std::uint64_t numel = 1;
      for (std::uint32_t d = 0; d < n_dims; ++d) {
        const auto ne = c.read<std::uint64_t>("a tensor dimension");
        if (ne > static_cast<std::uint64_t>(INT64_MAX) ||
            __builtin_mul_overflow(numel, ne, &numel) ||
            numel > static_cast<std::uint64_t>(INT64_MAX))
          c.fail("element count of tensor " + t.name + " overflows", c.pos() - 8,
                 "a product of dimensions below 2^63");
        t.ne.push_back(ne);
      }
      const std::uint64_t type_at = c.pos();
      const auto type_id = c.read<std::uint32_t>("a tensor type");
      const auto* tr = find_ggml_type(type_id);
      if (!tr)
        c.fail("unknown ggml type for tensor " + t.name, type_at, "a known ggml type id",
               std::to_string(type_id));
      t.type = tr->type;
      const std::uint64_t inner = t.ne.empty() ? 1 : t.ne[0];
      if (inner % tr->block_size != 0)
        c.fail("innermost dimension of tensor " + t.name + " is not a whole number of blocks",
               dims_at,
               "a multiple of " + std::to_string(tr->block_size) + " for " + std::string(tr->name),
               std::to_string(inner));
      if (__builtin_mul_overflow(numel / tr->block_size, std::uint64_t{tr->type_size}, &t.nbytes))
        c.fail("byte size of tensor " + t.name + " overflows", dims_at, "a size below 2^64");
      const std::uint64_t off_at = c.pos();
      t.offset = c.read<std::uint64_t>("a tensor offset");
      if (t.offset % alignment_ != 0)
        c.fail("offset of tensor " + t.name + " is not aligned", off_at,
               "a multiple of " + std::to_string(alignment_), std::to_string(t.offset));
      if (t.offset != expected_offset)
        c.fail("offset of tensor " + t.name + " leaves a gap or overlaps", off_at,
               std::to_string(expected_offset) + " (tensors packed in order, padded)",
               std::to_string(t.offset));
      if (t.nbytes > UINT64_MAX - alignment_ - expected_offset)
        c.fail("data section size overflows", off_at, "a size below 2^64");
      expected_offset += detail::pad_to(t.nbytes, alignment_);
      t.shape.assign(t.ne.rbegin(), t.ne.rend());
      index_[t.name] = tensors_.size();
      tensors_.push_back(std::move(t));
    }
    data_start_ = detail::pad_to(c.pos(), alignment_);
    const std::uint64_t size = bytes_.size();
    if (n_tensors > 0 && data_start_ > size)
      c.fail("file ends before the data section", c.pos(), "data at " + std::to_string(data_start_),
             std::to_string(size) + " bytes");
    for (const auto& t : tensors_) {
      // The last tensor's trailing padding is optional (llama.cpp maps, it does not read it).
      if (t.offset > size - data_start_ || t.nbytes > size - data_start_ - t.offset)
        throw error({.what = "tensor data runs past the end of the file",
                     .file = source_,
                     .place = "tensor " + t.name,
                     .expected = "bytes " + std::to_string(data_start_ + t.offset) + ".." +
                                 std::to_string(data_start_ + t.offset + t.nbytes),
                     .found = std::to_string(size) + " bytes in the file"});
    }
  }

  static bool valid_type(std::uint32_t id) { return id <= 12; }

  gguf_value read_value(detail::gguf_cursor& c, const std::string& key) {
    const std::uint64_t at = c.pos();
    const auto type = c.read<std::uint32_t>("a metadata value type");
    if (!valid_type(type))
      c.fail("unknown metadata value type for key " + key, at, "a type id 0..12",
             std::to_string(type));
    const auto t = static_cast<gguf_type>(type);
    if (t == gguf_type::array) {
      const std::uint64_t et_at = c.pos();
      const auto et = c.read<std::uint32_t>("an array element type");
      if (!valid_type(et))
        c.fail("unknown array element type for key " + key, et_at, "a type id 0..12",
               std::to_string(et));
      if (et == static_cast<std::uint32_t>(gguf_type::array))
        c.fail("nested arrays are not supported (key " + key + ")", et_at,
               "a scalar or string element type", "ARRAY");
      const std::uint64_t n_at = c.pos();
      const auto n = c.read<std::uint64_t>("an array length");
      gguf_array a;
      a.elem = static_cast<gguf_type>(et);
      if (a.elem == gguf_type::string) {
        if (n > c.left() / 8)
          c.fail("array length exceeds what the file can hold (key " + key + ")", n_at,
                 "at most " + std::to_string(c.left() / 8), std::to_string(n));
        a.strings.reserve(n);
        for (std::uint64_t i = 0; i < n; ++i) a.strings.push_back(c.read_string("a string"));
      } else {
        const auto es = gguf_type_size(a.elem);
        if (n > c.left() / es)
          c.fail("array length exceeds what the file can hold (key " + key + ")", n_at,
                 "at most " + std::to_string(c.left() / es), std::to_string(n));
        const auto raw = c.read_bytes(n * es, "an array");
        a.raw.assign(raw.begin(), raw.end());
        if (a.elem == gguf_type::boolean)
          for (std::uint64_t i = 0; i < n; ++i)
            if (std::to_integer<unsigned>(a.raw[i]) > 1)
              c.fail("bool array element is neither 0 nor 1 (key " + key + ")", c.pos() - n + i,
                     "0 or 1", std::to_string(std::to_integer<unsigned>(a.raw[i])));
      }
      return a;
    }
    switch (t) {
      case gguf_type::u8:
        return c.read<std::uint8_t>("a value");
      case gguf_type::i8:
        return c.read<std::int8_t>("a value");
      case gguf_type::u16:
        return c.read<std::uint16_t>("a value");
      case gguf_type::i16:
        return c.read<std::int16_t>("a value");
      case gguf_type::u32:
        return c.read<std::uint32_t>("a value");
      case gguf_type::i32:
        return c.read<std::int32_t>("a value");
      case gguf_type::f32:
        return c.read<float>("a value");
      case gguf_type::boolean: {
        const auto b = c.read<std::uint8_t>("a value");
        if (b > 1)
          c.fail("bool value is neither 0 nor 1 (key " + key + ")", c.pos() - 1, "0 or 1",
                 std::to_string(b));
        return b == 1;
      }
      case gguf_type::string:
        return c.read_string("a string value");
      case gguf_type::u64:
        return c.read<std::uint64_t>("a value");
      case gguf_type::i64:
        return c.read<std::int64_t>("a value");
      default:
        return c.read<double>("a value");
    }
  }

  mapped_file map_;
  std::shared_ptr<std::vector<std::byte>> owned_;
  std::span<const std::byte> bytes_;
  std::string source_;
  std::uint32_t version_ = 3;
  std::uint32_t alignment_ = gguf_default_alignment;
  std::uint64_t data_start_ = 0;
  gguf_metadata metadata_;
  std::vector<gguf_tensor_info> tensors_;
  std::map<std::string, std::size_t> index_;
};

namespace detail {
inline void put_bytes(std::vector<std::byte>& out, const void* p, std::size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}
template <class T>
void put(std::vector<std::byte>& out, T v) {
  put_bytes(out, &v, sizeof v);
}
inline void put_string(std::vector<std::byte>& out, std::string_view s) {
  put<std::uint64_t>(out, s.size());
  put_bytes(out, s.data(), s.size());
}
inline void put_value(std::vector<std::byte>& out, const gguf_value& v) {
  put<std::uint32_t>(out, static_cast<std::uint32_t>(v.index()));
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::string>) {
          put_string(out, x);
        } else if constexpr (std::is_same_v<T, gguf_array>) {
          if (x.elem == gguf_type::array) throw error("nested GGUF arrays are not supported");
          put<std::uint32_t>(out, static_cast<std::uint32_t>(x.elem));
          put<std::uint64_t>(out, x.size());
          if (x.elem == gguf_type::string)
            for (const auto& s : x.strings) put_string(out, s);
          else
            put_bytes(out, x.raw.data(), x.raw.size());
        } else if constexpr (std::is_same_v<T, bool>) {
          put<std::uint8_t>(out, x ? 1 : 0);
        } else {
          put<T>(out, x);
        }
      },
      v);
}
}  // namespace detail

/// Writes a GGUF v3 file atomically: the metadata in order, then the tensor infos and the
/// tensors in the order given, each tensor's data padded with zeros to the alignment
/// (`general.alignment` if the metadata sets it, else 32), as gguf-py's GGUFWriter lays
/// files out. Shapes are row-major and written reversed (innermost first). forge::error
/// for duplicate or over-long names, more than 4 dimensions, an innermost dimension that
/// is not a whole number of blocks, or a byte span that disagrees with shape and type.
inline void write_gguf(const std::filesystem::path& path, const gguf_metadata& metadata,
                       std::span<const gguf_tensor_view> tensors) {
  const std::string src = path.string();
  const std::uint32_t align = detail::gguf_alignment_of(metadata, src);
  std::vector<std::byte> head;
  detail::put_bytes(head, "GGUF", 4);
  detail::put<std::uint32_t>(head, 3);
  detail::put<std::uint64_t>(head, tensors.size());
  detail::put<std::uint64_t>(head, metadata.size());
  for (const auto& [k, v] : metadata.items()) {
    if (k.empty() || k.size() > 65535)
      throw error({.what = "bad metadata key length",
                   .file = src,
                   .place = "key " + k,
                   .expected = "1 to 65535 bytes",
                   .found = std::to_string(k.size())});
    detail::put_string(head, k);
    detail::put_value(head, v);
  }
  std::set<std::string> names;
  std::uint64_t offset = 0;
  for (const auto& t : tensors) {
    const std::string place = "tensor " + t.name;
    if (t.name.size() > gguf_max_tensor_name)
      throw error({.what = "tensor name too long for llama.cpp",
                   .file = src,
                   .place = place,
                   .expected = "at most 63 bytes",
                   .found = std::to_string(t.name.size())});
    if (!names.insert(t.name).second)
      throw error({.what = "duplicate tensor name", .file = src, .place = place});
    if (t.shape.size() > gguf_max_dims)
      throw error({.what = "too many dimensions",
                   .file = src,
                   .place = place,
                   .expected = "at most 4",
                   .found = std::to_string(t.shape.size())});
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) throw error({.what = "negative dimension", .file = src, .place = place});
      numel *= static_cast<std::uint64_t>(d);
    }
    const auto& tr = traits(t.type);
    const std::uint64_t inner = t.shape.empty() ? 1 : static_cast<std::uint64_t>(t.shape.back());
    if (inner % tr.block_size != 0)
      throw error({.what = "innermost dimension is not a whole number of blocks",
                   .file = src,
                   .place = place,
                   .expected = "a multiple of " + std::to_string(tr.block_size),
                   .found = std::to_string(inner)});
    const std::uint64_t nbytes = ggml_nbytes(t.type, numel);
    if (nbytes != t.bytes.size())
      throw error({.what = "byte span disagrees with shape and type",
                   .file = src,
                   .place = place,
                   .expected = std::to_string(nbytes) + " bytes",
                   .found = std::to_string(t.bytes.size())});
    detail::put_string(head, t.name);
    detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it)
      detail::put<std::uint64_t>(head, static_cast<std::uint64_t>(*it));
    detail::put<std::uint32_t>(head, static_cast<std::uint32_t>(t.type));
    detail::put<std::uint64_t>(head, offset);
    offset += detail::pad_to(nbytes, align);
  }
  head.resize(detail::pad_to(head.size(), align), std::byte{0});
  const std::vector<std::byte> zeros(align, std::byte{0});
  write_atomic(path, [&](atomic_sink& s) {
    s.write(head.data(), head.size());
    for (const auto& t : tensors) {
      s.write(t.bytes.data(), t.bytes.size());
      s.write(zeros.data(), detail::pad_to(t.bytes.size(), align) - t.bytes.size());
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Llama-family conventions of llama.cpp
// ---------------------------------------------------------------------------------------------

/// Hyperparameters written as `general.*` and `llama.*` keys (gguf-py Keys.LLM/Attention/
/// Rope). Types follow convert_hf_to_gguf.py: counts UINT32, eps and rope values FLOAT32.
struct llama_gguf_params {
  std::string name{};                      ///< general.name
  std::uint32_t context_length = 0;        ///< max_position_embeddings
  std::uint32_t embedding_length = 0;      ///< hidden_size
  std::uint32_t block_count = 0;           ///< num_hidden_layers
  std::uint32_t feed_forward_length = 0;   ///< intermediate_size
  std::uint32_t head_count = 0;            ///< num_attention_heads
  std::uint32_t head_count_kv = 0;         ///< num_key_value_heads
  std::uint32_t vocab_size = 0;            ///< vocab_size
  std::uint32_t rope_dimension_count = 0;  ///< head_dim; 0 means embedding_length / head_count
  float rope_freq_base = 10000.0f;         ///< rope_theta
  std::string rope_scaling_type{};         ///< "", "none", "linear" or "yarn" (written if set)
  float rope_scaling_factor = 1.0f;        ///< written with a scaling type other than none
  std::uint32_t rope_scaling_original_context_length = 0;  ///< written if nonzero
  float rms_norm_eps = 1e-5f;                              ///< rms_norm_eps
  llama_file_type file_type = llama_file_type::all_f32;    ///< general.file_type
};

/// Adds general.architecture = "llama", general.type = "model", general.name,
/// general.file_type, general.quantization_version and the llama.* hyperparameters.
inline void add_llama_metadata(gguf_metadata& m, const llama_gguf_params& p) {
  if (p.head_count == 0 || p.embedding_length % p.head_count != 0)
    throw error(
        {.what = "embedding length is not a multiple of the head count",
         .place = "llama_gguf_params",
         .found = std::to_string(p.embedding_length) + " / " + std::to_string(p.head_count)});
  m.set("general.architecture", std::string("llama"));
  m.set("general.type", std::string("model"));
  if (!p.name.empty()) m.set("general.name", p.name);
  m.set("llama.vocab_size", p.vocab_size);
  m.set("llama.context_length", p.context_length);
  m.set("llama.embedding_length", p.embedding_length);
  m.set("llama.block_count", p.block_count);
  m.set("llama.feed_forward_length", p.feed_forward_length);
  m.set("llama.rope.dimension_count",
        p.rope_dimension_count ? p.rope_dimension_count : p.embedding_length / p.head_count);
  m.set("llama.attention.head_count", p.head_count);
  m.set("llama.attention.head_count_kv", p.head_count_kv ? p.head_count_kv : p.head_count);
  m.set("llama.rope.freq_base", p.rope_freq_base);
  m.set("llama.attention.layer_norm_rms_epsilon", p.rms_norm_eps);
  if (!p.rope_scaling_type.empty()) {
    m.set("llama.rope.scaling.type", p.rope_scaling_type);
    if (p.rope_scaling_type != "none") m.set("llama.rope.scaling.factor", p.rope_scaling_factor);
  }
  if (p.rope_scaling_original_context_length)
    m.set("llama.rope.scaling.original_context_length", p.rope_scaling_original_context_length);
  m.set("general.file_type", static_cast<std::uint32_t>(p.file_type));
  m.set("general.quantization_version", std::uint32_t{2});  // GGML_QNT_VERSION
}

/// llama.cpp token types (`tokenizer.ggml.token_type`, llama_token_type).
enum class gguf_token_type : std::int32_t {
  normal = 1,
  unknown = 2,
  control = 3,
  user_defined = 4,
  unused = 5,
  byte = 6,
};

/// A tokenizer as llama.cpp reads it from `tokenizer.*` keys.
struct gguf_tokenizer {
  /// "gpt2" for byte-level BPE (tokenizer.json), "llama" for SentencePiece.
  std::string model = "gpt2";
  /// Pre-tokenizer name (tokenizer.ggml.pre): "default" for SentencePiece, "llama-bpe" for
  /// the Llama 3 split regex, "gpt-2", "qwen2" ... as llama-vocab.cpp knows them.
  std::string pre = "default";
  std::vector<std::string> tokens{};        ///< id → token text (byte-level or ▁ form)
  std::vector<std::int32_t> token_types{};  ///< id → gguf_token_type value
  std::vector<float> scores{};              ///< id → SentencePiece score (empty for BPE)
  std::vector<std::string> merges{};        ///< BPE merges as "left right", by rank
  std::optional<std::uint32_t> bos_id{}, eos_id{}, pad_id{}, unk_id{};
  std::optional<bool> add_bos{}, add_eos{};
  std::string chat_template{};  ///< Jinja text (tokenizer.chat_template)
};

/// Adds the tokenizer.* keys; forge::error if the per-token arrays disagree in length or a
/// special id is out of range.
inline void add_tokenizer_metadata(gguf_metadata& m, const gguf_tokenizer& t) {
  const auto n = t.tokens.size();
  auto check = [&](bool ok, const char* what) {
    if (!ok) throw error(error_info{.what = what, .place = "gguf_tokenizer"});
  };
  check(t.model == "gpt2" || t.model == "llama", "tokenizer model must be \"gpt2\" or \"llama\"");
  check(t.token_types.empty() || t.token_types.size() == n, "token_types length != tokens");
  check(t.scores.empty() || t.scores.size() == n, "scores length != tokens");
  for (auto id : {t.bos_id, t.eos_id, t.pad_id, t.unk_id})
    check(!id || *id < n, "special token id out of range");
  m.set("tokenizer.ggml.model", t.model);
  m.set("tokenizer.ggml.pre", t.pre);
  m.set("tokenizer.ggml.tokens", gguf_array::of(t.tokens));
  if (!t.scores.empty()) m.set("tokenizer.ggml.scores", gguf_array::of(std::span(t.scores)));
  if (!t.token_types.empty())
    m.set("tokenizer.ggml.token_type", gguf_array::of(std::span(t.token_types)));
  if (!t.merges.empty()) m.set("tokenizer.ggml.merges", gguf_array::of(t.merges));
  if (t.bos_id) m.set("tokenizer.ggml.bos_token_id", *t.bos_id);
  if (t.eos_id) m.set("tokenizer.ggml.eos_token_id", *t.eos_id);
  if (t.unk_id) m.set("tokenizer.ggml.unknown_token_id", *t.unk_id);
  if (t.pad_id) m.set("tokenizer.ggml.padding_token_id", *t.pad_id);
  if (t.add_bos) m.set("tokenizer.ggml.add_bos_token", *t.add_bos);
  if (t.add_eos) m.set("tokenizer.ggml.add_eos_token", *t.add_eos);
  if (!t.chat_template.empty()) m.set("tokenizer.chat_template", t.chat_template);
}

/// The llama.cpp name of a Hugging Face Llama tensor (gguf-py tensor_mapping.py):
///   model.embed_tokens.weight                → token_embd.weight
///   model.layers.N.self_attn.{q,k,v,o}_proj  → blk.N.attn_{q,k,v,output}
///   model.layers.N.mlp.{gate,up,down}_proj   → blk.N.ffn_{gate,up,down}
///   model.layers.N.input_layernorm           → blk.N.attn_norm
///   model.layers.N.post_attention_layernorm  → blk.N.ffn_norm
///   model.norm → output_norm, lm_head → output
/// with the suffix (.weight / .bias) kept. forge::error for any other name.
inline std::string gguf_tensor_name(std::string_view hf_name) {
  static const std::map<std::string, std::string, std::less<>> top = {
      {"model.embed_tokens", "token_embd"}, {"model.norm", "output_norm"}, {"lm_head", "output"}};
  static const std::map<std::string, std::string, std::less<>> layer = {
      {"self_attn.q_proj", "attn_q"},          {"self_attn.k_proj", "attn_k"},
      {"self_attn.v_proj", "attn_v"},          {"self_attn.o_proj", "attn_output"},
      {"mlp.gate_proj", "ffn_gate"},           {"mlp.up_proj", "ffn_up"},
      {"mlp.down_proj", "ffn_down"},           {"input_layernorm", "attn_norm"},
      {"post_attention_layernorm", "ffn_norm"}};
  const std::string s(hf_name);
  const auto dot = s.rfind('.');
  const std::string suffix = dot == std::string::npos ? "" : s.substr(dot);
  if (suffix == ".weight" || suffix == ".bias") {
    const std::string stem = s.substr(0, dot);
    if (auto it = top.find(stem); it != top.end()) return it->second + suffix;
    // "model.layers.<N>.<module>"
    constexpr std::string_view prefix = "model.layers.";
    if (stem.rfind(prefix, 0) == 0) {
      const auto num_end = stem.find('.', prefix.size());
      const std::string num = stem.substr(prefix.size(), num_end - prefix.size());
      const bool digits =
          !num.empty() && num.size() < 10 &&
          std::all_of(num.begin(), num.end(), [](char c) { return c >= '0' && c <= '9'; });
      if (digits && num_end != std::string::npos)
        if (auto it = layer.find(stem.substr(num_end + 1)); it != layer.end())
          return "blk." + std::to_string(std::stoul(num)) + "." + it->second + suffix;
    }
  }
  throw error({.what = "no llama.cpp name for this tensor",
               .place = "tensor " + s,
               .expected = "a Llama weight (embed_tokens, layers.N.{self_attn,mlp,*_layernorm}, "
                           "norm, lm_head)"});
}

/// Whether a llama.cpp tensor name is a q or k projection, whose rows llama.cpp expects in
/// the interleaved rotary layout (see permute_rope_rows).
inline bool needs_rope_permute(std::string_view gguf_name) {
  return gguf_name.find(".attn_q.") != std::string_view::npos ||
         gguf_name.find(".attn_k.") != std::string_view::npos;
}

/// Reorders the rows of a q or k projection from Hugging Face's rotate-half layout (pairs
/// (i, i + d/2) within each head) to the interleaved layout llama.cpp's `llama` rope uses
/// (pairs (2i, 2i + 1)), as convert_hf_to_gguf.py's LlamaModel.permute does:
///   new row h·d + 2j + r  =  old row h·d + r·(d/2) + j   for r ∈ {0,1}, j < d/2.
/// `n_head` is num_attention_heads for q and num_key_value_heads for k; rows must be a
/// multiple of 2·n_head. Works on any row encoding (f32, f16, Q8_0 blocks ...) because
/// every ggml type quantizes within rows. Returns the permuted copy.
inline std::vector<std::byte> permute_rope_rows(std::span<const std::byte> data, std::size_t rows,
                                                std::size_t n_head) {
  if (n_head == 0 || rows % (2 * n_head) != 0 || (rows && data.size() % rows != 0))
    throw error({.what = "cannot permute rows for rope",
                 .expected = "rows a multiple of 2 × heads and whole rows",
                 .found = std::to_string(rows) + " rows, " + std::to_string(n_head) + " heads, " +
                          std::to_string(data.size()) + " bytes"});
  std::vector<std::byte> out(data.size());
  if (rows == 0) return out;
  const std::size_t row_bytes = data.size() / rows, d = rows / n_head, half = d / 2;
  for (std::size_t h = 0; h < n_head; ++h)
    for (std::size_t r = 0; r < 2; ++r)
      for (std::size_t j = 0; j < half; ++j)
        std::memcpy(out.data() + (h * d + 2 * j + r) * row_bytes,
                    data.data() + (h * d + r * half + j) * row_bytes, row_bytes);
  return out;
}

/// Marks metadata as a llama.cpp LoRA adapter (convert_lora_to_gguf.py): general.type =
/// "adapter", adapter.type = "lora", adapter.lora.alpha (FLOAT32), general.architecture.
/// llama.cpp scales each delta by alpha / rank, rank read from the lora_a tensor.
inline void add_lora_adapter_metadata(gguf_metadata& m, float alpha,
                                      const std::string& architecture = "llama") {
  m.set("general.architecture", architecture);
  m.set("general.type", std::string("adapter"));
  m.set("adapter.type", std::string("lora"));
  m.set("adapter.lora.alpha", alpha);
}

/// The GGUF names of a LoRA pair for the base weight `hf_weight_name`
/// ("model.layers.0.self_attn.q_proj.weight" → "blk.0.attn_q.weight.lora_a" / ".lora_b").
/// lora_a holds PEFT's lora_A [rank, in] and lora_b holds lora_B [out, rank] (row-major, so
/// the file stores ne = [in, rank] and [rank, out]); for attn_q / attn_k, lora_b's rows get
/// permute_rope_rows like the base weight (the delta B·A permutes with its rows).
inline std::pair<std::string, std::string> gguf_lora_names(std::string_view hf_weight_name) {
  const auto base = gguf_tensor_name(hf_weight_name);
  return {base + ".lora_a", base + ".lora_b"};
}

}  // namespace forge::io
