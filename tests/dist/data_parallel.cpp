// Data-parallel training over MPI: runs tests/dist/worker.cpp under `mpirun -np 2` and alone,
// and compares the trained weights. References: the one-process run of the same program
// (bit-identical where the sums add the same terms in the same order) for SFT, DPO, KTO and
// ZeRO-1 full fine-tuning; the same two-rank run with the reduction after backward instead of
// overlapped with it; a resumed run with a different world size; and a crashed rank that must
// stop the job, not hang it.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../support/fixtures.hpp"
#include "forge/io/atomic_file.hpp"
#include "forge/io/safetensors.hpp"
#include "forge/train/checkpoint.hpp"

namespace fs = std::filesystem;
using namespace forge;

namespace {

// Runs the worker with `ranks` processes (0: without mpirun) and returns its exit status.
int run_worker(int ranks, const fs::path& out, const std::string& args) {
  const char* worker = std::getenv("FORGE_DIST_WORKER");
  const char* mpirun = std::getenv("FORGE_MPIEXEC");
  REQUIRE(worker);
  REQUIRE(mpirun);
  fs::create_directories(out);
  std::string cmd = "OMP_NUM_THREADS=1 timeout 120 ";
  if (ranks > 0)
    cmd += std::string(mpirun) + " --oversubscribe --allow-run-as-root -np " +
           std::to_string(ranks) + " ";
  cmd += std::string(worker) + " " + out.string() + " " + args + " > " + (out / "stdout").string() +
         " 2> " + (out / "stderr").string();
  const int s = std::system(cmd.c_str());
  return WIFEXITED(s) ? WEXITSTATUS(s) : 128 + WTERMSIG(s);
}

// Rank r's "buckets early wait_seconds optimizer_state_bytes" line.
struct stats {
  long long buckets = 0, early = 0;
  double wait = 0;
  long long state_bytes = 0;
};
stats read_stats(const fs::path& dir, int rank) {
  stats s;
  const auto text = io::read_file(dir / ("stats." + std::to_string(rank) + ".txt"));
  REQUIRE(std::sscanf(text.c_str(), "%lld %lld %lf %lld", &s.buckets, &s.early, &s.wait,
                      &s.state_bytes) == 4);
  return s;
}

// Same bytes of weights and the same loss log text in two run directories.
void check_identical(const fs::path& a_dir, const fs::path& b_dir) {
  const auto a = io::read_file(a_dir / "weights.bin"), b = io::read_file(b_dir / "weights.bin");
  REQUIRE(!a.empty());
  CHECK(a.size() == b.size());
  CHECK(a == b);
  CHECK(io::read_file(a_dir / "log.txt") == io::read_file(b_dir / "log.txt"));
}

std::vector<float> weights(const fs::path& dir) {
  const auto b = io::read_file(dir / "weights.bin");
  std::vector<float> w(b.size() / sizeof(float));
  std::memcpy(w.data(), b.data(), w.size() * sizeof(float));
  return w;
}

}  // namespace

TEST_CASE("two ranks with one micro-batch each equal one process bit for bit") {
  const auto one = test::scratch("dp_one_a2"), two = test::scratch("dp_two_a2");
  REQUIRE(run_worker(0, one, "2 6") == 0);
  REQUIRE(run_worker(2, two, "2 6") == 0);
  const auto a = weights(one), b = weights(two);
  REQUIRE(a.size() == b.size());
  REQUIRE(!a.empty());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
  // The logged losses and token counts (sums over the group) are the same text too.
  CHECK(io::read_file(one / "log.txt") == io::read_file(two / "log.txt"));
}

TEST_CASE("two ranks with two micro-batches each agree with one process within rounding") {
  const auto one = test::scratch("dp_one_a4"), two = test::scratch("dp_two_a4");
  REQUIRE(run_worker(0, one, "4 6") == 0);
  REQUIRE(run_worker(2, two, "4 6") == 0);
  const auto a = weights(one), b = weights(two);
  REQUIRE(a.size() == b.size());
  // Only the association of four f32 gradient terms differs ((g0+g1)+(g2+g3) against
  // ((g0+g1)+g2)+g3): ~1e-7 relative per gradient element and step; six AdamW steps of
  // lr 5e-3 left at most 3e-8 between the weights (O(0.1)) when this test was written, so
  // 1e-6 allows 30x that while still catching any wrong term or scale.
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, double(std::abs(a[i] - b[i])));
  CHECK(worst < 1e-6);
  CHECK(worst > 0);  // the orders do differ: a zero would mean the ranks did not split work
}

TEST_CASE("a run paused on two ranks resumes on one and ends where an unpaused run ends") {
  const auto straight = test::scratch("dp_straight"), paused = test::scratch("dp_paused");
  REQUIRE(run_worker(0, straight, "2 6") == 0);
  REQUIRE(run_worker(2, paused, "2 6 3") == 0);  // halts after step 3 with a checkpoint
  REQUIRE(run_worker(0, paused, "2 6") == 0);    // one process takes over
  const auto a = weights(straight), b = weights(paused);
  REQUIRE(a.size() == b.size());
  CHECK(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

TEST_CASE("a rank that dies stops the job with an error and leaves a valid checkpoint") {
  const auto dir = test::scratch("dp_crash");
  const auto t0 = std::chrono::steady_clock::now();
  const int status = run_worker(2, dir, "2 6 0 2");  // rank 1 exits after step 2
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(status != 0);
  CHECK(status != 124);  // not the 120 s `timeout` of the harness: the job stopped by itself
  CHECK(s < 60);
  CHECK_FALSE(fs::exists(dir / "weights.bin"));
  // The checkpoint rank 0 wrote after step 2 is complete and loadable.
  const auto ckpt = dir / "checkpoint.safetensors";
  REQUIRE(fs::exists(ckpt));
  auto f = io::safetensors_file::open(ckpt);  // validates the whole file
  const auto st = train::state_from_json(
      parse_json(f.metadata().at("forge.trainer_state"), ckpt.string()), ckpt.string());
  CHECK(st.step == 2);
}

TEST_CASE("DPO on two ranks equals one process bit for bit, and resumes on one") {
  // Reference cache computed half per rank and gathered, gradients reduced in small buckets
  // while backward runs: the weights and the loss log must still be one process's.
  const auto one = test::scratch("dp_dpo_one"), two = test::scratch("dp_dpo_two"),
             paused = test::scratch("dp_dpo_paused");
  REQUIRE(run_worker(0, one, "2 6 --dpo") == 0);
  REQUIRE(run_worker(2, two, "2 6 --dpo --bucket=512") == 0);
  check_identical(one, two);
  // Both ranks started some buckets before their backward had finished.
  for (int r = 0; r < 2; ++r) {
    const auto s = read_stats(two, r);
    CHECK(s.early > 0);
    CHECK(s.early < s.buckets);  // layer 0's buckets can only go after backward
  }
  REQUIRE(run_worker(2, paused, "2 6 3 --dpo") == 0);  // halts after step 3
  REQUIRE(run_worker(0, paused, "2 6 --dpo") == 0);    // one process takes over
  check_identical(one, paused);
}

TEST_CASE("KTO on two ranks equals one process bit for bit") {
  const auto one = test::scratch("dp_kto_one"), two = test::scratch("dp_kto_two");
  REQUIRE(run_worker(0, one, "2 6 --kto") == 0);
  REQUIRE(run_worker(2, two, "2 6 --kto") == 0);
  check_identical(one, two);
}

TEST_CASE("overlapping the reduction with backward changes no bit") {
  // Reference: the same two ranks reducing everything after backward (one bucket per step).
  const auto after = test::scratch("dp_after"), during = test::scratch("dp_during");
  // Two micro-batches per rank: the first one's gradient is a partial sum that each bucket
  // adds to the second one's as it leaves.
  REQUIRE(run_worker(2, after, "4 6 --full --no-overlap") == 0);
  // Small buckets cut into smaller MPI messages: many gathers and broadcasts in flight.
  REQUIRE(run_worker(2, during, "4 6 --full --bucket=300 --mpi-chunk=97") == 0);
  check_identical(after, during);
  const auto a = read_stats(after, 0), d = read_stats(during, 0);
  CHECK(a.early == 0);
  CHECK(d.early > 0);
  CHECK(d.buckets > a.buckets);
}

TEST_CASE("ZeRO-1 full fine-tuning on two ranks equals unsharded training bit for bit") {
  const auto one = test::scratch("dp_z_one"), two = test::scratch("dp_z_two"),
             to_one = test::scratch("dp_z_to_one"), to_two = test::scratch("dp_z_to_two");
  REQUIRE(run_worker(0, one, "2 6 --full") == 0);
  REQUIRE(run_worker(2, two, "2 6 --full --zero1") == 0);
  check_identical(one, two);
  // Each rank holds about half of the AdamW state: the two shards add up to the whole, and
  // the cut (on a 256-value block) leaves them within a few blocks of even.
  const auto whole = read_stats(one, 0).state_bytes;
  const auto s0 = read_stats(two, 0).state_bytes, s1 = read_stats(two, 1).state_bytes;
  CHECK(s0 + s1 == whole);
  CHECK(std::abs(s0 - s1) <= 2 * 256 * 8);  // one block of m and v each side of the cut
  // Checkpoints keep the unsharded format: sharded 2 ranks -> 1 process, and 1 -> sharded 2.
  REQUIRE(run_worker(2, to_one, "2 6 3 --full --zero1") == 0);
  REQUIRE(run_worker(0, to_one, "2 6 --full") == 0);
  check_identical(one, to_one);
  REQUIRE(run_worker(0, to_two, "2 6 3 --full") == 0);
  REQUIRE(run_worker(2, to_two, "2 6 --full --zero1") == 0);
  check_identical(one, to_two);
}

TEST_CASE("three ranks with overlapped small buckets equal one process bit for bit") {
  // With three terms the association shows: ((g0 + g1) + g2) is the one-process sum, and a
  // transport's tree order g0 + (g1 + g2) would differ in the last bits somewhere.
  const auto one = test::scratch("dp3_one"), three = test::scratch("dp3_three");
  REQUIRE(run_worker(0, one, "3 5 --full") == 0);
  REQUIRE(run_worker(3, three, "3 5 --full --bucket=300 --mpi-chunk=97") == 0);
  check_identical(one, three);
}

TEST_CASE("a rank that dies during DPO stops the job and leaves a valid checkpoint") {
  const auto dir = test::scratch("dp_dpo_crash");
  const auto t0 = std::chrono::steady_clock::now();
  const int status = run_worker(2, dir, "2 6 0 2 --dpo");  // rank 1 exits after step 2
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(status != 0);
  CHECK(status != 124);  // stopped by itself, not by the harness's 120 s timeout
  CHECK(s < 60);
  CHECK_FALSE(fs::exists(dir / "weights.bin"));
  const auto ckpt = dir / "checkpoint.safetensors";
  REQUIRE(fs::exists(ckpt));
  auto f = io::safetensors_file::open(ckpt);
  const auto st = train::state_from_json(
      parse_json(f.metadata().at("forge.trainer_state"), ckpt.string()), ckpt.string());
  CHECK(st.step == 2);
}
