/*
 * Replay fuzz inputs without libFuzzer: run the target's
 * LLVMFuzzerTestOneInput() over every file of the directories (or the
 * files) named on the command line, in name order, so that the seed corpus
 * and every saved regression stay tested by the ordinary build, with its
 * compiler and its sanitizers.
 *
 *   fuzz-replay-frame tests/fuzz/corpus/frame tests/fuzz/regress/frame
 *
 * A target's failed check aborts, which fails the test. A path that does
 * not exist is an error (a misspelt directory must not pass silently);
 * files whose names start with '.' are skipped.
 *
 * With --expect-fail first, each input runs in a child process that must
 * die of a signal (a known bug that still reproduces); one that passes
 * fails the replay, so that a fix is noticed and its input moved to the
 * regressions.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

static int expect_fail;

static int run_input(const char *path);

/* A known bug: the input must still fail, in a child. */
static int
run_file(const char *path)
{
	int status;
	pid_t pid;

	if (!expect_fail) {
		return run_input(path);
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		perror("fork");
		return -1;
	}
	if (pid == 0) {
		_exit(run_input(path) == 0 ? 0 : 2);
	}
	if (waitpid(pid, &status, 0) != pid) {
		perror("waitpid");
		return -1;
	}
	if (!WIFSIGNALED(status)) {
		fprintf(stderr, "%s: expected to fail, but passed (fixed?)\n",
			path);
		return -1;
	}
	fprintf(stderr, "%s: fails as expected (signal %d)\n", path,
		WTERMSIG(status));
	return 0;
}

/* Read a whole file into a buffer of exactly its size (ASan sees past). */
static int
run_input(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;
	int r = -1;

	if (f == NULL) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) != 0 || (len = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "%s: cannot size the file\n", path);
		goto out_close;
	}
	buf = malloc(len > 0 ? (size_t)len : 1);
	if (buf == NULL || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "%s: cannot read the file\n", path);
		goto out_free;
	}
	fprintf(stderr, "replay %s (%ld bytes)\n", path, len);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	r = 0;
out_free:
	free(buf);
out_close:
	fclose(f);
	return r;
}

static int
skip_entry(const struct dirent *e)
{
	return e->d_name[0] != '.';
}

/* Every file of dir, in name order; returns how many ran, or -1. */
static int
run_dir(const char *dir)
{
	struct dirent **names;
	char path[4096];
	int n, i, count = 0, r = 0;

	n = scandir(dir, &names, skip_entry, alphasort);
	if (n < 0) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (i = 0; i < n; i++) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (r == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
			r = run_file(path);
			count++;
		}
		free(names[i]);
	}
	free(names);
	return r < 0 ? -1 : count;
}

int
main(int argc, char **argv)
{
	int i = 1, n, total = 0;

	if (argc > 1 && strcmp(argv[1], "--expect-fail") == 0) {
		expect_fail = 1;
		i++;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: %s [--expect-fail] DIR|FILE...\n",
			argv[0]);
		return 2;
	}
	for (; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		if (S_ISDIR(st.st_mode)) {
			n = run_dir(argv[i]);
		} else {
			n = run_file(argv[i]) == 0 ? 1 : -1;
		}
		if (n < 0) {
			return 1;
		}
		total += n;
	}
	printf("%d inputs replayed\n", total);
	return 0;
}
