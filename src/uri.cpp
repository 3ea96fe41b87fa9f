// AMQP URI parsing after RabbitMQ's URI spec (https://www.rabbitmq.com/uri-spec.html).
// rabbitmq-c's amqp_parse_url only says "bad URL" and knows no query parameters, so we own this.
#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "amqprpc/options.hpp"

namespace amqprpc {
namespace {

Status bad(std::string what) {
  return Status{StatusCode::invalid_argument, "invalid AMQP URI: " + std::move(what)};
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decodes one component; `part` names it in the error.
Result<std::string> decode(std::string_view in, std::string_view part) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out += in[i];
      continue;
    }
    if (i + 2 >= in.size()) {
      return bad("truncated percent-escape in the " + std::string(part));
    }
    int hi = hex_value(in[i + 1]);
    int lo = hex_value(in[i + 2]);
    if (hi < 0 || lo < 0) {
      return bad("invalid percent-escape '" + std::string(in.substr(i, 3)) + "' in the " +
                 std::string(part));
    }
    if (hi == 0 && lo == 0) return bad("the " + std::string(part) + " contains %00 (a NUL byte)");
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

template <class Int>
Result<Int> parse_uint(std::string_view text, std::string_view what, Int min, Int max) {
  Int value{};
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc{} || ptr != text.data() + text.size() || value < min ||
      value > max) {
    return bad(std::string(what) + " '" + std::string(text) + "' is not a number from " +
               std::to_string(min) + " to " + std::to_string(max));
  }
  return value;
}

Status apply_query_parameter(ConnectionOptions& o, std::string_view key, std::string_view value) {
  if (key == "heartbeat") {
    auto v = parse_uint<int>(value, "heartbeat", 0, 65535);
    if (!v) return v.status();
    o.heartbeat = std::chrono::seconds(*v);
  } else if (key == "connection_timeout") {
    auto v = parse_uint<int>(value, "connection_timeout", 1, 3'600'000);
    if (!v) return v.status();
    o.connect_timeout = std::chrono::milliseconds(*v);
  } else if (key == "frame_max") {
    auto v = parse_uint<int>(value, "frame_max", 4096, 1 << 30);
    if (!v) return v.status();
    o.frame_max = *v;
  } else if (key == "max_message_size") {
    auto v = parse_uint<std::int64_t>(value, "max_message_size", 1, std::int64_t{1} << 40);
    if (!v) return v.status();
    o.max_message_size = static_cast<std::size_t>(*v);
  } else if (key == "cacertfile" || key == "certfile" || key == "keyfile" || key == "verify" ||
             key == "server_name_indication") {
    if (!o.tls.enabled) {
      return bad("query parameter '" + std::string(key) + "' needs an amqps:// URI");
    }
    if (key == "cacertfile") {
      o.tls.ca_file = value;
    } else if (key == "certfile") {
      o.tls.cert_file = value;
    } else if (key == "keyfile") {
      o.tls.key_file = value;
    } else if (key == "verify") {
      if (value == "verify_peer") {
        o.tls.verify_peer = o.tls.verify_hostname = true;
      } else if (value == "verify_none") {
        o.tls.verify_peer = o.tls.verify_hostname = false;
      } else {
        return bad("verify must be verify_peer or verify_none, not '" + std::string(value) + "'");
      }
    }
    // server_name_indication: rabbitmq-c sends the host name as SNI; accepted for compatibility.
  } else {
    return bad("unknown query parameter '" + std::string(key) + "'");
  }
  return {};
}

Result<ConnectionOptions> parse(std::string_view uri) {
  ConnectionOptions o;
  for (std::size_t i = 0; i < uri.size(); ++i) {
    auto c = static_cast<unsigned char>(uri[i]);
    if (c <= 0x20 || c == 0x7f) {
      return bad("a space or control character at position " + std::to_string(i) +
                 "; percent-encode it");
    }
  }
  auto scheme_end = uri.find("://");
  if (scheme_end == std::string_view::npos) {
    // Not echoed: what was passed may hold a password.
    return bad("no scheme; expected amqp://host or amqps://host");
  }
  std::string scheme(uri.substr(0, scheme_end));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view rest = uri.substr(scheme_end + 3);
  if (scheme == "amqps") {
    o.tls.enabled = true;
    o.port = 5671;
  } else if (scheme != "amqp") {
    return bad("scheme '" + scheme.substr(0, 16) + "' is not amqp or amqps");
  }
  if (rest.find('#') != std::string_view::npos) return bad("fragments ('#') are not allowed");

  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
  }
  std::string_view authority = rest;
  std::optional<std::string_view> path;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    authority = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }

  // userinfo: the last '@' ends it, so a password may contain a literal '@' only escaped.
  const bool has_userinfo = uri.find('@') != std::string_view::npos;
  if (auto at = authority.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = authority.substr(0, at);
    authority = authority.substr(at + 1);
    std::string_view user = userinfo;
    std::optional<std::string_view> pass;
    if (auto c = userinfo.find(':'); c != std::string_view::npos) {
      user = userinfo.substr(0, c);
      pass = userinfo.substr(c + 1);
    }
    auto u = decode(user, "user name");
    if (!u) return u.status();
    o.user = *u;
    if (pass) {
      auto p = decode(*pass, "password");
      if (!p) return p.status();
      o.password = *p;
    }
  }

  std::string_view host = authority;
  std::optional<std::string_view> port;
  if (authority.starts_with('[')) {
    auto close = authority.find(']');
    if (close == std::string_view::npos) return bad("IPv6 address is missing its closing ']'");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':')
        return bad("unexpected '" + std::string(after) + "' after the IPv6 address");
      port = after.substr(1);
    }
    if (host.empty()) return bad("empty IPv6 address");
  } else if (auto c = authority.rfind(':'); c != std::string_view::npos) {
    host = authority.substr(0, c);
    port = authority.substr(c + 1);
    if (host.find(':') != std::string_view::npos) {
      return bad("an IPv6 address must be in brackets, like amqp://[::1]:5672");
    }
  }
  if (!host.empty()) {
    auto h = decode(host, "host");
    if (!h) return h.status();
    o.host = *h;
    const bool ipv6 = authority.starts_with('[');
    for (unsigned char c : o.host) {
      bool fine = ipv6 ? (std::isxdigit(c) || c == ':' || c == '.')
                       : (std::isalnum(c) || c >= 0x80 || std::strchr("-._~!$&'()*+,;=", c));
      if (!fine || c == 0) {
        return bad(std::string(ipv6 ? "IPv6 address" : "host name") +
                   " contains a character it cannot have: '" +
                   std::string(1, static_cast<char>(c)) + "'");
      }
    }
  }
  if (port && !port->empty()) {  // "host:" keeps the default port, as the spec allows
    auto p = parse_uint<int>(*port, "port", 1, 65535);
    if (!p) {
      // A password with an unescaped '/', '?' or '#' ends the authority early and lands here:
      // do not echo it.
      if (has_userinfo) {
        return bad(
            "the port is not a number from 1 to 65535 (percent-encode '/', '?', '#' "
            "and '@' in the user name and password)");
      }
      return p.status();
    }
    o.port = static_cast<std::uint16_t>(*p);
  }

  if (path && !path->empty()) {
    if (path->find('@') != std::string_view::npos) {
      // A password (or user name) with an unescaped '/' ends the authority early: what follows
      // it, up to the '@', would be read as the vhost and printed wherever the URI is. Refused,
      // and not echoed.
      return bad(
          "'@' after the host: percent-encode '/', '?', '#' and '@' in the user name and "
          "password (%2F, %3F, %23, %40), and '@' in a vhost (%40)");
    }
    if (path->find('/') != std::string_view::npos) {
      return bad("vhost '" + std::string(*path) + "' contains '/': write it as %2F");
    }
    auto v = decode(*path, "vhost");
    if (!v) return v.status();
    o.vhost = *v;
  }

  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    if (pair.empty()) continue;
    auto eq = pair.find('=');
    if (eq == std::string_view::npos)
      return bad("query parameter '" + std::string(pair) + "' has no value");
    auto key = decode(pair.substr(0, eq), "query");
    if (!key) return key.status();
    auto value = decode(pair.substr(eq + 1), "query");
    if (!value) return value.status();
    if (Status s = apply_query_parameter(o, *key, *value); !s.ok()) return s;
  }
  return o;
}

// Masks in `message` every piece of the password as written in `uri`: a password with an
// unescaped '/', '?' or '#' is cut there by the parser and its pieces can end up anywhere.
std::string scrub(std::string message, std::string_view uri) {
  auto start = uri.find("://");
  auto at = uri.rfind('@');
  if (start == std::string_view::npos || at == std::string_view::npos || at < start + 3) {
    return message;
  }
  std::string_view userinfo = uri.substr(start + 3, at - start - 3);
  auto colon = userinfo.find(':');
  if (colon == std::string_view::npos) return message;
  std::string_view password = userinfo.substr(colon + 1);
  std::vector<std::string_view> pieces{password};
  std::size_t from = 0;
  for (std::size_t i = 0; i <= password.size(); ++i) {
    if (i == password.size() || password[i] == '/' || password[i] == '?' || password[i] == '#' ||
        password[i] == '&' || password[i] == '=' || password[i] == ':') {
      pieces.push_back(password.substr(from, i - from));
      from = i + 1;
    }
  }
  // Mark every occurrence in the original text first, then mask each marked run once.
  std::vector<bool> hide(message.size(), false);
  for (std::string_view piece : pieces) {
    if (piece.size() < 2) continue;
    for (auto pos = message.find(piece); pos != std::string::npos;
         pos = message.find(piece, pos + 1)) {
      std::fill(hide.begin() + static_cast<long>(pos),
                hide.begin() + static_cast<long>(pos + piece.size()), true);
    }
  }
  std::string out;
  for (std::size_t i = 0; i < message.size(); ++i) {
    if (!hide[i]) {
      out += message[i];
    } else if (i == 0 || !hide[i - 1]) {
      out += "****";
    }
  }
  return out;
}

}  // namespace

Result<ConnectionOptions> ConnectionOptions::from_uri(std::string_view uri) {
  auto parsed = parse(uri);
  if (parsed) return parsed;
  const Status& st = parsed.status();
  return Status{st.code(), scrub(st.message(), uri)};
}

std::string ConnectionOptions::to_string() const {
  auto encode = [](std::string_view in) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : in) {
      if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
        out += static_cast<char>(c);
      } else {
        out += '%';
        out += kHex[c >> 4];
        out += kHex[c & 15];
      }
    }
    return out;
  };
  std::string out = tls.enabled ? "amqps://" : "amqp://";
  out += encode(user);
  out += ":****@";
  // Appended piece by piece: GCC 12 at -O3 warns (falsely, -Wrestrict) on "x" + std::string.
  const bool ipv6 = host.find(':') != std::string::npos;
  if (ipv6) out += '[';
  out += host;
  if (ipv6) out += ']';
  out += ':';
  out += std::to_string(port);
  out += '/';
  out += encode(vhost);
  return out;
}

}  // namespace amqprpc
