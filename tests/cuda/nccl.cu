// The NCCL communicator on one GPU: the rank-ordered sum kernel against the same additions on
// the CPU (bit for bit: IEEE additions in the same order), and a communicator of one rank
// bootstrapped through a file — its all-reduce and broadcast must leave the data unchanged.
// A group of several GPUs needs a multi-GPU machine (docs/distributed.md).

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <vector>

#include "cuda_test.cuh"
#include "forge/dist/nccl.cuh"

using namespace forge::cuda::test;

namespace {

template <class T>
void check_ordered_sum(report& rep, test_rng& rng, std::size_t n, int ranks) {
  std::vector<T> g(n * std::size_t(ranks));
  // Magnitudes from 1e-6 to 1e6, both signs: association changes the rounded sum, so only
  // the rank order itself reproduces the CPU's bits.
  for (auto& x : g) x = T(rng.normal() * std::pow(10.0, rng.uniform(-6, 6)));
  std::vector<T> want(n);
  for (std::size_t i = 0; i < n; ++i) {
    T s = g[i];
    for (int k = 1; k < ranks; ++k) s += g[std::size_t(k) * n + i];
    want[i] = s;
  }
  T *dg = nullptr, *dout = nullptr;
  cudaMalloc(&dg, g.size() * sizeof(T));
  cudaMalloc(&dout, n * sizeof(T));
  cudaMemcpy(dg, g.data(), g.size() * sizeof(T), cudaMemcpyHostToDevice);
  forge::dist::rank_ordered_sum(dg, dout, n, ranks, nullptr);
  std::vector<T> got(n);
  cudaMemcpy(got.data(), dout, n * sizeof(T), cudaMemcpyDeviceToHost);
  cudaFree(dg);
  cudaFree(dout);
  rep.expect(std::string("rank-ordered sum ") + (sizeof(T) == 4 ? "f32" : "f64") + ", " +
                 std::to_string(ranks) + " ranks, n=" + std::to_string(n) + ": bit-identical",
             std::memcmp(got.data(), want.data(), n * sizeof(T)) == 0);
}

}  // namespace

int main() {
  report rep("nccl");
  test_rng rng(17);
  check_ordered_sum<float>(rep, rng, 100003, 3);
  check_ordered_sum<double>(rep, rng, 4099, 8);
  check_ordered_sum<float>(rep, rng, 1, 2);

  try {
    const auto file = std::filesystem::temp_directory_path() /
                      ("forge_nccl_id_" + std::to_string(::getpid()));
    const auto id = forge::dist::nccl_unique_id_via_file(file, 0);
    const auto id_again = forge::dist::nccl_unique_id_via_file(file, 1, 1);  // as another rank
    rep.expect("unique id round trip through the file",
               std::memcmp(id.internal, id_again.internal, sizeof id.internal) == 0);
    std::filesystem::remove(file);
    forge::dist::nccl_communicator comm(0, 1, id);
    rep.expect("one-rank group: rank 0 of 1", comm.rank() == 0 && comm.size() == 1);
    std::vector<float> h(1 << 16);
    for (auto& x : h) x = float(rng.normal());
    float* d = nullptr;
    cudaMalloc(&d, h.size() * sizeof(float));
    cudaMemcpy(d, h.data(), h.size() * sizeof(float), cudaMemcpyHostToDevice);
    comm.all_reduce_sum(std::span<float>(d, h.size()));
    comm.broadcast(std::as_writable_bytes(std::span<float>(d, h.size())), 0);
    comm.barrier();
    std::vector<float> back(h.size());
    cudaMemcpy(back.data(), d, h.size() * sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(d);
    rep.expect("one-rank all-reduce and broadcast leave the data unchanged",
               std::memcmp(back.data(), h.data(), h.size() * sizeof(float)) == 0);
    // A missing id file is a clear error after the timeout, not a hang.
    bool threw = false;
    try {
      (void)forge::dist::nccl_unique_id_via_file(file.string() + ".absent", 1, 0.05);
    } catch (const forge::error& e) {
      threw = std::string(e.what()).find("did not publish") != std::string::npos;
    }
    rep.expect("a missing unique id times out with forge::error", threw);
  } catch (const std::exception& e) {
    std::printf("FAIL       %s\n", e.what());
    rep.expect("NCCL communicator of one rank", false);
  }
  return rep.finish();
}
