/*
 * The per-thread signal check (cqw_set_signal_check), the same on every
 * platform: what a blocking call asks when it was interrupted. POSIX asks
 * it when a system call returns EINTR. Windows has no signals that
 * interrupt a system call, so while a check is set the blocking calls of
 * src/win and the iocp backend wait in slices (CQW__WIN_SLICE_MS, win.h)
 * and ask it between them; a stop cancels the wait and returns CQW_EINTR,
 * a receive keeping any part of a frame it consumed for the next call
 * (cqwire.h). A send already handed to the kernel is never stopped there:
 * a pipe message or a frame cut in the middle could not be finished as
 * the same message.
 */
#include <stddef.h>

#include "platform.h"

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

int
cqw__signal_check_set(void)
{
	return check_fn != NULL;
}
