// libFuzzer target for JSON from outside (request bodies, tool output, stored rows): any bytes
// must parse to a value or a clear error, never a crash, and whatever parses must write out
// without throwing and read back as the same value. Also the tool-output path: bytes made valid
// UTF-8 are valid UTF-8. Seeds: fuzz/seeds/json (deep nesting, invalid UTF-8).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "common/json.h"
#include "exec/tool_process.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = cortex::ParseJson(text);
  if (parsed.ok()) {
    std::string out = cortex::DumpJson(*parsed);
    auto again = cortex::ParseJson(out);
    if (!again.ok() || *again != *parsed) std::abort();
  }
  size_t replaced = 0;
  std::string valid = cortex::ToValidUtf8(text, &replaced);
  if (!cortex::IsValidUtf8(valid) || (replaced == 0) != cortex::IsValidUtf8(text)) std::abort();

  // The executor's reading of a tool's stdout.
  cortex::exec::ProcessResult r;
  r.stdout_data = std::string(text);
  cortex::exec::ToolOutcome outcome = cortex::exec::InterpretToolResult(r);
  (void)cortex::DumpJson(outcome.result);
  return 0;
}
