/* decmain.c: see decmain.h. */
#include "decmain.h"

#include "util.h"

int decmain_run(int argc, char **argv, const decmain_t *m) {
    util_set_progname(argv[0]);
    stage_args_t a;
    stage_args_parse(&a, argc, argv, m->usage, m->extra_fn, m->opts);
    char err[1024];
    plan_t *plan = plan_load(a.plan, err, sizeof err);
    if (!plan)
        util_fatal("is --plan the run's plan.resolved.conf?", "cannot load plan %s:\n%s",
                   a.plan, err);
    /* A constructor with no reason to give (the image tier's) leaves err empty. */
    err[0] = 0;
    void *st = m->new_fn(plan, m->opts, err, sizeof err);
    if (!st)
        util_fatal(m->fail_hint, "%s%s", m->fail, err);
    int rc = stage_worker_run(&a, m->work_fn, st);
    m->destroy_fn(st);
    plan_destroy(&plan);
    return rc;
}
