/* Frame headers: encoder and incremental decoder (see frame.h). */
#include <string.h>

#include "cqwire.h"
#include "frame.h"

static void
put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

size_t
cqw__frame_header(uint8_t out[CQW__HDR_LARGE], uint64_t n)
{
	if (n <= CQW__SMALL_MAX) {
		put_be32(out, (uint32_t)n);
		return CQW__HDR_SMALL;
	}
	put_be32(out, 0xffffffffu);
	put_be32(out + 4, (uint32_t)(n >> 32));
	put_be32(out + 8, (uint32_t)n);
	return CQW__HDR_LARGE;
}

void
cqw__dec_reset(struct cqw__dec *d)
{
	d->got = 0;
	d->need = CQW__HDR_SMALL;
	d->len = 0;
}

size_t
cqw__dec_want(const struct cqw__dec *d)
{
	return (size_t)(d->need - d->got);
}

size_t
cqw__dec_feed(struct cqw__dec *d, const uint8_t *p, size_t n)
{
	size_t take = cqw__dec_want(d);
	int32_t small;

	if (take > n) {
		take = n;
	}
	memcpy(d->hdr + d->got, p, take);
	d->got = (uint8_t)(d->got + take);
	if (d->got != d->need) {
		return take;
	}
	if (d->need == CQW__HDR_LARGE) {
		d->len =
		    (uint64_t)get_be32(d->hdr + 4) << 32 | get_be32(d->hdr + 8);
		return take;
	}
	small = (int32_t)get_be32(d->hdr);
	if (small == -1) {
		/* CPython >= 3.8 large frame: an 8-byte length follows. */
		d->need = CQW__HDR_LARGE;
		take += cqw__dec_feed(d, p + take, n - take);
	} else if (small < 0) {
		/*
		 * Python reads other negative lengths as an empty message
		 * and goes on with the next frame; so do we, so that the
		 * stream stays in step with a Python reader of it.
		 */
		d->len = 0;
	} else {
		d->len = (uint64_t)small;
	}
	return take;
}

int
cqw__dec_eof(const struct cqw__dec *d)
{
	return d->got == 0 ? CQW_EOF : CQW_ETRUNC;
}
