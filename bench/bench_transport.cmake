# bench_transport: messages/s and GB/s of one connection, per transport (frame, shm, raw).
add_executable(bench_transport ${CMAKE_CURRENT_LIST_DIR}/bench_transport.c)
target_link_libraries(bench_transport PRIVATE ofacommon)
target_compile_definitions(bench_transport PRIVATE OFA_BENCH_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
