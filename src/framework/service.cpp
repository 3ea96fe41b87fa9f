#include "amqprpc/service.hpp"

namespace amqprpc {

Service::Service(std::string queue, std::string name)
    : queue_(std::move(queue)), name_(name.empty() ? queue_ : std::move(name)) {}

Service& Service::default_handler(Handler handler) {
  default_ = Method{std::move(handler), {}, {}, {}};
  return *this;
}

Service& Service::async_default_handler(AsyncHandler handler) {
  default_ = Method{{}, std::move(handler), {}, {}};
  return *this;
}

Service& Service::method(std::string name, Handler handler, MethodInfo info) {
  return add(std::move(name), Method{std::move(handler), {}, std::move(info), {}});
}

Service& Service::async_method(std::string name, AsyncHandler handler, MethodInfo info) {
  return add(std::move(name), Method{{}, std::move(handler), std::move(info), {}});
}

Service& Service::stream_method(std::string name, StreamHandler handler, MethodInfo info) {
  Method m{{}, {}, std::move(info), std::move(handler)};
  return add(std::move(name), std::move(m));
}

bool Service::streams() const {
  for (const auto& [name, m] : methods_) {
    if (m.stream_handler) return true;
  }
  return false;
}

Service& Service::add(std::string name, Method method) {
  // A bad registration is remembered (the first one) and reported by check() at start.
  std::string why;
  if (name.empty() || name.size() > 255) {
    why = "a method name must be 1 to 255 bytes, got " + std::to_string(name.size());
  } else if (name.starts_with(kReservedMethodPrefix)) {
    why = "method '" + name + "': names starting with '" + std::string(kReservedMethodPrefix) +
          "' are reserved for the framework";
  } else if (!method) {
    why = "method '" + name + "' has no handler";
  } else if (methods_.count(name) != 0) {
    why = "method '" + name + "' is registered twice";
  }
  if (!why.empty()) {
    if (error_.empty()) error_ = std::move(why);
    return *this;
  }
  methods_.emplace(std::move(name), std::move(method));
  return *this;
}

Service& Service::allow(std::string method, std::vector<std::string> callers) {
  allowed_[std::move(method)] = std::move(callers);
  return *this;
}

Status Service::authorize(std::string_view method, std::string_view caller) const {
  auto list = allowed_.find(method);
  if (list == allowed_.end()) return {};
  for (const auto& allowed : list->second) {
    if (!caller.empty() && allowed == caller) return {};
  }
  const std::string what =
      method.empty() ? "the default handler" : "method '" + std::string(method) + "'";
  return {StatusCode::permission_denied,
          what + " of '" + name_ + "' is not allowed for " +
              (caller.empty() ? std::string("a caller without a verified identity (no user_id)")
                              : "user '" + std::string(caller) + "'")};
}

Service& Service::add_proto_files(const ProtoFiles& files) {
  for (const auto& [name, proto] : files) proto_files_.emplace(name, proto);
  return *this;
}

const Service::Method* Service::find(std::string_view method) const {
  auto it = methods_.find(method);
  return it == methods_.end() ? nullptr : &it->second;
}

Status Service::check() const {
  if (queue_.empty() || queue_.size() > 255) {
    return {StatusCode::invalid_argument, "queue name must be 1 to 255 bytes"};
  }
  if (!error_.empty()) {
    return {StatusCode::invalid_argument, "service on '" + queue_ + "': " + error_};
  }
  for (const auto& [method, callers] : allowed_) {
    if (method.empty() && !default_) {
      return {StatusCode::invalid_argument, "service on '" + queue_ +
                                                "': allow() names the default handler (\"\"), "
                                                "which it does not have"};
    }
    if (!method.empty() && methods_.count(method) == 0) {
      return {StatusCode::invalid_argument, "service on '" + queue_ + "': allow() names method '" +
                                                method + "', which it does not have"};
    }
  }
  if (!default_ && methods_.empty()) {
    return {StatusCode::invalid_argument,
            "service on '" + queue_ + "' has neither a default handler nor methods"};
  }
  return {};
}

}  // namespace amqprpc
