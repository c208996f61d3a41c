/* runtime/files.c — directories and whole files: mkdir -p and an atomic write for
 * everything that writes them (the kernel cache, `kiln aot`, checkpoints), and the one
 * way to open a file a user named (regular files only, never blocking, bounded). */
#include <errno.h>
#include <inttypes.h>
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

static const char *file_kind(mode_t m)
{
    return S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
         : S_ISDIR(m) ? "a directory" : S_ISSOCK(m) ? "a socket" : "not a plain file";
}

int kiln_rt_open_regular(const char *path, const char *what, uint64_t max, uint64_t *size,
                         KilnDiag *d)
{
    char why[160];
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC), e = 0;
    struct stat st;
    if (fd < 0) {
        e = errno;
        snprintf(why, sizeof why, "%s", strerror(e));
    } else if (fstat(fd, &st) != 0) {
        e = errno;
        snprintf(why, sizeof why, "%s", strerror(e));
    } else if (!S_ISREG(st.st_mode)) {
        e = EINVAL;
        snprintf(why, sizeof why, "not a regular file (%s): kiln reads only regular files",
                 file_kind(st.st_mode));
    } else if (max && (uint64_t)st.st_size > max) {
        e = EFBIG;
        snprintf(why, sizeof why, "larger than the limit of %" PRIu64 " bytes (it has %" PRIu64 ")",
                 max, (uint64_t)st.st_size);
    } else if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) != 0) {
        e = errno;
        snprintf(why, sizeof why, "%s", strerror(e));
    }
    if (e) {
        if (fd >= 0)
            close(fd);
        if (d)
            kiln_diag_set_at(d, KILN_EINPUT, path, 0, "cannot open %s: %s", what, why);
        errno = e;
        return -1;
    }
    if (size)
        *size = (uint64_t)st.st_size;
    return fd;
}

FILE *kiln_rt_fopen_regular(const char *path, const char *what, uint64_t max, KilnDiag *d)
{
    int fd = kiln_rt_open_regular(path, what, max, NULL, d);
    FILE *f = fd >= 0 ? fdopen(fd, "rb") : NULL;
    if (fd >= 0 && !f) {
        int e = errno;
        close(fd);
        if (d)
            kiln_diag_set_at(d, KILN_EINPUT, path, 0, "cannot open %s: %s", what, strerror(e));
        errno = e;
    }
    return f;
}

int kiln_rt_read_file(const char *path, const char *what, uint64_t max, char **out,
                      size_t *len, KilnDiag *d)
{
    *out = NULL;
    *len = 0;
    uint64_t size;
    int fd = kiln_rt_open_regular(path, what, max, &size, d);
    if (fd < 0)
        return KILN_EINPUT;
    char *buf = size < SIZE_MAX ? malloc((size_t)size + 1) : NULL;
    if (!buf) {
        close(fd);
        return kiln_diag_set(d, KILN_EINTERNAL, "%s: out of memory reading %s", path, what);
    }
    size_t n = 0;
    while (n < size) {
        ssize_t r = read(fd, buf + n, (size_t)size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            free(buf);
            return kiln_diag_set_at(d, KILN_EINPUT, path, 0, "cannot read %s: %s", what,
                                    strerror(e));
        }
        if (r == 0) /* shrank since fstat: what is there */
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}
