#pragma once
// Locating test inputs: the shared Hugging Face fixtures and a scratch directory per test.

#include <cstdlib>
#include <filesystem>
#include <string>

#include "forge/core/error.hpp"

namespace forge::test {

/// Root of the shared fixtures (environment FORGE_FIXTURES, set by ctest).
inline std::filesystem::path fixtures() {
  const char* e = std::getenv("FORGE_FIXTURES");
  std::filesystem::path p = e && *e ? e : "../shared/fixtures";
  if (!std::filesystem::exists(p))
    throw forge::error({.what = "fixture directory missing", .file = p.string()});
  return p;
}

/// The tiny Llama checkpoint made by transformers (model/, adapter/, expect.safetensors ...).
inline std::filesystem::path llama_a() {
  return fixtures() / "hf" / "llama_a";
}

/// A fresh, empty scratch directory under the build tree, unique to `name`.
inline std::filesystem::path scratch(const std::string& name) {
  const char* b = std::getenv("FORGE_BINARY_DIR");
  std::filesystem::path p = std::filesystem::path(b && *b ? b : ".") / "scratch" / name;
  std::filesystem::remove_all(p);
  std::filesystem::create_directories(p);
  return p;
}

/// The python of the reference-tool virtual environment, or "" when none was configured.
inline std::string python() {
  const char* e = std::getenv("FORGE_PYTHON");
  return e ? e : "";
}

/// The source tree's root (for examples and scripts).
inline std::filesystem::path source_dir() {
  const char* e = std::getenv("FORGE_SOURCE_DIR");
  return e && *e ? e : ".";
}

}  // namespace forge::test
