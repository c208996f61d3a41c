/* passes/fuse_qgemm.c — fuse a layer's dequantize + matmul (+ bias_add, silu/gelu,
 * output cast) into one qgemm, the kernel IR codegen consumes; an unquantized
 * layer's f32 matmul becomes a qgemm with the f32 weight. Patterns it does not
 * recognise are left as they are. */
#include <string.h>

#include "passes/passes.h"

/* What the matmul's activation operand turned out to be. */
typedef struct {
    int x;             /* the f32 activation the qgemm reads */
    bool has_act;      /* quantized activations: act spec */
    KilnQuantSpec act;
    KilnDType act_dtype; /* weight-only: the precision activations are rounded to */
    int feeders[3];    /* insts (indices) between x and the matmul, to drop if unused */
    int nfeeders;
} ActMatch;

static KilnInst *def_of(KilnFunc *f, int v)
{
    KilnInst *in = kiln_def(f, v);
    return in && !in->dead ? in : NULL;
}

static int index_of(const KilnFunc *f, const KilnInst *in) { return (int)(in - f->insts); }

static bool is_f32(const KilnFunc *f, int v)
{
    const KilnType *t = &f->values[v].type;
    return t->dt == KILN_F32 && t->q.fmt == KILN_QF_NONE;
}

/* The weight side: dequantize(Q), Q = quantize(weight|const) or prepack; or, for a
 * layer the recipe leaves unquantized, the f32 weight|const itself (or its prepack),
 * which the qgemm takes as is (deqW = w). Returns Q (or the f32 weight) or -1;
 * *deq gets the dequantize's index, -1 when there is none. */
static int match_weight(KilnFunc *f, int b, int *deq)
{
    KilnInst *dq = def_of(f, b);
    *deq = -1;
    if (dq && (dq->op == KILN_OP_WEIGHT || dq->op == KILN_OP_CONST || dq->op == KILN_OP_PREPACK) &&
        is_f32(f, b) && f->values[b].type.rank == 2)
        return b;
    if (!dq || dq->op != KILN_OP_DEQUANTIZE || dq->nops != 1)
        return -1;
    int q = dq->ops[0];
    KilnInst *qi = def_of(f, q);
    const KilnType *qt = &f->values[q].type;
    if (!qi || qt->q.fmt == KILN_QF_NONE || qt->rank != 2 || qt->q.dynamic)
        return -1;
    if (qi->op == KILN_OP_QUANTIZE) {
        KilnInst *src = def_of(f, qi->ops[0]);
        if (!src || (src->op != KILN_OP_WEIGHT && src->op != KILN_OP_CONST))
            return -1;
    } else if (qi->op != KILN_OP_PREPACK) {
        return -1;
    }
    *deq = index_of(f, dq);
    return q;
}

/* The activation side; false when the pattern is not one we know. */
static bool match_act(KilnFunc *f, int a, ActMatch *am)
{
    memset(am, 0, sizeof *am);
    KilnInst *ai = def_of(f, a);
    if (!ai || (ai->op != KILN_OP_DEQUANTIZE && ai->op != KILN_OP_CAST)) {
        /* plain f32 activations (a parameter or any other f32 producer) */
        if (!is_f32(f, a) || (ai && (ai->op == KILN_OP_WEIGHT || ai->op == KILN_OP_CONST)))
            return false;
        am->x = a;
        am->act_dtype = KILN_F32;
        return true;
    }
    if (!is_f32(f, a))
        return false;
    int inner = ai->ops[0];
    KilnInst *ii = def_of(f, inner);
    if (!ii || ii->nops != 1 || !is_f32(f, ii->ops[0]))
        return false;
    const KilnType *it = &f->values[inner].type;
    if (ai->op == KILN_OP_DEQUANTIZE) {
        /* dequantize(dynquant(x)) or dequantize(quantize(x)) with a static spec */
        bool dyn = ii->op == KILN_OP_DYNQUANT;
        bool stat = ii->op == KILN_OP_QUANTIZE && !it->q.dynamic;
        if ((!dyn && !stat) || it->q.fmt == KILN_QF_NONE)
            return false;
        KilnInst *src = def_of(f, ii->ops[0]);
        if (src && (src->op == KILN_OP_WEIGHT || src->op == KILN_OP_CONST))
            return false; /* both operands weights: not a layer we know */
        am->has_act = true;
        am->act = it->q;
    } else {
        /* cast(cast(x : f16|bf16) : f32): weight-only with 16-bit activations */
        if (ii->op != KILN_OP_CAST || (it->dt != KILN_F16 && it->dt != KILN_BF16) ||
            it->q.fmt != KILN_QF_NONE)
            return false;
        am->act_dtype = it->dt;
    }
    am->x = ii->ops[0];
    am->feeders[am->nfeeders++] = index_of(f, ai);
    am->feeders[am->nfeeders++] = index_of(f, ii);
    return true;
}

/* The one live instruction using v, or NULL when v has zero or several uses. */
static KilnInst *single_user(KilnFunc *f, int v)
{
    KilnInst *user = NULL;
    for (int i = 0; i < f->ninsts; i++) {
        KilnInst *in = &f->insts[i];
        if (in->dead)
            continue;
        for (int j = 0; j < in->nops; j++)
            if (in->ops[j] == v) {
                if (user)
                    return NULL;
                user = in;
            }
    }
    return user;
}

/* int activations pair with int weights and fp8 with fp8 (docs/ir.md, qgemm);
 * anything else stays a matmul and the verifier/interpreter deal with it. */
static bool formats_pair(const ActMatch *am, const KilnType *wt)
{
    if (!am->has_act)
        return true;
    if (wt->q.fmt == KILN_QF_NONE)
        return false; /* quantized activations with an f32 weight: no such kernel */
    bool act_fp8 = am->act.fmt == KILN_QF_FP8_E4M3 || am->act.fmt == KILN_QF_FP8_E5M2;
    bool w_fp8 = wt->q.fmt == KILN_QF_FP8_E4M3 || wt->q.fmt == KILN_QF_FP8_E5M2;
    if (act_fp8)
        return w_fp8;
    return am->act.fmt == KILN_QF_INT8 && !w_fp8;
}

static bool same_cols(const KilnAttr *a, const KilnAttr *b)
{
    return a && b && a->kind == KILN_ATTR_INTS && b->kind == KILN_ATTR_INTS &&
           a->nints == b->nints && a->nints > 0 &&
           !memcmp(a->ints, b->ints, sizeof(int64_t) * (size_t)a->nints);
}

/* The LLM.int8() split lowering writes for a rule with outliers (docs/ir.md):
 *   %xi = zero_cols %x {idx}   ... int8 path on %xi ...   %y = matmul(%xd, %wd)
 *   %xo = gather_cols %x {idx}   %yo = matmul %xo, %wo   %ys = add %y, %yo
 * The qgemm then reads %x itself, takes %wo as its last operand and idx as `outliers`. */
typedef struct {
    int x, wo;     /* the qgemm's activations and outlier weight */
    const int64_t *idx; /* arena-owned (the attribute itself moves when insts grow) */
    int64_t n;
    int add;       /* index of the add (continues the epilogue chain) */
    int dead[3];   /* side matmul, then gather_cols of x and zero_cols when unused */
} SideMatch;

static bool match_side(KilnFunc *f, const ActMatch *am, KilnInst *u, int cur, SideMatch *sm)
{
    KilnInst *zi = def_of(f, am->x);
    if (!am->has_act || am->act.fmt != KILN_QF_INT8 || !zi || zi->op != KILN_OP_ZERO_COLS ||
        !u || u->op != KILN_OP_ADD || u->nops != 2 || (u->ops[0] == cur) == (u->ops[1] == cur))
        return false;
    int o = u->ops[0] == cur ? u->ops[1] : u->ops[0];
    KilnInst *om = def_of(f, o);
    if (!om || om->op != KILN_OP_MATMUL || om->nops != 2 || single_user(f, o) != u)
        return false;
    KilnInst *xo = def_of(f, om->ops[0]);
    const KilnAttr *idx = kiln_get(zi, "idx");
    if (!xo || xo->op != KILN_OP_GATHER_COLS || xo->ops[0] != zi->ops[0] ||
        !same_cols(idx, kiln_get(xo, "idx")) || !is_f32(f, om->ops[1]) ||
        !is_f32(f, zi->ops[0]))
        return false;
    *sm = (SideMatch){.x = zi->ops[0], .wo = om->ops[1], .idx = idx->ints, .n = idx->nints,
                      .add = index_of(f, u),
                      .dead = {index_of(f, om), index_of(f, xo), index_of(f, zi)}};
    return true;
}

/* Try to fuse the matmul at index mi; true when it was replaced. */
static bool fuse_one(KilnFunc *f, int mi)
{
    KilnInst *mm = &f->insts[mi];
    int a = mm->ops[0], b = mm->ops[1], wdeq;
    int q = match_weight(f, b, &wdeq);
    ActMatch am;
    if (q < 0 || !match_act(f, a, &am) || !formats_pair(&am, &f->values[q].type))
        return false;

    /* Absorb the epilogue chain: bias_add, then silu|gelu, then a cast to f16|bf16,
     * each only when it is the sole user (otherwise the f32 value is needed). */
    int chain[5] = {mi}, nchain = 1, bias = -1;
    const char *epilogue = NULL;
    KilnDType out_dt = KILN_F32;
    int cur = mm->result;
    KilnInst *u = single_user(f, cur);
    SideMatch side = {.wo = -1};
    if (match_side(f, &am, u, cur, &side)) {
        chain[nchain++] = side.add;
        cur = u->result;
        u = single_user(f, cur);
    }
    if (u && u->op == KILN_OP_BIAS_ADD && u->ops[0] == cur && u->ops[1] != cur) {
        const KilnType *bt = &f->values[u->ops[1]].type;
        if (bt->rank == 1 && bt->dt == KILN_F32 && bt->q.fmt == KILN_QF_NONE) {
            bias = u->ops[1];
            chain[nchain++] = index_of(f, u);
            cur = u->result;
            u = single_user(f, cur);
        }
    }
    if (u && (u->op == KILN_OP_SILU || u->op == KILN_OP_GELU)) {
        epilogue = u->op == KILN_OP_SILU ? "silu" : "gelu";
        chain[nchain++] = index_of(f, u);
        cur = u->result;
        u = single_user(f, cur);
    }
    if (u && u->op == KILN_OP_CAST) {
        const KilnType *ct = &f->values[u->result].type;
        if ((ct->dt == KILN_F16 || ct->dt == KILN_BF16) && ct->q.fmt == KILN_QF_NONE) {
            out_dt = ct->dt;
            chain[nchain++] = index_of(f, u);
            cur = u->result;
        }
    }

    /* The qgemm takes the place (and the name) of the last absorbed value, so the
     * printed IR reads as the same layer with fewer steps. */
    int last = chain[nchain - 1];
    KilnType rt = f->values[cur].type;
    rt.dt = out_dt;
    const char *name = f->values[cur].name;
    f->values[cur].name = kiln_pass_fresh_name(f, name ? name : "y");
    int ops[4] = {side.wo >= 0 ? side.x : am.x, q}, nops = 2;
    if (bias >= 0)
        ops[nops++] = bias;
    if (side.wo >= 0)
        ops[nops++] = side.wo;
    int y = kiln_insert(f, last, KILN_OP_QGEMM, ops, nops, rt,
                        name ? name : kiln_pass_fresh_name(f, "y"));
    /* kiln_insert shifted every instruction from `last` on by one */
    for (int i = 0; i < nchain; i++)
        chain[i] += chain[i] >= last;
    for (int i = 0; i < am.nfeeders; i++)
        am.feeders[i] += am.feeders[i] >= last;
    if (wdeq >= 0)
        wdeq += wdeq >= last;
    for (int i = 0; side.wo >= 0 && i < 3; i++)
        side.dead[i] += side.dead[i] >= last;

    KilnInst *qg = &f->insts[last];
    if (am.has_act)
        kiln_set_spec(f, qg, "act", &am.act);
    else
        kiln_set_ident(f, qg, "act_dtype", kiln_dtype_name(am.act_dtype));
    if (epilogue)
        kiln_set_ident(f, qg, "epilogue", epilogue);
    if (side.wo >= 0)
        kiln_set_ints(f, qg, "outliers", side.idx, side.n);

    kiln_replace_uses(f, cur, y);
    for (int i = 0; i < nchain; i++)
        f->insts[chain[i]].dead = true;
    if (side.wo >= 0)
        f->insts[side.dead[0]].dead = true; /* the side matmul: its one user was the add */
    /* The dequantizes (and the activation casts/quantizes, the outlier split's column
     * ops) feeding only the matmul are now unused; drop them here, innermost last, so a
     * fused layer reads clean without waiting for dce. */
    int feed[6] = {wdeq}, nfeed = wdeq >= 0 ? 1 : 0;
    for (int i = 0; i < am.nfeeders; i++)
        feed[nfeed++] = am.feeders[i];
    for (int i = 1; side.wo >= 0 && i < 3; i++)
        feed[nfeed++] = side.dead[i];
    for (int i = 0; i < nfeed; i++) {
        KilnInst *fi = &f->insts[feed[i]];
        if (!fi->dead && kiln_count_uses(f, fi->result) == 0)
            fi->dead = true;
    }
    return true;
}

static void fuse_func(KilnFunc *f)
{
    for (int i = 0; i < f->ninsts; i++) {
        KilnInst *in = &f->insts[i];
        if (in->dead || in->op != KILN_OP_MATMUL || in->nops != 2)
            continue;
        /* a fused matmul is now dead at i or i+1, and the qgemm is not a matmul,
         * so the scan simply goes on */
        fuse_one(f, i);
    }
    kiln_func_compact(f);
}

int kiln_pass_fuse_qgemm(KilnModule *m, const KilnTarget *t, KilnDiag *d)
{
    (void)t;
    (void)d;
    for (int i = 0; i < m->nfuncs; i++)
        fuse_func(m->funcs[i]);
    return KILN_OK;
}
