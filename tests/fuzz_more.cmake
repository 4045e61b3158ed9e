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
  SECONDS 10 MIN_EXECS 5000)

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
    SECONDS 10 MIN_EXECS 5000)
endif()

# The audio tier's chain (aud_features): libsndfile / FFmpeg decode, libswresample,
# the filterbank. audstage.c brings the plan and message code along (it links them).
if(TARGET ofaaudstage)
  set(_fa ${PROJECT_SOURCE_DIR}/stages/audio)
  ofa_add_fuzz(fuzz_audio
    HARNESS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_audio.c
    SOURCES ${_fa}/audstage.c ${_fa}/auddec.c ${_fa}/fbank.c ${_fa}/avmem.c
            ${_fp}/planfile.c ${_fp}/instr.c ${_fp}/taskplan.c ${_fc}/proto.c ${_fc}/util.c
    LIBS ofaaudstage
    SEEDS ${_fb}/audio
    PKG sndfile libavformat libavcodec libswresample libavutil fftw3f libconfig libzmq
        msgpack
    INCLUDES ${_fc} ${_fp} ${_fa}
    SECONDS 10 MIN_EXECS 2000)
endif()
