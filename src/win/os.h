/* Windows types that src/common takes by name (see common/io.h). */
#ifndef CQW_OS_H
#define CQW_OS_H

/* The layout of WSABUF, which WSASend/WSARecv take as it is. */
typedef struct cqw__iov {
	unsigned long len;
	char *base;
} cqw__iov;
#define CQW__IOV_BASE(v) ((v)->base)
#define CQW__IOV_LEN(v) ((v)->len)
#define CQW__IOV_MAX 1024

#endif
