#include "amqp/table.hpp"

namespace amqprpc::detail::amqp {
namespace {

std::string field_to_string(const amqp_field_value_t& v, int depth) {
  switch (v.kind) {
    case AMQP_FIELD_KIND_UTF8:
    case AMQP_FIELD_KIND_BYTES:
      return to_string(v.value.bytes);
    case AMQP_FIELD_KIND_BOOLEAN:
      return v.value.boolean ? "true" : "false";
    case AMQP_FIELD_KIND_I8:
      return std::to_string(v.value.i8);
    case AMQP_FIELD_KIND_U8:
      return std::to_string(v.value.u8);
    case AMQP_FIELD_KIND_I16:
      return std::to_string(v.value.i16);
    case AMQP_FIELD_KIND_U16:
      return std::to_string(v.value.u16);
    case AMQP_FIELD_KIND_I32:
      return std::to_string(v.value.i32);
    case AMQP_FIELD_KIND_U32:
      return std::to_string(v.value.u32);
    case AMQP_FIELD_KIND_I64:
      return std::to_string(v.value.i64);
    case AMQP_FIELD_KIND_U64:
    case AMQP_FIELD_KIND_TIMESTAMP:
      return std::to_string(v.value.u64);
    case AMQP_FIELD_KIND_F32:
      return std::to_string(v.value.f32);
    case AMQP_FIELD_KIND_F64:
      return std::to_string(v.value.f64);
    case AMQP_FIELD_KIND_DECIMAL: {
      std::string digits = std::to_string(v.value.decimal.value);
      unsigned places = v.value.decimal.decimals;
      if (places == 0) return digits;
      const bool negative = !digits.empty() && digits[0] == '-';
      if (negative) digits.erase(0, 1);
      if (digits.size() <= places) digits = std::string(places - digits.size() + 1, '0') + digits;
      // Built piece by piece: GCC 12 at -O3 warns (falsely, -Wrestrict) on string::insert here.
      std::string out;
      if (negative) out += '-';
      out.append(digits, 0, digits.size() - places);
      out += '.';
      out.append(digits, digits.size() - places, places);
      return out;
    }
    case AMQP_FIELD_KIND_ARRAY: {
      if (depth >= 4) return "[...]";
      std::string out = "[";
      for (int i = 0; i < v.value.array.num_entries; ++i) {
        if (i > 0) out += ',';
        out += field_to_string(v.value.array.entries[i], depth + 1);
      }
      return out + "]";
    }
    case AMQP_FIELD_KIND_TABLE: {
      if (depth >= 4) return "{...}";
      std::string out = "{";
      for (int i = 0; i < v.value.table.num_entries; ++i) {
        if (i > 0) out += ',';
        const amqp_table_entry_t& e = v.value.table.entries[i];
        out += to_string(e.key) + "=" + field_to_string(e.value, depth + 1);
      }
      return out + "}";
    }
    default:
      return {};  // void
  }
}

}  // namespace

amqp_bytes_t as_bytes(std::string_view s) {
  amqp_bytes_t b;
  b.len = s.size();
  b.bytes = const_cast<char*>(s.data());
  return b;
}

std::string to_string(amqp_bytes_t b) {
  return b.len == 0 ? std::string{} : std::string(static_cast<const char*>(b.bytes), b.len);
}

Headers headers_from_table(const amqp_table_t& table) {
  Headers out;
  for (int i = 0; i < table.num_entries; ++i) {
    const amqp_table_entry_t& e = table.entries[i];
    out.emplace(to_string(e.key), field_to_string(e.value, 0));
  }
  return out;
}

std::string encode_table(const amqp_table_t& table) {
  if (table.num_entries == 0) return {};
  std::string out(1024, '\0');
  for (;;) {
    amqp_bytes_t buffer{out.size(), out.data()};
    std::size_t offset = 0;
    int rc = amqp_encode_table(buffer, const_cast<amqp_table_t*>(&table), &offset);
    if (rc == AMQP_STATUS_OK) {
      out.resize(offset);
      return out;
    }
    if (rc != AMQP_STATUS_TABLE_TOO_BIG || out.size() > (64u << 20)) return {};
    out.resize(out.size() * 4);
  }
}

TableView::TableView(const Headers& headers, std::string_view encoded_base)
    : TableView([&] {
        PropertiesView v;
        v.headers = &headers;
        v.wire_headers = encoded_base;
        return v;
      }()) {}

TableView::TableView(const PropertiesView& props) {
  amqp_table_t base{};
  if (!props.wire_headers.empty()) {
    init_amqp_pool(&pool_, 4096);
    pool_used_ = true;
    std::size_t offset = 0;
    amqp_bytes_t bytes{props.wire_headers.size(), const_cast<char*>(props.wire_headers.data())};
    if (amqp_decode_table(bytes, &pool_, &base, &offset) != AMQP_STATUS_OK) base = {};
  }
  const std::size_t most = static_cast<std::size_t>(base.num_entries) +
                           (props.headers != nullptr ? props.headers->size() : 0) +
                           props.added.size();
  if (most > kInPlace) {
    on_heap_.resize(most);
    entries_ = on_heap_.data();
  }
  for (int i = 0; i < base.num_entries; ++i) {
    const amqp_bytes_t& key = base.entries[i].key;
    if (!props.names(std::string_view(static_cast<const char*>(key.bytes), key.len))) {
      add(base.entries[i]);
    }
  }
  props.for_each_header([&](std::string_view key, std::string_view value) {
    amqp_table_entry_t e;
    e.key = as_bytes(key);
    e.value.kind = AMQP_FIELD_KIND_UTF8;
    e.value.value.bytes = as_bytes(value);
    add(e);
  });
  table_.entries = entries_;
}

TableView::~TableView() {
  if (pool_used_) empty_amqp_pool(&pool_);
}

}  // namespace amqprpc::detail::amqp
