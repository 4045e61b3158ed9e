/* child_proc.h: a stage program as a child process of a test that plays its peers over
 * ZeroMQ (test_batcher.c, test_source.c): start it, wait for its exit, read its messages.
 *
 *     pid_t pid = cproc_spawn(argv, "/tmp/x.log");   // stderr to the log (NULL: kept)
 *     proto_msg_t *m = cproc_next_msg(sock, ident, &identlen, 2000);
 *     cr_assert_eq(cproc_wait_exit(pid, 5.0), 0);
 */
#ifndef OFA_TEST_CHILD_PROC_H
#define OFA_TEST_CHILD_PROC_H

#include "proto.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fork and exec argv[0] (NULL-terminated argv), stdout to /dev/null, stderr to `log`
 * when given. Asserts the fork. */
pid_t cproc_spawn(char *const argv[], const char *log);

/* Exit status of pid within timeout_s (128 + signal when killed by one), or -1 (the
 * process is then killed). */
int cproc_wait_exit(pid_t pid, double timeout_s);

/* The next message on sock other than a heartbeat within timeout_ms, or NULL; a
 * malformed one fails the test. ident/identlen as proto_recv's (may be NULL). */
proto_msg_t *cproc_next_msg(void *sock, uint8_t *ident, size_t *identlen, int timeout_ms);

#endif
