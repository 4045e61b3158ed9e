# Tests of the image, text (BPE) and tokenize stages' libraries and programs.
if(TARGET ofaimg)
  ofa_add_test(test_imgproc SOURCES test_imgproc.c LIBS ofaimgstage LABELS unit TIMEOUT 120)
endif()
if(TARGET ofatext)
  ofa_add_test(test_bpe SOURCES test_bpe.c LIBS ofatext LABELS unit TIMEOUT 120)
  if(TARGET test_bpe AND TARGET ofa-bpe-train)
    add_dependencies(test_bpe ofa-bpe-train)
  endif()
endif()
if(TARGET ofatok)
  # test_tokenize also runs ofa-image and ofa-tokenize over ZeroMQ.
  ofa_add_test(test_tokenize SOURCES test_tokenize.c child_proc.c LIBS ofatokstage ofaimgstage
               LABELS unit TIMEOUT 120)
  if(TARGET test_tokenize AND TARGET ofa-image AND TARGET ofa-tokenize)
    add_dependencies(test_tokenize ofa-image ofa-tokenize)
  endif()
endif()
