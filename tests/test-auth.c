/*
 * The handshake's pure functions (src/common/auth.c) against the byte-exact
 * vectors of WIRE.md §4.6 and the edge cases of §4.7. Expected MACs that
 * are not WIRE.md vectors are computed here with OpenSSL directly, never
 * through cqw__hmac(), so that a bug there cannot hide itself.
 *
 * On Windows the reference is BCrypt called here directly (t_hmac), and
 * cqw__hmac() is src/win/crypto.c's. A BCrypt without SHA-3 (before
 * Windows 11 24H2; wine 8) has no reference for the sha3 cases: there
 * the library must refuse them too (cqw__hmac says CQW_ENOSYS), and the
 * case says so and moves on.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#include <bcrypt.h>
#else
#include <openssl/evp.h>
#include <openssl/hmac.h>
#endif

#include "cqwire.h"
#include "common/auth.h"
#include "common/platform.h"

/*
 * A digest for t_hmac(): OpenSSL's EVP_MD, or a BCrypt algorithm name;
 * t_md_<name>() returns it.
 */
#ifdef _WIN32
typedef wchar_t t_md;

static inline const t_md *
t_md_md5(void)
{
	return BCRYPT_MD5_ALGORITHM;
}

static inline const t_md *
t_md_sha1(void)
{
	return BCRYPT_SHA1_ALGORITHM;
}

static inline const t_md *
t_md_sha256(void)
{
	return BCRYPT_SHA256_ALGORITHM;
}

static inline const t_md *
t_md_sha384(void)
{
	return BCRYPT_SHA384_ALGORITHM;
}

static inline const t_md *
t_md_sha3_256(void)
{
	return L"SHA3-256"; /* BCRYPT_SHA3_256_ALGORITHM */
}

static inline const t_md *
t_md_sha3_384(void)
{
	return L"SHA3-384"; /* BCRYPT_SHA3_384_ALGORITHM */
}

/* 1 if BCrypt has the HMAC of md here. */
static int
t_md_available(const t_md *md)
{
	BCRYPT_ALG_HANDLE alg;

	if (!BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(
		&alg, md, NULL, BCRYPT_ALG_HANDLE_HMAC_FLAG))) {
		return 0;
	}
	BCryptCloseAlgorithmProvider(alg, 0);
	return 1;
}
#else
typedef EVP_MD t_md;
#define t_md_md5 EVP_md5
#define t_md_sha1 EVP_sha1
#define t_md_sha256 EVP_sha256
#define t_md_sha384 EVP_sha384
#define t_md_sha3_256 EVP_sha3_256
#define t_md_sha3_384 EVP_sha3_384
#define t_md_available(md) ((md) != NULL)
#endif

#define KEY "secret"
#define KEYLEN (sizeof(KEY) - 1)
#define PREFIX "#CHALLENGE#"
#define PREFIX_LEN (sizeof(PREFIX) - 1)

/* WIRE.md §4.6: server random 00 01 02 ..., client random 80 81 82 ... */
static void
t_seq(uint8_t *buf, size_t n, uint8_t first)
{
	size_t i;

	for (i = 0; i < n; i++) {
		buf[i] = (uint8_t)(first + i);
	}
}

/* The bytes of s, without its NUL: wire bytes, not a string. */
static size_t
t_put(uint8_t *out, const char *s)
{
	size_t n;

	for (n = 0; s[n] != '\0'; n++) {
		out[n] = (uint8_t)s[n];
	}
	return n;
}

/* "#CHALLENGE#" + tag + n bytes counting up from first, built by hand. */
static size_t
t_frame(uint8_t *out, const char *tag, size_t n, uint8_t first)
{
	size_t len = t_put(out, PREFIX);

	len += t_put(out + len, tag);
	t_seq(out + len, n, first);
	return len + n;
}

#ifdef _WIN32
/* HMAC straight from BCrypt (one hash object, then its length). */
static size_t
t_hmac(const t_md *md, const void *key, size_t keylen, const uint8_t *msg,
       size_t msglen, uint8_t *out)
{
	static uint8_t empty[1];
	BCRYPT_ALG_HANDLE alg;
	BCRYPT_HASH_HANDLE h;
	DWORD len = 0, got = 0;

	assert_true(BCRYPT_SUCCESS(BCryptOpenAlgorithmProvider(
	    &alg, md, NULL, BCRYPT_ALG_HANDLE_HMAC_FLAG)));
	assert_true(BCRYPT_SUCCESS(BCryptGetProperty(
	    alg, BCRYPT_HASH_LENGTH, (PUCHAR)&len, sizeof(len), &got, 0)));
	assert_true(BCRYPT_SUCCESS(BCryptCreateHash(
	    alg, &h, NULL, 0, key ? (PUCHAR)key : empty, (ULONG)keylen, 0)));
	assert_true(
	    BCRYPT_SUCCESS(BCryptHashData(h, (PUCHAR)msg, (ULONG)msglen, 0)));
	assert_true(BCRYPT_SUCCESS(BCryptFinishHash(h, out, len, 0)));
	BCryptDestroyHash(h);
	BCryptCloseAlgorithmProvider(alg, 0);
	return len;
}
#else
/* HMAC straight from OpenSSL, with a non-NULL key even when empty. */
static size_t
t_hmac(const t_md *md, const void *key, size_t keylen, const uint8_t *msg,
       size_t msglen, uint8_t *out)
{
	static const uint8_t empty[1];
	unsigned int len = 0;

	assert_non_null(
	    HMAC(md, key ? key : empty, (int)keylen, msg, msglen, out, &len));
	return len;
}
#endif

/*
 * The system has no HMAC-name (t_md_available): cqw__hmac() must say
 * CQW_ENOSYS for it too (the sha3 names are the only ones that can be
 * missing), and the case is reported.
 */
static void
t_no_digest(const char *name)
{
	uint8_t out[CQW__HMAC_MAX];
	enum cqw__digest d;

	assert_true(strcmp(name, "sha3_256") == 0 ||
		    strcmp(name, "sha3_384") == 0);
	d = strcmp(name, "sha3_256") == 0 ? CQW__SHA3_256 : CQW__SHA3_384;
	assert_int_equal(cqw__hmac(d, KEY, KEYLEN, "x", 1, out), CQW_ENOSYS);
	print_message("no HMAC-%s on this system: refused (CQW_ENOSYS)\n",
		      name);
}

/* "{name}" + HMAC-name(KEY, the frame after "#CHALLENGE#"). */
static size_t
t_named(const char *name, const t_md *md, const uint8_t *frame, size_t len,
	uint8_t *out)
{
	size_t n = t_put(out, "{");

	n += t_put(out + n, name);
	n += t_put(out + n, "}");
	return n + t_hmac(md, KEY, KEYLEN, frame + PREFIX_LEN, len - PREFIX_LEN,
			  out + n);
}

static void
test_auth_random_len(void **state)
{
	(void)state;
	assert_int_equal(cqw__auth_random_len(0), 40);
	assert_int_equal(cqw__auth_random_len(CQW_AUTH_LEGACY_CHALLENGE), 20);
	assert_int_equal(cqw__auth_random_len(CQW_AUTH_REFUSE_MD5), 40);
}

/*
 * One direction of §4.6: the challenge frame built from rnd must equal
 * want_frame, the answer must equal want_resp, and verify must accept it.
 */
static void
t_vector(unsigned flags, uint8_t first, const uint8_t *want_frame,
	 size_t want_frame_len, const uint8_t *want_resp, size_t want_resp_len)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	int n, m;

	t_seq(rnd, sizeof(rnd), first);
	n = cqw__auth_make_challenge(flags, rnd, frame, sizeof(frame));
	assert_int_equal(n, want_frame_len);
	assert_memory_equal(frame, want_frame, want_frame_len);

	m = cqw__auth_answer(KEY, KEYLEN, 0, frame, (size_t)n, resp,
			     sizeof(resp));
	assert_int_equal(m, want_resp_len);
	assert_memory_equal(resp, want_resp, want_resp_len);

	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, (size_t)n, resp, (size_t)m),
	    0);
}

static const uint8_t legacy_s_frame[0x1f] = {
	0x23, 0x43, 0x48, 0x41, 0x4c, 0x4c, 0x45, 0x4e, 0x47, 0x45, 0x23,
	0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
	0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13,
};

static const uint8_t legacy_c_frame[0x1f] = {
	0x23, 0x43, 0x48, 0x41, 0x4c, 0x4c, 0x45, 0x4e, 0x47, 0x45, 0x23,
	0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a,
	0x8b, 0x8c, 0x8d, 0x8e, 0x8f, 0x90, 0x91, 0x92, 0x93,
};

static void
test_auth_vector_legacy_server_challenge(void **state)
{
	static const uint8_t resp[0x10] = {
		0x7d, 0xef, 0xa9, 0xcc, 0x46, 0xab, 0xc3, 0x58,
		0x33, 0x25, 0xd1, 0x7c, 0xcd, 0xa7, 0x51, 0x90,
	};

	(void)state;
	t_vector(CQW_AUTH_LEGACY_CHALLENGE, 0x00, legacy_s_frame,
		 sizeof(legacy_s_frame), resp, sizeof(resp));
}

static void
test_auth_vector_legacy_client_challenge(void **state)
{
	static const uint8_t resp[0x10] = {
		0x85, 0x3a, 0xc2, 0x88, 0x3a, 0xf5, 0x7c, 0xef,
		0xa5, 0xd6, 0xdf, 0x14, 0xaa, 0x50, 0x1c, 0xa0,
	};

	(void)state;
	t_vector(CQW_AUTH_LEGACY_CHALLENGE, 0x80, legacy_c_frame,
		 sizeof(legacy_c_frame), resp, sizeof(resp));
}

static void
test_auth_vector_modern_server_challenge(void **state)
{
	static const uint8_t resp[0x28] = {
		0x7b, 0x73, 0x68, 0x61, 0x32, 0x35, 0x36, 0x7d, 0xfc, 0x57,
		0xfb, 0xe6, 0x50, 0xd6, 0x12, 0x4b, 0x98, 0x21, 0x5e, 0x7b,
		0x5d, 0x19, 0x7d, 0x58, 0x07, 0xad, 0x69, 0x98, 0x2d, 0x27,
		0x5a, 0x97, 0x35, 0xea, 0x2d, 0x56, 0xf1, 0xfa, 0x69, 0x89,
	};
	uint8_t frame[0x3b];

	(void)state;
	assert_int_equal(t_frame(frame, "{sha256}", 40, 0x00), sizeof(frame));
	t_vector(0, 0x00, frame, sizeof(frame), resp, sizeof(resp));
}

static void
test_auth_vector_modern_client_challenge(void **state)
{
	static const uint8_t resp[0x28] = {
		0x7b, 0x73, 0x68, 0x61, 0x32, 0x35, 0x36, 0x7d, 0xc7, 0x55,
		0x82, 0x06, 0xf5, 0x35, 0x27, 0xf2, 0x32, 0xe4, 0xc2, 0xd8,
		0x10, 0xfa, 0x62, 0x44, 0x94, 0x67, 0xe3, 0x25, 0xa2, 0x4b,
		0xa2, 0xff, 0x74, 0xb9, 0x4e, 0xbf, 0xd2, 0x71, 0xe5, 0x83,
	};
	uint8_t frame[0x3b];

	(void)state;
	assert_int_equal(t_frame(frame, "{sha256}", 40, 0x80), sizeof(frame));
	t_vector(0, 0x80, frame, sizeof(frame), resp, sizeof(resp));
}

/*
 * §4.6 mixed: a legacy peer MACs the whole modern challenge with MD5 and
 * sends it raw; a modern verifier must accept it, in both directions.
 */
static void
test_auth_vector_mixed_legacy_answers_modern(void **state)
{
	static const uint8_t from_s[0x10] = {
		0x8e, 0x48, 0xd2, 0xbb, 0x34, 0x9b, 0x4b, 0x72,
		0xb9, 0x38, 0x29, 0x99, 0xed, 0x5b, 0x62, 0xeb,
	};
	static const uint8_t from_c[0x10] = {
		0xdc, 0xd0, 0x92, 0x68, 0x15, 0xaf, 0x6e, 0x2a,
		0x3d, 0x8a, 0x10, 0x34, 0x86, 0x87, 0x2f, 0x8b,
	};
	uint8_t frame[0x3b];
	uint8_t bad[0x10];

	(void)state;
	t_frame(frame, "{sha256}", 40, 0x00);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  from_s, sizeof(from_s)),
			 0);
	/* The other direction's MAC must not pass for this challenge. */
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  from_c, sizeof(from_c)),
			 CQW_EAUTH);

	t_frame(frame, "{sha256}", 40, 0x80);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  from_c, sizeof(from_c)),
			 0);
	memcpy(bad, from_c, sizeof(bad));
	bad[15] ^= 0x01;
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  bad, sizeof(bad)),
			 CQW_EAUTH);
}

/* Every allowed response form, accepted, and rejected once a bit flips. */
static void
t_verify_accepts(const uint8_t *resp, size_t len)
{
	uint8_t frame[0x3b];
	uint8_t bad[CQW__AUTH_MAX_FRAME];

	t_frame(frame, "{sha256}", 40, 0x00);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), resp, len),
	    0);
	memcpy(bad, resp, len);
	bad[len - 1] ^= 0x80;
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), bad, len),
	    CQW_EAUTH);
}

static void
test_auth_verify_accepts_raw_md5(void **state)
{
	uint8_t frame[0x3b];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t n;

	(void)state;
	t_frame(frame, "{sha256}", 40, 0x00);
	n = t_hmac(t_md_md5(), KEY, KEYLEN, frame + PREFIX_LEN,
		   sizeof(frame) - PREFIX_LEN, resp);
	assert_int_equal(n, 16);
	t_verify_accepts(resp, n);
}

static void
test_auth_verify_accepts_named_digests(void **state)
{
	static const struct {
		const char *name;
		const t_md *(*md)(void);
		size_t len;
	} cases[] = {
		{ "md5", t_md_md5, 5 + 16 },
		{ "sha256", t_md_sha256, 8 + 32 },
		{ "sha384", t_md_sha384, 8 + 48 },
		{ "sha3_256", t_md_sha3_256, 10 + 32 },
		{ "sha3_384", t_md_sha3_384, 10 + 48 },
	};
	uint8_t frame[0x3b];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t i, n;

	(void)state;
	t_frame(frame, "{sha256}", 40, 0x00);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (!t_md_available(cases[i].md())) {
			t_no_digest(cases[i].name);
			continue;
		}
		n = t_named(cases[i].name, cases[i].md(), frame, sizeof(frame),
			    resp);
		assert_int_equal(n, cases[i].len);
		t_verify_accepts(resp, n);
	}
}

/* A "{name}" challenge is answered with "{name}" + HMAC-name. */
static void
test_auth_answer_named_digests(void **state)
{
	static const struct {
		const char *name;
		const t_md *(*md)(void);
	} cases[] = {
		{ "md5", t_md_md5 },	       { "sha256", t_md_sha256 },
		{ "sha384", t_md_sha384 },     { "sha3_256", t_md_sha3_256 },
		{ "sha3_384", t_md_sha3_384 },
	};
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t want[CQW__AUTH_MAX_FRAME];
	uint8_t got[CQW__AUTH_MAX_FRAME];
	char tag[16];
	size_t i, len, n;
	int m;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		snprintf(tag, sizeof(tag), "{%s}", cases[i].name);
		len = t_frame(frame, tag, 40, 0x10);
		if (!t_md_available(cases[i].md())) {
			/* No reference: the library must not answer either. */
			t_no_digest(cases[i].name);
			assert_true(cqw__auth_answer(KEY, KEYLEN, 0, frame, len,
						     got, sizeof(got)) < 0);
			continue;
		}
		n = t_named(cases[i].name, cases[i].md(), frame, len, want);
		m = cqw__auth_answer(KEY, KEYLEN, 0, frame, len, got,
				     sizeof(got));
		assert_int_equal(m, n);
		assert_memory_equal(got, want, n);
	}
}

static void
test_auth_wrong_key_rejected(void **state)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	unsigned flags[] = { 0, CQW_AUTH_LEGACY_CHALLENGE };
	size_t i;
	int n, m;

	(void)state;
	t_seq(rnd, sizeof(rnd), 0x00);
	for (i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		n = cqw__auth_make_challenge(flags[i], rnd, frame,
					     sizeof(frame));
		assert_true(n > 0);
		m = cqw__auth_answer("secreT", 6, 0, frame, (size_t)n, resp,
				     sizeof(resp));
		assert_true(m > 0);
		assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame,
						  (size_t)n, resp, (size_t)m),
				 CQW_EAUTH);
		/*
		 * A longer key sharing the prefix is another key too (but
		 * not "secret\0": HMAC pads short keys with zeros).
		 */
		m = cqw__auth_answer("secrets", 7, 0, frame, (size_t)n, resp,
				     sizeof(resp));
		assert_true(m > 0);
		assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame,
						  (size_t)n, resp, (size_t)m),
				 CQW_EAUTH);
	}
}

static void
t_answer_rejects(const char *tag, size_t nrandom)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len = t_frame(frame, tag, nrandom, 0x41);

	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, sizeof(out)),
	    CQW_EAUTH);
}

static void
test_auth_answer_rejects_unknown_digest(void **state)
{
	(void)state;
	t_answer_rejects("{sha1}", 40);
	t_answer_rejects("{SHA256}", 40);
	t_answer_rejects("{}", 40);
	t_answer_rejects("{sha256", 40);
	t_answer_rejects("sha256}", 40);
	t_answer_rejects("(sha256}", 40);
	/* '}' at index 10: one past CPython's find(b'}', 1, 10). */
	t_answer_rejects("{sha3_2566}", 40);
	/* Not 16 or 20 bytes and no '{': neither legacy nor modern. */
	t_answer_rejects("", 21);
	t_answer_rejects("", 40);
}

static void
test_auth_answer_accepts_brace_at_index_9(void **state)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len = t_frame(frame, "{sha3_384}", 40, 0x41);

	(void)state;
	if (!t_md_available(t_md_sha3_384())) {
		/* Parsed, then refused for the digest, not the name. */
		t_no_digest("sha3_384");
		assert_int_equal(cqw__auth_answer(KEY, KEYLEN, 0, frame, len,
						  out, sizeof(out)),
				 CQW_ENOSYS);
		return;
	}
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, sizeof(out)),
	    10 + 48);
	assert_memory_equal(out, "{sha3_384}", 10);
}

static void
test_auth_answer_rejects_missing_prefix(void **state)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len;

	(void)state;
	len = t_frame(frame, "", 20, 0x00);
	frame[10] = 'X'; /* "#CHALLENGEX" */
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, sizeof(out)),
	    CQW_EAUTH);
	/* The 20 bytes alone, as a peer without the prefix would send. */
	assert_int_equal(cqw__auth_answer(KEY, KEYLEN, 0, frame + PREFIX_LEN,
					  20, out, sizeof(out)),
			 CQW_EAUTH);
	/* A truncated prefix, and nothing at all. */
	assert_int_equal(cqw__auth_answer(KEY, KEYLEN, 0,
					  (const uint8_t *)"#CHALL", 6, out,
					  sizeof(out)),
			 CQW_EAUTH);
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, NULL, 0, out, sizeof(out)),
	    CQW_EAUTH);
}

static void
test_auth_answer_rejects_short_challenge(void **state)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len;

	(void)state;
	t_answer_rejects("", 19);
	/* 16 is a legacy length, but a challenge that short is refused. */
	t_answer_rejects("", 16);
	t_answer_rejects("", 0);
	t_answer_rejects("{sha256}", 11);
	/* 20 is the shortest challenge answered. */
	len = t_frame(frame, "", 20, 0x00);
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, sizeof(out)), 16);
}

static void
test_auth_verify_rejects_256_byte_junk(void **state)
{
	uint8_t frame[0x3b];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t n;

	(void)state;
	t_frame(frame, "{sha256}", 40, 0x00);
	memset(resp, 'x', sizeof(resp));
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  resp, sizeof(resp)),
			 CQW_EAUTH);
	/* Junk that starts with a valid MAC: the length must match too. */
	n = t_named("sha256", t_md_sha256(), frame, sizeof(frame), resp);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), resp, n), 0);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame),
					  resp, sizeof(resp)),
			 CQW_EAUTH);
}

static void
test_auth_verify_rejects_bad_lengths(void **state)
{
	uint8_t frame[0x3b];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t n;

	(void)state;
	t_frame(frame, "{sha256}", 40, 0x00);
	/* A correct MD5 MAC padded to 20 bytes: legacy length, wrong size. */
	n = t_hmac(t_md_md5(), KEY, KEYLEN, frame + PREFIX_LEN,
		   sizeof(frame) - PREFIX_LEN, resp);
	memset(resp + n, 0, 4);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), resp, 20),
	    CQW_EAUTH);
	/* A correct SHA-256 MAC cut short. */
	n = t_named("sha256", t_md_sha256(), frame, sizeof(frame), resp);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), resp, n - 1),
	    CQW_EAUTH);
	/* Nothing, and a MAC under a name we did not allow. */
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), NULL, 0),
	    CQW_EAUTH);
	n = t_named("sha1", t_md_sha1(), frame, sizeof(frame), resp);
	assert_int_equal(n, 6 + 20);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, sizeof(frame), resp, n),
	    CQW_EAUTH);
}

/* §4.4: length wins over content, so this gets raw MD5, not SHA-256. */
static void
test_auth_answer_20_byte_named_challenge_gets_md5(void **state)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t want[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len, n;

	(void)state;
	len = t_frame(frame, "{sha256}", 12, 0x00);
	assert_int_equal(len, PREFIX_LEN + 20);
	n = t_hmac(t_md_md5(), KEY, KEYLEN, frame + PREFIX_LEN, 20, want);
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, sizeof(out)), 16);
	assert_memory_equal(out, want, n);
}

static void
test_auth_refuse_md5(void **state)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t n;
	int len;

	(void)state;
	/* Answering a 20-byte challenge means MD5: refused. */
	t_seq(rnd, sizeof(rnd), 0x00);
	len = cqw__auth_make_challenge(CQW_AUTH_LEGACY_CHALLENGE, rnd, frame,
				       sizeof(frame));
	assert_int_equal(len, 31);
	assert_int_equal(cqw__auth_answer(KEY, KEYLEN, CQW_AUTH_REFUSE_MD5,
					  frame, (size_t)len, resp,
					  sizeof(resp)),
			 CQW_EAUTH);

	/* A correct raw 16-byte response: accepted only without the flag. */
	len = cqw__auth_make_challenge(0, rnd, frame, sizeof(frame));
	assert_int_equal(len, 59);
	n = t_hmac(t_md_md5(), KEY, KEYLEN, frame + PREFIX_LEN,
		   (size_t)len - PREFIX_LEN, resp);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, (size_t)len, resp, n), 0);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, CQW_AUTH_REFUSE_MD5,
					  frame, (size_t)len, resp, n),
			 CQW_EAUTH);

	/* SHA-256 still passes under the flag. */
	n = t_named("sha256", t_md_sha256(), frame, (size_t)len, resp);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, CQW_AUTH_REFUSE_MD5,
					  frame, (size_t)len, resp, n),
			 0);
}

/* "Never accept or send HMAC-MD5" covers MD5 asked for by name, too. */
static void
test_auth_refuse_md5_named(void **state)
{
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t len, n;

	(void)state;
	len = t_frame(frame, "{md5}", 40, 0x00);
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, frame, len, resp, sizeof(resp)),
	    21);
	assert_int_equal(cqw__auth_answer(KEY, KEYLEN, CQW_AUTH_REFUSE_MD5,
					  frame, len, resp, sizeof(resp)),
			 CQW_EAUTH);

	len = t_frame(frame, "{sha256}", 40, 0x00);
	n = t_named("md5", t_md_md5(), frame, len, resp);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, len, resp, n),
			 0);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, CQW_AUTH_REFUSE_MD5,
					  frame, len, resp, n),
			 CQW_EAUTH);
}

/* Real random bytes: the frame shape per flag, and a full round trip. */
static void
test_auth_challenge_lengths(void **state)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t rnd2[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	int n, m;

	(void)state;
	memset(rnd, 0, sizeof(rnd));
	memset(rnd2, 0, sizeof(rnd2));
	assert_int_equal(cqw__random(rnd, sizeof(rnd)), 0);
	assert_int_equal(cqw__random(rnd2, sizeof(rnd2)), 0);
	/*
	 * Two draws that agree in either half mean stuck or missing bytes
	 * (a false failure has odds of 2^-159).
	 */
	assert_memory_not_equal(rnd, rnd2, 20);
	assert_memory_not_equal(rnd + 20, rnd2 + 20, 20);

	n = cqw__auth_make_challenge(CQW_AUTH_LEGACY_CHALLENGE, rnd, frame,
				     sizeof(frame));
	assert_int_equal(n, 31);
	assert_memory_equal(frame, PREFIX, PREFIX_LEN);
	assert_memory_equal(frame + PREFIX_LEN, rnd, 20);
	m = cqw__auth_answer(KEY, KEYLEN, 0, frame, (size_t)n, resp,
			     sizeof(resp));
	assert_int_equal(m, 16);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, (size_t)n, resp, (size_t)m),
	    0);

	n = cqw__auth_make_challenge(0, rnd, frame, sizeof(frame));
	assert_int_equal(n, 59);
	assert_memory_equal(frame, PREFIX "{sha256}", PREFIX_LEN + 8);
	assert_memory_equal(frame + PREFIX_LEN + 8, rnd, 40);
	m = cqw__auth_answer(KEY, KEYLEN, 0, frame, (size_t)n, resp,
			     sizeof(resp));
	assert_int_equal(m, 40);
	assert_int_equal(
	    cqw__auth_verify(KEY, KEYLEN, 0, frame, (size_t)n, resp, (size_t)m),
	    0);
}

/* An empty key, given as "" or as NULL, is HMAC with an empty key. */
static void
test_auth_empty_key(void **state)
{
	const void *keys[] = { "", NULL };
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t want[CQW__AUTH_MAX_FRAME];
	uint8_t resp[CQW__AUTH_MAX_FRAME];
	size_t i, len, n;
	int m;

	(void)state;
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		len = t_frame(frame, "{sha256}", 40, 0x00);
		n = t_put(want, "{sha256}");
		n += t_hmac(t_md_sha256(), "", 0, frame + PREFIX_LEN,
			    len - PREFIX_LEN, want + n);
		m = cqw__auth_answer(keys[i], 0, 0, frame, len, resp,
				     sizeof(resp));
		assert_int_equal(m, n);
		assert_memory_equal(resp, want, n);
		assert_int_equal(cqw__auth_verify(keys[i], 0, 0, frame, len,
						  resp, (size_t)m),
				 0);
		/* Not the same as having a key. */
		assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, len,
						  resp, (size_t)m),
				 CQW_EAUTH);

		len = t_frame(frame, "", 20, 0x00);
		n = t_hmac(t_md_md5(), "", 0, frame + PREFIX_LEN, 20, want);
		m = cqw__auth_answer(keys[i], 0, 0, frame, len, resp,
				     sizeof(resp));
		assert_int_equal(m, n);
		assert_memory_equal(resp, want, n);
		assert_int_equal(cqw__auth_verify(keys[i], 0, 0, frame, len,
						  resp, (size_t)m),
				 0);
	}
}

static void
test_auth_check_welcome(void **state)
{
	(void)state;
	assert_int_equal(
	    cqw__auth_check_welcome((const uint8_t *)"#WELCOME#", 9), 0);
	assert_int_equal(
	    cqw__auth_check_welcome((const uint8_t *)"#FAILURE#", 9),
	    CQW_EAUTH);
	assert_int_equal(
	    cqw__auth_check_welcome((const uint8_t *)"#WELCOME#x", 10),
	    CQW_EAUTH);
	assert_int_equal(
	    cqw__auth_check_welcome((const uint8_t *)"#WELCOME#", 8),
	    CQW_EAUTH);
	assert_int_equal(cqw__auth_check_welcome((const uint8_t *)"", 0),
			 CQW_EAUTH);
	assert_int_equal(cqw__auth_check_welcome(NULL, 0), CQW_EAUTH);
	assert_int_equal(cqw__auth_check_welcome(NULL, 9), CQW_EAUTH);
}

/*
 * Output buffers allocated to exactly cap bytes, so that ASan sees any
 * write past them; and a guard region checked by hand without ASan.
 */
#define GUARD 16

static uint8_t *
t_buf(size_t cap)
{
	uint8_t *p = malloc(cap + GUARD);

	assert_non_null(p);
	memset(p, 0xa5, cap + GUARD);
	return p;
}

static void
t_guard_intact(const uint8_t *p, size_t cap)
{
	size_t i;

	for (i = 0; i < GUARD; i++) {
		assert_int_equal(p[cap + i], 0xa5);
	}
}

static void
test_auth_caps_too_small(void **state)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	size_t caps[] = { 0, 15, 16, 30, 31, 39, 40, 58, 59 };
	size_t i, len;
	uint8_t *out;
	int n;

	(void)state;
	t_seq(rnd, sizeof(rnd), 0x00);
	for (i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		out = t_buf(caps[i]);
		n = cqw__auth_make_challenge(0, rnd, out, caps[i]);
		assert_int_equal(n, caps[i] >= 59 ? 59 : CQW_EINVAL);
		t_guard_intact(out, caps[i]);
		n = cqw__auth_make_challenge(CQW_AUTH_LEGACY_CHALLENGE, rnd,
					     out, caps[i]);
		assert_int_equal(n, caps[i] >= 31 ? 31 : CQW_EINVAL);
		t_guard_intact(out, caps[i]);

		len = t_frame(frame, "{sha256}", 40, 0x00);
		n = cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, caps[i]);
		assert_int_equal(n, caps[i] >= 40 ? 40 : CQW_EINVAL);
		t_guard_intact(out, caps[i]);

		len = t_frame(frame, "", 20, 0x00);
		n = cqw__auth_answer(KEY, KEYLEN, 0, frame, len, out, caps[i]);
		assert_int_equal(n, caps[i] >= 16 ? 16 : CQW_EINVAL);
		t_guard_intact(out, caps[i]);
		free(out);
	}
}

static void
test_auth_invalid_arguments(void **state)
{
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
	uint8_t frame[CQW__AUTH_MAX_FRAME];
	uint8_t out[CQW__AUTH_MAX_FRAME];
	size_t len, n;

	(void)state;
	t_seq(rnd, sizeof(rnd), 0x00);
	assert_int_equal(cqw__auth_make_challenge(0, NULL, out, sizeof(out)),
			 CQW_EINVAL);
	assert_int_equal(cqw__auth_make_challenge(0, rnd, NULL, sizeof(out)),
			 CQW_EINVAL);
	len = t_frame(frame, "{sha256}", 40, 0x00);
	/* A NULL key is only the empty key. */
	assert_int_equal(
	    cqw__auth_answer(NULL, 1, 0, frame, len, out, sizeof(out)),
	    CQW_EINVAL);
	assert_int_equal(cqw__auth_verify(NULL, 1, 0, frame, len, out, 40),
			 CQW_EINVAL);
	assert_int_equal(
	    cqw__auth_answer(KEY, KEYLEN, 0, NULL, len, out, sizeof(out)),
	    CQW_EINVAL);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, len, NULL, 40),
			 CQW_EINVAL);
	/* verify judges our own challenge: it must be a challenge. */
	n = t_named("sha256", t_md_sha256(), frame, len, out);
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, NULL, len, out, n),
			 CQW_EINVAL);
	frame[0] = '!';
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, len, out, n),
			 CQW_EINVAL);
	frame[0] = '#';
	assert_int_equal(cqw__auth_verify(KEY, KEYLEN, 0, frame, len, out, n),
			 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_auth_random_len),
		cmocka_unit_test(test_auth_vector_legacy_server_challenge),
		cmocka_unit_test(test_auth_vector_legacy_client_challenge),
		cmocka_unit_test(test_auth_vector_modern_server_challenge),
		cmocka_unit_test(test_auth_vector_modern_client_challenge),
		cmocka_unit_test(test_auth_vector_mixed_legacy_answers_modern),
		cmocka_unit_test(test_auth_verify_accepts_raw_md5),
		cmocka_unit_test(test_auth_verify_accepts_named_digests),
		cmocka_unit_test(test_auth_answer_named_digests),
		cmocka_unit_test(test_auth_wrong_key_rejected),
		cmocka_unit_test(test_auth_answer_rejects_unknown_digest),
		cmocka_unit_test(test_auth_answer_accepts_brace_at_index_9),
		cmocka_unit_test(test_auth_answer_rejects_missing_prefix),
		cmocka_unit_test(test_auth_answer_rejects_short_challenge),
		cmocka_unit_test(test_auth_verify_rejects_256_byte_junk),
		cmocka_unit_test(test_auth_verify_rejects_bad_lengths),
		cmocka_unit_test(
		    test_auth_answer_20_byte_named_challenge_gets_md5),
		cmocka_unit_test(test_auth_refuse_md5),
		cmocka_unit_test(test_auth_refuse_md5_named),
		cmocka_unit_test(test_auth_challenge_lengths),
		cmocka_unit_test(test_auth_empty_key),
		cmocka_unit_test(test_auth_check_welcome),
		cmocka_unit_test(test_auth_caps_too_small),
		cmocka_unit_test(test_auth_invalid_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
