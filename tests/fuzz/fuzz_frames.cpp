// libFuzzer target: what the transport reads from a broker's socket. Bytes arrive on a socket
// (a socketpair, closed after them) and are cut into frames and decoded by the transport
// (rabbitmq-c's method and property decoders), then assembled into deliveries and returns as
// the channel does. No crash, no UB, no leak; every frame handed out is of a kind AMQP 0-9-1
// defines, and the bytes end in a clear error (the socket closed, or not AMQP), never a hang.
#include <amqp.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>

#include "amqp/frames.hpp"
#include "amqp/table.hpp"
#include "amqp/transport.hpp"

namespace {

using amqprpc::detail::amqp::Delivery;
using amqprpc::detail::amqp::FrameAssembler;
using amqprpc::detail::amqp::Incoming;
using amqprpc::detail::amqp::Returned;
using amqprpc::detail::amqp::to_string;
using amqprpc::detail::amqp::Transport;

constexpr std::size_t kFrameMax = 4096;

void handle(const amqp_frame_t& frame, FrameAssembler& assembler) {
  switch (frame.frame_type) {
    case AMQP_FRAME_METHOD:
      if (frame.payload.method.id == AMQP_BASIC_DELIVER_METHOD) {
        auto* d = static_cast<amqp_basic_deliver_t*>(frame.payload.method.decoded);
        Delivery delivery;
        delivery.delivery_tag = d->delivery_tag;
        delivery.consumer_tag = to_string(d->consumer_tag);
        assembler.begin(std::move(delivery));
      } else if (frame.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
        auto* r = static_cast<amqp_basic_return_t*>(frame.payload.method.decoded);
        Returned returned;
        returned.reply_code = r->reply_code;
        returned.reply_text = to_string(r->reply_text);
        assembler.begin(std::move(returned));
      }
      return;
    case AMQP_FRAME_HEADER:
    case AMQP_FRAME_BODY:
      if (auto message = assembler.add(frame)) {
        std::visit([](auto& m) { (void)m.body.size(); }, *message);
      }
      return;
    case AMQP_FRAME_HEARTBEAT:
      return;
    default:
      std::abort();  // the transport hands out only the four kinds
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) return 0;
  // The whole input, then the end of the stream: the reader never waits.
  int buffer = static_cast<int>(size + 65536);
  setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
  setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  std::size_t sent = 0;
  while (sent < size) {
    ssize_t n = write(fds[1], data + sent, size - sent);
    if (n <= 0) break;
    sent += static_cast<std::size_t>(n);
  }
  shutdown(fds[1], SHUT_WR);
  {
    Transport transport(fds[0], kFrameMax);
    FrameAssembler assembler;
    assembler.keep_wire_headers(true);  // the server's way: the header table kept as it came
    for (int turns = 0; turns < 100000; ++turns) {
      transport.begin_turn(true);
      amqp_frame_t frame;
      auto got = transport.next(frame);
      if (!got) break;  // the stream ended, or it was not AMQP
      if (*got) handle(frame, assembler);
      transport.release();
    }
  }
  close(fds[0]);
  close(fds[1]);
  return 0;
}
