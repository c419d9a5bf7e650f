// Includes every installed header (forge.hpp), uses a few and their dependencies (nlohmann-json, libsodium, xtensor)
// and checks known answers, so a broken install or link line fails here.
#include <cstdio>

#include "forge/forge.hpp"  // the umbrella header: every public header compiles together

int main() {
  const bool kat = forge::philox4x32_10({0, 0, 0, 0}, {0, 0})[0] == 0x6627e8d5u;
  // SHA-256("abc"), FIPS 180-2 appendix B.1.
  const bool sha = forge::govern::sha256_hex(std::string_view("abc")) ==
                   "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  const bool bf = forge::to_bf16(1.0f).bits == 0x3f80;
  forge::tensor<float, 2> t = {{1.0f, 2.0f}, {3.0f, 4.0f}};
  const bool xt = t(1, 0) == 3.0f;
  const bool js = forge::parse_json(R"({"a": [1, 2]})", "inline")["a"][1] == 2;
  if (kat && sha && bf && xt && js) {
    std::puts("consumer: ok");
    return 0;
  }
  std::printf("consumer: failed kat=%d sha=%d bf16=%d xtensor=%d json=%d\n", kat, sha, bf, xt, js);
  return 1;
}
