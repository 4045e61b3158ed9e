/* statsrx.h: receives the stats messages that every process pushes to launch and
 * records them in the stats database (one snapshot per process, replaced each time). */
#ifndef OFA_LAUNCH_STATSRX_H
#define OFA_LAUNCH_STATSRX_H

#include "statsdb.h"

/* Read every stats message waiting on the PULL socket (never blocks). A malformed
 * message is reported on stderr and dropped. Returns the number recorded. */
int statsrx_drain(void *socket, statsdb_t *db);

#endif
