# ofa_add_test(NAME SOURCES a.c b.c LIBS x y LABELS unit TIMEOUT 60 [ARGS ...])
# Builds a Criterion test program tests/NAME and registers it with CTest under its labels.
# Every test gets a timeout; Criterion runs each test in its own process group.
function(ofa_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;LABELS;ARGS" ${ARGN})
  if(NOT TARGET dep::criterion)
    message(WARNING "Criterion not found: test ${name} not built")
    return()
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  foreach(src ${T_SOURCES})
    if(NOT IS_ABSOLUTE ${src} AND NOT EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/${src})
      message(WARNING "test ${name}: source ${src} missing; test not built")
      return()
    endif()
  endforeach()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} dep::criterion)
  target_compile_definitions(${name} PRIVATE
    OFA_SOURCE_DIR="${PROJECT_SOURCE_DIR}" OFA_BINARY_DIR="${PROJECT_BINARY_DIR}"
    OFA_SHARED_DIR="${PROJECT_SOURCE_DIR}/../shared")
  add_test(NAME ${name} COMMAND ${name} --jobs 1 ${T_ARGS})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endfunction()

# ofa_add_script_test(NAME COMMAND cmd... LABELS e2e TIMEOUT 600)
# A test driven by a shell script (end-to-end runs of launch); it runs in its own
# process group so that everything it started dies with it.
function(ofa_add_script_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "COMMAND;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND setsid ${T_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT}
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
    ENVIRONMENT "OFA_SOURCE_DIR=${PROJECT_SOURCE_DIR};OFA_BINARY_DIR=${PROJECT_BINARY_DIR}")
endfunction()
