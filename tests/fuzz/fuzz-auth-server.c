/*
 * Fuzz the handshake in the server's role (listener.c's order, auth.h):
 * we send a challenge, judge the client's response (frame 2), answer the
 * client's challenge (frame 4) and read its verdict (frame 6). The peer
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

	/* Frames 1-3: our challenge, the client's response, our verdict. */
	clen = fa_make_challenge(&fx, chal, fx.cap);
	fa_frame(&in, &f);
	fa_correct(&fx, &f, right, fa_right_answer(&fx, chal, clen, right));
	if (fa_verify(&fx, chal, clen, &f) < 0) {
		return 0; /* #FAILURE#, and the server gives up */
	}

	/* Frames 4-6: the client's challenge, our answer, its verdict. */
	fa_frame(&in, &f);
	if (fa_answer(&fx, &f, ans) < 0) {
		return 0;
	}
	fa_frame(&in, &f);
	fa_check_welcome(&f);
	return 0;
}
