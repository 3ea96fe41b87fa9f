// What each property of amqp-rpc's requests costs the broker: a raw rabbitmq-c pipelined client
// (N calls in flight, direct reply-to, one thread, the style of raw_baseline.cpp) that can add
// each property alone or all together, against raw_baseline.cpp's raw_serve echo server (and a
// copy of it that can put properties on its replies or declare its queue with a TTL). For each
// timed run it reads the broker's CPU time (utime + stime of the Erlang VM from
// /proc/PID/stat, and the sum of its threads' run time from /proc/PID/task/*/schedstat), this
// process's (client and servers apart) and the machine's (/proc/stat: steal, and the busy time
// of everything else). Variants alternate (a, b, c, ..., a, b, c, ...); a run that other work
// disturbed (more than --max-other cores busy outside the broker and this process) is run again,
// and the least disturbed attempt kept. Prints one line per run, then a Markdown table of
// medians [min-max]. docs/BROKER_COST.md has the method and the results.
#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "amqprpc/client.hpp"
#include "amqprpc/options.hpp"
#include "procstat.hpp"
#include "raw_baseline.hpp"

namespace {

using Clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- CPU accounting

struct MachineCpu {
  std::uint64_t busy = 0;   // user + nice + system + irq + softirq (guest is inside user)
  std::uint64_t steal = 0;  // time the hypervisor gave our vCPUs to someone else
  std::uint64_t total = 0;  // everything, idle and iowait included
};

MachineCpu machine_cpu() {
  MachineCpu m;
  std::ifstream f("/proc/stat");
  std::string cpu;
  std::uint64_t v[10] = {};
  f >> cpu;
  for (auto& x : v) f >> x;
  m.busy = v[0] + v[1] + v[2] + v[5] + v[6];
  m.steal = v[7];
  m.total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  return m;
}

// The sum of `read(file)` over a process's live threads (/proc/PID/task/TID/<name>); 0 when
// the process is gone.
template <class Read>
std::uint64_t sum_over_threads(int pid, const char* name, Read read) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  std::uint64_t sum = 0;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/" + name);
    sum += read(f);
  }
  closedir(d);
  return sum;
}

// The run time of a process's live threads, in ns (first field of each task's schedstat): the
// same CPU time as process_ticks at a far finer grain (threads that ended are not counted).
std::uint64_t pid_sched_ns(int pid) {
  return sum_over_threads(pid, "schedstat", [](std::istream& f) {
    std::uint64_t ns = 0;
    f >> ns;
    return ns;
  });
}

// Read and write system calls of a process (/proc/PID/io syscr, syscw): how many socket reads
// and writes the broker made, a measure of how well it batches.
std::pair<std::uint64_t, std::uint64_t> pid_syscalls(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/io");
  std::string key;
  std::uint64_t value = 0, r = 0, w = 0;
  while (f >> key >> value) {
    if (key == "syscr:") r = value;
    if (key == "syscw:") w = value;
  }
  return {r, w};
}

// Context switches of a process's live threads (voluntary + involuntary): its wake-ups.
std::uint64_t pid_switches(int pid) {
  return sum_over_threads(pid, "status", [](std::istream& f) {
    std::uint64_t sum = 0;
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("voluntary_ctxt_switches:", 0) == 0 ||
          line.rfind("nonvoluntary_ctxt_switches:", 0) == 0) {
        sum += std::strtoull(line.c_str() + line.find(':') + 1, nullptr, 10);
      }
    }
    return sum;
  });
}

std::uint64_t clock_ns(clockid_t id) {
  timespec ts{};
  clock_gettime(id, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000u +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

// The echo servers run as threads of this process: their CPU clocks, to tell them from the
// client's.
std::mutex server_clocks_mutex;
std::vector<clockid_t> server_clocks;

std::uint64_t servers_ns() {
  std::lock_guard lock(server_clocks_mutex);
  std::uint64_t sum = 0;
  for (clockid_t c : server_clocks) sum += clock_ns(c);
  return sum;
}

struct Snapshot {
  Clock::time_point at;
  std::uint64_t calls = 0;
  std::uint64_t broker_ticks = 0;
  std::uint64_t broker_ns = 0;
  std::uint64_t broker_reads = 0, broker_writes = 0, broker_switches = 0;
  std::uint64_t self_ticks = 0;
  std::uint64_t process_ns = 0;
  std::uint64_t servers_ns = 0;
  MachineCpu machine;
};

int g_broker_pid = 0;

Snapshot snapshot(std::uint64_t calls) {
  Snapshot s;
  s.calls = calls;
  s.broker_ns = pid_sched_ns(g_broker_pid);
  s.broker_ticks = bench::process_ticks(g_broker_pid).value_or(0);
  std::tie(s.broker_reads, s.broker_writes) = pid_syscalls(g_broker_pid);
  s.broker_switches = pid_switches(g_broker_pid);
  s.self_ticks = bench::process_ticks(getpid()).value_or(0);
  s.process_ns = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
  s.servers_ns = servers_ns();
  s.machine = machine_cpu();
  s.at = Clock::now();
  return s;
}

struct Measure {
  std::uint64_t calls = 0;
  double seconds = 0;
  double broker_us = 0;        // broker CPU per call, from utime + stime (10 ms ticks)
  double broker_sched_us = 0;  // the same from schedstat (ns)
  double client_us = 0;
  double server_us = 0;
  double other_cores = 0;   // busy CPU outside the broker and this process, in cores
  double steal_pct = 0;     // of the machine's time
  double broker_cores = 0;  // the broker's CPU time over the run's, in cores
  double reads = 0, writes = 0, switches = 0;  // the broker's, per call
  double calls_per_s() const { return seconds > 0 ? static_cast<double>(calls) / seconds : 0; }
};

Measure measure(const Snapshot& a, const Snapshot& b) {
  static const double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
  Measure m;
  m.calls = b.calls - a.calls;
  m.seconds = std::chrono::duration<double>(b.at - a.at).count();
  const double n = m.calls > 0 ? static_cast<double>(m.calls) : 1;
  m.broker_us = static_cast<double>(b.broker_ticks - a.broker_ticks) / hz * 1e6 / n;
  m.broker_sched_us = static_cast<double>(b.broker_ns - a.broker_ns) / 1e3 / n;
  m.broker_cores =
      m.seconds > 0 ? static_cast<double>(b.broker_ns - a.broker_ns) / 1e9 / m.seconds : 0;
  m.reads = static_cast<double>(b.broker_reads - a.broker_reads) / n;
  m.writes = static_cast<double>(b.broker_writes - a.broker_writes) / n;
  m.switches = static_cast<double>(b.broker_switches - a.broker_switches) / n;
  const double servers = static_cast<double>(b.servers_ns - a.servers_ns);
  m.server_us = servers / 1e3 / n;
  m.client_us = (static_cast<double>(b.process_ns - a.process_ns) - servers) / 1e3 / n;
  const double busy = static_cast<double>(b.machine.busy - a.machine.busy);
  const double ours =
      static_cast<double>((b.broker_ticks - a.broker_ticks) + (b.self_ticks - a.self_ticks));
  m.other_cores = m.seconds > 0 ? std::max(0.0, busy - ours) / hz / m.seconds : 0;
  const double total = static_cast<double>(b.machine.total - a.machine.total);
  m.steal_pct =
      total > 0 ? 100.0 * static_cast<double>(b.machine.steal - a.machine.steal) / total : 0;
  return m;
}

// ---------------------------------------------------------------- raw connections

// The raw connections are raw_baseline's.
using Broker = amqprpc::ConnectionOptions;
using bench::raw_close;
using bench::raw_connect;
using bench::raw_consume;
using bench::raw_next_delivery;
using Next = bench::Next;

// A random W3C traceparent, "00-<32 hex>-<16 hex>-01" (55 bytes), as amqp-rpc writes one.
void fill_traceparent(char (&out)[56], std::mt19937_64& rng) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::uint64_t parts[3] = {rng(), rng(), rng()};
  int pos = 0;
  out[pos++] = '0';
  out[pos++] = '0';
  out[pos++] = '-';
  for (int i = 0; i < 32; ++i) out[pos++] = kHex[(parts[i / 16] >> (4 * (i % 16))) & 15];
  out[pos++] = '-';
  for (int i = 0; i < 16; ++i) out[pos++] = kHex[(parts[2] >> (4 * i)) & 15];
  out[pos++] = '-';
  out[pos++] = '0';
  out[pos++] = '1';
  out[pos] = '\0';
}

amqp_table_entry_t string_entry(const char* key, const char* value, std::size_t len) {
  amqp_table_entry_t e{};
  e.key = amqp_cstring_bytes(key);
  e.value.kind = AMQP_FIELD_KIND_UTF8;  // 'S', as amqp-rpc's headers
  e.value.value.bytes = amqp_bytes_t{len, const_cast<char*>(value)};
  return e;
}

// ---------------------------------------------------------------- the other echo server

// raw_serve with options: its queue declared with x-message-ttl, and replies that carry an
// expiration or a traceparent header (amqp-rpc's Server puts a traceparent on every reply).
struct ServeOptions {
  std::string queue;
  int queue_ttl_ms = 0;            // > 0: declared with x-message-ttl
  std::string reply_expiration;    // non-empty: on every reply
  bool reply_traceparent = false;  // a new span's traceparent on every reply
};

std::string echo_serve(const Broker& broker, const ServeOptions& o, int prefetch,
                       const std::atomic<bool>& stop) {
  std::string error;
  amqp_connection_state_t conn = raw_connect(broker, error);
  if (conn == nullptr) return error;
  amqp_basic_qos(conn, 1, 0, static_cast<std::uint16_t>(prefetch), 0);
  amqp_table_entry_t ttl{};
  ttl.key = amqp_cstring_bytes("x-message-ttl");
  ttl.value.kind = AMQP_FIELD_KIND_I32;
  ttl.value.value.i32 = o.queue_ttl_ms;
  const amqp_table_t args{1, &ttl};
  if (!raw_consume(conn, o.queue, o.queue_ttl_ms > 0 ? &args : nullptr)) {
    raw_close(conn);
    return "consume failed on " + o.queue;
  }
  std::mt19937_64 rng(42);
  char traceparent[56];
  while (!stop.load(std::memory_order_relaxed)) {
    amqp_envelope_t env;
    const Next next = raw_next_delivery(conn, env);
    if (next == Next::idle) continue;
    if (next == Next::failed) {
      error = "consume error on " + o.queue;
      break;
    }
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
    p.correlation_id = env.message.properties.correlation_id;
    if (!o.reply_expiration.empty()) {
      p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
      p.expiration = amqp_cstring_bytes(o.reply_expiration.c_str());
    }
    amqp_table_entry_t header{};
    if (o.reply_traceparent) {
      fill_traceparent(traceparent, rng);
      header = string_entry("traceparent", traceparent, 55);
      p._flags |= AMQP_BASIC_HEADERS_FLAG;
      p.headers = amqp_table_t{1, &header};
    }
    amqp_basic_publish(conn, 1, amqp_empty_bytes, env.message.properties.reply_to, 0, 0, &p,
                       env.message.body);
    amqp_basic_ack(conn, 1, env.delivery_tag, 0);
    amqp_destroy_envelope(&env);
  }
  raw_close(conn);
  return error;
}

// ---------------------------------------------------------------- variants

struct Variant {
  std::string key;
  std::string what;
  std::string queue = "pc.plain";
  std::string expiration;    // the request's expiration property
  bool deadline = false;     // x-rpc-deadline header
  bool traceparent = false;  // traceparent header
  bool user_id = false;      // user_id = the login (amqp-rpc's send_user_id)
  bool mandatory = false;
  int id_len = 8;            // correlation id: 8, 16 or 36 (a UUID) bytes
  bool confirms = false;     // publisher confirms on the client's channel
  std::string content_type;  // the content_type property
  bool amqprpc = false;      // not the raw client: amqp-rpc's Client, default options
};

std::vector<Variant> all_variants() {
  std::vector<Variant> v;
  auto add = [&v](std::string key, std::string what, auto set) {
    Variant x;
    x.key = std::move(key);
    x.what = std::move(what);
    set(x);
    v.push_back(std::move(x));
  };
  add("a", "none (baseline: 8-byte id, reply_to)", [](Variant&) {});
  add("b", "expiration \"30000\"", [](Variant& x) { x.expiration = "30000"; });
  add("c", "x-rpc-deadline header", [](Variant& x) { x.deadline = true; });
  add("d", "default headers: x-rpc-deadline + traceparent", [](Variant& x) {
    x.deadline = true;
    x.traceparent = true;
  });
  add("t", "traceparent header alone", [](Variant& x) { x.traceparent = true; });
  add("u", "user_id \"guest\" (send_user_id)", [](Variant& x) { x.user_id = true; });
  add("e", "mandatory", [](Variant& x) { x.mandatory = true; });
  add("f16", "16-byte correlation id", [](Variant& x) { x.id_len = 16; });
  add("f36", "36-byte correlation id (UUID)", [](Variant& x) { x.id_len = 36; });
  add("k", "content_type \"application/octet-stream\"",
      [](Variant& x) { x.content_type = "application/octet-stream"; });
  add("p", "publisher confirms", [](Variant& x) { x.confirms = true; });
  auto everything = [](Variant& x) {
    x.expiration = "30000";
    x.deadline = true;
    x.traceparent = true;
    x.user_id = true;
    x.mandatory = true;
    x.id_len = 36;
  };
  add("g", "all amqp-rpc sends: b + d + u + e + f36", everything);
  add("g-exp", "g without expiration", [&](Variant& x) {
    everything(x);
    x.expiration.clear();
  });
  add("R", "amqp-rpc Client (default options)", [](Variant& x) { x.amqprpc = true; });
  add("h-pol", "no expiration; queue TTL 30 s by policy",
      [](Variant& x) { x.queue = "pc.ttl-policy"; });
  add("h-arg", "no expiration; queue x-message-ttl 30 s",
      [](Variant& x) { x.queue = "pc.ttl-arg"; });
  add("h-pol+b", "expiration and queue TTL (policy)", [](Variant& x) {
    x.queue = "pc.ttl-policy";
    x.expiration = "30000";
  });
  add("i", "expiration on request and reply", [](Variant& x) {
    x.queue = "pc.reply-exp";
    x.expiration = "30000";
  });
  add("i0", "expiration on the reply alone", [](Variant& x) { x.queue = "pc.reply-exp"; });
  add("r", "replies carry traceparent (amqp-rpc's Server)",
      [](Variant& x) { x.queue = "pc.reply-trace"; });
  add("a-own", "none, against the copy of raw_serve", [](Variant& x) { x.queue = "pc.own"; });
  return v;
}

struct RunOutcome {
  Measure m;
  std::uint64_t returns = 0, acks = 0, nacks = 0;
  std::string error;
};

std::int64_t epoch_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Keeps `in_flight` calls going for warmup + seconds; measures the window after the warmup.
RunOutcome run_raw(const Broker& broker, const Variant& v, int in_flight, std::size_t size,
                   double warmup, double seconds) {
  RunOutcome out;
  amqp_connection_state_t conn = raw_connect(broker, out.error);
  if (conn == nullptr) return out;
  amqp_bytes_t reply_to = amqp_cstring_bytes("amq.rabbitmq.reply-to");
  amqp_basic_consume(conn, 1, reply_to, amqp_empty_bytes, 0, 1, 0, amqp_empty_table);
  if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
    out.error = "consume reply-to failed";
    raw_close(conn);
    return out;
  }
  if (v.confirms) {
    amqp_confirm_select(conn, 1);
    if (amqp_get_rpc_reply(conn).reply_type != AMQP_RESPONSE_NORMAL) {
      out.error = "confirm.select failed";
      raw_close(conn);
      return out;
    }
  }
  const std::string body(size, 'x');
  const amqp_bytes_t queue = amqp_cstring_bytes(v.queue.c_str());
  std::mt19937_64 rng(std::random_device{}());
  std::uint64_t next = 0, done = 0;
  char id[40];
  char traceparent[56];
  char deadline[24];
  auto make_id = [&](std::uint64_t seq) {
    static constexpr char kHex[] = "0123456789abcdef";
    if (v.id_len == 36) {
      // A version-4 UUID's shape; its last 12 hex digits are the sequence number.
      std::uint64_t hi = rng();
      std::string_view shape = "xxxxxxxx-xxxx-4xxx-yxxx-";
      for (int i = 0; i < 24; ++i) {
        char c = shape[i];
        id[i] = c == '-' ? '-' : c == '4' ? '4' : c == 'y' ? '8' : kHex[(hi >> (2 * i)) & 15];
      }
      for (int i = 0; i < 12; ++i) id[24 + i] = kHex[(seq >> (4 * (11 - i))) & 15];
      return 36;
    }
    for (int i = 0; i < v.id_len; ++i) id[i] = kHex[(seq >> (4 * (v.id_len - 1 - i))) & 15];
    return v.id_len;
  };
  auto seq_of = [&](amqp_bytes_t b) {
    const char* s = static_cast<const char*>(b.bytes);
    std::size_t from = b.len == 36 ? 24 : 0;
    std::uint64_t seq = 0;
    for (std::size_t i = from; i < b.len; ++i) {
      char c = s[i];
      seq = seq * 16 + static_cast<std::uint64_t>(c <= '9' ? c - '0' : c - 'a' + 10);
    }
    return seq;
  };
  auto publish = [&] {
    amqp_basic_properties_t p{};
    p._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
    p.correlation_id = amqp_bytes_t{static_cast<std::size_t>(make_id(next)), id};
    p.reply_to = reply_to;
    if (!v.expiration.empty()) {
      p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
      p.expiration = amqp_cstring_bytes(v.expiration.c_str());
    }
    if (v.user_id) {
      p._flags |= AMQP_BASIC_USER_ID_FLAG;
      p.user_id = amqp_cstring_bytes(broker.user.c_str());
    }
    if (!v.content_type.empty()) {
      p._flags |= AMQP_BASIC_CONTENT_TYPE_FLAG;
      p.content_type = amqp_cstring_bytes(v.content_type.c_str());
    }
    amqp_table_entry_t headers[2];
    int n = 0;
    if (v.deadline) {
      int len = std::snprintf(deadline, sizeof deadline, "%lld",
                              static_cast<long long>(epoch_ms() + 30'000));
      headers[n++] = string_entry("x-rpc-deadline", deadline, static_cast<std::size_t>(len));
    }
    if (v.traceparent) {
      fill_traceparent(traceparent, rng);
      headers[n++] = string_entry("traceparent", traceparent, 55);
    }
    if (n > 0) {
      p._flags |= AMQP_BASIC_HEADERS_FLAG;
      p.headers = amqp_table_t{n, headers};
    }
    ++next;
    return amqp_basic_publish(conn, 1, amqp_empty_bytes, queue, v.mandatory ? 1 : 0, 0, &p,
                              amqp_bytes_t{body.size(), const_cast<char*>(body.data())}) ==
           AMQP_STATUS_OK;
  };
  for (int i = 0; i < in_flight; ++i) publish();

  const auto start = Clock::now();
  const auto measure_from = start + std::chrono::duration<double>(warmup);
  const auto end = measure_from + std::chrono::duration<double>(seconds);
  bool measuring = false;
  Snapshot first;
  int pending = in_flight;
  while (pending > 0) {
    amqp_maybe_release_buffers(conn);
    amqp_envelope_t env;
    timeval tv{10, 0};
    amqp_rpc_reply_t r = amqp_consume_message(conn, &env, &tv, 0);
    if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
        r.library_error == AMQP_STATUS_UNEXPECTED_STATE) {
      // A frame other than a delivery: a confirm, or a returned message.
      amqp_frame_t frame;
      if (amqp_simple_wait_frame(conn, &frame) != AMQP_STATUS_OK) {
        out.error = "frame read failed";
        break;
      }
      if (frame.frame_type != AMQP_FRAME_METHOD) continue;
      switch (frame.payload.method.id) {
        case AMQP_BASIC_ACK_METHOD:
          ++out.acks;
          break;
        case AMQP_BASIC_NACK_METHOD:
          ++out.nacks;
          break;
        case AMQP_BASIC_RETURN_METHOD: {
          amqp_message_t msg;
          if (amqp_read_message(conn, frame.channel, &msg, 0).reply_type == AMQP_RESPONSE_NORMAL)
            amqp_destroy_message(&msg);
          ++out.returns;
          out.error = "a request was returned (no route)";
          break;
        }
        default:
          out.error = "unexpected method from the broker";
          pending = 0;
          break;
      }
      continue;
    }
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
      out.error = "no reply within 10 s";
      break;
    }
    const std::uint64_t seq = seq_of(env.message.properties.correlation_id);
    amqp_destroy_envelope(&env);
    if (seq >= next) {
      out.error = "a reply with an unknown correlation id";
      break;
    }
    --pending;
    ++done;
    const auto now = Clock::now();
    if (!measuring && now >= measure_from) {
      measuring = true;
      first = snapshot(done);
    }
    if (now < end) {
      if (!publish()) {
        out.error = "publish failed";
        break;
      }
      ++pending;
    } else if (measuring && out.m.calls == 0) {
      out.m = measure(first, snapshot(done));
    }
  }
  raw_close(conn);
  return out;
}

// The same load from amqp-rpc's Client (default ClientOptions, plain calls, no method).
RunOutcome run_amqprpc(const std::string& url, const Variant& v, int in_flight, std::size_t size,
                       double warmup, double seconds) {
  RunOutcome out;
  auto conn = amqprpc::ConnectionOptions::from_uri(url);
  if (!conn) {
    out.error = conn.status().to_string();
    return out;
  }
  amqprpc::ClientOptions o;
  o.connection = *conn;
  auto client = amqprpc::Client::connect(o);
  if (!client) {
    out.error = client.status().to_string();
    return out;
  }
  const std::string body(size, 'x');
  std::atomic<std::uint64_t> done{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable cv;
  int pending = 0;
  std::string error;
  std::function<void()> start_one;
  start_one = [&] {
    (*client)->async_call(v.queue, body, {}, [&](amqprpc::Reply r) {
      done.fetch_add(1, std::memory_order_relaxed);
      if (r.status.ok() && !stop.load(std::memory_order_relaxed)) {
        start_one();
        return;
      }
      std::lock_guard lock(mutex);
      if (!r.status.ok() && error.empty()) error = r.status.to_string();
      if (--pending == 0) cv.notify_all();
    });
  };
  {
    std::lock_guard lock(mutex);
    pending = in_flight;
  }
  for (int i = 0; i < in_flight; ++i) start_one();
  std::this_thread::sleep_for(std::chrono::duration<double>(warmup));
  Snapshot first = snapshot(done.load());
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  out.m = measure(first, snapshot(done.load()));
  stop = true;
  std::unique_lock lock(mutex);
  cv.wait_for(lock, std::chrono::seconds(40), [&] { return pending == 0; });
  out.error = error;
  return out;
}

// ---------------------------------------------------------------- driver

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

std::string fmt(double x, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, x);
  return buf;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, sep)) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// ---------------------------------------------------------------- in the broker's own code

// The part of the broker's work that depends on the properties, timed in the broker's VM with its
// own code (loaded into the node for the run, then deleted), free of the sockets' and
// schedulers' noise. A request (rabbit_channel's basic.publish, RabbitMQ 3.10): the publisher's
// channel decodes the properties (rabbit_binary_parser:ensure_content_decoded), rewrites reply_to
// for direct reply-to (maybe_set_fast_reply_to, which drops the encoded properties), checks
// expiration and user_id, looks up CC/BCC headers (rabbit_basic:header_routes); the queue parses
// the expiration again (rabbit_amqqueue_process:calculate_msg_expiry, min of it and the queue's
// TTL); the message is copied across three processes (channel, queue, consumer's channel,
// writer); the writer encodes the properties again. A reply: decoded and checked by the server's
// channel, copied twice (to the client's channel, its writer), sent with the bytes it came with.
// Each kind is timed over N messages, all kinds in turn, R times; run() returns
// {Leg, Kind, Round, NsPerMessage, PropertyBytes} tuples, less an empty loop's time.
constexpr const char* kMicroModule = R"ERL(
-module(pc_micro).
-export([run/2]).
run(N, R) ->
    Proto = rabbit_framing_amqp_0_9_1,
    TP = <<"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01">>,
    Dl = [{<<"x-rpc-deadline">>, longstr, <<"1764442800000">>}],
    Tp = [{<<"traceparent">>, longstr, TP}],
    Id8 = <<"0000002a">>,
    Id16 = <<"000000000000002a">>,
    Id36 = <<"6f1c2a9e-3b4d-4e5f-8a7b-00000000002a">>,
    RT = <<"amq.rabbitmq.reply-to">>,
    Req = [{a, p(undefined, undefined, Id8, RT, undefined, undefined), undefined},
           {b, p(undefined, undefined, Id8, RT, <<"30000">>, undefined), undefined},
           {c, p(undefined, Dl, Id8, RT, undefined, undefined), undefined},
           {d, p(undefined, Tp ++ Dl, Id8, RT, undefined, undefined), undefined},
           {t, p(undefined, Tp, Id8, RT, undefined, undefined), undefined},
           {u, p(undefined, undefined, Id8, RT, undefined, <<"guest">>), undefined},
           {f16, p(undefined, undefined, Id16, RT, undefined, undefined), undefined},
           {f36, p(undefined, undefined, Id36, RT, undefined, undefined), undefined},
           {k, p(<<"application/octet-stream">>, undefined, Id8, RT, undefined, undefined), undefined},
           {g, p(undefined, Tp ++ Dl, Id36, RT, <<"30000">>, <<"guest">>), undefined},
           {'g-exp', p(undefined, Tp ++ Dl, Id36, RT, undefined, <<"guest">>), undefined},
           {h, p(undefined, undefined, Id8, RT, undefined, undefined), 30000}],
    Rep = [{ra, p(undefined, undefined, Id8, undefined, undefined, undefined)},
           {rb, p(undefined, undefined, Id8, undefined, <<"30000">>, undefined)},
           {rt, p(undefined, Tp, Id8, undefined, undefined, undefined)},
           {rg, p(undefined, Tp, Id36, undefined, undefined, undefined)}],
    Body = <<"xxxxxxxxxxxxxxxx">>,
    Suffix = binary:copy(<<"g">>, 72),
    lists:append(
      [begin
           Empty = time(N, fun() -> ok end),
           [{request, K, I, round((time(N, fun() -> request(Proto, Bin, Body, Suffix, TTL) end) - Empty) * 1000), byte_size(Bin)}
            || {K, P, TTL} <- Req, Bin <- [iolist_to_binary(Proto:encode_properties(P))]] ++
           [{reply, K, I, round((time(N, fun() -> reply(Proto, Bin, Body) end) - Empty) * 1000), byte_size(Bin)}
            || {K, P} <- Rep, Bin <- [iolist_to_binary(Proto:encode_properties(P))]]
       end || I <- lists:seq(1, R)]).
p(ContentType, Headers, Id, ReplyTo, Expiration, User) ->
    {'P_basic', ContentType, undefined, Headers, undefined, undefined, Id, ReplyTo, Expiration,
     undefined, undefined, undefined, User, undefined, undefined}.
request(Proto, Bin, Body, Suffix, TTL) ->
    C1 = rabbit_binary_parser:ensure_content_decoded({content, 60, none, Bin, Proto, [Body]}),
    P2 = setelement(8, element(3, C1), <<"amq.rabbitmq.reply-to.", Suffix/binary>>),
    C2 = rabbit_binary_generator:clear_encoded_content(setelement(3, C1, P2)),
    {ok, _} = rabbit_basic:parse_expiration(P2),
    _ = rabbit_basic:header_routes(element(4, P2)),
    {ok, MsgTTL} = rabbit_basic:parse_expiration(element(3, C2)),
    _ = case lists:min([TTL, MsgTTL]) of
            undefined -> undefined;
            T -> os:system_time(micro_seconds) + T * 1000
        end,
    _ = rabbit_binary_generator:ensure_content_encoded(copy(copy(copy(C2))), Proto),
    ok.
reply(Proto, Bin, Body) ->
    C1 = rabbit_binary_parser:ensure_content_decoded({content, 60, none, Bin, Proto, [Body]}),
    {ok, _} = rabbit_basic:parse_expiration(element(3, C1)),
    _ = rabbit_basic:header_routes(element(4, element(3, C1))),
    _ = rabbit_binary_generator:ensure_content_encoded(copy(copy(C1)), Proto),
    ok.
copy(T) ->
    self() ! {copy, T},
    receive {copy, X} -> X end.
time(N, F) ->
    erlang:garbage_collect(),
    {T, ok} = timer:tc(fun() -> loop(N, F) end),
    T / N.
loop(0, _) -> ok;
loop(I, F) -> F(), loop(I - 1, F).
)ERL";

// Compiles kMicroModule in the broker (rabbitmqctl eval), runs it, deletes it; prints each kind's
// median [min-max] ns per message, and its difference from the baseline's.
int run_micro(const std::string& ctl, int n, int rounds) {
  std::string src;
  for (char c : std::string(kMicroModule)) {
    if (c == '"' || c == '\\') src += '\\';
    src += c == '\n' ? ' ' : c;
  }
  const std::string expr =
      "{ok, Ts, _} = erl_scan:string(\"" + src +
      "\"), Forms = [begin {ok, F} = erl_parse:parse_form(X), F end || X <- (fun Split([], _, "
      "Out) -> lists:reverse(Out); Split([{dot, _} = D | Rest], Acc, Out) -> Split(Rest, [], "
      "[lists:reverse([D | Acc]) | Out]); Split([T | Rest], Acc, Out) -> Split(Rest, [T | Acc], "
      "Out) end)(Ts, [], [])], {ok, M, B} = compile:forms(Forms, [return_errors]), {module, M} = "
      "code:load_binary(M, \"pc_micro.erl\", B), Result = M:run(" +
      std::to_string(n) + ", " + std::to_string(rounds) +
      "), code:purge(M), code:delete(M), code:purge(M), Result.";
  char path[] = "/tmp/amqp-rpc-property-cost-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0) return 1;
  {
    std::ofstream f(path);
    f << expr;
  }
  close(fd);
  const std::string cmd = ctl + " eval \"$(cat " + path + ")\"";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  if (pipe != nullptr) {
    char buf[4096];
    while (std::size_t got = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, got);
    if (pclose(pipe) != 0) out.clear();
  }
  std::remove(path);
  // {request,a,1,2763,33} ... ('g-exp' comes quoted)
  std::map<std::pair<std::string, std::string>, std::vector<double>> ns;
  std::map<std::pair<std::string, std::string>, int> bytes;
  std::vector<std::pair<std::string, std::string>> order;
  std::size_t pos = 0;
  while ((pos = out.find('{', pos)) != std::string::npos) {
    const std::size_t end = out.find('}', pos);
    if (end == std::string::npos) break;
    std::string item = out.substr(pos + 1, end - pos - 1);
    pos = end;
    std::erase_if(item, [](char c) { return c == '\'' || c == ' ' || c == '\n'; });
    auto f = split(item, ',');
    if (f.size() != 5) continue;
    auto key = std::make_pair(f[0], f[1]);
    if (!ns.count(key)) order.push_back(key);
    ns[key].push_back(std::atof(f[3].c_str()));
    bytes[key] = std::atoi(f[4].c_str());
  }
  if (order.empty()) {
    std::cerr << "micro: no result from the broker:\n" << out << "\n";
    return 1;
  }
  std::cout
      << "\n| leg | kind | property bytes | broker ns/message median [min–max] | vs baseline |\n"
         "|---|---|---:|---:|---:|\n";
  for (const auto& key : order) {
    const auto& xs = ns[key];
    const double base = median(ns[{key.first, key.first == "request" ? "a" : "ra"}]);
    const double m = median(xs);
    std::cout << "| " << key.first << " | " << key.second << " | " << bytes[key] << " | "
              << fmt(m, 0) << " [" << fmt(*std::min_element(xs.begin(), xs.end()), 0) << "–"
              << fmt(*std::max_element(xs.begin(), xs.end()), 0) << "] | "
              << (m - base >= 0 ? "+" : "") << fmt(m - base, 0) << " |\n";
  }
  return 0;
}

int usage() {
  std::cerr
      << "usage: amqp-rpc-property-cost --url AMQP_URL --broker-pid PID [options]\n"
         "  --variants LIST     comma-separated keys (default: all; 'list' prints them)\n"
         "  --in-flight N,...   calls in flight (default 16)\n"
         "  --size BYTES        body size (default 16)\n"
         "  --seconds S         measured window per run (default 3)\n"
         "  --warmup S          unmeasured start of each run (default 0.5)\n"
         "  --repeat N          runs of each variant, alternating (default 5)\n"
         "  --max-other CORES   a run with more other load is run again (default 0.15)\n"
         "  --retries N         at most this many extra attempts per run (default 3)\n"
         "  --ctl CMD           a rabbitmqctl command line for this node (sets the TTL policy\n"
         "                      of h-pol, e.g. \"scripts/broker.sh ctl\"; without: no h-pol)\n"
         "  --in-order          every round in the order given (default: shuffled)\n"
         "  --micro N,R         instead: time the broker's own property handling in its VM\n"
         "                      (needs --ctl), N messages per timing, R rounds\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, variants_arg, ctl;
  std::vector<int> in_flights{16};
  std::size_t size = 16;
  double seconds = 3, warmup = 0.5, max_other = 0.15;
  int repeat = 5, retries = 3, micro_n = 0, micro_rounds = 0;
  bool shuffle = true;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << a << " needs a value\n";
        std::exit(usage());
      }
      return argv[++i];
    };
    if (a == "--url") {
      url = value();
    } else if (a == "--broker-pid") {
      g_broker_pid = std::atoi(value().c_str());
    } else if (a == "--variants") {
      variants_arg = value();
    } else if (a == "--in-flight") {
      in_flights.clear();
      for (auto& s : split(value(), ',')) in_flights.push_back(std::atoi(s.c_str()));
    } else if (a == "--size") {
      size = std::strtoul(value().c_str(), nullptr, 10);
    } else if (a == "--seconds") {
      seconds = std::atof(value().c_str());
    } else if (a == "--warmup") {
      warmup = std::atof(value().c_str());
    } else if (a == "--repeat") {
      repeat = std::atoi(value().c_str());
    } else if (a == "--max-other") {
      max_other = std::atof(value().c_str());
    } else if (a == "--retries") {
      retries = std::atoi(value().c_str());
    } else if (a == "--in-order") {
      shuffle = false;
    } else if (a == "--micro") {
      auto nr = split(value(), ',');
      micro_n = std::atoi(nr.at(0).c_str());
      micro_rounds = nr.size() > 1 ? std::atoi(nr[1].c_str()) : 5;
    } else if (a == "--ctl") {
      ctl = value();
    } else {
      return usage();
    }
  }
  std::vector<Variant> variants;
  const auto every = all_variants();
  if (variants_arg == "list") {
    for (const auto& v : every) std::cout << v.key << "\t" << v.what << "\n";
    return 0;
  }
  if (variants_arg.empty()) {
    variants = every;
  } else {
    for (const auto& k : split(variants_arg, ',')) {
      auto it =
          std::find_if(every.begin(), every.end(), [&](const Variant& v) { return v.key == k; });
      if (it == every.end()) {
        std::cerr << "unknown variant '" << k << "'\n";
        return 2;
      }
      variants.push_back(*it);
    }
  }
  if (micro_n > 0) {
    if (ctl.empty()) return usage();
    return run_micro(ctl, micro_n, micro_rounds);
  }
  if (url.empty() || g_broker_pid <= 0 || in_flights.empty() || repeat < 1) return usage();
  auto parsed = amqprpc::ConnectionOptions::from_uri(url);
  if (!parsed) {
    std::cerr << parsed.status().to_string() << "\n";
    return 2;
  }
  const Broker& broker = *parsed;
  if (ctl.empty()) {
    std::erase_if(variants, [](const Variant& v) { return v.queue == "pc.ttl-policy"; });
  } else {
    const std::string cmd = ctl +
                            " set_policy pc-ttl '^pc\\.ttl-policy$' '{\"message-ttl\":30000}' "
                            "--apply-to queues >/dev/null";
    if (std::system(cmd.c_str()) != 0) {
      std::cerr << "could not set the TTL policy: " << cmd << "\n";
      return 1;
    }
  }

  // The servers: raw_serve on the plain and policy queues, its copy on the others. All run for
  // the whole session; the idle ones wait in a 100 ms read and cost the broker nothing.
  constexpr int kPrefetch = 512;  // more than the largest concurrency, as bench_main's
  std::atomic<bool> stop{false};
  std::vector<std::thread> servers;
  std::mutex errors_mutex;
  std::vector<std::string> server_errors;
  auto add_server = [&](std::function<std::string()> serve) {
    servers.emplace_back([&, serve] {
      std::string error = serve();
      if (!error.empty()) {
        std::lock_guard lock(errors_mutex);
        server_errors.push_back(error);
      }
    });
    clockid_t c;
    if (pthread_getcpuclockid(servers.back().native_handle(), &c) == 0) {
      std::lock_guard lock(server_clocks_mutex);
      server_clocks.push_back(c);
    }
  };
  add_server([&] { return bench::raw_serve(*parsed, "pc.plain", kPrefetch, stop); });
  if (!ctl.empty())
    add_server([&] { return bench::raw_serve(*parsed, "pc.ttl-policy", kPrefetch, stop); });
  ServeOptions ttl_arg;
  ttl_arg.queue = "pc.ttl-arg";
  ttl_arg.queue_ttl_ms = 30'000;
  ServeOptions reply_exp;
  reply_exp.queue = "pc.reply-exp";
  reply_exp.reply_expiration = "30000";
  ServeOptions reply_trace;
  reply_trace.queue = "pc.reply-trace";
  reply_trace.reply_traceparent = true;
  ServeOptions own;
  own.queue = "pc.own";
  for (const ServeOptions* o : {&ttl_arg, &reply_exp, &reply_trace, &own})
    add_server([&, o] { return echo_serve(broker, *o, kPrefetch, stop); });
  std::this_thread::sleep_for(std::chrono::seconds(1));  // queues declared, consumers up

  struct Kept {
    Measure m;
    int attempts = 0;
  };
  std::map<std::pair<int, std::string>, std::vector<Kept>> results;
  int status = 0;
  std::cout
      << "#in_flight\tvariant\trep\tattempt\tcalls\tcalls/s\tbroker_us\tbroker_sched_us\t"
         "client_us\tserver_us\tother_cores\tsteal_pct\tbroker_cores\treads\twrites\tswitches\n";
  for (int n : in_flights) {
    for (int rep = 1; rep <= repeat && status == 0; ++rep) {
      // Every round in its own order (the same on every invocation), so that no variant always
      // follows the same one or opens the round.
      std::vector<const Variant*> round;
      for (const auto& v : variants) round.push_back(&v);
      if (shuffle)
        std::shuffle(round.begin(), round.end(), std::mt19937(static_cast<unsigned>(rep)));
      for (const Variant* vp : round) {
        const Variant& v = *vp;
        Kept best;
        bool have = false;
        for (int attempt = 1; attempt <= 1 + retries; ++attempt) {
          RunOutcome o = v.amqprpc ? run_amqprpc(url, v, n, size, warmup, seconds)
                                   : run_raw(broker, v, n, size, warmup, seconds);
          if (!o.error.empty() || o.m.calls == 0) {
            std::cerr << "variant " << v.key << ": " << (o.error.empty() ? "no calls" : o.error)
                      << "\n";
            status = 1;
            break;
          }
          std::cout << n << "\t" << v.key << "\t" << rep << "\t" << attempt << "\t" << o.m.calls
                    << "\t" << fmt(o.m.calls_per_s(), 0) << "\t" << fmt(o.m.broker_us, 1) << "\t"
                    << fmt(o.m.broker_sched_us, 1) << "\t" << fmt(o.m.client_us, 1) << "\t"
                    << fmt(o.m.server_us, 1) << "\t" << fmt(o.m.other_cores, 2) << "\t"
                    << fmt(o.m.steal_pct, 1) << "\t" << fmt(o.m.broker_cores, 2) << "\t"
                    << fmt(o.m.reads, 2) << "\t" << fmt(o.m.writes, 2) << "\t"
                    << fmt(o.m.switches, 2) << std::endl;
          if (!have || o.m.other_cores < best.m.other_cores) best = {o.m, attempt};
          have = true;
          if (o.m.other_cores <= max_other) break;
        }
        if (status != 0) break;
        results[{n, v.key}].push_back(best);
      }
    }
  }
  stop = true;
  for (auto& t : servers) t.join();
  if (!ctl.empty()) {
    const std::string cmd = ctl + " clear_policy pc-ttl >/dev/null";
    if (std::system(cmd.c_str()) != 0) std::cerr << "could not clear the TTL policy\n";
  }
  for (const auto& e : server_errors) {
    std::cerr << "server: " << e << "\n";
    status = 1;
  }

  // The table: medians of the kept runs, [min-max] of broker CPU, and the difference of the
  // medians from the baseline's (a).
  auto stat = [](const std::vector<Kept>& runs, double Measure::*field) {
    std::vector<double> xs;
    for (const auto& r : runs) xs.push_back(r.m.*field);
    return xs;
  };
  std::cout << "\n| in flight | variant | what | broker µs/call median [min–max] | vs a, paired "
               "(median of per-round differences) | "
               "broker µs/call (schedstat) | calls/s | client µs/call | server µs/call | "
               "other load (cores) | runs redone |\n"
               "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
  for (int n : in_flights) {
    auto base = results.find({n, "a"});
    for (const auto& v : variants) {
      auto it = results.find({n, v.key});
      if (it == results.end()) continue;
      const auto& runs = it->second;
      auto broker_us = stat(runs, &Measure::broker_us);
      auto sched_us = stat(runs, &Measure::broker_sched_us);
      std::vector<double> cps;
      for (const auto& r : runs) cps.push_back(r.m.calls_per_s());
      int redone = 0;
      for (const auto& r : runs) redone += r.attempts > 1;
      // Paired: each repetition's difference from the baseline's run of the same round.
      std::vector<double> diffs;
      if (base != results.end()) {
        for (std::size_t i = 0; i < runs.size() && i < base->second.size(); ++i)
          diffs.push_back(runs[i].m.broker_sched_us - base->second[i].m.broker_sched_us);
      }
      const double delta = median(diffs);
      std::cout << "| " << n << " | " << v.key << " | " << v.what << " | "
                << fmt(median(broker_us), 1) << " ["
                << fmt(*std::min_element(broker_us.begin(), broker_us.end()), 1) << "–"
                << fmt(*std::max_element(broker_us.begin(), broker_us.end()), 1) << "] | "
                << (diffs.empty() ? "" : (delta >= 0 ? "+" : "") + fmt(delta, 1)) << " | "
                << fmt(median(sched_us), 1) << " ["
                << fmt(*std::min_element(sched_us.begin(), sched_us.end()), 1) << "–"
                << fmt(*std::max_element(sched_us.begin(), sched_us.end()), 1) << "] | "
                << fmt(median(cps), 0) << " | " << fmt(median(stat(runs, &Measure::client_us)), 1)
                << " | " << fmt(median(stat(runs, &Measure::server_us)), 1) << " | "
                << fmt(median(stat(runs, &Measure::other_cores)), 2) << " | " << redone << " |\n";
    }
  }
  return status;
}
