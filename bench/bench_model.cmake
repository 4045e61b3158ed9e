# bench_model_cpu: CPU training samples/s of the model against PyTorch (bench_model_cpu.sh).
if(TARGET ofamodel)
  add_executable(bench_model_cpu ${CMAKE_CURRENT_LIST_DIR}/bench_model_cpu.c)
  target_link_libraries(bench_model_cpu PRIVATE ofamodel)
endif()
