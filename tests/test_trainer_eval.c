/* test_trainer_eval.c: closed answer sets and eval.json (stages/trainer/teval.c). */
#include <criterion/criterion.h>
#include <string.h>
#include <unistd.h>

#include "teval.h"
#include "util.h"

Test(teval, closed_set_is_distinct_sorted_and_round_trips) {
    teval_t *ev = teval_new();
    const int32_t a[] = {300, 301}, b[] = {299}, c[] = {300};
    teval_add_target(ev, "vqa", a, 2);
    teval_add_target(ev, "vqa", b, 1);
    teval_add_target(ev, "vqa", a, 2);   /* duplicate */
    teval_add_target(ev, "vqa", c, 1);
    teval_add_target(ev, "vqa", c, 0);   /* empty: ignored */
    cr_assert_eq(teval_n_targets(ev, "vqa"), 3);
    int n;
    const int32_t *t0 = teval_target(ev, "vqa", 0, &n);
    cr_assert_eq(n, 1);
    cr_assert_eq(t0[0], 299);
    const int32_t *t2 = teval_target(ev, "vqa", 2, &n);
    cr_assert_eq(n, 2);
    cr_assert_eq(t2[1], 301);
    int64_t len;
    int32_t *flat = teval_targets_flat(ev, "vqa", &len);
    const int32_t want[] = {299, -1, 300, -1, 300, 301, -1};
    cr_assert_eq(len, 7);
    cr_assert_eq(memcmp(flat, want, sizeof want), 0);
    char err[256];
    gen_trie_t *trie = teval_trie(ev, "vqa", err, sizeof err);
    cr_assert_not_null(trie, "%s", err);
    cr_assert_eq(gen_trie_size(trie), 3);
    gen_trie_destroy(&trie);
    cr_assert_null(teval_trie(ev, "other", err, sizeof err));
    cr_assert(strstr(err, "other"), "%s", err);

    teval_t *ev2 = teval_new();
    cr_assert_eq(teval_load_flat(ev2, "vqa", flat, len, err, sizeof err), 0, "%s", err);
    cr_assert_eq(teval_n_targets(ev2, "vqa"), 3);
    const int32_t bad1[] = {5, 6}, bad2[] = {-1}, bad3[] = {5, -7, -1};
    cr_assert_neq(teval_load_flat(ev2, "x", bad1, 2, err, sizeof err), 0);
    cr_assert_neq(teval_load_flat(ev2, "x", bad2, 1, err, sizeof err), 0);
    cr_assert_neq(teval_load_flat(ev2, "x", bad3, 3, err, sizeof err), 0);
    free(flat);
    teval_destroy(&ev2);
    teval_destroy(&ev);
    cr_assert_null(ev);
}

Test(teval, eval_json_has_the_contract_keys) {
    teval_t *ev = teval_new();
    /* vqa: 3 of 4 right; the most frequent answer "red" (2 of 4) is the baseline. */
    teval_add_result(ev, "vqa", "red", "red");
    teval_add_result(ev, "vqa", "blue", "red");
    teval_add_result(ev, "vqa", "green", "green");
    teval_add_result(ev, "vqa", "blue", "blue");
    teval_add_result(ev, "cap", "a cat on a mat", "a cat on a mat");
    teval_add_result(ev, "cap", "a dog", "a dog in the park");
    const char *tasks[] = {"vqa", "cap", "none", "nometric"};
    const char *metrics[] = {"accuracy", "bleu/rouge_l", "cider", "-"};
    char dir[] = "/tmp/test_teval.XXXXXX", path[256], err[256];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/eval.json", dir);
    cr_assert_eq(teval_write(ev, tasks, metrics, 4, 77, path, err, sizeof err), 0, "%s", err);
    size_t len;
    char *text = util_read_file(path, &len, err, sizeof err);
    cr_assert_not_null(text);
    cr_assert(strstr(text, "\"vqa\": {\"metric\": \"accuracy\", \"value\": 0.75, \"baseline\": 0.5,"), "%s", text);
    cr_assert(strstr(text, "\"n\": 4, \"step\": 77"), "%s", text);
    cr_assert(strstr(text, "\"metrics\": {\"bleu\": "), "%s", text);
    cr_assert(strstr(text, "no validation samples"), "%s", text);
    cr_assert(strstr(text, "no metric"), "%s", text);
    if (access("/usr/bin/python3", X_OK) == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd,
                 "/usr/bin/python3 -c \"import json,sys; d=json.load(open('%s')); "
                 "k={'metric','value','baseline','baseline_kind','n','step'}; "
                 "sys.exit(0 if all(k <= set(v) for v in d.values()) and d['vqa']['value']==0.75 else 1)\"",
                 path);
        cr_assert_eq(system(cmd), 0, "eval.json misses contract keys: %s", text);
    }
    free(text);
    snprintf(path, sizeof path, "rm -rf %s", dir);
    cr_assert_eq(system(path), 0);
    teval_destroy(&ev);
}
