// The adapter registry: registration rules, lifecycle with rollback, load refusals (other
// base model, tenant outside scope, not active), and crash safety of updates: a writer
// killed with SIGKILL at random moments always leaves a registry that parses and keeps its
// invariants.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <random>
#include <thread>

#include "../support/fixtures.hpp"
#include "forge/govern/hash.hpp"
#include "forge/govern/registry.hpp"

using namespace forge;
using namespace forge::govern;

namespace {
const std::string kBase = sha256_hex(std::string_view("llama_a weights"));
const std::string kOtherBase = sha256_hex(std::string_view("llama_a weights, one bit off"));

adapter_record sql(unsigned version, std::vector<std::string> tenants = {"tenant_a"}) {
  adapter_record r;
  r.base_model_name = "llama_a";
  r.task = "sql";
  r.version = version;
  r.id = "llama_a-sql-v" + std::to_string(version);
  r.base_model_sha256 = kBase;
  r.tenants = std::move(tenants);
  r.method = "lora";
  r.rank = 16;
  r.alpha = 32;
  r.target_modules = {"q_proj", "v_proj"};
  r.objective = "sft";
  r.eval = {{"exact_match", 0.8 + 0.01 * version}};
  return r;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const forge::error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST_CASE("registration checks the id scheme, hashes, scope and duplicates") {
  auto dir = test::scratch("registry_add");
  adapter_registry reg(dir / "registry.json");
  reg.add(sql(1));
  CHECK(reg.at("llama_a-sql-v1").status == adapter_status::candidate);
  auto bad = sql(2);
  bad.id = "llama_a-sql-2";
  CHECK_THAT(error_of([&] { reg.add(bad); }), Catch::Contains("{base}-{task}-v{version}"));
  bad = sql(2);
  bad.base_model_sha256 = "abc";
  CHECK_THAT(error_of([&] { reg.add(bad); }), Catch::Contains("not a SHA-256"));
  bad = sql(2);
  bad.task = "";
  bad.id = "llama_a--v2";
  CHECK_THAT(error_of([&] { reg.add(bad); }), Catch::Contains("non-empty names"));
  bad = sql(2, {});
  CHECK_THAT(error_of([&] { reg.add(bad); }), Catch::Contains("empty tenant scope"));
  bad = sql(2);
  bad.rank = 0;
  CHECK_THAT(error_of([&] { reg.add(bad); }), Catch::Contains("rank"));
  CHECK_THAT(error_of([&] { reg.add(sql(1)); }), Catch::Contains("already registered"));
  CHECK(reg.records().size() == 1);
  // What is on disk is what a fresh reader sees, fields included.
  adapter_registry again(dir / "registry.json");
  REQUIRE(again.records().size() == 1);
  const auto& r = again.at("llama_a-sql-v1");
  CHECK(r.base_model_sha256 == kBase);
  CHECK(r.rank == 16);
  CHECK(r.alpha == 32);
  CHECK(r.target_modules == std::vector<std::string>{"q_proj", "v_proj"});
  CHECK(r.eval.at("exact_match") == Approx(0.81));
}

TEST_CASE("activation retires the previous adapter and rollback restores it") {
  auto dir = test::scratch("registry_lifecycle");
  adapter_registry reg(dir / "registry.json");
  reg.add(sql(1));
  reg.add(sql(2));
  reg.activate("llama_a-sql-v1");
  CHECK(reg.active("llama_a", "sql")->id == "llama_a-sql-v1");
  reg.activate("llama_a-sql-v2");
  CHECK(reg.active("llama_a", "sql")->id == "llama_a-sql-v2");
  CHECK(reg.at("llama_a-sql-v1").status == adapter_status::retired);
  CHECK(reg.at("llama_a-sql-v2").rollback_to == "llama_a-sql-v1");
  CHECK(reg.rollback("llama_a-sql-v2") == "llama_a-sql-v1");
  CHECK(reg.active("llama_a", "sql")->id == "llama_a-sql-v1");
  CHECK(reg.at("llama_a-sql-v2").status == adapter_status::retired);
  CHECK_THAT(error_of([&] { reg.rollback("llama_a-sql-v2"); }),
             Catch::Contains("only the active adapter"));
  // v1 had no predecessor: rolling it back leaves the slot on the base model.
  CHECK(reg.rollback("llama_a-sql-v1").empty());
  CHECK(reg.active("llama_a", "sql") == nullptr);
  reg.record_eval("llama_a-sql-v2", {{"refusal_accuracy", 0.95}});
  CHECK(adapter_registry(dir / "registry.json").at("llama_a-sql-v2").eval.size() == 2);
}

TEST_CASE("loading onto another base, for another tenant, or when not active is refused") {
  auto dir = test::scratch("registry_refusals");
  adapter_registry reg(dir / "registry.json");
  reg.add(sql(1, {"tenant_a", "tenant_b"}));
  // Candidate: not loadable yet.
  CHECK_THAT(error_of([&] { reg.check_load("llama_a-sql-v1", kBase, "tenant_a"); }),
             Catch::Contains("not active") && Catch::Contains("status candidate"));
  reg.activate("llama_a-sql-v1");
  CHECK(reg.check_load("llama_a-sql-v1", kBase, "tenant_b").id == "llama_a-sql-v1");
  const auto base_err = error_of([&] { reg.check_load("llama_a-sql-v1", kOtherBase, "tenant_a"); });
  CHECK_THAT(base_err, Catch::Contains("different base model") && Catch::Contains(kBase) &&
                           Catch::Contains(kOtherBase) &&
                           Catch::Contains("adapter llama_a-sql-v1"));
  const auto tenant_err = error_of([&] { reg.check_load("llama_a-sql-v1", kBase, "tenant_c"); });
  CHECK_THAT(tenant_err, Catch::Contains("outside the adapter's scope") &&
                             Catch::Contains("tenant_a, tenant_b") && Catch::Contains("tenant_c"));
  CHECK_THAT(error_of([&] { reg.check_load("llama_a-sql-v9", kBase, "tenant_a"); }),
             Catch::Contains("unknown adapter"));
  reg.retire("llama_a-sql-v1");
  CHECK_THAT(error_of([&] { reg.check_load("llama_a-sql-v1", kBase, "tenant_a"); }),
             Catch::Contains("status retired"));
  // "*" admits every tenant, but never another base model.
  reg.add(sql(2, {"*"}));
  reg.activate("llama_a-sql-v2");
  CHECK(reg.check_load("llama_a-sql-v2", kBase, "anyone").id == "llama_a-sql-v2");
  CHECK_THROWS(reg.check_load("llama_a-sql-v2", kOtherBase, "anyone"));
}

TEST_CASE("a failed update leaves the file and the registry unchanged") {
  auto dir = test::scratch("registry_failed_update");
  adapter_registry reg(dir / "registry.json");
  reg.add(sql(1));
  reg.activate("llama_a-sql-v1");
  const auto before = io::read_file(dir / "registry.json");
  CHECK_THROWS(reg.add(sql(1)));                 // throws inside the update
  CHECK_THROWS(reg.rollback("llama_a-sql-v9"));  // unknown id inside the update
  CHECK(io::read_file(dir / "registry.json") == before);
  CHECK(reg.records().size() == 1);
  CHECK(reg.at("llama_a-sql-v1").status == adapter_status::active);
  // A corrupt file is reported with its name and place, never silently replaced.
  io::write_atomic(
      dir / "bad.json",
      std::string("{\"format\":\"forge-adapter-registry/1\",\"adapters\":[{\"id\":1}]}"));
  CHECK_THAT(error_of([&] { adapter_registry r(dir / "bad.json"); }),
             Catch::Contains("bad.json") && Catch::Contains("adapters[0].id"));
}

// A child process registers, activates and rolls back adapters in a loop; the parent kills it
// with SIGKILL after a random delay, 30 times. After every kill the registry must parse, hold
// at most one active adapter per slot, point rollbacks only at registered adapters, and never
// lose a registration it had already seen (updates are never half applied).
TEST_CASE("a writer killed mid-update leaves the old or the new registry, never a broken one") {
  auto dir = test::scratch("registry_crash");
  const auto path = dir / "registry.json";
  std::mt19937 rng(5);
  std::size_t last_count = 0, grew = 0;
  for (int round = 0; round < 30; ++round) {
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        adapter_registry reg(path);
        for (int i = 0; i < 100000; ++i) {
          reg.reload();
          const unsigned v = static_cast<unsigned>(reg.records().size()) + 1;
          reg.add(sql(v, {"tenant_a"}));
          reg.activate("llama_a-sql-v" + std::to_string(v));
          if (v % 3 == 0) reg.rollback("llama_a-sql-v" + std::to_string(v));
          reg.record_eval("llama_a-sql-v" + std::to_string(v), {{"round", double(i)}});
        }
      } catch (...) {
        ::_exit(3);
      }
      ::_exit(0);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(2000 + rng() % 30000));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    REQUIRE(WIFSIGNALED(status));  // it was still working when killed, not failed

    adapter_registry reg(path);  // parses, or throws and fails the test
    std::map<std::string, int> active_per_slot;
    for (const auto& r : reg.records()) {
      if (r.status == adapter_status::active) ++active_per_slot[r.base_model_name + "/" + r.task];
      if (!r.rollback_to.empty()) CHECK_NOTHROW(reg.at(r.rollback_to));
    }
    for (const auto& [slot, n] : active_per_slot) CHECK(n <= 1);
    CHECK(reg.records().size() >= last_count);
    if (reg.records().size() > last_count) ++grew;
    last_count = reg.records().size();
  }
  CHECK(grew >= 20);  // the writer made progress between most kills
}
