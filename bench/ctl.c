/*
 * Sessions that run in another process, driven over two pipes with the
 * line protocol of peers/pypeer.py:
 *
 *   peer -> harness   ready PID PEER-PIDS...     (or: error TEXT)
 *   harness -> peer   run MAX_OPS MAX_NS WANT_LAT
 *   peer -> harness   done OPS NS                (or: error TEXT)
 *                     lat NS NS ...              (raw latencies), or
 *                     hist IDX:COUNT ...         (histogram buckets)
 *   harness -> peer   quit
 *
 * The Python peers speak it from Python. "Remote" C sessions speak it from
 * a forked driver process that opens the real session itself: nng must
 * never be initialised in a process that forks later (its fork handler
 * makes every child panic), so the harness hands the whole nng session to
 * a fresh child.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sess.h"

int
cqwb__ctl_spawn(struct cqwb__ctl *ctl, char *const argv[],
		void (*fn)(void *arg), void *arg)
{
	/* It plays the parent: on the parent's CPU if pinning. */
	return cqwb__ctl_spawn_at(ctl, -1, argv, fn, arg);
}

int
cqwb__ctl_spawn_at(struct cqwb__ctl *ctl, int idx, char *const argv[],
		   void (*fn)(void *arg), void *arg)
{
	int to[2], from[2];

	memset(ctl, 0, sizeof(*ctl));
	if (pipe2(to, O_CLOEXEC) != 0) {
		return cqwb__fail(-errno, "pipe");
	}
	if (pipe2(from, O_CLOEXEC) != 0) {
		close(to[0]);
		close(to[1]);
		return cqwb__fail(-errno, "pipe");
	}
	ctl->pid = cqwb__fork(idx);
	if (ctl->pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		if (argv != NULL) {
			execvp(argv[0], argv);
			_exit(127);
		}
		close(to[0]);
		close(to[1]);
		close(from[0]);
		close(from[1]);
		fn(arg);
		_exit(0);
	}
	close(to[0]);
	close(from[1]);
	if (ctl->pid < 0) {
		close(to[1]);
		close(from[0]);
		return cqwb__fail(-errno, "fork");
	}
	ctl->to = fdopen(to[1], "w");
	ctl->from = fdopen(from[0], "r");
	if (ctl->to == NULL || ctl->from == NULL) {
		return cqwb__fail(-ENOMEM, "fdopen");
	}
	return 0;
}

int
cqwb__ctl_line(struct cqwb__ctl *ctl, const char *who, const char *want)
{
	ssize_t n = getline(&ctl->line, &ctl->cap, ctl->from);

	if (n <= 0) {
		return cqwb__fail(-EPIPE, "%s peer ended", who);
	}
	if (ctl->line[n - 1] == '\n') {
		ctl->line[n - 1] = '\0';
	}
	if (strncmp(ctl->line, "error ", 6) == 0) {
		return cqwb__fail(-EIO, "%s", ctl->line + 6);
	}
	if (strncmp(ctl->line, want, strlen(want)) != 0) {
		return cqwb__fail(-EPROTO, "%s peer said: %.80s", who,
				  ctl->line);
	}
	return 0;
}

int
cqwb__ctl_ready(struct cqwb__ctl *ctl, struct cqwb_session *s, const char *who)
{
	char *q, *end;
	int r = cqwb__ctl_line(ctl, who, "ready ");

	if (r < 0) {
		return r;
	}
	/* The first pid plays the parent, the others are its peers. */
	s->parent_pid = (pid_t)strtol(ctl->line + 6, &end, 10);
	for (q = end;; q = end) {
		long v = strtol(q, &end, 10);

		if (end == q) {
			break;
		}
		if (cqwb__add_peer(s, (pid_t)v) < 0) {
			return cqwb__fail(-ENOMEM, "peers");
		}
	}
	return 0;
}

int
cqwb__ctl_step(struct cqwb__ctl *ctl, const char *who, uint64_t max_ops,
	       uint64_t max_ns, struct cqwb_hist *lat, struct cqwb_step *out)
{
	int r = cqwb__ctl_run(ctl, who, max_ops, max_ns, lat != NULL);

	return r < 0 ? r : cqwb__ctl_done(ctl, who, lat, out);
}

int
cqwb__ctl_run(struct cqwb__ctl *ctl, const char *who, uint64_t max_ops,
	      uint64_t max_ns, int want_lat)
{
	fprintf(ctl->to, "run %llu %llu %d\n", (unsigned long long)max_ops,
		(unsigned long long)max_ns, want_lat);
	if (fflush(ctl->to) != 0) {
		return cqwb__fail(-EPIPE, "%s peer gone", who);
	}
	return 0;
}

int
cqwb__ctl_done(struct cqwb__ctl *ctl, const char *who, struct cqwb_hist *lat,
	       struct cqwb_step *out)
{
	unsigned long long ops, ns, v, c;
	char *p, *end;
	int r, hist;

	r = cqwb__ctl_line(ctl, who, "done ");
	if (r < 0) {
		return r;
	}
	if (sscanf(ctl->line, "done %llu %llu", &ops, &ns) != 2) {
		return cqwb__fail(-EPROTO, "%s peer: bad reply", who);
	}
	out->ops = ops;
	out->ns = ns;
	if (lat == NULL) {
		return 0;
	}
	r = cqwb__ctl_line(ctl, who, "");
	if (r < 0) {
		return r;
	}
	hist = strncmp(ctl->line, "hist", 4) == 0;
	if (!hist && strncmp(ctl->line, "lat", 3) != 0) {
		return cqwb__fail(-EPROTO, "%s peer: no latencies", who);
	}
	for (p = ctl->line + (hist ? 4 : 3);; p = end) {
		v = strtoull(p, &end, 10);
		if (end == p) {
			break;
		}
		if (!hist) {
			cqwb_hist_record(lat, v);
			continue;
		}
		p = end + (*end == ':');
		c = strtoull(p, &end, 10);
		if (v < CQWB_HIST_BUCKETS) {
			cqwb_hist_record_n(lat, cqwb_hist_bucket_lo((size_t)v),
					   c);
		}
	}
	return 0;
}

int
cqwb__ctl_close(struct cqwb__ctl *ctl)
{
	int r = 0;

	if (ctl->to != NULL) {
		fputs("quit\n", ctl->to);
		fclose(ctl->to);
		ctl->to = NULL;
	}
	if (ctl->from != NULL) {
		fclose(ctl->from);
		ctl->from = NULL;
	}
	if (ctl->pid > 0) {
		r = cqwb__reap(ctl->pid, 15000);
		ctl->pid = 0;
	}
	free(ctl->line);
	ctl->line = NULL;
	return r;
}

/* ------------------------------------------------------------------
 * The driver side of a remote C session
 */

struct remote_arg {
	const struct cqwb_transport *t;
	const struct cqwb_params *p;
	int (*open)(struct cqwb_session **out, const struct cqwb_transport *t,
		    const struct cqwb_params *p);
};

void
cqwb__ctl_answer(struct cqwb_session *s)
{
	struct cqwb_hist *h = cqwb_hist_new();
	unsigned long long max_ops, max_ns;
	struct cqwb_step st;
	char line[128];
	int want, r = 0;
	size_t k;

	if (h == NULL) {
		_exit(1);
	}
	while (fgets(line, sizeof(line), stdin) != NULL) {
		if (sscanf(line, "run %llu %llu %d", &max_ops, &max_ns,
			   &want) != 3) {
			break;
		}
		cqwb_hist_reset(h);
		r = cqwb_step(s, max_ops, max_ns, want ? h : NULL, &st);
		if (r < 0) {
			printf("error %s\n", cqwb_error());
			fflush(stdout);
			break;
		}
		printf("done %llu %llu\n", (unsigned long long)st.ops,
		       (unsigned long long)st.ns);
		if (want) {
			printf("hist");
			for (k = 0; k < CQWB_HIST_BUCKETS; k++) {
				if (h->counts[k] != 0) {
					printf(
					    " %zu:%llu", k,
					    (unsigned long long)h->counts[k]);
				}
			}
			printf("\n");
		}
		fflush(stdout);
	}
	_exit(cqwb_close(s) < 0 || r < 0 ? 1 : 0);
}

static void
serve(void *argp)
{
	struct remote_arg *a = argp;
	struct cqwb_session *s;
	int r, i;

	r = a->open(&s, a->t, a->p);
	if (r < 0) {
		printf("error %s\n", cqwb_error());
		fflush(stdout);
		_exit(1);
	}
	printf("ready %d", (int)getpid());
	for (i = 0; i < s->npeers; i++) {
		printf(" %d", (int)s->peers[i]);
	}
	printf("\n");
	fflush(stdout);
	cqwb__ctl_answer(s);
}

struct remote_sess {
	struct cqwb_session base;
	struct cqwb__ctl ctl;
};

static int
remote_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	    struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct remote_sess *rs = (struct remote_sess *)s;

	return cqwb__ctl_step(&rs->ctl, s->t->name, max_ops, max_ns, lat, out);
}

static int
remote_close(struct cqwb_session *s)
{
	struct remote_sess *rs = (struct remote_sess *)s;
	int r = cqwb__ctl_close(&rs->ctl);

	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops remote_ops = { remote_step, remote_close };

int
cqwb__remote_open(struct cqwb_session **out, const struct cqwb_transport *t,
		  const struct cqwb_params *p,
		  int (*open)(struct cqwb_session **out,
			      const struct cqwb_transport *t,
			      const struct cqwb_params *p))
{
	struct remote_sess *rs = cqwb__sess_new(sizeof(*rs), &remote_ops, t, p);
	struct remote_arg a = { t, p, open };
	int r;

	if (rs == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	r = cqwb__ctl_spawn(&rs->ctl, NULL, serve, &a);
	if (r == 0) {
		r = cqwb__ctl_ready(&rs->ctl, &rs->base, t->name);
	}
	if (r < 0) {
		remote_close(&rs->base);
		return r;
	}
	*out = &rs->base;
	return 0;
}
