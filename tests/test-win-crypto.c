/*
 * src/win/crypto.c: HMAC through BCrypt against the handshake's vectors
 * (WIRE.md §4.6, the same bytes tests/test-auth.c checks on Linux) and
 * RFC 2104 / RFC 4231 vectors, the empty and the longer-than-a-block key,
 * SHA-3 when the system has it (else CQW_ENOSYS), the RNG and the
 * constant-time compare.
 *
 * Links: src/win/crypto.c src/common/error.c, with bcrypt (cmocka).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cqwire.h"
#include "common/platform.h"

static void
t_hex(const char *hex, uint8_t *out, size_t n)
{
	size_t i;
	unsigned v;

	for (i = 0; i < n; i++) {
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
		out[i] = (uint8_t)v;
	}
}

static void
t_mac(enum cqw__digest d, const void *key, size_t keylen, const void *msg,
      size_t msglen, const char *want_hex)
{
	uint8_t out[CQW__HMAC_MAX], want[CQW__HMAC_MAX];
	size_t n = strlen(want_hex) / 2;
	int r;

	memset(out, 0xee, sizeof(out));
	r = cqw__hmac(d, key, keylen, msg, msglen, out);
	assert_int_equal(r, (int)n);
	t_hex(want_hex, want, n);
	assert_memory_equal(out, want, n);
}

/* WIRE.md §4.6: HMAC-MD5("secret", 00..13), the legacy response. */
static void
test_win_crypto_wire_md5(void **state)
{
	uint8_t msg[20];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(msg); i++) {
		msg[i] = (uint8_t)i;
	}
	t_mac(CQW__MD5, "secret", 6, msg, sizeof(msg),
	      "7defa9cc46abc3583325d17ccda75190");
	for (i = 0; i < sizeof(msg); i++) {
		msg[i] = (uint8_t)(0x80 + i);
	}
	t_mac(CQW__MD5, "secret", 6, msg, sizeof(msg),
	      "853ac2883af57cefa5d6df14aa501ca0");
}

/* WIRE.md §4.6: HMAC-SHA256("secret", "{sha256}" + 00..27). */
static void
test_win_crypto_wire_sha256(void **state)
{
	uint8_t msg[8 + 40];
	size_t i;

	(void)state;
	memcpy(msg, "{sha256}", 8);
	for (i = 0; i < 40; i++) {
		msg[8 + i] = (uint8_t)i;
	}
	t_mac(
	    CQW__SHA256, "secret", 6, msg, sizeof(msg),
	    "fc57fbe650d6124b98215e7b5d197d5807ad69982d275a9735ea2d56f1fa6989");
	for (i = 0; i < 40; i++) {
		msg[8 + i] = (uint8_t)(0x80 + i);
	}
	t_mac(
	    CQW__SHA256, "secret", 6, msg, sizeof(msg),
	    "c7558206f53527f232e4c2d810fa62449467e325a24ba2ff74b94ebfd271e583");
	/* The mixed case: a legacy peer MACs the whole message with MD5. */
	for (i = 0; i < 40; i++) {
		msg[8 + i] = (uint8_t)i;
	}
	t_mac(CQW__MD5, "secret", 6, msg, sizeof(msg),
	      "8e48d2bb349b4b72b9382999ed5b62eb");
}

/* RFC 4231 test case 2 (SHA-256, SHA-384) and RFC 2104's MD5 one. */
static void
test_win_crypto_rfc_jefe(void **state)
{
	static const char data[] = "what do ya want for nothing?";

	(void)state;
	t_mac(CQW__MD5, "Jefe", 4, data, sizeof(data) - 1,
	      "750c783e6ab0b503eaa86e310a5db738");
	t_mac(
	    CQW__SHA256, "Jefe", 4, data, sizeof(data) - 1,
	    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
	t_mac(CQW__SHA384, "Jefe", 4, data, sizeof(data) - 1,
	      "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47"
	      "e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649");
}

/* RFC 4231 test case 6: a key longer than the block is hashed first. */
static void
test_win_crypto_long_key(void **state)
{
	static const char data[] =
	    "Test Using Larger Than Block-Size Key - Hash Key First";
	uint8_t key[131];

	(void)state;
	memset(key, 0xaa, sizeof(key));
	t_mac(
	    CQW__SHA256, key, sizeof(key), data, sizeof(data) - 1,
	    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

/* Python 3.13 authenticates with an empty key: it must work. */
static void
test_win_crypto_empty_key(void **state)
{
	(void)state;
	t_mac(CQW__MD5, NULL, 0, NULL, 0, "74e6f7298a9c2d168935f58c001bad88");
	t_mac(
	    CQW__SHA256, "", 0, "", 0,
	    "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

/* SHA-3: CNG has it on recent Windows only; else CQW_ENOSYS, not junk. */
static void
test_win_crypto_sha3(void **state)
{
	uint8_t key[32], out[CQW__HMAC_MAX];
	static const char msg[] = "Sample message for keylen<blocklen";
	size_t i;
	int r;

	(void)state;
	for (i = 0; i < sizeof(key); i++) {
		key[i] = (uint8_t)i;
	}
	r = cqw__hmac(CQW__SHA3_256, key, sizeof(key), msg, sizeof(msg) - 1,
		      out);
	if (r == CQW_ENOSYS) {
		r = cqw__hmac(CQW__SHA3_384, key, 48, msg, sizeof(msg) - 1,
			      out);
		assert_int_equal(r, CQW_ENOSYS);
		print_message("skip: BCrypt has no SHA-3 provider here\n");
		skip();
	}
	/* NIST's HMAC_SHA3-256 example, keylen < blocklen. */
	t_mac(
	    CQW__SHA3_256, key, sizeof(key), msg, sizeof(msg) - 1,
	    "4fe8e202c4f058e8dddc23d8c34e467343e23555e24fc2f025d598f558f67205");
}

static void
test_win_crypto_random(void **state)
{
	uint8_t a[64], b[64], zero[64];

	(void)state;
	memset(a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	memset(zero, 0, sizeof(zero));
	assert_int_equal(cqw__random(a, sizeof(a)), 0);
	assert_int_equal(cqw__random(b, sizeof(b)), 0);
	assert_int_equal(cqw__random(b, 0), 0);
	/* 2^-512 chance of a false failure. */
	assert_memory_not_equal(a, b, sizeof(a));
	assert_memory_not_equal(a, zero, sizeof(a));
}

static void
test_win_crypto_memeq_and_wipe(void **state)
{
	uint8_t a[16], b[16];

	(void)state;
	memset(a, 7, sizeof(a));
	memset(b, 7, sizeof(b));
	assert_int_equal(cqw__memeq_ct(a, b, sizeof(a)), 0);
	b[15] = 8;
	assert_int_not_equal(cqw__memeq_ct(a, b, sizeof(a)), 0);
	b[15] = 7;
	b[0] = 0;
	assert_int_not_equal(cqw__memeq_ct(a, b, sizeof(a)), 0);
	assert_int_equal(cqw__memeq_ct(a, b, 0), 0);
	cqw__wipe(a, sizeof(a));
	memset(b, 0, sizeof(b));
	assert_memory_equal(a, b, sizeof(a));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_win_crypto_wire_md5),
		cmocka_unit_test(test_win_crypto_wire_sha256),
		cmocka_unit_test(test_win_crypto_rfc_jefe),
		cmocka_unit_test(test_win_crypto_long_key),
		cmocka_unit_test(test_win_crypto_empty_key),
		cmocka_unit_test(test_win_crypto_sha3),
		cmocka_unit_test(test_win_crypto_random),
		cmocka_unit_test(test_win_crypto_memeq_and_wipe),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
