/* passes/passes.h — target descriptions, the IR -> IR passes (one file each) and the
 * pipeline that runs them. docs/targets.md explains what each target runs natively
 * and why pick_layout chooses what it chooses. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include <stdio.h>

#include "ir/ir.h"

/* ------------------------------------------------------------------ target.c */

typedef enum { KILN_TGT_INTERP, KILN_TGT_CPU, KILN_TGT_CUDA } KilnTargetKind;

enum {
    KILN_ISA_AVX2 = 1,
    KILN_ISA_FMA = 2,
    KILN_ISA_F16C = 4,
    KILN_ISA_AVX512 = 8, /* AVX-512F (+BW/VL/DQ, x86-64-v4) */
    KILN_ISA_VNNI = 16,  /* AVX512-VNNI: vpdpbusd */
    KILN_ISA_BF16 = 32,  /* AVX512-BF16: vdpbf16ps */
};

typedef struct KilnTarget {
    const char *name; /* interp, avx2, avx512, sm_80, sm_89, sm_90 (aliases resolve to these) */
    KilnTargetKind kind;
    unsigned isa; /* KILN_ISA_* bits, CPU targets */
    int sm;       /* 80, 89, 90 for CUDA targets, else 0 */
    const char *summary; /* one line: what it runs natively */
} KilnTarget;

/* The table, for `kiln targets` (includes the aliases cpu and cuda). */
const KilnTarget *kiln_targets(int *n);
/* Resolve a name (aliases included) to a concrete target. Unknown names give
 * KILN_EINPUT with the list of valid names; "cpu" on a host without AVX2+FMA gives
 * KILN_ENODEV. */
int kiln_target_lookup(const char *name, KilnTarget *out, KilnDiag *d);
/* What "cpu" resolves to for a host with these KILN_ISA_* bits (exposed for tests). */
int kiln_target_resolve_cpu(unsigned isa, KilnTarget *out, KilnDiag *d);
/* KILN_ISA_* bits of the machine we run on. */
unsigned kiln_host_isa(void);

/* ------------------------------------------------------------------ the passes */

/* Each rewrites m in place for target t; 0 or a KILN_E* code with d filled. */
int kiln_pass_verify(KilnModule *m, const KilnTarget *t, KilnDiag *d);
int kiln_pass_fuse_qgemm(KilnModule *m, const KilnTarget *t, KilnDiag *d);
int kiln_pass_pick_layout(KilnModule *m, const KilnTarget *t, KilnDiag *d);
int kiln_pass_prepack(KilnModule *m, const KilnTarget *t, KilnDiag *d);
int kiln_pass_dce(KilnModule *m, const KilnTarget *t, KilnDiag *d);

/* ------------------------------------------------------------------ pipeline.c */

/* verify, fuse_qgemm, pick_layout, prepack, dce, verify. With print_after_all
 * non-NULL, prints "; *** IR after <pass> ***" and the module after each pass. */
int kiln_run_pipeline(KilnModule *m, const KilnTarget *t, FILE *print_after_all, KilnDiag *d);
/* Names of the passes kiln_run_pass knows, in pipeline order. */
const char *const *kiln_pass_names(int *n);
/* Run one pass by name; unknown names give KILN_EINPUT listing the valid ones. */
int kiln_run_pass(const char *name, KilnModule *m, const KilnTarget *t, KilnDiag *d);

/* ------------------------------------------------------------------ shared helpers (passutil.c) */

/* Name for a new value in f: base itself when no value of f has it, else base.N. */
const char *kiln_pass_fresh_name(KilnFunc *f, const char *base);
/* Remove attribute key from an instruction (no-op when absent). */
void kiln_pass_unset(KilnInst *in, const char *key);

#endif
