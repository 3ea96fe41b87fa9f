#!/usr/bin/env bash
# Users and packagers build with the standard CMake build types and whichever compiler they
# have: each must build without a single warning (AMQPRPC_WERROR turns warnings into errors
# here). The library, the demo and the tools are built in a scratch tree per combination; the
# suite's own trees already cover GCC Debug (sanitizers), GCC RelWithDebInfo (-O2 with NDEBUG,
# the library, demo and tools) and clang RelWithDebInfo (fuzzing); the suite builds the
# library alone in Release with both compilers. COMPILER:TYPE builds everything but tests, benchmark and the protoc
# plugin (its generated code is compiled by g++ in those trees and by clang in
# codegen.clang_compiles_generated_code); COMPILER:TYPE:lib only the library (quicker).
#   run_build_types.sh SOURCE_DIR SCRATCH_DIR COMPILER:TYPE[:lib]...
set -uo pipefail
src="$1" scratch="$2"
shift 2
passed=0 failed=0
for combo in "$@"; do
  IFS=: read -r cxx type what <<<"$combo"
  only=()
  [[ "$what" == lib ]] && only=(-DAMQPRPC_BUILD_EXAMPLES=OFF -DAMQPRPC_BUILD_TOOLS=OFF)
  dir="$scratch/$cxx-$type"
  rm -rf "$dir"
  mkdir -p "$scratch"
  if cmake -S "$src" -B "$dir" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE="$type" \
       -DAMQPRPC_WERROR=ON -DAMQPRPC_BUILD_TESTS=OFF -DAMQPRPC_BUILD_BENCH=OFF \
       -DAMQPRPC_BUILD_PROTOC_PLUGIN=OFF "${only[@]}" \
       >"$dir.log" 2>&1 &&
     cmake --build "$dir" -j "$(nproc)" >>"$dir.log" 2>&1; then
    echo "ok   - $cxx $type builds without warnings${what:+ (library)}"
    passed=$((passed + 1))
  else
    echo "FAIL - $cxx $type:"
    grep -E "error|warning" "$dir.log" | head -20
    failed=$((failed + 1))
  fi
  rm -rf "$dir"
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
