/* seen.h: the set of samples a consumer has already taken, so that a sample delivered
 * twice (a batch sent again by a restarted batcher, a re-dispatch answered twice) is
 * trained or counted once.
 *
 * A key is (sample id, epoch, split): the same row comes back every epoch and must count
 * again there. Memory stays bounded over a long run: a duplicate only ever arrives within
 * a short window after the original (what the batcher buffers and the consumers hold:
 * hundreds to a few thousand samples), so keys older than the last SEEN_KEEP added are
 * forgotten when the table would grow.
 *
 *     seen_t *s = seen_new();
 *     if (seen_add(s, id, epoch, valid)) ... new ... else ... duplicate ...
 *     seen_destroy(&s); */
#ifndef OFA_SEEN_H
#define OFA_SEEN_H

#include <stddef.h>
#include <stdint.h>

typedef struct seen seen_t;

/* Keys remembered at least: far more than any batcher window. */
#define SEEN_KEEP 65536

/* The caller owns the result. */
seen_t *seen_new(void);
void seen_destroy(seen_t **self_p);

/* Add a key: 1 when it was new, 0 when it was there already (a duplicate). */
int seen_add(seen_t *self, uint64_t id, int64_t epoch, int valid);
/* 1 when the key is in the set. */
int seen_has(const seen_t *self, uint64_t id, int64_t epoch, int valid);
/* Keys held now (after pruning). */
size_t seen_count(const seen_t *self);

#endif
