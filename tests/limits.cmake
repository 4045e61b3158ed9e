# The plan's `limits` group, checked by each decoder (image, audio, video, motion) and by
# the source (text and media bytes of a row) on real files; big inputs are made at test
# time (PIL, a hand-made PNG header), never committed.
if(TARGET ofaimgstage AND TARGET ofaaudstage AND TARGET ofavidstage AND TARGET ofamotstage
   AND TARGET ofasource)
  ofa_add_test(test_limits SOURCES test_limits.c
               LIBS ofaimgstage ofaaudstage ofavidstage ofamotstage ofasource z
               LABELS unit TIMEOUT 60)
endif()
