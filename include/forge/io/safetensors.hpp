#pragma once
// safetensors reader and writer (huggingface/safetensors, format described in its README):
//
//   [u64 little-endian N][N bytes of JSON header, UTF-8, may be space-padded][data section]
//   header: {"__metadata__": {str: str}?, "<name>": {"dtype": "F32", "shape": [..],
//            "data_offsets": [begin, end]}, ...}   offsets relative to the data section
//
// The reader maps the file and validates the whole header before any tensor is touched,
// with the reference implementation's rules: the header fits in the file and starts with
// '{', is well-formed JSON with no duplicate names, every dtype is known, every
// shape × dtype size equals its byte span, and the spans, sorted by offset, tile the data
// section exactly (in bounds, no overlap, no gap). Any violation is a forge::error naming
// the file, the byte offset or tensor, and what was expected.
//
// The writer lays files out as the reference writer does (tensors ordered by dtype
// alignment, largest first, then by name; header padded with spaces to a multiple of 8),
// so re-writing a file made by the reference tools reproduces it byte for byte.

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "forge/core/dtype.hpp"
#include "forge/core/error.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/mapped_file.hpp"

namespace forge::io {

/// One tensor's entry in a safetensors header.
struct tensor_info {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0;  ///< byte offset of the first byte, within the data section
  std::uint64_t end = 0;    ///< one past the last byte, within the data section
  /// Number of elements (product of the shape; 1 for a scalar).
  std::size_t numel() const {
    std::size_t n = 1;
    for (auto d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
};

/// Renders a shape as "[2, 3]" for messages.
inline std::string shape_string(std::span<const std::int64_t> shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

/// A validated safetensors file, memory-mapped (or held in memory when parsed from bytes).
class safetensors_file {
 public:
  /// The largest header accepted, as in the reference implementation (100 MB).
  static constexpr std::uint64_t max_header_bytes = 100'000'000;

  /// Maps and validates `path`.
  static safetensors_file open(const std::filesystem::path& path) {
    safetensors_file f;
    f.map_ = mapped_file(path);
    f.source_ = path.string();
    f.bytes_ = f.map_.bytes();
    f.validate();
    return f;
  }

  /// Validates an in-memory file; the bytes are copied. `source` names it in errors.
  static safetensors_file parse(std::span<const std::byte> bytes, std::string source) {
    safetensors_file f;
    f.owned_ = std::make_shared<std::vector<std::byte>>(bytes.begin(), bytes.end());
    f.bytes_ = std::span<const std::byte>(*f.owned_);
    f.source_ = std::move(source);
    f.validate();
    return f;
  }

  /// All tensors, in header order.
  const std::vector<tensor_info>& tensors() const { return tensors_; }
  /// The `__metadata__` string map (empty if absent).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The file path (or the source name given to parse()).
  const std::string& source() const { return source_; }

  /// The tensor called `name`, or nullptr.
  const tensor_info* find(std::string_view name) const {
    auto it = index_.find(std::string(name));
    return it == index_.end() ? nullptr : &tensors_[it->second];
  }

  /// The tensor called `name`; forge::error naming the file and tensor if absent.
  const tensor_info& at(std::string_view name) const {
    if (auto* t = find(name)) return *t;
    throw error({.what = "tensor not found",
                 .file = source_,
                 .place = "tensor " + std::string(name),
                 .expected = "a tensor of that name in the header"});
  }

  /// The raw bytes of a tensor (little-endian, row-major).
  std::span<const std::byte> bytes(const tensor_info& t) const {
    return bytes_.subspan(data_start_ + t.begin, t.end - t.begin);
  }

  /// A floating-point tensor converted to f32; forge::error for integer dtypes.
  std::vector<float> to_f32(std::string_view name) const {
    const auto& t = at(name);
    if (t.type != dtype::f32 && t.type != dtype::f16 && t.type != dtype::bf16 &&
        t.type != dtype::f64)
      throw error({.what = "tensor is not floating point",
                   .file = source_,
                   .place = "tensor " + t.name,
                   .expected = "F32, F16, BF16 or F64",
                   .found = std::string(name_of(t.type))});
    std::vector<float> out(t.numel());
    convert_to_f32(bytes(t).data(), t.type, out.size(), out.data());
    return out;
  }

  /// Copies an integer or float tensor of exactly dtype `T` (e.g. std::int64_t for I64).
  template <class T>
  std::vector<T> copy_as(std::string_view name, dtype expected) const {
    const auto& t = at(name);
    if (t.type != expected)
      throw error({.what = "unexpected dtype",
                   .file = source_,
                   .place = "tensor " + t.name,
                   .expected = std::string(name_of(expected)),
                   .found = std::string(name_of(t.type))});
    std::vector<T> out(t.numel());
    if (!out.empty()) std::memcpy(out.data(), bytes(t).data(), out.size() * sizeof(T));
    return out;
  }

 private:
  static std::string_view name_of(dtype t) { return forge::name(t); }

  [[noreturn]] void fail(std::string what, std::string place, std::string expected = {},
                         std::string found = {}) const {
    throw error({.what = std::move(what),
                 .file = source_,
                 .place = std::move(place),
                 .expected = std::move(expected),
                 .found = std::move(found)});
  }

  void validate() {
    const std::uint64_t size = bytes_.size();
    if (size < 8)
      fail("file too short for the header length", at_byte(0), "at least 8 bytes",
           std::to_string(size) + " bytes");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<std::uint8_t>(bytes_[i]);
    if (n > max_header_bytes)
      fail("header too large", at_byte(0), "at most " + std::to_string(max_header_bytes),
           std::to_string(n));
    if (n > size - 8)
      fail("header length runs past the end of the file", at_byte(0),
           "at most " + std::to_string(size - 8), std::to_string(n));
    data_start_ = 8 + n;
    std::string_view header(reinterpret_cast<const char*>(bytes_.data()) + 8, n);
    if (header.empty() || header.front() != '{')
      fail("header does not start with '{'", at_byte(8), "a JSON object");

    // Parse, rejecting duplicate top-level names (the reference implementation's map would
    // silently keep one of them).
    nlohmann::json j;
    std::set<std::string> seen;
    std::string duplicate;
    try {
      j = nlohmann::json::parse(
          header, [&](int depth, nlohmann::json::parse_event_t ev, nlohmann::json& parsed) {
            if (ev == nlohmann::json::parse_event_t::key && depth == 1 && duplicate.empty()) {
              auto k = parsed.get<std::string>();
              if (!seen.insert(k).second) duplicate = k;
            }
            return true;
          });
    } catch (const nlohmann::json::parse_error& e) {
      fail(std::string("header is not valid JSON: ") + e.what(), at_byte(8 + e.byte),
           "a JSON object");
    } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for any type
      fail(std::string("header is not valid JSON: ") + e.what(), at_byte(8), "a JSON object");
    }
    if (!duplicate.empty()) fail("duplicate tensor name in header", "tensor " + duplicate);
    if (!j.is_object()) fail("header is not a JSON object", at_byte(8), "a JSON object");

    const std::uint64_t data_size = size - data_start_;
    for (auto& [key, v] : j.items()) {
      if (key == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not an object", "__metadata__", "a string map");
        for (auto& [mk, mv] : v.items()) {
          if (!mv.is_string())
            fail("__metadata__ value is not a string", "__metadata__." + mk, "a string",
                 std::string(mv.type_name()));
          metadata_[mk] = mv.get<std::string>();
        }
        continue;
      }
      const std::string place = "tensor " + key;
      if (!v.is_object())
        fail("tensor entry is not an object", place, "{dtype, shape, data_offsets}");
      for (auto& [field, _] : v.items())
        if (field != "dtype" && field != "shape" && field != "data_offsets")
          fail("unknown field in tensor entry", place, "dtype, shape, data_offsets", field);
      tensor_info t;
      t.name = key;
      auto dt = v.find("dtype");
      if (dt == v.end() || !dt->is_string())
        fail("missing or non-string dtype", place, "a dtype name");
      try {
        t.type = parse_dtype(dt->get<std::string>());
      } catch (const error& e) {
        fail("unknown dtype", place, e.expected(), e.found());
      }
      auto sh = v.find("shape");
      if (sh == v.end() || !sh->is_array())
        fail("missing or non-array shape", place, "an array of sizes");
      std::uint64_t numel = 1;
      for (auto& d : *sh) {
        if (!d.is_number_unsigned())
          fail("shape entry is not a non-negative integer", place, "a size", d.dump());
        const auto dim = d.get<std::uint64_t>();
        if (dim > static_cast<std::uint64_t>(INT64_MAX) ||
            __builtin_mul_overflow(numel, dim, &numel))
          fail("shape overflows", place, "a product of sizes below 2^63", sh->dump());
        t.shape.push_back(static_cast<std::int64_t>(dim));
      }
      auto off = v.find("data_offsets");
      if (off == v.end() || !off->is_array() || off->size() != 2 ||
          !(*off)[0].is_number_unsigned() || !(*off)[1].is_number_unsigned())
        fail("bad data_offsets", place, "[begin, end] as non-negative integers",
             off == v.end() ? "nothing" : off->dump());
      t.begin = (*off)[0].get<std::uint64_t>();
      t.end = (*off)[1].get<std::uint64_t>();
      if (t.end < t.begin)
        fail("data_offsets end before begin", place, "begin <= end", off->dump());
      std::uint64_t nbytes = 0;
      if (__builtin_mul_overflow(numel, static_cast<std::uint64_t>(size_of(t.type)), &nbytes) ||
          nbytes != t.end - t.begin)
        fail("byte span disagrees with shape and dtype", place,
             std::to_string(numel) + " elements x " + std::to_string(size_of(t.type)) + " bytes",
             std::to_string(t.end - t.begin) + " bytes");
      if (t.end > data_size)
        fail("tensor runs past the end of the file", place, "end <= " + std::to_string(data_size),
             std::to_string(t.end));
      tensors_.push_back(std::move(t));
    }
    // The spans must tile the data section: sorted by offset, each begins where the last ended.
    std::vector<std::size_t> order(tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](auto a, auto b) {
      return std::tie(tensors_[a].begin, tensors_[a].end) <
             std::tie(tensors_[b].begin, tensors_[b].end);
    });
    std::uint64_t cursor = 0;
    for (auto i : order) {
      const auto& t = tensors_[i];
      if (t.begin != cursor)
        fail(t.begin < cursor ? "tensor overlaps the previous one" : "gap before tensor",
             "tensor " + t.name, "begin = " + std::to_string(cursor), std::to_string(t.begin));
      cursor = t.end;
    }
    if (cursor != data_size)
      fail("data section has bytes no tensor covers", at_byte(data_start_ + cursor),
           std::to_string(data_size) + " bytes of tensors", std::to_string(cursor));
    for (std::size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
  }

  mapped_file map_;
  std::shared_ptr<std::vector<std::byte>> owned_;
  std::span<const std::byte> bytes_;
  std::string source_;
  std::uint64_t data_start_ = 0;
  std::vector<tensor_info> tensors_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// A tensor to write: name, dtype, shape and its bytes (row-major, little-endian).
struct tensor_view {
  std::string name;
  dtype type = dtype::f32;
  std::vector<std::int64_t> shape;
  std::span<const std::byte> data;
};

/// Makes a tensor_view over a float buffer.
inline tensor_view f32_view(std::string name, std::vector<std::int64_t> shape,
                            std::span<const float> values) {
  return {std::move(name), dtype::f32, std::move(shape), std::as_bytes(values)};
}

namespace detail {
inline std::string json_string(const std::string& s, const std::string& what) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::type_error&) {
    throw error({.what = what + " is not valid UTF-8", .expected = "UTF-8 text", .found = s});
  }
}
}  // namespace detail

/// Serialises tensors in the reference layout; returns the whole file's bytes' header part
/// (length prefix + padded JSON) and the tensor order used for the data section.
inline std::string safetensors_header(std::span<const tensor_view> tensors,
                                      const std::map<std::string, std::string>& metadata,
                                      std::vector<std::size_t>& order) {
  order.resize(tensors.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](auto a, auto b) {
    const auto sa = size_of(tensors[a].type), sb = size_of(tensors[b].type);
    if (sa != sb) return sa > sb;
    return tensors[a].name < tensors[b].name;
  });
  std::set<std::string> names;
  std::string h = "{";
  bool first = true;
  if (!metadata.empty()) {
    h += "\"__metadata__\":{";
    bool f2 = true;
    for (auto& [k, v] : metadata) {
      if (!f2) h += ',';
      h += detail::json_string(k, "metadata key");
      h += ':';
      h += detail::json_string(v, "metadata value");
      f2 = false;
    }
    h += "}";
    first = false;
  }
  std::uint64_t offset = 0;
  for (auto i : order) {
    const auto& t = tensors[i];
    if (t.name == "__metadata__" || !names.insert(t.name).second)
      throw error({.what = "duplicate or reserved tensor name", .place = "tensor " + t.name});
    std::uint64_t numel = 1;
    for (auto d : t.shape) {
      if (d < 0) throw error({.what = "negative dimension", .place = "tensor " + t.name});
      numel *= static_cast<std::uint64_t>(d);
    }
    if (numel * size_of(t.type) != t.data.size())
      throw error({.what = "data size disagrees with shape and dtype",
                   .place = "tensor " + t.name,
                   .expected = std::to_string(numel * size_of(t.type)) + " bytes",
                   .found = std::to_string(t.data.size()) + " bytes"});
    if (!first) h += ',';
    h += detail::json_string(t.name, "tensor name");
    h += ":{\"dtype\":\"";
    h += name(t.type);
    h += "\",\"shape\":[";
    for (std::size_t d = 0; d < t.shape.size(); ++d) {
      if (d) h += ',';
      h += std::to_string(t.shape[d]);
    }
    h += "],\"data_offsets\":[" + std::to_string(offset) + "," +
         std::to_string(offset + t.data.size()) + "]}";
    offset += t.data.size();
    first = false;
  }
  h += "}";
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  std::uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + h;
}

/// Writes a safetensors file atomically, in the reference tools' layout.
inline void write_safetensors(const std::filesystem::path& path,
                              std::span<const tensor_view> tensors,
                              const std::map<std::string, std::string>& metadata = {}) {
  std::vector<std::size_t> order;
  std::string header;
  try {
    header = safetensors_header(tensors, metadata, order);
  } catch (const error& e) {
    auto info = e.info();
    info.file = path.string();
    throw error(info);
  }
  write_atomic(path, [&](atomic_sink& s) {
    s.write(header);
    for (auto i : order) s.write(tensors[i].data.data(), tensors[i].data.size());
  });
}

}  // namespace forge::io
