# bench_image: the image tier's throughput and PSNR against PIL + torchvision.
if(TARGET ofaimg)
  add_executable(bench_image ${CMAKE_CURRENT_LIST_DIR}/bench_image.c)
  target_link_libraries(bench_image PRIVATE ofaimg dep::turbojpeg m)
  target_compile_definitions(bench_image PRIVATE OFA_BENCH_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
endif()
