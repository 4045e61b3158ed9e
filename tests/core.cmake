# Tests of the pipeline core: the message codec (common/proto), stats, the broker's
# state machine and the source's order. test_base64, test_batcher and test_source are
# registered in pipeline_stages.cmake.
ofa_add_test(test_proto SOURCES test_proto.c LIBS ofacommon LABELS unit TIMEOUT 60)
ofa_add_test(test_stats SOURCES test_stats.c LIBS ofacommon LABELS unit TIMEOUT 60)
if(TARGET ofabroker)
  ofa_add_test(test_broker SOURCES test_broker.c LIBS ofabroker LABELS unit TIMEOUT 60)
endif()
