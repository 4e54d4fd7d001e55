/*
 * What src/common needs from the operating system, besides I/O: crypto,
 * randomness, and who is calling. Implemented once per platform (src/posix on Unix with
 * OpenSSL's libcrypto and getrandom(); src/iocp with BCrypt on Windows).
 */
#ifndef CQW_PLATFORM_H
#define CQW_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#include "auth.h"

#define CQW__HMAC_MAX 64 /* longest digest we compute (SHA-384: 48) */

/*
 * HMAC-<digest>(key, msg) into out (CQW__HMAC_MAX bytes). Returns the
 * digest length, or CQW_ENOSYS if the digest is not available (FIPS).
 */
int cqw__hmac(enum cqw__digest digest, const void *key, size_t keylen,
	      const void *msg, size_t msglen, uint8_t *out);

/* len bytes from the kernel's CSPRNG. 0 or an error. */
int cqw__random(void *buf, size_t len);

/* Constant-time comparison of a[0..n) and b[0..n): 0 when equal. */
int cqw__memeq_ct(const void *a, const void *b, size_t n);

/* Zero a secret in a way the compiler may not optimise away. */
void cqw__wipe(void *p, size_t n);

/*
 * A blocking wait returned CQW_EINTR: 1 if the thread's signal check
 * (cqw_set_signal_check) says to stop and return it, 0 to retry.
 */
int cqw__eintr_stop(void);

/* The calling process, and thread, as numbers to compare for equality. */
uint64_t cqw__process_id(void);
uint64_t cqw__thread_id(void);

#endif
