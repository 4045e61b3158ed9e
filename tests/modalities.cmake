# Audio, video and motion from their tiers to the model: positions made by the tokenize
# tier, the batcher's packing, and the model's adapters on real fixtures.
if(TARGET ofaaudstage AND TARGET ofavidstage AND TARGET ofamotstage AND TARGET ofatokstage
   AND TARGET ofabatcher AND TARGET ofatrainer)
  ofa_add_test(test_modalities SOURCES test_modalities.c
               LIBS ofaaudstage ofavidstage ofamotstage ofatokstage ofabatcher ofatrainer
               LABELS unit TIMEOUT 120)
endif()
