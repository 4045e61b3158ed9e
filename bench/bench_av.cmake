# bench_av: the audio, video and motion tiers' items/s beside the Python path (bench_av_py.py).
if(TARGET ofaaudstage AND TARGET ofavideo AND TARGET ofamotion)
  add_executable(bench_av ${CMAKE_CURRENT_LIST_DIR}/bench_av.c)
  target_link_libraries(bench_av PRIVATE ofaaudstage ofavideo ofamotion)
  target_compile_definitions(bench_av PRIVATE OFA_BENCH_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
