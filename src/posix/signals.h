/* The signal check, for the blocking calls of src/posix. */
#ifndef CQW_SIGNALS_H
#define CQW_SIGNALS_H

/*
 * A blocking system call returned EINTR: 1 if the thread's check says to
 * stop (the call then returns CQW_EINTR), 0 to retry.
 */
int cqw__eintr_stop(void);

#endif
