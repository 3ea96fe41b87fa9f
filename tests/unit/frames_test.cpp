#include "amqp/frames.hpp"

#include <amqp.h>
#include <gtest/gtest.h>

using namespace amqprpc::detail::amqp;

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
  EXPECT_FALSE(a.add(header_frame(props, 10)).has_value());
  EXPECT_FALSE(a.add(body_frame("hello")).has_value());
  auto done = a.add(body_frame("world"));
  ASSERT_TRUE(done.has_value());
  auto* delivery = std::get_if<Delivery>(&*done);
  ASSERT_NE(delivery, nullptr);
  EXPECT_EQ(delivery->delivery_tag, 7u);
  EXPECT_EQ(delivery->props.correlation_id, "corr");
  EXPECT_EQ(delivery->body, "helloworld");
  EXPECT_FALSE(a.add(body_frame("stray")).has_value()) << "nothing begun: ignored";
}

TEST(FrameAssembler, AnEmptyBodyIsCompleteWithItsHeader) {
  FrameAssembler a;
  Returned r;
  r.reply_code = 312;
  a.begin(std::move(r));
  amqp_basic_properties_t props{};
  auto done = a.add(header_frame(props, 0));
  ASSERT_TRUE(done.has_value());
  ASSERT_NE(std::get_if<Returned>(&*done), nullptr);
  EXPECT_EQ(std::get<Returned>(*done).reply_code, 312);
}

TEST(FrameAssembler, ABodyBeforeItsHeaderIsIgnored) {
  FrameAssembler a;
  a.begin(Delivery{});
  EXPECT_FALSE(a.add(body_frame("early")).has_value());
  amqp_basic_properties_t props{};
  EXPECT_FALSE(a.add(header_frame(props, 3)).has_value());
  auto done = a.add(body_frame("abc"));
  ASSERT_TRUE(done.has_value());
  EXPECT_EQ(std::get<Delivery>(*done).body, "abc");
}

TEST(FrameAssembler, AHeaderOfAnotherClassEndsTheMessage) {
  // Decoded as another class's properties, it cannot be read as basic ones.
  FrameAssembler a;
  a.begin(Delivery{});
  amqp_basic_properties_t props{};
  amqp_frame_t exchange_header = header_frame(props, 0);
  exchange_header.payload.properties.class_id = 40;
  EXPECT_FALSE(a.add(exchange_header).has_value());
  EXPECT_FALSE(a.add(header_frame(props, 0)).has_value()) << "nothing begun any more";
}

TEST(FrameAssembler, AHugeAnnouncedBodySizeIsNotAllocatedUpFront) {
  FrameAssembler a;
  a.begin(Delivery{});
  amqp_basic_properties_t props{};
  EXPECT_FALSE(a.add(header_frame(props, std::uint64_t{1} << 62)).has_value());
  EXPECT_FALSE(a.add(body_frame("only this came")).has_value()) << "incomplete, and no crash";
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
  Properties out = properties_from(p);
  EXPECT_EQ(out.headers.at("n"), "-5");
  EXPECT_EQ(out.headers.at("s"), "text");
  EXPECT_EQ(out.priority, 3);
  EXPECT_EQ(out.reply_to, "q");
  EXPECT_TRUE(out.correlation_id.empty());
}
