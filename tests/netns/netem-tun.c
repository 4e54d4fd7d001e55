/*
 * netem-tun: an impaired point-to-point IP link between two network
 * namespaces, made in user space from two TUN devices.
 *
 *   netem-tun --ns-a NS --ns-b NS [--dev-a NAME] [--dev-b NAME]
 *             [--delay-us N] [--loss PCT] [--reorder PCT]
 *             [--reorder-extra-us N] [--seed N] [--limit N]
 *             [--timeout-s N]
 *
 * Why: the netns test wants the kernel's own TCP stacks to run over a
 * path with delay, loss and reordering, and the usual tool for that (the
 * netem qdisc) is not built into every kernel. A TUN device is: each
 * packet the kernel routes into one device is read here, dropped or
 * queued with a due time, and written into the other device when it is
 * due, where the other namespace's stack receives it as from a wire.
 *
 * The devices are created inside the namespaces (setns() before
 * TUNSETIFF); the caller gives them addresses and brings them up once the
 * line "ready" is on stdout. They are not persistent, so they vanish when
 * this process ends, however it ends. The run is bounded by --timeout-s;
 * SIGINT or SIGTERM end it early. On the way out one line per direction
 * goes to stdout:
 *
 *   stats a2b read=N lost=N held=N sent=N overflow=N werr=N queued=N
 *
 * read: packets taken from the sending device; lost: dropped at random
 * (--loss); held: kept back --reorder-extra-us longer than the others
 * (--reorder), so that later packets overtake them; sent: written into
 * the receiving device; overflow: dropped because --limit packets were
 * already queued; werr: writes the receiving device refused; queued:
 * still on the way when the run ended.
 *
 * Exit status: 0 success, 1 failure, 2 bad usage, 77 no TUN or no
 * namespace here (the caller skips).
 */
#define _GNU_SOURCE /* setns(), ppoll() */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/if.h>
#include <linux/if_tun.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>

#define PROG "netem-tun"
#define PKT_MAX 65536	    /* a TUN read never returns more */
#define READ_BURST 256	    /* packets per device per wakeup, for fairness */
#define DEFAULT_LIMIT 10000 /* packets queued per direction */
#define DEFAULT_TIMEOUT_S 600

struct options {
	const char *ns[2];
	const char *dev[2];
	unsigned long long delay_ns;
	double loss;	/* probability, 0..1 */
	double reorder; /* probability, 0..1 */
	unsigned long long extra_ns;
	unsigned long long seed;
	unsigned long long limit;
	unsigned long long timeout_s;
};

/* A packet on its way, due at a given time. */
struct pkt {
	uint64_t due;
	uint64_t seq; /* arrival order: equal due times leave in it */
	size_t len;
	unsigned char data[];
};

/*
 * One direction of the link: a binary min-heap of packets by (due, seq).
 * A heap rather than a FIFO because held packets must leave after
 * packets that arrived later.
 */
struct dir {
	int in, out; /* read from in, write to out */
	struct pkt **heap;
	size_t n;
	unsigned long long read, lost, held, sent, overflow, werr;
};

static uint64_t rng_state;

/* splitmix64: small, seedable, and good enough for coin flips. */
static uint64_t
rng_next(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* True with probability p. */
static int
coin(double p)
{
	if (p <= 0.0) {
		return 0;
	}
	return (double)(rng_next() >> 11) * 0x1.0p-53 < p;
}

static uint64_t
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
before(const struct pkt *a, const struct pkt *b)
{
	return a->due < b->due || (a->due == b->due && a->seq < b->seq);
}

static void
heap_push(struct dir *d, struct pkt *p)
{
	size_t i = d->n++;

	while (i > 0 && before(p, d->heap[(i - 1) / 2])) {
		d->heap[i] = d->heap[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	d->heap[i] = p;
}

static struct pkt *
heap_pop(struct dir *d)
{
	struct pkt *top = d->heap[0], *last = d->heap[--d->n];
	size_t i = 0, c;

	for (;;) {
		c = 2 * i + 1;
		if (c >= d->n) {
			break;
		}
		if (c + 1 < d->n && before(d->heap[c + 1], d->heap[c])) {
			c++;
		}
		if (!before(d->heap[c], last)) {
			break;
		}
		d->heap[i] = d->heap[c];
		i = c;
	}
	if (d->n > 0) {
		d->heap[i] = last;
	}
	return top;
}

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " --ns-a NS --ns-b NS [--dev-a NAME]"
		" [--dev-b NAME]\n"
		"         [--delay-us N] [--loss PCT] [--reorder PCT]"
		" [--reorder-extra-us N]\n"
		"         [--seed N] [--limit N] [--timeout-s N]\n"
		"\n"
		"Make TUN device dev-a (default cqwt0) in namespace NS a and"
		" dev-b\n"
		"(default cqwt1) in NS b, print \"ready\", and forward IP"
		" packets\n"
		"between them: each one way delayed by --delay-us, dropped"
		" with\n"
		"probability --loss percent, or held back --reorder-extra-us"
		" longer\n"
		"(default 1000) with probability --reorder percent. --seed"
		" makes the\n"
		"coin flips repeatable; --limit packets (default %d) may wait"
		" per\n"
		"direction; the run ends after --timeout-s seconds (default"
		" %d) or on\n"
		"SIGINT/SIGTERM, printing one stats line per direction.\n"
		"NS is a name under /run/netns or a path to a namespace"
		" file.\n"
		"Exit status: 0 success, 1 failure, 2 bad usage, 77 no TUN or"
		" netns.\n",
		DEFAULT_LIMIT, DEFAULT_TIMEOUT_S);
}

static _Noreturn void
bad_usage(const char *msg, const char *arg)
{
	fprintf(stderr, PROG ": %s%s%s\n", msg, arg != NULL ? " " : "",
		arg != NULL ? arg : "");
	usage(stderr);
	exit(2);
}

static unsigned long long
parse_u64(const char *s)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9') {
		bad_usage("not a number:", s);
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		bad_usage("not a number:", s);
	}
	return v;
}

/* A percentage 0..100, returned as a probability. */
static double
parse_pct(const char *s)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno != 0 || end == s || *end != '\0' || !(v >= 0.0) ||
	    v > 100.0) {
		bad_usage("not a percentage (0..100):", s);
	}
	return v / 100.0;
}

static void
parse_args(int argc, char **argv, struct options *o)
{
	int i;

	memset(o, 0, sizeof(*o));
	o->dev[0] = "cqwt0";
	o->dev[1] = "cqwt1";
	o->extra_ns = 1000000;
	o->limit = DEFAULT_LIMIT;
	o->timeout_s = DEFAULT_TIMEOUT_S;
	for (i = 1; i < argc; i++) {
		const char *k = argv[i], *v;

		if (strcmp(k, "--help") == 0 || strcmp(k, "-h") == 0) {
			usage(stdout);
			exit(0);
		}
		if (i + 1 >= argc) {
			bad_usage("missing the value of", k);
		}
		v = argv[++i];
		if (strcmp(k, "--ns-a") == 0) {
			o->ns[0] = v;
		} else if (strcmp(k, "--ns-b") == 0) {
			o->ns[1] = v;
		} else if (strcmp(k, "--dev-a") == 0) {
			o->dev[0] = v;
		} else if (strcmp(k, "--dev-b") == 0) {
			o->dev[1] = v;
		} else if (strcmp(k, "--delay-us") == 0) {
			o->delay_ns = parse_u64(v) * 1000;
		} else if (strcmp(k, "--loss") == 0) {
			o->loss = parse_pct(v);
		} else if (strcmp(k, "--reorder") == 0) {
			o->reorder = parse_pct(v);
		} else if (strcmp(k, "--reorder-extra-us") == 0) {
			o->extra_ns = parse_u64(v) * 1000;
		} else if (strcmp(k, "--seed") == 0) {
			o->seed = parse_u64(v);
		} else if (strcmp(k, "--limit") == 0) {
			o->limit = parse_u64(v);
		} else if (strcmp(k, "--timeout-s") == 0) {
			o->timeout_s = parse_u64(v);
		} else {
			bad_usage("unknown option", k);
		}
	}
	if (o->ns[0] == NULL || o->ns[1] == NULL) {
		bad_usage("--ns-a and --ns-b are required", NULL);
	}
	if (strlen(o->dev[0]) >= IFNAMSIZ || strlen(o->dev[1]) >= IFNAMSIZ) {
		bad_usage("a device name is too long", NULL);
	}
	/* Keep every time sum below UINT64_MAX nanoseconds. */
	if (o->delay_ns > 3600000000000ull || o->extra_ns > 3600000000000ull ||
	    o->timeout_s > 86400) {
		bad_usage("a delay or the timeout is too long", NULL);
	}
	if (o->limit == 0 || o->limit > 1000000) {
		bad_usage("--limit must be 1..1000000", NULL);
	}
}

/* Errors that mean "this machine cannot do it", not "it went wrong". */
static int
unavailable(int err)
{
	return err == ENOENT || err == ENODEV || err == EPERM ||
	       err == EACCES || err == EINVAL || err == ENOSYS;
}

/*
 * Enter the namespace ns and make a TUN device named dev there; the
 * descriptor keeps the device in that namespace wherever this thread goes
 * next. Returns the descriptor, or -errno after a message.
 */
static int
tun_in_ns(const char *ns, const char *dev)
{
	char path[PATH_MAX];
	struct ifreq ifr;
	int nfd, fd, err;

	if (strchr(ns, '/') != NULL) {
		snprintf(path, sizeof(path), "%s", ns);
	} else {
		snprintf(path, sizeof(path), "/run/netns/%s", ns);
	}
	nfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nfd < 0) {
		err = errno;
		fprintf(stderr, PROG ": %s: %s\n", path, strerror(err));
		return -err;
	}
	if (setns(nfd, CLONE_NEWNET) != 0) {
		err = errno;
		fprintf(stderr, PROG ": setns %s: %s\n", path, strerror(err));
		close(nfd);
		return -err;
	}
	close(nfd);
	fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		fprintf(stderr, PROG ": /dev/net/tun: %s\n", strerror(err));
		return -err;
	}
	memset(&ifr, 0, sizeof(ifr));
	/* Bare IP packets: no Ethernet header, no packet-info prefix. */
	ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", dev);
	if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
		err = errno;
		fprintf(stderr, PROG ": TUNSETIFF %s in %s: %s\n", dev, ns,
			strerror(err));
		close(fd);
		return -err;
	}
	return fd;
}

/* Take what the sending device has (up to a burst) and queue or drop it. */
static int
take(struct dir *d, const struct options *o, unsigned char *buf, uint64_t *seq)
{
	struct pkt *p;
	ssize_t n;
	int i;

	for (i = 0; i < READ_BURST; i++) {
		n = read(d->in, buf, PKT_MAX);
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR) {
				return 0;
			}
			fprintf(stderr, PROG ": read: %s\n", strerror(errno));
			return -1;
		}
		d->read++;
		if (coin(o->loss)) {
			d->lost++;
			continue;
		}
		if (d->n >= o->limit) {
			d->overflow++;
			continue;
		}
		p = malloc(sizeof(*p) + (size_t)n);
		if (p == NULL) {
			d->overflow++;
			continue;
		}
		p->len = (size_t)n;
		memcpy(p->data, buf, (size_t)n);
		p->seq = (*seq)++;
		p->due = now_ns() + o->delay_ns;
		if (coin(o->reorder)) {
			p->due += o->extra_ns;
			d->held++;
		}
		heap_push(d, p);
	}
	return 0;
}

/* Write every packet that is due; return the next due time (or max). */
static uint64_t
deliver(struct dir *d, uint64_t now)
{
	struct pkt *p;

	while (d->n > 0 && d->heap[0]->due <= now) {
		p = heap_pop(d);
		/*
		 * A TUN write hands the packet to the stack at once; a
		 * refusal (device down, no buffer) is a loss on a real
		 * wire too, so count it and go on.
		 */
		if (write(d->out, p->data, p->len) == (ssize_t)p->len) {
			d->sent++;
		} else {
			d->werr++;
		}
		free(p);
	}
	return d->n > 0 ? d->heap[0]->due : UINT64_MAX;
}

static int
run(const struct options *o, struct dir dirs[2], int sfd)
{
	unsigned char *buf;
	uint64_t seq = 0, deadline, now, next, t;
	struct pollfd pfd[3];
	struct timespec ts;
	int i, r = 0;

	buf = malloc(PKT_MAX);
	if (buf == NULL) {
		fprintf(stderr, PROG ": out of memory\n");
		return 1;
	}
	deadline = now_ns() + o->timeout_s * 1000000000ull;
	for (;;) {
		now = now_ns();
		if (now >= deadline) {
			break;
		}
		next = deadline;
		for (i = 0; i < 2; i++) {
			t = deliver(&dirs[i], now);
			if (t < next) {
				next = t;
			}
		}
		pfd[0] = (struct pollfd){ .fd = dirs[0].in, .events = POLLIN };
		pfd[1] = (struct pollfd){ .fd = dirs[1].in, .events = POLLIN };
		pfd[2] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		now = now_ns();
		t = next > now ? next - now : 0;
		ts.tv_sec = (time_t)(t / 1000000000ull);
		ts.tv_nsec = (long)(t % 1000000000ull);
		if (ppoll(pfd, 3, &ts, NULL) < 0) {
			if (errno == EINTR) {
				continue;
			}
			fprintf(stderr, PROG ": ppoll: %s\n", strerror(errno));
			r = 1;
			break;
		}
		if (pfd[2].revents != 0) {
			break;
		}
		for (i = 0; i < 2; i++) {
			if ((pfd[i].revents & (POLLERR | POLLNVAL)) != 0) {
				fprintf(stderr, PROG ": device %d failed\n", i);
				r = 1;
				goto out;
			}
			if ((pfd[i].revents & POLLIN) != 0 &&
			    take(&dirs[i], o, buf, &seq) != 0) {
				r = 1;
				goto out;
			}
		}
	}
out:
	free(buf);
	return r;
}

static void
free_dir(struct dir *d)
{
	while (d->n > 0) {
		free(heap_pop(d));
	}
	free(d->heap);
}

int
main(int argc, char **argv)
{
	struct options o;
	struct dir dirs[2];
	sigset_t set;
	int fd[2] = { -1, -1 };
	int self = -1, sfd = -1, i, r = 1;

	parse_args(argc, argv, &o);
	rng_state = o.seed;
	memset(dirs, 0, sizeof(dirs));
	/*
	 * The default 50 us timer slack would add up to that much to every
	 * delay; the link should be as punctual as the scheduler allows.
	 */
	prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigprocmask(SIG_BLOCK, &set, NULL);
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		fprintf(stderr, PROG ": signalfd: %s\n", strerror(errno));
		goto out;
	}
	/* Come back to where we started, so nothing else runs in a or b. */
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	if (self < 0) {
		fprintf(stderr, PROG ": /proc/self/ns/net: %s\n",
			strerror(errno));
		r = unavailable(errno) ? 77 : 1;
		goto out;
	}
	for (i = 0; i < 2; i++) {
		fd[i] = tun_in_ns(o.ns[i], o.dev[i]);
		if (fd[i] < 0) {
			r = unavailable(-fd[i]) ? 77 : 1;
			goto out;
		}
	}
	if (setns(self, CLONE_NEWNET) != 0) {
		fprintf(stderr, PROG ": setns back: %s\n", strerror(errno));
		goto out;
	}
	for (i = 0; i < 2; i++) {
		dirs[i].in = fd[i];
		dirs[i].out = fd[1 - i];
		dirs[i].heap = calloc(o.limit, sizeof(*dirs[i].heap));
		if (dirs[i].heap == NULL) {
			fprintf(stderr, PROG ": out of memory\n");
			goto out_free;
		}
	}
	printf("ready\n");
	fflush(stdout);
	r = run(&o, dirs, sfd);
	for (i = 0; i < 2; i++) {
		printf("stats %s read=%llu lost=%llu held=%llu sent=%llu"
		       " overflow=%llu werr=%llu queued=%zu\n",
		       i == 0 ? "a2b" : "b2a", dirs[i].read, dirs[i].lost,
		       dirs[i].held, dirs[i].sent, dirs[i].overflow,
		       dirs[i].werr, dirs[i].n);
	}
	fflush(stdout);
out_free:
	for (i = 0; i < 2; i++) {
		free_dir(&dirs[i]);
	}
out:
	for (i = 0; i < 2; i++) {
		if (fd[i] >= 0) {
			close(fd[i]);
		}
	}
	if (self >= 0) {
		close(self);
	}
	if (sfd >= 0) {
		close(sfd);
	}
	return r;
}
