#include "amqp/frames.hpp"

#include <amqp.h>
#include <gtest/gtest.h>

#include <string>

#include "amqp/table.hpp"

using namespace amqprpc::detail::amqp;
using amqprpc::Headers;

namespace {

amqp_frame_t header_frame(amqp_basic_properties_t& props, std::uint64_t body_size) {
  amqp_frame_t f{};
  f.frame_type = AMQP_FRAME_HEADER;
  f.channel = 1;
  f.payload.properties.class_id = AMQP_BASIC_CLASS;
  f.payload.properties.body_size = body_size;
  f.payload.properties.decoded = &props;
  return f;
}

amqp_frame_t body_frame(std::string_view part) {
  amqp_frame_t f{};
  f.frame_type = AMQP_FRAME_BODY;
  f.channel = 1;
  f.payload.body_fragment.len = part.size();
  f.payload.body_fragment.bytes = const_cast<char*>(part.data());
  return f;
}

}  // namespace

TEST(FrameAssembler, ADeliveryIsCompleteWithItsLastBodyFrame) {
  FrameAssembler a;
  Delivery d;
  d.delivery_tag = 7;
  a.begin(std::move(d));
  amqp_basic_properties_t props{};
  props._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
  props.correlation_id = amqp_cstring_bytes("corr");
  EXPECT_EQ(a.add(header_frame(props, 10)), nullptr);
  EXPECT_EQ(a.add(body_frame("hello")), nullptr);
  auto done = a.add(body_frame("world"));
  ASSERT_NE(done, nullptr);
  auto* delivery = std::get_if<Delivery>(done);
  ASSERT_NE(delivery, nullptr);
  EXPECT_EQ(delivery->delivery_tag, 7u);
  EXPECT_EQ(delivery->props.correlation_id, "corr");
  EXPECT_EQ(delivery->body, "helloworld");
  EXPECT_EQ(a.add(body_frame("stray")), nullptr) << "nothing begun: ignored";
}

TEST(FrameAssembler, AnEmptyBodyIsCompleteWithItsHeader) {
  FrameAssembler a;
  Returned r;
  r.reply_code = 312;
  a.begin(std::move(r));
  amqp_basic_properties_t props{};
  auto done = a.add(header_frame(props, 0));
  ASSERT_NE(done, nullptr);
  ASSERT_NE(std::get_if<Returned>(done), nullptr);
  EXPECT_EQ(std::get<Returned>(*done).reply_code, 312);
}

TEST(FrameAssembler, ABodyBeforeItsHeaderIsIgnored) {
  FrameAssembler a;
  a.begin(Delivery{});
  EXPECT_EQ(a.add(body_frame("early")), nullptr);
  amqp_basic_properties_t props{};
  EXPECT_EQ(a.add(header_frame(props, 3)), nullptr);
  auto done = a.add(body_frame("abc"));
  ASSERT_NE(done, nullptr);
  EXPECT_EQ(std::get<Delivery>(*done).body, "abc");
}

TEST(FrameAssembler, AHeaderOfAnotherClassEndsTheMessage) {
  // Decoded as another class's properties, it cannot be read as basic ones.
  FrameAssembler a;
  a.begin(Delivery{});
  amqp_basic_properties_t props{};
  amqp_frame_t exchange_header = header_frame(props, 0);
  exchange_header.payload.properties.class_id = 40;
  EXPECT_EQ(a.add(exchange_header), nullptr);
  EXPECT_EQ(a.add(header_frame(props, 0)), nullptr) << "nothing begun any more";
}

TEST(FrameAssembler, AHugeAnnouncedBodySizeIsNotAllocatedUpFront) {
  FrameAssembler a;
  a.begin(Delivery{});
  amqp_basic_properties_t props{};
  EXPECT_EQ(a.add(header_frame(props, std::uint64_t{1} << 62)), nullptr);
  EXPECT_EQ(a.add(body_frame("only this came")), nullptr) << "incomplete, and no crash";
}

TEST(FrameAssembler, PropertiesAndHeadersBecomeOurValues) {
  amqp_table_entry_t entries[2];
  entries[0].key = amqp_cstring_bytes("n");
  entries[0].value.kind = AMQP_FIELD_KIND_I32;
  entries[0].value.value.i32 = -5;
  entries[1].key = amqp_cstring_bytes("s");
  entries[1].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[1].value.value.bytes = amqp_cstring_bytes("text");
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_PRIORITY_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
  p.headers = {2, entries};
  p.priority = 3;
  p.reply_to = amqp_cstring_bytes("q");
  Properties out;
  read_properties(p, /*keep_wire_headers=*/false, out);
  EXPECT_EQ(out.headers.at("n"), "-5");
  EXPECT_EQ(out.headers.at("s"), "text");
  EXPECT_EQ(out.priority, 3);
  EXPECT_EQ(out.reply_to, "q");
  EXPECT_TRUE(out.correlation_id.empty());
}

TEST(FrameAssembler, ASecondHeaderReplacesTheFirstsPropertiesAndAFinishedMessageTakesNoMore) {
  FrameAssembler a;
  a.begin(Delivery{});
  amqp_basic_properties_t first{};
  first._flags = AMQP_BASIC_CORRELATION_ID_FLAG | AMQP_BASIC_REPLY_TO_FLAG;
  first.correlation_id = amqp_cstring_bytes("one");
  first.reply_to = amqp_cstring_bytes("q1");
  EXPECT_EQ(a.add(header_frame(first, 2)), nullptr);
  amqp_basic_properties_t second{};
  second._flags = AMQP_BASIC_CORRELATION_ID_FLAG;
  second.correlation_id = amqp_cstring_bytes("two");
  EXPECT_EQ(a.add(header_frame(second, 2)), nullptr);
  auto done = a.add(body_frame("ok"));
  ASSERT_NE(done, nullptr);
  const Delivery& d = std::get<Delivery>(*done);
  EXPECT_EQ(d.props.correlation_id, "two");
  EXPECT_EQ(d.props.reply_to, "") << "nothing of the first header is left";
  EXPECT_EQ(a.add(header_frame(second, 0)), nullptr) << "finished: a new message must begin";
  EXPECT_EQ(a.add(body_frame("more")), nullptr);
}

namespace {

Headers numbered(int n, const std::string& prefix) {
  Headers h;
  for (int i = 0; i < n; ++i) h["k" + std::to_string(i)] = prefix + std::to_string(i);
  return h;
}

}  // namespace

TEST(TableView, FewOrManyHeadersBecomeATableOfTextFieldsAllOfThem) {
  for (int n : {0, 1, 8, 9, 40}) {
    const Headers h = numbered(n, "v");
    TableView view(h);
    EXPECT_EQ(view.table().num_entries, n);
    EXPECT_EQ(headers_from_table(view.table()), h) << n << " headers";
  }
}

TEST(TableView, OverAnEncodedBaseOurHeadersReplaceItsFieldsOfTheSameNameAndKeepTheRest) {
  // The base: 10 fields (k0..k9 = "b0".."b9"), as a message's header table arrived.
  const Headers base = numbered(10, "b");
  TableView base_view(base);
  const std::string encoded = encode_table(base_view.table());
  Headers ours{{"k3", "new3"}, {"k7", "new7"}, {"extra", "x"}};
  TableView view(ours, encoded);
  Headers expected = base;
  for (const auto& [k, v] : ours) expected[k] = v;
  EXPECT_EQ(view.table().num_entries, 11);
  EXPECT_EQ(headers_from_table(view.table()), expected);
}

TEST(TableView, AddedHeadersReplaceTheMapsAndBothReplaceTheBasesEachNameOnce) {
  const Headers base = numbered(4, "b");  // k0..k3
  TableView base_view(base);
  const std::string encoded = encode_table(base_view.table());
  PropertiesView props;
  props.wire_headers = encoded;
  const Headers ours{{"k1", "map1"}, {"k2", "map2"}, {"m", "map"}};
  props.headers = &ours;
  const HeaderView added[] = {{"k2", "added2"}, {"k3", "added3"}, {"a", "added"}};
  props.added = added;
  TableView view(props);
  const Headers expected{{"k0", "b0"},     {"k1", "map1"}, {"k2", "added2"},
                         {"k3", "added3"}, {"m", "map"},   {"a", "added"}};
  EXPECT_EQ(view.table().num_entries, 6);
  EXPECT_EQ(headers_from_table(view.table()), expected);
  // A copy of the view holds the same, less the base (kept as it is, encoded).
  Properties copy = to_properties(props);
  EXPECT_EQ(
      copy.headers,
      (Headers{{"k1", "map1"}, {"k2", "added2"}, {"k3", "added3"}, {"m", "map"}, {"a", "added"}}));
  EXPECT_EQ(copy.wire_headers, props.wire_headers);
}

namespace {

// A basic header's property list as rabbitmq-c encodes it for the wire.
std::string encoded_properties(amqp_basic_properties_t& props) {
  std::string out(4096, '\0');
  const int n =
      amqp_encode_properties(AMQP_BASIC_CLASS, &props, amqp_bytes_t{out.size(), out.data()});
  EXPECT_GT(n, 0);
  out.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  return out;
}

}  // namespace

TEST(HeaderTableIn, FindsTheTableAfterTheShortStringsBeforeItAndNothingInACutList) {
  amqp_table_entry_t entries[2];
  entries[0].key = amqp_cstring_bytes("x-rpc-deadline");
  entries[0].value.kind = AMQP_FIELD_KIND_UTF8;
  entries[0].value.value.bytes = amqp_cstring_bytes("1234567890123");
  entries[1].key = amqp_cstring_bytes("n");
  entries[1].value.kind = AMQP_FIELD_KIND_I32;
  entries[1].value.value.i32 = 7;
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_CONTENT_ENCODING_FLAG |
             AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_CORRELATION_ID_FLAG;
  p.content_type = amqp_cstring_bytes("application/json");
  p.content_encoding = amqp_cstring_bytes("gzip");
  p.headers = {2, entries};
  p.correlation_id = amqp_cstring_bytes("abc");
  const std::string raw = encoded_properties(p);
  const std::string table = encode_table(p.headers);
  ASSERT_FALSE(table.empty());
  EXPECT_EQ(header_table_in(raw), table);
  // Cut anywhere before the table's end: nothing, never a read past the end.
  const std::size_t table_end = raw.find(table) + table.size();
  for (std::size_t cut = 0; cut < table_end; ++cut) {
    EXPECT_TRUE(header_table_in(std::string_view(raw).substr(0, cut)).empty()) << cut;
  }

  // Bit 0: another flags word follows (never for basic): not read, whatever comes after.
  std::string continued = raw;
  continued[1] = static_cast<char>(continued[1] | 1);
  continued.insert(2, std::string(2, '\0'));
  EXPECT_TRUE(header_table_in(continued).empty());

  p._flags &= ~AMQP_BASIC_HEADERS_FLAG;
  EXPECT_TRUE(header_table_in(encoded_properties(p)).empty()) << "no headers flag";
  p._flags = AMQP_BASIC_HEADERS_FLAG;
  EXPECT_EQ(header_table_in(encoded_properties(p)), table) << "the table first";
}

TEST(FrameAssembler, KeepingWireHeadersKeepsTheTableAsItArrivedInTheFrame) {
  amqp_table_entry_t entry;
  entry.key = amqp_cstring_bytes("big");
  entry.value.kind = AMQP_FIELD_KIND_I64;
  entry.value.value.i64 = -(std::int64_t{1} << 40);
  amqp_basic_properties_t p{};
  p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_HEADERS_FLAG;
  p.content_type = amqp_cstring_bytes("text/plain");
  p.headers = {1, &entry};
  // The frame's raw list carries another table than the decoded one: which of the two is kept
  // tells where the wire headers came from.
  amqp_table_entry_t other_entry = entry;
  other_entry.key = amqp_cstring_bytes("other");
  amqp_basic_properties_t other = p;
  other.headers = {1, &other_entry};
  std::string raw = encoded_properties(other);
  for (bool with_raw : {true, false}) {
    FrameAssembler a;
    a.keep_wire_headers(true);
    a.begin(Delivery{});
    amqp_frame_t header = header_frame(p, 0);
    if (with_raw) header.payload.properties.raw = amqp_bytes_t{raw.size(), raw.data()};
    auto done = a.add(header);
    ASSERT_NE(done, nullptr);
    const Properties& props = std::get<Delivery>(*done).props;
    EXPECT_EQ(props.wire_headers, encode_table(with_raw ? other.headers : p.headers))
        << "with the raw list: " << with_raw;
    EXPECT_EQ(props.headers.at("big"), std::to_string(-(std::int64_t{1} << 40)));
    a.release();
    EXPECT_EQ(a.add(body_frame("x")), nullptr) << "released: nothing is being assembled";
  }
}
