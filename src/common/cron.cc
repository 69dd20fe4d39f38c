#include "common/cron.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cctype>
#include <charconv>
#include <system_error>

namespace cortex {
namespace {

using std::chrono::days;
using std::chrono::floor;
using std::chrono::minutes;
using std::chrono::seconds;
using std::chrono::sys_days;
using TimePoint = CronSchedule::TimePoint;

constexpr int64_t kSecondsPerDay = 24 * 60 * 60;
constexpr int64_t kMaxIntervalSeconds = 366 * kSecondsPerDay;

constexpr std::array<std::string_view, 12> kMonthNames = {"JAN", "FEB", "MAR", "APR", "MAY", "JUN",
                                                          "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"};
constexpr std::array<std::string_view, 7> kDayNames = {"SUN", "MON", "TUE", "WED",
                                                       "THU", "FRI", "SAT"};

enum class FieldKind { kMinute, kHour, kDayOfMonth, kMonth, kDayOfWeek };

struct FieldSpec {
  FieldKind kind;
  std::string_view name;
  int min;
  int max;       // largest value accepted as written (7 for day-of-week)
  int star_max;  // upper end of `*` and of `a/n` (6 for day-of-week)
};

constexpr std::array<FieldSpec, 5> kFields = {{
    {FieldKind::kMinute, "minute", 0, 59, 59},
    {FieldKind::kHour, "hour", 0, 23, 23},
    {FieldKind::kDayOfMonth, "day-of-month", 1, 31, 31},
    {FieldKind::kMonth, "month", 1, 12, 12},
    {FieldKind::kDayOfWeek, "day-of-week", 0, 7, 6},
}};

struct Macro {
  std::string_view name;
  std::string_view expansion;
};

constexpr std::array<Macro, 7> kMacros = {{
    {"@yearly", "0 0 1 1 *"},
    {"@annually", "0 0 1 1 *"},
    {"@monthly", "0 0 1 * *"},
    {"@weekly", "0 0 * * 0"},
    {"@daily", "0 0 * * *"},
    {"@midnight", "0 0 * * *"},
    {"@hourly", "0 * * * *"},
}};

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

std::string ToUpper(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool IsSpace(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

std::vector<std::string_view> SplitWhitespace(std::string_view s) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < s.size()) {
    while (i < s.size() && IsSpace(s[i])) ++i;
    size_t start = i;
    while (i < s.size() && !IsSpace(s[i])) ++i;
    if (i > start) out.push_back(s.substr(start, i - start));
  }
  return out;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  while (true) {
    size_t pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

// Digits to a non-negative number; nullopt when it does not fit in int64.
std::optional<int64_t> ParseDigits(std::string_view s) {
  int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

// One value of a field: a number in [min, max] or, for month and day-of-week, a name.
Result<int> ParseValue(const FieldSpec& field, std::string_view token) {
  if (AllDigits(token)) {
    std::optional<int64_t> v = ParseDigits(token);
    if (!v || *v < field.min || *v > field.max) {
      return InvalidArgumentError(std::string(token) + " is out of range " +
                                  std::to_string(field.min) + "-" + std::to_string(field.max));
    }
    return static_cast<int>(*v);
  }
  if (field.kind == FieldKind::kMonth || field.kind == FieldKind::kDayOfWeek) {
    const bool month = field.kind == FieldKind::kMonth;
    std::string upper = ToUpper(token);
    if (month) {
      for (size_t i = 0; i < kMonthNames.size(); ++i) {
        if (upper == kMonthNames[i]) return static_cast<int>(i) + 1;
      }
    } else {
      for (size_t i = 0; i < kDayNames.size(); ++i) {
        if (upper == kDayNames[i]) return static_cast<int>(i);
      }
    }
    return InvalidArgumentError(std::string(month ? "unknown month name " : "unknown day name ") +
                                Quote(token) +
                                (month ? " (expected JAN-DEC)" : " (expected SUN-SAT)"));
  }
  return InvalidArgumentError(Quote(token) + " is not a number");
}

// One list element (`*`, `a`, `a-b`, each optionally `/n`), OR-ed into `mask`.
Status ParseElement(const FieldSpec& field, std::string_view element, uint64_t& mask) {
  std::string_view range = element;
  int step = 1;
  bool has_step = false;
  if (size_t slash = element.find('/'); slash != std::string_view::npos) {
    has_step = true;
    range = element.substr(0, slash);
    std::string_view step_text = element.substr(slash + 1);
    std::optional<int64_t> v = AllDigits(step_text) ? ParseDigits(step_text) : std::nullopt;
    if (!v || *v < 1 || *v > field.max) {
      return InvalidArgumentError("bad step " + Quote(element) + " (step must be 1-" +
                                  std::to_string(field.max) + ")");
    }
    step = static_cast<int>(*v);
    if (range.empty()) {
      return InvalidArgumentError("bad step " + Quote(element) +
                                  " (nothing before the /; use */n, a/n or a-b/n)");
    }
  }

  int lo = 0;
  int hi = 0;
  if (range == "*") {
    lo = field.min;
    hi = field.star_max;
  } else if (size_t dash = range.find('-'); dash != std::string_view::npos) {
    std::string_view first = range.substr(0, dash);
    std::string_view last = range.substr(dash + 1);
    if (first.empty() || last.empty() || first == "*" || last == "*" ||
        last.find('-') != std::string_view::npos) {
      return InvalidArgumentError("bad range " + Quote(element) + " (expected a-b)");
    }
    CORTEX_ASSIGN_OR_RETURN(lo, ParseValue(field, first));
    CORTEX_ASSIGN_OR_RETURN(hi, ParseValue(field, last));
    // FRI-SUN: Sunday as the end of a day-of-week range means 7.
    if (field.kind == FieldKind::kDayOfWeek && hi == 0 && lo > 0) hi = 7;
    if (lo > hi) {
      return InvalidArgumentError("range " + Quote(range) + " runs backwards (" +
                                  std::to_string(lo) + " > " + std::to_string(hi) + ")");
    }
  } else {
    CORTEX_ASSIGN_OR_RETURN(lo, ParseValue(field, range));
    hi = has_step ? std::max(lo, field.star_max) : lo;
  }

  for (int v = lo; v <= hi; v += step) {
    int bit = (field.kind == FieldKind::kDayOfWeek && v == 7) ? 0 : v;
    mask |= uint64_t{1} << bit;
  }
  return Status::Ok();
}

Result<uint64_t> ParseField(const FieldSpec& field, std::string_view text) {
  uint64_t mask = 0;
  for (std::string_view element : Split(text, ',')) {
    if (element.empty()) {
      return InvalidArgumentError(std::string(field.name) + ": empty list element in " +
                                  Quote(text));
    }
    Status st = ParseElement(field, element, mask);
    if (!st.ok()) return st.WithPrefix(field.name);
  }
  return mask;
}

// `1h30m` -> 5400s. Components are <digits><unit>, units d h m s, largest first, each once.
Result<seconds> ParseInterval(std::string_view text) {
  constexpr std::string_view kUnits = "dhms";
  constexpr std::array<int64_t, 4> kUnitSeconds = {kSecondsPerDay, 3600, 60, 1};
  auto bad = [&](const std::string& why) {
    return InvalidArgumentError("@every: bad duration " + Quote(text) + " (" + why + ")");
  };
  int64_t total = 0;
  size_t next_unit = 0;  // index into kUnits of the smallest unit not used yet
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
    if (i == start) return bad("expected a number at " + Quote(text.substr(start)));
    std::optional<int64_t> n = ParseDigits(text.substr(start, i - start));
    if (i == text.size()) return bad("missing unit after " + std::string(text.substr(start)));
    char unit = static_cast<char>(std::tolower(static_cast<unsigned char>(text[i])));
    size_t u = kUnits.find(unit);
    if (u == std::string_view::npos) {
      return bad("unknown unit " + Quote(text.substr(i, 1)) + "; use d, h, m, s");
    }
    if (u < next_unit) return bad("units must go from largest to smallest, each at most once");
    next_unit = u + 1;
    ++i;
    // Checked before multiplying, so no overflow is possible.
    if (!n || *n > kMaxIntervalSeconds / kUnitSeconds[u]) return bad("longer than 366d");
    total += *n * kUnitSeconds[u];
    if (total > kMaxIntervalSeconds) return bad("longer than 366d");
  }
  if (total < 1) return InvalidArgumentError("@every: interval must be at least 1s");
  return seconds(total);
}

std::string FormatInterval(seconds interval) {
  int64_t s = interval.count();
  std::string out;
  if (s >= 3600) out += std::to_string(s / 3600) + "h";
  if (s % 3600 >= 60) out += std::to_string(s % 3600 / 60) + "m";
  if (s % 60 != 0) out += std::to_string(s % 60) + "s";
  return out;
}

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// The largest whole second representable as a TimePoint.
int64_t MaxSeconds() { return floor<seconds>(TimePoint::max().time_since_epoch()).count(); }

std::optional<TimePoint> FromSeconds(int64_t s) {
  if (s > MaxSeconds()) return std::nullopt;
  return TimePoint(std::chrono::duration_cast<TimePoint::duration>(seconds(s)));
}

// Lowest set bit of `mask` at or above `from`, or -1.
int NextBit(uint64_t mask, int from) {
  if (from >= 64) return -1;
  uint64_t rest = mask & (~uint64_t{0} << from);
  return rest == 0 ? -1 : std::countr_zero(rest);
}

constexpr std::array<unsigned, 13> kMaxDaysInMonth = {0,  31, 29, 31, 30, 31, 30,
                                                      31, 31, 30, 31, 30, 31};

}  // namespace

Result<CronSchedule> ParseCron(std::string_view text) {
  auto fail = [&](const Status& st) { return st.WithPrefix("cron " + Quote(text)); };
  std::vector<std::string_view> tokens = SplitWhitespace(text);
  CronSchedule schedule;

  if (!tokens.empty() && tokens[0][0] == '@') {
    std::string macro = ToLower(tokens[0]);
    if (macro == "@every") {
      if (tokens.size() != 2) {
        return fail(InvalidArgumentError(
            "@every takes one duration, e.g. \"@every 5m\" or \"@every 1h30m\""));
      }
      Result<seconds> interval = ParseInterval(tokens[1]);
      if (!interval.ok()) return fail(interval.status());
      schedule.interval_ = *interval;
      schedule.text_ = "@every " + FormatInterval(*interval);
      schedule.can_fire_ = true;
      return schedule;
    }
    for (const Macro& m : kMacros) {
      if (macro != m.name) continue;
      if (tokens.size() != 1) {
        return fail(InvalidArgumentError(macro + " takes no arguments"));
      }
      Result<CronSchedule> expanded = ParseCron(m.expansion);
      CORTEX_CHECK_MSG(expanded.ok(), expanded.status().ToString());
      expanded->text_ = macro;
      return expanded;
    }
    return fail(InvalidArgumentError(
        "unknown macro " + Quote(tokens[0]) +
        " (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or "
        "@every <duration>)"));
  }

  if (tokens.size() != kFields.size()) {
    std::string msg = "expected 5 fields, got " + std::to_string(tokens.size()) +
                      " (minute hour day-of-month month day-of-week)";
    if (tokens.size() == 6) msg += "; there is no seconds field, use @every for sub-minute";
    return fail(InvalidArgumentError(std::move(msg)));
  }

  std::array<uint64_t, 5> masks{};
  for (size_t i = 0; i < kFields.size(); ++i) {
    Result<uint64_t> mask = ParseField(kFields[i], tokens[i]);
    if (!mask.ok()) return fail(mask.status());
    masks[i] = *mask;
  }
  schedule.minutes_ = masks[0];
  schedule.hours_ = masks[1];
  schedule.days_of_month_ = masks[2];
  schedule.months_ = masks[3];
  schedule.days_of_week_ = masks[4];
  schedule.day_of_month_restricted_ = tokens[2] != "*";
  schedule.day_of_week_restricted_ = tokens[4] != "*";

  // With a restricted day-of-week, every month has a matching day (each weekday occurs in any
  // 28 days). Otherwise some chosen month must be long enough for some chosen day.
  schedule.can_fire_ = schedule.day_of_week_restricted_;
  for (unsigned m = 1; m <= 12 && !schedule.can_fire_; ++m) {
    if ((schedule.months_ >> m & 1) == 0) continue;
    int first_day = NextBit(schedule.days_of_month_, 1);
    schedule.can_fire_ = first_day != -1 && static_cast<unsigned>(first_day) <= kMaxDaysInMonth[m];
  }

  std::string normalized;
  for (std::string_view token : tokens) {
    if (!normalized.empty()) normalized += ' ';
    normalized += ToUpper(token);
  }
  schedule.text_ = std::move(normalized);
  return schedule;
}

bool CronSchedule::DayMatches(unsigned day_of_month, unsigned day_of_week) const {
  const bool dom = (days_of_month_ >> day_of_month & 1) != 0;
  const bool dow = (days_of_week_ >> day_of_week & 1) != 0;
  if (day_of_month_restricted_ && day_of_week_restricted_) return dom || dow;
  if (day_of_month_restricted_) return dom;
  if (day_of_week_restricted_) return dow;
  return true;
}

std::optional<TimePoint> CronSchedule::Next(TimePoint after) const {
  if (!can_fire_) return std::nullopt;
  return interval_.count() > 0 ? NextInterval(after) : NextCalendar(after);
}

std::optional<TimePoint> CronSchedule::NextInterval(TimePoint after) const {
  const int64_t step = interval_.count();
  const int64_t t = floor<seconds>(after.time_since_epoch()).count();
  const int64_t k = FloorDiv(t, step) + 1;
  if (k > FloorDiv(MaxSeconds(), step)) return std::nullopt;
  return FromSeconds(k * step);
}

std::optional<TimePoint> CronSchedule::NextCalendar(TimePoint after) const {
  const int64_t start = floor<minutes>(after.time_since_epoch()).count() + 1;
  int64_t day = FloorDiv(start, 24 * 60);
  const int64_t minute_of_day = start - day * 24 * 60;
  int hour = static_cast<int>(minute_of_day / 60);
  int minute = static_cast<int>(minute_of_day % 60);
  const int64_t last_day = day + int64_t{kSearchYears} * 366;

  // Each pass either returns or moves forward by at least a whole hour, and at most ~25 passes
  // happen per day searched, so the loop is bounded by kSearchYears.
  while (day <= last_day) {
    const sys_days date{days(day)};
    const std::chrono::year_month_day ymd{date};
    const unsigned month = static_cast<unsigned>(ymd.month());
    if ((months_ >> month & 1) == 0) {
      const auto next_month = (ymd.year() / ymd.month() + std::chrono::months(1)) / 1;
      day = sys_days(next_month).time_since_epoch().count();
      hour = 0;
      minute = 0;
      continue;
    }
    const unsigned weekday = std::chrono::weekday(date).c_encoding();
    if (!DayMatches(static_cast<unsigned>(ymd.day()), weekday)) {
      ++day;
      hour = 0;
      minute = 0;
      continue;
    }
    const int h = NextBit(hours_, hour);
    if (h == -1) {
      ++day;
      hour = 0;
      minute = 0;
      continue;
    }
    if (h != hour) {
      hour = h;
      minute = 0;
    }
    const int m = NextBit(minutes_, minute);
    if (m == -1) {
      minute = 0;
      if (++hour == 24) {
        ++day;
        hour = 0;
      }
      continue;
    }
    return FromSeconds(day * kSecondsPerDay + hour * 3600 + m * 60);
  }
  return std::nullopt;
}

std::vector<TimePoint> CronSchedule::DueBetween(TimePoint from_exclusive, TimePoint to_inclusive,
                                                size_t limit) const {
  std::vector<TimePoint> out;
  TimePoint cursor = from_exclusive;
  while (out.size() < limit) {
    std::optional<TimePoint> next = Next(cursor);
    if (!next || *next > to_inclusive) break;
    out.push_back(*next);
    cursor = *next;
  }
  return out;
}

}  // namespace cortex
