# Fault tolerance: a SIGKILLed batcher (the broker's ack contract, the batcher restarted
# at a batch boundary, consumers' duplicate guard), random worker kills, resume after a
# SIGKILL of the whole run, and the soak run (label long: never in CI).
if(TARGET ofabroker AND TARGET ofabatcher)
  ofa_add_test(test_faults SOURCES test_faults.c LIBS ofabroker ofabatcher ofacommon
               LABELS unit TIMEOUT 60)
endif()
