# amqprpc_generate(TARGET t PROTOS a.proto ... [IMPORT_DIRS dir ...] [OUT_DIR dir])
#
# Compiles .proto files for amqp-rpc: protoc's C++ messages (<base>.pb.h/.cc) and
# protoc-gen-amqprpc's client stubs and server bases (<base>.amqprpc.h/.cc), added to target t,
# which gets OUT_DIR as an include directory and links amqprpc::amqprpc and
# protobuf::libprotobuf (PUBLIC: a library of generated code passes them on).
#
#   PROTOS       the .proto files (relative to the current source directory, or absolute)
#   IMPORT_DIRS  where imports are looked for (protoc's -I). A .proto inside one is named
#                relative to the first that holds it (dir/x/y.proto -> x/y.pb.h, included as
#                "x/y.pb.h"); any other relative to its own directory (y.pb.h). Protobuf's
#                well-known types (google/protobuf/*.proto) are always found.
#   OUT_DIR      where the files are generated; default: the current binary directory
#
# Editing a .proto, a file it imports, or the plugin regenerates. Call it in the directory
# that defines t; give each .proto to one target only (make a library of it to share it).
# Needs protobuf's compiler and library (find_package(Protobuf)), and the plugin target
# amqprpc::protoc-gen-amqprpc (find_package(amqprpc), or amqp-rpc's own tree).
include_guard(GLOBAL)

function(amqprpc_generate)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "TARGET;OUT_DIR" "PROTOS;IMPORT_DIRS")
  if(arg_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "amqprpc_generate: unknown arguments: ${arg_UNPARSED_ARGUMENTS}")
  endif()
  if(NOT arg_TARGET OR NOT TARGET "${arg_TARGET}")
    message(FATAL_ERROR "amqprpc_generate: TARGET must name an existing target (got '${arg_TARGET}')")
  endif()
  if(NOT arg_PROTOS)
    message(FATAL_ERROR "amqprpc_generate: no PROTOS given for ${arg_TARGET}")
  endif()
  if(NOT TARGET protobuf::protoc OR NOT TARGET protobuf::libprotobuf)
    message(FATAL_ERROR
      "amqprpc_generate: needs protobuf's compiler and C++ library, and find_package(Protobuf) "
      "found no protobuf::protoc or protobuf::libprotobuf (Debian: "
      "apt install protobuf-compiler libprotobuf-dev; else set Protobuf_ROOT)")
  endif()
  if(NOT TARGET amqprpc::protoc-gen-amqprpc)
    message(FATAL_ERROR
      "amqprpc_generate: no amqprpc::protoc-gen-amqprpc: this amqp-rpc was built without its "
      "protoc plugin (AMQPRPC_BUILD_PROTOC_PLUGIN=OFF)")
  endif()

  # The plugin: a file to depend on when imported, a target (so it is built first) in-tree.
  set(plugin amqprpc::protoc-gen-amqprpc)
  get_target_property(aliased ${plugin} ALIASED_TARGET)
  if(aliased)
    set(plugin ${aliased})
  endif()
  get_target_property(plugin_imported ${plugin} IMPORTED)
  if(plugin_imported)
    set(plugin_dep "$<TARGET_FILE:${plugin}>")
  else()
    set(plugin_dep ${plugin})
  endif()

  set(out "${CMAKE_CURRENT_BINARY_DIR}")
  if(arg_OUT_DIR)
    get_filename_component(out "${arg_OUT_DIR}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_BINARY_DIR}")
  endif()
  set(import_dirs)
  set(import_args)
  foreach(dir IN LISTS arg_IMPORT_DIRS)
    get_filename_component(dir "${dir}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    list(APPEND import_dirs "${dir}")
    list(APPEND import_args "-I${dir}")
  endforeach()

  set(sources)
  foreach(proto IN LISTS arg_PROTOS)
    get_filename_component(abs "${proto}" ABSOLUTE BASE_DIR "${CMAKE_CURRENT_SOURCE_DIR}")
    set(rel "")
    set(args ${import_args})
    foreach(dir IN LISTS import_dirs)
      cmake_path(IS_PREFIX dir "${abs}" NORMALIZE under)
      if(under)
        file(RELATIVE_PATH rel "${dir}" "${abs}")
        break()
      endif()
    endforeach()
    if(rel STREQUAL "")
      get_filename_component(own_dir "${abs}" DIRECTORY)
      get_filename_component(rel "${abs}" NAME)
      list(PREPEND args "-I${own_dir}")
    endif()
    string(REGEX REPLACE "\\.proto$" "" base "${rel}")
    set(generated "${out}/${base}.pb.h" "${out}/${base}.pb.cc" "${out}/${base}.amqprpc.h"
                  "${out}/${base}.amqprpc.cc")
    # protoc lists every file the .proto imports in the depfile: editing one regenerates too.
    add_custom_command(
      OUTPUT ${generated}
      COMMAND "${CMAKE_COMMAND}" -E make_directory "${out}"
      COMMAND protobuf::protoc "--plugin=protoc-gen-amqprpc=$<TARGET_FILE:${plugin}>"
              "--cpp_out=${out}" "--amqprpc_out=${out}"
              "--dependency_out=${out}/${base}.amqprpc.d" ${args} "${abs}"
      DEPENDS "${abs}" ${plugin_dep} protobuf::protoc
      DEPFILE "${out}/${base}.amqprpc.d"
      COMMENT "amqprpc_generate: ${rel} (messages, stubs and server bases)"
      VERBATIM)
    list(APPEND sources ${generated})
  endforeach()

  target_sources(${arg_TARGET} PRIVATE ${sources})
  target_include_directories(${arg_TARGET} PUBLIC "${out}")
  target_link_libraries(${arg_TARGET} PUBLIC amqprpc::amqprpc protobuf::libprotobuf)
endfunction()
