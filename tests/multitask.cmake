# The multi- vs single-task experiment (scripts/multitask_experiment.sh): seven trainings
# of the nano model on CPU, 5-10 minutes at this size; label long, not part of CI.
ofa_add_script_test(multitask_experiment
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/../scripts/multitask_experiment.sh
          --epochs 1 --max-rows 320 --bin ${CMAKE_BINARY_DIR}/bin
          --out ${CMAKE_BINARY_DIR}/multitask_experiment
  LABELS long TIMEOUT 1800)
# trainer.multitask = round_robin: the source's rounds and the trainer's summed step.
if(TARGET ofatrainer AND TARGET ofasource)
  ofa_add_test(test_multitask SOURCES test_multitask.c LIBS ofatrainer ofasource
               LABELS unit TIMEOUT 120)
endif()
# round_robin through launch with real processes on the committed fixtures: every step
# saw every task, the small task repeated its epochs, rejects named, nothing lost (~10 s).
ofa_add_script_test(e2e_multitask_round_robin
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/multitask_rr_test.py
  LABELS e2e TIMEOUT 300)
