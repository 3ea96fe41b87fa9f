// Services: one request queue, many named methods, raw or typed, and typed calls to them.
//
//   amqprpc::Service calc("calc.Calculator");
//   calc.method<DivideRequest, DivideReply>("Divide", [](const DivideRequest& r)
//       -> amqprpc::Result<DivideReply> { ... });
//   auto server = amqprpc::Server::start(options, std::move(calc));
//
//   auto reply = amqprpc::typed_call<DivideReply>(client, "calc.Calculator", "Divide", request);
//
// The method travels in the request header x-rpc-method; a request without one goes to the
// service's default handler (tutorial-6 clients), a method the service lacks is answered
// `unimplemented`. Every server also answers the reserved methods amqprpc.describe and
// amqprpc.health itself (docs/PROTOCOL.md).
#pragma once

#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/codec.hpp"
#include "amqprpc/message.hpp"
#include "amqprpc/status.hpp"

namespace amqprpc {

// Turns a request into a reply. Runs on one of the server's worker threads. An exception it
// throws becomes an error reply: RpcError's status, anything else internal with its message.
using Handler = std::function<Reply(const Request&)>;

namespace detail {
class ServerCall;
class ServerStream;
}  // namespace detail

// How an asynchronous handler answers, later and from any thread. Copies share one request:
// the first reply wins (later ones return false and are dropped). The request stays valid while
// any copy lives. When the last copy goes without a reply, the request is answered internal
// ("dropped its responder"), so no request is left unanswered; an exception the handler throws
// before answering becomes the reply, as for a synchronous handler. As today, the request is
// acked only after its reply is sent, and ServerOptions::prefetch bounds the requests in hand,
// answered or not. An unanswered Responder keeps its server's internals alive (not the
// connection): answer or drop the ones a handler keeps before the server goes.
class Responder {
 public:
  explicit Responder(std::shared_ptr<detail::ServerCall> call);  // the server's
  // Answers the request: sends `reply` (nothing for a one-way call), then acks. False when it
  // was answered already.
  bool reply(Reply reply);
  bool fail(Status status) { return this->reply(Reply{std::move(status), {}, {}, {}}); }
  bool answered() const;
  const Request& request() const;
  const Context& context() const { return request().context; }

 private:
  std::shared_ptr<detail::ServerCall> call_;
};

// A handler that answers through its Responder, now or later, from any thread: it holds no
// worker thread while it waits (for a nested call, a timer, another queue). It runs on a
// worker (or the I/O thread with workers = 0) and must return quickly.
using AsyncHandler = std::function<void(const Request&, Responder)>;

// What a streaming method writes its items with (Service::stream_method): gRPC's server
// streaming. Runs on the method's worker thread.
class StreamWriter {
 public:
  explicit StreamWriter(std::shared_ptr<detail::ServerStream> stream);  // the server's
  // Sends one item (`item`'s body, content type and headers; its status is not sent), after
  // the ones before it. Waits while the client has not made room for it: the client grants
  // credit as its reader takes items, so a slow reader slows this writer instead of filling
  // anybody's memory. False once the stream cannot go on (the caller cancelled it or went
  // away, its deadline passed, the server is stopping, the connection dropped): stop
  // producing and return; the status returned then is not sent.
  // One writer at a time: items are numbered in the order write() is entered.
  bool write(Reply item);
  bool write(std::string body) { return write(Reply::ok(std::move(body))); }
  // Items written so far.
  std::uint64_t written() const;

 private:
  std::shared_ptr<detail::ServerStream> stream_;
};

// A streaming method: writes items with the writer, then returns the stream's final status
// (ok, or the error the client sees after the items). Needs worker threads
// (ServerOptions::workers >= 1): a writer waits for the client's credit.
using StreamHandler = std::function<Status(const Request&, StreamWriter&)>;

// The reserved methods every server answers without user code.
inline constexpr std::string_view kDescribeMethod = "amqprpc.describe";
inline constexpr std::string_view kHealthMethod = "amqprpc.health";
// Method names starting with this are the framework's.
inline constexpr std::string_view kReservedMethodPrefix = "amqprpc.";

// What describe says of a method's messages.
struct MethodInfo {
  std::string encoding = "bytes";  // "bytes", "json" or "protobuf"
  std::string request_type;        // e.g. "calc.DivideRequest"; "bytes" or "json" when untyped
  std::string reply_type;
};

class Service {
 public:
  // The service on `queue`; describe names it `name` (a .proto service's full name), or the
  // queue's name when empty.
  explicit Service(std::string queue, std::string name = {});

  // Requests without a method (tutorial-6 clients). Without one, they get unimplemented.
  Service& default_handler(Handler handler);
  Service& async_default_handler(AsyncHandler handler);

  // A raw method: bytes in, Reply out.
  Service& method(std::string name, Handler handler, MethodInfo info = {});
  // An asynchronous raw method (amqprpc/asio.hpp adds coroutine methods on top of it).
  Service& async_method(std::string name, AsyncHandler handler, MethodInfo info = {});
  // A streaming method: many items, then a status (Client::stream reads them). A plain call to
  // it is answered failed_precondition.
  Service& stream_method(std::string name, StreamHandler handler, MethodInfo info = {});

  // A typed method: the request is decoded as Req (a request that does not decode is answered
  // invalid_argument naming the method and what failed, without calling the handler); the
  // handler's Resp is encoded back in the encoding the request came in when the codec can (a
  // JSON request to a protobuf method gets JSON). The handler takes (const Req&) or
  // (const Req&, const Request&) and returns Resp or Result<Resp>.
  template <Codable Req, Codable Resp, class F>
  Service& method(std::string name, F handler);

  // Only these verified callers (Request::caller: the broker-validated AMQP user_id) may call
  // `method`, a method of this service ("" names the default handler); others, and callers of
  // unknown identity, are answered permission_denied without reaching the handler.
  Service& allow(std::string method, std::vector<std::string> callers);

  // Adds .proto files for describe (typed protobuf methods add theirs themselves).
  Service& add_proto_files(const ProtoFiles& files);

  const std::string& queue() const { return queue_; }
  const std::string& name() const { return name_; }

  // ---- what the server reads ----
  struct Method {
    Handler handler;  // one of these three is set
    AsyncHandler async_handler;
    MethodInfo info;
    StreamHandler stream_handler;
    explicit operator bool() const { return handler || async_handler || stream_handler; }
  };
  const Method* find(std::string_view method) const;
  const Method& default_method() const { return default_; }
  const std::map<std::string, Method, std::less<>>& methods() const { return methods_; }
  const ProtoFiles& proto_files() const { return proto_files_; }
  // Whether a method streams its reply.
  bool streams() const;
  // Why this service cannot be served (a bad or repeated method name); ok when it can.
  Status check() const;
  // Whether `caller` may call `method` (see allow): ok, or permission_denied saying why.
  Status authorize(std::string_view method, std::string_view caller) const;

 private:
  Service& add(std::string name, Method method);

  std::string queue_;
  std::string name_;
  Method default_;
  std::map<std::string, Method, std::less<>> methods_;
  ProtoFiles proto_files_;
  std::map<std::string, std::vector<std::string>, std::less<>> allowed_;  // method -> callers
  std::string error_;  // the first registration error, reported by check()
};

// An error carrying a typed detail (gRPC's rich status): the detail travels encoded by its codec.
template <Codable T>
Status error_with_detail(StatusCode code, std::string message, const T& detail) {
  Encoded e = Codec<T>::encode(detail, {});
  return Status{code, std::move(message),
                StatusDetail{e.type.empty() ? Codec<T>::type_name() : e.type,
                             std::move(e.content_type), std::move(e.body)}};
}

// The detail of `status` as a T; nullopt when it has none, or one of another type.
template <Codable T>
std::optional<T> detail_as(const Status& status) {
  const StatusDetail* d = status.detail();
  if (d == nullptr || d->type != Codec<T>::type_name()) return std::nullopt;
  T out{};
  if (!Codec<T>::decode(d->content_type, d->data, out).ok()) return std::nullopt;
  return out;
}

namespace detail {

inline std::string type_mismatch(std::string_view what, std::string_view expected,
                                 std::string_view got) {
  return std::string(what) + " is a " + std::string(got) + ", expected a " + std::string(expected);
}

// Decodes a typed request for method `name`; the reason it cannot, as invalid_argument.
template <Codable Req>
Status decode_request_as(const std::string& name, const Request& r, Req& out) {
  const std::string expected = Codec<Req>::type_name();
  if (auto t = r.headers.find(kTypeHeader);
      t != r.headers.end() && Codec<Req>::encoding == "protobuf" && t->second != expected) {
    return {StatusCode::invalid_argument,
            "method '" + name + "': " + type_mismatch("the request", expected, t->second)};
  }
  if (Status st = Codec<Req>::decode(r.content_type, r.body, out); !st.ok()) {
    return {StatusCode::invalid_argument, "method '" + name + "': the request does not decode as " +
                                              expected + ": " + st.message()};
  }
  return {};
}

template <class Resp>
Reply encode_typed_reply(const Resp& value, std::string_view peer_content_type) {
  Encoded e = Codec<Resp>::encode(value, peer_content_type);
  Reply reply = Reply::ok(std::move(e.body));
  reply.content_type = std::move(e.content_type);
  if (!e.type.empty()) reply.headers.emplace(std::string(kTypeHeader), std::move(e.type));
  return reply;
}

// A typed reply to a call of `method`: its error, or the decoded value; a reply that does not
// decode fails the call with internal.
template <Codable Resp>
Result<Resp> decode_typed_reply(Reply&& reply, const std::string& method) {
  if (!reply.status.ok()) return std::move(reply.status);
  const std::string expected = Codec<Resp>::type_name();
  if (auto t = reply.headers.find(kTypeHeader);
      t != reply.headers.end() && Codec<Resp>::encoding == "protobuf" && t->second != expected) {
    return Status{StatusCode::internal,
                  "method '" + method + "': " + type_mismatch("the reply", expected, t->second)};
  }
  Resp out{};
  if (Status st = Codec<Resp>::decode(reply.content_type, reply.body, out); !st.ok()) {
    return Status{StatusCode::internal, "method '" + method + "': the reply does not decode as " +
                                            expected + ": " + st.message()};
  }
  return out;
}

template <Codable Req>
std::string encode_typed_request(const std::string& method, const Req& req, CallOptions& options) {
  Encoded e = Codec<Req>::encode(req, {});
  options.method = method;
  if (!e.content_type.empty()) options.content_type = std::move(e.content_type);
  if (!e.type.empty()) options.headers.insert_or_assign(std::string(kTypeHeader), e.type);
  return std::move(e.body);
}

}  // namespace detail

template <Codable Req, Codable Resp, class F>
Service& Service::method(std::string name, F handler) {
  static_assert(
      std::is_invocable_v<F&, const Req&, const Request&> || std::is_invocable_v<F&, const Req&>,
      "a typed handler takes (const Req&) or (const Req&, const Request&)");
  MethodInfo info{
      std::string(Codec<Req>::encoding == Codec<Resp>::encoding ? Codec<Req>::encoding : "mixed"),
      Codec<Req>::type_name(), Codec<Resp>::type_name()};
  detail::add_proto_files<Req>(proto_files_);
  detail::add_proto_files<Resp>(proto_files_);
  Handler raw = [name, f = std::move(handler)](const Request& r) mutable -> Reply {
    Req req{};
    if (Status bad = detail::decode_request_as(name, r, req); !bad.ok()) {
      return Reply{std::move(bad), {}, {}, {}};
    }
    auto invoke = [&]() -> decltype(auto) {
      if constexpr (std::is_invocable_v<F&, const Req&, const Request&>) {
        return f(static_cast<const Req&>(req), r);
      } else {
        return f(static_cast<const Req&>(req));
      }
    };
    using Out = std::decay_t<decltype(invoke())>;
    if constexpr (std::is_same_v<Out, Result<Resp>>) {
      Result<Resp> result = invoke();
      if (!result.ok()) return Reply{result.status(), {}, {}, {}};
      return detail::encode_typed_reply(*result, r.content_type);
    } else {
      static_assert(std::is_convertible_v<Out, Resp>,
                    "a typed handler returns Resp or amqprpc::Result<Resp>");
      return detail::encode_typed_reply(static_cast<const Resp&>(invoke()), r.content_type);
    }
  };
  return method(std::move(name), std::move(raw), std::move(info));
}

// ---- typed calls ----

// Calls `method` of the service on `queue` with a typed request. The reply's error, or its
// value; a reply that does not decode as Resp fails with internal. Blocking.
template <Codable Resp, Codable Req>
Result<Resp> typed_call(Client& client, const std::string& queue, const std::string& method,
                        const Req& request, CallOptions options = {}) {
  std::string body = detail::encode_typed_request(method, request, options);
  return detail::decode_typed_reply<Resp>(client.try_call(queue, std::move(body), options), method);
}

// The same with a callback, run as Client::async_call runs its callbacks.
template <Codable Resp, Codable Req>
void typed_async_call(Client& client, const std::string& queue, const std::string& method,
                      const Req& request, CallOptions options,
                      std::function<void(Result<Resp>)> on_done) {
  std::string body = detail::encode_typed_request(method, request, options);
  client.async_call(queue, std::move(body), options,
                    [method, done = std::move(on_done)](Reply reply) {
                      done(detail::decode_typed_reply<Resp>(std::move(reply), method));
                    });
}

// The same as a future.
template <Codable Resp, Codable Req>
std::future<Result<Resp>> typed_async_call(Client& client, const std::string& queue,
                                           const std::string& method, const Req& request,
                                           CallOptions options = {}) {
  auto promise = std::make_shared<std::promise<Result<Resp>>>();
  auto future = promise->get_future();
  typed_async_call<Resp>(client, queue, method, request, std::move(options),
                         std::function<void(Result<Resp>)>(
                             [promise](Result<Resp> r) { promise->set_value(std::move(r)); }));
  return future;
}

// A one-way typed call: see Client::notify.
template <Codable Req>
Status typed_notify(Client& client, const std::string& queue, const std::string& method,
                    const Req& request, CallOptions options = {}) {
  std::string body = detail::encode_typed_request(method, request, options);
  return client.notify(queue, method, std::move(body), options);
}

}  // namespace amqprpc
