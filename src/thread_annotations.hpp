// Clang's thread-safety analysis (-Wthread-safety, on in clang builds): which mutex guards a
// field, and which fields belong to one thread (a "role" that thread alone holds). No-ops for
// other compilers. See https://clang.llvm.org/docs/ThreadSafetyAnalysis.html; leveldb's
// port/thread_annotations.h is the model.
#pragma once

#include <mutex>

#if defined(__clang__)
#define AMQPRPC_TSA(x) __attribute__((x))
#else
#define AMQPRPC_TSA(x)
#endif

#define CAPABILITY(x) AMQPRPC_TSA(capability(x))
#define SCOPED_CAPABILITY AMQPRPC_TSA(scoped_lockable)
#define GUARDED_BY(x) AMQPRPC_TSA(guarded_by(x))
#define REQUIRES(...) AMQPRPC_TSA(requires_capability(__VA_ARGS__))
#define ACQUIRE(...) AMQPRPC_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) AMQPRPC_TSA(release_capability(__VA_ARGS__))
#define ASSERT_CAPABILITY(x) AMQPRPC_TSA(assert_capability(x))
#define EXCLUDES(...) AMQPRPC_TSA(locks_excluded(__VA_ARGS__))
#define TRY_ACQUIRE(...) AMQPRPC_TSA(try_acquire_capability(__VA_ARGS__))

namespace amqprpc::detail {

// std::mutex, known to the analysis.
class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { m_.lock(); }
  void unlock() RELEASE() { m_.unlock(); }
  bool try_lock() TRY_ACQUIRE(true) { return m_.try_lock(); }

 private:
  std::mutex m_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& m) ACQUIRE(m) : m_(m) { m_.lock(); }
  ~MutexLock() RELEASE() { m_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& m_;
};

// A thread's role, e.g. "the I/O thread": fields GUARDED_BY a role are touched by that thread
// alone. Code entered on that thread says so with assert_held(); helpers it calls REQUIRE it.
class CAPABILITY("role") ThreadRole {
 public:
  void assert_held() const ASSERT_CAPABILITY(this) {}
};

}  // namespace amqprpc::detail
