/*
 * cqwire-stream: push N messages one way from a forked child to its
 * parent and report messages/s, bytes/s and system calls are left to
 * `strace -c -f` (the count is fixed, so calls per message are exact).
 *
 * Usage: cqwire-stream [--api sync|batch|loop] [--backend uring|poll]
 *                      [--exclusive] [--size BYTES] [--count N]
 *
 * sync: cqw_send_bytes / cqw_recv_bytes_into, one message per call.
 * batch: cqw_send_batch / cqw_recv_batch, 256 messages per call.
 * loop: 256 SEND and 256 RECV ops kept in flight on a loop each side.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cqwire.h>

#define DEPTH 256

static const char *api = "batch";
static enum cqw_backend backend = CQW_BACKEND_AUTO;
static unsigned flags = CQW_DUPLEX;
static size_t size = 64;
static long count = 1000000;

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Message k carries k in its first 8 bytes (when it has 8). */
static void
stamp(uint8_t *buf, long k)
{
	if (size >= sizeof(k)) {
		memcpy(buf, &k, sizeof(k));
	}
}

static int
check(const uint8_t *buf, size_t len, long k)
{
	long v;

	if (len != size) {
		return -1;
	}
	if (size >= sizeof(v)) {
		memcpy(&v, buf, sizeof(v));
		return v == k ? 0 : -1;
	}
	return 0;
}

static int
run_loop(cqw_conn *c, int sender, uint8_t *bufs)
{
	struct cqw_loop_opts o = { .backend = backend };
	static struct cqw_op ops[DEPTH];
	struct cqw_op *done[DEPTH];
	long posted = 0, finished = 0;
	cqw_loop *loop;
	int i, n;

	if (cqw_loop_new(&loop, &o) < 0) {
		return -1;
	}
	if (!sender) {
		fprintf(stderr, "loop backend: %s\n", cqw_loop_backend(loop));
	}
	for (i = 0; i < DEPTH && posted < count; i++, posted++) {
		ops[i] =
		    (struct cqw_op){ .kind = sender ? CQW_OP_SEND : CQW_OP_RECV,
				     .conn = c,
				     .buf = bufs + (size_t)i * size,
				     .len = size };
		if (sender) {
			stamp(ops[i].buf, posted);
		}
		cqw_submit(loop, &ops[i]);
	}
	while (finished < count) {
		n = cqw_reap(loop, done, DEPTH, -1);
		if (n < 0) {
			return -1;
		}
		for (i = 0; i < n; i++, finished++) {
			/* Receives complete in submission order. */
			if (done[i]->result < 0 ||
			    (!sender &&
			     check(done[i]->buf, (size_t)done[i]->result,
				   finished) < 0)) {
				return -1;
			}
			if (posted < count) {
				if (sender) {
					stamp(done[i]->buf, posted);
				}
				posted++;
				cqw_submit(loop, done[i]);
			}
		}
	}
	cqw_loop_free(loop);
	return 0;
}

static int
run(cqw_conn *c, int sender)
{
	uint8_t *bufs = calloc(DEPTH, size > 0 ? size : 1);
	struct cqw_msg msgs[DEPTH];
	long k = 0;
	int i, n, r = 0;

	if (bufs == NULL) {
		return -1;
	}
	if (strcmp(api, "loop") == 0) {
		r = run_loop(c, sender, bufs);
		free(bufs);
		return r;
	}
	while (k < count && r == 0) {
		n = strcmp(api, "batch") == 0 ? DEPTH : 1;
		if (count - k < n) {
			n = (int)(count - k);
		}
		for (i = 0; i < n; i++) {
			msgs[i] = (struct cqw_msg){
				.buf = bufs + (size_t)i * size,
				.cap = size,
				.len = size,
			};
			if (sender) {
				stamp(msgs[i].buf, k + i);
			}
		}
		if (sender) {
			r = n == 1 ? cqw_send_bytes(c, msgs[0].buf, size)
				   : cqw_send_batch(c, msgs, (size_t)n);
			k += n;
			continue;
		}
		if (n > 1) {
			n = cqw_recv_batch(c, msgs, (size_t)n, -1);
		} else {
			int64_t len =
			    cqw_recv_bytes_into(c, msgs[0].buf, size, 0, NULL);

			msgs[0].len = (size_t)len;
			n = len < 0 ? (int)len : 1;
		}
		for (i = 0; i < n; i++, k++) {
			if (check(msgs[i].buf, msgs[i].len, k) < 0) {
				r = -1;
			}
		}
		if (n <= 0) {
			r = -1;
		}
	}
	free(bufs);
	return r;
}

static int
usage(int code)
{
	fprintf(code ? stderr : stdout,
		"usage: cqwire-stream [--api sync|batch|loop] "
		"[--backend uring|poll] [--exclusive] [--size BYTES] "
		"[--count N]\n");
	return code;
}

int
main(int argc, char **argv)
{
	cqw_conn *a, *b;
	double t0, dt;
	int i, status;
	pid_t pid;

	for (i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(argv[i], "--exclusive") == 0) {
			flags |= CQW_EXCLUSIVE;
			continue;
		}
		if (v == NULL) {
			return usage(strcmp(argv[i], "--help") == 0 ? 0 : 2);
		}
		if (strcmp(argv[i], "--api") == 0) {
			api = v;
		} else if (strcmp(argv[i], "--backend") == 0) {
			backend = strcmp(v, "uring") == 0 ? CQW_BACKEND_URING
							  : CQW_BACKEND_POLL;
		} else if (strcmp(argv[i], "--size") == 0) {
			size = strtoul(v, NULL, 10);
		} else if (strcmp(argv[i], "--count") == 0) {
			count = strtol(v, NULL, 10);
		} else {
			return usage(2);
		}
		i++;
	}
	if (count <= 0 || (strcmp(api, "sync") && strcmp(api, "batch") &&
			   strcmp(api, "loop"))) {
		return usage(2);
	}
	if (cqw_pipe(&a, &b, flags) < 0) {
		return 1;
	}
	pid = fork();
	if (pid == 0) {
		cqw_conn_free(b);
		_exit(run(a, 1) == 0 ? 0 : 1);
	}
	cqw_conn_free(a);
	t0 = now_s();
	if (run(b, 0) != 0) {
		fprintf(stderr, "cqwire-stream: receive failed\n");
		return 1;
	}
	dt = now_s() - t0;
	waitpid(pid, &status, 0);
	printf("%s %s%s %zu B: %ld msgs in %.3f s = %.3f M msg/s, %.1f MB/s\n",
	       api, flags & CQW_EXCLUSIVE ? "exclusive" : "frame-exact",
	       strcmp(api, "loop") ? "" : " (loop)", size, count, dt,
	       (double)count / dt / 1e6,
	       (double)count * (double)size / dt / 1e6);
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
