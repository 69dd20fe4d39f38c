#include "common/cron.h"

#include <chrono>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace cortex {
namespace {

using std::chrono::days;
using std::chrono::floor;
using std::chrono::hours;
using std::chrono::minutes;
using std::chrono::seconds;
using std::chrono::sys_days;
using TimePoint = CronSchedule::TimePoint;

// "2024-02-29 13:05:00" (UTC) -> TimePoint.
TimePoint At(const std::string& text) {
  int y = 0;
  unsigned mo = 0, d = 0;
  int h = 0, mi = 0, s = 0;
  const int n = std::sscanf(text.c_str(), "%d-%u-%u %d:%d:%d", &y, &mo, &d, &h, &mi, &s);
  EXPECT_EQ(n, 6) << text;
  const sys_days date{std::chrono::year{y} / std::chrono::month{mo} / std::chrono::day{d}};
  EXPECT_TRUE((std::chrono::year{y} / std::chrono::month{mo} / std::chrono::day{d}).ok()) << text;
  return TimePoint(date) + hours(h) + minutes(mi) + seconds(s);
}

// TimePoint -> "2024-02-29 13:05:00", sub-second parts dropped.
std::string Format(TimePoint t) {
  const sys_days date = floor<days>(t);
  const std::chrono::year_month_day ymd{date};
  const std::chrono::hh_mm_ss hms{floor<seconds>(t - date)};
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02u-%02u %02d:%02d:%02d", static_cast<int>(ymd.year()),
                static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                static_cast<int>(hms.hours().count()), static_cast<int>(hms.minutes().count()),
                static_cast<int>(hms.seconds().count()));
  return buf;
}

CronSchedule Parse(const std::string& text) {
  Result<CronSchedule> r = ParseCron(text);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return std::move(r).value();
}

// The next `count` due times after `from`, formatted; "none" marks a nullopt.
std::vector<std::string> NextN(const CronSchedule& schedule, TimePoint from, int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    std::optional<TimePoint> next = schedule.Next(from);
    if (!next) {
      out.push_back("none");
      break;
    }
    out.push_back(Format(*next));
    from = *next;
  }
  return out;
}

TEST(CronTest, TimeHelpersRoundTrip) {
  EXPECT_EQ(Format(At("2024-02-29 13:05:07")), "2024-02-29 13:05:07");
  EXPECT_EQ(Format(At("1969-12-31 23:59:59")), "1969-12-31 23:59:59");
  EXPECT_EQ(At("1970-01-01 00:00:00").time_since_epoch().count(), 0);
}

TEST(CronTest, ParseErrors) {
  struct Case {
    std::string text;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"0 25 * * *", "cron \"0 25 * * *\": hour: 25 is out of range 0-23"},
      {"0 0 * *",
       "cron \"0 0 * *\": expected 5 fields, got 4 (minute hour day-of-month month day-of-week)"},
      {"", "cron \"\": expected 5 fields, got 0 (minute hour day-of-month month day-of-week)"},
      {"   ",
       "cron \"   \": expected 5 fields, got 0 (minute hour day-of-month month day-of-week)"},
      {"0 0 0 * * *",
       "cron \"0 0 0 * * *\": expected 5 fields, got 6 (minute hour day-of-month month "
       "day-of-week); there is no seconds field, use @every for sub-minute"},
      {"*/0 * * * *", "cron \"*/0 * * * *\": minute: bad step \"*/0\" (step must be 1-59)"},
      {"*/60 * * * *", "cron \"*/60 * * * *\": minute: bad step \"*/60\" (step must be 1-59)"},
      {"*/ * * * *", "cron \"*/ * * * *\": minute: bad step \"*/\" (step must be 1-59)"},
      {"*/x * * * *", "cron \"*/x * * * *\": minute: bad step \"*/x\" (step must be 1-59)"},
      {"1/2/3 * * * *", "cron \"1/2/3 * * * *\": minute: bad step \"1/2/3\" (step must be 1-59)"},
      {"0 */24 * * *", "cron \"0 */24 * * *\": hour: bad step \"*/24\" (step must be 1-23)"},
      {"/5 * * * *",
       "cron \"/5 * * * *\": minute: bad step \"/5\" (nothing before the /; use */n, a/n or "
       "a-b/n)"},
      {"* * * * FUNDAY",
       "cron \"* * * * FUNDAY\": day-of-week: unknown day name \"FUNDAY\" (expected SUN-SAT)"},
      {"* * * Foo *", "cron \"* * * Foo *\": month: unknown month name \"Foo\" (expected JAN-DEC)"},
      {"* * * JANUARY *",
       "cron \"* * * JANUARY *\": month: unknown month name \"JANUARY\" (expected JAN-DEC)"},
      {"60 * * * *", "cron \"60 * * * *\": minute: 60 is out of range 0-59"},
      {"* * 0 * *", "cron \"* * 0 * *\": day-of-month: 0 is out of range 1-31"},
      {"* * 32 * *", "cron \"* * 32 * *\": day-of-month: 32 is out of range 1-31"},
      {"* * * 0 *", "cron \"* * * 0 *\": month: 0 is out of range 1-12"},
      {"* * * 13 *", "cron \"* * * 13 *\": month: 13 is out of range 1-12"},
      {"* * * * 8", "cron \"* * * * 8\": day-of-week: 8 is out of range 0-7"},
      {"99999999999999999999 * * * *",
       "cron \"99999999999999999999 * * * *\": minute: 99999999999999999999 is out of range "
       "0-59"},
      {"a * * * *", "cron \"a * * * *\": minute: \"a\" is not a number"},
      {"0 MON * * *", "cron \"0 MON * * *\": hour: \"MON\" is not a number"},
      {"? * * * *", "cron \"? * * * *\": minute: \"?\" is not a number"},
      {"1,,2 * * * *", "cron \"1,,2 * * * *\": minute: empty list element in \"1,,2\""},
      {"1, * * * *", "cron \"1, * * * *\": minute: empty list element in \"1,\""},
      {"5-2 * * * *", "cron \"5-2 * * * *\": minute: range \"5-2\" runs backwards (5 > 2)"},
      {"* * * * SAT-MON",
       "cron \"* * * * SAT-MON\": day-of-week: range \"SAT-MON\" runs backwards (6 > 1)"},
      {"1-2-3 * * * *", "cron \"1-2-3 * * * *\": minute: bad range \"1-2-3\" (expected a-b)"},
      {"-5 * * * *", "cron \"-5 * * * *\": minute: bad range \"-5\" (expected a-b)"},
      {"5- * * * *", "cron \"5- * * * *\": minute: bad range \"5-\" (expected a-b)"},
      {"*-5 * * * *", "cron \"*-5 * * * *\": minute: bad range \"*-5\" (expected a-b)"},
      {"@often",
       "cron \"@often\": unknown macro \"@often\" (expected @yearly, @annually, @monthly, "
       "@weekly, @daily, @midnight, @hourly or @every <duration>)"},
      {"@daily 5", "cron \"@daily 5\": @daily takes no arguments"},
      {"@every",
       "cron \"@every\": @every takes one duration, e.g. \"@every 5m\" or \"@every 1h30m\""},
      {"@every 1h 30m",
       "cron \"@every 1h 30m\": @every takes one duration, e.g. \"@every 5m\" or \"@every "
       "1h30m\""},
      {"@every 0s", "cron \"@every 0s\": @every: interval must be at least 1s"},
      {"@every 0h0m0s", "cron \"@every 0h0m0s\": @every: interval must be at least 1s"},
      {"@every 5", "cron \"@every 5\": @every: bad duration \"5\" (missing unit after 5)"},
      {"@every 5x",
       "cron \"@every 5x\": @every: bad duration \"5x\" (unknown unit \"x\"; use d, h, m, s)"},
      {"@every 500ms",
       "cron \"@every 500ms\": @every: bad duration \"500ms\" (expected a number at \"s\")"},
      {"@every -5m",
       "cron \"@every -5m\": @every: bad duration \"-5m\" (expected a number at \"-5m\")"},
      {"@every 5m1h",
       "cron \"@every 5m1h\": @every: bad duration \"5m1h\" (units must go from largest to "
       "smallest, each at most once)"},
      {"@every 1m1m",
       "cron \"@every 1m1m\": @every: bad duration \"1m1m\" (units must go from largest to "
       "smallest, each at most once)"},
      {"@every 367d", "cron \"@every 367d\": @every: bad duration \"367d\" (longer than 366d)"},
      {"@every 366d1s",
       "cron \"@every 366d1s\": @every: bad duration \"366d1s\" (longer than 366d)"},
      {"@every 99999999999999999999s",
       "cron \"@every 99999999999999999999s\": @every: bad duration \"99999999999999999999s\" "
       "(longer than 366d)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    Result<CronSchedule> r = ParseCron(c.text);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.status().message(), c.message);
  }
}

TEST(CronTest, ToStringNormalizes) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"0 2 * * *", "0 2 * * *"},
      {"  0\t9  * *   mon-fri ", "0 9 * * MON-FRI"},
      {"0 0 1 jan,Jul *", "0 0 1 JAN,JUL *"},
      {"@Daily", "@daily"},
      {"@annually", "@annually"},
      {" @HOURLY ", "@hourly"},
      {"@every 30s", "@every 30s"},
      {"@every 90m", "@every 1h30m"},
      {"@every 1d", "@every 24h"},
      {"@every 3600s", "@every 1h"},
      {"@every 61s", "@every 1m1s"},
      {"@EVERY 5M", "@every 5m"},
      {"@every 1h0m5s", "@every 1h5s"},
  };
  for (const auto& [text, normalized] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(Parse(text).ToString(), normalized);
    // The normalized text parses to the same schedule.
    EXPECT_EQ(Parse(normalized).ToString(), normalized);
  }
  EXPECT_EQ(Parse("@every 1h30m").interval(), seconds(5400));
  EXPECT_EQ(Parse("0 2 * * *").interval(), seconds(0));
}

struct NextCase {
  std::string text;
  std::string from;
  std::vector<std::string> expected;
};

void RunNextCases(const std::vector<NextCase>& cases) {
  for (const NextCase& c : cases) {
    SCOPED_TRACE(c.text + " after " + c.from);
    const CronSchedule schedule = Parse(c.text);
    EXPECT_EQ(NextN(schedule, At(c.from), static_cast<int>(c.expected.size())), c.expected);
  }
}

TEST(CronTest, FieldForms) {
  RunNextCases({
      {"* * * * *", "2024-01-01 00:00:00", {"2024-01-01 00:01:00", "2024-01-01 00:02:00"}},
      {"7 * * * *", "2024-01-01 00:00:00", {"2024-01-01 00:07:00", "2024-01-01 01:07:00"}},
      {"*/15 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:15:00", "2024-01-01 00:30:00", "2024-01-01 00:45:00",
        "2024-01-01 01:00:00"}},
      {"5-10/2 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:05:00", "2024-01-01 00:07:00", "2024-01-01 00:09:00",
        "2024-01-01 01:05:00"}},
      {"50/5 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:50:00", "2024-01-01 00:55:00", "2024-01-01 01:50:00"}},
      {"10-12 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:10:00", "2024-01-01 00:11:00", "2024-01-01 00:12:00",
        "2024-01-01 01:10:00"}},
      {"1,2,59 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:01:00", "2024-01-01 00:02:00", "2024-01-01 00:59:00",
        "2024-01-01 01:01:00"}},
      {"0,30-31,45/10 * * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 00:30:00", "2024-01-01 00:31:00", "2024-01-01 00:45:00", "2024-01-01 00:55:00",
        "2024-01-01 01:00:00"}},
      {"0 9-17/4 * * *",
       "2024-01-01 00:00:00",
       {"2024-01-01 09:00:00", "2024-01-01 13:00:00", "2024-01-01 17:00:00",
        "2024-01-02 09:00:00"}},
      {"59 23 * * *", "2024-01-01 23:59:00", {"2024-01-02 23:59:00"}},
      {"0 0 */10 * *",
       "2024-01-01 00:00:00",
       {"2024-01-11 00:00:00", "2024-01-21 00:00:00", "2024-01-31 00:00:00",
        "2024-02-01 00:00:00"}},
      {"0 0 1 */3 *",
       "2024-01-01 00:00:00",
       {"2024-04-01 00:00:00", "2024-07-01 00:00:00", "2024-10-01 00:00:00",
        "2025-01-01 00:00:00"}},
  });
}

TEST(CronTest, MonthAndDayNames) {
  // 2024-01-01 is a Monday.
  RunNextCases({
      {"0 0 1 jan,Jul *", "2024-01-01 00:00:00", {"2024-07-01 00:00:00", "2025-01-01 00:00:00"}},
      {"0 0 1 FEB-APR *",
       "2024-01-01 00:00:00",
       {"2024-02-01 00:00:00", "2024-03-01 00:00:00", "2024-04-01 00:00:00",
        "2025-02-01 00:00:00"}},
      {"0 0 1 JAN-DEC/6 *", "2024-01-01 00:00:00", {"2024-07-01 00:00:00", "2025-01-01 00:00:00"}},
      {"0 9 * * mon-FRI",
       "2024-01-05 12:00:00",  // Friday noon
       {"2024-01-08 09:00:00", "2024-01-09 09:00:00", "2024-01-10 09:00:00", "2024-01-11 09:00:00",
        "2024-01-12 09:00:00", "2024-01-15 09:00:00"}},
      {"0 0 * * Sat,sun",
       "2024-01-01 00:00:00",
       {"2024-01-06 00:00:00", "2024-01-07 00:00:00", "2024-01-13 00:00:00"}},
      {"0 0 * * TUE/2",  // 2-6/2
       "2024-01-01 00:00:00",
       {"2024-01-02 00:00:00", "2024-01-04 00:00:00", "2024-01-06 00:00:00",
        "2024-01-09 00:00:00"}},
      {"0 0 * * */2",  // 0-6/2: Sun, Tue, Thu, Sat
       "2024-01-01 00:00:00",
       {"2024-01-02 00:00:00", "2024-01-04 00:00:00", "2024-01-06 00:00:00",
        "2024-01-07 00:00:00"}},
  });
}

TEST(CronTest, SevenIsSunday) {
  // 2024-01-07 and 2024-01-14 are Sundays.
  for (const std::string text :
       {"0 0 * * 0", "0 0 * * 7", "0 0 * * SUN", "0 0 * * sun", "0 0 * * 0,7", "0 0 * * 7/7"}) {
    RunNextCases({{text, "2024-01-01 00:00:00", {"2024-01-07 00:00:00", "2024-01-14 00:00:00"}}});
  }
  // A range may end on Sunday as 7, 0 or SUN.
  for (const std::string text : {"0 0 * * 5-7", "0 0 * * FRI-SUN", "0 0 * * 5-0"}) {
    RunNextCases({{text,
                   "2024-01-01 00:00:00",
                   {"2024-01-05 00:00:00", "2024-01-06 00:00:00", "2024-01-07 00:00:00",
                    "2024-01-12 00:00:00"}}});
  }
  // 6-7 and 0-6/6 mean Saturday and Sunday.
  RunNextCases({{"0 0 * * 6-7",
                 "2024-01-01 00:00:00",
                 {"2024-01-06 00:00:00", "2024-01-07 00:00:00", "2024-01-13 00:00:00"}}});
}

TEST(CronTest, DayOfMonthOrDayOfWeek) {
  RunNextCases({
      // Both restricted: the 13th OR any Friday (2024-01-05 and 2024-01-12 are Fridays).
      {"0 0 13 * FRI",
       "2024-01-01 00:00:00",
       {"2024-01-05 00:00:00", "2024-01-12 00:00:00", "2024-01-13 00:00:00",
        "2024-01-19 00:00:00"}},
      // Only day-of-month restricted.
      {"0 0 13 * *", "2024-01-01 00:00:00", {"2024-01-13 00:00:00", "2024-02-13 00:00:00"}},
      // Only day-of-week restricted.
      {"0 0 * * FRI", "2024-01-01 00:00:00", {"2024-01-05 00:00:00", "2024-01-12 00:00:00"}},
      // A stepped star is restricted too: days 1, 11, 21, 31 OR Mondays.
      {"0 0 */10 * MON",
       "2023-12-31 23:59:00",
       {"2024-01-01 00:00:00", "2024-01-08 00:00:00", "2024-01-11 00:00:00", "2024-01-15 00:00:00",
        "2024-01-21 00:00:00", "2024-01-22 00:00:00"}},
      // The OR rule applies within the chosen months only.
      {"0 0 1 3 MON", "2024-01-01 00:00:00", {"2024-03-01 00:00:00", "2024-03-04 00:00:00"}},
      // 30 Feb never exists, but Mondays in February do.
      {"0 0 30 2 MON", "2024-01-01 00:00:00", {"2024-02-05 00:00:00", "2024-02-12 00:00:00"}},
  });
}

TEST(CronTest, MonthAndYearBoundaries) {
  RunNextCases({
      {"0 0 * * *", "2023-12-31 12:00:00", {"2024-01-01 00:00:00"}},
      {"30 23 31 12 *", "2023-12-31 23:30:00", {"2024-12-31 23:30:00"}},
      {"30 23 31 12 *", "2023-12-31 23:29:59", {"2023-12-31 23:30:00"}},
      {"0 0 31 * *",
       "2024-01-31 00:00:00",
       {"2024-03-31 00:00:00", "2024-05-31 00:00:00", "2024-07-31 00:00:00",
        "2024-08-31 00:00:00"}},
  });
}

TEST(CronTest, LeapYears) {
  RunNextCases({
      {"0 0 29 2 *",
       "2023-01-01 00:00:00",
       {"2024-02-29 00:00:00", "2028-02-29 00:00:00", "2032-02-29 00:00:00"}},
      {"0 0 29 2 *", "2024-02-29 00:00:00", {"2028-02-29 00:00:00"}},
      // 2100 is not a leap year: the longest gap between due times, 8 years.
      {"0 0 29 2 *", "2096-03-01 00:00:00", {"2104-02-29 00:00:00"}},
      // 2000 is a leap year.
      {"0 0 29 2 *", "1999-01-01 00:00:00", {"2000-02-29 00:00:00"}},
      {"0 0 * 2 *", "2023-02-28 00:00:00", {"2024-02-01 00:00:00"}},
      {"0 0 * 2 *", "2024-02-28 00:00:00", {"2024-02-29 00:00:00", "2025-02-01 00:00:00"}},
      {"0 12 28-29 2 *",
       "2023-02-28 13:00:00",
       {"2024-02-28 12:00:00", "2024-02-29 12:00:00", "2025-02-28 12:00:00"}},
      {"0 0 1 3 *", "2024-02-29 00:00:00", {"2024-03-01 00:00:00"}},
  });
}

TEST(CronTest, Macros) {
  // 2024-01-03 is a Wednesday.
  RunNextCases({
      {"@yearly", "2024-06-01 00:00:00", {"2025-01-01 00:00:00"}},
      {"@annually", "2024-12-31 23:59:59", {"2025-01-01 00:00:00"}},
      {"@monthly", "2024-01-31 00:00:00", {"2024-02-01 00:00:00", "2024-03-01 00:00:00"}},
      {"@weekly", "2024-01-03 00:00:00", {"2024-01-07 00:00:00", "2024-01-14 00:00:00"}},
      {"@daily", "2024-02-28 08:00:00", {"2024-02-29 00:00:00", "2024-03-01 00:00:00"}},
      {"@midnight", "2024-02-28 08:00:00", {"2024-02-29 00:00:00"}},
      {"@hourly", "2024-01-01 23:00:00", {"2024-01-02 00:00:00", "2024-01-02 01:00:00"}},
  });
}

TEST(CronTest, CorpusSchedules) {
  RunNextCases({
      {"0 */6 * * *",
       "2024-01-01 05:00:00",
       {"2024-01-01 06:00:00", "2024-01-01 12:00:00", "2024-01-01 18:00:00",
        "2024-01-02 00:00:00"}},
      {"0 */6 * * *", "2024-12-31 18:00:00", {"2025-01-01 00:00:00"}},
      {"0 2 * * *", "2024-01-01 00:00:00", {"2024-01-01 02:00:00", "2024-01-02 02:00:00"}},
      {"0 2 * * *", "2024-02-28 02:00:00", {"2024-02-29 02:00:00", "2024-03-01 02:00:00"}},
  });
}

TEST(CronTest, NextIsStrictlyAfter) {
  const CronSchedule daily = Parse("0 2 * * *");
  const TimePoint due = At("2024-01-01 02:00:00");
  EXPECT_EQ(Format(*daily.Next(due)), "2024-01-02 02:00:00");
  EXPECT_EQ(*daily.Next(due - std::chrono::nanoseconds(1)), due);
  EXPECT_EQ(*daily.Next(due - seconds(1)), due);
  EXPECT_EQ(Format(*daily.Next(due + std::chrono::nanoseconds(1))), "2024-01-02 02:00:00");
  // Results are whole minutes even when `after` is not.
  const CronSchedule every_minute = Parse("* * * * *");
  EXPECT_EQ(*every_minute.Next(due + std::chrono::milliseconds(1500)), due + minutes(1));
}

TEST(CronTest, BeforeTheEpoch) {
  RunNextCases({
      {"0 0 * * *", "1969-12-31 12:00:00", {"1970-01-01 00:00:00"}},
      {"0 0 * * *", "1969-12-30 23:59:59", {"1969-12-31 00:00:00"}},
      {"@every 1h", "1969-12-31 22:30:00", {"1969-12-31 23:00:00", "1970-01-01 00:00:00"}},
      // 1969-12-31 was a Wednesday.
      {"0 0 * * WED", "1969-12-30 00:00:00", {"1969-12-31 00:00:00", "1970-01-07 00:00:00"}},
  });
}

TEST(CronTest, EveryIsAlignedToTheEpoch) {
  RunNextCases({
      {"@every 30s",
       "2024-01-01 00:00:10",
       {"2024-01-01 00:00:30", "2024-01-01 00:01:00", "2024-01-01 00:01:30"}},
      {"@every 1s", "2024-01-01 00:00:00", {"2024-01-01 00:00:01", "2024-01-01 00:00:02"}},
      {"@every 5m", "2024-01-01 00:00:00", {"2024-01-01 00:05:00", "2024-01-01 00:10:00"}},
      {"@every 5m", "2024-01-01 00:04:59", {"2024-01-01 00:05:00"}},
      {"@every 1h30m",
       "2024-01-01 00:00:00",
       {"2024-01-01 01:30:00", "2024-01-01 03:00:00", "2024-01-01 04:30:00"}},
      {"@every 1d", "2024-02-28 12:00:00", {"2024-02-29 00:00:00", "2024-03-01 00:00:00"}},
  });
  // Alignment does not depend on where the caller starts: any start yields multiples of 7m.
  const CronSchedule seven = Parse("@every 7m");
  for (const TimePoint from : {At("2024-01-01 00:00:00"), At("2024-05-17 13:21:09"),
                               At("2031-12-31 23:59:59") + std::chrono::milliseconds(999)}) {
    SCOPED_TRACE(Format(from));
    const std::optional<TimePoint> next = seven.Next(from);
    ASSERT_TRUE(next.has_value());
    EXPECT_EQ(next->time_since_epoch() % minutes(7), TimePoint::duration::zero());
    EXPECT_GT(*next, from);
    EXPECT_LE(*next - from, minutes(7));
  }
  // A sub-second `after` still gives the next whole multiple.
  const CronSchedule thirty = Parse("@every 30s");
  EXPECT_EQ(Format(*thirty.Next(At("2024-01-01 00:00:29") + std::chrono::milliseconds(999))),
            "2024-01-01 00:00:30");
  EXPECT_EQ(Format(*thirty.Next(At("2024-01-01 00:00:30") + std::chrono::nanoseconds(1))),
            "2024-01-01 00:01:00");
}

TEST(CronTest, ImpossibleSchedulesNeverFire) {
  for (const std::string text :
       {"0 0 30 2 *", "0 0 31 2 *", "0 0 31 4,6,9,11 *", "0 0 30-31 FEB *", "0 0 31 2,4 *"}) {
    SCOPED_TRACE(text);
    const CronSchedule schedule = Parse(text);
    EXPECT_EQ(schedule.Next(At("2024-01-01 00:00:00")), std::nullopt);
    EXPECT_TRUE(
        schedule.DueBetween(At("2024-01-01 00:00:00"), At("2034-01-01 00:00:00"), 10).empty());
  }
  // One possible month is enough.
  RunNextCases({{"0 0 31 2,3 *", "2024-01-01 00:00:00", {"2024-03-31 00:00:00"}}});
}

TEST(CronTest, EndOfTimePointRange) {
  const TimePoint max = TimePoint::max();
  EXPECT_EQ(Parse("* * * * *").Next(max), std::nullopt);
  EXPECT_EQ(Parse("@every 1s").Next(max), std::nullopt);
  EXPECT_EQ(Parse("@every 1s").Next(max - seconds(2)).has_value(), true);
  // The next Feb 29 after 2260 (2264) is past the end of the nanosecond clock (2262).
  EXPECT_EQ(Parse("0 0 29 2 *").Next(At("2260-03-01 00:00:00")), std::nullopt);
}

TEST(CronTest, DueBetween) {
  const CronSchedule six_hourly = Parse("0 */6 * * *");
  const TimePoint from = At("2024-01-01 00:00:00");
  const TimePoint to = At("2024-01-02 00:00:00");
  auto formatted = [](const std::vector<TimePoint>& times) {
    std::vector<std::string> out;
    for (TimePoint t : times) out.push_back(Format(t));
    return out;
  };
  // `from` is excluded, `to` is included.
  EXPECT_EQ(formatted(six_hourly.DueBetween(from, to, 10)),
            (std::vector<std::string>{"2024-01-01 06:00:00", "2024-01-01 12:00:00",
                                      "2024-01-01 18:00:00", "2024-01-02 00:00:00"}));
  // The limit keeps the earliest.
  EXPECT_EQ(formatted(six_hourly.DueBetween(from, to, 2)),
            (std::vector<std::string>{"2024-01-01 06:00:00", "2024-01-01 12:00:00"}));
  EXPECT_TRUE(six_hourly.DueBetween(from, to, 0).empty());
  EXPECT_TRUE(six_hourly.DueBetween(to, from, 10).empty());
  EXPECT_TRUE(six_hourly.DueBetween(from, from, 10).empty());
  EXPECT_EQ(formatted(Parse("@every 30s").DueBetween(from, from + minutes(1), 100)),
            (std::vector<std::string>{"2024-01-01 00:00:30", "2024-01-01 00:01:00"}));
  // A large window is cut at the limit.
  EXPECT_EQ(Parse("* * * * *").DueBetween(from, At("2030-01-01 00:00:00"), 1000).size(), 1000u);
}

// Next() against a minute-by-minute scan with an independently written predicate.
TEST(CronTest, MatchesBruteForce) {
  struct Case {
    std::string text;
    std::function<bool(int month, int day, int weekday, int hour, int minute)> matches;
  };
  const std::vector<Case> cases = {
      {"0 */6 * * *", [](int, int, int, int h, int m) { return m == 0 && h % 6 == 0; }},
      {"15,45 9-17 * * MON-FRI",
       [](int, int, int wd, int h, int m) {
         return (m == 15 || m == 45) && h >= 9 && h <= 17 && wd >= 1 && wd <= 5;
       }},
      {"0 0 13 * FRI",
       [](int, int d, int wd, int h, int m) { return h == 0 && m == 0 && (d == 13 || wd == 5); }},
      {"30 4 29 2 *",
       [](int mo, int d, int, int h, int m) { return mo == 2 && d == 29 && h == 4 && m == 30; }},
      {"0 12 */7 JAN,MAR-MAY *",
       [](int mo, int d, int, int h, int m) {
         return (mo == 1 || (mo >= 3 && mo <= 5)) && (d - 1) % 7 == 0 && h == 12 && m == 0;
       }},
      {"59 23 31 * 0",
       [](int, int d, int wd, int h, int m) { return h == 23 && m == 59 && (d == 31 || wd == 0); }},
  };
  const TimePoint begin = At("2023-12-01 00:00:00");
  const TimePoint end = At("2025-03-10 00:00:00");
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    const CronSchedule schedule = Parse(c.text);
    std::vector<TimePoint> expected;
    for (TimePoint t = begin + minutes(1); t <= end; t += minutes(1)) {
      const sys_days date = floor<days>(t);
      const std::chrono::year_month_day ymd{date};
      const std::chrono::hh_mm_ss hms{t - date};
      if (c.matches(static_cast<int>(static_cast<unsigned>(ymd.month())),
                    static_cast<int>(static_cast<unsigned>(ymd.day())),
                    static_cast<int>(std::chrono::weekday(date).c_encoding()),
                    static_cast<int>(hms.hours().count()),
                    static_cast<int>(hms.minutes().count()))) {
        expected.push_back(t);
      }
    }
    ASSERT_FALSE(expected.empty());
    EXPECT_EQ(schedule.DueBetween(begin, end, 1'000'000), expected);
  }
}

}  // namespace
}  // namespace cortex
