/*
 * The HMAC challenge/response of multiprocessing.connection (WIRE.md §4),
 * as pure functions: no I/O, no randomness of its own. listener.c drives
 * them over a connection in this order (server speaks first):
 *
 *   server                              client
 *   make_challenge  -- frame 1 -->
 *                   <-- frame 2 --      answer
 *   verify, send #WELCOME#/#FAILURE# -- frame 3 -->   check_welcome
 *                   <-- frame 4 --      make_challenge
 *   answer          -- frame 5 -->      verify
 *   check_welcome   <-- frame 6 --      send #WELCOME#/#FAILURE#
 */
#ifndef CQW_AUTH_H
#define CQW_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "cqwire.h"

#define CQW__AUTH_MAX_FRAME 256 /* every handshake read is capped here */
#define CQW__AUTH_CHALLENGE "#CHALLENGE#"
#define CQW__AUTH_WELCOME "#WELCOME#"
#define CQW__AUTH_FAILURE "#FAILURE#"
#define CQW__AUTH_LEGACY_RANDOM 20 /* bytes of a <= 3.11 challenge */
#define CQW__AUTH_MODERN_RANDOM 40 /* bytes after "{sha256}" in >= 3.12 */

enum cqw__digest {
	CQW__MD5,
	CQW__SHA256,
	CQW__SHA384,
	CQW__SHA3_256,
	CQW__SHA3_384,
};

/*
 * How many random bytes make_challenge() needs under these flags
 * (CQW_AUTH_LEGACY_CHALLENGE: 20, else 40).
 */
size_t cqw__auth_random_len(unsigned flags);

/*
 * Frame 1/4: write "#CHALLENGE#" + ("{sha256}" + 40 random bytes, or the
 * 20 raw random bytes with CQW_AUTH_LEGACY_CHALLENGE) into out (31 or 59
 * bytes; a smaller cap is CQW_EINVAL). rnd holds
 * cqw__auth_random_len(flags) bytes. Returns the frame length.
 */
int cqw__auth_make_challenge(unsigned flags, const uint8_t *rnd, uint8_t *out,
			     size_t cap);

/*
 * Frame 2/5: answer a received challenge frame (the whole payload,
 * including "#CHALLENGE#"). Writes the response into out (at most 58
 * bytes; too small a cap is CQW_EINVAL) and returns its length, or
 * CQW_EAUTH for: a frame without the prefix, a message under 20 bytes, an
 * MD5 answer (raw or "{md5}") under CQW_AUTH_REFUSE_MD5, a "{name}" that
 * is not allowed; CQW_ENOSYS if the digest is unavailable (FIPS). A 16- or
 * 20-byte message gets a raw 16-byte HMAC-MD5; otherwise "{name}" +
 * HMAC-name over the whole message after "#CHALLENGE#" (prefix included).
 * The 256-byte cap on input is the reader's job.
 */
int cqw__auth_answer(const void *key, size_t keylen, unsigned flags,
		     const uint8_t *frame, size_t len, uint8_t *out,
		     size_t cap);

/*
 * Frame 3/6 (verifier side): check resp against the challenge frame we
 * sent (whole payload, including "#CHALLENGE#"). Accepts a raw 16-byte
 * response as MD5 (unless CQW_AUTH_REFUSE_MD5; a 20-byte one is read as
 * MD5 too, as CPython does, and fails on length) and "{name}"+mac for the
 * allowed names; compares in constant time. 0, CQW_EAUTH, or CQW_EINVAL
 * for bad arguments.
 */
int cqw__auth_verify(const void *key, size_t keylen, unsigned flags,
		     const uint8_t *challenge, size_t challenge_len,
		     const uint8_t *resp, size_t resp_len);

/* 0 if the frame is exactly "#WELCOME#", else CQW_EAUTH. */
int cqw__auth_check_welcome(const uint8_t *frame, size_t len);

#endif
