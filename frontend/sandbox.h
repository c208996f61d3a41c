/* frontend/sandbox.h — the recipe sandbox: the three budgets (instructions, memory, wall
 * time) with the allocator and hook that enforce them (sandbox.c), and the Lua libraries a
 * recipe gets, guarded so that their work is charged by its size (sandbox_lib.c). For
 * load.c. */
#ifndef KILN_FRONTEND_SANDBOX_H
#define KILN_FRONTEND_SANDBOX_H

#include <stdint.h>

#include "frontend/internal.h"

/* The fuzzer builds with smaller budgets, so that a runaway input costs milliseconds. */
#ifndef KILN_RECIPE_INSTR_LIMIT
#define KILN_RECIPE_INSTR_LIMIT 50000000L /* Lua instructions, calls and library work */
#endif
#ifndef KILN_RECIPE_MEM_LIMIT
#define KILN_RECIPE_MEM_LIMIT (64u << 20) /* bytes of Lua heap */
#endif
#ifndef KILN_RECIPE_TIME_MS
#define KILN_RECIPE_TIME_MS 2000 /* the loading thread's CPU time (sandbox.c, out_of_time) */
#endif

/* What work costs, in instructions (one instruction is ~10 ns of VM time). A call can
 * cost far more than one instruction in C (a pcall, or a stack overflow's error), and
 * recursion that keeps overflowing the stack under pcall would otherwise run for seconds
 * within budget. */
#define CALL_COST 100
#define VALUES_PER_INSTR 1       /* values a call is handed, or a function pushes or moves */
#define BYTES_PER_INSTR 16       /* bytes a library function reads or writes in C */
#define ALLOC_BYTES_PER_INSTR 64 /* bytes the state allocates (`..` of long strings, copies) */
#define STEPS_PER_INSTR 4        /* worst-case steps of Lua's pattern matcher */
#define ITEM_COST 2              /* a table element read and written (insert, sort, concat) */

typedef enum { KSB_NONE, KSB_INSTR, KSB_MEMORY, KSB_TIME } KBudget;

/* One recipe load's budgets; the allocator's ud. */
typedef struct KSandbox {
    KLimit mem;          /* Lua heap in use and its cap */
    int64_t instr;       /* instructions charged so far: VM instructions, calls, library work */
    int64_t deadline_ns; /* CLOCK_MONOTONIC time the time budget may be up, no sooner */
    int64_t cpu_start_ns; /* CLOCK_THREAD_CPUTIME_ID when the load began */
    size_t mem_retry;    /* size of an allocation that just failed, else 0 */
    bool armed;          /* the recipe is running: charges count, the hook is set */
    KBudget hit;         /* the first budget that ran out; every later instruction fails */
    char hit_in[48];     /* the library function that ran it out, or "" */
} KSandbox;

/* sandbox.c */
/* A Lua state whose allocator keeps sb's budgets; the wall clock starts now. */
lua_State *kiln__sandbox_state(KSandbox *sb);
/* lua_newstate's allocator for states with a heap cap only (ud a KLimit: the matcher's). */
void *kiln__limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize);
/* Charging on (the recipe runs: the hook is set) and off (it returned). */
void kiln__sandbox_arm(lua_State *L);
void kiln__sandbox_disarm(lua_State *L);
/* Charges `instr` instructions of work that library function `fn` is about to do;
 * raises the budget error, before the work, when the budget cannot pay for it. A no-op
 * in states without budgets. */
void kiln__sandbox_charge(lua_State *L, double instr, const char *fn);
/* Whether a budget of L has run out (false in states without budgets). */
bool kiln__sandbox_spent(lua_State *L);
/* The message for sb->hit: "recipe ran more than ... Lua instructions (an endless loop?)...". */
void kiln__sandbox_message(const KSandbox *sb, char *buf, size_t n);

/* sandbox_lib.c */
/* Opens base, string, table and math in L with the sandbox's guards (a lua_CFunction:
 * call it protected). */
int kiln__sandbox_open(lua_State *L);
/* After kiln__dsl_open: its constructors charged by the size of their tables. */
void kiln__sandbox_guard_dsl(lua_State *L);
/* After the DSL set the globals' metatable: reading os, io, ... says why it is missing. */
void kiln__sandbox_explain_globals(lua_State *L);
/* Guards the string library table at the top of L's stack; returns the guarded
 * string.find the DSL and the matcher call on rule patterns and layer names. */
lua_CFunction kiln__guard_string_lib(lua_State *L);

#endif
