/* avmem.c: see avmem.h. */
#include "avmem.h"

#include "util.h"

#include <libavutil/log.h>
#include <pthread.h>
#include <string.h>

#define AVIO_BUF 32768

struct avmem_t {
    const uint8_t *data;
    size_t len, pos;
    AVIOContext *avio;
    AVFormatContext *fmt;
};

/* The demuxer reads in blocks of AVIO_BUF through this callback; AVERROR_EOF (not 0)
 * marks the end, as libavformat requires since 5.0. */
static int s_read(void *opaque, uint8_t *buf, int size) {
    avmem_t *m = opaque;
    if (m->pos >= m->len)
        return AVERROR_EOF;
    size_t n = m->len - m->pos;
    if (n > (size_t)size)
        n = (size_t)size;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (int)n;
}

static int64_t s_seek(void *opaque, int64_t off, int whence) {
    avmem_t *m = opaque;
    if (whence & AVSEEK_SIZE)
        return (int64_t)m->len;
    int64_t base;
    switch (whence & ~AVSEEK_FORCE) {
    case SEEK_SET: base = 0; break;
    case SEEK_CUR: base = (int64_t)m->pos; break;
    case SEEK_END: base = (int64_t)m->len; break;
    default: return -1;
    }
    int64_t p = base + off;
    if (p < 0 || p > (int64_t)m->len)
        return -1;
    m->pos = (size_t)p;
    return p;
}

/* FFmpeg logs through a process-wide callback; a worker fed damaged files would print
 * a line per broken packet. The reasons reach the rejects file instead, so the log level
 * is lowered once, whichever thread opens the first container. */
static pthread_once_t s_log_once = PTHREAD_ONCE_INIT;
static void s_quiet(void) { av_log_set_level(AV_LOG_FATAL); }

const char *avmem_strerror(int code, char *buf, size_t n) {
    if (av_strerror(code, buf, n) < 0)
        snprintf(buf, n, "FFmpeg error %d", code);
    return buf;
}

avmem_t *avmem_open(const uint8_t *data, size_t len, char *err, size_t errlen) {
    pthread_once(&s_log_once, s_quiet);
    if (!data || len == 0) {
        util_err(err, errlen, "empty input (0 bytes)");
        return NULL;
    }
    avmem_t *m = util_calloc(1, sizeof *m);
    m->data = data;
    m->len = len;
    uint8_t *buf = av_malloc(AVIO_BUF);
    m->avio = buf ? avio_alloc_context(buf, AVIO_BUF, 0, m, s_read, NULL, s_seek) : NULL;
    m->fmt = avformat_alloc_context();
    OFA_ASSERT(m->avio && m->fmt);
    /* CUSTOM_IO: avformat_close_input must leave our AVIOContext alone (avmem_close
     * frees it, with its buffer, which FFmpeg may have replaced by a larger one). */
    m->fmt->pb = m->avio;
    m->fmt->flags |= AVFMT_FLAG_CUSTOM_IO;
    char why[256];
    int rc = avformat_open_input(&m->fmt, NULL, NULL, NULL);   /* frees fmt on failure */
    if (rc < 0) {
        util_err(err, errlen, "unrecognised or corrupt container: %s",
                 avmem_strerror(rc, why, sizeof why));
        avmem_close(&m);
        return NULL;
    }
    rc = avformat_find_stream_info(m->fmt, NULL);
    if (rc < 0) {
        util_err(err, errlen, "corrupt container (no stream info): %s",
                 avmem_strerror(rc, why, sizeof why));
        avmem_close(&m);
        return NULL;
    }
    return m;
}

void avmem_close(avmem_t **self_p) {
    if (!self_p || !*self_p)
        return;
    avmem_t *m = *self_p;
    if (m->fmt)
        avformat_close_input(&m->fmt);
    if (m->avio) {
        av_freep(&m->avio->buffer);
        avio_context_free(&m->avio);
    }
    free(m);
    *self_p = NULL;
}

AVFormatContext *avmem_fmt(avmem_t *self) { return self->fmt; }
