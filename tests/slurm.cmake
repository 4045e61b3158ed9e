# launch on Slurm: the pure parts of launch/slurm.c (placement, srun argv, scontrol and
# squeue parsing), and a real local cluster (../shared/slurm/up.sh) end to end.
ofa_add_test(test_slurm
  SOURCES test_slurm.c ${PROJECT_SOURCE_DIR}/launch/slurm.c ${PROJECT_SOURCE_DIR}/launch/proc.c
          ${PROJECT_SOURCE_DIR}/launch/graph.c
  LIBS ofaplans ofacommon LABELS unit TIMEOUT 60)
if(TARGET test_slurm)
  target_include_directories(test_slurm PRIVATE ${PROJECT_SOURCE_DIR}/launch)
endif()
ofa_add_script_test(e2e_slurm
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/slurm_test.sh
  LABELS slurm TIMEOUT 300)
set_tests_properties(e2e_slurm PROPERTIES SKIP_RETURN_CODE 77)
# The plan's placement keys: read and written by plans/planfile.c, applied by slurm_assign.
ofa_add_test(test_placement
  SOURCES test_placement.c ${PROJECT_SOURCE_DIR}/launch/slurm.c ${PROJECT_SOURCE_DIR}/launch/proc.c
  LIBS ofaplans ofacommon LABELS unit TIMEOUT 60)
if(TARGET test_placement)
  target_include_directories(test_placement PRIVATE ${PROJECT_SOURCE_DIR}/launch)
endif()
