/* model/nets/net.c — the network table of net.h. */
#include <string.h>
#include <sys/stat.h>

#include "model/nets/net.h"

static int llama_load(const char *path, void **net, KilnDiag *d)
{
    return kiln_llama_load(path, (KilnLlama **)net, d);
}
static void llama_free(void *net) { kiln_llama_free(net); }
static KilnLinear *llama_linears(void *net, int *n) { return kiln_llama_linears(net, n); }
static int llama_export(const void *net, const char *path, KilnCheckpoint *ck, KilnDiag *d)
{
    (void)path;
    return kiln_llama_export(net, ck, d);
}

static int bert_load(const char *path, void **net, KilnDiag *d)
{
    return kiln_bert_load(path, (KilnBert **)net, d);
}
static void bert_free(void *net) { kiln_bert_free(net); }
static KilnLinear *bert_linears(void *net, int *n) { return kiln_bert_linears(net, n); }
static int bert_export(const void *net, const char *path, KilnCheckpoint *ck, KilnDiag *d)
{
    return kiln_bert_export(net, path, ck, d);
}

static const KilnNetOps nets[] = {
    {"llama", true, llama_load, llama_free, llama_linears, llama_export},
    {"bert", false, bert_load, bert_free, bert_linears, bert_export},
};

const KilnNetOps *kiln_net_for(const char *path)
{
    struct stat st;
    bool dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    const char *arch = dir ? kiln_hf_arch(path) : NULL;
    return !dir || (arch && !strcmp(arch, "llama")) ? &nets[0] : &nets[1];
}
