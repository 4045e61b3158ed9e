# Tests of the generation searches, checkpoints and the trainer library.
if(TARGET ofagen)
  ofa_add_test(test_gen SOURCES test_gen.c LIBS ofagen LABELS unit TIMEOUT 60)
endif()
if(TARGET ofatrainio)
  ofa_add_test(test_ckpt SOURCES test_ckpt.c LIBS ofatrainio LABELS unit TIMEOUT 120)
  ofa_add_test(test_trainer_log SOURCES test_trainer_log.c LIBS ofatrainio LABELS unit TIMEOUT 60)
endif()
