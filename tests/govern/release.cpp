// Release assembly and verification. The tamper tests change a pristine signed release in
// every way the issue lists — one byte flipped at the first, middle and last position of
// every file, every file removed, every file renamed, a file added, the signature swapped
// for another key's, the public key replaced — and require verify_release to detect 100% of
// them, naming the file concerned.

#include <catch2/catch.hpp>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/govern/release.hpp"
#include "sample_release.hpp"

using namespace forge;
using namespace forge::govern;
namespace fs = std::filesystem;
using K = verify_problem::kind;

namespace {
const std::array<unsigned char, 32> kSeed = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                             12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                             23, 24, 25, 26, 27, 28, 29, 30, 31, 32};

/// A pristine signed release, built once per test case under `name`.
struct pristine {
  fs::path root, dir;
  signing_key key{kSeed};
  explicit pristine(const std::string& name) : root(test::scratch(name)), dir(root / "release") {
    assemble_release(dir, test::sample_spec(), key);
  }
  /// A fresh copy of the release to tamper with.
  fs::path copy(const std::string& tag) const {
    const auto c = root / ("copy_" + tag);
    fs::remove_all(c);
    fs::copy(dir, c, fs::copy_options::recursive);
    return c;
  }
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    for (const auto& e : scan_tree(dir).files) out.push_back(e.path);
    return out;
  }
};

void flip_byte(const fs::path& p, std::size_t at) {
  auto s = io::read_file(p);
  REQUIRE(at < s.size());
  s[at] = static_cast<char>(s[at] ^ 0x01);
  io::write_atomic(p, s);
}

/// Re-signs a (modified) release with `key`, as a signer with a mistaken pipeline would.
void resign(const fs::path& dir, const signing_key& key) {
  auto m = manifest::parse(io::read_file(dir / release_files::manifest), "M");
  m.files = scan_tree(dir, {release_files::manifest, release_files::signature}).files;
  const auto text = m.to_json();
  io::write_atomic(dir / release_files::manifest, text);
  io::write_atomic(dir / release_files::signature, key.sign(text).hex() + "\n");
}
}  // namespace

TEST_CASE("an assembled release has the documented layout and verifies") {
  pristine p("release_layout");
  const auto files = p.files();
  for (const char* f :
       {"MANIFEST.json", "MANIFEST.json.sig", "signing_key.pub", "MODEL_CARD.md", "sbom.cdx.json",
        "provenance.intoto.json", "datasheet.md", "reports/00_adapt.json", "reports/01_align.json",
        "model/model.gguf", "model/adapter/adapter_model.safetensors",
        "model/adapter/adapter_config.json"})
    CHECK(std::find(files.begin(), files.end(), f) != files.end());
  CHECK(files.size() == 12);
  const auto r = verify_release(p.dir, p.key.public_part());
  INFO(r.summary());
  CHECK(r.ok());
  CHECK(r.signature_valid);
  CHECK(r.summary() == "release verified\n");
  // The manifest lists every file but itself and its signature, and binds the inputs.
  const auto m = manifest::parse(io::read_file(p.dir / "MANIFEST.json"), "M");
  CHECK(m.files.size() == 10);
  CHECK(m.base_model_sha256 == test::sample_card().base_model_sha256);
  CHECK(m.datasets.at("prefs") == test::sample_card().datasets[1].sha256);
  // Provenance names every other released file as a subject, with its hash.
  const auto prov = load_json(p.dir / "provenance.intoto.json");
  std::map<std::string, std::string> subj;
  for (const auto& s : prov["subject"]) subj[s["name"]] = s["digest"]["sha256"];
  for (const auto& e : m.files)
    if (e.path != "provenance.intoto.json") CHECK(subj.at(e.path) == e.sha256);
  CHECK(load_json(p.dir / "sbom.cdx.json")["specVersion"] == "1.6");
  CHECK(!fs::exists(p.root / ".release.staging"));
}

TEST_CASE("the private key never enters the release") {
  pristine p("release_no_secret");
  const std::string seed_hex = detail::hex(kSeed.data(), kSeed.size());
  const std::string seed_raw(reinterpret_cast<const char*>(kSeed.data()), kSeed.size());
  for (const auto& f : p.files()) {
    const auto text = io::read_file(p.dir / f);
    INFO(f);
    CHECK(text.find(seed_hex) == std::string::npos);
    CHECK(text.find(seed_raw) == std::string::npos);
  }
  CHECK(io::read_file(p.dir / "signing_key.pub") == public_key_text(p.key.public_part()));
}

TEST_CASE("tamper: a flipped byte at the start, middle or end of any file is detected") {
  pristine p("release_flip");
  std::size_t tried = 0, detected = 0;
  for (const auto& f : p.files()) {
    const auto size = fs::file_size(p.dir / f);
    for (std::size_t at : {std::size_t{0}, size / 2, size - 1}) {
      const auto c = p.copy("flip");
      flip_byte(c / f, at);
      const auto r = verify_release(c, p.key.public_part());
      ++tried;
      bool ok;
      if (f == release_files::manifest)
        ok = r.has(K::bad_signature);
      else if (f == release_files::signature)
        ok = r.has(K::bad_signature) && r.names(f);
      else if (f == release_files::public_key)
        ok = r.has(K::public_key_mismatch) && r.names(f);
      else
        ok = r.has(K::hash_mismatch) && r.names(f);
      if (ok && !r.ok())
        ++detected;
      else
        FAIL_CHECK("not detected: byte " << at << " of " << f << "\n" << r.summary());
    }
  }
  CHECK(tried == 3 * 12);
  CHECK(detected == tried);
}

TEST_CASE("tamper: removing or renaming any file is detected") {
  pristine p("release_remove");
  std::size_t tried = 0, detected = 0;
  for (const auto& f : p.files()) {
    {
      const auto c = p.copy("remove");
      fs::remove(c / f);
      const auto r = verify_release(c, p.key.public_part());
      ++tried;
      const bool ok = f == release_files::signature ? r.has(K::bad_signature) && r.names(f)
                                                    : r.has(K::missing_file) && r.names(f);
      if (ok && !r.ok())
        ++detected;
      else
        FAIL_CHECK("removal not detected: " << f << "\n" << r.summary());
    }
    {
      const auto c = p.copy("rename");
      const std::string to = f + ".renamed";
      fs::rename(c / f, c / to);
      const auto r = verify_release(c, p.key.public_part());
      ++tried;
      bool ok;
      if (f == release_files::manifest)
        ok = r.has(K::missing_file) && r.names(f);
      else if (f == release_files::signature)
        ok = r.has(K::bad_signature) && r.names(to);
      else
        ok = r.has(K::renamed_file) && r.names(f) && r.names(to);
      if (ok && !r.ok())
        ++detected;
      else
        FAIL_CHECK("rename not detected: " << f << "\n" << r.summary());
    }
  }
  CHECK(tried == 2 * 12);
  CHECK(detected == tried);
}

TEST_CASE("tamper: an added file, directory entry or symbolic link is detected") {
  pristine p("release_add");
  for (const std::string f : {"extra.txt", "model/extra.bin", "reports/02_extra.json", ".hidden"}) {
    const auto c = p.copy("add");
    io::write_atomic(c / f, std::string("{}"));
    const auto r = verify_release(c, p.key.public_part());
    INFO(f << "\n" << r.summary());
    CHECK(r.has(K::extra_file));
    CHECK(r.names(f));
  }
  const auto c = p.copy("link");
  fs::create_symlink("MODEL_CARD.md", c / "card_link.md");
  const auto r = verify_release(c, p.key.public_part());
  CHECK(r.has(K::irregular_file));
  CHECK(r.names("card_link.md"));
}

TEST_CASE("tamper: a signature from another key, or a replaced public key, is detected") {
  pristine p("release_keys");
  const signing_key attacker = signing_key::generate();
  {  // signature swapped for one by another key over the same manifest
    const auto c = p.copy("swap_sig");
    io::write_atomic(c / release_files::signature,
                     attacker.sign(io::read_file(c / release_files::manifest)).hex() + "\n");
    const auto r = verify_release(c, p.key.public_part());
    CHECK(r.has(K::bad_signature));
    CHECK_FALSE(r.signature_valid);
  }
  {  // public key replaced by the attacker's, everything re-signed consistently by the attacker
    const auto c = p.copy("swap_key");
    save_public_key(c / release_files::public_key, attacker.public_part());
    resign(c, attacker);
    CHECK(verify_release(c, attacker.public_part()).ok());  // self-consistent for the attacker
    const auto r = verify_release(c, p.key.public_part());  // but not under the trusted key
    CHECK(r.has(K::bad_signature));
    CHECK(r.has(K::public_key_mismatch));
  }
  {  // public key replaced, manifest left as signed
    const auto c = p.copy("swap_key_only");
    save_public_key(c / release_files::public_key, attacker.public_part());
    const auto r = verify_release(c, p.key.public_part());
    CHECK(r.has(K::public_key_mismatch));
    CHECK(r.has(K::hash_mismatch));
  }
  {  // an auditor holding the wrong key learns nothing verifies
    const auto r = verify_release(p.dir, attacker.public_part());
    CHECK(r.has(K::bad_signature));
    CHECK(r.has(K::public_key_mismatch));
  }
}

TEST_CASE("verify checks that the manifest binds the base model and data the reports name") {
  pristine p("release_bindings");
  auto edit_report = [&](const fs::path& dir, const std::string& file, const std::string& field,
                         const json& value) {
    auto j = load_json(dir / "reports" / file);
    j[field] = value;
    io::write_atomic(dir / "reports" / file, j.dump(2) + "\n");
    resign(dir, p.key);  // a consistent signature: only the binding check can object
  };
  {
    const auto c = p.copy("base");
    edit_report(c, "00_adapt.json", "input_hash", sha256_hex(std::string_view("another base")));
    const auto r = verify_release(c, p.key.public_part());
    CHECK(r.signature_valid);
    CHECK(r.has(K::unbound_base_model));
    CHECK(r.names("reports/00_adapt.json"));
  }
  {
    const auto c = p.copy("data");
    edit_report(c, "01_align.json", "data_hashes",
                json{{"prefs", sha256_hex(std::string_view("other prefs"))}});
    const auto r = verify_release(c, p.key.public_part());
    CHECK(r.has(K::unbound_dataset));
  }
  {
    const auto c = p.copy("data_name");
    edit_report(c, "01_align.json", "data_hashes",
                json{{"unlisted", sha256_hex(std::string_view("preference data"))}});
    CHECK(verify_release(c, p.key.public_part()).has(K::unbound_dataset));
  }
  {
    const auto c = p.copy("chain");
    edit_report(c, "01_align.json", "input_hash", sha256_hex(std::string_view("not adapted")));
    CHECK(verify_release(c, p.key.public_part()).has(K::broken_chain));
  }
  {
    const auto c = p.copy("malformed");
    edit_report(c, "01_align.json", "input_hash", "xyz");
    const auto r = verify_release(c, p.key.public_part());
    CHECK(r.has(K::bad_report));
    CHECK(r.names("reports/01_align.json"));
  }
}

TEST_CASE("assembly refuses inconsistent input and leaves nothing behind") {
  auto root = test::scratch("release_refuse");
  const signing_key key(kSeed);
  auto spec = test::sample_spec();
  spec.reports[0].content = test::stage_report(0, "adapt", sha256_hex(std::string_view("x")),
                                               sha256_hex(std::string_view("adapted model")),
                                               "sql-sft", spec.card.datasets[0].sha256);
  CHECK_THROWS_WITH(assemble_release(root / "r1", spec, key), Catch::Contains("do not bind"));
  CHECK_FALSE(fs::exists(root / "r1"));
  CHECK_FALSE(fs::exists(root / ".r1.staging"));

  spec = test::sample_spec();
  spec.artifacts.push_back({"../escape", {}, "x"});
  CHECK_THROWS_WITH(assemble_release(root / "r2", spec, key), Catch::Contains("unsafe"));
  spec = test::sample_spec();
  spec.artifacts.push_back({"MANIFEST.json", {}, "x"});
  CHECK_THROWS_WITH(assemble_release(root / "r3", spec, key), Catch::Contains("reserved"));
  spec = test::sample_spec();
  spec.artifacts.push_back({"model/missing.gguf", root / "does-not-exist", ""});
  CHECK_THROWS(assemble_release(root / "r4", spec, key));
  CHECK_FALSE(fs::exists(root / "r4"));

  io::write_atomic(root / "r5" / "old.txt", std::string("x"));
  CHECK_THROWS_WITH(assemble_release(root / "r5", test::sample_spec(), key),
                    Catch::Contains("not empty"));
  // Artifacts copied from files arrive byte for byte.
  io::write_atomic(root / "src.gguf", std::string("GGUF\3\0\0\0", 8));
  spec = test::sample_spec();
  spec.artifacts[0] = {"model/model.gguf", root / "src.gguf", ""};
  assemble_release(root / "r6", spec, key);
  CHECK(io::read_file(root / "r6" / "model" / "model.gguf") == std::string("GGUF\3\0\0\0", 8));
  CHECK(verify_release(root / "r6", key.public_part()).ok());
}

// A second Ed25519 implementation agrees: the OpenSSL command line, following the auditor's
// recipe in docs/governance.md, accepts the signature and rejects it once the manifest changes.
TEST_CASE("OpenSSL verifies the release signature independently of libsodium") {
  REQUIRE(std::system("command -v openssl > /dev/null && command -v xxd > /dev/null") == 0);
  pristine p("release_openssl");
  save_public_key(p.root / "trusted.pub", p.key.public_part());
  std::ofstream(p.root / "verify.sh") << R"SH(set -e
cd "$1"
xxd -r -p <<< "302a300506032b6570032100$(sed -n 2p ../trusted.pub)" | openssl pkey -pubin -inform DER -out ../trusted.pem
xxd -r -p MANIFEST.json.sig > ../sig.bin
openssl pkeyutl -verify -pubin -inkey ../trusted.pem -rawin -in MANIFEST.json -sigfile ../sig.bin > /dev/null
)SH";
  auto run = [&](const fs::path& dir) {
    const std::string cmd =
        "bash " + (p.root / "verify.sh").string() + " " + dir.string() + " 2> /dev/null";
    return std::system(cmd.c_str());
  };
  CHECK(run(p.dir) == 0);
  const auto c = p.copy("openssl");
  flip_byte(c / release_files::manifest, 10);
  CHECK(run(c) != 0);
}

// Principle 6 (reproducible): the same inputs, times and key give the same release, byte for
// byte — Ed25519 signatures are deterministic (RFC 8032), and every document is canonical.
TEST_CASE("assembling the same release twice gives identical bytes") {
  auto root = test::scratch("release_reproducible");
  const signing_key key(kSeed);
  const auto m1 = assemble_release(root / "a", test::sample_spec(), key);
  const auto m2 = assemble_release(root / "b", test::sample_spec(), key);
  CHECK(m1.to_json() == m2.to_json());
  for (const auto& e : scan_tree(root / "a").files) {
    INFO(e.path);
    CHECK(io::read_file(root / "a" / e.path) == io::read_file(root / "b" / e.path));
  }
}

namespace {
/// A report in the layout pipeline/run.hpp writes (nested stage/input/output/data).
std::string pipeline_report(int index, const std::string& kind, const std::string& in,
                            const json& out, const std::string& data_name,
                            const std::string& data_hash) {
  json j = {{"schema", "forge.stage_report/1"},
            {"stage", {{"index", index}, {"kind", kind}, {"of", 2}}},
            {"method", {{"name", "x"}, {"parameters", json::object()}}},
            {"status", "passed"},
            {"input", {{"sha256", in}, {"accepted_representations", {"dense f32"}}}},
            {"output", {{"sha256", out}, {"representation", "dense f32"}}},
            {"data", {{{"name", data_name}, {"sha256", data_hash}}}},
            {"artifacts", json::array()},
            {"metrics", json::object()}};
  return j.dump(2) + "\n";
}
}  // namespace

TEST_CASE("the pipeline's nested stage reports bind like the flat layout") {
  const signing_key key(kSeed);
  auto spec = test::sample_spec();
  const auto& base = spec.card.base_model_sha256;
  const auto adapted = sha256_hex(std::string_view("adapted model"));
  const auto aligned = sha256_hex(std::string_view("aligned model"));
  spec.reports = {
      {"01_adapt.json",
       {},
       pipeline_report(1, "adapt", base, adapted, "sql-sft", spec.card.datasets[0].sha256)},
      {"02_align.json",
       {},
       pipeline_report(2, "align", adapted, aligned, "prefs", spec.card.datasets[1].sha256)}};
  auto root = test::scratch("release_pipeline_layout");
  assemble_release(root / "ok", spec, key);
  const auto ok = verify_release(root / "ok", key.public_part());
  INFO(ok.summary());
  CHECK(ok.ok());

  // Each binding read from the nested layout is checked: base model, chain, dataset hash.
  auto refused = [&](std::size_t which, const std::string& text) {
    auto s = spec;
    s.reports[which].content = text;
    CHECK_THROWS_WITH(
        assemble_release(root / ("bad" + std::to_string(which) + std::to_string(text.size())), s,
                         key),
        Catch::Contains("do not bind"));
  };
  refused(0, pipeline_report(1, "adapt", sha256_hex(std::string_view("other base")), adapted,
                             "sql-sft", spec.card.datasets[0].sha256));
  refused(1, pipeline_report(2, "align", aligned, aligned, "prefs", spec.card.datasets[1].sha256));
  refused(1, pipeline_report(2, "align", adapted, aligned, "prefs", base));
  refused(1, pipeline_report(2, "align", adapted, aligned, "unknown-set",
                             spec.card.datasets[1].sha256));
  // A null output (a stage that stopped) leaves the chain unchecked, as in the flat layout.
  {
    auto s = spec;
    s.reports[0].content =
        pipeline_report(1, "adapt", base, nullptr, "sql-sft", spec.card.datasets[0].sha256);
    assemble_release(root / "null_output", s, key);
    CHECK(verify_release(root / "null_output", key.public_part()).ok());
  }
  // Malformed nested reports are errors naming the file and the field.
  for (const auto& [field, value] :
       std::vector<std::pair<std::string, json>>{{"schema", "forge.stage_report/9"},
                                                 {"input", "not an object"},
                                                 {"data", json{{"name", "x"}}},
                                                 {"stage", json::object()}}) {
    auto j = json::parse(spec.reports[0].content);
    j[field] = value;
    INFO(field);
    CHECK_THROWS_WITH(read_report_binding(j.dump(), "reports/01_adapt.json"),
                      Catch::Contains("reports/01_adapt.json") && Catch::Contains(field));
  }
}
