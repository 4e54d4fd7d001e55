/*
 * Address parsing and formatting (src/common/address.h, DESIGN.md §4):
 * every accepted form, every rejection, the length and port boundaries,
 * and format() as the inverse of parse().
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "cqwire.h"
#include "common/address.h"

/* Parse s and fail the test, naming both codes, unless it returns want. */
static void
t_parse_expect(struct cqw__addr *a, const char *s, int want)
{
	int err = cqw__addr_parse(a, s);

	if (err != want) {
		fail_msg("parse(\"%s\"): got %s (%d), want %s (%d)",
			 s ? s : "(null)", cqw_err_name(err), err,
			 cqw_err_name(want), want);
	}
}

static void
t_parse_path(const char *s, enum cqw__addr_kind kind, const char *path)
{
	struct cqw__addr a;

	t_parse_expect(&a, s, 0);
	assert_int_equal(a.kind, kind);
	assert_string_equal(a.path, path);
	assert_int_equal(a.path_len, strlen(path));
}

static void
t_parse_tcp(const char *s, const char *host, int port, int ipv6)
{
	struct cqw__addr a;

	t_parse_expect(&a, s, 0);
	assert_int_equal(a.kind, CQW__ADDR_TCP);
	assert_string_equal(a.host, host);
	assert_int_equal(a.port, port);
	assert_int_equal(a.ipv6_literal, ipv6);
}

static void
t_reject(const char *s, int want)
{
	struct cqw__addr a;

	t_parse_expect(&a, s, want);
}

/* prefix, n copies of c, then suffix, into buf (cap bytes). */
static const char *
t_long(char *buf, size_t cap, const char *prefix, char c, size_t n,
       const char *suffix)
{
	size_t plen = strlen(prefix);
	size_t slen = strlen(suffix);

	assert_true(plen + n + slen < cap);
	strcpy(buf, prefix);
	memset(buf + plen, c, n);
	strcpy(buf + plen + n, suffix);
	return buf;
}

#define T_LONG(buf, prefix, c, n, suffix) \
	t_long((buf), sizeof(buf), (prefix), (c), (n), (suffix))

/* format(parse(s)) must be want, and parsing that must give the same. */
static void
t_round_trip(const char *s, const char *want)
{
	struct cqw__addr a;
	struct cqw__addr b;
	char out[512];
	int n;

	t_parse_expect(&a, s, 0);
	n = cqw__addr_format(&a, out, sizeof(out));
	if (n < 0) {
		fail_msg("format(parse(\"%s\")): %s", s, cqw_err_name(n));
	}
	assert_string_equal(out, want);
	assert_int_equal(n, strlen(want));

	t_parse_expect(&b, out, 0);
	assert_int_equal(b.kind, a.kind);
	assert_int_equal(b.path_len, a.path_len);
	assert_string_equal(b.path, a.path);
	assert_string_equal(b.host, a.host);
	assert_int_equal(b.port, a.port);
	assert_int_equal(b.ipv6_literal, a.ipv6_literal);
}

static void
test_address_unix_absolute(void **state)
{
	(void)state;
	t_parse_path("unix:/tmp/sock", CQW__ADDR_UNIX, "/tmp/sock");
}

static void
test_address_unix_relative(void **state)
{
	(void)state;
	t_parse_path("unix:rel/sock", CQW__ADDR_UNIX, "rel/sock");
	t_parse_path("unix:sock", CQW__ADDR_UNIX, "sock");
}

/* After "unix:" everything is path, colons and backslashes included. */
static void
test_address_unix_path_keeps_colons(void **state)
{
	(void)state;
	t_parse_path("unix:a:b", CQW__ADDR_UNIX, "a:b");
	t_parse_path("unix:tcp:h:1", CQW__ADDR_UNIX, "tcp:h:1");
	t_parse_path("unix:\\\\.\\pipe\\x", CQW__ADDR_UNIX, "\\\\.\\pipe\\x");
}

static void
test_address_unix_empty_path(void **state)
{
	(void)state;
	t_reject("unix:", CQW_EADDRESS);
}

static void
test_address_bare_path(void **state)
{
	(void)state;
	t_parse_path("/tmp/sock", CQW__ADDR_UNIX, "/tmp/sock");
	t_parse_path("sock", CQW__ADDR_UNIX, "sock");
	t_parse_path("dir/sock", CQW__ADDR_UNIX, "dir/sock");
}

/* A ':' after a '/' or a non-letter does not make a scheme. */
static void
test_address_bare_path_with_colon(void **state)
{
	(void)state;
	t_parse_path("./a:b", CQW__ADDR_UNIX, "./a:b");
	t_parse_path("/tmp/a:b", CQW__ADDR_UNIX, "/tmp/a:b");
	t_parse_path("a/tcp:b", CQW__ADDR_UNIX, "a/tcp:b");
	t_parse_path("a1:b", CQW__ADDR_UNIX, "a1:b");
	t_parse_path(":x", CQW__ADDR_UNIX, ":x");
}

static void
test_address_abstract(void **state)
{
	(void)state;
	t_parse_path("unix:@name", CQW__ADDR_UNIX_ABSTRACT, "name");
	t_parse_path("unix:@a/b:c", CQW__ADDR_UNIX_ABSTRACT, "a/b:c");
	t_parse_path("unix:@@", CQW__ADDR_UNIX_ABSTRACT, "@");
}

static void
test_address_abstract_empty(void **state)
{
	(void)state;
	t_parse_path("unix:@", CQW__ADDR_UNIX_ABSTRACT, "");
}

/* A bare path means "unix:", so a bare "@name" is abstract too. */
static void
test_address_bare_abstract(void **state)
{
	(void)state;
	t_parse_path("@name", CQW__ADDR_UNIX_ABSTRACT, "name");
	t_parse_path("@", CQW__ADDR_UNIX_ABSTRACT, "");
}

static void
test_address_pipe_scheme(void **state)
{
	(void)state;
	t_parse_path("pipe:\\\\.\\pipe\\x", CQW__ADDR_PIPE, "\\\\.\\pipe\\x");
}

static void
test_address_pipe_bare(void **state)
{
	(void)state;
	t_parse_path("\\\\.\\pipe\\x", CQW__ADDR_PIPE, "\\\\.\\pipe\\x");
	t_parse_path("\\\\srv\\pipe\\a:b", CQW__ADDR_PIPE,
		     "\\\\srv\\pipe\\a:b");
}

static void
test_address_pipe_bad(void **state)
{
	(void)state;
	t_reject("pipe:", CQW_EADDRESS);
	t_reject("pipe:name", CQW_EADDRESS);
	t_reject("pipe:\\.\\pipe\\x", CQW_EADDRESS);
	t_reject("pipe:/tmp/x", CQW_EADDRESS);
}

/* One backslash is a (strange) unix path, not a pipe. */
static void
test_address_single_backslash_is_path(void **state)
{
	(void)state;
	t_parse_path("\\x", CQW__ADDR_UNIX, "\\x");
}

static void
test_address_tcp_name(void **state)
{
	(void)state;
	t_parse_tcp("tcp:localhost:8080", "localhost", 8080, 0);
	t_parse_tcp("tcp:a-b.example.org:1", "a-b.example.org", 1, 0);
}

static void
test_address_tcp_ipv4(void **state)
{
	(void)state;
	t_parse_tcp("tcp:127.0.0.1:6000", "127.0.0.1", 6000, 0);
}

static void
test_address_tcp_ipv6(void **state)
{
	(void)state;
	t_parse_tcp("tcp:[::1]:8080", "::1", 8080, 1);
	t_parse_tcp("tcp:[::]:0", "::", 0, 1);
	t_parse_tcp("tcp:[fe80::1%eth0]:7", "fe80::1%eth0", 7, 1);
	t_parse_tcp("tcp:[::ffff:10.0.0.1]:9", "::ffff:10.0.0.1", 9, 1);
}

static void
test_address_tcp_port_bounds(void **state)
{
	(void)state;
	t_parse_tcp("tcp:h:0", "h", 0, 0);
	t_parse_tcp("tcp:h:65535", "h", 65535, 0);
	t_parse_tcp("tcp:h:00080", "h", 80, 0);
	t_parse_tcp("tcp:[::1]:65535", "::1", 65535, 1);
	t_reject("tcp:h:65536", CQW_EADDRESS);
	t_reject("tcp:h:99999", CQW_EADDRESS);
	t_reject("tcp:[::1]:65536", CQW_EADDRESS);
}

static void
test_address_tcp_port_too_many_digits(void **state)
{
	(void)state;
	t_reject("tcp:h:000080", CQW_EADDRESS);
	t_reject("tcp:h:100000", CQW_EADDRESS);
	t_reject("tcp:h:99999999999999999999", CQW_EADDRESS);
}

static void
test_address_tcp_port_not_decimal(void **state)
{
	(void)state;
	t_reject("tcp:h:", CQW_EADDRESS);
	t_reject("tcp:h:-1", CQW_EADDRESS);
	t_reject("tcp:h:+1", CQW_EADDRESS);
	t_reject("tcp:h: 1", CQW_EADDRESS);
	t_reject("tcp:h:1 ", CQW_EADDRESS);
	t_reject("tcp:h:0x10", CQW_EADDRESS);
	t_reject("tcp:h:http", CQW_EADDRESS);
	t_reject("tcp:h:8a", CQW_EADDRESS);
	t_reject("tcp:[::1]:", CQW_EADDRESS);
	t_reject("tcp:[::1]:x", CQW_EADDRESS);
}

static void
test_address_tcp_no_port(void **state)
{
	(void)state;
	t_reject("tcp:host", CQW_EADDRESS);
	t_reject("tcp:[::1]", CQW_EADDRESS);
	t_reject("tcp:[::1]80", CQW_EADDRESS);
}

static void
test_address_tcp_empty_host(void **state)
{
	(void)state;
	t_reject("tcp:", CQW_EADDRESS);
	t_reject("tcp::80", CQW_EADDRESS);
	t_reject("tcp:[]:80", CQW_EADDRESS);
}

static void
test_address_tcp_missing_bracket(void **state)
{
	(void)state;
	t_reject("tcp:[::1", CQW_EADDRESS);
	t_reject("tcp:[::1:80", CQW_EADDRESS);
	t_reject("tcp:::1]:80", CQW_EADDRESS);
	t_reject("tcp:[[::1]]:80", CQW_EADDRESS);
	t_reject("tcp:h]:80", CQW_EADDRESS);
	t_reject("tcp:h[:80", CQW_EADDRESS);
}

/* "tcp:::1:80" is ::1 port 80 or ::1:80 with no port: refuse to guess. */
static void
test_address_tcp_bare_ipv6(void **state)
{
	(void)state;
	t_reject("tcp:::1:80", CQW_EADDRESS);
	t_reject("tcp:fe80::1:80", CQW_EADDRESS);
	t_reject("tcp:a:b:80", CQW_EADDRESS);
}

/* Brackets only around IPv6, or ipv6_literal would not round-trip. */
static void
test_address_tcp_brackets_need_ipv6(void **state)
{
	(void)state;
	t_reject("tcp:[127.0.0.1]:80", CQW_EADDRESS);
	t_reject("tcp:[localhost]:80", CQW_EADDRESS);
}

static void
test_address_tcp_host_blank(void **state)
{
	(void)state;
	t_reject("tcp: h:80", CQW_EADDRESS);
	t_reject("tcp:h :80", CQW_EADDRESS);
	t_reject("tcp:a\tb:80", CQW_EADDRESS);
	t_reject("tcp:[::1 ]:80", CQW_EADDRESS);
}

static void
test_address_unknown_scheme(void **state)
{
	(void)state;
	t_reject("udp:h:80", CQW_EADDRESS);
	t_reject("http://h/", CQW_EADDRESS);
	t_reject("x:", CQW_EADDRESS);
	/* Windows drive paths are not unix paths; say so early. */
	t_reject("C:\\tmp\\x", CQW_EADDRESS);
}

/* Schemes are lower case: one spelling per address. */
static void
test_address_scheme_case(void **state)
{
	(void)state;
	t_reject("UNIX:/tmp/x", CQW_EADDRESS);
	t_reject("Tcp:h:80", CQW_EADDRESS);
	t_reject("PIPE:\\\\.\\pipe\\x", CQW_EADDRESS);
}

/* A scheme name that merely starts like a known one is unknown. */
static void
test_address_scheme_prefix_only(void **state)
{
	(void)state;
	t_reject("unixx:/tmp/x", CQW_EADDRESS);
	t_reject("tc:h:80", CQW_EADDRESS);
	t_reject("tcpx:h:80", CQW_EADDRESS);
	t_reject("pip:\\\\.\\pipe\\x", CQW_EADDRESS);
}

static void
test_address_null_and_empty(void **state)
{
	struct cqw__addr a;

	(void)state;
	t_reject(NULL, CQW_EINVAL);
	t_reject("", CQW_EINVAL);
	assert_int_equal(cqw__addr_parse(NULL, "unix:/x"), CQW_EINVAL);
	assert_int_equal(cqw__addr_parse(&a, "unix:/x"), 0);
}

/* 255 bytes plus the terminator fill path[]; 256 do not fit. */
static void
test_address_unix_path_limit(void **state)
{
	size_t max = CQW__ADDR_PATH_MAX - 1;
	char s[512];
	char want[512];

	(void)state;
	T_LONG(want, "/", 'p', max - 1, "");
	assert_int_equal(strlen(want), max);
	t_parse_path(T_LONG(s, "unix:/", 'p', max - 1, ""), CQW__ADDR_UNIX,
		     want);
	t_parse_path(T_LONG(s, "/", 'p', max - 1, ""), CQW__ADDR_UNIX, want);
	t_reject(T_LONG(s, "unix:/", 'p', max, ""), CQW_ENAMETOOLONG);
	t_reject(T_LONG(s, "/", 'p', max, ""), CQW_ENAMETOOLONG);
}

/* The limit is on the name, without the '@'. */
static void
test_address_abstract_limit(void **state)
{
	size_t max = CQW__ADDR_PATH_MAX - 1;
	char s[512];
	char want[512];

	(void)state;
	T_LONG(want, "", 'n', max, "");
	t_parse_path(T_LONG(s, "unix:@", 'n', max, ""), CQW__ADDR_UNIX_ABSTRACT,
		     want);
	t_parse_path(T_LONG(s, "@", 'n', max, ""), CQW__ADDR_UNIX_ABSTRACT,
		     want);
	t_reject(T_LONG(s, "unix:@", 'n', max + 1, ""), CQW_ENAMETOOLONG);
	t_reject(T_LONG(s, "@", 'n', max + 1, ""), CQW_ENAMETOOLONG);
}

static void
test_address_pipe_limit(void **state)
{
	size_t max = CQW__ADDR_PATH_MAX - 1;
	char s[512];
	char want[512];

	(void)state;
	T_LONG(want, "\\\\", 'x', max - 2, "");
	assert_int_equal(strlen(want), max);
	t_parse_path(T_LONG(s, "pipe:\\\\", 'x', max - 2, ""), CQW__ADDR_PIPE,
		     want);
	t_parse_path(T_LONG(s, "\\\\", 'x', max - 2, ""), CQW__ADDR_PIPE, want);
	t_reject(T_LONG(s, "pipe:\\\\", 'x', max - 1, ""), CQW_ENAMETOOLONG);
	t_reject(T_LONG(s, "\\\\", 'x', max - 1, ""), CQW_ENAMETOOLONG);
}

/* sun_path is shorter than the limit here; the socket layer checks it. */
static void
test_address_unix_longer_than_sun_path(void **state)
{
	char s[512];
	char want[512];

	(void)state;
	t_parse_path(T_LONG(s, "unix:/", 'p', 199, ""), CQW__ADDR_UNIX,
		     T_LONG(want, "/", 'p', 199, ""));
}

static void
test_address_tcp_host_limit(void **state)
{
	size_t max = CQW__ADDR_HOST_MAX - 1;
	char s[512];
	char want[512];

	(void)state;
	t_parse_tcp(T_LONG(s, "tcp:", 'h', max, ":1"),
		    T_LONG(want, "", 'h', max, ""), 1, 0);
	t_parse_tcp(T_LONG(s, "tcp:[::", 'f', max - 2, "]:1"),
		    T_LONG(want, "::", 'f', max - 2, ""), 1, 1);
	t_reject(T_LONG(s, "tcp:", 'h', max + 1, ":1"), CQW_ENAMETOOLONG);
	t_reject(T_LONG(s, "tcp:[::", 'f', max - 1, "]:1"), CQW_ENAMETOOLONG);
}

static void
test_address_round_trip_canonical(void **state)
{
	(void)state;
	t_round_trip("unix:/tmp/sock", "unix:/tmp/sock");
	t_round_trip("unix:rel/sock", "unix:rel/sock");
	t_round_trip("unix:a:b", "unix:a:b");
	t_round_trip("unix:\\\\x", "unix:\\\\x");
	t_round_trip("unix:@name", "unix:@name");
	t_round_trip("unix:@", "unix:@");
	t_round_trip("unix:@@x", "unix:@@x");
	t_round_trip("pipe:\\\\.\\pipe\\x", "pipe:\\\\.\\pipe\\x");
	t_round_trip("tcp:localhost:8080", "tcp:localhost:8080");
	t_round_trip("tcp:127.0.0.1:0", "tcp:127.0.0.1:0");
	t_round_trip("tcp:h:65535", "tcp:h:65535");
	t_round_trip("tcp:[::1]:8080", "tcp:[::1]:8080");
	t_round_trip("tcp:[fe80::1%eth0]:1", "tcp:[fe80::1%eth0]:1");
}

/* Other spellings format to the canonical one. */
static void
test_address_round_trip_bare(void **state)
{
	(void)state;
	t_round_trip("/tmp/sock", "unix:/tmp/sock");
	t_round_trip("./a:b", "unix:./a:b");
	t_round_trip("@name", "unix:@name");
	t_round_trip("\\\\.\\pipe\\x", "pipe:\\\\.\\pipe\\x");
	t_round_trip("tcp:h:00080", "tcp:h:80");
	t_round_trip("tcp:h:0", "tcp:h:0");
}

static void
test_address_round_trip_at_limit(void **state)
{
	size_t max = CQW__ADDR_PATH_MAX - 1;
	char want[512];
	char s[512];

	(void)state;
	t_round_trip(T_LONG(s, "unix:/", 'p', max - 1, ""), s);
	t_round_trip(T_LONG(s, "unix:@", 'n', max, ""), s);
	t_round_trip(T_LONG(s, "\\\\", 'x', max - 2, ""),
		     T_LONG(want, "pipe:\\\\", 'x', max - 2, ""));
	t_round_trip(T_LONG(s, "tcp:", 'h', CQW__ADDR_HOST_MAX - 1, ":65535"),
		     s);
	t_round_trip(
	    T_LONG(s, "tcp:[::", 'f', CQW__ADDR_HOST_MAX - 3, "]:65535"), s);
}

/* Exactly len + 1 fits; len does not, and out is left "". */
static void
test_address_format_small_buffer(void **state)
{
	static const char want[] = "tcp:[::1]:8080";
	size_t len = sizeof(want) - 1;
	struct cqw__addr a;
	char out[64];

	(void)state;
	t_parse_expect(&a, want, 0);

	memset(out, 'X', sizeof(out));
	assert_int_equal(cqw__addr_format(&a, out, len + 1), len);
	assert_string_equal(out, want);

	memset(out, 'X', sizeof(out));
	assert_int_equal(cqw__addr_format(&a, out, len), CQW_ENAMETOOLONG);
	assert_int_equal(out[0], '\0');
	/* Nothing written past cap. */
	assert_int_equal(out[len], 'X');

	memset(out, 'X', sizeof(out));
	assert_int_equal(cqw__addr_format(&a, out, 1), CQW_ENAMETOOLONG);
	assert_int_equal(out[0], '\0');
	assert_int_equal(out[1], 'X');

	memset(out, 'X', sizeof(out));
	assert_int_equal(cqw__addr_format(&a, out, 0), CQW_ENAMETOOLONG);
	assert_int_equal(out[0], 'X');
}

/* Every kind hits the limit in its own part of the string. */
static void
test_address_format_small_buffer_each_kind(void **state)
{
	static const char *const addrs[] = {
		"unix:/tmp/sock", "unix:@name",	 "pipe:\\\\.\\pipe\\x",
		"tcp:h:65535",	  "tcp:[::1]:1",
	};
	struct cqw__addr a;
	char out[64];
	size_t i;
	size_t cap;

	(void)state;
	for (i = 0; i < sizeof(addrs) / sizeof(addrs[0]); i++) {
		size_t len = strlen(addrs[i]);

		t_parse_expect(&a, addrs[i], 0);
		for (cap = 0; cap <= len; cap++) {
			memset(out, 'X', sizeof(out));
			assert_int_equal(cqw__addr_format(&a, out, cap),
					 CQW_ENAMETOOLONG);
			if (cap > 0) {
				assert_int_equal(out[0], '\0');
			}
			assert_int_equal(out[cap], 'X');
		}
		assert_int_equal(cqw__addr_format(&a, out, len + 1), len);
		assert_string_equal(out, addrs[i]);
	}
}

/* The contract brackets a host containing ':', whatever ipv6_literal says. */
static void
test_address_format_brackets_by_content(void **state)
{
	struct cqw__addr a;
	char out[64];

	(void)state;
	memset(&a, 0, sizeof(a));
	a.kind = CQW__ADDR_TCP;
	strcpy(a.host, "::1");
	a.port = 5;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), 11);
	assert_string_equal(out, "tcp:[::1]:5");

	strcpy(a.host, "10.0.0.1");
	a.ipv6_literal = 1;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), 14);
	assert_string_equal(out, "tcp:10.0.0.1:5");
}

/*
 * A file named "@x" (a Python peer can bind one) must not format as
 * "unix:@x", which is abstract; "./@x" names the same file.
 */
static void
test_address_format_unix_at_file(void **state)
{
	struct cqw__addr a;
	struct cqw__addr b;
	char out[64];

	(void)state;
	memset(&a, 0, sizeof(a));
	a.kind = CQW__ADDR_UNIX;
	strcpy(a.path, "@x");
	a.path_len = 2;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), 9);
	assert_string_equal(out, "unix:./@x");
	t_parse_expect(&b, out, 0);
	assert_int_equal(b.kind, CQW__ADDR_UNIX);
}

/* What parse() could never produce is refused, not written out. */
static void
test_address_format_invalid(void **state)
{
	struct cqw__addr a;
	char out[64];

	(void)state;
	t_parse_expect(&a, "tcp:h:1", 0);
	assert_int_equal(cqw__addr_format(NULL, out, sizeof(out)), CQW_EINVAL);
	assert_int_equal(out[0], '\0');
	assert_int_equal(cqw__addr_format(&a, NULL, 0), CQW_EINVAL);
	assert_int_equal(cqw__addr_format(&a, NULL, 64), CQW_EINVAL);

	a.port = 65536;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	a.port = -1;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	a.port = 1;
	a.host[0] = '\0';
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	strcpy(a.host, "a]");
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	memset(a.host, 'h', sizeof(a.host));
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);

	t_parse_expect(&a, "unix:/x", 0);
	a.path_len = 0;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	/* A full path[] has no terminator and does not fit. */
	memset(a.path, 'p', sizeof(a.path));
	a.path_len = sizeof(a.path);
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	strcpy(a.path, "/x");
	/* path_len covering the terminator would embed a NUL. */
	a.path_len = 3;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);

	t_parse_expect(&a, "pipe:\\\\.\\pipe\\x", 0);
	strcpy(a.path, "name");
	a.path_len = 4;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);

	a.kind = (enum cqw__addr_kind)0;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	a.kind = (enum cqw__addr_kind)99;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
	assert_int_equal(out[0], '\0');
}

/* An empty abstract name is valid to format, an empty path is not. */
static void
test_address_format_empty_abstract(void **state)
{
	struct cqw__addr a;
	char out[8];

	(void)state;
	memset(&a, 0, sizeof(a));
	a.kind = CQW__ADDR_UNIX_ABSTRACT;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), 6);
	assert_string_equal(out, "unix:@");
	a.kind = CQW__ADDR_UNIX;
	assert_int_equal(cqw__addr_format(&a, out, sizeof(out)), CQW_EINVAL);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_unix_absolute),
		cmocka_unit_test(test_address_unix_relative),
		cmocka_unit_test(test_address_unix_path_keeps_colons),
		cmocka_unit_test(test_address_unix_empty_path),
		cmocka_unit_test(test_address_bare_path),
		cmocka_unit_test(test_address_bare_path_with_colon),
		cmocka_unit_test(test_address_abstract),
		cmocka_unit_test(test_address_abstract_empty),
		cmocka_unit_test(test_address_bare_abstract),
		cmocka_unit_test(test_address_pipe_scheme),
		cmocka_unit_test(test_address_pipe_bare),
		cmocka_unit_test(test_address_pipe_bad),
		cmocka_unit_test(test_address_single_backslash_is_path),
		cmocka_unit_test(test_address_tcp_name),
		cmocka_unit_test(test_address_tcp_ipv4),
		cmocka_unit_test(test_address_tcp_ipv6),
		cmocka_unit_test(test_address_tcp_port_bounds),
		cmocka_unit_test(test_address_tcp_port_too_many_digits),
		cmocka_unit_test(test_address_tcp_port_not_decimal),
		cmocka_unit_test(test_address_tcp_no_port),
		cmocka_unit_test(test_address_tcp_empty_host),
		cmocka_unit_test(test_address_tcp_missing_bracket),
		cmocka_unit_test(test_address_tcp_bare_ipv6),
		cmocka_unit_test(test_address_tcp_brackets_need_ipv6),
		cmocka_unit_test(test_address_tcp_host_blank),
		cmocka_unit_test(test_address_unknown_scheme),
		cmocka_unit_test(test_address_scheme_case),
		cmocka_unit_test(test_address_scheme_prefix_only),
		cmocka_unit_test(test_address_null_and_empty),
		cmocka_unit_test(test_address_unix_path_limit),
		cmocka_unit_test(test_address_abstract_limit),
		cmocka_unit_test(test_address_pipe_limit),
		cmocka_unit_test(test_address_unix_longer_than_sun_path),
		cmocka_unit_test(test_address_tcp_host_limit),
		cmocka_unit_test(test_address_round_trip_canonical),
		cmocka_unit_test(test_address_round_trip_bare),
		cmocka_unit_test(test_address_round_trip_at_limit),
		cmocka_unit_test(test_address_format_small_buffer),
		cmocka_unit_test(test_address_format_small_buffer_each_kind),
		cmocka_unit_test(test_address_format_brackets_by_content),
		cmocka_unit_test(test_address_format_unix_at_file),
		cmocka_unit_test(test_address_format_invalid),
		cmocka_unit_test(test_address_format_empty_abstract),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
