/* base64.h: base64 as OFA's TSV files carry images and audio: both the standard
 * (+/) and the URL-safe (-_) alphabet are accepted (even mixed in one value), padding
 * is optional (but when present it must end a 4-character group), and no
 * whitespace is allowed inside a value (a TSV cell never wraps). */
#ifndef OFA_BASE64_H
#define OFA_BASE64_H

#include <stddef.h>
#include <stdint.h>

/* Decode len characters into a malloc'd buffer (*outlen bytes; the caller frees it).
 * NULL + err naming the offset of the first bad character on failure. */
uint8_t *base64_decode(const char *s, size_t len, size_t *outlen, char *err, size_t errlen);

/* Encode with the standard alphabet and padding into a malloc'd NUL-terminated string. */
char *base64_encode(const uint8_t *data, size_t len);

#endif
