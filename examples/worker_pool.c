/*
 * A worker pool in the shape of billiard's: the parent makes one duplex
 * pipe per worker, forks, and each side closes the end it does not use.
 * The parent sends tasks and waits on all workers with cqw_wait().
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cqwire.h>

#define WORKERS 4
#define TASKS 1000

static void
worker(cqw_conn *c)
{
	long task;
	int64_t n;

	/* Square each task until the parent closes its end. */
	while ((n = cqw_recv_bytes_into(c, &task, sizeof(task), 0, NULL)) ==
	       sizeof(task)) {
		task *= task;
		if (cqw_send_bytes(c, &task, sizeof(task)) < 0) {
			break;
		}
	}
	cqw_conn_free(c);
	_exit(n == CQW_EOF ? 0 : 1);
}

int
main(void)
{
	cqw_conn *parent[WORKERS], *child;
	struct cqw_wait_item items[WORKERS];
	long sent = 0, done = 0, sum = 0, task;
	int i, r;

	for (i = 0; i < WORKERS; i++) {
		r = cqw_pipe(&parent[i], &child, CQW_DUPLEX);
		if (r < 0) {
			fprintf(stderr, "pipe: %s\n", cqw_strerror(r));
			return 1;
		}
		if (fork() == 0) {
			cqw_conn_free(parent[i]);
			worker(child);
		}
		cqw_conn_free(child);
	}
	/* One task in flight per worker. */
	for (i = 0; i < WORKERS; i++, sent++) {
		cqw_send_bytes(parent[i], &sent, sizeof(sent));
	}
	while (done < TASKS) {
		for (i = 0; i < WORKERS; i++) {
			items[i] = (struct cqw_wait_item){ .conn = parent[i] };
		}
		r = cqw_wait(items, WORKERS, -1);
		for (i = 0; r > 0 && i < WORKERS; i++) {
			if (!items[i].ready) {
				continue;
			}
			if (cqw_recv_bytes_into(parent[i], &task, sizeof(task),
						0, NULL) != sizeof(task)) {
				return 1;
			}
			sum += task;
			done++;
			if (sent < TASKS) {
				cqw_send_bytes(parent[i], &sent, sizeof(sent));
				sent++;
			}
		}
	}
	for (i = 0; i < WORKERS; i++) {
		cqw_conn_free(parent[i]);
	}
	while (wait(NULL) > 0) {
	}
	printf("sum of squares of 0..%d = %ld\n", TASKS - 1, sum);
	return sum == (long)(TASKS - 1) * TASKS * (2 * TASKS - 1) / 6 ? 0 : 1;
}
