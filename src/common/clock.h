// Time as a seam. Code that decides by time (a supervisor's backoff, a schedule, a deadline)
// takes a Clock; production passes SystemClock(), a test passes a FakeClock and says when time
// passes, so a test of "no restart before the backoff ends" needs no sleep at all.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>

#include "common/mutex.h"

namespace cortex {

class Clock {
 public:
  using Steady = std::chrono::steady_clock;
  virtual ~Clock() = default;
  // Monotonic time: for intervals, deadlines and backoff.
  virtual Steady::time_point Now() const = 0;
  // Wall time, Unix milliseconds: for what is recorded and shown.
  virtual int64_t UnixMs() const = 0;
  // cv.wait_until(lock, until, pred) in this clock's time: returns once pred() holds or Now()
  // has reached `until`. `lock` is held on entry and on return.
  virtual void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                         Steady::time_point until, const std::function<bool()>& pred) const = 0;
};

// The system's clocks: steady_clock and system_clock. Stateless; one for the whole process.
const Clock& SystemClock();

// SystemClock().UnixMs(): the one "now" of records, logs and runs.
int64_t UnixNowMs();

// A clock that moves only when told (Advance). Waiters see the new time within about a
// millisecond of real time: a wait polls, so an Advance needs no access to the waiter's lock.
// WaitForIdle lets a test know the code under test has seen the time it set and is waiting
// again, so "nothing happens before the deadline" is checked without sleeping.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t unix_ms = 1'700'000'000'000);
  Steady::time_point Now() const override;
  int64_t UnixMs() const override;
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 Steady::time_point until, const std::function<bool()>& pred) const override;
  void Advance(std::chrono::milliseconds by);
  // Blocks, in real time up to `limit`, until `waiters` threads are in WaitUntil having
  // checked their condition at the current time. False when the limit passed first.
  bool WaitForIdle(size_t waiters,
                   std::chrono::milliseconds limit = std::chrono::seconds(10)) const;

 private:
  mutable Mutex mu_;
  Steady::time_point now_ CORTEX_GUARDED_BY(mu_);
  int64_t unix_ms_ CORTEX_GUARDED_BY(mu_);
  uint64_t epoch_ CORTEX_GUARDED_BY(mu_) = 0;  // bumped by every Advance
  // Threads in WaitUntil -> the epoch at which they last found nothing to do.
  mutable std::map<std::thread::id, uint64_t> idle_ CORTEX_GUARDED_BY(mu_);
};

}  // namespace cortex
