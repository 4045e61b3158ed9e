# The modality-expert FFN of the encoder (model.modality_experts): against the plain
# model, routing, generation, checkpoints and the plan key. Its gradients are checked in
# double precision by test_gradcheck.
if(TARGET ofatrainer)
  ofa_add_test(test_experts SOURCES test_experts.c LIBS ofatrainer LABELS unit TIMEOUT 60)
endif()
# The experts-on vs experts-off experiment (scripts/experts_experiment.sh): two trainings
# of the nano model on seven tasks, about 5 minutes each here; label long, not in CI.
ofa_add_script_test(experts_experiment
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/../scripts/experts_experiment.sh
          --bin ${CMAKE_BINARY_DIR}/bin --out ${CMAKE_BINARY_DIR}/experts_experiment
  LABELS long TIMEOUT 1800)
