/*
 * The soak test's shared declarations: message format, options, the
 * parent's slots and groups. main.c says what the program does.
 */
#ifndef CQW_SOAK_H
#define CQW_SOAK_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cqwire.h"

#define HDR_LEN 32u
#define SOAK_MAGIC 0x4b414f53u /* "SOAK" */
#define F_DIE 0x1u	       /* peer: arm a SIGKILL timer, then echo */
#define MAX_MSG (1024u * 1024u)
#define SMALL_CAP (64u * 1024u)
#define MAX_GROUPS 3
#define BATCH_MAX 16
#define SKIPPED_MAX 64
#define RECENT_MAX 8

struct hdr {
	uint32_t magic;
	uint32_t conn;
	uint32_t gen;
	uint32_t flags;
	uint64_t seq;
	uint32_t len; /* whole message, header included */
	uint32_t sum;
};

/*
 * Faults a peer can be told to make once, at its FAULT_AT-th message, to
 * show that the parent's checks catch each kind (--fault).
 */
enum {
	FAULT_NONE,
	FAULT_DROP,
	FAULT_DUP,
	FAULT_CORRUPT,
	FAULT_TRUNCATE,
	FAULT_REORDER
};
#define N_FAULTS 6
#define FAULT_AT 100

enum { ST_LIVE, ST_DYING };
enum { G_LOOP, G_SYNC };
enum { KILL_NONE, KILL_PARENT, KILL_SELF, KILL_LARGE };

#define N_END 5 /* the codes in end_codes[] (parent.c) */

struct stats {
	atomic_uint_fast64_t sent, received, bytes, lost, dup, reordered, torn;
	atomic_uint_fast64_t lost_kill, killed_parent, killed_self,
	    killed_large;
	atomic_uint_fast64_t unexpected, bad_exit, closed_early;
	/* How killed peers' connections ended: receives, then sends. */
	atomic_uint_fast64_t ends[N_END + 1], send_ends[N_END + 1];
};

struct rec {
	uint64_t seq;
	uint32_t len;
	uint32_t sum;
};

struct group;

struct slot {
	struct group *g;
	uint32_t id, gen;
	unsigned flags; /* CQW_DUPLEX or not, CQW_EXCLUSIVE or not */
	cqw_conn *tx, *rx;
	pid_t pid;
	int state, kill_kind;
	uint64_t next_seq, gen_sent, kill_after;
	struct rec *ring; /* the outstanding FIFO */
	size_t head, count, bytes;
	struct rec skipped[SKIPPED_MAX]; /* counted lost; may come late */
	size_t nskipped;
	struct rec recent[RECENT_MAX]; /* the last received, for duplicates */
	size_t nrecent;
	int rx_err, peer_backend;
	int broken; /* an error on a live peer: what it held is lost */
	/* G_LOOP */
	struct cqw_op rop;
	uint8_t *rbuf;
	size_t rcap;
	int rop_busy, sends, cancelled;
	int close_now; /* close both ends now, ops in flight or not */
};

struct sop {
	struct cqw_op op;
	struct slot *s;
};

struct opts {
	uint64_t messages, seed, kill_every;
	unsigned conns, window;
	size_t window_bytes, max_size;
	int backends; /* bit 1: poll, bit 2: uring */
	int json, progress, watchdog_s;
	int close_early;    /* % of loop kills that close with ops in flight */
	long rss_bound_mib; /* RSS growth allowed from warm-up to the end */
	int sync_batch_timeout; /* cqw_recv_batch timeout in the sync group */
	int fault;		/* FAULT_*: the loop groups' peers misbehave */
};

struct group {
	int kind;
	enum cqw_backend backend; /* loop groups; sync: peers' loops */
	const char *name;
	struct slot **slots;
	size_t nslots;
	uint64_t rng;
	struct stats st;
	pthread_t thread;
	atomic_int paused, failed;
	char err[256];
};

extern struct opts soak_opt;
extern char soak_self_exe[4096];
extern atomic_int soak_pause_req, soak_stop_req;
extern atomic_uint_fast64_t soak_budget;

/* util.c: random numbers, content, checksums, clocks, measurements. */
uint64_t soak_rnd(uint64_t *s);
uint64_t soak_rnd_range(uint64_t *s, uint64_t lo, uint64_t hi);
void soak_fill(uint8_t *buf, size_t len, uint64_t key);
uint64_t soak_content_key(uint64_t seed, uint32_t conn, uint32_t gen,
			  uint64_t seq);
uint32_t soak_msg_sum(const uint8_t *msg, size_t len);
void soak_hdr_get(struct hdr *h, const uint8_t *p);
void soak_hdr_put(uint8_t *p, const struct hdr *h);
size_t soak_pick_size(uint64_t *rng, size_t max);
int soak_count_fds(void);
long soak_rss_kib(void);
double soak_now_s(void);
void soak_sleep_ms(int ms);

/* peer.c: the peer process ("soak --peer ..."). */
int soak_peer_main(int argc, char **argv);

/* parent.c: one group's thread. */
void *soak_group_main(void *arg);

#endif /* CQW_SOAK_H */
