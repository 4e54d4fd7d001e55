/*
 * Pseudo-random content, the checksum, our header, the size mix, clocks
 * and the process measurements.
 */
#include "soak.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------------- */
/* Random numbers, content and checksums                                   */

static uint64_t
splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t
soak_rnd(uint64_t *s)
{
	return splitmix(s);
}

/* Uniform in [lo, hi]. */
uint64_t
soak_rnd_range(uint64_t *s, uint64_t lo, uint64_t hi)
{
	return lo + soak_rnd(s) % (hi - lo + 1);
}

/* Fill buf with the stream named key; short messages are checked this way. */
void
soak_fill(uint8_t *buf, size_t len, uint64_t key)
{
	uint64_t w;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		w = splitmix(&key);
		memcpy(buf + i, &w, 8);
	}
	if (i < len) {
		w = splitmix(&key);
		memcpy(buf + i, &w, len - i);
	}
}

uint64_t
soak_content_key(uint64_t seed, uint32_t conn, uint32_t gen, uint64_t seq)
{
	uint64_t k = seed ^ ((uint64_t)conn << 40) ^ ((uint64_t)gen << 20) ^
		     (seq * 0x2545f4914f6cdd1dull);

	return splitmix(&k);
}

/* FNV-1a, taken 64 bits at a time (the tail bytewise) to keep up. */
static uint64_t
fnv_step(uint64_t h, const uint8_t *p, size_t len)
{
	const uint64_t prime = 0x100000001b3ull;
	uint64_t w;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&w, p + i, 8);
		h = (h ^ w) * prime;
	}
	for (; i < len; i++) {
		h = (h ^ p[i]) * prime;
	}
	return h;
}

/* Checksum of a framed message: header fields before sum, then payload. */
uint32_t
soak_msg_sum(const uint8_t *msg, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	h = fnv_step(h, msg, 28);
	h = fnv_step(h, msg + HDR_LEN, len - HDR_LEN);
	return (uint32_t)(h ^ (h >> 32));
}

void
soak_hdr_get(struct hdr *h, const uint8_t *p)
{
	memcpy(&h->magic, p, 4);
	memcpy(&h->conn, p + 4, 4);
	memcpy(&h->gen, p + 8, 4);
	memcpy(&h->flags, p + 12, 4);
	memcpy(&h->seq, p + 16, 8);
	memcpy(&h->len, p + 24, 4);
	memcpy(&h->sum, p + 28, 4);
}

void
soak_hdr_put(uint8_t *p, const struct hdr *h)
{
	memcpy(p, &h->magic, 4);
	memcpy(p + 4, &h->conn, 4);
	memcpy(p + 8, &h->gen, 4);
	memcpy(p + 12, &h->flags, 4);
	memcpy(p + 16, &h->seq, 8);
	memcpy(p + 24, &h->len, 4);
	memcpy(p + 28, &h->sum, 4);
}

/*
 * Mostly small, a tail up to 1 MiB: 2% empty, 3% shorter than our header,
 * 89% up to 256 B, 5.7% up to 8 KiB, 0.28% up to 128 KiB, 0.02% up to
 * 1 MiB (1 MiB itself included).
 */
size_t
soak_pick_size(uint64_t *rng, size_t max)
{
	uint64_t r = soak_rnd(rng) % 100000;
	size_t n;

	if (r < 2000) {
		n = 0;
	} else if (r < 5000) {
		n = soak_rnd_range(rng, 1, HDR_LEN - 1);
	} else if (r < 94000) {
		n = soak_rnd_range(rng, HDR_LEN, 256);
	} else if (r < 99700) {
		n = soak_rnd_range(rng, 257, 8192);
	} else if (r < 99980) {
		n = soak_rnd_range(rng, 8193, 128 * 1024);
	} else if (r < 99995) {
		n = soak_rnd_range(rng, 128 * 1024 + 1, MAX_MSG);
	} else {
		n = MAX_MSG;
	}
	return n < max ? n : max;
}

/* ---------------------------------------------------------------------- */
/* Process measurements                                                    */

int
soak_count_fds(void)
{
	struct dirent *e;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	if (d == NULL) {
		return -1;
	}
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] != '.') {
			n++;
		}
	}
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

long
soak_rss_kib(void)
{
	long size = 0, res = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f == NULL) {
		return -1;
	}
	if (fscanf(f, "%ld %ld", &size, &res) != 2) {
		res = -1;
	}
	fclose(f);
	return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

double
soak_now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void
soak_sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}
