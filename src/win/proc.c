/*
 * platform.h's process and thread identities on Windows. Windows has no
 * fork(), so the fork generation that loop.c compares never changes.
 */
#include "win/win.h"

uint64_t
cqw__process_id(void)
{
	return (uint64_t)GetCurrentProcessId();
}

uint64_t
cqw__thread_id(void)
{
	return (uint64_t)GetCurrentThreadId();
}

unsigned
cqw__fork_gen(void)
{
	return 0;
}
