# The speech, video, motion and phone datasets and plans (configs/asr.conf,
# video_caption.conf, motion_label.conf, text_to_phone.conf).
find_program(PYTHON3 python3 REQUIRED)
# The media datasets' builder: layout, media paths and files (BVH windows, clips by
# ffprobe), closed sets, split hygiene, idempotency (about 20 s).
ofa_add_script_test(build_av_data
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/../scripts/data/check_av_data.py
          ${CMAKE_CURRENT_SOURCE_DIR}/..
  LABELS unit TIMEOUT 180)
# A little of two new modalities (PHONE targets, MOTION sources) through launch: the
# builder's rows all delivered (lost 0, rejected 0), the loss falls, eval.json with the
# plan's metric and the best-constant baseline. Builds its datasets into a temporary
# folder (a few seconds each); about 50 s on an idle 2-core machine.
ofa_add_script_test(e2e_modalities
  COMMAND ${PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/e2e/modalities_test.py --rows 480
          text_to_phone motion_label
  LABELS e2e TIMEOUT 240)
# The full runs, each against its best-constant baseline, and the table of
# docs/modalities.md (about 15-25 minutes on 2 cores).
ofa_add_script_test(modality_experiment
  COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/../scripts/modality_experiment.sh
          --bin ${CMAKE_BINARY_DIR}/bin --out ${CMAKE_BINARY_DIR}/modality_experiment
  LABELS long TIMEOUT 3600)
