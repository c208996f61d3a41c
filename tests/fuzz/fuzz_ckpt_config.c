/* tests/fuzz/fuzz_ckpt_config.c — libFuzzer harness for a checkpoint's config.json
 * (quantization_config: compressed-tensors config_groups, presets, "re:" targets and their
 * limits, GPTQ / AWQ settings): the input is config.json of a directory that holds the
 * synthetic mixed checkpoint of tests/ckpt_synth.h (one layer per layout kiln writes), read
 * with kiln_checkpoint_read. An error must be KILN_EINPUT with a message and leave nothing
 * behind; every layer that reads must dequantize. Built by scripts/fuzz.sh as
 * fuzz_ckpt_config (README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/checkpoints/checkpoint.h"
#include "tests/ckpt_synth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256], cfg[300];

static void remove_dir(void)
{
    char p[400];
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub/tokenizer.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/sub", dir);
    rmdir(p);
    unlink(cfg);
    rmdir(dir);
}

/* The checkpoint once per process; the inputs only replace its config.json. */
static void make_dir(void)
{
    snprintf(dir, sizeof dir, "%s/kiln_fuzz_ckpt.XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    KilnCheckpoint c;
    KilnDiag d = {0};
    if (!mkdtemp(dir) || make_ckpt(&c, true) || kiln_checkpoint_write(dir, &c, &d)) {
        fprintf(stderr, "fuzz_ckpt_config: cannot write the checkpoint in %s: %s\n", dir, d.msg);
        abort();
    }
    kiln_checkpoint_free(&c);
    snprintf(cfg, sizeof cfg, "%s/config.json", dir);
    atexit(remove_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0])
        make_dir();
    FILE *f = fopen(cfg, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    KilnCheckpoint c;
    KilnDiag d = {0};
    if (kiln_checkpoint_read(dir, &c, &d) != 0) {
        bool oom = d.code == KILN_EINTERNAL && strstr(d.msg, "out of memory");
        if ((d.code != KILN_EINPUT && !oom) || !d.msg[0] || c.lin || c.t || c.nlin || c.nt)
            abort(); /* malformed input: KILN_EINPUT with a message, nothing kept */
        return 0;
    }
    for (int i = 0; i < c.nlin; i++) {
        const KilnQLinear *q = &c.lin[i];
        if (q->N <= 0 || q->K <= 0 || q->N * q->K > (1 << 20))
            abort(); /* the synthetic layers are small */
        float *w = malloc(sizeof(float) * (size_t)(q->N * q->K));
        if (!w)
            abort();
        kiln_qlinear_dequant(q, w);
        free(w);
    }
    kiln_checkpoint_free(&c);
    return 0;
}
