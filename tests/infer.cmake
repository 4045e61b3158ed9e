# ofa-infer on VIDEO and MOTION inputs: a short run on the committed clips and BVH,
# then ofa-infer's answer for every validation item must be the output the trainer's
# own evaluation generated for it from the same checkpoint; bad files are refused with
# their name (about 10 s on an idle 2-core machine).
set(_infer_av_ok TRUE)
foreach(p launch ofa-infer ofa-broker ofa-source ofa-video ofa-motion ofa-tokenize ofa-batcher
          ofa-trainer ofa-bpe-train)
  if(NOT TARGET ${p})
    set(_infer_av_ok FALSE)
  endif()
endforeach()
if(_infer_av_ok)
  ofa_add_script_test(e2e_infer_av COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/e2e_infer_av.sh
                      LABELS e2e TIMEOUT 120)
endif()
