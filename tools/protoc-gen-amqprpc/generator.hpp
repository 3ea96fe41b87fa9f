// protoc-gen-amqprpc's generator: for each .proto file, <base>.amqprpc.h and <base>.amqprpc.cc
// beside protoc's <base>.pb.h, holding for each service S a client stub SClient (amqprpc's typed
// calls) and a server base SService (an amqprpc::Service whose methods call virtual functions).
#pragma once

#include <google/protobuf/compiler/code_generator.h>

#include <cstdint>
#include <string>

namespace amqprpc::protoc {

class Generator : public google::protobuf::compiler::CodeGenerator {
 public:
  // Files without services get both files too (they include <base>.pb.h and nothing else), so
  // that a build knows a .proto's outputs without reading it.
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;

  std::uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

}  // namespace amqprpc::protoc
