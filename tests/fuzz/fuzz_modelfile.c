/* tests/fuzz/fuzz_modelfile.c — libFuzzer harness for the model file readers (GGUF and
 * safetensors) and, when a GGUF opens, the BPE tokenizer built from it. The first input
 * byte picks the file name's extension; the rest is the file. See README.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/modelfile.h"
#include "model/tokenizer.h"

static char path[2][256];

static void remove_files(void)
{
    unlink(path[0]);
    unlink(path[1]);
}

static void exercise_tokenizer(const KilnModelFile *mf)
{
    KilnTokenizer *t = NULL;
    KilnDiag d = {0};
    if (kiln_tok_bpe_from_gguf(mf, &t, &d) != 0)
        return;
    static const char *const texts[] = {"Hello, world! 3.14 it's  \n\n x",
                                        "<|im_start|>user\nHi<|im_end|>",
                                        "caf\xc3\xa9 \xe4\xb8\xad\xf0\x9f\x98\x80 \xff\xfe"};
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        int32_t ids[256];
        int needed = 0;
        int n = kiln_tok_encode(t, texts[i], 0, ids, 256, &needed, &d);
        if (n > 0)
            free(kiln_tok_decode(t, ids, n));
    }
    for (int32_t id = 0; id < kiln_tok_vocab_size(t) && id < 64; id++)
        (void)kiln_tok_token(t, id);
    kiln_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int which = data[0] & 1;
    if (!path[0][0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path[0], sizeof path[0], "%s/fuzz_modelfile.%d.gguf", dir, (int)getpid());
        snprintf(path[1], sizeof path[1], "%s/fuzz_modelfile.%d.safetensors", dir,
                 (int)getpid());
        atexit(remove_files);
    }
    FILE *f = fopen(path[which], "wb");
    if (!f)
        return 0;
    fwrite(data + 1, 1, size - 1, f);
    fclose(f);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path[which], &mf, &d) != 0) {
        if (d.code != KILN_EINPUT || !d.msg[0])
            abort(); /* a malformed file must be KILN_EINPUT with a message */
        return 0;
    }
    for (int i = 0; i < kiln_mf_ntensors(mf); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(mf, i);
        float *y = NULL;
        if (t->numel <= (1 << 22) && kiln_mf_load_f32(mf, t->name, &y, &d) == 0)
            free(y);
    }
    if (which == 0)
        exercise_tokenizer(mf);
    kiln_mf_close(mf);
    return 0;
}
