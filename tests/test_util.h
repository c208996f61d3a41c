/* tests/test_util.h — helpers the unit tests share: reading a whole file and sorted
 * directory listings (tu_ = test util). static inline because every test is its own
 * program; the CLI tests have their own process helpers in tests/cli/cli_util.h. */
#ifndef KILN_TESTS_TEST_UTIL_H
#define KILN_TESTS_TEST_UTIL_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole file, NUL-terminated; *len (when non-NULL) gets its size. NULL (and
 * *len 0) if it cannot be opened or read in full. */
static inline char *tu_read_file(const char *path, size_t *len)
{
    if (len)
        *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (!s)
        return NULL;
    s[n] = 0;
    if (len)
        *len = (size_t)n;
    return s;
}

static inline int tu_cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the entries in dir ending in ext (longer than ext itself), so
 * table-driven tests run in a fixed order. -1 (and *out NULL) if dir cannot be
 * opened. Free with tu_free_list. */
static inline int tu_list_dir(const char *dir, const char *ext, char ***out)
{
    *out = NULL;
    DIR *dp = opendir(dir);
    if (!dp)
        return -1;
    int n = 0;
    char **v = NULL;
    size_t el = strlen(ext);
    for (struct dirent *e; (e = readdir(dp));) {
        size_t l = strlen(e->d_name);
        if (l > el && strcmp(e->d_name + l - el, ext) == 0) {
            v = realloc(v, (size_t)(n + 1) * sizeof *v);
            v[n++] = strdup(e->d_name);
        }
    }
    closedir(dp);
    if (n)
        qsort(v, (size_t)n, sizeof *v, tu_cmp_str);
    *out = v;
    return n;
}

static inline void tu_free_list(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

#endif
