/*
 * The server scenarios (accept, echo-clients): one server process and a
 * fleet of client processes around it (t-fleet.c). The server plays the
 * parent role of the session (parent_pid), so cqwb_measure() reports its
 * CPU time as the parent's; the clients are the peers. Each client runs a
 * session of its own in its process and is stepped over the line protocol
 * of ctl.c, all clients at once; a step's operations are the sum of the
 * clients', its time the longest client's.
 */
#ifndef CQWB_FLEET_H
#define CQWB_FLEET_H

#include <cqwire.h>

#include "sess.h"

struct cqwb__fleet {
	struct cqwb_session base;
	char path[108]; /* the server's unix socket */
	char addr[128]; /* "unix:PATH" */
	struct cqw_auth auth;
	const struct cqw_auth *authp; /* &auth, or NULL: no handshake */
	int out_fd;		      /* the server's stdout */
	int server_gone;	      /* reaped already */
	struct cqwb__ctl *clients;
	int nclients; /* started */
	int nwant;    /* to start */
};

/* The authkey every server and client of these scenarios uses. */
extern const char cqwb__fleet_key[];
/* The variable that hands it to a server program (cqwire-echo). */
#define CQWB_FLEET_KEY_ENV "CQWB_AUTHKEY"

/*
 * A session for t and p with a fresh socket path and room for nclients;
 * raises this process's descriptor limit to fds if it can (children
 * inherit it).
 */
int cqwb__fleet_new(struct cqwb__fleet **out, const struct cqwb_transport *t,
		    const struct cqwb_params *p, int nclients, long fds);
/*
 * Start the server on the parent's CPU: exec argv (with the authkey in
 * CQWB_FLEET_KEY_ENV), or fork and run fn, which writes its address and a
 * newline to fd once it listens and then serves until it is killed. Both
 * wait for that first line.
 */
int cqwb__fleet_server_exec(struct cqwb__fleet *f, char *const argv[]);
int cqwb__fleet_server_fork(struct cqwb__fleet *f,
			    void (*fn)(struct cqwb__fleet *f, int fd));
/*
 * Start client idx on a peer CPU: exec argv, or fork and run fn(f, idx),
 * which opens its client session, says "ready PID" and hands the session
 * to cqwb__ctl_answer(). Start every client, then wait for all of them
 * with cqwb__fleet_ready().
 */
int cqwb__fleet_client_exec(struct cqwb__fleet *f, int idx, char *const argv[]);
int cqwb__fleet_client_fork(struct cqwb__fleet *f, int idx,
			    void (*fn)(struct cqwb__fleet *f, int idx));
int cqwb__fleet_ready(struct cqwb__fleet *f);
/* In a client: say ready and answer the harness until it says quit. */
void cqwb__fleet_serve(struct cqwb_session *s) __attribute__((noreturn));
/*
 * The cqwire-echo program: $CQW_ECHO, else beside this program or in its
 * parent directory (the build tree), else where the build put it.
 */
const char *cqwb__echo_path(void);
/* Stop everything and free f. */
int cqwb__fleet_close(struct cqwb_session *s);
/* The same for a failed open: keeps its error, returns err. */
int cqwb__fleet_abort(struct cqwb__fleet *f, int err);

#endif
