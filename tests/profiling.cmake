# Profiling tools of launch (docs/profiling.md): the stats timeline, launch top,
# launch profile (span tracing, trace.json) and launch report (report.html, rendered by
# headless Chromium when it is installed).
find_program(PYTHON3 python3 REQUIRED)
ofa_add_script_test(test_report_top
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/test_report.py top
  LABELS unit TIMEOUT 60)
ofa_add_script_test(test_report_profile
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/test_report.py profile
  LABELS e2e TIMEOUT 300)
ofa_add_script_test(test_report_html
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/test_report.py report
  LABELS e2e TIMEOUT 600)
ofa_add_test(test_report_json
  SOURCES test_report_json.c ${PROJECT_SOURCE_DIR}/launch/jsonr.c
          ${PROJECT_SOURCE_DIR}/launch/timeline.c ${PROJECT_SOURCE_DIR}/launch/statsdb.c
  LIBS ofacommon LABELS unit TIMEOUT 60)
