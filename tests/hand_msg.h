/* hand_msg.h: message envelopes packed by hand, for tests of what proto never writes
 * itself (a stale arena descriptor, a bad "gen", a tensor naming a frame that is not
 * there): proto_msg_t can only hold what it put or received, so such bytes are built
 * with msgpack directly.
 *
 *     hand_sample_field(&pk, "caption", "img");   // {magic, v, kind: sample, task,
 *     ...pack the value of "data"...              //  f: {img: {data: <value>}}}
 */
#ifndef OFA_TEST_HAND_MSG_H
#define OFA_TEST_HAND_MSG_H

#include "proto.h"

#include <msgpack.h>
#include <string.h>

static inline void hand_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

/* The envelope of a sample of task (NULL: no "task" key) with one field whose tensor
 * map holds only "data": the caller packs that value next. */
static inline void hand_sample_field(msgpack_packer *pk, const char *task, const char *field) {
    msgpack_pack_map(pk, task ? 5 : 4);
    hand_str(pk, "magic");
    hand_str(pk, PROTO_MAGIC);
    if (task) {
        hand_str(pk, "task");
        hand_str(pk, task);
    }
    hand_str(pk, "v");
    msgpack_pack_int(pk, PROTO_VERSION);
    hand_str(pk, "kind");
    msgpack_pack_int(pk, PROTO_SAMPLE);
    hand_str(pk, "f");
    msgpack_pack_map(pk, 1);
    hand_str(pk, field);
    msgpack_pack_map(pk, 1);
    hand_str(pk, "data");
}

#endif
