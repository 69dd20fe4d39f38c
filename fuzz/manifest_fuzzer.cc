// libFuzzer target for the manifest parser: any bytes, as YAML and as Markdown with front
// matter, must give a manifest or diagnostics — never a crash, hang or sanitizer report.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "registry/manifest.h"
#include "registry/parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  using cortex::registry::FileFormat;
  for (FileFormat format : {FileFormat::kYaml, FileFormat::kMarkdown}) {
    auto parsed = cortex::registry::ParseManifest(text, "fuzz", format);
    if (parsed.manifest) (void)cortex::registry::ManifestToJson(*parsed.manifest).dump();
  }
  return 0;
}
