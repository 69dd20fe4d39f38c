// Status and Result<T>: how every fallible operation in Cortex reports failure.
// A Status carries a small code (mapped to HTTP in exactly one place, api/errors) and a message.
// Failures the world can cause are Statuses; broken invariants are CORTEX_CHECK aborts.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace cortex {

enum class StatusCode {
  kOk,
  kInvalidArgument,
  kUnauthenticated,
  kPermissionDenied,
  kNotFound,
  kAlreadyExists,
  kConflict,
  kResourceExhausted,
  kFailedPrecondition,
  kUnavailable,
  kDeadlineExceeded,
  kUnimplemented,
  kInternal,
};

// A stable, lower_snake_case name for the code ("invalid_argument"), used in API error bodies.
std::string_view StatusCodeName(StatusCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

  // "invalid_argument: message"
  std::string ToString() const;

  // Returns a copy with `prefix: ` prepended to the message.
  Status WithPrefix(std::string_view prefix) const;

  friend bool operator==(const Status&, const Status&) = default;

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

inline Status InvalidArgumentError(std::string m) {
  return {StatusCode::kInvalidArgument, std::move(m)};
}
inline Status UnauthenticatedError(std::string m) {
  return {StatusCode::kUnauthenticated, std::move(m)};
}
inline Status PermissionDeniedError(std::string m) {
  return {StatusCode::kPermissionDenied, std::move(m)};
}
inline Status NotFoundError(std::string m) { return {StatusCode::kNotFound, std::move(m)}; }
inline Status AlreadyExistsError(std::string m) {
  return {StatusCode::kAlreadyExists, std::move(m)};
}
inline Status ConflictError(std::string m) { return {StatusCode::kConflict, std::move(m)}; }
inline Status FailedPreconditionError(std::string m) {
  return {StatusCode::kFailedPrecondition, std::move(m)};
}
inline Status ResourceExhaustedError(std::string m) {
  return {StatusCode::kResourceExhausted, std::move(m)};
}
inline Status UnavailableError(std::string m) { return {StatusCode::kUnavailable, std::move(m)}; }
inline Status UnimplementedError(std::string m) {
  return {StatusCode::kUnimplemented, std::move(m)};
}
inline Status InternalError(std::string m) { return {StatusCode::kInternal, std::move(m)}; }
inline Status DeadlineExceededError(std::string m) {
  return {StatusCode::kDeadlineExceeded, std::move(m)};
}

// Aborts with a message. For broken invariants only, never for bad input.
[[noreturn]] void CheckFailed(const char* file, int line, const char* expr, std::string_view msg);

#define CORTEX_CHECK(cond)                                             \
  do {                                                                 \
    if (!(cond)) ::cortex::CheckFailed(__FILE__, __LINE__, #cond, ""); \
  } while (0)

#define CORTEX_CHECK_MSG(cond, msg)                                       \
  do {                                                                    \
    if (!(cond)) ::cortex::CheckFailed(__FILE__, __LINE__, #cond, (msg)); \
  } while (0)

// A value or the Status explaining why there is none.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT(google-explicit-constructor)
  Result(Status status) : v_(std::move(status)) {  // NOLINT(google-explicit-constructor)
    CORTEX_CHECK_MSG(!std::get<Status>(v_).ok(), "Result constructed from an OK status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }

  T& value() & {
    CORTEX_CHECK_MSG(ok(), status().ToString());
    return std::get<T>(v_);
  }
  const T& value() const& {
    CORTEX_CHECK_MSG(ok(), status().ToString());
    return std::get<T>(v_);
  }
  T&& value() && {
    CORTEX_CHECK_MSG(ok(), status().ToString());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

#define CORTEX_CONCAT_INNER(a, b) a##b
#define CORTEX_CONCAT(a, b) CORTEX_CONCAT_INNER(a, b)

// Returns from the enclosing function when `expr` (a Status) is not OK.
#define CORTEX_RETURN_IF_ERROR(expr) \
  do {                               \
    ::cortex::Status _st = (expr);   \
    if (!_st.ok()) return _st;       \
  } while (0)

// `CORTEX_ASSIGN_OR_RETURN(auto x, MakeX());`
#define CORTEX_ASSIGN_OR_RETURN(lhs, expr) \
  CORTEX_ASSIGN_OR_RETURN_IMPL(CORTEX_CONCAT(_res_, __LINE__), lhs, expr)
#define CORTEX_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                 \
  if (!tmp.ok()) return tmp.status();                \
  lhs = std::move(tmp).value()

}  // namespace cortex
