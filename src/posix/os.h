/* POSIX types that src/common takes by name (see common/io.h). */
#ifndef CQW_OS_H
#define CQW_OS_H

#include <sys/uio.h>

typedef struct iovec cqw__iov;
#define CQW__IOV_BASE(v) ((v)->iov_base)
#define CQW__IOV_LEN(v) ((v)->iov_len)
#define CQW__IOV_MAX 1024

#endif
