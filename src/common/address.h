/*
 * Address strings (DESIGN.md §4) <-> a parsed form. Pure string work: no
 * name resolution and no OS types; src/posix turns the result into a
 * sockaddr and back.
 *
 *   "unix:/path", "unix:rel/path", a bare path (no "scheme:" prefix)
 *                                          -> CQW__ADDR_UNIX, path
 *   "unix:@name", or a bare "@name"         -> CQW__ADDR_UNIX_ABSTRACT, name
 *                                             (may be empty; no NUL bytes)
 *   "tcp:host:port", "tcp:[v6]:port"       -> CQW__ADDR_TCP, host, port
 *   "pipe:\\.\pipe\name" or "\\.\pipe\name" -> CQW__ADDR_PIPE, path
 */
#ifndef CQW_ADDRESS_H
#define CQW_ADDRESS_H

#include <stddef.h>

#define CQW__ADDR_PATH_MAX 256 /* longer paths: CQW_ENAMETOOLONG */
#define CQW__ADDR_HOST_MAX 256

enum cqw__addr_kind {
	CQW__ADDR_UNIX = 1,
	CQW__ADDR_UNIX_ABSTRACT,
	CQW__ADDR_TCP,
	CQW__ADDR_PIPE,
};

struct cqw__addr {
	enum cqw__addr_kind kind;
	char path[CQW__ADDR_PATH_MAX]; /* UNIX, UNIX_ABSTRACT (no '@'), PIPE */
	size_t path_len;
	char host[CQW__ADDR_HOST_MAX]; /* TCP, without brackets */
	int port;		       /* TCP: 0..65535 */
	int ipv6_literal;	       /* TCP: host was given in [] */
};

/*
 * Parse s. 0 on success; CQW_EADDRESS for an unknown scheme, a missing or
 * bad port, empty host or path, a ']' missing; CQW_ENAMETOOLONG when a
 * part does not fit. NULL or "": CQW_EINVAL.
 */
int cqw__addr_parse(struct cqw__addr *a, const char *s);

/*
 * Format a into out ("unix:/p", "unix:@n", "tcp:h:p", "tcp:[h]:p" for a
 * host containing ':', "pipe:..."). Returns the length, or
 * CQW_ENAMETOOLONG if cap is too small (out is then ""), or CQW_EINVAL
 * for a NULL argument or a struct whose string would not parse back to
 * it. A filesystem path that starts with '@' is written "unix:./@..." so
 * that it does not read back as an abstract name (it must then leave
 * room for the "./" in CQW__ADDR_PATH_MAX).
 */
int cqw__addr_format(const struct cqw__addr *a, char *out, size_t cap);

#endif
