/* tests/fuzz/fuzz_modelfile.c — libFuzzer harness for one model file reader, chosen at
 * build time: -DKILN_FUZZ_GGUF (the GGUF reader, then the BPE tokenizer built from a
 * GGUF that opens) or -DKILN_FUZZ_SAFETENSORS. The input is the file. A file that opens
 * has its tensors converted to f32. Built by scripts/fuzz.sh as fuzz_gguf and
 * fuzz_safetensors (README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/files/modelfile.h"
#include "model/tokenizers/tokenizer.h"

#if defined(KILN_FUZZ_GGUF)
#define EXT "gguf"
#elif defined(KILN_FUZZ_SAFETENSORS)
#define EXT "safetensors"
#else
#error "build with -DKILN_FUZZ_GGUF or -DKILN_FUZZ_SAFETENSORS"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char path[256];

static void remove_file(void) { unlink(path); }

#ifdef KILN_FUZZ_GGUF
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
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
#ifdef KILN_FUZZ_SAFETENSORS
    /* the GGUF magic wins over the extension: that input belongs to the other target */
    if (size >= 4 && memcmp(data, "GGUF", 4) == 0)
        return 0;
#endif
    if (!path[0]) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/kiln_fuzz.%d." EXT, dir, (int)getpid());
        atexit(remove_file);
    }
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    KilnModelFile *mf = NULL;
    KilnDiag d = {0};
    if (kiln_mf_open(path, &mf, &d) != 0) {
        if (d.code != KILN_EINPUT || !d.msg[0] || mf)
            abort(); /* a malformed file must be KILN_EINPUT with a message */
        return 0;
    }
    for (int i = 0; i < kiln_mf_ntensors(mf); i++) {
        const KilnModelTensor *t = kiln_mf_tensor(mf, i);
        float *y = NULL;
        if (t->numel <= (1 << 22) && kiln_mf_load_f32(mf, t->name, &y, &d) == 0)
            free(y);
        if (kiln_mf_find(mf, t->name) != t)
            abort(); /* the name index lost a tensor */
    }
#ifdef KILN_FUZZ_GGUF
    exercise_tokenizer(mf);
#endif
    kiln_mf_close(mf);
    return 0;
}
