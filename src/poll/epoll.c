/*
 * The readiness backend on Linux: completions emulated with epoll, so
 * that a wait costs what is ready, not what is open. start() tries the
 * system call at once (most sends and many receives finish there); only
 * on EAGAIN does the io join its descriptor's waiting list, and wait()
 * retries the ios of the descriptors epoll reports. A pipe wakes the loop
 * from other threads. The backend is still called "poll" (the name is a
 * contract); cqw_loop_features() says "epoll". Built with -DCQW_POLL_EPOLL;
 * loop.c beside it is the same backend on poll(2), for other Unixes.
 *
 * Design notes. One entry per descriptor number (grown in attach(), so
 * that start() needs no memory) holds the ios waiting on it, oldest
 * first, and what the epoll instance has for it: registered or not, the
 * interest mask, and a generation that epoll_data carries beside the
 * number.
 *
 * - Registration is lazy: the first io that meets EAGAIN after attach()
 *   checks its descriptor's registration (EPOLL_CTL_MOD succeeds only if
 *   the number still names the open file registered; else, or if there
 *   was none, EPOLL_CTL_ADD with a new generation). It is kept across
 *   detach() and re-attach, so a connection that stays costs no
 *   epoll_ctl, and one that comes and goes once per message (loop.c lets
 *   a connection go whenever nothing of it is left in flight: a worker's,
 *   at one request in flight) one per message. For that one the check
 *   replaces the read that would say EAGAIN: when the last receives on
 *   the descriptor that tried all had to wait, the first after a
 *   re-attach does not try (but now and then one does, to notice when
 *   the data has started to be there first), and the check (which has
 *   epoll look at the file) reports what is there.
 *   If epoll_ctl fails (ENOMEM, ENOSPC: max_user_watches) the io completes
 *   with that error through the normal path; start() itself never fails.
 * - The interest is the union of what the waiting ios need (EPOLLIN for
 *   receives, peeks and accepts, EPOLLOUT for sends and connects), widened
 *   when an io needs more. A direction reported with nobody waiting is
 *   dropped then (EPOLLOUT at once: the peer's every read would wake us;
 *   EPOLLIN once the descriptor is detached).
 * - Edge-triggered. A connection closed by its user after detach() never
 *   tells the loop, and epoll forgets a registration only when the open
 *   file goes, not the descriptor: a copy held by a forked child keeps it
 *   alive, where no EPOLL_CTL_DEL can reach it any more (DEL names the
 *   descriptor, which is now closed or another file). Level-triggered,
 *   such a registration would report a pending HUP at every wait and spin
 *   the loop; edge-triggered it reports only what happens to that file,
 *   and its old generation has it ignored. Edges lose nothing here: an
 *   io waits only after its own EAGAIN, after which the next data, space
 *   or peer queues an edge, and ADD and MOD report what is ready already.
 * - Reuse: attach() marks the entry unverified, so the number's next
 *   waiting io asks the kernel, as above: an fd closed and its number
 *   reused between waits gets a registration of its own.
 * - Accepts of one listener share its entry and stop at their first
 *   EAGAIN: one peer wakes them all, and only one gets it. After an
 *   EAGAIN, further accepts on it wait without trying until its next
 *   event.
 * - fork(): the epoll instance is shared with the parent. The child never
 *   calls epoll_ctl on it (DEL there would remove the parent's
 *   registrations: they are keyed on the open file); it closes its copy,
 *   makes an instance and a wake pipe of its own, and ends every waiting
 *   io with CQW_EFORK.
 */
#define _GNU_SOURCE /* pipe2 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "common/backend.h"
#include "common/loop.h"
#include "posix/io.h"
#include "common/platform.h"
#include "poll/attempt.h"

#define WAKE_DATA UINT64_MAX
enum { EVENTS = 128 }; /* per epoll_wait; more stay queued for the next */
/*
 * epoll_start() skips a read after WAITS in a row said EAGAIN, then tries
 * one after 4 << 0..SKIPS_BACKOFF skips, less 1.
 */
enum { WAITS = 4, SKIPS_MIN = 3, SKIPS_BACKOFF = 4 };

struct fdent {
	struct cqw__io *head, *tail; /* waiting on it, oldest first */
	uint32_t gen;		     /* of its registration */
	uint32_t mask;		     /* EPOLLIN | EPOLLOUT registered */
	uint8_t registered;
	uint8_t verified;    /* registration known good since attach() */
	uint8_t attached;    /* between attach() and detach() */
	uint8_t accept_idle; /* an accept said EAGAIN; no event since */
	uint8_t waits;	     /* receives in a row here that met EAGAIN */
	uint8_t skips;	     /* receives since that did not try first */
	uint8_t backoff;     /* times the one that tried met EAGAIN again */
};

struct epoll_state {
	int epfd;
	int wake[2];
	struct fdent *fds; /* by descriptor number; grown by attach() */
	size_t cap;
};

static struct epoll_state *
state(cqw_loop *loop)
{
	return loop->backend;
}

static int
make_wake_pipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
		return -errno;
	}
	return 0;
}

static uint32_t
direction(const struct cqw__io *io)
{
	return io->op == CQW__IO_SEND || io->op == CQW__IO_CONNECT ? EPOLLOUT
								   : EPOLLIN;
}

static int
ctl(struct epoll_state *s, int op, int fd, uint32_t mask, uint32_t gen)
{
	struct epoll_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.events = mask | EPOLLET;
	ev.data.u64 = (uint64_t)gen << 32 | (uint32_t)fd;
	return epoll_ctl(s->epfd, op, fd, &ev) == 0 ? 0 : -errno;
}

/* A fresh instance with the wake pipe in it, into epfd and wake. */
static int
make_instance(int *epfd, int wake[2])
{
	struct epoll_event ev;
	int r;

	*epfd = epoll_create1(EPOLL_CLOEXEC);
	if (*epfd < 0) {
		return -errno;
	}
	r = make_wake_pipe(wake);
	if (r < 0) {
		goto out_close_ep;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLIN; /* level: drained on every report */
	ev.data.u64 = WAKE_DATA;
	if (epoll_ctl(*epfd, EPOLL_CTL_ADD, wake[0], &ev) != 0) {
		r = -errno;
		close(wake[0]);
		close(wake[1]);
		goto out_close_ep;
	}
	return 0;
out_close_ep:
	close(*epfd);
	return r;
}

static int
epoll_init(cqw_loop *loop, unsigned entries)
{
	struct epoll_state *s = calloc(1, sizeof(*s));
	int r;

	(void)entries;
	if (s == NULL) {
		return CQW_ENOMEM;
	}
	r = make_instance(&s->epfd, s->wake);
	if (r < 0) {
		free(s);
		return r;
	}
	loop->backend = s;
	return 0;
}

static void
epoll_fini(cqw_loop *loop)
{
	struct epoll_state *s = state(loop);

	close(s->epfd);
	close(s->wake[0]);
	close(s->wake[1]);
	free(s->fds);
	free(s);
	loop->backend = NULL;
}

/* The entry of handle exists from its attach() on. */
static int
epoll_attach(cqw_loop *loop, cqw_fd handle, int kind)
{
	struct epoll_state *s = state(loop);
	struct fdent *e;
	size_t cap;

	(void)kind;
	if (handle < 0) {
		return CQW_EBADF;
	}
	if ((size_t)handle >= s->cap) {
		cap = s->cap ? s->cap : 64;
		while (cap <= (size_t)handle) {
			cap *= 2;
		}
		e = realloc(s->fds, cap * sizeof(*e));
		if (e == NULL) {
			return CQW_ENOMEM;
		}
		memset(e + s->cap, 0, (cap - s->cap) * sizeof(*e));
		s->fds = e;
		s->cap = cap;
	}
	e = &s->fds[handle];
	assert(e->head == NULL);
	/* Maybe another open file under the same number: ask before waiting. */
	e->attached = 1;
	e->verified = 0;
	e->accept_idle = 0;
	return 0;
}

/* The registration stays: the next attach() has it checked. */
static int
epoll_detach(cqw_loop *loop, cqw_fd handle)
{
	struct epoll_state *s = state(loop);

	if (handle >= 0 && (size_t)handle < s->cap) {
		s->fds[handle].attached = 0;
		s->fds[handle].verified = 0;
	}
	return 0;
}

/*
 * epoll reports dir for fd from now on: 0, or the error of epoll_ctl.
 * With repoll, or when the registration is not known good, the call made
 * also has epoll look at the file now and report what is ready already.
 */
static int
want(struct epoll_state *s, struct fdent *e, int fd, uint32_t dir, int repoll)
{
	int r;

	if (e->verified && (e->mask & dir) && !repoll) {
		return 0;
	}
	if (e->registered) {
		/* Succeeds only if fd still names the file registered. */
		r = ctl(s, EPOLL_CTL_MOD, fd, e->mask | dir, e->gen);
		if (r == 0) {
			e->mask |= dir;
			e->verified = 1;
			return 0;
		}
		if (r != CQW_ENOENT) {
			return r;
		}
		e->registered = 0; /* another file under the number */
	}
	r = ctl(s, EPOLL_CTL_ADD, fd, dir, e->gen + 1);
	if (r == CQW_EEXIST) {
		/* Registered, but not by this table's account: take it over. */
		r = ctl(s, EPOLL_CTL_MOD, fd, dir, e->gen + 1);
	}
	if (r < 0) {
		return r;
	}
	e->gen++;
	e->mask = dir;
	e->registered = 1;
	e->verified = 1;
	return 0;
}

static void
append(struct fdent *e, struct cqw__io *io)
{
	io->next = NULL;
	if (e->tail != NULL) {
		e->tail->next = io;
	} else {
		e->head = io;
	}
	e->tail = io;
}

static int
is_read(const struct cqw__io *io)
{
	return io->op == CQW__IO_RECV || io->op == CQW__IO_PEEK;
}

static void
epoll_start(cqw_loop *loop, struct cqw__io *io)
{
	struct epoll_state *s = state(loop);
	struct fdent *e;
	int r, sampled = 0;

	if (io->handle < 0 || (size_t)io->handle >= s->cap) {
		assert(!"an io on a handle never attached");
		cqw__loop_io_complete(loop, io, CQW_EBADF, 0);
		return;
	}
	e = &s->fds[io->handle];
	if (is_read(io) && !e->verified && e->waits >= WAITS) {
		/*
		 * Re-attached, so the registration must be checked anyway,
		 * and the last reads here all had to wait: the check
		 * reports what is there already, in place of a read that
		 * would most likely say EAGAIN (a worker's connection, once
		 * per message). Now and then the read goes first all the
		 * same, to learn whether that still holds: after 3 skips,
		 * then after twice as many each time it did say EAGAIN, up
		 * to 63. (A peer that often answers before the read, as
		 * one that preempts us on our CPU does, seldom makes WAITS
		 * in a row.)
		 */
		if (e->skips < ((SKIPS_MIN + 1) << e->backoff) - 1) {
			e->skips++;
			r = want(s, e, io->handle, EPOLLIN, 1);
			goto out_wait;
		}
		e->skips = 0;
		sampled = 1;
	}
	if (!(io->op == CQW__IO_ACCEPT && e->accept_idle)) {
		if (cqw__poll_attempt(loop, io)) {
			if (is_read(io)) {
				e->waits = 0;
				e->backoff = 0;
			}
			return;
		}
		if (io->op == CQW__IO_ACCEPT) {
			e->accept_idle = 1;
		}
		if (is_read(io)) {
			e->waits += e->waits < WAITS;
			if (sampled && e->backoff < SKIPS_BACKOFF) {
				e->backoff++;
			}
		}
	}
	r = want(s, e, io->handle, direction(io), 0);
out_wait:
	if (r < 0) {
		cqw__loop_io_complete(loop, io, r, 0); /* never lost */
		return;
	}
	append(e, io);
}

static int
epoll_flush(cqw_loop *loop)
{
	(void)loop;
	return 0;
}

static void
drain_wake(struct epoll_state *s)
{
	char buf[64];

	while (read(s->wake[0], buf, sizeof(buf)) > 0) {
	}
}

/* fd reported events: retry its ios that may go on; keep the rest. */
static void
ready(cqw_loop *loop, struct epoll_state *s, struct fdent *e, int fd,
      uint32_t events)
{
	struct cqw__io *io, *next;
	uint32_t rdy = 0, need = 0, drop;
	int accepts_stop = 0, r;

	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
		rdy |= EPOLLIN;
		e->accept_idle = 0;
	}
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		rdy |= EPOLLOUT;
	}
	io = e->head;
	e->head = e->tail = NULL;
	for (; io != NULL; io = next) {
		next = io->next; /* a completion relinks io */
		if ((direction(io) & rdy) &&
		    !(io->op == CQW__IO_ACCEPT && accepts_stop)) {
			if (cqw__poll_attempt(loop, io)) {
				continue;
			}
			if (io->op == CQW__IO_ACCEPT) {
				accepts_stop = 1;
				e->accept_idle = 1;
			}
		}
		need |= direction(io);
		append(e, io);
	}
	/* A direction that fired for nobody (see the notes on top). */
	drop = e->mask & rdy & ~need;
	if (e->attached) {
		drop &= EPOLLOUT;
	}
	if (drop == 0) {
		return;
	}
	r = ctl(s, EPOLL_CTL_MOD, fd, e->mask & ~drop, e->gen);
	if (r == 0) {
		e->mask &= ~drop;
	}
	if (r != CQW_ENOENT && r != CQW_EBADF) {
		return; /* dropped, or left for the next event (ENOMEM) */
	}
	/*
	 * The number no longer names the file registered: closed under the
	 * loop. What still waits on it ends rather than wait forever.
	 */
	e->registered = 0;
	e->verified = 0;
	io = e->head;
	e->head = e->tail = NULL;
	for (; io != NULL; io = next) {
		next = io->next;
		cqw__loop_io_complete(loop, io, CQW_EBADF, 0);
	}
}

static int
epoll_wait_(cqw_loop *loop, int timeout_ms)
{
	struct epoll_state *s = state(loop);
	struct epoll_event ev[EVENTS];
	int i, n, woken = 0;

	/* Completions are already waiting to be processed: do not block. */
	if (loop->iodone != NULL) {
		timeout_ms = 0;
	}
	n = epoll_wait(s->epfd, ev, EVENTS, timeout_ms);
	if (n < 0) {
		if (errno != EINTR) {
			return -errno;
		}
		/* The caller waits again with the time left, unless told. */
		return timeout_ms != 0 && cqw__eintr_stop() ? CQW_EINTR : 0;
	}
	for (i = 0; i < n; i++) {
		uint64_t d = ev[i].data.u64;
		uint32_t fd = (uint32_t)d;
		struct fdent *e;

		if (d == WAKE_DATA) {
			drain_wake(s);
			woken = 1;
			continue;
		}
		if (fd >= s->cap) {
			continue;
		}
		e = &s->fds[fd];
		/* An old generation: a file no longer under this number. */
		if (!e->registered || e->gen != (uint32_t)(d >> 32)) {
			continue;
		}
		ready(loop, s, e, (int)fd, ev[i].events);
	}
	return woken;
}

static void
epoll_cancel(cqw_loop *loop, struct cqw__io *io)
{
	struct epoll_state *s = state(loop);
	struct cqw__io *prev = NULL, *it;
	struct fdent *e;

	if (io->handle < 0 || (size_t)io->handle >= s->cap) {
		return;
	}
	e = &s->fds[io->handle];
	for (it = e->head; it != NULL; prev = it, it = it->next) {
		if (it != io) {
			continue;
		}
		if (prev != NULL) {
			prev->next = io->next;
		} else {
			e->head = io->next;
		}
		if (e->tail == io) {
			e->tail = prev;
		}
		/* The interest stays until an event shows nobody wants it. */
		cqw__loop_io_complete(loop, io, CQW_ECANCELED, 0);
		return;
	}
	/* Not waiting: it already completed and is queued. */
}

static int
epoll_wake(cqw_loop *loop)
{
	struct epoll_state *s = state(loop);
	char one = 1;

	if (write(s->wake[1], &one, 1) < 0 && errno != EAGAIN) {
		return -errno;
	}
	return 0;
}

static int
epoll_after_fork(cqw_loop *loop)
{
	struct epoll_state *s = state(loop);
	struct cqw__io *io, *next;
	int epfd, wake[2], r;
	size_t i;

	r = make_instance(&epfd, wake);
	if (r < 0) {
		return r; /* nothing touched: the next use tries again */
	}
	/*
	 * Closing the child's copy of the parent's instance leaves its
	 * interest list alone; only epoll_ctl on it would not.
	 */
	close(s->epfd);
	close(s->wake[0]);
	close(s->wake[1]);
	s->epfd = epfd;
	s->wake[0] = wake[0];
	s->wake[1] = wake[1];
	/*
	 * The waiting ios are the parent's too, which goes on with them:
	 * end the child's copies rather than race it for the same bytes.
	 * Nothing is registered in the new instance.
	 */
	for (i = 0; i < s->cap; i++) {
		struct fdent *e = &s->fds[i];

		for (io = e->head; io != NULL; io = next) {
			next = io->next; /* completing relinks io */
			cqw__loop_io_complete(loop, io, CQW_EFORK, 0);
		}
		e->head = e->tail = NULL;
		e->registered = 0;
		e->verified = 0;
		e->mask = 0;
		e->accept_idle = 0;
		e->waits = 0;
		e->skips = 0;
		e->backoff = 0;
	}
	return 0;
}

static const char *
epoll_features(const cqw_loop *loop)
{
	(void)loop;
	return "epoll";
}

const struct cqw__backend_ops cqw__poll_backend = {
	.name = "poll",
	.init = epoll_init,
	.fini = epoll_fini,
	.attach = epoll_attach,
	.detach = epoll_detach,
	.start = epoll_start,
	.flush = epoll_flush,
	.wait = epoll_wait_,
	.cancel = epoll_cancel,
	.wake = epoll_wake,
	.after_fork = epoll_after_fork,
	.features = epoll_features,
};
