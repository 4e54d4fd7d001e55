/*
 * The io_uring backend (liburing). One ring per loop, made with the best
 * setup flags the kernel takes: SINGLE_ISSUER|DEFER_TASKRUN (completion
 * work runs only when we ask for events, so the loop is not interrupted),
 * then COOP_TASKRUN, then none. The ring fd is registered, and the
 * operations we need are probed, not assumed from a version.
 *
 * Every io becomes one SQE whose user_data is the io. When the SQ is full
 * we submit to make room, and if there is still none the io waits in a
 * FIFO for the next flush: start() never fails. Waits with a timeout use
 * io_uring_enter's extended argument, not a timeout SQE. A read on an
 * eventfd stays armed for cqw_loop_wake().
 *
 * After fork() the child must not touch the parent's ring (its SQEs would
 * run in the parent's queue): after_fork() builds a new ring, drops the
 * child's mapping of the old one without submitting anything, and ends
 * every io that was in flight with CQW_EFORK: they are the parent's.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/backend.h"
#include "common/loop.h"
#include "posix/sigpipe.h"

/*
 * liburing 2.3 has every constant used here; none is defined locally. One
 * function is missing from its library (see ensure_enabled()).
 */

#define WAKE_TAG ((uint64_t)1)	 /* user_data of the eventfd read */
#define CANCEL_TAG ((uint64_t)2) /* user_data of cancel requests */

struct uring_state {
	struct io_uring ring;
	unsigned entries;
	struct cqw__io **inflight; /* started ios; io->backend_state indexes */
	size_t ninflight, cap;
	struct cqw__io *fifo, *fifo_tail; /* waiting for SQ space */
	unsigned pipe_writes;		  /* pipe writes in flight (SIGPIPE) */
	unsigned unsubmitted;
	int wakefd;
	uint64_t wakebuf;
	int wake_armed;
	int enabled; /* rings enabled by the thread that uses the loop */
	int setup;   /* SETUP_* from CQW_URING_SETUP */
	int ext_arg; /* timed waits use io_uring_enter's extended argument */
	char features[64]; /* what cqw_loop_features() reports */
};

/*
 * CQW_URING_SETUP picks one flag set instead of the best the kernel takes,
 * so that the test matrix can run every suite under each; a refusal of
 * the forced set is then the loop's error. CQW_URING_NO_EXT_ARG=1 acts as
 * if the kernel lacked IORING_FEAT_EXT_ARG (5.10: Debian 11, Amazon Linux
 * 2). Both are read when the loop is made.
 */
enum { SETUP_AUTO = -1, SETUP_DEFER = 0, SETUP_COOP = 1, SETUP_NONE = 2 };

_Static_assert(sizeof(struct msghdr) <=
		   sizeof(((struct cqw__io *)0)->backend_priv),
	       "a msghdr fits an io's backend area");

static struct uring_state *
state(cqw_loop *loop)
{
	return loop->backend;
}

/* CQW_URING_SETUP: a SETUP_* value, or CQW_EINVAL for an unknown name. */
static int
setup_from_env(void)
{
	static const char *const names[] = { "defer", "coop", "none" };
	const char *v = getenv("CQW_URING_SETUP");
	int i;

	if (v == NULL || *v == '\0' || strcmp(v, "auto") == 0) {
		return SETUP_AUTO;
	}
	for (i = 0; i < (int)(sizeof(names) / sizeof(names[0])); i++) {
		if (strcmp(v, names[i]) == 0) {
			return i;
		}
	}
	return CQW_EINVAL;
}

static void
set_features(struct uring_state *s, unsigned flags)
{
	snprintf(s->features, sizeof(s->features), "%s%s%s%s",
		 flags & IORING_SETUP_SINGLE_ISSUER ? "single_issuer," : "",
		 flags & IORING_SETUP_DEFER_TASKRUN ? "defer_taskrun," : "",
		 flags & IORING_SETUP_COOP_TASKRUN ? "coop_taskrun," : "",
		 s->ext_arg ? "ext_arg," : "");
	/* Drop the last comma. */
	if (s->features[0] != '\0') {
		s->features[strlen(s->features) - 1] = '\0';
	}
}

static int
setup_ring(struct uring_state *s)
{
	static const unsigned flag_sets[] = {
		[SETUP_DEFER] =
		    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		[SETUP_COOP] = IORING_SETUP_COOP_TASKRUN,
		[SETUP_NONE] = 0,
	};
	static const int needed_ops[] = {
		IORING_OP_READ, IORING_OP_WRITEV,	IORING_OP_SENDMSG,
		IORING_OP_RECV, IORING_OP_ASYNC_CANCEL,
	};
	const char *no_ext = getenv("CQW_URING_NO_EXT_ARG");
	struct io_uring_params p;
	struct io_uring_probe *probe;
	size_t i, first = 0, last = 2;
	int r = -ENOSYS;

	if (s->setup != SETUP_AUTO) {
		first = last = (size_t)s->setup;
	}
	for (i = first; i <= last; i++) {
		memset(&p, 0, sizeof(p));
		/*
		 * Made disabled: the thread that first flushes or reaps
		 * enables it and so becomes its single issuer, whichever
		 * thread called cqw_loop_new().
		 */
		p.flags = flag_sets[i] | IORING_SETUP_CQSIZE |
			  IORING_SETUP_R_DISABLED;
		/* Room for every io in flight and its cancel. */
		p.cq_entries = s->entries * 4;
		r = io_uring_queue_init_params(s->entries, &s->ring, &p);
		/* EPERM, ENOSYS (seccomp, io_uring_disabled) end the search. */
		if (r == 0 || r == -EPERM || r == -ENOSYS || r == -EACCES) {
			break;
		}
	}
	if (r < 0) {
		return r;
	}
	probe = io_uring_get_probe_ring(&s->ring);
	if (probe == NULL) {
		r = -ENOSYS;
		goto out_exit;
	}
	for (i = 0; i < sizeof(needed_ops) / sizeof(needed_ops[0]); i++) {
		if (!io_uring_opcode_supported(probe, needed_ops[i])) {
			r = -ENOSYS;
			break;
		}
	}
	io_uring_free_probe(probe);
	if (r < 0) {
		goto out_exit;
	}
	s->ext_arg = (p.features & IORING_FEAT_EXT_ARG) != 0 &&
		     !(no_ext != NULL && strcmp(no_ext, "1") == 0);
	if (!s->ext_arg) {
		/* liburing then waits as it must on such a kernel. */
		s->ring.features &= ~IORING_FEAT_EXT_ARG;
	}
	set_features(s, p.flags);
	return 0;

out_exit:
	io_uring_queue_exit(&s->ring);
	return r;
}

static int
uring_init(cqw_loop *loop, unsigned entries)
{
	struct uring_state *s = calloc(1, sizeof(*s));
	int r;

	if (s == NULL) {
		return CQW_ENOMEM;
	}
	s->entries = entries < 8 ? 8 : entries;
	s->setup = setup_from_env();
	if (s->setup == CQW_EINVAL) {
		free(s);
		return CQW_EINVAL;
	}
	s->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (s->wakefd < 0) {
		r = -errno;
		free(s);
		return r;
	}
	r = setup_ring(s);
	if (r < 0) {
		close(s->wakefd);
		free(s);
		return r;
	}
	loop->backend = s;
	return 0;
}

static void
uring_fini(cqw_loop *loop)
{
	struct uring_state *s = state(loop);

	io_uring_queue_exit(&s->ring);
	close(s->wakefd);
	free(s->inflight);
	free(s);
	loop->backend = NULL;
}

static int
track(struct uring_state *s, struct cqw__io *io)
{
	if (s->ninflight == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 64;
		struct cqw__io **n = realloc(s->inflight, cap * sizeof(*n));

		if (n == NULL) {
			return CQW_ENOMEM;
		}
		s->inflight = n;
		s->cap = cap;
	}
	io->backend_state = (int)s->ninflight;
	s->inflight[s->ninflight++] = io;
	return 0;
}

static void
untrack(struct uring_state *s, struct cqw__io *io)
{
	size_t i = (size_t)io->backend_state;
	struct cqw__io *last = s->inflight[--s->ninflight];

	s->inflight[i] = last;
	last->backend_state = (int)i;
	io->backend_state = -1;
}

static int
ensure_enabled(struct uring_state *s)
{
	int r;

	if (s->enabled) {
		return 0;
	}
	/*
	 * Debian's liburing 2.3 declares io_uring_enable_rings() but its
	 * shared library does not export it: register the opcode ourselves.
	 */
	r = (int)syscall(__NR_io_uring_register, s->ring.ring_fd,
			 IORING_REGISTER_ENABLE_RINGS, NULL, 0);
	if (r < 0) {
		return -errno;
	}
	/* Saves an fget/fput per io_uring_enter; per thread, optional. */
	io_uring_register_ring_fd(&s->ring);
	s->enabled = 1;
	return 0;
}

/*
 * Pipe writes run in our task when submitted (inline, or as task work
 * while we wait): hold SIGPIPE off around every entry to the kernel while
 * any are in flight.
 */
static void
guard_begin(struct uring_state *s, struct cqw__sigpipe_guard *g)
{
	g->active = 0;
	if (s->pipe_writes > 0) {
		cqw__sigpipe_block(g);
	}
}

/* Queue io until the SQ has room again (start() never fails). */
static void
fifo_push(struct uring_state *s, struct cqw__io *io)
{
	io->next = NULL;
	if (s->fifo_tail != NULL) {
		s->fifo_tail->next = io;
	} else {
		s->fifo = io;
	}
	s->fifo_tail = io;
}

static struct io_uring_sqe *
get_sqe(struct uring_state *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

	if (sqe == NULL && ensure_enabled(s) == 0) {
		/* Full: hand what is queued to the kernel and try again. */
		struct cqw__sigpipe_guard g;

		guard_begin(s, &g);
		io_uring_submit(&s->ring);
		cqw__sigpipe_restore(&g);
		s->unsubmitted = 0;
		sqe = io_uring_get_sqe(&s->ring);
	}
	if (sqe != NULL) {
		s->unsubmitted++;
	}
	return sqe;
}

static void
prep_io(struct io_uring_sqe *sqe, struct uring_state *s, struct cqw__io *io)
{
	cqw_conn *c = io->conn;

	if (io->kind == CQW__IO_PEEK) {
		io_uring_prep_recv(sqe, c->fd, io->buf, io->len, MSG_PEEK);
	} else if (io->kind == CQW__IO_READ) {
		if (c->kind == CQW__FD_SOCK) {
			io_uring_prep_recv(sqe, c->fd, io->buf, io->len, 0);
		} else {
			io_uring_prep_read(sqe, c->fd, io->buf,
					   (unsigned)io->len, (uint64_t)-1);
		}
	} else if (c->kind == CQW__FD_SOCK) {
		struct msghdr *m = (struct msghdr *)io->backend_priv;

		memset(m, 0, sizeof(*m));
		m->msg_iov = io->iov;
		m->msg_iovlen = (size_t)io->iovcnt;
		io_uring_prep_sendmsg(sqe, c->fd, m, MSG_NOSIGNAL);
	} else {
		io_uring_prep_writev(sqe, c->fd, io->iov, (unsigned)io->iovcnt,
				     (uint64_t)-1);
		s->pipe_writes++;
	}
	io_uring_sqe_set_data(sqe, io);
}

static void
uring_start(cqw_loop *loop, struct cqw__io *io)
{
	struct uring_state *s = state(loop);
	struct io_uring_sqe *sqe;
	int r = track(s, io);

	if (r < 0) {
		cqw__loop_io_complete(loop, io, r);
		return;
	}
	sqe = s->fifo == NULL ? get_sqe(s) : NULL;
	if (sqe == NULL) {
		fifo_push(s, io);
		return;
	}
	prep_io(sqe, s, io);
}

static void
arm_wake(struct uring_state *s)
{
	struct io_uring_sqe *sqe;

	if (s->wake_armed) {
		return;
	}
	sqe = get_sqe(s);
	if (sqe == NULL) {
		return; /* next time */
	}
	io_uring_prep_read(sqe, s->wakefd, &s->wakebuf, sizeof(s->wakebuf), 0);
	io_uring_sqe_set_data64(sqe, WAKE_TAG);
	s->wake_armed = 1;
}

/* Move FIFO'd ios into the SQ while there is room. */
static void
drain_fifo(struct uring_state *s)
{
	struct io_uring_sqe *sqe;
	struct cqw__io *io;

	while ((io = s->fifo) != NULL) {
		sqe = get_sqe(s);
		if (sqe == NULL) {
			return;
		}
		s->fifo = io->next;
		if (s->fifo == NULL) {
			s->fifo_tail = NULL;
		}
		prep_io(sqe, s, io);
	}
}

/*
 * io_uring_enter, with SIGPIPE held off while pipe writes are in flight:
 * they run in our task (inline or as task work) and would raise it here.
 */
static int
enter(struct uring_state *s, unsigned wait_nr, int timeout_ms)
{
	struct __kernel_timespec ts;
	struct io_uring_cqe *cqe;
	struct cqw__sigpipe_guard g;
	int r;

	r = ensure_enabled(s);
	if (r < 0) {
		return r;
	}
	guard_begin(s, &g);
	if (wait_nr == 0) {
		r = io_uring_submit_and_get_events(&s->ring);
	} else {
		ts.tv_sec = timeout_ms / 1000;
		ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
		r = io_uring_submit_and_wait_timeout(
		    &s->ring, &cqe, wait_nr, timeout_ms < 0 ? NULL : &ts, NULL);
	}
	cqw__sigpipe_restore(&g);
	s->unsubmitted = 0;
	if (r == -ETIME || r == -EINTR || r == -EAGAIN || r == -EBUSY) {
		return 0;
	}
	return r < 0 ? r : 0;
}

static int
uring_flush(cqw_loop *loop)
{
	struct uring_state *s = state(loop);

	drain_fifo(s);
	if (s->unsubmitted == 0) {
		return 0;
	}
	return enter(s, 0, 0);
}

static int
reap_cqes(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	int woken = 0;

	io_uring_for_each_cqe(&s->ring, head, cqe)
	{
		uint64_t tag = io_uring_cqe_get_data64(cqe);

		n++;
		if (tag == WAKE_TAG) {
			s->wake_armed = 0;
			woken = 1;
			continue;
		}
		if (tag == CANCEL_TAG) {
			continue;
		}
		struct cqw__io *io = io_uring_cqe_get_data(cqe);

		if (io->kind == CQW__IO_WRITEV &&
		    io->conn->kind != CQW__FD_SOCK) {
			s->pipe_writes--;
		}
		untrack(s, io);
		cqw__loop_io_complete(loop, io, cqe->res);
	}
	io_uring_cq_advance(&s->ring, n);
	return woken;
}

static int
uring_wait(cqw_loop *loop, int timeout_ms)
{
	struct uring_state *s = state(loop);
	int r;

	drain_fifo(s);
	arm_wake(s);
	/* Completions already queued: only collect, do not block. */
	if (loop->iodone != NULL || io_uring_cq_ready(&s->ring) > 0) {
		timeout_ms = 0;
	}
	r = enter(s, timeout_ms == 0 ? 0 : 1, timeout_ms);
	if (r < 0) {
		return r;
	}
	return reap_cqes(loop);
}

static void
uring_cancel(cqw_loop *loop, struct cqw__io *io)
{
	struct uring_state *s = state(loop);
	struct io_uring_sqe *sqe;
	struct cqw__io **pp;

	/* Still in our FIFO: the kernel never saw it. */
	for (pp = &s->fifo; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == io) {
			*pp = io->next;
			if (s->fifo_tail == io) {
				s->fifo_tail = NULL;
				for (struct cqw__io *it = s->fifo; it != NULL;
				     it = it->next) {
					s->fifo_tail = it;
				}
			}
			untrack(s, io);
			cqw__loop_io_complete(loop, io, CQW_ECANCELED);
			return;
		}
	}
	if (io->backend_state < 0) {
		return; /* already completed */
	}
	sqe = get_sqe(s);
	if (sqe == NULL) {
		return; /* the op completes when its data comes */
	}
	io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)io, 0);
	io_uring_sqe_set_data64(sqe, CANCEL_TAG);
}

static int
uring_wake(cqw_loop *loop)
{
	uint64_t one = 1;

	if (write(state(loop)->wakefd, &one, sizeof(one)) < 0 &&
	    errno != EAGAIN) {
		return -errno;
	}
	return 0;
}

static int
uring_after_fork(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	struct uring_state fresh;
	size_t i;
	int r, wakefd;

	/* The new ring first: on failure the old one is left as it was. */
	memset(&fresh, 0, sizeof(fresh));
	fresh.entries = s->entries;
	fresh.setup = s->setup;
	r = setup_ring(&fresh);
	if (r < 0) {
		return r;
	}
	wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wakefd < 0) {
		r = -errno;
		io_uring_queue_exit(&fresh.ring);
		return r;
	}
	/*
	 * Unmap and close our copy of the parent's ring without submitting
	 * anything on it: that would land in the parent's queue.
	 */
	io_uring_queue_exit(&s->ring);
	close(s->wakefd);
	s->ring = fresh.ring;
	s->ext_arg = fresh.ext_arg;
	memcpy(s->features, fresh.features, sizeof(s->features));
	s->wakefd = wakefd;
	s->enabled = 0;
	s->wake_armed = 0;
	s->unsubmitted = 0;
	s->pipe_writes = 0;
	s->fifo = s->fifo_tail = NULL;
	/*
	 * The ios in flight are the parent's: the kernel may have done them
	 * already, for the parent. Never reissue (a send would go twice, a
	 * read would lose its place): they end here with CQW_EFORK.
	 */
	for (i = 0; i < s->ninflight; i++) {
		s->inflight[i]->backend_state = -1;
		cqw__loop_io_complete(loop, s->inflight[i], CQW_EFORK);
	}
	s->ninflight = 0;
	return 0;
}

static const char *
uring_features(const cqw_loop *loop)
{
	return ((const struct uring_state *)loop->backend)->features;
}

const struct cqw__backend_ops cqw__uring_backend = {
	.name = "uring",
	.init = uring_init,
	.fini = uring_fini,
	.start = uring_start,
	.flush = uring_flush,
	.wait = uring_wait,
	.cancel = uring_cancel,
	.wake = uring_wake,
	.after_fork = uring_after_fork,
	.features = uring_features,
};
