/* runtime/cache.c — the content-addressed on-disk kernel cache: one file per key,
 * written atomically, checked on every read (docs/jit-aot.md, "Kernel cache"). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "runtime/runtime.h"

/* Entry file layout (all integers little-endian):
 *   0  char[16]  magic "KILNCACHE1", NUL padded
 *  16  u64       payload length
 *  24  u8[32]    SHA-256 of the payload
 *  56  u8[32]    SHA-256 of the key material
 *  88            payload */
#define MAGIC "KILNCACHE1"
#define HDR_MAGIC 16
#define HDR_BYTES 88
/* An entry's payload is one kernel's object or module image (kilobytes); anything
 * larger is not one of kiln's entries and is never read into memory. */
#define PAYLOAD_LIMIT ((uint64_t)256 << 20)
/* Temporary files are kiln's own by name (and by content: a header is the first thing
 * written into one), so a cache directory shared with other programs (/tmp) loses
 * none of their files: ".tmp-kiln-" and mkstemp's six characters, nothing else. */
#define TMP_PREFIX ".tmp-kiln-"
#define TMP_NAME_LEN (sizeof TMP_PREFIX - 1 + 6)

struct KilnCache {
    char *dir;
    bool readonly; /* entries are read, nothing is written */
};

/* 0: a writable directory; 1: one kiln can read but not write (a read-only cache). */
static int cache_dir_access(const char *path, KilnDiag *d)
{
    if (access(path, W_OK | X_OK) == 0)
        return 0;
    if (access(path, R_OK | X_OK) == 0)
        return 1;
    return kiln_diag_set(d, KILN_EINPUT, "cache directory %s is not readable: %s", path,
                         strerror(errno));
}

/* True when path is one of kiln's own temporaries: a regular file of this user that
 * is empty or starts with the entry magic (read without blocking or following links). */
static bool own_temp(const char *path, const struct stat *st)
{
    if (!S_ISREG(st->st_mode) || st->st_uid != geteuid())
        return false;
    if (st->st_size == 0)
        return true;
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
    char magic[sizeof MAGIC - 1];
    bool ok = fd >= 0 && read(fd, magic, sizeof magic) == (ssize_t)sizeof magic &&
              memcmp(magic, MAGIC, sizeof magic) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* A writer that died between mkstemp and rename leaves a temporary behind; one older
 * than a day cannot belong to a live writer (they take milliseconds). Only kiln's own
 * (TMP_PREFIX, own_temp) are removed, whatever else the directory holds. */
static void remove_stale_temps(const char *dir)
{
    DIR *dd = opendir(dir);
    if (!dd)
        return;
    time_t now = time(NULL);
    struct dirent *e;
    char path[4096];
    struct stat st;
    while ((e = readdir(dd))) {
        if (strncmp(e->d_name, TMP_PREFIX, sizeof TMP_PREFIX - 1) != 0 ||
            strlen(e->d_name) != TMP_NAME_LEN)
            continue;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path)
            continue;
        if (lstat(path, &st) == 0 && now - st.st_mtime > 24 * 3600 && own_temp(path, &st))
            unlink(path);
    }
    closedir(dd);
}

int kiln_cache_open(const char *dir, KilnCache **out, KilnDiag *d)
{
    *out = NULL;
    char *path = NULL;
    if (dir && *dir) {
        path = strdup(dir);
    } else if ((dir = getenv("KILN_CACHE_DIR")) && *dir) {
        path = strdup(dir);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return kiln_diag_set(d, KILN_EINPUT,
                                 "no kernel cache directory: set KILN_CACHE_DIR or HOME");
        size_t n = strlen(home) + sizeof "/.cache/kiln";
        path = malloc(n);
        if (path)
            snprintf(path, n, "%s/.cache/kiln", home);
    }
    if (!path)
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        path[--n] = '\0';
    int rc = kiln_rt_mkdir_p(path, "cache directory", d), ro = 0;
    if (!rc && (ro = cache_dir_access(path, d)) != 0 && ro != 1)
        rc = ro;
    if (rc) {
        free(path);
        return rc;
    }
    KilnCache *c = malloc(sizeof *c);
    if (!c) {
        free(path);
        return kiln_diag_set(d, KILN_EINTERNAL, "out of memory");
    }
    c->dir = path;
    c->readonly = ro == 1;
    if (!c->readonly)
        remove_stale_temps(path);
    *out = c;
    return 0;
}

const char *kiln_cache_dir(const KilnCache *c) { return c->dir; }
bool kiln_cache_readonly(const KilnCache *c) { return c->readonly; }

void kiln_cache_close(KilnCache *c)
{
    if (!c)
        return;
    free(c->dir);
    free(c);
}

int kiln_cache_entry_path(const KilnCache *c, const char *key_material, size_t len, char *buf,
                          size_t n)
{
    uint8_t key[32];
    char hex[65];
    kiln_sha256(key_material, len, key);
    kiln_sha256_hex(key, hex);
    int w = snprintf(buf, n, "%s/%s.kc", c->dir, hex);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* Reads (write false) or writes all n bytes, through short transfers and EINTR. */
static int transfer_all(int fd, void *buf, size_t n, bool write_)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = write_ ? write(fd, p, n) : read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n) { return transfer_all(fd, buf, n, false); }
static int write_all(int fd, const void *buf, size_t n) { return transfer_all(fd, (void *)buf, n, true); }

/* Removes a damaged entry, but only if the name still refers to the file we read:
 * another process may have renamed a fresh entry over it meanwhile. */
static void drop_entry(const char *path, int fd, const char *why)
{
    fprintf(stderr, "kiln: cache entry %s is corrupted (%s); rebuilding\n", path, why);
    struct stat a, b;
    if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
        unlink(path);
}

int kiln_cache_get(KilnCache *c, const char *key_material, size_t len, void **blob,
                   size_t *blob_len, KilnDiag *d)
{
    *blob = NULL;
    *blob_len = 0;
    if (!c || (!key_material && len))
        return kiln_diag_set(d, KILN_EINPUT, "kiln_cache_get: no cache or no key");
    char path[4096];
    if (kiln_cache_entry_path(c, key_material, len, path, sizeof path) != 0)
        return kiln_diag_set(d, KILN_EINPUT, "cache directory path too long: %s", c->dir);
    /* no blocking open: a FIFO at an entry's name is refused below, not waited on */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT)
            fprintf(stderr, "kiln: warning: cannot read cache entry %s: %s\n", path,
                    strerror(errno));
        return 1;
    }
    uint8_t hdr[HDR_BYTES], key[32], sum[32];
    struct stat st;
    const char *why = NULL;
    uint8_t *payload = NULL;
    uint64_t plen = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        why = "not a regular file";
    } else if (st.st_size < HDR_BYTES || read_all(fd, hdr, HDR_BYTES) != 0) {
        why = "truncated header";
    } else if (memcmp(hdr, MAGIC, sizeof MAGIC - 1) != 0) {
        why = "bad magic";
    } else {
        plen = get_u64(hdr + 16);
        kiln_sha256(key_material, len, key);
        if ((uint64_t)st.st_size - HDR_BYTES != plen) {
            why = "length mismatch";
        } else if (plen > PAYLOAD_LIMIT) {
            why = "larger than the 256 MiB limit of an entry";
        } else if (memcmp(hdr + 56, key, 32) != 0) {
            why = "key mismatch";
        } else if (!(payload = malloc(plen ? plen : 1))) {
            close(fd);
            fprintf(stderr, "kiln: warning: out of memory reading cache entry %s\n", path);
            return 1;
        } else if (read_all(fd, payload, plen) != 0) {
            why = "truncated payload";
        } else {
            kiln_sha256(payload, plen, sum);
            if (memcmp(hdr + 24, sum, 32) != 0)
                why = "checksum mismatch";
        }
    }
    if (why) {
        drop_entry(path, fd, why);
        close(fd);
        free(payload);
        return 1;
    }
    close(fd);
    *blob = payload;
    *blob_len = plen;
    return 0;
}

int kiln_cache_put(KilnCache *c, const char *key_material, size_t len, const void *blob,
                   size_t blob_len, KilnDiag *d)
{
    if (!c || (!key_material && len) || (!blob && blob_len))
        return kiln_diag_set(d, KILN_EINPUT, "kiln_cache_put: no cache, key or blob");
    if (c->readonly)
        return 0;
    char path[4096], tmp[4096];
    if (kiln_cache_entry_path(c, key_material, len, path, sizeof path) != 0 ||
        snprintf(tmp, sizeof tmp, "%s/" TMP_PREFIX "XXXXXX", c->dir) >= (int)sizeof tmp)
        return kiln_diag_set(d, KILN_EINPUT, "cache directory path too long: %s", c->dir);
    uint8_t hdr[HDR_BYTES] = {0};
    memcpy(hdr, MAGIC, sizeof MAGIC - 1);
    put_u64(hdr + 16, blob_len);
    kiln_sha256(blob, blob_len, hdr + 24);
    kiln_sha256(key_material, len, hdr + 56);

    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        /* a directory that turned out unwritable is read-only from now on: one warning */
        if (e == EACCES || e == EPERM || e == EROFS)
            c->readonly = true;
        return kiln_diag_set(d, KILN_EINPUT, "cannot create a temporary file in %s: %s", c->dir,
                             strerror(e));
    }
    const char *step = NULL;
    if (fchmod(fd, 0644) != 0)
        step = "chmod";
    else if (write_all(fd, hdr, HDR_BYTES) != 0 || write_all(fd, blob, blob_len) != 0)
        step = "write";
    else if (fsync(fd) != 0)
        step = "fsync";
    int e = errno;
    if (close(fd) != 0 && !step) {
        step = "close";
        e = errno;
    }
    if (!step && rename(tmp, path) != 0) {
        step = "rename";
        e = errno;
    }
    if (step) {
        unlink(tmp);
        return kiln_diag_set(d, KILN_EINPUT, "cannot write cache entry %s (%s): %s", path, step,
                             strerror(e));
    }
    /* Make the rename itself durable; losing it would only cost a rebuild. */
    int dfd = open(c->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}
