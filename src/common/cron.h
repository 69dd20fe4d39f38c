// Cron schedules for scheduled workflow triggers. All times are UTC; there is no time zone
// support, and nothing here reads the clock or the environment (callers pass times in).
//
// Accepted forms:
//   - Standard 5 fields: `minute hour day-of-month month day-of-week`, separated by
//     whitespace. There is no seconds field.
//       minute 0-59, hour 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
//       day-of-week 0-7 or SUN-SAT (0 and 7 are both Sunday). Names are case-insensitive.
//     Each field is a comma-separated list of elements; an element is `*`, a value `a`, a range
//     `a-b`, or one of those with a step: `*/n`, `a-b/n`, `a/n` (= `a-<max>/n`). A step must be
//     1..<field max>. Ranges must not run backwards, except that a day-of-week range may end in
//     Sunday written as 0 or SUN (`FRI-SUN` = 5-7). `*` in day-of-week means 0-6.
//   - Day rule (Vixie cron): a field is "restricted" unless it is exactly `*`. When both
//     day-of-month and day-of-week are restricted, a day matches if EITHER matches
//     (`0 0 1 * MON` = the 1st of the month and every Monday); otherwise the restricted one
//     decides. Unlike Vixie, `*/2` counts as restricted (it is not a bare `*`).
//   - Macros (case-insensitive): @yearly/@annually = `0 0 1 1 *`, @monthly = `0 0 1 * *`,
//     @weekly = `0 0 * * 0`, @daily/@midnight = `0 0 * * *`, @hourly = `0 * * * *`.
//   - `@every <duration>`: a fixed interval written as integer components in the units d, h, m, s
//     from largest to smallest, each at most once (`30s`, `5m`, `1h30m`, `1d`); 1s to 366d.
//     Due times are the multiples of the interval since the Unix epoch, so they are the same
//     across restarts: `@every 1h` fires on the hour, `@every 15m` at :00 :15 :30 :45; an
//     interval that does not divide a day (`@every 7m`) drifts against midnight.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace cortex {

class CronSchedule {
 public:
  using TimePoint = std::chrono::system_clock::time_point;

  // How far ahead Next() searches a 5-field schedule. ParseCron records whether a schedule can
  // ever fire (`0 0 30 2 *` cannot), and Next() returns nullopt for those at once; every other
  // schedule fires at least once in any 8 years (Feb 29 is the rarest day: 2096 -> 2104), so
  // this bound only matters at the end of the representable time range.
  static constexpr int kSearchYears = 9;

  // The first due time strictly after `after`, or nullopt when the schedule never fires again
  // (impossible schedule, or no due time within kSearchYears / the range of TimePoint).
  // Results are whole minutes for 5-field schedules and whole seconds for @every. The cost is
  // bounded by the number of days searched, not minutes.
  std::optional<TimePoint> Next(TimePoint after) const;

  // The due times in (from_exclusive, to_inclusive], ascending, at most `limit` of them (the
  // earliest ones). `limit` is the caller's bound on the work and the result size.
  std::vector<TimePoint> DueBetween(TimePoint from_exclusive, TimePoint to_inclusive,
                                    size_t limit) const;

  // The normalized source text: fields separated by one space with names upper-cased
  // ("0 9 * * MON-FRI"), macros lower-cased ("@daily"), and @every durations in canonical
  // h/m/s form ("@every 90m" -> "@every 1h30m", "@every 1d" -> "@every 24h").
  std::string ToString() const { return text_; }

  // Set for `@every` schedules, zero otherwise.
  std::chrono::seconds interval() const { return interval_; }

 private:
  friend Result<CronSchedule> ParseCron(std::string_view text);
  CronSchedule() = default;

  bool DayMatches(unsigned day_of_month, unsigned day_of_week) const;
  std::optional<TimePoint> NextCalendar(TimePoint after) const;
  std::optional<TimePoint> NextInterval(TimePoint after) const;

  std::string text_;
  std::chrono::seconds interval_{0};
  // Bit i set = value i allowed. Day-of-week uses 0-6 (7 is folded into 0).
  uint64_t minutes_ = 0;
  uint64_t hours_ = 0;
  uint64_t days_of_month_ = 0;
  uint64_t months_ = 0;
  uint64_t days_of_week_ = 0;
  bool day_of_month_restricted_ = false;
  bool day_of_week_restricted_ = false;
  bool can_fire_ = false;  // some month/day combination exists (see kSearchYears)
};

// Parses a schedule (see the top of this file). Errors are InvalidArgument, prefixed with the
// text and naming the field: `cron "0 25 * * *": hour: 25 is out of range 0-23`.
Result<CronSchedule> ParseCron(std::string_view text);

}  // namespace cortex
