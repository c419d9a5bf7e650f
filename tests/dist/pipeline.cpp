// A pipeline across ranks: runs tests/dist/pipeline_worker.cpp (adapt<lora> → align<dpo>)
// under `mpirun -np 2` with run_options::comm and alone without it, and compares. References:
// the one-process run of the same program — the same global batch (grad_accum 2: one
// micro-batch per rank, added in the one-process order), so the final model (SHA-256 of every
// weight), every stage's metrics (exact bits), statuses, gate verdicts and artifact hashes
// must be the same; and rank 0's own result, which every other rank must return unchanged
// (wall times included). Files: each rank is given its own output directory, so that anything
// a rank other than 0 wrote would show up as a directory of its own; rank 0's directory must
// hold exactly the files of the one-process run, and no rank's scratch directory may remain.
// Faults: a stage that throws on rank 1 only, and a stage after which rank 1's model differs
// from rank 0's, must each stop both ranks with an error that names rank 1, recorded by rank 0.
// Compress and Deploy: adapt<lora> → compress<gptq> → deploy<signed_release> on two ranks —
// GPTQ on every rank gives the same model, and one release is built, in rank 0's directory,
// whose manifest digest every rank returns.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <set>
#include <sstream>
#include <string>

#include "../support/fixtures.hpp"
#include "forge/core/json.hpp"
#include "forge/govern/hash.hpp"
#include "forge/io/atomic_file.hpp"

namespace fs = std::filesystem;
using namespace forge;

namespace {

// Runs the worker with `ranks` processes (0: without mpirun), TMPDIR set to `tmp`.
int run_pipeline(int ranks, const fs::path& base, const fs::path& results, const fs::path& tmp,
                 const std::string& fault = "") {
  const char* worker = std::getenv("FORGE_DIST_PIPELINE_WORKER");
  const char* mpirun = std::getenv("FORGE_MPIEXEC");
  REQUIRE(worker);
  REQUIRE(mpirun);
  fs::create_directories(results);
  fs::create_directories(tmp);
  std::string cmd = "OMP_NUM_THREADS=1 TMPDIR=" + tmp.string() + " timeout 300 ";
  if (ranks > 0)
    cmd += std::string(mpirun) + " --oversubscribe --allow-run-as-root -np " +
           std::to_string(ranks) + " ";
  cmd += std::string(worker) + " " + base.string() + " " + results.string() + " " + fault + " > " +
         (results / "stdout").string() + " 2> " + (results / "stderr").string();
  const int s = std::system(cmd.c_str());
  return WIFEXITED(s) ? WEXITSTATUS(s) : 128 + WTERMSIG(s);
}

// The result text without its wall-time lines (the only thing two runs may differ in).
std::string without_wall_times(const std::string& text) {
  std::istringstream in(text);
  std::string out, line;
  while (std::getline(in, line))
    if (line.rfind("  wall ", 0) != 0) out += line + "\n";
  return out;
}

// Every regular file under `dir`, relative to it.
std::set<std::string> files_under(const fs::path& dir) {
  std::set<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.insert(e.path().lexically_relative(dir).generic_string());
  return out;
}

}  // namespace

TEST_CASE("a pipeline on two ranks equals the pipeline on one process, and only rank 0 writes") {
  const auto one = test::scratch("dp_pipe_one"), two = test::scratch("dp_pipe_two");
  REQUIRE(run_pipeline(0, one / "out", one / "results", one / "tmp") == 0);
  REQUIRE(run_pipeline(2, two / "out", two / "results", two / "tmp") == 0);

  const auto ref = io::read_file(one / "results" / "result.0.txt");
  const auto r0 = io::read_file(two / "results" / "result.0.txt");
  const auto r1 = io::read_file(two / "results" / "result.1.txt");
  INFO(r0);
  // The run did what the test is about: two stages that passed, and a model.
  CHECK(r0.find("passed 1") == 0);
  CHECK(r0.find("stage 2 align dpo passed") != std::string::npos);
  CHECK(r0.find("model none") == std::string::npos);
  // The trainers reduced gradients over the group (a pipeline that left them alone would
  // train the whole batch on every rank and agree just as well), on both ranks alike.
  const auto summed = std::stoull(io::read_file(two / "results" / "stats.0.txt"));
  CHECK(summed > 0);
  CHECK(std::stoull(io::read_file(two / "results" / "stats.1.txt")) == summed);
  // Every rank returns rank 0's report, to the wall time.
  CHECK(r1 == r0);
  // The same as one process: statuses, metrics (hex floats), gate verdicts, artifact hashes
  // (adapter weights, loss curves, checkpoints) and the digests of every stage's model.
  CHECK(without_wall_times(r0) == without_wall_times(ref));

  // The stage reports on disk carry the same metrics as one process's.
  for (const char* f : {"01_adapt.json", "02_align.json"}) {
    const auto a = load_json(one / "out" / "rank0" / f), b = load_json(two / "out" / "rank0" / f);
    CHECK(a.at("metrics") == b.at("metrics"));
    CHECK(a.at("output").at("sha256") == b.at("output").at("sha256"));
    CHECK(b.at("ranks") == 2);
  }
  CHECK(load_json(two / "out" / "rank0" / "run.json").at("ranks") == 2);

  // Files: rank 0 wrote exactly what one process writes; rank 1 wrote nothing of its own.
  CHECK(files_under(two / "out" / "rank0") == files_under(one / "out" / "rank0"));
  CHECK(files_under(two / "out" / "rank0").count("02_align/adapter/adapter_model.safetensors"));
  CHECK_FALSE(fs::exists(two / "out" / "rank1"));
  // The scratch directories the other ranks' stages worked in are gone.
  for (const auto& e : fs::directory_iterator(two / "tmp"))
    CHECK(e.path().filename().string().rfind("forge-rank", 0) != 0);
}

TEST_CASE("a stage that fails on one rank stops every rank with an error naming that rank") {
  const auto dir = test::scratch("dp_pipe_fail");
  const int status = run_pipeline(2, dir / "out", dir / "results", dir / "tmp", "fail");
  CHECK(status == 3);  // every rank threw (not the 300 s harness timeout, 124)
  const auto e0 = io::read_file(dir / "results" / "error.0.txt");
  const auto e1 = io::read_file(dir / "results" / "error.1.txt");
  CHECK(e1.find("rank_fault_double fails here") != std::string::npos);
  CHECK(e0.find("rank 1 failed") != std::string::npos);
  CHECK(e0.find("rank_fault_double fails here") != std::string::npos);
  // Rank 0 recorded the failure where a person looks; rank 1 left nothing anywhere.
  const auto rep = load_json(dir / "out" / "rank0" / "02_compress.json");
  CHECK(rep.at("status") == "error");
  CHECK(rep.at("error").get<std::string>().find("rank 1 failed") != std::string::npos);
  CHECK(load_json(dir / "out" / "rank0" / "run.json").at("status") == "error");
  CHECK_FALSE(fs::exists(dir / "out" / "rank1"));
  for (const auto& e : fs::directory_iterator(dir / "tmp"))
    CHECK(e.path().filename().string().rfind("forge-rank", 0) != 0);
}

TEST_CASE("ranks whose models differ after a stage stop with an error, not silently") {
  const auto dir = test::scratch("dp_pipe_diverge");
  const int status = run_pipeline(2, dir / "out", dir / "results", dir / "tmp", "diverge");
  CHECK(status == 3);
  for (int r = 0; r < 2; ++r) {
    const auto e = io::read_file(dir / "results" / ("error." + std::to_string(r) + ".txt"));
    INFO(e);
    CHECK(e.find("the ranks' models differ after this stage") != std::string::npos);
    CHECK(e.find("rank 1") != std::string::npos);
  }
  CHECK(load_json(dir / "out" / "rank0" / "02_compress.json").at("status") == "error");
  // The double wrote note.txt on both ranks: rank 0's is recorded, rank 1's went with its
  // scratch directory.
  CHECK(fs::exists(dir / "out" / "rank0" / "02_compress" / "note.txt"));
  CHECK_FALSE(fs::exists(dir / "out" / "rank1"));
  for (const auto& e : fs::directory_iterator(dir / "tmp"))
    CHECK(e.path().filename().string().rfind("forge-rank", 0) != 0);
}

TEST_CASE("compress<gptq> then deploy<signed_release> on two ranks: one release, by rank 0") {
  const auto dir = test::scratch("dp_pipe_deploy");
  REQUIRE(run_pipeline(2, dir / "out", dir / "results", dir / "tmp", "deploy") == 0);
  const auto r0 = io::read_file(dir / "results" / "result.0.txt");
  INFO(r0);
  CHECK(io::read_file(dir / "results" / "result.1.txt") == r0);
  CHECK(r0.find("passed 1") == 0);
  // Every rank returns rank 0's release directory and the digest of its signed manifest,
  // recomputed here from the file.
  // GPTQ ran on both ranks and gave the same model (else the run stops with "differ").
  CHECK(r0.find("stage 2 compress gptq passed") != std::string::npos);
  CHECK(fs::exists(dir / "out" / "rank0" / "02_compress" / "model" / "model.safetensors"));
  const auto rel = dir / "out" / "rank0" / "03_deploy" / "release";
  const auto manifest = govern::sha256_file(rel / "MANIFEST.json");
  CHECK(r0.find("release " + rel.string() + " " + manifest + "\n") != std::string::npos);
  CHECK(fs::exists(rel / "MANIFEST.json.sig"));
  CHECK(fs::exists(rel / "reports" / "01_adapt.json"));
  const auto rep = load_json(dir / "out" / "rank0" / "03_deploy.json");
  CHECK(rep.at("metrics").at("signature_valid") == 1.0);
  CHECK(rep.at("metrics").at("artifact_scan_clean") == 1.0);
  CHECK_FALSE(fs::exists(dir / "out" / "rank1"));
  for (const auto& e : fs::directory_iterator(dir / "tmp"))
    CHECK(e.path().filename().string().rfind("forge-rank", 0) != 0);
}
