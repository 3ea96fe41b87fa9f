// protoc-gen-amqprpc: protoc --plugin=protoc-gen-amqprpc=PATH --amqprpc_out=DIR --cpp_out=DIR
// x.proto writes x.amqprpc.h and x.amqprpc.cc beside protoc's x.pb.h. cmake/amqprpcGenerate.cmake
// runs it for CMake projects (amqprpc_generate).
#include <google/protobuf/compiler/plugin.h>

#include "generator.hpp"

int main(int argc, char* argv[]) {
  amqprpc::protoc::Generator generator;
  return google::protobuf::compiler::PluginMain(argc, argv, &generator);
}
