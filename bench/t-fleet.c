/*
 * The plumbing of the server scenarios (fleet.h): a server process that
 * says its address on its first line of output, client processes driven
 * over ctl.c's pipes, a step that runs every client at once, and a close
 * that ends the clients first (they close their connections) and then
 * the server (SIGTERM; its socket path is removed here).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fleet.h"

const char cqwb__fleet_key[] = "cqwire-bench authkey";

/* How long a server or a client may take to start (interpreters). */
#define START_MS 30000

static int
fleet_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	   struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct cqwb__fleet *f = (struct cqwb__fleet *)s;
	uint64_t per = max_ops;
	struct cqwb_step st;
	int i, r, status;

	if (max_ops != UINT64_MAX) {
		per = (max_ops + (uint64_t)f->nclients - 1) /
		      (uint64_t)f->nclients;
	}
	for (i = 0; i < f->nclients; i++) {
		r = cqwb__ctl_run(&f->clients[i], s->t->name, per, max_ns,
				  lat != NULL);
		if (r < 0) {
			return r;
		}
	}
	for (i = 0; i < f->nclients; i++) {
		r = cqwb__ctl_done(&f->clients[i], s->t->name, lat, &st);
		if (r < 0) {
			return r;
		}
		out->ops += st.ops;
		if (st.ns > out->ns) {
			out->ns = st.ns;
		}
	}
	if (!f->server_gone &&
	    waitpid(s->parent_pid, &status, WNOHANG) == s->parent_pid) {
		f->server_gone = 1;
		return cqwb__fail(-EIO, "%s server ended during the step",
				  s->t->name);
	}
	return 0;
}

static const struct cqwb_session_ops fleet_ops = { fleet_step,
						   cqwb__fleet_close };

int
cqwb__fleet_new(struct cqwb__fleet **out, const struct cqwb_transport *t,
		const struct cqwb_params *p, int nclients, long fds)
{
	static int seq;
	struct cqwb__fleet *f;
	const char *dir = getenv("TMPDIR");
	struct rlimit rl;

	*out = NULL;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)fds) {
		if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < (rlim_t)fds) {
			return cqwb__fail(-EMFILE,
					  "%d clients need %ld descriptors, "
					  "ulimit -Hn is %llu",
					  p->workers, fds,
					  (unsigned long long)rl.rlim_max);
		}
		rl.rlim_cur = (rlim_t)fds;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			return cqwb__fail(-errno, "setrlimit");
		}
	}
	f = cqwb__sess_new(sizeof(*f), &fleet_ops, t, p);
	if (f == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	f->out_fd = -1;
	f->nwant = nclients;
	f->server_gone = 1; /* until there is one */
	f->clients = calloc((size_t)nclients, sizeof(*f->clients));
	if (f->clients == NULL) {
		cqwb__sess_free(&f->base);
		return cqwb__fail(-ENOMEM, "session");
	}
	if (dir == NULL || dir[0] == '\0' || strlen(dir) > 60) {
		dir = "/tmp";
	}
	snprintf(f->path, sizeof(f->path), "%s/cqwb-%d-%d.sock", dir,
		 (int)getpid(), seq++);
	unlink(f->path);
	snprintf(f->addr, sizeof(f->addr), "unix:%s", f->path);
	if ((t->arg & CQWB_V_NOAUTH) == 0) {
		f->auth.key = cqwb__fleet_key;
		f->auth.keylen = strlen(cqwb__fleet_key);
		f->authp = &f->auth;
	}
	*out = f;
	return 0;
}

/* The server's first line: it listens. */
static int
first_line(struct cqwb__fleet *f)
{
	struct pollfd pfd = { .fd = f->out_fd, .events = POLLIN };
	char line[256];
	size_t n = 0;
	ssize_t r;

	while (n + 1 < sizeof(line)) {
		r = poll(&pfd, 1, START_MS);
		if (r < 0 && errno == EINTR) {
			continue;
		}
		if (r <= 0) {
			return cqwb__fail(-ETIMEDOUT, "%s server did not start",
					  f->base.t->name);
		}
		r = read(f->out_fd, line + n, 1);
		if (r <= 0) {
			return cqwb__fail(-EPIPE, "%s server ended at start",
					  f->base.t->name);
		}
		if (line[n] == '\n') {
			return 0;
		}
		n++;
	}
	return cqwb__fail(-EPROTO, "%s server: a long first line",
			  f->base.t->name);
}

static int
start_server(struct cqwb__fleet *f, char *const argv[],
	     void (*fn)(struct cqwb__fleet *f, int fd))
{
	int fds[2];
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) != 0) {
		return cqwb__fail(-errno, "pipe");
	}
	/* The server plays the parent: on the parent's CPU if pinning. */
	pid = cqwb__fork(-1);
	if (pid == 0) {
		close(fds[0]);
		if (argv != NULL) {
			dup2(fds[1], 1);
			setenv(CQWB_FLEET_KEY_ENV, cqwb__fleet_key, 1);
			execvp(argv[0], argv);
			_exit(127);
		}
		fn(f, fds[1]);
		_exit(1);
	}
	close(fds[1]);
	if (pid < 0) {
		close(fds[0]);
		return cqwb__fail(-errno, "fork");
	}
	f->base.parent_pid = pid;
	f->server_gone = 0;
	f->out_fd = fds[0];
	return first_line(f);
}

int
cqwb__fleet_server_exec(struct cqwb__fleet *f, char *const argv[])
{
	return start_server(f, argv, NULL);
}

int
cqwb__fleet_server_fork(struct cqwb__fleet *f,
			void (*fn)(struct cqwb__fleet *f, int fd))
{
	return start_server(f, NULL, fn);
}

struct client_arg {
	struct cqwb__fleet *f;
	int idx;
	void (*fn)(struct cqwb__fleet *f, int idx);
};

static void
client_main(void *argp)
{
	struct client_arg *a = argp;

	a->fn(a->f, a->idx);
	_exit(1);
}

int
cqwb__fleet_client_exec(struct cqwb__fleet *f, int idx, char *const argv[])
{
	int r = cqwb__ctl_spawn_at(&f->clients[idx], idx, argv, NULL, NULL);

	f->nclients = idx + 1;
	return r;
}

int
cqwb__fleet_client_fork(struct cqwb__fleet *f, int idx,
			void (*fn)(struct cqwb__fleet *f, int idx))
{
	struct client_arg a = { f, idx, fn };
	int r =
	    cqwb__ctl_spawn_at(&f->clients[idx], idx, NULL, client_main, &a);

	f->nclients = idx + 1;
	return r;
}

int
cqwb__fleet_ready(struct cqwb__fleet *f)
{
	int i, r;

	for (i = 0; i < f->nclients; i++) {
		r = cqwb__ctl_line(&f->clients[i], f->base.t->name, "ready ");
		if (r < 0) {
			return r;
		}
		r = cqwb__add_peer(&f->base,
				   (pid_t)atoi(f->clients[i].line + 6));
		if (r < 0) {
			return cqwb__fail(r, "peers");
		}
	}
	return 0;
}

void
cqwb__fleet_serve(struct cqwb_session *s)
{
	printf("ready %d\n", (int)getpid());
	fflush(stdout);
	cqwb__ctl_answer(s);
}

int
cqwb__fleet_abort(struct cqwb__fleet *f, int err)
{
	char why[200];

	snprintf(why, sizeof(why), "%s", cqwb_error());
	cqwb__fleet_close(&f->base);
	cqwb__fail(1, "%s", why);
	return err;
}

int
cqwb__fleet_close(struct cqwb_session *s)
{
	struct cqwb__fleet *f = (struct cqwb__fleet *)s;
	int i, r, ret = 0, status;

	for (i = 0; i < f->nclients; i++) {
		r = cqwb__ctl_close(&f->clients[i]);
		if (r < 0 && ret == 0) {
			ret =
			    cqwb__fail(r, "%s client %d failed", s->t->name, i);
		}
	}
	if (!f->server_gone) {
		/* Still serving, as it should be: its status says nothing. */
		if (waitpid(s->parent_pid, &status, WNOHANG) == s->parent_pid) {
			if (ret == 0) {
				ret = cqwb__fail(-EIO, "%s server ended early",
						 s->t->name);
			}
		} else {
			kill(s->parent_pid, SIGTERM);
			cqwb__reap(s->parent_pid, 5000);
		}
	}
	if (f->out_fd >= 0) {
		close(f->out_fd);
	}
	unlink(f->path);
	free(f->clients);
	cqwb__sess_free(s);
	return ret;
}

/* ------------------------------------------------------------------
 * Finding the servers
 */

static int
executable(char *buf, size_t len, const char *dir, const char *rel)
{
	int n = snprintf(buf, len, "%s/%s", dir, rel);

	return n > 0 && (size_t)n < len && access(buf, X_OK) == 0;
}

const char *
cqwb__echo_path(void)
{
	static char path[4096];
	const char *env = getenv("CQW_ECHO");
	char exe[2048], *slash;
	ssize_t n;

	if (path[0] != '\0') {
		return path;
	}
	if (env != NULL && env[0] != '\0') {
		snprintf(path, sizeof(path), "%s", env);
		return path;
	}
	/* Installed beside cqwire-perf, or in the build tree's tools/. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		slash = strrchr(exe, '/');
		if (slash != NULL) {
			*slash = '\0';
			if (executable(path, sizeof(path), exe,
				       "cqwire-echo") ||
			    executable(path, sizeof(path), exe,
				       "../cqwire-echo")) {
				return path;
			}
		}
	}
#ifdef CQWB_ECHO_PATH
	if (access(CQWB_ECHO_PATH, X_OK) == 0) {
		snprintf(path, sizeof(path), "%s", CQWB_ECHO_PATH);
		return path;
	}
#endif
	path[0] = '\0';
	return "cqwire-echo";
}

const char *
cqwb__srv_unavailable(const struct cqwb_transport *t)
{
	struct cqwb_transport py = *t;

	switch (CQWB_SRV_KIND(t->arg)) {
	case CQWB_SRV_LOOP_URING:
	case CQWB_SRV_LOOP_POLL:
		/* The loop transports' own check, for the same backend. */
		py.arg = CQWB_SRV_KIND(t->arg) == CQWB_SRV_LOOP_URING
			     ? CQWB_V_URING
			     : 0;
		return cqwb__loop_unavailable(&py);
	case CQWB_SRV_PYTHON:
		py.arg = CQWB_PY_MP;
		return cqwb__py_unavailable(&py);
	case CQWB_SRV_ZMQ:
		return cqwb__zmq_unavailable(t);
	case CQWB_SRV_ECHO:
		if (strchr(cqwb__echo_path(), '/') == NULL) {
			return "cqwire-echo not found (build the tools, or "
			       "set CQW_ECHO to its path)";
		}
		return NULL;
	default:
		return NULL;
	}
}
