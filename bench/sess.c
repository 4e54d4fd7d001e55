/*
 * Sessions, measurement and the process plumbing every transport shares:
 * forking peers that die with the parent, CPU time of other processes
 * (clock_getcpuclockid), system calls counted with the raw_syscalls
 * tracepoint through perf_event_open, and whole reads and writes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cqwire.h>

#include "sess.h"

static const char *const scn_names[CQWB_NSCN] = { "rtt", "stream", "fanout",
						  "accept", "echo-clients" };

const char *
cqwb_scn_name(enum cqwb_scn scn)
{
	return (unsigned)scn < CQWB_NSCN ? scn_names[scn] : "?";
}

int
cqwb_scn_parse(const char *name)
{
	int i;

	for (i = 0; i < CQWB_NSCN; i++) {
		if (strcmp(name, scn_names[i]) == 0) {
			return i;
		}
	}
	return -1;
}

uint64_t
cqwb_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void
cqwb_label(const struct cqwb_transport *t, char *buf, size_t len)
{
	const char *ch = cqwb_channel(t), *w = cqwb_worker(t);

	snprintf(buf, len, "%s%s%s%s%s%s%s%s%s%s%s", t->name, t->api ? " " : "",
		 t->api ? t->api : "", t->mode ? " " : "",
		 t->mode ? t->mode : "", t->wait ? " " : "",
		 t->wait ? t->wait : "", ch ? " " : "", ch ? ch : "",
		 w ? ", workers " : "", w ? w : "");
}

const char *
cqwb_unavailable(const struct cqwb_transport *t, const struct cqwb_params *p)
{
	if ((t->scns & CQWB_BIT(p->scn)) == 0) {
		return "does not run this scenario";
	}
	return t->unavailable != NULL ? t->unavailable(t) : NULL;
}

/* ------------------------------------------------------------------
 * Sessions
 */

void *
cqwb__sess_new(size_t sz, const struct cqwb_session_ops *ops,
	       const struct cqwb_transport *t, const struct cqwb_params *p)
{
	struct cqwb_session *s = calloc(1, sz);

	if (s == NULL) {
		return NULL;
	}
	s->ops = ops;
	s->t = t;
	s->p = *p;
	return s;
}

void
cqwb__sess_free(struct cqwb_session *s)
{
	if (s != NULL) {
		free(s->peers);
		free(s);
	}
}

int
cqwb__add_peer(struct cqwb_session *s, pid_t pid)
{
	pid_t *n = realloc(s->peers, sizeof(*n) * (size_t)(s->npeers + 1));

	if (n == NULL) {
		return -ENOMEM;
	}
	s->peers = n;
	s->peers[s->npeers++] = pid;
	return 0;
}

static char last_err[200];

int
cqwb__fail(int err, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(last_err, sizeof(last_err), fmt, ap);
	va_end(ap);
	n = strlen(last_err);
	if (err < 0 && n + 3 < sizeof(last_err)) {
		snprintf(last_err + n, sizeof(last_err) - n, ": %s",
			 strerror(-err));
	}
	return err < 0 ? err : -EIO;
}

const char *
cqwb_error(void)
{
	return last_err;
}

int
cqwb_open(struct cqwb_session **out, const struct cqwb_transport *t,
	  const struct cqwb_params *p)
{
	const char *why = cqwb_unavailable(t, p);

	*out = NULL;
	if (why != NULL) {
		snprintf(last_err, sizeof(last_err), "%s", why);
		return -ENOTSUP;
	}
	return t->open(out, t, p);
}

int
cqwb_step(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	  struct cqwb_hist *lat, struct cqwb_step *out)
{
	out->ops = 0;
	out->ns = 0;
	if (max_ops == 0) {
		max_ops = UINT64_MAX;
	}
	if (max_ns == 0) {
		max_ns = UINT64_MAX;
	}
	return s->ops->step(s, max_ops, max_ns, lat, out);
}

int
cqwb_close(struct cqwb_session *s)
{
	return s != NULL ? s->ops->close(s) : 0;
}

/* ------------------------------------------------------------------
 * Measuring: CPU of every process involved, the parent's system calls
 */

static uint64_t
cpu_ns_of(pid_t pid)
{
	struct timespec ts;
	clockid_t clk;

	if (pid == 0) {
		clk = CLOCK_PROCESS_CPUTIME_ID;
	} else if (clock_getcpuclockid(pid, &clk) != 0) {
		return 0;
	}
	if (clock_gettime(clk, &ts) != 0) {
		return 0;
	}
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The number after key in /proc/PID/status (0: this process), or -1. */
static int64_t
status_of(pid_t pid, const char *key)
{
	unsigned long long v = 0;
	char path[64], line[128];
	size_t klen = strlen(key);
	int found = 0;
	FILE *f;

	if (pid == 0) {
		snprintf(path, sizeof(path), "/proc/self/status");
	} else {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	}
	f = fopen(path, "r");
	if (f == NULL) {
		return 0;
	}
	while (fgets(line, sizeof(line), f) != NULL) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':' &&
		    sscanf(line + klen + 1, "%llu", &v) == 1) {
			found = 1;
			break;
		}
	}
	fclose(f);
	return found ? (int64_t)v : -1;
}

/* VmRSS of pid (0: this process) in KiB, 0 if unknown. */
static uint64_t
rss_kib_of(pid_t pid)
{
	int64_t v = status_of(pid, "VmRSS");

	return v > 0 ? (uint64_t)v : 0;
}

/* Every peer's voluntary context switches so far, or -1 if unknown. */
static int64_t
peers_vcsw_of(const struct cqwb_session *s)
{
	int64_t sum = 0, v;
	int i;

	for (i = 0; i < s->npeers; i++) {
		v = status_of(s->peers[i], "voluntary_ctxt_switches");
		if (v < 0) {
			return -1;
		}
		sum += v;
	}
	return sum;
}

static int syscall_tp = -1; /* raw_syscalls:sys_enter id, or -1 */
static char syscall_why[160] = "not set up";

static int
read_tp_id(void)
{
	static const char *const paths[] = {
		"/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
		"/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id",
	};
	size_t i;
	int id;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		FILE *f = fopen(paths[i], "r");

		if (f == NULL) {
			continue;
		}
		if (fscanf(f, "%d", &id) != 1) {
			id = -1;
		}
		fclose(f);
		if (id >= 0) {
			return id;
		}
	}
	return -1;
}

static int
open_counter(pid_t pid)
{
	struct perf_event_attr a;

	if (syscall_tp < 0) {
		return -1;
	}
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.type = PERF_TYPE_TRACEPOINT;
	a.config = (uint64_t)syscall_tp;
	a.disabled = 1;
	return (int)syscall(SYS_perf_event_open, &a, pid, -1, -1,
			    PERF_FLAG_FD_CLOEXEC);
}

const char *
cqwb_syscalls_setup(int allow_mount)
{
	int fd;

	syscall_tp = read_tp_id();
	if (syscall_tp < 0 && allow_mount && geteuid() == 0) {
		/*
		 * A private mount namespace: the tracefs mount is seen by
		 * this process and its children only, and goes with them.
		 */
		if (unshare(CLONE_NEWNS) == 0 &&
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
		    mount("tracefs", "/sys/kernel/tracing", "tracefs", 0,
			  NULL) == 0) {
			syscall_tp = read_tp_id();
		}
	}
	if (syscall_tp < 0) {
		snprintf(syscall_why, sizeof(syscall_why),
			 "no raw_syscalls tracepoint (tracefs not mounted%s)",
			 geteuid() == 0 ? "" : "; run as root");
		return syscall_why;
	}
	fd = open_counter(0);
	if (fd < 0) {
		snprintf(syscall_why, sizeof(syscall_why),
			 "perf_event_open: %s", strerror(errno));
		syscall_tp = -1;
		return syscall_why;
	}
	close(fd);
	return NULL;
}

int
cqwb_measure(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	     struct cqwb_hist *lat, int count_syscalls, struct cqwb_measure *m)
{
	uint64_t cp0, cp1, peers0 = 0, peers1 = 0, count = 0;
	int64_t pv0, pv1;
	struct rusage ru0, ru1;
	struct cqwb_step st;
	int i, r, fd = count_syscalls ? open_counter(s->parent_pid) : -1;

	memset(m, 0, sizeof(*m));
	pv0 = peers_vcsw_of(s);
	getrusage(RUSAGE_SELF, &ru0);
	for (i = 0; i < s->npeers; i++) {
		peers0 += cpu_ns_of(s->peers[i]);
	}
	cp0 = cpu_ns_of(s->parent_pid);
	if (fd >= 0) {
		ioctl(fd, PERF_EVENT_IOC_RESET, 0);
		ioctl(fd, PERF_EVENT_IOC_ENABLE, 0);
	}
	r = cqwb_step(s, max_ops, max_ns, lat, &st);
	if (fd >= 0) {
		ioctl(fd, PERF_EVENT_IOC_DISABLE, 0);
		if (read(fd, &count, sizeof(count)) != sizeof(count)) {
			count = 0;
		}
		close(fd);
	}
	cp1 = cpu_ns_of(s->parent_pid);
	for (i = 0; i < s->npeers; i++) {
		peers1 += cpu_ns_of(s->peers[i]);
	}
	getrusage(RUSAGE_SELF, &ru1);
	pv1 = peers_vcsw_of(s);
	if (r < 0) {
		return r;
	}
	m->ops = st.ops;
	m->ns = st.ns;
	m->cpu_parent_ns = cp1 > cp0 ? cp1 - cp0 : 0;
	m->cpu_peers_ns = peers1 > peers0 ? peers1 - peers0 : 0;
	/*
	 * The enable ioctl's own exit and the disable ioctl's entry are
	 * counted; take them off.
	 */
	m->syscalls = fd >= 0 ? (int64_t)count - (s->parent_pid ? 0 : 1) : -1;
	if (m->syscalls < -1) {
		m->syscalls = 0;
	}
	m->vcsw = s->parent_pid ? -1 : ru1.ru_nvcsw - ru0.ru_nvcsw;
	m->peers_vcsw = pv0 >= 0 && pv1 >= pv0 ? pv1 - pv0 : -1;
	m->parent_rss_kib = rss_kib_of(s->parent_pid);
	return 0;
}

/* ------------------------------------------------------------------
 * Processes
 */

static int pinning;
static int ncpus_allowed;
static int cpus[CPU_SETSIZE];
static char pin_desc[96] = "unpinned";

/* The CPUs this process may use into cpus[]; 0, or -errno. */
static int
plan_cpus(void)
{
	cpu_set_t set;
	int i;

	if (sched_getaffinity(0, sizeof(set), &set) != 0) {
		return -errno;
	}
	ncpus_allowed = 0;
	for (i = 0; i < CPU_SETSIZE; i++) {
		if (CPU_ISSET(i, &set)) {
			cpus[ncpus_allowed++] = i;
		}
	}
	return ncpus_allowed < 2 ? -EINVAL : 0;
}

const char *
cqwb_pin_plan(void)
{
	static char desc[96];

	if (plan_cpus() < 0) {
		return NULL;
	}
	if (ncpus_allowed == 2) {
		snprintf(desc, sizeof(desc),
			 "parent on cpu %d, peers on cpu %d", cpus[0], cpus[1]);
	} else {
		snprintf(desc, sizeof(desc),
			 "parent on cpu %d, peers on cpus %d-%d", cpus[0],
			 cpus[1], cpus[ncpus_allowed - 1]);
	}
	return desc;
}

int
cqwb_set_pinning(int on)
{
	const char *desc;
	cpu_set_t set;

	pinning = 0;
	snprintf(pin_desc, sizeof(pin_desc), "unpinned");
	if (!on) {
		return 0;
	}
	desc = cqwb_pin_plan();
	if (desc == NULL) {
		return -EINVAL;
	}
	CPU_ZERO(&set);
	CPU_SET(cpus[0], &set);
	if (sched_setaffinity(0, sizeof(set), &set) != 0) {
		return -errno;
	}
	pinning = 1;
	snprintf(pin_desc, sizeof(pin_desc), "%s", desc);
	return 0;
}

const char *
cqwb_pinning(void)
{
	return pin_desc;
}

const char *
cqwb__peer_cpus(char *buf, size_t len)
{
	size_t off = 0;
	int i, n;

	if (!pinning) {
		snprintf(buf, len, "-");
		return buf;
	}
	buf[0] = '\0';
	for (i = 1; i < ncpus_allowed; i++) {
		n = snprintf(buf + off, len - off, "%s%d", i > 1 ? "," : "",
			     cpus[i]);
		if (n < 0 || (size_t)n >= len - off) {
			break;
		}
		off += (size_t)n;
	}
	return buf;
}

pid_t
cqwb__fork(int idx)
{
	pid_t parent = getpid(), pid;
	cpu_set_t set;

	fflush(NULL);
	pid = fork();
	if (pid != 0) {
		return pid;
	}
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent) {
		_exit(1);
	}
	if (pinning && idx >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpus[1 + idx % (ncpus_allowed - 1)], &set);
		sched_setaffinity(0, sizeof(set), &set);
	}
	return 0;
}

void
cqwb__peer_end(int64_t err)
{
	_exit(err == -EPIPE || err == -ECONNRESET || err == CQW_EOF ? 0 : 1);
}

int
cqwb__reap(pid_t pid, int timeout_ms)
{
	int status, waited = 0;
	pid_t r;

	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid) {
			break;
		}
		if (r < 0 && errno != EINTR) {
			return -errno;
		}
		if (waited >= timeout_ms) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -ETIMEDOUT;
		}
		usleep(waited < 20 ? 200 : 2000);
		waited += waited < 20 ? 1 : 2;
	}
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -ECHILD;
}

int
cqwb__reap_peers(struct cqwb_session *s, int timeout_ms)
{
	int i, r, ret = 0;

	for (i = 0; i < s->npeers; i++) {
		r = cqwb__reap(s->peers[i], timeout_ms);
		if (r < 0 && ret == 0) {
			ret = r;
		}
	}
	return ret;
}

/* ------------------------------------------------------------------
 * I/O
 */

int
cqwb__read_full(int fd, void *buf, size_t n)
{
	uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = read(fd, p, n);
		if (r > 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (r == 0) {
			return -EPIPE;
		}
		if (errno == EAGAIN) {
			r = cqwb__wait_in(fd);
			if (r < 0) {
				return (int)r;
			}
			continue;
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

static int
wait_out(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLOUT };

	while (poll(&p, 1, -1) < 0) {
		if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int
cqwb__wait_in(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	while (poll(&p, 1, -1) < 0) {
		if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int
cqwb__rtt_loop(struct cqwb_session *s, uint64_t max_ops, uint64_t max_ns,
	       struct cqwb_hist *lat, struct cqwb_step *out,
	       int (*once)(struct cqwb_session *s))
{
	uint64_t start = cqwb_now_ns(), t0, t1 = start, i;
	int r;

	for (i = 0; i < max_ops; i++) {
		t0 = t1;
		r = once(s);
		if (r < 0) {
			return r;
		}
		t1 = cqwb_now_ns();
		if (lat != NULL) {
			cqwb_hist_record(lat, t1 - t0);
		}
		if (t1 - start >= max_ns) {
			i++;
			break;
		}
	}
	out->ops = i;
	out->ns = t1 - start;
	return 0;
}

int
cqwb__write_full(int fd, const void *buf, size_t n)
{
	const uint8_t *p = buf;
	ssize_t r;

	while (n > 0) {
		r = send(fd, p, n, MSG_NOSIGNAL);
		if (r < 0 && errno == ENOTSOCK) {
			r = write(fd, p, n);
		}
		if (r >= 0) {
			p += r;
			n -= (size_t)r;
			continue;
		}
		if (errno == EAGAIN) {
			r = wait_out(fd);
			if (r < 0) {
				return (int)r;
			}
			continue;
		}
		if (errno != EINTR) {
			return -errno;
		}
	}
	return 0;
}

int
cqwb__writev_full(int fd, struct iovec *iov, int cnt)
{
	struct msghdr mh;
	ssize_t r;
	int first = 0;

	while (first < cnt) {
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = iov + first;
		mh.msg_iovlen = (size_t)(cnt - first);
		r = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EAGAIN) {
				r = wait_out(fd);
				if (r < 0) {
					return (int)r;
				}
				continue;
			}
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		while (first < cnt && (size_t)r >= iov[first].iov_len) {
			r -= (ssize_t)iov[first].iov_len;
			first++;
		}
		if (first < cnt) {
			iov[first].iov_base =
			    (uint8_t *)iov[first].iov_base + r;
			iov[first].iov_len -= (size_t)r;
		}
	}
	return 0;
}

void
cqwb__put_hdr(uint8_t *p, uint32_t len)
{
	p[0] = (uint8_t)(len >> 24);
	p[1] = (uint8_t)(len >> 16);
	p[2] = (uint8_t)(len >> 8);
	p[3] = (uint8_t)len;
}

uint32_t
cqwb__get_hdr(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

size_t
cqwb__batch(size_t size)
{
	size_t n = CQWB_BATCH_BYTES / (size ? size : 1);

	if (n > CQWB_BATCH_MAX) {
		n = CQWB_BATCH_MAX;
	}
	return n ? n : 1;
}

int
cqwb__rbuf_init(struct cqwb__rbuf *rb)
{
	memset(rb, 0, sizeof(*rb));
	rb->buf = malloc(CQWB_RBUF_SIZE);
	return rb->buf != NULL ? 0 : -ENOMEM;
}

void
cqwb__rbuf_free(struct cqwb__rbuf *rb)
{
	free(rb->buf);
	rb->buf = NULL;
}

int
cqwb__rbuf_has_frame(const struct cqwb__rbuf *rb)
{
	size_t have = rb->len - rb->off;

	return have >= 4 && have - 4 >= cqwb__get_hdr(rb->buf + rb->off);
}

int
cqwb__rbuf_fill(struct cqwb__rbuf *rb, int fd)
{
	ssize_t r;

	if (rb->off > 0) {
		memmove(rb->buf, rb->buf + rb->off, rb->len - rb->off);
		rb->len -= rb->off;
		rb->off = 0;
	}
	for (;;) {
		if (rb->spin) {
			r = recv(fd, rb->buf + rb->len,
				 CQWB_RBUF_SIZE - rb->len, MSG_DONTWAIT);
		} else {
			r = read(fd, rb->buf + rb->len,
				 CQWB_RBUF_SIZE - rb->len);
		}
		if (r > 0) {
			rb->len += (size_t)r;
			return 0;
		}
		if (r == 0) {
			return -EPIPE;
		}
		if (errno == EAGAIN && !rb->spin) {
			cqwb__wait_in(fd);
		} else if (errno != EAGAIN && errno != EINTR) {
			return -errno;
		}
	}
}

int64_t
cqwb__rbuf_frame(struct cqwb__rbuf *rb, int fd, void *dst, size_t cap)
{
	uint8_t *d = dst;
	uint32_t len;
	size_t have, n;
	int r;

	while (rb->len - rb->off < 4) {
		r = cqwb__rbuf_fill(rb, fd);
		if (r < 0) {
			return r;
		}
	}
	len = cqwb__get_hdr(rb->buf + rb->off);
	rb->off += 4;
	have = rb->len - rb->off;
	n = have < len ? have : len;
	memcpy(d, rb->buf + rb->off, n < cap ? n : cap);
	rb->off += n;
	if (n == len) {
		return len;
	}
	/* The rest of a large payload: straight into the destination. */
	if (len > cap) {
		return -EMSGSIZE;
	}
	if (rb->spin) {
		while (n < len) {
			ssize_t k = recv(fd, d + n, len - n, MSG_DONTWAIT);

			if (k > 0) {
				n += (size_t)k;
			} else if (k == 0) {
				return -EPIPE;
			} else if (errno != EAGAIN && errno != EINTR) {
				return -errno;
			}
		}
		return len;
	}
	r = cqwb__read_full(fd, d + n, len - n);
	return r < 0 ? r : (int64_t)len;
}
