/*
 * Fuzz address parsing and formatting (src/common/address.c, DESIGN.md
 * §4). Byte 0 picks the mode:
 *
 * - even: the rest is an address string (cut at its first NUL). parse()
 *   gives 0 or one of its documented errors; a parsed address is
 *   well-formed, formats, and parse(format(parse(s))) is the same
 *   address again, formatting to the same string.
 * - odd: the rest makes a struct cqw__addr of any content (any kind, any
 *   lengths, unterminated strings): with bit 1 set as raw memory, else
 *   from fields (kind, path_len as 16 bits, a fill byte for the unused
 *   ends of path and host, a count and the bytes of each, the port as
 *   32 bits, ipv6_literal) so that mutations reach every field.
 *   format() must not read past what the struct says; whatever it agrees
 *   to write must parse back to the same address (a file path starting
 *   with '@' comes back as "./@...", which is the same file) and format
 *   to the same string.
 *
 * In both, the string is also formatted into every cap too small for it:
 * CQW_ENAMETOOLONG and "" each time.
 */
#include <string.h>

#include "fuzz.h"

#include "cqwire.h"
#include "common/address.h"

#define OUT_MAX (16 + CQW__ADDR_PATH_MAX + CQW__ADDR_HOST_MAX)

static int
kind_ok(int kind)
{
	return kind == CQW__ADDR_UNIX || kind == CQW__ADDR_UNIX_ABSTRACT ||
	       kind == CQW__ADDR_TCP || kind == CQW__ADDR_PIPE;
}

/* What parse() may leave: a well-formed struct. */
static void
check_parsed(const struct cqw__addr *a)
{
	FUZZ_CHECK(kind_ok(a->kind));
	if (a->kind == CQW__ADDR_TCP) {
		FUZZ_CHECK(memchr(a->host, '\0', sizeof(a->host)) != NULL);
		FUZZ_CHECK(a->host[0] != '\0');
		FUZZ_CHECK(a->port >= 0 && a->port <= 65535);
		FUZZ_CHECK(a->ipv6_literal == (strchr(a->host, ':') != NULL));
		return;
	}
	FUZZ_CHECK(a->path_len < sizeof(a->path));
	FUZZ_CHECK(a->path[a->path_len] == '\0');
	FUZZ_CHECK(strlen(a->path) == a->path_len);
	FUZZ_CHECK(a->path_len > 0 || a->kind == CQW__ADDR_UNIX_ABSTRACT);
	if (a->kind == CQW__ADDR_PIPE) {
		FUZZ_CHECK(a->path_len >= 2 && a->path[0] == '\\' &&
			   a->path[1] == '\\');
	}
}

/* Same address: the fields that mean something for the kind. */
static int
same_addr(const struct cqw__addr *a, const struct cqw__addr *b)
{
	if (a->kind != b->kind) {
		return 0;
	}
	if (a->kind == CQW__ADDR_TCP) {
		return strcmp(a->host, b->host) == 0 && a->port == b->port;
	}
	return a->path_len == b->path_len &&
	       memcmp(a->path, b->path, a->path_len) == 0;
}

/* format() into exactly cap bytes (malloc'd, so ASan sees past it). */
static int
format_cap(const struct cqw__addr *a, size_t cap, char *copy)
{
	char *out = malloc(cap > 0 ? cap : 1);
	int r;

	FUZZ_CHECK(out != NULL);
	r = cqw__addr_format(a, out, cap);
	if (r >= 0) {
		FUZZ_CHECK((size_t)r < cap && strlen(out) == (size_t)r);
		memcpy(copy, out, (size_t)r + 1);
	} else if (cap > 0) {
		FUZZ_CHECK(out[0] == '\0');
	}
	free(out);
	return r;
}

/* s was formatted from a: check small caps and the round trip. */
static void
check_formatted(const struct cqw__addr *a, const char *s, size_t len,
		int at_file)
{
	char again[OUT_MAX];
	struct cqw__addr b;
	size_t cap;

	for (cap = 0; cap <= len; cap++) {
		FUZZ_CHECK(format_cap(a, cap, again) == CQW_ENAMETOOLONG);
	}
	FUZZ_CHECK(format_cap(a, len + 1, again) == (int)len);
	FUZZ_CHECK(strcmp(again, s) == 0);

	FUZZ_CHECK(cqw__addr_parse(&b, s) == 0);
	check_parsed(&b);
	if (at_file) {
		/* "unix:./@x" is the file "@x", spelt so as not to be abstract. */
		FUZZ_CHECK(b.kind == CQW__ADDR_UNIX);
		FUZZ_CHECK(b.path_len == a->path_len + 2);
		FUZZ_CHECK(memcmp(b.path, "./", 2) == 0);
		FUZZ_CHECK(memcmp(b.path + 2, a->path, a->path_len) == 0);
	} else {
		FUZZ_CHECK(same_addr(a, &b));
	}
	FUZZ_CHECK(cqw__addr_format(&b, again, sizeof(again)) >= 0);
	FUZZ_CHECK(at_file || strcmp(again, s) == 0);
}

static void
fuzz_string(const uint8_t *p, size_t n)
{
	char *s = malloc(n + 1);
	char out[OUT_MAX];
	struct cqw__addr a;
	int r;

	FUZZ_CHECK(s != NULL);
	memcpy(s, p, n);
	s[n] = '\0';
	r = cqw__addr_parse(&a, s);
	if (s[0] == '\0') {
		FUZZ_CHECK(r == CQW_EINVAL);
	} else {
		FUZZ_CHECK(r == 0 || r == CQW_EADDRESS ||
			   r == CQW_ENAMETOOLONG);
	}
	if (r == 0) {
		check_parsed(&a);
		/* parse() never makes a file path that starts with '@'. */
		FUZZ_CHECK(a.kind != CQW__ADDR_UNIX || a.path[0] != '@');
		r = cqw__addr_format(&a, out, sizeof(out));
		FUZZ_CHECK(r > 0);
		check_formatted(&a, out, (size_t)r, 0);
	}
	free(s);
}

/* A struct from fields (see the top of the file). */
static void
fields_struct(struct cqw__addr *a, const uint8_t *p, size_t n)
{
	struct fuzz_in in = { p, n };
	const uint8_t *b;
	uint32_t port;
	size_t k;
	int fill;

	a->kind = (enum cqw__addr_kind)(fuzz_byte(&in) % 6);
	a->path_len = fuzz_byte(&in);
	a->path_len |= (size_t)fuzz_byte(&in) << 8;
	fill = fuzz_byte(&in);
	memset(a->path, fill, sizeof(a->path));
	memset(a->host, fill, sizeof(a->host));
	k = fuzz_take(&in, fuzz_byte(&in), &b);
	memcpy(a->path, b, k);
	k = fuzz_take(&in, fuzz_byte(&in), &b);
	memcpy(a->host, b, k);
	port = (uint32_t)fuzz_byte(&in);
	port |= (uint32_t)fuzz_byte(&in) << 8;
	port |= (uint32_t)fuzz_byte(&in) << 16;
	port |= (uint32_t)fuzz_byte(&in) << 24;
	memcpy(&a->port, &port, sizeof(a->port));
	a->ipv6_literal = fuzz_byte(&in);
}

static void
fuzz_struct(const uint8_t *p, size_t n, int raw)
{
	struct cqw__addr *a = malloc(sizeof(*a));
	char out[OUT_MAX];
	int r;

	FUZZ_CHECK(a != NULL);
	memset(a, 0, sizeof(*a));
	if (raw) {
		memcpy(a, p, n < sizeof(*a) ? n : sizeof(*a));
	} else {
		fields_struct(a, p, n);
	}
	r = cqw__addr_format(a, out, sizeof(out));
	FUZZ_CHECK(r >= 0 || r == CQW_EINVAL);
	if (r >= 0) {
		FUZZ_CHECK(kind_ok(a->kind));
		check_formatted(a, out, (size_t)r,
				a->kind == CQW__ADDR_UNIX && a->path[0] == '@');
	} else {
		FUZZ_CHECK(out[0] == '\0');
	}
	free(a);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0) {
		return 0;
	}
	if (data[0] & 1) {
		fuzz_struct(data + 1, size - 1, (data[0] & 2) != 0);
	} else {
		fuzz_string(data + 1, size - 1);
	}
	return 0;
}
