/* jsonr.h: a small JSON reader for the run directory's records (stats.jsonl,
 * metrics.jsonl, stages.json, eval.json, the span files of a profile). It parses one
 * text into a tree of values; launch's tools walk the tree. Strict: anything that is
 * not JSON (RFC 8259) is refused with the byte offset and the reason, never a crash.
 * Depth is limited to 64 levels. Strings are unescaped (\uXXXX to UTF-8). */
#ifndef OFA_LAUNCH_JSONR_H
#define OFA_LAUNCH_JSONR_H

#include <stddef.h>

typedef enum { JSONR_NULL, JSONR_BOOL, JSONR_NUM, JSONR_STR, JSONR_ARR, JSONR_OBJ } jsonr_type_t;

typedef struct jsonr jsonr_t;
struct jsonr {
    jsonr_type_t type;
    double num;            /* JSONR_NUM, JSONR_BOOL (0/1) */
    char *str;             /* JSONR_STR: the unescaped text */
    char **keys;           /* JSONR_OBJ: n keys, in file order */
    jsonr_t **items;       /* JSONR_ARR / JSONR_OBJ: n values */
    int n;
};

/* Parse text[0..len). Returns the tree (the caller owns it: jsonr_destroy) or NULL with
 * err = "offset N: reason". Trailing white space is allowed, anything else is not. */
jsonr_t *jsonr_parse(const char *text, size_t len, char *err, size_t errlen);
void jsonr_destroy(jsonr_t **self_p);

/* The member `key` of an object (the last one when repeated), or NULL. */
const jsonr_t *jsonr_get(const jsonr_t *obj, const char *key);
/* A member as a number / string, or the fallback when absent or of another type. */
double jsonr_num(const jsonr_t *obj, const char *key, double fallback);
const char *jsonr_str(const jsonr_t *obj, const char *key, const char *fallback);

#endif
