/*
 * The HMAC challenge/response of multiprocessing.connection (WIRE.md §4).
 *
 * Design notes. There is no state machine here: listener.c owns the order
 * of the six frames, and these functions only build and judge payloads.
 * One parser, parse_digest(), mirrors CPython 3.12's
 * _get_digest_name_and_payload() and serves both directions, so that what
 * we answer and what we accept cannot drift apart:
 *
 * - a 16- or 20-byte message is legacy: HMAC-MD5, no "{name}" prefix;
 * - anything else must start with "{name}", the '}' at index <= 9, with
 *   name in the allowed set; the MAC then covers the whole message,
 *   prefix included.
 *
 * Length wins over content, as in CPython: a 20-byte challenge that
 * happens to start with "{sha256}" still gets a raw MD5 answer.
 * CQW_AUTH_REFUSE_MD5 refuses MD5 however it is named, raw or "{md5}".
 */
#include <string.h>

#include "auth.h"
#include "platform.h"

#define PREFIX_LEN (sizeof(CQW__AUTH_CHALLENGE) - 1)
#define WELCOME_LEN (sizeof(CQW__AUTH_WELCOME) - 1)
#define MD5ONLY_LEN 20 /* CPython's _MD5ONLY_MESSAGE_LENGTH */
#define MD5_LEN 16     /* CPython's _MD5_DIGEST_LEN */
#define MAX_NAME 8     /* longest allowed name: "sha3_256" */
#define MODERN_TAG "{sha256}"

struct digest {
	const char *name;
	enum cqw__digest id;
};

/* CPython's _ALLOWED_DIGESTS; digests[0] doubles as the legacy digest. */
static const struct digest digests[] = {
	{ "md5", CQW__MD5 },	       { "sha256", CQW__SHA256 },
	{ "sha384", CQW__SHA384 },     { "sha3_256", CQW__SHA3_256 },
	{ "sha3_384", CQW__SHA3_384 },
};

/*
 * Which digest msg asks for. *prefix_len is 0 for a legacy message (raw
 * MD5) and the length of "{name}" otherwise. 0 or CQW_EAUTH.
 */
static int
parse_digest(const uint8_t *msg, size_t len, const struct digest **d,
	     size_t *prefix_len)
{
	const uint8_t *brace;
	size_t span, namelen, i;

	if (len == MD5_LEN || len == MD5ONLY_LEN) {
		*d = &digests[0];
		*prefix_len = 0;
		return 0;
	}
	if (len == 0 || msg[0] != '{') {
		return CQW_EAUTH;
	}
	/* message.find(b'}', 1, _MAX_DIGEST_LEN + 2): index 1 to 9. */
	span = len < MAX_NAME + 2 ? len : MAX_NAME + 2;
	brace = memchr(msg + 1, '}', span - 1);
	if (brace == NULL) {
		return CQW_EAUTH;
	}
	namelen = (size_t)(brace - (msg + 1));
	for (i = 0; i < sizeof(digests) / sizeof(digests[0]); i++) {
		if (strlen(digests[i].name) == namelen &&
		    memcmp(digests[i].name, msg + 1, namelen) == 0) {
			*d = &digests[i];
			*prefix_len = namelen + 2;
			return 0;
		}
	}
	return CQW_EAUTH;
}

size_t
cqw__auth_random_len(unsigned flags)
{
	if (flags & CQW_AUTH_LEGACY_CHALLENGE) {
		return CQW__AUTH_LEGACY_RANDOM;
	}
	return CQW__AUTH_MODERN_RANDOM;
}

int
cqw__auth_make_challenge(unsigned flags, const uint8_t *rnd, uint8_t *out,
			 size_t cap)
{
	size_t n = cqw__auth_random_len(flags);
	size_t tag = 0;

	if (!(flags & CQW_AUTH_LEGACY_CHALLENGE)) {
		tag = sizeof(MODERN_TAG) - 1;
	}
	if (rnd == NULL || out == NULL || cap < PREFIX_LEN + tag + n) {
		return CQW_EINVAL;
	}
	memcpy(out, CQW__AUTH_CHALLENGE, PREFIX_LEN);
	memcpy(out + PREFIX_LEN, MODERN_TAG, tag);
	memcpy(out + PREFIX_LEN + tag, rnd, n);
	return (int)(PREFIX_LEN + tag + n);
}

int
cqw__auth_answer(const void *key, size_t keylen, unsigned flags,
		 const uint8_t *frame, size_t len, uint8_t *out, size_t cap)
{
	uint8_t mac[CQW__HMAC_MAX];
	const struct digest *d;
	const uint8_t *msg;
	size_t msglen, prefix_len;
	int r;

	if ((key == NULL && keylen != 0) || (frame == NULL && len != 0) ||
	    out == NULL) {
		return CQW_EINVAL;
	}
	if (len < PREFIX_LEN ||
	    memcmp(frame, CQW__AUTH_CHALLENGE, PREFIX_LEN) != 0) {
		return CQW_EAUTH;
	}
	msg = frame + PREFIX_LEN;
	msglen = len - PREFIX_LEN;
	/* CPython's "challenge too short"; it also rules out 16 as legacy. */
	if (msglen < MD5ONLY_LEN) {
		return CQW_EAUTH;
	}
	r = parse_digest(msg, msglen, &d, &prefix_len);
	if (r < 0) {
		return r;
	}
	if (d->id == CQW__MD5 && (flags & CQW_AUTH_REFUSE_MD5)) {
		return CQW_EAUTH;
	}
	/*
	 * Unlike CPython we do not fall back to "{sha256}" when MD5 is
	 * unavailable (FIPS): only legacy peers send 20-byte challenges, and
	 * they would reject that answer anyway. The error says why instead.
	 */
	r = cqw__hmac(d->id, key, keylen, msg, msglen, mac);
	if (r < 0) {
		return r;
	}
	if (cap < prefix_len + (size_t)r) {
		return CQW_EINVAL;
	}
	/* The prefix we echo is byte for byte the "{name}" we matched. */
	memcpy(out, msg, prefix_len);
	memcpy(out + prefix_len, mac, (size_t)r);
	return (int)prefix_len + r;
}

int
cqw__auth_verify(const void *key, size_t keylen, unsigned flags,
		 const uint8_t *challenge, size_t challenge_len,
		 const uint8_t *resp, size_t resp_len)
{
	uint8_t expected[CQW__HMAC_MAX];
	const struct digest *d;
	size_t prefix_len;
	int r;

	if ((key == NULL && keylen != 0) || (resp == NULL && resp_len != 0) ||
	    challenge == NULL || challenge_len < PREFIX_LEN ||
	    memcmp(challenge, CQW__AUTH_CHALLENGE, PREFIX_LEN) != 0) {
		return CQW_EINVAL;
	}
	/*
	 * The peer picks the digest, not us: a modern server accepts any
	 * allowed name whatever it asked for, which is what lets every
	 * legacy client in (WIRE.md §4.4).
	 */
	r = parse_digest(resp, resp_len, &d, &prefix_len);
	if (r < 0) {
		return r;
	}
	if (d->id == CQW__MD5 && (flags & CQW_AUTH_REFUSE_MD5)) {
		return CQW_EAUTH;
	}
	/*
	 * A digest we cannot compute (FIPS) is a response we cannot accept:
	 * report CQW_EAUTH so that the peer is told #FAILURE#.
	 */
	r = cqw__hmac(d->id, key, keylen, challenge + PREFIX_LEN,
		      challenge_len - PREFIX_LEN, expected);
	if (r < 0 || resp_len - prefix_len != (size_t)r) {
		return CQW_EAUTH;
	}
	if (cqw__memeq_ct(expected, resp + prefix_len, (size_t)r) != 0) {
		return CQW_EAUTH;
	}
	return 0;
}

int
cqw__auth_check_welcome(const uint8_t *frame, size_t len)
{
	if (frame == NULL || len != WELCOME_LEN ||
	    memcmp(frame, CQW__AUTH_WELCOME, WELCOME_LEN) != 0) {
		return CQW_EAUTH;
	}
	return 0;
}
