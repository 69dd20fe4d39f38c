// The streaming protocol parser: data-driven cases (tests/data/protocol/<case>.txt and the events
// expected of it, one JSON object per line, in <case>.expected), each fed whole, one byte at a
// time and in random splits, which must all give the same events. CORTEX_UPDATE_EXPECTED=1
// rewrites the expectations (review the diff).
#include "agent/protocol.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "integration/daemon.h"

namespace cortex::agent {
namespace {

namespace fs = std::filesystem;
using cortex::testing::ReadFile;

std::string Lines(const std::vector<ProtocolEvent>& events) {
  std::string out;
  for (const auto& e : JoinText(events)) out += e.ToJson().dump() + "\n";
  return out;
}

std::vector<ProtocolEvent> FeedInPieces(std::string_view text, const std::vector<size_t>& cuts,
                                        ProtocolLimits limits = {}) {
  ProtocolParser p(limits);
  std::vector<ProtocolEvent> out;
  size_t at = 0;
  for (size_t cut : cuts) {
    p.Feed(text.substr(at, cut - at), &out);
    at = cut;
  }
  p.Feed(text.substr(at), &out);
  p.Finish(&out);
  return out;
}

TEST(ProtocolDataTest, EveryCaseGivesItsEventsWhateverTheSplit) {
  fs::path dir = fs::path(CORTEX_SOURCE_DIR) / "tests/data/protocol";
  int cases = 0;
  std::mt19937 rng(12345);
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".txt") continue;
    ++cases;
    const std::string text = ReadFile(entry.path());
    const std::string whole = Lines(ParseProtocol(text));
    fs::path expected_path = entry.path();
    expected_path.replace_extension(".expected");
    if (std::getenv("CORTEX_UPDATE_EXPECTED")) std::ofstream(expected_path) << whole;
    EXPECT_EQ(whole, ReadFile(expected_path)) << "case " << entry.path().filename();

    std::vector<size_t> every_byte;
    for (size_t i = 1; i < text.size(); ++i) every_byte.push_back(i);
    EXPECT_EQ(Lines(FeedInPieces(text, every_byte)), whole)
        << "one byte at a time: " << entry.path().filename();
    for (int trial = 0; trial < 50; ++trial) {
      std::vector<size_t> cuts;
      for (size_t i = 1; i < text.size(); ++i) {
        if (rng() % 7 == 0) cuts.push_back(i);
      }
      ASSERT_EQ(Lines(FeedInPieces(text, cuts)), whole)
          << "random split " << trial << ": " << entry.path().filename();
    }
    // Small limits (the fuzzer's): still the same events whatever the split.
    ProtocolLimits small;
    small.max_tag_bytes = 64;
    small.max_action_bytes = 256;
    const std::string whole_small = Lines(ParseProtocol(text, small));
    EXPECT_EQ(Lines(FeedInPieces(text, every_byte, small)), whole_small)
        << "small limits, one byte at a time: " << entry.path().filename();
  }
  EXPECT_GE(cases, 15);
}

// A partial tag is held back, never emitted as text, even while the stream is still open.
TEST(ProtocolTest, APartialTagNeverLeaksIntoText) {
  ProtocolParser p;
  std::vector<ProtocolEvent> out;
  p.Feed("<thought>Let me check <act", &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].text, "Let me check ");
  p.Feed("ion id=\"x\">{\"name\":\"t\"}</act", &out);
  EXPECT_EQ(out.size(), 1u) << "the action is not complete yet";
  p.Feed("ion>", &out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].kind, EventKind::kAction) << "emitted the moment </action> arrived";
  EXPECT_EQ(out[1].action->id, "x");
  EXPECT_TRUE(out[1].action->embedded_in_thought);
}

TEST(ProtocolTest, AnOversizedActionIsInvalidAndTheStreamGoesOn) {
  ProtocolLimits limits;
  limits.max_action_bytes = 64;
  auto events = ParseProtocol("<action id=\"big\">{\"name\":\"t\",\"parameters\":{\"x\":\"" +
                                  std::string(1000, 'a') + "\"}}</action><response>ok</response>",
                              limits);
  ASSERT_EQ(events.size(), 3u);
  EXPECT_EQ(events[0].action->id, "big");
  EXPECT_NE(events[0].action->error.find("longer than 64 bytes"), std::string::npos);
  EXPECT_LE(events[0].action->raw.size(), 64u);
  EXPECT_EQ(events[1].text, "ok");
}

TEST(ProtocolTest, AnOverlongTagIsText) {
  ProtocolLimits limits;
  limits.max_tag_bytes = 32;
  auto events = ParseProtocol("<action " + std::string(100, 'x') + " and no end", limits);
  ASSERT_EQ(events.size(), 1u);
  EXPECT_EQ(events[0].kind, EventKind::kText);
}

TEST(ProtocolTest, InvalidUtf8StaysInTheEventsAndTheirJsonIsValid) {
  auto events = ParseProtocol("<thought>\xff\xfe</thought><action>{\"name\":\"\xff\"}</action>");
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].text, "\xff\xfe");
  EXPECT_FALSE(events[1].action->error.empty()) << "not valid JSON: a string must be UTF-8";
  EXPECT_NO_THROW((void)events[1].ToJson().dump());
}

}  // namespace
}  // namespace cortex::agent
