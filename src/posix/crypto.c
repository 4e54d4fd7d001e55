/*
 * platform.h's crypto and randomness on Unix: HMAC from OpenSSL's
 * libcrypto (3.0), random bytes from getrandom(2).
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "cqwire.h"
#include "common/platform.h"

/* HMAC() writes up to EVP_MAX_MD_SIZE bytes into the caller's buffer. */
_Static_assert(EVP_MAX_MD_SIZE <= CQW__HMAC_MAX, "CQW__HMAC_MAX too small");

static const EVP_MD *
md_of(enum cqw__digest digest)
{
	switch (digest) {
	case CQW__MD5:
		return EVP_md5();
	case CQW__SHA256:
		return EVP_sha256();
	case CQW__SHA384:
		return EVP_sha384();
	case CQW__SHA3_256:
		return EVP_sha3_256();
	case CQW__SHA3_384:
		return EVP_sha3_384();
	}
	return NULL;
}

/*
 * HMAC() failed: is it because no provider has the digest (then the
 * handshake cannot use it), or for any other reason (memory, mostly)?
 */
static int
digest_missing(const EVP_MD *md)
{
	EVP_MD *fetched = EVP_MD_fetch(NULL, EVP_MD_get0_name(md), NULL);

	if (fetched == NULL) {
		return 1;
	}
	EVP_MD_free(fetched);
	return 0;
}

int
cqw__hmac(enum cqw__digest digest, const void *key, size_t keylen,
	  const void *msg, size_t msglen, uint8_t *out)
{
	/*
	 * To HMAC_Init_ex() a NULL key means "reuse the last one"; hand
	 * HMAC() a real empty key rather than rely on it to translate.
	 */
	static const unsigned char empty[1];
	const EVP_MD *md = md_of(digest);
	unsigned int outlen = 0;

	/* src/common checked these; only OpenSSL's int key length is ours. */
	assert(md != NULL && out != NULL);
	assert((key != NULL || keylen == 0) && (msg != NULL || msglen == 0));
	if (keylen > INT_MAX) {
		return CQW_EINVAL;
	}
	if (key == NULL) {
		key = empty;
	}
	if (msg == NULL) {
		msg = empty;
	}
	/*
	 * HMAC() fails when the provider lacks the digest (MD5 under the FIPS
	 * provider). Pop what it queued so that the application's next
	 * ERR_get_error() does not find our failure.
	 */
	ERR_set_mark();
	if (HMAC(md, key, (int)keylen, msg, msglen, out, &outlen) == NULL) {
		int r = digest_missing(md) ? CQW_ENOSYS : CQW_ENOMEM;

		ERR_pop_to_mark();
		return r;
	}
	ERR_pop_to_mark();
	return (int)outlen;
}

int
cqw__random(void *buf, size_t len)
{
	unsigned char *p = buf;
	ssize_t n;

	/* getrandom() may return short (over 32 MiB) or on a signal. */
	while (len > 0) {
		n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR) {
				continue;
			}
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
cqw__memeq_ct(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) != 0;
}

void
cqw__wipe(void *p, size_t n)
{
	OPENSSL_cleanse(p, n);
}
