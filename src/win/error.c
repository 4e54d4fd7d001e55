/*
 * Windows and Winsock error codes as CQW_E* codes (the Linux numbers, see
 * cqwire.h), for src/win's calls and the iocp backend's completions.
 */
#include "win/win.h"

int
cqw__win_error(DWORD err)
{
	switch (err) {
	case ERROR_SUCCESS:
		return 0;
	case ERROR_FILE_NOT_FOUND:
	case ERROR_PATH_NOT_FOUND:
	case ERROR_BAD_NETPATH:
		return CQW_ENOENT;
	case ERROR_ACCESS_DENIED:
	case WSAEACCES:
		return CQW_EACCES;
	case ERROR_INVALID_HANDLE:
	case ERROR_ABANDONED_WAIT_0: /* a port closed under its waiter */
	case WSAEBADF:
		return CQW_EBADF;
	case ERROR_NOT_ENOUGH_MEMORY:
	case ERROR_OUTOFMEMORY:
	case ERROR_NO_SYSTEM_RESOURCES:
	case ERROR_INVALID_USER_BUFFER: /* too many ios outstanding */
		return CQW_ENOMEM;
	case ERROR_INVALID_PARAMETER:
	case ERROR_INVALID_NAME:
	case ERROR_BAD_PATHNAME:
	case WSAEINVAL:
		return CQW_EINVAL;
	case ERROR_TOO_MANY_OPEN_FILES:
	case WSAEMFILE:
		return CQW_EMFILE;
	case ERROR_ALREADY_EXISTS:
	case ERROR_FILE_EXISTS:
		return CQW_EEXIST;
	case ERROR_FILENAME_EXCED_RANGE:
	case WSAENAMETOOLONG:
		return CQW_ENAMETOOLONG;
	case ERROR_BROKEN_PIPE:
	case ERROR_NO_DATA:
	case ERROR_PIPE_NOT_CONNECTED:
	case ERROR_BAD_PIPE:
	case WSAESHUTDOWN:
		return CQW_EPIPE;
	case ERROR_PIPE_BUSY:
	case ERROR_BUSY:
		return CQW_EBUSY;
	case ERROR_SEM_TIMEOUT:
	case WAIT_TIMEOUT:
	case WSAETIMEDOUT:
		return CQW_ETIMEDOUT;
	case ERROR_OPERATION_ABORTED:
		return CQW_ECANCELED;
	case ERROR_NOT_SUPPORTED:
	case WSAEOPNOTSUPP:
		return CQW_EOPNOTSUPP;
	case ERROR_CALL_NOT_IMPLEMENTED:
		return CQW_ENOSYS;
	case ERROR_MORE_DATA:
	case WSAEMSGSIZE:
		return CQW_EMSGSIZE;
	case ERROR_CONNECTION_ABORTED:
	case WSAECONNABORTED:
		return CQW_ECONNABORTED;
	case ERROR_NETNAME_DELETED: /* what an overlapped io on a reset
				       connection completes with */
	case WSAECONNRESET:
	case WSAENETRESET:
		return CQW_ECONNRESET;
	case ERROR_CONNECTION_REFUSED:
	case WSAECONNREFUSED:
		return CQW_ECONNREFUSED;
	case WSAEWOULDBLOCK:
		return CQW_EAGAIN;
	case WSAEINTR:
		return CQW_EINTR;
	case WSAENOTSOCK:
		return CQW_ENOTSOCK;
	case WSAEADDRINUSE:
		return CQW_EADDRINUSE;
	case WSAEADDRNOTAVAIL:
		return CQW_EADDRNOTAVAIL;
	case WSAEAFNOSUPPORT:
	case WSAEPFNOSUPPORT:
		return CQW_EAFNOSUPPORT;
	case WSAENETUNREACH:
	case WSAENETDOWN:
	case ERROR_NETWORK_UNREACHABLE:
		return CQW_ENETUNREACH;
	case WSAEHOSTUNREACH:
	case ERROR_HOST_UNREACHABLE:
		return CQW_EHOSTUNREACH;
	case WSAENOTCONN:
		return CQW_ENOTCONN;
	case ERROR_NOT_ENOUGH_QUOTA:
	case ERROR_WORKING_SET_QUOTA:
	case WSAENOBUFS:
		return CQW_ENOBUFS;
	case WSAEFAULT:
		return CQW_EFAULT;
	case WSAHOST_NOT_FOUND:
	case WSANO_DATA:
		return CQW_EADDRNOTAVAIL;
	default:
		return CQW_EIO;
	}
}

int
cqw__win_last(void)
{
	int r = cqw__win_error(GetLastError());

	/* A failure that left no code is still a failure. */
	return r == 0 ? CQW_EIO : r;
}
