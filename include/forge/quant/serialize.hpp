#pragma once
// forge's own lossless layout for quantized tensors, inside an ordinary safetensors file.
// A qtensor<F> called NAME is stored as
//   NAME.codes    U8  [bytes]         packed codes exactly as in memory
//   NAME.scales   F32 [count]         (if non-empty)
//   NAME.zeros    U8  [count]         (if non-empty)
//   NAME.scales2  F32 [count]         (nf4 double quantization)
//   NAME.offset   F32 [1]             (nf4 double quantization)
//   NAME.perm     I32 [cols]          (int4 act-order)
// with the metadata entry "NAME" = "<format name> <rows> <cols>". Reading validates the format
// name, every size against the shape and the permutation, and reports the tensor that is wrong.

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "forge/io/safetensors.hpp"
#include "forge/quant/format.hpp"

namespace forge::quant {

/// Appends the tensors of `t` under `name` to `views` (which then refer to t's memory) and its
/// metadata entry to `meta`.
template <QuantFormat F>
void append_views(std::vector<io::tensor_view>& views, std::map<std::string, std::string>& meta,
                  const std::string& name, const qtensor<F>& t) {
  auto u8 = [&](const char* part, const std::vector<std::uint8_t>& v) {
    views.push_back({name + part,
                     dtype::u8,
                     {static_cast<std::int64_t>(v.size())},
                     std::as_bytes(std::span(v))});
  };
  auto f32 = [&](const char* part, std::span<const float> v) {
    views.push_back(io::f32_view(name + part, {static_cast<std::int64_t>(v.size())}, v));
  };
  u8(".codes", t.codes);
  if (!t.scales.empty()) f32(".scales", t.scales);
  if (!t.zeros.empty()) u8(".zeros", t.zeros);
  if (!t.scales2.empty()) {
    f32(".scales2", t.scales2);
    f32(".offset", std::span<const float>(&t.offset, 1));
  }
  if (!t.perm.empty())
    views.push_back({name + ".perm",
                     dtype::i32,
                     {static_cast<std::int64_t>(t.perm.size())},
                     std::as_bytes(std::span(t.perm))});
  meta[name] = std::string(F::name) + " " + std::to_string(t.rows) + " " + std::to_string(t.cols);
}

/// Reads the qtensor<F> called `name` from a safetensors file written by append_views.
template <QuantFormat F>
qtensor<F> read_qtensor(const io::safetensors_file& f, const std::string& name) {
  auto fail = [&](const std::string& what, const std::string& place, const std::string& exp,
                  const std::string& found) {
    throw error(
        {.what = what, .file = f.source(), .place = place, .expected = exp, .found = found});
  };
  const auto it = f.metadata().find(name);
  if (it == f.metadata().end())
    fail("quantized tensor has no metadata entry", "metadata " + name, "\"<format> <rows> <cols>\"",
         "nothing");
  std::istringstream ss(it->second);
  std::string fmt;
  qtensor<F> t;
  if (!(ss >> fmt >> t.rows >> t.cols) || t.rows < 0 || t.cols < 0)
    fail("malformed quantized tensor metadata", "metadata " + name, "\"<format> <rows> <cols>\"",
         it->second);
  if (fmt != F::name) fail("quantized tensor has another format", "metadata " + name, F::name, fmt);
  t.codes = f.copy_as<std::uint8_t>(name + ".codes", dtype::u8);
  if (f.find(name + ".scales")) t.scales = f.to_f32(name + ".scales");
  if (f.find(name + ".zeros")) t.zeros = f.copy_as<std::uint8_t>(name + ".zeros", dtype::u8);
  if (f.find(name + ".scales2")) {
    t.scales2 = f.to_f32(name + ".scales2");
    auto off = f.to_f32(name + ".offset");
    if (off.size() != 1)
      fail("offset must be one value", "tensor " + name + ".offset", "1",
           std::to_string(off.size()));
    t.offset = off[0];
  }
  if (f.find(name + ".perm")) t.perm = f.copy_as<std::int32_t>(name + ".perm", dtype::i32);
  // Sizes: the whole tensor must take exactly the bytes the format says.
  const std::size_t want = F::bytes_for(t.rows, t.cols) + t.perm.size() * 4;
  bool grouped = true;
  if constexpr (F::group_size > 0) grouped = t.cols % F::group_size == 0;
  if (t.bytes() != want || !grouped)
    fail("quantized tensor sizes disagree with its shape", "tensor " + name,
         std::to_string(want) + " bytes for " + std::to_string(t.rows) + " x " +
             std::to_string(t.cols),
         std::to_string(t.bytes()) + " bytes");
  if (!t.perm.empty()) {
    std::vector<bool> seen(static_cast<std::size_t>(t.cols), false);
    bool ok = t.perm.size() == static_cast<std::size_t>(t.cols);
    for (auto p : t.perm) {
      if (!ok || p < 0 || p >= t.cols || seen[static_cast<std::size_t>(p)]) {
        ok = false;
        break;
      }
      seen[static_cast<std::size_t>(p)] = true;
    }
    if (!ok)
      fail("column permutation is not a permutation", "tensor " + name + ".perm",
           "each of 0.." + std::to_string(t.cols - 1) + " once", "a repeat or out-of-range value");
  }
  if constexpr (F::bits == 4 && !F::symmetric)
    for (auto z : t.zeros)
      if (z > 15)
        fail("zero point out of range", "tensor " + name + ".zeros", "0..15", std::to_string(z));
  return t;
}

/// Writes one quantized tensor to its own safetensors file (atomically).
template <QuantFormat F>
void save_qtensor(const std::filesystem::path& path, const std::string& name, const qtensor<F>& t) {
  std::vector<io::tensor_view> views;
  std::map<std::string, std::string> meta;
  append_views(views, meta, name, t);
  io::write_safetensors(path, views, meta);
}

/// Reads the quantized tensor `name` from a safetensors file.
template <QuantFormat F>
qtensor<F> load_qtensor(const std::filesystem::path& path, const std::string& name) {
  return read_qtensor<F>(io::safetensors_file::open(path), name);
}

}  // namespace forge::quant
