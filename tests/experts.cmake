# The modality-expert FFN of the encoder (model.modality_experts): against the plain
# model, routing, generation, checkpoints and the plan key. Its gradients are checked in
# double precision by test_gradcheck.
if(TARGET ofatrainer)
  ofa_add_test(test_experts SOURCES test_experts.c LIBS ofatrainer LABELS unit TIMEOUT 60)
endif()
