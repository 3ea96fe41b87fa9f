#include "common/describe.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>
#include <google/protobuf/dynamic_message.h>
#include <google/protobuf/util/json_util.h>

#include <array>
#include <climits>
#include <nlohmann/json.hpp>
#include <set>

namespace amqprpc::tools {

namespace pb = google::protobuf;

std::optional<std::string> base64_decode(std::string_view text) {
  static constexpr std::array<signed char, 256> kValue = [] {
    std::array<signed char, 256> v{};
    v.fill(-1);
    constexpr std::string_view alphabet =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (std::size_t i = 0; i < alphabet.size(); ++i) {
      v[static_cast<unsigned char>(alphabet[i])] = static_cast<signed char>(i);
    }
    return v;
  }();
  // Padding: at most two '=', only at the end, and then the whole is in blocks of four.
  std::size_t padding = 0;
  while (padding < 2 && padding < text.size() && text[text.size() - 1 - padding] == '=') {
    ++padding;
  }
  if (padding > 0 && text.size() % 4 != 0) return std::nullopt;
  std::string_view digits = text.substr(0, text.size() - padding);
  if (digits.size() % 4 == 1) return std::nullopt;  // one digit holds only 6 bits of a byte
  std::string out;
  out.reserve(digits.size() / 4 * 3 + 2);
  std::uint32_t bits = 0;
  int held = 0;
  for (char c : digits) {
    int v = kValue[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;  // also a '=' before the end
    bits = (bits << 6) | static_cast<std::uint32_t>(v);
    held += 6;
    if (held >= 8) {
      held -= 8;
      out.push_back(static_cast<char>((bits >> held) & 0xff));
    }
  }
  return out;
}

// ---- Schema ----

namespace {

// Remembers the first error of each failed build, to say why a type is unknown.
class FirstError : public pb::DescriptorPool::ErrorCollector {
 public:
  void AddError(const std::string& filename, const std::string& element_name, const pb::Message*,
                ErrorLocation, const std::string& message) override {
    if (first_.empty()) first_ = filename + ": " + element_name + ": " + message;
  }
  std::string take() { return std::exchange(first_, {}); }

 private:
  std::string first_;
};

constexpr std::string_view kProtobufPackage = "google.protobuf";

bool in_protobuf_package(std::string_view full_name) {
  return full_name.size() > kProtobufPackage.size() &&
         full_name.substr(0, kProtobufPackage.size()) == kProtobufPackage &&
         full_name[kProtobufPackage.size()] == '.';
}

std::string joined(const std::string& scope, const std::string& name) {
  return scope.empty() ? name : scope + "." + name;
}

bool defines_protobuf_types(const pb::DescriptorProto& m, const std::string& scope) {
  std::string name = joined(scope, m.name());
  if (in_protobuf_package(name)) return true;
  for (const auto& e : m.enum_type()) {
    if (in_protobuf_package(joined(name, e.name()))) return true;
  }
  for (const auto& nested : m.nested_type()) {
    if (defines_protobuf_types(nested, name)) return true;  // depth: the parser's limit (100)
  }
  return false;
}

bool defines_protobuf_types(const pb::FileDescriptorProto& file) {
  if (file.package() == kProtobufPackage || in_protobuf_package(file.package())) return true;
  for (const auto& e : file.enum_type()) {
    if (in_protobuf_package(joined(file.package(), e.name()))) return true;
  }
  for (const auto& m : file.message_type()) {
    if (defines_protobuf_types(m, file.package())) return true;
  }
  return false;
}

}  // namespace

struct Schema::Parts {
  // Declared in the order they depend on each other (destroyed in reverse).
  pb::SimpleDescriptorDatabase database;
  FirstError errors;
  pb::DescriptorPool pool{&database, &errors};
  pb::DynamicMessageFactory factory{&pool};
};

Schema::Schema(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}
Schema::~Schema() = default;

Result<std::unique_ptr<Schema>> Schema::from_descriptor_set(std::string_view descriptor_set) {
  pb::FileDescriptorSet set;
  if (descriptor_set.size() > static_cast<std::size_t>(INT_MAX) ||
      !set.ParseFromArray(descriptor_set.data(), static_cast<int>(descriptor_set.size()))) {
    return Status{StatusCode::invalid_argument, "not a google.protobuf.FileDescriptorSet"};
  }
  auto parts = std::make_unique<Parts>();
  std::set<std::string> names;
  for (auto& file : *set.mutable_file()) {
    if (!names.insert(file.name()).second) {
      return Status{StatusCode::invalid_argument,
                    "the descriptor set has the file '" + file.name() + "' twice"};
    }
    // The JSON mapping treats the well-known types (Timestamp, Any, Struct...) by their names
    // and trusts their layout: they come from our own protobuf library, never from the server.
    if (defines_protobuf_types(file)) {
      const pb::FileDescriptor* ours =
          pb::DescriptorPool::generated_pool()->FindFileByName(file.name());
      if (ours == nullptr || ours->package() != file.package()) continue;  // its types: unknown
      file.Clear();
      ours->CopyTo(&file);
    }
    if (!parts->database.Add(file)) {
      return Status{StatusCode::invalid_argument,
                    "the descriptor set's file '" + file.name() +
                        "' has a bad name or defines a symbol another file defines"};
    }
  }
  return std::unique_ptr<Schema>(new Schema(std::move(parts)));
}

Result<const pb::Descriptor*> Schema::find(const std::string& full_name) const {
  parts_->errors.take();
  const pb::Descriptor* type = parts_->pool.FindMessageTypeByName(full_name);
  if (type != nullptr) return type;
  std::string why = parts_->errors.take();
  return Status{StatusCode::not_found,
                why.empty() ? "no message type '" + full_name + "' in the descriptor set"
                            : "the message type '" + full_name + "' does not build: " + why};
}

std::unique_ptr<pb::Message> Schema::new_message(const pb::Descriptor* type) const {
  const pb::Message* prototype = parts_->factory.GetPrototype(type);
  return std::unique_ptr<pb::Message>(prototype->New());
}

Result<std::string> Schema::json_to_binary(const pb::Descriptor* type,
                                           std::string_view json) const {
  auto message = new_message(type);
  pb::util::JsonParseOptions options;
  auto st = pb::util::JsonStringToMessage(pb::StringPiece(json.data(), json.size()), message.get(),
                                          options);
  if (!st.ok()) return Status{StatusCode::invalid_argument, std::string(st.message())};
  if (!message->IsInitialized()) {  // proto2 required fields
    return Status{StatusCode::invalid_argument,
                  "missing required fields: " + message->InitializationErrorString()};
  }
  std::string out;
  if (!message->SerializePartialToString(&out)) {
    return Status{StatusCode::invalid_argument, "does not serialize"};
  }
  return out;
}

Result<std::string> Schema::binary_to_json(const pb::Descriptor* type,
                                           std::string_view binary) const {
  auto message = new_message(type);
  if (binary.size() > static_cast<std::size_t>(INT_MAX) ||
      !message->ParsePartialFromArray(binary.data(), static_cast<int>(binary.size()))) {
    return Status{StatusCode::invalid_argument, "not a serialized " + type->full_name() + " (" +
                                                    std::to_string(binary.size()) + " bytes)"};
  }
  std::string json;
  pb::util::JsonPrintOptions options;
  auto st = pb::util::MessageToJsonString(*message, &json, options);
  if (!st.ok()) return Status{StatusCode::invalid_argument, std::string(st.message())};
  return json;
}

// ---- describe's output ----

namespace {

std::string type_of(const pb::FieldDescriptor& f) {
  switch (f.type()) {
    case pb::FieldDescriptor::TYPE_MESSAGE:
    case pb::FieldDescriptor::TYPE_GROUP:
      return f.message_type()->full_name();
    case pb::FieldDescriptor::TYPE_ENUM:
      return f.enum_type()->full_name();
    default:
      return f.type_name();
  }
}

}  // namespace

std::string message_definition(const pb::Descriptor& type, std::string_view indent) {
  std::string out = "message " + type.full_name() + " {\n";
  for (int i = 0; i < type.field_count(); ++i) {
    const pb::FieldDescriptor& f = *type.field(i);
    std::string label;
    std::string field_type = type_of(f);
    if (f.is_map()) {
      field_type = "map<" + type_of(*f.message_type()->map_key()) + ", " +
                   type_of(*f.message_type()->map_value()) + ">";
    } else if (f.is_repeated()) {
      label = "repeated ";
    } else if (f.is_required()) {
      label = "required ";
    } else if (f.has_optional_keyword()) {
      label = "optional ";
    }
    out += std::string(indent) + "  " + label + field_type + " " + f.name() + " = " +
           std::to_string(f.number()) + ";";
    if (const pb::OneofDescriptor* oneof = f.real_containing_oneof()) {
      out += "  // oneof " + oneof->name();
    }
    out += "\n";
  }
  out += std::string(indent) + "}";
  return out;
}

// ---- the describe reply ----

const DescribedMethod* Description::find(std::string_view method) const {
  for (const auto& m : methods) {
    if (m.name == method) return &m;
  }
  return nullptr;
}

std::string Description::method_names() const {
  std::string out;
  for (const auto& m : methods) out += (out.empty() ? "" : ", ") + m.name;
  return out.empty() ? "none" : out;
}

Result<Description> parse_description(std::string_view content_type, std::string_view body) {
  using json = nlohmann::json;
  auto bad = [](std::string why) {
    return Status{StatusCode::invalid_argument, "not a describe reply: " + std::move(why)};
  };
  if (!content_type.empty() && content_type != "application/json") {
    return bad("its content type is '" + std::string(content_type) + "', not application/json");
  }
  json j = json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not JSON");
  if (!j.is_object()) return bad("not a JSON object");
  // Reads a string member; false when present with another type.
  auto string_of = [&](const json& object, const char* key, std::string& out) {
    auto it = object.find(key);
    if (it == object.end()) return true;
    if (!it->is_string()) return false;
    out = it->get<std::string>();
    return true;
  };
  Description d;
  if (!j.contains("service") || !string_of(j, "service", d.service)) {
    return bad("no \"service\" string");
  }
  if (!string_of(j, "queue", d.queue)) return bad("\"queue\" is not a string");
  if (auto it = j.find("default_handler"); it != j.end()) {
    if (!it->is_boolean()) return bad("\"default_handler\" is not true or false");
    d.default_handler = it->get<bool>();
  }
  auto methods = j.find("methods");
  if (methods == j.end() || !methods->is_array()) return bad("no \"methods\" array");
  for (const auto& m : *methods) {
    DescribedMethod method{{}, "bytes", {}, {}, false};
    if (!m.is_object() || !m.contains("name") || !string_of(m, "name", method.name) ||
        !string_of(m, "encoding", method.encoding) ||
        !string_of(m, "request_type", method.request_type) ||
        !string_of(m, "reply_type", method.reply_type)) {
      return bad("a method is not an object with a \"name\" and string members");
    }
    if (method.request_type.empty()) method.request_type = method.encoding;
    if (method.reply_type.empty()) method.reply_type = method.encoding;
    if (auto it = m.find("streaming"); it != m.end()) {
      if (!it->is_boolean()) return bad("a method's \"streaming\" is not true or false");
      method.streaming = it->get<bool>();
    }
    d.methods.push_back(std::move(method));
  }
  if (auto it = j.find("reserved"); it != j.end()) {
    if (!it->is_array()) return bad("\"reserved\" is not an array");
    for (const auto& r : *it) {
      if (!r.is_string()) return bad("\"reserved\" holds a non-string");
      d.reserved.push_back(r.get<std::string>());
    }
  }
  std::string encoded;
  if (!string_of(j, "file_descriptor_set", encoded)) {
    return bad("\"file_descriptor_set\" is not a string");
  }
  if (j.contains("file_descriptor_set")) {
    auto bytes = base64_decode(encoded);
    if (!bytes) return bad("\"file_descriptor_set\" is not base64");
    auto schema = Schema::from_descriptor_set(*bytes);
    if (!schema) return bad("\"file_descriptor_set\": " + schema.status().message());
    d.schema = std::move(*schema);
  }
  return d;
}

}  // namespace amqprpc::tools
