# Tests of the generation searches, checkpoints and the trainer library.
if(TARGET ofagen)
  ofa_add_test(test_gen SOURCES test_gen.c LIBS ofagen LABELS unit TIMEOUT 60)
endif()
