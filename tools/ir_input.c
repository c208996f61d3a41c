/* tools/ir_input.c — IR text files as the commands' input (`kiln ir|run|bench|aot
 * FILE.kir`): each function of the file is a layer with the shape its IR gives, planned
 * by the one planner (kiln_plan_ir), so a user can edit a kernel's IR and run it, as
 * QBE's and MLIR's tools take their own text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime/runtime.h"
#include "tool.h"

/* IR text larger than this is refused before it is read (a module of ~100k layers). */
#define TOOL_IR_MAX_BYTES (64u << 20)

bool tool_is_ir_file(const char *path)
{
    size_t n = path ? strlen(path) : 0;
    if (n > 4 && strcmp(path + n - 4, ".kir") == 0)
        return true;
    if (n > 4 && strcmp(path + n - 4, ".lua") == 0)
        return false;
    /* no telling extension: IR text starts, after blank and `;` comment lines, with
     * `func @`, which no recipe (a Lua chunk) can */
    int fd = path ? kiln_rt_open_regular(path, "IR file", 0, NULL, NULL) : -1;
    if (fd < 0)
        return false;
    char head[4096];
    ssize_t k = read(fd, head, sizeof head - 1);
    close(fd);
    if (k <= 0)
        return false;
    head[k] = 0;
    const char *p = head;
    for (;;) {
        p += strspn(p, " \t\r\n");
        if (*p != ';')
            break;
        p = strchr(p, '\n');
        if (!p)
            return false;
    }
    return strncmp(p, "func @", 6) == 0;
}

int tool_ir_load(const char *path, KilnModule *m, KilnDiag *d)
{
    char *text;
    size_t len = 0;
    int rc = kiln_rt_read_file(path, "IR file", TOOL_IR_MAX_BYTES, &text, &len, d);
    if (rc)
        return rc;
    rc = kiln_parse_module(text, len, path, m, d);
    free(text);
    if (!rc && m->nfuncs == 0)
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: no function in the IR file", path);
    return rc ? rc : kiln_verify_module(m, d);
}

const char *tool_ir_target(const KilnModule *m)
{
    for (int i = 0; m && i < m->nfuncs; i++) {
        const KilnAttr *ta = kiln_fget(m->funcs[i], "target");
        if (ta && (ta->kind == KILN_ATTR_STR || ta->kind == KILN_ATTR_IDENT) && ta->s)
            return ta->s;
    }
    return NULL;
}

int tool_plan_ir(const ToolArgs *a, const KilnTarget *t, KilnModule *m, FILE *print_after_all,
                 ToolPlan *p, KilnDiag *d)
{
    memset(p, 0, sizeof *p);
    int n = m->nfuncs;
    p->layers = calloc((size_t)n, sizeof *p->layers);
    p->calib = calloc((size_t)n, sizeof *p->calib);
    if (!p->layers || !p->calib)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    p->n = n;
    for (int i = 0; i < n; i++) {
        const KilnFunc *f = m->funcs[i];
        /* the calibration batch a static scale without a value is taken from, as for a
         * recipe's layer; kiln_plan_ir checks the shape and names the function */
        if (f->nparams >= 1 && f->values[f->params[0]].type.rank == 2) {
            int64_t K = f->values[f->params[0]].type.dim[1];
            if (!(p->calib[i] = tool_calib_batch(a->seed, TOOL_CALIB_ROWS, K)))
                return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
            p->layers[i].calib_x = p->calib[i];
            p->layers[i].calib_rows = TOOL_CALIB_ROWS;
        }
    }
    return kiln_plan_ir(m, t, p->layers, n, print_after_all, d);
}

void tool_ir_apply_tune(const KilnModule *m, KilnTarget *t)
{
    if (t->kind != KILN_TGT_CPU || !m || m->nfuncs == 0)
        return;
    /* an IR file planned for a level carries the traits its layouts rely on (`tune`);
     * planning it again with the same traits keeps its layouts */
    const KilnAttr *tu = kiln_fget(m->funcs[0], "tune");
    unsigned tune;
    if (tu && (tu->kind == KILN_ATTR_STR || tu->kind == KILN_ATTR_IDENT) && tu->s &&
        kiln_tune_parse(tu->s, &tune) == 0)
        t->tune = tune;
}
