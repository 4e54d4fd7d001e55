/*
 * Handle passing on Windows (platform.h: cqw__os_send_handle and
 * cqw__os_recv_handle). There is no SCM_RIGHTS: the sender duplicates the
 * handle into the receiving process (DuplicateHandle, which needs
 * PROCESS_DUP_HANDLE on it) and sends the new value as one message.
 *
 * The message, 24 bytes, one frame on a socket or one pipe message:
 *
 *   0   8  "cqwHNDL1"  magic and version
 *   8   8  the handle's value in the receiving process, little-endian
 *   16  8  the receiving process's id, little-endian
 *
 * Python's own form (multiprocessing.reduction.send_handle) is a pickled
 * DupHandle object sent with Connection.send(); a pickle of a Python
 * class cannot be produced or trusted from C, so cqwire does not speak
 * it: both ends must be cqwire.
 *
 * The receiver takes one message: a longer one is not a handle and stays
 * (CQW_ENOHANDLE, nothing consumed); one of at most 24 bytes that is not
 * this message is consumed and refused (CQW_ENOHANDLE), as Python's
 * recv_handle() consumes and refuses what does not unpickle to a handle.
 * A handle duplicated into another process is CQW_EPROTO.
 *
 * Any handle DuplicateHandle takes can go: files, pipes, events,
 * processes. A socket is better sent as WSADuplicateSocket's protocol
 * info (what Python's socket.share() does): Winsock documents
 * DuplicateHandle'd sockets as unreliable with layered providers.
 *
 * The target is target_pid, or for a named pipe (0) its peer: the client
 * when we hold the server end, else the server
 * (GetNamedPipeClientProcessId / ServerProcessId). Sockets have no peer
 * id to ask: 0 is CQW_EINVAL there.
 */
#include <string.h>

#include "win/win.h"

#define MAGIC "cqwHNDL1"
#define MSG_LEN 24

static void
put_le64(uint8_t *p, uint64_t v)
{
	int i;

	for (i = 0; i < 8; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint64_t
get_le64(const uint8_t *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--) {
		v = v << 8 | p[i];
	}
	return v;
}

/* The process at the other end of a named pipe connection. */
static int
pipe_peer(HANDLE h, DWORD *pid)
{
	ULONG client = 0, server = 0;

	if (!GetNamedPipeClientProcessId(h, &client) ||
	    !GetNamedPipeServerProcessId(h, &server)) {
		return cqw__win_last();
	}
	*pid = client == GetCurrentProcessId() ? server : client;
	return 0;
}

int
cqw__os_send_handle(cqw_conn *c, cqw_fd handle, uint64_t target_pid)
{
	uint8_t msg[MSG_LEN];
	struct cqw_msg m = { .buf = msg, .len = sizeof(msg) };
	HANDLE proc, dup = NULL;
	DWORD pid = 0;
	int r;

	if (target_pid == 0) {
		if (c->kind != CQW__FD_MSGPIPE) {
			return CQW_EINVAL; /* a socket names no peer process */
		}
		r = pipe_peer((HANDLE)c->fd, &pid);
		if (r < 0) {
			return r;
		}
	} else if (target_pid > MAXDWORD) {
		return CQW_EINVAL;
	} else {
		pid = (DWORD)target_pid;
	}
	proc = OpenProcess(PROCESS_DUP_HANDLE, FALSE, pid);
	if (proc == NULL) {
		return cqw__win_last();
	}
	if (!DuplicateHandle(GetCurrentProcess(), (HANDLE)handle, proc, &dup, 0,
			     FALSE, DUPLICATE_SAME_ACCESS)) {
		r = cqw__win_last();
		goto out_close_proc;
	}
	memcpy(msg, MAGIC, 8);
	put_le64(msg + 8, (uint64_t)(uintptr_t)dup);
	put_le64(msg + 16, pid);
	r = c->tp->send(c, &m, 1);
	if (r < 0) {
		/* Nobody will learn of the copy: close it in the target. */
		DuplicateHandle(proc, dup, NULL, NULL, 0, FALSE,
				DUPLICATE_CLOSE_SOURCE);
	}
out_close_proc:
	CloseHandle(proc);
	return r;
}

int
cqw__os_recv_handle(cqw_conn *c, cqw_fd *handle)
{
	uint8_t msg[MSG_LEN];
	size_t needed = 0;
	uint64_t v;
	int64_t n;

	/* A longer message does not fit and stays, unconsumed. */
	n = c->tp->recv_into(c, msg, sizeof(msg), &needed, -1);
	if (n == CQW_ETOOSHORT) {
		return CQW_ENOHANDLE;
	}
	if (n < 0) {
		return (int)n;
	}
	if (n != MSG_LEN || memcmp(msg, MAGIC, 8) != 0) {
		return CQW_ENOHANDLE;
	}
	if (get_le64(msg + 16) != GetCurrentProcessId()) {
		return CQW_EPROTO; /* duplicated into another process */
	}
	v = get_le64(msg + 8);
	*handle = (cqw_fd)(uintptr_t)v;
	return 0;
}
