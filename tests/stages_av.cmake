# Tests of the audio, video and motion stages' libraries and programs (each test also
# runs its worker program over ZeroMQ, so it depends on it).
if(TARGET ofaaudio)
  ofa_add_test(test_audio SOURCES test_audio.c LIBS ofaaudstage LABELS unit TIMEOUT 120)
  if(TARGET test_audio)
    add_dependencies(test_audio ofa-audio)
  endif()
endif()
if(TARGET ofavideo)
  ofa_add_test(test_video SOURCES test_video.c LIBS ofavidstage ofaimg LABELS unit TIMEOUT 120)
  if(TARGET test_video)
    add_dependencies(test_video ofa-video)
  endif()
endif()
if(TARGET ofamotion)
  ofa_add_test(test_motion SOURCES test_motion.c LIBS ofamotstage LABELS unit TIMEOUT 120)
  if(TARGET test_motion)
    add_dependencies(test_motion ofa-motion)
  endif()
endif()
# End to end through launch: the three tiers in the pipeline with a sink, bad rows
# rejected by the right tier, batches identical with 1 and 3 workers per tier.
set(_av_ok TRUE)
foreach(p launch ofa-broker ofa-source ofa-audio ofa-video ofa-motion ofa-tokenize ofa-batcher ofa-sink
          ofa-bpe-train)
  if(NOT TARGET ${p})
    set(_av_ok FALSE)
  endif()
endforeach()
if(_av_ok)
  ofa_add_script_test(e2e_av COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e_av.sh
                      LABELS e2e TIMEOUT 300)
endif()
