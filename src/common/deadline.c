/*
 * Deadlines: absolute cqw__now_ms() values, -1 for none (io.h). The clock
 * is the platform's; the arithmetic is the same everywhere.
 */
#include "io.h"

int
cqw__remaining_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0) {
		return -1;
	}
	left = deadline - cqw__now_ms();
	if (left <= 0) {
		return 0;
	}
	return left > 0x7fffffff ? 0x7fffffff : (int)left;
}
