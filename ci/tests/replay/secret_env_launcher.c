/*
 * The replay's stand-in for the engine putting secret variables into an exec's environment.
 *
 * The engine reads each secret's plaintext and appends `NAME=<bytes>` to the process
 * environment as they are (dagger/dagger v0.21.8 core/container_exec.go,
 * Container.secretEnvValues; the executor starts the argv with that env, no shell). So a
 * value ending in a newline keeps it, and an image without /bin/sh runs fine.
 *
 * This launcher is linked statically and bind-mounted under /dev (a tmpfs the container
 * gets at run time, so nothing of it is committed to a layer); it sets every file of
 * ENV_DIR as a variable of that name with the file's exact bytes, then execs the argv.
 * When the argv cannot be executed it prints MARKER and exits 125: the replay reports
 * that as the engine does, a process that could not start, not as an exit code.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ENV_DIR "/dev/.mlship-replay/env"
#define MARKER "mlship-replay-launcher: cannot start"

static char *slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return NULL;
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (len == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR) continue;
            close(fd);
            free(buf);
            return NULL;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    close(fd);
    buf[len] = '\0';
    return buf;
}

int main(int argc, char **argv) {
    DIR *dir = opendir(ENV_DIR);
    if (dir != NULL) {
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            if (entry->d_name[0] == '.') continue;
            char path[4096];
            snprintf(path, sizeof path, "%s/%s", ENV_DIR, entry->d_name);
            char *value = slurp(path);
            if (value == NULL || setenv(entry->d_name, value, 1) != 0) {
                fprintf(stderr, "%s: secret variable %s: %s\n", MARKER, entry->d_name, strerror(errno));
                return 125;
            }
            free(value);
        }
        closedir(dir);
    }
    if (argc < 2) {
        fprintf(stderr, "%s: no command\n", MARKER);
        return 125;
    }
    execvp(argv[1], argv + 1);
    fprintf(stderr, "%s: exec %s: %s\n", MARKER, argv[1], strerror(errno));
    return 125;
}
