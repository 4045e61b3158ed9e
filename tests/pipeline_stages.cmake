# Tests of the pipeline's own stages: base64 (common/), the source's row reading and
# order, the batcher's reorder buffer and padding, and the programs over ZeroMQ.
ofa_add_test(test_base64 SOURCES test_base64.c LIBS ofacommon LABELS unit TIMEOUT 60)
if(TARGET ofabatcher)
  ofa_add_test(test_batcher SOURCES test_batcher.c child_proc.c LIBS ofabatcher LABELS unit TIMEOUT 120)
  # test_batcher also runs ofa-batcher and ofa-sink over ZeroMQ (the test plays their peers).
  if(TARGET test_batcher)
    add_dependencies(test_batcher ofa-batcher ofa-sink)
  endif()
endif()
if(TARGET ofasource)
  ofa_add_test(test_source SOURCES test_source.c child_proc.c LIBS ofasource LABELS unit TIMEOUT 120)
  # test_source also runs ofa-source over ZeroMQ (the test plays the broker).
  if(TARGET test_source)
    add_dependencies(test_source ofa-source)
  endif()
endif()
# End to end through launch: batches identical with 1 and 4 image workers, and with an
# image worker killed mid-run (the second needs data/stamps_caption, `launch data`).
set(_pd_ok TRUE)
foreach(p launch ofa-broker ofa-source ofa-image ofa-tokenize ofa-batcher ofa-sink ofa-bpe-train)
  if(NOT TARGET ${p})
    set(_pd_ok FALSE)
  endif()
endforeach()
if(_pd_ok)
  ofa_add_script_test(e2e_pipeline_determinism
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/pipeline_determinism.sh
    LABELS e2e TIMEOUT 300)
  ofa_add_script_test(e2e_pipeline_determinism_kill
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/pipeline_determinism.sh kill
    LABELS e2e TIMEOUT 300)
endif()
