/*
 * The readiness backend: emulates completions with poll(2). start() tries
 * the system call at once (most sends and many receives finish there);
 * only on EAGAIN does the io join the waiting list, and wait() polls those
 * descriptors and retries the ones that became ready. A pipe wakes the
 * loop from other threads.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "common/backend.h"
#include "common/loop.h"
#include "posix/io.h"
#include "common/platform.h"
#include "poll/attempt.h"

struct poll_state {
	/*
	 * ios that met EAGAIN, linked through io->next: starting one needs
	 * no memory, so start() cannot fail after a partial write.
	 */
	struct cqw__io *waiting;
	size_t nwaiting;
	struct pollfd *pfds; /* [0] is the wake pipe; grown by wait() */
	int eagain_fd;	     /* a listener whose accept said EAGAIN since
				the last wait (-1: none): further accepts
				on it wait without trying */
	size_t cap;	     /* entries in pfds */
	int wake[2];
};

static struct poll_state *
state(cqw_loop *loop)
{
	return loop->backend;
}

static int
make_wake_pipe(int fds[2])
{
	int i;

	/* pipe() and fcntl(): pipe2() is not on every Unix this serves. */
	if (pipe(fds) != 0) {
		return -errno;
	}
	for (i = 0; i < 2; i++) {
		if (fcntl(fds[i], F_SETFD, FD_CLOEXEC) != 0 ||
		    fcntl(fds[i], F_SETFL, O_NONBLOCK) != 0) {
			int err = -errno;

			close(fds[0]);
			close(fds[1]);
			return err;
		}
	}
	return 0;
}

static int
poll_init(cqw_loop *loop, unsigned entries)
{
	struct poll_state *s = calloc(1, sizeof(*s));
	int r;

	(void)entries;
	if (s == NULL) {
		return CQW_ENOMEM;
	}
	r = make_wake_pipe(s->wake);
	if (r < 0) {
		free(s);
		return r;
	}
	s->eagain_fd = -1;
	loop->backend = s;
	return 0;
}

static void
poll_fini(cqw_loop *loop)
{
	struct poll_state *s = state(loop);

	close(s->wake[0]);
	close(s->wake[1]);
	free(s->pfds);
	free(s);
	loop->backend = NULL;
}

static void
poll_start(cqw_loop *loop, struct cqw__io *io)
{
	struct poll_state *s = state(loop);

	if (!(io->op == CQW__IO_ACCEPT && io->handle == s->eagain_fd)) {
		if (cqw__poll_attempt(loop, io)) {
			return;
		}
		if (io->op == CQW__IO_ACCEPT) {
			s->eagain_fd = io->handle;
		}
	}
	io->next = s->waiting;
	s->waiting = io;
	s->nwaiting++;
}

static int
poll_flush(cqw_loop *loop)
{
	(void)loop;
	return 0;
}

static void
drain_wake(struct poll_state *s)
{
	char buf[64];

	while (read(s->wake[0], buf, sizeof(buf)) > 0) {
	}
}

/* Room for the wake pipe and every waiting io; CQW_ENOMEM leaves all be. */
static int
ensure_pfds(struct poll_state *s)
{
	struct pollfd *p;
	size_t cap;

	if (s->nwaiting + 1 <= s->cap) {
		return 0;
	}
	cap = s->cap ? s->cap : 16;
	while (cap < s->nwaiting + 1) {
		cap *= 2;
	}
	p = realloc(s->pfds, cap * sizeof(*p));
	if (p == NULL) {
		return CQW_ENOMEM; /* the ios stay waiting: a later wait retries */
	}
	s->pfds = p;
	s->cap = cap;
	return 0;
}

static int
poll_wait(cqw_loop *loop, int timeout_ms)
{
	struct poll_state *s = state(loop);
	struct cqw__io *io, *next, *kept = NULL, **tail = &kept;
	/* Accept ios of one listener share its entry (a server keeps many). */
	enum { LISTENERS = 4 };
	size_t lidx[LISTENERS], nl = 0, k, i, n;
	struct pollfd *p;
	int r, woken = 0;

	r = ensure_pfds(s);
	if (r < 0) {
		return r;
	}
	s->eagain_fd = -1;
	p = s->pfds;
	/* Completions are already waiting to be processed: do not block. */
	if (loop->iodone != NULL) {
		timeout_ms = 0;
	}
	p[0].fd = s->wake[0];
	p[0].events = POLLIN;
	p[0].revents = 0;
	for (io = s->waiting, n = 1; io != NULL; io = io->next) {
		if (io->op == CQW__IO_ACCEPT) {
			for (i = 0; i < nl && p[lidx[i]].fd != io->handle;
			     i++) {
			}
			if (i < nl) {
				io->backend_state = (int)lidx[i];
				continue;
			}
			if (nl < LISTENERS) {
				lidx[nl++] = n;
			}
		}
		io->backend_state = (int)n;
		p[n].fd = io->handle;
		p[n].events =
		    io->op == CQW__IO_SEND || io->op == CQW__IO_CONNECT
			? POLLOUT
			: POLLIN;
		p[n].revents = 0;
		n++;
	}
	r = poll(p, (nfds_t)n, timeout_ms);
	if (r < 0) {
		if (errno != EINTR) {
			return -errno;
		}
		/* The caller waits again with the time left, unless told. */
		return timeout_ms != 0 && cqw__eintr_stop() ? CQW_EINTR : 0;
	}
	if (p[0].revents) {
		drain_wake(s);
		woken = 1;
	}
	/*
	 * Retry the ready ones; keep the rest in order. A listener's
	 * accepts stop at its first EAGAIN: one peer wakes them all, and
	 * only one gets it.
	 */
	for (io = s->waiting; io != NULL; io = next) {
		next = io->next; /* a completion relinks io */
		k = (size_t)io->backend_state;
		if (p[k].revents != 0) {
			if (cqw__poll_attempt(loop, io)) {
				s->nwaiting--;
				continue;
			}
			if (io->op == CQW__IO_ACCEPT) {
				p[k].revents = 0;
			}
		}
		io->next = NULL;
		*tail = io;
		tail = &io->next;
	}
	s->waiting = kept;
	return woken;
}

static void
poll_cancel(cqw_loop *loop, struct cqw__io *io)
{
	struct poll_state *s = state(loop);
	struct cqw__io **pp;

	for (pp = &s->waiting; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == io) {
			*pp = io->next;
			s->nwaiting--;
			cqw__loop_io_complete(loop, io, CQW_ECANCELED, 0);
			return;
		}
	}
	/* Not waiting: it already completed and is queued. */
}

static int
poll_wake(cqw_loop *loop)
{
	struct poll_state *s = state(loop);
	char one = 1;

	if (write(s->wake[1], &one, 1) < 0 && errno != EAGAIN) {
		return -errno;
	}
	return 0;
}

static int
poll_after_fork(cqw_loop *loop)
{
	struct poll_state *s = state(loop);
	struct cqw__io *io, *next;
	int fds[2], r;

	/* A parent's wake-up must not wake the child: a pipe of its own. */
	r = make_wake_pipe(fds);
	if (r < 0) {
		return r;
	}
	close(s->wake[0]);
	close(s->wake[1]);
	s->wake[0] = fds[0];
	s->wake[1] = fds[1];
	/*
	 * The waiting ios are the parent's too, which goes on with them:
	 * end the child's copies rather than race it for the same bytes.
	 */
	for (io = s->waiting; io != NULL; io = next) {
		next = io->next; /* completing relinks io */
		cqw__loop_io_complete(loop, io, CQW_EFORK, 0);
	}
	s->waiting = NULL;
	s->nwaiting = 0;
	return 0;
}

const struct cqw__backend_ops cqw__poll_backend = {
	.name = "poll",
	.init = poll_init,
	.fini = poll_fini,
	.start = poll_start,
	.flush = poll_flush,
	.wait = poll_wait,
	.cancel = poll_cancel,
	.wake = poll_wake,
	.after_fork = poll_after_fork,
};
