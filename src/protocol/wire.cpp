#include "protocol/wire.hpp"

#include <algorithm>
#include <cassert>
#include <charconv>
#include <cstdio>

namespace amqprpc::detail::wire {

std::int64_t epoch_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::optional<std::int64_t> int_header(const Headers& headers, std::string_view name) {
  auto it = headers.find(name);
  if (it == headers.end() || it->second.empty() || it->second.size() > 18) return std::nullopt;
  std::int64_t v = 0;
  for (char c : it->second) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::int64_t attempt_of(const Headers& headers, bool redelivered, bool quorum,
                        bool attempts_trusted) {
  std::int64_t base = 1;
  if (attempts_trusted)
    base = std::max<std::int64_t>(1, int_header(headers, kAttemptsHeader).value_or(1));
  if (quorum) {
    if (auto count = int_header(headers, kDeliveryCountHeader)) return base + *count;
  }
  return redelivered ? base + 1 : base;
}

std::string caller_of(const amqp::Properties& props, bool from_server) {
  if (from_server) {
    auto it = props.headers.find(kCallerHeader);
    if (it != props.headers.end()) return it->second;
  }
  return props.user_id;
}

bool expired(const Headers& headers, std::int64_t now_ms) {
  return expired(int_header(headers, kDeadlineHeader), now_ms);
}

bool expired(std::optional<std::int64_t> deadline_ms, std::int64_t now_ms) {
  return deadline_ms && *deadline_ms < now_ms;
}

Status validate_outgoing(const amqp::PropertiesView& p, std::size_t body_size, const Limits& limits,
                         std::string_view what) {
  const int frame_max = limits.frame_max;
  auto too_long = [&](std::string_view field, std::size_t size) {
    return Status{StatusCode::invalid_argument, std::string(what) + ": " + std::string(field) +
                                                    " is " + std::to_string(size) +
                                                    " bytes; AMQP allows at most 255"};
  };
  if (p.content_type.size() > 255) return too_long("content type", p.content_type.size());
  if (p.correlation_id.size() > 255) return too_long("correlation id", p.correlation_id.size());
  if (p.reply_to.size() > 255) return too_long("reply_to", p.reply_to.size());
  if (p.user_id.size() > 255) return too_long("user id", p.user_id.size());
  std::size_t table = p.wire_headers.size();
  std::string_view long_key;
  p.for_each_header([&](std::string_view key, std::string_view value) {
    if (key.size() > 255 && long_key.empty()) long_key = key;
    table += 1 + key.size() + 1 + 4 + value.size();
  });
  if (!long_key.empty()) {
    return too_long("header name '" + std::string(long_key.substr(0, 32)) + "...'",
                    long_key.size());
  }
  // The header frame also carries the other properties: keep a margin for them.
  const std::size_t room = frame_max > 2048 ? static_cast<std::size_t>(frame_max) - 2048 : 0;
  if (table > room) {
    return {StatusCode::invalid_argument,
            std::string(what) + ": headers take " + std::to_string(table) +
                " bytes; they must fit in one frame (at most " + std::to_string(room) + ")"};
  }
  if (body_size > limits.max_message_size) {
    return {StatusCode::resource_exhausted,
            std::string(what) + ": body is " + std::to_string(body_size) +
                " bytes; the broker takes at most " + std::to_string(limits.max_message_size) +
                " (ConnectionOptions::max_message_size); not sent"};
  }
  return {};
}

std::string derived_name(std::string_view queue, std::string_view suffix) {
  if (queue.size() + suffix.size() <= 255) return std::string(queue) + std::string(suffix);
  std::uint64_t hash = 14695981039346656037ull;  // FNV-1a, 64 bits
  for (unsigned char c : queue) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(hash));
  std::size_t keep = 255 - std::min<std::size_t>(suffix.size(), 255 - 17) - 1 - 16;
  // Never cut a UTF-8 sequence: back up over continuation bytes (10xxxxxx).
  while (keep > 0 && (static_cast<unsigned char>(queue[keep]) & 0xC0) == 0x80) --keep;
  return std::string(queue.substr(0, keep)) + "~" + hex + std::string(suffix);
}

std::string dead_letter_queue_for(std::string_view queue) {
  return derived_name(queue, ".dead-letter");
}

std::string gather_exchange_for(std::string_view queue) {
  return derived_name(queue, ".gather");
}

std::string roster_queue_for(std::string_view queue) {
  return derived_name(queue, ".roster");
}

std::string instance_queue_for(std::string_view queue, std::string_view id) {
  return derived_name(queue, ".instance." + std::string(id));
}

std::string control_queue_for(std::string_view queue, std::string_view id) {
  return derived_name(queue, ".control." + std::string(id));
}

bool is_oneway(const Headers& headers) {
  auto it = headers.find(kOnewayHeader);
  return it != headers.end() && (it->second == "1" || it->second == "true");
}

OutgoingRequest::OutgoingRequest(const CallOptions& options, std::string_view correlation_id,
                                 std::string_view reply_to, std::chrono::milliseconds time_left,
                                 bool oneway, const TraceContext& trace) {
  props_.correlation_id = correlation_id;
  props_.reply_to = reply_to;
  props_.content_type = options.content_type;
  props_.priority = options.priority;
  props_.headers = &options.headers;
  // The broker drops a request nobody waits for any more; servers can skip expired work.
  if (time_left.count() < 1) time_left = std::chrono::milliseconds(1);
  auto decimal = [](std::array<char, 20>& buffer, std::int64_t v) {
    auto end = std::to_chars(buffer.data(), buffer.data() + buffer.size(), v).ptr;
    return std::string_view(buffer.data(), static_cast<std::size_t>(end - buffer.data()));
  };
  props_.expiration = decimal(expiration_, time_left.count());
  add_header(kDeadlineHeader, decimal(deadline_, epoch_ms() + time_left.count()));
  if (!options.method.empty()) add_header(kMethodHeader, options.method);
  if (oneway) add_header(kOnewayHeader, std::string_view("1"));
  if (trace.valid()) {
    write_traceparent(trace, traceparent_);
    add_header(kTraceparentHeader, std::string_view(traceparent_.data(), traceparent_.size()));
    if (!trace.tracestate.empty()) add_header(kTracestateHeader, trace.tracestate);
  }
}

void OutgoingRequest::add_header(std::string_view key, std::string_view value) {
  for (std::size_t i = 0; i < count_; ++i) {
    if (added_[i].key == key) {
      added_[i].value = value;
      return;
    }
  }
  // The library's own few headers, each name once: there is room for all of them.
  assert(count_ < added_.size());
  if (count_ == added_.size()) return;
  added_[count_++] = {key, value};
  props_.added = std::span<const amqp::HeaderView>(added_.data(), count_);
}

Request decode_request(amqp::Delivery&& d, const std::string& queue, std::string caller,
                       Context context) {
  Request req;
  req.queue = queue;
  req.caller = std::move(caller);
  req.context = std::move(context);
  req.body = std::move(d.body);
  req.content_type = std::move(d.props.content_type);
  req.correlation_id = std::move(d.props.correlation_id);
  req.reply_to = std::move(d.props.reply_to);
  req.headers = std::move(d.props.headers);
  if (auto m = req.headers.find(kMethodHeader); m != req.headers.end()) req.method = m->second;
  req.oneway = is_oneway(req.headers);
  req.redelivered = d.redelivered;
  return req;
}

std::optional<TraceContext> trace_of(const Headers& headers) {
  auto tp = headers.find(kTraceparentHeader);
  if (tp == headers.end()) return std::nullopt;
  auto ts = headers.find(kTracestateHeader);
  return TraceContext::parse(
      tp->second, ts != headers.end() ? std::string_view(ts->second) : std::string_view());
}

void put_trace(Headers& headers, const TraceContext& trace) {
  headers.insert_or_assign(std::string(kTraceparentHeader), trace.traceparent());
  if (!trace.tracestate.empty()) {
    headers.insert_or_assign(std::string(kTracestateHeader), trace.tracestate);
  }
}

TraceContext new_span(std::optional<TraceContext>&& parent, UuidGenerator& ids) {
  TraceContext span;
  if (parent) {
    span = std::move(*parent);
  } else {
    span.trace_id = ids.trace_id();
  }
  span.span_id = ids.span_id();
  return span;
}

TraceContext new_span(const TraceContext* parent, UuidGenerator& ids) {
  return new_span(parent != nullptr ? std::optional<TraceContext>(*parent) : std::nullopt, ids);
}

void encode_reply(Reply&& reply, std::string_view correlation_id, amqp::Properties& props,
                  std::string& body) {
  props.correlation_id = correlation_id;
  props.headers = std::move(reply.headers);
  props.content_type = std::move(reply.content_type);
  if (reply.status.ok()) {
    body = std::move(reply.body);
    return;
  }
  props.headers.insert_or_assign(std::string(kStatusHeader),
                                 std::string(to_string(reply.status.code())));
  props.headers.insert_or_assign(std::string(kMessageHeader), reply.status.message());
  if (const StatusDetail* detail = reply.status.detail()) {
    // The detail is the body; a tutorial client shows it instead of the message.
    props.headers.insert_or_assign(std::string(kDetailTypeHeader), detail->type);
    props.content_type = detail->content_type;
    body = detail->data;
    return;
  }
  if (props.content_type.empty()) props.content_type = "text/plain";
  body = reply.status.message();
}

Reply decode_reply(amqp::Properties&& props, std::string&& body) {
  Reply reply;
  reply.content_type = std::move(props.content_type);
  reply.headers = std::move(props.headers);
  auto status = reply.headers.find(kStatusHeader);
  if (status != reply.headers.end() && status->second != "ok") {
    StatusCode code = status_code_from_string(status->second).value_or(StatusCode::unknown);
    auto message = reply.headers.find(kMessageHeader);
    std::string text = message != reply.headers.end() ? message->second : body;
    if (code == StatusCode::unknown && status->second != "unknown") {
      text = "error reply with unknown status '" + status->second + "': " + text;
    }
    if (auto detail = reply.headers.find(kDetailTypeHeader); detail != reply.headers.end()) {
      reply.status =
          Status{code, std::move(text), StatusDetail{detail->second, reply.content_type, body}};
    } else {
      reply.status = Status{code, std::move(text)};
    }
  }
  reply.body = std::move(body);
  return reply;
}

}  // namespace amqprpc::detail::wire
