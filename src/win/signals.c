/*
 * The per-thread signal check (cqw_set_signal_check) on Windows.
 *
 * Windows has no signals that interrupt a system call, so there is no
 * EINTR to ask the check about. The API is kept so that a binding (Python
 * and its Ctrl-C) can still stop a long wait: while a check is set, the
 * blocking calls of src/win wait in slices of CQW__WIN_SLICE_MS (100 ms)
 * and ask it between slices (see win.h); a stop cancels the wait and
 * returns CQW_EINTR, a receive keeping any part of a frame it consumed
 * for the next call (cqwire.h). A send already handed to the
 * kernel is never stopped: a pipe message or a frame cut in the middle
 * could not be finished as the same message.
 */
#include "win/win.h"

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
cqw__win_check_set(void)
{
	return check_fn != NULL;
}
