/*
 * Handle passing on POSIX (multiprocessing.reduction.send_handle /
 * recv_handle): one byte 0x01 with the descriptor attached (SCM_RIGHTS)
 * on an AF_UNIX stream socket, as Python sends it (WIRE.md §8.1). The
 * target process is the one at the other end: its pid is not needed.
 */
#include "common/internal.h"
#include "common/platform.h"
#include "posix/io.h"

int
cqw__os_send_handle(cqw_conn *c, cqw_fd handle, uint64_t target_pid)
{
	(void)target_pid;
	if (c->kind != CQW__FD_SOCK) {
		return CQW_ENOTSOCK;
	}
	return cqw__io_send_fd(c->fd, handle);
}

int
cqw__os_recv_handle(cqw_conn *c, cqw_fd *handle)
{
	if (c->kind != CQW__FD_SOCK) {
		return CQW_ENOTSOCK;
	}
	/*
	 * The handle's byte must be the next byte on the socket: not inside
	 * a frame, not already read ahead (its descriptor would be lost).
	 */
	if (cqw__chan_has_buffered(c)) {
		return CQW_EPROTO;
	}
	return cqw__io_recv_fd(c->fd, handle);
}
