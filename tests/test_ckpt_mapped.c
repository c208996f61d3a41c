/* tests/test_ckpt_mapped.c — a mapped checkpoint (kiln_checkpoint_open: the model loaders'
 * reader, whose layers' codes are decoded from the file when needed) against the
 * whole-file reader (kiln_checkpoint_read) on every layout's fixture of
 * tests/ckpt/make_fixtures.py (compressed-tensors pack / naive / fp8 / sharded, AutoGPTQ
 * v1 / v2 / act-order / 8-bit, AutoAWQ GEMM): the same layers, grids and plain tensors,
 * every row range dequantized to the same bits, Q/K rows turned the same way, and the
 * same error for every malformed fixture. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/checkpoints/checkpoint.h"
#include "runtime/runtime.h"
#include "tests/models/testlib.h"

static char fx[300];

static int setup(void **state)
{
    if (tmpdir_setup(state))
        return -1;
    snprintf(fx, sizeof fx, "%s/fx", tmpdir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "for py in python3 /usr/bin/python3; do if $py -c 'import numpy' 2>/dev/null; then "
             "exec $py '%s/tests/ckpt/make_fixtures.py' '%s' >/dev/null; fi; done; exit 1",
             KILN_SOURCE_DIR, fx);
    int rc = system(cmd);
    if (rc == -1 || WEXITSTATUS(rc) != 0) {
        fprintf(stderr, "test_ckpt_mapped: tests/ckpt/make_fixtures.py failed (python3-numpy?)\n");
        return -1;
    }
    return 0;
}

static int teardown(void **state) { return tmpdir_teardown(state); }

/* Rows [n0, n0 + nr) of the mapped layer m equal the whole-file layer e's dequantized rows. */
static void same_rows(const KilnQLinear *e, const KilnQLinear *m, int64_t n0, int64_t nr)
{
    float *want = malloc(sizeof(float) * (size_t)(e->N * e->K));
    float *got = malloc(sizeof(float) * (size_t)(nr * e->K + 1));
    KilnDiag d = {0};
    assert_non_null(want);
    assert_non_null(got);
    kiln_qlinear_dequant(e, want);
    assert_int_equal(kiln_qlinear_rows(m, n0, nr, got, &d), 0);
    if (memcmp(got, want + n0 * e->K, sizeof(float) * (size_t)(nr * e->K)))
        fail_msg("%s: rows %lld..%lld differ from the whole-file reader's", e->name,
                 (long long)n0, (long long)(n0 + nr));
    free(want), free(got);
}

static void same_layer(KilnQLinear *e, KilnQLinear *m)
{
    assert_string_equal(e->name, m->name);
    assert_true(e->N == m->N && e->K == m->K && e->ngroups == m->ngroups &&
                e->nscale == m->nscale);
    const KilnQuantSpec *a[2] = {&e->spec, &e->act}, *b[2] = {&m->spec, &m->act};
    for (int i = 0; i < 2; i++) /* field by field: the structs' padding is not theirs */
        assert_true(a[i]->fmt == b[i]->fmt && a[i]->symmetric == b[i]->symmetric &&
                    a[i]->gran == b[i]->gran && a[i]->group == b[i]->group &&
                    a[i]->dynamic == b[i]->dynamic && a[i]->calib == b[i]->calib &&
                    a[i]->pct == b[i]->pct && a[i]->scale == b[i]->scale &&
                    a[i]->zero == b[i]->zero);
    assert_true(e->act_scale == m->act_scale && e->act_zero == m->act_zero);
    assert_null(m->codes);
    assert_non_null(m->src);
    assert_memory_equal(e->scale, m->scale, sizeof(float) * (size_t)e->nscale);
    assert_true(!e->zero == !m->zero && !e->g_idx == !m->g_idx && !e->bias == !m->bias);
    if (e->zero)
        assert_memory_equal(e->zero, m->zero, sizeof(int32_t) * (size_t)e->nscale);
    if (e->g_idx)
        assert_memory_equal(e->g_idx, m->g_idx, sizeof(int32_t) * (size_t)e->K);
    if (e->bias)
        assert_memory_equal(e->bias, m->bias, sizeof(float) * (size_t)e->N);
    same_rows(e, m, 0, e->N);
    for (int64_t n = 0; n < e->N; n += 3) /* ragged ranges, one row and three */
        same_rows(e, m, n, e->N - n < 3 ? e->N - n : 3);
    /* Q/K rows turned to kiln's RoPE layout: codes at once, or as decoded */
    if (e->N % 4 == 0) {
        KilnDiag d = {0};
        assert_int_equal(kiln_llama_permute_qk(e, 2, &d), 0);
        assert_int_equal(kiln_llama_permute_qk(m, 2, &d), 0);
        assert_int_equal(kiln_llama_permute_qk(m, 2, &d), KILN_EINTERNAL); /* once only */
        same_rows(e, m, 0, e->N);
        same_rows(e, m, 1, e->N - 2);
    }
}

static void check_dir(const char *name)
{
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", fx, name);
    KilnCheckpoint e = {0}, m = {0};
    KilnDiag de = {0}, dm = {0};
    int re = kiln_checkpoint_read(dir, &e, &de), rm = kiln_checkpoint_open(dir, &m, &dm);
    assert_int_equal(re, rm);
    if (re) { /* a malformed fixture: the same located error */
        assert_string_equal(de.msg, dm.msg);
        print_message("%-20s refused alike: %s\n", name, dm.msg);
        return;
    }
    assert_non_null(m.src);
    assert_int_equal(e.nlin, m.nlin);
    assert_string_equal(e.format, m.format);
    for (int i = 0; i < e.nlin; i++)
        same_layer(&e.lin[i], &m.lin[i]);
    assert_int_equal(e.nt, m.nt);
    for (int i = 0; i < e.nt; i++) { /* plain tensors: read when taken */
        assert_string_equal(e.t[i].name, m.t[i].name);
        assert_null(m.t[i].data);
        float *v = NULL;
        KilnDiag d = {0};
        assert_int_equal(kiln_checkpoint_tensor_f32(&m, m.t[i].name, &v, &d), 0);
        assert_non_null(v);
        int64_t n = 1;
        for (int k = 0; k < e.t[i].rank; k++)
            n *= e.t[i].dim[k];
        assert_memory_equal(v, e.t[i].data, sizeof(float) * (size_t)n);
        assert_non_null(kiln_checkpoint_tensor_file(&m, m.t[i].name));
        free(v);
    }
    /* a quantized layer's tensors are not plain ones */
    if (m.nlin) {
        char t[300];
        snprintf(t, sizeof t, "%s.weight_scale", m.lin[0].name);
        assert_null(kiln_checkpoint_tensor_file(&m, t));
    }
    print_message("%-20s %d layers, %d plain tensors: mapped = whole-file\n", name, m.nlin, m.nt);
    kiln_checkpoint_free(&e);
    kiln_checkpoint_free(&m);
}

static void test_every_fixture(void **state)
{
    (void)state;
    DIR *dh = opendir(fx);
    assert_non_null(dh);
    struct dirent *de;
    int n = 0;
    while ((de = readdir(dh))) {
        const char *s = de->d_name;
        if (s[0] == '.' || strchr(s, '.') || !strncmp(s, "tok-", 4))
            continue;
        check_dir(s);
        n++;
    }
    closedir(dh);
    assert_true(n >= 15); /* every layout and malformed fixture was seen */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_fixture),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
