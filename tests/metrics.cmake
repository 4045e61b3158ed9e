# Tests of the evaluation metrics library (stages/eval) and of the dataset builder
# (scripts/build_data.py) that produces what the metrics are computed on.
if(TARGET ofametrics)
  ofa_add_test(test_metrics SOURCES test_metrics.c LIBS ofametrics LABELS unit TIMEOUT 60)
endif()
# Builds the three stamps datasets into a temporary folder (about 25 s on one core) and
# checks layout, determinism, idempotency and the committed fixtures' bad rows.
ofa_add_script_test(build_data
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/../scripts/data/check_build_data.py
          ${CMAKE_CURRENT_SOURCE_DIR}/..
  LABELS unit TIMEOUT 180)
