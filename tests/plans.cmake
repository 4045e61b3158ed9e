# Tests of the instruction parser, the task-plan compiler, the plan loader and the presets.
if(TARGET ofaplans)
  ofa_add_test(test_instr SOURCES test_instr.c LIBS ofaplans LABELS unit TIMEOUT 60)
  ofa_add_test(test_taskplan SOURCES test_taskplan.c LIBS ofaplans LABELS unit TIMEOUT 60)
  ofa_add_test(test_planfile SOURCES test_planfile.c LIBS ofaplans LABELS unit TIMEOUT 60)
  ofa_add_test(test_presets SOURCES test_presets.c LIBS ofaplans LABELS unit TIMEOUT 60)
endif()
