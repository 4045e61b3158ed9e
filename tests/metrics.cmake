# Tests of the evaluation metrics library (stages/eval).
if(TARGET ofametrics)
  ofa_add_test(test_metrics SOURCES test_metrics.c LIBS ofametrics LABELS unit TIMEOUT 60)
endif()
