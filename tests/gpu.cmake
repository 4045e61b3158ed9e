# GPU tests: built whenever the CUDA backend is (CI compiles them), labelled `gpu` so CI
# skips them; where no GPU is usable they exit 77 and CTest reports them as skipped.
# scripts/gpu_check.sh builds and runs them on the lent GPU machine.
if(TARGET ofamodel_cuda AND TARGET ofamodel)
  add_executable(test_cuda_parity test_cuda_parity.c)
  target_link_libraries(test_cuda_parity PRIVATE ofamodel ofamodel_cuda m)
  target_compile_definitions(test_cuda_parity PRIVATE
    OFA_SHARED_DIR="${PROJECT_SOURCE_DIR}/../shared")
  add_test(NAME test_cuda_parity COMMAND test_cuda_parity)
  set_tests_properties(test_cuda_parity PROPERTIES LABELS gpu TIMEOUT 300
    SKIP_RETURN_CODE 77 WORKING_DIRECTORY ${PROJECT_BINARY_DIR})
endif()
