# Fault tolerance: a SIGKILLed batcher (the broker's ack contract, the batcher restarted
# at a batch boundary, consumers' duplicate guard), random worker kills, resume after a
# SIGKILL of the whole run, and the soak run (label long: never in CI).
if(TARGET ofabroker AND TARGET ofabatcher)
  ofa_add_test(test_faults SOURCES test_faults.c broker_rec.c LIBS ofabroker ofabatcher ofacommon
               LABELS unit TIMEOUT 60)
endif()
# End to end, on the built stamps_caption dataset (launch data stamps_caption):
# random image workers and the batcher SIGKILLed during a run (sets of delivered samples,
# batches identical to a calm run; about 35 s), and resume after a SIGKILL of every
# process with a re-dispatch between the checkpoint and the kill (losses bit for bit;
# about 50 s).
find_program(PYTHON3 python3 REQUIRED)
ofa_add_script_test(e2e_fault_kills
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/fault_test.py kills
  LABELS e2e TIMEOUT 240)
ofa_add_script_test(e2e_fault_resume
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/fault_test.py resume
  LABELS e2e TIMEOUT 300)
# The soak run (label long: never in CI): 10 minutes at full speed, every stage's RSS
# sampled each second; fails when a stage grows by more than 10 % after the warm-up.
ofa_add_script_test(soak_rss
  COMMAND bash ${PROJECT_SOURCE_DIR}/scripts/soak.sh --minutes 10 --check 10
  LABELS long TIMEOUT 900)
