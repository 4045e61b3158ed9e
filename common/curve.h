/* curve.h: ZeroMQ CURVE security for a run's tcp:// sockets.
 *
 * Where a run's endpoints are tcp:// (a Slurm run, or `transport = "tcp"` in the plan),
 * launch generates one key file per run (curve_keys_generate): a key pair for the
 * servers (broker, batcher, launch's stats socket) and one for the clients (every
 * stage), in Z85, mode 0600, in the run directory. Each process gets the file's path
 * (--curve FILE), never a key on its command line, where `ps` would show it.
 *
 * A server socket (curve_server_apply) accepts only clients that prove they hold the
 * run's client secret key: the ZAP handler (curve_zap_new) of the server's ZeroMQ
 * context checks the client's public key against the file's. A client (curve_client_apply)
 * must know the server's public key, so a process with a wrong or no key file fails the
 * CURVE handshake and none of its messages reaches the server's socket.
 *
 *     curve_keys_t k;
 *     if (curve_keys_load(path, &k, err, sizeof err)) ... fatal
 *     curve_zap_t *zap = curve_zap_new(zctx, &k, err, sizeof err);   // before the bind
 *     curve_server_apply(sock, &k, err, sizeof err);
 *     zmq_bind(sock, "tcp://...");
 *     ...
 *     curve_zap_destroy(&zap);                                      // before zmq_ctx_term
 *
 * A process that loaded keys with --curve sets them as its default (curve_set_default),
 * which the stage runtime and the stats reporter apply to the sockets they connect. */
#ifndef OFA_CURVE_H
#define OFA_CURVE_H

#include <stddef.h>

/* Z85 text of a 32-byte key: 40 characters and a NUL. */
#define CURVE_KEY_LEN 41

typedef struct {
    char server_public[CURVE_KEY_LEN], server_secret[CURVE_KEY_LEN];
    char client_public[CURVE_KEY_LEN], client_secret[CURVE_KEY_LEN];
} curve_keys_t;

/* True when the linked libzmq supports CURVE (zmq_has("curve")). */
int curve_available(void);

/* Generate fresh key pairs and write them to path (created or replaced, mode 0600, the
 * first line a magic/version). k may be NULL; else it receives the keys. 0 or -1 with
 * err. */
int curve_keys_generate(const char *path, curve_keys_t *k, char *err, size_t errlen);

/* Read a key file. Refused (-1 with err naming the file and line) when it is missing,
 * readable or writable by group or others, lacks the magic line or a key, or a key is
 * not 40 Z85 characters. */
int curve_keys_load(const char *path, curve_keys_t *k, char *err, size_t errlen);

/* Make sock a CURVE server with the run's server key pair. Call before zmq_bind. */
int curve_server_apply(void *sock, const curve_keys_t *k, char *err, size_t errlen);

/* Make sock a CURVE client of the run's servers. Call before zmq_connect. */
int curve_client_apply(void *sock, const curve_keys_t *k, char *err, size_t errlen);

/* The ZAP handler of one ZeroMQ context: a thread that answers the context's CURVE
 * servers, accepting only the client public key of k. One per context, started before
 * the servers bind; destroyed before zmq_ctx_term. The caller owns the result; NULL with
 * err when the handler cannot start (another one already bound in this context). */
typedef struct curve_zap curve_zap_t;
curve_zap_t *curve_zap_new(void *zctx, const curve_keys_t *k, char *err, size_t errlen);
void curve_zap_destroy(curve_zap_t **self_p);
/* Handshakes accepted and refused so far. */
long curve_zap_accepted(const curve_zap_t *self);
long curve_zap_refused(const curve_zap_t *self);

/* The process's keys (set once by the stage runtime from --curve), or NULL: plain
 * sockets (ipc://). The pointer is borrowed; the keys are copied. */
void curve_set_default(const curve_keys_t *k);
const curve_keys_t *curve_default(void);

#endif
