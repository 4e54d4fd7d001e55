/*
 * Shared by fuzz-auth-server.c and fuzz-auth-client.c: a reference of the
 * handshake's rules (WIRE.md §4.3-4.4, CPython 3.12's
 * _create_response / _verify_challenge), written apart from
 * src/common/auth.c, with the MACs computed by libcrypto directly. The
 * targets call auth.c's functions on peer frames from the input and
 * compare every result with what the reference says it must be.
 *
 * Input layout (both roles):
 *   byte 0   flags: bit 0 CQW_AUTH_REFUSE_MD5, bit 1
 *            CQW_AUTH_LEGACY_CHALLENGE, bit 2 "correct the peer's MAC"
 *            (the peer frame that carries a MAC is the right one XOR the
 *            input's bytes, so that mutations explore the neighbourhood
 *            of an accepted answer), bits 3-5 the output cap
 *   byte 1   key length (mod 65), then the key
 *   then     our random bytes (20 or 40), then peer frames, each one
 *            length byte (255: add the next byte) and its bytes
 */
#ifndef CQW_FUZZ_AUTH_H
#define CQW_FUZZ_AUTH_H

#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "fuzz.h"

#include "cqwire.h"
#include "common/auth.h"

#define FA_CORRECT 0x04u
#define FA_MAXFRAME 600

struct fa_ctx {
	unsigned flags;	  /* CQW_AUTH_* */
	unsigned options; /* FA_* */
	unsigned form;	  /* which right answer FA_CORRECT starts from */
	size_t cap;	  /* the output buffer given to auth.c */
	const uint8_t *key;
	size_t keylen;
	uint8_t rnd[CQW__AUTH_MODERN_RANDOM];
};

struct fa_frame {
	uint8_t b[FA_MAXFRAME];
	size_t len;
};

static const char *const fa_names[] = { "md5", "sha256", "sha384", "sha3_256",
					"sha3_384" };
#define FA_NNAMES (sizeof(fa_names) / sizeof(fa_names[0]))

static const EVP_MD *
fa_md(const char *name)
{
	if (strcmp(name, "md5") == 0) {
		return EVP_md5();
	}
	if (strcmp(name, "sha256") == 0) {
		return EVP_sha256();
	}
	if (strcmp(name, "sha384") == 0) {
		return EVP_sha384();
	}
	if (strcmp(name, "sha3_256") == 0) {
		return EVP_sha3_256();
	}
	return EVP_sha3_384();
}

/* HMAC-name(key, msg) into out; returns its length. */
static size_t
fa_hmac(const struct fa_ctx *fx, const char *name, const uint8_t *msg,
	size_t len, uint8_t *out)
{
	static const uint8_t empty[1];
	unsigned int n = 0;

	FUZZ_CHECK(HMAC(fa_md(name), fx->keylen ? fx->key : empty,
			(int)fx->keylen, len ? msg : empty, len, out,
			&n) != NULL);
	return n;
}

static void
fa_setup(struct fa_ctx *fx, struct fuzz_in *in)
{
	static const size_t caps[8] = { 58, 256, 0, 16, 21, 40, 57, 59 };
	uint8_t b = fuzz_byte(in);
	const uint8_t *p;
	size_t n;

	memset(fx, 0, sizeof(*fx));
	fx->flags = b & (CQW_AUTH_REFUSE_MD5 | CQW_AUTH_LEGACY_CHALLENGE);
	fx->options = b & FA_CORRECT;
	fx->form = b >> 6;
	fx->cap = caps[(b >> 3) & 7];
	fx->keylen = fuzz_take(in, fuzz_byte(in) % 65, &fx->key);
	n = fuzz_take(in, cqw__auth_random_len(fx->flags), &p);
	memcpy(fx->rnd, p, n);
}

/* The next peer frame; an exhausted input gives an empty one. */
static void
fa_frame(struct fuzz_in *in, struct fa_frame *f)
{
	size_t want = fuzz_byte(in);
	const uint8_t *p;

	if (want == 255) {
		want += fuzz_byte(in);
	}
	f->len = fuzz_take(in, want, &p);
	memcpy(f->b, p, f->len);
}

/* With FA_CORRECT, the peer's frame is the right one XOR the input's. */
static void
fa_correct(const struct fa_ctx *fx, struct fa_frame *f, const uint8_t *right,
	   size_t right_len)
{
	size_t i;

	if (!(fx->options & FA_CORRECT)) {
		return;
	}
	for (i = 0; i < f->len && i < right_len; i++) {
		f->b[i] ^= right[i];
	}
	if (f->len == 0) {
		memcpy(f->b, right, right_len);
		f->len = right_len;
	}
}

/*
 * The reference answer to a challenge frame (CPython 3.12
 * answer_challenge with _create_response): its length into out, or
 * CQW_EAUTH.
 */
static int
fa_ref_answer(const struct fa_ctx *fx, const uint8_t *frame, size_t len,
	      uint8_t *out)
{
	const uint8_t *msg = frame + 11;
	size_t mlen, i, close = 0;
	const char *name = NULL;

	if (len < 11 || memcmp(frame, "#CHALLENGE#", 11) != 0) {
		return CQW_EAUTH;
	}
	mlen = len - 11;
	if (mlen < 20) {
		return CQW_EAUTH; /* "challenge too short" */
	}
	if (mlen == 20) {
		if (fx->flags & CQW_AUTH_REFUSE_MD5) {
			return CQW_EAUTH;
		}
		return (int)fa_hmac(fx, "md5", msg, mlen, out);
	}
	if (msg[0] != '{') {
		return CQW_EAUTH;
	}
	for (i = 1; i < 10 && i < mlen; i++) {
		if (msg[i] == '}') {
			close = i;
			break;
		}
	}
	for (i = 0; close > 0 && i < FA_NNAMES; i++) {
		if (strlen(fa_names[i]) == close - 1 &&
		    memcmp(fa_names[i], msg + 1, close - 1) == 0) {
			name = fa_names[i];
		}
	}
	if (name == NULL ||
	    (strcmp(name, "md5") == 0 && (fx->flags & CQW_AUTH_REFUSE_MD5))) {
		return CQW_EAUTH;
	}
	memcpy(out, msg, close + 1);
	return (int)(close + 1 + fa_hmac(fx, name, msg, mlen, out + close + 1));
}

/*
 * Would a verifier that sent challenge accept resp? Yes exactly when resp
 * is one of the right answers: raw HMAC-MD5, or "{name}" + HMAC-name for
 * an allowed name (MD5 not under CQW_AUTH_REFUSE_MD5), the MAC over the
 * whole message after "#CHALLENGE#".
 */
static int
fa_ref_accepts(const struct fa_ctx *fx, const uint8_t *challenge, size_t clen,
	       const uint8_t *resp, size_t rlen)
{
	uint8_t right[2 + 8 + EVP_MAX_MD_SIZE];
	size_t i, n, pre;

	for (i = 0; i < FA_NNAMES; i++) {
		if (i == 0 && (fx->flags & CQW_AUTH_REFUSE_MD5)) {
			continue;
		}
		pre = strlen(fa_names[i]) + 2;
		right[0] = '{';
		memcpy(right + 1, fa_names[i], pre - 2);
		right[pre - 1] = '}';
		n = fa_hmac(fx, fa_names[i], challenge + 11, clen - 11,
			    right + pre);
		if (rlen == pre + n && memcmp(resp, right, rlen) == 0) {
			return 1;
		}
		/* The raw legacy form: MD5 without a prefix. */
		if (i == 0 && rlen == n && memcmp(resp, right + pre, n) == 0) {
			return 1;
		}
	}
	return 0;
}

/* A right answer to challenge (for FA_CORRECT); its length, or 0. */
static size_t
fa_right_answer(const struct fa_ctx *fx, const uint8_t *challenge, size_t clen,
		uint8_t *out)
{
	static const char *const tag[4] = { NULL, NULL, "md5", "sha3_384" };
	const char *name = tag[fx->form & 3];
	size_t pre;
	int r;

	if (fx->form == 0) {
		r = fa_ref_answer(fx, challenge, clen, out);
		return r > 0 ? (size_t)r : 0;
	}
	if (name == NULL) {
		return fa_hmac(fx, "md5", challenge + 11, clen - 11, out);
	}
	pre = strlen(name) + 2;
	out[0] = '{';
	memcpy(out + 1, name, pre - 2);
	out[pre - 1] = '}';
	return pre + fa_hmac(fx, name, challenge + 11, clen - 11, out + pre);
}

/* Our challenge (frame 1 or 4): checked byte for byte. Its length. */
static size_t
fa_make_challenge(const struct fa_ctx *fx, uint8_t *out, size_t cap)
{
	int legacy = (fx->flags & CQW_AUTH_LEGACY_CHALLENGE) != 0;
	size_t want = legacy ? 31 : 59;
	int r = cqw__auth_make_challenge(fx->flags, fx->rnd, out, cap);

	if (cap < want) {
		FUZZ_CHECK(r == CQW_EINVAL);
		/* The verifier side goes on with a challenge of full size. */
		r = cqw__auth_make_challenge(fx->flags, fx->rnd, out, 256);
	}
	FUZZ_CHECK(r == (int)want);
	FUZZ_CHECK(memcmp(out, "#CHALLENGE#", 11) == 0);
	if (legacy) {
		FUZZ_CHECK(memcmp(out + 11, fx->rnd, 20) == 0);
	} else {
		FUZZ_CHECK(memcmp(out + 11, "{sha256}", 8) == 0);
		FUZZ_CHECK(memcmp(out + 19, fx->rnd, 40) == 0);
	}
	return want;
}

/*
 * Answer a peer's challenge frame and compare with the reference; an
 * accepted answer must also pass our own verify (what we answer, we
 * accept). Returns the answer's length or the error.
 */
static int
fa_answer(const struct fa_ctx *fx, const struct fa_frame *f, uint8_t *out)
{
	uint8_t ref[FA_MAXFRAME];
	uint8_t *buf = malloc(fx->cap > 0 ? fx->cap : 1);
	int want = fa_ref_answer(fx, f->b, f->len, ref);
	int r;

	FUZZ_CHECK(buf != NULL);
	/* A buffer of exactly cap bytes: ASan sees a write past it. */
	r = cqw__auth_answer(fx->key, fx->keylen, fx->flags, f->b, f->len, buf,
			     fx->cap);
	if (want >= 0 && (size_t)want > fx->cap) {
		FUZZ_CHECK(r == CQW_EINVAL);
	} else {
		FUZZ_CHECK(r == want);
	}
	if (r > 0) {
		FUZZ_CHECK(memcmp(buf, ref, (size_t)r) == 0);
		FUZZ_CHECK(cqw__auth_verify(fx->key, fx->keylen, fx->flags,
					    f->b, f->len, buf, (size_t)r) == 0);
		memcpy(out, buf, (size_t)r);
	}
	free(buf);
	return r;
}

/* Verify the peer's response to our challenge against the reference. */
static int
fa_verify(const struct fa_ctx *fx, const uint8_t *challenge, size_t clen,
	  const struct fa_frame *resp)
{
	int accept = fa_ref_accepts(fx, challenge, clen, resp->b, resp->len);
	int r = cqw__auth_verify(fx->key, fx->keylen, fx->flags, challenge,
				 clen, resp->b, resp->len);

	FUZZ_CHECK(r == (accept ? 0 : CQW_EAUTH));
	return r;
}

/* The peer's verdict: only the exact "#WELCOME#" passes. */
static int
fa_check_welcome(const struct fa_frame *f)
{
	int ok = f->len == 9 && memcmp(f->b, "#WELCOME#", 9) == 0;
	int r = cqw__auth_check_welcome(f->b, f->len);

	FUZZ_CHECK(r == (ok ? 0 : CQW_EAUTH));
	return r;
}

#endif
