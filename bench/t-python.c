/*
 * Python peers: CPython's multiprocessing, billiard, and the project's own
 * module cqwire.connection (python-cqwire: multiprocessing's processes
 * over cqwire.connection's Pipe and wait, per message or with
 * send_batch/recv_batch), each running both sides of the scenario in
 * Python (peers/pypeer.py, embedded at build time and run with python3
 * -c). The harness drives it over pipes (ctl.c) and reads back its own
 * timings and latencies; CPU time is read from its processes, whose pids
 * it reports. A CQWB_V_PIPE transport runs rtt and stream over two
 * Pipe(duplex=False), one each way.
 *
 * python-cqwire takes the module from the build tree this binary was
 * built in (CQWB_PYMOD_DIR, the py<MAJOR><MINOR> directory matching the
 * interpreter), else from wherever the interpreter finds it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sess.h"

struct py_sess {
	struct cqwb_session base;
	struct cqwb__ctl ctl;
};

static char python_path[256];

void
cqwb_set_python(const char *path)
{
	snprintf(python_path, sizeof(python_path), "%s", path ? path : "");
}

const char *
cqwb_python(void)
{
	const char *env;

	if (python_path[0] != '\0') {
		return python_path;
	}
	env = getenv("CQW_PYTHON");
	if (env != NULL && env[0] != '\0') {
		return env;
	}
	/* Debian's interpreter, where python3-billiard installs. */
	return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3"
						     : "python3";
}

#ifndef CQWB_PYMOD_DIR
#define CQWB_PYMOD_DIR "-"
#endif

static int
is_cqwire(const struct cqwb_transport *t)
{
	return strcmp(t->name, "python-cqwire") == 0;
}

/* pypeer.py's LIB and API arguments. */
static const char *
module(const struct cqwb_transport *t)
{
	if (is_cqwire(t)) {
		return "cqwire";
	}
	return (t->arg & ~CQWB_V_PIPE) == CQWB_PY_BILLIARD ? "billiard"
							   : "multiprocessing";
}

static const char *
api(const struct cqwb_transport *t)
{
	return t->api != NULL && strcmp(t->api, "batch") == 0 ? "batch"
							      : "per-message";
}

/* Which of why[] and checked[] below. */
static int
variant(const struct cqwb_transport *t)
{
	if (is_cqwire(t)) {
		return strcmp(api(t), "batch") == 0 ? 3 : 2;
	}
	return (t->arg & ~CQWB_V_PIPE) == CQWB_PY_BILLIARD;
}

/* Run pypeer.py's check (the imports t needs) quietly: 0 if it worked. */
static int
try_import(const struct cqwb_transport *t)
{
	char *argv[] = { (char *)cqwb_python(),
			 "-c",
			 (char *)cqwb_pypeer_src,
			 (char *)module(t),
			 "check",
			 "1",
			 "1",
			 "1",
			 "-",
			 (char *)api(t),
			 CQWB_PYMOD_DIR,
			 NULL };
	int status, devnull;
	pid_t pid;

	pid = fork();
	if (pid == 0) {
		devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		return -1;
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

const char *
cqwb__py_unavailable(const struct cqwb_transport *t)
{
	static int checked[4];
	static char why[4][384];
	int i = variant(t), r;

	if (!checked[i]) {
		checked[i] = 1;
		r = try_import(t);
		if (r == 127 || r < 0) {
			snprintf(why[i], sizeof(why[i]),
				 "no Python interpreter %s (apt-get install "
				 "python3)",
				 cqwb_python());
		} else if (r != 0 && i == 3) {
			snprintf(why[i], sizeof(why[i]),
				 "%s cannot import cqwire.connection, or it "
				 "has no send_batch/recv_batch",
				 cqwb_python());
		} else if (r != 0 && i == 2) {
			snprintf(why[i], sizeof(why[i]),
				 "%s cannot import cqwire.connection (build "
				 "the module for this interpreter, or pip "
				 "install .)",
				 cqwb_python());
		} else if (r != 0) {
			snprintf(why[i], sizeof(why[i]),
				 "%s cannot import %s (apt-get install %s)",
				 cqwb_python(), module(t),
				 i ? "python3-billiard" : "python3");
		}
	}
	return why[i][0] != '\0' ? why[i] : NULL;
}

static int
py_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	struct cqwb_hist *lat, struct cqwb_step *out)
{
	struct py_sess *ps = (struct py_sess *)s;

	return cqwb__ctl_step(&ps->ctl, s->t->name, max_ops, max_ns, lat, out);
}

static int
py_close(struct cqwb_session *s)
{
	struct py_sess *ps = (struct py_sess *)s;
	int r = cqwb__ctl_close(&ps->ctl);

	cqwb__sess_free(s);
	return r;
}

static const struct cqwb_session_ops py_ops = { py_step, py_close };

int
cqwb__py_open(struct cqwb_session **out, const struct cqwb_transport *t,
	      const struct cqwb_params *p)
{
	struct py_sess *ps = cqwb__sess_new(sizeof(*ps), &py_ops, t, p);
	char size[32], workers[16], inflight[16], pcpus[256];
	char *argv[] = { (char *)cqwb_python(),
			 "-c",
			 (char *)cqwb_pypeer_src,
			 (char *)module(t),
			 (char *)cqwb_scn_name(p->scn),
			 size,
			 workers,
			 inflight,
			 (char *)cqwb__peer_cpus(pcpus, sizeof(pcpus)),
			 (char *)api(t),
			 CQWB_PYMOD_DIR,
			 cqwb_channel(t) != NULL ? "pipe" : "socket",
			 NULL };
	int r;

	if (ps == NULL) {
		return cqwb__fail(-ENOMEM, "session");
	}
	snprintf(size, sizeof(size), "%zu", p->size);
	snprintf(workers, sizeof(workers), "%d", p->workers);
	snprintf(inflight, sizeof(inflight), "%d", p->inflight);
	r = cqwb__ctl_spawn(&ps->ctl, argv, NULL, NULL);
	if (r == 0) {
		r = cqwb__ctl_ready(&ps->ctl, &ps->base, t->name);
	}
	if (r < 0) {
		py_close(&ps->base);
		return r;
	}
	*out = &ps->base;
	return 0;
}
