// Unit tests of common/json: UTF-8 validation and repair, the nesting bound of ParseJson, and
// DumpJson never throwing. These are the pieces behind two fixed crashes: a tool's stdout with
// invalid UTF-8 (dump() threw inside the executor) and JSON nested 80,000 levels deep (copies
// and dumps recursed until the stack overflowed).
#include "common/json.h"

#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace cortex {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using OJson = nlohmann::ordered_json;

const std::string kFffd = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

std::string Repeat(const std::string& s, size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (size_t i = 0; i < n; ++i) out += s;
  return out;
}

// `depth` arrays, one inside the other: [[[...]]].
std::string NestedArrays(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

// `depth` objects, one inside the other: {"a":{"a":...1...}}.
std::string NestedObjects(size_t depth) {
  return Repeat("{\"a\":", depth) + "1" + std::string(depth, '}');
}

// ---- IsValidUtf8 --------------------------------------------------------------------------

TEST(IsValidUtf8Test, AcceptsWellFormedText) {
  EXPECT_TRUE(IsValidUtf8(""));
  EXPECT_TRUE(IsValidUtf8("plain ascii, 0-9 ~"));
  EXPECT_TRUE(IsValidUtf8(std::string("nul \0 inside", 12)));
  EXPECT_TRUE(IsValidUtf8("caf\xC3\xA9"));            // U+00E9, two bytes
  EXPECT_TRUE(IsValidUtf8("\xE2\x82\xAC 5"));         // U+20AC, three bytes
  EXPECT_TRUE(IsValidUtf8("\xF0\x9D\x84\x9E clef"));  // U+1D11E, four bytes
  EXPECT_TRUE(IsValidUtf8("\xC2\x80"));               // U+0080, the smallest two-byte one
  EXPECT_TRUE(IsValidUtf8("\xE0\xA0\x80"));           // U+0800, the smallest three-byte one
  EXPECT_TRUE(IsValidUtf8("\xF0\x90\x80\x80"));       // U+10000, the smallest four-byte one
  EXPECT_TRUE(IsValidUtf8("\xED\x9F\xBF"));           // U+D7FF, just below the surrogates
  EXPECT_TRUE(IsValidUtf8("\xEE\x80\x80"));           // U+E000, just above them
  EXPECT_TRUE(IsValidUtf8("\xEF\xBF\xBD"));           // U+FFFD itself
  EXPECT_TRUE(IsValidUtf8("\xF4\x8F\xBF\xBF"));       // U+10FFFF, the last code point
  EXPECT_TRUE(IsValidUtf8("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"));  // 日本語
}

TEST(IsValidUtf8Test, RefusesLoneContinuationBytes) {
  EXPECT_FALSE(IsValidUtf8("\x80"));
  EXPECT_FALSE(IsValidUtf8("\xBF"));
  EXPECT_FALSE(IsValidUtf8("ok \x80 then ok"));
  EXPECT_FALSE(IsValidUtf8("caf\xC3\xA9\xA9"));  // one continuation too many
}

TEST(IsValidUtf8Test, RefusesBytesThatNeverStartASequence) {
  EXPECT_FALSE(IsValidUtf8("\xFF"));
  EXPECT_FALSE(IsValidUtf8("\xFE"));
  EXPECT_FALSE(IsValidUtf8("\xFF\xFE hi"));  // what the daemon's test tool prints
  EXPECT_FALSE(IsValidUtf8("\xF5\x80\x80\x80"));
  EXPECT_FALSE(IsValidUtf8("\xF8\x88\x80\x80\x80"));  // old five-byte form
}

TEST(IsValidUtf8Test, RefusesOverlongEncodings) {
  EXPECT_FALSE(IsValidUtf8("\xC0\xAF"));          // '/' in two bytes
  EXPECT_FALSE(IsValidUtf8("\xC0\x80"));          // NUL in two bytes
  EXPECT_FALSE(IsValidUtf8("\xC1\xBF"));          // U+007F in two bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // '/' in three bytes
  EXPECT_FALSE(IsValidUtf8("\xE0\x9F\xBF"));      // U+07FF in three bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x80\x80\xAF"));  // '/' in four bytes
  EXPECT_FALSE(IsValidUtf8("\xF0\x8F\xBF\xBF"));  // U+FFFF in four bytes
}

TEST(IsValidUtf8Test, RefusesSurrogates) {
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\x80"));                 // U+D800
  EXPECT_FALSE(IsValidUtf8("\xED\xBF\xBF"));                 // U+DFFF
  EXPECT_FALSE(IsValidUtf8("\xED\xA0\xBD\xED\xB2\xA9"));     // a CESU-8 pair
  EXPECT_FALSE(IsValidUtf8("text \xED\xB0\x80 more text"));  // U+DC00 inside text
}

TEST(IsValidUtf8Test, RefusesCodePointsAboveTheLast) {
  EXPECT_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // U+110000
  EXPECT_FALSE(IsValidUtf8("\xF4\xBF\xBF\xBF"));
}

TEST(IsValidUtf8Test, RefusesSequencesCutShort) {
  EXPECT_FALSE(IsValidUtf8("\xC3"));
  EXPECT_FALSE(IsValidUtf8("ok\xE2\x82"));
  EXPECT_FALSE(IsValidUtf8("ok\xF0\x9D\x84"));
  EXPECT_FALSE(IsValidUtf8("\xE2\x82x"));  // cut short by an ASCII byte, not by the end
  EXPECT_FALSE(IsValidUtf8("\xF0\x9D\x84 x"));
}

// ---- ToValidUtf8 --------------------------------------------------------------------------

TEST(ToValidUtf8Test, ValidTextIsUnchanged) {
  for (const std::string& s :
       {std::string(), std::string("ascii"), std::string("caf\xC3\xA9 \xE2\x82\xAC"),
        std::string("\xF0\x9D\x84\x9E\xF4\x8F\xBF\xBF"), std::string("a\0b", 3)}) {
    size_t replaced = 99;
    EXPECT_EQ(ToValidUtf8(s, &replaced), s);
    EXPECT_EQ(replaced, 0u) << s;
  }
  EXPECT_EQ(ToValidUtf8("no counter wanted"), "no counter wanted");
}

TEST(ToValidUtf8Test, EachBadByteBecomesOneReplacementCharacter) {
  size_t replaced = 0;
  // What `printf '\377\376 hi'` writes: two bytes replaced (the daemon's note says "2 bytes").
  EXPECT_EQ(ToValidUtf8("\xFF\xFE hi", &replaced), kFffd + kFffd + " hi");
  EXPECT_EQ(replaced, 2u);

  EXPECT_EQ(ToValidUtf8("a\x80z", &replaced), "a" + kFffd + "z");
  EXPECT_EQ(replaced, 1u);

  // Overlong: neither byte belongs to a well-formed sequence.
  EXPECT_EQ(ToValidUtf8("\xC0\xAF", &replaced), kFffd + kFffd);
  EXPECT_EQ(replaced, 2u);

  // A surrogate: three bytes, three replacements.
  EXPECT_EQ(ToValidUtf8("[\xED\xA0\x80]", &replaced), "[" + kFffd + kFffd + kFffd + "]");
  EXPECT_EQ(replaced, 3u);

  // Above U+10FFFF.
  EXPECT_EQ(ToValidUtf8("\xF4\x90\x80\x80", &replaced), kFffd + kFffd + kFffd + kFffd);
  EXPECT_EQ(replaced, 4u);
}

TEST(ToValidUtf8Test, SequenceCutShortAtTheEnd) {
  size_t replaced = 0;
  EXPECT_EQ(ToValidUtf8("ok\xE2\x82", &replaced), "ok" + kFffd + kFffd);
  EXPECT_EQ(replaced, 2u);
  EXPECT_EQ(ToValidUtf8("\xC3", &replaced), kFffd);
  EXPECT_EQ(replaced, 1u);
  EXPECT_EQ(ToValidUtf8("x\xF0\x9D\x84", &replaced), "x" + kFffd + kFffd + kFffd);
  EXPECT_EQ(replaced, 3u);
}

TEST(ToValidUtf8Test, GoodSequencesAroundBadBytesAreKept) {
  size_t replaced = 0;
  std::string in = "\xC3\xA9\xFF\xE2\x82\xAC\x80\xF0\x9D\x84\x9E";
  std::string out = ToValidUtf8(in, &replaced);
  EXPECT_EQ(out, "\xC3\xA9" + kFffd + "\xE2\x82\xAC" + kFffd + "\xF0\x9D\x84\x9E");
  EXPECT_EQ(replaced, 2u);
  // A lead byte whose sequence is broken by the next lead: the lead goes, the next is kept.
  EXPECT_EQ(ToValidUtf8("\xE2\xC3\xA9", &replaced), kFffd + "\xC3\xA9");
  EXPECT_EQ(replaced, 1u);
}

TEST(ToValidUtf8Test, OutputIsAlwaysValid) {
  // Every byte value, alone and in a run, comes out valid.
  std::string all;
  for (int b = 0; b < 256; ++b) {
    std::string one(1, static_cast<char>(b));
    EXPECT_TRUE(IsValidUtf8(ToValidUtf8(one))) << "byte " << b;
    all += one;
  }
  size_t replaced = 0;
  std::string fixed = ToValidUtf8(all, &replaced);
  EXPECT_TRUE(IsValidUtf8(fixed));
  EXPECT_EQ(replaced, 128u);  // every byte from 0x80 up, none of which starts a sequence here
  // Repairing twice changes nothing.
  EXPECT_EQ(ToValidUtf8(fixed, &replaced), fixed);
  EXPECT_EQ(replaced, 0u);
}

// ---- JsonNestingDepth ---------------------------------------------------------------------

TEST(JsonNestingDepthTest, CountsArraysAndObjects) {
  EXPECT_EQ(JsonNestingDepth(""), 0);
  EXPECT_EQ(JsonNestingDepth("42"), 0);
  EXPECT_EQ(JsonNestingDepth("\"text\""), 0);
  EXPECT_EQ(JsonNestingDepth("[]"), 1);
  EXPECT_EQ(JsonNestingDepth("{}"), 1);
  EXPECT_EQ(JsonNestingDepth("[[1], [2], [3]]"), 2);
  EXPECT_EQ(JsonNestingDepth(R"({"a": {"b": [1, {"c": []}]}, "d": [[[[]]]]})"), 5);
  EXPECT_EQ(JsonNestingDepth(NestedArrays(128)), 128);
  EXPECT_EQ(JsonNestingDepth(NestedObjects(128)), 128);
}

TEST(JsonNestingDepthTest, IgnoresBracketsInsideStrings) {
  EXPECT_EQ(JsonNestingDepth(R"("[[[[{{{{")"), 0);
  EXPECT_EQ(JsonNestingDepth(R"(["[[[[", "{{{{"])"), 1);
  EXPECT_EQ(JsonNestingDepth(R"({"[[[": "]]]", "x": ["{"]})"), 2);
  // A string of 10,000 brackets is one level deep, not 10,001.
  EXPECT_EQ(JsonNestingDepth("[\"" + std::string(10000, '[') + "\"]"), 1);
}

TEST(JsonNestingDepthTest, EscapedQuotesDoNotEndAString) {
  // The string is `"[[[` (an escaped quote, then brackets): still inside it.
  EXPECT_EQ(JsonNestingDepth(R"(["\"[[[", 1])"), 1);
  EXPECT_EQ(JsonNestingDepth(R"(["a\"b\"[[[[\"", [2]])"), 2);
  // An escaped backslash, then the closing quote: the string ends there, the brackets count.
  EXPECT_EQ(JsonNestingDepth(R"(["\\", [[3]]])"), 3);
  EXPECT_EQ(JsonNestingDepth(R"(["\\\"[[", [[3]]])"), 3);
}

TEST(JsonNestingDepthTest, StopsCountingPastTheLimit) {
  EXPECT_EQ(JsonNestingDepth(NestedArrays(1000), 10), 11);
  EXPECT_EQ(JsonNestingDepth(NestedArrays(10), 10), 10);
  EXPECT_EQ(JsonNestingDepth(NestedArrays(200000)), kMaxJsonDepth + 1);
  EXPECT_EQ(JsonNestingDepth(std::string(200000, '[')), kMaxJsonDepth + 1);  // never closed
  EXPECT_EQ(JsonNestingDepth(NestedObjects(80000)), kMaxJsonDepth + 1);
}

TEST(JsonNestingDepthTest, StrayClosersDoNotGoNegative) {
  EXPECT_EQ(JsonNestingDepth("]]]]["), 1);
  EXPECT_EQ(JsonNestingDepth("}}[[]]"), 2);
}

// ---- ParseJson ----------------------------------------------------------------------------

TEST(ParseJsonTest, ParsesOrdinaryJson) {
  auto j = ParseJson(R"({"b": 1, "a": [true, null, "caf\u00e9", "日本"], "c": {"d": 2.5}})");
  ASSERT_TRUE(j.ok()) << j.status().ToString();
  EXPECT_EQ((*j)["b"], 1);
  EXPECT_EQ((*j)["a"][2], "caf\xC3\xA9");
  EXPECT_EQ((*j)["a"][3], "\xE6\x97\xA5\xE6\x9C\xAC");
  EXPECT_EQ((*j)["c"]["d"], 2.5);
  EXPECT_EQ(j->begin().key(), "b") << "keys keep their order";
}

TEST(ParseJsonTest, NestingUpTo128LevelsIsAccepted) {
  EXPECT_EQ(kMaxJsonDepth, 128);
  auto arrays = ParseJson(NestedArrays(128));
  ASSERT_TRUE(arrays.ok()) << arrays.status().ToString();
  EXPECT_TRUE(arrays->is_array());
  auto objects = ParseJson(NestedObjects(128));
  ASSERT_TRUE(objects.ok()) << objects.status().ToString();
  EXPECT_TRUE(objects->is_object());
  // Brackets inside strings do not count towards the limit.
  auto in_string = ParseJson("[\"" + std::string(1000, '[') + "\"]");
  ASSERT_TRUE(in_string.ok()) << in_string.status().ToString();
  EXPECT_EQ((*in_string)[0], std::string(1000, '['));
}

TEST(ParseJsonTest, NestingOf129LevelsIsRefused) {
  for (const std::string& text : {NestedArrays(129), NestedObjects(129)}) {
    auto j = ParseJson(text);
    ASSERT_FALSE(j.ok()) << text;
    EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(j.status().message(), HasSubstr("nested deeper than 128 levels"));
  }
}

TEST(ParseJsonTest, VeryDeepNestingIsRefusedWithoutCrashing) {
  // The sizes that crashed the server (a body, workflow input, a tool's stdout).
  for (const std::string& text :
       {NestedObjects(80000), NestedArrays(200000), std::string(200000, '[')}) {
    auto j = ParseJson(text);
    ASSERT_FALSE(j.ok());
    EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(j.status().message(), HasSubstr("nested deeper than 128 levels"));
  }
}

TEST(ParseJsonTest, MaxDepthCanBeChosen) {
  EXPECT_TRUE(ParseJson("[[1]]", 2).ok());
  auto j = ParseJson("[[[1]]]", 2);
  ASSERT_FALSE(j.ok());
  EXPECT_THAT(j.status().message(), HasSubstr("nested deeper than 2 levels"));
}

TEST(ParseJsonTest, SyntaxErrorsSayWhere) {
  auto j = ParseJson("{\n  \"a\": 1,\n  \"b\": ,\n}");
  ASSERT_FALSE(j.ok());
  EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(j.status().message(), HasSubstr("line 3"));
  EXPECT_THAT(j.status().message(), HasSubstr("column 8"));
  EXPECT_THAT(j.status().message(), Not(HasSubstr("[json.exception")))
      << "the library's prefix is dropped";

  for (const char* bad : {"", "{", "[1, 2", "{\"a\" 1}", "nul", "[1] trailing"}) {
    auto b = ParseJson(bad);
    EXPECT_FALSE(b.ok()) << bad;
    EXPECT_EQ(b.status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(ParseJsonTest, RefusesInvalidUtf8InStrings) {
  for (const std::string& text :
       {std::string("[\"\xFF\xFE hi\"]"), std::string("\"a\x80z\""),
        std::string("{\"k\xC0\xAF\": 1}"), std::string("[\"\xED\xA0\x80\"]"),
        std::string("[\"\xF4\x90\x80\x80\"]"), std::string("\"ok\xE2\x82")}) {
    auto j = ParseJson(text);
    ASSERT_FALSE(j.ok()) << "accepted: " << ToValidUtf8(text);
    EXPECT_EQ(j.status().code(), StatusCode::kInvalidArgument);
    // The message may quote the bad bytes; it is itself valid UTF-8 (it goes into JSON answers).
    EXPECT_TRUE(IsValidUtf8(j.status().message())) << ToValidUtf8(j.status().message());
    EXPECT_NO_THROW((void)OJson(j.status().message()).dump());
  }
}

// ---- ParseJsonOrString --------------------------------------------------------------------

TEST(ParseJsonOrStringTest, JsonIsParsedAnythingElseIsText) {
  EXPECT_EQ(ParseJsonOrString(R"({"a": [1, 2]})"), OJson::parse(R"({"a": [1, 2]})"));
  EXPECT_EQ(ParseJsonOrString("not json"), OJson("not json"));
  EXPECT_EQ(ParseJsonOrString("\"quoted\""), OJson("quoted"));
  // Invalid bytes are replaced, so the value can be written out.
  OJson bad = ParseJsonOrString("\xFF\xFE hi");
  ASSERT_TRUE(bad.is_string());
  EXPECT_EQ(bad.get<std::string>(), kFffd + kFffd + " hi");
  EXPECT_NO_THROW((void)bad.dump());
  // Too deep: kept as the text itself.
  std::string deep = NestedArrays(200000);
  OJson kept = ParseJsonOrString(deep);
  ASSERT_TRUE(kept.is_string());
  EXPECT_EQ(kept.get<std::string>(), deep);
}

// ---- DumpJson -----------------------------------------------------------------------------

TEST(DumpJsonTest, InvalidUtf8IsReplacedNotThrown) {
  OJson j = {{"result", std::string("\xFF\xFE hi")}, {"ok", "caf\xC3\xA9"}};
  // What the executor did before: dump() throws on such a string.
  EXPECT_THROW((void)j.dump(), nlohmann::json::type_error);
  std::string text;
  EXPECT_NO_THROW(text = DumpJson(j));
  EXPECT_TRUE(IsValidUtf8(text)) << ToValidUtf8(text);
  EXPECT_THAT(text, HasSubstr(kFffd));
  EXPECT_THAT(text, HasSubstr(" hi"));
  EXPECT_THAT(text, HasSubstr("caf\xC3\xA9"));
  // What was written reads back.
  auto back = ParseJson(text);
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  std::string result = (*back)["result"].get<std::string>();
  EXPECT_TRUE(IsValidUtf8(result));
  EXPECT_THAT(result, HasSubstr(kFffd));
  EXPECT_THAT(result, HasSubstr(" hi"));
  EXPECT_EQ((*back)["ok"], "caf\xC3\xA9");
}

TEST(DumpJsonTest, EveryKindOfBadByteAndBothJsonTypes) {
  for (const std::string& s :
       {std::string("\x80"), std::string("\xC0\xAF"), std::string("\xED\xA0\x80"),
        std::string("\xF4\x90\x80\x80"), std::string("cut \xE2\x82")}) {
    nlohmann::json plain = {{"k" + s, s}};  // the key too
    OJson ordered = {{"v", {s, s}}};
    std::string a, b;
    EXPECT_NO_THROW(a = DumpJson(plain));
    EXPECT_NO_THROW(b = DumpJson(ordered, 2));
    EXPECT_TRUE(IsValidUtf8(a)) << ToValidUtf8(a);
    EXPECT_TRUE(IsValidUtf8(b)) << ToValidUtf8(b);
    EXPECT_THAT(a, HasSubstr(kFffd));
    EXPECT_THAT(b, HasSubstr(kFffd));
    EXPECT_TRUE(ParseJson(a).ok()) << ToValidUtf8(a);
    EXPECT_TRUE(ParseJson(b).ok()) << ToValidUtf8(b);
  }
}

TEST(DumpJsonTest, ValidValuesAreWrittenAsDumpWouldWriteThem) {
  OJson j = OJson::parse(R"({"z": 1, "a": ["caf\u00e9", null, 2.5, true], "m": {}})");
  EXPECT_EQ(DumpJson(j), j.dump());
  EXPECT_EQ(DumpJson(j, 2), j.dump(2));
  nlohmann::json p = nlohmann::json::parse(R"({"b": [1, 2], "a": "x"})");
  EXPECT_EQ(DumpJson(p), p.dump());
}

}  // namespace
}  // namespace cortex
