/*
 * Framing of byte-stream transports (WIRE.md §2): a 4-byte big-endian
 * signed length, or ff ff ff ff + an 8-byte length for payloads over
 * 0x7fffffff. Pure: no I/O.
 *
 * The decoder takes header bytes as they arrive and says how many more it
 * needs; the payload itself is never copied through it, so a caller reads
 * payload bytes straight into their destination.
 *
 *   EMPTY --4 bytes--> [length >= 0] DONE
 *                      [length == -1] EXT --8 bytes--> DONE
 *                      [length < -1] DONE with length 0 (as Python)
 */
#ifndef CQW_FRAME_H
#define CQW_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define CQW__HDR_SMALL 4
#define CQW__HDR_LARGE 12
#define CQW__SMALL_MAX 0x7fffffffu

/* Write the header for a payload of n bytes; returns 4 or 12. */
size_t cqw__frame_header(uint8_t out[CQW__HDR_LARGE], uint64_t n);

struct cqw__dec {
	uint8_t hdr[CQW__HDR_LARGE];
	uint8_t got;  /* header bytes received */
	uint8_t need; /* header bytes expected: 4, or 12 after the marker */
	uint64_t len; /* payload length, once cqw__dec_want() == 0 */
};

void cqw__dec_reset(struct cqw__dec *d);

/* Header bytes still needed; 0 once the header is complete. */
size_t cqw__dec_want(const struct cqw__dec *d);

/* Header bytes that arrived so far: 0 means we are at a frame boundary. */
static inline int
cqw__dec_started(const struct cqw__dec *d)
{
	return d->got != 0;
}

/*
 * Take up to cqw__dec_want() bytes from p; returns how many it took. When
 * the header completes, d->len holds the payload length.
 */
size_t cqw__dec_feed(struct cqw__dec *d, const uint8_t *p, size_t n);

/*
 * The error for end of file now: CQW_EOF at a frame boundary, CQW_ETRUNC
 * inside a header. (Inside a payload the caller returns CQW_ETRUNC.)
 */
int cqw__dec_eof(const struct cqw__dec *d);

#endif
