# Tests of the model library: PyTorch golden match, gradient checks in double precision,
# safetensors, optimizer and schedule.
if(TARGET ofamodel)
  ofa_add_test(test_golden SOURCES test_golden.c LIBS ofamodel LABELS unit TIMEOUT 120)
  ofa_add_test(test_safetensors SOURCES test_safetensors.c LIBS ofamodel LABELS unit TIMEOUT 60)
  ofa_add_test(test_optim SOURCES test_optim.c LIBS ofamodel LABELS unit TIMEOUT 60)
  ofa_add_test(test_gradcheck SOURCES test_gradcheck.c LIBS ofamodel_f64 LABELS unit TIMEOUT 120)
endif()
