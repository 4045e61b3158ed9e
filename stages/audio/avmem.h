/* avmem.h: FFmpeg demuxing from a memory buffer, shared by the audio and video tiers.
 *
 * libavformat normally opens files; a stage holds the column's bytes in memory, so the
 * demuxer reads them through a custom AVIOContext (read + seek over the buffer, size
 * answered for AVSEEK_SIZE so that containers with an index at the end, MP4 without
 * faststart, still open). FFmpeg's own log lines are silenced (AV_LOG_FATAL): every
 * failure reaches the caller as a one-line reason instead.
 *
 *     avmem_t *m = avmem_open(bytes, len, err, sizeof err);   // bytes must outlive m
 *     AVFormatContext *fmt = avmem_fmt(m);
 *     ... av_find_best_stream / av_read_frame ...
 *     avmem_close(&m); */
#ifndef OFA_AVMEM_H
#define OFA_AVMEM_H

#include <libavformat/avformat.h>
#include <stddef.h>
#include <stdint.h>

typedef struct avmem_t avmem_t;

/* Opens the container in data (borrowed) and reads its stream info. NULL with err
 * ("unrecognised or corrupt container: ...") on failure. The caller owns the result. */
avmem_t *avmem_open(const uint8_t *data, size_t len, char *err, size_t errlen);
/* Closes the demuxer; accepts NULL and sets *self_p to NULL. */
void avmem_close(avmem_t **self_p);
/* The demuxer (owned by self). */
AVFormatContext *avmem_fmt(avmem_t *self);
/* FFmpeg's text for an error code, in buf. */
const char *avmem_strerror(int code, char *buf, size_t n);

#endif
