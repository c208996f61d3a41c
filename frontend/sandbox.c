/* frontend/sandbox.c — the recipe sandbox's budgets: an allocator that caps the heap and
 * charges what it allocates, a hook that counts instructions and calls and watches the
 * wall clock, and the charge the guarded library functions (sandbox_lib.c) pay before
 * they work, so that no recipe outruns 5·10^7 instructions, 64 MiB or 2 s whatever it calls. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <lauxlib.h>

#include "frontend/sandbox.h"

#define INSTR_LIMIT ((int64_t)KILN_RECIPE_INSTR_LIMIT)
#define HOOK_STEP 100 /* instructions between count-hook calls: how late the clock can be read */
#define BIG_ALLOC (1u << 20) /* allocations this big look at the clock too */

#define TIME_BUDGET_NS ((int64_t)KILN_RECIPE_TIME_MS * 1000000)

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Whether the load has used up its time: 2 s of the loading thread's CPU time, which is
 * 2 s of wall time on a machine that lets it run. The thread's CPU clock is a system call
 * while the monotonic clock is cheap and never behind it, so the CPU clock is read only
 * once the monotonic deadline has passed; on a busy machine the deadline then moves on
 * by the time the thread did not get to run, and a recipe is not failed for that. */
static bool out_of_time(KSandbox *sb)
{
    int64_t now = clock_ns(CLOCK_MONOTONIC);
    if (now <= sb->deadline_ns)
        return false;
    int64_t left = TIME_BUDGET_NS - (clock_ns(CLOCK_THREAD_CPUTIME_ID) - sb->cpu_start_ns);
    if (left <= 0)
        return true;
    sb->deadline_ns = now + left;
    return false;
}

/* ------------------------------------------------------------------ budgets */

void *kiln__limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    KLimit *lim = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        lim->used -= old;
        return NULL;
    }
    /* a growing realloc holds the old block and the new one at once: count both */
    if (nsize > old && (nsize > lim->max || lim->used + nsize > lim->max)) {
        lim->hit = true;
        return NULL;
    }
    void *p = realloc(ptr, nsize);
    if (!p)
        return NULL;
    lim->used = lim->used - old + nsize;
    return p;
}

/* The recipe's allocator: the heap cap, and while the recipe runs, every byte it
 * allocates charged as work (copies the instruction count cannot see: `..` of long
 * strings, string results); once a budget is out, nothing grows any more. */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    KSandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (sb->armed && nsize > old) {
        sb->instr += (int64_t)((nsize - old) / ALLOC_BYTES_PER_INSTR);
        if (!sb->hit && sb->instr > INSTR_LIMIT)
            sb->hit = KSB_INSTR;
        if (!sb->hit && nsize - old >= BIG_ALLOC && out_of_time(sb))
            sb->hit = KSB_TIME;
        if (sb->hit)
            return NULL;
    }
    void *p = kiln__limited_alloc(&sb->mem, ptr, osize, nsize);
    if (!p && nsize > old && sb->armed) {
        /* Lua answers a failed allocation with a full collection: a recipe holding
         * nearly all its heap would make every allocation walk all of it */
        sb->instr += (int64_t)(sb->mem.used / ALLOC_BYTES_PER_INSTR);
        if (!sb->hit && (sb->instr > INSTR_LIMIT || out_of_time(sb)))
            sb->hit = sb->instr > INSTR_LIMIT ? KSB_INSTR : KSB_TIME;
    }
    if (nsize > old) {
        /* Lua retries a failed allocation once after an emergency collection: only
         * when the retry fails too is the budget spent (and the error uncatchable) */
        if (!p && sb->mem_retry == nsize && !sb->hit)
            sb->hit = KSB_MEMORY;
        sb->mem_retry = p ? 0 : nsize;
    }
    return p;
}

lua_State *kiln__sandbox_state(KSandbox *sb)
{
    sb->deadline_ns = clock_ns(CLOCK_MONOTONIC) + TIME_BUDGET_NS;
    sb->cpu_start_ns = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    return lua_newstate(sandbox_alloc, sb);
}

/* The budgets of L, or NULL in a state without them (the matcher's). */
static KSandbox *sandbox_of(lua_State *L)
{
    void *ud = NULL;
    return lua_getallocf(L, &ud) == sandbox_alloc ? ud : NULL;
}

static void budget_hook(lua_State *L, lua_Debug *ar);

/* A budget ran out: fail now and, through the hook, at every instruction from now on, so
 * that a pcall in the recipe cannot swallow it and carry on. */
static int exhausted(lua_State *L, KSandbox *sb, KBudget why, const char *in)
{
    if (!sb->hit) {
        sb->hit = why;
        snprintf(sb->hit_in, sizeof sb->hit_in, "%s", in ? in : "");
    }
    lua_sethook(L, budget_hook, LUA_MASKCOUNT | LUA_MASKLINE, 1);
    return luaL_error(L, "recipe budget exhausted");
}

/* Varargs a Lua function was called with, counted cheaply when there are few. */
static int64_t count_varargs(lua_State *L, lua_Debug *ar)
{
    int lo = 0, hi = 64;
    while (lua_getlocal(L, ar, -hi)) {
        lua_pop(L, 1);
        lo = hi;
        if (hi > (1 << 24))
            return hi;
        hi *= 2;
    }
    if (lo == 0)
        return 0; /* fewer than 64: no matter */
    while (hi - lo > 1) {
        int mid = lo + (hi - lo) / 2;
        if (lua_getlocal(L, ar, -mid)) {
            lua_pop(L, 1);
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

static void budget_hook(lua_State *L, lua_Debug *ar)
{
    KLoadCtx *c = kiln__ctx(L);
    KSandbox *sb = sandbox_of(L);
    if (!c || !sb || !sb->armed)
        return;
    if (ar->event == LUA_HOOKLINE) {
        c->last_line = ar->currentline;
        if (!sb->hit)
            return;
    } else if (ar->event == LUA_HOOKCOUNT) {
        sb->instr += HOOK_STEP;
        if (!sb->hit && out_of_time(sb))
            sb->hit = KSB_TIME;
    } else { /* a call: what it is handed counts too (math.max(table.unpack(t))) */
        lua_getinfo(L, "ru", ar);
        int64_t values = ar->ntransfer;
        if (ar->isvararg)
            values += count_varargs(L, ar);
        sb->instr += CALL_COST + values / VALUES_PER_INSTR;
    }
    if (sb->instr > INSTR_LIMIT && !sb->hit)
        sb->hit = KSB_INSTR;
    if (sb->hit)
        exhausted(L, sb, sb->hit, NULL);
}

void kiln__sandbox_arm(lua_State *L)
{
    KSandbox *sb = sandbox_of(L);
    sb->armed = true;
    lua_sethook(L, budget_hook, LUA_MASKCOUNT | LUA_MASKLINE | LUA_MASKCALL, HOOK_STEP);
}

void kiln__sandbox_disarm(lua_State *L)
{
    lua_sethook(L, NULL, 0, 0);
    sandbox_of(L)->armed = false;
}

void kiln__sandbox_charge(lua_State *L, double instr, const char *fn)
{
    KSandbox *sb = sandbox_of(L);
    if (!sb || !sb->armed)
        return;
    if (instr > (double)INSTR_LIMIT - (double)sb->instr)
        exhausted(L, sb, KSB_INSTR, fn);
    sb->instr += (int64_t)instr;
    if (out_of_time(sb))
        exhausted(L, sb, KSB_TIME, fn);
}

void kiln__sandbox_message(const KSandbox *sb, char *buf, size_t n)
{
    char in[80] = "";
    if (sb->hit_in[0])
        snprintf(in, sizeof in, "; it ran out in %s", sb->hit_in);
    switch (sb->hit) {
    case KSB_MEMORY:
        snprintf(buf, n, "recipe used more than %u MiB of memory (its memory budget)",
                 (unsigned)(KILN_RECIPE_MEM_LIMIT >> 20));
        break;
    case KSB_TIME:
        snprintf(buf, n,
                 "recipe ran for more than %d ms (its time budget, the load's CPU time; an endless "
                 "loop?)%s",
                 KILN_RECIPE_TIME_MS, in);
        break;
    default:
        snprintf(buf, n,
                 "recipe ran more than %ld Lua instructions (an endless loop?): its instruction "
                 "budget, where a call counts %d and library functions count by the size of their "
                 "work%s",
                 (long)INSTR_LIMIT, CALL_COST, in);
    }
}

bool kiln__sandbox_spent(lua_State *L)
{
    KSandbox *sb = sandbox_of(L);
    return sb && sb->hit;
}
