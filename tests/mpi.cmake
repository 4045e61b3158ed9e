# The trainer group over MPI (stages/trainer/comm.h): two CPU ranks under mpirun take
# the single-rank step, and an end-to-end run of a plan with trainer.ranks = 2.
# The MPI tests are built only where CMake found MPI and mpirun; test_comm (the single
# rank and the choice of kind) always. Open MPI refuses root without
# --allow-run-as-root; --oversubscribe lets 2 ranks run on a 1-core CI runner.
if(TARGET ofatrainer AND OFA_HAVE_mpi AND OFA_MPIRUN)
  add_executable(test_mpi_group test_mpi_group.c)
  target_link_libraries(test_mpi_group PRIVATE ofatrainer)
  add_test(NAME test_mpi_group
           COMMAND setsid ${OFA_MPIRUN} -np 2 --oversubscribe --allow-run-as-root
                   --mca btl self,vader $<TARGET_FILE:test_mpi_group>)
  set_tests_properties(test_mpi_group PROPERTIES LABELS unit TIMEOUT 60
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endif()
if(TARGET launch AND TARGET ofa-trainer AND OFA_HAVE_mpi AND OFA_MPIRUN)
  ofa_add_script_test(test_e2e_ranks COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e_ranks.sh
                      LABELS e2e TIMEOUT 120)
endif()
if(TARGET ofacomm)
  ofa_add_test(test_comm SOURCES test_comm.c LIBS ofacomm LABELS unit TIMEOUT 30)
endif()
