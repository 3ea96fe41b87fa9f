#include "generator.hpp"

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/io/printer.h>
#include <google/protobuf/io/zero_copy_stream.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace amqprpc::protoc {
namespace {

namespace pb = google::protobuf;
using Vars = std::map<std::string, std::string>;

bool is_cpp_keyword(std::string_view name) {
  static const std::set<std::string_view> keywords = {
      "alignas",       "alignof",     "and",
      "and_eq",        "asm",         "auto",
      "bitand",        "bitor",       "bool",
      "break",         "case",        "catch",
      "char",          "char8_t",     "char16_t",
      "char32_t",      "class",       "compl",
      "concept",       "const",       "consteval",
      "constexpr",     "constinit",   "const_cast",
      "continue",      "co_await",    "co_return",
      "co_yield",      "decltype",    "default",
      "delete",        "do",          "double",
      "dynamic_cast",  "else",        "enum",
      "explicit",      "export",      "extern",
      "false",         "float",       "for",
      "friend",        "goto",        "if",
      "inline",        "int",         "long",
      "mutable",       "namespace",   "new",
      "noexcept",      "not",         "not_eq",
      "nullptr",       "operator",    "or",
      "or_eq",         "private",     "protected",
      "public",        "register",    "reinterpret_cast",
      "requires",      "return",      "short",
      "signed",        "sizeof",      "static",
      "static_assert", "static_cast", "struct",
      "switch",        "template",    "this",
      "thread_local",  "throw",       "true",
      "try",           "typedef",     "typeid",
      "typename",      "union",       "unsigned",
      "using",         "virtual",     "void",
      "volatile",      "wchar_t",     "while",
      "xor",           "xor_eq"};
  return keywords.count(name) != 0;
}

// x/y.proto -> x/y (protoc's own rule for <base>.pb.h).
std::string base_name(const std::string& proto_file) {
  for (std::string_view ext : {".protodevel", ".proto"}) {
    if (proto_file.size() > ext.size() &&
        proto_file.compare(proto_file.size() - ext.size(), ext.size(), ext) == 0) {
      return proto_file.substr(0, proto_file.size() - ext.size());
    }
  }
  return proto_file;
}

std::string dots_to_colons(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == '.') {
      out += "::";
    } else {
      out += c;
    }
  }
  return out;
}

// The C++ class protoc generates for a message: ::p::q::Outer_Inner, a keyword getting a '_'
// as protoc's cpp generator gives it.
std::string cpp_class(const pb::Descriptor* message) {
  std::string name = message->name();
  for (const pb::Descriptor* outer = message->containing_type(); outer != nullptr;
       outer = outer->containing_type()) {
    name = outer->name() + "_" + name;
  }
  if (is_cpp_keyword(name)) name += "_";
  const std::string& package = message->file()->package();
  return package.empty() ? "::" + name : "::" + dots_to_colons(package) + "::" + name;
}

// A .proto comment as C++ line comments, indented by `indent`; empty when there is none.
std::string as_comment(const std::string& text, const std::string& indent) {
  std::string out;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    // A trailing backslash would continue the comment onto the next line of code.
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\\')) {
      line.pop_back();
    }
    out += indent + "//" + line + "\n";
    start = end + 1;
  }
  return out;
}

template <class D>
std::string leading_comment(const D* descriptor, const std::string& indent) {
  pb::SourceLocation location;
  if (!descriptor->GetSourceLocation(&location)) return {};
  return as_comment(location.leading_comments, indent);
}

// Why the service cannot be generated; empty when it can.
std::string check_service(const pb::ServiceDescriptor* service) {
  // protoc prefixes the file's name.
  const std::string where = "service " + service->full_name();
  for (const char* suffix : {"Client", "Service"}) {
    const std::string cls = service->name() + suffix;
    std::string full =
        service->file()->package().empty() ? cls : service->file()->package() + "." + cls;
    const pb::DescriptorPool* pool = service->file()->pool();
    if (pool->FindMessageTypeByName(full) != nullptr || pool->FindEnumTypeByName(full) != nullptr ||
        pool->FindServiceByName(full) != nullptr) {
      return where + ": the generated class " + cls + " would clash with " + full;
    }
  }
  // Every C++ member the service's classes get, so that none is declared twice.
  std::set<std::string> members = {"queue", "service", "kDefaultQueue", service->name() + "Client",
                                   service->name() + "Service"};
  for (int i = 0; i < service->method_count(); ++i) {
    const pb::MethodDescriptor* m = service->method(i);
    const std::string what = where + ": method " + m->name();
    if (m->client_streaming() || m->server_streaming()) {
      return what + ": streaming is not supported yet (" +
             (m->client_streaming() && m->server_streaming() ? "bidirectional"
              : m->client_streaming()                        ? "client"
                                                             : "server") +
             " streaming); amqp-rpc generates unary methods only";
    }
    if (is_cpp_keyword(m->name())) return what + ": a C++ keyword cannot name a method";
    for (const char* suffix : {"", "Async", "Notify"}) {
      if (!members.insert(m->name() + suffix).second) {
        return what + ": the generated member " + m->name() + suffix +
               " would clash with another of the same name";
      }
    }
  }
  return {};
}

Vars method_vars(const pb::MethodDescriptor* m) {
  return {{"method", m->name()},
          {"service", m->service()->name()},
          {"service_full", m->service()->full_name()},
          {"req", cpp_class(m->input_type())},
          {"resp", cpp_class(m->output_type())}};
}

void print_header(pb::io::Printer& p, const pb::FileDescriptor* file, const std::string& base) {
  p.Print(
      "// Generated by protoc-gen-amqprpc from $file$. Do not edit.\n"
      "// For each service S: a client stub SClient and a server base SService (amqp-rpc).\n"
      "#pragma once\n"
      "\n",
      "file", file->name());
  if (file->service_count() > 0) {
    p.Print(
        "#include <functional>\n"
        "#include <future>\n"
        "#include <string>\n"
        "#include <utility>\n"
        "\n"
        "#include \"amqprpc/client.hpp\"\n"
        "#include \"amqprpc/protobuf.hpp\"\n"
        "#include \"amqprpc/service.hpp\"\n"
        "// With Asio (Debian's libasio-dev), stubs also offer calls taking a completion token.\n"
        "#if __has_include(<asio.hpp>)\n"
        "#include \"amqprpc/asio.hpp\"\n"
        "#ifndef AMQPRPC_GENERATED_WITH_ASIO\n"
        "#define AMQPRPC_GENERATED_WITH_ASIO 1\n"
        "#endif\n"
        "#endif\n");
  }
  p.Print("#include \"$base$.pb.h\"\n", "base", base);
  if (file->service_count() == 0) return;

  const std::string ns = dots_to_colons(file->package());
  if (!ns.empty()) p.Print("\nnamespace $ns$ {\n", "ns", ns);
  for (int s = 0; s < file->service_count(); ++s) {
    const pb::ServiceDescriptor* service = file->service(s);
    Vars sv{{"service", service->name()}, {"service_full", service->full_name()}};
    p.Print("\n");
    p.PrintRaw(leading_comment(service, ""));
    p.Print(
        sv,
        "// Calls $service_full$ through an amqprpc::Client, which must outlive the stub. "
        "Thread-safe\n"
        "// as the client is: one stub may serve many threads.\n"
        "class $service$Client {\n"
        " public:\n"
        "  // The queue $service$Service::service() serves by default: the service's full name.\n"
        "  static constexpr const char* kDefaultQueue = \"$service_full$\";\n"
        "\n"
        "  explicit $service$Client(::amqprpc::Client& client, std::string queue = "
        "kDefaultQueue);\n"
        "\n"
        "  // The queue this stub calls.\n"
        "  const std::string& queue() const { return queue_; }\n");
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* m = service->method(i);
      Vars v = method_vars(m);
      p.Print("\n");
      p.PrintRaw(leading_comment(m, "  "));
      p.Print(v,
              "  // $method$: the reply's value or its error (a reply that does not decode as\n"
              "  // $resp$ fails with internal). Blocking.\n"
              "  ::amqprpc::Result<$resp$> $method$(const $req$& request,\n"
              "      ::amqprpc::CallOptions options = {});\n"
              "  // $method$ as a future.\n"
              "  std::future<::amqprpc::Result<$resp$>> $method$Async(const $req$& request,\n"
              "      ::amqprpc::CallOptions options = {});\n"
              "  // $method$ with a callback, run as amqprpc::Client::async_call runs its "
              "callbacks.\n"
              "  void $method$Async(const $req$& request, ::amqprpc::CallOptions options,\n"
              "      std::function<void(::amqprpc::Result<$resp$>)> on_done);\n"
              "  // $method$ one-way: nothing comes back (amqprpc::Client::notify).\n"
              "  ::amqprpc::Status $method$Notify(const $req$& request,\n"
              "      ::amqprpc::CallOptions options = {});\n"
              "#ifdef AMQPRPC_GENERATED_WITH_ASIO\n"
              "  // $method$ as an Asio operation (amqprpc/asio.hpp), completing with\n"
              "  // Result<$resp$>: co_await it with asio::use_awaitable, or pass any token.\n"
              "  template <class CompletionToken>\n"
              "  auto $method$(const $req$& request, const ::amqprpc::CallOptions& options,\n"
              "      CompletionToken&& token) {\n"
              "    return ::amqprpc::async_typed_call<$resp$>(*client_, queue_, \"$method$\",\n"
              "        request, options, std::forward<CompletionToken>(token));\n"
              "  }\n"
              "#endif\n");
    }
    p.Print(
        "\n"
        " private:\n"
        "  ::amqprpc::Client* client_;\n"
        "  std::string queue_;\n"
        "};\n"
        "\n");
    p.Print(sv,
            "// Serves $service_full$: derive, override the methods you implement (the others "
            "answer\n"
            "// unimplemented) and serve service() with amqprpc::Server::start. The methods run "
            "on the\n"
            "// server's worker threads, several at once when it has several.\n"
            "class $service$Service {\n"
            " public:\n"
            "  virtual ~$service$Service() = default;\n");
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* m = service->method(i);
      Vars v = method_vars(m);
      p.Print("\n");
      p.PrintRaw(leading_comment(m, "  "));
      p.Print(v,
              "  // An error result travels as the reply's status, with its detail "
              "(amqprpc::error_with_detail).\n"
              "  virtual ::amqprpc::Result<$resp$> $method$(const $req$& request,\n"
              "      const ::amqprpc::Request& context);\n");
    }
    p.Print(sv,
            "\n"
            "  // An amqprpc::Service on `queue`, described as \"$service_full$\", whose methods "
            "call this\n"
            "  // object, which must outlive the server serving it.\n"
            "  ::amqprpc::Service service(std::string queue = "
            "$service$Client::kDefaultQueue);\n"
            "};\n");
  }
  if (!ns.empty()) p.Print("\n}  // namespace $ns$\n", "ns", ns);
}

void print_source(pb::io::Printer& p, const pb::FileDescriptor* file, const std::string& base) {
  p.Print(
      "// Generated by protoc-gen-amqprpc from $file$. Do not edit.\n"
      "#include \"$base$.amqprpc.h\"\n",
      "file", file->name(), "base", base);
  if (file->service_count() == 0) return;
  p.Print("\n#include <utility>\n");

  const std::string ns = dots_to_colons(file->package());
  if (!ns.empty()) p.Print("\nnamespace $ns$ {\n", "ns", ns);
  for (int s = 0; s < file->service_count(); ++s) {
    const pb::ServiceDescriptor* service = file->service(s);
    Vars sv{{"service", service->name()}, {"service_full", service->full_name()}};
    p.Print(sv,
            "\n"
            "// ---- $service_full$ ----\n"
            "\n"
            "$service$Client::$service$Client(::amqprpc::Client& client, std::string queue)\n"
            "    : client_(&client), queue_(std::move(queue)) {}\n");
    for (int i = 0; i < service->method_count(); ++i) {
      Vars v = method_vars(service->method(i));
      p.Print(v,
              "\n"
              "::amqprpc::Result<$resp$> $service$Client::$method$(const $req$& request,\n"
              "    ::amqprpc::CallOptions options) {\n"
              "  return ::amqprpc::typed_call<$resp$>(*client_, queue_, \"$method$\", request,\n"
              "      std::move(options));\n"
              "}\n"
              "\n"
              "std::future<::amqprpc::Result<$resp$>> $service$Client::$method$Async(\n"
              "    const $req$& request, ::amqprpc::CallOptions options) {\n"
              "  return ::amqprpc::typed_async_call<$resp$>(*client_, queue_, \"$method$\", "
              "request,\n"
              "      std::move(options));\n"
              "}\n"
              "\n"
              "void $service$Client::$method$Async(const $req$& request,\n"
              "    ::amqprpc::CallOptions options,\n"
              "    std::function<void(::amqprpc::Result<$resp$>)> on_done) {\n"
              "  ::amqprpc::typed_async_call<$resp$>(*client_, queue_, \"$method$\", request,\n"
              "      std::move(options), std::move(on_done));\n"
              "}\n"
              "\n"
              "::amqprpc::Status $service$Client::$method$Notify(const $req$& request,\n"
              "    ::amqprpc::CallOptions options) {\n"
              "  return ::amqprpc::typed_notify(*client_, queue_, \"$method$\", request, "
              "std::move(options));\n"
              "}\n");
    }
    for (int i = 0; i < service->method_count(); ++i) {
      Vars v = method_vars(service->method(i));
      p.Print(v,
              "\n"
              "::amqprpc::Result<$resp$> $service$Service::$method$(const $req$& /*request*/,\n"
              "    const ::amqprpc::Request& /*context*/) {\n"
              "  return ::amqprpc::Status{::amqprpc::StatusCode::unimplemented,\n"
              "      \"method '$method$' of $service_full$ is not implemented by this server\"};\n"
              "}\n");
    }
    p.Print(sv,
            "\n"
            "::amqprpc::Service $service$Service::service(std::string queue) {\n"
            "  ::amqprpc::Service s(std::move(queue), \"$service_full$\");\n");
    for (int i = 0; i < service->method_count(); ++i) {
      Vars v = method_vars(service->method(i));
      p.Print(v,
              "  s.method<$req$, $resp$>(\"$method$\",\n"
              "      [this](const $req$& request, const ::amqprpc::Request& context) {\n"
              "        return $method$(request, context);\n"
              "      });\n");
    }
    p.Print(
        "  return s;\n"
        "}\n");
  }
  if (!ns.empty()) p.Print("\n}  // namespace $ns$\n", "ns", ns);
}

}  // namespace

bool Generator::Generate(const pb::FileDescriptor* file, const std::string& parameter,
                         pb::compiler::GeneratorContext* context, std::string* error) const {
  if (!parameter.empty()) {
    *error = "protoc-gen-amqprpc takes no options, got '" + parameter + "'";
    return false;
  }
  for (int s = 0; s < file->service_count(); ++s) {
    if (std::string why = check_service(file->service(s)); !why.empty()) {
      *error = why;
      return false;
    }
  }
  const std::string base = base_name(file->name());
  {
    std::unique_ptr<pb::io::ZeroCopyOutputStream> out(context->Open(base + ".amqprpc.h"));
    pb::io::Printer printer(out.get(), '$');
    print_header(printer, file, base);
    if (printer.failed()) {
      *error = "cannot write " + base + ".amqprpc.h";
      return false;
    }
  }
  std::unique_ptr<pb::io::ZeroCopyOutputStream> out(context->Open(base + ".amqprpc.cc"));
  pb::io::Printer printer(out.get(), '$');
  print_source(printer, file, base);
  if (printer.failed()) {
    *error = "cannot write " + base + ".amqprpc.cc";
    return false;
  }
  return true;
}

}  // namespace amqprpc::protoc
