/*
 * cqwire-rtt: the round-trip demo. A parent and a forked child bounce a
 * message over a socket pair; the same is done with raw blocking
 * write()/read() (header, then payload: what Python's framing costs at the
 * system-call level), with cqwire's synchronous API frame-exact, and with
 * CQW_EXCLUSIVE. Transports are interleaved round by round and the
 * medians of the rounds are shown, so the ratios come from one run.
 * --pipe does the same over two pipe()s, as billiard's pool talks to its
 * workers (no spinning there: pipes have no MSG_DONTWAIT).
 *
 * Usage: cqwire-rtt [--size BYTES] [--iters N] [--rounds R] [--pipe]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cqwire.h>

enum { T_RAW, T_CQW, T_CQW_EXCL, T_RAW_SPIN, T_CQW_SPIN, T_COUNT };
static const char *const names[T_COUNT] = {
	"raw write/read", "cqwire",	      "cqwire exclusive",
	"raw spin",	  "cqwire spin 50us",
};

static size_t size = 64;
static long iters = 20000;
static int rounds = 5;
static int use_pipe;

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int spin; /* raw spin: non-blocking reads until data comes */

static int
read_full(int fd, void *buf, size_t n)
{
	char *p = buf;
	ssize_t r;

	while (n > 0) {
		r = spin ? recv(fd, p, n, MSG_DONTWAIT) : read(fd, p, n);
		if (r <= 0) {
			if (r < 0 && (errno == EINTR || errno == EAGAIN)) {
				continue;
			}
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

static int
write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;
	ssize_t r;

	while (n > 0) {
		r = write(fd, p, n);
		if (r < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -1;
		}
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* One raw frame: header + payload in one write, two reads back. */
static int
raw_send(int fd, char *frame)
{
	return write_full(fd, frame, 4 + size);
}

static int
raw_recv(int fd, char *frame)
{
	if (read_full(fd, frame, 4) != 0) {
		return -1;
	}
	return read_full(fd, frame + 4, size);
}

/* rx and tx: one socket twice, or the two pipes' ends. */
static int
open_conns(int t, int rx, int tx, cqw_conn **crx, cqw_conn **ctx)
{
	unsigned excl = t == T_CQW_EXCL ? CQW_EXCLUSIVE : 0;

	if (t == T_RAW || t == T_RAW_SPIN) {
		return 0;
	}
	if (rx == tx) {
		if (cqw_conn_from_fd(crx, rx, CQW_DUPLEX | excl) < 0) {
			return -1;
		}
		*ctx = *crx;
		return 0;
	}
	if (cqw_conn_from_fd(crx, rx, CQW_READABLE | excl) < 0 ||
	    cqw_conn_from_fd(ctx, tx, CQW_WRITABLE | excl) < 0) {
		return -1;
	}
	return 0;
}

static void
close_conns(cqw_conn *crx, cqw_conn *ctx)
{
	if (ctx != crx) {
		cqw_conn_free(ctx);
	}
	cqw_conn_free(crx);
}

static void
serve(int t, int rx, int tx)
{
	char *buf = malloc(size + 4);
	cqw_conn *crx = NULL, *ctx = NULL;
	long i;

	if (buf == NULL || open_conns(t, rx, tx, &crx, &ctx) < 0) {
		_exit(1);
	}
	for (i = 0; i < iters; i++) {
		if (crx == NULL) {
			if (raw_recv(rx, buf) || raw_send(tx, buf)) {
				_exit(1);
			}
		} else if (cqw_recv_bytes_into(crx, buf, size, 0, NULL) < 0 ||
			   cqw_send_bytes(ctx, buf, size) < 0) {
			_exit(1);
		}
	}
	_exit(0);
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* One round of one transport: per-iteration RTTs into lat[]. */
static int
run(int t, uint64_t *lat)
{
	char *buf = calloc(1, size + 4);
	cqw_conn *crx = NULL, *ctx = NULL;
	int fds[4], rx, tx, status;
	pid_t pid;
	long i;

	if (buf == NULL) {
		return -1;
	}
	/* fds: [0] and [1] the parent's rx and tx, [2] and [3] the child's. */
	if (use_pipe) {
		int up[2], down[2];

		if (pipe(up) != 0 || pipe(down) != 0) {
			return -1;
		}
		fds[0] = up[0];
		fds[1] = down[1];
		fds[2] = down[0];
		fds[3] = up[1];
	} else {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
			return -1;
		}
		fds[0] = fds[1] = sv[0];
		fds[2] = fds[3] = sv[1];
	}
	pid = fork();
	if (pid == 0) {
		close(fds[0]);
		if (fds[1] != fds[0]) {
			close(fds[1]);
		}
		serve(t, fds[2], fds[3]);
	}
	close(fds[2]);
	if (fds[3] != fds[2]) {
		close(fds[3]);
	}
	rx = fds[0];
	tx = fds[1];
	buf[0] = (char)(size >> 24);
	buf[1] = (char)(size >> 16);
	buf[2] = (char)(size >> 8);
	buf[3] = (char)size;
	if (open_conns(t, rx, tx, &crx, &ctx) < 0) {
		return -1;
	}
	for (i = 0; i < iters; i++) {
		uint64_t t0 = now_ns();

		if (crx == NULL) {
			if (raw_send(tx, buf) || raw_recv(rx, buf)) {
				return -1;
			}
		} else if (cqw_send_bytes(ctx, buf + 4, size) < 0 ||
			   cqw_recv_bytes_into(crx, buf + 4, size, 0, NULL) <
			       0) {
			return -1;
		}
		lat[i] = now_ns() - t0;
	}
	if (crx != NULL) {
		close_conns(crx, ctx);
	} else {
		close(rx);
		if (tx != rx) {
			close(tx);
		}
	}
	free(buf);
	waitpid(pid, &status, 0);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static int
parse_args(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc; i++) {
		char *end = NULL;
		long long v = -1;

		if (strcmp(argv[i], "--pipe") == 0) {
			use_pipe = 1;
			continue;
		}
		if (i + 1 < argc) {
			v = strtoll(argv[i + 1], &end, 10);
			if (*end != '\0' || v <= 0) {
				v = -1;
			}
		}
		if (strcmp(argv[i], "--size") == 0 && v > 0) {
			size = (size_t)v;
		} else if (strcmp(argv[i], "--iters") == 0 && v > 0) {
			iters = (long)v;
		} else if (strcmp(argv[i], "--rounds") == 0 && v > 0) {
			rounds = (int)v;
		} else {
			fprintf(stderr, "usage: cqwire-rtt [--size BYTES] "
					"[--iters N] [--rounds R] [--pipe]\n");
			return strcmp(argv[i], "--help") == 0 ? 1 : -1;
		}
		i++;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	double p50[T_COUNT][64], p99[T_COUNT][64], p999[T_COUNT][64];
	double med[T_COUNT][3];
	uint64_t *lat;
	int r, t, count;

	r = parse_args(argc, argv);
	if (r != 0) {
		return r > 0 ? 0 : 2;
	}
	if (rounds > 64) {
		rounds = 64;
	}
	lat = malloc(sizeof(*lat) * (size_t)iters);
	if (lat == NULL) {
		return 1;
	}
	count = use_pipe ? T_RAW_SPIN : T_COUNT; /* pipes: no spinning */
	printf("round trips of %zu-byte messages over %s, %ld per round, "
	       "%d rounds, transports interleaved\n",
	       size, use_pipe ? "two pipes" : "a socket pair", iters, rounds);
	for (r = 0; r < rounds; r++) {
		for (t = 0; t < count; t++) {
			if (run(t, lat) != 0) {
				fprintf(stderr, "cqwire-rtt: %s failed\n",
					names[t]);
				return 1;
			}
			qsort(lat, (size_t)iters, sizeof(*lat), cmp_u64);
			p50[t][r] = lat[iters / 2] / 1e3;
			p99[t][r] = lat[iters * 99 / 100] / 1e3;
			p999[t][r] = lat[iters * 999 / 1000] / 1e3;
		}
		fprintf(stderr, "\rround %d/%d", r + 1, rounds);
	}
	fprintf(stderr, "\n");
	for (t = 0; t < count; t++) {
		double *cols[3] = { p50[t], p99[t], p999[t] };
		int k, i, j;

		for (k = 0; k < 3; k++) {
			for (i = 1; i < rounds; i++) {
				for (j = i;
				     j > 0 && cols[k][j - 1] > cols[k][j];
				     j--) {
					double x = cols[k][j];

					cols[k][j] = cols[k][j - 1];
					cols[k][j - 1] = x;
				}
			}
			med[t][k] = cols[k][rounds / 2];
		}
	}
	printf("%-18s %10s %10s %10s %9s\n", "transport", "p50 us", "p99 us",
	       "p99.9 us", "p50 ratio");
	for (t = 0; t < count; t++) {
		/* Spinners are compared with the raw spin loop. */
		int base = t >= T_RAW_SPIN ? T_RAW_SPIN : T_RAW;

		printf("%-18s %10.2f %10.2f %10.2f %9.3f\n", names[t],
		       med[t][0], med[t][1], med[t][2],
		       med[t][0] / med[base][0]);
	}
	printf("ratio: p50 against raw write/read (spinners: against raw "
	       "spin), medians of %d rounds\n",
	       rounds);
	free(lat);
	return 0;
}
