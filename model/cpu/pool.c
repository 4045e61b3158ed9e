/* pool.c: see pool.h. One job at a time: the caller publishes (fn, ctx, n) under the
 * mutex, bumps a generation counter and runs chunk 0 itself; workers wake on the
 * generation change, run their chunk and count down `pending`. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

#include "util.h"

struct pool_t {
    int threads;
    pthread_t *tids;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    uint64_t gen;
    int pending;
    int stop;
    pool_fn fn;
    void *ctx;
    int64_t n;
};

typedef struct {
    pool_t *pool;
    int tid;
} s_worker_arg_t;

static void s_chunk(int64_t n, int threads, int tid, int64_t *i0, int64_t *i1) {
    int64_t per = n / threads, rem = n % threads;
    *i0 = tid * per + (tid < rem ? tid : rem);
    *i1 = *i0 + per + (tid < rem ? 1 : 0);
}

static void *s_worker(void *arg) {
    s_worker_arg_t *a = arg;
    pool_t *p = a->pool;
    int tid = a->tid;
    free(a);
    uint64_t seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t n = p->n, i0, i1;
        pthread_mutex_unlock(&p->mu);
        s_chunk(n, p->threads, tid, &i0, &i1);
        if (i1 > i0)
            fn(ctx, i0, i1, tid);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pool_t *pool_new(int threads) {
    if (threads < 1)
        threads = 1;
    pool_t *p = util_calloc(1, sizeof *p);
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->tids = util_calloc(threads, sizeof *p->tids);
    for (int t = 1; t < threads; t++) {
        s_worker_arg_t *a = util_malloc(sizeof *a);
        a->pool = p;
        a->tid = t;
        if (pthread_create(&p->tids[t], NULL, s_worker, a) != 0) {
            free(a);
            p->threads = t;   /* run with the workers we have */
            break;
        }
    }
    return p;
}

void pool_destroy(pool_t **self_p) {
    if (!self_p || !*self_p)
        return;
    pool_t *p = *self_p;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int t = 1; t < p->threads; t++)
        pthread_join(p->tids[t], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->tids);
    free(p);
    *self_p = NULL;
}

int pool_threads(const pool_t *self) { return self->threads; }

void pool_for(pool_t *p, int64_t n, int64_t min_per_thread, pool_fn fn, void *ctx) {
    if (n <= 0)
        return;
    if (p->threads == 1 || n < 2 * (min_per_thread > 0 ? min_per_thread : 1)) {
        fn(ctx, 0, n, 0);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n;
    p->pending = p->threads - 1;
    p->gen++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    int64_t i0, i1;
    s_chunk(n, p->threads, 0, &i0, &i1);
    if (i1 > i0)
        fn(ctx, i0, i1, 0);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
