// Calls as Asio asynchronous operations: any completion token works (asio::use_awaitable in a
// coroutine, asio::use_future, asio::experimental::deferred, a plain callback), the completion
// runs on the token's associated executor (a coroutine resumes on its own executor, never on
// the client's I/O thread; a callback without one runs on asio::system_executor), and Asio's
// per-operation cancellation cancels the call (it completes with status cancelled).
//
//   asio::awaitable<void> fib(amqprpc::Client& client) {
//     amqprpc::Reply r = co_await amqprpc::async_call(client, "rpc_queue", "30", {},
//                                                     asio::use_awaitable);
//   }
//
// Header-only, on standalone Asio (Debian's libasio-dev: no Boost needed); include it to use it.
//
// Handlers as coroutines: coroutine_method registers a method whose handler is an Asio
// coroutine, spawned on an executor you give; while it awaits (a nested call, a timer) it holds
// no worker thread of the server, so one worker serves as many waiting requests as
// ServerOptions::prefetch lets in. The caller's deadline passing cancels the coroutine (Asio's
// terminal cancellation: the operation it awaits, a nested call included, ends with
// operation_aborted or status cancelled).
//
//   asio::io_context io;  // run by one thread; for a thread pool, give a strand
//   amqprpc::coroutine_method(service, "Total", io.get_executor(),
//       [&client](const amqprpc::Request& request) -> asio::awaitable<amqprpc::Reply> {
//         // ends when the caller's deadline does, and is a child span of this call
//         const amqprpc::CallOptions options = request.context.call_options();
//         const std::string queue = "prices";
//         amqprpc::Reply prices = co_await amqprpc::async_call(*client, queue, request.body,
//                                                              options, asio::use_awaitable);
//         co_return prices;
//       });
//
// GCC 12 (Debian 12's) miscompiles temporaries inside co_await expressions: a `{}` CallOptions
// or a string literal argument there corrupts the coroutine frame ("free(): invalid pointer",
// GCC bug 100611 and kin). In coroutines, pass named variables:
//   const amqprpc::CallOptions options;  // not `{}`
//   co_await amqprpc::async_call(client, queue, body, options, asio::use_awaitable);
#pragma once

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_signal.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/co_spawn.hpp>
#include <asio/error.hpp>
#include <asio/execution/executor.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/is_executor.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include "amqprpc/client.hpp"
#include "amqprpc/service.hpp"

namespace amqprpc {

namespace detail {

// One call's (or gather's) completion: the handler, the work that keeps its executor running,
// and the stop source Asio's cancellation (and the caller's own CallOptions::cancel) ask.
template <class Handler, class Outcome = Reply>
struct AsioCall {
  using Executor = asio::associated_executor_t<Handler, asio::system_executor>;

  explicit AsioCall(Handler&& h)
      : handler(std::move(h)),
        work(asio::make_work_guard(
            asio::get_associated_executor(handler, asio::system_executor()))) {}

  // On the client's I/O thread (or the calling thread, for a call refused at once): hands the
  // reply to the handler's executor, never running the handler here. The cancellation slot is
  // cleared there too: a slot belongs to its handler's executor, where its signal is emitted
  // (clearing it here would free the installed canceller while an emit may be running it). Until
  // then an emit only asks `stop` to stop a call that is done, which is harmless.
  void complete(Outcome outcome) {
    auto executor = work.get_executor();
    asio::post(executor,
               [h = std::move(handler), r = std::move(outcome), w = std::move(work)]() mutable {
                 auto slot = asio::get_associated_cancellation_slot(h);
                 if (slot.is_connected()) slot.clear();
                 std::move(h)(std::move(r));
               });
  }

  Handler handler;
  asio::executor_work_guard<Executor> work;
  std::stop_source stop;
  std::optional<std::stop_callback<std::function<void()>>> caller_cancel;
};

// What a call needs, handed to the initiation as one pointer: GCC 12 miscompiles class-type
// arguments that asio::use_awaitable copies into its coroutine frame (a std::string's
// small-buffer pointer is left pointing at the original), which a shared_ptr is immune to.
struct AsioCallArgs {
  Client* client = nullptr;
  std::string queue;
  std::string method;  // typed calls: for the decoding's error messages
  std::string body;
  CallOptions options;
};

// Makes the call's stop source the one Asio's cancellation slot and the caller's own token
// both ask; returns the options to call with.
template <class Call>
CallOptions cancellable(Call& call, CallOptions options) {
  auto slot = asio::get_associated_cancellation_slot(call->handler);
  if (slot.is_connected()) {
    // Any cancellation type cancels the call: a call cannot be partly undone.
    slot.assign([stop = call->stop](asio::cancellation_type) mutable { stop.request_stop(); });
  }
  if (options.cancel.stop_possible()) {
    call->caller_cancel.emplace(
        options.cancel,
        std::function<void()>([stop = call->stop]() mutable { stop.request_stop(); }));
  }
  options.cancel = call->stop.get_token();
  return options;
}

struct AsyncCallInitiation {
  template <class Handler>
  void operator()(Handler&& handler, std::shared_ptr<AsioCallArgs> args) const {
    auto call = std::make_shared<AsioCall<std::decay_t<Handler>>>(std::forward<Handler>(handler));
    CallOptions options = cancellable(call, std::move(args->options));
    args->client->async_call(args->queue, std::move(args->body), options,
                             [call](Reply reply) { call->complete(std::move(reply)); });
  }
};

struct AsyncGatherInitiation {
  template <class Handler>
  void operator()(Handler&& handler, std::shared_ptr<AsioCallArgs> args) const {
    auto call = std::make_shared<AsioCall<std::decay_t<Handler>, GatherResult>>(
        std::forward<Handler>(handler));
    CallOptions options = cancellable(call, std::move(args->options));
    args->client->async_gather(args->queue, args->method, std::move(args->body), options,
                               [call](GatherResult result) { call->complete(std::move(result)); });
  }
};

template <class Resp>
struct TypedCallInitiation {
  template <class Handler>
  void operator()(Handler&& handler, std::shared_ptr<AsioCallArgs> args) const {
    // The decoding step keeps the handler's executor and cancellation slot.
    auto executor = asio::get_associated_executor(handler, asio::system_executor());
    auto slot = asio::get_associated_cancellation_slot(handler);
    std::string method = args->method;  // before `args` is moved below
    AsyncCallInitiation{}(
        asio::bind_cancellation_slot(
            slot, asio::bind_executor(executor,
                                      [h = std::forward<Handler>(handler),
                                       method = std::move(method)](Reply reply) mutable {
                                        std::move(h)(
                                            decode_typed_reply<Resp>(std::move(reply), method));
                                      })),
        std::move(args));
  }
};

struct AsyncNextInitiation {
  template <class Handler>
  void operator()(Handler&& handler, ReplyStream* stream) const {
    auto call = std::make_shared<AsioCall<std::decay_t<Handler>, std::optional<Reply>>>(
        std::forward<Handler>(handler));
    auto slot = asio::get_associated_cancellation_slot(call->handler);
    if (slot.is_connected()) {
      // Cancelling the wait cancels the stream: it ends, and the wait with it (nullopt).
      slot.assign([stream](asio::cancellation_type) { stream->cancel(); });
    }
    stream->async_next([call](std::optional<Reply> item) { call->complete(std::move(item)); });
  }
};

}  // namespace detail

// ReplyStream::async_next as an Asio operation with signature void(std::optional<Reply>): the
// next item, or nullopt at the end (then stream.status() says how). The stream must outlive
// the operation.
//   while (auto item = co_await amqprpc::async_next(*stream, asio::use_awaitable)) { ... }
template <class CompletionToken>
auto async_next(ReplyStream& stream, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(std::optional<Reply>)>(
      detail::AsyncNextInitiation{}, token, &stream);
}

// Client::async_call as an Asio operation with signature void(Reply).
// Arguments by reference: GCC 12 miscompiles class-type temporaries (`{}`) passed by value in a
// co_await expression.
template <class CompletionToken>
auto async_call(Client& client, const std::string& queue, const std::string& body,
                const CallOptions& options, CompletionToken&& token) {
  auto args = std::make_shared<detail::AsioCallArgs>(
      detail::AsioCallArgs{&client, queue, {}, body, options});
  return asio::async_initiate<CompletionToken, void(Reply)>(detail::AsyncCallInitiation{}, token,
                                                            std::move(args));
}

// Client::async_gather as an Asio operation with signature void(GatherResult):
//   amqprpc::GatherResult all = co_await amqprpc::async_gather(client, "rpc_queue",
//                                                              "amqprpc.health", "", {},
//                                                              asio::use_awaitable);
template <class CompletionToken>
auto async_gather(Client& client, const std::string& queue, const std::string& method,
                  const std::string& body, const CallOptions& options, CompletionToken&& token) {
  auto args = std::make_shared<detail::AsioCallArgs>(
      detail::AsioCallArgs{&client, queue, method, body, options});
  return asio::async_initiate<CompletionToken, void(GatherResult)>(detail::AsyncGatherInitiation{},
                                                                   token, std::move(args));
}

// typed_call as an Asio operation with signature void(Result<Resp>).
template <Codable Resp, Codable Req, class CompletionToken>
auto async_typed_call(Client& client, const std::string& queue, const std::string& method,
                      const Req& request, const CallOptions& call_options,
                      CompletionToken&& token) {
  CallOptions options = call_options;
  std::string body = detail::encode_typed_request(method, request, options);
  auto args = std::make_shared<detail::AsioCallArgs>(
      detail::AsioCallArgs{&client, queue, method, std::move(body), std::move(options)});
  return asio::async_initiate<CompletionToken, void(Result<Resp>)>(
      detail::TypedCallInitiation<Resp>{}, token, std::move(args));
}

// ---- coroutine handlers ----
// Where Asio has co_await (GCC 12 with -std=c++20; not clang 14 with libstdc++, where Asio turns
// its coroutine support off): the calls above work with every compiler.
#if defined(ASIO_HAS_CO_AWAIT)

namespace detail {

template <class T>
struct AwaitableOf : std::false_type {};
template <class T, class Executor>
struct AwaitableOf<asio::awaitable<T, Executor>> : std::true_type {
  using value_type = T;
  using executor_type = Executor;
};

template <class Executor>
inline constexpr bool kIsExecutor =
    asio::execution::is_executor<Executor>::value || asio::is_executor<Executor>::value;

// The reply for an exception a coroutine handler let out, as the server makes it for a
// synchronous handler's. An await aborted because the call was cancelled is not a bug of the
// handler: nobody waits for that reply, but it says what happened.
inline Reply coroutine_exception_reply(std::exception_ptr e, const Context& context) {
  try {
    std::rethrow_exception(std::move(e));
  } catch (const RpcError& x) {
    return Reply{x.status(), {}, {}, {}};
  } catch (const std::system_error& x) {
    if (x.code() == asio::error::operation_aborted && context.cancelled()) {
      return Reply::error(StatusCode::cancelled,
                          "the handler was cancelled: the caller's deadline passed, or the "
                          "server is stopping");
    }
    return Reply::error(StatusCode::internal, x.what());
  } catch (const std::exception& x) {
    return Reply::error(StatusCode::internal, x.what());
  } catch (...) {
    return Reply::error(StatusCode::internal, "the handler threw a non-standard exception");
  }
}

// Turns the request's cancellation (a std::stop_token, signalled on the server's I/O thread or
// the thread stopping the server) into Asio's terminal cancellation of one coroutine. Asio's
// cancellation signals are not thread-safe: the emit is posted to the coroutine's executor,
// where the coroutine runs (so a multi-threaded executor must be a strand). Shared by the
// co_spawn completion handler and the posted emits: the signal holds the coroutine's
// cancellation state, so it lives until the coroutine has completed.
template <class Executor>
class CoroutineCancellation : public std::enable_shared_from_this<CoroutineCancellation<Executor>> {
 public:
  explicit CoroutineCancellation(Executor executor) : executor_(std::move(executor)) {}

  // For co_spawn's completion handler, before the coroutine starts.
  asio::cancellation_slot slot() { return signal_.slot(); }

  // After co_spawn (whose set-up on this thread the signal must not race with): from now on a
  // stop of `token` cancels the coroutine; at once when it was stopped already.
  void connect(const std::stop_token& token) {
    std::weak_ptr<CoroutineCancellation> weak = this->weak_from_this();
    on_stop_.emplace(token, std::function<void()>([weak] {
                       // No strong reference stays on this thread: the state is released
                       // on the executor, never inside this stop callback.
                       if (auto self = weak.lock()) {
                         Executor executor = self->executor_;  // before `self` is moved
                         asio::post(executor, [s = std::move(self)] { s->emit(); });
                       }
                     }));
  }

  // On the executor, when the coroutine has completed: later emits find nothing to cancel.
  void finish() { done_ = true; }

 private:
  void emit() {
    if (!done_) signal_.emit(asio::cancellation_type::terminal);
  }

  Executor executor_;
  asio::cancellation_signal signal_;
  bool done_ = false;  // on the executor
  std::optional<std::stop_callback<std::function<void()>>> on_stop_;
};

// co_spawn's completion: answers the request with the coroutine's reply or its exception.
// Its Responder keeps the request alive until then (the coroutine may hold it by reference).
template <class Executor>
struct CoroutineDone {
  Responder responder;
  std::shared_ptr<CoroutineCancellation<Executor>> cancellation;

  void operator()(std::exception_ptr e, Reply reply) {
    cancellation->finish();
    if (e) reply = coroutine_exception_reply(std::move(e), responder.context());
    responder.reply(std::move(reply));
  }
};

// Spawns make()'s coroutine on `executor`, answering through `responder` when it completes.
template <class Executor, class Make>
void spawn_handler_coroutine(const Executor& executor, Make make, Responder responder) {
  const std::stop_token token = responder.context().cancellation();
  auto cancellation = std::make_shared<CoroutineCancellation<Executor>>(executor);
  auto slot = cancellation->slot();
  asio::co_spawn(executor, std::move(make),
                 asio::bind_cancellation_slot(
                     slot, CoroutineDone<Executor>{std::move(responder), cancellation}));
  cancellation->connect(token);
}

// What co_spawn calls, on the executor, for the coroutine of a raw handler. The entry
// coroutine of co_spawn keeps this (and so the handler, whose captures a lambda coroutine
// uses) until the handler's coroutine has completed.
template <class F>
struct RawCoroutine {
  std::shared_ptr<F> f;
  const Request* request;  // the Responder's: alive until the completion
  auto operator()() const { return (*f)(*request); }
};

template <class Executor, class F>
AsyncHandler raw_coroutine_handler(const Executor& executor, F f) {
  static_assert(std::is_invocable_v<F&, const Request&>,
                "a coroutine handler takes (const amqprpc::Request&)");
  using Out = std::invoke_result_t<F&, const Request&>;
  static_assert(
      AwaitableOf<Out>::value && std::is_same_v<typename AwaitableOf<Out>::value_type, Reply>,
      "a coroutine handler returns asio::awaitable<amqprpc::Reply>");
  return [executor, f = std::make_shared<F>(std::move(f))](const Request&, Responder responder) {
    const Request* request = &responder.request();
    spawn_handler_coroutine(executor, RawCoroutine<F>{f, request}, std::move(responder));
  };
}

// A typed coroutine call: the handler and the decoded request, alive until it completes.
template <class Req, class F>
struct TypedCoroutineCall {
  std::shared_ptr<F> f;
  Req request;
  const Request* raw;  // the Responder's: alive until the completion

  auto invoke() {
    if constexpr (std::is_invocable_v<F&, const Req&, const Request&>) {
      return (*f)(static_cast<const Req&>(request), *raw);
    } else {
      return (*f)(static_cast<const Req&>(request));
    }
  }
  using Awaitable = decltype(std::declval<TypedCoroutineCall&>().invoke());
};

// The typed handler's coroutine with its reply encoded. A free function taking a shared_ptr:
// GCC 12 miscompiles class-type coroutine parameters copied into the frame.
template <class Resp, class Call>
asio::awaitable<Reply, typename AwaitableOf<typename Call::Awaitable>::executor_type>
typed_handler_coroutine(std::shared_ptr<Call> call) {
  using Out = typename AwaitableOf<typename Call::Awaitable>::value_type;
  Out out = co_await call->invoke();
  Reply reply;
  if constexpr (std::is_same_v<Out, Result<Resp>>) {
    if (out.ok()) {
      reply = encode_typed_reply(*out, call->raw->content_type);
    } else {
      reply.status = out.status();
    }
  } else {
    reply = encode_typed_reply(static_cast<const Resp&>(out), call->raw->content_type);
  }
  co_return reply;
}

template <class Resp, class Call>
struct TypedCoroutine {
  std::shared_ptr<Call> call;
  auto operator()() const { return typed_handler_coroutine<Resp>(call); }
};

}  // namespace detail

// A method whose handler is a coroutine: f(const Request&) -> asio::awaitable<Reply>, spawned
// on `executor` (an executor, not an io_context: io.get_executor(), or a strand when threads
// run it) for each request. Its reply answers the request; an exception it lets out is the
// error reply, as for a synchronous handler (RpcError's status, otherwise internal with
// what()). The request lives until then, so f may take it by reference; f itself (a lambda's
// captures) lives as long as the server. The caller's deadline passing, or a stopping server's
// grace ending (Context::cancellation), cancels the coroutine: Asio's terminal cancellation
// reaches the operation it awaits (a timer ends with operation_aborted, an awaited async_call
// with status cancelled), and later awaits throw operation_aborted.
template <class Executor, class F>
Service& coroutine_method(Service& service, std::string name, const Executor& executor, F f,
                          MethodInfo info = {}) {
  static_assert(detail::kIsExecutor<Executor>, "pass an executor: io.get_executor(), a strand");
  return service.async_method(
      std::move(name), detail::raw_coroutine_handler(executor, std::move(f)), std::move(info));
}

// The default handler (requests without a method) as a coroutine, like coroutine_method.
template <class Executor, class F>
Service& coroutine_default_handler(Service& service, const Executor& executor, F f) {
  static_assert(detail::kIsExecutor<Executor>, "pass an executor: io.get_executor(), a strand");
  return service.async_default_handler(detail::raw_coroutine_handler(executor, std::move(f)));
}

// A typed coroutine method: f(const Req&, const Request&) or f(const Req&) returning
// asio::awaitable<Resp> or asio::awaitable<Result<Resp>>. As Service::method<Req, Resp>: a
// request that does not decode as Req is answered invalid_argument without running f, and
// Resp is encoded in the encoding the request came in. As coroutine_method otherwise. Take
// the request by const reference: it lives until the reply (a copy into the coroutine frame
// is what GCC 12 miscompiles).
template <Codable Req, Codable Resp, class Executor, class F>
Service& coroutine_method(Service& service, std::string name, const Executor& executor, F f) {
  static_assert(detail::kIsExecutor<Executor>, "pass an executor: io.get_executor(), a strand");
  static_assert(
      std::is_invocable_v<F&, const Req&, const Request&> || std::is_invocable_v<F&, const Req&>,
      "a typed coroutine handler takes (const Req&) or (const Req&, const Request&)");
  using Call = detail::TypedCoroutineCall<Req, F>;
  using Out = typename Call::Awaitable;
  static_assert(detail::AwaitableOf<Out>::value &&
                    (std::is_convertible_v<typename detail::AwaitableOf<Out>::value_type, Resp> ||
                     std::is_same_v<typename detail::AwaitableOf<Out>::value_type, Result<Resp>>),
                "a typed coroutine handler returns asio::awaitable<Resp> or "
                "asio::awaitable<amqprpc::Result<Resp>>");
  MethodInfo info{
      std::string(Codec<Req>::encoding == Codec<Resp>::encoding ? Codec<Req>::encoding : "mixed"),
      Codec<Req>::type_name(), Codec<Resp>::type_name()};
  ProtoFiles files;
  detail::add_proto_files<Req>(files);
  detail::add_proto_files<Resp>(files);
  service.add_proto_files(files);
  AsyncHandler handler = [name, executor, f = std::make_shared<F>(std::move(f))](
                             const Request&, Responder responder) {
    const Request& raw = responder.request();
    auto call = std::make_shared<Call>(Call{f, Req{}, &raw});
    if (Status bad = detail::decode_request_as(name, raw, call->request); !bad.ok()) {
      responder.fail(std::move(bad));
      return;
    }
    detail::spawn_handler_coroutine(executor, detail::TypedCoroutine<Resp, Call>{std::move(call)},
                                    std::move(responder));
  };
  return service.async_method(std::move(name), std::move(handler), std::move(info));
}

#endif  // ASIO_HAS_CO_AWAIT

}  // namespace amqprpc
