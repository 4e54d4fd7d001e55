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
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Read a whole file into a buffer of exactly its size (ASan sees past). */
static int
run_file(const char *path)
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
	int i, n, total = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
		return 2;
	}
	for (i = 1; i < argc; i++) {
		struct stat st;

		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		n = S_ISDIR(st.st_mode) ? run_dir(argv[i])
					: run_file(argv[i]) == 0;
		if (n < 0) {
			return 1;
		}
		total += n;
	}
	printf("%d inputs replayed\n", total);
	return 0;
}
