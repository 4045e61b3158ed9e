/* statsrx.c: see statsrx.h. */
#include "statsrx.h"
#include "proto.h"

#include <stdio.h>
#include <string.h>
#include <zmq.h>

int statsrx_drain(void *socket, statsdb_t *db) {
    int n = 0;
    for (;;) {
        char err[512];
        proto_msg_t *m = proto_recv(socket, NULL, NULL, ZMQ_DONTWAIT, err, sizeof err);
        if (!m) {
            if (!err[0])
                break;
            fprintf(stderr, "launch: dropped a malformed stats message: %s\n", err);
            continue;
        }
        const char *proc = proto_msg_get_str(m, "proc");
        if (proto_msg_kind(m) != PROTO_STATS || !proc || !*proc) {
            fprintf(stderr, "launch: dropped a %s message without a process name on the "
                    "stats socket\n", proto_kind_name(proto_msg_kind(m)));
            proto_msg_destroy(&m);
            continue;
        }
        statsdb_begin(db, proc, (long)proto_msg_get_int(m, "pid", 0), proto_msg_get_str(m, "tier"));
        for (int i = 0; i < proto_msg_n_fields(m); i++) {
            const proto_field_t *f = proto_msg_field(m, i);
            if (strcmp(f->key, "proc") == 0 || strcmp(f->key, "tier") == 0 ||
                strcmp(f->key, "pid") == 0)
                continue;
            if (f->type == PV_INT)
                statsdb_put(db, proc, f->key, (double)f->i);
            else if (f->type == PV_FLOAT)
                statsdb_put(db, proc, f->key, f->f);
            else if (f->type == PV_STR)
                statsdb_put_str(db, proc, f->key, (const char *)f->data);
        }
        proto_msg_destroy(&m);
        n++;
    }
    return n;
}
