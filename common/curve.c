/* curve.c: see curve.h. */
#include "curve.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define S_MAGIC "# ofa-curve-keys 1"
#define S_ZAP_ENDPOINT "inproc://zeromq.zap.01"

int curve_available(void) { return zmq_has("curve"); }

int curve_keys_generate(const char *path, curve_keys_t *k, char *err, size_t errlen) {
    curve_keys_t keys;
    if (!curve_available())
        return util_err(err, errlen, "this libzmq has no CURVE support (zmq_has(\"curve\") "
                        "is false): tcp:// endpoints cannot be secured");
    if (zmq_curve_keypair(keys.server_public, keys.server_secret) != 0 ||
        zmq_curve_keypair(keys.client_public, keys.client_secret) != 0)
        return util_err(err, errlen, "zmq_curve_keypair: %s", zmq_strerror(errno));
    char text[512];
    int n = snprintf(text, sizeof text,
                     S_MAGIC "\n"
                     "# The run's CURVE key pairs (Z85). Private: mode 0600, never on a "
                     "command line.\n"
                     "server-public = %s\nserver-secret = %s\n"
                     "client-public = %s\nclient-secret = %s\n",
                     keys.server_public, keys.server_secret, keys.client_public,
                     keys.client_secret);
    /* Written under a temporary name created 0600 and renamed: the secret is never in a
     * file anyone else may read, not even for a moment. */
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return util_err(err, errlen, "%s: %s", tmp, strerror(errno));
    int rc = write(fd, text, (size_t)n) == n && fchmod(fd, 0600) == 0 && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!rc || rename(tmp, path) != 0) {
        if (rc)
            saved = errno;
        unlink(tmp);
        return util_err(err, errlen, "%s: %s", path, strerror(saved));
    }
    memset(text, 0, sizeof text);
    if (k)
        *k = keys;
    return 0;
}

/* A Z85 key: exactly 40 characters of Z85's alphabet that decode to 32 bytes. */
static int s_key_ok(const char *z) {
    uint8_t bin[32];
    return strlen(z) == 40 && zmq_z85_decode(bin, z) != NULL;
}

int curve_keys_load(const char *path, curve_keys_t *k, char *err, size_t errlen) {
    memset(k, 0, sizeof *k);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_err(err, errlen, "CURVE key file %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return util_err(err, errlen, "CURVE key file %s: not a regular file", path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return util_err(err, errlen, "CURVE key file %s: mode %03o lets others read it; "
                        "it must be 0600", path, (unsigned)(sb.st_mode & 0777));
    }
    char text[2048];
    ssize_t n = read(fd, text, sizeof text - 1);
    close(fd);
    if (n < 0)
        return util_err(err, errlen, "CURVE key file %s: %s", path, strerror(errno));
    text[n] = 0;
    if (strncmp(text, S_MAGIC "\n", strlen(S_MAGIC) + 1) != 0)
        return util_err(err, errlen, "CURVE key file %s:1: not a key file (the first line "
                        "must be '%s')", path, S_MAGIC);
    struct { const char *name; char *dst; } rows[] = {
        {"server-public", k->server_public}, {"server-secret", k->server_secret},
        {"client-public", k->client_public}, {"client-secret", k->client_secret},
    };
    int line = 0;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        line++;
        if (l[0] == '#' || !l[0])
            continue;
        char name[32], val[64];
        if (sscanf(l, "%31s = %63s", name, val) != 2)
            return util_err(err, errlen, "CURVE key file %s:%d: expected 'NAME = KEY'", path,
                            line);
        int found = 0;
        for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
            if (strcmp(name, rows[i].name) != 0)
                continue;
            if (!s_key_ok(val))
                return util_err(err, errlen, "CURVE key file %s:%d: %s is not a 40-character "
                                "Z85 key", path, line, name);
            snprintf(rows[i].dst, CURVE_KEY_LEN, "%s", val);
            found = 1;
        }
        if (!found)
            return util_err(err, errlen, "CURVE key file %s:%d: unknown name '%s'", path, line,
                            name);
    }
    memset(text, 0, sizeof text);
    for (size_t i = 0; i < sizeof rows / sizeof *rows; i++)
        if (!rows[i].dst[0])
            return util_err(err, errlen, "CURVE key file %s: no %s", path, rows[i].name);
    return 0;
}

static int s_set(void *sock, int opt, const void *v, size_t len, const char *what, char *err,
                 size_t errlen) {
    if (zmq_setsockopt(sock, opt, v, len) != 0)
        return util_err(err, errlen, "CURVE %s: %s", what, zmq_strerror(errno));
    return 0;
}

int curve_server_apply(void *sock, const curve_keys_t *k, char *err, size_t errlen) {
    int one = 1;
    /* The ZAP domain makes libzmq ask the context's handler about every handshake. */
    if (s_set(sock, ZMQ_CURVE_SERVER, &one, sizeof one, "server", err, errlen) ||
        s_set(sock, ZMQ_CURVE_SECRETKEY, k->server_secret, 40, "server key", err, errlen) ||
        s_set(sock, ZMQ_ZAP_DOMAIN, "ofa", 3, "ZAP domain", err, errlen))
        return -1;
#ifdef ZMQ_ZAP_ENFORCE_DOMAIN
    /* Without a handler a CURVE server would admit any client that knows its public key:
     * refuse instead (libzmq >= 4.3). */
    s_set(sock, ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one, "ZAP enforcement", err, errlen);
#endif
    return 0;
}

int curve_client_apply(void *sock, const curve_keys_t *k, char *err, size_t errlen) {
    if (s_set(sock, ZMQ_CURVE_SERVERKEY, k->server_public, 40, "server public key", err,
              errlen) ||
        s_set(sock, ZMQ_CURVE_PUBLICKEY, k->client_public, 40, "client public key", err,
              errlen) ||
        s_set(sock, ZMQ_CURVE_SECRETKEY, k->client_secret, 40, "client secret key", err,
              errlen))
        return -1;
    return 0;
}

/* ---- ZAP handler -------------------------------------------------------------------- */

struct curve_zap {
    void *sock;              /* REP bound to inproc://zeromq.zap.01; used by the thread */
    uint8_t client_key[32];  /* the one client public key admitted */
    pthread_t thread;
    atomic_int stop;
    atomic_long accepted, refused;
};

/* Answer one ZAP request (RFC 27): version, request id, domain, address, identity,
 * mechanism, credentials. A CURVE client is admitted when its public key is the run's. */
static void s_zap_answer(curve_zap_t *self) {
    zmq_msg_t part[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&part[n]);
        if (zmq_msg_recv(&part[n], self->sock, 0) < 0) {
            zmq_msg_close(&part[n]);
            break;
        }
        more = zmq_msg_more(&part[n]);
        n++;
    }
    while (more) {   /* more parts than a request has: drain them */
        zmq_msg_t extra;
        zmq_msg_init(&extra);
        if (zmq_msg_recv(&extra, self->sock, 0) < 0)
            more = 0;
        else
            more = zmq_msg_more(&extra);
        zmq_msg_close(&extra);
    }
    if (n < 6) {
        for (int i = 0; i < n; i++)
            zmq_msg_close(&part[i]);
        return;
    }
    int ok = n >= 7 && zmq_msg_size(&part[5]) == 5 &&
             memcmp(zmq_msg_data(&part[5]), "CURVE", 5) == 0 &&
             zmq_msg_size(&part[6]) == 32 &&
             memcmp(zmq_msg_data(&part[6]), self->client_key, 32) == 0;
    if (ok)
        atomic_fetch_add(&self->accepted, 1);
    else
        atomic_fetch_add(&self->refused, 1);
    const char *code = ok ? "200" : "400";
    const char *text = ok ? "OK" : "not the run's client key";
    zmq_send(self->sock, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(self->sock, zmq_msg_data(&part[1]), zmq_msg_size(&part[1]), ZMQ_SNDMORE);
    zmq_send(self->sock, code, 3, ZMQ_SNDMORE);
    zmq_send(self->sock, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(self->sock, "", 0, ZMQ_SNDMORE);   /* user id */
    zmq_send(self->sock, "", 0, 0);             /* metadata */
    for (int i = 0; i < n; i++)
        zmq_msg_close(&part[i]);
}

static void *s_zap_main(void *arg) {
    curve_zap_t *self = arg;
    while (!atomic_load(&self->stop)) {
        zmq_pollitem_t it = {self->sock, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&it, 1, 100);
        if (rc < 0 && errno == ETERM)
            break;
        if (rc > 0)
            s_zap_answer(self);
    }
    return NULL;
}

curve_zap_t *curve_zap_new(void *zctx, const curve_keys_t *k, char *err, size_t errlen) {
    curve_zap_t *self = util_calloc(1, sizeof *self);
    if (!zmq_z85_decode(self->client_key, k->client_public)) {
        free(self);
        return util_err(err, errlen, "ZAP: the client public key is not Z85"), NULL;
    }
    self->sock = zmq_socket(zctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(self->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(self->sock, S_ZAP_ENDPOINT) != 0) {
        util_err(err, errlen, "ZAP handler: bind %s: %s", S_ZAP_ENDPOINT, zmq_strerror(errno));
        zmq_close(self->sock);
        free(self);
        return NULL;
    }
    if (pthread_create(&self->thread, NULL, s_zap_main, self) != 0) {
        util_err(err, errlen, "ZAP handler: cannot start its thread");
        zmq_close(self->sock);
        free(self);
        return NULL;
    }
    return self;
}

void curve_zap_destroy(curve_zap_t **self_p) {
    if (!self_p || !*self_p)
        return;
    curve_zap_t *self = *self_p;
    atomic_store(&self->stop, 1);
    pthread_join(self->thread, NULL);
    zmq_close(self->sock);
    free(self);
    *self_p = NULL;
}

long curve_zap_accepted(const curve_zap_t *self) {
    return atomic_load(&((curve_zap_t *)self)->accepted);
}
long curve_zap_refused(const curve_zap_t *self) {
    return atomic_load(&((curve_zap_t *)self)->refused);
}

/* ---- the process default -------------------------------------------------------------- */

static curve_keys_t s_default;
static int s_have_default;

void curve_set_default(const curve_keys_t *k) {
    if (k) {
        s_default = *k;
        s_have_default = 1;
    } else {
        memset(&s_default, 0, sizeof s_default);
        s_have_default = 0;
    }
}

const curve_keys_t *curve_default(void) { return s_have_default ? &s_default : NULL; }
