/* passes/passes.h — the IR -> IR passes (one file each) and the pipeline that runs
 * them, for a target of ir/target.h. docs/targets.md explains what each target runs natively
 * and why pick_layout chooses what it chooses. */
#ifndef KILN_PASSES_H
#define KILN_PASSES_H

#include <stdio.h>

#include "ir/ir.h"
#include "ir/target.h" /* the targets the passes plan for */

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
