#include "common/clock.h"

namespace cortex {
namespace {

class SystemClockImpl final : public Clock {
 public:
  Steady::time_point Now() const override { return Steady::now(); }
  int64_t UnixMs() const override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  void WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                 Steady::time_point until, const std::function<bool()>& pred) const override {
    cv.wait_until(lock, until, pred);
  }
};

}  // namespace

const Clock& SystemClock() {
  static const SystemClockImpl clock;  // stateless
  return clock;
}

int64_t UnixNowMs() { return SystemClock().UnixMs(); }

FakeClock::FakeClock(int64_t unix_ms)
    : now_(Steady::time_point{} + std::chrono::hours(1)), unix_ms_(unix_ms) {}

Clock::Steady::time_point FakeClock::Now() const {
  MutexLock lock(mu_);
  return now_;
}

int64_t FakeClock::UnixMs() const {
  MutexLock lock(mu_);
  return unix_ms_;
}

void FakeClock::WaitUntil(std::unique_lock<std::mutex>& lock, std::condition_variable& cv,
                          Steady::time_point until, const std::function<bool()>& pred) const {
  const auto self = std::this_thread::get_id();
  for (;;) {
    Steady::time_point now;
    uint64_t epoch;
    {
      MutexLock g(mu_);
      now = now_;
      epoch = epoch_;
    }
    if (pred() || now >= until) break;
    {
      MutexLock g(mu_);
      idle_[self] = epoch;
    }
    cv.wait_for(lock, std::chrono::milliseconds(1));
  }
  MutexLock g(mu_);
  idle_.erase(self);
}

void FakeClock::Advance(std::chrono::milliseconds by) {
  MutexLock lock(mu_);
  now_ += by;
  unix_ms_ += by.count();
  ++epoch_;
}

bool FakeClock::WaitForIdle(size_t waiters, std::chrono::milliseconds limit) const {
  const auto give_up = Steady::now() + limit;
  for (;;) {
    {
      MutexLock g(mu_);
      size_t idle = 0;
      for (const auto& [thread, epoch] : idle_) idle += epoch == epoch_ ? 1 : 0;
      if (idle >= waiters) return true;
    }
    if (Steady::now() >= give_up) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

}  // namespace cortex
