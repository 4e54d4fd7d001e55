/* platform.h's process and thread identities on Unix. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/platform.h"

uint64_t
cqw__process_id(void)
{
	return (uint64_t)getpid();
}

uint64_t
cqw__thread_id(void)
{
	pthread_t self = pthread_self();
	uint64_t id = 0;

	/* pthread_t is opaque: its bytes identify the thread while it lives. */
	memcpy(&id, &self,
	       sizeof(self) < sizeof(id) ? sizeof(self) : sizeof(id));
	return id;
}
