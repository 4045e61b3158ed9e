# End-to-end tests of the pipeline through launch (real processes, real data).
find_program(PYTHON3 python3 REQUIRED)
ofa_add_script_test(e2e_pipeline_rejects
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/pipeline_test.py rejects
  LABELS e2e TIMEOUT 300)
ofa_add_script_test(e2e_pipeline_kill_worker
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/pipeline_test.py kill
  LABELS e2e TIMEOUT 300)
# The README's main job: trains and evaluates (about 3 minutes on 2 cores).
ofa_add_script_test(e2e_main_plan
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/main_plan_test.py
  LABELS e2e TIMEOUT 900)
# Shared-memory arenas (shm_arena): same batches as frames, every slot released once,
# a killed worker's arena removed with the run's (about 8 s).
ofa_add_script_test(e2e_arena
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/arena_test.py
  LABELS e2e TIMEOUT 300)
