/* The floor of a FUSE file system in C, for scripts/bench/fs.py --floor: a lookup is the
 * backing file's lstat and the reply, nothing else (libfuse's low-level API, one thread, 300 s
 * timeouts, no listing, no reads). What mergerfs or any C daemon could at best do for a
 * first-pass stat, next to nullfs.py --lookup-store (the same on pyfuse3 and trio).
 *
 *     cc -O2 -o cfloor cfloor.c $(pkg-config --cflags --libs fuse3)
 *     ./cfloor DATA MOUNTPOINT        (foreground; fusermount3 -u MOUNTPOINT ends it)
 */
#define FUSE_USE_VERSION 34
#include <errno.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char **paths; /* inode number -> backing path; numbers are never reused */
static size_t used = 2, cap = 1 << 16;

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    char buf[4096];
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    snprintf(buf, sizeof buf, "%s/%s", paths[parent], name);
    if (lstat(buf, &e.attr) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    if (used == cap) {
        cap *= 2;
        paths = realloc(paths, cap * sizeof *paths);
        if (!paths) abort();
    }
    paths[used] = strdup(buf);
    e.ino = e.attr.st_ino = used++;
    e.attr_timeout = e.entry_timeout = 300;
    fuse_reply_entry(req, &e);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct stat st;
    (void)fi;
    if (lstat(paths[ino], &st) < 0) {
        fuse_reply_err(req, errno);
        return;
    }
    st.st_ino = ino;
    fuse_reply_attr(req, &st, 300);
}

static const struct fuse_lowlevel_ops ops = {.lookup = ll_lookup, .getattr = ll_getattr};

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DATA MOUNTPOINT\n", argv[0]);
        return 2;
    }
    paths = calloc(cap, sizeof *paths);
    paths[FUSE_ROOT_ID] = strdup(argv[1]);
    char *fargs[] = {argv[0], "-o", "fsname=cfloor", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, fargs);
    struct fuse_session *se = fuse_session_new(&args, &ops, sizeof ops, NULL);
    if (!se || fuse_session_mount(se, argv[2]) != 0) return 1;
    int rc = fuse_session_loop(se);
    fuse_session_unmount(se);
    fuse_session_destroy(se);
    return rc ? 1 : 0;
}
