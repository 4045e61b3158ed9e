# The shared-memory arena for large tensors (common/shmarena.c).
ofa_add_test(test_shmarena SOURCES test_shmarena.c LIBS ofacommon LABELS unit TIMEOUT 60)
# Arena descriptors in the message codec (proto_msg_field_to_arena, the "gen" key).
ofa_add_test(test_proto_arena SOURCES test_proto_arena.c LIBS ofacommon LABELS unit TIMEOUT 60)
