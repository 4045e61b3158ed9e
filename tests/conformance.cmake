# The stage conformance kit (tests/conformance/): ofa-conform, and the tests that run it
# against every built-in worker stage, the Python stage and a deliberately broken one.
add_subdirectory(${CMAKE_CURRENT_SOURCE_DIR}/conformance ${CMAKE_CURRENT_BINARY_DIR}/conformance)
