/*
 * Python peers: CPython's multiprocessing and billiard, each running both
 * sides of the scenario in Python (peers/pypeer.py, embedded at build time
 * and run with python3 -c). The harness drives it over pipes (ctl.c) and
 * reads back its own timings and latencies; CPU time is read from its
 * processes, whose pids it reports.
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

static const char *
module(const struct cqwb_transport *t)
{
	return t->arg == CQWB_PY_BILLIARD ? "billiard" : "multiprocessing";
}

/* Run python -c "import MODULE" quietly: 0 if it worked. */
static int
try_import(const char *mod)
{
	char code[64];
	int status, devnull;
	pid_t pid;

	snprintf(code, sizeof(code), "import %s", mod);
	pid = fork();
	if (pid == 0) {
		devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0) {
			dup2(devnull, 1);
			dup2(devnull, 2);
		}
		execlp(cqwb_python(), cqwb_python(), "-c", code, (char *)NULL);
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
	static int checked[2] = { 0, 0 };
	static char why[2][384];
	int i = t->arg == CQWB_PY_BILLIARD, r;

	if (!checked[i]) {
		checked[i] = 1;
		r = try_import(module(t));
		if (r == 127 || r < 0) {
			snprintf(why[i], sizeof(why[i]),
				 "no Python interpreter %s (apt-get install "
				 "python3)",
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
