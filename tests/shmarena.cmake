# The shared-memory arena for large tensors (common/shmarena.c).
ofa_add_test(test_shmarena SOURCES test_shmarena.c LIBS ofacommon LABELS unit TIMEOUT 60)
