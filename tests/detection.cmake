# Object detection end to end: the repeated target group ( [BOX] [TEXT])* through the
# real pipeline on tests/data/object_detection_small.tsv (rejects, map, its baseline).
# The tokenizer's and the metric's own tests are in test_tokenize and test_metrics.
set(_det_ok TRUE)
foreach(p launch ofa-source ofa-broker ofa-image ofa-tokenize ofa-batcher ofa-trainer
          ofa-bpe-train)
  if(NOT TARGET ${p})
    set(_det_ok FALSE)
  endif()
endforeach()
if(_det_ok)
  ofa_add_script_test(e2e_detection COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e_detection.sh
                      LABELS e2e TIMEOUT 180)
endif()
