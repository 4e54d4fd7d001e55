/*
 * WIRE.md §4.6 over a named pipe, byte for byte: this test is a raw pipe
 * server (Win32 calls only) that sends the deterministic challenges as
 * pipe messages, with no header, and cqw_connect()'s answer must be the
 * vector's bytes exactly, as one message: HMAC-MD5 for a legacy challenge
 * (20 raw bytes), "{sha256}" + HMAC-SHA256 for a modern one. The client's
 * own challenge that follows is random: its shape is checked, and a wrong
 * answer to it must fail the connect with CQW_EAUTH.
 *
 * Links: the library (cqwire), cmocka.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include <windows.h>

#include "cqwire.h"

#define T_WAIT_MS 10000

static const char t_key[] = "secret";

struct t_client {
	char address[128];
	unsigned flags;
	int result;
};

static DWORD WINAPI
t_client_main(void *arg)
{
	struct t_client *tc = arg;
	struct cqw_auth auth = { t_key, sizeof(t_key) - 1, tc->flags,
				 T_WAIT_MS };
	cqw_conn *c = NULL;

	tc->result = cqw_connect(&c, tc->address, &auth);
	cqw_conn_free(c);
	return 0;
}

/* One overlapped read or write on h, waited for: bytes moved, or -1. */
static long
t_io(HANDLE h, int write, void *buf, DWORD len)
{
	OVERLAPPED ov;
	DWORD n = 0;
	BOOL ok;

	memset(&ov, 0, sizeof(ov));
	ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
	assert_non_null(ov.hEvent);
	ok = write ? WriteFile(h, buf, len, NULL, &ov)
		   : ReadFile(h, buf, len, NULL, &ov);
	if (!ok && GetLastError() == ERROR_IO_PENDING &&
	    WaitForSingleObject(ov.hEvent, T_WAIT_MS) != WAIT_OBJECT_0) {
		CancelIoEx(h, &ov); /* then wait: ov is on the stack */
	}
	ok = GetOverlappedResult(h, &ov, &n, TRUE);
	CloseHandle(ov.hEvent);
	return ok ? (long)n : -1;
}

static void
t_connect_instance(HANDLE h)
{
	OVERLAPPED ov;
	DWORD n;

	memset(&ov, 0, sizeof(ov));
	ov.hEvent = CreateEventA(NULL, TRUE, FALSE, NULL);
	assert_non_null(ov.hEvent);
	if (!ConnectNamedPipe(h, &ov)) {
		DWORD err = GetLastError();

		if (err == ERROR_IO_PENDING) {
			if (WaitForSingleObject(ov.hEvent, T_WAIT_MS) !=
			    WAIT_OBJECT_0) {
				CancelIoEx(h, &ov);
			}
			assert_true(GetOverlappedResult(h, &ov, &n, TRUE));
		} else {
			assert_int_equal(err, ERROR_PIPE_CONNECTED);
		}
	}
	CloseHandle(ov.hEvent);
}

/*
 * Serve one client with challenge chal[0..clen): its answer must be
 * want[0..wlen). Then welcome it, read its challenge (modern unless
 * flags ask for the legacy one) and answer it wrongly.
 */
static void
t_vector(const uint8_t *chal, size_t clen, const uint8_t *want, size_t wlen,
	 unsigned flags)
{
	static unsigned seq;
	struct t_client tc;
	uint8_t buf[512];
	char name[96];
	HANDLE h, th;
	long n;

	snprintf(name, sizeof(name), "\\\\.\\pipe\\cqw-vectors-%lu-%u",
		 (unsigned long)GetCurrentProcessId(), seq++);
	h = CreateNamedPipeA(name, PIPE_ACCESS_DUPLEX | FILE_FLAG_OVERLAPPED,
			     PIPE_TYPE_MESSAGE | PIPE_READMODE_MESSAGE |
				 PIPE_WAIT,
			     1, 8192, 8192, 0, NULL);
	assert_true(h != INVALID_HANDLE_VALUE);
	snprintf(tc.address, sizeof(tc.address), "pipe:%s", name);
	tc.flags = flags;
	tc.result = 1;
	th = CreateThread(NULL, 0, t_client_main, &tc, 0, NULL);
	assert_non_null(th);
	t_connect_instance(h);

	assert_int_equal(t_io(h, 1, (void *)chal, (DWORD)clen), (long)clen);
	n = t_io(h, 0, buf, sizeof(buf));
	assert_int_equal(n, (long)wlen); /* one message, no header */
	assert_memory_equal(buf, want, wlen);

	assert_int_equal(t_io(h, 1, "#WELCOME#", 9), 9);
	n = t_io(h, 0, buf, sizeof(buf));
	assert_int_equal(n, (flags & CQW_AUTH_LEGACY_CHALLENGE) ? 31 : 59);
	assert_memory_equal(buf, "#CHALLENGE#", 11);
	if (!(flags & CQW_AUTH_LEGACY_CHALLENGE)) {
		assert_memory_equal(buf + 11, "{sha256}", 8);
	}
	/* A wrong answer: the client must refuse us. */
	assert_int_equal(t_io(h, 1, "{sha256}nope", 12), 12);
	assert_int_equal(WaitForSingleObject(th, T_WAIT_MS), WAIT_OBJECT_0);
	assert_int_equal(tc.result, CQW_EAUTH);
	CloseHandle(th);
	DisconnectNamedPipe(h);
	CloseHandle(h);
}

/* "#CHALLENGE#" + tag + n bytes counting up from first. */
static size_t
t_challenge(uint8_t *out, const char *tag, size_t n, uint8_t first)
{
	size_t len = 0, i;

	memcpy(out, "#CHALLENGE#", 11);
	len = 11;
	memcpy(out + len, tag, strlen(tag));
	len += strlen(tag);
	for (i = 0; i < n; i++) {
		out[len + i] = (uint8_t)(first + i);
	}
	return len + n;
}

static void
test_vectors_legacy(void **state)
{
	/* HMAC-MD5(secret, 00..13) */
	static const uint8_t want[] = { 0x7d, 0xef, 0xa9, 0xcc, 0x46, 0xab,
					0xc3, 0x58, 0x33, 0x25, 0xd1, 0x7c,
					0xcd, 0xa7, 0x51, 0x90 };
	uint8_t chal[64];
	size_t n = t_challenge(chal, "", 20, 0x00);

	(void)state;
	t_vector(chal, n, want, sizeof(want), 0);
	t_vector(chal, n, want, sizeof(want), CQW_AUTH_LEGACY_CHALLENGE);
}

static void
test_vectors_modern(void **state)
{
	/* "{sha256}" + HMAC-SHA256(secret, "{sha256}" + 00..27) */
	static const uint8_t mac[] = {
		0xfc, 0x57, 0xfb, 0xe6, 0x50, 0xd6, 0x12, 0x4b,
		0x98, 0x21, 0x5e, 0x7b, 0x5d, 0x19, 0x7d, 0x58,
		0x07, 0xad, 0x69, 0x98, 0x2d, 0x27, 0x5a, 0x97,
		0x35, 0xea, 0x2d, 0x56, 0xf1, 0xfa, 0x69, 0x89,
	};
	uint8_t chal[96], want[8 + sizeof(mac)];
	size_t n = t_challenge(chal, "{sha256}", 40, 0x00);

	(void)state;
	memcpy(want, "{sha256}", 8);
	memcpy(want + 8, mac, sizeof(mac));
	assert_int_equal(n, 0x3b);
	t_vector(chal, n, want, sizeof(want), 0);
	t_vector(chal, n, want, sizeof(want), CQW_AUTH_REFUSE_MD5);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vectors_legacy),
		cmocka_unit_test(test_vectors_modern),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
