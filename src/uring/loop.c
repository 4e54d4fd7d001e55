/*
 * The io_uring backend (liburing). One ring per loop, made with the best
 * setup flags the kernel takes: SINGLE_ISSUER|DEFER_TASKRUN (completion
 * work runs only when we ask for events, so the loop is not interrupted),
 * then COOP_TASKRUN, then none (CQW_URING_SETUP forces one). The ring fd
 * is registered, and the operations we need are probed, not assumed from
 * a version.
 *
 * Every started io takes a slot in a table; its SQE's user_data is the
 * slot's index and a generation that changes at every start, so that a
 * cancel names one submission and can never hit the next io started on
 * the same struct (the channel reuses one per direction). start() and
 * cancel() only fill free SQ entries and never enter the kernel: what
 * does not fit waits in a FIFO (ios) or a queue (cancels) that flush and
 * wait drain, submitting as often as they must. start() never fails.
 *
 * A slot's io is in one of three places: the FIFO, the kernel (an SQE
 * given, maybe not submitted yet), or nowhere (the slot is free). A pipe
 * write in the kernel is either the write itself or a poll for POLLOUT
 * (see prep_io() for why). Timed waits use io_uring_enter's extended
 * argument, or on kernels without it (5.10) a timeout SQE of ours. A
 * read on an eventfd stays armed for cqw_loop_wake().
 *
 * CQW_EXCLUSIVE sockets receive with one multishot RECV each on a ring of
 * buffers the loop provides (struct pbufs: PB_COUNT of PB_SIZE, shared by
 * every connection, registered the first time one is armed). A buffer a
 * completion names goes on its io's list (linked by buffer id, oldest
 * first) until the framer gives it back, which puts it in the ring again
 * at once. A connection holds buffers only while it has bytes nobody took
 * yet; when the ring is empty the kernel ends that receive (ENOBUFS) and
 * the framer reads once the plain way (stream.c). Where the kernel lacks
 * buffer rings or multishot receive (or CQW_URING_NO_MULTISHOT=1), the
 * first arm says CQW_EOPNOTSUPP and the framer never asks again.
 *
 * After fork() the child must not touch the parent's ring (its SQEs would
 * run in the parent's queue): after_fork() builds a new ring, drops the
 * child's mapping of the old one without submitting anything, and ends
 * every io the old one had (in the FIFO or in the kernel) with CQW_EFORK:
 * they are the parent's. Queued cancels go with them.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/backend.h"
#include "common/loop.h"
#include "posix/io.h"
#include "common/platform.h"

/*
 * liburing 2.3 has every constant used here; none is defined locally. One
 * function is missing from its library (see ensure_enabled()).
 */

/*
 * user_data of our own SQEs. Those of ios carry a generation >= 1 in the
 * high half, so they never collide with these (nor with liburing's
 * LIBURING_UDATA_TIMEOUT, all ones, which we never ask for).
 */
#define TAG_WAKE ((uint64_t)1)	  /* the eventfd read */
#define TAG_CANCEL ((uint64_t)2)  /* cancel requests */
#define TAG_TIMEOUT ((uint64_t)3) /* wait timeouts without EXT_ARG */

#define NO_SLOT UINT32_MAX

/* The kernel refused RWF_NOWAIT on this io's descriptor (backend_priv[0]). */
#define NOWAIT_REFUSED ((uint64_t)0x6e6f776169747321)

enum { SLOT_FREE = 0, SLOT_FIFO, SLOT_KERNEL };

/* The kernel's minimum wait, where it has one (6.12 and later). */
#ifndef IORING_FEAT_MIN_TIMEOUT
#define FEAT_MIN_TIMEOUT (1U << 15)
#else
#define FEAT_MIN_TIMEOUT IORING_FEAT_MIN_TIMEOUT
#endif
/*
 * How long a reap for several completions waits for more than the first
 * (enter_min): about the time a worker takes to answer on this machine.
 */
#define MIN_WAIT_US 50u

/* The provided buffers (see the top). PB_COUNT: a power of two. */
#define PB_COUNT 256u
#define PB_SIZE CQW__PBUF_SIZE
#define PB_BGID 0
#define PB_NONE 0xffffu

struct pbufs {
	struct io_uring_buf_ring *br; /* PB_COUNT entries, page-aligned */
	uint8_t *mem;		      /* PB_COUNT * PB_SIZE */
	uint16_t next[PB_COUNT];      /* an io's list, by buffer id */
	uint32_t len[PB_COUNT];	      /* bytes in each */
	int registered;		      /* with the current ring */
};

/* An io's list of buffers, in its backend area (receives use no msghdr). */
struct pblist {
	uint16_t head, tail;
	uint32_t count;
};

_Static_assert(sizeof(struct pblist) <=
		   sizeof(((struct cqw__io *)0)->backend_priv),
	       "a buffer list fits an io's backend area");

struct slot {
	struct cqw__io *io; /* NULL: free (or waiting for its cancel entry) */
	uint32_t gen;	    /* of the current submission */
	uint32_t next;	    /* the free list, or the cancel queue */
	uint8_t where;	    /* SLOT_* */
	uint8_t polling;    /* a pipe write waiting for POLLOUT */
	uint8_t nowait;	    /* the SQE is a RWF_NOWAIT pipe write */
	uint8_t cancel;	    /* in the cancel queue */
};

struct uring_state {
	struct io_uring ring;
	unsigned entries;
	struct slot *slots;
	uint32_t nslots, free_head;
	uint32_t cancel_head, cancel_tail; /* cancels waiting for SQ room */
	struct cqw__io *fifo, *fifo_tail;  /* ios waiting for SQ room */
	unsigned nowait_sqes; /* RWF_NOWAIT pipe writes not yet submitted */
	unsigned epipes;      /* of those, how many ended in EPIPE */
	struct __kernel_timespec ts; /* of the timeout SQE (no EXT_ARG) */
	int wakefd;
	uint64_t wakebuf;
	int wake_armed;
	int woken;	 /* the wake read completed; wait() reports it */
	int enabled;	 /* rings enabled by the thread that uses the loop */
	pthread_t owner; /* that thread: the ring's single issuer */
	int setup;	 /* SETUP_* from CQW_URING_SETUP */
	int ext_arg;  /* timed waits use io_uring_enter's extended argument */
	int min_wait; /* the kernel bounds a wait for several (see wait_one) */
	struct pbufs *pb;  /* made at the first multishot receive */
	int multi;	   /* 1 may, 0 not known yet, -1 may not (see top) */
	char features[96]; /* what cqw_loop_features() reports */
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
	snprintf(s->features, sizeof(s->features), "%s%s%s%s%s",
		 flags & IORING_SETUP_SINGLE_ISSUER ? "single_issuer," : "",
		 flags & IORING_SETUP_DEFER_TASKRUN ? "defer_taskrun," : "",
		 flags & IORING_SETUP_COOP_TASKRUN ? "coop_taskrun," : "",
		 s->ext_arg ? "ext_arg," : "", s->min_wait ? "min_wait," : "");
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
		IORING_OP_READ,	   IORING_OP_WRITEV,	   IORING_OP_SENDMSG,
		IORING_OP_RECV,	   IORING_OP_ASYNC_CANCEL, IORING_OP_POLL_ADD,
		IORING_OP_TIMEOUT,
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
	/*
	 * A filter may let io_uring_setup through and refuse the calls that
	 * use the ring (seccomp): ask io_uring_enter once. The ring is still
	 * disabled, so a kernel that allows it answers EBADFD and does
	 * nothing; a refusal ends the search here, as for setup.
	 */
	if (syscall(__NR_io_uring_enter, s->ring.ring_fd, 0, 0, 0, NULL, 0) <
		0 &&
	    (errno == EPERM || errno == ENOSYS || errno == EACCES)) {
		r = -errno;
		goto out_exit;
	}
	errno = 0;
	probe = io_uring_get_probe_ring(&s->ring);
	if (probe == NULL) {
		/* Out of memory is not "io_uring is missing". */
		r = errno == ENOMEM ? -ENOMEM : -ENOSYS;
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
		/* So that no liburing call of ours uses it either. */
		s->ring.features &= ~IORING_FEAT_EXT_ARG;
	}
	s->min_wait = s->ext_arg && (p.features & FEAT_MIN_TIMEOUT) != 0;
	set_features(s, p.flags);
	return 0;

out_exit:
	io_uring_queue_exit(&s->ring);
	return r;
}

static struct pblist *
pb_list(struct cqw__io *io)
{
	return (struct pblist *)io->backend_priv;
}

static void
pb_free(struct uring_state *s)
{
	if (s->pb == NULL) {
		return;
	}
	munmap(s->pb->br, PB_COUNT * sizeof(struct io_uring_buf));
	munmap(s->pb->mem, (size_t)PB_COUNT * PB_SIZE);
	free(s->pb);
	s->pb = NULL;
}

/* Every buffer into the ring (none is on a list). */
static void
pb_fill(struct pbufs *pb)
{
	unsigned i;

	io_uring_buf_ring_init(pb->br);
	for (i = 0; i < PB_COUNT; i++) {
		io_uring_buf_ring_add(pb->br, pb->mem + (size_t)i * PB_SIZE,
				      PB_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(PB_COUNT), (int)i);
	}
	io_uring_buf_ring_advance(pb->br, PB_COUNT);
}

/*
 * The buffer ring, made and registered the first time: 0, or an error
 * (CQW_EOPNOTSUPP where the kernel has no buffer rings: never again).
 */
static int
pb_ready(struct uring_state *s)
{
	struct io_uring_buf_reg reg;
	struct pbufs *pb = s->pb;
	const char *no = getenv("CQW_URING_NO_MULTISHOT");
	int r;

	if (s->multi < 0 || (no != NULL && strcmp(no, "1") == 0)) {
		s->multi = -1;
		return CQW_EOPNOTSUPP;
	}
	if (pb == NULL) {
		pb = calloc(1, sizeof(*pb));
		if (pb == NULL) {
			return CQW_ENOMEM;
		}
		pb->br = mmap(NULL, PB_COUNT * sizeof(struct io_uring_buf),
			      PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		pb->mem = mmap(NULL, (size_t)PB_COUNT * PB_SIZE,
			       PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		s->pb = pb;
		if (pb->br == MAP_FAILED || pb->mem == MAP_FAILED) {
			if (pb->br == MAP_FAILED) {
				pb->br = NULL;
			}
			if (pb->mem == MAP_FAILED) {
				pb->mem = NULL;
			}
			pb_free(s);
			return CQW_ENOMEM;
		}
		pb_fill(pb);
	}
	if (!pb->registered) {
		memset(&reg, 0, sizeof(reg));
		reg.ring_addr = (uint64_t)(uintptr_t)pb->br;
		reg.ring_entries = PB_COUNT;
		reg.bgid = PB_BGID;
		r = io_uring_register_buf_ring(&s->ring, &reg, 0);
		if (r == -EINVAL || r == -ENOSYS || r == -EOPNOTSUPP) {
			s->multi = -1;
			return CQW_EOPNOTSUPP;
		}
		if (r < 0) {
			return r;
		}
		pb->registered = 1;
		if (strstr(s->features, "recv_multishot") == NULL &&
		    strlen(s->features) + 16 < sizeof(s->features)) {
			strcat(s->features, s->features[0] != '\0'
						? ",recv_multishot"
						: "recv_multishot");
		}
	}
	return 0;
}

static void
pb_append(struct pbufs *pb, struct cqw__io *io, unsigned bid, int len)
{
	struct pblist *l = pb_list(io);

	pb->next[bid] = PB_NONE;
	pb->len[bid] = (uint32_t)len;
	if (l->count++ == 0) {
		l->head = (uint16_t)bid;
	} else {
		pb->next[l->tail] = (uint16_t)bid;
	}
	l->tail = (uint16_t)bid;
}

static void
pb_recycle(struct pbufs *pb, unsigned bid)
{
	io_uring_buf_ring_add(pb->br, pb->mem + (size_t)bid * PB_SIZE, PB_SIZE,
			      (unsigned short)bid,
			      io_uring_buf_ring_mask(PB_COUNT), 0);
	io_uring_buf_ring_advance(pb->br, 1);
}

static size_t
uring_buf_next(cqw_loop *loop, struct cqw__io *io, uint8_t **p, unsigned *held)
{
	struct pbufs *pb = state(loop)->pb;
	struct pblist *l = pb_list(io);

	*held = l->count;
	if (l->count == 0) {
		return 0;
	}
	*p = pb->mem + (size_t)l->head * PB_SIZE;
	return pb->len[l->head];
}

static void
uring_buf_put(cqw_loop *loop, struct cqw__io *io)
{
	struct pbufs *pb = state(loop)->pb;
	struct pblist *l = pb_list(io);
	unsigned bid = l->head;

	if (l->count == 0) {
		return;
	}
	l->head = pb->next[bid];
	l->count--;
	pb_recycle(pb, bid);
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
	s->free_head = s->cancel_head = s->cancel_tail = NO_SLOT;
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
	pb_free(s);
	free(s->slots);
	free(s);
	loop->backend = NULL;
}

static uint64_t
udata(const struct uring_state *s, uint32_t i)
{
	return (uint64_t)s->slots[i].gen << 32 | i;
}

/* A slot for io, with a new generation; CQW_ENOMEM if none can be had. */
static int
slot_get(struct uring_state *s, struct cqw__io *io)
{
	struct slot *sl;
	uint32_t i;

	if (s->free_head == NO_SLOT) {
		uint32_t n = s->nslots ? s->nslots * 2 : 64;
		struct slot *ns = realloc(s->slots, n * sizeof(*ns));

		if (n <= s->nslots || ns == NULL) {
			return CQW_ENOMEM;
		}
		memset(ns + s->nslots, 0, (n - s->nslots) * sizeof(*ns));
		/* Indices, not pointers, link slots: realloc is safe. */
		for (i = n; i-- > s->nslots;) {
			ns[i].next = s->free_head;
			s->free_head = i;
		}
		s->slots = ns;
		s->nslots = n;
	}
	i = s->free_head;
	sl = &s->slots[i];
	s->free_head = sl->next;
	/* 0 is our tags' generation; all ones would be liburing's tag. */
	if (++sl->gen == UINT32_MAX) {
		sl->gen = 1;
	}
	sl->io = io;
	sl->where = SLOT_FREE;
	sl->polling = 0;
	sl->nowait = 0;
	io->backend_state = (int)i;
	return 0;
}

/*
 * The io is done with its slot. A slot still in the cancel queue is
 * freed when the queue reaches it, so that the queue never holds a slot
 * twice.
 */
static void
slot_put(struct uring_state *s, uint32_t i)
{
	struct slot *sl = &s->slots[i];

	sl->io->backend_state = -1;
	sl->io = NULL;
	sl->where = SLOT_FREE;
	if (!sl->cancel) {
		sl->next = s->free_head;
		s->free_head = i;
	}
}

/* The slot of io, or NO_SLOT if the io is not ours (any more). */
static uint32_t
slot_of(const struct uring_state *s, const struct cqw__io *io)
{
	uint32_t i = (uint32_t)io->backend_state;

	if (io->backend_state < 0 || i >= s->nslots || s->slots[i].io != io) {
		return NO_SLOT;
	}
	return i;
}

/* The io of slot i ends with result. */
static void
finish(cqw_loop *loop, uint32_t i, int64_t result)
{
	struct uring_state *s = state(loop);
	struct cqw__io *io = s->slots[i].io;

	slot_put(s, i);
	if (io->queued) {
		/* A multishot's completion waits: it becomes the last. */
		io->result = result;
		io->flags = 0;
		return;
	}
	cqw__loop_io_complete(loop, io, result, 0);
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
	s->owner = pthread_self();
	s->enabled = 1;
	return 0;
}

/*
 * Only the thread that enabled the ring may enter it: with SINGLE_ISSUER
 * the kernel says -EEXIST to any other, and on every flag set the
 * registered ring fd is that thread's alone. Refused here with CQW_EBUSY
 * before anything is touched, so a wrong thread never looks like success
 * and never makes the ring look broken.
 */
static int
check_owner(const struct uring_state *s)
{
	if (s->enabled && !pthread_equal(s->owner, pthread_self())) {
		return CQW_EBUSY;
	}
	return 0;
}

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
	s->slots[io->backend_state].where = SLOT_FIFO;
}

static struct cqw__io *
fifo_pop(struct uring_state *s)
{
	struct cqw__io *io = s->fifo;

	if (io != NULL) {
		s->fifo = io->next;
		if (s->fifo == NULL) {
			s->fifo_tail = NULL;
		}
	}
	return io;
}

static void
fifo_remove(struct uring_state *s, struct cqw__io *io)
{
	struct cqw__io **pp, *prev = NULL;

	for (pp = &s->fifo; *pp != NULL; prev = *pp, pp = &(*pp)->next) {
		if (*pp == io) {
			*pp = io->next;
			if (s->fifo_tail == io) {
				s->fifo_tail = prev;
			}
			return;
		}
	}
}

/*
 * The SQE for slot i's io. Pipe writes go with RWF_NOWAIT, and when the
 * pipe is full we poll for POLLOUT ourselves and write again: a write
 * that io_uring retried on its own would run as task work, which on
 * COOP_TASKRUN and plain rings runs at any return of ours to user space,
 * and a reader gone by then raises SIGPIPE where nothing holds it off.
 * This way a pipe write runs only inline, inside a submit of ours that
 * holds SIGPIPE (see submit_guarded()). A descriptor that refuses
 * RWF_NOWAIT (EOPNOTSUPP) is written without it: io_uring then punts the
 * write to an io-wq worker, whose signals are all blocked.
 */
static void
prep_io(struct io_uring_sqe *sqe, struct uring_state *s, uint32_t i)
{
	struct slot *sl = &s->slots[i];
	struct cqw__io *io = sl->io;

	sl->where = SLOT_KERNEL;
	sl->nowait = 0;
	if (sl->polling) {
		io_uring_prep_poll_add(sqe, io->handle, POLLOUT);
	} else if (io->op == CQW__IO_PEEK) {
		io_uring_prep_recv(sqe, io->handle, io->buf, io->len, MSG_PEEK);
	} else if (io->op == CQW__IO_ACCEPT) {
		io_uring_prep_accept(sqe, io->handle, NULL, NULL, SOCK_CLOEXEC);
	} else if (io->op == CQW__IO_CONNECT) {
		/* The connect is begun (EINPROGRESS): wait for its end. */
		io_uring_prep_poll_add(sqe, io->handle, POLLOUT);
	} else if (io->op == CQW__IO_RECV_MULTI) {
		io_uring_prep_recv_multishot(sqe, io->handle, NULL, 0, 0);
		sqe->flags |= IOSQE_BUFFER_SELECT;
		sqe->buf_group = PB_BGID;
	} else if (io->op == CQW__IO_RECV) {
		if (io->kind == CQW__FD_SOCK) {
			/* A payload begun completes once, not per segment. */
			io_uring_prep_recv(sqe, io->handle, io->buf, io->len,
					   io->all ? MSG_WAITALL : 0);
		} else {
			io_uring_prep_read(sqe, io->handle, io->buf,
					   (unsigned)io->len, (uint64_t)-1);
		}
	} else if (io->kind == CQW__FD_SOCK) {
		struct msghdr *m = (struct msghdr *)io->backend_priv;

		memset(m, 0, sizeof(*m));
		m->msg_iov = io->iov;
		m->msg_iovlen = (size_t)io->iovcnt;
		/* The whole gather in one completion (a large one too). */
		io_uring_prep_sendmsg(sqe, io->handle, m,
				      MSG_NOSIGNAL | MSG_WAITALL);
	} else {
		io_uring_prep_writev(sqe, io->handle, io->iov,
				     (unsigned)io->iovcnt, (uint64_t)-1);
		if (io->backend_priv[0] != NOWAIT_REFUSED) {
			sqe->rw_flags = RWF_NOWAIT;
			sl->nowait = 1;
			s->nowait_sqes++;
		}
	}
	io_uring_sqe_set_data64(sqe, udata(s, i));
}

/* Into the SQ if there is room and nobody is waiting, else the FIFO. */
static void
queue_io(struct uring_state *s, uint32_t i)
{
	struct io_uring_sqe *sqe = NULL;

	if (s->fifo == NULL) {
		sqe = io_uring_get_sqe(&s->ring);
	}
	if (sqe == NULL) {
		fifo_push(s, s->slots[i].io);
		return;
	}
	prep_io(sqe, s, i);
}

static void
uring_start(cqw_loop *loop, struct cqw__io *io)
{
	struct uring_state *s = state(loop);
	int r = 0;

	if (io->op == CQW__IO_RECV_MULTI) {
		/* The framer arms one only when its list is empty. */
		memset(pb_list(io), 0, sizeof(struct pblist));
		r = pb_ready(s);
	}
	if (r == 0) {
		r = slot_get(s, io);
	}
	if (r < 0) {
		cqw__loop_io_complete(loop, io, r, 0);
		return;
	}
	queue_io(s, (uint32_t)io->backend_state);
}

static void
arm_wake(struct uring_state *s)
{
	struct io_uring_sqe *sqe;

	if (s->wake_armed) {
		return;
	}
	sqe = io_uring_get_sqe(&s->ring);
	if (sqe == NULL) {
		return; /* next time */
	}
	io_uring_prep_read(sqe, s->wakefd, &s->wakebuf, sizeof(s->wakebuf), 0);
	io_uring_sqe_set_data64(sqe, TAG_WAKE);
	s->wake_armed = 1;
}

/*
 * A CQE of a multishot receive: its buffer on the io's list, and the
 * framer told, once per stay on the loop's list (backend.h).
 */
static void
multi_cqe(cqw_loop *loop, uint32_t i, int res, unsigned flags)
{
	struct uring_state *s = state(loop);
	struct cqw__io *io = s->slots[i].io;
	int64_t result;

	if (flags & IORING_CQE_F_BUFFER) {
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && !s->slots[i].io->conn->closing) {
			pb_append(s->pb, io, bid, res);
		} else {
			pb_recycle(s->pb, bid);
		}
	}
	if (flags & IORING_CQE_F_MORE) {
		if (res > 0 && !io->queued) {
			cqw__loop_io_complete(loop, io, 1,
					      CQW__CF_MORE | CQW__CF_BUFFER);
		}
		return;
	}
	/* The last: ended (bytes, or no buffer free), end of file, error. */
	if (res > 0 || res == -ENOBUFS) {
		result = 1;
	} else if (res == -EINVAL && pb_list(io)->count == 0) {
		s->multi = -1; /* a kernel with buffer rings, not this */
		result = CQW_EOPNOTSUPP;
	} else {
		result = res;
	}
	if (res != -EINVAL) {
		s->multi = 1;
	}
	slot_put(s, i);
	if (io->queued) {
		io->result = result;
		io->flags = 0;
	} else {
		cqw__loop_io_complete(loop, io, result, 0);
	}
}

/* One CQE of slot i's io: finish it, or take its next step. */
static void
io_cqe(cqw_loop *loop, uint32_t i, int res, unsigned flags)
{
	struct uring_state *s = state(loop);
	struct slot *sl = &s->slots[i];
	struct cqw__io *io = sl->io;

	if (io->op == CQW__IO_RECV_MULTI) {
		multi_cqe(loop, i, res, flags);
		return;
	}

	if (sl->polling) {
		/* Writable, or the reader is gone (POLLERR): write again. */
		if (res < 0) {
			finish(loop, i, res);
			return;
		}
		sl->polling = 0;
		queue_io(s, i);
		return;
	}
	if (sl->nowait) {
		if (res == -EAGAIN) {
			sl->polling = 1;
			queue_io(s, i);
			return;
		}
		if (res == -EOPNOTSUPP) {
			io->backend_priv[0] = NOWAIT_REFUSED;
			queue_io(s, i);
			return;
		}
		if (res == -EPIPE) {
			s->epipes++; /* and SIGPIPE is pending on us */
		}
	}
	if (io->op == CQW__IO_CONNECT && res >= 0) {
		res = cqw__io_connected(io->handle); /* res was a poll mask */
	}
	finish(loop, i, res);
}

static void
reap_cqes(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;

	io_uring_for_each_cqe(&s->ring, head, cqe)
	{
		uint64_t tag = io_uring_cqe_get_data64(cqe);
		uint32_t i = (uint32_t)tag;

		n++;
		if (tag == TAG_WAKE) {
			s->wake_armed = 0;
			s->woken = 1;
			continue;
		}
		/* Cancels and timeouts are only means to an end. */
		if (tag >> 32 == 0 || tag == LIBURING_UDATA_TIMEOUT) {
			continue;
		}
		if (i >= s->nslots || s->slots[i].io == NULL ||
		    s->slots[i].gen != (uint32_t)(tag >> 32)) {
			continue; /* cannot happen: each io completes once */
		}
		io_cqe(loop, i, cqe->res, cqe->flags);
	}
	io_uring_cq_advance(&s->ring, n);
}

/*
 * Take every CQE there is, including those the kernel kept aside when
 * the CQ was full (IORING_FEAT_NODROP): the SIGPIPE guard must see every
 * EPIPE before it lets the mask go.
 */
static int
reap_all(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	int r;

	for (;;) {
		reap_cqes(loop);
		if (!io_uring_cq_has_overflow(&s->ring)) {
			return 0;
		}
		r = io_uring_get_events(&s->ring);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
			return r;
		}
	}
}

/*
 * What io_uring_enter said: 0 for the transient ones (a timeout, a
 * signal, kernel memory short: the caller retries), CQW_EBUSY for the
 * wrong thread (check_owner() should have caught it), or the error.
 */
static int
enter_result(int r)
{
	if (r >= 0 || r == -ETIME || r == -EINTR || r == -EAGAIN ||
	    r == -EBUSY) {
		return 0;
	}
	return r == -EEXIST ? CQW_EBUSY : r;
}

/* Dequeue the pending SIGPIPE (the thread's own before the process's). */
static void
take_sigpipe(const sigset_t *pipeset)
{
	static const struct timespec zero = { 0, 0 };

	while (sigtimedwait(pipeset, NULL, &zero) < 0 && errno == EINTR) {
	}
}

/*
 * Submit what is in the SQ and collect completions without sleeping. When
 * the SQ holds RWF_NOWAIT pipe writes they run right here, in our task,
 * and one whose reader is gone raises SIGPIPE on this thread: SIGPIPE is
 * blocked for exactly this call, and taken back only if one of our writes
 * ended in EPIPE, so that a SIGPIPE sent to the program meanwhile is still
 * delivered. No sleep happens with the signal blocked.
 */
static int
submit_guarded(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	sigset_t pipeset, old, pending;
	unsigned epipes = s->epipes;
	int guard = s->nowait_sqes > 0, was_pending = 0, r, r2;

	if (guard) {
		sigemptyset(&pipeset);
		sigaddset(&pipeset, SIGPIPE);
		pthread_sigmask(SIG_BLOCK, &pipeset, &old);
		/* Held off by the program already: one may be its own. */
		if (sigismember(&old, SIGPIPE)) {
			sigpending(&pending);
			was_pending = sigismember(&pending, SIGPIPE);
		}
	}
	r = io_uring_submit_and_get_events(&s->ring);
	if (io_uring_sq_ready(&s->ring) == 0) {
		s->nowait_sqes = 0;
	}
	r2 = reap_all(loop);
	if (guard) {
		if (s->epipes != epipes && !was_pending) {
			/* Ours is the thread's own, and goes first. */
			sigpending(&pending);
			if (sigismember(&pending, SIGPIPE)) {
				take_sigpipe(&pipeset);
			}
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	r = enter_result(r);
	return r < 0 ? r : r2;
}

/* Put queued cancels and ios into the SQ, submitting to make room. */
static int
drain(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	struct io_uring_sqe *sqe;
	struct cqw__io *io;
	struct slot *sl;
	uint32_t i;
	int r;

	for (;;) {
		while ((i = s->cancel_head) != NO_SLOT) {
			sl = &s->slots[i];
			sqe = NULL;
			if (sl->io != NULL && sl->where == SLOT_KERNEL) {
				sqe = io_uring_get_sqe(&s->ring);
				if (sqe == NULL) {
					break;
				}
			}
			s->cancel_head = sl->next;
			if (s->cancel_head == NO_SLOT) {
				s->cancel_tail = NO_SLOT;
			}
			sl->cancel = 0;
			if (sl->io == NULL) {
				/* Done meanwhile; its slot is free now. */
				sl->next = s->free_head;
				s->free_head = i;
			} else if (sl->where == SLOT_FIFO) {
				/* Back in the FIFO for its next step. */
				fifo_remove(s, sl->io);
				finish(loop, i, CQW_ECANCELED);
			} else {
				io_uring_prep_cancel64(sqe, udata(s, i), 0);
				io_uring_sqe_set_data64(sqe, TAG_CANCEL);
			}
		}
		while (s->fifo != NULL &&
		       (sqe = io_uring_get_sqe(&s->ring)) != NULL) {
			io = fifo_pop(s);
			prep_io(sqe, s, (uint32_t)io->backend_state);
		}
		if (s->fifo == NULL && s->cancel_head == NO_SLOT) {
			return 0;
		}
		r = ensure_enabled(s);
		if (r < 0) {
			return r;
		}
		r = submit_guarded(loop);
		if (r < 0) {
			return r;
		}
		if (io_uring_sq_space_left(&s->ring) == 0) {
			return 0; /* the kernel took nothing: next time */
		}
	}
}

static int
uring_flush(cqw_loop *loop)
{
	struct uring_state *s = state(loop);
	int r = check_owner(s);

	if (r == 0) {
		r = drain(loop);
	}
	if (r < 0 || io_uring_sq_ready(&s->ring) == 0) {
		return r;
	}
	r = ensure_enabled(s);
	return r < 0 ? r : submit_guarded(loop);
}

/* s->ts, the timespec the next enter points at, for timeout_ms >= 0. */
static struct __kernel_timespec *
set_ts(struct uring_state *s, int timeout_ms)
{
	s->ts.tv_sec = timeout_ms / 1000;
	s->ts.tv_nsec = (long long)(timeout_ms % 1000) * 1000000;
	return &s->ts;
}

/*
 * Submit and sleep until want completions, or timeout_ms (-1: no limit),
 * in one io_uring_enter, with the kernel's minimum wait (IORING_FEAT_
 * MIN_TIMEOUT, 6.12): once MIN_WAIT_US have passed it returns with what
 * there is, or, with none, at the first that comes. So a completion that
 * needs a step of ours before the next can come costs at most
 * MIN_WAIT_US, never the timeout. With no general timeout the kernel
 * would return at MIN_WAIT_US even with nothing (an idle loop would wake
 * every 50 us): "no limit" is an hour here, and the caller waits again.
 * liburing 2.3 has no call for it: the SQ tail is published here as
 * io_uring_submit() does.
 */
static int
enter_min(struct uring_state *s, unsigned want, int timeout_ms)
{
	struct io_uring_sq *sq = &s->ring.sq;
	struct io_uring_getevents_arg arg;

	if (sq->sqe_head != sq->sqe_tail) {
		sq->sqe_head = sq->sqe_tail;
		io_uring_smp_store_release(sq->ktail, sq->sqe_tail);
	}
	memset(&arg, 0, sizeof(arg));
	arg.pad = MIN_WAIT_US; /* min_wait_usec in the kernel's own header */
	if (timeout_ms < 0) {
		timeout_ms = 3600 * 1000;
	}
	arg.ts = (uint64_t)(uintptr_t)set_ts(s, timeout_ms);
	return io_uring_enter2(
	    (unsigned)s->ring.ring_fd,
	    *sq->ktail - io_uring_smp_load_acquire(sq->khead), want,
	    IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG, (sigset_t *)&arg,
	    sizeof(arg));
}

/*
 * Sleep until one completion (loop->wait_want with the minimum wait), or
 * timeout_ms (-1: no limit), then reap.
 */
static int
wait_one(cqw_loop *loop, int timeout_ms)
{
	struct uring_state *s = state(loop);
	struct io_uring_cqe *cqe;
	struct io_uring_sqe *sqe;
	int r;

	if (loop->wait_want > 1 && s->min_wait) {
		r = enter_min(s, loop->wait_want, timeout_ms);
	} else if (timeout_ms < 0) {
		r = io_uring_submit_and_wait(&s->ring, 1);
	} else if (s->ext_arg) {
		r = io_uring_submit_and_wait_timeout(
		    &s->ring, &cqe, 1, set_ts(s, timeout_ms), NULL);
	} else {
		/*
		 * No EXT_ARG: a timeout SQE of ours (never liburing's, whose
		 * CQE would come back among our ios). It needs an SQ entry;
		 * if even a submit frees none, only poll for events.
		 */
		sqe = io_uring_get_sqe(&s->ring);
		if (sqe == NULL) {
			io_uring_submit(&s->ring);
			sqe = io_uring_get_sqe(&s->ring);
		}
		if (sqe == NULL) {
			r = io_uring_submit_and_get_events(&s->ring);
		} else {
			/* Ends at the first other completion, or in time. */
			io_uring_prep_timeout(sqe, set_ts(s, timeout_ms), 1, 0);
			io_uring_sqe_set_data64(sqe, TAG_TIMEOUT);
			r = io_uring_submit_and_wait(&s->ring, 1);
		}
	}
	if (r == -EINTR && timeout_ms != 0 && cqw__eintr_stop()) {
		/* The thread's signal check says stop: the ios stay. */
		r = reap_all(loop);
		return r < 0 ? r : CQW_EINTR;
	}
	r = enter_result(r);
	if (r < 0) {
		return r;
	}
	return reap_all(loop);
}

static int
take_woken(struct uring_state *s)
{
	int woken = s->woken;

	s->woken = 0;
	return woken;
}

static int
uring_wait(cqw_loop *loop, int timeout_ms)
{
	struct uring_state *s = state(loop);
	int r = check_owner(s);

	if (r < 0) {
		return r;
	}
	r = ensure_enabled(s);
	if (r < 0) {
		return r;
	}
	r = drain(loop);
	if (r < 0) {
		return r;
	}
	arm_wake(s);
	/*
	 * Completions already queued and nothing to submit: take them
	 * without a system call (the kernel's deferred ones come next time).
	 */
	if (loop->iodone != NULL || s->woken ||
	    io_uring_cq_ready(&s->ring) > 0) {
		if (io_uring_sq_ready(&s->ring) == 0) {
			reap_cqes(loop);
			return take_woken(s);
		}
		timeout_ms = 0;
	}
	/*
	 * Pipe writes go in first, on their own, with SIGPIPE held off for
	 * just that submit: never while sleeping.
	 */
	if (s->nowait_sqes > 0 || timeout_ms == 0) {
		r = submit_guarded(loop);
		if (r < 0 || timeout_ms == 0 || s->nowait_sqes > 0 ||
		    loop->iodone != NULL || s->woken ||
		    io_uring_cq_ready(&s->ring) > 0) {
			return r < 0 ? r : take_woken(s);
		}
	}
	r = wait_one(loop, timeout_ms);
	if (r < 0) {
		return r;
	}
	return take_woken(s);
}

static void
uring_cancel(cqw_loop *loop, struct cqw__io *io)
{
	struct uring_state *s = state(loop);
	struct io_uring_sqe *sqe;
	uint32_t i = slot_of(s, io);
	struct slot *sl;

	if (i == NO_SLOT) {
		return; /* already completed */
	}
	sl = &s->slots[i];
	if (sl->where == SLOT_FIFO) {
		/* The kernel does not have it: it ends here. */
		fifo_remove(s, io);
		finish(loop, i, CQW_ECANCELED);
		return;
	}
	if (sl->cancel) {
		return; /* asked already */
	}
	sqe = s->cancel_head == NO_SLOT ? io_uring_get_sqe(&s->ring) : NULL;
	if (sqe != NULL) {
		io_uring_prep_cancel64(sqe, udata(s, i), 0);
		io_uring_sqe_set_data64(sqe, TAG_CANCEL);
		return;
	}
	/* No room: queued, and sent at the next flush or wait. */
	sl->cancel = 1;
	sl->next = NO_SLOT;
	if (s->cancel_tail != NO_SLOT) {
		s->slots[s->cancel_tail].next = i;
	} else {
		s->cancel_head = i;
	}
	s->cancel_tail = i;
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
	uint32_t i;
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
	s->woken = 0;
	s->nowait_sqes = 0;
	s->fifo = s->fifo_tail = NULL;
	s->cancel_head = s->cancel_tail = NO_SLOT;
	/*
	 * Every io the old ring had, in its FIFO or in the kernel, is the
	 * parent's: the kernel may have done it already, for the parent.
	 * Never reissue (a send would go twice, a read would lose its
	 * place): they end here with CQW_EFORK, and their cancels with them.
	 */
	/*
	 * The buffers: the child's own copies, every one back in the ring,
	 * registered again with the new ring at the next arm (the framer
	 * lets go of what it held at CQW_EFORK, without giving it back).
	 */
	if (s->pb != NULL) {
		struct cqw__io *done;

		/* Done, not yet processed: the framer drops it (EFORK). */
		for (done = loop->iodone; done != NULL; done = done->next) {
			if (done->op == CQW__IO_RECV_MULTI) {
				memset(pb_list(done), 0, sizeof(struct pblist));
			}
		}
		s->pb->registered = 0;
		pb_fill(s->pb);
	}
	s->free_head = NO_SLOT;
	for (i = s->nslots; i-- > 0;) {
		struct slot *sl = &s->slots[i];

		sl->cancel = 0;
		if (sl->io != NULL) {
			if (sl->io->op == CQW__IO_RECV_MULTI) {
				memset(pb_list(sl->io), 0,
				       sizeof(struct pblist));
			}
			finish(loop, i, CQW_EFORK);
		} else {
			sl->next = s->free_head;
			s->free_head = i;
		}
	}
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
	.buf_next = uring_buf_next,
	.buf_put = uring_buf_put,
	.features = uring_features,
};
