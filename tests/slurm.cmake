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
# The trainer group under launch --slurm: one srun step of 2 ranks (srun --mpi=pmix, no
# mpirun) on a real local cluster, equal to 1 rank on the same global batch, and stopped
# by SIGINT or scancel of its step. Both cluster tests share the slurm lock: one apt
# install, and no two throw-away clusters at once.
if(TARGET launch AND TARGET ofa-trainer AND OFA_HAVE_mpi)
  ofa_add_script_test(e2e_slurm_ranks
    COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e/slurm_ranks_test.sh
    LABELS slurm TIMEOUT 300)
  set_tests_properties(e2e_slurm_ranks PROPERTIES SKIP_RETURN_CODE 77 RESOURCE_LOCK slurm_cluster)
  set_tests_properties(e2e_slurm PROPERTIES RESOURCE_LOCK slurm_cluster)
endif()
