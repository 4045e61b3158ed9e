# Security: CURVE on tcp:// endpoints (common/curve.h) with the real ofa-broker, and a
# whole run through launch on tcp:// with CURVE (transport = "tcp").
ofa_add_test(test_security SOURCES test_security.c broker_proc.c LIBS ofacommon LABELS unit
             TIMEOUT 60)
# Debian's Python: the test plays a stranger with python3-zmq.
ofa_add_script_test(e2e_security_tcp_curve
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/e2e/security_test.py
  LABELS e2e TIMEOUT 120)
