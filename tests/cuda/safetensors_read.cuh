#pragma once
// A small safetensors reader for the CUDA tests (tests only; the library's reader,
// io/safetensors.hpp, needs nlohmann-json, which the GPU machine's build does not have).
// Format (huggingface/safetensors README): u64 little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}, then the data.
// Parses the JSON subset those headers use (objects, arrays, strings, integers) and reads F32,
// F64 and I64 tensors; anything else is a forge::error naming the file and byte.

#include <cstdint>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "forge/core/error.hpp"

namespace forge::cuda::test {

/// One tensor of a safetensors file, its bytes copied out.
struct st_tensor {
  std::string dtype;
  std::vector<std::int64_t> shape;
  std::vector<char> bytes;
};

/// All tensors of a safetensors file, by name.
class st_file {
 public:
  explicit st_file(const std::string& path) : path_(path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("cannot open the file", 0);
    std::vector<char> all((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    if (all.size() < 8) fail("file shorter than its 8-byte header length", 0);
    std::uint64_t n = 0;
    std::memcpy(&n, all.data(), 8);
    if (n > all.size() - 8) fail("header length past the end of the file", 0);
    text_.assign(all.data() + 8, all.data() + 8 + n);
    const std::size_t data = 8 + n;
    pos_ = 0;
    expect('{');
    if (peek() != '}') {
      for (;;) {
        const std::string name = str();
        expect(':');
        if (name == "__metadata__") {
          skip_value();
        } else {
          st_tensor t;
          std::int64_t begin = -1, end = -1;
          expect('{');
          for (;;) {
            const std::string key = str();
            expect(':');
            if (key == "dtype") {
              t.dtype = str();
            } else if (key == "shape") {
              t.shape = ints();
            } else if (key == "data_offsets") {
              auto o = ints();
              if (o.size() != 2) fail("data_offsets must hold two integers", pos_);
              begin = o[0];
              end = o[1];
            } else {
              skip_value();
            }
            if (peek() == ',') {
              ++pos_;
              continue;
            }
            expect('}');
            break;
          }
          if (begin < 0 || end < begin || data + std::size_t(end) > all.size())
            fail("tensor " + name + " has data outside the file", pos_);
          t.bytes.assign(all.data() + data + begin, all.data() + data + end);
          tensors_[name] = std::move(t);
        }
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect('}');
        break;
      }
    }
  }

  /// True if the file holds `name`.
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

  /// The tensor's values as double (F32, F64 or I64).
  std::vector<double> values(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw error({.what = "tensor not found", .file = path_, .place = name});
    const auto& t = it->second;
    std::vector<double> v;
    auto read = [&](auto zero) {
      using U = decltype(zero);
      const std::size_t n = t.bytes.size() / sizeof(U);
      v.resize(n);
      for (std::size_t i = 0; i < n; ++i) {
        U x;
        std::memcpy(&x, t.bytes.data() + i * sizeof(U), sizeof(U));
        v[i] = double(x);
      }
    };
    if (t.dtype == "F32")
      read(float{});
    else if (t.dtype == "F64")
      read(double{});
    else if (t.dtype == "I64")
      read(std::int64_t{});
    else
      throw error({.what = "unsupported dtype in the test reader",
                   .file = path_,
                   .place = name,
                   .expected = "F32, F64 or I64",
                   .found = t.dtype});
    return v;
  }
  /// The tensor as f32.
  std::vector<float> f32(const std::string& name) const {
    const auto d = values(name);
    return std::vector<float>(d.begin(), d.end());
  }
  /// The tensor's shape.
  const std::vector<std::int64_t>& shape(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end())
      throw error({.what = "tensor not found", .file = path_, .place = name});
    return it->second.shape;
  }

 private:
  [[noreturn]] void fail(const std::string& what, std::size_t at) const {
    throw error({.what = what, .file = path_, .place = "header byte " + std::to_string(at + 8)});
  }
  void ws() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' ||
                                   text_[pos_] == '\t' || text_[pos_] == '\r'))
      ++pos_;
  }
  char peek() {
    ws();
    if (pos_ >= text_.size()) fail("header ends early", pos_);
    return text_[pos_];
  }
  void expect(char c) {
    if (peek() != c) fail(std::string("expected '") + c + "'", pos_);
    ++pos_;
  }
  std::string str() {
    expect('"');
    std::string s;
    while (pos_ < text_.size() && text_[pos_] != '"') {
      if (text_[pos_] == '\\') ++pos_;
      if (pos_ < text_.size()) s += text_[pos_++];
    }
    expect('"');
    return s;
  }
  std::int64_t integer() {
    ws();
    std::size_t used = 0;
    std::int64_t v = 0;
    try {
      v = std::stoll(text_.substr(pos_, 24), &used);
    } catch (...) {
      fail("expected an integer", pos_);
    }
    pos_ += used;
    return v;
  }
  std::vector<std::int64_t> ints() {
    std::vector<std::int64_t> v;
    expect('[');
    if (peek() == ']') {
      ++pos_;
      return v;
    }
    for (;;) {
      v.push_back(integer());
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      expect(']');
      return v;
    }
  }
  void skip_value() {
    const char c = peek();
    if (c == '"') {
      str();
    } else if (c == '{' || c == '[') {
      const char close = c == '{' ? '}' : ']';
      ++pos_;
      if (peek() == close) {
        ++pos_;
        return;
      }
      for (;;) {
        if (c == '{') {
          str();
          expect(':');
        }
        skip_value();
        if (peek() == ',') {
          ++pos_;
          continue;
        }
        expect(close);
        return;
      }
    } else {
      while (pos_ < text_.size() && text_[pos_] != ',' && text_[pos_] != '}' && text_[pos_] != ']')
        ++pos_;
    }
  }

  std::string path_, text_;
  std::size_t pos_ = 0;
  std::map<std::string, st_tensor> tensors_;
};

}  // namespace forge::cuda::test
