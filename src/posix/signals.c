/*
 * The per-thread signal check (cqw_set_signal_check): what a blocking call
 * asks when a system call returns EINTR.
 */
#include "common/internal.h"
#include "common/platform.h"
#include "posix/io.h"
#include "posix/signals.h"

static _Thread_local int (*check_fn)(void *arg);
static _Thread_local void *check_arg;

void
cqw_set_signal_check(int (*check)(void *arg), void *arg)
{
	check_fn = check;
	check_arg = arg;
}

int
cqw__eintr_stop(void)
{
	return check_fn != NULL && check_fn(check_arg) != 0;
}
