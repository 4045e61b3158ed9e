# Tests of the pipeline's own stages: base64 (common/), the source's row reading and
# order, the batcher's reorder buffer and padding, and the programs over ZeroMQ.
ofa_add_test(test_base64 SOURCES test_base64.c LIBS ofacommon LABELS unit TIMEOUT 60)
if(TARGET ofabatcher)
  ofa_add_test(test_batcher SOURCES test_batcher.c LIBS ofabatcher LABELS unit TIMEOUT 60)
endif()
if(TARGET ofasource)
  ofa_add_test(test_source SOURCES test_source.c LIBS ofasource LABELS unit TIMEOUT 60)
endif()
