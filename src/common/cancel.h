// A cancellation flag, fired from any thread and polled by whoever does the work (a process
// run, a model call, an agent loop).
#pragma once

#include <atomic>

namespace cortex {

class CancelToken {
 public:
  void Cancel() { cancelled_.store(true); }
  bool cancelled() const { return cancelled_.load(); }

 private:
  std::atomic<bool> cancelled_{false};
};

}  // namespace cortex
