# bench_av: the audio and video tiers' items/s beside the Python path (bench_av_py.py).
if(TARGET ofaaudstage AND TARGET ofavideo)
  add_executable(bench_av ${CMAKE_CURRENT_LIST_DIR}/bench_av.c)
  target_link_libraries(bench_av PRIVATE ofaaudstage ofavideo)
  target_compile_definitions(bench_av PRIVATE OFA_BENCH_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
