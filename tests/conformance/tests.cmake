# CTest tests of the conformance kit. Each runs ofa-conform against one stage program
# with fixtures from tests/data (real files) and the plan and BPE merges beside this
# file; every test takes a few seconds.
set(_cf_dir ${CMAKE_CURRENT_SOURCE_DIR})
set(_cf_data ${PROJECT_SOURCE_DIR}/tests/data)
set(_cf_bin ${CMAKE_RUNTIME_OUTPUT_DIRECTORY})
set(_cf_kit ${_cf_bin}/ofa-conform --plan ${_cf_dir}/plan.conf
  --garbage-dir ${_cf_data}/bad/msg)

# conformance_test(NAME DEPENDS target... COMMAND kit-args... -- program...): skipped
# when a target it runs is not built.
function(conformance_test name)
  cmake_parse_arguments(C "" "" "DEPENDS;COMMAND" ${ARGN})
  foreach(t ${C_DEPENDS})
    if(NOT TARGET ${t})
      return()
    endif()
  endforeach()
  add_test(NAME ${name} COMMAND setsid ${C_COMMAND})
  set_tests_properties(${name} PROPERTIES LABELS unit TIMEOUT 60
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endfunction()

# The built-in worker stages: a good sample, and a bad one that must be rejected.
conformance_test(conform_image DEPENDS ofa-image COMMAND ${_cf_kit}
  --tier image --task caption --field img=@${_cf_data}/astronaut_96.jpg --field cap=an\ astronaut
  --bad-field img=@${_cf_data}/fruits_bad_huffman.jpg -- ${_cf_bin}/ofa-image)
conformance_test(conform_audio DEPENDS ofa-audio COMMAND ${_cf_kit}
  --tier audio --task asr --field wav=@${_cf_data}/audio/hello_8k.wav
  --bad-field wav=@${_cf_data}/video/koala_right.mp4 -- ${_cf_bin}/ofa-audio)
conformance_test(conform_video DEPENDS ofa-video COMMAND ${_cf_kit}
  --tier video --task vcap --field video=@${_cf_data}/video/koala_right.mp4
  --bad-field video=@${_cf_data}/audio/hello_8k.mp3 -- ${_cf_bin}/ofa-video)
conformance_test(conform_motion DEPENDS ofa-motion COMMAND ${_cf_kit}
  --tier motion --task mcap --field mocap=@${_cf_data}/motion/01_01_40f.bvh
  --bad-field mocap=@${_cf_data}/audio/hello_8k.wav -- ${_cf_bin}/ofa-motion)
conformance_test(conform_tokenize DEPENDS ofa-tokenize COMMAND ${_cf_kit}
  --tier tokenize --task summary --field src=the\ quick\ brown\ fox\ jumps\ over\ the\ dog
  --field tgt=a\ fox\ jumps --bad-field tgt=! -- ${_cf_bin}/ofa-tokenize --bpe ${_cf_dir}/text.bpe)

# The stage in another language: Python, with Debian's python3-zmq and python3-msgpack.
set(_cf_py FALSE)
if(EXISTS /usr/bin/python3)
  execute_process(COMMAND /usr/bin/python3 -c "import zmq, msgpack"
                  RESULT_VARIABLE _cf_py_rc OUTPUT_QUIET ERROR_QUIET)
  if(_cf_py_rc EQUAL 0)
    set(_cf_py TRUE)
  else()
    message(STATUS "python3-zmq or python3-msgpack missing: the Python stage is not tested")
  endif()
endif()
if(_cf_py)
  conformance_test(conform_python_tokenize DEPENDS ofa-conform COMMAND ${_cf_kit}
    --tier tokenize --task summary --field src=the\ quick\ brown\ fox\ jumps\ over\ the\ dog
    --field tgt=a\ fox\ jumps --bad-field tgt=! --
    /usr/bin/python3 ${PROJECT_SOURCE_DIR}/stages/python/ofa_text_tokenize.py
    --bpe ${_cf_dir}/text.bpe)
endif()

# The Python stage's reader of arena descriptors against a real arena of the C library.
if(_cf_py)
  add_executable(arena_put ${_cf_dir}/arena_put.c)
  target_link_libraries(arena_put PRIVATE ofacommon)
  add_test(NAME python_arena_reader COMMAND /usr/bin/python3 ${_cf_dir}/python_arena_test.py
           $<TARGET_FILE:arena_put> ${_cf_data}/astronaut_96.jpg)
  set_tests_properties(python_arena_reader PROPERTIES LABELS unit TIMEOUT 60)
endif()

# Over tcp:// with CURVE (--curve FILE), as on a cluster: a C stage and the Python one.
conformance_test(conform_image_tcp DEPENDS ofa-image COMMAND ${_cf_kit} --transport tcp
  --tier image --task caption --field img=@${_cf_data}/rocket_progressive_96x64.jpg
  --bad-field img=@${_cf_data}/fruits_bad_huffman.jpg -- ${_cf_bin}/ofa-image)
if(_cf_py)
  conformance_test(conform_python_tokenize_tcp DEPENDS ofa-conform COMMAND ${_cf_kit}
    --transport tcp --tier tokenize --task summary --field src=a\ quick\ brown\ fox
    --field tgt=a\ fox --bad-field src=! --
    /usr/bin/python3 ${PROJECT_SOURCE_DIR}/stages/python/ofa_text_tokenize.py
    --bpe ${_cf_dir}/text.bpe)
endif()

# The reference worker with no fault passes; each fault fails with its reason.
set(_cf_echo ${_cf_bin}/ofa-conform --tier upper --task t --field text=hello --expect out:str
  --answer-ms 3000 --stop-ms 3000)
conformance_test(conform_broken_none DEPENDS conform-broken COMMAND ${_cf_echo} --
  ${_cf_bin}/conform-broken --break none)
foreach(fault
    "credits|credits +answered a sample it does not hold"
    "heartbeat|heartbeat +no heartbeat in"
    "hello|handshake +hello grants 1000 credits"
    "reject|reject +no answer to the bad sample"
    "garbage|garbage +.*the stage exited with status 3"
    "stop|stop +still running"
    "slow|liveness +silent for"
    "stats|stats +no STATS message")
  string(REPLACE "|" ";" _f "${fault}")
  list(GET _f 0 _mode)
  list(GET _f 1 _why)
  conformance_test(conform_broken_${_mode} DEPENDS conform-broken COMMAND
    bash ${_cf_dir}/expect_fail.sh "${_why}" ${_cf_echo} -- ${_cf_bin}/conform-broken
    --break ${_mode})
endforeach()

# A real plan through launch with the Python stage swapped in by stages.tokenize.program:
# lost 0, and batches and rejects identical to those of the C stage.
set(_cf_e2e_ok TRUE)
foreach(p launch ofa-broker ofa-source ofa-tokenize ofa-batcher ofa-sink ofa-bpe-train)
  if(NOT TARGET ${p})
    set(_cf_e2e_ok FALSE)
  endif()
endforeach()
if(_cf_e2e_ok AND _cf_py)
  ofa_add_script_test(e2e_python_stage COMMAND bash ${_cf_dir}/e2e_python_stage.sh
                      LABELS e2e TIMEOUT 120)
endif()

# A stage that drops its CURVE keys never gets through a tcp:// broker.
conformance_test(conform_broken_curve DEPENDS conform-broken COMMAND
  bash ${_cf_dir}/expect_fail.sh "handshake +no hello within 3000 ms .over tcp:// with CURVE"
  ${_cf_echo} --transport tcp --start-ms 3000 -- ${_cf_bin}/conform-broken --break curve)
conformance_test(conform_broken_none_tcp DEPENDS conform-broken COMMAND ${_cf_echo}
  --transport tcp -- ${_cf_bin}/conform-broken --break none)
