/*
 * Address strings <-> struct cqw__addr (DESIGN.md §4, contract in
 * address.h). Only string work happens here; src/posix and src/iocp turn the
 * parsed form into a sockaddr or a pipe name and enforce their own limits
 * (sun_path is shorter than CQW__ADDR_PATH_MAX, and that is their call).
 *
 * The grammar, in the order it is tried:
 *
 *   "\\" ...             a Windows pipe path, kept whole (Python's
 *                        multiprocessing recognises AF_PIPE the same way)
 *   letters ":" rest     a scheme: "unix", "tcp" or "pipe", anything else
 *                        is CQW_EADDRESS; the ':' must come before any '/'
 *                        or other non-letter, so "./a:b" is a path
 *   anything else        a bare path, parsed exactly as "unix:" + s
 *
 * Treating a bare "@name" as abstract is deliberate: format() writes every
 * unix address with "unix:", so a bare "@name" taken as a file would come
 * back as "unix:@name" and re-parse as something else.
 */
#include <string.h>

#include "cqwire.h"
#include "common/address.h"

#define PORT_MAX 65535

/* The two characters every Windows pipe path starts with. */
static int
is_pipe_path(const char *s)
{
	return s[0] == '\\' && s[1] == '\\';
}

static int
is_ascii_letter(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * Length of the scheme name if s starts with letters followed by ':', else
 * 0. Not isalpha(): the locale must not change what an address means.
 */
static size_t
scheme_len(const char *s)
{
	size_t n = 0;

	while (is_ascii_letter(s[n])) {
		n++;
	}
	if (n == 0 || s[n] != ':') {
		return 0;
	}
	return n;
}

/* Copy a NUL-terminated path into a->path, refusing what does not fit. */
static int
set_path(struct cqw__addr *a, enum cqw__addr_kind kind, const char *p)
{
	size_t len = strlen(p);

	if (len >= sizeof(a->path)) {
		return CQW_ENAMETOOLONG;
	}
	a->kind = kind;
	memcpy(a->path, p, len + 1);
	a->path_len = len;
	return 0;
}

static int
parse_unix(struct cqw__addr *a, const char *p)
{
	/* "unix:@" is the empty abstract name, which Linux allows. */
	if (p[0] == '@') {
		return set_path(a, CQW__ADDR_UNIX_ABSTRACT, p + 1);
	}
	if (p[0] == '\0') {
		return CQW_EADDRESS;
	}
	return set_path(a, CQW__ADDR_UNIX, p);
}

/*
 * Anything after "pipe:" must itself be a pipe path: CreateNamedPipe()
 * accepts nothing else, and failing here names the real problem.
 */
static int
parse_pipe(struct cqw__addr *a, const char *p)
{
	if (!is_pipe_path(p)) {
		return CQW_EADDRESS;
	}
	return set_path(a, CQW__ADDR_PIPE, p);
}

/*
 * 1 to 5 decimal digits and nothing else, at most 65535. strtol() would
 * take a sign, leading blanks and a locale; a port has none of them.
 */
static int
parse_port(const char *p, int *port)
{
	size_t n;
	long v = 0;

	for (n = 0; p[n] != '\0'; n++) {
		if (p[n] < '0' || p[n] > '9' || n == 5) {
			return CQW_EADDRESS;
		}
		v = v * 10 + (p[n] - '0');
	}
	if (n == 0 || v > PORT_MAX) {
		return CQW_EADDRESS;
	}
	*port = (int)v;
	return 0;
}

/*
 * Host names are not checked beyond what would break the syntax or could
 * never resolve: name resolution decides the rest. Bytes >= 0x80 pass, for
 * whatever the resolver does with UTF-8.
 */
static int
host_ok(const char *host, size_t len)
{
	size_t i;

	if (len == 0) {
		return 0;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)host[i];

		if (c <= ' ' || c == 0x7f || c == '[' || c == ']') {
			return 0;
		}
	}
	return 1;
}

static int
parse_tcp(struct cqw__addr *a, const char *p)
{
	const char *host;
	const char *colon;
	size_t host_len;
	int ipv6 = 0;
	int port;
	int err;

	if (p[0] == '[') {
		const char *close = strchr(p + 1, ']');

		if (close == NULL || close[1] != ':') {
			return CQW_EADDRESS;
		}
		host = p + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
		/*
		 * Brackets are for IPv6 only: "[10.0.0.1]" would format back
		 * without them and the round trip would lose ipv6_literal.
		 */
		if (memchr(host, ':', host_len) == NULL) {
			return CQW_EADDRESS;
		}
		ipv6 = 1;
	} else {
		colon = strrchr(p, ':');
		if (colon == NULL) {
			return CQW_EADDRESS;
		}
		host = p;
		host_len = (size_t)(colon - host);
		/*
		 * "tcp:::1:80" could be ::1 port 80 or ::1:80 with no port;
		 * make the caller write the brackets.
		 */
		if (memchr(host, ':', host_len) != NULL) {
			return CQW_EADDRESS;
		}
	}
	if (!host_ok(host, host_len)) {
		return CQW_EADDRESS;
	}
	err = parse_port(colon + 1, &port);
	if (err != 0) {
		return err;
	}
	if (host_len >= sizeof(a->host)) {
		return CQW_ENAMETOOLONG;
	}
	a->kind = CQW__ADDR_TCP;
	memcpy(a->host, host, host_len);
	a->host[host_len] = '\0';
	a->port = port;
	a->ipv6_literal = ipv6;
	return 0;
}

int
cqw__addr_parse(struct cqw__addr *a, const char *s)
{
	size_t n;

	if (a == NULL || s == NULL || s[0] == '\0') {
		return CQW_EINVAL;
	}
	/* Callers get no half-filled struct from a failed parse. */
	memset(a, 0, sizeof(*a));

	if (is_pipe_path(s)) {
		return set_path(a, CQW__ADDR_PIPE, s);
	}
	n = scheme_len(s);
	if (n == 0) {
		return parse_unix(a, s);
	}
	/* Schemes are lower case only, so each address has one spelling. */
	if (n == 4 && memcmp(s, "unix", 4) == 0) {
		return parse_unix(a, s + 5);
	}
	if (n == 3 && memcmp(s, "tcp", 3) == 0) {
		return parse_tcp(a, s + 4);
	}
	if (n == 4 && memcmp(s, "pipe", 4) == 0) {
		return parse_pipe(a, s + 5);
	}
	return CQW_EADDRESS;
}

/* An append-only view of the caller's buffer; overflow sticks. */
struct outbuf {
	char *p;
	size_t cap;
	size_t len;
	int overflow;
};

static void
put(struct outbuf *o, const char *s, size_t n)
{
	/* Keep one byte for the terminator. */
	if (o->overflow || n >= o->cap - o->len) {
		o->overflow = 1;
		return;
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
}

static void
put_str(struct outbuf *o, const char *s)
{
	put(o, s, strlen(s));
}

static void
put_port(struct outbuf *o, int port)
{
	char digits[5];
	size_t n = sizeof(digits);

	do {
		digits[--n] = (char)('0' + port % 10);
		port /= 10;
	} while (port != 0);
	put(o, digits + n, sizeof(digits) - n);
}

/*
 * Only an abstract name may be empty; a pipe path starts with "\\". Only
 * bytes below path_len count: path[] need not be terminated there.
 */
static int
path_valid(const struct cqw__addr *a)
{
	if (a->path_len >= sizeof(a->path) ||
	    memchr(a->path, '\0', a->path_len) != NULL) {
		return 0;
	}
	if (a->path_len == 0) {
		return a->kind == CQW__ADDR_UNIX_ABSTRACT;
	}
	if (a->kind == CQW__ADDR_PIPE) {
		return a->path_len >= 2 && is_pipe_path(a->path);
	}
	/*
	 * A file path "@x" is written "unix:./@x" (see format), and the two
	 * bytes it gains must still fit when the string is parsed back.
	 */
	if (a->kind == CQW__ADDR_UNIX && a->path[0] == '@') {
		return a->path_len + 2 < sizeof(a->path);
	}
	return 1;
}

/*
 * Is a something cqw__addr_parse() could have produced? Formatting
 * anything else would write a string that does not parse back.
 */
static int
addr_valid(const struct cqw__addr *a)
{
	switch (a->kind) {
	case CQW__ADDR_UNIX:
	case CQW__ADDR_UNIX_ABSTRACT:
	case CQW__ADDR_PIPE:
		return path_valid(a);
	case CQW__ADDR_TCP:
		if (memchr(a->host, '\0', sizeof(a->host)) == NULL) {
			return 0;
		}
		return host_ok(a->host, strlen(a->host)) && a->port >= 0 &&
		       a->port <= PORT_MAX;
	}
	return 0;
}

int
cqw__addr_format(const struct cqw__addr *a, char *out, size_t cap)
{
	struct outbuf o = { out, cap, 0, 0 };

	if (out == NULL) {
		return CQW_EINVAL;
	}
	if (a == NULL || !addr_valid(a)) {
		if (cap > 0) {
			out[0] = '\0';
		}
		return CQW_EINVAL;
	}

	switch (a->kind) {
	case CQW__ADDR_UNIX:
		put_str(&o, "unix:");
		/*
		 * A file named "@x" (say, from getsockname() on a socket a
		 * Python peer bound) would read back as abstract; "./@x" is
		 * the same file and reads back as a path.
		 */
		if (a->path[0] == '@') {
			put_str(&o, "./");
		}
		put(&o, a->path, a->path_len);
		break;
	case CQW__ADDR_UNIX_ABSTRACT:
		put_str(&o, "unix:@");
		put(&o, a->path, a->path_len);
		break;
	case CQW__ADDR_PIPE:
		put_str(&o, "pipe:");
		put(&o, a->path, a->path_len);
		break;
	case CQW__ADDR_TCP:
		put_str(&o, "tcp:");
		/* The contract brackets by content, not by ipv6_literal. */
		if (strchr(a->host, ':') != NULL) {
			put_str(&o, "[");
			put_str(&o, a->host);
			put_str(&o, "]");
		} else {
			put_str(&o, a->host);
		}
		put_str(&o, ":");
		put_port(&o, a->port);
		break;
	}

	if (o.overflow) {
		if (cap > 0) {
			out[0] = '\0';
		}
		return CQW_ENAMETOOLONG;
	}
	out[o.len] = '\0';
	return (int)o.len;
}
