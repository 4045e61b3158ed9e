/* planfile.h: load, validate and write plan files (libconfig).
 *
 * A plan file names the tasks (each an instruction over the columns of a dataset), the
 * model, the trainer and the stage programs. The loader is table-driven: one row per
 * key with its type, bounds, default, destination and doc string (docs/plan.md is
 * written from the same table). It validates everything in one pass and reports EVERY
 * bad key (unknown or misspelled, wrong type, out of range, bad instruction) with its
 * file and line, one per line of the error text; a misspelled key is an error, never a
 * silent default.
 *
 * Paths (train/valid files, data_dir, run_dir) are relative to the plan file's folder
 * unless absolute; the loaded plan holds absolute paths. plan_write_resolved() writes
 * the plan with every default filled in (plan.resolved.conf); loading that file gives
 * the same plan. */
#ifndef OFA_PLANFILE_H
#define OFA_PLANFILE_H

#include "taskplan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Longest task name: it is embedded in counter names (task.NAME.rejected_here) that
 * must fit a message key (PROTO_MAX_KEY). */
#define PLAN_MAX_TASK_NAME 40

typedef struct {
    char *name;
    char *instruction;
    char *dataset;           /* dataset name for the builder (`launch data NAME`), or "" */
    char *group_column;      /* column of an unnamed repeated target group, or "" */
    char **train;            /* absolute paths */
    int ntrain;
    char **valid;            /* absolute paths (may be none) */
    int nvalid;
    char *format;            /* "tsv" | "jsonl" */
    char **columns;          /* TSV column names in order; for jsonl the keys */
    int ncolumns;
    double weight;           /* mixing weight (> 0) */
    int batch_size;
    char *metric;            /* resolved metric (override or the plan's default) */
    int epochs;              /* passes over the train files */
    int64_t max_rows;        /* 0 = all rows */
    int image_size, patch;   /* resolved (task override or model's) */
    taskplan_t *plan;        /* compiled instruction (owned) */
    int line;                /* where the task group starts in its file */
} plan_task_t;

typedef struct {
    char *name;              /* source, image, tokenize, batcher, broker, sink, trainer... */
    int workers;
    char **program;          /* argv list, NULL-terminated; program[0] the binary */
    int nprogram;
    int credits;
    char **nodes;            /* Slurm: nodes its processes go on, round robin (may be none) */
    int nnodes;
    int line;                /* 0 when the stage was not written in the file */
} plan_stage_t;

typedef struct {
    char *size;              /* "nano" | "tiny" | "base" */
    int image_size;          /* pixels (96 nano/tiny, 384 base by default) */
    int patch;
    int max_src_len;
    int max_tgt_len;
    int vocab_size;          /* BPE merges budget */
    int audio_stack;         /* audio frames stacked into one source position (4) */
    int audio_mels;          /* mel bins per audio frame the audio adapter takes (80) */
    int video_frames;        /* most frames of a video clip (8) */
    int num_bins;            /* location levels of a box coordinate (1000) */
    int motion_channels;     /* channels per motion frame; 0 = unset */
    int modality_experts;    /* 1: one encoder FFN per modality group (bool) */
} plan_model_t;

typedef struct {
    char *backend;           /* "cpu" | "cuda" | "auto" */
    char *consumer;          /* "trainer" | "sink" */
    char *precision;         /* "fp32" | "bf16" | "auto" */
    int threads;             /* 0 = one per core the rank may use */
    double lr;
    int warmup;
    int64_t max_steps;       /* 0 = until every task's epochs are done */
    double weight_decay;
    double clip;
    double label_smoothing;
    int eval_every;          /* steps; 0 = only at the end */
    int checkpoint_every;    /* steps; 0 = only at the end */
    int keep_checkpoints;
    int log_every;           /* steps between metrics.jsonl lines */
    int ranks;
    char *mpi;               /* Slurm: srun's --mpi plugin of the trainer group ("pmix") */
    int beam;                /* 1 = greedy */
    int max_gen_len;         /* tokens generated at most */
    char *multitask;         /* "sample" | "round_robin": how a step mixes tasks */
} plan_trainer_t;

/* Where processes go under Slurm (launch/slurm.c). A node is named by its name in the
 * allocation or by its index there ("0" = the first node); launch checks the names
 * against the allocation, since the plan cannot know it. */
typedef struct {
    char *hubs;              /* node of the broker, batcher, source and sink; "" = first */
    char **trainer;          /* nodes of the trainer ranks (rank r on r % n); none = hubs */
    int ntrainer;
    int workers_per_node;    /* at most this many workers on one node; 0 = no limit */
} plan_placement_t;

/* Per-message and per-sample size limits (the `limits` group): one huge or hostile input
 * is rejected with its reason, never allowed to exhaust a process's memory. */
typedef struct {
    int64_t message_bytes;   /* a message frame at most (ZMQ_MAXMSGSIZE; source rows) */
    int64_t image_pixels;    /* width x height from the JPEG/PNG header, before decoding */
    double audio_seconds;
    int64_t video_frames;
    double video_seconds;
    int64_t text_bytes;      /* one text field of a row */
    int64_t bvh_frames;      /* the Frames: line of a BVH file */
} plan_limits_t;

typedef struct {
    char *path;              /* absolute path of the plan file */
    char *dir;               /* its folder */
    char *name;
    int64_t seed;
    char *run_dir;           /* absolute */
    char *data_dir;          /* absolute; relative train/valid paths resolve against it */
    plan_task_t *tasks;
    int ntasks;
    plan_model_t model;
    plan_trainer_t trainer;
    plan_placement_t placement;
    plan_limits_t limits;
    char *transport;         /* "ipc" | "tcp": endpoints of a local run (tcp = CURVE) */
    char *shm_arena;         /* "auto" | "on" | "off": large tensors through shared memory */
    int fuse_tokenize;       /* 1: the last decoder tier of a route tokenizes (bool) */
    int shm_arena_mb;        /* each worker's arena, MiB */
    plan_stage_t *stages;    /* every stage the run needs, defaults filled in */
    int nstages;
} plan_t;

/* Load and validate a plan file. NULL on failure with err holding every problem, one
 * per line ("FILE:LINE: reason"). The caller owns the plan (plan_destroy). */
plan_t *plan_load(const char *path, char *err, size_t errlen);
/* Same, from text; `name` stands for the file in messages and `dir` resolves relative
 * paths (NULL: the working directory). */
plan_t *plan_load_string(const char *text, const char *name, const char *dir,
                         char *err, size_t errlen);
void plan_destroy(plan_t **self_p);

/* Write the resolved plan (all defaults filled in, absolute paths) atomically. */
int plan_write_resolved(const plan_t *plan, const char *path, char *err, size_t errlen);
/* The same text as a malloc'd string (caller frees). */
char *plan_resolved_text(const plan_t *plan);

/* Check that every train/valid file exists and is readable (a real run needs them;
 * --dry-run does not). Reports every missing file. */
int plan_check_files(const plan_t *plan, char *err, size_t errlen);

/* Lookups; NULL when absent. */
const plan_task_t *plan_task(const plan_t *plan, const char *name);
const plan_stage_t *plan_stage(const plan_t *plan, const char *name);
/* Index of the task (its task_index in sample ids), or -1. */
int plan_task_index(const plan_t *plan, const char *name);

/* Print every key of the schema (path, type, default, bounds, doc) as Markdown. */
void plan_schema_markdown(FILE *out);

#endif
