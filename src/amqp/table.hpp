// The field-table codec: AMQP tables to our text headers and back (the role of rabbitmq-c's
// amqp_table.c, one level up).
#pragma once

#include <amqp.h>

#include <array>
#include <string>
#include <string_view>
#include <vector>

#include "amqp/message.hpp"
#include "amqprpc/message.hpp"

namespace amqprpc::detail::amqp {

// A view of a string as rabbitmq-c bytes (no copy: the string must outlive the use).
amqp_bytes_t as_bytes(std::string_view s);
// A copy of rabbitmq-c bytes.
std::string to_string(amqp_bytes_t b);

// Application headers as text: strings as they are, numbers in decimal, booleans as
// true/false, decimals with the point placed, arrays as [a,b] and tables as {k=v}, nested at
// most a few levels (deeper parts become "...").
Headers headers_from_table(const amqp_table_t& table);

// A table in AMQP encoding (empty when the table is).
std::string encode_table(const amqp_table_t& table);

// Headers as an AMQP table of long strings, optionally on top of an encoded table whose
// entries `headers` add to or replace. Views its inputs: they must outlive the table.
class TableView {
 public:
  explicit TableView(const Headers& headers, std::string_view encoded_base = {});
  // The headers a message with these properties carries: wire_headers' entries with the
  // others' added or replacing theirs (PropertiesView).
  explicit TableView(const PropertiesView& props);
  ~TableView();
  TableView(const TableView&) = delete;
  TableView& operator=(const TableView&) = delete;
  const amqp_table_t& table() const { return table_; }

 private:
  void add(const amqp_table_entry_t& e) { entries_[table_.num_entries++] = e; }

  // A request's or reply's few headers fit in place: no allocation on every message.
  static constexpr std::size_t kInPlace = 8;
  std::array<amqp_table_entry_t, kInPlace> in_place_;
  std::vector<amqp_table_entry_t> on_heap_;  // for more than kInPlace
  amqp_table_entry_t* entries_ = in_place_.data();
  amqp_table_t table_{};
  amqp_pool_t pool_{};  // the decoded base table's memory
  bool pool_used_ = false;
};

}  // namespace amqprpc::detail::amqp
