/* timeline.c: see timeline.h. Lines are flushed after every write so that `launch top`
 * reading the file while the run goes sees whole lines only (each line is one fwrite of
 * less than the stdio buffer, followed by fflush). */
#include "timeline.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

struct timeline {
    FILE *f;
    double t0;          /* util_now() at open: t = 0 */
    double last;        /* util_now() of the last write */
};

timeline_t *timeline_open(const char *run_dir, char *err, size_t errlen) {
    char path[4096];
    snprintf(path, sizeof path, "%s/stats.jsonl", run_dir);
    FILE *f = fopen(path, "a");
    if (!f) {
        util_err(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    timeline_t *self = util_calloc(1, sizeof *self);
    self->f = f;
    self->t0 = self->last = util_now();
    return self;
}

static void s_write(timeline_t *self, statsdb_t *db) {
    double now = util_now();
    if (statsdb_write_timeline(db, self->f, now - self->t0) > 0)
        fflush(self->f);
    self->last = now;
}

void timeline_tick(timeline_t *self, statsdb_t *db) {
    if (self && util_now() - self->last >= 1.0)
        s_write(self, db);
}

void timeline_close(timeline_t **self_p, statsdb_t *db) {
    if (!self_p || !*self_p)
        return;
    timeline_t *self = *self_p;
    if (db)
        s_write(self, db);
    fclose(self->f);
    free(self);
    *self_p = NULL;
}
