// The SBOM validates against the official CycloneDX 1.6 JSON schema, as bundled with the
// reference library (pip cyclonedx-python-lib, strict validator). A deliberately broken copy
// must be rejected, so the check cannot pass vacuously.

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>

#include "../support/fixtures.hpp"
#include "forge/govern/release.hpp"
#include "sample_release.hpp"

using namespace forge;
using namespace forge::govern;

TEST_CASE("the SBOM of a release is valid CycloneDX 1.6 under the official schema") {
  const auto py = test::python();
  REQUIRE_FALSE(py.empty());  // CI always provides the reference-tool venv (scripts/venv.sh)
  auto dir = test::scratch("sbom_schema");
  assemble_release(dir / "release", test::sample_spec(), signing_key::generate());
  auto bom = load_json(dir / "release" / "sbom.cdx.json");
  bom["components"][0]["type"] = "not-a-component-type";
  save_json(dir / "broken.cdx.json", bom);
  std::ofstream(dir / "validate.py") << R"PY(
import sys
try:
    from cyclonedx.validation.json import JsonStrictValidator
    from cyclonedx.schema import SchemaVersion
except ImportError:
    sys.exit("pip package cyclonedx-python-lib[json-validation] is missing from the venv")
v = JsonStrictValidator(SchemaVersion.V1_6)
good = v.validate_str(open(sys.argv[1]).read())
bad = v.validate_str(open(sys.argv[2]).read())
print("release SBOM:", good)
assert good is None, good
assert bad is not None, "the broken SBOM was accepted"
)PY";
  const std::string cmd = py + " " + (dir / "validate.py").string() + " " +
                          (dir / "release" / "sbom.cdx.json").string() + " " +
                          (dir / "broken.cdx.json").string();
  CHECK(std::system(cmd.c_str()) == 0);
}
