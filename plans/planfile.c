/* planfile.c: see planfile.h.
 *
 * Three tables describe every key: s_global_keys (top level, model.*, trainer.*),
 * s_task_keys (each group of the `tasks` list) and s_stage_keys (each group under
 * `stages`). One row says where the value goes (an offset into the destination struct),
 * its type, bounds, default and what it means; loading, defaults, the resolved writer and
 * docs/plan.md all come from the rows, so a key cannot be known to one and not the others.
 *
 * Loading runs two walks over the libconfig tree: the first fills every row (from the
 * file or from the default) and checks type and range; the second looks at every setting
 * in the file and reports those no row knows (with a "did you mean" when one is close).
 * Every problem is appended to one error list; the plan is returned only if it is empty. */
#include "planfile.h"
#include "util.h"

#include <ctype.h>
#include <libconfig.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

/* ---- the schema -------------------------------------------------------------------- */

typedef enum { K_STR, K_ENUM, K_PATH, K_INT, K_INT64, K_FLOAT, K_STRLIST, K_PATHLIST, K_BOOL } s_ktype_t;

typedef struct {
    const char *path;      /* "seed", "model.size" (global) or "name" (task/stage rows) */
    s_ktype_t type;
    const char *def;       /* default as written in a plan; NULL = required; "@" = derived */
    double lo, hi;         /* numeric bounds (inclusive) */
    const char *choices;   /* K_ENUM: "a|b|c" */
    size_t off;            /* destination */
    size_t cnt_off;        /* lists: offset of the int count */
    const char *doc;
} s_key_t;

#define PO(f) offsetof(plan_t, f)
#define TO(f) offsetof(plan_task_t, f)
#define SO(f) offsetof(plan_stage_t, f)
#define BIG 1e15

/* Bounds are generous where the value is a matter of taste (steps, rates) and tight where
 * a wrong value would break a contract (the patch must divide the image, the label
 * smoothing must leave mass on the label, at least one rank). The defaults are the
 * values a first run on a laptop wants; docs/plan.md lists them from these rows. */
static const s_key_t s_global_keys[] = {
    {"name", K_STR, "@", 0, 0, NULL, PO(name), 0,
     "Name of the plan (run folders are named after it). Default: the file name without "
     "its extension."},
    {"seed", K_INT64, "1", 0, 9.2e18, NULL, PO(seed), 0,
     "Seed of every random choice (shuffling, masking, initialisation)."},
    {"run_dir", K_PATH, "runs", 0, 0, NULL, PO(run_dir), 0,
     "Folder under which launch creates the run folder <name>-<timestamp>. Default: runs/ "
     "under the working directory."},
    {"data_dir", K_PATH, ".", 0, 0, NULL, PO(data_dir), 0,
     "Folder against which relative train/valid paths resolve (itself relative to the "
     "plan file's folder)."},
    {"model.size", K_ENUM, "tiny", 0, 0, "nano|tiny|base", PO(model.size), 0,
     "Model size: nano (d=64, 2+2 layers, tests), tiny (d=256, 4+4), base (d=768, 6+6)."},
    {"model.image_size", K_INT, "@", 16, 4096, NULL, PO(model.image_size), 0,
     "Input image side in pixels; a multiple of patch. Default 96 for nano/tiny, 384 for "
     "base."},
    {"model.patch", K_INT, "16", 1, 256, NULL, PO(model.patch), 0, "Patch side in pixels."},
    {"model.max_src_len", K_INT, "256", 8, 65536, NULL, PO(model.max_src_len), 0,
     "Encoder positions (text tokens + image patches); longer inputs are truncated."},
    {"model.max_tgt_len", K_INT, "64", 4, 65536, NULL, PO(model.max_tgt_len), 0,
     "Decoder positions; longer targets are truncated."},
    {"model.vocab_size", K_INT, "4096", 0, 1000000, NULL, PO(model.vocab_size), 0,
     "BPE merges budget (the vocabulary adds 256 byte tokens, specials and 1000 location "
     "bins)."},
    {"model.audio_stack", K_INT, "4", 1, 64, NULL, PO(model.audio_stack), 0,
     "Audio frames (10 ms each) stacked into one encoder position by the tokenize tier."},
    {"model.audio_mels", K_INT, "80", 1, 512, NULL, PO(model.audio_mels), 0,
     "Mel bins per audio frame: the AUDIO slots' default n_mels= and the audio adapter's "
     "input (audio_stack x audio_mels values per position)."},
    {"model.video_frames", K_INT, "8", 1, 256, NULL, PO(model.video_frames), 0,
     "Frames sampled from a video clip: the VIDEO slots' default frames= and the most the "
     "video adapter's time positions hold."},
    {"model.num_bins", K_INT, "1000", 2, 1000, NULL, PO(model.num_bins), 0,
     "Location levels of a box coordinate: the BOX slots' default num_bins=. Fewer levels "
     "(16-64) let a small model see each location token far more often."},
    {"model.motion_channels", K_INT, "0", 0, 65536, NULL, PO(model.motion_channels), 0,
     "Channels per motion frame (the motion tier's features of the dataset's skeleton); "
     "required when a task has a MOTION source slot."},
    {"model.modality_experts", K_BOOL, "false", 0, 0, NULL, PO(model.modality_experts), 0,
     "One encoder FFN per modality group (text, image, audio, video, motion), each source "
     "position routed by its modality, as OFA+'s MoE variant (docs/multitask.md)."},
    {"trainer.backend", K_ENUM, "auto", 0, 0, "cpu|cuda|auto", PO(trainer.backend), 0,
     "Compute backend; auto takes cuda when a GPU is present."},
    {"trainer.consumer", K_ENUM, "trainer", 0, 0, "trainer|sink", PO(trainer.consumer), 0,
     "What consumes the batches: the trainer, or a sink that only counts them (pipeline "
     "tests and benchmarks)."},
    {"trainer.precision", K_ENUM, "auto", 0, 0, "fp32|bf16|auto", PO(trainer.precision), 0,
     "Arithmetic on the GPU; auto = bf16 mixed precision on cuda, fp32 on cpu."},
    {"trainer.threads", K_INT, "0", 0, 1024, NULL, PO(trainer.threads), 0,
     "CPU threads per rank; 0 = as many as the rank's share of the cores."},
    {"trainer.lr", K_FLOAT, "0.001", 0, 10, NULL, PO(trainer.lr), 0, "Peak learning rate (AdamW)."},
    {"trainer.warmup", K_INT, "100", 0, 1e9, NULL, PO(trainer.warmup), 0,
     "Linear warm-up steps before the cosine decay."},
    {"trainer.max_steps", K_INT64, "0", 0, BIG, NULL, PO(trainer.max_steps), 0,
     "Stop after this many steps; 0 = when every task's epochs are done."},
    {"trainer.weight_decay", K_FLOAT, "0.01", 0, 10, NULL, PO(trainer.weight_decay), 0,
     "AdamW weight decay."},
    {"trainer.clip", K_FLOAT, "1.0", 0, 1e6, NULL, PO(trainer.clip), 0,
     "Gradient norm clipping; 0 = none."},
    {"trainer.label_smoothing", K_FLOAT, "0.1", 0, 0.99, NULL, PO(trainer.label_smoothing), 0,
     "Label smoothing of the cross-entropy."},
    {"trainer.eval_every", K_INT, "0", 0, 1e9, NULL, PO(trainer.eval_every), 0,
     "Evaluate every N steps; 0 = only at the end."},
    {"trainer.checkpoint_every", K_INT, "0", 0, 1e9, NULL, PO(trainer.checkpoint_every), 0,
     "Checkpoint every N steps; 0 = only at the end."},
    {"trainer.keep_checkpoints", K_INT, "3", 1, 1000, NULL, PO(trainer.keep_checkpoints), 0,
     "How many checkpoints to keep (the oldest are removed)."},
    {"trainer.log_every", K_INT, "10", 1, 1e9, NULL, PO(trainer.log_every), 0,
     "Steps between two lines of metrics.jsonl."},
    {"trainer.ranks", K_INT, "1", 1, 1024, NULL, PO(trainer.ranks), 0,
     "Trainer processes (one per GPU, or CPU ranks)."},
    {"trainer.mpi", K_STR, "pmix", 0, 0, NULL, PO(trainer.mpi), 0,
     "Slurm: srun's MPI plugin (--mpi=) of the trainer group's step when trainer.ranks > "
     "1 (pmix, pmix_v4, pmi2, ...: what `srun --mpi=list` offers and the MPI library "
     "supports; docs/ranks.md)."},
    {"trainer.beam", K_INT, "1", 1, 64, NULL, PO(trainer.beam), 0,
     "Beam width for generation; 1 = greedy."},
    {"trainer.max_gen_len", K_INT, "@", 1, 65536, NULL, PO(trainer.max_gen_len), 0,
     "Tokens generated at most; default model.max_tgt_len."},
    {"trainer.multitask", K_ENUM, "sample", 0, 0, "sample|round_robin", PO(trainer.multitask), 0,
     "How a step mixes tasks: sample = each step is one batch of a task drawn by weight; "
     "round_robin = each step accumulates one batch of every task, weighted by its weight."},
    {"transport", K_ENUM, "ipc", 0, 0, "ipc|tcp", PO(transport), 0,
     "Endpoints of a local run: ipc (Unix sockets in a private folder) or tcp (127.0.0.1, "
     "secured with CURVE keys made per run, as on a cluster). Slurm runs always use tcp."},
    {"fuse_tokenize", K_BOOL, "false", 0, 0, NULL, PO(fuse_tokenize), 0,
     "Tokenize inside the decoder workers (image, audio, video, motion) at a sample's last "
     "decoder tier, instead of in a separate tokenize tier: two messages fewer per sample "
     "through the broker. Text-only tasks still go to the tokenize workers."},
    {"shm_arena", K_ENUM, "auto", 0, 0, "auto|on|off", PO(shm_arena), 0,
     "Large tensors (an image's pixels, a clip's frames) through shared memory: each "
     "worker writes them into a slot of its own arena and only a descriptor crosses the "
     "sockets (docs/protocol.md). auto = on when every process runs on one host (not "
     "under Slurm); off = every tensor as a message frame."},
    {"shm_arena_mb", K_INT, "128", 1, 65536, NULL, PO(shm_arena_mb), 0,
     "Size of each process's arena in MiB (the source, each decoder worker, the batcher); "
     "when it is full, tensors go as frames."},
    /* Limits: the defaults admit every real input of the shipped datasets with a wide
     * margin, and stop a decompression bomb or a mistaken multi-gigabyte field early. */
    {"limits.message_bytes", K_INT64, "268435456", 1048576, 4294967296.0, NULL,
     PO(limits.message_bytes), 0,
     "Largest message frame a socket accepts (ZMQ_MAXMSGSIZE; a peer sending more is "
     "disconnected), and largest media value of a row (the source rejects the row)."},
    {"limits.image_pixels", K_INT64, "67108864", 1, 1e12, NULL, PO(limits.image_pixels), 0,
     "Largest image (width x height, read from the JPEG/PNG header before decoding)."},
    {"limits.audio_seconds", K_FLOAT, "600", 0.01, 1e6, NULL, PO(limits.audio_seconds), 0,
     "Longest audio clip in seconds (from the header where it says, else while decoding)."},
    {"limits.video_frames", K_INT64, "100000", 1, 1e12, NULL, PO(limits.video_frames), 0,
     "Most frames in a video clip (counted from the packets before decoding)."},
    {"limits.video_seconds", K_FLOAT, "3600", 0.01, 1e7, NULL, PO(limits.video_seconds), 0,
     "Longest video clip in seconds (the container's duration)."},
    {"limits.text_bytes", K_INT64, "1048576", 1, 1e12, NULL, PO(limits.text_bytes), 0,
     "Largest text field of a row in bytes (the source rejects the row)."},
    {"limits.bvh_frames", K_INT64, "1000000", 1, 1e12, NULL, PO(limits.bvh_frames), 0,
     "Most frames in a BVH motion file (its Frames: line, checked before the frames are "
     "read)."},
    {"placement.hubs", K_STR, "", 0, 0, NULL, PO(placement.hubs), 0,
     "Slurm: the node of the broker, batcher, source and sink, by name or by index in the "
     "allocation (\"0\" = the first node). Default: the first node."},
    {"placement.trainer", K_STRLIST, "", 0, 0, NULL, PO(placement.trainer),
     PO(placement.ntrainer),
     "Slurm: the nodes of the trainer ranks (rank r on the (r mod n)-th). Default: the "
     "hubs' node."},
    {"placement.workers_per_node", K_INT, "0", 0, 65536, NULL, PO(placement.workers_per_node),
     0, "Slurm: at most this many workers (all tiers) on one node; 0 = no limit. A node "
     "that is full is skipped; launch refuses a plan whose workers do not fit."},
};

/* Keys of one task group. The instruction is a string here; it is compiled against the
 * model settings once every row is read (s_task_finish). */
static const s_key_t s_task_keys[] = {
    {"name", K_STR, NULL, 0, 0, NULL, TO(name), 0,
     "Task name (letters, digits, '_', '-'), unique in the plan."},
    {"instruction", K_STR, NULL, 0, 0, NULL, TO(instruction), 0,
     "The OFASys instruction, e.g. \"[IMAGE:img] what does the image describe? -> "
     "[TEXT:cap]\"."},
    {"dataset", K_STR, "", 0, 0, NULL, TO(dataset), 0,
     "Name of the dataset for the builder (`launch data NAME`); informative."},
    {"group_column", K_STR, "", 0, 0, NULL, TO(group_column), 0,
     "Column that fills a repeated target group whose slots name none (object "
     "detection's `( [BOX] [TEXT])*`): one cell of x0,y0,x1,y1,class_id,class_name "
     "objects joined by &&."},
    {"train", K_PATHLIST, NULL, 0, 0, NULL, TO(train), TO(ntrain),
     "Training files (a string or a list); relative paths resolve against data_dir."},
    {"valid", K_PATHLIST, "", 0, 0, NULL, TO(valid), TO(nvalid),
     "Validation files (may be empty)."},
    {"format", K_ENUM, "tsv", 0, 0, "tsv|jsonl", TO(format), 0, "Row format of the files."},
    {"columns", K_STRLIST, "", 0, 0, NULL, TO(columns), TO(ncolumns),
     "Column names in file order (tsv, required), or the keys to read (jsonl; default: the "
     "instruction's columns). Every column the instruction names must be listed."},
    {"weight", K_FLOAT, "1.0", 1e-6, 1e6, NULL, TO(weight), 0,
     "Mixing weight: the share of batches of this task is weight / sum of weights."},
    {"batch_size", K_INT, "16", 1, 65536, NULL, TO(batch_size), 0, "Samples per batch."},
    {"metric", K_STR, "@", 0, 0, NULL, TO(metric), 0,
     "Evaluation metric (accuracy, cider, wer, ...; several joined by '/'; \"-\" = none). "
     "Default: chosen from the task's shape."},
    {"epochs", K_INT, "1", 1, 1e6, NULL, TO(epochs), 0, "Passes over the training files."},
    {"max_rows", K_INT64, "0", 0, BIG, NULL, TO(max_rows), 0,
     "Read at most this many training rows; 0 = all."},
    {"image_size", K_INT, "@", 16, 4096, NULL, TO(image_size), 0,
     "Image side for this task; default model.image_size."},
    {"patch", K_INT, "@", 1, 256, NULL, TO(patch), 0, "Patch side for this task; default model.patch."},
};

/* Keys of one stage group. The credits bound how many samples a process may hold, which
 * is what keeps the pipeline's memory bounded (the broker never pushes past them). */
static const s_key_t s_stage_keys[] = {
    {"workers", K_INT, "1", 1, 256, NULL, SO(workers), 0,
     "Processes of this stage (source, broker and batcher: exactly 1; trainer: "
     "trainer.ranks)."},
    {"program", K_STRLIST, "@", 0, 0, NULL, SO(program), SO(nprogram),
     "argv of the program to run (no shell); default [\"ofa-<stage>\"]."},
    {"credits", K_INT, "8", 1, 65536, NULL, SO(credits), 0,
     "Items a process of this stage may hold at once."},
    {"nodes", K_STRLIST, "", 0, 0, NULL, SO(nodes), SO(nnodes),
     "Slurm: the nodes this stage's workers go on, round robin (names or indices, as "
     "placement.hubs); empty = spread over the allocation from its second node."},
};

#define NKEYS(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* Stage names a plan may configure, in start order. */
static const char *s_stage_names[] = {"broker", "source", "image", "audio", "video", "motion",
                                      "tokenize", "batcher", "sink", "trainer"};
#define NSTAGES NKEYS(s_stage_names)

/* ---- error list --------------------------------------------------------------------- */

/* Problems are kept apart and sorted by file and line at the end, so that the user
 * reads them in the order of the file whatever walk found them. */
typedef struct {
    char *file;
    int line;
    char *text;            /* the whole "FILE:LINE: reason" line */
} s_err_t;

typedef struct {
    s_err_t *v;
    int n, cap;
    const char *name;      /* the plan file as named by the caller */
    const char *dir;       /* its folder: @include paths are relative to it */
} s_errs_t;

static void s_errf(s_errs_t *e, const config_setting_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void s_errf(s_errs_t *e, const config_setting_t *at, const char *fmt, ...) {
    char raw[1024], msg[4 * sizeof raw];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    /* A quoted value may hold control characters ("a\nb" is a libconfig string): they
     * are escaped, so that each problem stays one line of the error text. */
    size_t m = 0;
    for (const unsigned char *c = (const unsigned char *)raw; *c; c++) {
        if (*c == '\n' || *c == '\t' || *c == '\r')
            m += (size_t)snprintf(msg + m, sizeof msg - m, "\\%c",
                                  *c == '\n' ? 'n' : *c == '\t' ? 't' : 'r');
        else if (*c < 0x20 || *c == 0x7f)
            m += (size_t)snprintf(msg + m, sizeof msg - m, "\\x%02x", *c);
        else
            msg[m++] = (char)*c;
    }
    msg[m] = '\0';
    const char *file = at ? config_setting_source_file(at) : NULL;
    int line = at ? (int)config_setting_source_line(at) : 0;
    file = file ? file : e->name;
    /* libconfig names an included file as the @include wrote it, relative to the
     * include folder; the message names it so that it can be opened from anywhere. */
    char incl[1024];
    if (file != e->name && strcmp(file, e->name) != 0 && file[0] != '/' && e->dir) {
        snprintf(incl, sizeof incl, "%s/%s", e->dir, file);
        file = incl;
    }
    size_t n = strlen(file) + strlen(msg) + 32;
    char *text = util_malloc(n);
    if (line > 0)
        snprintf(text, n, "%s:%d: %s", file, line, msg);
    else
        snprintf(text, n, "%s: %s", file, msg);
    if (e->n == e->cap) {
        e->cap = e->cap ? e->cap * 2 : 16;
        e->v = util_realloc(e->v, (size_t)e->cap * sizeof *e->v);
    }
    e->v[e->n++] = (s_err_t){util_strdup(file), line, text};
}

/* Sort (stable: insertion) by file then line, join into err, free the list. */
static void s_errs_flush(s_errs_t *e, char *err, size_t errlen) {
    for (int i = 1; i < e->n; i++) {
        s_err_t x = e->v[i];
        int j = i - 1;
        while (j >= 0) {
            int c = strcmp(e->v[j].file, x.file);
            if (c < 0 || (c == 0 && e->v[j].line <= x.line))
                break;
            e->v[j + 1] = e->v[j];
            j--;
        }
        e->v[j + 1] = x;
    }
    size_t used = 0;
    if (err && errlen)
        err[0] = '\0';
    for (int i = 0; i < e->n; i++) {
        if (err && used + 1 < errlen)
            used += (size_t)snprintf(err + used, errlen - used, "%s%s", i ? "\n" : "",
                                     e->v[i].text);
        if (used >= errlen)
            used = errlen ? errlen - 1 : 0;
        free(e->v[i].file);
        free(e->v[i].text);
    }
    free(e->v);
    e->v = NULL;
    e->n = e->cap = 0;
}

/* ---- helpers ------------------------------------------------------------------------ */

/* libconfig's types as a message names them ("got a string"). */
static const char *s_type_name(int type) {
    switch (type) {
    case CONFIG_TYPE_GROUP: return "a group";
    case CONFIG_TYPE_INT: return "an integer";
    case CONFIG_TYPE_INT64: return "an integer";
    case CONFIG_TYPE_FLOAT: return "a float";
    case CONFIG_TYPE_STRING: return "a string";
    case CONFIG_TYPE_BOOL: return "a boolean";
    case CONFIG_TYPE_ARRAY: return "an array";
    case CONFIG_TYPE_LIST: return "a list";
    }
    return "nothing";
}

static const char *s_want_name(s_ktype_t t) {
    switch (t) {
    case K_STR: case K_ENUM: case K_PATH: return "a string";
    case K_INT: case K_INT64: return "an integer";
    case K_FLOAT: return "a number";
    case K_STRLIST: case K_PATHLIST: return "a list of strings";
    case K_BOOL: return "a boolean (true or false)";
    }
    return "?";
}

/* Lexically clean an absolute path: drop "." parts and fold "x/..". Lexical, not
 * realpath(): the files need not exist yet (a dry run, a dataset still to be built), and
 * the resolved plan should show the path the user wrote, not where symlinks lead. */
static char *s_normpath(const char *p) {
    char *out = util_malloc(strlen(p) + 2);
    size_t n = 0;
    const char *s = p;
    while (*s) {
        while (*s == '/')
            s++;
        const char *e = s;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - s);
        if (len == 0)
            break;
        if (len == 1 && s[0] == '.') {
            /* skip */
        } else if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
        } else {
            out[n++] = '/';
            memcpy(out + n, s, len);
            n += len;
        }
        s = e;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    return out;
}

static char *s_abspath(const char *dir, const char *p) {
    if (p[0] == '/')
        return s_normpath(p);
    size_t n = strlen(dir) + strlen(p) + 2;
    char *tmp = util_malloc(n);
    snprintf(tmp, n, "%s/%s", dir, p);
    char *out = s_normpath(tmp);
    free(tmp);
    return out;
}

/* Levenshtein distance, for "did you mean": keys are short, so the full table is cheap.
 * A distance of at most 2 catches swapped, doubled and missing letters. */
static int s_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 62 || lb > 62)
        return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++)
        d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++)
        d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int c = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
            if (d[i - 1][j] + 1 < c)
                c = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < c)
                c = d[i][j - 1] + 1;
            d[i][j] = c;
        }
    return d[la][lb];
}

static void s_free_strv(char **v, int n) {
    if (!v)
        return;
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- reading one row ---------------------------------------------------------------- */

/* Parse the default text of a row as if it had been written in the file. Defaults are
 * trusted (they are ours), so a failure here is a programmer error. */
static void s_set_default(const s_key_t *k, void *base, const char *dir) {
    char *dst = (char *)base + k->off;
    const char *d = k->def;
    OFA_ASSERT(d && strcmp(d, "@") != 0);
    switch (k->type) {
    case K_STR:
    case K_ENUM: *(char **)dst = util_strdup(d); break;
    case K_PATH: {
        /* DESIGN.md: runs go under the working directory unless the plan says where. */
        char cwd[4096];
        const char *base = dir;
        if (strcmp(k->path, "run_dir") == 0 && getcwd(cwd, sizeof cwd))
            base = cwd;
        *(char **)dst = s_abspath(base, d);
        break;
    }
    case K_INT: *(int *)dst = atoi(d); break;
    case K_INT64: *(int64_t *)dst = strtoll(d, NULL, 10); break;
    case K_FLOAT: *(double *)dst = strtod(d, NULL); break;
    case K_BOOL: *(int *)dst = strcmp(d, "true") == 0; break;
    case K_STRLIST:
    case K_PATHLIST:
        OFA_ASSERT(d[0] == '\0');   /* list defaults are empty */
        *(char ***)dst = util_calloc(1, sizeof(char *));
        *(int *)((char *)base + k->cnt_off) = 0;
        break;
    }
}

/* Read the value of setting s into the row's destination. `where` prefixes messages
 * ("task 'caption': "). Returns 0 or -1 (error recorded). */
/* Integers are accepted for floats ("lr = 1") since nobody means anything else by them;
 * a float for an integer is refused, since 2.5 workers has no meaning to round to. */
static int s_read_value(s_errs_t *e, const s_key_t *k, const config_setting_t *s, void *base,
                        const char *dir, const char *where) {
    char *dst = (char *)base + k->off;
    int t = config_setting_type(s);
    const char *key = k->path;
    switch (k->type) {
    case K_STR:
    case K_ENUM:
    case K_PATH: {
        if (t != CONFIG_TYPE_STRING) {
            s_errf(e, s, "%s'%s' wants a string, got %s", where, key, s_type_name(t));
            return -1;
        }
        const char *v = config_setting_get_string(s);
        if (k->type == K_ENUM) {
            size_t n = strlen(v);
            const char *c = k->choices;
            bool ok = false;
            while (*c && !ok) {
                const char *bar = strchr(c, '|');
                size_t cl = bar ? (size_t)(bar - c) : strlen(c);
                ok = cl == n && strncmp(c, v, n) == 0;
                c += cl + (bar ? 1 : 0);
            }
            if (!ok) {
                s_errf(e, s, "%s'%s' is \"%s\", not one of %s", where, key, v, k->choices);
                return -1;
            }
        }
        if (k->type == K_PATH && !*v) {
            s_errf(e, s, "%s'%s' is an empty path", where, key);
            return -1;
        }
        *(char **)dst = k->type == K_PATH ? s_abspath(dir, v) : util_strdup(v);
        return 0;
    }
    case K_INT:
    case K_INT64:
    case K_FLOAT: {
        double v;
        if (t == CONFIG_TYPE_INT || t == CONFIG_TYPE_INT64) {
            v = (double)config_setting_get_int64(s);
        } else if (t == CONFIG_TYPE_FLOAT && k->type == K_FLOAT) {
            v = config_setting_get_float(s);
        } else {
            s_errf(e, s, "%s'%s' wants %s, got %s", where, key, s_want_name(k->type),
                   s_type_name(t));
            return -1;
        }
        if (!(v >= k->lo && v <= k->hi)) {
            s_errf(e, s, "%s'%s' = %g is out of range [%g, %g]", where, key, v, k->lo, k->hi);
            return -1;
        }
        if (k->type == K_INT)
            *(int *)dst = (int)config_setting_get_int64(s);
        else if (k->type == K_INT64)
            *(int64_t *)dst = config_setting_get_int64(s);
        else
            *(double *)dst = v;
        return 0;
    }
    case K_BOOL:
        if (t != CONFIG_TYPE_BOOL) {
            s_errf(e, s, "%s'%s' wants %s, got %s", where, key, s_want_name(k->type),
                   s_type_name(t));
            return -1;
        }
        *(int *)dst = config_setting_get_bool(s);
        return 0;
    case K_STRLIST:
    case K_PATHLIST: {
        int n;
        bool single = t == CONFIG_TYPE_STRING;
        if (single) {
            n = 1;
        } else if (t == CONFIG_TYPE_ARRAY || t == CONFIG_TYPE_LIST) {
            n = config_setting_length(s);
        } else {
            s_errf(e, s, "%s'%s' wants a list of strings, got %s", where, key, s_type_name(t));
            return -1;
        }
        char **v = util_calloc((size_t)n + 1, sizeof *v);
        int bad = 0;
        for (int i = 0; i < n; i++) {
            const config_setting_t *el = single ? s : config_setting_get_elem(s, (unsigned)i);
            if (config_setting_type(el) != CONFIG_TYPE_STRING) {
                s_errf(e, el, "%s'%s'[%d] wants a string, got %s", where, key, i,
                       s_type_name(config_setting_type(el)));
                bad++;
                continue;
            }
            const char *sv = config_setting_get_string(el);
            if (!*sv) {
                s_errf(e, el, "%s'%s'[%d] is empty", where, key, i);
                bad++;
                continue;
            }
            v[i] = k->type == K_PATHLIST ? s_abspath(dir, sv) : util_strdup(sv);
        }
        if (bad) {
            s_free_strv(v, n);
            return -1;
        }
        *(char ***)dst = v;
        *(int *)((char *)base + k->cnt_off) = n;
        return 0;
    }
    }
    return -1;
}

/* Fill every row of a table from group g (or defaults). Derived rows ("@") that are
 * absent are left zero for the caller. Paths of K_PATHLIST resolve against list_dir. */
static void s_read_table(s_errs_t *e, const s_key_t *keys, int nkeys, const config_setting_t *g,
                         void *base, const char *dir, const char *list_dir, const char *where) {
    for (int i = 0; i < nkeys; i++) {
        const s_key_t *k = &keys[i];
        const config_setting_t *s = NULL;
        if (g) {
            const char *dot = strchr(k->path, '.');
            if (dot) {
                char grp[64];
                snprintf(grp, sizeof grp, "%.*s", (int)(dot - k->path), k->path);
                const config_setting_t *sub = config_setting_get_member(g, grp);
                if (sub && config_setting_is_group(sub))
                    s = config_setting_get_member(sub, dot + 1);
            } else {
                s = config_setting_get_member(g, k->path);
            }
        }
        if (s) {
            s_read_value(e, k, s, base, k->type == K_PATHLIST ? list_dir : dir, where);
        } else if (!k->def) {
            s_errf(e, g, "%smissing required key '%s'", where, k->path);
        } else if (strcmp(k->def, "@") != 0) {
            s_set_default(k, base, dir);
        }
    }
}

/* Report every setting of group g that no row of the table knows. `prefix` is the
 * group path ("" or "model."). This is the walk that makes a misspelled key an error:
 * the first walk, driven by the table, would simply not see it and use the default. */
static void s_check_unknown(s_errs_t *e, const s_key_t *keys, int nkeys,
                            const config_setting_t *g, const char *prefix, const char *where) {
    int n = config_setting_length(g);
    for (int i = 0; i < n; i++) {
        const config_setting_t *s = config_setting_get_elem(g, (unsigned)i);
        const char *name = config_setting_name(s);
        char full[256];
        snprintf(full, sizeof full, "%s%s", prefix, name ? name : "?");
        bool known = false, is_group = false;
        const char *best = NULL;
        int bestd = 3;
        size_t flen = strlen(full);
        for (int k = 0; k < nkeys; k++) {
            if (strcmp(keys[k].path, full) == 0)
                known = true;
            else if (strncmp(keys[k].path, full, flen) == 0 && keys[k].path[flen] == '.')
                is_group = true;
        }
        if (known)
            continue;
        /* The suggestion only for a key that is not in the table: the edit distances to
         * every key cost far more than the lookup itself. */
        for (int k = 0; k < nkeys && !is_group; k++) {
            int d = s_edit_distance(keys[k].path, full);
            if (d < bestd) {
                bestd = d;
                best = keys[k].path;
            }
        }
        if (is_group) {
            if (!config_setting_is_group(s)) {
                s_errf(e, s, "%s'%s' wants a group { ... }, got %s", where, full,
                       s_type_name(config_setting_type(s)));
                continue;
            }
            char sub[300];
            snprintf(sub, sizeof sub, "%s.", full);
            s_check_unknown(e, keys, nkeys, s, sub, where);
            continue;
        }
        if (best)
            s_errf(e, s, "%sunknown key '%s' (did you mean '%s'?)", where, full, best);
        else
            s_errf(e, s, "%sunknown key '%s'", where, full);
    }
}

/* ---- plan --------------------------------------------------------------------------- */

static void s_task_free(plan_task_t *t) {
    free(t->name);
    free(t->instruction);
    free(t->dataset);
    free(t->group_column);
    s_free_strv(t->train, t->ntrain);
    s_free_strv(t->valid, t->nvalid);
    free(t->format);
    s_free_strv(t->columns, t->ncolumns);
    free(t->metric);
    taskplan_destroy(&t->plan);
}

static void s_stage_free(plan_stage_t *s) {
    free(s->name);
    s_free_strv(s->program, s->nprogram);
    s_free_strv(s->nodes, s->nnodes);
}

void plan_destroy(plan_t **self_p) {
    if (!self_p || !*self_p)
        return;
    plan_t *p = *self_p;
    for (int i = 0; i < p->ntasks; i++)
        s_task_free(&p->tasks[i]);
    free(p->tasks);
    for (int i = 0; i < p->nstages; i++)
        s_stage_free(&p->stages[i]);
    free(p->stages);
    free(p->path);
    free(p->dir);
    free(p->name);
    free(p->run_dir);
    free(p->data_dir);
    free(p->model.size);
    free(p->trainer.backend);
    free(p->trainer.consumer);
    free(p->trainer.precision);
    free(p->trainer.multitask);
    free(p->trainer.mpi);
    free(p->transport);
    free(p->shm_arena);
    free(p->placement.hubs);
    s_free_strv(p->placement.trainer, p->placement.ntrainer);
    free(p);
    *self_p = NULL;
}

/* Task names end up in file names, counter names ("task.NAME.read") and JSON keys:
 * keep them to characters that need no escaping anywhere. */
static bool s_good_name(const char *s) {
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return false;
    return true;
}

/* Everything that a task needs beyond its table rows: name rules, the instruction
 * compiled against the model settings, columns and metric. */
static void s_task_finish(s_errs_t *e, plan_t *p, plan_task_t *t, const config_setting_t *g) {
    char where[160];
    snprintf(where, sizeof where, "task '%s': ", t->name ? t->name : "?");
    const config_setting_t *ns = config_setting_get_member(g, "name");
    if (t->name && !s_good_name(t->name))
        s_errf(e, ns, "task name '%s' may hold only letters, digits, '_' and '-'", t->name);
    else if (t->name && strlen(t->name) > PLAN_MAX_TASK_NAME)
        s_errf(e, ns, "task name '%s' is longer than %d characters (it becomes part of counter "
               "names such as task.NAME.rejected_here)", t->name, PLAN_MAX_TASK_NAME);
    const config_setting_t *trs = config_setting_get_member(g, "train");
    if (trs && t->train && t->ntrain == 0)
        s_errf(e, trs, "%s'train' is empty: list the training files", where);
    if (!t->image_size)
        t->image_size = p->model.image_size;
    if (!t->patch)
        t->patch = p->model.patch;
    /* A bad model-level size is reported once, for the model, not again for each task
     * that inherits it. */
    bool own_size = config_setting_get_member(g, "image_size") ||
                    config_setting_get_member(g, "patch");
    if (own_size && t->image_size && t->patch && t->image_size % t->patch)
        s_errf(e, g, "%simage_size %d is not a multiple of patch %d", where, t->image_size,
               t->patch);
    if (!t->instruction)
        return;
    taskplan_opts_t o;
    taskplan_opts_default(&o);
    o.image_size = t->image_size;
    o.patch = t->patch;
    o.max_src_len = p->model.max_src_len;
    o.max_tgt_len = p->model.max_tgt_len;
    o.beam = p->trainer.beam;
    o.n_mels = p->model.audio_mels;
    o.frames = p->model.video_frames;
    o.num_bins = p->model.num_bins;
    const config_setting_t *is = config_setting_get_member(g, "instruction");
    char err[512];
    if (o.image_size % o.patch)
        return;   /* reported above */
    t->plan = taskplan_compile(t->instruction, &o, err, sizeof err);
    if (!t->plan) {
        s_errf(e, is, "%s%s", where, err);
        return;
    }
    if (t->group_column && *t->group_column &&
        taskplan_bind_group(t->plan, t->group_column, err, sizeof err) < 0)
        s_errf(e, config_setting_get_member(g, "group_column"), "%s%s", where, err);
    const config_setting_t *ms = config_setting_get_member(g, "metric");
    if (t->metric) {
        if (taskplan_set_metric(t->plan, t->metric, err, sizeof err) < 0)
            s_errf(e, ms, "%s%s", where, err);
    } else {
        t->metric = util_strdup(t->plan->metric);
    }
    /* Columns: TSV rows are read by position, so the names must be given; for JSONL the
     * instruction's own columns are the keys to read unless the plan lists them. */
    const config_setting_t *cs = config_setting_get_member(g, "columns");
    if (t->ncolumns == 0 && t->format && strcmp(t->format, "tsv") == 0 && !cs) {
        s_errf(e, g, "%sformat \"tsv\" needs 'columns' (the column names in file order)", where);
    } else if (t->ncolumns == 0 && t->format && strcmp(t->format, "jsonl") == 0) {
        s_free_strv(t->columns, t->ncolumns);
        t->columns = util_calloc((size_t)t->plan->ncolumns + 1, sizeof(char *));
        for (int i = 0; i < t->plan->ncolumns; i++)
            t->columns[i] = util_strdup(t->plan->columns[i].name);
        t->ncolumns = t->plan->ncolumns;
    }
    for (int i = 0; i < t->ncolumns; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(t->columns[i], t->columns[j]) == 0)
                s_errf(e, cs, "%scolumn '%s' is listed twice", where, t->columns[i]);
    if (t->ncolumns > 0 || cs)
        for (int i = 0; i < t->plan->ncolumns; i++) {
            bool found = false;
            for (int j = 0; j < t->ncolumns; j++)
                found |= strcmp(t->plan->columns[i].name, t->columns[j]) == 0;
            if (!found)
                s_errf(e, cs ? cs : g, "%sthe instruction reads column '%s', which 'columns' "
                       "does not list", where, t->plan->columns[i].name);
        }
}

/* Index of a stage name in s_stage_names, or -1. */
static int s_stage_index(const char *name) {
    for (int i = 0; i < NSTAGES; i++)
        if (strcmp(s_stage_names[i], name) == 0)
            return i;
    return -1;
}

/* The stages the run needs, from the tasks' routes and the consumer. */
static void s_needed_stages(const plan_t *p, bool need[NSTAGES]) {
    memset(need, 0, NSTAGES * sizeof(bool));
    need[s_stage_index("broker")] = need[s_stage_index("source")] = true;
    need[s_stage_index("tokenize")] = need[s_stage_index("batcher")] = true;
    need[s_stage_index(strcmp(p->trainer.consumer, "sink") == 0 ? "sink" : "trainer")] = true;
    for (int i = 0; i < p->ntasks; i++)
        if (p->tasks[i].plan)
            for (int k = 0; k < p->tasks[i].plan->ntiers; k++) {
                int si = s_stage_index(p->tasks[i].plan->tiers[k]);
                if (si >= 0)
                    need[si] = true;
            }
}

/* Read the `stages` group: check every written stage against the table, then build the
 * list of the stages this run needs, each with its settings or the defaults. */
static void s_load_stages(s_errs_t *e, plan_t *p, const config_setting_t *sg) {
    bool need[NSTAGES];
    s_needed_stages(p, need);
    if (sg && !config_setting_is_group(sg)) {
        s_errf(e, sg, "'stages' wants a group { name = { ... }; ... }, got %s",
               s_type_name(config_setting_type(sg)));
        sg = NULL;
    }
    if (sg) {
        int n = config_setting_length(sg);
        for (int i = 0; i < n; i++) {
            const config_setting_t *s = config_setting_get_elem(sg, (unsigned)i);
            const char *name = config_setting_name(s);
            if (s_stage_index(name) < 0) {
                const char *best = NULL;
                int bestd = 3;
                for (int k = 0; k < NSTAGES; k++) {
                    int d = s_edit_distance(s_stage_names[k], name);
                    if (d < bestd)
                        bestd = d, best = s_stage_names[k];
                }
                s_errf(e, s, "unknown stage '%s'%s%s%s (stages: broker, source, image, audio, "
                       "video, motion, tokenize, batcher, sink, trainer)",
                       name, best ? " (did you mean '" : "", best ? best : "", best ? "'?)" : "");
            } else if (!config_setting_is_group(s)) {
                s_errf(e, s, "stage '%s' wants a group { workers = N; ... }, got %s", name,
                       s_type_name(config_setting_type(s)));
            }
        }
    }
    p->stages = util_calloc(NSTAGES, sizeof *p->stages);
    for (int i = 0; i < NSTAGES; i++) {
        const char *name = s_stage_names[i];
        const config_setting_t *g = sg ? config_setting_get_member(sg, name) : NULL;
        if (g && !config_setting_is_group(g))
            g = NULL;
        plan_stage_t st = {0};
        char where[96];
        snprintf(where, sizeof where, "stage '%s': ", name);
        s_read_table(e, s_stage_keys, NKEYS(s_stage_keys), g, &st, p->dir, p->dir, where);
        if (g) {
            s_check_unknown(e, s_stage_keys, NKEYS(s_stage_keys), g, "", where);
            st.line = (int)config_setting_source_line(g);
        }
        if (!st.program) {
            st.program = util_calloc(2, sizeof(char *));
            char prog[64];
            snprintf(prog, sizeof prog, "ofa-%s", name);
            st.program[0] = util_strdup(prog);
            st.nprogram = 1;
        } else if (st.nprogram == 0) {
            s_errf(e, g, "%s'program' is an empty argv list", where);
        }
        bool single = strcmp(name, "broker") == 0 || strcmp(name, "source") == 0 ||
                      strcmp(name, "batcher") == 0;
        const config_setting_t *ws = g ? config_setting_get_member(g, "workers") : NULL;
        if (single && st.workers != 1)
            s_errf(e, ws, "%sruns exactly one process (workers = 1)", where);
        if (strcmp(name, "trainer") == 0) {
            if (ws && st.workers != p->trainer.ranks)
                s_errf(e, ws, "%sworkers = %d but trainer.ranks = %d (set trainer.ranks)",
                       where, st.workers, p->trainer.ranks);
            st.workers = p->trainer.ranks;
        }
        st.name = util_strdup(name);
        /* Settings of stages this run does not use are checked, then dropped: launch
         * starts exactly the stages listed in the loaded plan. */
        if (need[i])
            p->stages[p->nstages++] = st;
        else
            s_stage_free(&st);
    }
}

/* The loader proper, on a parsed libconfig tree. The global rows come first because the
 * tasks depend on them (data_dir for paths, model sizes and beam for compiling), then
 * the tasks, then the stages (which depend on the tasks' routes). Derived defaults are
 * filled between these steps. Nothing stops at the first error. */
static plan_t *s_load(config_t *cfg, const char *name, const char *dir, const char *path,
                      char *err, size_t errlen) {
    s_errs_t e = {.name = name, .dir = dir};
    plan_t *p = util_calloc(1, sizeof *p);
    p->dir = util_strdup(dir);
    p->path = path ? util_strdup(path) : NULL;
    const config_setting_t *root = config_root_setting(cfg);

    s_read_table(&e, s_global_keys, NKEYS(s_global_keys), root, p, dir, dir, "");
    /* Unknown keys at the top level and in model/trainer (tasks and stages have their
     * own tables). */
    {
        int n = config_setting_length(root);
        for (int i = 0; i < n; i++) {
            const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
            const char *nm = config_setting_name(s);
            if (strcmp(nm, "tasks") == 0 || strcmp(nm, "stages") == 0)
                continue;
            bool known = false;
            for (int k = 0; k < NKEYS(s_global_keys); k++) {
                const char *kp = s_global_keys[k].path;
                size_t ln = strlen(nm);
                if (strcmp(kp, nm) == 0 || (strncmp(kp, nm, ln) == 0 && kp[ln] == '.'))
                    known = true;
            }
            bool section = strcmp(nm, "model") == 0 || strcmp(nm, "trainer") == 0 ||
                           strcmp(nm, "placement") == 0 || strcmp(nm, "limits") == 0;
            if (section && config_setting_is_group(s)) {
                char prefix[80];
                snprintf(prefix, sizeof prefix, "%s.", nm);
                s_check_unknown(&e, s_global_keys, NKEYS(s_global_keys), s, prefix, "");
            } else if (section) {
                s_errf(&e, s, "'%s' wants a group { ... }, got %s", nm,
                       s_type_name(config_setting_type(s)));
            } else if (!known) {
                const char *best = NULL;
                int bestd = 3;
                for (int k = 0; k < NKEYS(s_global_keys); k++) {
                    int d = s_edit_distance(s_global_keys[k].path, nm);
                    if (d < bestd)
                        bestd = d, best = s_global_keys[k].path;
                }
                static const char *sections[] = {"tasks", "stages", "model", "trainer",
                                                 "placement", "limits"};
                for (int k = 0; k < 6; k++)
                    if (s_edit_distance(sections[k], nm) < bestd)
                        best = sections[k], bestd = s_edit_distance(sections[k], nm);
                if (best)
                    s_errf(&e, s, "unknown key '%s' (did you mean '%s'?)", nm, best);
                else
                    s_errf(&e, s, "unknown key '%s'", nm);
            }
        }
    }
    /* Derived defaults of the global rows. */
    if (!p->name) {
        const char *base = path ? strrchr(path, '/') : NULL;
        base = base ? base + 1 : (path ? path : name);
        char buf[256];
        snprintf(buf, sizeof buf, "%s", base);
        char *dot = strrchr(buf, '.');
        if (dot && dot != buf)
            *dot = '\0';
        p->name = util_strdup(buf);
    }
    if (!p->model.image_size)
        p->model.image_size = p->model.size && strcmp(p->model.size, "base") == 0 ? 384 : 96;
    if (!p->model.patch)
        p->model.patch = 16;   /* only when the written one was bad (reported) */
    if (!p->trainer.beam)
        p->trainer.beam = 1;
    if (!p->trainer.ranks)
        p->trainer.ranks = 1;
    /* The plugin's name becomes part of an srun option: a name, nothing else. */
    if (p->trainer.mpi && (!p->trainer.mpi[0] ||
                           strspn(p->trainer.mpi, "abcdefghijklmnopqrstuvwxyz0123456789_") !=
                               strlen(p->trainer.mpi)))
        s_errf(&e, config_lookup(cfg, "trainer.mpi"), "trainer.mpi: '%s' is not an MPI "
               "plugin name (lower-case letters, digits and '_', e.g. \"pmix\")",
               p->trainer.mpi);
    if (!p->trainer.max_gen_len)
        p->trainer.max_gen_len = p->model.max_tgt_len;
    if (p->model.patch && p->model.image_size % p->model.patch) {
        const config_setting_t *ms = config_lookup(cfg, "model");
        s_errf(&e, ms, "model.image_size %d is not a multiple of model.patch %d",
               p->model.image_size, p->model.patch);
    }

    const config_setting_t *tl = config_lookup(cfg, "tasks");
    if (!tl) {
        s_errf(&e, NULL, "missing 'tasks' (a list of task groups: tasks = ( { ... } );)");
    } else if (!config_setting_is_list(tl) && !config_setting_is_array(tl)) {
        s_errf(&e, tl, "'tasks' wants a list ( { ... }, ... ), got %s",
               s_type_name(config_setting_type(tl)));
    } else {
        int n = config_setting_length(tl);
        if (n == 0)
            s_errf(&e, tl, "'tasks' is empty: a plan needs at least one task");
        p->tasks = util_calloc((size_t)n + 1, sizeof *p->tasks);
        for (int i = 0; i < n; i++) {
            const config_setting_t *g = config_setting_get_elem(tl, (unsigned)i);
            if (!config_setting_is_group(g)) {
                s_errf(&e, g, "tasks[%d] wants a group { name = ...; ... }, got %s", i,
                       s_type_name(config_setting_type(g)));
                continue;
            }
            plan_task_t *t = &p->tasks[p->ntasks++];
            const config_setting_t *nm = config_setting_get_member(g, "name");
            char where[160];
            if (nm && config_setting_type(nm) == CONFIG_TYPE_STRING)
                snprintf(where, sizeof where, "task '%s': ", config_setting_get_string(nm));
            else
                snprintf(where, sizeof where, "tasks[%d]: ", i);
            t->line = (int)config_setting_source_line(g);
            s_read_table(&e, s_task_keys, NKEYS(s_task_keys), g, t, dir,
                         p->data_dir ? p->data_dir : dir, where);
            s_check_unknown(&e, s_task_keys, NKEYS(s_task_keys), g, "", where);
            s_task_finish(&e, p, t, g);
            for (int j = 0; j < p->ntasks - 1; j++)
                if (t->name && p->tasks[j].name && strcmp(t->name, p->tasks[j].name) == 0)
                    s_errf(&e, nm, "task '%s' is defined twice (first at line %d)", t->name,
                           p->tasks[j].line);
        }
    }
    if (!p->trainer.consumer)
        p->trainer.consumer = util_strdup("trainer");   /* the bad one is reported */
    /* fuse_tokenize: a route that ends "X,tokenize" ends at X, whose workers tokenize a
     * sample at its last hop (a text-only task keeps the tokenize tier). */
    for (int i = 0; p->fuse_tokenize && i < p->ntasks; i++)
        if (p->tasks[i].plan)
            taskplan_fuse_tokenize(p->tasks[i].plan);
    s_load_stages(&e, p, config_lookup(cfg, "stages"));

    if (e.n) {
        s_errs_flush(&e, err, errlen);
        plan_destroy(&p);
        return NULL;
    }
    return p;
}

/* Shared tail of plan_load and plan_load_string: a syntax error stops everything (the
 * tree is not there to check), anything else goes through s_load. */
static plan_t *s_load_cfg(config_t *cfg, int ok, const char *name, const char *dir,
                          const char *path, char *err, size_t errlen) {
    plan_t *p = NULL;
    if (!ok) {
        const char *f = config_error_file(cfg);
        bool included = f && f[0] != '/' && strcmp(f, name) != 0;
        util_err(err, errlen, "%s%s%s:%d: syntax error: %s", included ? dir : "",
                 included ? "/" : "", f ? f : name, config_error_line(cfg),
                 config_error_text(cfg));
    } else {
        p = s_load(cfg, name, dir, path, err, errlen);
    }
    config_destroy(cfg);
    return p;
}

/* Include paths and relative paths resolve against the plan file's folder, so that a
 * plan works from whatever directory launch is started in. */
plan_t *plan_load(const char *path, char *err, size_t errlen) {
    char *abs;
    char cwd[4096];
    if (path[0] == '/') {
        abs = s_normpath(path);
    } else {
        if (!getcwd(cwd, sizeof cwd)) {
            util_err(err, errlen, "%s: cannot get the working directory", path);
            return NULL;
        }
        abs = s_abspath(cwd, path);
    }
    if (access(abs, R_OK) != 0) {
        util_err(err, errlen, "%s: cannot read the plan file", path);
        free(abs);
        return NULL;
    }
    char *dir = util_strdup(abs);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = '\0';
    else
        *slash = '\0';
    config_t cfg;
    config_init(&cfg);
    config_set_include_dir(&cfg, dir);
    int ok = config_read_file(&cfg, path) == CONFIG_TRUE;
    plan_t *p = s_load_cfg(&cfg, ok, path, dir, abs, err, errlen);
    free(dir);
    free(abs);
    return p;
}

plan_t *plan_load_string(const char *text, const char *name, const char *dir, char *err,
                         size_t errlen) {
    char cwd[4096];
    if (!dir) {
        if (!getcwd(cwd, sizeof cwd))
            return util_err(err, errlen, "cannot get the working directory"), NULL;
        dir = cwd;
    }
    char *adir = dir[0] == '/' ? s_normpath(dir) : s_abspath(getcwd(cwd, sizeof cwd), dir);
    config_t cfg;
    config_init(&cfg);
    config_set_include_dir(&cfg, adir);
    int ok = config_read_string(&cfg, text) == CONFIG_TRUE;
    plan_t *p = s_load_cfg(&cfg, ok, name ? name : "plan", adir, NULL, err, errlen);
    free(adir);
    return p;
}

/* ---- lookups -------------------------------------------------------------------------- */

int plan_task_index(const plan_t *plan, const char *name) {
    for (int i = 0; i < plan->ntasks; i++)
        if (strcmp(plan->tasks[i].name, name) == 0)
            return i;
    return -1;
}

const plan_task_t *plan_task(const plan_t *plan, const char *name) {
    int i = plan_task_index(plan, name);
    return i < 0 ? NULL : &plan->tasks[i];
}

const plan_stage_t *plan_stage(const plan_t *plan, const char *name) {
    for (int i = 0; i < plan->nstages; i++)
        if (strcmp(plan->stages[i].name, name) == 0)
            return &plan->stages[i];
    return NULL;
}

/* Kept apart from loading: a dry run must show a plan whose data are not built yet. */
int plan_check_files(const plan_t *plan, char *err, size_t errlen) {
    s_errs_t e = {.name = plan->path ? plan->path : "plan"};
    for (int i = 0; i < plan->ntasks; i++) {
        const plan_task_t *t = &plan->tasks[i];
        for (int s = 0; s < 2; s++) {
            char **v = s ? t->valid : t->train;
            int n = s ? t->nvalid : t->ntrain;
            for (int k = 0; k < n; k++)
                if (access(v[k], R_OK) != 0)
                    s_errf(&e, NULL, "task '%s': %s file %s cannot be read%s", t->name,
                           s ? "valid" : "train", v[k],
                           t->dataset && *t->dataset ? " (build it with `launch data`)" : "");
        }
    }
    if (e.n) {
        s_errs_flush(&e, err, errlen);
        return -1;
    }
    return 0;
}

/* ---- the resolved plan ------------------------------------------------------------- */

typedef struct {
    char *s;
    size_t len, cap;
} s_out_t;

static void s_out(s_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_out(s_out_t *o, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->s + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n >= 0 && o->len + (size_t)n < o->cap) {
            o->len += (size_t)n;
            return;
        }
        o->cap = (o->cap + (size_t)(n > 0 ? n : 0) + 1) * 2;
        o->s = util_realloc(o->s, o->cap);
    }
}

/* A libconfig string literal. Instructions are full of double quotes, so the escaping
 * is what makes the resolved plan load again. */
static void s_out_str(s_out_t *o, const char *s) {
    s_out(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            s_out(o, "\\%c", c);
        else if (c == '\n')
            s_out(o, "\\n");
        else if (c == '\t')
            s_out(o, "\\t");
        else if (c < 0x20)
            s_out(o, "\\x%02x", c);
        else
            s_out(o, "%c", c);
    }
    s_out(o, "\"");
}

static void s_out_value(s_out_t *o, const s_key_t *k, const void *base) {
    const char *src = (const char *)base + k->off;
    switch (k->type) {
    case K_STR:
    case K_ENUM:
    case K_PATH: s_out_str(o, *(char *const *)src ? *(char *const *)src : ""); break;
    case K_INT: s_out(o, "%d", *(const int *)src); break;
    case K_BOOL: s_out(o, "%s", *(const int *)src ? "true" : "false"); break;
    case K_INT64: {
        int64_t v = *(const int64_t *)src;
        s_out(o, "%lld%s", (long long)v, (v > INT_MAX || v < INT_MIN) ? "L" : "");
        break;
    }
    case K_FLOAT: {
        char buf[64];
        double v = *(const double *)src;
        /* the shortest text that reads back as the same double */
        for (int prec = 6; prec <= 17; prec++) {
            snprintf(buf, sizeof buf, "%.*g", prec, v);
            if (strtod(buf, NULL) == v)
                break;
        }
        /* keep it a float for libconfig: 1 -> 1.0 */
        if (!strpbrk(buf, ".eEn"))
            strcat(buf, ".0");
        s_out(o, "%s", buf);
        break;
    }
    case K_STRLIST:
    case K_PATHLIST: {
        char *const *v = *(char **const *)src;
        int n = *(const int *)((const char *)base + k->cnt_off);
        s_out(o, "[");
        for (int i = 0; i < n; i++) {
            s_out(o, "%s", i ? ", " : "");
            s_out_str(o, v[i]);
        }
        s_out(o, "]");
        break;
    }
    }
}

/* Write the rows of a table that belong to `group` ("model", or NULL for undotted keys),
 * in table order, so the resolved plan reads in the same order as docs/plan.md. */
static void s_out_rows(s_out_t *o, const s_key_t *keys, int nkeys, const void *base,
                       const char *group, const char *indent) {
    size_t gl = group ? strlen(group) : 0;
    for (int i = 0; i < nkeys; i++) {
        const char *p = keys[i].path;
        const char *dot = strchr(p, '.');
        if (group ? (strncmp(p, group, gl) != 0 || p[gl] != '.') : dot != NULL)
            continue;
        s_out(o, "%s%s = ", indent, group ? p + gl + 1 : p);
        s_out_value(o, &keys[i], base);
        s_out(o, ";\n");
    }
}

/* The resolved plan is written from the same tables as the loader reads, so every key
 * the loader knows is written, and only keys it knows: that is what makes the round trip
 * hold without a separate writer to keep in step. */
char *plan_resolved_text(const plan_t *plan) {
    s_out_t o = {util_malloc(1024), 0, 1024};
    o.s[0] = '\0';
    s_out(&o, "# plan.resolved.conf: the plan as loaded, every default filled in and every path\n"
              "# absolute. Loading this file gives the same plan.\n");
    if (plan->path)
        s_out(&o, "# from %s\n", plan->path);
    s_out_rows(&o, s_global_keys, NKEYS(s_global_keys), plan, NULL, "");
    s_out(&o, "model = {\n");
    s_out_rows(&o, s_global_keys, NKEYS(s_global_keys), plan, "model", "  ");
    s_out(&o, "};\ntrainer = {\n");
    s_out_rows(&o, s_global_keys, NKEYS(s_global_keys), plan, "trainer", "  ");
    s_out(&o, "};\nplacement = {\n");
    s_out_rows(&o, s_global_keys, NKEYS(s_global_keys), plan, "placement", "  ");
    s_out(&o, "};\nlimits = {\n");
    s_out_rows(&o, s_global_keys, NKEYS(s_global_keys), plan, "limits", "  ");
    s_out(&o, "};\ntasks = (\n");
    for (int i = 0; i < plan->ntasks; i++) {
        s_out(&o, "  {\n");
        s_out_rows(&o, s_task_keys, NKEYS(s_task_keys), &plan->tasks[i], NULL, "    ");
        s_out(&o, "  }%s\n", i + 1 < plan->ntasks ? "," : "");
    }
    s_out(&o, ");\nstages = {\n");
    for (int i = 0; i < plan->nstages; i++) {
        s_out(&o, "  %s = {\n", plan->stages[i].name);
        s_out_rows(&o, s_stage_keys, NKEYS(s_stage_keys), &plan->stages[i], NULL, "    ");
        s_out(&o, "  };\n");
    }
    s_out(&o, "};\n");
    return o.s;
}

int plan_write_resolved(const plan_t *plan, const char *path, char *err, size_t errlen) {
    char *text = plan_resolved_text(plan);
    int rc = util_write_file_atomic(path, text, strlen(text), err, errlen);
    free(text);
    return rc;
}

/* ---- documentation ----------------------------------------------------------------- */

/* One Markdown table per key table; test_planfile checks that docs/plan.md holds every
 * key that this prints. */
static void s_md_rows(FILE *out, const s_key_t *keys, int nkeys, const char *prefix) {
    static const char *tn[] = {[K_STR] = "string", [K_ENUM] = "string", [K_PATH] = "path",
                               [K_INT] = "int", [K_INT64] = "int64", [K_FLOAT] = "float",
                               [K_STRLIST] = "list of strings", [K_PATHLIST] = "list of paths",
                               [K_BOOL] = "bool"};
    fprintf(out, "| key | type | default | range | meaning |\n|---|---|---|---|---|\n");
    for (int i = 0; i < nkeys; i++) {
        const s_key_t *k = &keys[i];
        char range[64] = "";
        if (k->type == K_ENUM) {
            /* a '|' would split the Markdown cell */
            size_t n = 0;
            for (const char *c = k->choices; *c && n + 3 < sizeof range; c++) {
                if (*c == '|') {
                    range[n++] = ',';
                    range[n++] = ' ';
                } else {
                    range[n++] = *c;
                }
            }
            range[n] = '\0';
        } else if ((k->type == K_INT || k->type == K_INT64) && k->hi >= 1e9) {
            snprintf(range, sizeof range, ">= %.0f", k->lo);
        } else if (k->type == K_INT || k->type == K_INT64 || k->type == K_FLOAT) {
            snprintf(range, sizeof range, "%g .. %g", k->lo, k->hi);
        }
        const char *def = !k->def ? "required" : strcmp(k->def, "@") == 0 ? "derived" : k->def;
        fprintf(out, "| `%s%s` | %s | %s%s%s | %s | %s |\n", prefix, k->path, tn[k->type],
                k->def && *k->def && strcmp(k->def, "@") ? "`" : "", *def ? def : "empty",
                k->def && *k->def && strcmp(k->def, "@") ? "`" : "", range, k->doc);
    }
}

void plan_schema_markdown(FILE *out) {
    fprintf(out, "### Top level, `model`, `trainer`, `placement`, `limits`\n\n");
    s_md_rows(out, s_global_keys, NKEYS(s_global_keys), "");
    fprintf(out, "\n### Each group of `tasks = ( {...}, ... )`\n\n");
    s_md_rows(out, s_task_keys, NKEYS(s_task_keys), "tasks.");
    fprintf(out, "\n### Each group of `stages = { NAME = {...}; ... }`\n\n");
    s_md_rows(out, s_stage_keys, NKEYS(s_stage_keys), "stages.NAME.");
}
