# Tests of the pipeline core: the message codec (common/proto), stats, the broker's
# state machine and the source's order. test_base64, test_batcher and test_source are
# registered in pipeline_stages.cmake.
ofa_add_test(test_proto SOURCES test_proto.c LIBS ofacommon LABELS unit TIMEOUT 60)
ofa_add_test(test_stats SOURCES test_stats.c LIBS ofacommon LABELS unit TIMEOUT 60)
if(TARGET ofabroker)
  ofa_add_test(test_broker SOURCES test_broker.c broker_rec.c LIBS ofabroker LABELS unit
               TIMEOUT 60)
  # The arena slots samples' tensors lie in: released by the broker once, never early.
  ofa_add_test(test_broker_arena SOURCES test_broker_arena.c broker_rec.c LIBS ofabroker
               LABELS unit TIMEOUT 60)
endif()

# ---- fuzzing (label fuzz)
# The fuzz targets are built with clang's libFuzzer and ASan/UBSan where clang has it
# (a separate executable compiled by a custom command, since the project's compiler may
# be gcc; the common sources it needs are compiled straight into it). Elsewhere the same
# target is linked with tests/fuzz_main.c, a stand-in driver that runs the corpus and
# seeded random mutations. Either way tests/fuzz_run.sh runs it for a bounded time and
# fails below a minimum number of executions.
find_program(OFA_CLANG NAMES clang clang-18 clang-17 clang-16 clang-15 clang-14)
if(NOT DEFINED OFA_HAVE_LIBFUZZER)
  set(_have OFF)
  if(OFA_CLANG)
    set(_d ${CMAKE_BINARY_DIR}/fuzz-check)
    file(WRITE ${_d}/check.c
      "#include <stddef.h>\n#include <stdint.h>\n"
      "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n")
    execute_process(
      COMMAND ${OFA_CLANG} -fsanitize=fuzzer,address,undefined check.c -o check
      WORKING_DIRECTORY ${_d} RESULT_VARIABLE _rc OUTPUT_QUIET ERROR_QUIET)
    if(_rc EQUAL 0)
      set(_have ON)
    endif()
  endif()
  set(OFA_HAVE_LIBFUZZER ${_have} CACHE BOOL "clang's libFuzzer builds fuzz targets")
  message(STATUS "libFuzzer (clang -fsanitize=fuzzer): ${_have}")
endif()

set(OFA_FUZZ_SECONDS 20 CACHE STRING "seconds each fuzz test runs")
set(OFA_FUZZ_MIN_EXECS 10000 CACHE STRING "executions a fuzz test must reach")
if(CMAKE_RUNTIME_OUTPUT_DIRECTORY)
  set(_fuzz_bin ${CMAKE_RUNTIME_OUTPUT_DIRECTORY})
else()
  set(_fuzz_bin ${CMAKE_CURRENT_BINARY_DIR})
endif()

# ofa_add_fuzz(NAME HARNESS f.c SOURCES lib.c... LIBS targets... SEEDS dir
#              [PKG pkgconfig-modules...] [INCLUDES dirs...]
#              [SECONDS s] [MIN_EXECS n])
# SECONDS and MIN_EXECS override OFA_FUZZ_SECONDS / OFA_FUZZ_MIN_EXECS for one target
# (a decoder that costs milliseconds per input cannot reach the default count).
# With libFuzzer: clang compiles the harness and the library SOURCES into one sanitized
# executable. Without: the harness and fuzz_main.c are linked with the LIBS targets.
function(ofa_add_fuzz name)
  cmake_parse_arguments(F "" "HARNESS;SEEDS;SECONDS;MIN_EXECS" "SOURCES;LIBS;PKG;INCLUDES"
                        ${ARGN})
  if(NOT F_SECONDS)
    set(F_SECONDS ${OFA_FUZZ_SECONDS})
  endif()
  if(NOT F_MIN_EXECS)
    set(F_MIN_EXECS ${OFA_FUZZ_MIN_EXECS})
  endif()
  set(_exe ${_fuzz_bin}/${name})
  if(OFA_HAVE_LIBFUZZER)
    if(F_PKG)
      pkg_check_modules(FZ_${name} QUIET ${F_PKG})
    endif()
    set(_inc)
    foreach(d ${F_INCLUDES} ${FZ_${name}_INCLUDE_DIRS})
      list(APPEND _inc -I${d})
    endforeach()
    # The project's headers too: one clang call builds the target, so there is no
    # per-source dependency scan.
    set(_hdrs)
    foreach(d ${F_INCLUDES})
      file(GLOB _h CONFIGURE_DEPENDS ${d}/*.h)
      list(APPEND _hdrs ${_h})
    endforeach()
    add_custom_command(OUTPUT ${_exe}
      COMMAND ${OFA_CLANG} -g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined
              -fno-sanitize-recover=undefined ${_inc} ${F_HARNESS} ${F_SOURCES} -o ${_exe}
              ${FZ_${name}_LDFLAGS} -lm -lrt -lpthread
      DEPENDS ${F_HARNESS} ${F_SOURCES} ${_hdrs}
      COMMENT "Building fuzz target ${name} with libFuzzer" VERBATIM)
    add_custom_target(${name} ALL DEPENDS ${_exe})
  else()
    add_executable(${name} ${F_HARNESS} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_main.c)
    target_link_libraries(${name} PRIVATE ${F_LIBS})
    set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${_fuzz_bin})
  endif()
  ofa_add_script_test(${name}
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_run.sh ${_exe} ${F_SEEDS}
            ${CMAKE_CURRENT_BINARY_DIR}/${name}.work ${F_SECONDS} ${F_MIN_EXECS}
    LABELS fuzz TIMEOUT 180)
endfunction()

set(_c ${PROJECT_SOURCE_DIR}/common)
# The message decoder (proto_decode_frames).
ofa_add_fuzz(fuzz_proto
  HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_proto.c
  SOURCES ${_c}/proto.c ${_c}/shmarena.c ${_c}/util.c
  LIBS ofacommon
  SEEDS ${CMAKE_CURRENT_SOURCE_DIR}/data/bad/msg
  PKG libzmq msgpack
  INCLUDES ${_c})
# The source's TSV/JSONL row reader, through source_new/source_next.
if(TARGET ofasource)
  set(_p ${PROJECT_SOURCE_DIR}/plans)
  set(_s ${PROJECT_SOURCE_DIR}/stages/source)
  ofa_add_fuzz(fuzz_source_row
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_source_row.c
    SOURCES ${_s}/source.c ${_p}/instr.c ${_p}/taskplan.c ${_p}/planfile.c ${_c}/util.c
            ${_c}/proto.c ${_c}/shmarena.c ${_c}/base64.c
    LIBS ofasource
    SEEDS ${CMAKE_CURRENT_SOURCE_DIR}/data/bad/rows
    PKG libzmq msgpack libconfig
    INCLUDES ${_c} ${_p} ${_s})
endif()

# Writes the committed seed corpus (tests/data/bad/msg); built on demand only.
add_executable(fuzz_make_corpus EXCLUDE_FROM_ALL fuzz_make_corpus.c)
target_link_libraries(fuzz_make_corpus PRIVATE ofacommon)
