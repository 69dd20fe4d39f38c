// A mutex that Clang's thread-safety analysis understands (-Wthread-safety), and the scoped lock
// that goes with it. libstdc++'s std::mutex carries no annotations, so a member marked
// CORTEX_GUARDED_BY(mu_) is only checked when mu_ is a cortex::Mutex locked by a MutexLock.
// With GCC the annotations are empty and these are std::mutex and std::unique_lock.
//
//   Mutex mu_;
//   int count_ CORTEX_GUARDED_BY(mu_);
//   void Add() { MutexLock lock(mu_); ++count_; }
//   void Helper() CORTEX_REQUIRES(mu_);        // called with mu_ held
//   cv_.wait(lock.native(), [&]() CORTEX_REQUIRES(mu_) { return count_ > 0; });
#pragma once

#include <mutex>

#if defined(__clang__)
#define CORTEX_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define CORTEX_THREAD_ANNOTATION(x)
#endif

#define CORTEX_CAPABILITY(x) CORTEX_THREAD_ANNOTATION(capability(x))
#define CORTEX_SCOPED_CAPABILITY CORTEX_THREAD_ANNOTATION(scoped_lockable)
#define CORTEX_GUARDED_BY(x) CORTEX_THREAD_ANNOTATION(guarded_by(x))
#define CORTEX_PT_GUARDED_BY(x) CORTEX_THREAD_ANNOTATION(pt_guarded_by(x))
#define CORTEX_ACQUIRED_BEFORE(...) CORTEX_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#define CORTEX_ACQUIRED_AFTER(...) CORTEX_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#define CORTEX_REQUIRES(...) CORTEX_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define CORTEX_EXCLUDES(...) CORTEX_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define CORTEX_ACQUIRE(...) CORTEX_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define CORTEX_RELEASE(...) CORTEX_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define CORTEX_RETURN_CAPABILITY(x) CORTEX_THREAD_ANNOTATION(lock_returned(x))
#define CORTEX_NO_THREAD_SAFETY_ANALYSIS CORTEX_THREAD_ANNOTATION(no_thread_safety_analysis)

namespace cortex {

class CORTEX_CAPABILITY("mutex") Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() CORTEX_ACQUIRE() { mu_.lock(); }
  void Unlock() CORTEX_RELEASE() { mu_.unlock(); }
  // For a condition variable's wait (through MutexLock::native()).
  std::mutex& native() CORTEX_RETURN_CAPABILITY(this) { return mu_; }

 private:
  std::mutex mu_;
};

// Holds a Mutex for its scope. Unlock()/Lock() let go of it for a while inside the scope.
class CORTEX_SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) CORTEX_ACQUIRE(mu) : lock_(mu.native()) {}
  ~MutexLock() CORTEX_RELEASE() {}
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  void Unlock() CORTEX_RELEASE() { lock_.unlock(); }
  void Lock() CORTEX_ACQUIRE() { lock_.lock(); }
  // What std::condition_variable waits on; the wait gives the mutex back before it returns.
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace cortex
