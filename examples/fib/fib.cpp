#include "fib.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdio>
#include <vector>

#include "amqprpc/json.hpp"

namespace fib {
namespace {

constexpr std::uint64_t kBase = 1'000'000'000'000'000'000ULL;  // 10^18 per limb

// a += b, little-endian limbs.
void add_into(std::vector<std::uint64_t>& a, const std::vector<std::uint64_t>& b) {
  if (a.size() < b.size()) a.resize(b.size(), 0);
  std::uint64_t carry = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::uint64_t sum = a[i] + (i < b.size() ? b[i] : 0) + carry;
    carry = sum >= kBase ? 1 : 0;
    a[i] = carry ? sum - kBase : sum;
  }
  if (carry) a.push_back(carry);
}

std::string to_decimal(const std::vector<std::uint64_t>& limbs) {
  std::string out = std::to_string(limbs.back());
  char buf[19];
  for (std::size_t i = limbs.size() - 1; i-- > 0;) {
    std::snprintf(buf, sizeof buf, "%018llu", static_cast<unsigned long long>(limbs[i]));
    out.append(buf, 18);
  }
  return out;
}

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

}  // namespace

std::string fibonacci(std::uint64_t n) {
  std::vector<std::uint64_t> a{0}, b{1};  // fib(i), fib(i+1)
  for (std::uint64_t i = 0; i < n; ++i) {
    add_into(a, b);  // a = fib(i+2)
    std::swap(a, b);
  }
  return to_decimal(a);
}

amqprpc::Result<std::uint64_t> parse_n(std::string_view body, std::uint64_t limit) {
  using amqprpc::Status;
  using amqprpc::StatusCode;
  auto first = std::find_if_not(body.begin(), body.end(), is_space);
  auto last = std::find_if_not(body.rbegin(), body.rend(), is_space).base();
  std::string_view text =
      first < last ? std::string_view(&*first, last - first) : std::string_view{};
  auto quoted = [&] {
    std::string shown;
    for (unsigned char c : body.substr(0, 32))
      shown += std::isprint(c) ? static_cast<char>(c) : '?';
    return "'" + shown + (body.size() > 32 ? "...'" : "'");
  };
  if (text.empty())
    return Status{StatusCode::invalid_argument, "empty request: expected a number n >= 0"};
  if (text[0] == '-') {
    return Status{StatusCode::invalid_argument, "n must be >= 0, got " + quoted()};
  }
  if (text[0] == '+') text.remove_prefix(1);
  if (text.empty() ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Status{StatusCode::invalid_argument, "not a decimal number: " + quoted()};
  }
  std::uint64_t n = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || n > limit) {
    return Status{StatusCode::invalid_argument,
                  "n=" + std::string(text.substr(0, 24)) + (text.size() > 24 ? "..." : "") +
                      " is over this server's limit of " + std::to_string(limit)};
  }
  return n;
}

amqprpc::Reply handle(std::string_view body, std::uint64_t limit) {
  auto n = parse_n(body, limit);
  if (!n) return amqprpc::Reply{n.status(), {}, {}, {}};
  return amqprpc::Reply::ok(fibonacci(*n));
}

void to_json(nlohmann::json& j, const FibRequest& r) {
  j = {{"n", r.n}};
}
namespace {
// nlohmann turns -1 or 2.5 into an unsigned number silently, and a floating-point number out of
// range into undefined behaviour: only a JSON unsigned integer is taken.
std::uint64_t whole_number(const nlohmann::json& j, const char* name) {
  const auto& n = j.at(name);
  if (!n.is_number_unsigned()) {
    throw std::invalid_argument(std::string("\"") + name + "\" must be a whole number >= 0");
  }
  return n.get<std::uint64_t>();
}
}  // namespace

void from_json(const nlohmann::json& j, FibRequest& r) {
  r.n = whole_number(j, "n");
}
void to_json(nlohmann::json& j, const FibReply& r) {
  j = {{"n", r.n}, {"fib", r.fib}};
}
void from_json(const nlohmann::json& j, FibReply& r) {
  r.n = whole_number(j, "n");
  j.at("fib").get_to(r.fib);
}

amqprpc::Service service(
    const std::string& queue, std::uint64_t limit,
    std::function<void(const amqprpc::Request&, const amqprpc::Reply&)> on_request) {
  amqprpc::Service s(queue, "fib.Fibonacci");
  s.default_handler([limit, on_request](const amqprpc::Request& r) {
    amqprpc::Reply reply = handle(r.body, limit);
    if (on_request) on_request(r, reply);
    return reply;
  });
  s.method<FibRequest, FibReply>(
      "Fib",
      [limit, on_request](const FibRequest& in,
                          const amqprpc::Request& r) -> amqprpc::Result<FibReply> {
        amqprpc::Result<FibReply> out = [&]() -> amqprpc::Result<FibReply> {
          if (in.n > limit) {
            return amqprpc::Status{amqprpc::StatusCode::invalid_argument,
                                   "n=" + std::to_string(in.n) +
                                       " is over this server's limit of " + std::to_string(limit)};
          }
          return FibReply{in.n, fibonacci(in.n)};
        }();
        if (on_request) on_request(r, amqprpc::Reply{out.status(), {}, {}, {}});
        return out;
      });
  return s;
}

}  // namespace fib
