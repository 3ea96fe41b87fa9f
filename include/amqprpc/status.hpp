// Errors as values: a Status carries a code a caller can branch on and a message for people.
#pragma once

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace amqprpc {

// The codes follow gRPC's canonical set where they mean the same thing, so that users of other
// RPC frameworks know what to expect. The wire names are the snake_case spellings below.
enum class StatusCode {
  ok,
  cancelled,            // the caller gave up (cancel, shutdown of the client)
  invalid_argument,     // the request itself is wrong (bad body, bad option, bad URI)
  deadline_exceeded,    // no reply before the call's deadline
  not_found,            // something named does not exist
  permission_denied,    // the broker refused access (user, vhost, queue)
  resource_exhausted,   // too large, too many, broker alarm
  failed_precondition,  // the broker refused a declaration that disagrees with the existing one
  unavailable,          // cannot reach a broker or a server (connection lost, no route)
  internal,             // a bug or an unexpected failure, e.g. a handler threw
  unknown,              // an error reply whose code this version does not know
  unimplemented,        // the server's service has no such method
  unauthenticated,      // the caller's credentials are missing or wrong (an interceptor says so)
};

// The wire name of a code ("invalid_argument"); "unknown" for out-of-range values.
std::string_view to_string(StatusCode code) noexcept;
// Parses a wire name; nullopt when the name is not one of ours.
std::optional<StatusCode> status_code_from_string(std::string_view name) noexcept;

// A machine-readable detail an error may carry besides its message, like gRPC's rich status:
// a typed payload (amqprpc/service.hpp packs and unpacks JSON and protobuf ones).
struct StatusDetail {
  std::string type;          // what it is: a protobuf message's full name, or the sender's name
  std::string content_type;  // how it is encoded: application/protobuf, application/json, ...
  std::string data;          // the encoded bytes

  friend bool operator==(const StatusDetail&, const StatusDetail&) = default;
};

class Status {
 public:
  Status() = default;  // ok
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}
  Status(StatusCode code, std::string message, StatusDetail detail)
      : code_(code),
        message_(std::move(message)),
        detail_(std::make_shared<const StatusDetail>(std::move(detail))) {}

  bool ok() const noexcept { return code_ == StatusCode::ok; }
  StatusCode code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // The error's detail; null when it carries none.
  const StatusDetail* detail() const noexcept { return detail_.get(); }
  // "deadline_exceeded: no reply within 100 ms" or "ok".
  std::string to_string() const;

  friend bool operator==(const Status& a, const Status& b) {
    if (a.code_ != b.code_ || a.message_ != b.message_) return false;
    if (!a.detail_ || !b.detail_) return !a.detail_ && !b.detail_;
    return *a.detail_ == *b.detail_;
  }

 private:
  StatusCode code_ = StatusCode::ok;
  std::string message_;
  std::shared_ptr<const StatusDetail> detail_;  // shared: a Status is copied often, detail rarely
};

// What the blocking API throws: carries the Status so a caller can still branch on the code.
class RpcError : public std::runtime_error {
 public:
  explicit RpcError(Status status)
      : std::runtime_error(status.to_string()), status_(std::move(status)) {}
  const Status& status() const noexcept { return status_; }
  StatusCode code() const noexcept { return status_.code(); }

 private:
  Status status_;
};

// A value or the Status saying why there is none.
template <class T>
class Result {
 public:
  Result(T value) : v_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}  // NOLINT: implicit by design

  bool ok() const noexcept { return std::holds_alternative<T>(v_); }
  explicit operator bool() const noexcept { return ok(); }

  // The status: ok when there is a value.
  Status status() const { return ok() ? Status{} : std::get<Status>(v_); }

  T& value() & {
    throw_if_error();
    return std::get<T>(v_);
  }
  const T& value() const& {
    throw_if_error();
    return std::get<T>(v_);
  }
  T&& value() && {
    throw_if_error();
    return std::get<T>(std::move(v_));
  }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

 private:
  void throw_if_error() const {
    if (!ok()) throw RpcError(std::get<Status>(v_));
  }
  std::variant<T, Status> v_;
};

}  // namespace amqprpc
