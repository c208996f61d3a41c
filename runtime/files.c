/* runtime/files.c — directories and whole files for everything that writes them (the
 * kernel cache, `kiln aot`, checkpoints): mkdir -p and an atomic write. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/runtime.h"

int kiln_rt_mkdir_p(const char *path, const char *what, KilnDiag *d)
{
    size_t n = strlen(path);
    char *buf = malloc(n + 1);
    if (!buf)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char c = buf[i];
        buf[i] = '\0';
        /* an existing directory may sit on a read-only file system (EROFS) */
        struct stat st;
        int e = mkdir(buf, 0755) == 0 ? 0 : errno;
        if (e && e != EEXIST && (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))) {
            kiln_diag_set(d, KILN_EINPUT, "cannot create %s %s: %s", what, buf, strerror(e));
            free(buf);
            return KILN_EINPUT;
        }
        buf[i] = c;
    }
    free(buf);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return kiln_diag_set(d, KILN_EINPUT, "%s %s is not a directory", what, path);
    return 0;
}

int kiln_rt_write_file(const char *path, const void *data, size_t len, KilnDiag *d)
{
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd >= 0) /* mkstemp makes 0600; what kiln writes is for others to read too */
        (void)fchmod(fd, 0644);
    FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
    int rc = 0;
    if (!f) {
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: cannot create: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd), unlink(tmp);
        free(tmp);
        return rc;
    }
    bool ok = fwrite(data, 1, len, f) == len;
    ok = fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        rc = kiln_diag_set(d, KILN_EINPUT, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(tmp);
    return rc;
}
