/* tests/test_amx.c — the amx target level (issue 16): what the host can run decides
 * every expectation (`kiln targets`, ir/target.h); an AOT library built for amx
 * records it and is refused, saying why, where the CPU has no AMX. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "ir/target.h"
#include "runtime/runtime.h"
#include "test_util.h"

static bool host_amx(void)
{
    return (kiln_host_isa() & (KILN_ISA_V4 | KILN_ISA_AMX)) == (KILN_ISA_V4 | KILN_ISA_AMX);
}

/* Run a shell command, its stdout+stderr into out; the exit status. */
static int run(char *out, size_t n, const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    strncat(cmd, " 2>&1", sizeof cmd - strlen(cmd) - 1);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t len = fread(out, 1, n - 1, p);
    out[len] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_targets_lists_amx(void **state)
{
    (void)state;
    char out[16384];
    assert_int_equal(run(out, sizeof out, "'%s' targets", KILN_BIN), 0);
    assert_non_null(strstr(out, "\namx "));
    KilnTarget t;
    KilnDiag d = {0};
    assert_int_equal(kiln_target_lookup("amx", &t, &d), 0);
    const char *why = kiln_target_cannot_run(&t);
    char want[256];
    snprintf(want, sizeof want, "  amx      %s%s", why ? "compiled only here, cannot run here: " : "runs here",
             why ? why : "");
    if (!strstr(out, want))
        fail_msg("kiln targets lacks \"%s\":\n%s", want, out);
    print_message("%s\n", want);
}

/* kiln aot --target amx: the manifest names the level; kiln_aot_open loads it on an
 * AMX host (after the tile-state request) and refuses it elsewhere, naming AMX. */
static void test_aot_records_amx(void **state)
{
    (void)state;
    char dir[] = "/tmp/kiln-amx-aot-XXXXXX", out[16384];
    assert_non_null(mkdtemp(dir));
    int rc = run(out, sizeof out, "'%s' aot '%s/recipes/w8a8-int8-dynamic.lua' --shape 512,64,128 "
                 "--target amx -o '%s/lib'", KILN_BIN, KILN_SOURCE_DIR, dir);
    if (rc)
        fail_msg("kiln aot --target amx: exit %d:\n%s", rc, out);
    char path[600];
    snprintf(path, sizeof path, "%s/lib/manifest.json", dir);
    char *man = tu_read_file(path, NULL);
    assert_non_null(man);
    assert_non_null(strstr(man, "\"target\": \"amx\""));
    assert_non_null(strstr(man, "\"isa\": \"amx\""));
    free(man);
    snprintf(path, sizeof path, "%s/lib", dir);
    KilnAot *a = NULL;
    KilnDiag d = {0};
    rc = kiln_aot_open(path, &a, &d);
    if (host_amx()) {
        assert_int_equal(rc, 0);
        kiln_aot_close(a);
    } else {
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(d.msg, "built for target 'amx'"));
        assert_non_null(strstr(d.msg, "no AMX"));
        print_message("refused here: %s\n", d.msg);
    }
    run(out, sizeof out, "rm -rf '%s'", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_targets_lists_amx),
        cmocka_unit_test(test_aot_records_amx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
