/* fuzz_proto.c: fuzz target for the message decoder (proto_decode_frames).
 *
 * Input format (the rule that splits one byte string into ZeroMQ frames, also used by
 * tests/fuzz_make_corpus.c to write the seed corpus):
 *
 *   byte 0          k = byte % 4: the number of frames after the envelope
 *   bytes 1..2k     k little-endian u16 lengths, one per extra frame
 *   the rest        the envelope; the extra frames are cut from its end, last frame
 *                   last (a length larger than what is left takes all that is left)
 *
 * Properties checked beyond "no crash": a decoded message encodes again, that encoding
 * decodes, and encoding the result once more gives the same bytes (the codec is a
 * function of the message). Any failure aborts, which the fuzzer reports. */
#include "proto.h"
#include "util.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    int k = data[0] % 4;
    size_t head = 1 + 2 * (size_t)k;
    if (size < head)
        return 0;
    size_t lens[5];
    const void *bufs[5];
    size_t end = size;
    /* Extra frames from the end, last first. */
    for (int i = k; i >= 1; i--) {
        size_t want = (size_t)data[1 + 2 * (i - 1)] | ((size_t)data[2 + 2 * (i - 1)] << 8);
        size_t have = end - head;
        size_t n = want < have ? want : have;
        lens[i] = n;
        bufs[i] = data + end - n;
        end -= n;
    }
    /* Exact-size copies, so that a read one byte past any frame is caught by ASan. */
    void *copies[5];
    bufs[0] = data + head;
    lens[0] = end - head;
    for (int i = 0; i <= k; i++) {
        copies[i] = malloc(lens[i] ? lens[i] : 1);
        if (lens[i])
            memcpy(copies[i], bufs[i], lens[i]);
        bufs[i] = copies[i];
    }
    char err[512] = "";
    proto_msg_t *m = proto_decode_frames(bufs, lens, k + 1, err, sizeof err);
    if (!m) {
        if (!err[0]) {
            fprintf(stderr, "fuzz_proto: refused without a reason\n");
            abort();
        }
    } else {
        size_t l1, l2;
        uint8_t *e1 = proto_encode_bytes(m, &l1);
        const void *b1[1] = {e1};
        proto_msg_t *m2 = proto_decode_frames(b1, &l1, 1, err, sizeof err);
        if (!m2) {
            fprintf(stderr, "fuzz_proto: a decoded message does not decode again: %s\n", err);
            abort();
        }
        uint8_t *e2 = proto_encode_bytes(m2, &l2);
        if (l1 != l2 || memcmp(e1, e2, l1) != 0) {
            fprintf(stderr, "fuzz_proto: encoding is not stable (%zu vs %zu bytes)\n", l1, l2);
            abort();
        }
        free(e1);
        free(e2);
        proto_msg_destroy(&m2);
        proto_msg_destroy(&m);
    }
    for (int i = 0; i <= k; i++)
        free(copies[i]);
    return 0;
}
