// The log's text format keeps every message on one line of valid UTF-8.
#include "common/log.h"

#include <gtest/gtest.h>

namespace cortex::log {
namespace {

TEST(LogTest, AMessageStaysOnOneLine) {
  EXPECT_EQ(OneLine("plain text"), "plain text");
  EXPECT_EQ(OneLine("first\nsecond\r\n"), "first\\nsecond\\r\\n");
  EXPECT_EQ(OneLine("a\tb"), "a\\tb");
  // A forged log line and a terminal escape from a tool's output stay inside the message.
  EXPECT_EQ(OneLine("x\n2026-01-01T00:00:00.000Z ERROR fake: y"),
            "x\\n2026-01-01T00:00:00.000Z ERROR fake: y");
  EXPECT_EQ(OneLine("\x1b[31mred\x7f"), "\\x1b[31mred\\x7f");
  EXPECT_EQ(OneLine("caf\xc3\xa9"), "caf\xc3\xa9");  // UTF-8 is kept
  std::string invalid = OneLine("bad \xff\xfe end");
  EXPECT_EQ(invalid.find('\xff'), std::string::npos);
  EXPECT_NE(invalid.find(" end"), std::string::npos);
}

}  // namespace
}  // namespace cortex::log
