// libFuzzer target for the streaming protocol parser (model output is hostile input): any bytes,
// fed whole and in two pieces split at the first byte's value, give the same joined events, and
// every event writes out as JSON. Seeds: tests/data/protocol.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "agent/protocol.h"
#include "common/json.h"

namespace {
std::string Lines(const std::vector<cortex::agent::ProtocolEvent>& events) {
  std::string out;
  for (const auto& e : cortex::agent::JoinText(events)) out += cortex::DumpJson(e.ToJson()) + "\n";
  return out;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  cortex::agent::ProtocolLimits limits;
  limits.max_tag_bytes = 64;  // small, so the fuzzer reaches the limits
  limits.max_action_bytes = 256;
  std::string whole = Lines(cortex::agent::ParseProtocol(text, limits));
  size_t cut = size == 0 ? 0 : data[0] % size;
  cortex::agent::ProtocolParser p(limits);
  std::vector<cortex::agent::ProtocolEvent> events;
  p.Feed(text.substr(0, cut), &events);
  p.Feed(text.substr(cut), &events);
  p.Finish(&events);
  if (Lines(events) != whole) std::abort();
  return 0;
}
