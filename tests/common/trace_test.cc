// W3C Trace Context parsing and the span model: what is accepted, what starts a new trace, and
// that spans reach the exporter with their parents and are ended exactly once.
#include "common/trace.h"

#include <gtest/gtest.h>

#include <vector>

namespace cortex::trace {
namespace {

constexpr char kGood[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

TEST(TraceContext, ParsesTheSpecsExampleAndWritesItBack) {
  auto c = ParseTraceparent(kGood);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(c->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  EXPECT_EQ(c->span_id, "00f067aa0ba902b7");
  EXPECT_TRUE(c->sampled);
  EXPECT_EQ(c->Traceparent(), kGood);
  auto unsampled = ParseTraceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
  ASSERT_TRUE(unsampled.has_value());
  EXPECT_FALSE(unsampled->sampled);
  // A later version: its first four fields, whatever follows after a dash.
  EXPECT_TRUE(ParseTraceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later")
                  .has_value());
}

TEST(TraceContext, AnythingElseIsNoContext) {
  for (const std::string& bad : {
           std::string(""),
           std::string("garbage"),
           std::string("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),  // uppercase
           std::string("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),  // zero trace
           std::string("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),  // zero span
           std::string("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),  // version ff
           std::string(kGood) + "-x",                                               // 00 + extra
           std::string("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x"),
           std::string("00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01"),
           std::string("00-4bf92f3577b34da6a3ce929d0e0e473\xff-00f067aa0ba902b7-01"),
           std::string(100000, 'a'),
       }) {
    EXPECT_FALSE(ParseTraceparent(bad).has_value()) << bad.substr(0, 80);
  }
}

TEST(Tracer, SpansAreChildrenOfTheirParentAndExportedOnce) {
  std::vector<SpanData> got;
  Tracer tracer([&](SpanData&& s) { got.push_back(std::move(s)); });
  {
    Span root = tracer.Start("root", "");
    EXPECT_EQ(root.context().trace_id.size(), 32u);
    Span child = tracer.Start("child", root.traceparent(), SpanKind::kClient);
    EXPECT_EQ(child.context().trace_id, root.context().trace_id);
    child.SetAttribute("k", "v");
    child.SetAttribute("k", "w");  // the last value stands
    child.SetError("it broke");
    child.End();
    child.End();  // once only
    Span moved = std::move(root);
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].name, "child");
  EXPECT_EQ(got[0].parent_span_id, got[1].context.span_id);
  ASSERT_EQ(got[0].attributes.size(), 1u);
  EXPECT_EQ(std::get<std::string>(got[0].attributes[0].second), "w");
  EXPECT_TRUE(got[0].error);
  EXPECT_EQ(got[1].name, "root");
  EXPECT_TRUE(got[1].parent_span_id.empty());
  EXPECT_LE(got[1].start_unix_ns, got[1].end_unix_ns);
  // Under a caller's context; an unsampled one is carried but not exported.
  got.clear();
  {
    Span s = tracer.Start("in", kGood);
    EXPECT_EQ(s.context().trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
  }
  {
    Span s = tracer.Start("quiet", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    EXPECT_EQ(s.traceparent().substr(53), "00");
  }
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].parent_span_id, "00f067aa0ba902b7");
  // A default span does nothing.
  Span none;
  none.SetAttribute("a", "b");
  none.End();
  EXPECT_TRUE(none.traceparent().empty());
}

}  // namespace
}  // namespace cortex::trace
