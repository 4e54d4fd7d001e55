/*
 * platform.h's crypto and randomness on Windows, from CNG (bcrypt.dll):
 * HMAC through a provider opened with BCRYPT_ALG_HANDLE_HMAC_FLAG, random
 * bytes from the system-preferred RNG. SHA-3 exists in CNG only on recent
 * Windows (11 24H2 and later): where the provider cannot be opened, that
 * digest is CQW_ENOSYS and the handshake does without it.
 *
 * Providers are opened per call: the handshake computes a few MACs per
 * connection, and a cache would be global state to get right for little.
 */
#include <assert.h>
#include <limits.h>

#include "win/win.h"

#include <bcrypt.h>

#ifndef BCRYPT_SHA3_256_ALGORITHM
#define BCRYPT_SHA3_256_ALGORITHM L"SHA3-256"
#endif
#ifndef BCRYPT_SHA3_384_ALGORITHM
#define BCRYPT_SHA3_384_ALGORITHM L"SHA3-384"
#endif

#define NT_OK(s) ((NTSTATUS)(s) >= 0)

static const wchar_t *
alg_of(enum cqw__digest digest)
{
	switch (digest) {
	case CQW__MD5:
		return BCRYPT_MD5_ALGORITHM;
	case CQW__SHA256:
		return BCRYPT_SHA256_ALGORITHM;
	case CQW__SHA384:
		return BCRYPT_SHA384_ALGORITHM;
	case CQW__SHA3_256:
		return BCRYPT_SHA3_256_ALGORITHM;
	case CQW__SHA3_384:
		return BCRYPT_SHA3_384_ALGORITHM;
	}
	return NULL;
}

/* An NTSTATUS from BCrypt as a CQW_E* code. */
static int
nt_error(NTSTATUS s)
{
	switch ((unsigned long)s) {
	case 0xC0000017UL: /* STATUS_NO_MEMORY */
		return CQW_ENOMEM;
	case 0xC0000225UL: /* STATUS_NOT_FOUND: no such algorithm */
	case 0xC00000BBUL: /* STATUS_NOT_SUPPORTED */
		return CQW_ENOSYS;
	case 0xC000000DUL: /* STATUS_INVALID_PARAMETER */
		return CQW_EINVAL;
	default:
		return CQW_EIO;
	}
}

int
cqw__hmac(enum cqw__digest digest, const void *key, size_t keylen,
	  const void *msg, size_t msglen, uint8_t *out)
{
	/*
	 * HMAC pads a short key with zero bytes to the block size, so the
	 * empty key and the one-byte key 00 are the same key; CNG is not
	 * asked to take a zero-length secret.
	 */
	static const UCHAR zero_key[1];
	const wchar_t *alg = alg_of(digest);
	BCRYPT_ALG_HANDLE ah = NULL;
	BCRYPT_HASH_HANDLE hh = NULL;
	const UCHAR *p = msg;
	DWORD outlen = 0, got = 0;
	NTSTATUS s;
	ULONG chunk;
	int r;

	assert(alg != NULL && out != NULL);
	assert((key != NULL || keylen == 0) && (msg != NULL || msglen == 0));
	if (keylen > ULONG_MAX) {
		return CQW_EINVAL;
	}
	if (keylen == 0) {
		key = zero_key;
		keylen = 1;
	}
	s = BCryptOpenAlgorithmProvider(&ah, alg, NULL,
					BCRYPT_ALG_HANDLE_HMAC_FLAG);
	if (!NT_OK(s)) {
		/* A provider that is not there is a digest we cannot use. */
		return s == (NTSTATUS)0xC0000017L ? CQW_ENOMEM : CQW_ENOSYS;
	}
	s = BCryptGetProperty(ah, BCRYPT_HASH_LENGTH, (PUCHAR)&outlen,
			      sizeof(outlen), &got, 0);
	if (!NT_OK(s) || outlen == 0 || outlen > CQW__HMAC_MAX) {
		r = NT_OK(s) ? CQW_EIO : nt_error(s);
		goto out_close_alg;
	}
	/* NULL object buffer: CNG allocates it (Windows 7 and later). */
	s = BCryptCreateHash(ah, &hh, NULL, 0, (PUCHAR)key, (ULONG)keylen, 0);
	if (!NT_OK(s)) {
		r = nt_error(s);
		goto out_close_alg;
	}
	while (msglen > 0) {
		chunk = msglen > 0x40000000 ? 0x40000000 : (ULONG)msglen;
		s = BCryptHashData(hh, (PUCHAR)p, chunk, 0);
		if (!NT_OK(s)) {
			r = nt_error(s);
			goto out_destroy;
		}
		p += chunk;
		msglen -= chunk;
	}
	s = BCryptFinishHash(hh, out, outlen, 0);
	r = NT_OK(s) ? (int)outlen : nt_error(s);
out_destroy:
	BCryptDestroyHash(hh);
out_close_alg:
	BCryptCloseAlgorithmProvider(ah, 0);
	return r;
}

int
cqw__random(void *buf, size_t len)
{
	UCHAR *p = buf;
	ULONG chunk;
	NTSTATUS s;

	while (len > 0) {
		chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
		s = BCryptGenRandom(NULL, p, chunk,
				    BCRYPT_USE_SYSTEM_PREFERRED_RNG);
		if (!NT_OK(s)) {
			return nt_error(s);
		}
		p += chunk;
		len -= chunk;
	}
	return 0;
}

int
cqw__memeq_ct(const void *a, const void *b, size_t n)
{
	const volatile unsigned char *x = a, *y = b;
	unsigned char d = 0;
	size_t i;

	/* Every byte is looked at, whatever the first difference. */
	for (i = 0; i < n; i++) {
		d |= (unsigned char)(x[i] ^ y[i]);
	}
	return d != 0;
}

void
cqw__wipe(void *p, size_t n)
{
	SecureZeroMemory(p, n);
}
