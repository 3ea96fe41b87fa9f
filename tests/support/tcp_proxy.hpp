// A TCP proxy on loopback that can cut the network silently: in blackhole mode it keeps every
// connection open but forwards nothing (no RST, no FIN), as a pulled cable or a dropping firewall
// would. Only heartbeats can tell. Or loudly: cut() closes every connection through it (both
// ends see it at once, as after a network reset) and goes on accepting new ones. Bounded: it
// runs until destroyed.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace faults {

class TcpProxy {
 public:
  explicit TcpProxy(std::uint16_t target_port) : target_(target_port) {
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(listen_, 16) != 0) {
      throw std::runtime_error("proxy: cannot listen");
    }
    socklen_t len = sizeof a;
    ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { loop(); });
  }
  ~TcpProxy() {
    stop_ = true;
    thread_.join();
    for (auto& [a, b] : pairs_) {
      if (a >= 0) ::close(a);
      if (b >= 0) ::close(b);
    }
    ::close(listen_);
  }
  std::uint16_t port() const { return port_; }
  void blackhole(bool on) { blackhole_ = on; }
  // Closes the connections open now (on the proxy's thread, soon); later ones go through.
  void cut() { cut_ = true; }

 private:
  void loop() {
    while (!stop_) {
      if (cut_.exchange(false)) {
        for (auto& pair : pairs_) {
          if (pair.first < 0) continue;
          ::close(pair.first);
          ::close(pair.second);
          pair = {-1, -1};
        }
      }
      std::erase_if(pairs_, [](const auto& p) { return p.first < 0; });
      std::vector<pollfd> fds{{listen_, POLLIN, 0}};
      if (!blackhole_) {
        for (auto& [a, b] : pairs_) {
          fds.push_back({a, POLLIN, 0});
          fds.push_back({b, POLLIN, 0});
        }
      }
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      if (fds[0].revents & POLLIN) accept_one();
      for (std::size_t i = 1; i < fds.size(); ++i) {
        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        auto& pair = pairs_[(i - 1) / 2];
        int from = fds[i].fd == pair.first || fds[i].fd == pair.second ? fds[i].fd : -1;
        int to = from == pair.first ? pair.second : pair.first;
        char buf[65536];
        if (from < 0) continue;  // closed earlier in this round
        ssize_t n = ::read(from, buf, sizeof buf);
        if (n <= 0) {  // one side closed: close both, as a real connection would end
          ::close(pair.first);
          ::close(pair.second);
          pair = {-1, -1};
          continue;
        }
        for (ssize_t off = 0; off < n;) {
          // MSG_NOSIGNAL: a peer that went away must not kill the test with SIGPIPE.
          ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n - off), MSG_NOSIGNAL);
          if (w <= 0) break;
          off += w;
        }
      }
    }
  }
  void accept_one() {
    int client = ::accept(listen_, nullptr, nullptr);
    if (client < 0) return;
    int server = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(target_);
    if (::connect(server, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    pairs_.emplace_back(client, server);
  }

  std::uint16_t target_;
  std::uint16_t port_ = 0;
  int listen_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<bool> blackhole_{false};
  std::atomic<bool> cut_{false};
  std::vector<std::pair<int, int>> pairs_;  // proxy thread only
  std::thread thread_;
};

}  // namespace faults
