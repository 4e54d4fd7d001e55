/*
 * cqwire-echo: an echo server and client speaking Python's
 * multiprocessing.connection protocol, for interop tests and quick checks.
 *
 *   cqwire-echo serve ADDRESS [--authkey-env VAR] [--once] [--max-size N]
 *   cqwire-echo call ADDRESS [--authkey-env VAR] [--count N] [--size N]
 *
 * The interface is a contract: tests and scripts start "serve", read the
 * bound address from the first line of stdout, and judge "call" by its
 * exit status (0 all echoes intact, 1 failure, 2 bad usage).
 *
 * The server is one process on one loop: every accept, handshake and
 * echo is an op, so a slow or hostile peer holds up nobody else; a bad
 * peer costs one line on stderr.
 *
 * On Windows the same loop runs on IOCP (AcceptEx, ConnectNamedPipe);
 * Ctrl+C or TerminateProcess end it as they do any console program.
 */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L /* sigaction */
#endif
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifndef _WIN32
#include <fcntl.h>
#include <sys/resource.h>
#endif
#include <unistd.h>

#include "cqwire.h"

#define PROG "cqwire-echo"
#define DEFAULT_MAX_SIZE (64ull * 1024 * 1024)
#define DEFAULT_COUNT 1ull
#define DEFAULT_SIZE 64ull

struct options {
	int serve; /* 1: serve, 0: call */
	const char *address;
	const char *key_env; /* NULL: no authentication */
	int once;
	unsigned long long max_size;
	unsigned long long count;
	unsigned long long size;
};

static void
usage(FILE *f)
{
	fprintf(f,
		"usage: " PROG " serve ADDRESS [--authkey-env VAR] [--once]"
		" [--max-size BYTES]\n"
		"       " PROG " call ADDRESS [--authkey-env VAR] [--count N]"
		" [--size BYTES]\n"
		"\n"
		"serve: listen on ADDRESS, print the bound address as the first"
		" line of\n"
		"       stdout, and echo every message back on each connection"
		" until\n"
		"       the peer closes (one process, one loop, every peer an"
		" op).\n"
		"       --once          exit 0 when the first accepted"
		" connection ends\n"
		"       --max-size N    drop peers sending a message over N"
		" bytes\n"
		"                       (default %llu)\n"
		"call:  connect, send N messages of BYTES bytes (defaults %llu"
		" and %llu),\n"
		"       check every echo; exit 0 if all came back intact, 1 if"
		" not.\n"
		"\n"
		"ADDRESS: tcp:HOST:PORT (port 0 picks one), tcp:[V6]:PORT,"
		" unix:/path,\n"
		"         unix:@name (Linux abstract).\n"
		"--authkey-env VAR: authenticate with the raw bytes of"
		" environment\n"
		"         variable VAR (set but empty: the empty key).\n"
		"Exit status: 0 success, 1 failure, 2 bad usage.\n",
		DEFAULT_MAX_SIZE, DEFAULT_COUNT, DEFAULT_SIZE);
}

/* Complain about msg (and arg, if not NULL), show the usage, exit 2. */
static _Noreturn void
bad_usage(const char *msg, const char *arg)
{
	if (arg != NULL) {
		fprintf(stderr, PROG ": %s '%s'\n", msg, arg);
	} else {
		fprintf(stderr, PROG ": %s\n", msg);
	}
	usage(stderr);
	exit(2);
}

/* A decimal number, all of it, no sign, no overflow. */
static int
parse_u64(const char *s, unsigned long long *out)
{
	unsigned long long v;
	char *end;

	if (s[0] < '0' || s[0] > '9') {
		return -1;
	}
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno != 0 || *end != '\0') {
		return -1;
	}
	*out = v;
	return 0;
}

static void
parse_args(int argc, char **argv, struct options *opt)
{
	unsigned long long *num;
	int i, have_count = 0, have_size = 0, have_max = 0;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 ||
		    strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			exit(0);
		}
	}
	memset(opt, 0, sizeof(*opt));
	opt->max_size = DEFAULT_MAX_SIZE;
	opt->count = DEFAULT_COUNT;
	opt->size = DEFAULT_SIZE;
	if (argc < 3) {
		bad_usage("missing command or address", NULL);
	}
	if (strcmp(argv[1], "serve") == 0) {
		opt->serve = 1;
	} else if (strcmp(argv[1], "call") != 0) {
		bad_usage("unknown command", argv[1]);
	}
	opt->address = argv[2];
	for (i = 3; i < argc; i++) {
		const char *o = argv[i];

		num = NULL;
		if (strcmp(o, "--once") == 0 && opt->serve) {
			opt->once = 1;
			continue;
		}
		if (strcmp(o, "--authkey-env") == 0) {
			if (i + 1 >= argc) {
				bad_usage("missing the value of", o);
			}
			opt->key_env = argv[++i];
			continue;
		}
		if (strcmp(o, "--max-size") == 0 && opt->serve) {
			num = &opt->max_size;
			have_max++;
		} else if (strcmp(o, "--count") == 0 && !opt->serve) {
			num = &opt->count;
			have_count++;
		} else if (strcmp(o, "--size") == 0 && !opt->serve) {
			num = &opt->size;
			have_size++;
		} else {
			bad_usage("unknown option", o);
		}
		if (i + 1 >= argc) {
			bad_usage("missing the value of", o);
		}
		if (parse_u64(argv[++i], num) != 0) {
			bad_usage("not a number:", argv[i]);
		}
	}
	if (have_max > 1 || have_count > 1 || have_size > 1) {
		bad_usage("an option was given twice", NULL);
	}
	/* Lengths travel as int64_t through the API. */
	if (opt->max_size > INT64_MAX) {
		bad_usage("--max-size is too large", NULL);
	}
	if (opt->size > SIZE_MAX || opt->size > INT64_MAX) {
		bad_usage("--size is too large", NULL);
	}
}

/* Fill auth from the environment; 0, or 2 after a message (bad usage). */
static int
load_key(const struct options *opt, struct cqw_auth *auth)
{
	const char *key;

	memset(auth, 0, sizeof(*auth));
	if (opt->key_env == NULL) {
		return 0;
	}
	key = getenv(opt->key_env);
	if (key == NULL) {
		fprintf(stderr, PROG ": environment variable %s is not set\n",
			opt->key_env);
		return 2;
	}
	/* An empty value is the empty key, which still authenticates. */
	auth->key = key;
	auth->keylen = strlen(key);
	return 0;
}

static void
drop(const char *why, int err)
{
	fprintf(stderr, PROG ": dropped peer: %s%s%s\n", why, *why ? ": " : "",
		cqw_strerror(err));
}

/*
 * Errors from cqw_accept() that concern one peer (its handshake or its
 * connection) rather than the listener itself.
 */
static int
peer_error(int err)
{
	switch (err) {
	case CQW_EAUTH:
	case CQW_EOF:
	case CQW_ETRUNC:
	case CQW_ETIMEDOUT:
	case CQW_ECONNRESET:
	case CQW_ECONNABORTED:
	case CQW_EPIPE:
	case CQW_EPROTO:
	case CQW_EMSGSIZE:
	case CQW_ENOTCONN:
	case CQW_ECONNREFUSED:
	case CQW_EHOSTUNREACH:
	case CQW_ENETUNREACH:
		return 1;
	default:
		return 0;
	}
}

/* Out of resources for now: another try may work once a peer leaves. */
static int
transient_error(int err)
{
	return err == CQW_EINTR || err == CQW_EAGAIN || err == CQW_EMFILE ||
	       err == CQW_ENFILE || err == CQW_ENOBUFS || err == CQW_ENOMEM;
}

/*
 * The server: one loop, one thread. Every accept with its handshake, and
 * every peer's receive and echo, is an op on the loop, so a peer that
 * stalls, floods, lies or dies costs only its own op: the others are
 * served meanwhile. A peer that fails costs one line on stderr.
 *
 * Limits: HANDSHAKES accepts (each with its handshake) in flight, enough
 * that a thousand peers that connect and say nothing (each held until
 * the handshake's deadline) leave room for honest ones; and no more
 * connections than the descriptor limit allows: past it no accept is
 * submitted, and new peers wait in the kernel's backlog. An idle peer
 * holds its connection, one receive op and a SMALL_BUF buffer; a longer
 * message grows the buffer to its size (up to --max-size), and the
 * buffer goes back to small after the echo.
 */
#define HANDSHAKES 2048
#define SMALL_BUF 256
#define REAP_BATCH 64

struct peer {
	cqw_conn *conn;
	struct cqw_op op; /* RECV, then SEND of what came, then RECV... */
	uint8_t *buf;	  /* small, or grown for a long message */
	size_t cap;
	int first;		  /* --once: the server ends with this one */
	struct peer *prev, *next; /* server.peers */
	uint8_t small[SMALL_BUF];
};

struct server {
	cqw_loop *loop;
	cqw_listener *l;
	const struct options *opt;
	struct cqw_op acc[HANDSHAKES];
	struct cqw_op *idle_acc[HANDSHAKES]; /* accept ops not submitted */
	unsigned nidle;
	struct peer *peers;	      /* being served */
	unsigned long long conns;     /* how many */
	unsigned long long max_conns; /* from the descriptor limit */
	unsigned max_handshakes;      /* accepts in flight, at most */
	time_t logged_at;	      /* the second of the last resource line */
	unsigned long long accepted;
	int done;
	int status;
};

/*
 * SIGINT and SIGTERM reach the loop as a message: the handler writes an
 * empty frame (a 4-byte zero header; write() is async-signal-safe) into
 * a pipe whose reading end is a connection with a receive on the loop.
 * No wait can miss it, wherever the signal lands.
 */
static volatile sig_atomic_t got_signal;
#ifndef _WIN32
static int signal_pipe[2] = { -1, -1 };

static void
on_signal(int sig)
{
	static const char empty_frame[4];
	int saved = errno;

	got_signal = sig;
	(void)!write(signal_pipe[1], empty_frame, sizeof(empty_frame));
	errno = saved;
}

/* The reading end of the signal pipe, as a connection with a receive. */
static int
watch_signals(struct cqw_op *op, cqw_conn **conn, char *buf)
{
	struct sigaction sa;

	if (pipe(signal_pipe) != 0 ||
	    cqw_conn_from_fd(conn, signal_pipe[0], CQW_READABLE) != 0) {
		fprintf(stderr, PROG ": %s\n", strerror(errno));
		return -1;
	}
	fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK); /* never block a handler */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	op->kind = CQW_OP_RECV;
	op->conn = *conn;
	op->buf = buf;
	op->len = 1;
	return 0;
}
#endif

/* Submit idle accept ops while under the connection limit. */
static void
refill_accepts(struct server *srv)
{
	struct cqw_op *op;
	int r;

	while (srv->nidle > HANDSHAKES - srv->max_handshakes &&
	       srv->conns + (HANDSHAKES - srv->nidle) < srv->max_conns) {
		op = srv->idle_acc[--srv->nidle];
		r = cqw_submit(srv->loop, op);
		if (r < 0) {
			fprintf(stderr, PROG ": accept: %s\n", cqw_strerror(r));
			srv->idle_acc[srv->nidle++] = op;
			srv->done = 1;
			srv->status = 1;
			return;
		}
	}
}

static int
post(struct server *srv, struct peer *p, int kind, size_t len)
{
	p->op.kind = kind;
	p->op.buf = p->buf;
	p->op.len = len;
	return cqw_submit(srv->loop, &p->op);
}

static void
close_peer(struct server *srv, struct peer *p)
{
	cqw_conn_free(p->conn); /* its one op has completed */
	if (p->buf != p->small) {
		free(p->buf);
	}
	if (p->first) {
		srv->done = 1;
		srv->status = 0;
	}
	if (p->prev != NULL) {
		p->prev->next = p->next;
	} else {
		srv->peers = p->next;
	}
	if (p->next != NULL) {
		p->next->prev = p->prev;
	}
	free(p);
	srv->conns--;
}

static void
accepted(struct server *srv, struct cqw_op *op)
{
	struct peer *p;
	int r = (int)op->result;

	srv->idle_acc[srv->nidle++] = op;
	if (r < 0) {
		if (peer_error(r)) {
			drop("handshake", r);
		} else if (transient_error(r)) {
			/*
			 * The library waits before its next accept; every op
			 * in flight says so: one line a second.
			 */
			time_t now = time(NULL);

			if (now != srv->logged_at) {
				srv->logged_at = now;
				fprintf(stderr, PROG ": accept: %s\n",
					cqw_strerror(r));
			}
		} else {
			fprintf(stderr, PROG ": accept: %s\n", cqw_strerror(r));
			srv->done = 1;
			srv->status = 1;
		}
		return;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		drop("", CQW_ENOMEM);
		cqw_conn_free(op->conn);
		return;
	}
	p->conn = op->conn;
	p->buf = p->small;
	p->cap = sizeof(p->small);
	p->op.conn = p->conn;
	p->op.user_data = p;
	p->first = srv->opt->once && srv->accepted == 0;
	p->next = srv->peers;
	if (srv->peers != NULL) {
		srv->peers->prev = p;
	}
	srv->peers = p;
	srv->accepted++;
	srv->conns++;
	r = post(srv, p, CQW_OP_RECV, p->cap);
	if (r < 0) {
		drop("", r);
		close_peer(srv, p);
	}
}

/* p's op completed: echo what came, or receive the next one. */
static void
served(struct server *srv, struct peer *p)
{
	int64_t n = p->op.result;
	size_t need;
	uint8_t *big;
	int r;

	if (p->op.kind == CQW_OP_RECV) {
		if (n == CQW_ETOOSHORT) {
			need = p->op.needed;
			if ((unsigned long long)need > srv->opt->max_size) {
				drop("message over --max-size", CQW_EMSGSIZE);
				close_peer(srv, p);
				return;
			}
			/* The message waits in the kernel; room for it. */
			big = malloc(need > 0 ? need : 1);
			if (big == NULL) {
				drop("", CQW_ENOMEM);
				close_peer(srv, p);
				return;
			}
			if (p->buf != p->small) {
				free(p->buf);
			}
			p->buf = big;
			p->cap = need;
			r = post(srv, p, CQW_OP_RECV, p->cap);
		} else if (n == CQW_EOF) {
			close_peer(srv, p); /* the peer is done */
			return;
		} else if (n < 0) {
			drop("", (int)n);
			close_peer(srv, p);
			return;
		} else {
			r = post(srv, p, CQW_OP_SEND, (size_t)n);
		}
	} else {
		if (n < 0) {
			drop("", (int)n);
			close_peer(srv, p);
			return;
		}
		/* Echoed: a grown buffer goes back while the peer idles. */
		if (p->buf != p->small) {
			free(p->buf);
			p->buf = p->small;
			p->cap = sizeof(p->small);
		}
		r = post(srv, p, CQW_OP_RECV, p->cap);
	}
	if (r < 0) {
		drop("", r);
		close_peer(srv, p);
	}
}

/*
 * Connections the descriptor limit leaves room for (an accept in its
 * handshake holds one too), after raising the soft limit to the hard
 * one: a server should not stop at a shell's default of 1,024.
 */
static unsigned long long
connection_limit(void)
{
#ifdef _WIN32
	return 1000000; /* no descriptor limit: memory is the bound */
#else
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		return 64;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
			getrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000 + 32) {
		return 1000000;
	}
	/* Stdio, the listener, the loop and its wake-up, a few spare. */
	return rl.rlim_cur > 64 ? rl.rlim_cur - 32 : 32;
#endif
}

/*
 * On the way out, remove a unix socket path as cqw_listener_close()
 * would (the ops on the listener are abandoned with the process).
 */
static void
unlink_socket(const cqw_listener *l)
{
#ifndef _WIN32
	const char *a = cqw_listener_address(l);

	if (a != NULL && strncmp(a, "unix:/", 6) == 0) {
		unlink(a + 5);
	}
#else
	(void)l; /* no unix sockets */
#endif
}

/*
 * The way out: every peer's connection closed (its op cancelled and
 * waited for), the accepts cancelled by closing the listener and reaped,
 * everything freed.
 */
static void
shut_down(struct server *srv)
{
	struct cqw_op *ops[REAP_BATCH];
	struct peer *p;
	int n;

	while ((p = srv->peers) != NULL) {
		p->first = 0;
		close_peer(srv, p);
	}
	cqw_listener_close(srv->l);
	do {
		n = cqw_reap(srv->loop, ops, REAP_BATCH, 1000);
	} while (n > 0);
	cqw_listener_free(srv->l);
}

static int
serve(const struct options *opt, const struct cqw_auth *auth)
{
	struct server srv = { .opt = opt, .status = 1 };
	struct cqw_op *ops[REAP_BATCH];
#ifndef _WIN32
	struct cqw_op sigop = { .kind = CQW_OP_RECV };
	cqw_conn *sigconn = NULL;
	char sigbuf[1];

	if (watch_signals(&sigop, &sigconn, sigbuf) < 0) {
		return 1;
	}
#endif
	int i, n, r;

	r = cqw_listen(&srv.l, opt->address, auth->key != NULL ? auth : NULL,
		       HANDSHAKES);
	if (r < 0) {
		fprintf(stderr, PROG ": cannot listen on %s: %s\n",
			opt->address, cqw_strerror(r));
		return 1;
	}
	r = cqw_loop_new(&srv.loop, NULL);
	if (r < 0) {
		fprintf(stderr, PROG ": %s\n", cqw_strerror(r));
		cqw_listener_free(srv.l);
		return 1;
	}
	printf("%s\n", cqw_listener_address(srv.l));
	fflush(stdout);
	srv.max_conns = connection_limit();
	/* Half the room at most for handshakes, so that peers get served. */
	srv.max_handshakes = srv.max_conns / 2 < HANDSHAKES
				 ? (unsigned)(srv.max_conns / 2)
				 : HANDSHAKES;
	for (i = 0; i < HANDSHAKES; i++) {
		srv.acc[i].kind = CQW_OP_ACCEPT;
		srv.acc[i].listener = srv.l;
		srv.idle_acc[srv.nidle++] = &srv.acc[i];
	}
#ifndef _WIN32
	if (cqw_submit(srv.loop, &sigop) < 0) {
		return 1;
	}
#endif
	refill_accepts(&srv);
	while (!srv.done && !got_signal) {
		n = cqw_reap(srv.loop, ops, REAP_BATCH, -1);
		if (n < 0) {
			fprintf(stderr, PROG ": %s\n", cqw_strerror(n));
			break;
		}
		for (i = 0; i < n; i++) {
			if (ops[i]->kind == CQW_OP_ACCEPT) {
				accepted(&srv, ops[i]);
			} else if (ops[i]->user_data != NULL) {
				served(&srv, ops[i]->user_data);
			} /* else the signal's op: got_signal is set, out we go */
		}
		refill_accepts(&srv);
	}
	unlink_socket(srv.l);
	fflush(stdout);
	if (got_signal) {
		/* Die of the signal, as the caller expects. */
		signal(got_signal, SIG_DFL);
		raise(got_signal);
	}
#ifndef _WIN32
	cqw_conn_free(sigconn); /* its receive is cancelled and waited for */
#endif
	shut_down(&srv);
	cqw_loop_free(srv.loop);
	return srv.status;
}

static void
fill(uint8_t *buf, size_t n, unsigned long long k)
{
	size_t i;

	for (i = 0; i < n; i++) {
		buf[i] = (uint8_t)((i * 31 + k * 7) & 0xff);
	}
}

static int
call(const struct options *opt, const struct cqw_auth *auth)
{
	unsigned long long k, good = 0;
	size_t size = (size_t)opt->size;
	uint8_t *msg;
	void *echo;
	cqw_conn *c;
	int64_t n;
	int r;

	msg = malloc(size > 0 ? size : 1);
	if (msg == NULL) {
		fprintf(stderr, PROG ": %s\n", cqw_strerror(CQW_ENOMEM));
		return 1;
	}
	r = cqw_connect(&c, opt->address, auth->key != NULL ? auth : NULL);
	if (r < 0) {
		fprintf(stderr, PROG ": cannot connect to %s: %s\n",
			opt->address, cqw_strerror(r));
		free(msg);
		return 1;
	}
	for (k = 0; k < opt->count; k++) {
		fill(msg, size, k);
		r = cqw_send_bytes(c, msg, size);
		if (r < 0) {
			fprintf(stderr, PROG ": send: %s\n", cqw_strerror(r));
			break;
		}
		/* An echo longer than what we sent is wrong anyway. */
		n = cqw_recv_bytes(c, &echo, (int64_t)size);
		if (n < 0) {
			fprintf(stderr, PROG ": receive: %s\n",
				cqw_strerror((int)n));
			r = (int)n;
			break;
		}
		if ((size_t)n == size && memcmp(echo, msg, size) == 0) {
			good++;
		}
		cqw_free(echo);
	}
	cqw_conn_free(c);
	free(msg);
	printf(PROG ": %llu/%llu messages of %llu bytes echoed intact\n", good,
	       opt->count, opt->size);
	return r == 0 && good == opt->count ? 0 : 1;
}

int
main(int argc, char **argv)
{
	struct options opt;
	struct cqw_auth auth;
	int r;

	parse_args(argc, argv, &opt);
	r = load_key(&opt, &auth);
	if (r != 0) {
		return r;
	}
#ifdef SIGPIPE
	/* A peer that goes away must cost an error, not the process. */
	signal(SIGPIPE, SIG_IGN);
#endif
	return opt.serve ? serve(&opt, &auth) : call(&opt, &auth);
}
