# ofa-broker as a program over real sockets (tests/test_broker_sock.c): the test forks
# the binary and plays the source, workers and batcher. The codec, stats, broker state
# machine and fuzz tests are registered in core.cmake.
if(TARGET ofa-broker)
  ofa_add_test(test_broker_sock SOURCES test_broker_sock.c broker_proc.c LIBS ofacommon
               LABELS unit TIMEOUT 120)
  if(TARGET test_broker_sock)
    add_dependencies(test_broker_sock ofa-broker)
  endif()
endif()
