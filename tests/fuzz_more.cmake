# Fuzz targets of the parsers and decoders (label fuzz, issue 7): the instruction parser
# and compiler, the plan loader, the image, audio and video decoders and the BVH reader.
# Each is seeded from tests/data/bad/<name>/ (small real files, good and cut/corrupted)
# and runs about 10 s; its minimum number of executions is set well below what it reaches
# on a loaded 2-core machine (docs/security.md has the table), so a target that stalls or
# barely runs fails. ofa_add_fuzz is defined in core.cmake.
set(_fc ${PROJECT_SOURCE_DIR}/common)
set(_fp ${PROJECT_SOURCE_DIR}/plans)
set(_fb ${CMAKE_CURRENT_SOURCE_DIR}/data/bad)

# The instruction parser and the task-plan compiler.
ofa_add_fuzz(fuzz_instr
  HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_instr.c
  SOURCES ${_fp}/instr.c ${_fp}/taskplan.c ${_fc}/util.c
  LIBS ofaplans
  SEEDS ${_fb}/instr
  INCLUDES ${_fc} ${_fp}
  SECONDS 10 MIN_EXECS 50000)

# The plan loader (libconfig text through the key table and the instruction compiler).
ofa_add_fuzz(fuzz_plan
  HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_plan.c
  SOURCES ${_fp}/planfile.c ${_fp}/instr.c ${_fp}/taskplan.c ${_fc}/util.c
  LIBS ofaplans
  SEEDS ${_fb}/plan
  PKG libconfig
  INCLUDES ${_fc} ${_fp}
  SECONDS 10 MIN_EXECS 1500)

# The image tier's decoder: JPEG (libjpeg-turbo), PNG (libpng), fit, resampler, patches.
if(TARGET ofaimg)
  set(_fi ${PROJECT_SOURCE_DIR}/stages/image)
  ofa_add_fuzz(fuzz_image
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_image.c
    SOURCES ${_fi}/imgproc.c ${_fi}/resize_simd.c ${_fc}/util.c
    LIBS ofaimg dep::turbojpeg
    SEEDS ${_fb}/image
    PKG libturbojpeg libpng
    INCLUDES ${_fc} ${_fi}
    SECONDS 10 MIN_EXECS 3000)
endif()

# The audio tier's chain (aud_features): libsndfile / FFmpeg decode, libswresample,
# the filterbank. audstage.c brings the plan and message code along (it links them).
if(TARGET ofaaudstage)
  set(_fa ${PROJECT_SOURCE_DIR}/stages/audio)
  ofa_add_fuzz(fuzz_audio
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_audio.c
    SOURCES ${_fa}/audstage.c ${_fa}/auddec.c ${_fa}/fbank.c ${_fa}/avmem.c
            ${_fp}/planfile.c ${_fp}/instr.c ${_fp}/taskplan.c ${_fc}/proto.c ${_fc}/shmarena.c ${_fc}/util.c
            ${PROJECT_SOURCE_DIR}/stages/common/decstage.c
    LIBS ofaaudstage
    SEEDS ${_fb}/audio
    PKG sndfile libavformat libavcodec libswresample libavutil fftw3f libconfig libzmq
        msgpack
    INCLUDES ${_fc} ${_fp} ${_fa} ${PROJECT_SOURCE_DIR}/stages/common
    SECONDS 10 MIN_EXECS 2000)
endif()

# The video tier (vid_process): FFmpeg demuxing from memory, decoding, frame sampling,
# libswscale. FFmpeg probes every demuxer on each input: about a millisecond even for
# garbage, so its minimum count is far lower than the parsers'.
if(TARGET ofavideo)
  set(_fv ${PROJECT_SOURCE_DIR}/stages/video)
  set(_fa ${PROJECT_SOURCE_DIR}/stages/audio)
  set(_fi ${PROJECT_SOURCE_DIR}/stages/image)
  ofa_add_fuzz(fuzz_video
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_video.c
    SOURCES ${_fv}/vidproc.c ${_fa}/avmem.c ${_fi}/imgproc.c ${_fi}/resize_simd.c
            ${_fc}/util.c
    LIBS ofavideo
    SEEDS ${_fb}/video
    PKG libavformat libavcodec libswscale libavutil libturbojpeg libpng
    INCLUDES ${_fc} ${_fv} ${_fa} ${_fi}
    SECONDS 10 MIN_EXECS 2000)
endif()

# The motion tier's BVH reader and window features.
if(TARGET ofamotion)
  set(_fm ${PROJECT_SOURCE_DIR}/stages/motion)
  ofa_add_fuzz(fuzz_bvh
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_bvh.c
    SOURCES ${_fm}/bvh.c ${_fc}/util.c
    LIBS ofamotion
    SEEDS ${_fb}/bvh
    INCLUDES ${_fc} ${_fm}
    SECONDS 10 MIN_EXECS 50000)
endif()
