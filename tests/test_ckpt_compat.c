/* tests/test_ckpt_compat.c — what the checkpoint writer does for today's releases
 * (compressed-tensors 0.20, transformers 5.x; docs/checkpoints.md): layers of one
 * scheme whose K make different stored group sizes share one config group, and
 * kiln_checkpoint_compat names what those releases do not load (the lines
 * `kiln quantize` warns with). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <ftw.h>
#include <unistd.h>

#include "model/checkpoints/checkpoint.h"
#include "model/files/modelfile.h"
#include "runtime/runtime.h"
#include "ckpt_synth.h"

static int rm_one(const char *p, const struct stat *s, int flag, struct FTW *f)
{
    (void)s, (void)flag, (void)f;
    return remove(p);
}

static void two_layers(KilnCheckpoint *c, bool sym2, KilnQFormat f2, KilnGran g2)
{
    memset(c, 0, sizeof *c);
    c->lin = calloc(2, sizeof *c->lin);
    assert_non_null(c->lin);
    c->nlin = 2;
    /* K = 192 with g128 is ragged (stored alone at g64); K = 256 is whole (g128) */
    make_layer(&c->lin[0], "model.layers.0.mlp.gate_proj", 16, 192, KILN_QF_INT4, false,
               KILN_GRAN_GROUP, 128);
    make_layer(&c->lin[1], "model.layers.0.mlp.down_proj", 16, 256, f2, sym2, g2,
               g2 == KILN_GRAN_GROUP ? 128 : 0);
    c->config_json = strdup("{\"model_type\": \"llama\"}");
    assert_non_null(c->config_json);
}

static const KilnJson *qconfig(const char *dir, KilnJson **root)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    size_t len = 0;
    KilnDiag d = {0};
    char *text = NULL;
    assert_int_equal(kiln_rt_read_file(path, "config.json", 1 << 20, &text, &len, &d), 0);
    assert_int_equal(kiln_json_parse(text, len, path, root, &d), 0);
    free(text);
    const KilnJson *q = kiln_json_get(*root, "quantization_config");
    assert_non_null(q);
    return kiln_json_get(q, "config_groups");
}

/* Both int4 g128 asymmetric layers land in one config group at group_size 64, and read
 * back to exactly the weights written. */
static void test_one_group_for_one_scheme(void **state)
{
    (void)state;
    KilnCheckpoint c;
    two_layers(&c, false, KILN_QF_INT4, KILN_GRAN_GROUP);
    char dir[] = "/tmp/kiln-ckcompat-XXXXXX";
    assert_non_null(mkdtemp(dir));
    KilnDiag d = {0};
    assert_int_equal(kiln_checkpoint_write(dir, &c, &d), 0);
    KilnJson *root = NULL;
    const KilnJson *groups = qconfig(dir, &root);
    assert_int_equal(groups->len, 1);
    const KilnJson *w = kiln_json_get(&groups->items[0], "weights");
    assert_non_null(w);
    const KilnJson *gs = kiln_json_get(w, "group_size");
    assert_non_null(gs);
    assert_int_equal(gs->i, 64);
    kiln_json_free(root);

    KilnCheckpoint r;
    assert_int_equal(kiln_checkpoint_read(dir, &r, &d), 0);
    for (int i = 0; i < 2; i++) {
        const KilnQLinear *a = &c.lin[i], *b = kiln_checkpoint_find(&r, a->name);
        assert_non_null(b);
        float *wa = malloc(sizeof(float) * (size_t)(a->N * a->K));
        float *wb = malloc(sizeof(float) * (size_t)(a->N * a->K));
        kiln_qlinear_dequant(a, wa);
        kiln_qlinear_dequant(b, wb);
        assert_memory_equal(wa, wb, sizeof(float) * (size_t)(a->N * a->K));
        free(wa);
        free(wb);
    }
    kiln_checkpoint_free(&r);

    KilnCkptCompat k;
    assert_int_equal(kiln_checkpoint_compat(&c, &k, &d), 0);
    assert_int_equal(k.ngroups, 1);
    assert_int_equal(k.nasym_packed, 2);
    assert_string_equal(k.asym_layer, "model.layers.0.mlp.gate_proj");
    assert_int_equal(k.ngidx, 0);
    char buf[2048];
    assert_int_equal(kiln_checkpoint_compat_text(&k, buf, sizeof buf), 1);
    assert_non_null(strstr(buf, "CompressedTensorsConfig(dequantize=True)"));
    kiln_checkpoint_free(&c);
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Two schemes: two config groups, which dequantize=True does not load; asymmetric
 * with several groups has no transformers load at all. */
static void test_groups_and_asym(void **state)
{
    (void)state;
    KilnCheckpoint c;
    two_layers(&c, true, KILN_QF_INT8, KILN_GRAN_CHANNEL);
    KilnDiag d = {0};
    KilnCkptCompat k;
    assert_int_equal(kiln_checkpoint_compat(&c, &k, &d), 0);
    assert_int_equal(k.ngroups, 2);
    assert_int_equal(k.nasym_packed, 1);
    char buf[2048];
    assert_int_equal(kiln_checkpoint_compat_text(&k, buf, sizeof buf), 2);
    assert_non_null(strstr(buf, "dequantize=True cannot load them either"));
    assert_non_null(strstr(buf, "2 config groups"));
    /* symmetric: only the config-group line */
    c.lin[0].spec.symmetric = true;
    free(c.lin[0].zero);
    c.lin[0].zero = NULL;
    for (int64_t i = 0; i < c.lin[0].N * c.lin[0].K; i++)
        c.lin[0].codes[i] = (int16_t)(c.lin[0].codes[i] - 8);
    assert_int_equal(kiln_checkpoint_compat(&c, &k, &d), 0);
    assert_int_equal(kiln_checkpoint_compat_text(&k, buf, sizeof buf), 1);
    assert_null(strstr(buf, "pack-quantized"));
    kiln_checkpoint_free(&c);
}

/* A real act-order g_idx: the legacy layout, named with the advice. */
static void test_gidx(void **state)
{
    (void)state;
    KilnCheckpoint c;
    assert_int_equal(make_ckpt(&c, true), 0);
    KilnDiag d = {0};
    KilnCkptCompat k;
    assert_int_equal(kiln_checkpoint_compat(&c, &k, &d), 0);
    assert_int_equal(k.ngidx, 1);
    assert_string_equal(k.gidx_layer, "model.layers.0.self_attn.v_proj");
    char buf[4096];
    assert_true(kiln_checkpoint_compat_text(&k, buf, sizeof buf) >= 1);
    assert_non_null(strstr(buf, "act_order = \"static\""));
    kiln_checkpoint_free(&c);
    /* without it: no g_idx line */
    assert_int_equal(make_ckpt(&c, false), 0);
    assert_int_equal(kiln_checkpoint_compat(&c, &k, &d), 0);
    assert_int_equal(k.ngidx, 0);
    kiln_checkpoint_compat_text(&k, buf, sizeof buf);
    assert_null(strstr(buf, "actorder"));
    kiln_checkpoint_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_group_for_one_scheme),
        cmocka_unit_test(test_groups_and_asym),
        cmocka_unit_test(test_gidx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
