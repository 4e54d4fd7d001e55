/*
 * soak: many connections, millions of messages, peers killed at random.
 *
 * The parent drives N connections, each to its own peer process (forked,
 * then exec'd again as "soak --peer ..." so that a peer holds only its own
 * descriptors and its death is seen at once). The peers echo. Every
 * message carries a header of ours (connection, generation, sequence
 * number, length, checksum) and pseudo-random content; the parent checks
 * each one that comes back against the FIFO of what it sent.
 *
 * Connection slot i is fixed by i: which parent group drives it (a loop
 * thread per backend, or the synchronous thread), socket pair or two
 * pipes, frame-exact or CQW_EXCLUSIVE. Where the parent runs a loop the
 * peer uses the synchronous API, and the other way round, so both APIs
 * meet both backends.
 *
 * A slot's life: LIVE (sending within a window), DYING (its peer was
 * killed or told to kill itself: no more sends, keep receiving until the
 * connection fails, wait for every op), then the peer is reaped, what was
 * still outstanding counts as lost by the kill, and a fresh peer on fresh
 * connections takes the slot with the next generation. Kills come after a
 * random count of messages, three ways alike: SIGKILL from the parent at
 * that moment; SIGKILL just after the parent started a large write; or a
 * flag in a large message that makes the peer arm a SIGKILL timer, which
 * most often fires while its echo is half written. A loop group also
 * closes some killed peers' connections with their ops in flight.
 *
 * Every message that comes back must be whole and in order; a killed
 * peer's connection must end with a clean error (CQW_EOF, CQW_ETRUNC,
 * CQW_ECONNRESET, CQW_EPIPE, or CQW_ECANCELED after our close).
 * Descriptors must not grow between the warm-up and the end.
 *
 * Exit status: 0 all clean, 1 a check failed, 2 hang (watchdog), 77 a
 * backend asked for cannot run here.
 */
#include "soak.h"

#include <inttypes.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const fault_names[] = { "none",    "drop",	  "dup",
					   "corrupt", "truncate", "reorder" };

static struct group groups[MAX_GROUPS];
static size_t ngroups;

static uint64_t
total(size_t off)
{
	uint64_t t = 0;
	size_t i;

	for (i = 0; i < ngroups; i++) {
		t += atomic_load(
		    (atomic_uint_fast64_t *)((char *)&groups[i].st + off));
	}
	return t;
}

#define TOTAL(field) total(offsetof(struct stats, field))

/* Receives (send == 0) or sends that ended with end code k. */
static uint64_t
total_end(int send, size_t k)
{
	uint64_t t = 0;
	size_t i;

	for (i = 0; i < ngroups; i++) {
		t += atomic_load(send ? &groups[i].st.send_ends[k]
				      : &groups[i].st.ends[k]);
	}
	return t;
}

static int
any_failed(void)
{
	size_t i;

	for (i = 0; i < ngroups; i++) {
		if (atomic_load(&groups[i].failed)) {
			return 1;
		}
	}
	return 0;
}

/*
 * Ask every group to drain and wait: returns when all are quiet (or have
 * failed). Progress and the watchdog run meanwhile.
 */
static int
wait_all(int (*cond)(void), double t0, double *last_progress)
{
	uint64_t last = TOTAL(received);
	double last_move = soak_now_s();

	for (;;) {
		uint64_t rec = TOTAL(received);
		double t = soak_now_s();

		if (cond()) {
			return 0;
		}
		if (rec != last) {
			last = rec;
			last_move = t;
		}
		if (t - last_move > soak_opt.watchdog_s) {
			fprintf(stderr,
				"soak: no message for %d s: hung; giving up\n",
				soak_opt.watchdog_s);
			return -1;
		}
		if (soak_opt.progress && t - *last_progress >= 5.0) {
			*last_progress = t;
			fprintf(stderr,
				"[soak %7.1fs] sent %" PRIu64 " recv %" PRIu64
				" lost %" PRIu64 " dup %" PRIu64
				" reord %" PRIu64 " torn %" PRIu64
				" killed %" PRIu64 " %.0f msg/s\n",
				t - t0, TOTAL(sent), rec, TOTAL(lost),
				TOTAL(dup), TOTAL(reordered), TOTAL(torn),
				TOTAL(killed_parent) + TOTAL(killed_self),
				(double)rec / (t - t0));
		}
		soak_sleep_ms(20);
	}
}

static int
all_paused(void)
{
	size_t i;

	for (i = 0; i < ngroups; i++) {
		if (!atomic_load(&groups[i].paused) &&
		    !atomic_load(&groups[i].failed)) {
			return 0;
		}
	}
	return 1;
}

static uint64_t warm_target;

static int
warmed_up(void)
{
	return TOTAL(received) >= warm_target || any_failed() ||
	       atomic_load(&soak_budget) == 0;
}

static int
budget_spent(void)
{
	return atomic_load(&soak_budget) == 0 || any_failed();
}

static int
backend_ok(enum cqw_backend b)
{
	struct cqw_loop_opts lo = { b, 0 };
	cqw_loop *loop;
	int r = cqw_loop_new(&loop, &lo);

	if (r == 0) {
		cqw_loop_free(loop);
	}
	return r;
}

static void
usage(void)
{
	fprintf(
	    stderr,
	    "usage: soak [options]\n"
	    "  --short              CI run: 32 connections, 400000 messages,\n"
	    "                       a kill per 1500 messages per connection\n"
	    "  --messages N         messages in all (default 10000000)\n"
	    "  --conns N            connections and peers (default 64)\n"
	    "  --seed S             random seed (default: the time)\n"
	    "  --backend B          uring, poll or both (default: "
	    "CQW_BACKEND,\n"
	    "                       else both)\n"
	    "  --kill-every N       mean messages per connection between\n"
	    "                       peer kills; 0: none (default 20000)\n"
	    "  --window N           messages in flight per connection (16)\n"
	    "  --max-size BYTES     cap on message sizes (1 MiB)\n"
	    "  --sync-batch-timeout MS  cqw_recv_batch timeout, sync group "
	    "(0)\n"
	    "  --close-early PCT    loop groups: close a killed peer's\n"
	    "                       connection at once, ops in flight,\n"
	    "                       in PCT%% of kills (25)\n"
	    "  --rss-bound MIB      RSS growth allowed after warm-up (64)\n"
	    "  --watchdog SECONDS   no message for that long: hung (60)\n"
	    "  --fault F            the loop groups' peers make mistake F\n"
	    "                       once (drop, dup, corrupt, truncate,\n"
	    "                       reorder): the run must then fail\n"
	    "  --progress           progress on stderr (default unless "
	    "--short)\n"
	    "  --json               summary as one JSON line\n"
	    "exit: 0 clean, 1 a check failed, 2 hung, 77 backend missing\n");
}

static int
parse_args(int argc, char **argv)
{
	const char *be = getenv("CQW_BACKEND");
	int i, shortmode = 0;
	uint64_t msgs = 0, kill = UINT64_MAX;
	unsigned conns = 0;

	memset(&soak_opt, 0, sizeof(soak_opt));
	soak_opt.seed = (uint64_t)time(NULL);
	soak_opt.window = 16;
	soak_opt.window_bytes = 4u * MAX_MSG;
	soak_opt.max_size = MAX_MSG;
	soak_opt.watchdog_s = 60;
	soak_opt.rss_bound_mib = 64;
	soak_opt.close_early = 25;
	soak_opt.sync_batch_timeout = 0;
	soak_opt.progress = -1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--help") == 0) {
			usage();
			exit(0);
		} else if (strcmp(a, "--short") == 0) {
			shortmode = 1;
		} else if (strcmp(a, "--json") == 0) {
			soak_opt.json = 1;
		} else if (strcmp(a, "--progress") == 0) {
			soak_opt.progress = 1;
		} else if (v == NULL) {
			usage();
			return -1;
		} else if (strcmp(a, "--messages") == 0) {
			msgs = strtoull(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--conns") == 0) {
			conns = (unsigned)strtoul(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--seed") == 0) {
			soak_opt.seed = strtoull(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--backend") == 0) {
			be = v;
			i++;
		} else if (strcmp(a, "--kill-every") == 0) {
			kill = strtoull(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--window") == 0) {
			soak_opt.window = (unsigned)strtoul(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--max-size") == 0) {
			soak_opt.max_size = strtoull(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--close-early") == 0) {
			soak_opt.close_early = atoi(v);
			i++;
		} else if (strcmp(a, "--rss-bound") == 0) {
			soak_opt.rss_bound_mib = strtol(v, NULL, 0);
			i++;
		} else if (strcmp(a, "--watchdog") == 0) {
			soak_opt.watchdog_s = atoi(v);
			i++;
		} else if (strcmp(a, "--fault") == 0) {
			for (soak_opt.fault = N_FAULTS - 1; soak_opt.fault > 0;
			     soak_opt.fault--) {
				if (strcmp(v, fault_names[soak_opt.fault]) ==
				    0) {
					break;
				}
			}
			if (soak_opt.fault == 0 && strcmp(v, "none") != 0) {
				usage();
				return -1;
			}
			i++;
		} else if (strcmp(a, "--sync-batch-timeout") == 0) {
			soak_opt.sync_batch_timeout = atoi(v);
			i++;
		} else {
			usage();
			return -1;
		}
	}
	soak_opt.conns = conns ? conns : shortmode ? 32 : 64;
	soak_opt.messages = msgs ? msgs : shortmode ? 400000 : 10000000;
	soak_opt.kill_every = kill != UINT64_MAX ? kill
			      : shortmode	 ? 1500
						 : 20000;
	if (soak_opt.progress < 0) {
		soak_opt.progress = !shortmode;
	}
	if (soak_opt.max_size > MAX_MSG) {
		soak_opt.max_size = MAX_MSG;
	}
	if (soak_opt.window < 1 || soak_opt.conns < 1) {
		usage();
		return -1;
	}
	if (be == NULL || strcmp(be, "both") == 0 || strcmp(be, "auto") == 0) {
		soak_opt.backends = 6;
	} else if (strcmp(be, "uring") == 0) {
		soak_opt.backends = 4;
	} else if (strcmp(be, "poll") == 0) {
		soak_opt.backends = 2;
	} else {
		usage();
		return -1;
	}
	return 0;
}

struct measure {
	int fds;
	long rss;
};

static void
measure(struct measure *m)
{
#ifdef __GLIBC__
	/*
	 * Hand freed heap back first: glibc keeps freed 1 MiB buffers in its
	 * arenas (its mmap threshold rises after the first is freed), which
	 * would read as growth that no one holds.
	 */
	malloc_trim(0);
#endif
	m->fds = soak_count_fds();
	m->rss = soak_rss_kib();
}

static void
report(int ok, double elapsed, const struct measure *m0,
       const struct measure *m1, const struct measure *m2,
       const struct measure *m3)
{
	static const char *names[] = { "EOF",	"ETRUNC",    "ECONNRESET",
				       "EPIPE", "ECANCELED", "other" };
	uint64_t rec = TOTAL(received);
	size_t i;

	if (soak_opt.json) {
		printf("{\"ok\": %s, \"seed\": %" PRIu64 ", \"conns\": %u, "
		       "\"backends\": \"%s\", \"sent\": %" PRIu64
		       ", \"received\": %" PRIu64 ", \"bytes\": %" PRIu64
		       ", \"lost\": %" PRIu64 ", \"duplicated\": %" PRIu64
		       ", \"reordered\": %" PRIu64 ", \"torn\": %" PRIu64
		       ", \"lost_by_kill\": %" PRIu64
		       ", \"killed_by_parent\": %" PRIu64
		       ", \"killed_self_in_echo\": %" PRIu64
		       ", \"killed_after_large_send\": %" PRIu64
		       ", \"unexpected_errors\": %" PRIu64
		       ", \"bad_exits\": %" PRIu64
		       ", \"closed_early\": %" PRIu64,
		       ok ? "true" : "false", soak_opt.seed, soak_opt.conns,
		       soak_opt.backends == 6	? "both"
		       : soak_opt.backends == 4 ? "uring"
						: "poll",
		       TOTAL(sent), rec, TOTAL(bytes), TOTAL(lost), TOTAL(dup),
		       TOTAL(reordered), TOTAL(torn), TOTAL(lost_kill),
		       TOTAL(killed_parent), TOTAL(killed_self),
		       TOTAL(killed_large), TOTAL(unexpected), TOTAL(bad_exit),
		       TOTAL(closed_early));
		for (i = 0; i <= N_END; i++) {
			printf(", \"recv_end_%s\": %" PRIu64
			       ", \"send_end_%s\": %" PRIu64,
			       names[i], total_end(0, i), names[i],
			       total_end(1, i));
		}
		printf(", \"fds_start\": %d, \"fds_warm\": %d, "
		       "\"fds_end\": %d, \"fds_final\": %d, "
		       "\"rss_kib_start\": %ld, \"rss_kib_warm\": %ld, "
		       "\"rss_kib_end\": %ld, \"rss_kib_final\": %ld, "
		       "\"elapsed_s\": %.2f, \"msgs_per_s\": %.0f}\n",
		       m0->fds, m1->fds, m2->fds, m3->fds, m0->rss, m1->rss,
		       m2->rss, m3->rss, elapsed, (double)rec / elapsed);
		return;
	}
	printf("soak summary (seed %" PRIu64 ", %u connections, backends %s)\n",
	       soak_opt.seed, soak_opt.conns,
	       soak_opt.backends == 6	? "uring+poll"
	       : soak_opt.backends == 4 ? "uring"
					: "poll");
	printf("  %-28s %14s\n", "group", "received");
	for (i = 0; i < ngroups; i++) {
		printf("  %-28s %14" PRIu64 "\n", groups[i].name,
		       (uint64_t)atomic_load(&groups[i].st.received));
	}
	printf("  %-28s %14" PRIu64 "\n", "sent", TOTAL(sent));
	printf("  %-28s %14" PRIu64 "\n", "received", rec);
	printf("  %-28s %14.1f\n", "received MiB",
	       (double)TOTAL(bytes) / 1048576.0);
	printf("  %-28s %14" PRIu64 "\n", "lost (live peers)", TOTAL(lost));
	printf("  %-28s %14" PRIu64 "\n", "duplicated", TOTAL(dup));
	printf("  %-28s %14" PRIu64 "\n", "reordered", TOTAL(reordered));
	printf("  %-28s %14" PRIu64 "\n", "torn/corrupt", TOTAL(torn));
	printf("  %-28s %14" PRIu64 "\n", "lost by the kill", TOTAL(lost_kill));
	printf("  %-28s %14" PRIu64 "\n", "peers killed by parent",
	       TOTAL(killed_parent));
	printf("  %-28s %14" PRIu64 "\n", "  of which in a large send",
	       TOTAL(killed_large));
	printf("  %-28s %14" PRIu64 "\n", "peers self-killed in echo",
	       TOTAL(killed_self));
	for (i = 0; i <= N_END; i++) {
		char what[40];

		snprintf(what, sizeof(what), "killed: recv/send %s", names[i]);
		printf("  %-28s %14" PRIu64 " / %" PRIu64 "\n", what,
		       total_end(0, i), total_end(1, i));
	}
	printf("  %-28s %14" PRIu64 "\n", "errors on live peers",
	       TOTAL(unexpected));
	printf("  %-28s %14" PRIu64 "\n", "bad peer exits", TOTAL(bad_exit));
	printf("  %-28s %14" PRIu64 "\n", "closed with ops in flight",
	       TOTAL(closed_early));
	printf("  %-28s %6d -> %6d   (start %d, final %d)\n", "fds warm -> end",
	       m1->fds, m2->fds, m0->fds, m3->fds);
	printf("  %-28s %6ld -> %6ld   (start %ld, final %ld)\n",
	       "RSS KiB warm -> end", m1->rss, m2->rss, m0->rss, m3->rss);
	printf("  %-28s %14.2f\n", "elapsed s", elapsed);
	printf("  %-28s %14.0f\n", "msgs/s (round trips)",
	       (double)rec / elapsed);
	printf("  %-28s %14s\n", "result", ok ? "PASS" : "FAIL");
}

int
main(int argc, char **argv)
{
	struct measure m0, m1, m2, m3;
	struct slot *slots;
	double t0, tp;
	ssize_t n;
	size_t i, gi;
	int ok, hung = 0, r;
	uint64_t sum;

	if (argc > 1 && strcmp(argv[1], "--peer") == 0) {
		return soak_peer_main(argc, argv);
	}
	if (parse_args(argc, argv) < 0) {
		return 1;
	}
	/* cqwire promises no SIGPIPE: keep the default, which would kill. */
	signal(SIGPIPE, SIG_DFL);
	n = readlink("/proc/self/exe", soak_self_exe,
		     sizeof(soak_self_exe) - 1);
	if (n <= 0) {
		perror("soak: readlink /proc/self/exe");
		return 1;
	}
	soak_self_exe[n] = '\0';
	measure(&m0);
	for (gi = 0; gi < 2; gi++) {
		enum cqw_backend b =
		    gi == 0 ? CQW_BACKEND_URING : CQW_BACKEND_POLL;

		if (!(soak_opt.backends & (1 << b))) {
			continue;
		}
		r = backend_ok(b);
		if (r < 0) {
			printf("skip: backend %s cannot run here: %s\n",
			       gi == 0 ? "uring" : "poll", cqw_strerror(r));
			return 77;
		}
		groups[ngroups].kind = G_LOOP;
		groups[ngroups].backend = b;
		groups[ngroups].name =
		    gi == 0 ? "parent uring loop" : "parent poll loop";
		ngroups++;
	}
	groups[ngroups].kind = G_SYNC;
	groups[ngroups].name = "parent sync";
	groups[ngroups].backend = groups[0].backend;
	ngroups++;
	slots = calloc(soak_opt.conns, sizeof(*slots));
	for (gi = 0; gi < ngroups; gi++) {
		groups[gi].slots =
		    calloc(soak_opt.conns, sizeof(struct slot *));
		groups[gi].rng = soak_opt.seed * 0x9e3779b97f4a7c15ull + gi;
		if (groups[gi].slots == NULL) {
			return 1;
		}
	}
	if (slots == NULL) {
		return 1;
	}
	for (i = 0; i < soak_opt.conns; i++) {
		struct group *g = &groups[i % ngroups];
		size_t k = i / ngroups;

		slots[i].g = g;
		slots[i].id = (uint32_t)i;
		slots[i].flags = (k % 2 == 0 ? CQW_DUPLEX : 0) |
				 ((k / 2) % 2 ? CQW_EXCLUSIVE : 0);
		/* Peers of the sync group alternate between the loops. */
		slots[i].peer_backend = g->kind == G_LOOP ? g->backend
					: ngroups == 3 && (k / 4) % 2
					    ? groups[1].backend
					    : groups[0].backend;
		slots[i].ring = calloc(soak_opt.window, sizeof(struct rec));
		if (slots[i].ring == NULL) {
			return 1;
		}
		g->slots[g->nslots++] = &slots[i];
	}
	atomic_store(&soak_budget, soak_opt.messages);
	warm_target = soak_opt.messages / 20;
	t0 = tp = soak_now_s();
	for (gi = 0; gi < ngroups; gi++) {
		if (pthread_create(&groups[gi].thread, NULL, soak_group_main,
				   &groups[gi]) != 0) {
			return 1;
		}
	}
	/* Warm-up, then a quiet point to measure at. */
	if (wait_all(warmed_up, t0, &tp) < 0) {
		hung = 1;
	}
	atomic_store(&soak_pause_req, 1);
	if (!hung && wait_all(all_paused, t0, &tp) < 0) {
		hung = 1;
	}
	measure(&m1);
	atomic_store(&soak_pause_req, 0);
	if (!hung && wait_all(budget_spent, t0, &tp) < 0) {
		hung = 1;
	}
	atomic_store(&soak_pause_req, 1);
	if (!hung && wait_all(all_paused, t0, &tp) < 0) {
		hung = 1;
	}
	measure(&m2);
	if (hung) {
		for (gi = 0; gi < ngroups; gi++) {
			for (i = 0; i < groups[gi].nslots; i++) {
				fprintf(stderr,
					"  %s conn %u: state %d outstanding "
					"%zu sends %d recv %d rx_err %d\n",
					groups[gi].name,
					groups[gi].slots[i]->id,
					groups[gi].slots[i]->state,
					groups[gi].slots[i]->count,
					groups[gi].slots[i]->sends,
					groups[gi].slots[i]->rop_busy,
					groups[gi].slots[i]->rx_err);
			}
		}
		fflush(stderr);
		/* Peers die with us (PR_SET_PDEATHSIG). */
		_exit(2);
	}
	atomic_store(&soak_stop_req, 1);
	/* Shutting down must not hang either (SIGALRM's default kills). */
	alarm((unsigned)soak_opt.watchdog_s + 30);
	for (gi = 0; gi < ngroups; gi++) {
		pthread_join(groups[gi].thread, NULL);
	}
	measure(&m3);
	sum = TOTAL(received) + TOTAL(lost) + TOTAL(lost_kill);
	ok = !any_failed() && TOTAL(lost) == 0 && TOTAL(dup) == 0 &&
	     TOTAL(reordered) == 0 && TOTAL(torn) == 0 &&
	     TOTAL(unexpected) == 0 && TOTAL(bad_exit) == 0 &&
	     total_end(0, N_END) == 0 && total_end(1, N_END) == 0 &&
	     TOTAL(sent) == soak_opt.messages && sum == TOTAL(sent) &&
	     m2.fds == m1.fds && m3.fds == m0.fds &&
	     m2.rss - m1.rss <= soak_opt.rss_bound_mib * 1024;
	if (sum != TOTAL(sent)) {
		fprintf(stderr,
			"soak: sent %" PRIu64 " != received + lost "
			"%" PRIu64 "\n",
			TOTAL(sent), sum);
	}
	if (m2.fds != m1.fds || m3.fds != m0.fds) {
		fprintf(stderr, "soak: descriptors grew\n");
	}
	if (m2.rss - m1.rss > soak_opt.rss_bound_mib * 1024) {
		fprintf(stderr, "soak: RSS grew by more than %ld MiB\n",
			soak_opt.rss_bound_mib);
	}
	report(ok, soak_now_s() - t0, &m0, &m1, &m2, &m3);
	for (i = 0; i < soak_opt.conns; i++) {
		free(slots[i].ring);
	}
	for (gi = 0; gi < ngroups; gi++) {
		free(groups[gi].slots);
	}
	free(slots);
	return ok ? 0 : 1;
}
