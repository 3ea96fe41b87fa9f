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
// GCC 12 (Debian 12's) miscompiles temporaries inside co_await expressions: a `{}` CallOptions
// or a string literal argument there corrupts the coroutine frame ("free(): invalid pointer",
// GCC bug 100611 and kin). In coroutines, pass named variables:
//   const amqprpc::CallOptions options;  // not `{}`
//   co_await amqprpc::async_call(client, queue, body, options, asio::use_awaitable);
#pragma once

#include <asio/associated_cancellation_slot.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/bind_cancellation_slot.hpp>
#include <asio/bind_executor.hpp>
#include <asio/cancellation_type.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/system_executor.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>

#include "amqprpc/client.hpp"
#include "amqprpc/service.hpp"

namespace amqprpc {

namespace detail {

// One call's completion: the handler, the work that keeps its executor running, and the stop
// source Asio's cancellation (and the caller's own CallOptions::cancel) ask.
template <class Handler>
struct AsioCall {
  using Executor = asio::associated_executor_t<Handler, asio::system_executor>;

  explicit AsioCall(Handler&& h)
      : handler(std::move(h)),
        work(asio::make_work_guard(
            asio::get_associated_executor(handler, asio::system_executor()))) {}

  // On the client's I/O thread (or the calling thread, for a call refused at once): hands the
  // reply to the handler's executor, never running the handler here.
  void complete(Reply reply) {
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.clear();
    auto executor = work.get_executor();
    asio::post(executor, [h = std::move(handler), r = std::move(reply),
                          w = std::move(work)]() mutable { std::move(h)(std::move(r)); });
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

struct AsyncCallInitiation {
  template <class Handler>
  void operator()(Handler&& handler, std::shared_ptr<AsioCallArgs> args) const {
    Client* client = args->client;
    CallOptions options = std::move(args->options);
    auto call = std::make_shared<AsioCall<std::decay_t<Handler>>>(std::forward<Handler>(handler));
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
    client->async_call(args->queue, std::move(args->body), options,
                       [call](Reply reply) { call->complete(std::move(reply)); });
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

}  // namespace detail

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

}  // namespace amqprpc
