/*
 * The authentication handshake between two cqwire ends over real
 * sockets (Listener/Client with an authkey): the same key (both challenge
 * forms, unix and TCP; on Windows a named pipe, messages without headers,
 * and TCP), a wrong key (and the listener serves the next
 * client), MD5 refused against a legacy challenge, the empty key, the
 * handshake deadline, and a client without a key. The state machine
 * alone is unit-tested in test-auth.c. Sync only: runs once.
 */
#include "t-conn.h"

#include <pthread.h>

/* ------------------------------------------------------------------
 * Authentication between two cqwire ends
 */

struct t_server {
	cqw_listener *l;
	int result;
	int echo; /* 1: echo one message; 2: hold the connection until EOF */
};

static void *
t_thread_accept(void *arg)
{
	struct t_server *s = arg;
	cqw_conn *c = NULL;
	void *buf = NULL;
	int64_t n;

	s->result = cqw_accept(s->l, &c, 5000);
	if (s->result == 0 && s->echo == 2) {
		n = cqw_recv_bytes(c, &buf, CQW_NONE);
		if (n != CQW_EOF) {
			s->result = n < 0 ? (int)n : CQW_EPROTO;
		}
		if (n >= 0) {
			cqw_free(buf);
		}
	} else if (s->result == 0 && s->echo) {
		n = cqw_recv_bytes(c, &buf, CQW_NONE);
		if (n < 0) {
			s->result = (int)n;
		} else {
			s->result = cqw_send_bytes(c, buf, (size_t)n);
			cqw_free(buf);
		}
	}
	cqw_conn_free(c);
	return NULL;
}

/*
 * Listen at address with server auth, connect with client auth, return
 * the client's result in *client and the server's in *server. On success
 * a message makes the round trip.
 */
static void
t_auth_pair(const char *address, const struct cqw_auth *sa,
	    const struct cqw_auth *ca, int *server, int *client)
{
	struct t_server s = { .echo = 1 };
	cqw_conn *c = NULL;
	pthread_t th;

	T_OK(cqw_listen(&s.l, address, sa, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	*client = cqw_connect(&c, cqw_listener_address(s.l), ca);
	if (*client == 0) {
		t_send_str(c, "ping");
		t_recv_str(c, "ping");
	}
	cqw_conn_free(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	*server = s.result;
	cqw_listener_free(s.l);
}

static void
test_handshake_same_key(void **state)
{
	struct cqw_auth auth = { .key = "secret",
				 .keylen = 6,
				 .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &auth, &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* Legacy challenges both ways (what <= 3.11 sends). */
	auth.flags = CQW_AUTH_LEGACY_CHALLENGE;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &auth, &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* And over TCP. */
	auth.flags = 0;
	if (t_have_tcp()) {
		t_auth_pair("tcp:127.0.0.1:0", &auth, &auth, &srv, &cli);
		T_OK(cli);
		T_OK(srv);
	}
}

static void
test_handshake_wrong_key(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct cqw_auth ca = { .key = "Secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct t_server s = { .echo = 1 };
	char addr[128];
	cqw_conn *c = NULL;
	pthread_t th;
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &sa, &ca, &srv, &cli);
	T_EXPECT(cli, CQW_EAUTH);
	T_EXPECT(srv, CQW_EAUTH);

	/* After a failed handshake the listener still serves others. */
	T_OK(cqw_listen(&s.l, addr, &sa, 1));
	s.echo = 0;
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_EXPECT(cqw_connect(&c, addr, &ca), CQW_EAUTH);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_EXPECT(s.result, CQW_EAUTH);
	s.echo = 1;
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_OK(cqw_connect(&c, addr, &sa));
	t_send_str(c, "ok");
	t_recv_str(c, "ok");
	cqw_conn_free(c);
	assert_int_equal(pthread_join(th, NULL), 0);
	T_OK(s.result);
	cqw_listener_free(s.l);
}

/*
 * A server that refuses MD5 cannot answer a legacy (20-byte) challenge:
 * both ends fail. The client sees the server drop the connection.
 */
static void
test_handshake_refuse_md5_vs_legacy(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .flags = CQW_AUTH_REFUSE_MD5,
			       .timeout_ms = 5000 };
	struct cqw_auth ca = { .key = "secret",
			       .keylen = 6,
			       .flags = CQW_AUTH_LEGACY_CHALLENGE,
			       .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &sa, &ca, &srv, &cli);
	T_EXPECT(srv, CQW_EAUTH);
	if (cli >= 0) {
		fail_msg("client: %d, want a failure", cli);
	}
	/* The same server accepts a modern client. */
	ca.flags = 0;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &sa, &ca, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
}

/* test_empty_authkey: an empty key still authenticates (as 3.13). */
static void
test_handshake_empty_key(void **state)
{
	struct cqw_auth auth = { .key = "", .keylen = 0, .timeout_ms = 5000 };
	struct cqw_auth other = { .key = "x", .keylen = 1, .timeout_ms = 5000 };
	char addr[128];
	int srv, cli;

	(void)state;
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &auth, &auth, &srv, &cli);
	T_OK(cli);
	T_OK(srv);
	/* Empty is a key, not "no key": a non-empty one does not match. */
	t_auth_pair(t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "auth"),
		    &auth, &other, &srv, &cli);
	T_EXPECT(cli, CQW_EAUTH);
	T_EXPECT(srv, CQW_EAUTH);
}

/* Server without a key, client with one: the handshake deadline ends it. */
static void
test_handshake_deadline(void **state)
{
	struct cqw_auth ca = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 200 };
	struct t_server s = { .echo = 2 };
	char addr[128];
	cqw_conn *c = NULL;
	pthread_t th;
	int64_t t0;
	int r;

	(void)state;
	T_OK(cqw_listen(&s.l,
			t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "dl"),
			NULL, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	t0 =
	    t_timed_start(200 + 2000, "cqw_connect, 200 ms handshake deadline");
	r = cqw_connect(&c, addr, &ca);
	t0 = t_timed_stop(t0);
	if (r >= 0) {
		cqw_conn_free(c);
	}
	assert_int_equal(pthread_join(th, NULL), 0);
	cqw_listener_free(s.l);
	if (r >= 0) {
		fail_msg("connect without a challenge: %d, want a failure", r);
	}
	t_elapsed_within(t0, 150, 200 + 2000);
	T_OK(s.result);
}

/*
 * Server with a key, client without: the client's first message is
 * taken as the response, and the client is told #FAILURE#.
 */
static void
test_handshake_client_without_key(void **state)
{
	struct cqw_auth sa = { .key = "secret",
			       .keylen = 6,
			       .timeout_ms = 5000 };
	struct t_server s = { .echo = 0 };
	char addr[128], chal[64];
	cqw_conn *c = NULL;
	pthread_t th;
	int64_t n;

	(void)state;
	T_OK(cqw_listen(&s.l,
			t_unique_name(addr, sizeof(addr), T_LOCAL_PREFIX, "nk"),
			&sa, 1));
	assert_int_equal(pthread_create(&th, NULL, t_thread_accept, &s), 0);
	T_OK(cqw_connect(&c, addr, NULL));
	n = cqw_recv_bytes_into(c, chal, sizeof(chal), 0, NULL);
	assert_true(n > 11);
	assert_memory_equal(chal, "#CHALLENGE#", 11);
	t_send_str(c, "ping");
	t_recv_str(c, "#FAILURE#");
	assert_int_equal(pthread_join(th, NULL), 0);
	T_EXPECT(s.result, CQW_EAUTH);
	cqw_conn_free(c);
	cqw_listener_free(s.l);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_handshake_same_key),
		cmocka_unit_test(test_handshake_wrong_key),
		cmocka_unit_test(test_handshake_refuse_md5_vs_legacy),
		cmocka_unit_test(test_handshake_empty_key),
		cmocka_unit_test(test_handshake_deadline),
		cmocka_unit_test(test_handshake_client_without_key),
	};

	/*
	 * SIGPIPE keeps its default action: the library must not let a
	 * write to a closed peer kill the process. (Windows has no SIGPIPE.)
	 */
#ifdef SIGPIPE
	signal(SIGPIPE, SIG_DFL);
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
