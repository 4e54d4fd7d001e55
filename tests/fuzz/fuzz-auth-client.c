/*
 * Fuzz the handshake in the client's role (listener.c's order, auth.h):
 * we answer the server's challenge (frame 1), read its verdict (frame 3),
 * send our challenge and judge the server's response (frame 5). The peer
 * frames come from the input (layout in fuzz-auth.h); every result is
 * compared with the reference there, so a response is accepted exactly
 * when it is a right HMAC for our challenge under the key.
 */
#include "fuzz-auth.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t chal[256], right[FA_MAXFRAME], ans[FA_MAXFRAME];
	struct fa_frame f;
	struct fa_ctx fx;
	size_t clen;

	fa_setup(&fx, &in);

	/* Frames 1-3: the server's challenge, our answer, its verdict. */
	fa_frame(&in, &f);
	if (fa_answer(&fx, &f, ans) < 0) {
		return 0; /* nothing is sent; the connection is dropped */
	}
	fa_frame(&in, &f);
	if (fa_check_welcome(&f) < 0) {
		return 0;
	}

	/* Frames 4-6: our challenge, the server's response, our verdict. */
	clen = fa_make_challenge(&fx, chal, fx.cap);
	fa_frame(&in, &f);
	fa_correct(&fx, &f, right, fa_right_answer(&fx, chal, clen, right));
	fa_verify(&fx, chal, clen, &f);
	return 0;
}
